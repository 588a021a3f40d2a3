"""Figures. Functions take arrays (or a model) and return a `matplotlib.figure.Figure` (object-oriented
API, no pyplot state) or frame arrays; `RunFigures`/`render_run` make every figure of a run. Only the CLI
and the training callbacks write files.

Names are imported on first use, so `vaelab.visualize.grid` (used by training) does not load matplotlib.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "animate": ["encode_gif", "encode_mp4", "read_latent_snapshots", "scatter_frames", "traversal_sweep_frames"],
    "classification": ["budget_figure", "confusion_figure"],
    "curves": ["curves_figure"],
    "eda": ["class_distribution_figure", "eda_figures", "examples_figure", "mean_images_figure", "pixel_histogram_figure"],
    "grid": ["make_grid", "png_bytes", "to_uint8"],
    "images": ["conditional_samples_figure", "quality_figure", "recon_figure", "samples_figure", "ssim_per_image"],
    "latent": [
        "compare_traversals_figure",
        "ellipses_figure",
        "interpolate_latents",
        "interpolation_figure",
        "manifold_figure",
        "manifold_latents",
        "scatter_figure",
        "traversal_figure",
        "traversal_grid_figure",
        "traversal_images",
    ],
    "run_figures": ["KINDS", "Rendered", "RunFigures", "render_run"],
    "style": ["figure_array", "figure_bytes"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
