"""Training objectives: pure functions ``(model, x, y, *, kl_weight, free_bits, ssim_weight, target) -> LossTerms``,
picked by name from `OBJECTIVES` (``model.objective``). The loop, the logs and the sweeps only see LossTerms.

    elbo:   -ELBO(x) = E_q(z|x)[-log p(x|z)] + KL(q(z|x) || p(z))             (Kingma & Welling 2014, eq. 3)
            loss     = recon + w * KL_fb,   w = beta * warm-up factor          (Higgins et al. 2017, beta-VAE)
            KL_fb    = sum_d max(lambda, mean_batch KL_d)                       (Kingma et al. 2016, free bits)
            loss    += gamma * (1 - SSIM(E[x|z], x)),   gamma = model.ssim_weight    (Snell et al. 2017)
    iwae:   L_K(x) = log (1/K) sum_k p(x, z_k) / q(z_k|x),  z_k ~ q(z|x)          (Burda et al. 2016, eq. 8)
            gradients through the normalised weights w~_k = w_k / sum_j w_j      (Burda et al. 2016, eq. 14)
    miwae:  (1/M) sum_m L_K over M independent groups of K samples              (Rainforth et al. 2018, sec. 4)
    ciwae:  beta_c * ELBO + (1 - beta_c) * L_K, on the same K samples          (Rainforth et al. 2018, sec. 4)
    piwae:  on the same M*K samples, the inference network (encoder, flow) ascends MIWAE(M, K) and the
            generative network (decoder, prior, top-down layers) L_MK           (Rainforth et al. 2018, sec. 4)

Every term is per image, in nats, and the latent terms cover all stochastic layers (``model.infer``): log
p(z) = log p(z_L) + sum_l log p(z_l | z_{l+1}), log q(z|x) likewise. The ELBO's KL is exact where it exists
(normal and class priors with a Gaussian posterior; lower layers given the layer above) and otherwise the
one-sample estimate log q(z|x) - log p(z) (mixture and Vamp priors, IAF). The SSIM term (off by default) is
not part of the ELBO: recon, kl and elbo_loss stay the ELBO's terms. With stochastic layers the KL of each
layer is in ``extra`` as kl_1 (bottom) ... kl_L (top).

To add an objective: write the function here (or in its own module), cite its paper and equation, get
everything from one call ``lat, target, params = model(x, y, target, n=...)`` (the latents of every layer
with log q and log p, the top posterior ``lat.q``, the scored images, the decoder's output), return
LossTerms (further terms in ``extra``, logged as train/<name>), and add it to `OBJECTIVES`, to
``CHOICES['model.objective']`` and ``FAMILIES`` in config.py (one line and the reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from operator import attrgetter

import torch

from ..errors import VaelabError


@dataclass
class LossTerms:
    loss: torch.Tensor  # what is minimised (e.g. mean over the batch of recon + weight * KL, with free bits)
    recon: torch.Tensor  # mean over the batch of -log p(x|z), nats per image
    kl: torch.Tensor  # mean over the batch of KL(q(z|x) || p(z)), nats per image (all layers)
    elbo_loss: torch.Tensor  # recon + kl: the -ELBO with beta = 1
    ssim: torch.Tensor | None = None  # mean over the batch of SSIM(E[x|z], x), when the loss has the SSIM term
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # further per-image terms (nats), e.g. kl_1, kl_2
    aux_loss: torch.Tensor | None = None  # what the model's auxiliary module minimises (FactorVAE's discriminator), by its own optimizer


def _layer_terms(kls: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """kl_1 .. kl_L (means over the batch, and over samples when there are several), when L > 1."""
    return {f"kl_{i + 1}": k.mean() for i, k in enumerate(kls)} if len(kls) > 1 else {}


def elbo(
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
    lat, target, params = model(x, y, target)  # through forward: wrappers (DDP, precision) see the step
    recon = -model.likelihood.log_prob(params, target).mean()
    kl = torch.stack(lat.kl).sum(0).mean()
    if free_bits > 0:
        if lat.kl_dims is None:
            raise VaelabError(
                "model.free_bits needs a closed-form KL per latent dimension, which this prior/posterior has not",
                "use model.free_bits=0 with model.prior=mog/vamp or model.posterior=iaf",
            )
        dims = torch.cat(lat.kl_dims, dim=-1)  # (B, sum of D_l)
        penalised = dims.mean(0).clamp(min=free_bits).sum()
    else:
        penalised = kl
    loss = recon + kl_weight * penalised
    ssim = None
    if ssim_weight > 0:  # the index `vaelab evaluate` reports, in its fast differentiable form
        from ..evaluate.reconstruction import ssim_separable

        ssim = ssim_separable(model.likelihood.mean(params), target).mean()
        loss = loss + ssim_weight * (1 - ssim)
    return LossTerms(loss=loss, recon=recon, kl=kl, elbo_loss=recon + kl, ssim=ssim, extra=_layer_terms(lat.kl))


vae_loss = elbo  # the name of the objective before there were several


def log_weights(
    model, x: torch.Tensor, y: torch.Tensor | None, target: torch.Tensor, n: int, kl_weight: float = 1.0, params=None
):
    """n importance weights per image: log w_k = log p(x|z_k) + w (log p(z_k) - log q(z_k|x)), (n, B); and
    -log p(x|z_k), the KL term and the per-layer KLs, each (n, B). With n = 1 the latent term is the ELBO's
    KL (closed form where one exists: the same bound, with less variance), so L_1 is the ELBO exactly.
    ``params`` (name -> tensor, as from ``model.named_parameters()``) stand in for the model's own."""
    if params is None:
        lat, tk, params = model(x, y, target, n=n)  # every layer (n, B, D_l); images repeated (n*B, C, H, W)
    else:
        # tie_weights=False: a wrapper holds the module under two names (Fabric's _forward_module and
        # _original_module); swapping both would put the stand-ins back as the model's own parameters
        lat, tk, params = torch.func.functional_call(model, params, (x, y, target), {"n": n}, tie_weights=False)
    log_px_z = model.likelihood.log_prob(params, tk).view(n, x.shape[0])
    kl = torch.stack(lat.kl).sum(0)
    latent = -kl if n == 1 else lat.log_p - lat.log_q
    return log_px_z + kl_weight * latent, -log_px_z, kl, lat.kl


def _check(name: str, free_bits: float, ssim_weight: float) -> None:
    if free_bits > 0 or ssim_weight > 0:
        what = "model.free_bits" if free_bits > 0 else "model.ssim_weight"
        raise VaelabError(f"model.objective={name} is an importance-weighted bound; {what} has no place in it", f"set {what}=0, or use model.objective=elbo")


def _bound(log_w: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k w_k over the first dimension, (B,)."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def _terms(loss, recon, kl, kls) -> LossTerms:
    recon, kl = recon.mean(), kl.mean()
    return LossTerms(loss=loss, recon=recon, kl=kl, elbo_loss=recon + kl, extra=_layer_terms(kls))


def iwae(
    model,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    k: int | None = None,
    kl_weight: float = 1.0,
    free_bits: float = 0.0,
    ssim_weight: float = 0.0,
    target: torch.Tensor | None = None,
) -> LossTerms:
    """The K-sample importance-weighted bound (Burda et al. 2016, eq. 8), K = ``model.iw_samples``; autograd of
    the log-sum-exp gives eq. 14's gradient, sum_k w~_k grad log w_k. ``kl_weight`` (warm-up) scales the
    latent part of log w; at 1 it is the bound. recon and kl are the averages over the K samples."""
    _check("iwae", free_bits, ssim_weight)
    k = int(k or model.cfg.iw_samples)
    target = x if target is None else target
    log_w, recon, kl, kls = log_weights(model, x, y, target, k, kl_weight)
    # L_1 = E[log p(x|z)] - KL: summed in the ELBO's order, so K = 1 gives the ELBO to the last bit
    loss = -_bound(log_w).mean() if k > 1 else recon.mean() + kl_weight * kl.mean()
    return _terms(loss, recon, kl, kls)


def miwae(
    model,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    kl_weight: float = 1.0,
    free_bits: float = 0.0,
    ssim_weight: float = 0.0,
    target: torch.Tensor | None = None,
) -> LossTerms:
    """MIWAE(M, K): the mean of M independent K-sample bounds, M = ``model.iw_groups``, K = ``model.iw_samples``
    (Rainforth et al. 2018, "Tighter Variational Bounds are Not Necessarily Better", sec. 4): a better
    signal-to-noise ratio for the encoder's gradient than one bound of M*K samples."""
    _check("miwae", free_bits, ssim_weight)
    m, k = int(model.cfg.iw_groups), int(model.cfg.iw_samples)
    target = x if target is None else target
    log_w, recon, kl, kls = log_weights(model, x, y, target, m * k, kl_weight)
    bound = _bound(log_w.view(m, k, -1).transpose(0, 1)).mean(0)  # (B,): mean over the M groups
    return _terms(-bound.mean(), recon, kl, kls)


def ciwae(
    model,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    kl_weight: float = 1.0,
    free_bits: float = 0.0,
    ssim_weight: float = 0.0,
    target: torch.Tensor | None = None,
) -> LossTerms:
    """CIWAE(beta): beta * ELBO + (1 - beta) * L_K on the same K samples, beta = ``model.ciwae_beta`` (Rainforth
    et al. 2018, sec. 4); the ELBO is the mean of the K log weights."""
    _check("ciwae", free_bits, ssim_weight)
    k, beta = int(model.cfg.iw_samples), float(model.cfg.ciwae_beta)
    target = x if target is None else target
    log_w, recon, kl, kls = log_weights(model, x, y, target, k, kl_weight)
    bound = beta * log_w.mean(0) + (1 - beta) * _bound(log_w)
    return _terms(-bound.mean(), recon, kl, kls)


def _split_log_weights(model, x, y, target, n: int, kl_weight: float, live: str):
    """`log_weights` with one network's parameters detached: ``live`` = "inference" (the modules named in
    ``VAE.INFERENCE``) or "generative" (all the others). The pass goes through the model's forward (a wrapper
    sees it) with `torch.func.functional_call`; both networks still take part in the values."""
    inference = {id(p) for name in model.INFERENCE for p in attrgetter(name)(model).parameters()}
    keep = live == "inference"
    params = {k: p if (id(p) in inference) == keep else p.detach() for k, p in model.named_parameters()}
    return log_weights(model, x, y, target, n, kl_weight, params=params)


def piwae(
    model,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    kl_weight: float = 1.0,
    free_bits: float = 0.0,
    ssim_weight: float = 0.0,
    target: torch.Tensor | None = None,
) -> LossTerms:
    """PIWAE(M, K) (Rainforth et al. 2018, sec. 4): one draw of M*K samples per image; the inference network
    (``VAE.INFERENCE``: encoder, bottom-up layers, posterior flow) gets the gradient of MIWAE(M, K), the mean
    of M K-sample bounds (a better signal-to-noise ratio for it), and the generative network (decoder, top-down
    layers, prior with the VampPrior's pseudo-inputs or the mixture) that of the tighter L_MK. One scalar
    carries both: -L_MK with the inference network detached, plus -MIWAE with the generative network detached
    (minus its value, so the loss reads -L_MK, nats per image, like iwae's). The two passes share their noise.
    Without gradients (validation) one pass gives the same value. recon and kl average the M*K samples;
    extra["miwae"] is -MIWAE(M, K)."""
    _check("piwae", free_bits, ssim_weight)
    m, k = int(model.cfg.iw_groups), int(model.cfg.iw_samples)
    n = m * k
    target = x if target is None else target

    def miwae_of(log_w):  # (B,): the mean over the M groups of the K-sample bounds, as in miwae
        return _bound(log_w.view(m, k, -1).transpose(0, 1)).mean(0)

    if not torch.is_grad_enabled():
        log_w, recon, kl, kls = log_weights(model, x, y, target, n, kl_weight)
        terms = _terms(-_bound(log_w).mean(), recon, kl, kls)
        terms.extra["miwae"] = -miwae_of(log_w).mean()
        return terms
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=x.device.type):  # the second pass redraws the same noise
        log_w_gen, *_ = _split_log_weights(model, x, y, target, n, kl_weight, live="generative")
    log_w_inf, recon, kl, kls = _split_log_weights(model, x, y, target, n, kl_weight, live="inference")
    iw = -_bound(log_w_gen).mean()  # L_MK: gradients to the generative network only
    mi = -miwae_of(log_w_inf).mean()  # MIWAE(M, K): gradients to the inference network only
    terms = _terms(iw + (mi - mi.detach()), recon.detach(), kl.detach(), [v.detach() for v in kls])
    terms.extra["miwae"] = mi.detach()
    return terms


# model.objective -> the loss function; each returns LossTerms
OBJECTIVES = {"elbo": elbo, "iwae": iwae, "miwae": miwae, "ciwae": ciwae, "piwae": piwae}

# families beyond the Gaussian latent (issue 23): regularised autoencoders and the VQ-VAE
from .regularized import mmd, rae  # noqa: E402
from .vq import vq  # noqa: E402

OBJECTIVES.update(mmd=mmd, rae=rae, vq=vq)
