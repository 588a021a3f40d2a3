"""Stochastic layers: z_1 (next to the image) up to z_L (the top, under the prior), as in the ladder VAE
(Sonderby et al. 2016, "Ladder Variational Autoencoders", fig. 1b):

    generative  p(x, z) = p(x|z_1) p(z_1|z_2) ... p(z_{L-1}|z_L) p(z_L)
    inference   q(z|x)  = q(z_L|x) q(z_{L-1}|z_L, x) ... q(z_1|z_2, x)         (top-down, eq. 17-19)

A deterministic bottom-up pass gives every layer an estimate N(m_l, s_l^2) of its posterior (the
architecture's encoder for z_1, a small MLP on the layer below's statistics above it); inference then goes top
down, each lower layer combining its bottom-up estimate with the generative p(z_l|z_{l+1}) by precision
weighting. The KL of a lower layer is exact given the sample above it (both Gaussians); the top layer's is
the prior's own (closed form for N(0, I), the one-sample estimate for mixture priors or a flow posterior).
With one layer the stack is empty and all of this is the plain VAE.

`JointPosterior.rsample(n)` returns every layer's sample with log q(z|x) and log p(z) of the whole stack: the
ELBO, the IWAE and the importance-sampled NLL need nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .blocks import ACTIVATIONS
from .posterior import DiagonalGaussian, gaussian_kl, precision_weighted


def layer_dims(cfg) -> list[int]:
    """Sizes of the stochastic layers, bottom (z_1) first; the top is ``cfg.latent_dim``."""
    n = int(getattr(cfg, "stochastic_layers", 1) or 1)
    lower = list(getattr(cfg, "layer_dims", None) or [])
    if not lower:
        lower = [2 * int(cfg.latent_dim)] * (n - 1)
    return [int(d) for d in lower[: n - 1]] + [int(cfg.latent_dim)]


def _mlp(d_in: int, hidden: list[int], d_out: int, act: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d_in, h), ACTIVATIONS[act]()]
        d_in = h
    return nn.Sequential(*layers, nn.Linear(d_in, d_out))


class StochasticStack(nn.Module):
    """The layers above z_1: ``up[l]`` maps layer l's bottom-up statistics (.., 2 D_l) to layer l+1's;
    ``down[l]`` maps z_{l+1} (.., D_{l+1}) to p(z_l | z_{l+1}) as (.., 2 D_l). Empty for one layer."""

    def __init__(self, dims: list[int], hidden: list[int], act: str):
        super().__init__()
        self.dims = list(dims)
        pairs = list(zip(dims[:-1], dims[1:], strict=True))
        self.up = nn.ModuleList(_mlp(2 * lo, hidden, 2 * hi, act) for lo, hi in pairs)
        self.down = nn.ModuleList(_mlp(hi, hidden, 2 * lo, act) for lo, hi in pairs)

    def bottom_up(self, h: torch.Tensor) -> list[torch.Tensor]:
        """(B, 2 D_1) -> every layer's bottom-up statistics, bottom first."""
        stats = [h]
        for up in self.up:
            stats.append(up(stats[-1]))
        return stats

    def prior_below(self, layer: int, z: torch.Tensor) -> DiagonalGaussian:
        """p(z_layer | z_{layer+1}) (0-based, bottom first) at a sample z of the layer above."""
        mean, logvar = self.down[layer](z).chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)

    def descend(self, z: torch.Tensor) -> torch.Tensor:
        """A top-layer z to z_1 through the means of p(z_l | z_{l+1}) (decoding a latent point)."""
        for layer in reversed(range(len(self.down))):
            z = self.prior_below(layer, z).mean
        return z


@dataclass
class Latents:
    """One draw of every stochastic layer (shapes (B, ...) or (n, B, ...)), scored."""

    z: torch.Tensor  # the decoder's input: the bottom layer's sample (.., D_1)
    top: torch.Tensor  # the top layer's sample (.., D_L): the prior's variable
    log_q: torch.Tensor  # log q(z_1..z_L | x), (..,)
    log_p: torch.Tensor  # log p(z_1..z_L), (..,)
    kl: list[torch.Tensor]  # per layer, bottom first: the KL term per image (closed form where one exists)
    kl_dims: list[torch.Tensor] | None  # per layer, its closed-form KL per dimension; None when a layer has none
    q: object = None  # q(z_L|x), the top posterior object (its mean/logvar: beta-TCVAE, DIP-VAE)


class JointPosterior:
    """q(z_1..z_L | x) of a batch: the bottom-up statistics, turned into samples top-down on request."""

    def __init__(self, model, stats: list[torch.Tensor], y: torch.Tensor | None):
        self.model, self.stats, self.y = model, stats, y

    @property
    def top(self):
        """q(z_L | x): the model's posterior object over the top layer (Gaussian or a flow)."""
        return self.model.posterior(self.stats[-1])

    def _below(self, layer: int, z_above: torch.Tensor) -> tuple[DiagonalGaussian, DiagonalGaussian]:
        """(q(z_l | z_{l+1}, x), p(z_l | z_{l+1}))."""
        prior = self.model.stack.prior_below(layer, z_above)
        mean, logvar = self.stats[layer].float().chunk(2, dim=-1)
        return precision_weighted(DiagonalGaussian(mean, logvar), prior), prior

    def rsample(self, n: int | None = None) -> Latents:
        """A reparameterised draw of all layers ((B, D) each, or (n, B, D) with n) with its log q and log p."""
        q_top, prior, y = self.top, self.model.prior, self.y
        z, log_q = q_top.rsample_with_log_prob(n)
        log_p = prior.log_prob(z, y)
        if prior.analytic and q_top.analytic:
            kl_top = prior.kl(q_top, z, y).expand_as(log_q)
            dims_top = prior.kl_per_dim(q_top, y)
        else:  # one-sample estimate (Kingma et al. 2016, sec. 5; the mixture prior's too)
            kl_top, dims_top = log_q - log_p, None
        top, kls, dims = z, [kl_top], [dims_top]
        for layer in reversed(range(len(self.stats) - 1)):
            q, p = self._below(layer, z)
            z = q.rsample()
            log_q = log_q + q.log_prob(z)
            log_p = log_p + p.log_prob(z)
            kd = gaussian_kl(q, p)  # exact given the sample above
            kls.append(kd.sum(-1))
            dims.append(kd)
        return Latents(
            z=z, top=top, log_q=log_q, log_p=log_p, kl=kls[::-1], kl_dims=None if any(d is None for d in dims) else dims[::-1], q=q_top
        )

    def layer_means(self) -> list[torch.Tensor]:
        """Each layer's posterior mean along the mean path (bottom first): for active units per layer."""
        z = self.top.mean
        means = [z]
        for layer in reversed(range(len(self.stats) - 1)):
            z = self._below(layer, z)[0].mean
            means.append(z)
        return means[::-1]


class PlainPosterior(JointPosterior):
    """The joint posterior of a duck-typed model with one layer (``encode``, ``decode``, ``prior``, no
    ``infer``): lets the evaluation score any such model the same way."""

    def __init__(self, q, prior, y: torch.Tensor | None):
        self.q, self.prior_, self.y, self.stats = q, prior, y, [None]
        self.model = self  # rsample() reads model.prior

    @property
    def prior(self):
        return self.prior_

    @property
    def top(self):
        return self.q


def joint_posterior(model, x: torch.Tensor, y: torch.Tensor | None = None):
    """(q(z|x) of all layers, the function that decodes the bottom layer) for a vaelab VAE or any model with
    ``encode``/``decode``/``prior``/``likelihood``."""
    if hasattr(model, "infer"):
        return model.infer(x, y), model.decode_bottom
    return PlainPosterior(model.encode(x, y), model.prior, y), model.decode
