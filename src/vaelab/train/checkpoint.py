"""Checkpoints: atomic writes, and loads that never unpickle code.

A checkpoint is a dict of tensors and plain Python values (model, optimizer, scheduler and scaler states,
RNG states, epoch, step, position in the epoch, the loop's state and the full config). It is written to a
temp file in the same folder, fsync'ed, then renamed over the old one, so a crash at any moment leaves
the previous checkpoint whole. It is read with ``torch.load(weights_only=True)``: a file carrying a
pickled object (code) is refused, not run.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import VaelabError

FORMAT = "vaelab-checkpoint-1"


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(file_object)`` on a temp file beside `path`, fsync it, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    state = {"format": FORMAT, **state}

    def write(f) -> None:
        try:
            torch.save(state, f)
        except RuntimeError as e:  # torch's zip writer reports a failed write (a full disk) as RuntimeError
            if not _WRITE_FAILED.search(str(e)):
                raise
            raise _write_failed(Path(path), e) from e

    atomic_write(path, write)


# what torch's PytorchStreamWriter says when the bytes did not reach the file: "unexpected pos 1234 vs 1200",
# "PytorchStreamWriter failed writing file data/0: file write failed"
_WRITE_FAILED = re.compile(r"unexpected pos|write failed|failed writing|PytorchStreamWriter", re.IGNORECASE)


def _write_failed(path: Path, e: RuntimeError) -> OSError:
    """The OSError a failed torch.save means: ENOSPC when the disk is (nearly) full, else EIO."""
    import errno
    import shutil

    try:
        full = shutil.disk_usage(path.parent).free < 64 * 2**20
    except OSError:
        full = False
    code = errno.ENOSPC if full else errno.EIO
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", text)[:120]  # torch's C++ source position
    return OSError(code, f"{os.strerror(code)}: torch said '{text}'", str(path))


def link_checkpoint(src: str | Path, dst: str | Path) -> None:
    """Make `dst` hold the bytes of `src` (a hard link, else a copy), replacing `dst` atomically."""
    import shutil

    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (weights_only); errors say what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise VaelabError(f"checkpoint not found: {path}", "train the run first, or give the run directory")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise VaelabError(f"cannot read checkpoint {path}: {e.strerror or e}", "check the path and its permissions") from None
    if head and not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save: a zip archive (or a legacy pickle)
        raise VaelabError(f"{path} is not a checkpoint file at all (no torch.save archive)", "give a .ckpt file written by 'vaelab train', or best / last")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols; we refuse those anyway
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # the weights-only unpickler met something that is not plain data
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = (
            f"holds a pickled object ({found.group(1)}) that could run code"
            if found
            else "holds pickle data that a safe (weights-only) load cannot read"
        )
        raise VaelabError(
            f"{path} {what}, so it was refused", "only load checkpoints written by vaelab; never unpickle files you were sent"
        ) from None
    except (MemoryError, RecursionError) as e:
        raise VaelabError(f"{path} is not a readable checkpoint ({type(e).__name__})", "give a checkpoint written by 'vaelab train'") from None
    except Exception as e:  # noqa: BLE001 - any parse failure of a foreign or torn file is the same user error
        first = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise VaelabError(f"{path} is not a readable checkpoint ({first})", "it may be truncated; use the other checkpoint of the run") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise VaelabError(f"{path} is not a vaelab checkpoint", "give a checkpoint written by 'vaelab train'")
    for key in ("model", "config"):
        if not isinstance(state.get(key), dict):
            raise VaelabError(f"{path} is a damaged vaelab checkpoint (no '{key}')", "use the other checkpoint of the run")
    return state


# ---------------------------------------------------------------------------------------------------------
# random number generators: everything the loop draws from, so a resumed run continues bit for bit


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": _python_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state():
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]


def _python_state():
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]
