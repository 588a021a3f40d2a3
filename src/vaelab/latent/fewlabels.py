"""Few-label classification on a run's latents: draw labels, fit a classifier, score it, sweep budgets.

    data = encode_sets(run)                                  # train (unlabelled pool), labels, test
    result = classify(run, "gmm", labels_per_class=10, data=data)
    result.report["f1_macro"], result.classifier
    table = label_budget(run, "gmm", [1, 5, 10, 100, "all"], seed=0, data=data)

Labels come from the run's training split (N per class, a seeded stratified draw; the draws are nested, so
the 5 labels of a class are among its 10) or from a separate labelled set. For the GMM the rest of the
training latents are the unlabelled set. Scores are on the run's test split (val when it has none) or on a
given set. Class names align sets by name, so a file whose labels are 1, 4, 8 meets a run trained on
digits 1, 4, 8 of MNIST.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import ImageSet, load
from ..errors import VaelabError
from .classifiers import UNLABELLED, LatentClassifier, MLPHead, make
from .encode import Latents, check_fits, encode

Budget = int | str  # N labels per class, or "all"

METRIC_KEYS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_micro")


def classifier_path(run_dir: str | Path, method: str) -> Path:
    """Where `vaelab classify` keeps a run's classifier: RUN/classify/<name>.npz (+ .classifier.json); the
    name is the method, the method with its -p parameters (gmm_covariance_type-diag), or --name."""
    return Path(run_dir) / "classify" / f"{method}.npz"


def latest_classifier(run_dir: str | Path, method: str) -> Path:
    """The most recently fitted classifier of `method` (RUN/classify/<method>.npz or <method>_<parameters>.npz),
    as a re-run used to overwrite <method>.npz; <method>.npz when there is none."""
    folder = Path(run_dir) / "classify"
    found = [
        p for p in (folder.glob(f"{method}*.classifier.json") if folder.is_dir() else [])
        if p.name == f"{method}.classifier.json" or p.name.startswith(f"{method}_")
    ]
    if not found:
        return classifier_path(run_dir, method)
    newest = max(found, key=lambda p: p.stat().st_mtime_ns)
    return newest.with_name(newest.name.removesuffix(".classifier.json") + ".npz")


# ---------------------------------------------------------------------------------------------------------
# metrics


def classification_metrics(y_true, y_pred, labels, class_names: list[str]) -> dict[str, Any]:
    """Accuracy, macro/micro precision, recall and F1, per-class scores and the confusion matrix.

    ``labels``: the class indices in matrix order; ``class_names``: their names (same order). The
    confusion matrix has true classes in rows, predicted classes in columns.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    y_true, y_pred, labels = np.asarray(y_true), np.asarray(y_pred), list(labels)
    out: dict[str, Any] = {"accuracy": float(accuracy_score(y_true, y_pred))}
    for avg in ("macro", "micro"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg, zero_division=0)
        out.update({f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)})
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None, zero_division=0)
    out["per_class"] = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(class_names)
    }
    out["confusion"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    out["class_names"] = list(class_names)
    out["n_test"] = int(len(y_true))
    return out


# ---------------------------------------------------------------------------------------------------------
# the latents of a run's sets


@dataclass
class LatentData:
    """Encoded sets of one run. Every ``labels`` array indexes ``class_names`` (the run's vocabulary)."""

    train: Latents  # the run's training split: the unlabelled set (and the label pool by default)
    test: Latents
    class_names: list[str]
    pool: Latents | None = None  # a separate labelled set; None: labels are drawn from `train`
    test_source: str = "test split"
    pool_source: str = "train split"
    notes: list[str] = field(default_factory=list)  # e.g. how many images of other classes were left out

    @property
    def labels_pool(self) -> Latents:
        return self.train if self.pool is None else self.pool


def _align(lat: Latents, vocab: list[str]) -> Latents:
    """Relabel a set to index `vocab` by class name (names it does not know are appended, but only those
    its labels use: a set cut down to the run's classes must not bring its other class names along)."""
    if lat.labels is None or lat.class_names == vocab:
        return lat
    used = set(np.unique(lat.labels).tolist()) if len(lat.labels) else set()
    for i, name in enumerate(lat.class_names):
        if i in used and name not in vocab:
            vocab.append(name)
    remap = np.array([vocab.index(n) if n in vocab else -1 for n in lat.class_names], dtype=np.int64)
    return Latents(lat.z, remap[lat.labels] if len(remap) else lat.labels, list(vocab), lat.std)


_CONVERTIBLE = {(1, 3), (3, 1), (4, 1), (4, 3)}


def load_for_run(
    run,
    spec: str | ImageSet,
    vocab: list[str] | None = None,
    restrict: bool = False,
    what: str = "the data",
    notes: list[str] | None = None,
) -> ImageSet:
    """A data spec loaded for a run's model: resized to its image size and converted to its channels;
    labels renumbered to index `vocab` (class names; new names are appended to it), and with
    ``restrict`` only the images of `vocab`'s classes kept (the run's ``data.classes``: a line saying how
    many were left out goes to `notes`). An ImageSet must already fit the model."""
    c, s, _ = run.model.image_shape
    name = spec if isinstance(spec, str) else _source_name(spec)
    if isinstance(spec, ImageSet):
        ds = spec
    else:
        ds = load(spec, image_size=s, val_fraction=0.0)
        if ds.channels != c:
            if (ds.channels, c) not in _CONVERTIBLE:
                raise VaelabError(
                    f"{what} {spec} has {ds.channels}-channel images but the model takes {c} channel(s) of {s}x{s}",
                    "give gray (1-channel) or RGB (3-channel) images",
                )
            from ..data.transform import to_channels

            ds = ds.replace(images=to_channels(ds.images, c), rows=None, map_path=None)
    check_fits(run.model, ds, f"{what} {name}")
    if ds.labels is None or vocab is None:
        return ds
    if restrict:
        known = np.array([n in vocab for n in ds.class_names] + [False])
        keep = np.nonzero(known[ds.labels.numpy()])[0]
        if len(keep) == 0:
            raise VaelabError(
                f"{what} {name} has none of the run's classes ({', '.join(vocab)})",
                "give a set of the classes the run was trained on",
            )
        if notes is not None and len(keep) < len(ds):
            notes.append(
                f"{what} {name}: kept {len(keep)} of {len(ds)} images, those of the run's classes ({', '.join(vocab)})"
            )
        ds = ds.subset(keep)
    lat = _align(Latents(np.zeros((len(ds), 0)), ds.labels.numpy(), list(ds.class_names)), vocab)
    ds = ds.replace(labels=torch.as_tensor(lat.labels), class_names=list(vocab))
    k = run.model.num_classes
    if run.model.conditional and len(ds) and int(ds.labels.max()) >= k:  # it encodes with the label
        extra = sorted({vocab[i] for i in ds.labels.tolist() if i >= k})
        raise VaelabError(
            f"{what} {name} has class {', '.join(extra)}, which this conditional model was not trained on",
            "give images of the classes the run was trained on",
        )
    return ds


def encode_sets(run, labelled: str | ImageSet | None = None, test: str | ImageSet | None = None) -> LatentData:
    """Encode a run's training split, its test split (val when it has none) or `test`, and `labelled`.

    Latent means with posterior stds (the MLP head draws its K samples from them).
    """
    data = run.data()
    train = encode(run, data.split("train"))
    vocab = list(train.class_names) if train.labels is not None else []
    restrict = bool(run.config.data.classes) and bool(vocab)  # a run of some classes: keep those in other sets
    notes: list[str] = []
    if test is None:
        test_split = "test" if data.has_split("test") else "val"
        if not data.has_split(test_split):
            raise VaelabError(f"run {run.path} has neither a test nor a validation split", "give a labelled set with --test SPEC")
        test_lat, test_source = encode(run, data.split(test_split)), f"{test_split} split"
    else:
        test_lat = encode(run, load_for_run(run, test, vocab, restrict, "the test set", notes))
        test_source = test if isinstance(test, str) else _source_name(test)
    pool, pool_source = None, "train split"
    if labelled is not None:
        pool = encode(run, load_for_run(run, labelled, vocab, restrict, "the labelled set", notes))
        pool_source = labelled if isinstance(labelled, str) else _source_name(labelled)
        if pool.labels is None:
            raise VaelabError(f"the labelled set {pool_source} has no labels", "give a labelled data spec (e.g. npz with labels)")
        pool = _align(pool, vocab)
    elif train.labels is None:
        raise VaelabError(
            f"the training data of {run.path} has no labels to draw from",
            "give a labelled set with --labelled SPEC (the training images stay the unlabelled set)",
        )
    if test_lat.labels is None:
        raise VaelabError(f"the test set {test_source} has no labels, so it cannot be scored", "give a labelled --test set, or use 'vaelab predict'")
    test_lat = _align(test_lat, vocab)
    train = _align(train, vocab) if train.labels is not None else train
    return LatentData(train, test_lat, vocab, pool, test_source, pool_source, notes)


def _source_name(ds: ImageSet) -> str:
    return ds.source or "given set"


# ---------------------------------------------------------------------------------------------------------
# drawing labels and fitting


def parse_budget(text: str) -> list[Budget]:
    """``'1,5,10,100,all'`` -> ``[1, 5, 10, 100, 'all']``."""
    out: list[Budget] = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if not part:
            continue
        out.append(_budget(part))
    if not out:
        raise VaelabError(f"empty label budget '{text}'", "give labels per class, e.g. 1,5,10,100,all")
    return out


def _budget(value: Budget) -> Budget:
    if isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise VaelabError(f"labels per class must be a number or 'all', got {value!r}", "e.g. --labels-per-class 10") from None
    if n < 1:
        raise VaelabError(f"labels per class is {n}", "use at least 1 labelled image per class")
    return n


def draw_per_class(
    labels: np.ndarray, per_class: Budget, seed: int, strict: bool = True, class_names: list[str] | None = None
) -> np.ndarray:
    """Indices of `per_class` images of every class present (seeded, stratified, nested across N).

    The draw of class c is the first N of a permutation fixed by (seed, c), so the 5-label set is inside
    the 10-label set. ``strict``: a class with fewer images than N is an error (else all of it is used).
    """
    per_class = _budget(per_class)
    labels = np.asarray(labels)
    chosen = []
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        if per_class == "all":
            chosen.append(idx)
            continue
        if strict and len(idx) < per_class:
            name = class_names[c] if class_names is not None else str(c)
            raise VaelabError(
                f"class '{name}' has only {len(idx)} labelled images, fewer than the {per_class} per class asked for",
                f"ask for at most {len(idx)} labels per class, or all",
            )
        perm = np.random.default_rng([int(seed), int(c)]).permutation(idx)
        chosen.append(perm[:per_class])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def _check_pool(pool: Latents, need: np.ndarray, class_names: list[str], source: str) -> None:
    """Every class of the test set needs labelled examples, and there must be at least 2 classes."""
    have = set(np.unique(pool.labels).tolist())
    missing = [class_names[c] for c in need if c not in have]
    if missing:
        raise VaelabError(
            f"the labelled set ({source}, {len(pool.labels)} images) has no example of class {', '.join(missing)}",
            "give at least one labelled image of every class",
        )
    if len(have) < 2:
        raise VaelabError(
            f"the labelled set ({source}) has {len(pool.labels)} images of {len(have)} class; a classifier needs 2 or more classes",
            "give labelled images of at least 2 classes",
        )


def posterior_samples(lat: Latents, k: int, seed: int) -> np.ndarray:
    """(N, K, D) draws z = mean + std * eps from each image's posterior (means when there is no std)."""
    if k <= 0 or lat.std is None:
        return lat.z
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((len(lat.z), k, lat.z.shape[1])).astype(np.float32)
    return lat.z[:, None, :] + lat.std[:, None, :] * eps


def fit_labels(
    method: str,
    data: LatentData,
    labels_per_class: Budget = "all",
    seed: int = 0,
    params: dict[str, Any] | None = None,
    strict: bool = True,
) -> tuple[LatentClassifier, dict[str, Any]]:
    """Fit one classifier with `labels_per_class` labels per class; returns it and what it was fitted on."""
    pool = data.labels_pool
    _check_pool(pool, np.unique(data.test.labels), data.class_names, data.pool_source)
    params = dict(params or {})
    clf = make(method, params)
    if isinstance(clf, MLPHead) and "seed" not in params:
        clf.set_params(seed=int(seed))
    idx = draw_per_class(pool.labels, labels_per_class, seed, strict=strict, class_names=data.class_names)
    X, y = pool.z[idx], pool.labels[idx]
    n_unlabelled = 0
    if clf.semi_supervised:
        rest = data.train.z
        if data.pool is None:  # the training images not drawn as labels are the unlabelled set
            rest = np.delete(rest, idx, axis=0)
        n_unlabelled = len(rest)
        X = np.concatenate([X, rest])
        y = np.concatenate([y, np.full(len(rest), UNLABELLED)])
    elif isinstance(clf, MLPHead):
        X = posterior_samples(Latents(X, y, pool.class_names, None if pool.std is None else pool.std[idx]), int(clf.samples), seed)
    clf.fit(X, y)
    clf.class_names_ = list(data.class_names)
    info = {
        "labels_per_class": labels_per_class,
        "n_labelled": int(len(idx)),
        "n_unlabelled": n_unlabelled,
        "seed": int(seed),
        "labelled_source": data.pool_source,
    }
    return clf, info


def score(clf: LatentClassifier, test: Latents, class_names: list[str], source: str = "the test set") -> dict[str, Any]:
    """The metrics of `clf` on labelled latents (means) whose labels index `class_names`."""
    unknown = sorted(set(np.unique(test.labels).tolist()) - set(clf.classes_.tolist()))
    if unknown:
        raise VaelabError(
            f"{source} has class {', '.join(class_names[c] for c in unknown)}, which the classifier was not fitted on",
            "score it on a set of the classes it knows, or give labels of every class",
        )
    pred = clf.predict(test.z)
    return classification_metrics(test.labels, pred, clf.classes_, [class_names[c] for c in clf.classes_])


@dataclass
class ClassifyResult:
    classifier: LatentClassifier
    report: dict[str, Any]  # the RUN/classify/<method>.json contract keys, and more


def _fitted_summary(clf: LatentClassifier) -> dict[str, Any]:
    return {k: v for k, v in clf._scalars().items() if k != "n_features_in_"}


def classify(
    run,
    method: str,
    labels_per_class: Budget | None = None,
    labelled: str | ImageSet | None = None,
    test: str | ImageSet | None = None,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    data: LatentData | None = None,
) -> ClassifyResult:
    """Fit `method` with N labels per class (default 10; all of `labelled` when it is given) and score it.

    The report holds the contract keys of ``RUN/classify/<method>.json`` (method, labels_per_class,
    accuracy, precision_macro, recall_macro, f1_macro, f1_micro, confusion, class_names, n_test) plus
    per-class scores, what was fitted on what, and the classifier's fitted diagnostics.
    """
    if labels_per_class is not None:
        labels_per_class = _budget(labels_per_class)  # a bad number fails before any encoding
    if data is None:
        data = encode_sets(run, labelled=labelled, test=test)
    if labels_per_class is None:
        labels_per_class = "all" if data.pool is not None else 10
    clf, info = fit_labels(method, data, labels_per_class, seed, params)
    metrics = score(clf, data.test, data.class_names, data.test_source)
    report = {
        "method": method,
        "labels_per_class": labels_per_class,
        **{k: metrics[k] for k in (*METRIC_KEYS, "precision_micro", "recall_micro")},
        "confusion": metrics["confusion"],
        "class_names": metrics["class_names"],
        "n_test": metrics["n_test"],
        "per_class": metrics["per_class"],
        **info,
        "test_source": data.test_source,
        "checkpoint": str(run.checkpoint),
        "params": clf.get_params(),
        "fitted": _fitted_summary(clf),
        "notes": list(data.notes),
    }
    return ClassifyResult(clf, report)


def label_budget(
    run,
    method: str,
    budgets: list[Budget],
    seed: int = 0,
    labelled: str | ImageSet | None = None,
    test: str | ImageSet | None = None,
    params: dict[str, Any] | None = None,
    repeats: int = 1,
    data: LatentData | None = None,
) -> dict[str, Any]:
    """Accuracy and F1 of one method per labels-per-class budget, averaged over `repeats` seeded draws.

    Returns the ``RUN/classify/<method>_budget.json`` content: the rows are under ``budget`` (keys
    labels_per_class, n_labelled, accuracy, precision_macro, recall_macro, f1_macro, f1_micro, and
    ``<metric>_std`` over the repeats).

    A budget above a class's count uses all of that class (``n_labelled`` says how many were used).
    Reproducible: draw r of budget N uses seed ``seed + r``.
    """
    if repeats < 1:
        raise VaelabError(f"repeats is {repeats}", "use at least 1")
    budgets = [_budget(b) for b in budgets]
    if data is None:
        data = encode_sets(run, labelled=labelled, test=test)
    seeded = method == "mlp"  # the other classifiers depend on the seed only through the label draw
    done: dict[bytes, tuple[int, dict]] = {}
    rows = []
    for b in budgets:
        runs = []
        for r in range(repeats):
            key = draw_per_class(data.labels_pool.labels, b, seed + r, strict=False).tobytes()
            if seeded or key not in done:  # e.g. 'all' draws the same labels in every repeat
                clf, info = fit_labels(method, data, b, seed + r, params, strict=False)
                done[key] = (info["n_labelled"], score(clf, data.test, data.class_names, data.test_source))
            runs.append(done[key])
        row: dict[str, Any] = {"labels_per_class": b, "n_labelled": runs[0][0]}
        for key in METRIC_KEYS:
            vals = np.array([m[key] for _, m in runs])
            row[key] = float(vals.mean())
            row[key + "_std"] = float(vals.std())
        rows.append(row)
    return {
        "method": method,
        "seed": int(seed),
        "repeats": int(repeats),
        "labelled_source": data.pool_source,
        "test_source": data.test_source,
        "n_test": int(len(data.test.z)),
        "class_names": [data.class_names[c] for c in np.unique(data.test.labels)],
        "checkpoint": str(run.checkpoint),
        "params": make(method, params).get_params(),
        "budget": rows,
        "notes": list(data.notes),
    }


# ---------------------------------------------------------------------------------------------------------
# predicting


def images_from_files(paths: list[str | Path], shape: tuple[int, int, int]) -> ImageSet:
    """Image files (PNG, JPEG, ...) as one ImageSet of the model's (C, H, W): converted to gray or RGB,
    centre-cropped to square and resized like the data layer does."""
    import torch
    from PIL import Image, UnidentifiedImageError

    from ..data.transform import resize_images

    c, s, _ = shape
    out = []
    for p in paths:
        p = Path(p)
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("L" if c == 1 else "RGB"), dtype=np.uint8)
        except FileNotFoundError:
            raise VaelabError(f"image file not found: {p}", "check the path") from None
        except Image.DecompressionBombError as e:  # e.g. 20000 x 20000 px: decoding it could take all the memory
            raise VaelabError(
                f"{p} is too large to decode safely ({str(e).split(',')[0]})",
                "give an image of a normal size (shrink it first if it is real)",
            ) from None
        except (UnidentifiedImageError, OSError) as e:
            raise VaelabError(f"cannot read {p} as an image ({type(e).__name__})", "give PNG or JPEG files") from None
        t = torch.from_numpy(arr.copy())
        t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
        out.append(resize_images(t[None], s)[0])
    if not out:
        raise VaelabError("no images to predict", "give image files or --data SPEC")
    return ImageSet(torch.stack(out), None, [], None, "image files")


@dataclass
class Prediction:
    classes: list[str]  # predicted class name per image
    probability: np.ndarray  # (N,) probability of the predicted class
    proba: np.ndarray  # (N, n_classes) in the order of `class_names`
    class_names: list[str]
    labels: list[str] | None  # true class names when the data has labels


def predict(run, clf: LatentClassifier, data: ImageSet | str) -> Prediction:
    """Predicted class and its probability for every image of `data` (a set or a spec)."""
    names = list(getattr(clf, "class_names_", None) or [str(c) for c in range(int(clf.classes_.max()) + 1)])
    ds = load_for_run(run, data, list(names), bool(run.config.data.classes), "the data")
    lat = encode(run, ds)
    proba = clf.predict_proba(lat.z)
    best = proba.argmax(1)
    classes = [names[c] for c in clf.classes_[best]]
    labels = [lat.class_names[y] for y in lat.labels] if lat.labels is not None else None
    return Prediction(classes, proba[np.arange(len(best)), best], proba, [names[c] for c in clf.classes_], labels)
