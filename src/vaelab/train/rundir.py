"""Creating, checking, locking and (after a failed start) removing run directories.

Everything here runs before any training work, so a bad out_dir, a full disk or a second process fails in
seconds with one line, not after an epoch.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path

from ..errors import VaelabError, shell
from ..run import CHECKPOINTS, CONFIG_FILE, is_run_dir

LOCK_FILE = ".lock"
MIN_FREE_BYTES = 50 * 2**20


def safe_name(name: str) -> str:
    """A run name as one harmless path component: ``../../etc`` -> ``etc``, never a path of its own."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-.") or "run"


def new_run_dir(cfg) -> Path:
    """``out_dir/name``, or ``name-2``, ``name-3``... when that exists: runs are never overwritten."""
    name = safe_name(cfg.name)
    base = Path(cfg.out_dir) / name
    path, i = base, 1
    while _taken(path):
        i += 1
        path = base.with_name(f"{name}-{i}")
    return path


def _taken(path: Path) -> bool:
    try:
        return path.exists() and (not path.is_dir() or any(path.iterdir()))
    except OSError:  # unreadable: the write check reports it with a clear message
        return False


def has_checkpoint(run_dir: Path) -> bool:
    return any((Path(run_dir) / CHECKPOINTS / f"{n}.ckpt").is_file() for n in ("last", "best"))


def check_resumable(run_dir: str | Path) -> Path:
    """The run directory if it holds a checkpoint to resume from, else one error that says what to do.

    A run killed before its first checkpoint (it has a lock file or config.yaml but no last.ckpt) gets
    its own message: there is nothing to resume, start it over.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise VaelabError(f"run directory not found: {run_dir}", "give the folder 'vaelab train' printed")
    if not run_dir.is_dir():
        raise VaelabError(f"{run_dir} is a file, not a run directory", "give the folder 'vaelab train' printed")
    last = run_dir / CHECKPOINTS / "last.ckpt"
    if last.is_file():
        if not is_run_dir(run_dir):
            raise VaelabError(f"{run_dir} has checkpoints but no {CONFIG_FILE}", "restore the run's config.yaml, or start a new run")
        return run_dir
    if is_run_dir(run_dir):
        raise VaelabError(
            f"nothing to resume in {run_dir}: it stopped before its first checkpoint was written",
            f"start it over with: {shell('vaelab', 'train', run_dir / CONFIG_FILE, '--run-dir', run_dir)}",
        )
    if (run_dir / LOCK_FILE).exists() or (run_dir / CHECKPOINTS).is_dir():
        raise VaelabError(
            f"nothing to resume in {run_dir}: it stopped before its config and first checkpoint were written",
            "start it over with the command that started it",
        )
    raise VaelabError(f"{run_dir} is not a vaelab run (no {CONFIG_FILE})", "give the folder 'vaelab train' printed")


def prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """Check the folder is usable: a run to resume, or one holding no trained run; writable; free disk space."""
    if resume:
        check_resumable(run_dir)
    elif has_checkpoint(run_dir):
        raise VaelabError(
            f"{run_dir} already holds a trained run", f"resume it with: {shell('vaelab', 'train', '--resume', run_dir)}, or choose another --run-dir"
        )
    try:
        (run_dir / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(run_dir)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
        free = shutil.disk_usage(run_dir).free
    except OSError as e:
        raise write_error(e, run_dir) from None
    if free < MIN_FREE_BYTES:
        raise VaelabError(
            f"only {free // 2**20} MiB free on the disk of {run_dir}", "free some space or choose another out_dir"
        )


def remove_stale_temp_files(run_dir: Path) -> None:
    """Temp files of atomic writes that a killed process left behind (``.NAME.xxxx.tmp``)."""
    for folder in (run_dir, *(p for p in run_dir.iterdir() if p.is_dir())):
        for p in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()


def write_error(e: OSError, path: Path) -> VaelabError:
    """One line for a failed write: a full disk, a read-only place, or a path that cannot be a folder."""
    where = e.filename or path
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return VaelabError(f"disk full while writing {where}", "free some space or choose another out_dir")
    return VaelabError(f"cannot write {where}: {e.strerror or e}", "choose a writable out_dir (out_dir=...) or --run-dir")


@contextlib.contextmanager
def lock_run_dir(run_dir: Path, create: bool = True):
    """An exclusive lock on the run directory: a second training writing there is refused."""
    import fcntl

    if not create and not run_dir.is_dir():
        raise VaelabError(f"run directory not found: {run_dir}", "give the folder 'vaelab train' printed")
    try:
        if create:
            run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise write_error(e, run_dir) from None
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


def first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (what creating `path` would add)."""
    path = Path(path).absolute()
    if path.exists():
        return None
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path


def discard_failed_start(run_dir: Path, created: Path | None, before: set[str]) -> None:
    """Remove what a start that failed before its first checkpoint wrote, so no half-made run is left.

    `created` is the folder this start made (removed whole); otherwise only the entries that were not in
    `before` are removed, so a user's existing folder keeps its own files.
    """
    if has_checkpoint(run_dir):
        return
    with contextlib.suppress(OSError):
        if created is not None:
            shutil.rmtree(created)
            return
        for name in set(os.listdir(run_dir)) - before:
            p = run_dir / name
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
