"""Numbers that describe a dataset: samples per split and class, shape, pixel statistics."""

from __future__ import annotations

import torch

from .imageset import SPLITS, ImageSet


def pixel_histogram(ds: ImageSet, chunk: int | None = None) -> torch.Tensor:
    """(C, 256) int64: how many pixels of each channel have each value, counted over fixed-size uint8
    chunks (about `imageset.CHUNK_BYTES` each), so memory stays bounded at any image and set size."""
    hist = torch.zeros(ds.channels, 256, dtype=torch.int64)
    for x in ds.chunks(chunk):
        for c in range(ds.channels):
            hist[c] += torch.bincount(x[:, c].reshape(-1).cpu(), minlength=256)
    return hist


def pixel_stats(ds: ImageSet, chunk: int | None = None) -> tuple[float, float]:
    """(mean, std) of all pixels on 0..1, exact (from the integer histogram, no float copy of anything)."""
    counts = pixel_histogram(ds, chunk).sum(0).double()
    n = float(counts.sum())
    if n == 0:
        return 0.0, 0.0
    values = torch.arange(256, dtype=torch.float64) / 255.0
    mean = float((counts * values).sum()) / n
    var = float((counts * (values - mean) ** 2).sum()) / n
    return mean, max(var, 0.0) ** 0.5


def summarize(ds: ImageSet) -> dict:
    """A JSON-able summary of an ImageSet (what `vaelab data info` prints and reports embed)."""
    mean, std = pixel_stats(ds)
    per_split = {}
    for split, n in ds.split_counts().items():
        entry = {"samples": n}
        if ds.labels is not None:
            sub = ds.labels[ds.split_ids == SPLITS.index(split)]
            entry["per_class"] = torch.bincount(sub, minlength=ds.num_classes).tolist()
        per_split[split] = entry
    return {
        "source": ds.source,
        "samples": len(ds),
        "shape": list(ds.shape),
        "channels": ds.channels,
        "image_size": ds.image_size,
        "num_classes": ds.num_classes,
        "class_names": list(ds.class_names),
        "labelled": ds.labelled,
        "splits": per_split,
        "pixel_mean": round(mean, 4),
        "pixel_std": round(std, 4),
        # ground-truth factors (dsprites, npz 'factors'): name -> number of distinct values
        "factors": {n: len(v) if v else int(ds.factors[:, i].max()) + 1 for i, (n, v) in enumerate(zip(ds.factor_names, ds.factor_values or [[]] * len(ds.factor_names), strict=True))}
        if ds.factors is not None
        else {},
    }
