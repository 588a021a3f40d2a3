"""`vaelab evaluate RUN --disentanglement`: the disentanglement metrics of a trained run on data with
ground-truth factors (dsprites, or an npz with a ``factors`` array), and the rows the CLI prints.

The representation is the posterior mean of the top latent (as disentanglement_lib scores it), computed
once over a pool of the run's images (all splits, a seeded draw of at most ``pool`` images); the metrics
(`disentanglement.score_all`) then sample from that pool.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import ImageSet
from ..errors import VaelabError
from .disentanglement import METRICS, headline, score_all


def factor_pool(data: ImageSet, pool: int, seed: int) -> ImageSet:
    """A seeded draw of at most `pool` images (all splits) of a set with factors."""
    if data.factors is None:
        raise VaelabError(
            f"{data.source or 'the data'} has no ground-truth factors, so disentanglement cannot be scored",
            "use data with factors: dsprites, or an npz with a 'factors' (N, F) array",
        )
    if len(data) > pool:
        rng = np.random.default_rng(seed)
        data = data.subset(torch.from_numpy(np.sort(rng.choice(len(data), size=pool, replace=False))))
    return data


def may_have_factors(spec: str) -> bool:
    """Whether data spec `spec` can carry ground-truth factors (dsprites; an npz with a 'factors' array;
    in-memory data may), read without loading the images: a study asked to score disentanglement stops
    before training when it cannot."""
    from pathlib import Path

    from ..data.load import parse_spec
    from ..data.memory import MEMORY_SOURCE

    kind, arg = parse_spec(spec)
    if kind in ("dsprites", MEMORY_SOURCE):
        return True
    path = Path(arg if kind in ("npz", "path") else spec).expanduser()
    if kind in ("npz", "path") or path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return "factors" in getattr(z, "files", [])
        except (OSError, ValueError, TypeError):
            return True  # unreadable here: loading it says what is wrong
    return False


def disentanglement_of_run(
    run, data: ImageSet | str | None = None, *, seed: int = 0, scale: float = 1.0, pool: int = 50_000, batch_size: int = 500, metrics=METRICS
) -> dict:
    """{'metrics': {beta_vae: {...}, ...}, 'seed', 'scale', 'pool', 'factors', 'headline': {...}} for a run."""
    from ..latent.encode import encode
    from .run import _as_run

    run = _as_run(run)
    if not scale > 0:
        raise VaelabError(f"the metrics' sample scale is {scale}", "use a positive factor of disentanglement_lib's sample sizes, e.g. 1 or 0.1")
    if isinstance(data, str):
        from ..data import load
        from ..data.dsprites import spec_factors

        dc = run.config.data
        data = load(data, image_size=dc.image_size, channels=dc.channels, val_fraction=0.0, factors=spec_factors(data, dc.factors))
    full = run.data() if data is None else data
    part = factor_pool(full, pool, seed)
    codes = encode(run, part, batch_size=batch_size).z
    scores = score_all(codes, part.factors.numpy(), seed=seed, scale=scale, metrics=metrics)
    return {
        "metrics": {k: v for k, v in scores.items() if k in METRICS},
        "headline": headline(scores),
        "seed": seed,
        "scale": scale,
        "pool": len(part),
        "factors": list(part.factor_names),
        "representation": "posterior mean of the top latent",
    }


def total_correlation(mean: np.ndarray, std: np.ndarray, seed: int = 0) -> float:
    """TC(z) = KL(q(z) || prod_j q(z_j)) of the aggregate posterior over a set of images, nats: one z per
    image from its q(z|x), log q(z) and log q(z_j) as mixtures over the whole set (Chen et al. 2018, sec. 3;
    the image's own posterior is in the mixture, a small upward bias). Needs no factors."""
    import math

    from ..models.disentangle import tc_decomposition
    from ..models.posterior import DiagonalGaussian

    mu = torch.as_tensor(mean, dtype=torch.float64)
    logvar = 2 * torch.log(torch.as_tensor(std, dtype=torch.float64).clamp_min(1e-12))
    g = torch.Generator().manual_seed(seed)
    z = mu + torch.randn(mu.shape, generator=g, dtype=torch.float64) * torch.exp(0.5 * logvar)
    log_p = (-0.5 * (z**2 + math.log(2 * math.pi))).sum(-1)
    return float(tc_decomposition(z, DiagonalGaussian(mu, logvar), log_p, None)["tc"].mean())


def total_correlation_of_run(run, data: ImageSet, *, n: int = 2000, seed: int = 0, batch_size: int = 500) -> dict:
    """{'tc': nats, 'n': images} of a seeded draw of at most `n` images of `data` (e.g. the test split)."""
    from ..latent.encode import encode

    if len(data) > n:
        rng = np.random.default_rng(seed)
        data = data.subset(torch.from_numpy(np.sort(rng.choice(len(data), size=n, replace=False))))
    lat = encode(run, data, batch_size=batch_size)
    return {"tc": total_correlation(lat.z, lat.std, seed), "n": len(lat.z), "seed": seed}


LABELS = {
    "beta_vae": "BetaVAE score",
    "factor_vae": "FactorVAE score",
    "mig": "MIG",
    "sap": "SAP",
    "dci_d": "DCI disentanglement",
    "dci_c": "DCI completeness",
    "dci_i": "DCI informativeness",
}


def disentanglement_rows(result: dict) -> list[tuple[str, str]]:
    """(quantity, value) rows of an eval result's 'disentanglement' key, for the CLI's table."""
    d = result.get("disentanglement")
    if not d:
        return []
    rows = [("disentanglement pool", f"{d['pool']} images, factors {', '.join(d['factors'])}, seed {d['seed']}, sample scale {d['scale']:g}")]
    rows += [(LABELS[k], f"{v:.3f}") for k, v in d["headline"].items()]
    return rows
