"""Decoder likelihoods p(x|z) on images in [0, 1]. `LIKELIHOODS` picks one by name.

The decoder outputs one value per pixel (``params``, shape (B, C, H, W)). Each likelihood turns it into
a log-density summed per image, in nats, and into the image it predicts. Outputs always live in the data's
range [0, 1] (sigmoid), never Tanh's [-1, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


class Bernoulli(nn.Module):
    """p(x|z) = prod Bernoulli(x; sigmoid(logits)); log p = -BCE summed per image.

    On grey levels x in [0, 1] this is the cross-entropy the seed projects and the pytorch/examples VAE
    minimise (not a normalised density for non-binary x); on binarised data it is the exact log-likelihood.
    """

    def log_prob(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none")
        return -bce.flatten(1).sum(1)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float())

    def sample(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(self.mean(logits))


class Gaussian(nn.Module):
    """p(x|z) = N(x; sigmoid(out), sigma^2), sigma fixed or learned per channel.

    log p = -0.5 * sum((x - mu)^2 / sigma^2 + 2 log sigma + log 2 pi): a proper density in nats, so MSE
    training reports comparable numbers. With a fixed sigma the loss is MSE / (2 sigma^2) plus a constant.
    """

    def __init__(self, channels: int, sigma: float = 0.1, learned: bool = True, min_sigma: float = 1e-3):
        super().__init__()
        self.min_log_sigma = math.log(min_sigma)
        log_sigma = torch.full((1, channels, 1, 1), math.log(sigma))
        if learned:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mu = torch.sigmoid(out.float())
        log_sigma = self.log_sigma.clamp(min=self.min_log_sigma)
        z = (x.float() - mu) * torch.exp(-log_sigma)
        return (-0.5 * (z * z + LOG_2PI) - log_sigma).flatten(1).sum(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out.float())

    def sample(self, out: torch.Tensor) -> torch.Tensor:
        sigma = torch.exp(self.log_sigma.clamp(min=self.min_log_sigma))
        return (self.mean(out) + sigma * torch.randn_like(out.float())).clamp(0, 1)


def build_likelihood(cfg) -> nn.Module:
    """The likelihood of a ModelConfig."""
    if cfg.likelihood == "bernoulli":
        return Bernoulli()
    return Gaussian(cfg.channels, cfg.gaussian_sigma, learned=cfg.gaussian_scale == "learned")


LIKELIHOODS = {"bernoulli": Bernoulli, "gaussian": Gaussian}
