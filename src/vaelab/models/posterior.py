"""The encoder's output q(z|x): a diagonal Gaussian, or an inverse autoregressive flow on top of one.

`POSTERIORS` maps ``model.posterior`` to a module that turns the encoder's statistics (B, 2D) into the
posterior object: ``gaussian`` -> `DiagonalGaussian`, ``iaf`` -> `IAFPosterior` (see `flows.py`). Every
posterior object offers ``mean``, ``std``, ``rsample(n)``, ``sample(n)`` and ``rsample_with_log_prob(n)``
(a draw and its log q(z|x), all the importance-sampled NLL and the IWAE need); ``analytic`` says whether it
also has ``log_prob(z)`` at any z and a closed-form KL to a Gaussian prior.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

LOG_2PI = math.log(2 * math.pi)


class DiagonalGaussian:
    """A batch of diagonal Gaussians over the latent space, shape (B, D).

    ``mean`` is the posterior mean (what `vaelab.latent.encode` returns by default); ``sample()`` draws
    without gradient, ``rsample()`` with the reparameterisation trick z = mean + std * eps (Kingma &
    Welling 2014, section 2.4); ``kl()`` is KL(q || N(0, I)) per image.
    """

    analytic = True  # log_prob at any z, and KL to a Gaussian in closed form

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

    def rsample_with_log_prob(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised draw z ((B, D) or (n, B, D)) and log q(z|x) summed over dimensions."""
        z = self.rsample(n)
        return z, self.log_prob(z)

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


def precision_weighted(up: DiagonalGaussian, down: DiagonalGaussian) -> DiagonalGaussian:
    """The ladder VAE's posterior of a lower layer: the product of the bottom-up estimate N(m_u, s_u^2) and the
    top-down prior N(m_d, s_d^2), renormalised (Sonderby et al. 2016, eq. 17-19):
    s^2 = 1 / (1/s_u^2 + 1/s_d^2),  m = (m_u/s_u^2 + m_d/s_d^2) s^2.  Shapes broadcast ((B, D) with (n, B, D))."""
    prec_u, prec_d = torch.exp(-up.logvar), torch.exp(-down.logvar)
    var = 1.0 / (prec_u + prec_d)
    return DiagonalGaussian((up.mean * prec_u + down.mean * prec_d) * var, torch.log(var))


def gaussian_kl(q: DiagonalGaussian, p: DiagonalGaussian) -> torch.Tensor:
    """KL(N(m, s^2) || N(mu, sigma^2)) per dimension: 0.5 * (log sigma^2/s^2 + (s^2 + (m - mu)^2)/sigma^2 - 1)."""
    return 0.5 * (p.logvar - q.logvar + (q.var + (q.mean - p.mean) ** 2) * torch.exp(-p.logvar) - 1.0)


class GaussianPosterior(nn.Module):
    """model.posterior=gaussian: the encoder's (B, 2D) output read as (mean, log-variance). No parameters."""

    def __init__(self, cfg):
        super().__init__()

    def forward(self, h: torch.Tensor) -> DiagonalGaussian:
        mean, logvar = h.float().chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return (-0.5 * (z.pow(2) + LOG_2PI)).sum(-1)


def _iaf(cfg) -> nn.Module:
    from .flows import IAFPosteriorHead

    return IAFPosteriorHead(cfg)


def _delta(cfg) -> nn.Module:
    from .regularized import DeltaPosterior

    return DeltaPosterior(cfg)


# model.posterior -> a module (cfg) whose forward maps the encoder's (B, 2D) statistics to the posterior object
POSTERIORS = {"gaussian": GaussianPosterior, "iaf": _iaf, "delta": _delta}
