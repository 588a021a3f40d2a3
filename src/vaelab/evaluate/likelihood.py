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
from ..data.budget import release_free_memory
from ..models.hierarchy import joint_posterior

# elements of a (k_chunk * B, C, H, W) tensor decoded at once: bounds memory whatever k and B are. A GPU
# wants large chunks; on a CPU small ones stay in cache: a conv decoder's k=100 pass over 1,000 MNIST
# digits took 10.0 s with 2**19 and 14.4 s with 2**23 (one thread, 2026-12-02).
DEFAULT_BUDGET = 1 << 23
CPU_BUDGET = 1 << 19


def default_budget(device: torch.device) -> int:
    return CPU_BUDGET if device.type == "cpu" else DEFAULT_BUDGET


def _steps(k: int, chunk: int, marks) -> list[int]:
    """Chunk sizes that sum to k, each at most `chunk`, with a boundary at every mark below k: the bound at a
    smaller k' is then read off the running log-sum-exp of the same samples (the first k' of k iid draws)."""
    ends = sorted({int(m) for m in marks if 0 < int(m) < k} | {k})
    steps, done = [], 0
    for end in ends:
        while done < end:
            steps.append(min(chunk, end - done))
            done += steps[-1]
    return steps


@dataclass
class LikelihoodTerms:
    """Per-image values (N,) in nats, as numpy float64 arrays."""

    log_px: np.ndarray  # the IWAE bound L_k: an estimate of log p(x) from below
    recon: np.ndarray  # -E_q[log p(x|z)], averaged over the k samples
    kl: np.ndarray  # KL(q(z|x) || p(z)): closed form where one exists, else the k-sample mean of log q - log p
    mean: np.ndarray  # (N, D) posterior means of the top layer (for active units)
    k: int
    layer_kl: np.ndarray | None = None  # (L, N) the KL of each stochastic layer, bottom first
    layer_means: list[np.ndarray] | None = None  # each layer's (N, D_l) posterior means, bottom first
    log_px_at: dict[int, np.ndarray] | None = None  # L_k' at smaller k', from the first k' of the same samples

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
    layer_terms: dict | None = None,
    at: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """IWAE bound of one batch. x: (B, C, H, W) in [0, 1] is encoded; `target` (default x) is scored;
    `budget`: elements decoded at once (None: `default_budget` of x's device).

    Works for every family: log w = log p(x|z_1) + log p(z) - log q(z|x), with log p(z) and log q(z|x) over all
    stochastic layers (for two: log p(z_1|z_2) + log p(z_2) - log q(z_1, z_2|x)) and, for a flow posterior,
    log q of the flowed sample. Returns (log_px (B,), mean log p(x|z) over the k samples (B,), KL (B,),
    top-layer posterior mean (B, D)), float64. A dict passed as `layer_terms` receives "kl" (L, B), the KL of
    each layer (bottom first), and "means", each layer's posterior means. A dict `at` whose keys are smaller
    k' receives L_k' (B,) of each, from the first k' of the same k samples (at no extra cost).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    target = x if target is None else target
    budget = default_budget(x.device) if budget is None else budget
    joint, decode_bottom = joint_posterior(model, x, y)  # the bottom-up pass, once for all k samples
    b = x.shape[0]
    pixels = int(np.prod(x.shape[1:]))
    chunk = max(1, min(k, budget // max(1, b * pixels)))
    lse = torch.full((b,), -math.inf, dtype=torch.float64, device=x.device)  # running log-sum-exp of log w
    sum_log_px_z = torch.zeros(b, dtype=torch.float64, device=x.device)
    sum_kl = torch.zeros(b, dtype=torch.float64, device=x.device)  # the KL term (closed form where one exists)
    sum_layers: torch.Tensor | None = None  # per stochastic layer, (L, B)
    done = 0
    for kc in _steps(k, chunk, at or ()):
        lat = joint.rsample(kc)  # every layer (kc, B, D_l), log q(z|x) and log p(z) of the whole stack
        flat = lat.z.reshape(kc * b, -1)
        yk = None if y is None else y.repeat(kc)  # (kc*B,) matches z's (kc, B) flattening
        tk = target.unsqueeze(0).expand(kc, *target.shape).reshape(kc * b, *target.shape[1:])
        params = decode_bottom(flat, yk, context=tk)  # (kc*B, C, H, W)
        log_px_z = model.likelihood.log_prob(params, tk).view(kc, b).double()
        log_w = log_px_z + lat.log_p.double() - lat.log_q.double()
        lse = torch.logaddexp(lse, torch.logsumexp(log_w, dim=0))
        sum_log_px_z += log_px_z.sum(0)
        layers = torch.stack([t.double() for t in lat.kl]).sum(1)  # (L, B)
        sum_layers = layers if sum_layers is None else sum_layers + layers
        sum_kl += layers.sum(0)
        done += kc
        if at is not None and done in at:
            at[done] = lse - math.log(done)
    log_px = lse - math.log(k)
    means = [m.float() for m in joint.layer_means()]
    if layer_terms is not None:
        layer_terms["kl"] = sum_layers / k
        layer_terms["means"] = means
    return log_px, sum_log_px_z / k, sum_kl / k, means[-1]


@torch.no_grad()
def importance_sampled_shared(
    model,
    x: torch.Tensor,
    y: torch.Tensor | None,
    k: int,
    targets: list[torch.Tensor],
    *,
    budget: int | None = None,
    layer_terms: dict | None = None,
    at: list[dict] | None = None,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor]:
    """The IWAE bound of several targets from ONE encoder pass on x and one set of k samples z ~ q(z|x).

    Each target gets its own bound log (1/k) sum_i p(t|z_i) p(z_i) / q(z_i|x): valid for any proposal q
    (Burda et al. 2016, eq. 8 needs only that q covers the posterior). Like `importance_sampled`, it works for
    every family (all stochastic layers, flows). A factorized decoder runs once per sample; an autoregressive
    one once per target (it reads the target as context).
    Returns ([(log_px (B,), mean log p(t|z) (B,)) per target], KL (B,), top-layer posterior mean (B, D)), float64.
    A dict passed as `layer_terms` receives "kl" (L, B) and "means", as `importance_sampled` gives them (the
    proposal, hence both, is shared by every target). `at`, one dict per target keyed by smaller k', receives
    those bounds as in `importance_sampled`.
    """
    budget = default_budget(x.device) if budget is None else budget
    joint, decode_bottom = joint_posterior(model, x, y)
    b = x.shape[0]
    pixels = int(np.prod(x.shape[1:]))
    chunk = max(1, min(k, budget // max(1, b * pixels)))
    lse = [torch.full((b,), -math.inf, dtype=torch.float64, device=x.device) for _ in targets]
    sums = [torch.zeros(b, dtype=torch.float64, device=x.device) for _ in targets]
    sum_layers: torch.Tensor | None = None  # per stochastic layer, (L, B)
    shared = not getattr(model, "autoregressive", False)
    done = 0
    for kc in _steps(k, chunk, at[0] if at else ()):
        lat = joint.rsample(kc)  # every layer; log q(z|x) and log p(z) of the whole stack
        flat = lat.z.reshape(kc * b, -1)
        yk = None if y is None else y.repeat(kc)
        log_q_minus_p = lat.log_q.double() - lat.log_p.double()  # (kc, B)
        expand = [t.unsqueeze(0).expand(kc, *t.shape).reshape(kc * b, *t.shape[1:]) for t in targets]
        params = decode_bottom(flat, yk, context=expand[0]) if shared else None  # a factorized decoder ignores context
        for i, tk in enumerate(expand):
            p = params if shared else decode_bottom(flat, yk, context=tk)
            log_px_z = model.likelihood.log_prob(p, tk).view(kc, b).double()
            lse[i] = torch.logaddexp(lse[i], torch.logsumexp(log_px_z - log_q_minus_p, dim=0))
            sums[i] += log_px_z.sum(0)
        layers = torch.stack([t.double() for t in lat.kl]).sum(1)  # (L, B), closed form where one exists
        sum_layers = layers if sum_layers is None else sum_layers + layers
        done += kc
        for i, marks in enumerate(at or ()):
            if done in marks:
                marks[done] = lse[i] - math.log(done)
    means = [m.float() for m in joint.layer_means()]
    if layer_terms is not None:
        layer_terms["kl"] = sum_layers / k
        layer_terms["means"] = means
    return [(lse[i] - math.log(k), sums[i] / k) for i in range(len(targets))], sum_layers.sum(0) / k, means[-1]


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
    also: tuple[int, ...] = (),
) -> tuple[LikelihoodTerms, LikelihoodTerms]:
    """(grey-level terms, terms on dynamically binarized images) in one pass over the images.

    By default both share the encoder pass on the grey image and the same z samples (the binarized bound
    then uses q(z|x) of the grey image as its proposal: a valid IWAE bound, at half the cost). With
    `encode_binary` (models trained on binarized images, the IWAE paper's protocol) the binary image is
    encoded for its own bound, as `likelihood_terms(binarized=True)` does. The binarization draws with
    seed + 1, the z samples with `seed`; the global RNG is untouched. `progress(done, total)` is called
    after each batch. `also`: smaller k' whose bounds come from the first k' of the same samples (`log_px_at`).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    use_y = labels is not None and getattr(model, "conditional", False)
    g = torch.Generator().manual_seed(seed + 1)
    keys = ("log_px", "rec", "kl", "mean", "layer_kl", "layer_means")
    grey: dict[str, list] = {key: [] for key in (*keys, "at")}
    binary: dict[str, list] = {key: [] for key in (*keys, "at")}
    marks = sorted({int(m) for m in also if 0 < int(m) < k})
    n = images.shape[0]
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for s in range(0, n, batch_size):
            x_cpu = to_float(images[s : s + batch_size].cpu())
            xb = torch.bernoulli(x_cpu, generator=g).to(device)
            x = x_cpu.to(device)
            y = labels[s : s + batch_size].to(device) if use_y else None
            # per stochastic layer too (KL and posterior means), so a hierarchical run keeps its per-layer
            # active units and KL when evaluated with --binarized
            ats = [dict.fromkeys(marks), dict.fromkeys(marks)]
            if encode_binary:
                gd: dict = {}
                bd: dict = {}
                gl = importance_sampled(model, x, y, k, budget=budget, layer_terms=gd, at=ats[0])
                bl = importance_sampled(model, xb, y, k, budget=budget, layer_terms=bd, at=ats[1])
                rows = [(gl[0], -gl[1], gl[2], gl[3], gd["kl"], gd["means"]),
                        (bl[0], -bl[1], bl[2], bl[3], bd["kl"], bd["means"])]
            else:
                shared: dict = {}
                (gt, bt), kl, mean = importance_sampled_shared(model, x, y, k, [x, xb], budget=budget, layer_terms=shared, at=ats)
                rows = [(gt[0], -gt[1], kl, mean, shared["kl"], shared["means"]),
                        (bt[0], -bt[1], kl, mean, shared["kl"], shared["means"])]
            for out, row, at in zip((grey, binary), rows, ats, strict=True):
                for key, v in zip(keys, row, strict=True):
                    out[key].append([m.cpu() for m in v] if key == "layer_means" else v.cpu())
                out["at"].append({m: v.cpu() for m, v in at.items()})
            release_free_memory()  # bounded memory over many batches of large images (see data.budget)
            if progress is not None:
                progress(min(s + batch_size, n), n)
    model.train(was_training)
    return _terms(grey, k), _terms(binary, k)


def _terms(out: dict[str, list], k: int) -> LikelihoodTerms:
    cat = {key: (torch.cat(out[key]) if out[key] else torch.zeros(0)) for key in ("log_px", "rec", "kl", "mean")}
    layer_kl, layer_means = out["layer_kl"], out["layer_means"]
    return LikelihoodTerms(
        log_px=cat["log_px"].numpy().astype(np.float64),
        recon=cat["rec"].numpy().astype(np.float64),
        kl=cat["kl"].numpy().astype(np.float64),
        mean=cat["mean"].numpy(),
        k=k,
        layer_kl=torch.cat(layer_kl, dim=1).numpy() if layer_kl else None,
        layer_means=[torch.cat(ms).numpy() for ms in zip(*layer_means, strict=True)] if layer_means else None,
        log_px_at=_at(out.get("at")),
    )


def _at(parts: list[dict] | None) -> dict[int, np.ndarray] | None:
    """Per-batch {k': (B,)} dicts -> {k': (N,)} float64, or None when no smaller k' was asked for."""
    if not parts or not parts[0]:
        return None
    return {m: torch.cat([p[m] for p in parts]).numpy().astype(np.float64) for m in parts[0]}


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
    also: tuple[int, ...] = (),
) -> LikelihoodTerms:
    """Per-image IWAE bound, reconstruction and KL of a set of uint8 images (N, C, H, W), batched.

    With ``binarized`` the images are first binarised (Bernoulli draws with `seed`) and the model both
    encodes and scores the binary images: the standard protocol behind the MNIST NLL of the literature.
    The sampling of z uses `seed` too, and leaves the global RNG untouched. `images` may be a tensor or a
    lazy view (`ImageSet.pixels`); `progress(done, total)` is called after each batch. `also`: smaller k'
    whose bounds come from the first k' of the same samples (`LikelihoodTerms.log_px_at`).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    use_y = labels is not None and getattr(model, "conditional", False)
    data = binarize(images, seed + 1) if binarized else None
    out: dict[str, list] = {key: [] for key in ("log_px", "rec", "kl", "mean", "layer_kl", "layer_means", "at")}
    marks = sorted({int(m) for m in also if 0 < int(m) < k})
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for s in range(0, images.shape[0], batch_size):
            x = (data[s : s + batch_size] if binarized else to_float(images[s : s + batch_size])).to(device)
            y = labels[s : s + batch_size].to(device) if use_y else None
            per_layer: dict = {}
            at = dict.fromkeys(marks)
            log_px, log_px_z, kl, mean = importance_sampled(model, x, y, k, budget=budget, layer_terms=per_layer, at=at)
            for key, v in zip(("log_px", "rec", "kl", "mean", "layer_kl"), (log_px, -log_px_z, kl, mean, per_layer["kl"]), strict=True):
                out[key].append(v.cpu())
            out["layer_means"].append([m.cpu() for m in per_layer["means"]])
            out["at"].append({m: v.cpu() for m, v in at.items()})
            release_free_memory()
            if progress is not None:
                progress(min(s + batch_size, images.shape[0]), images.shape[0])
    model.train(was_training)
    return _terms(out, k)


def bits_per_dim(nats_per_image: float, dims: int) -> float:
    """nats per image -> bits per dimension: nats / (C*H*W * ln 2)."""
    return float(nats_per_image) / (dims * math.log(2))


def active_units(means: np.ndarray, threshold: float = 0.01) -> int:
    """Dimensions whose posterior mean varies over the data: Cov_x(E_q[z_d]) > threshold (Burda et al. 2016, sec. 5.2)."""
    if len(means) < 2:
        return 0
    return int((np.var(means.astype(np.float64), axis=0, ddof=1) > threshold).sum())
