"""Image figures: reconstructions with per-image SSIM, and sample grids (prior, GMM sampler, per class)."""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure

from .style import (
    DPI,
    MAX_PX,
    as_images,
    cell_centers,
    cell_scale,
    compose,
    mosaic_size,
    new_figure,
    safe_text,
    show_image,
    text_px,
    wrap_title,
)


def _float_images(images) -> torch.Tensor:
    """Any (N, C, H, W) images (uint8 or float in [0, 1], tensor or array) -> float32 tensor in [0, 1]."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    images = images.detach().cpu()
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    return images.float().clamp(0, 1)


def ssim_per_image(originals, reconstructions) -> np.ndarray:
    """SSIM of each reconstruction against its original (torchmetrics, Gaussian window), shape (N,)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    x, xhat = _float_images(originals), _float_images(reconstructions)
    if len(x) == 0:
        return np.zeros(0, np.float32)
    # the standard 11-px window, shrunk (odd) for images smaller than that
    k = min(11, min(x.shape[-2:]) - (1 - min(x.shape[-2:]) % 2))
    s = structural_similarity_index_measure(xhat, x, data_range=1.0, kernel_size=k, reduction="none")
    return s.reshape(-1).numpy()


@torch.no_grad()
def decode(model, z, y=None, batch_size: int = 512) -> torch.Tensor:
    """Decode latent points (N, D) to images (N, C, H, W) in [0, 1] on the model's device, in batches."""
    device = next(model.parameters()).device
    z = torch.as_tensor(np.asarray(z, dtype=np.float32) if not isinstance(z, torch.Tensor) else z).float()
    if y is not None:
        y = torch.as_tensor(y).long().reshape(-1)
    out = []
    for s in range(0, len(z), batch_size):
        yb = y[s : s + batch_size].to(device) if y is not None else None
        out.append(model.generate(z[s : s + batch_size].to(device), yb).float().cpu())
    if not out:
        c, h, w = model.image_shape
        return torch.zeros(0, c, h, w)
    return torch.cat(out)


def recon_figure(
    originals,
    reconstructions,
    ssim: np.ndarray | None = None,
    labels: list[str] | None = None,
    ncols: int = 8,
    scale: float = 2.0,
) -> Figure:
    """Originals above their reconstructions, the SSIM of each under it; one axes per block of `ncols`.

    originals, reconstructions: (N, C, H, W); ssim: (N,) (computed when None); labels: N class names shown
    above the originals. One image per axes (the block's mosaic).
    """
    x, xhat = as_images(originals), as_images(reconstructions)
    n = len(x)
    if ssim is None:
        ssim = ssim_per_image(x, xhat)
    ncols = max(1, min(ncols, n))
    blocks = max(1, math.ceil(n / ncols))
    h, w = x.shape[2:]
    values = [f"{v:.2f}" for v in ssim]
    names = [_short(safe_text(v)) for v in labels] if labels is not None else []
    # cells wide enough for their captions: 8-px images are enlarged, large ones shrunk to MAX_PX
    scale = cell_scale(w, scale, values + names, fontsize=7)
    first = compose(np.concatenate([x[:ncols], xhat[:ncols]]), ncols)
    width, height = mosaic_size(first, scale, extra=(1.4, 0.55 + 0.15 * (labels is not None)))
    mean = float(np.mean(ssim)) if len(ssim) else float("nan")
    width = max(width, 3.6)
    title = wrap_title(f"Reconstructions (posterior mean), mean SSIM of these {n}: {mean:.3f}", width)
    fig = new_figure(width, height * blocks + 0.25 + 0.2 * (title.count("\n") + 1))
    axes = fig.subplots(blocks, 1, squeeze=False)[:, 0]
    for b, ax in enumerate(axes):
        s, e = b * ncols, min(n, (b + 1) * ncols)
        show_image(ax, compose(np.concatenate([x[s:e], xhat[s:e]]), ncols))
        ax.set_xticks(cell_centers(e - s, w), values[s:e], fontsize=7)
        ax.set_xlabel("SSIM of each reconstruction", fontsize=7, labelpad=2)
        ax.set_yticks(cell_centers(2, h), ["original", "reconstruction"], fontsize=8)
        ax.tick_params(length=0, pad=2)
        if labels is not None:
            top = ax.secondary_xaxis("top")
            top.set_xticks(cell_centers(e - s, w), names[s:e], fontsize=7)
            top.tick_params(length=0, pad=2)
            top.spines["top"].set_visible(False)
    fig.suptitle(title, fontsize=10)
    return fig


def _short(text: str, limit: int = 12) -> str:
    """A label cut to `limit` characters (with an ellipsis), so one long class name cannot widen every cell."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def samples_figure(panels: dict[str, object], nrow: int = 8, scale: float = 2.0) -> Figure:
    """Side-by-side sample grids, one axes per panel: {title: images (N, C, H, W)} (prior, GMM, ...)."""
    mosaics = {title: compose(images, nrow) for title, images in panels.items()}
    first = next(iter(mosaics.values()))
    size = as_images(next(iter(panels.values()))[:1]).shape[-1]
    width, height = mosaic_size(first, cell_scale(size, scale, min_cell=24), extra=(0.3, 0.6))
    shrink = min(1.0, MAX_PX / DPI / (width * len(mosaics)))  # side by side, all panels within MAX_PX
    width, height = width * shrink, (height - 0.6) * shrink + 0.6
    width = max([width] + [text_px(t, 9) / 100 + 0.4 for t in mosaics])  # every panel title fits its panel
    fig = new_figure(width * len(mosaics), height)
    axes = fig.subplots(1, len(mosaics), squeeze=False)[0]
    for ax, (title, mosaic) in zip(axes, mosaics.items(), strict=False):
        show_image(ax, mosaic)
        ax.set_title(safe_text(title), fontsize=9)
    return fig


def conditional_samples_figure(images, class_names: list[str], scale: float = 2.0) -> Figure:
    """Samples of a conditional model: one row per class, the class name on the left.

    images: (K, M, C, H, W), M samples for each of the K classes. One axes, one image.
    """
    arr = images if isinstance(images, np.ndarray) else images.detach().cpu().numpy()
    k, m = arr.shape[:2]
    images = as_images(arr.reshape(k * m, *arr.shape[2:]))
    mosaic = compose(images, m)
    width, height = mosaic_size(mosaic, cell_scale(images.shape[-1], scale, min_cell=24), extra=(1.4, 0.6))
    fig = new_figure(width, height)
    ax = fig.subplots()
    show_image(ax, mosaic)
    ax.set_yticks(cell_centers(k, images.shape[2]), [safe_text(c) for c in class_names], fontsize=8)
    ax.tick_params(length=0)
    ax.set_title("Samples from the prior, one row per class", fontsize=9)
    return fig


def quality_figure(values: dict[str, np.ndarray], labels=None, class_names: list[str] | None = None, title: str = "") -> Figure:
    """Per-image reconstruction quality (e.g. {'ssim': (N,), 'psnr': (N,), 'mse': (N,)}) as box plots per
    class (or one box without labels): one axes per metric."""
    fig = new_figure(3.2 * len(values) + 0.4, 3.4)
    axes = fig.subplots(1, len(values), squeeze=False)[0]
    for ax, (metric, v) in zip(axes, values.items(), strict=False):
        v = np.asarray(v, dtype=np.float64)
        if labels is not None and len(labels) == len(v):
            labels = np.asarray(labels)
            ks = [k for k in range(int(labels.max()) + 1 if len(labels) else 0) if (labels == k).any()]
            groups = [v[labels == k] for k in ks]
            names = [safe_text(class_names[k]) if class_names and k < len(class_names) else str(k) for k in ks]
        else:
            groups, names = [v], ["all"]
        ax.boxplot(groups, showfliers=False, widths=0.6)
        ax.set_xticks(range(1, len(names) + 1), names, fontsize=7, rotation=45 if len(names) > 8 else 0)
        ax.set_title(f"{metric.upper()} (mean {np.nanmean(v):.3g})", fontsize=9)
        if len(names) > 1:
            ax.set_xlabel("class", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
