"""``npz:FILE`` and ``npy:FILE``: numpy arrays of images (and labels) in the layouts people save.

Images: uint8 0-255, bool, integers 0-255, or floats in 0..1 (scaled by 255) or 0..255; laid out as
N x H x W, N x H x W x C, N x C x H x W (C in 1, 3, 4; alpha is dropped) or flattened N x D rows (D = s*s,
or s*s*C read as H x W x C, the layout of ``x.reshape(len(x), -1)`` on numpy/PIL images).

Labels: integer class indices (or one-hot rows, or strings). Classes are named by the str of the original
values and relabelled 0..k-1 in sorted order, so ``classes=["1", "4", "8"]`` works on labels 1, 4, 8 and
separate files line up by name in `concat`.

Files are opened with ``allow_pickle=False``, always: a file of pickled Python objects is refused, because
unpickling runs code from the file.
"""

from __future__ import annotations

import math
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import VaelabError
from .imageset import SPLITS, ImageSet

# Names (compared lower-case) tried in order when images_key / labels_key are not given.
IMAGE_KEYS = ("x", "images", "image", "imgs", "img", "data", "inputs", "features", "arr_0")
LABEL_KEYS = ("y", "labels", "label", "targets", "target", "arr_1")
CLASS_NAME_KEYS = ("class_names", "classes", "label_names", "names")
# Keras-style per-split arrays: x_train / y_train, train_images / train_labels, ...
_SPLIT_WORDS = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}
_SPLIT_IMAGE_STEMS = ("x", "images", "imgs", "data", "inputs", "features")
_SPLIT_LABEL_STEMS = ("y", "labels", "targets")
# .npy siblings: the labels file of X_train.npy is y_train.npy, of images.npy labels.npy, ...
_NPY_LABEL_TOKENS = {
    "x": ("y",),
    "images": ("labels", "targets"),
    "imgs": ("labels",),
    "image": ("label", "labels"),
    "data": ("labels", "targets"),
    "inputs": ("targets", "labels"),
    "features": ("labels",),
}
_CHANNELS = (1, 3, 4)


def _open_error(path: Path, e: Exception) -> VaelabError:
    """The one-line error for a file np.load refused: pickled objects, or not a numpy file at all."""
    text = str(e)
    if "Object arrays" in text or ("pickled" in text and _starts_like_pickle(path)):
        return VaelabError(
            f"{path} holds pickled Python objects, which vaelab never loads (unpickling can run code)",
            "save plain arrays: np.savez(path, x=images, y=labels)",
        )
    if "pickled" in text:  # numpy's guess for any file that is neither .npy nor .npz
        return VaelabError(
            f"{path} is not a numpy .npy/.npz file", "save the arrays with np.save or np.savez"
        )
    return VaelabError(f"cannot read {path}: {text}", "check that it is a complete numpy .npz/.npy file")


def _starts_like_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"  # the PROTO opcode that starts every pickle since protocol 2


def _existing(arg: str, spec: str, kind: str) -> Path:
    path = Path(arg).expanduser()
    if not arg or not path.is_file():
        what = "is a folder" if arg and path.is_dir() else "does not exist"
        raise VaelabError(f"{spec or arg}: file {path} {what}", f"give the path of a .{kind} file")
    return path


def _load_npy(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            arr = np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # a .npy that starts like a zip
        raise _open_error(path, e) from None
    if not isinstance(arr, np.ndarray):
        raise VaelabError(f"{path} is an .npz archive, not a single .npy array", f"use npz:{path}")
    return arr


# ---------------------------------------------------------------------------------------------------------
# readers


def read_npz(
    arg: str,
    spec: str = "",
    images_key: str | None = None,
    labels_key: str | None = None,
    image_size: int | None = None,
    **_,
) -> ImageSet:
    """``npz:FILE``: images and labels under common key names (or `images_key` / `labels_key`).

    Keras-style ``x_train/y_train/x_test/y_test`` (also ``_val``) become the train/val/test splits.
    """
    path = _existing(arg, spec, "npz")
    try:
        with open(path, "rb") as f:  # our own handle: np.load leaks its own when the zip is corrupt
            z = np.load(f, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise VaelabError(f"{path} is a single .npy array, not an .npz archive", f"use npy:{arg}")
            with z:
                groups = _pick_keys(list(z.files), images_key, labels_key, path)
                parts = [(split, z[ik], z[lk] if lk else None) for split, ik, lk in groups]
                names = _class_names_in(z)
                factors = _factors_in(z, path)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # zlib: corrupt compressed data
        raise _open_error(path, e) from None
    ds = _build(parts, names, path, image_size, "/".join(f"{ik}" for _, ik, _ in groups))
    return ds if factors is None else _with_factors(ds, *factors, path)


def _factors_in(z, path: Path):
    """(values (N, F), names) of an archive's optional ``factors`` / ``factor_names`` arrays, or None."""
    if "factors" not in z.files:
        return None
    values = z["factors"]
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.dtype.kind not in "biuf":
        raise VaelabError(f"{path}: 'factors' has shape {values.shape} ({values.dtype})", "save a numeric (N, F) array of factor values")
    names = [str(n) for n in z["factor_names"].tolist()] if "factor_names" in z.files else []
    if names and len(names) != values.shape[1]:
        raise VaelabError(f"{path}: {len(names)} factor_names for {values.shape[1]} factors", "give one name per column of 'factors'")
    return values, names


def _with_factors(ds: ImageSet, values: np.ndarray, names: list[str], path: Path) -> ImageSet:
    """Each factor column as indices into its sorted distinct values (the metrics treat factors as discrete)."""

    if len(values) != len(ds):
        raise VaelabError(f"{path}: 'factors' has {len(values)} rows for {len(ds)} images", "give one row of factors per image")
    if not np.isfinite(values.astype(np.float64)).all():
        raise VaelabError(f"{path}: 'factors' holds NaN or inf", "give finite factor values")
    cols, grids = [], []
    for j in range(values.shape[1]):
        grid, idx = np.unique(values[:, j], return_inverse=True)
        cols.append(idx.reshape(-1))
        grids.append([float(v) for v in grid])
    factors = torch.from_numpy(np.stack(cols, axis=1).astype(np.int64))
    names = names or [f"factor_{j}" for j in range(values.shape[1])]
    return ds.replace(factors=factors, factor_names=names, factor_values=grids)


def read_npy(
    arg: str, spec: str = "", labels_key: str | None = None, image_size: int | None = None, **_
) -> ImageSet:
    """``npy:FILE``: one array of images; labels from `labels_key` (a .npy path, relative to the images
    file's folder) or from a sibling named like the images (X_train.npy -> y_train.npy, images.npy ->
    labels.npy)."""
    path = _existing(arg, spec, "npy")
    images = _load_npy(path)
    if labels_key:
        lpath = Path(labels_key).expanduser()
        lpath = lpath if lpath.is_absolute() else path.parent / lpath
        if not lpath.is_file():
            raise VaelabError(
                f"labels file {lpath} (labels_key) does not exist", "give the .npy file of the labels"
            )
    else:
        lpath = _npy_sibling_labels(path)
    labels = _load_npy(lpath) if lpath is not None else None
    source = f"{path}" + (f" + {lpath.name}" if lpath is not None else "")
    return _build([("train", images, labels)], None, path, image_size, "", source=source)


# ---------------------------------------------------------------------------------------------------------
# key names


def _pick_keys(
    files: list[str], images_key: str | None, labels_key: str | None, path: Path
) -> list[tuple[str, str, str | None]]:
    """(split, images key, labels key or None) for each part of the archive."""
    low = {k.lower(): k for k in files}

    def named(key: str, what: str) -> str:
        if key.lower() not in low:
            raise VaelabError(
                f"{path} has no array '{key}' ({what})", f"its arrays are: {', '.join(files) or 'none'}"
            )
        return low[key.lower()]

    def guess(cands: tuple[str, ...], exclude: str = "") -> str | None:
        return next((low[c] for c in cands if c in low and low[c] != exclude), None)

    if not images_key:
        split_groups = []
        for split, words in _SPLIT_WORDS.items():
            for w in words:
                ik = guess(
                    tuple(f"{s}_{w}" for s in _SPLIT_IMAGE_STEMS)
                    + tuple(f"{w}_{s}" for s in _SPLIT_IMAGE_STEMS)
                )
                if ik is None:
                    continue
                lk = named(labels_key, "labels_key") if labels_key else None
                lk = lk or guess(
                    tuple(f"{s}_{w}" for s in _SPLIT_LABEL_STEMS)
                    + tuple(f"{w}_{s}" for s in _SPLIT_LABEL_STEMS)
                )
                split_groups.append((split, ik, lk))
                break
        if split_groups:
            if labels_key and len(split_groups) > 1:
                raise VaelabError(
                    f"{path} has per-split arrays, so one labels_key '{labels_key}' is ambiguous",
                    "drop labels_key; x_<split>/y_<split> pairs are found by name",
                )
            return split_groups
    ik = named(images_key, "images_key") if images_key else guess(IMAGE_KEYS)
    if ik is None and len(files) == 1:
        ik = files[0]
    if ik is None:
        raise VaelabError(
            f"{path} has no recognisable image array (its arrays: {', '.join(files) or 'none'})",
            "name them with images_key/labels_key (--images-key/--labels-key), or save them as x and y",
        )
    lk = named(labels_key, "labels_key") if labels_key else guess(LABEL_KEYS, exclude=ik)
    return [("train", ik, lk)]


def _class_names_in(z) -> list[str] | None:
    """Class names saved next to the labels (a 1-D string array), if any."""
    for key in z.files:
        if key.lower() in CLASS_NAME_KEYS:
            arr = z[key]
            if arr.ndim == 1 and arr.dtype.kind in "US":
                return [str(v.decode() if isinstance(v, bytes) else v) for v in arr]
    return None


def _npy_sibling_labels(path: Path) -> Path | None:
    """The labels .npy next to an images .npy, by swapping the image word in its name for a label word."""
    siblings = {p.name.lower(): p for p in path.parent.glob("*") if p.suffix.lower() == ".npy"}
    tokens = path.stem.replace("-", "_").split("_")
    for i, tok in enumerate(tokens):
        for rep in _NPY_LABEL_TOKENS.get(tok.lower(), ()):
            sep = "-" if "-" in path.stem else "_"
            cand = sep.join([*tokens[:i], rep, *tokens[i + 1 :]]).lower() + ".npy"
            if cand in siblings and siblings[cand] != path:
                return siblings[cand]
    return None


# ---------------------------------------------------------------------------------------------------------
# arrays -> ImageSet


def _build(
    parts: list[tuple[str, np.ndarray, np.ndarray | None]],
    names: list[str] | None,
    path: Path,
    image_size: int | None,
    keys: str,
    source: str = "",
) -> ImageSet:
    where = f"{path}" + (f" ['{keys}']" if keys else "")
    images = [
        to_images(x, f"{path} [{split}]" if len(parts) > 1 else where, image_size) for split, x, _ in parts
    ]
    for img in images[1:]:
        if img.shape[1:] != images[0].shape[1:]:
            raise VaelabError(
                f"{path}: the splits have different image shapes {tuple(images[0].shape[1:])} and {tuple(img.shape[1:])}",
                "save all splits at the same size",
            )
    labelled = all(y is not None for _, _, y in parts)
    labels, class_names = None, []
    if labelled:
        raw = [_label_values(y, len(x), where) for (_, _, y), x in zip(parts, images, strict=True)]
        labels, class_names = relabel(raw, names)
    split_ids = torch.cat(
        [
            torch.full((len(x),), SPLITS.index(split), dtype=torch.int8)
            for (split, _, _), x in zip(parts, images, strict=True)
        ]
    )
    return ImageSet(
        torch.from_numpy(np.concatenate(images)) if len(images) > 1 else torch.from_numpy(images[0]),
        torch.from_numpy(np.concatenate(labels)) if labelled else None,
        class_names,
        split_ids,
        source or str(path),
    )


def to_images(arr: np.ndarray, where: str, image_size: int | None = None) -> np.ndarray:
    """Any accepted layout and dtype -> a C-contiguous (N, C, H, W) uint8 array with C in (1, 3)."""
    arr = _layout(arr, where, image_size)
    if arr.shape[1] == 4:
        arr = arr[:, :3]  # RGBA: drop alpha
    return np.ascontiguousarray(_pixels(arr, where))


def _layout(arr: np.ndarray, where: str, image_size: int | None) -> np.ndarray:
    """(N, C, H, W) view of the stored layout."""
    if arr.dtype.kind not in "biuf":
        raise VaelabError(
            f"{where} holds {arr.dtype} values, not pixels", "save images as uint8 or float arrays"
        )
    if arr.ndim == 2:
        n, d = arr.shape
        c, s = _flat_shape(d, image_size, where)
        return arr.reshape(n, s, s, c).transpose(0, 3, 1, 2)
    if arr.ndim == 3:
        return arr[:, None]
    if arr.ndim == 4:
        _, first, second, last = arr.shape
        last_is_c, first_is_c = last in _CHANNELS, first in _CHANNELS
        # both could be channels only for tiny images; the pair of equal sides is then the spatial one
        if last_is_c and (not first_is_c or first == second):
            return arr.transpose(0, 3, 1, 2)
        if first_is_c:
            return arr
        raise VaelabError(
            f"{where} has shape {arr.shape}, with no channel axis of 1, 3 or 4",
            "save N x H x W, N x H x W x C or N x C x H x W images",
        )
    raise VaelabError(
        f"{where} has shape {arr.shape}, not images",
        "save N x H x W, N x H x W x C, N x C x H x W, or N x D flattened images",
    )


def _flat_shape(d: int, image_size: int | None, where: str) -> tuple[int, int]:
    """(channels, side) of flattened rows of length d: d = s*s (gray) or s*s*3 (RGB, H x W x C order)."""
    if image_size and d % (image_size * image_size) == 0 and d // (image_size * image_size) in _CHANNELS:
        return d // (image_size * image_size), image_size
    s = math.isqrt(d)
    if s * s == d:
        return 1, s
    s = math.isqrt(d // 3)
    if d % 3 == 0 and s * s * 3 == d:
        return 3, s
    raise VaelabError(
        f"{where} holds flattened rows of {d} values, not s*s or s*s*3",
        "set image_size to the side of the square images (and save them as N x H x W to avoid guessing)",
    )


def _pixels(arr: np.ndarray, where: str) -> np.ndarray:
    """uint8 0-255 from uint8, bool, integers 0..255, or floats in 0..1 (x255) or 0..255, rounded."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    if arr.size == 0:
        return arr.astype(np.uint8)
    if arr.dtype.kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise VaelabError(
                f"{where} has integer pixels from {lo} to {hi}, outside 0..255",
                "save uint8 0-255 or float 0-1 images",
            )
        _warn_dark(where, lo, hi)
        return arr.astype(np.uint8)
    if not np.isfinite(arr).all():
        raise VaelabError(
            f"{where} has NaN or infinite pixel values", "fix or drop those images before saving"
        )
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-6 or hi > 255.0 + 1e-6:
        raise VaelabError(
            f"{where} has pixel values from {lo:g} to {hi:g}, outside 0..1 and 0..255",
            "rescale them to 0..1 (e.g. (x + 1) / 2 for -1..1 images)",
        )
    scale = 255.0 if hi <= 1.0 + 1e-6 else 1.0
    if scale == 1.0:
        _warn_dark(where, lo, hi)
    return np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)


DARK = 32  # a brightest pixel below this on the 0..255 scale: the images are most likely on another scale


def _warn_dark(where: str, lo: float, hi: float) -> None:
    """Pixels above 1 are read on the 0..255 scale; say so when the brightest is so dark (0..7, 0..15) that the
    values are most likely on a scale of their own."""
    if 0 < hi < DARK:
        warnings.warn(
            f"{where} has pixel values from {lo:g} to {hi:g}, read on the 0..255 scale (the brightest pixel is "
            f"{100 * hi / 255:.0f}% of white); if {hi:g} is white, save them divided by {hi:g} (0..1)",
            stacklevel=2,
        )


def _label_values(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """A 1-D array of label values (ints or strings) of length n: one-hot rows become indices."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif (
        y.ndim == 2
        and y.dtype.kind in "biuf"
        and y.size
        and np.isin(y, (0, 1)).all()
        and (y.sum(1) == 1).all()
    ):
        y = y.argmax(1)
    if y.ndim != 1:
        raise VaelabError(
            f"{where}: labels have shape {y.shape}", "save one integer class index per image (N,)"
        )
    if len(y) != n:
        raise VaelabError(f"{where}: {len(y)} labels for {n} images", "give exactly one label per image")
    if y.dtype.kind == "f":
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise VaelabError(f"{where}: labels are not whole numbers", "save integer class indices")
        y = y.astype(np.int64)
    elif y.dtype.kind == "b":
        y = y.astype(np.int64)
    elif y.dtype.kind == "S":
        y = y.astype(str)
    elif y.dtype.kind not in "iuU":
        raise VaelabError(f"{where}: labels are {y.dtype}", "save integer class indices")
    return y


def relabel(parts: list[np.ndarray], names: list[str] | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Map label values to 0..k-1 in sorted order, shared by all parts; classes are named by the values.

    Saved class names (``names``) are used instead when the labels are already 0..k-1 indices into them.
    """
    values = np.unique(np.concatenate(parts)) if parts else np.array([], dtype=np.int64)
    if values.dtype.kind in "iu":
        values = values.astype(np.int64)
        if names is not None and len(values) and values[0] >= 0 and values[-1] < len(names):
            return [p.astype(np.int64) for p in parts], list(names)
    out = [np.searchsorted(values, p).astype(np.int64) for p in parts]
    return out, [str(v) for v in values.tolist()]
