"""Shared figure plumbing: Figures without pyplot, image panels, class colours, encoding to bytes.

Every figure is a `matplotlib.figure.Figure` built with the object-oriented API (no pyplot global state,
so figures are garbage-collected and thread-safe); rendering goes through the Agg canvas. Nothing here
writes files: `figure_bytes` returns the encoded image and the caller decides where it goes.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .grid import to_uint8

DPI = 100  # figure dpi; `figure_bytes` may render at another


def new_figure(width: float, height: float, dpi: int = DPI, layout: str | None = "constrained") -> Figure:
    """A Figure of `width` x `height` inches attached to an Agg canvas (so it can be drawn to arrays)."""
    fig = Figure(figsize=(width, height), dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def safe_text(s) -> str:
    """A user string (class name, file name) shown literally: '$' would start matplotlib mathtext."""
    return str(s).replace("$", r"\$")


def class_colors(k: int) -> list:
    """`k` distinct colours: tab10 up to 10 classes, tab20 up to 20, an evenly spaced rainbow beyond."""
    from matplotlib import colormaps

    if k <= 10:
        return [colormaps["tab10"](i) for i in range(k)]
    if k <= 20:
        return [colormaps["tab20"](i) for i in range(k)]
    return [colormaps["gist_rainbow"](i / max(k - 1, 1)) for i in range(k)]


def as_images(images) -> np.ndarray:
    """Images (N, C, H, W) as float tensor in [0, 1] or uint8 (tensor or array) -> uint8 numpy (N, C, H, W)."""
    if isinstance(images, np.ndarray) and images.dtype != np.uint8:
        images = torch.from_numpy(np.ascontiguousarray(images))
    return to_uint8(images)


def compose(images, ncols: int, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """(N, C, H, W) -> one (rows*(H+pad)-pad, cols*(W+pad)-pad, C) uint8 mosaic, row-major, no outer border.

    Cell (r, c) starts at pixel (r*(H+pad), c*(W+pad)); `cell_centers` gives the tick positions.
    """
    x = as_images(images)
    n, c, h, w = x.shape
    ncols = max(1, min(ncols, n)) if n else 1
    rows = max(1, -(-n // ncols))
    out = np.full((rows * (h + pad) - pad, ncols * (w + pad) - pad, c), pad_value, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        out[r * (h + pad) : r * (h + pad) + h, col * (w + pad) : col * (w + pad) + w] = x[i].transpose(1, 2, 0)
    return out


def cell_centers(count: int, size: int, pad: int = 2) -> np.ndarray:
    """Pixel centres of `count` cells of `size` pixels laid out by `compose` along one axis."""
    return np.arange(count) * (size + pad) + (size - 1) / 2


MAX_PX = 1400  # widest (and tallest) a mosaic is drawn, in screen pixels


def show_image(ax, mosaic: np.ndarray) -> None:
    """Draw a uint8 (H, W, C) mosaic at its native aspect, gray for one channel, without axis frame.

    Small images are enlarged with hard pixel edges; a mosaic larger than MAX_PX is shrunk with
    antialiasing (nearest-neighbour shrinking of photos aliases)."""
    img = mosaic[..., 0] if mosaic.shape[-1] == 1 else mosaic
    kwargs = {"cmap": "gray", "vmin": 0, "vmax": 255} if img.ndim == 2 else {}
    shrinks = max(img.shape[:2]) > MAX_PX
    ax.imshow(img, interpolation="antialiased" if shrinks else "nearest", **kwargs)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_xticks([])
    ax.set_yticks([])


MIN_CELL = 36  # smallest on-screen size of one image of a mosaic, in pixels (8-px images are enlarged)


def text_px(text, fontsize: float, dpi: int = DPI) -> float:
    """About how wide `text` draws in pixels (DejaVu Sans averages ~0.6 em per character)."""
    return max((len(line) for line in str(text).split("\n")), default=0) * fontsize * 0.6 * dpi / 72


def cell_scale(size: int, scale: float = 2.0, labels=(), fontsize: float = 7, min_cell: float = MIN_CELL) -> float:
    """Screen pixels per image pixel for cells of `size` pixels: `scale`, raised so that a cell is at least
    `min_cell` pixels and as wide as the longest of the `labels` drawn under or over it (so tick labels of
    small images do not run into each other). `mosaic_size` still caps the whole figure at MAX_PX."""
    need = max([min_cell] + [text_px(t, fontsize) + 6 for t in labels])
    return max(scale, need / max(size, 1))


def wrap_title(text: str, width_in: float, fontsize: float = 10, dpi: int = DPI) -> str:
    """`text` broken into lines that fit a figure `width_in` inches wide (a title is never cut off)."""
    import textwrap

    chars = max(12, int((width_in * dpi - 10) / (fontsize * 0.6 * dpi / 72)))
    return "\n".join(textwrap.wrap(text, chars)) if len(text) > chars else text


def mosaic_size(mosaic: np.ndarray, scale: float = 2.0, dpi: int = DPI, extra: tuple[float, float] = (0.6, 0.6)):
    """Inches for a figure showing `mosaic` at about `scale` screen pixels per image pixel, plus margins."""
    h, w = mosaic.shape[:2]
    scale = min(scale, MAX_PX / max(h, w, 1))  # large images (photos, big grids): cap the figure size
    return (w * scale / dpi + extra[0], h * scale / dpi + extra[1])


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int | None = None) -> bytes:
    """Encode a Figure as PNG, PDF or SVG bytes (in memory)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi or fig.dpi, facecolor="white", metadata=_metadata(fmt))
    return buf.getvalue()


def _metadata(fmt: str) -> dict:
    # no creation dates in the files: the same figure encodes to the same bytes
    if fmt == "png":
        return {"Software": None}
    if fmt == "pdf":
        return {"CreationDate": None, "Creator": None, "Producer": None}
    if fmt == "svg":
        return {"Date": None}
    return {}


def figure_array(fig: Figure) -> np.ndarray:
    """Render a Figure to an RGB uint8 array (H, W, 3), for animation frames."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def freeze_layout(fig: Figure) -> None:
    """Lay the figure out once and keep that layout: animation frames then redraw only the artists that
    change (constrained layout would be re-solved on every frame)."""
    fig.canvas.draw()
    fig.set_layout_engine("none")
