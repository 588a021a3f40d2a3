"""Image grids as arrays (what torchvision.utils.make_grid does), for training snapshots and `vaelab sample`."""

from __future__ import annotations

import io
import math

import numpy as np
import torch


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Images in [0, 1] (float) or 0..255 (uint8), (N, C, H, W) -> uint8 (N, C, H, W) numpy."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu()
        if images.dtype != torch.uint8:
            images = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
        return images.numpy()
    if images.dtype != np.uint8:
        images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
    return images


def make_grid(images, nrow: int | None = None, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """(N, C, H, W) -> one (rows*H, cols*W, C) uint8 image, `nrow` images per row (default: square)."""
    x = to_uint8(images)
    n, c, h, w = x.shape
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, c), pad_value, np.uint8)
    for i in range(n):
        r, col = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = x[i].transpose(1, 2, 0)
    return grid


def png_bytes(grid: np.ndarray, scale: int = 1) -> bytes:
    """Encode an (H, W, C) uint8 array as PNG; `scale` enlarges small images with nearest neighbour."""
    from PIL import Image

    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def labelled_png(
    grid: np.ndarray,
    title: str,
    rows: list[tuple[int, int, str]] | None = None,
    columns: list[tuple[int, int, str]] | None = None,
    scale: int = 1,
) -> bytes:
    """A grid as PNG with its title above, a label left of each band of rows and over each band of columns.

    rows / columns: (first pixel, last pixel, label) in the grid's own pixels (before `scale`). The canvas
    grows to fit the labels (never the images), so an 8-px grid still shows its whole title. The title is
    also stored as the PNG's Title text chunk. Uses Pillow only (training does not load matplotlib).
    """
    from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).convert("RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    title_font, font = ImageFont.load_default(size=13), ImageFont.load_default(size=11)
    probe = ImageDraw.Draw(img)

    def size(text, f):
        left, top, right, bottom = probe.textbbox((0, 0), text, font=f)
        return right - left, bottom - top

    left = max([0] + [size(t, font)[0] + 10 for _, _, t in rows or []])
    col_band = 16 if columns else 0
    top = size(title, title_font)[1] + 12 + col_band
    width = max(left + img.width + 4, size(title, title_font)[0] + 12)
    canvas = Image.new("RGB", (width, top + img.height + 4), "white")
    canvas.paste(img, (left, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 4), title, fill="black", font=title_font)
    for a, b, text in rows or []:
        w, h = size(text, font)
        draw.text((left - w - 6, top + (a + b) * scale / 2 - h / 2 - 2), text, fill=(60, 60, 60), font=font)
    for a, b, text in columns or []:
        w, _ = size(text, font)
        draw.text((left + (a + b) * scale / 2 - w / 2, top - col_band), text, fill=(60, 60, 60), font=font)
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", title)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()
