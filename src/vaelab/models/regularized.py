"""Autoencoders regularised without (or besides) the KL: WAE-MMD / InfoVAE and the RAE, and their deterministic
encoder. Registered in `objective.OBJECTIVES` as ``mmd`` and ``rae``; ``delta`` in `posterior.POSTERIORS`.

    mmd:  loss = -log p(x|z) + w_kl KL(q(z|x) || p(z)) + w_mmd MMD^2(q(z), p(z))
          (InfoVAE, Zhao et al. 2019, eq. 6 with w_kl = 1 - alpha = model.beta, w_mmd = alpha + lambda - 1 =
          model.mmd_weight; with model.posterior=delta there is no KL and it is WAE-MMD, Tolstikhin et al. 2018,
          Algorithm 2). MMD^2 is the unbiased U-statistic of Gretton et al. 2012 (eq. 3) between the batch's
          codes and as many draws of the prior.
    rae:  loss = -log p(x|z) + beta * 1/2 ||z||^2 + model.rae_weight * L_REG,  z = E(x) deterministic
          (Ghosh et al. 2020, eq. 11); L_REG is ||theta_dec||^2 (rae_reg=l2, eq. 9's weight decay) or the
          squared norm of the decoder's gradient at z (rae_reg=gp, eq. 10; the gradient of the sum of the
          decoded means, as pythae computes it). Sampled only through an ex-post density (gmm, maf).

Kernels (Tolstikhin et al. 2018, sec. 4), C = 2 D sigma_z^2 with sigma_z = 1 (the N(0, I) prior's scale):
    imq  k(a, b) = C / (C + ||a - b||^2)        rbf  k(a, b) = exp(-||a - b||^2 / C)
"""

from __future__ import annotations

import torch

from ..errors import VaelabError
from .objective import LossTerms


def kernel(a: torch.Tensor, b: torch.Tensor, kind: str = "imq", scale: float = 1.0) -> torch.Tensor:
    """The kernel matrix (n, m) between codes a (n, D) and b (m, D)."""
    d2 = (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)
    c = 2.0 * a.shape[-1] * scale
    if kind == "imq":
        return c / (c + d2)
    if kind == "rbf":
        return torch.exp(-d2 / c)
    raise VaelabError(f"model.mmd_kernel is '{kind}'", "use imq or rbf")


def mmd2(x: torch.Tensor, y: torch.Tensor, kind: str = "imq", scale: float = 1.0) -> torch.Tensor:
    """Unbiased MMD^2 between samples x (n, D) and y (m, D) (Gretton et al. 2012, eq. 3): the within-sample
    kernel means leave out the diagonal; near 0 (either sign) for samples of one distribution."""
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise VaelabError("MMD needs at least 2 codes per batch", "use train.batch_size >= 2")
    kxx, kyy, kxy = kernel(x, x, kind, scale), kernel(y, y, kind, scale), kernel(x, y, kind, scale)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2.0 * kxy.mean()


class PointMass:
    """A deterministic encoder's 'posterior': all its mass on z = E(x). ``mean`` is the code; draws return it."""

    analytic = False
    deterministic = True

    def __init__(self, mean: torch.Tensor):
        self.mean = mean

    @property
    def std(self) -> torch.Tensor:
        return torch.zeros_like(self.mean)

    def rsample(self, n: int | None = None) -> torch.Tensor:
        return self.mean if n is None else self.mean.unsqueeze(0).expand(n, *self.mean.shape)

    @torch.no_grad()
    def sample(self, n: int | None = None) -> torch.Tensor:
        return self.rsample(n)

    def rsample_with_log_prob(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.rsample(n)
        return z, torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)  # no density: log q reported as 0

    def mode(self) -> torch.Tensor:
        return self.mean

    def detach(self) -> PointMass:
        return PointMass(self.mean.detach())


class DeltaPosterior(torch.nn.Module):
    """model.posterior=delta: the first half of the encoder's (B, 2D) output is the code z (the second is unused)."""

    no_density = "a deterministic encoder has no q(z|x), so there is no likelihood bound to importance-sample"

    def __init__(self, cfg):
        super().__init__()

    def forward(self, h: torch.Tensor) -> PointMass:
        return PointMass(h.float().chunk(2, dim=-1)[0])


def _deterministic(model) -> bool:
    return bool(getattr(getattr(model, "posterior", None), "no_density", None))


def mmd(
    model,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    kl_weight: float = 1.0,
    free_bits: float = 0.0,
    ssim_weight: float = 0.0,
    target: torch.Tensor | None = None,
) -> LossTerms:
    """InfoVAE / WAE-MMD (module docstring). ``kl`` is 0 for a deterministic encoder; ``extra['mmd']`` is MMD^2."""
    cfg = model.cfg
    lat, target, params = model(x, y, target)
    recon = -model.likelihood.log_prob(params, target).mean()
    z = lat.top
    with torch.no_grad():  # the class prior draws p(z|y) for the batch's labels; the others ignore y
        z_prior = model.prior.sample(z.shape[0], y).to(z.device, z.dtype)
    m = mmd2(z, z_prior, cfg.mmd_kernel)
    if _deterministic(model):
        kl = torch.zeros((), device=z.device)
        loss = recon + cfg.mmd_weight * m
    else:
        kl = torch.stack(lat.kl).sum(0).mean()
        loss = recon + kl_weight * kl + cfg.mmd_weight * m
    return LossTerms(loss=loss, recon=recon, kl=kl, elbo_loss=recon + kl, extra={"mmd": m.detach()})


def _decoder_l2(model) -> torch.Tensor:
    dec = getattr(model, "module", model).decoder
    return sum(p.pow(2).sum() for p in dec.parameters())


def _gradient_penalty(model, z: torch.Tensor, y: torch.Tensor | None, params: torch.Tensor) -> torch.Tensor:
    """mean over the batch of ||d sum(E[x|z]) / dz||^2 (Ghosh et al. 2020, eq. 10)."""
    if not (torch.is_grad_enabled() and z.requires_grad):  # evaluation under no_grad: a fresh decode of z
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            out = getattr(model, "module", model).decode_bottom(zz, y)
            (g,) = torch.autograd.grad(model.likelihood.mean(out).sum(), zz)
        return g.pow(2).sum(-1).mean().detach()
    (g,) = torch.autograd.grad(model.likelihood.mean(params).sum(), z, create_graph=True)
    return g.pow(2).sum(-1).mean()


def rae(
    model,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    kl_weight: float = 1.0,
    free_bits: float = 0.0,
    ssim_weight: float = 0.0,
    target: torch.Tensor | None = None,
) -> LossTerms:
    """The RAE loss (module docstring); ``kl`` is 0, the z penalty and the decoder term are in ``extra``."""
    cfg = model.cfg
    lat, target, params = model(x, y, target)
    recon = -model.likelihood.log_prob(params, target).mean()
    z = lat.z
    z_pen = 0.5 * z.pow(2).sum(-1).mean()
    reg = _decoder_l2(model) if cfg.rae_reg == "l2" else _gradient_penalty(model, z, y if model.conditional else None, params)
    loss = recon + kl_weight * z_pen + cfg.rae_weight * reg
    zero = torch.zeros((), device=recon.device)
    return LossTerms(loss=loss, recon=recon, kl=zero, elbo_loss=recon, extra={"z_penalty": z_pen.detach(), "decoder_reg": reg.detach()})


rae.posterior = "delta"  # the family's encoder: deterministic whatever model.posterior says (Ghosh et al. 2020)

__all__ = ["DeltaPosterior", "PointMass", "kernel", "mmd", "mmd2", "rae"]
