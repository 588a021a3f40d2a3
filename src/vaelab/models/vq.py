"""The VQ-VAE's quantised latent (van den Oord et al. 2017, "Neural Discrete Representation Learning").

``model.latent=vq``: the encoder's code (B, latent_dim) is cut into P = latent_dim / code_dim vectors z_e of
size code_dim (a map of P positions, square when P is), each replaced by its nearest codebook entry e_k
(eq. 1-2). The decoder reads the quantised code z_q; the gradient passes straight through (eq. 3's
sg[.]: d loss / d z_e := d loss / d z_q). The objective ``vq`` (eq. 3):

    loss = -log p(x|z_q) + ||sg[z_e] - e||^2 + model.commitment * ||z_e - sg[e]||^2

with the codebook term replaced by exponential moving averages when model.codebook_update=ema (the default;
appendix A.1): N_k <- g N_k + (1 - g) n_k,  m_k <- g m_k + (1 - g) sum_{i: k} z_e,i,  e_k = m_k / N_k.
Codes whose average use N_k falls below model.dead_code (a share of one batch's vectors) are restarted at a
random z_e of the batch (the codebook-collapse fix of Dhariwal et al. 2020, Jukebox, sec. 2.2).
Codebook usage and perplexity exp(H(mean one-hot)) are returned per batch and logged per epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import VaelabError
from .objective import LossTerms


def code_map_shape(positions: int) -> tuple[int, int]:
    s = math.isqrt(positions)
    return (s, s) if s * s == positions else (1, positions)


@dataclass
class VQCode:
    """The output of a VQ model's ``encode``: ``mean`` is the quantised code flattened (B, latent_dim), so
    classification and plots use it like any latent; ``indices`` is the code map (B, H, W)."""

    mean: torch.Tensor
    indices: torch.Tensor
    z_e: torch.Tensor  # the encoder's output before quantisation (B, P, code_dim)
    analytic = False
    deterministic = True

    @property
    def std(self) -> torch.Tensor:
        return torch.zeros_like(self.mean)

    def rsample(self, n: int | None = None) -> torch.Tensor:
        return self.mean if n is None else self.mean.unsqueeze(0).expand(n, *self.mean.shape)

    def sample(self, n: int | None = None) -> torch.Tensor:
        return self.rsample(n).detach()

    def mode(self) -> torch.Tensor:
        return self.mean


class VectorQuantizer(nn.Module):
    no_density = "a quantised latent has no q(z|x) density; its bound is log p(x|z_q) + log p(z_q) with the code prior (vq_bound)"

    def __init__(self, cfg):
        super().__init__()
        self.k, self.dim = int(cfg.codebook_size), int(cfg.code_dim)
        if cfg.latent_dim % self.dim:
            raise VaelabError(f"model.latent_dim={cfg.latent_dim} is not a multiple of model.code_dim={self.dim}", "set latent_dim = code_dim x positions, e.g. 64 = 4 x 16 (a 4x4 code map)")
        self.positions = cfg.latent_dim // self.dim
        self.map_shape = code_map_shape(self.positions)
        self.ema = cfg.codebook_update == "ema"
        self.decay, self.dead = float(cfg.ema_decay), float(cfg.dead_code)
        g = torch.Generator().manual_seed(0)
        init = torch.randn(self.k, self.dim, generator=g)
        self.codebook = nn.Parameter(init, requires_grad=not self.ema)
        self.register_buffer("ema_count", torch.ones(self.k))
        self.register_buffer("ema_sum", init.clone())

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """Indices (N,) of the nearest codebook entries to vectors (N, code_dim)."""
        d = z_e.pow(2).sum(-1, keepdim=True) - 2 * z_e @ self.codebook.t() + self.codebook.pow(2).sum(-1)
        return d.argmin(-1)

    @torch.no_grad()
    def ema_update(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        """One EMA step of the codebook on vectors (N, code_dim) assigned to idx (N,), then dead-code restarts."""
        onehot = F.one_hot(idx, self.k).to(flat.dtype)  # (N, K)
        self.ema_count.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
        self.codebook.data.copy_(self.ema_sum / self.ema_count.clamp(min=1e-5)[:, None])
        self.restart_dead(flat)

    @torch.no_grad()
    def restart_dead(self, flat: torch.Tensor) -> int:
        """Move the codes used less than ``dead_code`` (EMA count) onto random vectors of the batch."""
        dead = torch.nonzero(self.ema_count < self.dead).flatten()
        if len(dead) and len(flat):
            pick = torch.randint(len(flat), (len(dead),), device=flat.device)
            self.codebook.data[dead] = flat[pick]
            self.ema_sum[dead] = flat[pick]
            self.ema_count[dead] = 1.0
        return len(dead)

    def forward(self, z: torch.Tensor, update: bool = False) -> tuple[VQCode, dict[str, torch.Tensor]]:
        """z (B, latent_dim) -> (VQCode with the straight-through code, loss terms and usage stats). ``update``
        (the training step only, not ``encode``) moves the EMA codebook and restarts dead codes."""
        b = z.shape[0]
        z_e = z.float().view(b, self.positions, self.dim)
        flat = z_e.reshape(-1, self.dim)
        idx = self.nearest(flat.detach())
        if update and self.ema:
            self.ema_update(flat.detach(), idx)
        e = self.codebook[idx].view_as(z_e)
        commit = (z_e - e.detach()).pow(2).sum((1, 2)).mean()
        codebook = (z_e.detach() - e).pow(2).sum((1, 2)).mean() if not self.ema else torch.zeros((), device=z.device)
        z_q = z_e + (e - z_e).detach()  # straight-through estimator
        probs = F.one_hot(idx, self.k).float().mean(0)
        stats = {
            "commitment": commit,
            "codebook": codebook,
            "perplexity": torch.exp(-(probs * torch.log(probs + 1e-10)).sum()).detach(),
            "usage": (probs > 0).float().mean().detach(),
        }
        code = VQCode(mean=z_q.reshape(b, -1), indices=idx.view(b, *self.map_shape), z_e=z_e)
        return code, stats

    def snap(self, z: torch.Tensor) -> torch.Tensor:
        """Any codes (B, latent_dim) -> the nearest codebook entry at every position (B, latent_dim): what the
        decoder of a VQ model was trained on (a point between codes is not one of its inputs)."""
        b = z.shape[0]
        idx = self.nearest(z.float().reshape(b * self.positions, self.dim).to(self.codebook.device))
        return self.codebook[idx].reshape(b, -1).to(z.dtype)

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """Code maps (B, H, W) -> flattened quantised codes (B, latent_dim)."""
        return self.codebook[indices.reshape(indices.shape[0], -1)].reshape(indices.shape[0], -1)


def vq(
    model,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    kl_weight: float = 1.0,
    free_bits: float = 0.0,
    ssim_weight: float = 0.0,
    target: torch.Tensor | None = None,
) -> LossTerms:
    """The VQ-VAE loss (module docstring). ``kl`` is 0 (a uniform code prior's KL is the constant P log K)."""
    target = x if target is None else target
    (code, stats), target, params = model(x, y, target)  # a VQ model's forward: the code and its stats
    recon = -model.likelihood.log_prob(params, target).mean()
    loss = recon + stats["codebook"] + model.cfg.commitment * stats["commitment"]
    zero = torch.zeros((), device=recon.device)
    return LossTerms(loss=loss, recon=recon, kl=zero, elbo_loss=recon, extra={k: v.detach() for k, v in stats.items()})


# model.latent -> a module (cfg) applied to the encoder's code, or None (the Gaussian latent: nothing to apply)
LATENTS = {"gaussian": lambda cfg: None, "vq": VectorQuantizer}

__all__ = ["LATENTS", "VQCode", "VectorQuantizer", "code_map_shape", "vq"]
