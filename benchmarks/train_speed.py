"""Seconds per training epoch: vaelab's loop vs pythae 0.1.2 vs a plain PyTorch DataLoader loop.

Same model (pythae's default MLP VAE: 784-512-16, ReLU, Bernoulli/BCE), same batch (100), same data
(MNIST train, 60,000 images in [0, 1]) and the same number of CPU threads for every row. The table gives the
median and best epoch (the first epoch is a warm-up and is left out when there are more than one) and each
row's throughput relative to pythae.

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


def run_vaelab(images, args, workdir: Path) -> list[float]:
    """vaelab's own loop (`vaelab.train.fit`, default callbacks, quiet): epoch_time from metrics.jsonl."""
    from vaelab.config import load_config
    from vaelab.data import ImageSet
    from vaelab.run import read_metrics
    from vaelab.train import fit

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
            f"out_dir={workdir}",
            "name=vaelab",
        ],
    )
    summary = fit(cfg, data=data, quiet=True)
    return [row["epoch_time"] for row in read_metrics(summary["run_dir"])]


def run_plain(images, args) -> list[float]:
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
    times = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        for (x,) in loader:
            x = x.to(args.device, non_blocking=True)
            loss = vae_loss(model, x).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()  # what such loops do to log the epoch loss
        _sync(args.device)
        times.append(time.perf_counter() - t0)
    return times


def run_pythae(python: str, npy: Path, args) -> list[float]:
    """pythae's BaseTrainer.train_step per epoch, in the interpreter that has pythae installed."""
    cmd = [python, __file__, "--worker", "pythae", "--npy", str(npy), "--epochs", str(args.epochs),
           "--device", args.device, "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"pythae worker failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["times"]


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
        times = []
        for epoch in range(1, args.epochs + 1):
            t0 = time.perf_counter()
            trainer.train_step(epoch)
            _sync(args.device)
            times.append(time.perf_counter() - t0)
    print(json.dumps({"times": times}))


# ---------------------------------------------------------------------------------------------------------
# table


def summarize(times: list[float]) -> tuple[float, float]:
    """(median, best) seconds per epoch, leaving out the first (warm-up) epoch when there are more."""
    steady = times[1:] if len(times) > 1 else times
    return statistics.median(steady), min(steady)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="mnist", help="vaelab data spec (default: mnist, from $VAELAB_DATA)")
    p.add_argument("--limit", type=int, default=None, help="use only this many training images")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 16), help="torch CPU threads, every row")
    p.add_argument("--pythae-python", default=os.environ.get("PYTHAE_PYTHON"),
                   help="python of a venv with pythae==0.1.2 (default: $PYTHAE_PYTHON; row skipped if absent)")
    p.add_argument("--rows", default="vaelab,pythae,plain", help="comma list of rows to run")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--npy", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker == "pythae":
        return pythae_worker(args)

    import numpy as np
    import torch

    from vaelab.data import load

    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    images = load(args.data, val_fraction=0.0, limit=args.limit).split("train").images
    if tuple(images.shape[1:]) != (1, 28, 28):
        sys.exit(f"{args.data}: images are {tuple(images.shape[1:])}; this benchmark is for 1 x 28 x 28 (MNIST)")
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    print(f"{len(images)} images of {args.data}, batch {BATCH}, MLP 784-{HIDDEN}-{LATENT}, {args.epochs} epochs, "
          f"device {args.device}, {args.threads} threads, torch {torch.__version__}", flush=True)
    results: dict[str, list[float] | str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for row in rows:
            if row == "vaelab":
                results[row] = run_vaelab(images, args, tmp)
            elif row == "plain":
                results[row] = run_plain(images, args)
            elif row == "pythae":
                py = args.pythae_python
                if not py or not Path(py).exists():
                    results[row] = "skipped: pass --pythae-python PATH (a venv with pythae==0.1.2)"
                    continue
                npy = tmp / "images.npy"
                np.save(npy, images.numpy())
                results[row] = run_pythae(py, npy, args)
            else:
                sys.exit(f"unknown row {row!r}: use vaelab, pythae, plain")
            print(f"  {row}: " + ", ".join(f"{t:.2f}" for t in results[row]) + " s", flush=True)
    ref = results.get("pythae")
    ref_med = summarize(ref)[0] if isinstance(ref, list) else None
    print()
    print("| loop | s/epoch (median) | best | images/s | x pythae |")
    print("|---|---:|---:|---:|---:|")
    for row, times in results.items():
        if isinstance(times, str):
            print(f"| {row} | {times} | | | |")
            continue
        med, best = summarize(times)
        ratio = f"{ref_med / med:.2f}" if ref_med else "-"
        print(f"| {row} | {med:.2f} | {best:.2f} | {len(images) / med:,.0f} | {ratio} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
