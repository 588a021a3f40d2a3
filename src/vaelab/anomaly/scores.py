"""Anomaly scores of images under a trained VAE: one number per image, larger = more anomalous.

    elbo        -ELBO = reconstruction + KL, nats (Kingma & Welling 2014, eq. 3; beta = 1)
    nll         importance-sampled -log p(x), the IWAE bound L_k, nats (Burda et al. 2016, eq. 8)
    recon       mean squared error per pixel of the decoded posterior mean
    ssim        1 - SSIM of the decoded posterior mean (Gaussian 11 x 11 window, Wang et al. 2004)
    complexity  NLL minus the input's complexity, in bits per dimension (Serra et al. 2020, eq. 2):
                S(x) = l_M(x) - L(x), l_M = -log2 p_M(x) / D, L = a lossless compressor's code length / D
    ratio       -log p(x) + log p_bg(x), nats: the likelihood ratio against a background model trained on
                perturbed inputs (Ren et al. 2019, eq. 5, as a score: -LLR)

Raw likelihoods favour simple images: a Fashion-MNIST model gives MNIST digits a higher likelihood than
its own test images (Nalisnick et al. 2019), because the likelihood of an image is dominated by how easy
its pixels are to predict, not by what it shows. Both corrections remove that part: `complexity` with a
generic compressor's code length (PNG here, no second model), `ratio` with a model of the same family
that only learned the low-level statistics (its inputs had a share of their pixels replaced by noise).
How well each works here is measured by benchmarks/anomaly.py (docs/anomaly.md): with a Bernoulli VAE on grey
levels the code length dominates `complexity`, and a VAE background model did not make `ratio` work.

The likelihood terms come from `evaluate.likelihood.likelihood_terms` (a VQ run: its code bound,
`models.vq_prior.code_bound_terms`) and the reconstruction terms from
`evaluate.reconstruction.reconstruction_metrics`, so a score here is the same number `vaelab evaluate`
reports per image. A family without a likelihood bound (a deterministic encoder; a VQ run before
`vaelab train-prior`) gets the reconstruction scores only: `why_not` says why, in one line.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import VaelabError

# name -> what it is (the unit in brackets); every score is oriented so that larger = more anomalous
SCORES: dict[str, str] = {
    "elbo": "-ELBO (nats)",
    "nll": "importance-sampled NLL (nats)",
    "recon": "reconstruction MSE per pixel",
    "ssim": "1 - SSIM of the reconstruction",
    "complexity": "NLL minus PNG code length (bits/dim; Serra et al. 2020)",
    "ratio": "NLL minus a background model's NLL (nats; Ren et al. 2019)",
}
DEFAULT_SCORES = ("ssim", "recon", "nll", "elbo", "complexity")  # the first flags: 1 - SSIM ranked best one-class
COMPRESSORS = ("png", "zlib")


def parse_scores(text: str | Sequence[str] | None, background: bool = False) -> list[str]:
    """'nll,recon' -> ['nll', 'recon'] (validated); None: the defaults, plus 'ratio' with a background model."""
    if text is None:
        return list(DEFAULT_SCORES) + (["ratio"] if background else [])
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if str(t).strip()]
    if not items:
        raise VaelabError("no anomaly score given", f"choose from: {', '.join(SCORES)}")
    out: list[str] = []
    for name in items:
        if name not in SCORES:
            import difflib

            close = difflib.get_close_matches(name, list(SCORES), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"choose from: {', '.join(SCORES)}"
            raise VaelabError(f"unknown anomaly score '{name}'", hint)
        if name == "ratio" and not background:
            raise VaelabError(
                "the 'ratio' score needs a background model",
                "give --background RUN2, a run trained on perturbed inputs (train.perturb=0.2)",
            )
        if name not in out:
            out.append(name)
    return out


def code_length_bits(images: torch.Tensor, compressor: str = "png") -> np.ndarray:
    """Lossless code length L(x) of each uint8 image (N, C, H, W), in bits: the PNG file size (PIL,
    compression level 9) or zlib's on the raw bytes. A constant header does not change any ranking."""
    if compressor not in COMPRESSORS:
        raise VaelabError(f"unknown compressor '{compressor}'", f"use one of: {', '.join(COMPRESSORS)}")
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise VaelabError(f"code lengths need uint8 images (N, C, H, W), got {tuple(images.shape)} {images.dtype}")
    arr = images.cpu().numpy()
    out = np.empty(len(arr), dtype=np.float64)
    if compressor == "zlib":
        for i, a in enumerate(arr):
            out[i] = 8 * len(zlib.compress(a.tobytes(), 9))
        return out
    from PIL import Image

    for i, a in enumerate(arr):
        img = Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0))
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=9)
        out[i] = 8 * buf.tell()
    return out


def complexity_score(nll_nats: np.ndarray, code_bits: np.ndarray, dims: int) -> np.ndarray:
    """Serra et al. 2020, eq. 2 as an anomaly score: (-log2 p(x) - L(x)) / D in bits per dimension.

    A complex (noisy, textured) image has a long code L and a large NLL alike; subtracting L leaves what
    the model finds surprising beyond the image's own complexity."""
    return (np.asarray(nll_nats, np.float64) / math.log(2) - np.asarray(code_bits, np.float64)) / dims


def perturb(x: torch.Tensor, rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Ren et al. 2019, sec. 3.1: replace a share `rate` of the pixels (each independently) by a value drawn
    uniformly from [0, 1]. x: (B, C, H, W) float in [0, 1]; the background model trains on these."""
    if rate <= 0:
        return x
    mask = torch.rand(x.shape, generator=generator, device=x.device) < rate
    noise = torch.rand(x.shape, generator=generator, device=x.device).to(x.dtype)
    return torch.where(mask, noise, x)


LIKELIHOOD_SCORES = ("elbo", "nll", "complexity", "ratio")  # the scores built on a likelihood bound


def why_not(run, name: str, where: str = "") -> tuple[str, str] | None:
    """(why, what to do) when the score `name` does not apply to this run's family, else None.

    The likelihood scores need a bound on log p(x). A deterministic encoder (model.posterior=delta: RAE,
    WAE) has none. A VQ run has one once its code prior is trained: log p(x) >= log p(x|z_q) + log p(z_q)
    (q(z|x) is a point mass on the code map z_q, so this is also its ELBO). The other families (iwae,
    miwae, ciwae, piwae, mmd, tc, factor, dip, iaf, vamp, mog, stacked layers) have a Gaussian-latent bound."""
    if name not in LIKELIHOOD_SCORES:
        return None
    model = run.model
    reason = getattr(model, "no_density", None)
    if not reason:
        return None
    if getattr(model, "quantizer", None) is not None:
        from ..models.vq_prior import load_prior

        try:
            load_prior(run)
            return None
        except VaelabError as e:
            return (f"the '{name}' score of a VQ run{where} needs its code prior (log p(x) >= log p(x|z_q) + log p(z_q)), and {e.message}",
                    f"{e.hint}, or use --score ssim,recon")
    return f"the '{name}' score needs a likelihood{where}: {reason}", "use --score ssim,recon"


def check_applies(run, names: Sequence[str], background=None) -> None:
    """One clear error for the first requested score that this run's family (or the background's) cannot give."""
    for name in names:
        problem = why_not(run, name) or (why_not(background, name, " (the background run)") if name == "ratio" and background is not None else None)
        if problem:
            raise VaelabError(*problem)


def _likelihood(run, images: torch.Tensor, k: int, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(-log p(x) bound, -ELBO) per image, nats: the IWAE bound with k samples, or a VQ run's code bound.

    A conditional model has p(x|y), and an anomaly has no class: its score is the marginal over the
    classes, p(x) = sum_y p(y) p(x|y) with p(y) uniform, bounded by log-sum-exp over y of each class's
    bound (log is concave: E log sum_y p(y) w_y <= log sum_y p(y) E w_y = log p(x), the IWAE bound
    with a proposal stratified over the classes), so it costs one pass per class."""
    model = run.model.eval()
    if getattr(model, "quantizer", None) is not None:
        from ..models.vq_prior import code_bound_terms

        rec, code = code_bound_terms(run, images, batch_size)
        return rec + code, rec + code  # a point-mass q(z|x): the bound and the ELBO coincide
    from ..evaluate.likelihood import likelihood_terms

    if not model.conditional:
        lt = likelihood_terms(model, images, None, k, batch_size=batch_size, seed=seed)
        return lt.nll, lt.elbo_loss
    from scipy.special import logsumexp

    log_px, elbo = [], []
    for y in range(model.num_classes):
        lt = likelihood_terms(model, images, torch.full((len(images),), y, dtype=torch.long), k, batch_size=batch_size, seed=seed)
        log_px.append(-lt.nll)
        elbo.append(-lt.elbo_loss)
    log_k = math.log(model.num_classes)
    return log_k - logsumexp(np.stack(log_px), 0), log_k - logsumexp(np.stack(elbo), 0)


def best_class(run, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor | None:
    """A conditional model's class for each image (N,): the one whose decoder explains it best,
    argmin_y -log p(x | z = E(x, y), y); None for an unconditional model."""
    model = run.model
    if not model.conditional:
        return None
    from ..evaluate.nodensity import point_terms

    n = len(images)
    rec = [point_terms(model, images, torch.full((n,), y, dtype=torch.long), batch_size=batch_size).recon for y in range(model.num_classes)]
    return torch.as_tensor(np.stack(rec).argmin(0), dtype=torch.long)


def score_images(
    run,
    images: torch.Tensor,
    scores: Sequence[str],
    *,
    k: int = 100,
    background=None,
    compressor: str = "png",
    batch_size: int = 500,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Every requested score of a set of uint8 images (N, C, H, W) under `run` (a `vaelab.run.Run`).

    `k`: importance samples of the NLL (also the samples the ELBO terms average over); `background`: the
    run of the background model for 'ratio'. Returns {score: (N,) float64}, larger = more anomalous.
    """
    from ..evaluate.reconstruction import reconstruction_metrics

    check_applies(run, scores, background)
    model = run.model.eval()
    out: dict[str, np.ndarray] = {}
    need_lik = {"elbo", "nll", "complexity", "ratio"} & set(scores)
    if need_lik:
        nll, elbo_loss = _likelihood(run, images, k, batch_size, seed)
        if "elbo" in scores:
            out["elbo"] = elbo_loss
        if "nll" in scores:
            out["nll"] = nll
        if "complexity" in scores:
            c, h, w = images.shape[1:]
            out["complexity"] = complexity_score(nll, code_length_bits(images, compressor), c * h * w)
        if "ratio" in scores:
            if background is None:
                raise VaelabError("the 'ratio' score needs a background model", "give --background RUN2")
            out["ratio"] = nll - _likelihood(background, images, k, batch_size, seed)[0]
    if {"recon", "ssim"} & set(scores):  # a conditional model reconstructs each image as its best class
        rec = reconstruction_metrics(model, images, best_class(run, images, batch_size), batch_size=batch_size)
        if "recon" in scores:
            out["recon"] = rec["mse"]
        if "ssim" in scores:
            out["ssim"] = 1.0 - rec["ssim"]
    return {name: out[name] for name in scores}
