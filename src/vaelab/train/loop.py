"""The training loop: step -> epoch -> fit, on Lightning Fabric, with callbacks for everything else.

Fabric owns devices, precision and distribution; this file owns the loop. Speed comes from keeping the
uint8 dataset on the training device and slicing batches by index (no DataLoader, no per-sample
``__getitem__``), converting each batch to float on the fly, and syncing with the host only every
``train.log_every`` steps.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..config import Config, dump_config, to_dict, validate
from ..data import ImageSet, from_config, to_float
from ..errors import VaelabError
from ..models import build, resolve, vae_loss
from ..run import CHECKPOINTS, CONFIG_FILE
from .checkpoint import atomic_write, load_checkpoint, rng_state, save_checkpoint, set_rng_state


class TrainingInterrupted(VaelabError):
    """SIGINT/SIGTERM during training: a checkpoint was saved; the message says how to resume."""

    def __init__(self, message: str, hint: str, signum: int):
        super().__init__(message, hint)
        self.signum = signum


class TrainingDiverged(VaelabError):
    """The loss or the gradients became NaN/inf; the last good checkpoint is kept."""


@dataclass
class TrainState:
    """Where the loop is; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch_in_epoch: int = 0  # batches done in the current epoch (> 0 only in an interrupted checkpoint)
    best_val: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best validation loss (early stopping)
    skipped_batches: int = 0
    train_time: float = 0.0  # seconds spent in fit, summed over resumes
    stop_reason: str = ""


@dataclass
class Context:
    """What callbacks see: the run, the (unwrapped) model and the data, plus the loop's state."""

    cfg: Config
    run_dir: Path
    model: torch.nn.Module
    data: ImageSet
    state: TrainState
    fabric: object
    history: list[dict] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return self.fabric.device


# ---------------------------------------------------------------------------------------------------------
# pieces


def kl_weight(cfg: Config, step: int, steps_per_epoch: int) -> float:
    """beta times the linear KL warm-up factor (0 -> 1 over warmup_steps, or warmup_epochs of steps)."""
    warm = cfg.train.warmup_steps or int(round(cfg.train.warmup_epochs * steps_per_epoch))
    factor = 1.0 if warm <= 0 else min(1.0, step / warm)
    return cfg.model.beta * factor


def make_optimizer(cfg: Config, model: torch.nn.Module, steps_per_epoch: int):
    kind = torch.optim.AdamW if cfg.train.optimizer == "adamw" else torch.optim.Adam
    optimizer = kind(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    if cfg.train.schedule == "cosine":
        total = max(1, cfg.train.epochs * steps_per_epoch)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    elif cfg.train.schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
    else:
        scheduler = None
    return optimizer, scheduler


def epoch_order(n: int, seed: int, epoch: int, rank: int, world: int) -> torch.Tensor:
    """This rank's shard of a permutation that depends only on (seed, epoch): resumable without state."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    per_rank = n // world if world > 1 else n
    return perm[rank * per_rank : (rank + 1) * per_rank]


def split_tensors(data: ImageSet, split: str, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    part = data.split(split)
    labels = part.labels.to(device) if part.labels is not None else None
    return part.images.to(device), labels


@torch.no_grad()
def evaluate_terms(model, images: torch.Tensor, labels, cfg: Config, fabric=None, seed: int = 0) -> dict[str, float]:
    """Mean loss terms per image over a set (one z sample each, with a fixed seed so epochs compare).

    Under DDP each rank scores its shard and the sums are all-reduced. The global RNG is untouched.
    """
    was_training = model.training
    model.eval()
    rank, world = (fabric.global_rank, fabric.world_size) if fabric is not None else (0, 1)
    n = images.shape[0]
    idx = torch.arange(rank, n, world, device=images.device)
    sums = torch.zeros(4, dtype=torch.float64, device=images.device)
    bs = cfg.train.eval_batch_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for s in range(0, len(idx), bs):
            b = idx[s : s + bs]
            x = to_float(images[b])
            y = labels[b] if labels is not None and cfg.model.conditional else None
            t = vae_loss(model, x, y, kl_weight=cfg.model.beta)
            k = len(b)
            sums += torch.stack([t.recon * k, t.kl * k, t.elbo_loss * k, torch.tensor(float(k), device=sums.device)]).double()
    if world > 1:
        sums = fabric.all_reduce(sums, reduce_op="sum")
    model.train(was_training)
    recon, kl, elbo, count = (sums / sums[3].clamp(min=1)).tolist()[:3] + [float(sums[3])]
    return {"loss": recon + cfg.model.beta * kl, "recon": recon, "kl": kl, "elbo": elbo, "n": int(count)}


# ---------------------------------------------------------------------------------------------------------
# signals: finish the current batch, save, exit cleanly


class _StopFlag:
    """SIGINT/SIGTERM handler for the whole of `fit`.

    Before training starts (``armed`` False: data loading, model building) there is nothing to save, so a
    signal stops at once. Once armed, it only sets ``signum``: the loop finishes the current batch, saves a
    checkpoint and exits cleanly. A second signal stops at once (the atomic save keeps the old checkpoint).
    """

    def __init__(self):
        self.signum: int | None = None
        self.armed = False
        self._old: dict[int, object] = {}
        self._outer: _StopFlag | None = None

    def __enter__(self):
        import threading

        global _ACTIVE_STOP
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        self._outer, _ACTIVE_STOP = _ACTIVE_STOP, self
        return self

    def _handle(self, signum, frame):
        first = self.signum is None
        self.signum = signum if first else self.signum
        if not self.armed:
            raise _StoppedEarly()
        if not first:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        global _ACTIVE_STOP
        for sig, old in self._old.items():
            signal.signal(sig, old)
        _ACTIVE_STOP = self._outer


_ACTIVE_STOP: _StopFlag | None = None  # the flag `fit` installed in this process (spawned DDP workers have none)


# ---------------------------------------------------------------------------------------------------------
# the loop


def _checkpoint_state(ctx: Context, optimizer, scheduler) -> dict:
    scaler = getattr(getattr(ctx.fabric, "_precision", None), "scaler", None)
    return {
        "model": ctx.model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
        "epoch": ctx.state.epoch,
        "step": ctx.state.step,
        "train_state": asdict(ctx.state),
        "config": to_dict(ctx.cfg),
    }


def _save(ctx: Context, optimizer, scheduler, names: tuple[str, ...] = ("last",)) -> None:
    """Write the checkpoint(s) atomically. Non-finite weights are never written over a good checkpoint,
    and a failed write (disk full) leaves the previous one whole and becomes one clear error."""
    if not ctx.fabric.is_global_zero:
        return
    tensors = [t for t in ctx.model.state_dict().values() if t.is_floating_point()]
    if tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):  # one host sync
        raise _diverged_error(ctx, f"the weights became NaN/inf by step {ctx.state.step}")
    state = _checkpoint_state(ctx, optimizer, scheduler)
    for name in names:
        path = ctx.run_dir / CHECKPOINTS / f"{name}.ckpt"
        try:
            save_checkpoint(path, state)
        except OSError as e:
            raise _save_error(e, path, ctx.run_dir) from None


def _save_error(e: OSError, path: Path, run_dir: Path) -> VaelabError:
    """'disk full while saving ...': says whether a previous checkpoint survived and how to go on."""
    last = run_dir / CHECKPOINTS / "last.ckpt"
    kept = last.is_file()
    what = "disk full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else f"cannot write ({e.strerror or e})"
    msg = f"{what} while saving {path}; " + ("the previous checkpoint is intact" if kept else "no checkpoint was kept")
    hint = (
        f"free some space, then resume with: vaelab train --resume {run_dir}"
        if kept
        else "free some space or choose another out_dir, then start again"
    )
    return VaelabError(msg, hint)


def _diverged_error(ctx: Context, detail: str) -> TrainingDiverged:
    kept = (ctx.run_dir / CHECKPOINTS / "last.ckpt").is_file()
    where = f"the last good checkpoint is kept in {ctx.run_dir / CHECKPOINTS}" if kept else "no epoch finished, so no checkpoint was kept"
    return TrainingDiverged(
        f"training diverged: {detail}; {where}",
        f"lower train.lr (now {ctx.cfg.train.lr:g}), set train.grad_clip=1.0, or train.on_nan=skip_batch",
    )


def train_epoch(ctx: Context, model, optimizer, scheduler, images, labels, stop: _StopFlag, callbacks) -> dict:
    """One pass over this rank's shard of the training set; returns the epoch's mean loss terms."""
    cfg, state, fabric = ctx.cfg, ctx.state, ctx.fabric
    model.train()
    order = epoch_order(images.shape[0], cfg.train.seed, state.epoch, fabric.global_rank, fabric.world_size)
    order = order.to(images.device)
    bs = cfg.train.batch_size
    n_batches = math.ceil(len(order) / bs)
    sums = torch.zeros(4, device=images.device)  # recon, kl, loss, images (device-side: no sync per step)
    grad_norms: list[float] = []
    per_step_lr = cfg.train.schedule == "cosine"
    for b in range(state.batch_in_epoch, n_batches):
        if stop.signum is not None:
            state.batch_in_epoch = b
            raise _Interrupt()
        idx = order[b * bs : (b + 1) * bs]
        x = to_float(images[idx])  # (B, C, H, W) float in [0, 1], made on the device from uint8
        if cfg.train.binarize:
            x = torch.bernoulli(x)
        y = labels[idx] if labels is not None and cfg.model.conditional else None
        w = kl_weight(cfg, state.step, n_batches)
        terms = vae_loss(model, x, y, kl_weight=w, free_bits=cfg.model.free_bits)
        if cfg.train.on_nan == "skip_batch" and not torch.isfinite(terms.loss):
            state.skipped_batches += 1
            continue
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(terms.loss)
        norm = None
        if cfg.train.grad_clip:
            norm = fabric.clip_gradients(model, optimizer, max_norm=cfg.train.grad_clip, error_if_nonfinite=False)
        if cfg.train.on_nan == "skip_batch":
            norm = _grad_norm(model) if norm is None else norm
            if not torch.isfinite(norm):
                state.skipped_batches += 1
                optimizer.zero_grad(set_to_none=True)
                continue
        optimizer.step()
        if scheduler is not None and per_step_lr:
            scheduler.step()
        state.step += 1
        k = x.shape[0]
        sums += torch.stack([terms.recon.detach() * k, terms.kl.detach() * k, terms.loss.detach() * k,
                             torch.tensor(float(k), device=sums.device)])
        if state.step % cfg.train.log_every == 0 or b == n_batches - 1:
            gn = float(norm if norm is not None else _grad_norm(model))
            loss_now = float(terms.loss.detach())  # the one host sync, every log_every steps
            if not math.isfinite(loss_now) and cfg.train.on_nan == "stop":
                raise _Diverged(f"loss is {loss_now} at epoch {state.epoch + 1}, step {state.step}")
            if not math.isfinite(gn) and cfg.train.on_nan == "stop" and cfg.trainer.precision != "16-mixed":
                # (16-mixed: the grad scaler skips inf steps on its own)
                raise _Diverged(f"gradient norm is {gn} at epoch {state.epoch + 1}, step {state.step}")
            if math.isfinite(gn):
                grad_norms.append(gn)
            for cb in callbacks:
                cb.on_train_batch_end(ctx, b + 1, n_batches, loss_now, w)
    state.batch_in_epoch = 0
    if fabric.world_size > 1:
        sums = fabric.all_reduce(sums, reduce_op="sum")
    recon, kl, loss, count = sums.tolist()
    count = max(count, 1.0)
    out = {"recon": recon / count, "kl": kl / count, "loss": loss / count, "elbo": (recon + kl) / count}
    if not all(math.isfinite(v) for v in out.values()) and cfg.train.on_nan == "stop":
        raise _Diverged(f"loss is {out['loss']} in epoch {state.epoch + 1}")
    out["grad_norm"] = sum(grad_norms) / len(grad_norms) if grad_norms else float("nan")
    out["samples_per_rank"] = len(order)
    return out


def _grad_norm(model) -> torch.Tensor:
    grads = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(grads)) if grads else torch.tensor(0.0)


class _Interrupt(Exception):
    pass


class _Diverged(Exception):
    pass


class _StoppedEarly(Exception):
    """A signal before training began: nothing to save."""


def _make_fabric(cfg: Config):
    from lightning.fabric import Fabric

    world = cfg.trainer.devices * cfg.trainer.num_nodes
    strategy = cfg.trainer.strategy
    if strategy == "ddp" or world > 1:
        launched = any(k in os.environ for k in ("LOCAL_RANK", "SLURM_PROCID", "TORCHELASTIC_RUN_ID"))
        strategy = "ddp" if launched else "ddp_spawn"  # torchrun/SLURM start the processes; else we spawn
    accelerator = cfg.trainer.accelerator
    if cfg.trainer.precision == "16-mixed" and not torch.cuda.is_available():
        raise VaelabError("trainer.precision=16-mixed needs a CUDA GPU", "use trainer.precision=bf16-mixed or 32 on CPU")
    kwargs = {}
    if accelerator in ("auto", "cpu") and not torch.cuda.is_available() and world > 1:
        accelerator = "cpu"  # several CPU processes talk over gloo
    return Fabric(
        accelerator=accelerator,
        devices=cfg.trainer.devices,
        num_nodes=cfg.trainer.num_nodes,
        strategy=strategy,
        precision=cfg.trainer.precision,
        **kwargs,
    )


def fit(
    cfg: Config,
    *,
    data: ImageSet | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: list | None = None,
    quiet: bool = False,
) -> dict:
    """Train a VAE as `cfg` says, writing the run directory; returns a summary dict.

    `run_dir` defaults to a new folder under ``cfg.out_dir``; with ``resume=True`` it must be an existing
    run, which continues exactly where its last checkpoint stopped.
    """
    from .callbacks import default_callbacks
    from .rundir import discard_failed_start, first_missing, lock_run_dir, new_run_dir, prepare_run_dir

    cfg = validate(cfg)
    if resume:
        if run_dir is None:
            raise VaelabError("resume needs the run directory", "vaelab train --resume RUN_DIR")
        run_dir = Path(run_dir)
    else:
        run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
    fabric = _make_fabric(cfg)
    if callbacks is None:
        callbacks = default_callbacks(cfg, quiet=quiet)
    created = None if resume else first_missing(run_dir)
    before = set() if resume or created is not None or not run_dir.is_dir() else set(os.listdir(run_dir))
    with _StopFlag() as stop:
        # spawned DDP workers save on a signal themselves; this process only waits for them
        stop.armed = cfg.trainer.devices * cfg.trainer.num_nodes > 1
        try:
            with lock_run_dir(run_dir, create=not resume):
                try:
                    prepare_run_dir(run_dir, resume=resume)
                    return fabric.launch(_fit, cfg, run_dir, data, resume, callbacks)
                except BaseException:
                    if not resume:  # a start that failed before its first checkpoint leaves nothing behind
                        discard_failed_start(run_dir, created, before)
                    raise
        except _StoppedEarly:
            name = signal.Signals(stop.signum).name
            if resume:
                raise TrainingInterrupted(
                    f"{name}: stopped before training resumed; the checkpoint in {run_dir} is unchanged",
                    f"resume with: vaelab train --resume {run_dir}",
                    stop.signum,
                ) from None
            raise TrainingInterrupted(
                f"{name}: stopped before training began; nothing was saved", "run the same command again to start", stop.signum
            ) from None


def _fit(fabric, cfg: Config, run_dir: Path, data: ImageSet | None, resume: bool, callbacks: list) -> dict:
    import contextlib

    # the flag `fit` installed; a spawned DDP worker installs its own
    with contextlib.nullcontext(_ACTIVE_STOP) if _ACTIVE_STOP is not None else _StopFlag() as stop:
        return _fit_inner(fabric, cfg, run_dir, data, resume, callbacks, stop)


def _fit_inner(fabric, cfg: Config, run_dir: Path, data, resume: bool, callbacks: list, stop: _StopFlag) -> dict:
    fabric.seed_everything(cfg.train.seed, verbose=False)
    torch.backends.cudnn.benchmark = True
    if data is None:
        data = from_config(cfg.data)
    train_data = data.split("train")
    cfg.model = resolve(cfg.model, data)
    has_val = data.has_split("val")
    model = build(cfg.model)
    state = TrainState()
    ckpt = None
    if resume:
        ckpt = load_checkpoint(run_dir / CHECKPOINTS / "last.ckpt")
        saved = ckpt["config"]["model"]
        if saved != to_dict(cfg)["model"]:
            diff = [k for k in saved if saved[k] != to_dict(cfg)["model"].get(k)]
            raise VaelabError(
                f"the checkpoint in {run_dir} was trained with another model config (differs in: {', '.join('model.' + d for d in diff)})",
                "resume without changing model.* keys, or start a new run",
            )
        try:
            model.load_state_dict(ckpt["model"])
            state = TrainState(**ckpt["train_state"])
        except (RuntimeError, KeyError, TypeError):
            raise VaelabError(f"{run_dir}/checkpoints/last.ckpt does not fit this model", "start a new run") from None
    if fabric.is_global_zero:
        text = dump_config(cfg)
        atomic_write(run_dir / CONFIG_FILE, lambda f: f.write(text.encode("utf-8")))  # a kill never tears it
    n_train = len(train_data) // fabric.world_size
    steps_per_epoch = math.ceil(n_train / cfg.train.batch_size)
    optimizer, scheduler = make_optimizer(cfg, model, steps_per_epoch)
    if ckpt is not None:
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError, TypeError):
            raise VaelabError(f"{run_dir}/checkpoints/last.ckpt has an optimizer state of another setup", "resume without changing train.optimizer, or start a new run") from None
        if scheduler is not None and ckpt.get("scheduler") is not None:
            try:
                scheduler.load_state_dict(ckpt["scheduler"])
            except (ValueError, KeyError, TypeError, AttributeError):
                raise VaelabError(f"{run_dir}/checkpoints/last.ckpt has a schedule state of another setup", "resume without changing train.schedule, or start a new run") from None
            if cfg.train.schedule == "cosine":  # a resume may extend train.epochs: stretch the schedule
                scheduler.T_max = max(1, cfg.train.epochs * steps_per_epoch)
        saved_lr = (ckpt.get("config") or {}).get("train", {}).get("lr")
        if saved_lr is not None and saved_lr != cfg.train.lr:  # resume with a new train.lr: apply it
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] = cfg.train.lr
            if scheduler is not None and hasattr(scheduler, "base_lrs"):
                scheduler.base_lrs = [cfg.train.lr for _ in optimizer.param_groups]
    raw_model = model
    if cfg.train.compile:
        model = torch.compile(model)
    model, optimizer = fabric.setup(model, optimizer)
    if ckpt is not None:
        scaler = getattr(getattr(fabric, "_precision", None), "scaler", None)
        try:
            if scaler is not None and ckpt.get("scaler") is not None:
                scaler.load_state_dict(ckpt["scaler"])
            set_rng_state(ckpt["rng"])
        except (ValueError, KeyError, TypeError, RuntimeError, AttributeError):
            raise VaelabError(f"{run_dir}/checkpoints/last.ckpt has damaged random-generator or scaler states", "start a new run") from None
    elif fabric.world_size > 1:
        torch.manual_seed(cfg.train.seed + fabric.global_rank)  # different noise per rank; same init weights
    images, labels = split_tensors(data, "train", fabric.device)
    val_images, val_labels = split_tensors(data, "val", fabric.device) if has_val else (None, None)
    ctx = Context(cfg, run_dir, raw_model, data, state, fabric)
    ctx.history = [r for r in _previous_history(run_dir) if r.get("epoch", 0) <= state.epoch] if resume else []
    live = callbacks if fabric.is_global_zero else []
    for cb in live:
        cb.on_fit_start(ctx)
    start = time.perf_counter()
    time_before = state.train_time
    stop.armed = True  # from here a signal saves a checkpoint at the end of the current batch
    try:
        while state.epoch < cfg.train.epochs:
            t0 = time.perf_counter()
            train_terms = train_epoch(ctx, model, optimizer, scheduler, images, labels, stop, live)
            val_terms = (
                evaluate_terms(model, val_images, val_labels, cfg, fabric, seed=cfg.train.seed)
                if has_val
                else None
            )
            state.epoch += 1
            monitor = val_terms["loss"] if val_terms else train_terms["loss"]
            if scheduler is not None and cfg.train.schedule == "plateau":
                scheduler.step(monitor)
            improved = monitor < state.best_val
            if improved:
                state.best_val, state.best_epoch, state.bad_epochs = monitor, state.epoch, 0
            else:
                state.bad_epochs += 1
            state.train_time = time_before + time.perf_counter() - start
            row = _metrics_row(state, train_terms, val_terms, optimizer, cfg, steps_per_epoch, time.perf_counter() - t0)
            ctx.history.append(row)
            for cb in live:  # files of the epoch first: a crash before the checkpoint redoes the epoch
                cb.on_epoch_end(ctx, row)
            _save(ctx, optimizer, scheduler, ("last", "best") if improved else ("last",))
            if cfg.train.early_stop and state.bad_epochs >= cfg.train.early_stop:
                state.stop_reason = f"early stop: no better validation loss for {state.bad_epochs} epochs"
                break
        else:
            state.stop_reason = "finished"
    except _Interrupt:
        state.train_time = time_before + time.perf_counter() - start
        _close(live, ctx)
        _save(ctx, optimizer, scheduler)
        name = signal.Signals(stop.signum).name
        raise TrainingInterrupted(
            f"{name}: training stopped at epoch {state.epoch + 1}, batch {state.batch_in_epoch}; checkpoint saved in {run_dir}",
            f"resume with: vaelab train --resume {run_dir}",
            stop.signum,
        ) from None
    except _Diverged as e:
        _close(live, ctx)
        raise _diverged_error(ctx, str(e)) from None
    except OSError as e:  # a callback's file (metrics, images, TensorBoard) could not be written
        _close(live, ctx)
        from .rundir import write_error

        raise write_error(e, run_dir) from None
    except BaseException:
        _close(live, ctx)
        raise
    if state.epoch == cfg.train.epochs and not state.stop_reason:
        state.stop_reason = "finished"
    _save(ctx, optimizer, scheduler)  # the final state (stop reason, time) in last.ckpt
    for cb in live:
        cb.on_fit_end(ctx)
    return {
        "run_dir": str(run_dir),
        "epochs": state.epoch,
        "steps": state.step,
        "best_val": state.best_val,
        "best_epoch": state.best_epoch,
        "stop_reason": state.stop_reason,
        "train_time": state.train_time,
        "last": ctx.history[-1] if ctx.history else {},
        "world_size": fabric.world_size,
    }


def _close(callbacks: list, ctx: Context) -> None:
    """Let callbacks release what they hold (progress bar, TensorBoard files) when training stops early."""
    for cb in callbacks:
        try:
            cb.on_fit_end(ctx)
        except Exception:  # noqa: BLE001 - the error that stopped training is the one to report
            pass


def _metrics_row(state, train_terms, val_terms, optimizer, cfg, steps_per_epoch, seconds) -> dict:
    row = {"epoch": state.epoch, "step": state.step}
    for k in ("loss", "recon", "kl", "elbo"):
        row[f"train/{k}"] = train_terms[k]
    if val_terms:
        for k in ("loss", "recon", "kl", "elbo"):
            row[f"val/{k}"] = val_terms[k]
    row["lr"] = optimizer.param_groups[0]["lr"]
    row["kl_weight"] = kl_weight(cfg, state.step, steps_per_epoch)
    row["grad_norm"] = train_terms["grad_norm"]
    row["samples_per_rank"] = train_terms["samples_per_rank"]
    row["skipped_batches"] = state.skipped_batches
    row["epoch_time"] = seconds
    row["time"] = state.train_time
    return row


def _previous_history(run_dir: Path) -> list[dict]:
    from ..run import read_metrics

    return read_metrics(run_dir)
