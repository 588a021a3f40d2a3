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
