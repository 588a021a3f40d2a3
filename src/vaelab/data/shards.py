"""``shards:LOCATION``: a data set kept as tar shards in the WebDataset layout, streamed while training.

Each shard is a tar file of samples ``{key}.png`` (or ``.jpg``) + ``{key}.cls`` (the class index as text);
``shards.json`` beside them lists the shards of each split with their image counts, the class names and
the image shape. `vaelab data pack SPEC OUT --shard-size N` writes such a folder from any data spec.
LOCATION is a local folder or any URL the ``webdataset`` library opens (``https://...``,
``pipe:aws s3 cp s3://bucket/ds/{} -``-style commands), so several GPU nodes can read from object storage.

Training streams the train split: each DDP rank reads its own shards (rank r of w takes shards r, r+w, ...)
and each data-loader worker its own part of those, with a seeded shuffle of the shard order and a shuffle
buffer of samples per epoch; every rank takes the same number of batches (the smallest rank's share), so
with shards of equal size, a shard count divisible by the ranks, every image is seen once per epoch.
Uses that need images by index (validation, evaluation, plots, classification) get the split decoded once
into the memory-mapped cache that folders use (`ShardSet.split`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import VaelabError
from .imageset import SPLITS, ImageSet
from .paths import cache_dir

INDEX = "shards.json"
FORMAT = "vaelab-shards-1"
IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")


def _wds():
    try:
        import webdataset
    except ImportError:
        raise VaelabError("shards: sources need the webdataset package", "pip install 'vaelab[shards]'") from None
    return webdataset


def _join(location: str, name: str) -> str:
    return os.path.join(location, name) if "://" not in location and not location.startswith("pipe:") else f"{location.rstrip('/')}/{name}"


def _read_index(location: str) -> dict:
    if "://" not in location and not location.startswith("pipe:"):
        path = Path(location).expanduser()
        if not (path / INDEX).is_file():
            what = "does not exist" if not path.exists() else f"has no {INDEX}"
            raise VaelabError(f"shards:{location} {what}", "give the folder written by 'vaelab data pack'")
        return json.loads((path / INDEX).read_text("utf-8"))
    try:
        with _wds().gopen(_join(location, INDEX)) as f:
            return json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as e:
        raise VaelabError(f"cannot read {_join(location, INDEX)}: {e}", "check the URL and that shards.json is there") from None


class ShardSet:
    """The shards of a data set: shape, classes and splits from its index; images streamed by `batches`.

    Duck-types the parts of `ImageSet` that describe a set (shape, classes, split counts); `split(name)`
    decodes a split into a memory-mapped `ImageSet` for the uses that need images by index.
    """

    streaming = True
    mapped = False

    def __init__(self, location: str, index: dict, image_size: int | None = None, channels: int | None = None):
        if index.get("format") != FORMAT:
            raise VaelabError(f"shards:{location}: {INDEX} is not a vaelab shard index", "write it with 'vaelab data pack'")
        self.location = location
        self.index = index
        c, h, _ = index["shape"]
        self._shape = (channels or c, image_size or h, image_size or h)
        self.class_names = list(index.get("class_names", []))
        self.labelled = bool(index.get("labelled", bool(self.class_names)))
        self.source = f"shards:{location}"
        self.only: str | None = None  # a split view (see `split_view`)

    # -- what describes the set, as ImageSet has it -------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    @property
    def channels(self) -> int:
        return self._shape[0]

    @property
    def image_size(self) -> int:
        return self._shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def shards(self, split: str) -> list[dict]:
        return list(self.index["splits"].get(split, []))

    def split_counts(self) -> dict[str, int]:
        splits = [self.only] if self.only else SPLITS
        return {s: sum(x["count"] for x in self.shards(s)) for s in splits if self.shards(s)}

    def has_split(self, name: str) -> bool:
        return name in self.split_counts()

    def __len__(self) -> int:
        return sum(self.split_counts().values())

    def __repr__(self) -> str:
        return f"ShardSet({self.source}, {self.split_counts()}, shape {self.shape})"

    # -- streaming ---------------------------------------------------------------------------------------
    def split_view(self, name: str) -> ShardSet:
        """This set restricted to one split, still streamed (what the training loop reads)."""
        if not self.has_split(name):
            raise VaelabError(f"{self.source} has no '{name}' split", f"it has: {', '.join(self.split_counts())}")
        view = ShardSet(self.location, self.index, self.image_size, self.channels)
        view.only = name
        return view

    def rank_shards(self, split: str, rank: int, world: int, seed: int = 0, epoch: int = 0) -> list[dict]:
        """Rank `rank`'s shards of a split for one epoch: a seeded shuffle of the shards, every world-th."""
        shards = self.shards(split)
        order = list(range(len(shards)))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        return [shards[i] for i in order[rank::world]]

    def images_per_rank(self, split: str, world: int) -> int:
        """The images every rank takes per epoch: the smallest share over ranks and shard orders (equal
        steps on every rank keep DDP in step; with equal shards divisible by the ranks, all of them)."""
        counts = sorted((s["count"] for s in self.shards(split)), reverse=True)
        if world <= 1:
            return sum(counts)
        # the worst deal: the ranks that get fewer shards, and the smallest ones
        per_rank = len(counts) // world
        return sum(sorted(counts)[:per_rank]) if per_rank else 0

    def batches(
        self, split: str, batch_size: int, *, rank: int = 0, world: int = 1, seed: int = 0, epoch: int = 0,
        workers: int = 0, shuffle_buffer: int = 1000, skip: int = 0, keys: bool = False,
    ) -> Iterator[tuple]:
        """(uint8 images (B, C, H, W), labels (B,) or None[, keys]) of this rank's shards, for one epoch.

        Yields ceil(images_per_rank / batch_size) batches; `skip` batches are read and dropped (a resume
        in the middle of an epoch). Each data-loader worker reads its own shards of this rank's.
        """
        wds = _wds()
        mine = self.rank_shards(split, rank, world, seed, epoch)
        total = self.images_per_rank(split, world)
        if total <= 0:
            raise VaelabError(
                f"{self.source}: the '{split}' split has {len(self.shards(split))} shards for {world} ranks",
                "pack it with a smaller --shard-size, so every rank gets at least one shard",
            )
        urls = [_join(self.location, s["url"]) for s in mine]
        size, channels = self.image_size, self.channels
        pipeline = wds.WebDataset(
            urls, shardshuffle=False, nodesplitter=lambda u: u, empty_check=False, handler=wds.reraise_exception
        )
        if shuffle_buffer > 1:
            pipeline = pipeline.shuffle(shuffle_buffer, rng=random.Random(seed * 7919 + epoch * 31 + rank))
        pipeline = pipeline.map(lambda s: _decode_sample(s, size, channels))
        loader = torch.utils.data.DataLoader(
            pipeline, batch_size=batch_size, num_workers=workers, collate_fn=_collate,
            persistent_workers=False, multiprocessing_context="fork" if workers else None,
        )
        n_batches = -(-total // batch_size)
        seen = 0
        for b, (x, y, k) in enumerate(loader):
            if b >= n_batches:
                break
            take = min(len(x), total - seen)
            seen += take
            if b < skip:
                continue
            x, y, k = x[:take], y[:take], k[:take]
            labels = y if self.labelled else None
            yield (x, labels, k) if keys else (x, labels)
            if seen >= total:
                break

    # -- random access: a split decoded into the memory-mapped cache -------------------------------------
    def split(self, name: str) -> ImageSet:
        """The images of one split as an `ImageSet`, decoded once into a memory-mapped cache file."""
        if not self.has_split(name):
            raise VaelabError(f"{self.source} has no '{name}' split", f"it has: {', '.join(self.split_counts()) or 'nothing'}")
        shards = self.shards(name)
        key = hashlib.sha256(json.dumps([self.location, shards, self.shape, name]).encode()).hexdigest()[:40]
        final = cache_dir() / "shards" / key
        n = sum(s["count"] for s in shards)
        shape = (n, *self.shape)
        meta = final / "meta.json"
        if meta.is_file() and (final / "images.u8").is_file() and (final / "images.u8").stat().st_size == int(np.prod(shape)):
            m = json.loads(meta.read_text("utf-8"))
            labels = torch.tensor(m["labels"]) if self.labelled else None
            split_ids = torch.full((n,), SPLITS.index(name), dtype=torch.int8)
            return ImageSet.from_map(final / "images.u8", shape, labels, self.class_names, split_ids, f"{self.source} ({name})")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        try:
            out = np.memmap(tmp / "images.u8", dtype=np.uint8, mode="w+", shape=shape)
            labels: list[int] = []
            i = 0
            for x, y in self.batches(name, 256, shuffle_buffer=0):
                out[i : i + len(x)] = x.numpy()
                labels.extend(y.tolist() if y is not None else [0] * len(x))
                i += len(x)
            if i != n:
                raise VaelabError(f"{self.source}: the '{name}' shards hold {i} images, {INDEX} says {n}", "pack the data again")
            out.flush()
            del out
            (tmp / "meta.json").write_text(json.dumps({"labels": labels}), "utf-8")
            try:
                os.rename(tmp, final)
            except OSError:  # another process got there first
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.split(name)


def _decode_sample(sample: dict, size: int, channels: int):
    from .folder import decode_image

    key = next((k for k in IMAGE_KEYS if k in sample), None)
    if key is None:
        raise VaelabError(f"shard sample {sample.get('__key__')} has no image ({', '.join(IMAGE_KEYS)})", "pack the data with 'vaelab data pack'")
    image = decode_image(io.BytesIO(sample[key]), size, channels)
    label = int(sample["cls"]) if "cls" in sample else -1
    return torch.from_numpy(image), label, str(sample.get("__key__", ""))


def _collate(items):
    x = torch.stack([it[0] for it in items])
    y = torch.tensor([it[1] for it in items], dtype=torch.long)
    return x, y, [it[2] for it in items]


def read_shards(arg: str, spec: str = "", image_size: int | None = None, channels: int | None = None, **_) -> ShardSet:
    """``shards:LOCATION`` (see the module doc)."""
    if not arg:
        raise VaelabError(f"{spec or 'shards:'} names no location", "give the folder or URL of shards.json: shards:out/")
    index = _read_index(arg)
    return ShardSet(arg, index, image_size, channels)


# ---------------------------------------------------------------------------------------------------------
# writing


def pack(ds: ImageSet, out: str | Path, shard_size: int = 1000, fmt: str = "png", progress=None) -> dict:
    """Write `ds` as WebDataset shards, split by split (``{split}-{i:06d}.tar``), and ``shards.json``.

    Images are stored as PNG (lossless: the pixels train exactly as from the folder cache) or JPEG
    (``fmt='jpg'``, quality 95, smaller). Returns the index. Shard files are written under temporary names
    and renamed, and the index last, so a reader never sees a half-written set.
    """
    from PIL import Image

    wds = _wds()
    if shard_size < 1:
        raise VaelabError(f"--shard-size is {shard_size}", "give the number of images per shard, e.g. 1000")
    if fmt not in ("png", "jpg"):
        raise VaelabError(f"format {fmt!r}", "use png or jpg")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / INDEX).exists():
        raise VaelabError(f"{out} already holds shards ({INDEX})", "choose an empty folder, or delete the old shards first")
    index = {
        "format": FORMAT,
        "shape": list(ds.shape),
        "class_names": list(ds.class_names),
        "labelled": ds.labelled,
        "source": ds.source,
        "image_format": fmt,
        "splits": {},
    }
    done, total = 0, len(ds)
    for split in SPLITS:
        if not ds.has_split(split):
            continue
        part = ds.split(split)
        shards = []
        for s in range(0, len(part), shard_size):
            name = f"{split}-{len(shards):06d}.tar"
            tmp = out / f".{name}.tmp"
            count = min(shard_size, len(part) - s)
            with wds.TarWriter(str(tmp)) as sink:
                for j, x in enumerate(_rows(part, s, s + count)):
                    a = x.permute(1, 2, 0).numpy()
                    im = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)
                    buf = io.BytesIO()
                    im.save(buf, format="PNG" if fmt == "png" else "JPEG", **({} if fmt == "png" else {"quality": 95}))
                    sample = {"__key__": f"{split}-{s + j:08d}", fmt: buf.getvalue()}
                    if part.labels is not None:
                        sample["cls"] = str(int(part.labels[s + j])).encode()
                    sink.write(sample)
            os.replace(tmp, out / name)
            shards.append({"url": name, "count": count})
            done += count
            if progress is not None:
                progress(done, total)
        index["splits"][split] = shards
    tmp = out / f".{INDEX}.tmp"
    tmp.write_text(json.dumps(index, indent=1), "utf-8")
    os.replace(tmp, out / INDEX)
    return index


def _rows(part: ImageSet, start: int, stop: int) -> Iterator[torch.Tensor]:
    """The images start..stop of a set one by one, gathered in chunks (a mapped set stays on disk)."""
    for s in range(start, stop, 256):
        yield from part.pixels[s : min(stop, s + 256)]
