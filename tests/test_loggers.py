"""Experiment trackers (train.logger): TensorBoard's one x-axis, hparams, projector and evaluation metrics;
metrics.csv; W&B offline; MLflow's local store; names and missing extras as one-line errors."""

from __future__ import annotations

import csv
import importlib.util
import json
import warnings
from pathlib import Path

import pytest

from conftest import cli, copy_run, tiny_config
from vaelab.errors import VaelabError
from vaelab.run import read_metrics
from vaelab.train import fit


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ea = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
        ea.Reload()
    return ea


def _hparams(ea) -> tuple[dict, list[str]]:
    """(hparam values of the last session, metric tags of the last experiment summary)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = ea.PluginTagToContent("hparams")
    exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    values = {k: (v.number_value if v.HasField("number_value") else v.string_value if v.HasField("string_value") else v.bool_value)
              for k, v in start.hparams.items()}
    return values, [m.name.tag for m in exp.metric_infos]


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tb-run")
    cfg = tiny_config(root, "train.logger=tensorboard,csv", "train.log_every=1")
    return Path(fit(cfg, quiet=True)["run_dir"])


def test_tensorboard_one_step_axis_hparams_and_projector(tb_run):
    ea = _events(tb_run / "tensorboard")
    rows = read_metrics(tb_run)
    steps = [r["step"] for r in rows]
    # epoch numbers sit at the step that ended the epoch, on the same axis as the per-step loss
    assert [e.step for e in ea.Scalars("val/loss")] == steps
    assert [(e.step, e.value) for e in ea.Scalars("epoch/epoch")] == [(s, float(r["epoch"])) for s, r in zip(steps, rows, strict=True)]
    assert max(e.step for e in ea.Scalars("step/loss")) == steps[-1]
    assert {e.step for e in ea.Images("recon")} == set(steps)
    hp, tags = _hparams(ea)
    assert hp["model.latent_dim"] == 2 and hp["model.hidden"] == "[64]" and hp["train.logger"] == "tensorboard,csv"
    assert {"final/val_loss", "final/best_val_loss", "eval/test/loss/elbo", "eval/val/fid/prior"} <= set(tags)
    best = ea.Scalars("final/best_val_loss")[-1]
    assert best.step == steps[-1] and best.value == pytest.approx(min(r["val/loss"] for r in rows), rel=1e-5)
    # the projector: the validation latent means with class names and thumbnails
    config = (tb_run / "tensorboard" / "projector_config.pbtxt").read_text()
    assert "latents_val" in config and "sprite" in config
    folder = next((tb_run / "tensorboard").glob("*/latents_val"))
    tensors = (folder / "tensors.tsv").read_text().splitlines()
    meta = (folder / "metadata.tsv").read_text().splitlines()
    assert len(tensors) == len(meta) > 10 and len(tensors[0].split("\t")) == 2  # 2-D latent
    assert set(meta) <= {"1", "4", "8"}


def test_csv_logger_writes_one_row_per_epoch(tb_run):
    with open(tb_run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    jsonl = read_metrics(tb_run)
    assert [int(r["epoch"]) for r in rows] == [r["epoch"] for r in jsonl]
    assert float(rows[-1]["val/loss"]) == pytest.approx(jsonl[-1]["val/loss"])


def test_evaluate_logs_its_metrics_to_tensorboard(tb_run, tmp_path):
    run = copy_run(tb_run, tmp_path)
    assert cli("evaluate", run, "--split", "val", "--no-fid", "--nll-samples", "2") == 0
    ea = _events(run / "tensorboard")
    step = read_metrics(run)[-1]["step"]
    elbo = json.loads((run / "eval" / "val.json").read_text())["loss"]["elbo"]
    (scalar,) = ea.Scalars("eval/val/loss/elbo")
    assert scalar.step == step and scalar.value == pytest.approx(elbo, rel=1e-5)
    assert "eval/val/recon_quality/ssim" in ea.Tags()["scalars"]
    assert not [t for t in ea.Tags()["scalars"] if "n_generated" in t or "per_image" in t]


def test_logger_none_and_csv_alone_write_no_tensorboard(tmp_path):
    run = Path(fit(tiny_config(tmp_path, "train.logger=csv", "train.epochs=1"), quiet=True)["run_dir"])
    assert (run / "metrics.csv").is_file() and not (run / "tensorboard").exists()
    run = Path(fit(tiny_config(tmp_path, "train.logger=none", "train.epochs=1", "name=none"), quiet=True)["run_dir"])
    assert not (run / "metrics.csv").exists() and not (run / "tensorboard").exists()
    assert (run / "metrics.jsonl").is_file()  # the run's own record, whatever the trackers


@pytest.mark.parametrize(
    "value, words",
    [("tensorbord", ["did you mean 'tensorboard'"]), ("csv,nope", ["'nope'", "choose from"]), ("none,csv", ["'none' goes alone"])],
)
def test_bad_logger_names_fail_before_training(tmp_path, value, words):
    with pytest.raises(VaelabError) as e:
        tiny_config(tmp_path, f"train.logger={value}")
    assert all(w in str(e.value) for w in words)


@pytest.mark.parametrize("extra", ["wandb", "mlflow"])
def test_missing_tracker_says_what_to_install(tmp_path, monkeypatch, extra, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == extra else real(name, *a))
    code = cli("train", "data.source=mnist-sample", "data.limit=100", "train.epochs=1", f"train.logger={extra}",
               f"out_dir={tmp_path}")
    err = capsys.readouterr().err
    assert code == 2 and f"pip install 'vaelab[{extra}]'" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing half-made


@pytest.mark.slow  # wandb starts its service process
@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb not installed")
def test_wandb_offline_run_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))  # wandb's own settings and cache stay in the test
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    cfg = tiny_config(tmp_path, "train.logger=wandb", "train.epochs=1")
    run = Path(fit(cfg, quiet=True)["run_dir"])
    run_id = json.loads((run / "loggers.json").read_text())["wandb_run_id"]
    (log,) = (run / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    data = log.read_bytes()
    for key in (b"val/loss", b"trainer/step", b"final/best_val_loss", b"model.latent_dim"):
        assert key in data, key
    assert list((run / "wandb").glob("offline-run-*/files/media/images/**/recon_*.png"))
    fit(tiny_config(tmp_path, "train.logger=wandb", "train.epochs=2"), run_dir=run, resume=True, quiet=True)
    assert json.loads((run / "loggers.json").read_text())["wandb_run_id"] == run_id  # the same W&B run goes on


@pytest.mark.slow  # MLflow creates its SQLite store (about 10 s)
@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed")
def test_mlflow_local_store_run_and_resume(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # where MLflow would put its artifacts by default: checked below
    cfg = tiny_config(tmp_path, "train.logger=mlflow", "train.epochs=1")
    run = Path(fit(cfg, quiet=True)["run_dir"])
    saved = json.loads((run / "loggers.json").read_text())
    assert saved["mlflow_tracking_uri"] == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    fit(tiny_config(tmp_path, "train.logger=mlflow", "train.epochs=2"), run_dir=run, resume=True, quiet=True)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=saved["mlflow_tracking_uri"])
    r = client.get_run(saved["mlflow_run_id"])  # one MLflow run across the resume
    assert r.info.status == "FINISHED" and r.info.run_name == run.name
    assert r.data.params["model.latent_dim"] == "2" and r.data.params["train.logger"] == "mlflow"
    history = client.get_metric_history(r.info.run_id, "val/loss")
    rows = read_metrics(run)
    assert [(m.step, m.value) for m in history] == [(x["step"], pytest.approx(x["val/loss"])) for x in rows]
    assert "final/best_val_loss" in r.data.metrics
    # each fit sends its last grids: epoch 1 before the resume, epoch 2 after
    assert {a.path for a in client.list_artifacts(r.info.run_id, "images")} == {
        f"images/{k}_epoch_{e}.png" for k in ("recon", "samples") for e in (1, 2)}
    assert len(list((tmp_path / "mlartifacts").rglob("recon_epoch_2.png"))) == 1  # beside the store, not in the cwd
    assert not list((tmp_path / "cwd").iterdir())


def test_the_tracker_is_not_part_of_a_study_s_identity():
    from vaelab.sweep import build_plan

    plain = build_plan(None, ["data.source=mnist-sample"], grid=["model.beta=0.5,1"])
    tracked = build_plan(None, ["data.source=mnist-sample", "train.logger=csv", "train.logger_project=x"], grid=["model.beta=0.5,1"])
    assert plain.fingerprint() == tracked.fingerprint()
    assert build_plan(None, ["data.source=mnist-sample", "model.beta=2"], grid=["model.latent_dim=2,3"]).fingerprint() != plain.fingerprint()


def test_projector_and_latent_snapshots_never_hold_the_whole_split(tmp_path, monkeypatch):
    """A memory-mapped folder's split is read in bounded chunks at the end of training: ImageSet.images
    (the whole split as one tensor) is never asked for, and `train.save_latents=false` keeps no images."""
    from vaelab.data.imageset import ImageSet
    from vaelab.train.callbacks import LatentSnapshots

    def whole(self):
        raise AssertionError("the whole split was materialised")

    cfg = tiny_config(tmp_path, "train.logger=tensorboard", "train.save_latents=false")
    from vaelab.data import from_config

    data = from_config(cfg.data)
    held = LatentSnapshots()
    monkeypatch.setattr(ImageSet, "images", property(whole))
    run = Path(fit(cfg, data=data, quiet=True, callbacks=None)["run_dir"])
    assert next((run / "tensorboard").glob("*/latents_val/sprite.png"), None) is not None
    assert not (run / "latents").exists()

    class Ctx:  # what on_fit_start reads
        cfg = type("C", (), {"train": type("T", (), {"save_latents": False})()})()

    held.on_fit_start(Ctx())
    assert held.images is None
