"""Encode images into the latent space of a trained run, batched, on the run's device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data import ImageSet, load, to_float
from ..errors import VaelabError


@dataclass
class Latents:
    """Latent codes of a set of images: means (N, D), or K posterior samples (N, K, D); labels when known."""

    z: np.ndarray
    labels: np.ndarray | None
    class_names: list[str]
    std: np.ndarray | None = None  # posterior std (N, D), kept with the means

    def __len__(self) -> int:
        return len(self.z)


def check_fits(model, data: ImageSet, where: str = "the data") -> None:
    """One clear error when images do not match what the model was trained on."""
    want = tuple(model.image_shape)
    if tuple(data.shape) != want:
        raise VaelabError(
            f"{where} has images of shape {tuple(data.shape)} but the model takes {want} (C, H, W)",
            f"load it with image_size={want[1]} and channels={want[0]}",
        )


def resolve_data(run, data: ImageSet | str | None, split: str | None) -> ImageSet:
    """An ImageSet for a run: the run's own data, a spec loaded at the model's size, or a given set."""
    if data is None:
        ds = run.data()
    elif isinstance(data, str):
        c, s, _ = run.model.image_shape
        ds = load(data, image_size=s, channels=c, val_fraction=0.0)
    else:
        ds = data
    if split is not None:
        ds = ds.split(split)
    check_fits(run.model, ds, getattr(ds, "source", "the data") or "the data")
    return ds


@torch.no_grad()
def encode(run, data: ImageSet | str | None = None, samples: int = 0, split: str | None = None, batch_size: int = 1000) -> Latents:
    """Latent means (``samples=0``) or `samples` posterior draws per image, for any data spec or set.

    Conditional models are encoded with the images' labels (required).
    """
    if samples < 0:
        raise VaelabError(f"samples is {samples}", "use 0 for the means or K >= 1 draws per image")
    ds = resolve_data(run, data, split)
    model = run.model
    device = run.device
    if model.conditional and ds.labels is None:
        raise VaelabError("this conditional model needs labelled images to encode", "give a labelled data spec")
    zs, stds = [], []
    from ..data.imageset import bounded_batch

    batch_size = bounded_batch(batch_size, ds.shape)
    for s in range(0, len(ds), batch_size):
        x = to_float(ds.pixels[s : s + batch_size].to(device))  # gathered per batch: a mapped set stays on disk
        y = ds.labels[s : s + batch_size].to(device) if model.conditional else None
        q = model.encode(x, y)
        zs.append((q.mean if samples == 0 else q.sample(samples).transpose(0, 1)).float().cpu())
        stds.append(q.std.float().cpu())
    z = torch.cat(zs).numpy() if zs else np.zeros((0, model.latent_dim), np.float32)
    labels = ds.labels.numpy() if ds.labels is not None else None
    std = torch.cat(stds).numpy() if stds else None
    return Latents(z, labels, list(ds.class_names), std)
