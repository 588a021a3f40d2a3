"""The memory-mapped folder cache (issue 26): same images as an in-RAM decode, atomic, reused, and
training, evaluation, summaries and figures that read batches by index from it."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from vaelab.data import load
from vaelab.data.imageset import ImageSet
from vaelab.data.info import pixel_stats, summarize


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))


def photo_folder(root, per_class: int = 12, classes=("cat", "dog"), size=(40, 30), seed: int = 0):
    """A folder of random RGB JPEGs in class subfolders (distinct images, so order mistakes show)."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(a).save(root / c / f"{i:03d}.jpg", quality=90)
    return root


def _cache_dirs(tmp_path):
    return sorted(p for p in (tmp_path / "cache" / "folders").iterdir())


def test_mapped_set_matches_in_ram_decode(tmp_path, monkeypatch):
    root = photo_folder(tmp_path / "photos")
    mapped = load(f"folder:{root}", image_size=16)
    assert mapped.mapped and "cached in" in mapped.source
    monkeypatch.setenv("VAELAB_NO_CACHE", "1")
    ram = load(f"folder:{root}", image_size=16)
    assert not ram.mapped
    assert torch.equal(mapped.images, ram.images) and torch.equal(mapped.labels, ram.labels)
    assert torch.equal(mapped.split_ids, ram.split_ids) and mapped.class_names == ram.class_names == ["cat", "dog"]
    for split in ("train", "val"):  # splits are index views of the one map, and gather the same pixels
        a, b = mapped.split(split), ram.split(split)
        assert a.mapped and a.storage.data_ptr() == mapped.storage.data_ptr()
        assert torch.equal(a.images, b.images)
        idx = torch.tensor([len(a) - 1, 0])
        assert torch.equal(a.gather(idx), b.images[idx])
    assert summarize(mapped)["pixel_mean"] == summarize(ram)["pixel_mean"]


def test_cache_written_atomically_with_index_and_reused(tmp_path, monkeypatch):
    root = photo_folder(tmp_path / "photos", per_class=5)
    first = load(f"folder:{root}", image_size=8, val_fraction=0)
    (cache,) = _cache_dirs(tmp_path)
    assert not cache.name.startswith(".")  # no temporary folder left behind
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["shape"] == [10, 3, 8, 8] and meta["class_names"] == ["cat", "dog"]
    assert meta["files"][:2] == ["cat/000.jpg", "cat/001.jpg"] and len(meta["files"]) == 10
    assert (cache / "images.u8").stat().st_size == 10 * 3 * 8 * 8
    monkeypatch.setattr(Image, "open", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded again")))
    again = load(f"folder:{root}", image_size=8, val_fraction=0)
    assert again.mapped and "read from cache" in again.source and torch.equal(first.images, again.images)


def test_leftover_temporary_folder_is_ignored(tmp_path):
    root = photo_folder(tmp_path / "photos", per_class=3)
    load(f"folder:{root}", image_size=8)
    (cache,) = _cache_dirs(tmp_path)
    # a crash mid-build leaves a '.KEY.*.tmp' folder and never a half cache under the final name
    (cache.parent / f".{cache.name}.x.tmp").mkdir()
    (cache / "meta.json").unlink()  # a damaged final folder is rebuilt, not trusted
    ds = load(f"folder:{root}", image_size=8)
    assert "decoded" in ds.source and (cache / "meta.json").is_file()


def test_process_decode_writes_rows_and_skips_bad_files(tmp_path, monkeypatch):
    from vaelab.data import folder

    monkeypatch.setattr(folder, "_PROCESS_MIN", 8)  # the worker-process path on a small folder
    root = photo_folder(tmp_path / "photos", per_class=10)
    (root / "cat" / "005.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.warns(UserWarning, match="005.jpg"):
        ds = load(f"folder:{root}", image_size=8, val_fraction=0)
    assert len(ds) == 19 and ds.class_counts() == [9, 10]
    ref = folder.decode_image(root / "cat" / "006.jpg", 8, 3)
    assert np.array_equal(ds.images[5].numpy(), ref)  # rows after the bad file moved up by one
    (cache,) = _cache_dirs(tmp_path)
    assert (cache / "images.u8").stat().st_size == 19 * 3 * 8 * 8


def test_mapped_set_pickles_as_its_file(tmp_path):
    root = photo_folder(tmp_path / "photos", per_class=20, size=(64, 64))
    ds = load(f"folder:{root}", image_size=32).split("train")
    blob = pickle.dumps(ds)
    assert len(blob) < ds.images.nbytes / 4  # the pixels are not in the pickle: workers reopen the map
    back = pickle.loads(blob)
    assert back.mapped and torch.equal(back.images, ds.images) and torch.equal(back.labels, ds.labels)


def test_chunked_summary_is_exact_and_bounded():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (37, 3, 9, 9), dtype=torch.uint8, generator=g)
    ds = ImageSet(x)
    mean, std = pixel_stats(ds, chunk=5)  # chunks that do not divide the set
    f = x.double() / 255
    assert mean == pytest.approx(float(f.mean()), abs=1e-12) and std == pytest.approx(float(f.std(unbiased=False)), abs=1e-12)
    assert sum(len(c) for c in ds.chunks(5)) == 37 and max(len(c) for c in ds.chunks(5)) == 5


def test_subset_of_subset_and_in_ram_views_share_storage():
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    ds = ImageSet(x, torch.arange(10) % 2, ["a", "b"])
    sub = ds.subset([9, 7, 5, 3]).subset(torch.tensor([1, 3]))
    assert sub.storage.data_ptr() == x.data_ptr() and sub.labels.tolist() == [1, 1]
    assert sub.images[:, 0, 0, 0].tolist() == [7, 3] and sub.pixels[1:][:, 0, 0, 0].tolist() == [3]


def test_train_evaluate_and_figures_from_the_map(tmp_path):
    from vaelab.evaluate import evaluate_run
    from vaelab.latent import encode
    from vaelab.run import load_run
    from vaelab.train import fit
    from vaelab.visualize.eda import eda_figures

    root = photo_folder(tmp_path / "photos", per_class=16, size=(24, 24))
    cfg = tiny_config(
        tmp_path, f"data.source=folder:{root}", "data.image_size=8", "data.classes=null", "data.limit=null",
        "train.epochs=1", "train.batch_size=8",
    )
    out = fit(cfg, quiet=True)
    assert out["epochs"] == 1 and np.isfinite(out["last"]["train/loss"]) and np.isfinite(out["last"]["val/loss"])
    ds = load(f"folder:{root}", image_size=8)
    assert ds.mapped
    figs = eda_figures(ds)
    assert set(figs) == {"eda_classes", "eda_pixels", "eda_means", "eda_examples"}
    run = load_run(out["run_dir"])
    part = run.data().split("val")
    assert part.mapped  # the run reads its data back from the map too
    res = evaluate_run(run, split="val", nll_samples=2, fid=False)
    assert res["n_images"] == len(part) and np.isfinite(res["nll"]["nll"])
    lat = encode(run, part)
    assert lat.z.shape == (len(part), run.model.latent_dim)


def test_binarized_nll_on_request_shares_the_grey_pass(tiny_run):
    from vaelab.evaluate import evaluate_run

    plain = evaluate_run(tiny_run, split="val", nll_samples=6, fid=False, batch_size=64)
    assert "nll_binarized" not in plain["nll"]  # not by default: half the cost
    both = evaluate_run(tiny_run, split="val", nll_samples=6, fid=False, batch_size=64, binarized=True)
    # the same z samples: the grey-level numbers do not change when the binarized bound is added
    assert np.allclose(both["per_image"]["nll"], plain["per_image"]["nll"])
    assert both["nll"]["binarized_proposal"].startswith("q(z|x), shared")
    assert np.isfinite(both["nll"]["nll_binarized"]) and both["per_image"]["nll_binarized"].shape == (both["n_images"],)
    # a binary image is far less ambiguous than its grey levels under a Bernoulli likelihood
    assert both["nll"]["nll_binarized"] < both["nll"]["nll"]


def test_progress_updates_reach_an_update_attribute(tiny_run):
    from vaelab.evaluate import evaluate_run

    seen = []

    def say(msg):
        seen.append(msg)

    say.update = lambda done, total: seen.append((done, total))
    evaluate_run(tiny_run, split="val", nll_samples=2, fid=False, batch_size=40, progress=say)
    ticks = [t for t in seen if isinstance(t, tuple)]
    assert ticks[0] == (40, 150) and ticks[-1] == (150, 150) or ticks[-1][0] == ticks[-1][1]


def test_bounded_batches_keep_small_images_and_cap_large_ones(monkeypatch, tiny_run):
    from vaelab.data.imageset import bounded_batch
    from vaelab.evaluate import reconstruction
    from vaelab.run import load_run

    assert bounded_batch(500, (1, 28, 28)) == 500  # MNIST: unchanged
    assert bounded_batch(500, (3, 128, 128)) == 85 and bounded_batch(500, (3, 4096, 4096)) == 1
    run = load_run(tiny_run)
    part = run.data().split("val")
    whole = reconstruction.reconstruction_metrics(run.model, part.pixels, batch_size=64)
    monkeypatch.setattr(reconstruction, "SSIM_ELEMENTS", 784 * 5)  # SSIM in sub-batches of 5
    split = reconstruction.reconstruction_metrics(run.model, part.pixels, batch_size=64)
    assert np.allclose(whole["ssim"], split["ssim"], atol=1e-6) and np.allclose(whole["ssim_box7"], split["ssim_box7"], atol=1e-6)


TRIM_PROBE = """
import sys
from vaelab.data import budget

def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon"):
            return int(line.split()[1]) / 1024

blocks = [bytearray(100_000) for _ in range(1500)]  # 150 MB of heap blocks (each below the mmap threshold)
keep = blocks[::10]  # every tenth stays alive, so the heap's top cannot shrink by itself
del blocks
before = anon()
ran = budget.release_free_memory(0)
print(ran, before - anon())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim: Linux only")
def test_release_free_memory_returns_a_fragmented_heap_to_the_kernel():
    out = subprocess.run([sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "True"
    assert float(out[1]) > 60  # of the ~135 MB freed inside the heap


def test_release_free_memory_is_rate_limited(monkeypatch):
    from vaelab.data import budget

    calls = []
    monkeypatch.setitem(budget._TRIM, "fn", calls.append)
    monkeypatch.setitem(budget._TRIM, "last", 0.0)
    assert budget.release_free_memory(60.0) is True
    assert budget.release_free_memory(60.0) is False  # within the interval: nothing
    assert calls == [0]
    monkeypatch.setitem(budget._TRIM, "fn", False)  # no glibc (macOS, Windows): a no-op
    assert budget.release_free_memory(0.0) is False


def test_evaluation_loops_release_memory_batch_by_batch(monkeypatch, tiny_run):
    from vaelab.evaluate import likelihood, reconstruction
    from vaelab.run import load_run

    counts = {"nll": 0, "rec": 0}
    monkeypatch.setattr(likelihood, "release_free_memory", lambda: counts.__setitem__("nll", counts["nll"] + 1))
    monkeypatch.setattr(reconstruction, "release_free_memory", lambda: counts.__setitem__("rec", counts["rec"] + 1))
    model = load_run(tiny_run).model.eval()
    images = torch.randint(0, 256, (10, *model.image_shape), dtype=torch.uint8)
    likelihood.likelihood_terms(model, images, k=2, batch_size=4)
    reconstruction.reconstruction_metrics(model, images, batch_size=4)
    assert counts == {"nll": 3, "rec": 3}  # once per batch of 4, 4, 2
