"""vaelab.train: run directory, exact resume (also after a mid-epoch Ctrl-C), NaN handling, schedules,
precision, DDP, the configs/ folder, and one-line errors for bad input."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_config
from vaelab.config import load_config
from vaelab.errors import VaelabError
from vaelab.run import load_run, read_metrics
from vaelab.train import Callback, TrainingDiverged, TrainingInterrupted, default_callbacks, fit, kl_weight
from vaelab.train.callbacks import Progress
from vaelab.train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
QUICK = ("train.images_every=0", "train.save_latents=false")  # for tests that do not look at the files


def weights(run_dir) -> dict[str, torch.Tensor]:
    return load_checkpoint(Path(run_dir) / "checkpoints" / "last.ckpt")["model"]


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"weights differ: {different}"


def same_metrics(a, b) -> None:
    """metrics.jsonl rows equal except wall-clock times."""
    drop = ("epoch_time", "time")
    ra = [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(a)]
    rb = [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(b)]
    assert ra == rb


# ---------------------------------------------------------------------------------------------------------
# the run directory and load_run


class Capture(Callback):
    """Keeps what the trained model outputs for fixed inputs at the end of fit."""

    def __init__(self, x):
        self.x = x

    def on_fit_end(self, ctx):
        ctx.model.eval()
        self.recon = ctx.model.reconstruct(self.x)
        self.mean = ctx.model.encode(self.x).mean


def test_run_dir_and_checkpoint_round_trip(tmp_path):
    cfg = tiny_config(tmp_path, "model.arch=conv", "model.conv_channels=[4,8]", "model.norm=batch")
    x = torch.rand(5, 1, 28, 28)
    cap = Capture(x)
    summary = fit(cfg, callbacks=default_callbacks(cfg, quiet=True) + [cap])
    run = Path(summary["run_dir"])
    for rel in ("config.yaml", "metrics.jsonl", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
                "images/recon_epoch_2.png", "images/samples_epoch_2.png", "latents/epoch_2.npz"):
        assert (run / rel).is_file(), rel
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train/loss", "train/recon", "train/kl", "val/loss", "val/recon", "val/kl", "lr", "grad_norm"):
        assert math.isfinite(rows[-1][key]), key
    r = load_run(run, checkpoint="last")
    assert r.epoch == 2 and r.config.model.image_size == 28 and r.class_names == ["1", "4", "8"]
    assert torch.equal(r.model.reconstruct(x), cap.recon)
    assert torch.equal(r.model.encode(x).mean, cap.mean)
    assert r.data().split("val").images.shape[1:] == (1, 28, 28)  # the data spec comes back with no flags


def test_recon_snapshot_spreads_over_classes(tiny_run):
    """The 16 recon images are spread over the split, not its first rows (which are often one class)."""
    from vaelab.train.callbacks import spread

    assert spread(100, 4).tolist() == [0, 33, 66, 99] and spread(3, 16).tolist() == [0, 1, 2]
    val = load_run(tiny_run).data().split("val")
    assert len(set(val.labels[spread(len(val), 16)].tolist())) == 3


# ---------------------------------------------------------------------------------------------------------
# exact resume


def test_resume_is_exact(tmp_path):
    """4 epochs straight == 2 epochs + resume + 2 more: identical weights, optimizer state and metrics."""
    over = ("model.dropout=0.2", "train.log_every=2", "train.images_every=2")  # dropout draws from the RNG
    straight = fit(tiny_config(tmp_path, "train.epochs=4", "name=straight", *over), quiet=True)["run_dir"]
    part = fit(tiny_config(tmp_path, "train.epochs=2", "name=part", *over), quiet=True)["run_dir"]
    fit(tiny_config(tmp_path, "train.epochs=4", "name=part", *over), run_dir=part, resume=True, quiet=True)
    assert_same_weights(straight, part)
    a, b = (load_checkpoint(Path(d) / "checkpoints/last.ckpt")["optimizer"]["state"] for d in (straight, part))
    assert all(torch.equal(a[i]["exp_avg_sq"], b[i]["exp_avg_sq"]) for i in a)
    same_metrics(straight, part)


class SignalAt(Callback):
    """Sends a real SIGINT to this process after batch `batch` of epoch `epoch` (0-based epochs done)."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch, self.sent = epoch, batch, False

    def on_train_batch_end(self, ctx, batch, n_batches, loss, kl_weight):
        if not self.sent and ctx.state.epoch == self.epoch and batch == self.batch:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


def test_interrupted_mid_epoch_resume_is_exact(tmp_path):
    over = ("model.arch=conv", "model.conv_channels=[4,8]", "model.dropout=0.1", "train.log_every=1", *QUICK)
    straight = fit(tiny_config(tmp_path, "train.epochs=3", "name=straight", *over), quiet=True)["run_dir"]
    cfg = tiny_config(tmp_path, "train.epochs=3", "name=stopped", *over)
    with pytest.raises(TrainingInterrupted, match="SIGINT: training stopped at epoch 2, batch 3") as err:
        fit(cfg, callbacks=default_callbacks(cfg, quiet=True) + [SignalAt(epoch=1, batch=3)])
    assert "resume with: vaelab train --resume" in str(err.value) and "\n" not in str(err.value)
    stopped = Path(tmp_path / "stopped")
    ckpt = load_checkpoint(stopped / "checkpoints/last.ckpt")
    assert ckpt["train_state"]["batch_in_epoch"] == 3 and ckpt["epoch"] == 1
    fit(cfg, run_dir=stopped, resume=True, quiet=True)
    assert_same_weights(straight, stopped)
    same_metrics(straight, stopped)  # the interrupted epoch's loss sums were carried over too


@pytest.mark.slow
def test_ctrl_c_on_the_cli_then_resume(tmp_path):
    """A real `python -m vaelab train` gets SIGINT mid-run: exit 130, a resume hint, and --resume finishes."""
    run = tmp_path / "cli-run"
    args = ["data.source=mnist-sample", "data.limit=1000", "model.hidden=[32]", "model.latent_dim=2",
            "train.epochs=50", "train.batch_size=16", "train.log_every=1", *QUICK]
    proc = subprocess.Popen([sys.executable, "-m", "vaelab", "train", *args, "--run-dir", str(run)],
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait until an epoch is done, so there is something to resume
        if line.startswith("epoch 1/50"):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "resume with: vaelab train --resume" in err and "Traceback" not in err
    state = load_checkpoint(run / "checkpoints/last.ckpt")["train_state"]
    assert state["epoch"] >= 1
    done = subprocess.run([sys.executable, "-m", "vaelab", "train", "--resume", str(run), "train.epochs=" +
                           str(state["epoch"] + 1), "--quiet"], env=cli_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert read_metrics(run)[-1]["epoch"] == state["epoch"] + 1


# ---------------------------------------------------------------------------------------------------------
# NaN, schedules, warm-up, clipping, precision


def poison(monkeypatch, bad_calls):
    """Make the elbo objective return a NaN loss on the given (1-based) calls of the training loop."""
    from vaelab.train import loop

    real, count = loop.OBJECTIVES["elbo"], {"n": 0}

    def fake(*args, **kwargs):
        terms = real(*args, **kwargs)
        count["n"] += 1
        if count["n"] in bad_calls:
            terms.loss = terms.loss * float("nan")
        return terms

    monkeypatch.setitem(loop.OBJECTIVES, "elbo", fake)


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, "train.epochs=3", *QUICK)  # 5 train batches + 1 val batch per epoch
    poison(monkeypatch, range(8, 1000))  # from epoch 2, batch 2 on
    with pytest.raises(TrainingDiverged) as err:
        fit(cfg, quiet=True)
    msg = str(err.value)
    assert "loss is nan" in msg and "lower learning rate" in msg and "\n" not in msg
    ckpt = load_checkpoint(tmp_path / "tiny" / "checkpoints/last.ckpt")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert len(read_metrics(tmp_path / "tiny")) == 1


def test_nan_batches_are_skipped_on_request(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, "train.epochs=2", "train.on_nan=skip_batch", *QUICK)
    poison(monkeypatch, {2, 3})
    summary = fit(cfg, quiet=True)
    assert summary["stop_reason"] == "finished" and summary["steps"] == 10 - 2
    assert read_metrics(summary["run_dir"])[-1]["skipped_batches"] == 2
    assert all(torch.isfinite(v).all() for v in weights(summary["run_dir"]).values())


def test_early_stopping_and_reduce_on_plateau(tmp_path, monkeypatch):
    from vaelab.train import loop

    flat = {"loss": 100.0, "recon": 90.0, "kl": 10.0, "elbo": 100.0, "n": 1}  # validation never improves
    monkeypatch.setattr(loop, "evaluate_terms", lambda *a, **k: dict(flat))
    cfg = tiny_config(tmp_path, "train.epochs=9", "train.early_stop=4", "train.schedule=plateau", *QUICK)
    summary = fit(cfg, quiet=True)
    assert summary["epochs"] == 5 and summary["stop_reason"].startswith("early stop")
    assert [r["lr"] for r in read_metrics(summary["run_dir"])] == [1e-3, 1e-3, 1e-3, 5e-4, 5e-4]


def test_kl_warmup_by_epochs_or_steps(tmp_path):
    cfg = tiny_config(tmp_path, "train.warmup_epochs=2", "model.beta=2")
    assert [kl_weight(cfg, s, 5) for s in (0, 5, 10, 50)] == [0.0, 1.0, 2.0, 2.0]
    cfg = tiny_config(tmp_path, "train.warmup_epochs=2", "train.warmup_steps=4")  # steps win
    assert [kl_weight(cfg, s, 5) for s in (0, 2, 4)] == [0.0, 0.5, 1.0]
    rows = read_metrics(fit(tiny_config(tmp_path, "train.warmup_epochs=4", *QUICK), quiet=True)["run_dir"])
    assert [r["kl_weight"] for r in rows] == [0.25, 0.5]


def test_validation_loss_is_the_trained_objective_with_its_ssim_term(tmp_path, capsys):
    """With model.ssim_weight the validation loss (what picks best.ckpt) carries the SSIM term as training
    does, val/ssim is logged, and the epoch line's terms add up to the loss shown."""
    from vaelab.train.callbacks import val_loss_terms

    cfg = tiny_config(tmp_path, "model.beta=0.5", "model.ssim_weight=50", "name=ssim", *QUICK)
    row = read_metrics(fit(cfg, quiet=True)["run_dir"])[-1]
    assert 0 < row["val/ssim"] < 1
    assert row["val/loss"] == pytest.approx(row["val/recon"] + 0.5 * row["val/kl"] + 50 * (1 - row["val/ssim"]))
    text = val_loss_terms(row, cfg.model)
    assert text.startswith("recon ") and "0.5 x kl" in text and "50 x (1 - SSIM 0." in text
    plain = read_metrics(fit(tiny_config(tmp_path, "name=plain", *QUICK), quiet=True)["run_dir"])[-1]
    assert "val/ssim" not in plain and plain["val/loss"] == pytest.approx(plain["val/recon"] + plain["val/kl"])
    assert val_loss_terms(plain, tiny_config(tmp_path).model) == f"recon {plain['val/recon']:.2f} + kl {plain['val/kl']:.2f}"

def test_gradient_clipping_changes_training(tmp_path):
    plain = fit(tiny_config(tmp_path, "train.epochs=1", "name=plain", *QUICK), quiet=True)["run_dir"]
    clipped = fit(tiny_config(tmp_path, "train.epochs=1", "name=clip", "train.grad_clip=0.01", *QUICK),
                  quiet=True)["run_dir"]
    assert read_metrics(clipped)[0]["grad_norm"] > 0.01  # the norm before clipping is what is logged
    wa, wb = weights(plain), weights(clipped)
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)


def test_bf16_mixed_precision_on_cpu(tmp_path):
    cfg = tiny_config(tmp_path, "trainer.precision=bf16-mixed", "model.arch=conv", "model.conv_channels=[4,8]",
                      "train.epochs=2", *QUICK)
    run = fit(cfg, quiet=True)["run_dir"]
    rows = read_metrics(run)
    assert all(math.isfinite(r["val/loss"]) for r in rows) and rows[1]["val/loss"] < rows[0]["val/loss"]
    assert all(w.dtype == torch.float32 for w in weights(run).values() if w.is_floating_point())  # fp32 weights


@pytest.mark.slow
def test_torch_compile_on_cpu(tmp_path):
    cfg = tiny_config(tmp_path, "train.compile=true", "train.epochs=1", *QUICK)
    try:
        summary = fit(cfg, quiet=True)
    except VaelabError as e:  # a machine without a working compiler: one line that says what to do
        assert "train.compile=false" in str(e)
    else:
        assert summary["stop_reason"] == "finished"
        assert not any(k.startswith("_orig_mod") for k in weights(summary["run_dir"]))


def test_progress_bar_only_on_a_terminal(tmp_path):
    class TTY(io.StringIO):
        def isatty(self):
            return True

    for stream, bar in ((TTY(), True), (io.StringIO(), False)):
        cb = Progress(stream=stream)
        cfg = tiny_config(tmp_path, "train.epochs=1", f"name=p{int(bar)}", *QUICK)
        fit(cfg, callbacks=[cb])
        assert (cb.bar is not None) == bar
        assert "epoch 1/1  train" in stream.getvalue()
    quiet = Progress(quiet=True, stream=io.StringIO())
    fit(tiny_config(tmp_path, "train.epochs=1", "name=q", *QUICK), callbacks=[quiet])
    assert quiet.bar is None and quiet.stream.getvalue() == ""


# ---------------------------------------------------------------------------------------------------------
# conditional runs and sampling


def test_conditional_run_samples_the_requested_labels(tiny_conditional_run, tmp_path, capsys):
    run = load_run(tiny_conditional_run)
    assert run.model.conditional and run.model.num_classes == 3
    imgs = run.model.sample(labels=torch.tensor([0, 2, 2, 1]))
    assert imgs.shape == (4, 1, 28, 28)
    code, err = cli(capsys, "sample", str(tiny_conditional_run), "-n", "6", "--label", "8",
                    "--out", str(tmp_path / "eights.png"))
    assert code == 0 and (tmp_path / "eights.png").stat().st_size > 100
    code, err = cli(capsys, "sample", str(tiny_conditional_run), "--label", "7", "--out", str(tmp_path / "x.png"))
    assert code == 2 and "class '7' is not one of the model's 3 classes" in err


def test_gmm_sampler_from_the_cli_draws_each_class_where_its_codes_lie(tiny_conditional_run, tiny_run, tmp_path, capsys):
    from vaelab.latent import encode
    from vaelab.latent.samplers import ClassGMMSampler

    run = load_run(tiny_conditional_run)
    train = encode(run, split="train")
    sampler = ClassGMMSampler(2, seed=0).fit(train.z, train.labels, 3)
    labels = torch.tensor([2, 0, 2, 1] * 200).numpy()
    z = sampler.sample(labels)
    for k in range(3):  # each class's draws sit on that class's codes, not on the others'
        assert abs(z[labels == k].mean(0) - train.z[train.labels == k].mean(0)).max() < 0.3
    code, err = cli(capsys, "sample", str(tiny_conditional_run), "-n", "6", "--label", "4", "--sampler", "gmm",
                    "--out", str(tmp_path / "fours.png"))
    assert code == 0 and (tmp_path / "fours.png").stat().st_size > 100, err
    code, err = cli(capsys, "sample", str(tiny_run), "-n", "4", "--sampler", "gmm", "--components", "3",
                    "--out", str(tmp_path / "g.png"))
    assert code == 0 and (tmp_path / "g.png").stat().st_size > 100, err
    code, err = cli(capsys, "sample", str(tiny_run), "--sampler", "flow", "--out", str(tmp_path / "x.png"))
    assert code == 2 and "use one of: prior, gmm" in err and not (tmp_path / "x.png").exists()
    with pytest.raises(VaelabError, match="at least 2"):
        ClassGMMSampler().fit(train.z[:3], train.labels[:3] * 0, 3)


# ---------------------------------------------------------------------------------------------------------
# bad input: one line on stderr, exit 2, no traceback


def cli(capsys, *argv) -> tuple[int, str]:
    from vaelab.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(argv))
    err = capsys.readouterr().err
    return e.value.code, err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err


def test_cli_image_size_the_architecture_cannot_take(tmp_path, capsys):
    code, err = cli(capsys, "train", "data.source=mnist-sample", "data.limit=50", "data.image_size=8",
                    "model.arch=conv", "model.conv_channels=[2,2,2,2,2]", "model.kernel=3", f"out_dir={tmp_path}")
    assert_one_line_error(code, err, "image_size 8 is too small for 5 stride-2 conv layers", "at most 3")
    assert not any(tmp_path.iterdir())  # nothing was created


def test_cli_latent_dim_below_one(tmp_path, capsys):
    code, err = cli(capsys, "train", "model.latent_dim=0", f"out_dir={tmp_path}")
    assert_one_line_error(code, err, "'model.latent_dim' is 0, it must be >= 1")


def test_cli_resume_from_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    code, err = cli(capsys, "train", "--resume", str(tmp_path))
    assert_one_line_error(code, err, "is not a vaelab run")


def test_cli_new_run_into_an_existing_run(tiny_run, capsys):
    code, err = cli(capsys, "train", "data.source=mnist-sample", "--run-dir", str(tiny_run))
    assert_one_line_error(code, err, "already holds a trained run", "--resume")


def test_cli_resume_with_another_model_config(tiny_run, capsys):
    before = (tiny_run / "checkpoints/last.ckpt").stat().st_mtime_ns
    code, err = cli(capsys, "train", "--resume", str(tiny_run), "model.latent_dim=3")
    assert_one_line_error(code, err, "trained with another model config", "model.latent_dim 2 -> 3")
    assert (tiny_run / "checkpoints/last.ckpt").stat().st_mtime_ns == before


# ---------------------------------------------------------------------------------------------------------
# configs/


CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml") if "sweep" not in (yaml.safe_load(p.read_text()) or {}))
# (a file with a top-level 'sweep' key is a study for 'vaelab sweep', not a training config)


def test_there_are_configs_for_every_workflow():
    names = {p.stem for p in CONFIGS}
    assert {"mnist-148-z2", "emnist-conv-z2", "emnist-conv-z8", "fashion-mlp-z2", "fashion-conv-z2",
            "fashion-cvae-z2", "photos-128", "landscape-256"} <= names
    for p in CONFIGS:
        assert p.read_text().startswith("# "), f"{p.name}: first line must say what it reproduces"


def test_data_specs_expand_env_vars_and_home(monkeypatch):
    from vaelab.data.load import parse_spec

    monkeypatch.setenv("VAELAB_DATA", "/data/root")
    assert parse_spec("folder:${VAELAB_DATA}/hymenoptera") == ("folder", "/data/root/hymenoptera")
    assert parse_spec("npz:~/x.npz") == ("npz", str(Path.home() / "x.npz"))
    monkeypatch.delenv("VAELAB_DATA")
    with pytest.raises(VaelabError, match=r"\$VAELAB_DATA, which is not set"):
        parse_spec("folder:${VAELAB_DATA}/hymenoptera")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_each_config_builds_and_trains_one_step(path, tmp_path):
    """The config as written (architecture, likelihood, image size, channels), on 2 MNIST-sample digits."""
    from vaelab.data import ImageSet, load
    from vaelab.data.transform import resize_images, to_channels

    cfg = load_config(path, [f"out_dir={tmp_path}", "train.epochs=1", "train.batch_size=2", *QUICK])
    small = load("mnist-sample", classes=cfg.data.classes, val_fraction=0.5, limit=2)
    images = small.images
    if cfg.data.channels:
        images = to_channels(images, cfg.data.channels)
    if cfg.data.image_size:
        images = resize_images(images, cfg.data.image_size)
    data = ImageSet(images, small.labels, small.class_names, small.split_ids, "tiny")
    summary = fit(cfg, data=data, quiet=True)
    assert summary["steps"] == 1 and math.isfinite(summary["last"]["train/loss"])
    run = load_run(summary["run_dir"])
    assert run.model.image_shape == tuple(images.shape[1:])
    assert run.config.model.arch == cfg.model.arch and run.config.model.latent_dim == cfg.model.latent_dim


# ---------------------------------------------------------------------------------------------------------
# several processes, and the demo


def cli_env() -> dict:
    import vaelab

    env = dict(os.environ)
    src = str(Path(vaelab.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    from vaelab.data import from_config

    run = tmp_path / "ddp"
    args = ["data.source=mnist-sample", "data.classes=[1,4,8]", "data.limit=300", "model.hidden=[64]",
            "model.latent_dim=2", "train.epochs=2", "train.batch_size=32", "trainer.devices=2",
            "trainer.strategy=ddp"]
    out = subprocess.run([sys.executable, "-m", "vaelab", "train", *args, "--run-dir", str(run), "--quiet"],
                         env=cli_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    n_train = len(from_config(load_config(None, args).data).split("train"))
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]  # one writer: one line per epoch
    assert all(r["samples_per_rank"] == n_train // 2 for r in rows)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert sorted(p.name for p in (run / "images").iterdir()) == [
        "recon_epoch_1.png", "recon_epoch_2.png", "samples_epoch_1.png", "samples_epoch_2.png"]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    r = load_run(run)
    assert r.model.sample(4).shape == (4, 1, 28, 28)
    assert json.loads(json.dumps(rows[-1]))["val/loss"] < 560
    # resume under DDP continues each rank's own noise: 2 + 1 epochs == 3 straight
    more = subprocess.run([sys.executable, "-m", "vaelab", "train", "--resume", str(run), "train.epochs=3", "--quiet"],
                          env=cli_env(), capture_output=True, text=True, timeout=600)
    assert more.returncode == 0, more.stderr[-3000:]
    straight = tmp_path / "ddp-straight"
    out = subprocess.run([sys.executable, "-m", "vaelab", "train", *args, "train.epochs=3", "--run-dir", str(straight),
                          "--quiet"], env=cli_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert_same_weights(run, straight)


@pytest.mark.slow
def test_demo_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "vaelab", "demo", "--out-dir", str(tmp_path), "--epochs", "1",
                          "--quiet"], env=cli_env(), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == str(tmp_path / "demo" / "report.html")
    assert load_run(tmp_path / "demo").config.data.source == "mnist-sample"
    assert (tmp_path / "demo" / "eval" / "val.json").is_file() and (tmp_path / "demo" / "classify" / "gmm.json").is_file()
    assert "<img" in (tmp_path / "demo" / "report.html").read_text()
