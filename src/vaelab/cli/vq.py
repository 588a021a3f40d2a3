"""`vaelab train-prior`: the code prior of a VQ run (model.latent=vq)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import VaelabError
from ._common import Table, app, console


@app.command("train-prior")
def train_prior(
    run: Annotated[Path, typer.Argument(help="A VQ run directory (model.latent=vq).")],
    epochs: Annotated[int, typer.Option(help="Passes over the training code maps.")] = 20,
    width: Annotated[int, typer.Option(help="Features of the masked convolutions.")] = 32,
    layers: Annotated[int, typer.Option(help="Masked convolution layers.")] = 3,
    seed: int = 0,
):
    """Fit the autoregressive prior over the run's code maps; saved in RUN/samplers/vq-prior.safetensors and used by `vaelab sample --sampler vq-prior` and evaluate's VQ bound.

    Example: vaelab train-prior runs/mnist-vq --epochs 30 && vaelab sample runs/mnist-vq --sampler vq-prior
    """
    from ..models.vq_prior import train_prior as fit_prior
    from ..run import load_run

    if epochs < 1 or width < 1 or layers < 1:
        raise VaelabError("--epochs, --width and --layers must be at least 1", "e.g. --epochs 20 --width 32 --layers 3")
    out = fit_prior(load_run(run), epochs=epochs, width=width, layers=layers, seed=seed)
    table = Table(title=f"code prior of {run}", show_header=False)
    table.add_row("code maps", f"{out['n_train']} training images, {out['epochs']} epoch{'' if out['epochs'] == 1 else 's'}")
    table.add_row("-log p(codes), train", f"{out['train_nll']:.2f} nats (uniform: {out['uniform_nll']:.2f})")
    if out["val_nll"] is not None:
        table.add_row("-log p(codes), val", f"{out['val_nll']:.2f} nats")
    console.print(table)
    console.print(f"wrote {out['path']}", highlight=False)
