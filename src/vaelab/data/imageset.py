"""`ImageSet`: an index over uint8 images, with their labels, class names and splits.

The images live in one uint8 (M, C, H, W) *storage* tensor: in RAM (the fast path for sets that fit, e.g.
MNIST), on the training device, or memory-mapped from a folder cache file on disk (`folder:` sets of any
size). A set is the rows of that storage it holds (``rows``; None: all, in order), so `split` and `subset`
copy only indices, never pixels, and batches are gathered by index (`gather`, `pixels[idx]`, `chunks`)
whatever the storage. ``ds.images`` still gives the set as one tensor: free for a whole in-RAM or mapped
set, a copy for a subset, so code that runs on sets of any size uses `pixels` / `chunks` instead.
Batches are turned into float on the fly (`to_float`); nothing here makes a float copy of the whole set.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import VaelabError

SPLITS = ("train", "val", "test")
DEVICE_COPY_MAX = 4 << 30  # a memory-mapped set up to this size is copied whole to an accelerator
CHUNK_BYTES = 1 << 24
BATCH_ELEMENTS = 1 << 22  # pixel values per evaluation batch: bounds activations at any image size  # 16 MiB of uint8 pixels per chunk: what whole-set passes hold at once


def bounded_batch(batch_size: int, shape, budget: int = BATCH_ELEMENTS) -> int:
    """`batch_size`, lowered so that a batch of images of `shape` (C, H, W) holds at most `budget` values:
    evaluation passes keep their batch size on small images (MNIST: 5,000 fit) and stay bounded on large
    ones (85 images of 3 x 128 x 128), so their memory does not depend on the image size."""
    return max(1, min(int(batch_size), budget // max(1, int(np.prod(tuple(shape))))))


def chunk_rows(row_bytes: int, budget: int = CHUNK_BYTES) -> int:
    """How many images of `row_bytes` fit in a chunk of `budget` bytes (at least one)."""
    return max(1, budget // max(1, row_bytes))


def open_map(path: str | Path, shape: tuple[int, ...]) -> torch.Tensor:
    """A uint8 tensor of `shape` memory-mapped from a raw file: pages are read on demand and belong to the
    page cache (file-backed, droppable), not to the process. Copy-on-write, so a stray in-place write
    changes a private copy of that page, never the cache file."""
    arr = np.memmap(path, dtype=np.uint8, mode="c", shape=tuple(int(s) for s in shape))
    return torch.from_numpy(arr)


class Images:
    """The images of a set as a lazy (N, C, H, W) uint8 sequence: indexing gathers just those rows.

    ``view[idx]`` (a slice, an int, a list or a LongTensor of positions) returns a uint8 tensor on
    ``view.device``; ``view.to(device)`` moves an in-RAM storage there once (a memory-mapped one stays on
    disk, and each batch is copied over after gathering).
    """

    def __init__(self, storage: torch.Tensor, rows: torch.Tensor | None, device=None, mapped: bool = False):
        if rows is not None and not mapped and rows.device != storage.device:
            rows = rows.to(storage.device)  # once per view, not per batch
        self.storage, self.rows, self.mapped = storage, rows, mapped
        self.device = torch.device(device) if device is not None else storage.device

    def __len__(self) -> int:
        return int(self.storage.shape[0] if self.rows is None else self.rows.shape[0])

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.storage.shape[1:]))

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8

    @property
    def ndim(self) -> int:
        return 4

    def to(self, device) -> Images:
        device = torch.device(device)
        if self.mapped or device == self.storage.device:
            return Images(self.storage, self.rows, device, self.mapped)
        rows = None if self.rows is None else self.rows.to(device)
        return Images(self.storage.to(device), rows, device, self.mapped)

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, int | np.integer):
            return self.__getitem__(slice(int(key), int(key) + 1 if key != -1 else None))[0]
        if isinstance(key, slice):
            if self.rows is None:
                out = self.storage[key]
                return out if out.device == self.device else out.to(self.device, non_blocking=True)
            return self.index_select(0, torch.arange(len(self))[key])
        key = torch.as_tensor(np.asarray(key) if isinstance(key, list) else key)
        if key.dtype == torch.bool:  # a mask over the set
            key = torch.nonzero(key.cpu()).flatten()
        return self.index_select(0, key.long())

    def index_select(self, dim: int, index: torch.Tensor) -> torch.Tensor:
        """uint8 (len(index), C, H, W) on `self.device`: the images at these positions of the set."""
        assert dim == 0
        where = self.storage.device
        if self.rows is not None:
            index = self.rows.index_select(0, index.to(self.rows.device))
        out = self.storage.index_select(0, index.to(where))
        return out if out.device == self.device else out.to(self.device, non_blocking=True)

    def chunks(self, size: int | None = None) -> Iterator[torch.Tensor]:
        """The set in order, in uint8 chunks of `size` images (default: about `CHUNK_BYTES` each)."""
        n = len(self)
        size = size or chunk_rows(int(np.prod(self.storage.shape[1:])))
        for s in range(0, n, size):
            yield self[s : s + size]

    def numpy(self) -> np.ndarray:
        return self[:].cpu().numpy()

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)


class ImageSet:
    """images (N, C, H, W) uint8, labels (N,) int64 or None, class names, split ids (N,) int8 into SPLITS.

    ``ImageSet(images, labels, class_names, split_ids, source)`` wraps an in-RAM tensor; `from_map` opens
    a memory-mapped storage file; ``rows`` makes the set a selection of a storage's rows; ``ds.replace(
    class_names=...)`` is a new set on the same storage. Not a dataclass on purpose: libraries that walk
    dataclass fields (Lightning's DDP launcher) deep-copy them, which would copy a memory-mapped set into RAM.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        class_names: list[str] | None = None,
        split_ids: torch.Tensor | None = None,
        source: str = "",
        rows: torch.Tensor | None = None,
        map_path: str | None = None,
        factors: torch.Tensor | None = None,
        factor_names: list[str] | None = None,
        factor_values: list[list[float]] | None = None,
    ):
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            shape = tuple(getattr(images, "shape", ()))
            raise VaelabError(
                f"ImageSet needs a uint8 tensor of shape (N, C, H, W), got {shape} {getattr(images, 'dtype', type(images).__name__)}"
            )
        self.storage = images
        self.rows = None if rows is None else torch.as_tensor(rows, dtype=torch.long)
        self.map_path = map_path  # the raw file the storage is mapped from (None: in RAM)
        self.class_names = list(class_names or [])
        self.source = source
        n = len(self)
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.shape != (n,):
                raise VaelabError(
                    f"{source or 'data'}: {n} images but {tuple(labels.shape)[0] if labels.ndim else 1} labels",
                    "give one label per image",
                )
            labels = labels.long()
        self.labels = labels
        self.split_ids = torch.zeros(n, dtype=torch.int8) if split_ids is None else split_ids
        # ground-truth factors of variation (dsprites, or an npz with a `factors` array): (N, F) int64 indices
        # into factor_values[f]; None when the source has none. The disentanglement metrics read them.
        self.factor_names = list(factor_names or [])
        self.factor_values = [list(v) for v in factor_values or []]
        if factors is not None:
            factors = torch.as_tensor(factors)
            if factors.ndim != 2 or factors.shape[0] != n:
                raise VaelabError(
                    f"{source or 'data'}: {n} images but factors of shape {tuple(factors.shape)}",
                    "give one row of factors per image, (N, F)",
                )
            factors = factors.long()
            if not self.factor_names:
                self.factor_names = [f"factor_{i}" for i in range(factors.shape[1])]
        self.factors = factors

    @classmethod
    def from_map(cls, path: str | Path, shape: tuple[int, ...], labels=None, class_names=None, split_ids=None, source: str = "") -> ImageSet:
        """A set over a raw uint8 file of `shape` (M, C, H, W), memory-mapped (see `open_map`)."""
        return cls(open_map(path, shape), labels, class_names, split_ids, source, map_path=str(path))

    def replace(self, **changes) -> ImageSet:
        """A new set sharing this one's storage, with some of images, labels, class_names, split_ids,
        source, rows, map_path, factors, factor_names, factor_values replaced (like `dataclasses.replace`)."""
        attrs = dict(
            images=self.storage, labels=self.labels, class_names=self.class_names, split_ids=self.split_ids,
            source=self.source, rows=self.rows, map_path=self.map_path,
            factors=self.factors, factor_names=self.factor_names, factor_values=self.factor_values,
        )
        attrs.update(changes)
        return ImageSet(**attrs)

    def __getstate__(self):
        # a mapped set pickles as its file (DDP workers, data-loader processes reopen the one cache file)
        state = dict(self.__dict__)
        if self.map_path is not None:
            state["storage"] = tuple(self.storage.shape)
        return state

    def __setstate__(self, state):
        if state.get("map_path") is not None and not isinstance(state["storage"], torch.Tensor):
            state["storage"] = open_map(state["map_path"], state["storage"])
        self.__dict__.update(state)

    # -- the images ----------------------------------------------------------------------------------------
    @property
    def mapped(self) -> bool:
        """True when the images are read from a memory-mapped file rather than held in RAM."""
        return self.map_path is not None

    @property
    def pixels(self) -> Images:
        """The images as a lazy view: ``ds.pixels[idx]`` gathers a batch; ``.chunks()`` walks the set."""
        return Images(self.storage, self.rows, mapped=self.mapped)

    @property
    def images(self) -> torch.Tensor:
        """The set as one (N, C, H, W) uint8 tensor (a copy when the set is a selection of rows)."""
        return self.storage if self.rows is None else self.pixels[:]

    @images.setter
    def images(self, value: torch.Tensor) -> None:
        self.storage, self.rows, self.map_path = value, None, None

    def gather(self, index) -> torch.Tensor:
        """uint8 (B, C, H, W): the images at these positions of the set."""
        return self.pixels[index]

    def chunks(self, size: int | None = None) -> Iterator[torch.Tensor]:
        return self.pixels.chunks(size)

    # -- shape -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.storage.shape[0] if self.rows is None else self.rows.shape[0])

    @property
    def channels(self) -> int:
        return int(self.storage.shape[1])

    @property
    def image_size(self) -> int:
        """Height (== width for the square sets vaelab builds)."""
        return int(self.storage.shape[2])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.storage.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    # -- splits ------------------------------------------------------------------------------------------
    def has_split(self, name: str) -> bool:
        return bool((self.split_ids == SPLITS.index(name)).any()) if name in SPLITS else False

    def split(self, name: str) -> ImageSet:
        """The images of one split ('train', 'val' or 'test'); shares the storage (no pixels copied)."""
        if name not in SPLITS:
            raise VaelabError(f"unknown split '{name}'", f"use one of: {', '.join(SPLITS)}")
        idx = torch.nonzero(self.split_ids == SPLITS.index(name)).flatten()
        if len(idx) == 0:
            have = [s for s in SPLITS if self.has_split(s)]
            raise VaelabError(f"{self.source or 'the data'} has no '{name}' split", f"it has: {', '.join(have) or 'nothing'}")
        return self.subset(idx)

    def subset(self, index) -> ImageSet:
        """The images at these positions, in this order; shares the storage (no pixels copied)."""
        index = torch.as_tensor(np.asarray(index) if isinstance(index, list) else index).cpu()
        if index.dtype == torch.bool:  # a mask over the set
            index = torch.nonzero(index).flatten()
        index = index.long()
        rows = index if self.rows is None else self.rows.index_select(0, index)
        return self.replace(
            rows=rows,
            labels=None if self.labels is None else self.labels[index],
            split_ids=self.split_ids[index],
            factors=None if self.factors is None else self.factors[index],
        )

    def split_counts(self) -> dict[str, int]:
        return {s: int((self.split_ids == i).sum()) for i, s in enumerate(SPLITS) if (self.split_ids == i).any()}

    def class_counts(self) -> list[int]:
        if self.labels is None:
            return []
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    # -- conversion --------------------------------------------------------------------------------------
    def to(self, device) -> ImageSet:
        """The set with its storage on `device` (labels and splits stay on the CPU; move batches of them).

        A memory-mapped storage stays on disk for the CPU, and for an accelerator when it is larger than
        `DEVICE_COPY_MAX` (then each gathered batch is copied over); a smaller one is copied to the device
        once, the fast path."""
        device = torch.device(device)
        if device == self.storage.device:
            return self
        if self.mapped and (device.type == "cpu" or self.storage.nbytes > DEVICE_COPY_MAX):
            return self
        return self.replace(images=self.storage.to(device), map_path=None)

    def numpy_images(self) -> np.ndarray:
        """(N, H, W, C) uint8, the layout of PIL and matplotlib."""
        return self.images.permute(0, 2, 3, 1).cpu().numpy()

    # -- from Python, and in a notebook (memory.py) ------------------------------------------------------
    @classmethod
    def from_arrays(cls, train, labels=None, val=None, test=None, **kwargs) -> ImageSet:
        """An ImageSet from NumPy arrays or torch tensors; see `vaelab.data.memory.from_arrays`.

        ``ImageSet.from_arrays(x, labels=y, val=x_val, val_labels=y_val, class_names=[...])``: uint8 or float
        in [0, 1], laid out (N, H, W), (N, C, H, W), (N, H, W, C) or flat (N, H*W)."""
        from .memory import from_arrays

        return from_arrays(train, labels, val, test, **kwargs)

    @classmethod
    def from_dataset(cls, dataset, class_names=None, image_size: int | None = None) -> ImageSet:
        """An ImageSet from a torch Dataset of (image, label) pairs or bare images."""
        from .memory import from_dataset

        return from_dataset(dataset, class_names=class_names, image_size=image_size)

    def __repr__(self) -> str:
        c, h, w = self.shape
        counts = ", ".join(f"{k} {v}" for k, v in self.split_counts().items())
        classes = f", {self.num_classes} classes" if self.labelled else ", unlabelled"
        src = f", source={self.source!r}" if self.source else ""
        where = f", mapped from {self.map_path}" if self.mapped else ""
        factors = f", factors {', '.join(self.factor_names)}" if self.factors is not None else ""
        return f"ImageSet({len(self)} images {c}x{h}x{w}{classes}{factors}: {counts}{src}{where})"

    def _repr_html_(self) -> str:
        import html

        c, h, w = self.shape  # never self.images here: a mapped set would be read whole
        rows = [("images", f"{len(self)} x {c} x {h} x {w} uint8, " + (f"mapped from {self.map_path}" if self.mapped else "in RAM"))]
        rows += [("splits", ", ".join(f"{k} {v}" for k, v in self.split_counts().items()))]
        if self.labelled:
            names = ", ".join(self.class_names[:12]) + (" ..." if self.num_classes > 12 else "")
            rows.append(("classes", f"{self.num_classes}: {names}"))
        if self.factors is not None:
            rows.append(("factors", ", ".join(self.factor_names)))
        if self.source:
            rows.append(("source", self.source))
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in rows)
        return f"<table><caption style='text-align:left'><b>ImageSet</b></caption>{body}</table>"


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) in 0..255 -> float in [0, 1], the range every likelihood works on."""
    return batch.float().div_(255.0)


def concat(parts: list[ImageSet], source: str = "") -> ImageSet:
    """Join sets with the same image shape and classes (e.g. separate train/val/test files)."""
    first = parts[0]
    for p in parts[1:]:
        if p.shape != first.shape:
            raise VaelabError(
                f"{p.source} has images of shape {p.shape}, {first.source} has {first.shape}",
                "set data.image_size and data.channels so that all files agree",
            )
    labelled = all(p.labels is not None for p in parts)
    names = first.class_names
    if labelled:
        # align class names: the union, in order of first appearance, then relabel each part
        names = list(first.class_names)
        for p in parts[1:]:
            for c in p.class_names:
                if c not in names:
                    names.append(c)
        labels = []
        for p in parts:
            remap = torch.tensor([names.index(c) for c in p.class_names], dtype=torch.long)
            labels.append(remap[p.labels] if len(remap) else p.labels)
    same_factors = all(p.factors is not None and p.factor_names == first.factor_names for p in parts)
    factors, values = (_joined_factors(parts) if same_factors else (None, []))
    return ImageSet(
        images=torch.cat([p.images for p in parts]),
        labels=torch.cat(labels) if labelled else None,
        class_names=names if labelled else [],
        split_ids=torch.cat([p.split_ids for p in parts]),
        source=source or " + ".join(p.source for p in parts),
        # factors survive a join only when every part has the same ones
        factors=factors,
        factor_names=list(first.factor_names) if same_factors else [],
        factor_values=values,
    )


def _joined_factors(parts: list[ImageSet]) -> tuple[torch.Tensor, list[list[float]]]:
    """The factors of sets with the same factor names, joined: each part's indices point into its own
    values (an npz's distinct values), so they are mapped into the sorted union of every part's values."""
    if not all(len(p.factor_values) == p.factors.shape[1] for p in parts):  # values unknown: indices as they are
        return torch.cat([p.factors for p in parts]), list(parts[0].factor_values)
    if all(p.factor_values == parts[0].factor_values for p in parts):
        return torch.cat([p.factors for p in parts]), list(parts[0].factor_values)
    width = parts[0].factors.shape[1]
    union = [sorted({float(v) for p in parts for v in p.factor_values[j]}) for j in range(width)]
    cols = []
    for p in parts:
        f = p.factors.numpy()
        cols.append(np.stack([np.searchsorted(union[j], np.asarray(p.factor_values[j], dtype=np.float64)[f[:, j]]) for j in range(width)], 1))
    return torch.from_numpy(np.concatenate(cols).astype(np.int64)), union
