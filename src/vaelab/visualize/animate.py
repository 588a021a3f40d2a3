"""Animations: the latent scatter evolving over the epochs, and a traversal sweep; as frame arrays,
encoded to GIF (Pillow) or MP4 (imageio-ffmpeg, when installed) in memory.

Frames come from one Figure whose artists are updated in place (no new figure per frame).
"""

from __future__ import annotations

import importlib.util
import io
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import VaelabError
from .images import decode
from .latent import _legend, check_dims
from .style import (
    as_images,
    class_colors,
    compose,
    figure_array,
    freeze_layout,
    new_figure,
    safe_text,
    show_image,
)

LATENTS_DIR = "latents"


def read_latent_snapshots(run_dir: str | Path) -> list[tuple[int, np.ndarray, np.ndarray | None]]:
    """The per-epoch validation latents a training run saved (RUN/latents/epoch_N.npz: `z`, `labels`),
    sorted by epoch: [(epoch, z (N, D), labels (N,) or None)]. Unreadable files are skipped."""
    folder = Path(run_dir) / LATENTS_DIR
    out = []
    for path in folder.glob("epoch_*.npz") if folder.is_dir() else []:
        m = re.fullmatch(r"epoch_(\d+)\.npz", path.name)
        if not m:
            continue
        try:
            with np.load(path, allow_pickle=False) as f:
                z = np.asarray(f["z"], dtype=np.float64)
                labels = np.asarray(f["labels"]) if "labels" in f.files else None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):  # a damaged file: left out
            continue
        if z.ndim == 2 and len(z):
            out.append((int(m.group(1)), z, labels))
    return sorted(out, key=lambda t: t[0])


def _pick_frames(n: int, max_frames: int) -> list[int]:
    if n <= max_frames:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, max_frames)})


def scatter_frames(
    snapshots: list[tuple[int, np.ndarray, np.ndarray | None]],
    class_names: list[str] | None = None,
    max_frames: int = 60,
    size: tuple[float, float] = (5.6, 4.4),
    dpi: int = 80,
) -> list[np.ndarray]:
    """One RGB frame (H, W, 3) per epoch of the latent scatter, with fixed axes so that motion is visible.
    Latents of more than 2 dims are projected on the principal axes of the last epoch (the same basis for
    every frame, so the picture does not flip)."""
    if not snapshots:
        raise VaelabError("the run saved no per-epoch latents", "train with train.save_latents=true")
    snapshots = [snapshots[i] for i in _pick_frames(len(snapshots), max_frames)]
    d = snapshots[-1][1].shape[1]
    if d >= 3:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2).fit(snapshots[-1][1])
        xy = [pca.transform(z) for _, z, _ in snapshots]
        axis_labels = ("PC 1 (last epoch)", "PC 2 (last epoch)")
    elif d == 2:
        xy = [z for _, z, _ in snapshots]
        axis_labels = ("$z_{0}$", "$z_{1}$")
    else:
        xy = [np.stack([z[:, 0], np.zeros(len(z))], 1) for _, z, _ in snapshots]
        axis_labels = ("$z_{0}$", "")
    allxy = np.concatenate(xy)
    lo, hi = np.percentile(allxy, 0.5, axis=0), np.percentile(allxy, 99.5, axis=0)
    pad = 0.08 * np.maximum(hi - lo, 1e-3)
    labels0 = snapshots[-1][2]
    k = max(len(class_names or []), int(labels0.max()) + 1 if labels0 is not None and len(labels0) else 0)
    names = list(class_names or []) + [str(i) for i in range(len(class_names or []), k)]
    colors = class_colors(max(k, 1))
    fig = new_figure(*size, dpi=dpi)
    ax = fig.subplots()
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    ax.set_xlabel(axis_labels[0], fontsize=8)
    ax.set_ylabel(axis_labels[1], fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25)
    point = float(np.clip(3000 / max(len(allxy) / len(xy), 1), 2, 30))
    groups = list(range(k)) if k else [None]
    artists = {
        c: ax.scatter([], [], s=point, alpha=0.7, linewidths=0, color=colors[c or 0], label=safe_text(names[c]) if c is not None else None)
        for c in groups
    }
    if k:
        _legend(fig, [artists[c] for c in groups])
    title = ax.set_title("", fontsize=10)
    title.set_text(f"Validation latents, epoch {snapshots[-1][0]}")
    freeze_layout(fig)
    frames = []
    for (epoch, _, labels), pts in zip(snapshots, xy, strict=False):
        for c, art in artists.items():
            sel = pts if c is None else pts[labels == c] if labels is not None else pts[:0]
            art.set_offsets(sel if len(sel) else np.zeros((0, 2)))
        title.set_text(f"Validation latents, epoch {epoch}")
        frames.append(figure_array(fig))
    return frames


def traversal_sweep_frames(
    model,
    base: np.ndarray | None = None,
    dims: list[int] | None = None,
    values: np.ndarray | None = None,
    y: int | None = None,
    scale: float = 3.0,
    dpi: int = 80,
) -> list[np.ndarray]:
    """Frames of every chosen latent dimension swept from -3 to +3 and back around `base` (default the
    origin): frame t shows one image per dimension, at base + values[t] along it."""
    d = model.latent_dim
    dims = check_dims(range(min(d, 10)) if dims is None else dims, d)
    values = np.concatenate([np.linspace(-3, 3, 17), np.linspace(3, -3, 17)[1:-1]]) if values is None else np.asarray(values)
    base = np.zeros(d, np.float32) if base is None else np.asarray(base, dtype=np.float32).reshape(d)
    z = np.repeat(base[None], len(values) * len(dims), 0)  # (T * len(dims), D), frame-major
    for t, v in enumerate(values):
        for r, k in enumerate(dims):
            z[t * len(dims) + r, k] += v
    images = as_images(decode(model, z, None if y is None else np.full(len(z), y)))
    per = images.reshape(len(values), len(dims), *images.shape[1:])
    h, w = images.shape[2:]
    first = compose(per[0], len(dims), pad=4)
    scale = max(scale, min(5.0, 320 / first.shape[1]))  # few dims: larger images, so the frame is not tiny
    fig = new_figure(first.shape[1] * scale / dpi + 0.3, first.shape[0] * scale / dpi + 0.8, dpi=dpi)
    ax = fig.subplots()
    show_image(ax, first)
    im = ax.images[0]
    ax.set_xticks(np.arange(len(dims)) * (w + 4) + (w - 1) / 2, [f"$z_{{{k}}}$" for k in dims], fontsize=8)
    ax.tick_params(length=0)
    title = ax.set_title(f"traversal: each dimension at {values[0]:+.2f}", fontsize=9)
    freeze_layout(fig)
    frames = []
    for t, v in enumerate(values):
        mosaic = compose(per[t], len(dims), pad=4)
        im.set_data(mosaic[..., 0] if mosaic.shape[-1] == 1 else mosaic)
        title.set_text(f"traversal: each dimension at {v:+.2f}")
        frames.append(figure_array(fig))
    return frames


def encode_gif(frames: list[np.ndarray], fps: float = 4.0, loop: bool = True) -> bytes:
    """RGB frames (H, W, 3) -> an animated GIF (Pillow, adaptive palette per frame)."""
    from PIL import Image

    if not frames:
        raise VaelabError("an animation needs at least one frame")
    images = [Image.fromarray(f).convert("P", palette=Image.Palette.ADAPTIVE, colors=256) for f in frames]
    buf = io.BytesIO()
    images[0].save(
        buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0 if loop else 1
    )
    return buf.getvalue()


def video_available() -> bool:
    """True when imageio and its ffmpeg binary package (imageio-ffmpeg) are installed."""
    return importlib.util.find_spec("imageio") is not None and importlib.util.find_spec("imageio_ffmpeg") is not None


def encode_mp4(frames: list[np.ndarray], fps: float = 4.0) -> bytes:
    """RGB frames -> H.264 MP4 bytes (imageio-ffmpeg). Frames are padded with white to a multiple of 16
    pixels, which the yuv420p encoder needs."""
    if not video_available():
        from ..extras import require

        require("video")
    import imageio.v3 as iio

    if not frames:
        raise VaelabError("an animation needs at least one frame")
    h, w = frames[0].shape[:2]
    H, W = -(-h // 16) * 16, -(-w // 16) * 16
    stack = np.full((len(frames), H, W, 3), 255, np.uint8)
    for i, f in enumerate(frames):
        stack[i, :h, :w] = f
    return iio.imwrite("<bytes>", stack, extension=".mp4", fps=fps, codec="libx264", macro_block_size=16)
