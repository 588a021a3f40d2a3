"""Images that live in Python: NumPy arrays, torch tensors or a torch ``Dataset``, made into an `ImageSet`.

    ImageSet.from_arrays(x_train, labels=y_train, val=x_val, val_labels=y_val, class_names=["cat", "dog"])
    ImageSet.from_dataset(torch_dataset)             # (image, label) pairs, or bare images

Arrays are read exactly as ``npz:`` files are (`arrays.to_images`): uint8 0-255, bool, integers 0..255 or
floats in [0, 1] (or 0..255); laid out (N, H, W), (N, C, H, W), (N, H, W, C) or flat (N, H*W). Anything
else stops with one line saying what was given.

A run trained on such a set records ``data.source: memory`` and keeps the prepared set in
``RUN_DIR/data.npz`` (`save_npz`, atomic; read back with `load_npz`, never unpickled).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import VaelabError
from .imageset import SPLITS, ImageSet

MEMORY_SOURCE = "memory"  # data.source of a run trained on in-memory data
DATA_FILE = "data.npz"  # where that data is saved in the run directory
_FORMAT = "vaelab-data-1"


def _as_numpy(x: Any, what: str) -> np.ndarray:
    """A NumPy view of an array-like (torch tensors leave the graph and the device first)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        try:
            return np.asarray(x)
        except ValueError:
            raise VaelabError(f"{what} is a list of arrays of different shapes", "give images of one size") from None
    raise VaelabError(
        f"{what} is a {type(x).__name__}, not an array",
        "give a NumPy array or torch tensor of images, (N, H, W), (N, C, H, W), (N, H, W, C) or (N, H*W)",
    )


def from_arrays(
    train: Any,
    labels: Any = None,
    val: Any = None,
    test: Any = None,
    *,
    val_labels: Any = None,
    test_labels: Any = None,
    class_names: Sequence[str] | None = None,
    image_size: int | None = None,
    source: str = "arrays",
    factors: Any = None,
    val_factors: Any = None,
    test_factors: Any = None,
    factor_names: Sequence[str] | None = None,
) -> ImageSet:
    """An `ImageSet` from NumPy arrays or torch tensors (one per split), with optional labels.

    ``labels`` are class indices (or one-hot rows, or strings), one per training image; ``val_labels`` and
    ``test_labels`` go with ``val`` and ``test``. ``class_names`` names the label indices 0..k-1.
    ``image_size`` tells the side of flattened (N, D) rows when D is ambiguous. ``factors`` (with
    ``val_factors``, ``test_factors``): ground-truth factor values (N, F) per split, named ``factor_names``,
    read as an npz's ``factors`` are (indices into each column's sorted distinct values), so
    ``vaelab evaluate --disentanglement`` can score a run trained on them.
    """
    from .arrays import _label_values, relabel, to_images

    parts = [("train", train, labels), ("val", val, val_labels), ("test", test, test_labels)]
    parts = [(s, x, y) for s, x, y in parts if x is not None]
    given = [s for s, x, y in [("val", val, val_labels), ("test", test, test_labels)] if x is None and y is not None]
    if given:
        raise VaelabError(f"{given[0]}_labels given without {given[0]} images", f"pass {given[0]}=images too")
    images = [to_images(_as_numpy(x, f"{s} images"), f"{s} images", image_size) for s, x, _ in parts]
    for (s, _, _), img in zip(parts[1:], images[1:], strict=True):
        if img.shape[1:] != images[0].shape[1:]:
            raise VaelabError(
                f"{s} images have shape {img.shape[1:]} (C, H, W) but train images {images[0].shape[1:]}",
                "give every split at the same size",
            )
    with_labels = [y is not None for _, _, y in parts]
    if any(with_labels) and not all(with_labels):
        missing = next(s for (s, _, y) in parts if y is None)
        raise VaelabError(f"{missing} images have no labels but the others do", f"give {missing}_labels too, or no labels at all")
    label_tensor, names = None, []
    if all(with_labels):
        raw = [_label_values(_as_numpy(y, f"{s} labels"), len(x), f"{s} labels") for (s, _, y), x in zip(parts, images, strict=True)]
        out, names = relabel(raw, list(class_names) if class_names is not None else None)
        if class_names is not None and names != list(class_names):
            raise VaelabError(
                f"the labels are not indices 0..{len(class_names) - 1} into the {len(class_names)} class_names",
                "give labels 0..k-1 that index class_names, or leave class_names out",
            )
        label_tensor = torch.from_numpy(np.concatenate(out))
    elif class_names is not None:
        raise VaelabError("class_names given without labels", "pass labels=... too, or leave class_names out")
    split_ids = torch.cat([torch.full((len(x),), SPLITS.index(s), dtype=torch.int8) for (s, _, _), x in zip(parts, images, strict=True)])
    ds = ImageSet(torch.from_numpy(np.concatenate(images)), label_tensor, names, split_ids, source)
    split_factors = {"train": factors, "val": val_factors, "test": test_factors}
    for s_, x_ in (("val", val), ("test", test)):
        if x_ is None and split_factors[s_] is not None:
            raise VaelabError(f"{s_}_factors given without {s_} images", f"pass {s_}=images too")
    if all(f is None for f in split_factors.values()):
        if factor_names is not None:
            raise VaelabError("factor_names given without factors", "pass factors=... too, or leave factor_names out")
        return ds
    from .arrays import _with_factors

    cols = []
    for (s, _, _), x in zip(parts, images, strict=True):
        if split_factors[s] is None:
            raise VaelabError(f"{s} images have no factors but the others do", f"give {'factors' if s == 'train' else s + '_factors'} too")
        f = _as_numpy(split_factors[s], f"{s} factors")
        f = f[:, None] if f.ndim == 1 else f
        if f.ndim != 2 or len(f) != len(x) or f.dtype.kind not in "biuf":
            raise VaelabError(f"{s} factors have shape {f.shape} ({f.dtype}) for {len(x)} images", "give a numeric (N, F) array of factor values per split")
        cols.append(f)
    if len({c.shape[1] for c in cols}) > 1:
        raise VaelabError("the splits' factors have different numbers of columns", "give every split the same factors")
    names_ = [str(n) for n in factor_names] if factor_names is not None else []
    if names_ and len(names_) != cols[0].shape[1]:
        raise VaelabError(f"{len(names_)} factor_names for {cols[0].shape[1]} factors", "give one name per column of factors")
    return _with_factors(ds, np.concatenate(cols), names_, source)


def from_dataset(dataset: Any, class_names: Sequence[str] | None = None, image_size: int | None = None, source: str = "dataset") -> ImageSet:
    """An `ImageSet` from a torch ``Dataset`` (any sized, indexable object) of ``(image, label)`` pairs or bare images.

    Each image is an array or tensor (C, H, W), (H, W, C) or (H, W), uint8 or float in [0, 1], or a PIL image.
    ``class_names`` defaults to the dataset's own ``classes`` attribute when it has one.
    """
    try:
        n = len(dataset)
    except TypeError:
        raise VaelabError(f"{type(dataset).__name__} has no length", "give a map-style torch Dataset (with __len__ and __getitem__)") from None
    if n == 0:
        raise VaelabError("the dataset is empty", "give a dataset with images")
    images, labels = [], []
    for i in range(n):
        item = dataset[i]
        if isinstance(item, (tuple, list)):
            if len(item) < 1:
                raise VaelabError(f"item {i} of the dataset is empty", "return (image, label) pairs")
            img, lab = item[0], (item[1] if len(item) > 1 else None)
        else:
            img, lab = item, None
        if not isinstance(img, (np.ndarray, torch.Tensor)) and hasattr(img, "mode"):  # a PIL image
            img = np.asarray(img)
        img = _as_numpy(img, f"image {i} of the dataset")
        if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[-1] not in (1, 3, 4):
            img = img.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C): every item in one layout before stacking
        images.append(img)
        labels.append(None if lab is None else int(torch.as_tensor(lab).item()))
    if len({im.shape for im in images}) > 1:
        raise VaelabError("the dataset's images have different shapes", "resize them to one size in the dataset's transform")
    have = [lab is not None for lab in labels]
    if any(have) and not all(have):
        raise VaelabError("some dataset items have labels and some do not", "return (image, label) for every item")
    if class_names is None and all(have):
        names = getattr(dataset, "classes", None)
        class_names = [str(c) for c in names] if isinstance(names, (list, tuple)) and names else None
    arr = np.stack(images)
    y = np.asarray(labels, dtype=np.int64) if all(have) else None
    if class_names is not None and y is not None and (y.min() < 0 or y.max() >= len(class_names)):
        class_names = None  # the dataset's `classes` do not index its labels: name classes by their values
    return from_arrays(arr, y, class_names=class_names, image_size=image_size, source=source)


def as_imageset(data: Any, source: str = "") -> ImageSet:
    """An `ImageSet` from what a Python user holds: an ImageSet, an array/tensor, (images, labels), or a Dataset."""
    if isinstance(data, ImageSet):
        return data
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return from_arrays(data, source=source or "arrays")
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(d, (np.ndarray, torch.Tensor)) for d in data):
        return from_arrays(data[0], data[1], source=source or "arrays")
    if hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, (str, bytes, dict)):
        return from_dataset(data, source=source or type(data).__name__)
    raise VaelabError(
        f"cannot train on a {type(data).__name__}",
        "give an ImageSet (ImageSet.from_arrays), an array of images, (images, labels), a torch Dataset, or a data spec string",
    )


def prepare(ds: ImageSet, cfg) -> ImageSet:
    """Apply a `DataConfig`'s shared steps to an in-memory set, as `load` does to a file's images:
    classes, the validation split (when the set has none), limit, then channels and size."""
    from .load import conform, limit_per_split, select_classes, split_validation

    for key in ("val", "test"):
        if getattr(cfg, key) is not None:
            raise VaelabError(
                f"data.{key} is a data spec, which does not mix with in-memory data",
                f"pass {key}=... to ImageSet.from_arrays instead, or drop data.{key}",
            )
    if cfg.classes:
        ds = select_classes(ds, cfg.classes)
    if not ds.has_split("val") and cfg.val_fraction > 0:
        ds = split_validation(ds, cfg.val_fraction, cfg.seed)
    if cfg.limit is not None:
        ds = limit_per_split(ds, cfg.limit, cfg.seed)
    return conform(ds, cfg.image_size, cfg.channels)


# ---------------------------------------------------------------------------------------------------------
# the copy kept in a run directory


def npz_bytes(ds: ImageSet) -> bytes:
    """The set as an uncompressed .npz: images (N, C, H, W) uint8, split ids, labels with class names, and
    ground-truth factors with their names and values when the set has them."""
    arrays: dict[str, np.ndarray] = {
        "format": np.array(_FORMAT),
        "images": ds.images.cpu().numpy(),
        "split": ds.split_ids.cpu().numpy().astype(np.int8),
        "source": np.array(ds.source or MEMORY_SOURCE),
    }
    if ds.labels is not None:
        arrays["labels"] = ds.labels.cpu().numpy().astype(np.int64)
        arrays["class_names"] = np.array([str(c) for c in ds.class_names], dtype=str)
    if ds.factors is not None:  # ground-truth factors (issue 22): indices, names, and each factor's values
        arrays["factors"] = ds.factors.cpu().numpy().astype(np.int64)
        arrays["factor_names"] = np.array([str(n) for n in ds.factor_names], dtype=str)
        for j, values in enumerate(ds.factor_values):
            arrays[f"factor_values_{j}"] = np.asarray(values, dtype=np.float64)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def save_npz(ds: ImageSet, path: str | Path) -> Path:
    """Write the set to `path` atomically (a crash leaves the old file or none, never half of one)."""
    from ..train.checkpoint import atomic_write

    data = npz_bytes(ds)
    atomic_write(path, lambda f: f.write(data))
    return Path(path)


def load_npz(path: str | Path) -> ImageSet:
    """Read a set written by `save_npz` exactly as it was (no resizing, splitting or relabelling)."""
    path = Path(path)
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            if "format" not in z.files or str(z["format"]) != _FORMAT:
                raise VaelabError(f"{path} is not a data file written by vaelab", "give the run directory's own data.npz")
            labels = torch.from_numpy(z["labels"]) if "labels" in z.files else None
            names = [str(c) for c in z["class_names"]] if "class_names" in z.files else []
            factors = torch.from_numpy(z["factors"]) if "factors" in z.files else None
            factor_names = [str(n) for n in z["factor_names"]] if "factor_names" in z.files else []
            values = [z[f"factor_values_{j}"].tolist() for j in range(len(factor_names)) if f"factor_values_{j}" in z.files]
            return ImageSet(
                torch.from_numpy(z["images"]), labels, names, torch.from_numpy(z["split"]), str(z["source"]),
                factors=factors, factor_names=factor_names, factor_values=values if len(values) == len(factor_names) else [],
            )
    except (ValueError, OSError, EOFError, KeyError) as e:
        raise VaelabError(f"cannot read {path} ({type(e).__name__}: {str(e)[:80]})", "the file is damaged; give the data with --data SPEC") from None


def saved_run_data(run_dir: str | Path) -> ImageSet:
    """The in-memory data a run kept (``RUN_DIR/data.npz``), or one error asking for the data."""
    path = Path(run_dir) / DATA_FILE
    if not path.is_file():
        raise VaelabError(
            f"{run_dir} was trained on in-memory data that was not saved with it (no {DATA_FILE})",
            "pass the data again from Python: vaelab.fit(data, run_dir=..., resume=True)",
        )
    return load_npz(path)
