"""What the explore app holds for one run: the images of a split, their codes and 2-D map (cached in the run),
a decode worker that batches concurrent requests into one forward pass, and the fitted samplers.

Every latent operation calls the library: `vaelab.latent.encode`, `vaelab.latent.project`,
`vaelab.latent.edit`, `vaelab.latent.samplers` and `model.generate`; this module only keeps their results.
"""

from __future__ import annotations

import hashlib
import io
import queue
import threading
from concurrent.futures import Future

import numpy as np
import torch

from ..errors import VaelabError
from ..latent import edit as latent_edit
from ..latent.project import Projection, project, resolve_method
from ..visualize.grid import make_grid, png_bytes, to_uint8

CACHE_DIR = "explore"  # RUN/explore/map-<split>-<method>-<key>.npz
MAX_BATCH = 256  # rows per forward pass of the decode worker
SPLIT_ORDER = ("val", "test", "train")


class DecodeWorker:
    """One thread that owns the decoder: requests queue up, and whatever is waiting when it is free is
    decoded in one batched forward pass (a burst of 100 points costs a few passes, not 100)."""

    def __init__(self, model, max_pending: int = 1024):
        self.model = model
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._loop, name="vaelab-decode", daemon=True)
        self._thread.start()

    def decode(self, z: np.ndarray, y: np.ndarray | None = None, timeout: float = 60.0) -> torch.Tensor:
        """Codes (n, D) (and labels (n,)) -> images (n, C, H, W) in [0, 1] on the CPU."""
        fut: Future = Future()
        try:
            self._queue.put((torch.as_tensor(np.asarray(z, np.float32)), None if y is None else torch.as_tensor(np.asarray(y)).long(), fut), timeout=timeout)
        except queue.Full:
            raise VaelabError("the decoder is busy", "try again in a moment") from None
        return fut.result(timeout=timeout)

    def close(self) -> None:
        """Stop the worker and wait for it, so no decode is cut off by the interpreter's shutdown."""
        try:
            self._queue.put(None, timeout=5)
        except queue.Full:
            pass
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs, rows = [job], len(job[0])
            while rows < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                jobs.append(nxt)
                rows += len(nxt[0])
            self._run(jobs)

    @torch.no_grad()
    def _run(self, jobs) -> None:
        try:
            device = next(self.model.parameters()).device
            z = torch.cat([j[0] for j in jobs]).to(device)
            y = torch.cat([j[1] for j in jobs]).to(device) if jobs[0][1] is not None else None
            out = self.model.generate(z, y).float().cpu()
        except Exception as e:  # noqa: BLE001 - every waiting request gets the error, the worker lives on
            for j in jobs:
                j[2].set_exception(e)
            return
        start = 0
        for j in jobs:
            j[2].set_result(out[start : start + len(j[0])])
            start += len(j[0])


def image_png(image: torch.Tensor | np.ndarray) -> bytes:
    """One image (C, H, W) in [0, 1] or uint8 -> PNG bytes at its own size."""
    return png_bytes(to_uint8(image[None])[0].transpose(1, 2, 0))


def strip_png(images, nrow: int | None = None) -> bytes:
    return png_bytes(make_grid(images, nrow=nrow, padding=1))


class Explorer:
    """The state behind `vaelab explore`: a run, the images of one split, their codes and map.

    ``data``: a data spec (default: the run's own data); ``split``: val, test or train (default the first
    present, in that order); ``method``: auto (the latent itself when 2-D, else PCA), pca, tsne, umap;
    ``limit``: map only the first N images of the split. The codes and the map are cached in RUN/explore/
    (keyed by the checkpoint, data spec, split and limit; not for an in-memory ImageSet)."""

    def __init__(self, run, split: str | None = None, method: str = "auto", data: str | None = None,
                 limit: int | None = None, cache: bool = True, progress=None):
        from ..latent.encode import encode, resolve_data

        say = progress or (lambda msg: None)
        self.run = run
        self.model = run.model
        self.method = resolve_method(method, self.model.latent_dim)
        ds = resolve_data(run, data, None)
        if split is None:
            split = next((s for s in SPLIT_ORDER if ds.has_split(s)), None)
        if split is not None:
            ds = ds.split(split)
        if limit is not None:
            if limit < 2:
                raise VaelabError(f"limit is {limit}", "map at least 2 images")
            ds = ds.subset(torch.arange(min(limit, len(ds))))
        if len(ds) < 2:
            raise VaelabError(f"the {split or 'data'} split has {len(ds)} image(s)", "explore a split with at least 2 images")
        if self.model.conditional and ds.labels is None:
            raise VaelabError("this conditional model needs labelled images to encode", "give a labelled data spec (--data)")
        self.split = split or "all"
        self.data = ds
        self.images = ds.images
        self.labels = ds.labels.numpy() if ds.labels is not None else None
        names = list(run.class_names or ds.class_names)
        k = max(self.model.num_classes, len(names), int(self.labels.max()) + 1 if self.labels is not None and len(self.labels) else 0)
        self.class_names = names + [str(i) for i in range(len(names), k)]
        self.cache_path = None
        if cache and (data is None or isinstance(data, str)):  # an in-memory ImageSet has no name to cache under
            spec = data or run.data_spec
            key = hashlib.sha1(f"{run.checkpoint.resolve()}|{_stamp(run.checkpoint)}|{spec}|{self.split}|{limit}|{len(ds)}".encode()).hexdigest()[:12]
            self.cache_path = run.path / CACHE_DIR / f"map-{self.split}-{self.method}-{key}.npz"
        self.projection = self._load_cache()
        self.cached = self.projection is not None
        if self.projection is None:
            say(f"encoding {len(ds)} {self.split} images")
            codes = encode(run, ds).z
            say(f"computing the {self.method} map")
            self.projection = project(codes, self.method)
            self._save_cache()
        self.z = self.projection.z
        self.limit = limit
        self._own_data = data is None  # the run's own data (its train split's codes are the GMM's)
        self.worker = DecodeWorker(self.model)
        self._lock = threading.Lock()
        self._samplers: dict = {}
        self._code_prior_missing = self._code_prior_status()

    # -- cache ---------------------------------------------------------------------------------------------
    def _load_cache(self) -> Projection | None:
        if self.cache_path is None or not self.cache_path.is_file():
            return None
        try:
            with np.load(self.cache_path, allow_pickle=False) as f:
                proj = Projection.from_arrays({k: f[k] for k in f.files})
        except (OSError, ValueError, KeyError):
            return None
        return proj if len(proj.z) == len(self.images) and proj.z.shape[1] == self.model.latent_dim else None

    def _save_cache(self) -> None:
        if self.cache_path is None:
            return
        from ..train.checkpoint import atomic_write

        buf = io.BytesIO()
        np.savez(buf, **self.projection.to_arrays())
        try:
            atomic_write(self.cache_path, lambda f: f.write(buf.getvalue()))
        except OSError:  # a read-only pretrained folder: the map is simply not cached
            self.cache_path = None

    def close(self) -> None:
        self.worker.close()

    # -- what the page needs ---------------------------------------------------------------------------------
    def info(self) -> dict:
        p = self.projection
        lo, hi = self.z.min(0), self.z.max(0)
        pad = 0.25 * np.maximum(self.z.std(0), 1e-3)
        out = {
            "run": self.run.path.name,
            "checkpoint": str(self.run.checkpoint.name),
            "epoch": self.run.epoch,
            "split": self.split,
            "n": len(self.z),
            "latent_dim": int(self.model.latent_dim),
            "image_shape": list(self.model.image_shape),
            "conditional": self.model.conditional,
            "class_names": self.class_names,
            "labels": self.labels.tolist() if self.labels is not None else None,
            "method": p.method,
            "inverse": p.inverse,
            "xy": np.round(p.xy.astype(np.float64), 4).tolist(),
            "ranges": np.round(np.stack([lo - pad, hi + pad], 1).astype(np.float64), 4).tolist(),
            "slerp": latent_edit.gaussian_latent(self.model),
            "samplers": self.sampler_choices(),
            "sampler_note": self._code_prior_missing,  # a VQ run without its code prior: how to get one
            "quantized": self._quantized(),
            "cached": self.cached,
        }
        if p.method == "pca":
            out["pca"] = {"mean": p.mean.tolist(), "components": p.components.tolist(),
                          "explained": [float(v) for v in p.explained]}
        return out

    def _quantized(self) -> dict | None:
        """A VQ latent: its codebook size, code size and positions (the page says the codes snap to it)."""
        q = getattr(self.model, "quantizer", None)
        if q is None:
            return None
        return {"codebook_size": int(q.k), "code_dim": int(q.dim), "positions": int(q.positions)}

    def label_array(self, label: int | None, n: int) -> np.ndarray | None:
        """Labels for n decodes: conditional models need a class; others ignore it."""
        if not self.model.conditional:
            return None
        if label is None:
            raise VaelabError("this conditional model needs a class to decode", "pass label=K")
        return np.full(n, label, np.int64)

    def class_index(self, value) -> int:
        return latent_edit.class_index(value, self.class_names, len(self.class_names))

    def decode(self, z: np.ndarray, label: int | None = None) -> torch.Tensor:
        """Codes (n, D) -> images; a VQ model's codes go through the nearest codebook entries (`edit.snap`)."""
        z = latent_edit.snap(self.model, np.asarray(z, np.float32).reshape(-1, self.model.latent_dim))
        return self.worker.decode(z, self.label_array(label, len(z)))

    def decode_png(self, z: np.ndarray, label: int | None = None) -> bytes:
        return image_png(self.decode(z, label)[0])

    def data_png(self, i: int) -> bytes:
        return image_png(self.images[i])

    def at(self, xy) -> np.ndarray:
        """A map point -> its latent code (PCA inverse transform, the latent itself, or the nearest image's code)."""
        return self.projection.to_latent(np.asarray(xy, np.float64).reshape(1, 2))[0]

    def interpolation_png(self, a: int, b: int, steps: int = 8, mode: str = "linear", label: int | None = None) -> bytes:
        if mode == "slerp" and not latent_edit.gaussian_latent(self.model):
            raise VaelabError("spherical interpolation needs a Gaussian latent", "use mode=linear")
        z = latent_edit.interpolate(self.z[a], self.z[b], steps, mode)
        return strip_png(self.decode(z, label), nrow=len(z))

    def attribute(self, source, target) -> np.ndarray:
        return latent_edit.attribute_vector(self.z, source, target, self.labels, self.class_names)

    # -- samplers ------------------------------------------------------------------------------------------
    def sampler_choices(self) -> dict[str, str]:
        """The samplers of `vaelab sample` this run offers on the page: name -> what it draws from. A VQ run
        has no Gaussian prior: its own sampler is the code prior (once `vaelab train-prior` fitted it)."""
        out = {}
        if self.model.native_sampler is None:
            out["prior"] = "the prior p(z|y)" if getattr(self.model.cfg, "prior", "normal") == "class" else "the prior p(z)"
        elif self._code_prior_missing is None:
            out[self.model.native_sampler] = "the code prior over code maps"
        out["gmm"] = "a GMM fitted to the training codes" + (" (per class)" if self.model.conditional else "")
        from ..latent.expost import CACHE_DIR

        if not self.model.conditional and (self.run.path / CACHE_DIR / "maf.safetensors").is_file():
            out["maf"] = "the MAF fitted to the training codes (vaelab sample --sampler maf)"  # offered once fitted
        return out

    def _refusal(self, name: str) -> VaelabError:
        native = self.model.native_sampler
        if name == "prior" and native is not None:
            hint = "pick the code prior" if self._code_prior_missing is None else self._code_prior_missing
            return VaelabError("a VQ latent has no Gaussian prior to sample: its samples come from the code prior", hint)
        if name == "vq-prior" and native is not None:
            return VaelabError(f"{self.run.path.name} has no code prior to sample yet", self._code_prior_missing)
        if name == "vq-prior":
            return VaelabError("vq-prior draws code maps of a VQ run; this run has a continuous latent", "use prior or gmm")
        return VaelabError(f"unknown sampler '{name}'", f"use one of: {', '.join(self.sampler_choices())}")

    def _code_prior_status(self) -> str | None:
        """None when a VQ run's code prior is ready (or the run is not VQ); else what to do about it."""
        if self.model.native_sampler is None:
            return None
        from ..models.vq_prior import load_prior

        try:
            load_prior(self.run)
        except VaelabError as e:
            return e.hint or str(e)
        return None

    def _sampler(self, name: str):
        """The named sampler of `vaelab.latent.expost`, fitted once (the GMM is cached in RUN/samplers/ as
        `vaelab sample --sampler gmm` caches it, and shared with it)."""
        if name not in self.sampler_choices():
            raise self._refusal(name)
        with self._lock:
            if name not in self._samplers:
                from ..latent.expost import get_sampler

                train, own = (self._train_codes() if name in ("gmm", "maf") else (None, True))
                cache = own and self.cache_path is not None
                try:
                    sampler = get_sampler(self.run, name, train_latents=train, cache=cache)
                except OSError:  # a read-only folder: fitted, not cached
                    sampler = get_sampler(self.run, name, train_latents=train, cache=False)
                self._samplers[name] = sampler
            return self._samplers[name]

    def _train_codes(self):
        """(the training codes, whether they are the run's own training split): those a GMM is fitted to."""
        from ..latent.encode import Latents, encode

        if self.split == "train" and self._own_data and self.limit is None:
            return Latents(self.z, self.labels, self.class_names), True
        try:
            return encode(self.run, split="train"), True
        except VaelabError:  # no train split in this data: the shown codes
            return Latents(self.z, self.labels, self.class_names), False

    def samples_png(self, sampler: str = "prior", n: int = 16, seed: int = 0, label: int | None = None,
                    temperature: float = 1.0) -> bytes:
        """A grid of n samples; each (sampler, seed) gives the same images every time."""
        y = self.label_array(label, n)
        s = self._sampler(sampler)
        yt = None if y is None else torch.as_tensor(y)
        if sampler == "gmm":  # the mixture's draws take a numpy stream; the others a torch generator
            z = s.sample(n, yt, temperature=temperature, rng=np.random.default_rng(seed))
        else:
            z = s.sample(n, yt, generator=torch.Generator().manual_seed(seed), temperature=temperature)
        z = z.float().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z, np.float32)
        return strip_png(self.worker.decode(latent_edit.snap(self.model, z), y))


def _stamp(path) -> str:
    try:
        st = path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return "?"
