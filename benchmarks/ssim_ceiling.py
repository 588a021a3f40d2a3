"""How high can the SSIM of MNIST 1/4/8 reconstructions go? Reference points for the 0.80 target.

    python benchmarks/make_mnist148_npz.py data/mnist148
    python benchmarks/ssim_ceiling.py data/mnist148                       # nearest training images
    python benchmarks/ssim_ceiling.py data/mnist148 --run runs/mnist148   # + that run's decoder, best z per image

Prints one table: test-set SSIM (Gaussian 11x11 / 7x7 box, the indices `vaelab evaluate` reports), overall
and per digit, of
- each test image's nearest training image (pixel L2): what a model that returned the closest training digit
  verbatim would score, a lookup with no code size limit;
- the best of its 10 nearest training images, picked by SSIM against the test image itself (an oracle);
- with ``--run``: the run's reconstructions (decoder of the encoder's posterior mean), and the decoder at
  the latent point that maximizes each test image's SSIM (Adam on z from the posterior mean; another
  oracle): how much of the gap is the encoder's and how much is what the decoder can draw at all.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vaelab.evaluate.reconstruction import ssim_per_image, ssim_separable


def load_split(folder: Path, split: str) -> tuple[torch.Tensor, np.ndarray]:
    with np.load(folder / f"{split}.npz") as z:
        return torch.from_numpy(z["images"]).float().div(255).unsqueeze(1), z["labels"]


def nearest_training(train: torch.Tensor, test: torch.Tensor, k: int, chunk: int = 500) -> torch.Tensor:
    """(N_test, k) indices of the k training images nearest in pixel L2, nearest first."""
    a = train.flatten(1)
    return torch.cat([torch.cdist(test[s : s + chunk].flatten(1), a).topk(k, largest=False).indices for s in range(0, len(test), chunk)])


def scores(recon: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return ssim_per_image(recon, test), ssim_per_image(recon, test, "box7")


def best_z(model, test: torch.Tensor, steps: int, lr: float, chunk: int = 1000) -> torch.Tensor:
    """Decoded images at the latent point that maximizes SSIM with each test image."""
    out = []
    for p in model.parameters():
        p.requires_grad_(False)
    for s in range(0, len(test), chunk):
        x = test[s : s + chunk]
        with torch.no_grad():
            z0 = model.encode(x).mean
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        for _ in range(steps):
            loss = (1 - ssim_separable(model.likelihood.mean(model.decode(z)), x)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            out.append(model.likelihood.mean(model.decode(z)).clamp(0, 1))
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder with train.npz and test.npz (make_mnist148_npz.py)")
    parser.add_argument("--run", type=Path, help="a trained run whose decoder to score too")
    parser.add_argument("--k", type=int, default=10, help="nearest training images the oracle picks from")
    parser.add_argument("--steps", type=int, default=100, help="Adam steps on z per test image (--run)")
    parser.add_argument("--lr", type=float, default=0.02)
    args = parser.parse_args()

    train, _ = load_split(args.data, "train")
    test, labels = load_split(args.data, "test")
    idx = nearest_training(train, test, args.k)
    cand = [scores(train[idx[:, j]], test) for j in range(args.k)]  # nearest first
    rows = [("nearest training image (pixel L2)", *cand[0])]
    rows.append((f"best of the {args.k} nearest, by SSIM (oracle)", torch.stack([c[0] for c in cand]).max(0).values,
                 torch.stack([c[1] for c in cand]).max(0).values))
    if args.run:
        from vaelab.run import load_run

        model = load_run(args.run).model
        with torch.no_grad():
            rows.append((f"{args.run.name}: decoder(posterior mean)", *scores(model.reconstruct(test).clamp(0, 1), test)))
        rows.append((f"{args.run.name}: decoder(z maximizing SSIM) (oracle)", *scores(best_z(model, test, args.steps, args.lr), test)))

    digits = sorted(set(labels.tolist()))
    head = "| reconstruction | SSIM Gaussian | SSIM box | " + " | ".join(f"digit {d} (Gaussian)" for d in digits) + " |"
    print(f"MNIST {'/'.join(map(str, digits))}: {len(test)} test images, {len(train)} training images\n")
    print(head)
    print("|" + "---|" * (3 + len(digits)))
    for name, g, b in rows:
        per = " | ".join(f"{g[torch.from_numpy(labels == d)].mean():.3f}" for d in digits)
        print(f"| {name} | {g.mean():.3f} | {b.mean():.3f} | {per} |")


if __name__ == "__main__":
    main()
