"""`ImageSet`: a whole image dataset as one uint8 tensor, its labels, class names and splits.

Images stay uint8 (N, C, H, W) in memory and on the training device; batches are index slices turned into
float on the fly (`to_float`). Nothing here makes a float copy of the whole set.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..errors import VaelabError

SPLITS = ("train", "val", "test")


@dataclass
class ImageSet:
    """Images as one uint8 (N, C, H, W) tensor, with optional labels, class names and a split per image."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor | None = None  # (N,) int64, or None for an unlabelled set
    class_names: list[str] = field(default_factory=list)
    split_ids: torch.Tensor | None = None  # (N,) int8 index into SPLITS; None means all 'train'
    source: str = ""  # where the images came from, for `data info` and reports

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise VaelabError(
                f"ImageSet needs a uint8 tensor of shape (N, C, H, W), got {tuple(self.images.shape)} {self.images.dtype}"
            )
        n = self.images.shape[0]
        if self.labels is not None:
            if self.labels.shape != (n,):
                raise VaelabError(
                    f"{self.source or 'data'}: {n} images but {tuple(self.labels.shape)[0] if self.labels.ndim else 1} labels",
                    "give one label per image",
                )
            self.labels = self.labels.long()
        if self.split_ids is None:
            self.split_ids = torch.zeros(n, dtype=torch.int8)

    # -- shape -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        """Height (== width for the square sets vaelab builds)."""
        return int(self.images.shape[2])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

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
        """The images of one split ('train', 'val' or 'test')."""
        if name not in SPLITS:
            raise VaelabError(f"unknown split '{name}'", f"use one of: {', '.join(SPLITS)}")
        idx = torch.nonzero(self.split_ids == SPLITS.index(name)).flatten()
        if len(idx) == 0:
            have = [s for s in SPLITS if self.has_split(s)]
            raise VaelabError(f"{self.source or 'the data'} has no '{name}' split", f"it has: {', '.join(have) or 'nothing'}")
        return self.subset(idx)

    def subset(self, index) -> ImageSet:
        index = torch.as_tensor(index, dtype=torch.long)
        return replace(
            self,
            images=self.images[index],
            labels=None if self.labels is None else self.labels[index],
            split_ids=self.split_ids[index],
        )

    def split_counts(self) -> dict[str, int]:
        return {s: int((self.split_ids == i).sum()) for i, s in enumerate(SPLITS) if (self.split_ids == i).any()}

    def class_counts(self) -> list[int]:
        if self.labels is None:
            return []
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    # -- conversion --------------------------------------------------------------------------------------
    def to(self, device) -> ImageSet:
        return replace(
            self,
            images=self.images.to(device),
            labels=None if self.labels is None else self.labels.to(device),
            split_ids=self.split_ids.to(device),
        )

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
        return f"ImageSet({len(self)} images {c}x{h}x{w}{classes}: {counts}{src})"

    def _repr_html_(self) -> str:
        import html

        rows = [("images", f"{len(self)} x {self.channels} x {self.image_size} x {self.images.shape[3]} uint8")]
        rows += [("splits", ", ".join(f"{k} {v}" for k, v in self.split_counts().items()))]
        if self.labelled:
            names = ", ".join(self.class_names[:12]) + (" ..." if self.num_classes > 12 else "")
            rows.append(("classes", f"{self.num_classes}: {names}"))
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
    return ImageSet(
        images=torch.cat([p.images for p in parts]),
        labels=torch.cat(labels) if labelled else None,
        class_names=names if labelled else [],
        split_ids=torch.cat([p.split_ids for p in parts]),
        source=source or " + ".join(p.source for p in parts),
    )
