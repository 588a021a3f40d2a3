"""Every figure of a trained run, from its directory: what `vaelab plot` writes and `vaelab report` embeds.

`RunFigures(run)` loads the run's data and encodes it once, knows which figure kinds apply to the run
(and why the others do not), and builds each kind as Figures (or animation frames). `render_run` encodes
them to bytes with their file names; only the CLI writes them to disk.
"""

from __future__ import annotations

import difflib
import json
import zipfile
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from ..errors import VaelabError, shell
from . import animate as anim
from .classification import budget_figure, confusion_figure
from .curves import curves_figure
from .eda import eda_figures
from .images import conditional_samples_figure, decode, quality_figure, recon_figure, samples_figure
from .latent import (
    Plane,
    check_dims,
    dims_plane,
    ellipses_figure,
    interpolation_figure,
    manifold_figure,
    pca_plane,
    prior_plane,
    scatter_figure,
    traversal_figure,
)
from .style import figure_bytes

# the order of the figures in `vaelab plot` and in the report
KINDS = (
    "curves",
    "eda",
    "recon",
    "samples",
    "manifold",
    "scatter",
    "ellipses",
    "traversal",
    "interpolate",
    "quality",
    "confusion",
    "budget",
    "animate",
)
STATIC_FORMATS = ("png", "pdf", "svg")
SCATTER_POINTS = 2000  # latents shown in scatters (t-SNE time grows fast with N)
GMM_FIT_POINTS = 5000  # training latents the GMM sampler is fitted on


@dataclass
class Rendered:
    """One encoded output: `name` is the file stem (e.g. 'confusion_gmm'), `ext` png/pdf/svg/gif/mp4."""

    name: str
    kind: str
    title: str
    ext: str
    data: bytes

    @property
    def filename(self) -> str:
        return f"{self.name}.{self.ext}"


@dataclass
class Skip:
    """Why a figure kind does not apply to a run, and which command would make it apply."""

    reason: str
    hint: str = ""


def read_json_dir(folder: Path) -> dict[str, dict]:
    """{stem: parsed JSON} of the *.json files in a folder (unreadable files are left out)."""
    out = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            out[path.stem] = data
    return out


def load_gmm(run_dir: Path, class_names: list[str]) -> dict | Skip:
    """The run's most recently fitted GMM classifier (RUN/classify/gmm.npz or gmm_<parameters>.npz, +
    .classifier.json) as means (K, D), full covariances (K, D, D) and the class index of each component."""
    from ..latent import classifiers
    from ..latent.fewlabels import latest_classifier

    path = latest_classifier(run_dir, "gmm")
    if not path.is_file():
        return Skip("no GMM classifier is saved in this run", f"run: {shell('vaelab', 'classify', run_dir, '--method', 'gmm')}")
    try:
        model = classifiers.load(path)
    except VaelabError as e:
        return Skip(f"the saved GMM cannot be read ({e.message})", f"run: {shell('vaelab', 'classify', run_dir, '--method', 'gmm')}")
    means = np.asarray(model.means_, dtype=np.float64)
    covs = full_covariances(np.asarray(model.covariances_, dtype=np.float64), model.covariance_type, *means.shape)
    comp = np.asarray(model.classes_)[np.asarray(model.component_to_class_)]
    names = list(model.class_names_ or class_names)
    # component -> class label -> index in the run's class list (labels are indices into the names saved)
    comp = np.array([list(class_names).index(names[int(c)]) if names[int(c)] in class_names else int(c) for c in comp])
    return {"means": means, "covariances": covs, "component_classes": comp.astype(int)}


def full_covariances(cov: np.ndarray, kind: str | None, k: int, d: int) -> np.ndarray:
    """scikit-learn's covariances_ of any covariance_type -> (K, D, D)."""
    kind = str(kind) if kind is not None else None
    if kind == "full" or (kind is None and cov.shape == (k, d, d)):
        return cov.reshape(k, d, d)
    if kind == "diag" or (kind is None and cov.shape == (k, d)):
        return np.stack([np.diag(c) for c in cov.reshape(k, d)])
    if kind == "spherical" or (kind is None and cov.shape == (k,)):
        return cov.reshape(k, 1, 1) * np.eye(d)[None]
    if kind == "tied" or (kind is None and cov.shape == (d, d)):
        return np.repeat(cov.reshape(1, d, d), k, 0)
    raise VaelabError(f"GMM covariances of shape {cov.shape} do not fit {k} components in {d} dims")


def _budget_rows(classify: dict[str, dict]) -> list[dict]:
    """Label-budget rows: a `budget` table inside a classify JSON, or one row per classify JSON."""
    rows = []
    for stem, result in classify.items():
        table = result.get("budget")
        if isinstance(table, list):
            rows += [{"method": result.get("method", stem), **r} for r in table if isinstance(r, dict)]
        elif isinstance(result.get("accuracy"), (int, float)):
            rows.append({"method": result.get("method", stem), **result})
    return rows


class RunFigures:
    """The figures of one run, sharing one load of its data and one encoding of its evaluation split.

    dims: latent dimensions to show (manifold/scatter/ellipses use the first two, traversals all of them);
    image_index: (a, b) indices into the evaluation split for interpolation (and a as traversal centre).
    The evaluation split is 'val', else 'test', else 'train'.
    """

    def __init__(
        self,
        run,
        data=None,
        dims: list[int] | None = None,
        image_index: tuple[int, ...] | None = None,
        grid: int = 20,
        seed: int = 0,
    ):
        self.run = run
        self.model = run.model
        self._data = data
        self.dims = check_dims(dims, self.model.latent_dim) if dims else None
        self.image_index = tuple(int(i) for i in image_index) if image_index else None
        self.grid = grid
        self.seed = seed
        self.captions: dict[str, str] = {}  # figure stem -> caption that depends on how it was drawn

    # -- shared inputs -----------------------------------------------------------------------------------
    @cached_property
    def data(self):
        from ..latent import check_fits

        ds = self._data if self._data is not None else self.run.data()
        check_fits(self.model, ds, ds.source or "the run's data")
        return ds

    @cached_property
    def data_error(self) -> VaelabError | None:
        try:
            self.data  # noqa: B018 (load once, remember the error)
        except VaelabError as e:
            return e
        return None

    @cached_property
    def split_name(self) -> str:
        return next((s for s in ("val", "test", "train") if self.data.has_split(s)), "train")

    @cached_property
    def split(self):
        return self.data.split(self.split_name)

    @property
    def class_names(self) -> list[str]:
        return list(self.data.class_names) if self.data_error is None else []

    @cached_property
    def latents(self):
        """Latent means, stds and labels of up to SCATTER_POINTS images of the evaluation split."""
        from ..latent import encode

        part = self.split
        if len(part) > SCATTER_POINTS:
            idx = np.sort(np.random.default_rng(self.seed).choice(len(part), SCATTER_POINTS, replace=False))
            part = part.subset(idx)
        return encode(self.run, part)

    def _encode_images(self, index: list[int]):
        from ..latent import encode

        n = len(self.split)
        bad = [i for i in index if not 0 <= i < n]
        if bad:
            raise VaelabError(
                f"image index {bad[0]} is out of range: the {self.split_name} split has {n} images",
                f"use indices 0..{n - 1}",
            )
        part = self.split.subset(index)
        return part, encode(self.run, part)

    @cached_property
    def classify(self) -> dict[str, dict]:
        """Classification results (RUN/classify/*.json with an accuracy; saved classifiers' JSON is not one)."""
        found = read_json_dir(Path(self.run.path) / "classify")
        return {k: v for k, v in found.items() if isinstance(v, dict) and ("accuracy" in v or "confusion" in v or "budget" in v)}

    @cached_property
    def gmm(self) -> dict | Skip:
        return load_gmm(self.run.path, self.class_names)

    def kl_per_dim(self) -> np.ndarray:
        """Mean KL(q(z_d|x) || N(0,1)) per latent dim over the evaluation latents (nats): which dims are used."""
        lat = self.latents
        mu, std = lat.z.astype(np.float64), lat.std.astype(np.float64)
        return (0.5 * (mu**2 + std**2 - 1.0) - np.log(np.maximum(std, 1e-12))).mean(0)

    # -- which kinds apply -------------------------------------------------------------------------------
    def skip_reason(self, kind: str) -> Skip | None:
        """None when `kind` applies to this run, else why not (and how to make it apply)."""
        run_dir = self.run.path
        needs_data = {"eda", "recon", "scatter", "ellipses", "interpolate"}
        if kind in needs_data and self.data_error is not None:
            return Skip(f"the run's data cannot be loaded ({self.data_error.message})", self.data_error.hint)
        if kind == "curves" and not self.run.metrics():
            return Skip("the run has no metrics.jsonl rows", f"train it: {shell('vaelab', 'train', '--resume', run_dir)}")
        if kind == "interpolate" and len(self.split) < 2:
            return Skip(f"the {self.split_name} split has fewer than 2 images")
        if kind == "ellipses":
            if isinstance(self.gmm, Skip):
                return self.gmm
            d = self.model.latent_dim
            if d < 2:
                return Skip("ellipses need a latent space of 2 or more dimensions")
            if d > 2 and not (self.dims and len(self.dims) >= 2):
                # projected on any plane, the components of a higher-D mixture pile up into one unreadable tangle
                return Skip(
                    f"the GMM's components live in the {d}-D latent space and overlap into a tangle on any 2-D "
                    "projection, so the figure is drawn for 2-D latents (the confusion matrix shows how well it classifies)",
                    f"to see two latent dimensions anyway: vaelab plot {run_dir} ellipses --dims 0,1",
                )
        if kind == "confusion" and not any("confusion" in r for r in self.classify.values()):
            return Skip("no classification results with a confusion matrix", f"run: {shell('vaelab', 'classify', run_dir, '--method', 'gmm')}")
        if kind == "budget":
            rows = _budget_rows(self.classify)
            per_method: dict[str, set] = {}
            for r in rows:
                per_method.setdefault(str(r.get("method")), set()).add(str(r.get("labels_per_class")))
            if not any(len(v) >= 2 for v in per_method.values()):
                return Skip("no classification results at two or more label budgets", f"run: {shell('vaelab', 'classify', run_dir, '--budget', '1,10,100')}")
        if kind == "quality" and not list((Path(run_dir) / "eval").glob("*_per_image.npz")):
            return Skip("no per-image evaluation values", f"run: {shell('vaelab', 'evaluate', run_dir)}")
        return None

    # -- static figures ----------------------------------------------------------------------------------
    def figures(self, kind: str) -> list[tuple[str, str, Figure]]:
        """[(file stem, title, Figure)] of one static kind (see KINDS; 'animate' is in `animations`)."""
        method = getattr(self, f"_fig_{kind}", None)
        if method is None:
            raise VaelabError(f"'{kind}' is not a static figure kind", f"use one of: {', '.join(KINDS)}")
        return method()

    def _fig_curves(self):
        return [("curves", "Training curves", curves_figure(self.run.metrics(), f"Training curves of {self.run.path.name}"))]

    def _fig_eda(self):
        titles = {
            "eda_classes": "Class distribution",
            "eda_pixels": "Pixel intensities",
            "eda_means": "Mean image per class",
            "eda_examples": "Examples per class",
        }
        return [(k, titles[k], f) for k, f in eda_figures(self.data, seed=self.seed).items()]

    def _balanced_index(self, n: int) -> list[int]:
        """`n` indices of the evaluation split, taking classes in turn so that every class shows."""
        part = self.split
        if part.labels is None:
            return list(range(min(n, len(part))))
        labels = part.labels.numpy()
        queues = [list(np.flatnonzero(labels == k)) for k in range(self.data.num_classes)]
        out: list[int] = []
        while len(out) < min(n, len(part)):
            for q in queues:
                if q and len(out) < n:
                    out.append(int(q.pop(0)))
        return out

    def _fig_recon(self, n: int = 16):
        from ..data import to_float

        idx = self._balanced_index(n)
        part = self.split.subset(idx)
        x = to_float(part.images.to(self.run.device))
        y = part.labels.to(self.run.device) if self.model.conditional else None
        recon = self.model.reconstruct(x, y).cpu()
        names = [self.class_names[int(k)] for k in part.labels] if part.labels is not None else None
        return [("recon", "Reconstructions", recon_figure(x.cpu(), recon, labels=names, ncols=8))]

    def _fig_samples(self, n: int = 64):
        g = torch.Generator().manual_seed(self.seed)
        if self.model.conditional:
            k = min(self.model.num_classes, 20)
            per = 10
            labels = torch.arange(k).repeat_interleave(per)
            images = self.model.sample(len(labels), labels=labels, generator=g).cpu()
            names = self.class_names[:k] or [str(i) for i in range(k)]
            fig = conditional_samples_figure(images.reshape(k, per, *images.shape[1:]), names)
            return [("samples", "Samples per class", fig)]
        native = getattr(self.model, "native_sampler", None)  # a VQ model: its code prior, once trained
        if native is None:
            panels = {"prior N(0, I)": self.model.sample(n, generator=g).cpu()}
        else:
            from ..latent.expost import sample_images

            try:
                images, what = sample_images(self.run, native, n, seed=self.seed)
                panels = {what: images}
            except VaelabError:  # no code prior yet (vaelab train-prior): the GMM panel only
                panels = {}
        gmm = self._gmm_samples(n)
        if gmm is not None:
            panels[gmm[0]] = gmm[1]
        return [("samples", "Samples", samples_figure(panels))]

    def _gmm_samples(self, n: int):
        """Samples from a Gaussian mixture fitted on the training latents (ex-post density estimation), when
        `vaelab.latent.samplers.GMMSampler` and the data are available."""
        try:
            from ..latent.samplers import GMMSampler
        except ImportError:
            return None
        if self.data_error is not None:
            return None
        from ..latent import encode

        train = self.data.split("train") if self.data.has_split("train") else self.split
        if len(train) > GMM_FIT_POINTS:
            train = train.subset(np.sort(np.random.default_rng(self.seed).choice(len(train), GMM_FIT_POINTS, replace=False)))
        k = self.data.num_classes or 10
        k = max(1, min(k, len(train) // 5))
        sampler = GMMSampler(n_components=k, covariance_type="full", seed=self.seed).fit(encode(self.run, train).z)
        z = sampler.sample(n)
        z = z[0] if isinstance(z, tuple) else z
        return f"GMM sampler ({k} components)", decode(self.model, np.asarray(z, dtype=np.float32))

    def _plane(self, scaled: bool = True) -> Plane:
        d = self.model.latent_dim
        if self.dims:
            if len(self.dims) < 2:
                raise VaelabError("a plane needs two latent dimensions", "give --dims i,j")
            return prior_plane(self.model, *self.dims[:2]) if scaled else dims_plane(d, *self.dims[:2])
        if d <= 2 or self.data_error is not None:
            return prior_plane(self.model) if scaled or d < 2 else dims_plane(d)
        return pca_plane(self.latents.z, scaled=scaled)

    def _fig_manifold(self):
        # 20 x 20 suits digits; fewer, larger cells for photos and for one panel per class
        grid = self.grid if self.model.image_shape[1] <= 32 else min(self.grid, 10)
        grid = grid if not self.model.conditional else min(grid, 10)
        classes = None
        if self.model.conditional:
            names = self.class_names or [str(i) for i in range(self.model.num_classes)]
            classes = list(enumerate(names))[:12]
        # the grid covers where the encoder puts the evaluation images (their posterior means), not just the
        # prior's bulk: a beta < 1 model spreads its codes far beyond +-1.6
        codes = self.latents.z if self.data_error is None and len(self.split) >= 2 else None
        fig = manifold_figure(self.model, grid, self._plane(), classes, codes=codes)
        self.captions["manifold"] = (
            f"images decoded on an evenly spaced grid between the 1st and 99th percentiles of the posterior means "
            f"of {len(codes)} {self.split_name} images (projected on the plane)"
            if codes is not None
            else "images decoded on a grid over the prior's 5-95% range, spaced by the inverse normal CDF (the data could not be encoded)"
        )
        return [("manifold", "Decoded latent manifold", fig)]

    def _fig_scatter(self):
        lat = self.latents
        dims = tuple(self.dims[:2]) if self.dims and len(self.dims) >= 2 else None
        fig = scatter_figure(lat.z, lat.labels, lat.class_names, dims=dims, seed=self.seed, title=f"Latent means, {self.split_name} split")
        return [("scatter", "Latent space", fig)]

    def _fig_ellipses(self):
        gmm = self.gmm
        if isinstance(gmm, Skip):
            raise VaelabError(gmm.reason, gmm.hint)
        lat = self.latents
        d = self.model.latent_dim
        if gmm["means"].shape[1] != d:
            raise VaelabError(
                f"the saved GMM has {gmm['means'].shape[1]}-D components but the model's latents are {d}-D",
                f"re-run {shell('vaelab', 'classify', self.run.path, '--method', 'gmm')}",
            )
        plane = self._plane(scaled=False)
        proj = np.linalg.pinv(np.stack([plane.u, plane.v], 1))  # (2, D): latent -> plane coordinates
        means = (gmm["means"] - plane.origin[None]) @ proj.T
        covs = np.einsum("ij,kjl,ml->kim", proj, gmm["covariances"], proj)
        z2 = (lat.z - plane.origin[None]) @ proj.T
        fig = ellipses_figure(means, covs, gmm["component_classes"], z2, lat.labels, lat.class_names, (plane.xlabel, plane.ylabel))
        return [("ellipses", "GMM classifier components", fig)]

    def _traversal_setup(self):
        """(base latent, label, dims, notes, 'around ...') shared by the traversal figure and sweep."""
        d = self.model.latent_dim
        base, y, around = None, None, "the origin"
        if self.image_index:
            part, lat = self._encode_images([self.image_index[0]])
            base = lat.z[0]
            y = int(part.labels[0]) if part.labels is not None and self.model.conditional else None
            name = f" (class {self.class_names[int(part.labels[0])]})" if part.labels is not None else ""
            around = f"{self.split_name} image {self.image_index[0]}{name}"
        elif self.model.conditional:
            y = 0
        notes = None
        dims = self.dims
        if self.data_error is None and len(self.split):
            kl = self.kl_per_dim()
            notes = {k: f"(KL {kl[k]:.2f})" for k in range(d)}
            if dims is None and d > 10:  # the 10 most used dims, by KL
                dims = sorted(np.argsort(-kl)[:10].tolist())
        if dims is None:
            dims = list(range(min(d, 10)))
        if y is not None and self.model.conditional:
            around += f", class {self.class_names[y] if y < len(self.class_names) else y}"
        return base, y, dims, notes, around

    def _fig_traversal(self):
        base, y, dims, notes, around = self._traversal_setup()
        fig = traversal_figure(self.model, base, dims, y=y, notes=notes, around=around)
        return [("traversal", "Latent traversals", fig)]

    def _fig_interpolate(self):
        a = self.image_index[0] if self.image_index else 0
        if self.image_index and len(self.image_index) >= 2:
            b = self.image_index[1]
        else:  # the next image of another class (or just the next image)
            self._encode_images([a])  # checks the index
            labels = self.split.labels
            n = len(self.split)
            order = [(a + k) % n for k in range(1, n)]
            others = [i for i in order if labels is None or int(labels[i]) != int(labels[a])]
            b = others[0] if others else order[0]
        part, lat = self._encode_images([a, b])
        names = [f"image {i}" for i in (a, b)]
        if part.labels is not None:
            names = [f"{self.class_names[int(k)]} (#{i})" for k, i in zip(part.labels, (a, b), strict=False)]
        y = int(part.labels[0]) if self.model.conditional else None
        fig = interpolation_figure(
            self.model, lat.z[0], lat.z[1], steps=10, y=y, endpoints=(part.images[0], part.images[1]), names=tuple(names)
        )
        return [("interpolate", "Interpolation", fig)]

    def _fig_quality(self):
        out = []
        for path in sorted((Path(self.run.path) / "eval").glob("*_per_image.npz")):
            split = path.name[: -len("_per_image.npz")]
            try:
                with np.load(path, allow_pickle=False) as f:
                    values = {k: np.asarray(f[k], dtype=np.float64) for k in ("ssim", "psnr", "mse") if k in f.files}
                    labels = np.asarray(f["labels"]) if "labels" in f.files else None
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
                raise VaelabError(f"cannot read {path} ({type(e).__name__})", f"evaluate the run again: {shell('vaelab', 'evaluate', self.run.path)}") from None
            if values:
                fig = quality_figure(values, labels, self.class_names, title=f"Reconstruction quality per image, {split} split")
                out.append((f"quality_{split}", f"Reconstruction quality ({split})", fig))
        return out

    def _fig_confusion(self):
        out = []
        for stem, result in self.classify.items():
            if "confusion" not in result:
                continue
            names = [str(c) for c in result.get("class_names") or self.class_names]
            method = str(result.get("method", stem))
            out.append((f"confusion_{stem}", f"Confusion matrix ({method})", confusion_figure(result["confusion"], names, f"{method} classifier")))
        return out

    def _fig_budget(self):
        return [("budget", "Accuracy against labels per class", budget_figure(_budget_rows(self.classify)))]

    # -- animations --------------------------------------------------------------------------------------
    def animations(self) -> list[tuple[str, str, list[np.ndarray]]]:
        """[(file stem, title, RGB frames)]: the latent scatter over the epochs (when the run saved at least
        two epochs of latents), and a traversal sweep."""
        out = []
        snaps = anim.read_latent_snapshots(self.run.path)
        if len(snaps) >= 2:
            out.append(("latent_evolution", "Latent space over the epochs", anim.scatter_frames(snaps, self.class_names)))
        base, y, dims, _, _ = self._traversal_setup()
        out.append(("traversal_sweep", "Traversal sweep", anim.traversal_sweep_frames(self.model, base, dims, y=y)))
        return out


def parse_kinds(kinds: list[str] | None) -> list[str] | None:
    """Validate figure kind names (None = all that apply), suggesting the closest on a typo."""
    if not kinds:
        return None
    out = []
    for k in kinds:
        if k not in KINDS:
            close = difflib.get_close_matches(k, KINDS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"use any of: {', '.join(KINDS)}"
            raise VaelabError(f"unknown figure '{k}'", hint)
        if k not in out:
            out.append(k)
    return out


def render_run(
    run,
    kinds: list[str] | None = None,
    fmt: str = "png",
    dpi: int | None = None,
    video: bool = True,
    dims: list[int] | None = None,
    image_index: tuple[int, ...] | None = None,
    data=None,
    progress=None,
) -> tuple[list[Rendered], dict[str, Skip]]:
    """Encode the run's figures: `kinds` (None = every kind that applies) as `fmt` (png/pdf/svg);
    animations as GIF, and MP4 too when `video` and imageio-ffmpeg is installed.

    Returns (outputs, skipped kinds with reasons). Asking explicitly for a kind that does not apply fails.
    `progress(done, total)` is called after each kind (a bar with ETA in the CLI).
    """
    if fmt not in STATIC_FORMATS:
        raise VaelabError(f"unknown figure format '{fmt}'", f"use one of: {', '.join(STATIC_FORMATS)}")
    wanted = parse_kinds(kinds)
    figs = RunFigures(run, data=data, dims=dims, image_index=image_index)
    out: list[Rendered] = []
    skipped: dict[str, Skip] = {}
    todo = wanted or KINDS
    for done, kind in enumerate(todo):
        if progress is not None:
            progress(done, len(todo))
        skip = figs.skip_reason(kind)
        if skip is not None:
            if wanted:
                raise VaelabError(f"cannot plot '{kind}': {skip.reason}", skip.hint)
            skipped[kind] = skip
            continue
        if kind == "animate":
            for name, title, frames in figs.animations():
                out.append(Rendered(name, kind, title, "gif", anim.encode_gif(frames, fps=4 if "evolution" in name else 12)))
                if video and anim.video_available():
                    out.append(Rendered(name, kind, title, "mp4", anim.encode_mp4(frames, fps=4 if "evolution" in name else 12)))
            continue
        for name, title, fig in figs.figures(kind):
            out.append(Rendered(name, kind, title, fmt, figure_bytes(fig, fmt, dpi)))
    return out, skipped
