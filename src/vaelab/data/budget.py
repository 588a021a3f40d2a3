"""Memory estimates made before a large allocation, so a too-large request is refused with its figure instead
of growing until the machine swaps or the allocator gives up with a traceback."""

from __future__ import annotations

import os

from ..errors import VaelabError

SHARE = 0.8  # of the memory available now: what one request may take


def available_memory() -> int | None:
    """Bytes of memory available now (MemAvailable on Linux, else the physical memory), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def check_memory(nbytes: float, what: str, hint: str) -> None:
    """Refuse `what` when it needs more than SHARE of the memory available: 'X would take 5.4 GB of memory ...'."""
    if nbytes < 2**28:  # below 256 MiB: not worth asking
        return
    avail = available_memory()
    if avail is not None and nbytes > SHARE * avail:
        raise VaelabError(f"{what} would take {human_bytes(nbytes)} of memory, {human_bytes(avail)} are available", hint)


# glibc keeps the memory of freed tensors in its heap and hands it back to the kernel only from the top of the
# heap; a long evaluation loop over large images fragments that heap, so its resident memory crept up batch
# after batch (50,000 x 256 px photos: `evaluate` peaked at 2.35 GB, of which malloc_trim returned 1.4 GB at
# once). malloc_trim(0) also releases the free pages inside the heap (madvise). Elsewhere this is a no-op.
_TRIM = {"fn": None, "last": 0.0}


def release_free_memory(min_interval: float = 0.25) -> bool:
    """Give the C heap's free pages back to the kernel (glibc's malloc_trim), at most every `min_interval`
    seconds so that a fast loop pays nothing; True if it ran. Call it between the batches of long loops."""
    import time

    now = time.monotonic()
    if now - _TRIM["last"] < min_interval:
        return False
    _TRIM["last"] = now
    fn = _TRIM["fn"]
    if fn is None:
        fn = _TRIM["fn"] = _malloc_trim()
    if fn is False:
        return False
    fn(0)
    return True


def _malloc_trim():
    """glibc's malloc_trim, or False where there is none (macOS, Windows, musl)."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return False
