"""Samplers of a trained run, by name (``vaelab sample --sampler``, evaluate's FID): `SAMPLERS`.

    prior     z ~ p(z), the model's own prior (nothing to fit)                    (Kingma & Welling 2014)
    gmm       a Gaussian mixture on the training codes (per class when conditional)  (Ghosh et al. 2020, sec. 4)
    maf       a masked autoregressive flow on the training codes                  (Papamakarios et al. 2017)
    vq-prior  the autoregressive prior over code maps of a VQ run (vaelab train-prior)  (van den Oord et al. 2017)

The ex-post ones are fitted once per run and checkpoint and cached in ``RUN/samplers/<name>.safetensors``
(tensors and a JSON header, no pickle); the header records the checkpoint file, its size and mtime, and the
sampler's settings, and a cache that does not match them is refitted. Each sampler returns latent points
(n, D) that ``model.generate`` decodes; ``images(run, name, n, ...)`` does both.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import VaelabError

CACHE_DIR = "samplers"


def _stamp(run) -> dict:
    ck = Path(run.checkpoint)
    st = ck.stat() if ck.is_file() else None
    return {"checkpoint": ck.name, "size": st.st_size if st else 0, "mtime_ns": st.st_mtime_ns if st else 0}


def _read_cache(path: Path, want: dict) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("vaelab", "{}"))
            if meta != want:
                return None
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception:  # a broken cache is refitted, never trusted
        return None


def _write_cache(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    from safetensors.torch import save

    from ..train.checkpoint import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    blob = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata={"vaelab": json.dumps(meta)})
    atomic_write(path, lambda f: f.write(blob))


def _train_codes(run, train_latents=None) -> np.ndarray:
    if train_latents is None:
        from .encode import encode

        train_latents = encode(run, split="train")
    return train_latents


class PriorSampler:
    """z ~ p(z) (p(z|y) for the class prior)."""

    name = "prior"

    def __init__(self, run, **_):
        self.model = run.model

    def sample(self, n, labels=None, generator=None, temperature=1.0) -> torch.Tensor:
        return self.model.prior.sample(n, labels, generator=generator, temperature=temperature)

    def describe(self) -> str:
        return "the prior"


class GMMExPost:
    """A full-covariance Gaussian mixture on the training latent means (one per class for a conditional model)."""

    name = "gmm"

    def __init__(self, run, components: int | None = None, seed: int = 0, train_latents=None, cache: bool = True):
        from .samplers import ClassGMMSampler, GMMSampler

        model = run.model
        self.conditional = model.conditional
        k = components or (5 if self.conditional else 10)
        self.components = k
        meta = {**_stamp(run), "sampler": "gmm", "components": k, "seed": seed}
        path = Path(run.path) / CACHE_DIR / "gmm.safetensors"
        saved = _read_cache(path, meta) if cache else None
        if saved is None:
            lat = _train_codes(run, train_latents)
            if self.conditional:
                fitted = ClassGMMSampler(k, seed=seed).fit(lat.z, lat.labels, model.num_classes, list(run.class_names))
                parts = fitted.samplers_
            else:
                parts = [GMMSampler(k, seed=seed).fit(lat.z)]
            self.n_train = len(lat)
            saved = {}
            for i, s in enumerate(parts):
                saved[f"{i}.weights"] = torch.from_numpy(np.asarray(s.weights_, np.float64))
                saved[f"{i}.means"] = torch.from_numpy(np.asarray(s.means_, np.float64))
                saved[f"{i}.covariances"] = torch.from_numpy(np.asarray(s.covariances_, np.float64))
            saved["n_train"] = torch.tensor([len(lat)])
            if cache:
                _write_cache(path, saved, meta)
        self.n_train = int(saved["n_train"][0])
        self.parts = []
        for i in range(len([k for k in saved if k.endswith(".weights")])):
            s = GMMSampler(len(saved[f"{i}.weights"]), seed=seed + (i if self.conditional else 0))
            s.weights_, s.means_ = saved[f"{i}.weights"].numpy(), saved[f"{i}.means"].numpy()
            s.covariances_ = saved[f"{i}.covariances"].numpy()
            s.mixture_ = None
            s._rng = np.random.default_rng(s.seed)
            self.parts.append(s)

    def sample(self, n, labels=None, generator=None, temperature=1.0, rng: np.random.Generator | None = None) -> torch.Tensor:
        """(n, D) codes; ``rng`` draws from a given stream instead of the mixtures' own (one reproducible draw)."""
        if not self.conditional:
            return torch.from_numpy(self.parts[0].sample(n, temperature=temperature, rng=rng))
        labels = torch.arange(n) % len(self.parts) if labels is None else torch.as_tensor(labels)
        labels = labels.cpu().numpy()
        out = np.zeros((len(labels), self.parts[0].means_.shape[1]), np.float32)
        for k, s in enumerate(self.parts):
            idx = np.flatnonzero(labels == k)
            if len(idx):
                out[idx] = s.sample(len(idx), temperature=temperature, rng=rng)
        return torch.from_numpy(out)

    def describe(self) -> str:
        per = " per class" if self.conditional else ""
        return f"a {self.components}-component GMM{per} on {self.n_train} training latents"


class MAFExPost:
    """A masked autoregressive flow on the training latent means (`models.maf.MAF`)."""

    name = "maf"
    settings = {"steps": 5, "hidden": 64, "epochs": 30}

    def __init__(self, run, seed: int = 0, train_latents=None, cache: bool = True, **_):
        from ..models.maf import MAF

        model = run.model
        if model.conditional:
            raise VaelabError("the maf sampler is unconditional; this run is a conditional model", "use --sampler gmm (one mixture per class) or prior")
        dim = int(model.latent_dim)
        s = self.settings
        meta = {**_stamp(run), "sampler": "maf", "seed": seed, **s}
        path = Path(run.path) / CACHE_DIR / "maf.safetensors"
        self.flow = MAF(dim, s["steps"], s["hidden"])
        saved = _read_cache(path, meta) if cache else None
        if saved is None:
            lat = _train_codes(run, train_latents)
            torch.manual_seed(seed)
            self.flow = MAF(dim, s["steps"], s["hidden"])
            self.flow.fit(torch.from_numpy(np.asarray(lat.z, np.float32)), epochs=s["epochs"], seed=seed)
            saved = {**self.flow.state_dict(), "n_train": torch.tensor([len(lat)])}
            if cache:
                _write_cache(path, saved, meta)
        self.n_train = int(saved.pop("n_train")[0])
        self.flow.load_state_dict(saved)
        self.flow.eval()

    def sample(self, n, labels=None, generator=None, temperature=1.0) -> torch.Tensor:
        return self.flow.sample(n, generator=generator, temperature=temperature)

    def describe(self) -> str:
        return f"a {self.flow.steps}-step MAF on {self.n_train} training latents"


def _vq_prior(run, **kwargs):
    if getattr(run.model, "quantizer", None) is None:
        raise VaelabError("--sampler vq-prior draws code maps of a VQ run; this run has a continuous latent", "use prior, gmm or maf (or train with model.latent=vq)")
    from ..models.vq_prior import CodePriorSampler

    return CodePriorSampler(run, **kwargs)


# --sampler -> a class (run, components=, seed=, train_latents=, cache=) with sample(n, labels, generator, temperature)
SAMPLERS = {"prior": PriorSampler, "gmm": GMMExPost, "maf": MAFExPost, "vq-prior": _vq_prior}


def get_sampler(run, name: str, *, components: int | None = None, seed: int = 0, train_latents=None, cache: bool = True):
    """The named sampler of a run, fitted (or read from the run's cache)."""
    if name not in SAMPLERS:
        raise VaelabError(f"--sampler is '{name}'", f"use one of: {', '.join(SAMPLERS)}")
    if components is not None and components < 1:
        raise VaelabError(f"--components is {components}", "use at least 1")
    native = getattr(run.model, "native_sampler", None)
    if name == "prior" and native is not None:
        raise VaelabError(f"this run's latent has no Gaussian prior to sample ({run.model.cfg.latent} latent)", f"use --sampler {native}")
    return SAMPLERS[name](run, components=components, seed=seed, train_latents=train_latents, cache=cache)


@torch.no_grad()
def sample_images(run, name: str, n: int, labels=None, *, seed: int = 0, components: int | None = None, temperature: float = 1.0):
    """(images (n, C, H, W) in [0, 1], what they were drawn from)."""
    sampler = get_sampler(run, name, components=components, seed=seed)
    model = run.model
    if model.conditional and labels is None:
        labels = torch.arange(n) % model.num_classes
    g = torch.Generator().manual_seed(seed)
    z = sampler.sample(n, labels, generator=g, temperature=temperature)
    y = labels.to(run.device) if (labels is not None and model.conditional) else None
    return model.generate(z.to(run.device), y).float().clamp(0, 1).cpu(), sampler.describe()


__all__ = ["SAMPLERS", "get_sampler", "sample_images"]
