"""The training loop: step -> epoch -> fit, on Lightning Fabric, with callbacks for everything else.

Fabric owns devices, precision and distribution; this file owns the loop. Speed comes from keeping the
uint8 dataset on the training device (or memory-mapped, for sets larger than RAM) and gathering batches by
index (no DataLoader, no per-sample ``__getitem__``), converting each batch to float on the fly, and syncing
with the host only every ``train.log_every`` steps.
"""

from __future__ import annotations

import copy
import errno
import math
import os
import re
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..anomaly.scores import perturb
from ..config import Config, dump_config, to_dict, validate
from ..data import ImageSet, from_config, to_float
from ..data.imageset import Images, bounded_batch
from ..data.memory import DATA_FILE, MEMORY_SOURCE, save_npz, saved_run_data
from ..errors import VaelabError, shell
from ..models import OBJECTIVES, build, resolve
from ..run import CHECKPOINTS, CONFIG_FILE
from .checkpoint import (
    atomic_write,
    link_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


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
    partial: list[float] = field(default_factory=list)  # an interrupted epoch's sums: recon, kl, loss, images, grad-norm sum, count[, extra images, extra terms]
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
    aux_optimizers: list = field(default_factory=list)  # optimizers of the objective's own modules (FactorVAE's discriminator)

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


def make_optimizer(cfg: Config, model: torch.nn.Module, steps_per_epoch: int, device: torch.device | None = None):
    """Adam/AdamW (fused kernel where torch has one for the device) and the lr schedule."""
    kind = torch.optim.AdamW if cfg.train.optimizer == "adamw" else torch.optim.Adam
    # the objective's auxiliary module (model.aux) has its own optimizer (make_aux_optimizers)
    params = [p for name, p in model.named_parameters() if not name.startswith("aux.")]
    device = torch.device(device) if device is not None else params[0].device
    # the fused kernel updates every tensor in one pass: the Python loop over parameters dominates small models
    fast = {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}
    optimizer = kind(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, **fast)
    if cfg.train.schedule == "cosine":
        total = max(1, cfg.train.epochs * steps_per_epoch)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    elif cfg.train.schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
    else:
        scheduler = None
    return optimizer, scheduler


def make_aux_optimizers(cfg: Config, model: torch.nn.Module) -> list:
    """One Adam per auxiliary module of the objective (none for most): FactorVAE's discriminator at
    model.disc_lr with betas (0.5, 0.9) (Kim & Mnih 2018, appendix)."""
    aux = getattr(model, "aux", None)
    if aux is None:
        return []
    return [torch.optim.Adam(aux.parameters(), lr=cfg.model.disc_lr, betas=(0.5, 0.9))]


def epoch_order(n: int, seed: int, epoch: int, rank: int, world: int) -> torch.Tensor:
    """This rank's shard of a permutation that depends only on (seed, epoch): resumable without state."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    per_rank = n // world if world > 1 else n
    return perm[rank * per_rank : (rank + 1) * per_rank]


class ShardFeed:
    """The train split of a `ShardSet` as the loop reads it: this rank's batches, epoch by epoch."""

    def __init__(self, data, cfg: Config, fabric):
        self.data, self.cfg = data, cfg
        self.rank, self.world = fabric.global_rank, fabric.world_size
        self.device = fabric.device
        self.per_rank = data.images_per_rank("train", self.world)

    def n_batches(self, batch_size: int) -> int:
        return math.ceil(self.per_rank / batch_size)

    def epoch(self, epoch: int, batch_size: int, skip: int = 0):
        return self.data.batches(
            "train", batch_size, rank=self.rank, world=self.world, seed=self.cfg.train.seed, epoch=epoch,
            workers=self.cfg.data.workers, shuffle_buffer=self.cfg.data.shuffle_buffer, skip=skip,
        )


def split_tensors(data: ImageSet, split: str, device) -> tuple[Images, torch.Tensor | None]:
    """A split's images as a view that gathers batches by index (from RAM, the device, or the memory-mapped
    file: no copy of the split is made), and its labels on the device."""
    part = data.split(split)
    labels = part.labels.to(device) if part.labels is not None else None
    return part.pixels.to(device), labels


@torch.no_grad()
def evaluate_terms(model, images: torch.Tensor, labels, cfg: Config, fabric=None, seed: int = 0) -> dict[str, float]:
    """Mean loss terms per image over a set (one z sample each, with a fixed seed so epochs compare).

    ``loss`` is recon + beta * KL, plus the SSIM term when the model trains with one (then ``ssim``, the mean
    SSIM of the one-sample reconstructions, is returned too): the objective training minimizes, without
    its schedules (KL warm-up, free bits), so the best epoch is chosen on it.
    Under DDP each rank scores its shard and the sums are all-reduced. The global RNG is untouched.
    """
    was_training = model.training
    model.eval()
    rank, world = (fabric.global_rank, fabric.world_size) if fabric is not None else (0, 1)
    n = images.shape[0]
    idx = torch.arange(rank, n, world, device=images.device)
    sums = torch.zeros(6, dtype=torch.float64, device=images.device)  # recon, kl, elbo, loss, ssim (x k), k
    extra: dict[str, torch.Tensor] = {}  # further terms of the objective (e.g. kl_1, kl_2), x k
    objective = OBJECTIVES[cfg.model.objective]
    bs = bounded_batch(cfg.train.eval_batch_size, images.shape[1:])
    gamma = cfg.model.ssim_weight
    devices = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=images.device.type):
        torch.manual_seed(seed)
        for s in range(0, len(idx), bs):
            b = idx[s : s + bs]
            x = to_float(images[b])
            y = labels[b] if labels is not None and cfg.model.conditional else None
            t = objective(model, x, y, kl_weight=cfg.model.beta, ssim_weight=gamma)
            k = len(b)
            for name, v in t.extra.items():
                extra[name] = extra.get(name, 0.0) + v.double() * k
            ssim = t.ssim if t.ssim is not None else torch.zeros((), device=sums.device)
            one = torch.ones((), device=sums.device)
            sums += torch.stack([t.recon, t.kl, t.elbo_loss, t.loss, ssim, one]).double() * k
    names = sorted(extra)
    if names:
        sums = torch.cat([sums, torch.stack([extra[n] for n in names])])
    if world > 1:
        sums = fabric.all_reduce(sums, reduce_op="sum")
    model.train(was_training)
    count = float(sums[5])
    recon, kl, elbo, loss, ssim = (sums[:5] / max(count, 1.0)).tolist()
    out = {"loss": loss, "recon": recon, "kl": kl, "elbo": elbo, "n": int(count)}
    out.update({n: float(v) / max(count, 1.0) for n, v in zip(names, sums[6:].tolist(), strict=True)})
    if gamma > 0:
        out["ssim"] = ssim
    return out


# ---------------------------------------------------------------------------------------------------------
# signals: finish the current batch, save, exit cleanly


class _StopFlag:
    """SIGINT/SIGTERM handler for the whole of `fit`.

    Before training starts (``armed`` False: data loading, model building) there is nothing to save, so a
    signal stops at once. Once armed, it only sets ``signum``: the loop finishes the current batch, saves a
    checkpoint and exits cleanly. A second signal stops at once (the atomic save keeps the old checkpoint).
    While spawned DDP workers run, `_ParentSignals` stands in for it in the launching process.
    """

    def __init__(self, armed: bool = False):
        self.signum: int | None = None
        self.armed = armed
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


class _ParentSignals:
    """While spawned DDP workers run: ignore Ctrl-C here (the terminal sends it to the workers too, and
    they save and stop together) and pass SIGTERM on to them. Replaces `_StopFlag`'s handlers meanwhile."""

    def __enter__(self):
        import threading

        self._old = {}
        if threading.current_thread() is threading.main_thread():
            self._old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
            self._old[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._forward)
        return self

    @staticmethod
    def _forward(signum, frame):
        import multiprocessing

        for child in multiprocessing.active_children():
            os.kill(child.pid, signum)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------------------------------------
# the loop


def _checkpoint_state(ctx: Context, optimizer, scheduler, rank_rng: dict | None = None) -> dict:
    scaler = getattr(getattr(ctx.fabric, "_precision", None), "scaler", None)
    return {
        "model": ctx.model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "aux_optimizers": [o.state_dict() for o in ctx.aux_optimizers],
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
        "rank_rng": rank_rng,  # DDP: every rank's torch RNG, so each rank's noise continues exactly
        "class_names": list(ctx.data.class_names),
        "epoch": ctx.state.epoch,
        "step": ctx.state.step,
        "train_state": asdict(ctx.state),
        "config": to_dict(ctx.cfg),
    }


def _save(ctx: Context, optimizer, scheduler, names: tuple[str, ...] = ("last",)) -> None:
    """Write the checkpoint(s) atomically; rank 0 writes, but under DDP every rank must call this (it gathers
    the ranks' RNG states). Non-finite weights are never written over a good checkpoint, and a failed write
    (disk full) leaves the previous one whole and becomes one clear error."""
    tensors = [t for t in ctx.model.state_dict().values() if t.is_floating_point()]
    # every rank checks (DDP keeps the weights equal), so all ranks stop together; one host sync
    if tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
        raise _diverged_error(ctx, f"the weights became NaN/inf by step {ctx.state.step}")
    rank_rng = None
    if ctx.fabric.world_size > 1:
        rank_rng = {"torch": _gather_rows(ctx.fabric, torch.get_rng_state())}
        if ctx.device.type == "cuda":
            rank_rng["cuda"] = _gather_rows(ctx.fabric, torch.cuda.get_rng_state())
    if not ctx.fabric.is_global_zero:
        return
    state = _checkpoint_state(ctx, optimizer, scheduler, rank_rng)
    first = ctx.run_dir / CHECKPOINTS / f"{names[0]}.ckpt"
    path = first
    try:
        save_checkpoint(first, state)
        for name in names[1:]:  # the same bytes: a hard link, atomically renamed into place (a copy if links fail)
            path = ctx.run_dir / CHECKPOINTS / f"{name}.ckpt"
            link_checkpoint(first, path)
    except OSError as e:
        raise _save_error(e, path, ctx.run_dir) from None


EPOCH_CHECKPOINT = re.compile(r"epoch_(\d+)\.ckpt")


def keep_epoch_checkpoint(run_dir: Path, epoch: int, keep: int | str) -> None:
    """train.keep_checkpoints: checkpoints/epoch_N.ckpt holds the bytes of this epoch's last.ckpt (a hard
    link or copy, renamed into place atomically); beyond `keep` (a number, or 'all') the oldest go."""
    if not keep:
        return
    folder = run_dir / CHECKPOINTS
    path = folder / f"epoch_{epoch}.ckpt"
    try:
        link_checkpoint(folder / "last.ckpt", path)
        if keep != "all":
            found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := EPOCH_CHECKPOINT.fullmatch(p.name)))
            for _, old in found[: max(0, len(found) - int(keep))]:
                old.unlink(missing_ok=True)
    except OSError as e:
        raise _save_error(e, path, run_dir) from None


def _save_error(e: OSError, path: Path, run_dir: Path) -> VaelabError:
    """'disk full while saving ...': says whether a previous checkpoint survived and how to go on."""
    last = run_dir / CHECKPOINTS / "last.ckpt"
    kept = last.is_file()
    what = "disk full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else f"cannot write ({e.strerror or e})"
    msg = f"{what} while saving {path}; " + ("the previous checkpoint is intact" if kept else "no checkpoint was kept")
    hint = (
        f"free some space, then resume with: {shell('vaelab', 'train', '--resume', run_dir)}"
        if kept
        else "free some space or choose another out_dir, then start again"
    )
    return VaelabError(msg, hint)


def _diverged_error(ctx: Context, detail: str) -> TrainingDiverged:
    kept = (ctx.run_dir / CHECKPOINTS / "last.ckpt").is_file()
    where = f"the last good checkpoint is kept in {ctx.run_dir / CHECKPOINTS}" if kept else "no epoch finished, so no checkpoint was kept"
    return TrainingDiverged(
        f"training diverged: {detail}; {where}",
        f"try a lower learning rate: lower train.lr (now {ctx.cfg.train.lr:g}), set train.grad_clip=1.0, "
        "or train.on_nan=skip_batch",
    )


def _gather_rows(fabric, state: torch.Tensor) -> torch.Tensor:
    """(world, n) uint8: every rank's byte tensor, by an all-reduce of rows that are zero but one's own."""
    rows = torch.zeros(fabric.world_size, state.numel(), dtype=torch.int32, device=fabric.device)
    rows[fabric.global_rank] = state.to(fabric.device, torch.int32)
    return fabric.all_reduce(rows, reduce_op="sum").to("cpu", torch.uint8)


def train_epoch(ctx: Context, model, optimizer, scheduler, images, labels, stop: _StopFlag, callbacks) -> dict:
    """One pass over this rank's shard of the training set; returns the epoch's mean loss terms.

    The step does no host sync: loss sums accumulate on the device, and the loss, grad norm and stop flag
    are read every ``train.log_every`` batches (at the same batches on every rank, so DDP ranks agree).
    """
    cfg, state, fabric = ctx.cfg, ctx.state, ctx.fabric
    model.train()
    world = fabric.world_size
    bs, log_every = cfg.train.batch_size, cfg.train.log_every
    stream = None
    if isinstance(images, ShardFeed):  # shards: this rank's shards, streamed in a seeded order
        n_batches, per_rank = images.n_batches(bs), images.per_rank
        stream = images.epoch(state.epoch, bs, skip=state.batch_in_epoch)
    else:
        order = epoch_order(images.shape[0], cfg.train.seed, state.epoch, fabric.global_rank, world)
        order = order.to(images.device)
        n_batches, per_rank = math.ceil(len(order) / bs), len(order)
    # sums of recon, kl, loss (times batch size) and of images; a mid-epoch resume starts from the saved ones
    sums, count = torch.zeros(3, device=images.device), 0
    gn_sum, gn_count = 0.0, 0
    if state.batch_in_epoch and state.partial:
        if fabric.global_rank == 0:  # the saved sums are over all ranks: count them once
            sums, count = torch.tensor(state.partial[:3], device=images.device), int(state.partial[3])
        gn_sum, gn_count = state.partial[4], int(state.partial[5])
    skip_mode = cfg.train.on_nan == "skip_batch"
    use_labels = labels is not None and cfg.model.conditional
    objective = OBJECTIVES[cfg.model.objective]
    extra: dict[str, torch.Tensor] = {}  # the objective's further terms (kl_1, kl_2, ...), x batch size
    extra_count = 0  # images behind `extra`
    # an interrupted epoch's extra sums: [images, sum of each term in name order], counted once (rank 0)
    pending = state.partial[6:] if state.batch_in_epoch and fabric.global_rank == 0 else []
    per_step_lr = scheduler is not None and cfg.train.schedule == "cosine"
    for b in range(state.batch_in_epoch, n_batches):
        if (world == 1 or b % log_every == 0) and _stop_requested(stop, fabric):
            state.batch_in_epoch = b
            totals = _epoch_totals(sums, count, fabric)
            state.partial = [*totals.tolist(), gn_sum, gn_count, *(_extra_totals(extra, extra_count, fabric, images.device) or pending)]
            raise _Interrupt()
        if stream is not None:
            xb, yb = next(stream)
            x = to_float(xb.to(images.device, non_blocking=True))
            y = yb.to(images.device) if use_labels and yb is not None else None
        else:
            idx = order[b * bs : (b + 1) * bs]
            x = to_float(images.index_select(0, idx))  # (B, C, H, W) float in [0, 1], made on the device from uint8
            y = labels.index_select(0, idx) if use_labels else None
        if cfg.train.binarize:
            x = torch.bernoulli(x)
        if cfg.train.perturb > 0:  # a background model for the likelihood-ratio anomaly score
            x = perturb(x, cfg.train.perturb)
        w = kl_weight(cfg, state.step, n_batches)
        terms = objective(model, x, y, kl_weight=w, free_bits=cfg.model.free_bits, ssim_weight=cfg.model.ssim_weight)
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(terms.loss)
        if ctx.aux_optimizers and terms.aux_loss is not None:
            for o in ctx.aux_optimizers:  # the auxiliary module learns from its own loss only
                o.zero_grad(set_to_none=True)
            fabric.backward(terms.aux_loss)
            if world > 1:  # this second backward runs outside DDP's forward, so its gradients are averaged here
                for o in ctx.aux_optimizers:
                    for p in (p for g in o.param_groups for p in g["params"] if p.grad is not None):
                        p.grad.copy_(fabric.all_reduce(p.grad, reduce_op="mean"))
        norm = None
        if cfg.train.grad_clip:
            norm = fabric.clip_gradients(model, optimizer, max_norm=cfg.train.grad_clip, error_if_nonfinite=False)
        if skip_mode:  # one host sync per step, only in this mode
            norm = _grad_norm(model) if norm is None else norm
            bad = (~torch.isfinite(norm) | ~torch.isfinite(terms.loss.detach())).float()
            if world > 1:  # DDP: skip on every rank or on none
                bad = fabric.all_reduce(bad, reduce_op="sum")
            if bool(bad > 0):
                state.skipped_batches += 1
                optimizer.zero_grad(set_to_none=True)
                for o in ctx.aux_optimizers:
                    o.zero_grad(set_to_none=True)
                continue
        optimizer.step()
        for o in ctx.aux_optimizers:
            o.step()
        if per_step_lr:
            scheduler.step()
        state.step += 1
        sums.add_(torch.stack([terms.recon.detach(), terms.kl.detach(), terms.loss.detach()]), alpha=x.shape[0])
        count += x.shape[0]
        if pending and terms.extra:  # resumed mid-epoch: start from the saved sums
            extra_count = int(pending[0])
            extra = {n: torch.tensor(v, device=images.device) for n, v in zip(sorted(terms.extra), pending[1:], strict=True)}
            pending = []
        for name, v in terms.extra.items():
            extra[name] = extra.get(name, 0.0) + v.detach() * x.shape[0]
        extra_count += x.shape[0]
        if (b + 1) % log_every == 0 or b == n_batches - 1:
            now = torch.stack([terms.loss.detach().float(), (norm if norm is not None else _grad_norm(model)).float()])
            if world > 1:  # a NaN on any rank shows on all of them
                now = fabric.all_reduce(now, reduce_op="mean")
            loss_now, gn = now.tolist()  # the host sync, every log_every steps
            if not math.isfinite(loss_now) and not skip_mode:
                raise _Diverged(f"loss is {loss_now} at epoch {state.epoch + 1}, step {state.step}")
            if not math.isfinite(gn) and not skip_mode and cfg.trainer.precision != "16-mixed":
                # (16-mixed: the grad scaler skips inf steps on its own)
                raise _Diverged(f"gradient norm is {gn} at epoch {state.epoch + 1}, step {state.step}")
            if math.isfinite(gn):
                gn_sum, gn_count = gn_sum + gn, gn_count + 1
            for cb in callbacks:
                cb.on_train_batch_end(ctx, b + 1, n_batches, loss_now, w)
    state.batch_in_epoch, state.partial = 0, []
    recon, kl, loss, count = _epoch_totals(sums, count, fabric).tolist()
    count = max(count, 1.0)
    out = {"recon": recon / count, "kl": kl / count, "loss": loss / count, "elbo": (recon + kl) / count}
    if not all(math.isfinite(v) for v in out.values()) and not skip_mode:
        raise _Diverged(f"the mean loss of epoch {state.epoch + 1} is {out['loss']}")
    if extra:
        n_extra, *vals = _extra_totals(extra, extra_count, fabric, images.device)
        out.update({n: v / max(n_extra, 1.0) for n, v in zip(sorted(extra), vals, strict=True)})
    out["grad_norm"] = gn_sum / gn_count if gn_count else float("nan")
    out["samples_per_rank"] = per_rank
    return out


def _extra_totals(extra: dict, count: int, fabric, device) -> list[float]:
    """[images, sum of each extra term in name order], over all ranks ([] when the objective has none)."""
    if not extra:
        return []
    vals = torch.stack([torch.tensor(float(count), device=device)] + [extra[n].float() for n in sorted(extra)])
    if fabric.world_size > 1:
        vals = fabric.all_reduce(vals, reduce_op="sum")
    return vals.tolist()


def _epoch_totals(sums: torch.Tensor, count: int, fabric) -> torch.Tensor:
    """(recon, kl, loss, images) summed over the epoch so far, over all ranks."""
    totals = torch.cat([sums, torch.tensor([float(count)], device=sums.device)])
    return fabric.all_reduce(totals, reduce_op="sum") if fabric.world_size > 1 else totals


def _stop_requested(stop: _StopFlag, fabric) -> bool:
    """Was SIGINT/SIGTERM received (on any rank)? Under DDP every rank must stop at the same batch."""
    flag = stop.signum is not None
    if fabric.world_size == 1:
        return flag
    total = fabric.all_reduce(torch.tensor([float(flag)], device=fabric.device), reduce_op="sum")
    return bool(total.item() > 0)


def _grad_norm(model) -> torch.Tensor:
    """The global L2 norm of the gradients (a device tensor: no sync)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())


class _Interrupt(Exception):
    pass


class _Diverged(Exception):
    pass


class _StoppedEarly(Exception):
    """A signal before training began: nothing to save."""


def _make_fabric(cfg: Config):
    """Fabric for the trainer config; a setting this machine cannot run is a one-line error."""
    from .fabric import fabric_class

    Fabric = fabric_class()  # lightning_fabric, without importing torchmetrics (see fabric.py)

    world = cfg.trainer.devices * cfg.trainer.num_nodes
    strategy = cfg.trainer.strategy
    if strategy == "ddp" or world > 1:
        strategy = "ddp" if _externally_launched() else "ddp_spawn"  # torchrun/SLURM start the processes; else we spawn
    accelerator = cfg.trainer.accelerator
    if accelerator in ("cuda", "gpu") and not torch.cuda.is_available():
        raise VaelabError(f"trainer.accelerator={accelerator} but no CUDA GPU is visible", "use trainer.accelerator=cpu")
    if cfg.trainer.precision == "16-mixed" and not torch.cuda.is_available():
        raise VaelabError("trainer.precision=16-mixed needs a CUDA GPU", "use trainer.precision=bf16-mixed or 32 on CPU")
    if accelerator == "auto" and not torch.cuda.is_available() and world > 1:
        accelerator = "cpu"  # several CPU processes talk over gloo
    try:
        return Fabric(
            accelerator=accelerator,
            devices=cfg.trainer.devices,
            num_nodes=cfg.trainer.num_nodes,
            strategy=strategy,
            precision=cfg.trainer.precision,
        )
    except (ValueError, RuntimeError, TypeError) as e:
        raise VaelabError(f"cannot set up trainer.* on this machine: {str(e).splitlines()[0]}", "check trainer.devices and trainer.accelerator") from None
    except Exception as e:  # lightning's MisconfigurationException
        if type(e).__name__ != "MisconfigurationException":
            raise
        raise VaelabError(f"cannot set up trainer.* on this machine: {str(e).splitlines()[0]}", "check trainer.devices and trainer.accelerator") from None


def fit(
    cfg: Config,
    *,
    data: ImageSet | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: list | None = None,
    quiet: bool = False,
    save_data: bool = False,
) -> dict:
    """Train a VAE as `cfg` says, writing the run directory; returns a summary dict (`cfg` is not changed).

    `run_dir` defaults to a new folder under ``cfg.out_dir``; with ``resume=True`` it must be an existing
    run, which continues exactly where its last checkpoint stopped. The run directory (lock, disk space),
    data, model and checkpoint are checked here, before any process is started, so every mistake is one
    `VaelabError`; a start that fails before its first checkpoint leaves no run directory behind.
    ``save_data``: keep the given `data` in ``RUN_DIR/data.npz`` (for ``data.source: memory``, see `vaelab.api.fit`).
    """
    from .rundir import discard_failed_start, first_missing, lock_run_dir, new_run_dir

    cfg = validate(copy.deepcopy(cfg))
    if resume:
        if run_dir is None:
            raise VaelabError("resume needs the run directory", "vaelab train --resume RUN_DIR")
        run_dir = Path(run_dir)
    else:
        run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
    fabric = _make_fabric(cfg)
    created = None if resume else first_missing(run_dir)
    before = set() if resume or created is not None or not run_dir.is_dir() else set(os.listdir(run_dir))
    with _StopFlag() as stop:  # a signal before training starts stops at once: nothing to save
        try:
            with lock_run_dir(run_dir, create=not resume):
                try:
                    return _checked_launch(fabric, cfg, run_dir, data, resume, callbacks, quiet, save_data)
                except BaseException:
                    if not resume:  # a start that failed before its first checkpoint leaves nothing behind
                        discard_failed_start(run_dir, created, before)
                    raise
        except _StoppedEarly:
            name = signal.Signals(stop.signum).name
            if resume:
                raise TrainingInterrupted(
                    f"{name}: stopped before training resumed; the checkpoint in {run_dir} is unchanged",
                    f"resume with: {shell('vaelab', 'train', '--resume', run_dir)}",
                    stop.signum,
                ) from None
            raise TrainingInterrupted(
                f"{name}: stopped before training began; nothing was saved", "run the same command again to start", stop.signum
            ) from None


def _checked_launch(fabric, cfg: Config, run_dir: Path, data, resume: bool, callbacks, quiet: bool, save_data: bool = False) -> dict:
    """With the run directory locked: check it, load the data, build the model, check the checkpoint, train."""
    from .callbacks import default_callbacks
    from .rundir import prepare_run_dir

    prepare_run_dir(run_dir, resume=resume)
    if data is not None and not isinstance(data, ImageSet) and not getattr(data, "streaming", False):
        raise VaelabError(f"train.fit takes an ImageSet as data, not a {type(data).__name__}", "use vaelab.fit(config, data): it takes arrays, tensors and Datasets")
    if data is None:  # once, in this process; spawned DDP workers get it shared
        data = saved_run_data(run_dir) if cfg.data.source == MEMORY_SOURCE else from_config(cfg.data)
    elif save_data:  # in-memory data is kept with the run, so every later command scores these images
        save_npz(data, run_dir / DATA_FILE)
    if getattr(data, "streaming", False) and data.has_split("val"):
        data.split("val")  # decoded into the cache here, once, before any DDP worker starts
    if not data.has_split("train"):
        raise VaelabError(f"{cfg.data.source} has no training images", "check data.source and data.classes")
    cfg.model = resolve(cfg.model, data)
    build(cfg.model)  # an architecture that cannot take this image size fails here, in one line
    if resume:
        _resume_checkpoint(run_dir, cfg)
    if callbacks is None:
        callbacks = default_callbacks(cfg, quiet=quiet)
    if fabric.world_size == 1 or _externally_launched():
        return fabric.launch(_fit, cfg, run_dir, data, resume, callbacks)
    with _ParentSignals():  # the workers stop cleanly on Ctrl-C; this process waits for them
        result = fabric.launch(_fit_in_worker, cfg, run_dir, data, resume, callbacks)
    if "error" in result:
        raise _rebuild_error(result["error"])
    return result["summary"]


def _ranks_per_machine(cfg: Config) -> int:
    """Processes training on this machine: torchrun/SLURM say so; otherwise trainer.devices."""
    for key in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(key, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return max(1, cfg.trainer.devices)


def _externally_launched() -> bool:
    return any(k in os.environ for k in ("LOCAL_RANK", "SLURM_PROCID", "TORCHELASTIC_RUN_ID"))


def _resume_checkpoint(run_dir: Path, cfg: Config) -> dict:
    """The run's last checkpoint, if `cfg` (with model sizes resolved) describes the same model."""
    ckpt = load_checkpoint(run_dir / CHECKPOINTS / "last.ckpt")
    saved, now = ckpt.get("config", {}).get("model", {}), to_dict(cfg)["model"]
    from ..config import ModelConfig

    default = to_dict(ModelConfig())  # a key added since the checkpoint was written had its default then
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k, default.get(k)) != now.get(k))
    if diff:
        detail = ", ".join(f"model.{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in diff)
        raise VaelabError(
            f"the checkpoint in {run_dir} was trained with another model config ({detail})",
            "resume without changing model.* keys or the data's shape and classes, or start a new run",
        )
    return ckpt


def _fit_in_worker(fabric, *args) -> dict:
    """`_fit` in a spawned DDP worker: a VaelabError comes back as data, so the parent raises it in one line.

    The ranks stop together (stop, NaN and skip decisions are shared), so they meet at a barrier and close
    the process group before exiting: a rank that exits while the others still talk to it can abort.
    """
    try:
        out = {"summary": _fit(fabric, *args)}
    except VaelabError as e:
        out = {"error": {"type": type(e).__name__, "message": e.message, "hint": e.hint, "signum": getattr(e, "signum", 0)}}
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        fabric.barrier()
        torch.distributed.destroy_process_group()
    return out


def _rebuild_error(err: dict) -> VaelabError:
    if err["type"] == "TrainingInterrupted":
        return TrainingInterrupted(err["message"], err["hint"], err["signum"])
    if err["type"] == "TrainingDiverged":
        return TrainingDiverged(err["message"], err["hint"])
    return VaelabError(err["message"], err["hint"])


def _compile(model):
    """torch.compile, with its failure (no C++ compiler, an unsupported platform) as a one-line error."""
    if not hasattr(torch, "compile"):
        raise VaelabError("train.compile=true needs torch >= 2.0", "set train.compile=false")
    return torch.compile(model)


def _compile_error(e: Exception) -> VaelabError:
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    return VaelabError(f"torch.compile failed on this machine ({type(e).__name__}: {first})", "set train.compile=false")


def _fit(fabric, cfg: Config, run_dir: Path, data: ImageSet, resume: bool, callbacks: list) -> dict:
    if _ACTIVE_STOP is not None and (fabric.world_size == 1 or _externally_launched()):
        return _train(fabric, cfg, run_dir, data, resume, callbacks, _ACTIVE_STOP)  # the flag `fit` installed
    # a spawned DDP worker: the parent checked everything before spawning, so a signal here only asks the
    # ranks (together, at the same batch) to finish it and save
    with _StopFlag(armed=True) as stop:
        return _train(fabric, cfg, run_dir, data, resume, callbacks, stop)


def _train(fabric, cfg: Config, run_dir: Path, data: ImageSet, resume: bool, callbacks: list, stop: _StopFlag) -> dict:
    from ..threads import apply_threads

    # in every process: each spawned DDP rank sets its own share of the cores
    threads = apply_threads(cfg.trainer.threads, _ranks_per_machine(cfg))
    fabric.seed_everything(cfg.train.seed, verbose=False)
    torch.backends.cudnn.benchmark = True
    streaming = getattr(data, "streaming", False)
    train_data = data.split_view("train") if streaming else data.split("train")
    has_val = data.has_split("val")
    model = build(cfg.model)
    state = TrainState()
    ckpt = None
    if resume:
        ckpt = _resume_checkpoint(run_dir, cfg)
        try:
            model.load_state_dict(ckpt["model"])
            state = TrainState(**ckpt["train_state"])
        except (RuntimeError, KeyError, TypeError):
            raise VaelabError(f"{run_dir}/checkpoints/last.ckpt does not fit this model", "start a new run") from None
        state.stop_reason = ""  # a finished or early-stopped run may be resumed with more epochs
    if fabric.is_global_zero:
        text = dump_config(cfg)
        atomic_write(run_dir / CONFIG_FILE, lambda f: f.write(text.encode("utf-8")))  # a kill never tears it
    n_train = data.images_per_rank("train", fabric.world_size) if streaming else len(train_data) // fabric.world_size
    steps_per_epoch = math.ceil(n_train / cfg.train.batch_size)
    optimizer, scheduler = make_optimizer(cfg, model, steps_per_epoch, fabric.device)
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
    aux_optimizers = make_aux_optimizers(cfg, model)
    if ckpt is not None and aux_optimizers:
        try:
            for o, s in zip(aux_optimizers, ckpt["aux_optimizers"], strict=True):
                o.load_state_dict(s)
        except (ValueError, KeyError, TypeError):
            raise VaelabError(f"{run_dir}/checkpoints/last.ckpt has no state for the objective's second optimizer", "resume without changing model.objective, or start a new run") from None
    raw_model = model
    if cfg.train.compile:
        model = _compile(model)
    model, optimizer = fabric.setup(model, optimizer)
    aux_optimizers = [fabric.setup_optimizers(o) for o in aux_optimizers]
    if ckpt is not None:
        scaler = getattr(getattr(fabric, "_precision", None), "scaler", None)
        try:
            if scaler is not None and ckpt.get("scaler") is not None:
                scaler.load_state_dict(ckpt["scaler"])
            set_rng_state(ckpt["rng"])
            ranks = ckpt.get("rank_rng")
            if fabric.world_size > 1 and ranks and len(ranks["torch"]) == fabric.world_size:
                torch.set_rng_state(ranks["torch"][fabric.global_rank].clone())  # a view would crash it
                if "cuda" in ranks and fabric.device.type == "cuda":
                    torch.cuda.set_rng_state(ranks["cuda"][fabric.global_rank].clone())
        except (ValueError, KeyError, TypeError, RuntimeError, AttributeError):
            raise VaelabError(f"{run_dir}/checkpoints/last.ckpt has damaged random-generator or scaler states", "start a new run") from None
    elif fabric.world_size > 1:
        torch.manual_seed(cfg.train.seed + fabric.global_rank)  # different noise per rank; same init weights
    if streaming:  # train streams from the shards; val is decoded once into the memory-mapped cache
        images, labels = ShardFeed(data, cfg, fabric), None
        val_images, val_labels = split_tensors(data.split("val"), "val", fabric.device) if has_val else (None, None)
    else:
        on_device = data.to(fabric.device)  # an in-RAM storage moves once; train and val share it
        images, labels = split_tensors(on_device, "train", fabric.device)
        val_images, val_labels = split_tensors(on_device, "val", fabric.device) if has_val else (None, None)
    ctx = Context(cfg, run_dir, raw_model, data, state, fabric, aux_optimizers=aux_optimizers)
    ctx.history = [r for r in _previous_history(run_dir) if r.get("epoch", 0) <= state.epoch] if resume else []
    live = callbacks if fabric.is_global_zero else []
    for cb in live:
        cb.on_fit_start(ctx)
    start = time.perf_counter()
    time_before = state.train_time
    skip_mode = cfg.train.on_nan == "skip_batch"
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
            if val_terms and not math.isfinite(val_terms["loss"]) and not skip_mode:
                raise _Diverged(f"the validation loss after epoch {state.epoch + 1} is {val_terms['loss']}")
            state.epoch += 1
            monitor = val_terms["loss"] if val_terms else train_terms["loss"]
            if scheduler is not None and cfg.train.schedule == "plateau":
                scheduler.step(monitor)
            improved = monitor < state.best_val
            if improved:
                state.best_val, state.best_epoch, state.bad_epochs = monitor, state.epoch, 0
            else:
                state.bad_epochs += 1
            if cfg.train.early_stop and state.bad_epochs >= cfg.train.early_stop:
                state.stop_reason = f"early stop: no better validation loss for {state.bad_epochs} epochs"
            elif state.epoch >= cfg.train.epochs:
                state.stop_reason = "finished"
            state.train_time = time_before + time.perf_counter() - start
            row = _metrics_row(state, train_terms, val_terms, optimizer, cfg, steps_per_epoch, time.perf_counter() - t0)
            ctx.history.append(row)
            for cb in live:  # files of the epoch first: a crash before the checkpoint redoes the epoch
                cb.on_epoch_end(ctx, row)
            # the last epoch's checkpoint already holds the final state (stop reason, time)
            _save(ctx, optimizer, scheduler, ("last", "best") if improved else ("last",))
            if fabric.is_global_zero:
                keep_epoch_checkpoint(run_dir, state.epoch, cfg.train.keep_checkpoints)
            if state.stop_reason:
                break
    except _Interrupt:
        _close(live, ctx)
        if not skip_mode and not all(math.isfinite(v) for v in state.partial[:3]):
            raise _diverged_error(ctx, f"loss is nan before the stop at epoch {state.epoch + 1}") from None
        state.train_time = time_before + time.perf_counter() - start
        _save(ctx, optimizer, scheduler)
        signum = stop.signum or signal.SIGINT  # DDP: another rank may have got the signal
        raise TrainingInterrupted(
            f"{signal.Signals(signum).name}: training stopped at epoch {state.epoch + 1}, batch {state.batch_in_epoch}; "
            f"checkpoint saved in {run_dir}",
            f"resume with: {shell('vaelab', 'train', '--resume', run_dir)}",
            signum,
        ) from None
    except _Diverged as e:
        _close(live, ctx)
        raise _diverged_error(ctx, str(e)) from None
    except OSError as e:  # a callback's file (metrics, images, TensorBoard) could not be written
        _close(live, ctx)
        from .rundir import write_error

        err = write_error(e, run_dir)
        if (run_dir / CHECKPOINTS / "last.ckpt").is_file():  # the checkpoints survive: training can go on
            err.hint = f"free some space, then resume with: {shell('vaelab', 'train', '--resume', run_dir)}"
        raise err from None
    except BaseException as e:
        _close(live, ctx)
        if cfg.train.compile and type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
            raise _compile_error(e) from None
        raise
    if not state.stop_reason:  # a resume of a run that had already finished: nothing was trained
        state.stop_reason = "finished"
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
        "threads": threads,
    }


def _close(callbacks: list, ctx: Context) -> None:
    """Let callbacks release what they hold (progress bar, TensorBoard files) when training stops early."""
    for cb in callbacks:
        try:
            cb.on_fit_end(ctx)
        except Exception:  # noqa: BLE001 - the error that stopped training is the one to report
            pass


_STANDARD = {"loss", "recon", "kl", "elbo", "ssim", "n", "grad_norm", "samples_per_rank"}


def _metrics_row(state, train_terms, val_terms, optimizer, cfg, steps_per_epoch, seconds) -> dict:
    row = {"epoch": state.epoch, "step": state.step}
    for k in ("loss", "recon", "kl", "elbo"):
        row[f"train/{k}"] = train_terms[k]
    for k in sorted(k for k in train_terms if k not in _STANDARD):  # the objective's extra terms (kl_1, mmd, perplexity)
        row[f"train/{k}"] = train_terms[k]
    if val_terms:
        for k in ("loss", "recon", "kl", "elbo", "ssim", *sorted(k for k in val_terms if k not in _STANDARD)):
            if k in val_terms:
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
