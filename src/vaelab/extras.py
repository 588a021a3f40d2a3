"""Optional extras: a feature that needs a package vaelab does not install by default says, in one line,
what to install (``pip install 'vaelab[sweep]'``) instead of failing with an ImportError."""

from __future__ import annotations

import importlib.util

from .errors import VaelabError

# extra -> (modules it provides, what needs it)
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "sweep": (("optuna",), "vaelab sweep"),
    "video": (("imageio", "imageio_ffmpeg"), "MP4 output"),
    "wandb": (("wandb",), "train.logger=wandb"),
    "mlflow": (("mlflow",), "train.logger=mlflow"),
    "umap": (("umap",), "the umap map (vaelab explore --method umap)"),
}


def missing(extra: str) -> list[str]:
    """The modules of an extra that are not installed."""
    return [m for m in EXTRAS[extra][0] if importlib.util.find_spec(m) is None]


def require(extra: str) -> None:
    """Raise a one-line error naming the pip command when an extra's packages are missing."""
    gone = missing(extra)
    if gone:
        what = EXTRAS[extra][1]
        names = " and ".join(gone)
        raise VaelabError(f"{what} needs {names}, which {'is' if len(gone) == 1 else 'are'} not installed",
                          f"pip install 'vaelab[{extra}]'")


__all__ = ["EXTRAS", "missing", "require"]
