"""shards: sources (issue 26): pack a folder into WebDataset tar shards, stream them per rank, train."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("webdataset")

from conftest import cli, tiny_config  # noqa: E402
from vaelab.data import load  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))


def _photos(root, per_class: dict[str, int], size=(20, 16), seed=0):
    rng = np.random.default_rng(seed)
    for sub, n in per_class.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(root / sub / f"{i:03d}.png")
    return root


@pytest.fixture
def packed(tmp_path):
    """train: 2 classes x 16, val: 2 x 4 images; packed in shards of 8 (4 train shards, 1 val shard)."""
    root = _photos(tmp_path / "photos", {"train/a": 16, "train/b": 16, "val/a": 4, "val/b": 4})
    out = tmp_path / "shards"
    assert cli("data", "pack", f"folder:{root}", str(out), "--shard-size", "8", "--image-size", "8") == 0
    return root, out


def test_pack_writes_shards_and_index_that_round_trip(packed):
    root, out = packed
    index = json.loads((out / "shards.json").read_text())
    assert [s["count"] for s in index["splits"]["train"]] == [8, 8, 8, 8] and index["class_names"] == ["a", "b"]
    assert sorted(p.name for p in out.glob("*.tar")) == [f"train-00000{i}.tar" for i in range(4)] + ["val-000000.tar"]
    ds = load(f"shards:{out}")
    assert ds.streaming and ds.shape == (3, 8, 8) and ds.split_counts() == {"train": 32, "val": 8}
    folder = load(f"folder:{root}", image_size=8)
    val = ds.split("val")  # decoded once into the memory-mapped cache
    assert val.mapped and torch.equal(val.images, folder.split("val").images)  # PNG: lossless
    assert torch.equal(val.labels, folder.split("val").labels)
    assert cli("data", "pack", f"folder:{root}", str(out)) == 2  # never over existing shards


def test_every_image_once_per_epoch_across_ranks(packed):
    _, out = packed
    ds = load(f"shards:{out}")
    orders = []
    for epoch in range(2):
        keys = []
        for rank in range(2):
            mine = [k for _, _, ks in ds.batches("train", 5, rank=rank, world=2, epoch=epoch, keys=True) for k in ks]
            assert len(mine) == 16  # equal steps on every rank
            keys += mine
        assert sorted(keys) == sorted(set(keys)) and len(set(keys)) == 32  # all 32, none twice
        orders.append(keys)
    assert orders[0] != orders[1]  # reshuffled per epoch
    x, y = next(ds.batches("train", 4))
    assert x.dtype == torch.uint8 and x.shape == (4, 3, 8, 8) and y.tolist()[0] in (0, 1)


def test_train_and_evaluate_from_shards(packed, tmp_path):
    from vaelab.evaluate import evaluate_run
    from vaelab.train import fit

    _, out = packed
    cfg = tiny_config(tmp_path, f"data.source=shards:{out}", "data.classes=null", "data.limit=null", "train.epochs=1", "train.batch_size=8")
    res = fit(cfg, quiet=True)
    rows = [json.loads(r) for r in (tmp_path / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert res["epochs"] == 1 and rows[-1]["samples_per_rank"] == 32 and np.isfinite(rows[-1]["val/loss"])
    ev = evaluate_run(res["run_dir"], split="val", nll_samples=2, fid=False)
    assert ev["n_images"] == 8


@pytest.mark.slow
def test_ddp_two_processes_train_two_epochs_from_shards(packed, tmp_path):
    from vaelab.train import fit

    _, out = packed
    cfg = tiny_config(
        tmp_path, f"data.source=shards:{out}", "data.classes=null", "data.limit=null", "train.epochs=2",
        "train.batch_size=4", "trainer.devices=2", "trainer.accelerator=cpu", "trainer.threads=1",
    )
    res = fit(cfg, quiet=True)
    rows = [json.loads(r) for r in (tmp_path / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert res["world_size"] == 2 and [r["epoch"] for r in rows] == [1, 2]
    assert all(r["samples_per_rank"] * 2 == 32 for r in rows)  # each rank its half: every image once
    assert all(r["step"] == 4 * r["epoch"] for r in rows)  # 16 images per rank / batch 4
