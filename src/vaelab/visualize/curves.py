"""Training curves from metrics.jsonl rows: total loss, reconstruction (with the validation SSIM when the
loss has an SSIM term) and KL, train and val, and the lr."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..errors import VaelabError
from .style import new_figure

PANELS = (
    ("loss", "total loss (nats / image)"),
    ("recon", "reconstruction (nats / image)"),
    ("kl", "KL (nats / image)"),
)


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of the rows that have a finite `key`."""
    pts = [(r["epoch"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    if not pts:
        return np.zeros(0), np.zeros(0)
    e, v = zip(*pts, strict=False)
    return np.asarray(e, dtype=float), np.asarray(v, dtype=float)


def _robust_top(values: list[np.ndarray]) -> float | None:
    """An upper y-limit that keeps a huge first epoch from flattening the rest of the curve (or None)."""
    tails = [v[1:] for v in values if len(v) >= 4]
    if not tails:
        return None
    top = max(float(t.max()) for t in tails)
    first = max(float(v[0]) for v in values if len(v))
    bottom = min(float(v.min()) for v in values if len(v))
    return top + 0.15 * (top - bottom) if first > top + 1.0 * (top - bottom) else None


def curves_figure(rows: list[dict], title: str = "Training curves") -> Figure:
    """Loss terms for train and val against epoch (3 axes) and the learning rate (a 4th axes, with the KL
    weight on a twin axis when it changes). The best validation epoch is marked on each loss axes."""
    if not rows:
        raise VaelabError("there are no training epochs to plot", "train the run first (vaelab train)")
    fig = new_figure(9.0, 6.0)
    axes = fig.subplots(2, 2).ravel()
    e_val, v_val = _series(rows, "val/loss")
    best = e_val[int(np.argmin(v_val))] if len(v_val) else None
    for ax, (key, label) in zip(axes, PANELS, strict=False):
        plotted = []
        for split, color in (("train", "tab:blue"), ("val", "tab:orange")):
            e, v = _series(rows, f"{split}/{key}")
            if len(v):
                ax.plot(e, v, color=color, marker="o" if len(v) <= 30 else None, markersize=3, label=split)
                plotted.append(v)
            if key == "loss":  # with beta != 1 the objective is not the ELBO: show -ELBO too
                ee, ev = _series(rows, f"{split}/elbo")
                if len(ev) and len(v) == len(ev) and np.max(np.abs(ev - v)) > 1e-3 * max(1.0, np.max(np.abs(v))):
                    ax.plot(ee, ev, color=color, linestyle=":", label=f"{split} -ELBO")
                    plotted.append(ev)
        top = _robust_top(plotted)
        if top is not None:
            ax.set_ylim(top=top)
            ax.text(0.5, 0.97, "first epoch above the top", transform=ax.transAxes, ha="center", va="top", fontsize=6, color="gray")
        if best is not None:
            ax.axvline(best, color="gray", linestyle="--", linewidth=0.8, label=f"best val (epoch {best:g})")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if plotted:
            ax.legend(fontsize=7)
    es, ssim = _series(rows, "val/ssim")  # logged when the loss has an SSIM term
    if len(ssim):
        twin = axes[1].twinx()
        twin.plot(es, ssim, color="tab:red", linestyle="--", marker="o" if len(ssim) <= 30 else None, markersize=2, label="val SSIM")
        twin.set_ylabel("val SSIM", fontsize=8, color="tab:red")
        twin.tick_params(labelsize=7)
        twin.legend(fontsize=7, loc="center right")
    ax = axes[3]
    e, lr = _series(rows, "lr")
    if len(lr):
        ax.plot(e, lr, color="tab:green", marker="o" if len(lr) <= 30 else None, markersize=3)
        if np.all(lr > 0) and lr.max() / lr.min() > 20:
            ax.set_yscale("log")
        elif np.ptp(lr) == 0:  # a constant lr: show it against zero, not as a wobbling offset axis
            ax.set_ylim(0, lr[0] * 1.5 if lr[0] > 0 else 1)
            ax.text(0.5, 0.5, f"constant {lr[0]:.3g}", transform=ax.transAxes, ha="center", fontsize=8, color="gray")
    ax.set_title("learning rate", fontsize=9)
    ax.set_xlabel("epoch", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ek, kw = _series(rows, "kl_weight")
    if len(kw) and np.ptp(kw) > 0:
        twin = ax.twinx()
        twin.plot(ek, kw, color="tab:purple", linestyle="--")
        twin.set_ylabel("KL weight", fontsize=8, color="tab:purple")
        twin.tick_params(labelsize=7)
    for ax in axes:  # epochs are whole numbers: no 1.2, 1.4 ... ticks on a short run
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    fig.suptitle(title, fontsize=10)
    return fig
