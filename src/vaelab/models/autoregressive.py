"""An autoregressive decoder head: p(x|z) = prod_i p(x_i | x_<i, z), the PixelVAE idea (Gulrajani et al. 2017).

The base decoder (MLP or conv) maps z to one value per pixel, as in any VAE. The head refines that value
with the pixels that come before it in raster order (rows top to bottom, columns left to right, channels
R, G, B), through masked convolutions (van den Oord et al. 2016, "Pixel recurrent neural networks", sec. 3.4):

    h_1   = act(MaskedConv_A(2x - 1) + Conv(base))        # A: the centre pixel's own value is hidden
    h_l+1 = h_l + act(MaskedConv_B(h_l))                   # B: the centre is visible (its earlier channels)
    out   = base + MaskedConv_B^1x1(h_L)                   # zero at initialisation: starts as the base decoder

A small, local receptive field (a few rows above) is deliberate: the head models the texture a factorized
decoder cannot (neighbouring grey levels agree), while the global content still has to go through z
(the "lossy" code of Chen et al. 2017). Training and scoring are one parallel pass with the true pixels as
context (teacher forcing). Generating is sequential, one pixel (and channel) at a time, each set to the
likelihood's mean; it only recomputes the window of rows and columns that the next pixel can see, so it
costs about (reach / size)^2 of a full pass per pixel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def raster_mask(kind: str, c_in: int, c_out: int, kernel: int, channels: int) -> torch.Tensor:
    """The (c_out, c_in, k, k) 0/1 mask of a causal convolution over images with `channels` colour channels.

    Pixels below the centre row, and right of the centre on its row, are hidden. At the centre, feature
    channels are split into `channels` groups (R, G, B); an output in group g sees inputs of groups < g
    (mask 'A', the first layer: a pixel never sees its own value) or <= g (mask 'B', the layers after)."""
    if kind not in ("A", "B"):
        raise ValueError(f"mask kind {kind!r}: use 'A' or 'B'")
    c = kernel // 2
    mask = torch.ones(c_out, c_in, kernel, kernel)
    mask[:, :, c, c + 1 :] = 0
    mask[:, :, c + 1 :, :] = 0
    g_out = (torch.arange(c_out) * channels) // c_out
    g_in = (torch.arange(c_in) * channels) // c_in
    seen = g_in[None, :] < g_out[:, None] if kind == "A" else g_in[None, :] <= g_out[:, None]
    mask[:, :, c, c] = seen.float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """A 'same'-padded convolution whose kernel is multiplied by a `raster_mask`."""

    def __init__(self, kind: str, c_in: int, c_out: int, kernel: int, channels: int):
        super().__init__(c_in, c_out, kernel, padding=kernel // 2)
        self.register_buffer("mask", raster_mask(kind, c_in, c_out, kernel, channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PixelCNNHead(nn.Module):
    """Refines the base decoder's per-pixel output with the pixels before it (see the module docstring)."""

    def __init__(self, channels: int, width: int, layers: int, kernel: int):
        super().__init__()
        if kernel % 2 == 0 or kernel < 3:
            raise ValueError("the autoregressive head's kernel must be odd and at least 3")
        width = max(width, channels)  # every colour channel needs a group of features
        self.channels, self.kernel, self.layers = channels, kernel, layers
        self.inp = MaskedConv2d("A", channels, width, kernel, channels)
        self.cond = nn.Conv2d(channels, width, kernel, padding=kernel // 2)  # sees the base map all around
        self.body = nn.ModuleList(MaskedConv2d("B", width, width, 3, channels) for _ in range(layers - 1))
        self.out = MaskedConv2d("B", width, channels, 1, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.act = nn.LeakyReLU(0.2)

    @property
    def reach(self) -> tuple[int, int]:
        """(rows above / columns either side that the output at one pixel depends on, rows below of the base map)."""
        return self.kernel // 2 + (len(self.body)), self.kernel // 2

    def forward(self, base: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """base: (B, C, H, W) base-decoder output; context: (B, C, H, W) pixels in [0, 1] -> (B, C, H, W)."""
        h = self.act(self.inp(context.to(base.dtype) * 2.0 - 1.0) + self.cond(base))
        for layer in self.body:
            h = h + self.act(layer(h))
        return base + self.out(h)

    @torch.no_grad()
    def generate(self, base: torch.Tensor, mean: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Decode pixel by pixel, each set to ``mean(param)``; returns the params (B, C, H, W), whose mean is
        the generated image. Each step recomputes only the window the next pixel depends on: the result is
        the same as a full teacher-forced pass over the generated image (tested)."""
        b, c, h, w = base.shape
        x = torch.zeros_like(base)
        out = torch.zeros_like(base)
        up, down = self.reach
        side = up  # columns either side: the first layer's half-width plus one per 3x3 layer
        for i in range(h):
            r0, r1 = max(0, i - up), min(h, i + down + 1)
            for j in range(w):
                c0, c1 = max(0, j - side), min(w, j + side + 1)
                for ch in range(c):
                    p = self.forward(base[:, :, r0:r1, c0:c1], x[:, :, r0:r1, c0:c1])[:, ch, i - r0, j - c0]
                    out[:, ch, i, j] = p
                    x[:, ch, i, j] = mean(p).to(x.dtype)
        return out


__all__ = ["MaskedConv2d", "PixelCNNHead", "raster_mask"]
