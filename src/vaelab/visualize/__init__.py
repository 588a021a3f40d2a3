"""Figures. Functions take arrays (or a model) and return a `matplotlib.figure.Figure` (object-oriented
API, no pyplot state) or frame arrays; `RunFigures`/`render_run` make every figure of a run. Only the CLI
and the training callbacks write files."""

from .animate import encode_gif, encode_mp4, read_latent_snapshots, scatter_frames, traversal_sweep_frames
from .classification import budget_figure, confusion_figure
from .curves import curves_figure
from .eda import (
    class_distribution_figure,
    eda_figures,
    examples_figure,
    mean_images_figure,
    pixel_histogram_figure,
)
from .grid import make_grid, png_bytes, to_uint8
from .images import conditional_samples_figure, quality_figure, recon_figure, samples_figure, ssim_per_image
from .latent import (
    compare_traversals_figure,
    ellipses_figure,
    interpolate_latents,
    interpolation_figure,
    manifold_figure,
    manifold_latents,
    scatter_figure,
    traversal_figure,
    traversal_grid_figure,
)
from .run_figures import KINDS, Rendered, RunFigures, render_run
from .style import figure_array, figure_bytes

__all__ = [
    "KINDS",
    "Rendered",
    "RunFigures",
    "budget_figure",
    "class_distribution_figure",
    "compare_traversals_figure",
    "conditional_samples_figure",
    "confusion_figure",
    "curves_figure",
    "eda_figures",
    "ellipses_figure",
    "encode_gif",
    "encode_mp4",
    "examples_figure",
    "figure_array",
    "figure_bytes",
    "interpolate_latents",
    "interpolation_figure",
    "make_grid",
    "manifold_figure",
    "manifold_latents",
    "mean_images_figure",
    "pixel_histogram_figure",
    "png_bytes",
    "quality_figure",
    "read_latent_snapshots",
    "recon_figure",
    "render_run",
    "samples_figure",
    "scatter_figure",
    "scatter_frames",
    "ssim_per_image",
    "to_uint8",
    "traversal_figure",
    "traversal_grid_figure",
    "traversal_sweep_frames",
]
