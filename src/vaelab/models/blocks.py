"""Encoder and decoder networks, sized from ``image_size`` and ``channels`` (never hard-coded to 28/32/64).

`ARCHS` maps an architecture name to a function ``(cfg) -> (encoder, decoder)``. An encoder maps
(B, C, H, W) [+ one-hot (B, K)] to (B, 2*D) (mean and log-variance); a decoder maps (B, D) [+ (B, K)] to
(B, C, H, W) likelihood parameters. Conditional models concatenate the one-hot label to the vector that
enters the first linear layer of each side.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..errors import VaelabError

ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True),
    "tanh": nn.Tanh,  # the IWAE paper's MLPs (Burda et al. 2016)
}


def glorot_(*nets: nn.Module) -> None:
    """Every linear and conv weight of ``nets`` from Glorot & Bengio's (2010, eq. 16) uniform
    U(-a, a), a = sqrt(6 / (fan_in + fan_out)), biases zero: the initialisation of Burda et al. 2016's tanh MLPs.
    PyTorch's default draws U(+-1/sqrt(fan_in)), about half as wide for MNIST's 784-200 layer; a deep tanh stack
    then starts with shrinking signals (the two-layer VAE of docs/families.md sat on the mean-image plateau for
    seven epochs with it, and left it in the second with this)."""
    for net in nets:
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


# model.init -> how the encoder, decoder and the MLPs between stochastic layers start (the posterior's flow,
# the prior and the autoregressive head keep their own initialisation)
INITS = {"torch": lambda *nets: None, "glorot": glorot_}


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


# ---------------------------------------------------------------------------------------------------------
# MLP


class MLPEncoder(nn.Module):
    """(B, C, H, W) -> flatten -> hidden... -> (B, 2D). E.g. 784-512-256-2D as in the MNIST seed projects."""

    def __init__(self, in_features: int, hidden: list[int], latent_dim: int, num_classes: int, act: str, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features + num_classes
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[act]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 2 * latent_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = x.flatten(1)  # (B, C*H*W)
        if y is not None:
            h = torch.cat([h, y], dim=1)
        return self.head(self.body(h))


class MLPDecoder(nn.Module):
    """(B, D) -> hidden (reversed)... -> (B, C, H, W)."""

    def __init__(self, shape: tuple[int, int, int], hidden: list[int], latent_dim: int, num_classes: int, act: str, dropout: float):
        super().__init__()
        self.shape = shape
        layers: list[nn.Module] = []
        width = latent_dim + num_classes
        for h in reversed(hidden):
            layers += [nn.Linear(width, h), ACTIVATIONS[act]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, math.prod(shape)))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is not None:
            z = torch.cat([z, y], dim=1)
        return self.body(z).view(-1, *self.shape)


def build_mlp(cfg) -> tuple[nn.Module, nn.Module]:
    shape = (cfg.channels, cfg.image_size, cfg.image_size)
    k = cfg.num_classes if cfg.conditional else 0
    enc = MLPEncoder(math.prod(shape), cfg.hidden, cfg.latent_dim, k, cfg.activation, cfg.dropout)
    dec = MLPDecoder(shape, cfg.hidden, cfg.latent_dim, k, cfg.activation, cfg.dropout)
    return enc, dec


# ---------------------------------------------------------------------------------------------------------
# convolutional


class ResBlock(nn.Module):
    """act(x + norm(conv3x3(act(norm(conv3x3(x)))))): the basic residual block of He et al. (2016). It keeps
    channels and size, so it adds depth at one resolution without changing any shape."""

    def __init__(self, channels: int, norm: str, act: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=norm == "none"),
            norm_layer(norm, channels),
            ACTIVATIONS[act](),
            nn.Conv2d(channels, channels, 3, padding=1, bias=norm == "none"),
            norm_layer(norm, channels),
        )
        self.act = ACTIVATIONS[act]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


def conv_sizes(image_size: int, layers: int, kernel: int) -> list[int]:
    """Spatial sizes through `layers` stride-2 convs with padding (kernel-1)//2: [H, H1, ..., Hn].

    Every layer must halve a map of at least 2 px: a stride-2 conv on a 1-px map (or one that leaves
    nothing) is a configuration error, reported with how many layers this size can take.
    """
    pad = (kernel - 1) // 2
    sizes = [image_size]
    for _ in range(layers):
        nxt = (sizes[-1] + 2 * pad - kernel) // 2 + 1
        if sizes[-1] < 2 or nxt < 1:
            raise VaelabError(
                f"image_size {image_size} is too small for {layers} stride-2 conv layers with kernel {kernel} "
                f"(sizes {' -> '.join(map(str, sizes))} px)",
                f"use at most {len(sizes) - 1} entries in model.conv_channels, or a larger data.image_size",
            )
        sizes.append(nxt)
    return sizes


def transpose_padding(kernel: int, size_in: int, size_out: int) -> tuple[int, int]:
    """(padding, output_padding) so a stride-2 ConvTranspose2d maps size_in to exactly size_out.

    out = 2*(in - 1) - 2p + k + op  =>  2p - op = k - 2 + (2*in - out), with op in {0, 1}.
    """
    need = kernel - 2 + (2 * size_in - size_out)
    pad = max(0, -(-need // 2))
    out_pad = 2 * pad - need
    if out_pad not in (0, 1):
        raise VaelabError(f"cannot map {size_in} px to {size_out} px with a kernel of {kernel}", "use kernel 3 or 4")
    return pad, out_pad


class ConvEncoder(nn.Module):
    """(B, C, H, W) -> n x [conv stride 2, norm, act, res_blocks x ResBlock] -> flatten -> linear -> (B, 2D)."""

    def __init__(self, cfg, sizes: list[int], num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = cfg.channels
        pad = (cfg.kernel - 1) // 2
        for c_out in cfg.conv_channels:
            layers += [
                nn.Conv2d(c_in, c_out, cfg.kernel, stride=2, padding=pad, bias=cfg.norm == "none"),
                norm_layer(cfg.norm, c_out),
                ACTIVATIONS[cfg.activation](),
            ]
            layers += [ResBlock(c_out, cfg.norm, cfg.activation) for _ in range(cfg.res_blocks)]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.flat = c_in * sizes[-1] * sizes[-1]
        self.head = nn.Linear(self.flat + num_classes, 2 * cfg.latent_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.body(x).flatten(1)  # (B, C_n * H_n * W_n)
        if y is not None:
            h = torch.cat([h, y], dim=1)
        return self.head(h)


class ConvDecoder(nn.Module):
    """(B, D) -> linear -> (B, C_n, H_n, W_n) [-> res_blocks x ResBlock] -> n x [up x2, norm, act,
    res_blocks x ResBlock] -> (B, C, H, W).

    Upsampling is a transposed conv or nearest-upsample + 3x3 conv; each layer lands exactly on the
    encoder's size at that depth, so odd sizes (28 -> 14 -> 7 -> 4) invert exactly. The last layer has no
    norm or activation: it outputs the likelihood's parameters.
    """

    def __init__(self, cfg, sizes: list[int], num_classes: int):
        super().__init__()
        chans = list(reversed(cfg.conv_channels))
        self.start = (chans[0], sizes[-1], sizes[-1])
        self.fc = nn.Linear(cfg.latent_dim + num_classes, math.prod(self.start))
        norm = cfg.decoder_norm or cfg.norm
        layers: list[nn.Module] = [ACTIVATIONS[cfg.activation]()]
        layers += [ResBlock(chans[0], norm, cfg.activation) for _ in range(cfg.res_blocks)]
        outs = chans[1:] + [cfg.channels]
        targets = list(reversed(sizes[:-1]))
        c_in, size = chans[0], sizes[-1]
        for i, (c_out, target) in enumerate(zip(outs, targets, strict=True)):
            last = i == len(outs) - 1
            if cfg.decoder == "transpose":
                pad, out_pad = transpose_padding(cfg.kernel, size, target)
                layers.append(
                    nn.ConvTranspose2d(c_in, c_out, cfg.kernel, 2, pad, out_pad, bias=last or norm == "none")
                )
            else:
                layers += [
                    nn.Upsample(size=(target, target), mode="nearest"),
                    nn.Conv2d(c_in, c_out, 3, padding=1, bias=last or norm == "none"),
                ]
            if not last:
                layers += [norm_layer(norm, c_out), ACTIVATIONS[cfg.activation]()]
                layers += [ResBlock(c_out, norm, cfg.activation) for _ in range(cfg.res_blocks)]
            c_in, size = c_out, target
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is not None:
            z = torch.cat([z, y], dim=1)
        return self.body(self.fc(z).view(-1, *self.start))


def build_conv(cfg) -> tuple[nn.Module, nn.Module]:
    sizes = conv_sizes(cfg.image_size, len(cfg.conv_channels), cfg.kernel)
    k = cfg.num_classes if cfg.conditional else 0
    return ConvEncoder(cfg, sizes, k), ConvDecoder(cfg, sizes, k)


ARCHS = {"mlp": build_mlp, "conv": build_conv}
