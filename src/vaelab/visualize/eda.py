"""Data overview figures (EDA): class distribution per split, pixel intensities, mean image per class, and
a grid of examples per class. They take arrays; `eda_figures(ImageSet)` makes all four."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .style import (
    as_images,
    cell_centers,
    cell_scale,
    compose,
    mosaic_size,
    new_figure,
    safe_text,
    show_image,
)

SPLIT_COLORS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}


def class_distribution_figure(counts: dict[str, list[int]], class_names: list[str]) -> Figure:
    """Images per class, one bar group per class and one bar per split. counts: {split: [n per class]}.
    One axes (horizontal bars when there are many classes)."""
    k = len(class_names)
    many = k > 12
    fig = new_figure(6.4, max(3.0, 0.22 * k + 1.0) if many else 3.4)
    ax = fig.subplots()
    width = 0.8 / max(len(counts), 1)
    pos = np.arange(k)
    for s, (split, values) in enumerate(counts.items()):
        offs = pos - 0.4 + width * (s + 0.5)
        color = SPLIT_COLORS.get(split)
        if many:
            ax.barh(offs, values, height=width, label=f"{split} ({sum(values)})", color=color)
        else:
            bars = ax.bar(offs, values, width=width, label=f"{split} ({sum(values)})", color=color)
            if k * len(counts) <= 30:
                ax.bar_label(bars, fontsize=6, padding=1)
    names = [safe_text(c) for c in class_names]
    if many:
        ax.set_yticks(pos, names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("images", fontsize=8)
    else:
        ax.set_xticks(pos, names, fontsize=8, rotation=30 if max((len(c) for c in names), default=0) > 6 else 0)
        ax.set_ylabel("images", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, axis="x" if many else "y")
    ax.legend(fontsize=7, title="split", title_fontsize=7)
    ax.set_title("Class distribution", fontsize=10)
    return fig


def pixel_histogram_figure(images, max_images: int = 5000) -> Figure:
    """Histogram of pixel intensities (0..1) per channel, log count axis. images: (N, C, H, W). One axes."""
    x = as_images(images[:max_images])
    c = x.shape[1]
    fig = new_figure(6.4, 3.2)
    ax = fig.subplots()
    names, colors = (["gray"], ["0.3"]) if c == 1 else (["red", "green", "blue"], ["tab:red", "tab:green", "tab:blue"])
    bins = np.arange(257) / 255.0
    for ch in range(c):
        hist, _ = np.histogram(x[:, ch].ravel() / 255.0, bins=bins)
        ax.stairs(hist, bins, label=names[ch % len(names)], color=colors[ch % len(colors)], fill=c == 1, alpha=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("pixel intensity", fontsize=8)
    ax.set_ylabel("pixels", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if c > 1:
        ax.legend(fontsize=7)
    mean = x.mean() / 255.0
    ax.set_title(f"Pixel intensities ({len(x)} images, mean {mean:.3f})", fontsize=10)
    return fig


def mean_images_figure(images, labels, class_names: list[str], per_row: int = 10, counts: list[int] | None = None) -> Figure:
    """The mean image of each class, titled by class name: one axes (one image) per class present.

    With `counts`, `images` already holds one mean image per class (or one for an unlabelled set) and
    counts[k] is the number of images it averages (see `class_means`, which works in bounded memory)."""
    x = as_images(images)  # uint8: the mean is taken per class, never on a float copy of the whole set
    if counts is not None:
        names = class_names if labels is not None else ["all images"]
        groups = [(names[k], np.array([k]), counts[k]) for k in range(len(counts)) if counts[k] > 0]
    elif labels is None:
        groups = [("all images", np.arange(len(x)), len(x))]
    else:
        labels = np.asarray(labels)
        groups = [(class_names[k], np.flatnonzero(labels == k), int((labels == k).sum())) for k in range(len(class_names)) if (labels == k).any()]
    cols = min(per_row, len(groups))
    rows = -(-len(groups) // cols)
    fig = new_figure(1.25 * cols + 0.2, 1.45 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (name, g, n) in zip(axes, groups, strict=False):
        mean = np.round(x[g].mean(0, dtype=np.float64)).astype(np.uint8)  # (C, H, W)
        show_image(ax, mean.transpose(1, 2, 0))
        ax.set_title(f"{safe_text(name)} (n={n})", fontsize=7)
    for ax in axes[len(groups) :]:
        ax.remove()
    fig.suptitle("Mean image per class", fontsize=10)
    return fig


def examples_figure(images, labels, class_names: list[str], per_class: int = 8, seed: int = 0, scale: float = 2.0) -> Figure:
    """A random grid of examples, one row per class (class names on the left). One axes, one image."""
    x = as_images(images)
    rng = np.random.default_rng(seed)
    rows, names = [], []
    if labels is None:
        idx = rng.choice(len(x), size=min(len(x), per_class * 4), replace=False)
        mosaic = compose(x[idx], per_class)
    else:
        labels = np.asarray(labels)
        for k, name in enumerate(class_names):
            members = np.flatnonzero(labels == k)
            if len(members) == 0:
                continue
            pick = rng.choice(members, size=min(per_class, len(members)), replace=False)
            row = np.full((per_class, *x.shape[1:]), 255, np.uint8)  # white cells where a class has fewer
            row[: len(pick)] = x[pick]
            rows.append(row)
            names.append(safe_text(name))
        mosaic = compose(np.concatenate(rows), per_class)
    width, height = mosaic_size(mosaic, cell_scale(x.shape[-1], scale, min_cell=28), extra=(1.4, 0.6))
    fig = new_figure(width, height)
    ax = fig.subplots()
    show_image(ax, mosaic)
    if names:
        ax.set_yticks(cell_centers(len(names), x.shape[2]), names, fontsize=7)
        ax.tick_params(length=0)
    ax.set_title("Examples per class" if names else "Examples", fontsize=10)
    return fig


def eda_figures(ds, per_class: int = 8, seed: int = 0) -> dict[str, Figure]:
    """All four EDA figures of an ImageSet: {'eda_classes', 'eda_pixels', 'eda_means', 'eda_examples'}
    (the class distribution only for labelled sets)."""
    figs: dict[str, Figure] = {}
    if ds.labels is not None:
        counts = {}
        for i, split in enumerate(("train", "val", "test")):
            m = ds.split_ids == i
            if m.any():
                counts[split] = np.bincount(ds.labels[m].numpy(), minlength=ds.num_classes).tolist()
        figs["eda_classes"] = class_distribution_figure(counts, list(ds.class_names))
    # every figure reads a bounded part of the set: a memory-mapped set of any size is never loaded whole
    figs["eda_pixels"] = pixel_histogram_figure(ds.pixels[:5000])
    labels = ds.labels.numpy() if ds.labels is not None else None
    means, counts = class_means(ds)
    figs["eda_means"] = mean_images_figure(means, labels, list(ds.class_names), counts=counts)
    rng = np.random.default_rng(seed)
    groups = [np.arange(len(ds))] if labels is None else [np.flatnonzero(labels == k) for k in range(ds.num_classes)]
    pick = np.sort(np.concatenate([rng.permutation(g)[: 4 * per_class] for g in groups]))  # enough per row
    sub_labels = labels[pick] if labels is not None else None
    figs["eda_examples"] = examples_figure(ds.gather(pick), sub_labels, list(ds.class_names), per_class, seed)
    return figs


def class_means(ds) -> tuple[np.ndarray, list[int]]:
    """((K, C, H, W) uint8 mean image per class (K = 1 for an unlabelled set), images per class), summed
    over fixed-size chunks of the set."""
    import torch

    k = max(ds.num_classes, 1) if ds.labels is not None else 1
    sums = torch.zeros(k, *ds.shape, dtype=torch.float64)
    counts = torch.zeros(k, dtype=torch.int64)
    start = 0
    from ..data.imageset import chunk_rows

    for x in ds.chunks(chunk_rows(int(np.prod(ds.shape)) * 8, 1 << 24)):  # 16 MiB of float64 at a time
        y = ds.labels[start : start + len(x)] if ds.labels is not None else torch.zeros(len(x), dtype=torch.long)
        sums.index_add_(0, y, x.double())
        counts += torch.bincount(y, minlength=k)
        start += len(x)
    means = (sums / counts.clamp(min=1).view(-1, 1, 1, 1).double()).round().clamp(0, 255).to(torch.uint8)
    return means.numpy(), counts.tolist()


__all__ = [
    "class_distribution_figure",
    "eda_figures",
    "examples_figure",
    "mean_images_figure",
    "pixel_histogram_figure",
]
