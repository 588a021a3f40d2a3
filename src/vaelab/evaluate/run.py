"""`evaluate_run`: every number of a trained run on one split, computed the same way every time.

The result is a JSON-ready dict (keys below) plus ``per_image`` (numpy arrays, one value per image); the
CLI writes them to ``RUN/eval/<split>.json`` and ``RUN/eval/<split>_per_image.npz``. Nothing here writes
into the run directory, and the checkpoints are only read.

    split, checkpoint, n_images, loss{elbo, objective, recon, kl, bits_per_dim, beta},
    nll{k, nll, bits_per_dim, elbo, nll_at_k?, nll_binarized?, elbo_binarized?, nll_binarized_at_k?}, recon_quality{mse, psnr, ssim, ssim_box7, per_class},
    active_units, fid{feature_net, n_generated, temperature, prior, gmm, recon, precision{..}, recall{..}} | null,
    conditional_accuracy{accuracy, per_class, n_per_class, temperature, gmm{accuracy, per_class}} (conditional
    models; z from the prior, and from a GMM per class), notes[]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..data import ImageSet, load, to_float
from ..data.budget import release_free_memory
from ..data.imageset import bounded_batch
from ..errors import VaelabError
from ..latent.encode import check_fits, encode
from .likelihood import active_units, bits_per_dim, likelihood_terms, likelihood_terms_with_binarized
from .reconstruction import reconstruction_metrics, summarize

BERNOULLI_NOTE = (
    "Bernoulli likelihood on grey levels: 'recon' and 'elbo' are binary cross-entropies, not log-densities "
    "(the seed projects' BCE loss); 'nll_binarized' is the exact likelihood bound on dynamically binarized "
    "images, the number the literature reports (IWAE paper: 86.76 nats for a one-layer MLP VAE on MNIST)."
)

GAUSSIAN_NOTE = (
    "Gaussian likelihood: a density of images scaled to [0, 1], so NLL and bits/dim can be negative; the "
    "8-bit-image convention (uniform dequantization on 0..255) would add 8 bits/dim, and is not applied here."
)


def _as_run(run):
    if isinstance(run, (str, Path)):
        from ..run import load_run

        return load_run(run)
    return run


def resolve_split(run, data: ImageSet | str | None, split: str | None) -> tuple[str, ImageSet, ImageSet | None]:
    """(the split's name, its images, the set whose 'train' split fits the GMM sampler, or None).

    `split` None: 'test', or 'val' for the run's own data when it has no test split (a train/val folder)."""
    if data is None:
        full = run.data()
    elif isinstance(data, str):
        # prepared as the run's own data was (resized only if training resized), never silently rescaled:
        # a likelihood on upsampled images does not compare with anything
        from ..data.dsprites import spec_factors

        dc = run.config.data
        full = load(data, image_size=dc.image_size, channels=dc.channels, val_fraction=0.0, factors=spec_factors(data, dc.factors))
        if tuple(full.shape) != tuple(run.model.image_shape):
            raise VaelabError(
                f"{data} has images of shape {tuple(full.shape)} but the model takes {tuple(run.model.image_shape)} (C, H, W)",
                "evaluate on data of the model's size and channels (or train a run with data.image_size/data.channels set)",
            )
    else:
        full = data
    if split is None:
        split = "test" if data is not None or full.has_split("test") else "val"
    part = full.split(split)
    check_fits(run.model, part, f"the '{split}' split of {full.source or 'the data'}")
    return split, part, (full if full.has_split("train") else None)


def _subsample(n: int, cap: int, seed: int) -> torch.Tensor:
    if n <= cap:
        return torch.arange(n)
    return torch.from_numpy(np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False)))


class _Lazy:
    """N images made batch by batch when sliced (``x[s:e]`` -> float (e-s, C, H, W) on the CPU), so the
    feature passes of FID never hold all generated images at once: memory stays bounded at any image size."""

    def __init__(self, make, n: int, shape: tuple[int, ...]):
        self.make, self.shape = make, torch.Size((n, *shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> torch.Tensor:
        start, stop, _ = key.indices(len(self))
        return self.make(start, stop)


def _lazy_decode(model, z: torch.Tensor, labels: torch.Tensor | None) -> _Lazy:
    @torch.no_grad()
    def make(s: int, e: int) -> torch.Tensor:
        device = next(model.parameters()).device
        y = labels[s:e].to(device) if labels is not None else None
        return model.generate(z[s:e].to(device), y).float().clamp(0, 1).cpu()

    return _Lazy(make, len(z), tuple(model.image_shape))


def _lazy_reconstruct(model, images, labels: torch.Tensor | None) -> _Lazy:
    @torch.no_grad()
    def make(s: int, e: int) -> torch.Tensor:
        device = next(model.parameters()).device
        y = labels[s:e].to(device) if labels is not None else None
        return model.reconstruct(to_float(images[s:e]).to(device), y).float().clamp(0, 1).cpu()

    return _Lazy(make, len(images), tuple(model.image_shape))


def resolve_features(
    run, features, inception: str | Path | None, spec: str | None, device, progress: Callable[[str], None] | None
):
    """The feature extractor: an Inception file, a feature network (folder or object), or 'auto' (cached/trained)."""
    from .features import TrainedFeatureNet, ensure_feature_net, load_feature_net

    if inception is not None:
        from .inception import load_inception

        return load_inception(inception, device=device)
    if isinstance(features, TrainedFeatureNet):
        return features
    if features is None or str(features) == "auto":
        return ensure_feature_net(spec or run.config.data.source, tuple(run.model.image_shape), device=device, progress=progress)
    return load_feature_net(features, device=device)


def evaluate_run(
    run,
    split: str | None = "test",
    data: ImageSet | str | None = None,
    nll_samples: int = 100,
    *,
    nll_also: tuple[int, ...] = (),
    fid: bool = True,
    features=None,
    inception: str | Path | None = None,
    max_generated: int = 10_000,
    gmm_components: int = 10,
    temperature: float = 1.0,
    binarized: bool = False,
    batch_size: int = 500,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    sampler: str | None = None,
) -> dict:
    """Evaluate a run (a `Run` or its directory) on one split; see the module doc for the keys.

    `split` None: the test split, or val when the run's data has none (``result["split"]`` says which).

    `features`: None or 'auto' (the cached network for the run's data, trained and cached when missing),
    a feature-network folder, or a `TrainedFeatureNet`. `binarized` adds the NLL on dynamically binarized
    images (the literature's MNIST number), in the same pass as the grey-level one: it shares the encoder
    pass and z samples, except for runs trained on binarized images (``train.binarize``), whose encoder
    then sees the binary image, the IWAE paper's protocol. `progress` is called with a line per step;
    if it has an ``update(done, total)`` attribute, that is called as a step advances (bars with ETA).
    `temperature` scales the spread of z for the generated images (prior, GMM sampler, conditional
    samples); 1 draws from the samplers themselves.
    `sampler` (a `latent.expost.SAMPLERS` name, e.g. maf) adds its FID column, with the run's cached fit.
    `nll_also`: smaller k' whose bounds are read off the same samples (``nll_at_k``: the first k' of the k).
    """
    if nll_samples < 1:
        raise VaelabError(f"--nll-samples is {nll_samples}", "use k >= 1 importance samples (100 by default, 1000+ for papers)")
    bad = [m for m in nll_also if not 1 <= int(m) < nll_samples]
    if bad:
        raise VaelabError(f"--nll-also {bad[0]} is not below --nll-samples {nll_samples}", "give smaller k' (e.g. --nll-samples 5000 --nll-also 1000)")
    if max_generated < 4:
        raise VaelabError(f"max_generated is {max_generated}", "generate at least 4 images for FID")
    say = progress or (lambda _msg: None)
    tick = getattr(progress, "update", None)
    run = _as_run(run)
    model = run.model.eval()
    if binarized and model.cfg.likelihood != "bernoulli":
        raise VaelabError(
            f"--binarized scores binary images, but this model has a {model.cfg.likelihood} likelihood",
            "drop --binarized (it is for Bernoulli models)",
        )
    device = run.device
    split, part, full = resolve_split(run, data, split)
    if model.conditional and part.labels is None:
        raise VaelabError("this conditional model needs labelled images to evaluate", "give a labelled data spec with --data")
    labels = part.labels
    fx = None
    if fid:  # resolved first, so a bad --features/--inception fails before the long computations
        fx = resolve_features(run, features, inception, data if isinstance(data, str) else None, device, say)
    c, h, w = model.image_shape
    dims = c * h * w
    batch_size = bounded_batch(batch_size, (c, h, w))  # the same on small images; bounded memory on large ones
    # the KL's weight in 'objective': beta, except for beta-TCVAE, whose beta weighs only the TC part of the KL
    beta = 1.0 if getattr(model.cfg, "objective", "elbo") == "tc" else float(model.cfg.beta)
    is_bernoulli = model.cfg.likelihood == "bernoulli"
    timings: dict[str, float] = {}
    notes: list[str] = []

    # -- likelihood: ELBO terms and the IWAE bound, in one pass --------------------------------------------
    t = time.perf_counter()
    no_density = getattr(model, "no_density", None)  # a family without a bound to importance-sample
    if no_density:
        from .nodensity import point_terms

        say(f"reconstruction terms on {len(part)} {split} images (no likelihood bound: {no_density})")
        lt = point_terms(model, part.images, labels, batch_size=batch_size)
        binarized = False
    elif binarized:
        say(f"ELBO and NLL (k={nll_samples}) on {len(part)} {split} images, grey-level and binarized")
        encode_binary = bool(getattr(run.config.train, "binarize", False))
        lt, lb = likelihood_terms_with_binarized(
            model, part.pixels, labels, nll_samples, batch_size=batch_size, seed=seed, encode_binary=encode_binary, progress=tick,
            also=tuple(nll_also),
        )
    else:
        say(f"ELBO and NLL (k={nll_samples}) on {len(part)} {split} images")
        lt = likelihood_terms(model, part.pixels, labels, nll_samples, batch_size=batch_size, seed=seed, progress=tick, also=tuple(nll_also))
    elbo = float(np.mean(lt.elbo_loss))
    loss = {
        "elbo": elbo,
        "objective": float(np.mean(lt.recon + beta * lt.kl)),
        "recon": float(np.mean(lt.recon)),
        "kl": float(np.mean(lt.kl)),
        "bits_per_dim": bits_per_dim(elbo, dims),
        "beta": beta,
    }
    nll = {
        "k": nll_samples,
        "nll": float(np.mean(lt.nll)),
        "bits_per_dim": bits_per_dim(float(np.mean(lt.nll)), dims),
        "elbo": elbo,
    }
    if lt.log_px_at:  # the bound at smaller k, from the first k' of the same samples
        nll["nll_at_k"] = {str(m): float(-np.mean(v)) for m, v in lt.log_px_at.items()}
    per_image: dict[str, np.ndarray] = {
        "labels": (labels.numpy() if labels is not None else np.full(len(part), -1)).astype(np.int64),
        "elbo": lt.elbo_loss,
        "recon": lt.recon,
        "kl": lt.kl,
        "nll": lt.nll,
    }
    if model.cfg.free_bits > 0:
        notes.append(f"the run trained with free bits {model.cfg.free_bits}; 'objective' is recon + beta * KL without them")
    if getattr(model.cfg, "objective", "elbo") in ("iwae", "miwae", "ciwae", "piwae"):
        notes.append(f"the run trained with the {model.cfg.objective} bound (K={model.cfg.iw_samples}); 'objective' is recon + beta * KL, the ELBO's")
    if getattr(model.cfg, "objective", "elbo") in ("tc", "factor", "dip"):
        extra = {"tc": "its KL split with beta on the TC", "factor": "gamma x the discriminator's TC", "dip": "the DIP covariance penalty"}
        notes.append(f"the run trained with model.objective={model.cfg.objective} ({extra[model.cfg.objective]}); 'objective' is recon + {beta:g} x KL, without that term")
    if model.cfg.ssim_weight > 0:
        notes.append(f"the run trained with an SSIM term (weight {model.cfg.ssim_weight}); 'objective' is recon + beta * KL without it")
    if no_density:
        from .nodensity import skipped_nll

        nll = skipped_nll(no_density)
        loss["elbo"] = loss["bits_per_dim"] = float("nan")
        per_image.pop("elbo"), per_image.pop("nll")
        notes.append(f"NLL and ELBO skipped: {no_density}; 'recon' is -log p(x|z) at the encoder's code")
        if getattr(model, "quantizer", None) is not None:  # a VQ model's own bound, log p(x|z_q) + log p(z_q)
            from ..models.vq_prior import code_bound

            nll["vq_bound"] = code_bound(run, part.images, batch_size=batch_size)
            if nll["vq_bound"] is None:
                notes.append(f"no code prior yet, so no VQ bound: run vaelab train-prior {run.path}")
    if binarized:
        nll["binarized_proposal"] = "q(z|binarized x)" if encode_binary else "q(z|x), shared with the grey-level pass"
        nll["nll_binarized"] = float(np.mean(lb.nll))
        nll["elbo_binarized"] = float(np.mean(lb.elbo_loss))
        if lb.log_px_at:
            nll["nll_binarized_at_k"] = {str(m): float(-np.mean(v)) for m, v in lb.log_px_at.items()}
        nll["binarize_seed"] = seed + 1
        per_image["nll_binarized"] = lb.nll
    if is_bernoulli:
        loss["note"] = BERNOULLI_NOTE
    else:
        loss["note"] = GAUSSIAN_NOTE
    timings["likelihood"] = time.perf_counter() - t

    # -- reconstruction quality and active units ----------------------------------------------------------
    t = time.perf_counter()
    say("reconstruction quality (MSE, PSNR, SSIM)")
    rec = reconstruction_metrics(model, part.pixels, labels, batch_size=batch_size)
    per_image.update(rec)
    recon_quality = summarize(rec, per_image["labels"] if labels is not None else None, list(part.class_names))
    timings["reconstruction"] = time.perf_counter() - t

    result: dict = {
        "split": split,
        "checkpoint": str(run.checkpoint),
        "epoch": run.epoch,
        "data": full.source if full is not None else (part.source or run.config.data.source),
        "n_images": len(part),
        "model": {
            "arch": model.cfg.arch,
            "latent_dim": model.latent_dim,
            "likelihood": model.cfg.likelihood,
            "prior": getattr(model.cfg, "prior", "normal"),
            "objective": getattr(model.cfg, "objective", "elbo"),
            "posterior": getattr(model.cfg, "posterior", "gaussian"),
            "stochastic_layers": int(getattr(model.cfg, "stochastic_layers", 1)),
            "beta": beta,
            "conditional": model.conditional,
            "image_shape": [c, h, w],
        },
        "loss": loss,
        "nll": nll,
        "recon_quality": recon_quality,
        "active_units": active_units(lt.mean),
        "latent_dim": model.latent_dim,
        "fid": None,
    }
    if lt.layer_means is not None and len(lt.layer_means) > 1:  # per stochastic layer, bottom first
        result["active_units_per_layer"] = [active_units(m) for m in lt.layer_means]
        result["latent_dims"] = [int(m.shape[1]) for m in lt.layer_means]
        loss["kl_per_layer"] = [float(v) for v in lt.layer_kl.mean(1)]
    if model.conditional:
        result["conditional_accuracy"] = None

    # -- generation quality: FID and precision/recall in a feature space ---------------------------------
    if fid:
        t = time.perf_counter()
        train = full.split("train") if full is not None else run.data().split("train")
        if model.conditional and train.labels is None:
            raise VaelabError("the training split has no labels for this conditional model", "give a labelled data spec")
        train_latents = encode(run, train, batch_size=batch_size)  # posterior means, for the GMM samplers
        result["fid"], extra = _generation_quality(
            run, part, train_latents, fx, max_generated=max_generated, gmm_components=gmm_components, batch_size=batch_size, seed=seed, say=say,
            temperature=temperature, sampler=sampler, tick=tick,
        )
        notes += extra
        timings["fid"] = time.perf_counter() - t
        if model.conditional:
            t = time.perf_counter()
            result["conditional_accuracy"] = _conditional_accuracy(
                model, part, fx, max_generated, batch_size, seed, notes, train_latents, temperature
            )
            timings["conditional_accuracy"] = time.perf_counter() - t
    else:
        notes.append("FID, precision/recall" + (" and conditional accuracy" if model.conditional else "") + " skipped (--no-fid)")
    result["notes"] = notes
    result["seed"] = seed
    result["seconds"] = timings
    result["per_image"] = per_image
    return result


def _features(fx, images, batch_size: int, tick=None) -> np.ndarray:
    """fx.features over `images` in slices of `batch_size`, reporting progress to `tick(done, total)`."""
    n = len(images)
    step = max(batch_size, 1)
    parts = []
    for s in range(0, n, step):
        parts.append(fx.features(images[s : s + step], batch_size))
        release_free_memory()  # bounded memory over many batches of large images (see data.budget)
        if tick is not None:
            tick(min(s + step, n), n)
    return np.concatenate(parts) if parts else fx.features(images, batch_size)


WEAK_FEATURES = 0.8  # a feature network below this held-out accuracy gets a note: its features barely know the classes


def _generation_quality(
    run, part: ImageSet, train_latents, fx, *, max_generated, gmm_components, batch_size, seed, say, temperature=1.0, tick=None, sampler=None
):
    from ..latent.samplers import GMMSampler
    from .fid import fid as fid_score
    from .fid import knn_radii, precision_recall

    model = run.model
    notes: list[str] = []
    n = min(len(part), max_generated)
    if n < 4:
        raise VaelabError(f"the split has {len(part)} images, too few for FID", "evaluate a split with more images, or use --no-fid")
    idx = _subsample(len(part), n, seed)
    real = part.subset(idx).pixels  # gathered batch by batch (a memory-mapped split stays on disk)
    labels = part.labels[idx] if (part.labels is not None and model.conditional) else None
    say(f"features of {n} real images ({fx.name})")
    f_real = _features(fx, real, batch_size, tick)

    g = torch.Generator().manual_seed(seed)
    native = getattr(model, "native_sampler", None)  # a latent with no Gaussian prior (VQ): its own sampler
    if native is not None:
        from ..latent.expost import get_sampler

        try:
            z_prior = get_sampler(run, native, seed=seed).sample(n, labels, generator=g, temperature=temperature)
            say(f"{n} samples from the {native} sampler")
        except VaelabError as e:  # e.g. no code prior yet: that column stays empty, the rest is measured
            z_prior = None
            notes.append(f"FID of the {native} sampler skipped: {e.message} ({e.hint})")
    else:
        say(f"{n} samples from the prior")
        z_prior = model.prior.sample(n, labels, generator=g, temperature=temperature)
    prior = _lazy_decode(model, z_prior, labels) if z_prior is not None else None  # decoded while their features are taken

    z_train = train_latents.z  # posterior means of the training split
    k = min(gmm_components, len(z_train))
    say(f"a {k}-component GMM fitted on {len(z_train)} training latents")
    gmm = GMMSampler(k, "full", seed).fit(z_train)
    gmm_imgs = _lazy_decode(model, torch.from_numpy(gmm.sample(n, temperature=temperature)), labels)
    recon = _lazy_reconstruct(model, real, labels)

    out = {"feature_net": fx.describe(), "n_generated": n, "n_real": n, "gmm_components": k, "temperature": temperature}
    sets = [("prior", prior), ("gmm", gmm_imgs), ("recon", recon)]
    precision, recall = {}, {}
    if prior is None:
        sets = sets[1:]
        out["prior"] = precision["prior"] = recall["prior"] = None
    if native is not None:
        out["prior_sampler"] = native
    if sampler is not None and sampler not in ("prior", "gmm", native):
        from ..latent.expost import get_sampler

        s = get_sampler(run, sampler, seed=seed, train_latents=train_latents)
        say(f"{n} samples from {s.describe()}")
        z = s.sample(n, labels, generator=torch.Generator().manual_seed(seed + 1), temperature=temperature)
        sets.append((sampler, _lazy_decode(model, z, labels)))
        out["samplers"] = {sampler: s.describe()}
    radii = knn_radii(f_real, k=3)
    what = {"prior": "samples from the prior", "gmm": "samples from the GMM", "recon": "reconstructions"}
    for name, imgs in sets:
        say(f"{n} {what.get(name, f'samples from the {name} sampler')} and their features")
        f_gen = _features(fx, imgs, batch_size, tick)
        out[name] = fid_score(f_real, f_gen)
        precision[name], recall[name] = precision_recall(f_real, f_gen, k=3, real_radii=radii)
    out["precision"], out["recall"] = precision, recall
    if n < 2000:
        notes.append(f"FID from {n} images is biased upwards; compare only numbers computed with the same count")
    acc = out["feature_net"].get("test_accuracy")
    if isinstance(acc, (int, float)) and acc < WEAK_FEATURES:
        notes.append(
            f"the feature network {fx.name} classifies only {acc:.0%} of its held-out images, so its FID and precision/recall "
            "say little; train it longer (vaelab features train SPEC --epochs N) or use --inception FILE"
        )
    return out, notes


GMM_PER_CLASS = 5  # components of the per-class GMM sampler of conditional models


def _conditional_accuracy(
    model, part: ImageSet, fx, max_generated, batch_size, seed, notes, train_latents=None, temperature: float = 1.0
) -> dict | None:
    """Share of class-conditional samples that the feature network classifies as the requested class.

    `accuracy`/`per_class`: z drawn from the model's prior. With `train_latents`, also `gmm`: z drawn from a
    Gaussian mixture fitted to the training latents of the requested class (ex-post density estimation per
    class, Ghosh et al. 2020), which follows where the encoder really put each class.
    """
    names = list(getattr(fx, "class_names", []) or [])
    run_names = list(part.class_names)
    if not names:
        notes.append(f"conditional accuracy skipped: {fx.name} is not a classifier of these classes")
        return None
    missing = [nm for nm in run_names if nm not in names]
    if missing:
        notes.append(f"conditional accuracy skipped: {fx.name} does not know the classes {', '.join(missing[:5])}")
        return None
    k = model.num_classes
    per = max(1, min(max_generated, max(len(part), k)) // k)
    labels = torch.arange(k).repeat_interleave(per)
    g = torch.Generator().manual_seed(seed + 2)
    z = model.prior.sample(len(labels), labels, generator=g, temperature=temperature)
    imgs = _lazy_decode(model, z, labels)
    want = np.array([names.index(nm) for nm in run_names])[labels.numpy()]

    def score(images):
        hit = fx.predict(images, batch_size) == want
        return float(hit.mean()), {nm: float(hit[labels.numpy() == i].mean()) for i, nm in enumerate(run_names)}

    acc, per_class = score(imgs)
    out = {"accuracy": acc, "per_class": per_class, "n_per_class": per, "judge": fx.describe(), "temperature": temperature}
    if train_latents is not None and train_latents.labels is not None:
        from ..latent.samplers import ClassGMMSampler

        try:
            sampler = ClassGMMSampler(GMM_PER_CLASS, "full", seed).fit(train_latents.z, train_latents.labels, k, run_names)
        except VaelabError as e:
            notes.append(f"conditional accuracy (GMM sampler) skipped: {e.message}")
            return out
        z_gmm = torch.from_numpy(sampler.sample(labels.numpy(), temperature))
        gmm_acc, gmm_per_class = score(_lazy_decode(model, z_gmm, labels))
        out["gmm"] = {"accuracy": gmm_acc, "per_class": gmm_per_class, "components_per_class": GMM_PER_CLASS}
    return out


def json_safe(v):
    """`v` with NumPy scalars as Python numbers and NaN/inf as None, through dicts and lists (strict JSON)."""
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def json_ready(result: dict) -> dict:
    """The result without its per-image arrays, with NaN/inf turned into None (strict JSON)."""
    return json_safe({k: v for k, v in result.items() if k != "per_image"})
