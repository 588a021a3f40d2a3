"""Write the seed project's data files: MNIST digits 1, 4 and 8 as NumPy arrays.

    VAELAB_DATA=../shared/datasets python benchmarks/make_mnist148_npz.py data/mnist148

writes OUT/train.npz, OUT/val.npz and OUT/test.npz, each with ``images`` (N, 28, 28) uint8 and ``labels``
(N,) int64 holding the digit (1, 4 or 8). val is a seeded, stratified share of the official training set,
test is the official test set. Reads $VAELAB_DATA/mnist (gzip IDX) through vaelab's data layer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

DIGITS = ("1", "4", "8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for train.npz, val.npz, test.npz")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of the official train set for val")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from vaelab.data import load

    ds = load("mnist", classes=list(DIGITS), val_fraction=args.val_fraction, seed=args.seed)
    digits = np.array([int(d) for d in ds.class_names])  # label index -> the digit itself
    args.out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        part = ds.split(split)
        images = part.images[:, 0].numpy()  # (N, 28, 28) uint8
        labels = digits[part.labels.numpy()].astype(np.int64)
        np.savez_compressed(args.out / f"{split}.npz", images=images, labels=labels)
        counts = ", ".join(f"{d}: {int((labels == d).sum())}" for d in digits)
        print(f"{args.out / f'{split}.npz'}: {len(labels)} images ({counts})")


if __name__ == "__main__":
    main()
