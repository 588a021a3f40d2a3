"""The Python API (issue 24): ImageSet.from_arrays / from_dataset, vaelab.fit on in-memory data (kept with
the run, never swapped for another data set), Run's notebook helpers and reprs, the README's snippet."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import vaelab
from conftest import cli
from vaelab.data import ImageSet
from vaelab.errors import VaelabError

TINY = {"model.hidden": [16], "model.latent_dim": 2, "train.epochs": 2, "train.batch_size": 32, "train.log_every": 2}


def blob_images(n: int = 90, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, size, size) float images in [0, 1]: class k is a bright band in row block k of 3, plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.random((n, size, size)).astype(np.float32) * 0.3
    for i, k in enumerate(y):
        x[i, k * size // 3 : (k + 1) * size // 3] += 0.6
    return x, y


# -- ImageSet from Python --------------------------------------------------------------------------------


def test_from_arrays_reads_every_layout_and_dtype_alike():
    x, y = blob_images(12)
    want = ImageSet.from_arrays(x, labels=y)
    assert want.images.dtype == torch.uint8 and want.shape == (1, 8, 8) and want.class_names == ["0", "1", "2"]
    u8 = np.rint(x * 255).astype(np.uint8)
    for arr in (u8, u8[:, None], u8[..., None], u8.reshape(12, -1), torch.from_numpy(x), torch.from_numpy(x)[:, None]):
        got = ImageSet.from_arrays(arr, labels=torch.from_numpy(y))
        assert torch.equal(got.images, want.images) and torch.equal(got.labels, want.labels)
    rgb = ImageSet.from_arrays(np.repeat(u8[..., None], 3, axis=3))  # (N, H, W, 3)
    assert rgb.shape == (3, 8, 8) and not rgb.labelled


def test_from_arrays_splits_and_class_names():
    x, y = blob_images(30)
    ds = ImageSet.from_arrays(x[:20], labels=y[:20], val=x[20:25], val_labels=y[20:25], test=x[25:], test_labels=y[25:], class_names=["a", "b", "c"])
    assert ds.split_counts() == {"train": 20, "val": 5, "test": 5}
    assert ds.class_names == ["a", "b", "c"] and ds.split("test").labels.tolist() == y[25:].tolist()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"train": np.zeros((2, 3, 4, 5, 6))}, "shape"),
        ({"train": np.full((4, 8, 8), 2.0) * 300}, "outside"),
        ({"train": np.array([["a"]])}, "not pixels"),
        ({"train": np.zeros((4, 8, 8)), "labels": np.arange(3)}, "3 labels for 4 images"),
        ({"train": np.zeros((4, 8, 8)), "class_names": ["a"]}, "without labels"),
        ({"train": np.zeros((4, 8, 8)), "labels": np.arange(4), "class_names": ["a", "b"]}, "class_names"),
        ({"train": np.zeros((4, 8, 8)), "val": np.zeros((2, 6, 6))}, "same size"),
        ({"train": "digits.npz"}, "not an array"),
    ],
)
def test_from_arrays_bad_input_is_one_clear_error(kwargs, words):
    with pytest.raises(VaelabError) as e:
        ImageSet.from_arrays(**kwargs)
    assert words in str(e.value)


def test_from_dataset_takes_image_label_pairs():
    x, y = blob_images(9)

    class Pairs(torch.utils.data.Dataset):
        classes = ["top", "middle", "bottom"]

        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return torch.from_numpy(x[i])[None], torch.tensor(y[i])  # (1, H, W) float, a 0-d label

    ds = ImageSet.from_dataset(Pairs())
    assert len(ds) == 9 and ds.shape == (1, 8, 8) and ds.class_names == ["top", "middle", "bottom"]
    assert torch.equal(ds.images, ImageSet.from_arrays(x).images)


def test_reprs_are_short_and_never_dump_tensors(tmp_path):
    x, y = blob_images(30)
    ds = ImageSet.from_arrays(x, labels=y)
    for text in (repr(ds), ds._repr_html_()):
        assert "tensor(" not in text and len(text) < 600
    assert "30 images 1x8x8" in repr(ds)


# -- vaelab.fit ----------------------------------------------------------------------------------------


def test_make_config_takes_dicts_lists_and_refuses_unknown_keys():
    a = vaelab.make_config({"model": {"latent_dim": 3}, "train.epochs": 4})
    b = vaelab.make_config(["model.latent_dim=3", "train.epochs=4"])
    assert a.model.latent_dim == b.model.latent_dim == 3 and a.train.epochs == b.train.epochs == 4
    with pytest.raises(VaelabError, match="latent_dims"):
        vaelab.make_config({"model.latent_dims": 3})


@pytest.fixture(scope="module")
def memory_run(tmp_path_factory):
    """A run trained from Python on blob images (not MNIST): its data is kept in RUN/data.npz."""
    root = tmp_path_factory.mktemp("memory-run")
    x, y = blob_images(90)
    data = ImageSet.from_arrays(x, labels=y, test=x[:15], test_labels=y[:15])
    run = vaelab.fit({**TINY, "out_dir": str(root), "name": "blobs"}, data, quiet=True)
    return run, data


def test_fit_from_python_records_and_keeps_its_data(memory_run):
    run, data = memory_run
    assert run.config.data.source == "memory" and (run.path / "data.npz").is_file()
    kept = run.data()
    assert kept.source == "arrays" and kept.split_counts() == {"train": 81, "val": 9, "test": 15}
    assert torch.equal(kept.split("test").images, data.split("test").images)
    assert torch.equal(torch.sort(kept.images.flatten(1).sum(1)).values, torch.sort(data.images.flatten(1).sum(1)).values)


def test_evaluate_scores_exactly_the_images_trained_from_python(memory_run, capsys):
    """The bug of issue 24: the run fell back to data.source mnist-sample and scored MNIST digits."""
    run, data = memory_run
    assert cli("evaluate", run.path, "--no-fid", "--nll-samples", "2") == 0
    result = json.loads((run.path / "eval" / "test.json").read_text())
    test = data.split("test")
    assert result["n_images"] == len(test) == 15
    recon = run.reconstruct(test)  # the same images, by hand: the MSE must be evaluate's
    mse = float(((recon - test.images.float() / 255) ** 2).mean())
    assert result["recon_quality"]["mse"] == pytest.approx(mse, rel=1e-4)


def test_notebook_helpers(memory_run):
    run, data = memory_run
    x, y = blob_images(6, seed=3)
    z = run.encode(x)
    assert z.shape == (6, 2) and torch.allclose(z, run.encode(torch.from_numpy(x)[:, None]))
    assert run.reconstruct(np.rint(x * 255).astype(np.uint8)).shape == (6, 1, 8, 8)
    assert run.decode(z).shape == (6, 1, 8, 8) and run.sample(5).shape == (5, 1, 8, 8)
    lat = run.latents("val")
    assert lat.z.shape == (9, 2) and lat.labels is not None
    assert "memory" in repr(run) and "tensor(" not in repr(run) and len(repr(run)) < 300
    assert "<table>" in run._repr_html_() and "Sequential" not in run._repr_html_()
    with pytest.raises(VaelabError, match="shape"):
        run.encode(np.zeros((2, 9, 9), dtype=np.uint8))


def test_without_saved_data_every_command_asks_for_data(tmp_path, capsys):
    x, y = blob_images(60)
    run = vaelab.fit({**TINY, "out_dir": str(tmp_path), "name": "nodata", "train.epochs": 1}, (x, y), save_data=False, quiet=True)
    assert not (run.path / "data.npz").exists()
    capsys.readouterr()
    for args in (["evaluate", run.path, "--no-fid"], ["plot", run.path, "recon"], ["classify", run.path], ["sample", run.path, "--sampler", "gmm"]):
        code = cli(*args)
        err = capsys.readouterr().err
        assert code == 2 and "--data SPEC" in err and "Traceback" not in err, (args, err)
    assert cli("report", run.path) == 0  # the page is still written; its data figures say what is missing
    assert "--data SPEC" in (run.path / "report.html").read_text()
    np.savez(tmp_path / "blobs.npz", x=x, y=y)
    assert cli("evaluate", run.path, "--no-fid", "--nll-samples", "2", "--split", "train", "--data", f"npz:{tmp_path / 'blobs.npz'}") == 0


def test_resume_from_python_and_the_cli_is_exact(tmp_path):
    x, y = blob_images(60)
    cfg = {**TINY, "out_dir": str(tmp_path)}
    straight = vaelab.fit({**cfg, "name": "straight", "train.epochs": 3}, (x, y), quiet=True)
    half = vaelab.fit({**cfg, "name": "half"}, (x, y), quiet=True)
    resumed = vaelab.fit({"train.epochs": 3}, (x, y), run_dir=half.path, resume=True, quiet=True)
    a = torch.load(straight.path / "checkpoints" / "last.ckpt", weights_only=True)["model"]
    b = torch.load(resumed.path / "checkpoints" / "last.ckpt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the CLI resumes a memory run from the data it kept
    assert cli("train", "--resume", half.path, "train.epochs=4", "--quiet") == 0
    assert vaelab.load_run(half.path, checkpoint="last").epoch == 4


def test_readme_from_python_snippet_runs(tmp_path, monkeypatch):
    """The README's 'From Python' example, exactly as written there."""
    text = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## From Python") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    assert (tmp_path / "runs").is_dir()


def test_fit_takes_a_torch_dataset_and_the_low_level_fit_refuses_arrays_in_one_line(tmp_path):
    x, y = blob_images(45)
    pairs = [(torch.from_numpy(x[i])[None], int(y[i])) for i in range(len(x))]  # a list is a map-style dataset
    run = vaelab.fit({**TINY, "out_dir": str(tmp_path), "name": "pairs", "train.epochs": 1}, pairs, quiet=True)
    assert run.data().class_names == ["0", "1", "2"] and len(run.data()) == 45
    from vaelab.train import fit as train_fit

    with pytest.raises(VaelabError, match="vaelab.fit"):
        train_fit(vaelab.make_config({**TINY, "out_dir": str(tmp_path)}), data=x)


def test_a_memory_run_exported_with_its_data_works_without_data_spec(memory_run, tmp_path, capsys):
    run, data = memory_run
    assert cli("export", run.path, "--out", tmp_path / "bare") == 0
    assert cli("export", run.path, "--out", tmp_path / "full", "--with-data") == 0
    assert "shipped here as data.npz" in (tmp_path / "full" / "README.md").read_text()
    capsys.readouterr()
    assert cli("evaluate", tmp_path / "bare", "--no-fid") == 2
    assert "--data SPEC" in capsys.readouterr().err
    assert cli("evaluate", tmp_path / "full", "--no-fid", "--nll-samples", "2") == 0
    result = json.loads((tmp_path / "full" / "eval" / "test.json").read_text())
    assert result["n_images"] == 15
