"""`load(spec)`: pick the reader of a spec, then apply the options every source shares.

A spec is a dataset name (``mnist``, ``fashion-mnist``, ``kmnist``, ``emnist-letters``, ``mnist-sample``) or
``kind:PATH`` (``idx:DIR``, ``npz:FILE``, ``npy:FILE``, ``folder:DIR``). Readers return the images at their
native size; the shared steps (class filter, validation split, limit, then channels and resize) live here once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import VaelabError
from .imageset import SPLITS, ImageSet, concat
from .transform import resize_images, to_channels


def parse_spec(spec: str) -> tuple[str, str]:
    """``'npz:a/b.npz'`` -> ``('npz', 'a/b.npz')``; ``'mnist'`` -> ``('mnist', '')``."""
    spec = str(spec).strip()
    if not spec:
        raise VaelabError("empty data spec", "give a dataset name (mnist) or kind:PATH (folder:photos/)")
    kind, sep, arg = spec.partition(":")
    if not sep:
        return spec.lower(), ""
    if len(kind) == 1 and kind.isalpha():  # a Windows drive letter, not a kind
        return "path", expand_path(spec)
    return kind.lower(), expand_path(arg)


def expand_path(path: str) -> str:
    """``~`` and ``$VAR`` / ``${VAR}`` in a spec's path, so configs can say ``folder:${VAELAB_DATA}/photos``."""
    out = os.path.expandvars(os.path.expanduser(path))
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", out)
    if unset:
        raise VaelabError(f"data spec path '{path}' uses ${unset[0]}, which is not set", f"export {unset[0]}=... first")
    return out


def _readers() -> dict[str, Callable[..., ImageSet]]:
    from . import sources

    return sources.READERS


def _looks_like_path(spec: str) -> bool:
    """A spec meant as a file or folder (so a typo gets 'does not exist', not 'unknown dataset')."""
    return any(ch in spec for ch in "/\\") or spec.startswith(("~", ".")) or bool(Path(spec).suffix)


def _read(spec: str, **opts) -> ImageSet:
    kind, arg = parse_spec(spec)
    readers = _readers()
    if kind in readers:
        return readers[kind](arg, spec=spec, **opts)
    from . import sources

    named = sources.named_reader(kind)
    if named is not None:
        return named(spec=spec, **opts)
    if Path(spec).expanduser().exists() or _looks_like_path(spec):  # a bare path: guess the kind
        return sources.read_path(spec, spec=spec, **opts)
    import difflib

    names = sources.named_names()
    close = difflib.get_close_matches(kind, names + [f"{k}:" for k in readers], n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(names)}, or kind:PATH ({', '.join(readers)})"
    raise VaelabError(f"unknown data spec '{spec}'", hint)


def _check_options(image_size, channels, val_fraction, limit) -> None:
    """Reject impossible option values up front, with the option named (not a tensor error later)."""
    from ..config import BOUNDS, MAX_IMAGE_SIZE

    low = int(BOUNDS["data.image_size"][0])  # the same limits as training's data.image_size
    if image_size is not None and (not isinstance(image_size, int) or not low <= image_size <= MAX_IMAGE_SIZE):
        raise VaelabError(
            f"image_size is {image_size!r}, it must be from {low} to {MAX_IMAGE_SIZE}",
            "give a size the models take, e.g. 28 or 64",
        )
    if channels is not None and channels not in (1, 3):
        raise VaelabError(f"channels is {channels!r}", "use 1 (gray) or 3 (RGB)")
    if not 0 <= val_fraction < 1:
        raise VaelabError(f"val_fraction is {val_fraction}", "give a share in [0, 1), e.g. 0.1")
    if limit is not None and limit < 1:
        raise VaelabError(f"limit is {limit}", "give a positive number of images per split")


def load(
    spec: str,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    classes: list | None = None,
    val_fraction: float = 0.1,
    limit: int | None = None,
    seed: int = 0,
    images_key: str | None = None,
    labels_key: str | None = None,
    split: str | None = None,
    factors: list[str] | None = None,
) -> ImageSet:
    """Load a data spec into an `ImageSet` (uint8 N x C x H x W), with the shared options applied.

    ``split`` forces every image of the spec into that split (used for separate val/test files). The
    selection steps (classes, validation split, limit) run before the pixel steps (channels, resize), so
    a limited run converts only the images it keeps.
    """
    _check_options(image_size, channels, val_fraction, limit)
    if factors and parse_spec(spec)[0] != "dsprites":
        raise VaelabError(f"factors={factors} picks the varying factors of dsprites, not of {spec}", "drop data.factors (an npz's own 'factors' array is read by itself)")
    if split is not None and split not in SPLITS:
        raise VaelabError(f"unknown split '{split}'", f"use one of: {', '.join(SPLITS)}")
    ds = _read(
        spec,
        image_size=image_size,
        channels=channels,
        images_key=images_key,
        labels_key=labels_key,
        factors=factors,  # dsprites: the factors that vary
        limit=limit,  # dsprites: render only about twice the limit
        classes=classes,  # dsprites: ... of the kept shapes (select_classes below still relabels)
        seed=seed,
    )
    if getattr(ds, "streaming", False):  # shards: streamed as packed; selection is done when packing
        used = [k for k, v in (("classes", classes), ("limit", limit), ("split", split)) if v]
        if used:
            raise VaelabError(f"{spec}: {', '.join(used)} cannot be applied to streamed shards", "apply it when packing: vaelab data pack ... then train on the new shards")
        return ds
    if len(ds) == 0:
        raise VaelabError(f"{spec} holds no images", "point it at a source with images")
    if classes:
        ds = select_classes(ds, classes)
    if split is not None:
        ds.split_ids = torch.full((len(ds),), SPLITS.index(split), dtype=torch.int8)
    elif not ds.has_split("val") and val_fraction > 0:
        ds = split_validation(ds, val_fraction, seed)
    if limit is not None:
        ds = limit_per_split(ds, limit, seed)
    return conform(ds, image_size, channels)


def conform(ds: ImageSet, image_size: int | None, channels: int | None) -> ImageSet:
    """Bring images to `channels` and square `image_size`, converting on the fewer pixels first."""
    want_c = channels if channels is not None else ds.channels
    resize = image_size is not None and tuple(ds.shape[1:]) != (image_size, image_size)
    if want_c == ds.channels and not resize:
        return ds  # nothing to convert: a memory-mapped set stays mapped
    if resize:
        from .budget import check_memory

        check_memory(
            len(ds) * max(want_c, ds.channels) * image_size**2,
            f"{len(ds)} images of {image_size} x {image_size} px ({ds.source})",
            "use a smaller image_size or data.limit",
        )
    images = ds.images
    if want_c < images.shape[1]:
        images = to_channels(images, want_c)
    if resize:
        images = resize_images(images, image_size)
    if want_c > images.shape[1]:
        images = to_channels(images, want_c)
    if images is ds.images:
        return ds
    # the converted images are the set's own, in order: a new in-RAM storage with no row selection
    # (a limited or class-filtered set is a selection of rows of its source's storage) and no map
    return ds.replace(images=images, rows=None, map_path=None)  # keeps labels, splits and factors


def from_config(cfg) -> ImageSet:
    """The data of a `DataConfig`: the main source, plus separate val/test specs when given."""
    common = dict(
        image_size=cfg.image_size,
        channels=cfg.channels,
        classes=cfg.classes,
        limit=cfg.limit,
        seed=cfg.seed,
        images_key=cfg.images_key,
        labels_key=cfg.labels_key,
        factors=getattr(cfg, "factors", None),
    )
    main = load(cfg.source, val_fraction=0.0 if cfg.val else cfg.val_fraction, **common)
    if getattr(main, "streaming", False):
        if cfg.val or cfg.test:
            raise VaelabError("data.val / data.test cannot be combined with a shards: source", "pack every split into the shards")
        return main
    parts = [main]
    for split, spec in (("val", cfg.val), ("test", cfg.test)):
        if spec is None:
            continue
        # a separate file replaces that split of the main source; it is brought to the main images' shape
        parts[0] = parts[0].subset(torch.nonzero(parts[0].split_ids != SPLITS.index(split)).flatten())
        shape = {"image_size": main.image_size, "channels": main.channels}
        parts.append(load(spec, split=split, **{**common, **shape}))
    return concat(parts, source=cfg.source) if len(parts) > 1 else main


def select_classes(ds: ImageSet, classes: list) -> ImageSet:
    """Keep the named classes (names or label indices), relabelled 0..k-1 in the order given."""
    if ds.labels is None:
        raise VaelabError(f"{ds.source} has no labels, so classes={classes} cannot be kept", "drop the classes option")
    wanted: list[int] = []
    for c in classes:
        c = str(c).strip()
        if c in ds.class_names:
            index = ds.class_names.index(c)
        elif c.isdigit() and int(c) < ds.num_classes:
            index = int(c)
        else:
            raise VaelabError(
                f"class '{c}' does not exist in {ds.source}",
                f"its classes are: {', '.join(ds.class_names[:30])}{' ...' if ds.num_classes > 30 else ''}",
            )
        if index not in wanted:  # '1,1' or a name and its index: keep the class once
            wanted.append(index)
    remap = torch.full((ds.num_classes,), -1, dtype=torch.long)
    for new, old in enumerate(wanted):
        remap[old] = new
    idx = torch.nonzero(remap[ds.labels] >= 0).flatten()
    sub = ds.subset(idx)
    return sub.replace(labels=remap[sub.labels], class_names=[ds.class_names[i] for i in wanted])


def split_validation(ds: ImageSet, fraction: float, seed: int) -> ImageSet:
    """Move a deterministic, stratified `fraction` of 'train' into 'val'."""
    train_id, val_id = SPLITS.index("train"), SPLITS.index("val")
    train_idx = torch.nonzero(ds.split_ids == train_id).flatten().numpy()
    if len(train_idx) < 2:
        return ds
    rng = np.random.default_rng(seed)
    if ds.labels is not None:
        groups = [train_idx[ds.labels.numpy()[train_idx] == c] for c in range(max(ds.num_classes, 1))]
    else:
        groups = [train_idx]
    chosen = []
    for g in groups:
        if len(g) < 2:
            continue
        k = max(1, int(round(len(g) * fraction)))
        chosen.append(rng.permutation(g)[:k])
    split_ids = ds.split_ids.clone()
    if chosen:
        split_ids[torch.as_tensor(np.concatenate(chosen), dtype=torch.long)] = val_id
    return ds.replace(split_ids=split_ids)


def limit_per_split(ds: ImageSet, limit: int, seed: int) -> ImageSet:
    """At most `limit` images per split, a seeded subsample (stratified by chance, order kept)."""
    rng = np.random.default_rng(seed + 1)
    keep = []
    for i in range(len(SPLITS)):
        idx = torch.nonzero(ds.split_ids == i).flatten().numpy()
        if len(idx) > limit:
            idx = np.sort(rng.choice(idx, size=limit, replace=False))
        keep.append(idx)
    return ds.subset(np.concatenate(keep))
