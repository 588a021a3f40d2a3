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
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor | None = None  # (N,) int64, or None for an unlabelled set
    class_names: list[str] = field(default_factory=list)
    split_ids: torch.Tensor | None = None  # (N,) int8 index into SPLITS; None means all 'train'
    source: str = ""  # where the images came from, for `data info` and reports
    # ground-truth factors of variation (dsprites, or an npz with a `factors` array): (N, F) int64 indices
    # into factor_values[f]; None when the source has none. The disentanglement metrics read them.
    factors: torch.Tensor | None = None
    factor_names: list[str] = field(default_factory=list)
    factor_values: list[list[float]] = field(default_factory=list)

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
        if self.factors is not None:
            if self.factors.ndim != 2 or self.factors.shape[0] != n:
                raise VaelabError(
                    f"{self.source or 'data'}: {n} images but factors of shape {tuple(self.factors.shape)}",
                    "give one row of factors per image, (N, F)",
                )
            self.factors = self.factors.long()
            if not self.factor_names:
                self.factor_names = [f"factor_{i}" for i in range(self.factors.shape[1])]
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
        return replace(
            self,
            images=self.images.to(device),
            labels=None if self.labels is None else self.labels.to(device),
            split_ids=self.split_ids.to(device),
        )

    def numpy_images(self) -> np.ndarray:
        """(N, H, W, C) uint8, the layout of PIL and matplotlib."""
        return self.images.permute(0, 2, 3, 1).cpu().numpy()


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
        # factors survive a join only when every part has the same ones
        factors=torch.cat([p.factors for p in parts]) if all(p.factors is not None and p.factor_names == first.factor_names for p in parts) else None,
        factor_names=list(first.factor_names) if all(p.factors is not None and p.factor_names == first.factor_names for p in parts) else [],
        factor_values=list(first.factor_values) if all(p.factors is not None and p.factor_names == first.factor_names for p in parts) else [],
    )
