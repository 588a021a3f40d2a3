"""Image conversions on uint8 tensors (what torchvision's transforms would do, with torch and Pillow)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, C, H, W) uint8 -> `channels` channels: gray is repeated to RGB; RGB becomes ITU-R 601 luma."""
    c = images.shape[1]
    if c == channels:
        return images
    if channels == 3 and c == 1:
        return images.expand(-1, 3, -1, -1).contiguous()
    if channels == 1 and c >= 3:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images[:, :3].float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    if channels == 3 and c == 4:
        return images[:, :3].contiguous()
    raise ValueError(f"cannot convert {c} channels to {channels}")


def center_crop_square(images: torch.Tensor) -> torch.Tensor:
    h, w = images.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return images[..., top : top + s, left : left + s]


def resize_images(images: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """Center-crop to square, then antialiased bilinear resize to (size, size); stays uint8.

    Works in chunks so a large set never has a full float copy in memory.
    """
    images = center_crop_square(images)
    if images.shape[-1] == size:
        return images.contiguous()
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for s in range(0, images.shape[0], chunk):
        x = images[s : s + chunk].float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[s : s + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out
