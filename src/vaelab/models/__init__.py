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
    """A VAE from a ModelConfig; with `data`, the image shape and classes are filled in from it first."""
    return VAE(resolve(cfg, data) if data is not None else cfg)


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
