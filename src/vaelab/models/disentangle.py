"""Objectives that encourage a factorised (disentangled) code: beta-TCVAE, FactorVAE, DIP-VAE. Each is a pure
function with the signature of `objective.elbo`, returning `LossTerms` with its further terms (per image,
nats) in ``extra``. They need a Gaussian posterior over one layer of latents (normal prior, N(0, I)).

    tc:     KL(q(z|x) || p(z)) averaged over the data = I_q(x; z) + TC(z) + sum_j KL(q(z_j) || p(z_j))
            loss = recon + alpha MI + beta TC + gamma DWKL, alpha = gamma = 1, beta = model.beta
            (Chen, Li, Grosse & Duvenaud 2018, "Isolating Sources of Disentanglement in VAEs", eq. 2 and 4),
            log q(z) and log q(z_j) by minibatch-weighted sampling (sec. 3.2, eq. S6):
            log q(z_i) ~ logsumexp_j log q(z_i | x_j) - log(N M),  N training images, M batch size
    factor: loss = -ELBO + gamma TC(z),  TC(z) ~ E_q(z)[log D(z) / (1 - D(z))]   (Kim & Mnih 2018, eq. 2-3)
            the discriminator D tells q(z) from the product of its marginals, sampled by permuting each code
            dimension across the batch (Algorithm 1); it is trained by its own optimizer (``aux_loss``)
    dip:    loss = -ELBO + lambda_od sum_{i != j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2
            DIP-VAE-I: C = Cov_p(x)[mu(x)], lambda_d = 10 lambda_od; DIP-VAE-II: C = Cov_p(x)[mu(x)] +
            E_p(x)[Sigma(x)], lambda_d = lambda_od (Kumar, Sattigeri & Balakrishnan 2018, eq. 6-7 and sec. 4);
            lambda_od = model.dip_lambda, the variant model.dip_type

The warm-up (``kl_weight`` = beta x the warm-up factor) scales the latent terms as in the ELBO.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import VaelabError
from .objective import LossTerms


def _gaussian_top(lat, name: str):
    q = getattr(lat, "q", None)
    if q is None or not hasattr(q, "logvar") or len(lat.kl) != 1:
        raise VaelabError(
            f"model.objective={name} needs a Gaussian posterior over one layer of latents",
            f"use model.posterior=gaussian and model.stochastic_layers=1 with model.objective={name}",
        )
    return q


def _warm(model, kl_weight: float) -> float:
    """The warm-up factor in [0, 1] of a kl_weight that is beta x factor."""
    beta = float(model.cfg.beta)
    return kl_weight / beta if beta > 0 else 1.0


def _log_q_pairs(z: torch.Tensor, q) -> torch.Tensor:
    """(M, M, D): log q(z_i,d | x_j) for every sample i and posterior j, per dimension."""
    zi, mu, logvar = z.unsqueeze(1), q.mean.unsqueeze(0), q.logvar.unsqueeze(0)
    return -0.5 * ((zi - mu) ** 2 * torch.exp(-logvar) + logvar + math.log(2 * math.pi))


def tc_decomposition(z: torch.Tensor, q, log_p: torch.Tensor, dataset_size: int | None) -> dict[str, torch.Tensor]:
    """Per-image MI, TC and dimension-wise KL by minibatch-weighted sampling (Chen et al. 2018, eq. S6):
    q(z) ~ 1/(N M) sum_j q(z | x_j) over a batch of M from N images. ``dataset_size=None``: the batch is the
    whole set, q(z) = 1/M sum_j q(z | x_j)."""
    m = z.shape[0]
    log_norm = math.log(m) if dataset_size is None else math.log(max(dataset_size, m) * m)
    pairs = _log_q_pairs(z, q)  # (M, M, D)
    log_qz_x = q.log_prob(z)  # (M,) log q(z_i | x_i)
    log_qz = torch.logsumexp(pairs.sum(-1), dim=1) - log_norm  # (M,) log q(z_i)
    log_prod = (torch.logsumexp(pairs, dim=1) - log_norm).sum(-1)  # (M,) sum_d log q(z_i,d)
    return {"mi": log_qz_x - log_qz, "tc": log_qz - log_prod, "dwkl": log_prod - log_p}


def tc(model, x, y=None, *, kl_weight: float = 1.0, free_bits: float = 0.0, ssim_weight: float = 0.0, target=None) -> LossTerms:
    """beta-TCVAE (Chen et al. 2018, eq. 4): recon + MI + beta TC + DWKL, the KL split by minibatch-weighted
    sampling; ``model.beta`` weighs the TC. extra: mi, tc, dwkl (nats per image; they sum to the sampled KL)."""
    lat, target, params = model(x, y, target)
    q = _gaussian_top(lat, "tc")
    recon = -model.likelihood.log_prob(params, target).mean()
    kl = lat.kl[0].mean()
    n = int(getattr(model.cfg, "dataset_size", None) or x.shape[0])
    parts = tc_decomposition(lat.top, q, lat.log_p, n)
    mi, tcv, dwkl = (parts[k].mean() for k in ("mi", "tc", "dwkl"))
    w = _warm(model, kl_weight)
    loss = recon + w * (mi + float(model.cfg.beta) * tcv + dwkl)
    return LossTerms(loss=loss, recon=recon, kl=kl, elbo_loss=recon + kl, extra={"mi": mi, "tc": tcv, "dwkl": dwkl})


class FactorDiscriminator(nn.Module):
    """D(z): an MLP from a code to two logits (from q(z), from the product of marginals) (Kim & Mnih 2018,
    appendix: 6 layers of 1000 LeakyReLU units; widths = model.disc_hidden)."""

    def __init__(self, cfg):
        super().__init__()
        layers, d = [], int(cfg.latent_dim)
        for h in list(getattr(cfg, "disc_hidden", None) or [1000] * 6):
            layers += [nn.Linear(d, int(h)), nn.LeakyReLU(0.2)]
            d = int(h)
        self.net = nn.Sequential(*layers, nn.Linear(d, 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def permute_dims(z: torch.Tensor) -> torch.Tensor:
    """Each dimension shuffled independently across the batch: a draw from prod_j q(z_j) (Kim & Mnih 2018, Alg. 1)."""
    b, d = z.shape
    idx = torch.argsort(torch.rand(b, d, device=z.device), dim=0)
    return torch.gather(z, 0, idx)


def factor(model, x, y=None, *, kl_weight: float = 1.0, free_bits: float = 0.0, ssim_weight: float = 0.0, target=None) -> LossTerms:
    """FactorVAE (Kim & Mnih 2018, eq. 2): -ELBO + gamma TC, TC ~ mean(logit_q - logit_perm) of D(z).
    ``aux_loss`` trains D: cross-entropy of D(z) (label 0, from q(z)) and D(permuted z) (label 1), both on
    detached codes, so it moves only D. extra: tc (the estimate), disc_loss, disc_accuracy."""
    lat, target, params = model(x, y, target)
    _gaussian_top(lat, "factor")
    disc = model.aux
    recon = -model.likelihood.log_prob(params, target).mean()
    kl = lat.kl[0].mean()
    logits = disc(lat.top)
    tc_est = (logits[:, 0] - logits[:, 1]).mean()
    gamma = float(model.cfg.gamma)
    loss = recon + kl_weight * kl + _warm(model, kl_weight) * gamma * tc_est
    z = lat.top.detach()
    real, fake = disc(z), disc(permute_dims(z))
    zeros = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
    aux = 0.5 * (F.cross_entropy(real, zeros) + F.cross_entropy(fake, zeros + 1))
    acc = 0.5 * ((real.argmax(1) == 0).float().mean() + (fake.argmax(1) == 1).float().mean())
    return LossTerms(
        loss=loss, recon=recon, kl=kl, elbo_loss=recon + kl, extra={"tc": tc_est, "disc_loss": aux.detach(), "disc_accuracy": acc},
        aux_loss=aux,
    )


def dip(model, x, y=None, *, kl_weight: float = 1.0, free_bits: float = 0.0, ssim_weight: float = 0.0, target=None) -> LossTerms:
    """DIP-VAE I or II (Kumar et al. 2018, eq. 6-7): -ELBO (beta-weighted) + the moment penalty on the
    covariance of the aggregate posterior. extra: dip (the penalty)."""
    lat, target, params = model(x, y, target)
    q = _gaussian_top(lat, "dip")
    recon = -model.likelihood.log_prob(params, target).mean()
    kl = lat.kl[0].mean()
    mu = q.mean
    centred = mu - mu.mean(0, keepdim=True)
    cov = centred.T @ centred / max(mu.shape[0] - 1, 1)  # Cov[mu(x)], (D, D)
    ii = str(model.cfg.dip_type).lower() == "ii"
    if ii:
        cov = cov + torch.diag(q.var.mean(0))  # + E[Sigma(x)] (diagonal posteriors)
    lam_od = float(model.cfg.dip_lambda)
    lam_d = lam_od if ii else 10.0 * lam_od
    diag = torch.diagonal(cov)
    off = cov - torch.diag(diag)
    penalty = lam_od * (off**2).sum() + lam_d * ((diag - 1) ** 2).sum()
    loss = recon + kl_weight * kl + penalty
    return LossTerms(loss=loss, recon=recon, kl=kl, elbo_loss=recon + kl, extra={"dip": penalty.detach()})


# objectives that train a module of their own: model.objective -> its constructor (the VAE builds it as
# ``model.aux``; the loop gives it a second optimizer and checkpoints that optimizer's state)
AUXILIARY = {"factor": FactorDiscriminator}
