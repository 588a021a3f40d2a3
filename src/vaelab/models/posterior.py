"""The encoder's output: a diagonal Gaussian q(z|x) = N(mean, diag(std^2))."""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


class DiagonalGaussian:
    """A batch of diagonal Gaussians over the latent space, shape (B, D).

    ``mean`` is the posterior mean (what `vaelab.latent.encode` returns by default); ``sample()`` draws
    without gradient, ``rsample()`` with the reparameterisation trick z = mean + std * eps (Kingma &
    Welling 2014, section 2.4); ``kl()`` is KL(q || N(0, I)) per image.
    """

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        self.mean = mean
        # clamp keeps exp() finite early in training and under 16-bit precision
        self.logvar = logvar.clamp(-30.0, 20.0)

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def var(self) -> torch.Tensor:
        return torch.exp(self.logvar)

    def rsample(self, n: int | None = None) -> torch.Tensor:
        """Reparameterised draw: (B, D), or (n, B, D) when n is given."""
        shape = self.mean.shape if n is None else (n, *self.mean.shape)
        eps = torch.randn(shape, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + self.std * eps

    @torch.no_grad()
    def sample(self, n: int | None = None) -> torch.Tensor:
        return self.rsample(n)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl_per_dim(self) -> torch.Tensor:
        """KL(N(m, s^2) || N(0, 1)) per dimension: 0.5 * (m^2 + s^2 - 1 - log s^2) (Kingma & Welling, App. B)."""
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar)

    def kl(self) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) in nats, summed over latent dimensions: (B,)."""
        return self.kl_per_dim().sum(-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x) summed over dimensions; z is (..., B, D)."""
        return (-0.5 * ((z - self.mean) ** 2 / self.var + self.logvar + LOG_2PI)).sum(-1)

    def detach(self) -> DiagonalGaussian:
        return DiagonalGaussian(self.mean.detach(), self.logvar.detach())


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return (-0.5 * (z.pow(2) + LOG_2PI)).sum(-1)
