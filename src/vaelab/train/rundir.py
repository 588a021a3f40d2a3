"""Creating, checking and locking run directories before any training work starts."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

from ..errors import VaelabError
from ..run import CHECKPOINTS, is_run_dir

LOCK_FILE = ".lock"
MIN_FREE_BYTES = 50 * 2**20


def new_run_dir(cfg) -> Path:
    """``out_dir/name``, or ``name-2``, ``name-3``... when that exists: runs are never overwritten."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", cfg.name).strip("-.") or "run"
    base = Path(cfg.out_dir) / name
    path, i = base, 1
    while path.exists() and any(path.iterdir()):
        i += 1
        path = base.with_name(f"{name}-{i}")
    return path


def prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """Check the folder is usable: it is a run (resume) or new, writable, with free disk space."""
    if resume:
        if not is_run_dir(run_dir):
            raise VaelabError(f"{run_dir} is not a vaelab run (no config.yaml)", "give the folder 'vaelab train' printed")
        if not (run_dir / CHECKPOINTS / "last.ckpt").is_file():
            raise VaelabError(f"{run_dir} has no checkpoints/last.ckpt to resume from", "start a new run instead")
    (run_dir / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    probe = run_dir / ".write-test"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise VaelabError(f"cannot write in {run_dir}: {e.strerror}", "choose a writable out_dir (out_dir=...)") from None
    free = shutil.disk_usage(run_dir).free
    if free < MIN_FREE_BYTES:
        raise VaelabError(
            f"only {free // 2**20} MiB free on the disk of {run_dir}", "free some space or choose another out_dir"
        )


@contextlib.contextmanager
def lock_run_dir(run_dir: Path, create: bool = True):
    """An exclusive lock on the run directory: a second training writing there is refused."""
    import fcntl

    if create:
        run_dir.mkdir(parents=True, exist_ok=True)
    elif not run_dir.is_dir():
        raise VaelabError(f"run directory not found: {run_dir}", "give the folder 'vaelab train' printed")
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VaelabError(
                f"another vaelab process is training in {run_dir}", "wait for it to finish, or use another run name"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)
