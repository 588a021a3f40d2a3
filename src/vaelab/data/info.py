"""Numbers that describe a dataset: samples per split and class, shape, pixel statistics."""

from __future__ import annotations

import torch

from .imageset import ImageSet


def summarize(ds: ImageSet) -> dict:
    """A JSON-able summary of an ImageSet (what `vaelab data info` prints and reports embed)."""
    x = ds.images
    # mean/std over all pixels in chunks, in float64, without a float copy of the set
    total, sq, count = 0.0, 0.0, 0
    flat = x.view(x.shape[0], -1)
    for s in range(0, x.shape[0], 4096):
        chunk = flat[s : s + 4096].double() / 255.0
        total += float(chunk.sum())
        sq += float((chunk * chunk).sum())
        count += chunk.numel()
    mean = total / max(count, 1)
    std = max(sq / max(count, 1) - mean * mean, 0.0) ** 0.5
    per_split = {}
    for split, n in ds.split_counts().items():
        entry = {"samples": n}
        if ds.labels is not None:
            sub = ds.labels[ds.split_ids == ("train", "val", "test").index(split)]
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
