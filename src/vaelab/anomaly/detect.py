"""`detect`: score every image of a split, pick thresholds on the run's validation split, and measure.

    result = detect("runs/mnist-0", data="mnist", normal=["0"], fpr=0.05)
    result.report["scores"]["complexity"]["auroc"], result.scores["nll"], result.flagged("nll")

The threshold of each score is calibrated on the validation split of the run's own data: images held out
of training, from the distribution the model learned, so normal by construction (with `normal`, only
those of the normal classes). At `fpr` it is the (1 - fpr) quantile of their scores; with `quantile`
the chosen quantile of all of them. The scored images are the `split` (default test) of `data`, plus,
with `outliers`, the same split of a second source whose images are all anomalies (the out-of-
distribution protocol). Labels for AUROC/AUPRC come from `normal` (classes of `data`; the others are
anomalies) or from `outliers`. Nothing here writes files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import ImageSet, load
from ..errors import VaelabError
from .metrics import detection_metrics, flag, roc_points, threshold_at_fpr, threshold_at_quantile
from .scores import SCORES, check_applies, parse_scores, score_images, why_not


@dataclass
class AnomalyResult:
    """What `detect` found: the JSON report, per-image scores of the scored split, and what was scored."""

    report: dict
    scores: dict[str, np.ndarray]  # (N,) per score, larger = more anomalous
    images: torch.Tensor  # (N, C, H, W) uint8, the scored images
    labels: list[str]  # per image: class name, or the source's name for the outliers
    is_anomaly: np.ndarray | None  # (N,) 0/1, None when it is not known
    source: np.ndarray  # (N,) 0 = data, 1 = outliers
    roc: dict[str, tuple[np.ndarray, np.ndarray, float]] = field(default_factory=dict)

    @property
    def primary(self) -> str:
        return self.report["primary"]

    def threshold(self, score: str | None = None) -> float:
        return float(self.report["scores"][score or self.primary]["threshold"])

    def flagged(self, score: str | None = None) -> np.ndarray:
        return flag(self.scores[score or self.primary], self.threshold(score))


def _as_run(run):
    if isinstance(run, (str, Path)):
        from ..run import load_run

        return load_run(run)
    return run


def slug(text: str) -> str:
    """A spec as a file-name part: 'folder:/a/b photos' -> 'b_photos', 'fashion-mnist' -> 'fashion-mnist'."""
    text = str(text).rstrip("/\\")
    kind, _, arg = text.partition(":")
    base = Path(arg).stem if arg else kind
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("_.") or "data"


def result_name(data: str | None, split: str, outliers: str | None) -> str:
    """The file stem of a result: 'test', 'mnist_test', 'test_vs_mnist'."""
    name = split if data is None else f"{slug(data)}_{split}"
    return f"{name}_vs_{slug(outliers)}" if outliers else name


def load_like_run(run, spec: str) -> ImageSet:
    """A data spec prepared as the run's own data (resized only if training resized), all in its own splits."""
    dc = run.config.data
    ds = load(spec, image_size=dc.image_size, channels=dc.channels, val_fraction=0.0)
    if tuple(ds.shape) != tuple(run.model.image_shape):
        raise VaelabError(
            f"{spec} has images of shape {tuple(ds.shape)} but the model takes {tuple(run.model.image_shape)} (C, H, W)",
            "score data of the model's size and channels (or train a run with data.image_size/data.channels set)",
        )
    return ds


def _split(ds: ImageSet, split: str, what: str, hint: str = "choose one with --split") -> ImageSet:
    if not ds.has_split(split):
        from ..data.imageset import SPLITS

        have = [s for s in SPLITS if ds.has_split(s)]
        raise VaelabError(f"{what} has no '{split}' split", f"it has: {', '.join(have) or 'nothing'}; {hint}")
    return ds.split(split)


def parse_normal(normal: Sequence[str] | str | None, class_names: list[str], where: str) -> list[str] | None:
    """Normal classes as names of `class_names`, from names or indices ('0,1', ['Sneaker']); 'none' -> []."""
    if normal is None:
        return None
    items = [t.strip() for t in (normal.split(",") if isinstance(normal, str) else map(str, normal)) if t.strip()]
    if [t.lower() for t in items] == ["none"]:
        return []
    if not items:
        raise VaelabError("no normal class given (--normal is empty)", "write it like --normal 0,1 or --normal Sneaker,Bag")
    if not class_names:
        raise VaelabError(f"{where} has no labels, so --normal {','.join(items)} cannot pick classes", "drop --normal, or give labelled data")
    out = []
    for c in items:
        if c in class_names:
            name = c
        elif c.isdigit() and int(c) < len(class_names):
            name = class_names[int(c)]
        else:
            raise VaelabError(f"class '{c}' does not exist in {where}", f"its classes are: {', '.join(class_names[:30])}")
        if name not in out:
            out.append(name)
    return out


def _subsample(ds: ImageSet, limit: int | None, seed: int) -> ImageSet:
    if limit is None or len(ds) <= limit:
        return ds
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=limit, replace=False))
    return ds.subset(torch.from_numpy(idx))


def _names(ds: ImageSet) -> list[str]:
    if ds.labels is None:
        return [""] * len(ds)
    return [ds.class_names[i] for i in ds.labels.tolist()]


def detect(
    run,
    data: str | ImageSet | None = None,
    split: str = "test",
    *,
    normal: Sequence[str] | str | None = None,
    outliers: str | ImageSet | None = None,
    scores: Sequence[str] | str | None = None,
    fpr: float | None = 0.05,
    quantile: float | None = None,
    background=None,
    k: int = 100,
    compressor: str = "png",
    limit: int | None = None,
    batch_size: int = 500,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> AnomalyResult:
    """Score, threshold and (when labels allow) measure; see the module doc. `run`/`background`: a `Run` or
    its directory; `data`/`outliers`: a spec or an ImageSet (None: the run's own data); `normal`: class
    names or indices of `data` ('none': score without metrics); `scores`: names from `SCORES` (the first
    one flags the images); `limit`: at most this many images of each set (seeded subsample)."""
    say = progress or (lambda _msg: None)
    if (fpr is None) == (quantile is None):
        raise VaelabError("give either a false-positive rate or a quantile for the threshold", "e.g. --fpr 0.05 or --quantile 0.95")
    if k < 1:
        raise VaelabError(f"--nll-samples is {k}", "use k >= 1 importance samples")
    if fpr is not None:
        threshold_at_fpr(np.zeros(1), fpr)  # the range check, before any work
    else:
        threshold_at_quantile(np.zeros(1), quantile)
    run = _as_run(run)
    bg = _as_run(background) if background is not None else None
    if bg is not None and tuple(bg.model.image_shape) != tuple(run.model.image_shape):
        raise VaelabError(
            f"the background run takes images of shape {tuple(bg.model.image_shape)}, this run {tuple(run.model.image_shape)}",
            "train the background model on the same data (with train.perturb)",
        )
    names = parse_scores(scores, background=bg is not None)
    skipped: dict[str, str] = {}
    if scores is None:  # the defaults: those this family can give (a deterministic encoder: no likelihood)
        for name in list(names):
            problem = why_not(run, name) or (why_not(bg, name, " (the background run)") if name == "ratio" and bg is not None else None)
            if problem:
                skipped[name] = problem[0]
                names.remove(name)
    check_applies(run, names, bg)  # a score asked for by name: one line saying why it cannot be given

    # -- the images to score -----------------------------------------------------------------------------
    own = data is None
    full = run.data() if own else (load_like_run(run, data) if isinstance(data, str) else data)
    data_name = run.config.data.source if own else (data if isinstance(data, str) else (data.source or "data"))
    part = _subsample(_split(full, split, f"{data_name}"), limit, seed)
    normal_names = parse_normal(normal, list(part.class_names) if part.labels is not None else [], data_name)
    run_classes = list(run.class_names or [])
    if normal_names is None and not own and outliers is None and part.labels is not None:
        unseen = sorted({c for c in _names(part)} - set(run_classes), key=list(part.class_names).index)
        if unseen:
            shown = ", ".join(unseen[:6]) + (" ..." if len(unseen) > 6 else "")
            trained = f" (it trained on: {', '.join(run_classes[:10])})" if run_classes else ""
            raise VaelabError(
                f"no normal class given: {data_name} holds classes the run did not train on ({shown})",
                f"say which are normal, e.g. --normal {','.join(run_classes[:3]) or '0'}{trained}, or --normal none to score without metrics",
            )
    labels = _names(part)
    is_anomaly = None
    if normal_names:
        is_anomaly = np.array([lab not in normal_names for lab in labels], dtype=np.int64)
    images, source = part.images, np.zeros(len(part), np.int64)
    out_name = None
    if outliers is not None:
        odata = load_like_run(run, outliers) if isinstance(outliers, str) else outliers
        out_name = outliers if isinstance(outliers, str) else (outliers.source or "outliers")
        opart = _subsample(_split(odata, split, out_name), limit, seed + 1)
        images = torch.cat([images, opart.images])
        source = np.concatenate([source, np.ones(len(opart), np.int64)])
        labels = labels + [f"{slug(out_name)}" + (f":{n}" if n else "") for n in _names(opart)]
        base = is_anomaly if is_anomaly is not None else np.zeros(len(part), np.int64)
        is_anomaly = np.concatenate([base, np.ones(len(opart), np.int64)])

    # -- the calibration split: the run's own held-out images ----------------------------------------------
    own_full = full if own else run.data()
    val = _split(own_full, "val", f"the run's data ({run.config.data.source}), where the threshold is calibrated,",
                 "train with data.val_fraction > 0 (or data.val=SPEC) so that images are held out")
    if fpr is not None and normal_names and val.labels is not None:
        keep = torch.tensor([n in normal_names for n in _names(val)], dtype=torch.bool)
        if not keep.any():
            raise VaelabError(
                f"the run's validation split has no images of the normal classes ({', '.join(normal_names)})",
                f"the run trained on: {', '.join(run_classes[:10]) or 'unlabelled data'}; choose normal classes it knows",
            )
        val = val.subset(torch.nonzero(keep).flatten())
    val = _subsample(val, limit, seed + 2)

    say(f"scoring {len(val)} validation images ({', '.join(names)}; k={k})")
    kw = dict(k=k, background=bg, compressor=compressor, batch_size=batch_size, seed=seed)
    val_scores = score_images(run, val.images, names, **kw)
    say(f"scoring {len(images)} {split} images")
    test_scores = score_images(run, images, names, **kw)

    # -- thresholds, flags, metrics ------------------------------------------------------------------------
    per_score: dict[str, dict] = {}
    roc: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    both = is_anomaly is not None and 0 < int(is_anomaly.sum()) < len(is_anomaly)
    for name in names:
        v, s = val_scores[name], test_scores[name]
        t = threshold_at_fpr(v, fpr) if fpr is not None else threshold_at_quantile(v, quantile)
        flagged = flag(s, t)
        entry: dict = {
            "description": SCORES[name],
            "threshold": t,
            "val_flagged_share": float(flag(v, t).mean()) if len(v) else None,
            "flagged": int(flagged.sum()),
            "flagged_share": float(flagged.mean()) if len(s) else None,
        }
        if is_anomaly is not None:
            normal_mask = is_anomaly == 0
            entry["test_fpr"] = float(flagged[normal_mask].mean()) if normal_mask.any() else None
            entry["test_tpr"] = float(flagged[~normal_mask].mean()) if (~normal_mask).any() else None
            entry["mean_normal"] = float(np.nanmean(s[normal_mask])) if normal_mask.any() else None
            entry["mean_anomaly"] = float(np.nanmean(s[~normal_mask])) if (~normal_mask).any() else None
        if both:
            entry.update(detection_metrics(is_anomaly, s))
            fp, tp = roc_points(is_anomaly, s)
            roc[name] = (fp, tp, entry["auroc"])
        per_score[name] = entry

    report: dict = {
        "data": data_name,
        "split": split,
        "outliers": out_name,
        "normal_classes": normal_names if normal_names else None,
        "n_images": int(len(images)),
        "n_anomalies": int(is_anomaly.sum()) if is_anomaly is not None else None,
        "primary": names[0],
        "threshold_rule": {"fpr": fpr} if fpr is not None else {"quantile": quantile},
        "calibration": {"split": "val", "data": run.config.data.source, "n_images": int(len(val))},
        "nll_samples": k,
        "compressor": compressor if "complexity" in names else None,
        "background": str(bg.path) if bg is not None else None,
        "checkpoint": str(run.checkpoint),
        "epoch": run.epoch,
        "seed": seed,
        "scores": per_score,
    }
    if skipped:
        report["skipped_scores"] = skipped
    if run.model.conditional:  # an anomaly has no class: see scores._likelihood and scores.best_class
        report["conditional"] = "likelihoods marginalised over the classes (p(y) uniform); recon and ssim of each image as its best class"
    if both:
        best = max(roc, key=lambda n: roc[n][2])
        report["best_score"] = {"name": best, "auroc": roc[best][2]}
    return AnomalyResult(report, test_scores, images, labels, is_anomaly, source, roc)


def single_image_scores(run, images: torch.Tensor, saved: dict, background=None, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The scores (`names`, default all) of a saved result (`report`) for new images, with its settings (k, compressor)."""
    names = list(names or saved["scores"])
    bg = _as_run(background or saved.get("background")) if (background or saved.get("background")) else None
    if bg is None:
        names = [n for n in names if n != "ratio"]
    return score_images(
        _as_run(run), images, names, k=int(saved.get("nll_samples", 100)), background=bg,
        compressor=saved.get("compressor") or "png", seed=int(saved.get("seed", 0)),
    )
