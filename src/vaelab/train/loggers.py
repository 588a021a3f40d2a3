"""Experiment trackers: `train.logger=tensorboard|csv|wandb|mlflow` (several with commas, `none` for none).

Every logger is a callback (rank 0 only) that sees the same numbers as ``metrics.jsonl``, which stays the
run's own record whatever is chosen. Every scalar goes against one x-axis, the optimizer step (an epoch's
numbers at the step that ended it, with ``epoch`` itself logged as a scalar to read the step as epochs).

- ``tensorboard`` (default): ``RUN/tensorboard``: scalars, the image grids, ``hparams`` (the flattened
  config with the final metrics, so runs and sweep trials compare in the HParams tab:
  ``tensorboard --logdir runs``), the validation latents in the projector at the end, and the metrics
  of each ``vaelab evaluate`` (`log_evaluation`).
- ``csv``: ``RUN/metrics.csv``, one row per epoch (rewritten from the history, so a resume stays exact).
- ``wandb``: a Weights & Biases run (``pip install 'vaelab[wandb]'``; ``WANDB_MODE=offline`` works with no
  account), config, scalars, grids and summary; a resume continues the same W&B run.
- ``mlflow``: an MLflow run (``pip install 'vaelab[mlflow]'``) in ``$MLFLOW_TRACKING_URI``, else the SQLite
  store ``OUT_DIR/mlflow.db`` (artifacts in ``OUT_DIR/mlartifacts``) next to the run folders (MLflow's own default kind of store; its file
  store ``file:./mlruns`` needs ``MLFLOW_ALLOW_FILE_STORE=true`` since MLflow 3); params, metrics, final
  grids; a resume continues the same MLflow run.

The classes keep only plain settings until ``on_fit_start`` (DDP pickles callbacks into the workers).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..config import LOGGERS, flatten, logger_names, to_dict
from .callbacks import Callback, spread

CSV_FILE = "metrics.csv"
MLFLOW_DB = "mlflow.db"  # MLflow's default store: OUT_DIR/mlflow.db (SQLite), shared by the runs of OUT_DIR
MLFLOW_ARTIFACTS = "mlartifacts"  # ...and its artifacts: OUT_DIR/mlartifacts
TENSORBOARD_DIR = "tensorboard"
# the final numbers the HParams tab (and W&B / MLflow summaries) compare runs by
FINAL_METRICS = ("val/loss", "val/elbo", "val/recon", "val/kl", "val/ssim", "train/loss", "train/elbo")
# ...and the numbers a later `vaelab evaluate` adds (TensorBoard keeps the first hparams summary of a run,
# so training declares them; they stay empty until the run is evaluated)
EVAL_METRICS = ("loss/elbo", "nll/nll", "nll/nll_binarized", "recon_quality/ssim", "recon_quality/psnr", "fid/prior", "fid/gmm")
EVAL_TAGS = tuple(f"eval/{split}/{m}" for split in ("test", "val") for m in EVAL_METRICS)


def make_loggers(cfg) -> list[Callback]:
    """The logger callbacks of ``cfg.train.logger``; a missing optional extra fails here, before training."""
    from ..extras import require

    out: list[Callback] = []
    for name in logger_names(cfg.train.logger):
        if name in ("wandb", "mlflow"):
            require(name)
        out.append({"tensorboard": TensorBoard, "csv": CSVLogger, "wandb": WandbLogger, "mlflow": MLflowLogger}[name]())
    return out


def _scalars(row: dict) -> dict[str, float]:
    """The loggable numbers of a metrics row, with slash-free names under epoch/ (lr -> epoch/lr)."""
    out = {}
    for k, v in row.items():
        if k == "step" or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        out[k if "/" in k else f"epoch/{k}"] = float(v)
    return out


def hparams(cfg) -> dict:
    """The flattened config as hparam values TensorBoard, W&B and MLflow take (lists and None as text)."""
    out = {}
    for k, v in flatten(to_dict(cfg)).items():
        out[k] = v if isinstance(v, (bool, int, float, str)) else str(v)
    return out


def final_metrics(ctx) -> dict[str, float]:
    """The last epoch's numbers plus the best validation loss and its epoch."""
    last = ctx.history[-1] if ctx.history else {}
    out = {f"final/{k.replace('/', '_')}": float(last[k]) for k in FINAL_METRICS if isinstance(last.get(k), (int, float))}
    if math.isfinite(ctx.state.best_val):
        out["final/best_val_loss"] = float(ctx.state.best_val)
        out["final/best_epoch"] = float(ctx.state.best_epoch)
    out = {k: v for k, v in out.items() if math.isfinite(v)}
    return out


# ---------------------------------------------------------------------------------------------------------
# TensorBoard


class TensorBoard(Callback):
    """Scalars against the step, image grids, hparams with the final metrics, latents in the projector."""

    def __init__(self, projector_images: int = 1000):
        self.writer = None
        self.projector_images = projector_images

    def on_fit_start(self, ctx):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(ctx.run_dir / TENSORBOARD_DIR), purge_step=ctx.state.step or None)

    def on_train_batch_end(self, ctx, batch, n_batches, loss, kl_weight):
        self.writer.add_scalar("step/loss", loss, ctx.state.step)
        self.writer.add_scalar("step/kl_weight", kl_weight, ctx.state.step)

    def on_epoch_end(self, ctx, row):
        step = row.get("step", ctx.state.step)
        for k, v in _scalars(row).items():
            self.writer.add_scalar(k, v, step)
        for name, grid in getattr(ctx, "latest_grids", {}).items():
            self.writer.add_image(name, grid, step, dataformats="HWC")
        self.writer.flush()

    def on_fit_end(self, ctx):
        if self.writer is None:
            return
        try:
            if ctx.history:
                metrics = final_metrics(ctx)
                for k, v in metrics.items():
                    self.writer.add_scalar(k, v, ctx.state.step)
                write_hparams(self.writer, hparams(ctx.cfg), [*metrics, *EVAL_TAGS])
                self._projector(ctx)
        finally:
            self.writer.close()
            self.writer = None

    @torch.no_grad()
    def _projector(self, ctx) -> None:
        """The validation latent means (up to `projector_images`), labelled, with thumbnails, for the
        projector tab (PCA, t-SNE, UMAP in the browser)."""
        from ..data import to_float
        from ..data.imageset import bounded_batch

        split = "val" if ctx.data.has_split("val") else "train"
        part = ctx.data.split(split)
        idx = spread(len(part), self.projector_images)
        labels = part.labels[idx] if part.labels is not None else None
        model = ctx.model
        was = model.training
        model.eval()
        means, thumbs = [], []
        # in bounded chunks gathered from the split (never the split itself: it may be a memory-mapped
        # folder), so the memory of this step does not grow with the image size or the split's length
        bs = bounded_batch(500, part.shape)
        for s in range(0, len(idx), bs):
            x = to_float(part.gather(idx[s : s + bs]).to(ctx.device))
            y = labels[s : s + bs].to(ctx.device) if labels is not None and model.conditional else None
            means.append(model.encode(x, y).mean.float().cpu())
            if max(x.shape[-2:]) > 32:  # the sprite holds every thumbnail in one image
                x = torch.nn.functional.interpolate(x, size=(32, 32), mode="area")
            thumbs.append(x.cpu())
        model.train(was)
        z = torch.cat(means)
        if not torch.isfinite(z).all():
            return
        thumbs = torch.cat(thumbs)
        names = part.class_names
        meta = [names[int(k)] if names and int(k) < len(names) else str(int(k)) for k in labels] if labels is not None else None
        self.writer.add_embedding(z, metadata=meta, label_img=thumbs, global_step=ctx.state.step, tag=f"latents_{split}")


def write_hparams(writer, hp: dict, metric_tags: list[str]) -> None:
    """The hparams summaries into the run's own event file (not a sub-run, as SummaryWriter.add_hparams
    makes), so the HParams tab reads the metric tags' last values from the same run."""
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    exp, start, end = hparams_summary(hp, dict.fromkeys(metric_tags, 0.0))
    fw = writer._get_file_writer()
    for summary in (exp, start, end):
        fw.add_summary(summary)
    writer.flush()


def _numbers(data, prefix: str = "", depth: int = 0) -> dict[str, float]:
    """Numeric leaves of an evaluation result (loss terms, NLL, SSIM, FID ...), not per class or image."""
    out: dict[str, float] = {}
    if not isinstance(data, dict) or depth > 2:
        return out
    for k, v in data.items():
        if k in ("per_image", "per_class", "seconds", "model", "seed", "epoch", "n_images", "binarize_seed", "n_generated",
                 "n_real", "gmm_components", "temperature", "feature_net"):
            continue
        if isinstance(v, dict):
            out.update(_numbers(v, f"{prefix}{k}/", depth + 1))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[f"{prefix}{k}"] = float(v)
    return out


def log_evaluation(run_dir: str | Path, result: dict) -> int:
    """`vaelab evaluate`'s numbers into the run's TensorBoard as ``eval/<split>/...`` at the run's last step
    (the HParams tab shows those of `EVAL_TAGS` next to the final training metrics). Nothing when the run
    has no tensorboard/ folder (another train.logger). Returns how many scalars were written."""
    run_dir = Path(run_dir)
    if not (run_dir / TENSORBOARD_DIR).is_dir():
        return 0
    from torch.utils.tensorboard import SummaryWriter

    from ..run import read_metrics

    history = read_metrics(run_dir)
    step = int(history[-1].get("step", 0)) if history else 0
    split = result.get("split") or "test"
    values = {f"eval/{split}/{k}": v for k, v in _numbers(result).items()}
    with SummaryWriter(str(run_dir / TENSORBOARD_DIR)) as writer:
        for k, v in values.items():
            writer.add_scalar(k, v, step)
    return len(values)


# ---------------------------------------------------------------------------------------------------------
# CSV


class CSVLogger(Callback):
    """RUN/metrics.csv: one row per epoch, columns the union of the rows' keys (rewritten each epoch)."""

    def on_fit_start(self, ctx):
        self._write(ctx)

    def on_epoch_end(self, ctx, row):
        self._write(ctx)

    def _write(self, ctx) -> None:
        import csv
        import io

        from .checkpoint import atomic_write

        rows = ctx.history
        columns: list[str] = []
        for r in rows:
            columns += [k for k in r if k not in columns]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
        data = buf.getvalue().encode("utf-8")
        atomic_write(ctx.run_dir / CSV_FILE, lambda f: f.write(data))


# ---------------------------------------------------------------------------------------------------------
# Weights & Biases, MLflow


def _saved_id(run_dir: Path, key: str) -> str | None:
    path = run_dir / "loggers.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def _save_id(run_dir: Path, key: str, value: str) -> None:
    from .checkpoint import atomic_write

    path = run_dir / "loggers.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data = data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        data = {}
    data[key] = value
    text = json.dumps(data, indent=2).encode()
    atomic_write(path, lambda f: f.write(text))


class WandbLogger(Callback):
    """A W&B run named after the run folder, in project ``train.logger_project``; files under RUN/wandb."""

    def __init__(self):
        self.run = None

    def on_fit_start(self, ctx):
        import uuid

        import wandb

        run_id = _saved_id(ctx.run_dir, "wandb_run_id") or uuid.uuid4().hex[:8]
        self.run = wandb.init(
            project=ctx.cfg.train.logger_project,
            name=ctx.run_dir.name,
            id=run_id,
            resume="allow",
            dir=str(ctx.run_dir),
            config=hparams(ctx.cfg),
            reinit="finish_previous",
        )
        _save_id(ctx.run_dir, "wandb_run_id", run_id)
        self.run.define_metric("*", step_metric="trainer/step")

    def on_train_batch_end(self, ctx, batch, n_batches, loss, kl_weight):
        self.run.log({"step/loss": loss, "step/kl_weight": kl_weight, "trainer/step": ctx.state.step})

    def on_epoch_end(self, ctx, row):
        import wandb

        data = dict(_scalars(row), **{"trainer/step": row.get("step", ctx.state.step)})
        for name, grid in getattr(ctx, "latest_grids", {}).items():
            data[f"images/{name}"] = wandb.Image(grid)
        self.run.log(data)

    def on_fit_end(self, ctx):
        if self.run is None:
            return
        try:
            if ctx.history:
                self.run.summary.update(final_metrics(ctx))
        finally:
            self.run.finish()
            self.run = None


class MLflowLogger(Callback):
    """An MLflow run named after the run folder in experiment ``train.logger_project``."""

    def __init__(self):
        self.client = None
        self.run_id = None

    def on_fit_start(self, ctx):
        import os

        from mlflow.tracking import MlflowClient

        out_dir = ctx.run_dir.resolve().parent
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        # our default store keeps its artifacts beside it (MLflow's default is ./mlartifacts of the cwd)
        artifacts = None if uri else (out_dir / MLFLOW_ARTIFACTS).as_uri()
        uri = uri or f"sqlite:///{out_dir / MLFLOW_DB}"
        self.client = MlflowClient(tracking_uri=uri)
        name = ctx.cfg.train.logger_project
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name, artifact_location=artifacts)
        run_id = _saved_id(ctx.run_dir, "mlflow_run_id")
        if run_id is not None:
            try:
                self.client.update_run(run_id, status="RUNNING")
            except Exception:  # noqa: BLE001 - another store, or the run was deleted: start a new one
                run_id = None
        if run_id is None:
            run = self.client.create_run(exp_id, run_name=ctx.run_dir.name, tags={"vaelab.run_dir": str(ctx.run_dir.resolve())})
            run_id = run.info.run_id
            hp = hparams(ctx.cfg)
            from mlflow.entities import Param

            params = [Param(k, str(v)[:500]) for k, v in hp.items()]
            for s in range(0, len(params), 100):
                self.client.log_batch(run_id, params=params[s : s + 100])
        self.run_id = run_id
        _save_id(ctx.run_dir, "mlflow_run_id", run_id)
        _save_id(ctx.run_dir, "mlflow_tracking_uri", uri)

    def _log(self, values: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def on_train_batch_end(self, ctx, batch, n_batches, loss, kl_weight):
        self._log({"step/loss": loss, "step/kl_weight": kl_weight}, ctx.state.step)

    def on_epoch_end(self, ctx, row):
        self._log(_scalars(row), row.get("step", ctx.state.step))

    def on_fit_end(self, ctx):
        if self.client is None:
            return
        try:
            if ctx.history:
                self._log(final_metrics(ctx), ctx.state.step)
                images = ctx.run_dir / "images"
                last = ctx.history[-1]["epoch"]
                for name in ("recon", "samples"):
                    png = images / f"{name}_epoch_{last}.png"
                    if png.is_file():
                        self.client.log_artifact(self.run_id, str(png), "images")
            finished = bool(ctx.state.stop_reason)
            self.client.set_terminated(self.run_id, status="FINISHED" if finished else "KILLED")
        finally:
            self.client = None


__all__ = [
    "CSV_FILE", "CSVLogger", "EVAL_TAGS", "LOGGERS", "MLflowLogger", "TensorBoard", "WandbLogger", "final_metrics", "hparams",
    "log_evaluation", "logger_names", "make_loggers", "write_hparams",
]
