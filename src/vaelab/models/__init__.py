"""Models: the VAE and the registries it composes: architectures (`ARCHS`), posteriors (`POSTERIORS`), priors
(`PRIORS`), likelihoods (`LIKELIHOODS`); and the objectives (`OBJECTIVES`) that train it."""

from __future__ import annotations

import copy

from .blocks import ARCHS
from .disentangle import dip, factor, tc
from .likelihoods import LIKELIHOODS
from .objective import OBJECTIVES, LossTerms, vae_loss
from .posterior import POSTERIORS, DiagonalGaussian
from .prior import PRIORS
from .vae import VAE

OBJECTIVES.update({"tc": tc, "factor": factor, "dip": dip})  # models/disentangle.py


def resolve(cfg, data) -> object:
    """A copy of a ModelConfig with image_size, channels and num_classes taken from the data."""
    cfg = copy.deepcopy(cfg)
    cfg.image_size = data.image_size
    cfg.channels = data.channels
    cfg.num_classes = data.num_classes if data.labelled else 0
    if getattr(cfg, "objective", "") == "tc":  # beta-TCVAE's minibatch-weighted sampling needs N
        cfg.dataset_size = int(data.split_counts().get("train", len(data)))
    return cfg


def build(cfg, data=None) -> VAE:
    """A VAE from a ModelConfig; with `data`, the image shape and classes are filled in from it first.

    A model too large for the memory is refused in one line with its size (estimated first for the MLP,
    whose weights grow with image_size^2 x hidden; else the allocator's failure, caught)."""
    from ..errors import VaelabError

    cfg = resolve(cfg, data) if data is not None else cfg
    _check_size(cfg)
    try:
        return VAE(cfg)
    except (RuntimeError, MemoryError) as e:
        if not isinstance(e, MemoryError) and "allocate" not in str(e):
            raise
        raise VaelabError(
            f"the model does not fit in memory ({_allocation(e)})",
            "use a smaller model.latent_dim, model.hidden, model.conv_channels or data.image_size",
        ) from None


def _check_size(cfg) -> None:
    """Estimate an MLP's weights before allocating them (4 bytes each, encoder and decoder)."""
    from ..data.budget import check_memory, human_bytes

    if getattr(cfg, "arch", None) != "mlp" or not getattr(cfg, "image_size", None):
        return
    sizes = [int(cfg.channels or 1) * int(cfg.image_size) ** 2 + int(cfg.num_classes or 0), *map(int, cfg.hidden)]
    weights = sum(a * b for a, b in zip(sizes, sizes[1:], strict=False)) * 2 + sizes[-1] * int(cfg.latent_dim) * 3
    check_memory(
        4 * weights,
        f"an MLP of {human_bytes(weights).replace('B', '').strip()} weights (hidden {list(cfg.hidden)}, latent {cfg.latent_dim})",
        "use a smaller model.hidden, model.latent_dim or data.image_size",
    )


def _allocation(e: BaseException) -> str:
    import re

    from ..data.budget import human_bytes

    m = re.search(r"allocate (\d+) bytes", str(e))
    return f"it asked for {human_bytes(int(m.group(1)))}" if m else type(e).__name__


__all__ = [
    "ARCHS",
    "LIKELIHOODS",
    "OBJECTIVES",
    "POSTERIORS",
    "PRIORS",
    "VAE",
    "DiagonalGaussian",
    "LossTerms",
    "build",
    "resolve",
    "vae_loss",
]
