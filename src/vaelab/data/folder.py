"""``folder:DIR``: a folder of image files, decoded in parallel and cached on disk as one uint8 array.

Layout: class subfolders become labels (sorted names); split subfolders (train / val / test and their usual
spellings, e.g. 'valid', 'Testing Data') become splits, each with class subfolders or flat; a folder without
subfolders of images is one unlabelled set. Hidden files and ``__MACOSX`` are ignored, files without an image
extension are skipped silently, images that do not decode are skipped with a warning naming them.

Every image is converted to gray or RGB (the `channels` option; default RGB if any file header has colour),
center-cropped to a square and resized to `image_size`. Without `image_size`, images that all have the same
size keep it (cropped to square); images of mixed sizes are resized to 64 x 64 with a warning, the size our
models are built for, since no native size exists.

Decoding is the slow part, so it runs in a thread pool (Pillow releases the GIL while decoding and resizing;
on 2 cores threads beat worker processes, which pay for start-up and for sending pixels back), JPEGs are
decoded at reduced size with ``Image.draft`` when the target is much smaller, and the result is cached in
``cache_dir()/folders/`` keyed by the file list, sizes, mtimes and options, so a second load reads no image.
Set ``VAELAB_NO_CACHE=1`` to neither read nor write that cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, features

from ..errors import VaelabError
from .imageset import SPLITS, ImageSet
from .paths import cache_dir

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff"}
    | ({".webp"} if features.check("webp") else set())
)
# Folder names (lower case, '_' and '-' read as spaces) that mean a split rather than a class.
SPLIT_FOLDERS = {
    **dict.fromkeys(
        ("train", "training", "train data", "training data", "train set", "training set"), "train"
    ),
    **dict.fromkeys(("val", "valid", "validation", "val data", "validation data", "validation set"), "val"),
    **dict.fromkeys(("test", "testing", "test data", "testing data", "test set"), "test"),
}
DEFAULT_SIZE = 64  # for folders of mixed sizes without image_size
NO_CACHE_ENV = "VAELAB_NO_CACHE"
_CACHE_VERSION = 1  # bump when decoding changes, so old cache files are not reused
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_MAX_WORKERS = 8

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class _Entry:
    path: Path
    label: str | None  # class folder name
    split: str


# ---------------------------------------------------------------------------------------------------------
# what is in the folder


def _visible(name: str) -> bool:
    return not name.startswith(".") and name != "__MACOSX"


def _is_image(name: str) -> bool:
    return _visible(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _images_under(folder: Path) -> list[Path]:
    """Image files anywhere below `folder` (hidden files and folders skipped), sorted by path."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if _visible(d)]
        out.extend(Path(dirpath) / f for f in filenames if _is_image(f))
    return sorted(out)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p.name))


def _split_of(name: str) -> str | None:
    return SPLIT_FOLDERS.get(" ".join(name.lower().replace("_", " ").replace("-", " ").split()))


def scan_folder(root: Path) -> tuple[list[_Entry], list[str], list[str]]:
    """(entries, class names, notes): the image files of a folder with their class and split."""
    notes: list[str] = []
    subs = _subfolders(root)
    split_dirs = [(d, _split_of(d.name)) for d in subs]
    if any(s for _, s in split_dirs):
        groups = [(d, s) for d, s in split_dirs if s]
        others = [d.name for d, s in split_dirs if not s and _images_under(d)]
        if others:
            notes.append(f"{root}: ignored the images in folders that are not splits ({', '.join(others)})")
        if any(_is_image(f) for f in os.listdir(root)):
            notes.append(f"{root}: ignored the images next to the split folders")
    else:
        groups = [(root, "train")]
    entries: list[_Entry] = []
    kinds = {}  # group folder -> labelled?
    for folder, split in groups:
        classes = [(d, _images_under(d)) for d in _subfolders(folder)]
        classes = [(d, files) for d, files in classes if files]
        loose = [folder / f for f in sorted(os.listdir(folder)) if _is_image(f) and (folder / f).is_file()]
        if classes:
            kinds[folder] = True
            if loose:
                notes.append(f"{folder}: ignored {len(loose)} images that are not in a class folder")
            entries.extend(_Entry(f, d.name, split) for d, files in classes for f in files)
        elif loose:
            kinds[folder] = False
            entries.extend(_Entry(f, None, split) for f in loose)
    if len(set(kinds.values())) > 1:
        flat = [f.name for f, labelled in kinds.items() if not labelled]
        raise VaelabError(
            f"{root}: some splits have class folders, but {', '.join(flat)} has loose images",
            "put the images of every split into class folders, or load the unlabelled split on its own",
        )
    names = sorted({e.label for e in entries if e.label is not None})
    return entries, names, notes


# ---------------------------------------------------------------------------------------------------------
# decoding


def _header(path: Path) -> tuple[int, int, bool]:
    """(width, height, has colour) from the file header alone (Image.open decodes nothing)."""
    with Image.open(path) as im:
        colour = im.mode not in _GRAY_MODES
        if im.mode in ("P", "PA"):
            pal = im.getpalette() or []
            colour = any(pal[i] != pal[i + 1] or pal[i] != pal[i + 2] for i in range(0, len(pal) - 2, 3))
        return im.size[0], im.size[1], colour


def _to_8bit(im: Image.Image, channels: int) -> Image.Image:
    """Any Pillow mode -> 'L' or 'RGB': 16-bit scaled (not clipped) to 8-bit, transparency over white."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im)
        if mode.startswith("I;16") or (mode == "I" and a.size and a.max() > 255):
            a = np.rint(np.clip(a, 0, 65535) / 257.0)  # 65535 -> 255
        elif mode == "F" and a.size and a.max() <= 1.0:
            a = np.rint(a * 255.0)
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
        mode = "L"
    if mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        mode in ("P", "L", "RGB") and "transparency" in im.info
    ):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)
        im = white
    target = "L" if channels == 1 else "RGB"
    return im if im.mode == target else im.convert(target)


def decode_image(path: Path, size: int | None, channels: int) -> np.ndarray:
    """One file -> (channels, s, s) uint8: center-cropped to square, resized to `size` (None: no resize)."""
    with Image.open(path) as src:  # everything happens inside: closing the file invalidates `src`
        if size is not None:
            src.draft("L" if channels == 1 else "RGB", (size, size))  # JPEG: DCT-domain downscale, >= size
        orientation = src.getexif().get(0x0112, 1)
        im = _to_8bit(src, channels)
        w, h = im.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        box = (left, top, left + s, top + s)
        target = size or s
        if target != s:
            im = im.resize((target, target), Image.Resampling.BILINEAR, box=box)
        elif w != h:
            im = im.crop(box)
        if (
            orientation in _EXIF_TRANSPOSE
        ):  # after the square crop: cheaper, and the crop is centred either way
            im = im.transpose(_EXIF_TRANSPOSE[orientation])
        a = np.array(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _try(fn: Callable[[T], R], item: T) -> R | str:
    """fn(item), or the error text: one bad file must not stop the others (Pillow raises many types)."""
    try:
        return fn(item)
    except Exception as e:  # noqa: BLE001 - untrusted files: OSError, SyntaxError, ValueError, DecompressionBombError...
        return f"{type(e).__name__}: {e}"


def _imap(fn: Callable[[T], R], items: list[T]) -> Iterator[R | str]:
    """fn over items in a thread pool, yielded in order as they finish; inline for a handful."""
    if len(items) < 8:
        yield from (_try(fn, it) for it in items)
        return
    workers = min(_MAX_WORKERS, (os.cpu_count() or 1) + 1, len(items))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(lambda it: _try(fn, it), items)


def _warn_skipped(skipped: Iterable[str]) -> None:
    for msg in skipped:
        warnings.warn(msg, stacklevel=4)


# ---------------------------------------------------------------------------------------------------------
# the on-disk cache


def _cache_key(root: Path, entries: list[_Entry], image_size: int | None, channels: int | None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([_CACHE_VERSION, str(root), image_size, channels]).encode())
    for e in entries:
        st = e.path.stat()
        h.update(f"{e.path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:40]


def _cache_enabled() -> bool:
    return os.environ.get(NO_CACHE_ENV, "") in ("", "0")


def _cache_read(path: Path) -> tuple[ImageSet, list[str]] | None:
    """The cached set and its notes, or None if absent or unreadable (then it is simply rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            images = torch.from_numpy(z["images"])
            labels = torch.from_numpy(z["labels"]) if meta["labelled"] else None
            split_ids = torch.from_numpy(z["split_ids"])
        ds = ImageSet(
            images, labels, meta["class_names"], split_ids, f"{meta['root']} (read from cache {path})"
        )
        return ds, meta["notes"]
    except (OSError, ValueError, KeyError, EOFError, VaelabError, zipfile.BadZipFile, zlib.error):
        return None


def _cache_write(path: Path, ds: ImageSet, root: Path, notes: list[str]) -> None:
    """Write atomically (temp file + os.replace): concurrent loaders never see a half-written file."""
    meta = {"root": str(root), "labelled": ds.labelled, "class_names": ds.class_names, "notes": notes}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    images=ds.images.numpy(),
                    labels=(ds.labels if ds.labels is not None else torch.zeros(0, dtype=torch.long)).numpy(),
                    split_ids=ds.split_ids.numpy(),
                    meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                )
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:  # a read-only or full cache must not stop the load
        warnings.warn(f"could not write the folder cache {path}: {e}", stacklevel=3)


# ---------------------------------------------------------------------------------------------------------
# readers


def read_folder(
    arg: str, spec: str = "", image_size: int | None = None, channels: int | None = None, **_
) -> ImageSet:
    """``folder:DIR``: see the module docstring for the layout, conversion and cache."""
    root = Path(arg).expanduser()
    if not arg or not root.is_dir():
        what = "is a file, not a folder" if root.is_file() else "does not exist"
        raise VaelabError(
            f"{spec or arg}: {root} {what}", "give the folder of the images (class subfolders optional)"
        )
    root = root.resolve()
    entries, class_names, notes = scan_folder(root)
    if not entries:
        raise VaelabError(
            f"{root} has no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})",
            "point it at a folder of images",
        )
    if channels is not None and channels not in (1, 3):
        raise VaelabError(f"channels is {channels}", "use 1 (gray) or 3 (RGB)")
    cache_file = cache_dir() / "folders" / f"{_cache_key(root, entries, image_size, channels)}.npz"
    if _cache_enabled():
        hit = _cache_read(cache_file)
        if hit is not None:
            _warn_skipped(hit[1])
            return hit[0]
    ds, notes = _decode_folder(root, entries, class_names, notes, image_size, channels)
    _warn_skipped(notes)
    if _cache_enabled():
        _cache_write(cache_file, ds, root, notes)
        ds.source = f"{root} (decoded {len(ds)} images, cached in {cache_file})"
    return ds


def _decode_folder(
    root: Path,
    entries: list[_Entry],
    class_names: list[str],
    notes: list[str],
    image_size: int | None,
    channels: int | None,
) -> tuple[ImageSet, list[str]]:
    """Header pass (sizes, colour) when an option must be inferred, then the parallel decode pass."""
    notes = list(notes)

    def failed(e: _Entry, result: object, what: str) -> bool:
        if isinstance(result, str):
            notes.append(f"skipped {e.path}: cannot {what} it ({result})")
        return isinstance(result, str)

    if image_size is None or channels is None:
        results = list(_imap(_header, [e.path for e in entries]))
        kept = [(e, r) for e, r in zip(entries, results, strict=True) if not failed(e, r, "read")]
        if not kept:
            raise _nothing_left(root, notes)
        entries = [e for e, _ in kept]
        if channels is None:
            channels = 3 if any(colour for _, (_, _, colour) in kept) else 1
        if image_size is None:
            sizes = {(w, h) for _, (w, h, _) in kept}
            if len(sizes) > 1:
                image_size = DEFAULT_SIZE
                notes.append(
                    f"{root}: images have {len(sizes)} different sizes, resized to {DEFAULT_SIZE} x {DEFAULT_SIZE} "
                    "(set image_size to choose)"
                )
    from .budget import check_memory

    check_memory(
        len(entries) * (channels or 3) * image_size**2 if image_size else 0,
        f"{len(entries)} images of {image_size} x {image_size} px from {root}",
        "use a smaller image_size or data.limit",
    )
    # decoded images go straight into one preallocated array: no list of arrays plus a stacked copy
    images: np.ndarray | None = None
    done: list[_Entry] = []
    results = _imap(lambda p: decode_image(p, image_size, channels), [e.path for e in entries])
    for e, r in zip(entries, results, strict=True):
        if failed(e, r, "decode"):
            continue
        if images is None:
            images = np.empty((len(entries), *r.shape), dtype=np.uint8)
        images[len(done)] = r
        done.append(e)
    if images is None:
        raise _nothing_left(root, notes)
    labels = torch.tensor([class_names.index(e.label) for e in done]) if class_names else None
    split_ids = torch.tensor([SPLITS.index(e.split) for e in done], dtype=torch.int8)
    source = f"{root} (decoded {len(done)} images)"
    return ImageSet(torch.from_numpy(images[: len(done)]), labels, class_names, split_ids, source), notes


def _nothing_left(root: Path, notes: list[str]) -> VaelabError:
    """The error when every file failed; the per-file reasons go out as warnings first."""
    _warn_skipped(notes)
    return VaelabError(
        f"no image in {root} could be read ({sum(m.startswith('skipped') for m in notes)} files failed)",
        "the warnings name each file and why; replace or remove them",
    )


def read_image_file(
    arg: str, spec: str = "", image_size: int | None = None, channels: int | None = None, **_
) -> ImageSet:
    """A single image file as a 1-image, unlabelled set (e.g. to encode one photo)."""
    path = Path(arg).expanduser()
    try:
        if channels is None:
            channels = 3 if _header(path)[2] else 1
        image = decode_image(path, image_size, channels)
    except Exception as e:  # noqa: BLE001 - see _try
        raise VaelabError(
            f"cannot read image {path}: {type(e).__name__}: {e}", "give a readable image file"
        ) from None
    return ImageSet(torch.from_numpy(image[None].copy()), None, [], None, str(path))
