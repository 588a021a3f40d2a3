"""vaelab: Variational Autoencoders for images: train, evaluate, look, classify, study.

The names a notebook needs, all here (imported on first use, so ``import vaelab`` stays fast):

    data = vaelab.ImageSet.from_arrays(x, labels=y)     # or vaelab.load("fashion-mnist")
    run = vaelab.fit({"model.latent_dim": 2}, data)     # a trained Run (its run directory on disk)
    run = vaelab.load_run("runs/NAME")                  # a run directory or a pretrained folder
    model = vaelab.VAE.from_pretrained("folder")        # an nn.Module; model.save_pretrained("folder")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # the lazy names below, for type checkers and IDEs
    from .api import fit, make_config
    from .config import Config
    from .data import ImageSet, load
    from .errors import VaelabError
    from .models import VAE
    from .run import Run

_LAZY = {
    "fit": ("api", "fit"),
    "make_config": ("api", "make_config"),
    "Config": ("config", "Config"),
    "ImageSet": ("data", "ImageSet"),
    "load": ("data", "load"),
    "VaelabError": ("errors", "VaelabError"),
    "VAE": ("models", "VAE"),
    "Run": ("run", "Run"),
}


def load_run(path, checkpoint: str = "best", device="cpu") -> Run:
    """Rebuild a trained run from its directory or a pretrained folder: model (with weights), config and
    data spec, no flags.

    ``checkpoint``: "best" (falls back to "last"), "last", or a .ckpt path; ``device``: where the model goes.
    """
    from .run import load_run as _load_run

    return _load_run(path, checkpoint=checkpoint, device=device)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vaelab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["VAE", "Config", "ImageSet", "Run", "VaelabError", "__version__", "fit", "load", "load_run", "make_config"]
