"""Likelihood numbers of a VAE: ELBO terms and the importance-sampled NLL (IWAE bound), per image, in nats.

    log p(x) >= L_k(x) = log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),   z_i ~ q(z|x)      (Burda et al. 2016, eq. 8)

L_1 is the ELBO; L_k does not decrease with k and tends to log p(x). `importance_sampled` evaluates the k
weights for a whole batch of images at once, in chunks of k sized to a memory budget, and keeps a running
log-sum-exp over the chunks, so neither k nor the image count is ever looped one at a time. The same pass
gives the k-sample average of log p(x|z) (the reconstruction term of the ELBO) and the analytic KL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..data import to_float

# elements of a (k_chunk * B, C, H, W) tensor decoded at once: bounds memory whatever k and B are. A GPU
# wants large chunks; on a CPU small ones stay in cache: a conv decoder's k=100 pass over 1,000 MNIST
# digits took 10.0 s with 2**19 and 14.4 s with 2**23 (one thread, 2026-12-02).
DEFAULT_BUDGET = 1 << 23
CPU_BUDGET = 1 << 19


def default_budget(device: torch.device) -> int:
    return CPU_BUDGET if device.type == "cpu" else DEFAULT_BUDGET


@dataclass
class LikelihoodTerms:
    """Per-image values (N,) in nats, as numpy float64 arrays."""

    log_px: np.ndarray  # the IWAE bound L_k: an estimate of log p(x) from below
    recon: np.ndarray  # -E_q[log p(x|z)], averaged over the k samples
    kl: np.ndarray  # KL(q(z|x) || N(0, I)), analytic
    mean: np.ndarray  # (N, D) posterior means (for active units)
    k: int

    @property
    def elbo_loss(self) -> np.ndarray:
        """-ELBO = recon + KL (beta = 1), per image."""
        return self.recon + self.kl

    @property
    def nll(self) -> np.ndarray:
        return -self.log_px


@torch.no_grad()
def importance_sampled(
    model,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    k: int = 100,
    *,
    target: torch.Tensor | None = None,
    budget: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """IWAE bound of one batch. x: (B, C, H, W) in [0, 1] is encoded; `target` (default x) is scored;
    `budget`: elements decoded at once (None: `default_budget` of x's device).

    Returns (log_px (B,), mean log p(x|z) over the k samples (B,), KL (B,), posterior mean (B, D)), float64.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    target = x if target is None else target
    budget = default_budget(x.device) if budget is None else budget
    q = model.encode(x, y)
    b = x.shape[0]
    pixels = int(np.prod(x.shape[1:]))
    chunk = max(1, min(k, budget // max(1, b * pixels)))
    lse = torch.full((b,), -math.inf, dtype=torch.float64, device=x.device)  # running log-sum-exp of log w
    sum_log_px_z = torch.zeros(b, dtype=torch.float64, device=x.device)
    sum_kl = torch.zeros(b, dtype=torch.float64, device=x.device)  # Monte-Carlo KL (priors without a closed form)
    prior = model.prior
    done = 0
    while done < k:
        kc = min(chunk, k - done)
        z = q.sample(kc)  # (kc, B, D)
        flat = z.reshape(kc * b, -1)
        yk = None if y is None else y.repeat(kc)  # (kc*B,) matches z's (kc, B) flattening
        tk = target.unsqueeze(0).expand(kc, *target.shape).reshape(kc * b, *target.shape[1:])
        params = model.decode(flat, yk, context=tk)  # (kc*B, C, H, W)
        log_px_z = model.likelihood.log_prob(params, tk).view(kc, b).double()
        log_q_minus_p = q.log_prob(z).double() - prior.log_prob(z, y).double()  # (kc, B)
        log_w = log_px_z - log_q_minus_p
        lse = torch.logaddexp(lse, torch.logsumexp(log_w, dim=0))
        sum_log_px_z += log_px_z.sum(0)
        sum_kl += log_q_minus_p.sum(0)
        done += kc
    log_px = lse - math.log(k)
    kl = prior.kl(q, None, y).double() if prior.analytic else sum_kl / k
    return log_px, sum_log_px_z / k, kl, q.mean.float()


@torch.no_grad()
def importance_sampled_shared(
    model, x: torch.Tensor, y: torch.Tensor | None, k: int, targets: list[torch.Tensor], *, budget: int | None = None
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor]:
    """The IWAE bound of several targets from ONE encoder pass on x and one set of k samples z ~ q(z|x).

    Each target gets its own bound log (1/k) sum_i p(t|z_i) p(z_i) / q(z_i|x): valid for any proposal q
    (Burda et al. 2016, eq. 8 needs only that q covers the posterior). A factorized decoder runs once per
    sample; an autoregressive one once per target (it reads the target as context).
    Returns ([(log_px (B,), mean log p(t|z) (B,)) per target], KL (B,), posterior mean (B, D)), float64.
    """
    budget = default_budget(x.device) if budget is None else budget
    q = model.encode(x, y)
    b = x.shape[0]
    pixels = int(np.prod(x.shape[1:]))
    chunk = max(1, min(k, budget // max(1, b * pixels)))
    lse = [torch.full((b,), -math.inf, dtype=torch.float64, device=x.device) for _ in targets]
    sums = [torch.zeros(b, dtype=torch.float64, device=x.device) for _ in targets]
    sum_kl = torch.zeros(b, dtype=torch.float64, device=x.device)
    prior = model.prior
    shared = not getattr(model, "autoregressive", False)
    done = 0
    while done < k:
        kc = min(chunk, k - done)
        z = q.sample(kc)  # (kc, B, D)
        flat = z.reshape(kc * b, -1)
        yk = None if y is None else y.repeat(kc)
        log_q_minus_p = q.log_prob(z).double() - prior.log_prob(z, y).double()  # (kc, B)
        params = model.decode(flat, yk) if shared else None
        for i, target in enumerate(targets):
            tk = target.unsqueeze(0).expand(kc, *target.shape).reshape(kc * b, *target.shape[1:])
            p = params if shared else model.decode(flat, yk, context=tk)
            log_px_z = model.likelihood.log_prob(p, tk).view(kc, b).double()
            lse[i] = torch.logaddexp(lse[i], torch.logsumexp(log_px_z - log_q_minus_p, dim=0))
            sums[i] += log_px_z.sum(0)
        sum_kl += log_q_minus_p.sum(0)
        done += kc
    kl = prior.kl(q, None, y).double() if prior.analytic else sum_kl / k
    return [(lse[i] - math.log(k), sums[i] / k) for i in range(len(targets))], kl, q.mean.float()


@torch.no_grad()
def likelihood_terms_with_binarized(
    model,
    images,
    labels: torch.Tensor | None = None,
    k: int = 100,
    *,
    batch_size: int = 500,
    seed: int = 0,
    encode_binary: bool = False,
    budget: int | None = None,
    progress=None,
) -> tuple[LikelihoodTerms, LikelihoodTerms]:
    """(grey-level terms, terms on dynamically binarized images) in one pass over the images.

    By default both share the encoder pass on the grey image and the same z samples (the binarized bound
    then uses q(z|x) of the grey image as its proposal: a valid IWAE bound, at half the cost). With
    `encode_binary` (models trained on binarized images, the IWAE paper's protocol) the binary image is
    encoded for its own bound, as `likelihood_terms(binarized=True)` does. The binarization draws with
    seed + 1, the z samples with `seed`; the global RNG is untouched. `progress(done, total)` is called
    after each batch.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    use_y = labels is not None and getattr(model, "conditional", False)
    g = torch.Generator().manual_seed(seed + 1)
    keys = ("log_px", "rec", "kl", "mean")
    grey: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    binary: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    n = images.shape[0]
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for s in range(0, n, batch_size):
            x_cpu = to_float(images[s : s + batch_size].cpu())
            xb = torch.bernoulli(x_cpu, generator=g).to(device)
            x = x_cpu.to(device)
            y = labels[s : s + batch_size].to(device) if use_y else None
            if encode_binary:
                gl = importance_sampled(model, x, y, k, budget=budget)
                bl = importance_sampled(model, xb, y, k, budget=budget)
                rows = [(gl[0], -gl[1], gl[2], gl[3]), (bl[0], -bl[1], bl[2], bl[3])]
            else:
                (gt, bt), kl, mean = importance_sampled_shared(model, x, y, k, [x, xb], budget=budget)
                rows = [(gt[0], -gt[1], kl, mean), (bt[0], -bt[1], kl, mean)]
            for out, row in zip((grey, binary), rows, strict=True):
                for key, v in zip(keys, row, strict=True):
                    out[key].append(v.cpu())
            if progress is not None:
                progress(min(s + batch_size, n), n)
    model.train(was_training)
    return _terms(grey, k), _terms(binary, k)


def _terms(out: dict[str, list[torch.Tensor]], k: int) -> LikelihoodTerms:
    cat = {key: (torch.cat(v) if v else torch.zeros(0)) for key, v in out.items()}
    return LikelihoodTerms(
        log_px=cat["log_px"].numpy().astype(np.float64),
        recon=cat["rec"].numpy().astype(np.float64),
        kl=cat["kl"].numpy().astype(np.float64),
        mean=cat["mean"].numpy(),
        k=k,
    )


def binarize(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Dynamic binarisation with a fixed seed: each pixel ~ Bernoulli(grey level). uint8 (N, C, H, W) -> {0, 1} float."""
    g = torch.Generator().manual_seed(seed)
    probs = to_float(images.cpu())
    return torch.bernoulli(probs, generator=g)


@torch.no_grad()
def likelihood_terms(
    model,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    k: int = 100,
    *,
    batch_size: int = 500,
    seed: int = 0,
    binarized: bool = False,
    budget: int | None = None,
    progress=None,
) -> LikelihoodTerms:
    """Per-image IWAE bound, reconstruction and KL of a set of uint8 images (N, C, H, W), batched.

    With ``binarized`` the images are first binarised (Bernoulli draws with `seed`) and the model both
    encodes and scores the binary images: the standard protocol behind the MNIST NLL of the literature.
    The sampling of z uses `seed` too, and leaves the global RNG untouched. `images` may be a tensor or a
    lazy view (`ImageSet.pixels`); `progress(done, total)` is called after each batch.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    use_y = labels is not None and getattr(model, "conditional", False)
    data = binarize(images, seed + 1) if binarized else None
    out: dict[str, list[torch.Tensor]] = {"log_px": [], "rec": [], "kl": [], "mean": []}
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for s in range(0, images.shape[0], batch_size):
            x = (data[s : s + batch_size] if binarized else to_float(images[s : s + batch_size])).to(device)
            y = labels[s : s + batch_size].to(device) if use_y else None
            log_px, log_px_z, kl, mean = importance_sampled(model, x, y, k, budget=budget)
            for key, v in zip(("log_px", "rec", "kl", "mean"), (log_px, -log_px_z, kl, mean), strict=True):
                out[key].append(v.cpu())
            if progress is not None:
                progress(min(s + batch_size, images.shape[0]), images.shape[0])
    model.train(was_training)
    cat = {key: (torch.cat(v) if v else torch.zeros(0)) for key, v in out.items()}
    return LikelihoodTerms(
        log_px=cat["log_px"].numpy().astype(np.float64),
        recon=cat["rec"].numpy().astype(np.float64),
        kl=cat["kl"].numpy().astype(np.float64),
        mean=cat["mean"].numpy(),
        k=k,
    )


def bits_per_dim(nats_per_image: float, dims: int) -> float:
    """nats per image -> bits per dimension: nats / (C*H*W * ln 2)."""
    return float(nats_per_image) / (dims * math.log(2))


def active_units(means: np.ndarray, threshold: float = 0.01) -> int:
    """Dimensions whose posterior mean varies over the data: Cov_x(E_q[z_d]) > threshold (Burda et al. 2016, sec. 5.2)."""
    if len(means) < 2:
        return 0
    return int((np.var(means.astype(np.float64), axis=0, ddof=1) > threshold).sum())
