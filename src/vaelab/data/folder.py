"""``folder:DIR``: a folder of image files, decoded in parallel and cached on disk as one uint8 array.

Layout: class subfolders become labels (sorted names); split subfolders (train / val / test and their usual
spellings, e.g. 'valid', 'Testing Data') become splits, each with class subfolders or flat; a folder without
subfolders of images is one unlabelled set. Hidden files and ``__MACOSX`` are ignored, files without an image
extension are skipped silently, images that do not decode are skipped with a warning naming them.

Every image is converted to gray or RGB (the `channels` option; default RGB if any file header has colour),
center-cropped to a square and resized to `image_size`. Without `image_size`, images that all have the same
size keep it (cropped to square); images of mixed sizes are resized to 64 x 64 with a warning, the size our
models are built for, since no native size exists.

The result is cached in ``cache_dir()/folders/KEY/`` (KEY hashes the file list, sizes, mtimes and options),
so a second load reads no image: ``images.u8`` holds the images as one raw uint8 (N, C, H, W) array, and
``meta.json`` (shape, classes, notes, the file of each row), ``labels.npy`` and ``split_ids.npy`` sit beside
it. The folder is built under a temporary name and renamed into place, so readers see all of it or none.
Loads memory-map ``images.u8``: pages are read on demand and belong to the page cache, so memory does not
grow with the number of images, and DDP ranks on one machine share the one file.

Decoding is the slow part: large folders are decoded by worker processes that each write their rows of the
file (no pixels travel between processes), small ones by a thread pool; JPEGs are decoded at reduced size
with ``Image.draft`` when the target is much smaller. Set ``VAELAB_NO_CACHE=1`` to neither read nor write
the cache (the images are then decoded into RAM).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
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
_CACHE_VERSION = 2  # bump when decoding changes, so old cache files are not reused
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
_PROCESS_MIN = 512  # from this many files the decode runs in worker processes
# the cache of one folder: a directory holding the images as one raw uint8 (N, C, H, W) file, memory-mapped
# when read, and beside it its index (the file of each row), classes, splits and shape
_IMAGES, _META, _LABELS, _SPLITS = "images.u8", "meta.json", "labels.npy", "split_ids.npy"

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


def _cache_read(folder: Path) -> tuple[ImageSet, list[str]] | None:
    """The cached set (memory-mapped) and its notes, or None if absent or damaged (then it is rebuilt)."""
    if not (folder / _META).is_file():
        return None
    try:
        meta = json.loads((folder / _META).read_text("utf-8"))
        shape = tuple(int(v) for v in meta["shape"])
        if meta.get("version") != _CACHE_VERSION or (folder / _IMAGES).stat().st_size != int(np.prod(shape)):
            return None
        labels = torch.from_numpy(np.load(folder / _LABELS, allow_pickle=False)) if meta["labelled"] else None
        split_ids = torch.from_numpy(np.load(folder / _SPLITS, allow_pickle=False))
        if len(split_ids) != shape[0]:
            return None
        source = f"{meta['root']} (read from cache {folder})"
        return ImageSet.from_map(folder / _IMAGES, shape, labels, meta["class_names"], split_ids, source), meta["notes"]
    except (OSError, ValueError, KeyError, TypeError, EOFError, VaelabError):
        return None


def _new_cache_dir(final: Path) -> Path | None:
    """A temporary folder beside `final` to build the cache in, or None (with a warning) if none can be made."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    except OSError as e:  # a read-only or full cache must not stop the load
        warnings.warn(f"could not write the folder cache {final}: {e}", stacklevel=4)
        return None


def _cache_commit(tmp: Path, final: Path, ds: ImageSet, done: list[_Entry], root: Path, notes: list[str]) -> Path:
    """Write the index, labels and splits beside the image file, then rename the folder into place.

    The rename is atomic: readers see the whole cache or none. If another process committed the same
    key first, its folder is kept and ours is removed (both hold the same images). Returns the folder used.
    """
    meta = {
        "version": _CACHE_VERSION,
        "root": str(root),
        "shape": [len(ds), *ds.shape],
        "labelled": ds.labelled,
        "class_names": ds.class_names,
        "notes": notes,
        "files": [str(e.path.relative_to(root)) for e in done],  # the index: row i holds files[i]
    }
    labels = ds.labels if ds.labels is not None else torch.zeros(0, dtype=torch.long)
    np.save(tmp / _LABELS, labels.numpy())
    np.save(tmp / _SPLITS, ds.split_ids.numpy())
    (tmp / _META).write_text(json.dumps(meta), "utf-8")
    try:
        os.rename(tmp, final)
        return final
    except OSError:
        pass
    if _cache_read(final) is not None:  # another process committed the same images first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return final
    # a damaged cache folder (a disk error, a hand edit): move it aside, then put ours in its place
    old = final.parent / f".{final.name}.{os.getpid()}.old"
    try:
        os.rename(final, old)
    except OSError:
        pass
    shutil.rmtree(old, ignore_errors=True)
    os.rename(tmp, final)
    return final


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
    if not _cache_enabled():
        ds, notes, _ = _decode_folder(root, entries, class_names, notes, image_size, channels, None)
        _warn_skipped(notes)
        return ds
    final = cache_dir() / "folders" / _cache_key(root, entries, image_size, channels)
    hit = _cache_read(final)
    if hit is not None:
        _warn_skipped(hit[1])
        return hit[0]
    tmp = _new_cache_dir(final)
    try:
        ds, notes, done = _decode_folder(root, entries, class_names, notes, image_size, channels, tmp)
        _warn_skipped(notes)
        if tmp is None:
            return ds
        try:
            final = _cache_commit(tmp, final, ds, done, root, notes)
        except OSError as e:
            warnings.warn(f"could not write the folder cache {final}: {e}", stacklevel=3)
            return ImageSet(ds.images.clone(), ds.labels, ds.class_names, ds.split_ids, f"{root} (decoded {len(ds)} images)")
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    hit = _cache_read(final)
    if hit is None:  # cannot happen unless the cache folder is tampered with meanwhile
        raise VaelabError(f"the folder cache {final} vanished while it was written", "load the folder again")
    hit[0].source = f"{root} (decoded {len(hit[0])} images, cached in {final})"
    return hit[0]


def _decode_folder(
    root: Path,
    entries: list[_Entry],
    class_names: list[str],
    notes: list[str],
    image_size: int | None,
    channels: int | None,
    out_dir: Path | None,
) -> tuple[ImageSet, list[str], list[_Entry]]:
    """Header pass (sizes, colour) when an option must be inferred, then the parallel decode pass.

    With `out_dir` the images are decoded straight into ``out_dir/images.u8`` (a memory-mapped file, so
    memory does not grow with the number of images); without, into one array in RAM. Returns the set, the
    notes and the entries kept (in row order).
    """
    notes = list(notes)

    def failed(e: _Entry, result: object, what: str) -> bool:
        if isinstance(result, str):
            notes.append(f"skipped {e.path}: cannot {what} it ({result})")
        return isinstance(result, str)

    native: int | None = None
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
            else:
                native = min(next(iter(sizes)))
    side = image_size or native
    shape = (len(entries), channels, side, side)
    paths = [str(e.path) for e in entries]
    if out_dir is not None:
        images_file = out_dir / _IMAGES
        images = np.memmap(images_file, dtype=np.uint8, mode="w+", shape=shape)
    else:  # in RAM (VAELAB_NO_CACHE=1): estimated first, refused with the figure when it cannot fit
        from .budget import check_memory

        check_memory(int(np.prod(shape)), f"{len(entries)} images of {side} x {side} px from {root}", "use a smaller image_size or data.limit")
        images = np.empty(shape, dtype=np.uint8)
    errors = _decode_all(paths, image_size, channels, images, images_file if out_dir is not None else None)
    ok = [i for i in range(len(entries)) if i not in errors]
    for i in sorted(errors):
        failed(entries[i], errors[i], "decode")
    if not ok:
        raise _nothing_left(root, notes)
    if len(ok) < len(entries):  # close the gaps of the skipped files: rows stay in file order
        for new, old in enumerate(ok):
            if new != old:
                images[new] = images[old]
    done = [entries[i] for i in ok]
    n = len(done)
    labels = torch.tensor([class_names.index(e.label) for e in done]) if class_names else None
    split_ids = torch.tensor([SPLITS.index(e.split) for e in done], dtype=torch.int8)
    source = f"{root} (decoded {n} images)"
    if out_dir is None:
        return ImageSet(torch.from_numpy(images[:n]), labels, class_names, split_ids, source), notes, done
    images.flush()
    del images
    if n < shape[0]:
        os.truncate(images_file, n * int(np.prod(shape[1:])))
    ds = ImageSet.from_map(images_file, (n, *shape[1:]), labels, class_names, split_ids, source)
    return ds, notes, done


def _decode_rows(job: tuple[str | None, tuple[int, ...], list[tuple[int, str]], int | None, int]) -> dict[int, str]:
    """Decode some files into their rows of the image file (a worker process's share); returns the errors."""
    file, shape, items, size, channels = job
    out = np.memmap(file, dtype=np.uint8, mode="r+", shape=shape)
    errors = {}
    for i, path in items:
        r = _try(lambda p: decode_image(Path(p), size, channels), path)
        if isinstance(r, str):
            errors[i] = r
        elif r.shape != shape[1:]:  # a same-size folder whose file changed meanwhile
            errors[i] = f"its size changed to {r.shape[1]} x {r.shape[2]} while reading"
        else:
            out[i] = r
    out.flush()
    return errors


def _die_with_parent() -> None:
    """In a decode worker: end when the loading process ends, even when it is killed (Linux)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _decode_all(paths: list[str], size: int | None, channels: int, images: np.ndarray, file: Path | None) -> dict[int, str]:
    """Decode every file into ``images[i]``; returns {row: error} for the files that failed.

    A memory-mapped target is filled by worker processes (each writes its rows of the file; no pixels
    travel between processes), since the per-image Python work holds the GIL; an in-RAM one by threads.
    """
    n = len(paths)
    workers = min(_MAX_WORKERS, os.cpu_count() or 1)
    if file is not None and n >= _PROCESS_MIN and workers > 1 and "fork" in mp.get_all_start_methods():
        step = max(16, min(256, n // (workers * 8) or 1))
        jobs = [
            (str(file), images.shape, [(i, paths[i]) for i in range(s, min(n, s + step))], size, channels)
            for s in range(0, n, step)
        ]
        images.flush()
        errors: dict[int, str] = {}
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=_die_with_parent) as pool:
            for part in pool.map(_decode_rows, jobs):
                errors.update(part)
        return errors
    errors = {}
    results = _imap(lambda p: decode_image(Path(p), size, channels), paths)
    for i, r in enumerate(results):
        if isinstance(r, str):
            errors[i] = r
        elif r.shape != images.shape[1:]:
            errors[i] = f"its size changed to {r.shape[1]} x {r.shape[2]} while reading"
        else:
            images[i] = r
    return errors


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
