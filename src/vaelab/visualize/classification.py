"""Classification figures: the confusion matrix, and accuracy against the number of labels per class."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from ..errors import VaelabError
from .style import new_figure, safe_text


def confusion_figure(confusion, class_names: list[str], title: str = "Confusion matrix") -> Figure:
    """Rows = true class, columns = predicted; cells coloured by the share of the true class and labelled
    with the count (and the share, for up to 15 classes). Two axes: the matrix and its colour bar."""
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise VaelabError(f"a confusion matrix must be square, got shape {cm.shape}", "give K x K counts")
    k = len(cm)
    names = [safe_text(c) for c in class_names] + [str(i) for i in range(len(class_names), k)]
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    side = min(11.0, max(3.6, 0.45 * k + 2.2))
    fig = new_figure(side + 0.9, side)
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                text = f"{int(cm[i, j])}" + (f"\n{share[i, j]:.0%}" if k <= 15 else "")
                ax.text(
                    j, i, text, ha="center", va="center", fontsize=7 if k <= 15 else 5,
                    color="white" if share[i, j] > 0.55 else "black",
                )
    ax.set_xticks(range(k), names[:k], fontsize=7, rotation=45 if k > 6 else 0, ha="right" if k > 6 else "center")
    ax.set_yticks(range(k), names[:k], fontsize=7)
    ax.set_xlabel("predicted class", fontsize=8)
    ax.set_ylabel("true class", fontsize=8)
    total = cm.sum()
    acc = np.trace(cm) / total if total else float("nan")
    ax.set_title(f"{safe_text(title)} (accuracy {acc:.1%}, {int(total)} images)", fontsize=9)
    cbar = fig.colorbar(im, ax=ax, shrink=0.8)
    cbar.set_label("share of the true class", fontsize=7)
    cbar.ax.tick_params(labelsize=6)
    return fig


def _budget_x(v) -> float | None:
    """labels_per_class as a number; 'all' (or None) -> None (drawn at the right end)."""
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    if isinstance(v, str) and v.strip().isdigit():
        return float(v)
    return None


def budget_figure(rows: list[dict], metric: str = "accuracy") -> Figure:
    """`metric` against labels per class, one line per method. rows: dicts with `labels_per_class`
    (a number, or 'all'), `metric`, optionally `method` and `<metric>_std` (error bars). One axes."""
    by_method: dict[str, list[tuple]] = {}
    for r in rows:
        if not isinstance(r.get(metric), (int, float)):
            continue
        by_method.setdefault(str(r.get("method", "classifier")), []).append(
            (_budget_x(r.get("labels_per_class")), float(r[metric]), r.get(f"{metric}_std"))
        )
    if not by_method:
        raise VaelabError(f"no rows with '{metric}' to plot", "run vaelab classify with --budget")
    numeric = [x for pts in by_method.values() for x, _, _ in pts if x is not None]
    right = (max(numeric) * 3 if numeric else 1.0)
    fig = new_figure(6.0, 3.8)
    ax = fig.subplots()
    for method, pts in sorted(by_method.items()):
        pts = sorted(((right if x is None else x), y, s) for x, y, s in pts)
        xs, ys, ss = zip(*pts, strict=False)
        err = [s if isinstance(s, (int, float)) else 0.0 for s in ss]
        ax.errorbar(xs, ys, yerr=err if any(err) else None, marker="o", markersize=4, capsize=3, label=safe_text(method))
    if numeric and max(numeric) / max(min(numeric), 1) > 5:
        ax.set_xscale("log")
    ticks = sorted({x for pts in by_method.values() for x, _, _ in pts if x is not None})
    labels = [f"{t:g}" for t in ticks]
    if any(x is None for pts in by_method.values() for x, _, _ in pts):
        ticks, labels = ticks + [right], labels + ["all"]
    ax.set_xticks(ticks, labels, fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("labelled examples per class", fontsize=8)
    ax.set_ylabel(metric, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title="method", title_fontsize=7)
    ax.set_title(f"{metric.capitalize()} against the label budget", fontsize=10)
    return fig
