"""Shared fixtures: tiny data and tiny trained runs, so every test stays fast on 2 CPU cores."""

from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collection_modifyitems(config, items):
    """The slow tests first (stable: otherwise in file order). Under CI's `-n 2 --dist loadgroup` the workers
    take tests from the front of the list as they free up, so the long ones start early on both workers and
    the many short ones even out the end, instead of one long test running alone while the other worker idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tests never write into the user's cache dir."""
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path_factory.getbasetemp() / "vaelab-cache"))


def shared_data() -> Path | None:
    """$VAELAB_DATA when it points at a folder (CI: ../shared/datasets), else None."""
    root = os.environ.get("VAELAB_DATA")
    return Path(root) if root and Path(root).is_dir() else None


def needs_data(name: str):
    """Skip a test cleanly when $VAELAB_DATA/<name> is absent."""
    root = shared_data()
    return pytest.mark.skipif(root is None or not (root / name).is_dir(), reason=f"$VAELAB_DATA/{name} not present")


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch):
    """A dataset missing from $VAELAB_DATA must never be fetched from the internet by a test: the default
    mirror is a closed local port (download tests point VAELAB_MIRROR at their own server)."""
    monkeypatch.setenv("VAELAB_MIRROR", "http://127.0.0.1:9/")


def write_idx(path: Path, arr: np.ndarray) -> Path:
    """Write an IDX file (uint8 data; gzip when the name ends in .gz) the way the MNIST files are laid out."""
    arr = np.asarray(arr, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape) + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, mtime=0) if path.suffix == ".gz" else raw)
    return path


def write_mnist_like(folder: Path, n_train: int = 30, n_test: int = 10, classes: int = 3) -> Path:
    """The four MNIST-named IDX files of a tiny random set (labels cycle 0..classes-1) under `folder`."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % classes)
    return folder


def tiny_config(tmp_path: Path, *overrides: str):
    """A config that trains in about a second: 300 MNIST-sample digits of 3 classes, a small MLP."""
    from vaelab.config import load_config

    base = [
        "data.source=mnist-sample",
        "data.classes=[1,4,8]",
        "data.limit=300",
        "model.hidden=[64]",
        "model.latent_dim=2",
        "train.epochs=2",
        "train.batch_size=64",
        "train.log_every=5",
        f"out_dir={tmp_path}",
        "name=tiny",
    ]
    return load_config(None, base + list(overrides))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A trained tiny run directory (MLP, 2-D latent, 3 classes), shared by the tests that only read it."""
    from vaelab.train import fit

    root = tmp_path_factory.mktemp("tiny-run")
    cfg = tiny_config(root, "train.epochs=3")
    return Path(fit(cfg, quiet=True)["run_dir"])


@pytest.fixture(scope="session")
def tiny_conditional_run(tmp_path_factory) -> Path:
    """A trained tiny conditional conv run (3 classes)."""
    from vaelab.train import fit

    root = tmp_path_factory.mktemp("tiny-cond-run")
    cfg = tiny_config(root, "model.arch=conv", "model.conv_channels=[4,8]", "model.conditional=true", "name=tiny-cond")
    return Path(fit(cfg, quiet=True)["run_dir"])


# ---------------------------------------------------------------------------------------------------------
# reliability (issue 7): tiny IDX data that loads in milliseconds, for tests that start many trainings


def write_raw_idx(path: Path, array) -> Path:
    """Write a numpy uint8 array as an IDX file (magic 0x0000 08 ndim, big-endian dims, raw bytes)."""
    import numpy as np

    a = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    Path(path).write_bytes(header + a.tobytes())
    return Path(path)


def make_idx_dir(folder: Path, n_train: int = 64, n_test: int = 16, size: int = 8, seed: int = 0) -> Path:
    """An ``idx:`` folder of tiny 3-class images: class k is a bright band in row block k, plus noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 3
        images = rng.integers(0, 60, size=(n, size, size))
        for i, k in enumerate(labels):
            images[i, k * size // 3 : (k + 1) * size // 3] += 180
        write_raw_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_raw_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return folder


@pytest.fixture(scope="session")
def tiny_idx_dir(tmp_path_factory) -> Path:
    """64 + 16 images of 8 x 8 px in 3 classes as IDX files (spec: f"idx:{tiny_idx_dir}")."""
    return make_idx_dir(tmp_path_factory.mktemp("tiny-idx"))


def copy_run(run_dir: Path, dst: Path) -> Path:
    """A private copy of a shared session run, for tests that write into a run directory."""
    import shutil

    return Path(shutil.copytree(run_dir, dst / run_dir.name))


def cli(*args: str) -> int:
    """Run the vaelab CLI in-process; its exit code."""
    from vaelab.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def _tiny_trial_report(run) -> str:
    return f"<html><body>{run.path.name}</body></html>"


@pytest.fixture
def fast_trial_reports(monkeypatch):
    """In-process sweeps write a one-line page as each trial's report.html instead of the full run report
    (a few seconds of figures per trial, and a failure there is only a warning of the sweep). The run report
    itself is tested in test_report*.py; the sweeps run as subprocesses in test_sweep.py still build it."""
    from vaelab.sweep import steps

    monkeypatch.setitem(sys.modules, "vaelab_tests_tiny_report", sys.modules[__name__])
    monkeypatch.setattr(steps, "REPORT", ("vaelab_tests_tiny_report", "_tiny_trial_report"))
