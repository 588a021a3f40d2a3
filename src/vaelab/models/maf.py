"""A masked autoregressive flow (MAF) over latent codes: an ex-post density to sample a trained model from.

Papamakarios et al. 2017, "Masked Autoregressive Flow for Density Estimation", sec. 3. Each step is a MADE
(Germain et al. 2015) that reads the dimensions before i (in its order) and gives a shift mu_i and a log-scale
alpha_i; the density direction is one parallel pass (eq. 3 and 5):

    u_i = (x_i - mu_i(x_<i)) * exp(-alpha_i(x_<i)),      log p(x) = log N(u; 0, I) - sum_i alpha_i

and sampling inverts it one dimension at a time, x_i = u_i exp(alpha_i) + mu_i (D passes). Steps alternate
the order of the dimensions (a reversal between steps), and the codes are standardised first (a fixed affine
map whose log-Jacobian enters log p). pythae's MAFSampler fits the same model on the training embeddings.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import VaelabError

LOG_2PI = math.log(2 * math.pi)


class MaskedLinear(nn.Linear):
    def __init__(self, d_in: int, d_out: int, mask: torch.Tensor):
        super().__init__(d_in, d_out)
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """x (B, D) -> (mu, alpha), each (B, D), where output i depends only on inputs 0..i-1 (natural order)."""

    def __init__(self, dim: int, hidden: int, layers: int = 2):
        super().__init__()
        self.dim = dim
        deg_in = torch.arange(1, dim + 1)
        # hidden degrees 1..D-1 cycled (a unit of degree k sees inputs 1..k); with D = 1 nothing is seen
        degs = [deg_in] + [torch.arange(hidden) % max(dim - 1, 1) + 1 for _ in range(layers)]
        nets: list[nn.Module] = []
        for a, b in zip(degs[:-1], degs[1:], strict=True):
            nets += [MaskedLinear(len(a), len(b), b[:, None] >= a[None, :]), nn.ReLU()]
        out_mask = deg_in[:, None] > degs[-1][None, :]  # output i (degree i) sees hidden units of degree < i
        self.body = nn.Sequential(*nets)
        self.out = MaskedLinear(len(degs[-1]), 2 * dim, out_mask.repeat(2, 1))
        nn.init.zeros_(self.out.weight)  # starts as the identity map
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, alpha = self.out(self.body(x)).chunk(2, dim=-1)
        return mu, alpha.clamp(-7.0, 7.0)


class MAF(nn.Module):
    """``MAF(dim).fit(z)``; ``log_prob(z)`` (B,), ``sample(n, generator)`` (n, D)."""

    def __init__(self, dim: int, steps: int = 5, hidden: int = 64, layers: int = 2):
        super().__init__()
        self.dim, self.steps, self.hidden, self.layers = int(dim), int(steps), int(hidden), int(layers)
        self.mades = nn.ModuleList(MADE(self.dim, self.hidden, self.layers) for _ in range(self.steps))
        self.register_buffer("shift", torch.zeros(self.dim))  # the standardisation of the codes
        self.register_buffer("scale", torch.ones(self.dim))

    def _to_noise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, D) -> (u, log |det du/dx|)."""
        h = (x - self.shift) / self.scale
        logdet = -torch.log(self.scale).sum().expand(x.shape[0])
        for i, made in enumerate(self.mades):
            if i % 2:
                h = h.flip(-1)
            mu, alpha = made(h)
            h = (h - mu) * torch.exp(-alpha)
            logdet = logdet - alpha.sum(-1)
            if i % 2:
                h = h.flip(-1)
        return h, logdet

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats, (B,)."""
        u, logdet = self._to_noise(x)
        return -0.5 * (u.pow(2) + LOG_2PI).sum(-1) + logdet

    @torch.no_grad()
    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        """Noise u (n, D) -> codes x (n, D): each step inverted one dimension at a time."""
        h = u
        for i in reversed(range(self.steps)):
            made = self.mades[i]
            if i % 2:
                h = h.flip(-1)
            x = torch.zeros_like(h)
            for d in range(self.dim):
                mu, alpha = made(x)
                x[:, d] = h[:, d] * torch.exp(alpha[:, d]) + mu[:, d]
            h = x.flip(-1) if i % 2 else x
        return h * self.scale + self.shift

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """n codes (n, D) on the CPU; ``temperature`` scales the base noise."""
        u = temperature * torch.randn(n, self.dim, generator=generator)
        return self.inverse(u.to(self.shift.device)).cpu()

    def fit(self, z: torch.Tensor, epochs: int = 30, batch_size: int = 256, lr: float = 1e-3, seed: int = 0) -> MAF:
        """Maximum likelihood on codes (N, D) with Adam; returns self (in eval mode)."""
        z = torch.as_tensor(z, dtype=torch.float32)
        if z.ndim != 2 or z.shape[1] != self.dim or len(z) < 2:
            raise VaelabError(f"the MAF needs codes of shape (N, {self.dim}) with N >= 2, got {tuple(z.shape)}")
        self.shift.copy_(z.mean(0))
        self.scale.copy_(z.std(0).clamp(min=1e-4))
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.mades.parameters(), lr=lr)
        self.train()
        with torch.enable_grad():
            for _ in range(epochs):
                for idx in torch.randperm(len(z), generator=g).split(batch_size):
                    loss = -self.log_prob(z[idx]).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        return self.eval()


__all__ = ["MADE", "MAF"]
