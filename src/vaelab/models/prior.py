"""The prior p(z) (or p(z|y)): the standard normal, a learned mixture of Gaussians, or a learned Gaussian per class.

    normal:  p(z)   = N(0, I)                                             (Kingma & Welling 2014)
    mog:     p(z)   = sum_k pi_k N(mu_k, diag sigma_k^2), all learned       (Dilokthanakul et al. 2016; cf. the
                                                                           VampPrior, Tomczak & Welling 2018)
    class:   p(z|y) = N(mu_y, diag sigma_y^2), learned, one per class      (conditional prior of the CVAE,
                                                                           Sohn et al. 2015)
    vamp:    p(z)   = (1/K) sum_k q(z|u_k), K learned pseudo-inputs u_k    (Tomczak & Welling 2018)

A learned prior lets the aggregate posterior keep its shape (clusters, classes) instead of being squeezed into
one Gaussian, which lowers the KL at a given reconstruction, most of all in a small latent space. Each prior
gives ``kl(q, z, y)``: analytic where it exists (normal, class), otherwise the Monte-Carlo estimate
log q(z|x) - log p(z) at the posterior samples ``z`` (unbiased; the ELBO stays a bound). ``sample(n, y,
generator, temperature)`` scales each Gaussian's spread by the temperature (below 1: less varied, more
typical samples, the reduced temperature of Kingma & Dhariwal 2018).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..errors import VaelabError
from .posterior import LOG_2PI, DiagonalGaussian, standard_normal_log_prob


def _gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag exp(logvar)) summed over the last dimension (broadcasting)."""
    return (-0.5 * ((z - mean) ** 2 * torch.exp(-logvar) + logvar + LOG_2PI)).sum(-1)


def _components_log_prob(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mean_k, diag exp(logvar_k)) of z (..., D) under each of K components (K, D): (..., K).

    The same number as ``_gaussian_log_prob(z.unsqueeze(-2), mean, logvar)`` without its (..., K, D)
    intermediates: sum_d (z - m)^2 / v = z^2 . (1/v) - 2 z . (m/v) + sum_d m^2/v, two matrix products (in float64,
    so the expansion loses nothing to cancellation). The VampPrior's 500 components made the broadcast form the
    slowest step of a k = 5000 NLL; the learned mixture prior scores its components the same way."""
    dtype = z.dtype
    with torch.autocast(z.device.type, enabled=False):  # mixed precision would cast the products down
        z64, m, lv = z.double(), mean.double(), logvar.double()
        inv = torch.exp(-lv)  # (K, D)
        quad = (z64 * z64) @ inv.T - 2 * (z64 @ (m * inv).T) + (m * m * inv).sum(-1)
        return (-0.5 * (quad + lv.sum(-1) + m.shape[-1] * LOG_2PI)).to(dtype)


def _draw(n: int, d: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """n x d standard normal draws; with a generator they are drawn on the CPU (reproducible everywhere)."""
    return torch.randn(n, d, generator=generator, device="cpu" if generator is not None else device)


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I); no parameters."""

    analytic = True  # KL(q || p) in closed form
    learned = False  # has parameters of its own

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    def log_prob(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return standard_normal_log_prob(z)

    def kl_per_dim(self, q: DiagonalGaussian, y: torch.Tensor | None = None) -> torch.Tensor:
        return q.kl_per_dim()

    def kl(
        self, q: DiagonalGaussian, z: torch.Tensor | None = None, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """KL(q(z|x) || p(z)) per image, (B,)."""
        return self.kl_per_dim(q, y).sum(-1)

    @torch.no_grad()
    def sample(
        self, n: int, y: torch.Tensor | None = None, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        return temperature * _draw(n, self.latent_dim, generator, "cpu")

    @torch.no_grad()
    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of each latent dimension under the prior (for plot ranges)."""
        return torch.zeros(self.latent_dim), torch.ones(self.latent_dim)


class ClassPrior(StandardNormalPrior):
    """p(z|y) = N(mu_y, diag sigma_y^2): one learned Gaussian per class (conditional models)."""

    learned = True

    def __init__(self, latent_dim: int, num_classes: int):
        super().__init__(latent_dim)
        if num_classes < 1:
            raise VaelabError(
                "model.prior=class needs class labels", "train a conditional model on labelled data"
            )
        self.mean = nn.Parameter(torch.zeros(num_classes, latent_dim))
        self.logvar = nn.Parameter(torch.zeros(num_classes, latent_dim))

    def _params(self, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if y is None:
            raise VaelabError("the class prior p(z|y) needs class labels", "pass labels (e.g. --label k)")
        y = y.long().to(self.mean.device)
        return self.mean[y], self.logvar[y]

    def log_prob(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        mean, logvar = self._params(y)  # (B, D), broadcasts over leading sample dimensions of z
        return _gaussian_log_prob(z, mean, logvar)

    def kl_per_dim(self, q: DiagonalGaussian, y: torch.Tensor | None = None) -> torch.Tensor:
        """KL(N(m, s^2) || N(mu, sigma^2)) per dimension: 0.5 * (log sigma^2/s^2 + (s^2 + (m - mu)^2)/sigma^2 - 1)."""
        mean, logvar = self._params(y)
        return 0.5 * (logvar - q.logvar + (q.var + (q.mean - mean) ** 2) * torch.exp(-logvar) - 1.0)

    @torch.no_grad()
    def sample(
        self, n: int, y: torch.Tensor | None = None, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        if y is None:
            raise VaelabError(
                "the class prior p(z|y) needs class labels to sample", "pass labels (e.g. --label k)"
            )
        mean, logvar = self._params(torch.as_tensor(y).flatten()[:n])
        eps = _draw(n, self.latent_dim, generator, self.mean.device).to(self.mean.device)
        return mean + temperature * torch.exp(0.5 * logvar) * eps

    @torch.no_grad()
    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.mean.mean(0)
        second = (torch.exp(self.logvar) + self.mean**2).mean(0)
        return mean.cpu(), (second - mean**2).clamp(min=1e-12).sqrt().cpu()


class MixturePrior(StandardNormalPrior):
    """p(z) = sum_k pi_k N(mu_k, diag sigma_k^2), with means, variances and weights learned."""

    analytic = False
    learned = True

    def __init__(self, latent_dim: int, components: int, seed: int = 0):
        super().__init__(latent_dim)
        if components < 1:
            raise VaelabError(
                f"model.prior_components is {components}", "use at least one component, e.g. 10"
            )
        g = torch.Generator().manual_seed(seed)
        self.mean = nn.Parameter(
            torch.randn(components, latent_dim, generator=g)
        )  # spread like N(0, I) draws
        self.logvar = nn.Parameter(torch.zeros(components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(components))

    def log_prob(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        per = _components_log_prob(z, self.mean, self.logvar)  # (..., K)
        return torch.logsumexp(per + torch.log_softmax(self.logits, 0), dim=-1)

    def kl_per_dim(self, q: DiagonalGaussian, y: torch.Tensor | None = None) -> torch.Tensor:
        raise VaelabError(
            "a mixture prior has no KL per latent dimension", "use model.free_bits=0 with model.prior=mog"
        )

    def kl(
        self, q: DiagonalGaussian, z: torch.Tensor | None = None, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Monte-Carlo KL: mean over the samples z ((B, D) or (S, B, D)) of log q(z|x) - log p(z); (B,)."""
        if z is None:
            z = q.rsample()
        est = q.log_prob(z) - self.log_prob(z)
        return est if est.dim() == 1 else est.mean(0)

    @torch.no_grad()
    def sample(
        self, n: int, y: torch.Tensor | None = None, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        probs = torch.softmax(self.logits.detach().float().cpu(), 0)
        k = torch.multinomial(probs, n, replacement=True, generator=generator).to(self.mean.device)
        eps = _draw(n, self.latent_dim, generator, self.mean.device).to(self.mean.device)
        return self.mean[k] + temperature * torch.exp(0.5 * self.logvar[k]) * eps

    @torch.no_grad()
    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.softmax(self.logits, 0)[:, None]
        mean = (w * self.mean).sum(0)
        second = (w * (torch.exp(self.logvar) + self.mean**2)).sum(0)
        return mean.cpu(), (second - mean**2).clamp(min=1e-12).sqrt().cpu()


class VampPrior(MixturePrior):
    """p(z) = (1/K) sum_k q(z | u_k): the mixture of the posteriors of K learned pseudo-inputs u_k (Tomczak &
    Welling 2018, "VAE with a VampPrior", eq. 9). The pseudo-inputs are images (K, C, H, W) in [0, 1]
    (sigmoid of a learned tensor, started near 0.05 as in the paper's code); their posteriors come from the
    model's own encoder, bound by the VAE with ``bind(encode_top)`` (for a stack of stochastic layers: the
    top layer's Gaussian). Sampling picks a pseudo-input uniformly, then z ~ q(z|u_k)."""

    def __init__(self, latent_dim: int, components: int, shape: tuple[int, int, int], seed: int = 0):
        StandardNormalPrior.__init__(self, latent_dim)
        if components < 1:
            raise VaelabError(f"model.prior_components is {components}", "use at least one pseudo-input, e.g. 500")
        g = torch.Generator().manual_seed(seed)
        self.pseudo_logits = nn.Parameter(-3.0 + 0.1 * torch.randn(components, *shape, generator=g))  # sigmoid ~ 0.05
        self._encode = None  # set by bind(): pseudo-inputs (K, C, H, W) -> DiagonalGaussian (K, D)
        self._cached = None  # (the parameters' versions, q(z|u_k)) while gradients are off

    def bind(self, encode_top) -> None:
        object.__setattr__(self, "_encode", encode_top)  # a plain callable, not a submodule (no duplicate weights)

    def pseudo_inputs(self) -> torch.Tensor:
        return torch.sigmoid(self.pseudo_logits)

    def components(self) -> DiagonalGaussian:
        """q(z|u_k) of the K pseudo-inputs. With gradients off (evaluation, sampling) it is computed once per state
        of the weights: the importance-sampled NLL asks for it once per sample, and encoding 500 pseudo-inputs
        each time cost more than the decoder (17 min per 500 test digits at k = 5000). Any in-place update of a
        parameter (an optimizer step, a loaded state) bumps its version and so refreshes it."""
        if self._encode is None:
            raise VaelabError("the VampPrior is not bound to an encoder", "build it inside a VAE (models.build)")
        if torch.is_grad_enabled():
            self._cached = None
            return self._encode(self.pseudo_inputs())
        owner = getattr(self._encode, "__self__", self)  # the VAE whose encoder codes the pseudo-inputs
        state = (*owner.parameters(), *owner.buffers())  # weights and batch-norm statistics
        key = tuple((id(t), t._version, t.device) for t in state) + (owner.training,)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self._encode(self.pseudo_inputs()))
        return self._cached[1]

    def log_prob(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        q = self.components()  # (K, D)
        per = _components_log_prob(z, q.mean, q.logvar)  # (..., K)
        return torch.logsumexp(per, dim=-1) - math.log(q.mean.shape[0])

    def kl_per_dim(self, q: DiagonalGaussian, y: torch.Tensor | None = None) -> torch.Tensor:
        raise VaelabError("the VampPrior has no KL per latent dimension", "use model.free_bits=0 with model.prior=vamp")

    @torch.no_grad()
    def sample(
        self, n: int, y: torch.Tensor | None = None, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        q = self.components()
        k = torch.randint(q.mean.shape[0], (n,), generator=generator).to(q.mean.device)
        eps = _draw(n, self.latent_dim, generator, q.mean.device).to(q.mean.device)
        return q.mean[k] + temperature * q.std[k] * eps

    @torch.no_grad()
    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.components()
        mean = q.mean.mean(0)
        second = (q.var + q.mean**2).mean(0)
        return mean.cpu(), (second - mean**2).clamp(min=1e-12).sqrt().cpu()


def _class_prior(cfg) -> nn.Module:
    if not cfg.conditional:
        raise VaelabError(
            "model.prior=class is a prior per class label, for conditional models",
            "set model.conditional=true (and use labelled data), or use model.prior=mog",
        )
    return ClassPrior(cfg.latent_dim, int(cfg.num_classes or 0))


# model.prior -> a builder (cfg) -> the prior module over the top latent (cfg.latent_dim)
PRIORS = {
    "normal": lambda cfg: StandardNormalPrior(cfg.latent_dim),
    "mog": lambda cfg: MixturePrior(cfg.latent_dim, int(cfg.prior_components)),
    "class": _class_prior,
    "vamp": lambda cfg: VampPrior(
        cfg.latent_dim, int(cfg.prior_components), (cfg.channels, cfg.image_size, cfg.image_size)
    ),
}


def build_prior(cfg) -> nn.Module:
    """The prior named by ``cfg.prior`` (see PRIORS)."""
    kind = getattr(cfg, "prior", "normal")
    if kind not in PRIORS:
        raise VaelabError(f"unknown prior '{kind}'", f"use one of: {', '.join(PRIORS)}")
    return PRIORS[kind](cfg)


__all__ = ["PRIORS", "ClassPrior", "MixturePrior", "StandardNormalPrior", "VampPrior", "build_prior"]
