"""Seconds per training epoch: vaelab's loop vs pythae 0.1.2 vs a plain PyTorch DataLoader loop.

Same model (pythae's default MLP VAE: 784-512-16, ReLU, Bernoulli/BCE), same batch (100), same data
(MNIST train, 60,000 images in [0, 1]) and the same number of CPU threads for every row. Each run's figure is
the median of its epochs after the first (a warm-up); with ``--repeat N`` the rows alternate for N rounds and the
table keeps each row's best round, since other work on a shared machine only ever slows a round down. Wall
seconds and process CPU seconds are both given (CPU time is steadier on a busy machine), with each row's
speed relative to pythae.

Measured on the 2-core dev machine (AMD EPYC, AVX2, torch 2.13 CPU), ``--epochs 3 --repeat 3``:
vaelab 4.71 s/epoch, pythae 7.68, plain DataLoader loop 5.14 (1.63x pythae) with 2 threads; with 1:
5.28 / 8.97 / 5.61 (1.70x). ``--threads 1,2`` (the default) gives a row per loop and thread count.

pythae lives in its own interpreter (it pins old dependencies), so it is run as a subprocess:

    python3 -m venv /tmp/pythae-venv
    /tmp/pythae-venv/bin/pip install torch==2.13.0 && /tmp/pythae-venv/bin/pip install pythae==0.1.2
    VAELAB_DATA=/work/shared/datasets python benchmarks/train_speed.py --pythae-python /tmp/pythae-venv/bin/python

Without ``--pythae-python`` (or ``$PYTHAE_PYTHON``) the pythae row is skipped with a note. ``--device cuda``
runs every row on the GPU. The script imports pythae only in its ``--worker pythae`` mode, and vaelab only
in the parent, so each interpreter needs just its own package.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HIDDEN, LATENT, BATCH, LR = 512, 16, 100, 1e-3


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------------------
# rows


def run_vaelab(images, args, workdir: Path) -> tuple[list[float], list[float]]:
    """vaelab's own loop (`vaelab.train.fit` with its default callbacks, quiet): wall and CPU s per epoch."""
    from vaelab.config import load_config
    from vaelab.data import ImageSet
    from vaelab.train import Callback, default_callbacks, fit

    class Clock(Callback):
        """Wall and process-CPU time between epoch ends (the epoch, its checkpoint and its files)."""

        def __init__(self):
            self.wall, self.cpu = [], []

        def on_fit_start(self, ctx):
            self.t = (time.perf_counter(), time.process_time())

        def on_epoch_end(self, ctx, row):
            now = (time.perf_counter(), time.process_time())
            self.wall.append(now[0] - self.t[0])
            self.cpu.append(now[1] - self.t[1])
            self.t = now

    data = ImageSet(images)  # every image in 'train', no validation pass: pythae's row has none either
    cfg = load_config(
        None,
        [
            "model.arch=mlp",
            f"model.hidden=[{HIDDEN}]",
            f"model.latent_dim={LATENT}",
            "model.activation=relu",
            "model.likelihood=bernoulli",
            f"train.batch_size={BATCH}",
            f"train.lr={LR}",
            f"train.epochs={args.epochs}",
            "train.images_every=0",
            "train.save_latents=false",
            f"trainer.accelerator={args.device}",
            f"trainer.threads={args.threads}",  # fit sets torch's threads from this (0 would mean automatic)
            f"out_dir={workdir}",
            "name=vaelab",
        ],
    )
    clock = Clock()
    fit(cfg, data=data, callbacks=default_callbacks(cfg, quiet=True) + [clock])
    return clock.wall, clock.cpu


def run_plain(images, args) -> tuple[list[float], list[float]]:
    """The textbook loop: float TensorDataset + DataLoader(shuffle) + torch.optim.Adam, same vaelab model."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from vaelab.config import load_config
    from vaelab.data import ImageSet
    from vaelab.models import build, vae_loss

    torch.manual_seed(0)
    cfg = load_config(None, [f"model.hidden=[{HIDDEN}]", f"model.latent_dim={LATENT}", "model.activation=relu"])
    model = build(cfg.model, ImageSet(images[:1])).to(args.device)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loader = DataLoader(TensorDataset(images.float() / 255.0), batch_size=BATCH, shuffle=True)
    wall, cpu = [], []
    for _ in range(args.epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        for (x,) in loader:
            x = x.to(args.device, non_blocking=True)
            loss = vae_loss(model, x).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()  # what such loops do to log the epoch loss
        _sync(args.device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def run_pythae(python: str, npy: Path, args) -> tuple[list[float], list[float]]:
    """pythae's BaseTrainer.train_step per epoch, in the interpreter that has pythae installed."""
    cmd = [python, __file__, "--worker", "pythae", "--npy", str(npy), "--epochs", str(args.epochs),
           "--device", args.device, "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"pythae worker failed:\n{out.stderr[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return res["wall"], res["cpu"]


def pythae_worker(args) -> None:
    """Runs inside the pythae interpreter: its default MLP VAE (Encoder_VAE_MLP / Decoder_AE_MLP), BCE."""
    import numpy as np
    import torch
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE, VAEConfig
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    torch.set_num_threads(args.threads)
    x = torch.from_numpy(np.load(args.npy)).float() / 255.0  # (N, 1, 28, 28) in [0, 1]
    model = VAE(VAEConfig(input_dim=tuple(x.shape[1:]), latent_dim=LATENT, reconstruction_loss="bce"))
    with tempfile.TemporaryDirectory() as out:
        cfg = BaseTrainerConfig(
            output_dir=out,
            per_device_train_batch_size=BATCH,
            num_epochs=args.epochs,
            learning_rate=LR,
            no_cuda=args.device != "cuda",
        )
        trainer = BaseTrainer(model, train_dataset=BaseDataset(x, torch.zeros(len(x))), training_config=cfg)
        trainer.prepare_training()
        wall, cpu = [], []
        for epoch in range(1, args.epochs + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            trainer.train_step(epoch)
            _sync(args.device)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    print(json.dumps({"wall": wall, "cpu": cpu}))


# ---------------------------------------------------------------------------------------------------------
# table


def summarize(times: list[float]) -> tuple[float, float]:
    """(median, best) seconds per epoch of one run, leaving out the first (warm-up) epoch when there are more."""
    steady = times[1:] if len(times) > 1 else times
    return statistics.median(steady), min(steady)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="mnist", help="vaelab data spec (default: mnist, from $VAELAB_DATA)")
    p.add_argument("--limit", type=int, default=None, help="use only this many training images")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is a warm-up)")
    p.add_argument("--repeat", type=int, default=1, help="rounds of all rows; the table keeps each row's best")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", default="1,2", help="torch CPU threads: a comma list, every row at each (default 1,2)")
    p.add_argument("--pythae-python", default=os.environ.get("PYTHAE_PYTHON"),
                   help="python of a venv with pythae==0.1.2 (default: $PYTHAE_PYTHON; row skipped if absent)")
    p.add_argument("--rows", default="vaelab,pythae,plain", help="comma list of rows to run")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--npy", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker == "pythae":
        args.threads = int(args.threads)
        return pythae_worker(args)
    thread_counts = [int(t) for t in str(args.threads).split(",") if t.strip()]
    if not thread_counts or min(thread_counts) < 1:
        sys.exit("--threads: give positive numbers, e.g. 1,2")

    import numpy as np
    import torch

    from vaelab.data import load

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    images = load(args.data, val_fraction=0.0, limit=args.limit).split("train").images
    if tuple(images.shape[1:]) != (1, 28, 28):
        sys.exit(f"{args.data}: images are {tuple(images.shape[1:])}; this benchmark is for 1 x 28 x 28 (MNIST)")
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    for row in rows:
        if row not in ("vaelab", "pythae", "plain"):
            sys.exit(f"unknown row {row!r}: use vaelab, pythae, plain")
    py = args.pythae_python
    if "pythae" in rows and (not py or not Path(py).exists()):
        rows.remove("pythae")
        print("note: pythae row skipped: pass --pythae-python PATH (a venv with pythae==0.1.2)")
    print(f"{len(images)} images of {args.data}, batch {BATCH}, MLP 784-{HIDDEN}-{LATENT}, {args.epochs} epochs x "
          f"{args.repeat} rounds, device {args.device}, threads {args.threads}, torch {torch.__version__}", flush=True)
    # every round runs each row once; rows alternate so a busy moment on a shared machine hits them alike
    results: dict[tuple[str, int], dict[str, list[float]]] = {(r, t): {"wall": [], "cpu": []} for t in thread_counts for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        npy = tmp / "images.npy"
        if "pythae" in rows:
            np.save(npy, images.numpy())
        for threads in thread_counts:
            args.threads = threads
            torch.set_num_threads(threads)
            for rnd in range(args.repeat):
                for row in rows:
                    if row == "vaelab":
                        wall, cpu = run_vaelab(images, args, tmp / f"t{threads}r{rnd}")
                    elif row == "plain":
                        wall, cpu = run_plain(images, args)
                    else:
                        wall, cpu = run_pythae(py, npy, args)
                    results[(row, threads)]["wall"].append(summarize(wall)[0])
                    results[(row, threads)]["cpu"].append(summarize(cpu)[0])
                    print(f"  {threads} thread(s), round {rnd + 1} {row}: wall " + ", ".join(f"{t:.2f}" for t in wall)
                          + " s; cpu " + ", ".join(f"{t:.2f}" for t in cpu) + " s", flush=True)
    best = {k: (min(v["wall"]), min(v["cpu"])) for k, v in results.items()}
    print()
    print("| loop | threads | s/epoch (wall, best round) | CPU s/epoch | images/s | x pythae (wall) | x pythae (CPU) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (row, threads), (wall, cpu) in best.items():
        ref = best.get(("pythae", threads))
        rw = f"{ref[0] / wall:.2f}" if ref else "-"
        rc = f"{ref[1] / cpu:.2f}" if ref else "-"
        print(f"| {row} | {threads} | {wall:.2f} | {cpu:.2f} | {len(images) / wall:,.0f} | {rw} | {rc} |")
    if args.json:
        Path(args.json).write_text(json.dumps({f"{r}@{t}": v for (r, t), v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
