"""Comparison figures of a study: each metric against each varied value, and the latent traversal grids
of all trials side by side. Functions return matplotlib Figures (built without pyplot, so no global
state and no display); the CLI saves them."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from .grid import StudyPlan, short_names
from .results import Results, _is_num

MAX_PANELS = 6


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def png_bytes(fig, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _dimensions(plan: StudyPlan) -> list[str]:
    if plan.is_search:
        return list(plan.search["space"])
    return (["variant"] if plan.variants else []) + list(plan.grid)


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _panels(results: Results):
    cols = results.metric_columns()
    if any(c.key == "test_total" for c in cols):  # with test numbers the validation ones only repeat them
        cols = [c for c in cols if c.key not in ("val_recon", "val_kl")]
    return cols[:MAX_PANELS]


def metric_figures(results: Results, plan: StudyPlan) -> dict[str, Any]:
    """One figure per varied dimension ('variant', each grid key, or each searched key): a panel per
    metric, the metric against the dimension's values; one line per combination of the other varied
    values, mean ± std over seeds. Search studies get scatter plots (pruned trials marked)."""
    panels = _panels(results)
    dims = _dimensions(plan)
    short = short_names([d for d in dims if d != "variant"])
    figures: dict[str, Any] = {}
    if not panels:
        return figures
    for dim in dims:
        name = "variant" if dim == "variant" else short[dim]
        ncols = min(3, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        fig = _figure(4.2 * ncols, 3.2 * nrows)
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax, col in zip(axes, panels, strict=False):
            if plan.is_search:
                _scatter(ax, results.rows, dim, col.key)
            else:
                _lines(ax, results.rows, dim, [d for d in dims if d != dim], col.key, short)
            ax.set_title(col.header)
            ax.set_xlabel(name)
            ax.grid(alpha=0.3)
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        handles, labels = axes[0].get_legend_handles_labels()
        if len(labels) > 1:
            fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize="small")
        fig.suptitle(f"{plan.name}: metrics against {name}")
        figures[f"metric_vs_{name}"] = fig
    return figures


def _x_axis(values: list) -> tuple[bool, list]:
    """(numeric?, ordered distinct values)."""
    distinct: list = []
    for v in values:
        if v not in distinct:
            distinct.append(v)
    numeric = all(_is_num(v) for v in distinct)
    return numeric, sorted(distinct) if numeric else distinct


def _set_x(ax, numeric: bool, order: list) -> None:
    if numeric:
        positive = [v for v in order if v > 0]
        if len(positive) == len(order) and len(order) > 2 and max(order) / min(order) >= 20:
            ax.set_xscale("log")
        ax.set_xticks(order, [_label(v) for v in order])
    else:
        ax.set_xticks(range(len(order)), [_label(v) for v in order], rotation=30 if len(order) > 3 else 0, ha="right" if len(order) > 3 else "center")


def _lines(ax, rows: list[dict], dim: str, others: list[str], metric: str, short: dict) -> None:
    done = [r for r in rows if r.get("status") == "complete" and _is_num(r.get(metric)) and dim in r]
    if not done:
        return
    numeric, order = _x_axis([r[dim] for r in done])
    groups: dict[tuple, list[dict]] = {}
    for r in done:
        groups.setdefault(tuple(_label(r.get(o)) for o in others), []).append(r)
    for gkey, members in groups.items():
        xs, means, stds = [], [], []
        for x in order:
            vals = [m[metric] for m in members if m[dim] == x]
            if vals:
                xs.append(x if numeric else order.index(x))
                means.append(float(np.mean(vals)))
                stds.append(float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0)
        label = ", ".join(f"{'variant' if o == 'variant' else short[o]}={v}" for o, v in zip(others, gkey, strict=True)) or None
        ax.errorbar(xs, means, yerr=stds if any(stds) else None, marker="o", capsize=3, label=label,
                    linestyle="-" if numeric else "none")
    _set_x(ax, numeric, order)


def _scatter(ax, rows: list[dict], dim: str, metric: str) -> None:
    for status, marker, color in (("complete", "o", "C0"), ("pruned", "x", "C3")):
        pts = [(r[dim], r[metric]) for r in rows if r.get("status") == status and _is_num(r.get(metric)) and _is_num(r.get(dim))]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.scatter(xs, ys, marker=marker, color=color, label=status)
    values = [r[dim] for r in rows if _is_num(r.get(dim))]
    if values and min(values) > 0 and max(values) / min(values) >= 20:
        ax.set_xscale("log")


# ---------------------------------------------------------------------------------------------------------
# latent traversals


def traversal_image(model, max_dims: int = 10, steps: int = 9, span: float = 3.0, label: int = 0) -> np.ndarray:
    """Decode z = 0 with one latent dimension at a time swept over [-span, span]: a row per dimension
    (the first `max_dims`), `steps` columns. Conditional models decode class `label`. -> uint8 (H, W, C)."""
    import torch

    from ..visualize.grid import make_grid

    dims = min(model.latent_dim, max_dims)
    device = next(model.parameters()).device
    sweep = torch.linspace(-span, span, steps)
    z = torch.zeros(dims * steps, model.latent_dim)
    for d in range(dims):
        z[d * steps : (d + 1) * steps, d] = sweep
    y = torch.full((len(z),), label, dtype=torch.long, device=device) if model.conditional else None
    images = model.generate(z.to(device), y)  # (dims*steps, C, H, W) in [0, 1]
    return make_grid(images, nrow=steps)


def traversal_panels(run_dirs: dict[str, str | Path], notes: dict[str, str] | None = None, **kwargs) -> list[tuple[str, np.ndarray]]:
    """(trial name, traversal image) for each trained run directory (best checkpoint); `notes` adds a line
    under a trial's name (the study's active units and total correlation of that model)."""
    from ..run import load_run

    panels = []
    for name, run_dir in run_dirs.items():
        run = load_run(run_dir)
        note = (notes or {}).get(name)
        title = f"{name} (z={run.model.latent_dim})" + (f"\n{note}" if note else "")
        panels.append((title, traversal_image(run.model, **kwargs)))
    return panels


def traversal_note(row: dict) -> str:
    """'AU 4, TC 1.23 nats, MIG 0.120': what a results row measured about the code of its model (the active
    units and the total correlation of the aggregate posterior need no factors; MIG is there on data with
    factors), for the caption of its traversal grid."""
    parts = []
    if row.get("active_units") is not None:
        parts.append(f"AU {row['active_units']:g}")
    if row.get("total_corr") is not None:
        parts.append(f"TC {row['total_corr']:.2f} nats")
    if row.get("mig") is not None:
        parts.append(f"MIG {row['mig']:.3f}")
    return ", ".join(parts)


def traversal_figure(panels: list[tuple[str, np.ndarray]], title: str = "latent traversals", ncols: int | None = None):
    """The traversal grids of all trials side by side (rows: latent dims, columns: -3..3)."""
    n = len(panels)
    ncols = ncols or min(n, 4)
    nrows = math.ceil(n / ncols)
    tallest = max(img.shape[0] / img.shape[1] for _, img in panels)
    from ..visualize.style import wrap_title

    width = max(3.4 * ncols, 4.0)
    text = wrap_title(f"{title} (z = 0; each row sweeps one latent dimension over [-3, 3])", width, 12)
    fig = _figure(width, 3.4 * tallest * nrows + 0.6 + 0.25 * text.count("\n"))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, (name, img) in zip(axes, panels, strict=False):
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(name, fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel("latent dim" if ax is axes[0] else "")
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(text)
    return fig
