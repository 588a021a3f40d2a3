"""Callbacks: everything the loop does besides optimising (metrics file, trackers (loggers.py), image grids, latent
snapshots, progress). Each sees the loop's `Context`; they run on rank 0 only and never touch the global
RNG, so a resumed run stays identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import torch

from ..data import to_float
from ..run import METRICS_FILE
from .checkpoint import atomic_write


def spread(n: int, k: int) -> torch.Tensor:
    """min(n, k) indices evenly spaced over 0..n-1 (all of them when n <= k)."""
    if n <= k:
        return torch.arange(n)
    return torch.linspace(0, n - 1, k).round().long()


def val_loss_terms(row: dict, model_cfg) -> str:
    """What a metrics row's val/loss adds up from: 'recon R + kl K', with beta and the SSIM term when set."""
    beta, gamma = model_cfg.beta, model_cfg.ssim_weight
    objective = getattr(model_cfg, "objective", "elbo")
    if objective in ("mmd", "rae", "vq"):  # a regularised autoencoder: recon plus its own terms (extra columns)
        return f"{objective} loss; recon {row['val/recon']:.2f}"
    if objective in ("tc", "factor", "dip"):  # the ELBO's terms and the objective's own (per image, nats)
        g = lambda k: row.get(f"val/{k}", float("nan"))  # noqa: E731
        own = {
            "tc": f"mi {g('mi'):.2f} + {beta:g} x tc {g('tc'):.2f} + dwkl {g('dwkl'):.2f}",
            "factor": f"{'' if beta == 1 else f'{beta:g} x '}kl {g('kl'):.2f} + {model_cfg.gamma:g} x tc {g('tc'):.2f}",
            "dip": f"{'' if beta == 1 else f'{beta:g} x '}kl {g('kl'):.2f} + dip {g('dip'):.2f}",
        }[objective]
        return f"recon {g('recon'):.2f} + {own}"
    if objective != "elbo":  # an importance-weighted bound is not a sum of terms: name it, give the ELBO's beside
        k = f"K={model_cfg.iw_samples}" + (f", M={model_cfg.iw_groups}" if objective in ("miwae", "piwae") else "")
        return f"-{objective} bound, {k}; ELBO terms: recon {row['val/recon']:.2f} + kl {row['val/kl']:.2f}"
    text = f"recon {row['val/recon']:.2f} + {'' if beta == 1 else f'{beta:g} x '}kl {row['val/kl']:.2f}"
    if gamma > 0 and "val/ssim" in row:
        text += f" + {gamma:g} x (1 - SSIM {row['val/ssim']:.4f})"
    return text


class Callback:
    def on_fit_start(self, ctx) -> None: ...

    def on_train_batch_end(self, ctx, batch: int, n_batches: int, loss: float, kl_weight: float) -> None: ...

    def on_epoch_end(self, ctx, row: dict) -> None: ...

    def on_fit_end(self, ctx) -> None: ...


class MetricsFile(Callback):
    """metrics.jsonl: one JSON line per epoch. On resume the file is rewritten to the checkpoint's epochs."""

    def on_fit_start(self, ctx):
        path = ctx.run_dir / METRICS_FILE
        text = "".join(json.dumps(r) + "\n" for r in ctx.history)
        atomic_write(path, lambda f: f.write(text.encode()))

    def on_epoch_end(self, ctx, row):
        with open(ctx.run_dir / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(_jsonable(row)) + "\n")


def _jsonable(row: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


class ImageSnapshots(Callback):
    """images/recon_epoch_N.png (fixed validation images above their reconstructions) and
    samples_epoch_N.png (fixed prior draws), every `train.images_every` epochs, each titled with its epoch
    and its rows labelled (input / recon)."""

    def __init__(self, n_recon: int = 16, n_samples: int = 64, scale: int = 2):
        self.n_recon, self.n_samples, self.scale = n_recon, n_samples, scale

    def on_fit_start(self, ctx):
        split = "val" if ctx.data.has_split("val") else "train"
        part = ctx.data.split(split)
        self.split = split
        idx = spread(len(part), self.n_recon)  # across the split, not its first rows (often one class)
        self.x = to_float(part.gather(idx).to(ctx.device))
        self.y = part.labels[idx].to(ctx.device) if part.labels is not None else None
        k = ctx.model.num_classes
        self.per_class = 0
        self.labels = None
        if ctx.model.conditional and k <= 16:  # one row per class, labelled with its name
            self.per_class = min(16, max(4, self.n_samples // k))
            self.labels = torch.arange(k).repeat_interleave(self.per_class).to(ctx.device)
        elif ctx.model.conditional:
            self.labels = (torch.arange(self.n_samples) % k).to(ctx.device)
        ctx.latest_grids = {}

    def _scale(self, grid) -> int:
        """Pixels per image pixel: small images (8 px) drawn 4x, large grids as they are."""
        return 1 if grid.shape[0] >= 400 else max(self.scale, min(4, 32 // self.x.shape[-1]))

    @torch.no_grad()
    def on_epoch_end(self, ctx, row):
        every = ctx.cfg.train.images_every
        if not every or row["epoch"] % every:
            return
        from ..visualize.grid import labelled_png, make_grid

        model = ctx.model
        was = model.training
        model.eval()
        y = self.y if model.conditional else None
        recon = model.reconstruct(self.x, y)
        n = len(self.x)
        cols = min(n, 8)
        pairs = []
        for s in range(0, n, cols):  # a row of originals, then the row of their reconstructions
            pairs += [self.x[s : s + cols], recon[s : s + cols]]
        recon_grid = make_grid(torch.cat(pairs), nrow=cols)
        g = torch.Generator().manual_seed(1234)  # the same prior draws every epoch (a learned prior moves them)
        n = len(self.labels) if self.labels is not None else self.n_samples
        z = model.prior.sample(n, self.labels, generator=g).to(ctx.device)
        samples = model.generate(z, self.labels)
        nrow = self.per_class or 8
        sample_grid = make_grid(samples, nrow=nrow)
        model.train(was)
        out = ctx.run_dir / "images"
        out.mkdir(exist_ok=True)
        epoch, split = row["epoch"], self.split
        h, w = self.x.shape[2:]
        band = [(2 + r * (h + 2), 2 + r * (h + 2) + h, "input" if r % 2 == 0 else "recon") for r in range(len(pairs))]
        recon_png = labelled_png(
            recon_grid, f"epoch {epoch}: {split} inputs above their reconstructions", band, scale=self._scale(recon_grid)
        )
        rows = None
        if self.per_class:
            names = list(ctx.data.class_names) or [str(k) for k in range(model.num_classes)]
            rows = [(2 + r * (h + 2), 2 + r * (h + 2) + h, str(names[r])[:12]) for r in range(model.num_classes)]
        what = "one row per class" if rows else "the same draws every epoch"
        samples_png = labelled_png(sample_grid, f"epoch {epoch}: samples from the prior ({what})", rows, scale=self._scale(sample_grid))
        for name, data in (("recon", recon_png), ("samples", samples_png)):
            atomic_write(out / f"{name}_epoch_{epoch}.png", lambda f, d=data: f.write(d))
        ctx.latest_grids = {"recon": recon_grid, "samples": sample_grid}


class LatentSnapshots(Callback):
    """latents/epoch_N.npz: the validation latent means (up to `limit` images) and labels each epoch,
    for the scatter animation over epochs."""

    def __init__(self, limit: int = 2000):
        self.limit = limit

    def on_fit_start(self, ctx):
        self.images = None
        if not ctx.cfg.train.save_latents:
            return
        split = "val" if ctx.data.has_split("val") else "train"
        part = ctx.data.split(split)
        idx = spread(len(part), self.limit)
        self.images = part.gather(idx).to(ctx.device)
        self.labels = part.labels[idx] if part.labels is not None else None

    @torch.no_grad()
    def on_epoch_end(self, ctx, row):
        if self.images is None:  # train.save_latents is off
            return
        model = ctx.model
        was = model.training
        model.eval()
        means = []
        y_all = self.labels.to(ctx.device) if self.labels is not None and model.conditional else None
        from ..data.imageset import bounded_batch

        bs = bounded_batch(500, self.images.shape[1:])
        for s in range(0, len(self.images), bs):
            y = y_all[s : s + bs] if y_all is not None else None
            means.append(model.encode(to_float(self.images[s : s + bs]), y).mean.float().cpu())
        model.train(was)
        arrays = {"z": torch.cat(means).numpy().astype(np.float32)}
        if self.labels is not None:
            arrays["labels"] = self.labels.numpy()
        out = ctx.run_dir / "latents"
        out.mkdir(exist_ok=True)

        def write(f):
            np.savez_compressed(f, **arrays)

        atomic_write(out / f"epoch_{row['epoch']}.npz", write)


class Progress(Callback):
    """A rich progress bar per epoch with the live loss (only on a terminal), and one line per epoch."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream  # resolved in on_fit_start: callbacks are pickled into DDP workers
        self.bar = None
        self.task = None

    def on_fit_start(self, ctx):
        if self.quiet:
            return
        from rich.console import Console

        self.console = Console(file=self.stream or sys.stdout)
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.bar.start()

    def on_train_batch_end(self, ctx, batch, n_batches, loss, kl_weight):
        if self.bar is None:
            return
        epoch = f"{ctx.state.epoch + 1}/{ctx.cfg.train.epochs}"
        if self.task is None:
            self.task = self.bar.add_task("train", total=n_batches, epoch=epoch, loss=f"{loss:.2f}")
        self.bar.update(self.task, completed=batch, total=n_batches, epoch=epoch, loss=f"{loss:.2f}")

    def on_epoch_end(self, ctx, row):
        if self.quiet:
            return
        if self.bar is not None and self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None
        val = (
            f"  val {row['val/loss']:.2f} ({val_loss_terms(row, ctx.cfg.model)})"
            if "val/loss" in row
            else ""
        )
        self.console.print(
            f"epoch {row['epoch']}/{ctx.cfg.train.epochs}  train {row['train/loss']:.2f}{val}  "
            f"lr {row['lr']:.2g}  {row['epoch_time']:.1f}s",
            highlight=False,
        )

    def on_fit_end(self, ctx):
        if self.bar is not None:
            self.bar.stop()


def default_callbacks(cfg, quiet: bool = False) -> list[Callback]:
    """metrics.jsonl, image grids, latents, the trackers of ``train.logger`` (loggers.py), progress."""
    from .loggers import make_loggers

    return [MetricsFile(), ImageSnapshots(), LatentSnapshots(), *make_loggers(cfg), Progress(quiet=quiet)]


def __getattr__(name: str):
    if name == "TensorBoard":  # moved to loggers.py with the other trackers
        from .loggers import TensorBoard

        return TensorBoard
    raise AttributeError(name)

