"""Anomaly figures: the flagged images, most anomalous first, and ROC curves of the scores."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from .style import as_images, cell_centers, compose, mosaic_size, new_figure, safe_text, show_image


def flagged_figure(
    images,
    scores: np.ndarray,
    threshold: float,
    score_name: str,
    *,
    labels: list[str] | None = None,
    max_images: int = 64,
    ncols: int = 8,
    scale: float = 2.0,
) -> Figure:
    """The images whose score lies above `threshold`, sorted by score, most anomalous (highest score, i.e.
    lowest likelihood for the likelihood scores) first, the score under each. When nothing is flagged the
    highest-scoring images are shown, and the title says so. images: (N, C, H, W); scores: (N,)."""
    x = as_images(images)
    s = np.asarray(scores, np.float64)
    order = np.argsort(-np.nan_to_num(s, nan=np.inf), kind="stable")
    flagged = int((~(s <= threshold)).sum())
    shown = order[: min(max_images, flagged if flagged else len(order))]
    n = len(shown)
    ncols = max(1, min(ncols, n))
    rows = max(1, math.ceil(n / ncols))
    h, w = x.shape[2:]
    mosaic = compose(x[shown[:ncols]], ncols) if n else np.full((h, w, x.shape[1]), 255, np.uint8)
    width, height = mosaic_size(mosaic, scale, extra=(0.5, 0.75))
    fig = new_figure(width, height * rows + 0.5)
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    for r, ax in enumerate(axes):
        idx = shown[r * ncols : (r + 1) * ncols]
        if len(idx) == 0:
            ax.set_axis_off()
            continue
        show_image(ax, compose(x[idx], ncols))
        ax.set_xticks(cell_centers(len(idx), w), [f"{s[i]:.3g}" for i in idx], fontsize=7)
        ax.tick_params(length=0)
        if labels is not None:
            top = ax.secondary_xaxis("top")
            top.set_xticks(cell_centers(len(idx), w), [safe_text(labels[i]) for i in idx], fontsize=7)
            top.tick_params(length=0)
            top.spines["top"].set_visible(False)
    if flagged:
        what = f"{flagged} of {len(s)} images above the threshold {threshold:.4g} of {safe_text(score_name)}"
        what += f"; the {n} highest shown" if flagged > n else ""
    else:
        what = f"no image above the threshold {threshold:.4g} of {safe_text(score_name)}; the {n} highest scores shown"
    import textwrap

    lines = textwrap.wrap(what, width=max(30, int(width * 13))) + ["ordered by score, most anomalous first (score under each image)"]
    fig.suptitle("\n".join(lines), fontsize=9)
    return fig


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str = "") -> Figure:
    """ROC curves, one line per score: {name: (fpr, tpr, auroc)}, with the chance diagonal and the 95% TPR line."""
    fig = new_figure(5.2, 4.6)
    ax = fig.subplots()
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, lw=1.6, label=f"{safe_text(name)} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="chance")
    ax.axhline(0.95, color="0.75", lw=0.8, ls=":")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-positive rate (normal images flagged)", fontsize=9)
    ax.set_ylabel("true-positive rate (anomalies flagged)", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    ax.set_title(title or "ROC of the anomaly scores", fontsize=10)
    return fig
