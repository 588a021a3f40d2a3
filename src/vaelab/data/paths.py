"""Where data lives on disk: the user's data folder and vaelab's cache.

Kept apart from the readers so the download and folder-cache modules can use it without import cycles.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_roots() -> list[Path]:
    """Folders searched for named datasets: $VAELAB_DATA, then the user cache dir."""
    roots = []
    if os.environ.get("VAELAB_DATA"):
        roots.append(Path(os.environ["VAELAB_DATA"]).expanduser())
    roots.append(cache_dir())
    return roots


def cache_dir() -> Path:
    """``$VAELAB_CACHE``, else ``$XDG_CACHE_HOME/vaelab``, else ``~/.cache/vaelab``."""
    if os.environ.get("VAELAB_CACHE"):
        return Path(os.environ["VAELAB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vaelab"
