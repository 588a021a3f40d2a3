"""The training objective: the negative ELBO, with beta, KL warm-up and free bits.

    -ELBO(x) = E_q(z|x)[-log p(x|z)] + KL(q(z|x) || p(z))              (Kingma & Welling 2014, eq. 3)
    loss     = recon + w * KL_fb,   w = beta * warm-up factor            (Higgins et al. 2017, beta-VAE)
    KL_fb    = sum_d max(lambda, mean_batch KL_d)                        (Kingma et al. 2016, free bits)
    loss    += gamma * (1 - SSIM(E[x|z], x)),   gamma = model.ssim_weight     (Snell et al. 2017)

Every term is per image, in nats. The reconstruction uses one reparameterised sample of z; the KL is exact
for the normal and class priors, and the one-sample estimate log q(z|x) - log p(z) for a mixture prior. The
SSIM term (off by default) is not part of the ELBO: it pulls the decoder's mean towards images of the same
local structure as x, not only the same pixels (Gaussian window, sigma 1.5, as `vaelab evaluate` scores it);
recon, kl and elbo_loss stay the ELBO's terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LossTerms:
    loss: torch.Tensor  # what is minimised: mean over the batch of recon + weight * KL (with free bits)
    recon: torch.Tensor  # mean over the batch of -log p(x|z), nats per image
    kl: torch.Tensor  # mean over the batch of KL(q(z|x) || p(z)), nats per image
    elbo_loss: torch.Tensor  # recon + kl: the -ELBO with beta = 1
    ssim: torch.Tensor | None = None  # mean over the batch of SSIM(E[x|z], x), when the loss has the SSIM term


def vae_loss(
    model,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    kl_weight: float = 1.0,
    free_bits: float = 0.0,
    ssim_weight: float = 0.0,
    target: torch.Tensor | None = None,
) -> LossTerms:
    """Loss terms of one batch. `x` is the input in [0, 1]; `target` (default `x`) is what is scored,
    e.g. a binarised copy."""
    target = x if target is None else target
    posterior, z, params = model(x, y, target)
    recon = -model.likelihood.log_prob(params, target).mean()
    prior = model.prior
    if free_bits > 0:
        kl_dims = prior.kl_per_dim(posterior, y)  # (B, D)
        kl = kl_dims.sum(1).mean()
        penalised = kl_dims.mean(0).clamp(min=free_bits).sum()
    else:
        kl = prior.kl(posterior, z, y).mean()
        penalised = kl
    loss = recon + kl_weight * penalised
    ssim = None
    if ssim_weight > 0:  # the index `vaelab evaluate` reports, in its fast differentiable form
        from ..evaluate.reconstruction import ssim_separable

        ssim = ssim_separable(model.likelihood.mean(params), target).mean()
        loss = loss + ssim_weight * (1 - ssim)
    return LossTerms(loss=loss, recon=recon, kl=kl, elbo_loss=recon + kl, ssim=ssim)

