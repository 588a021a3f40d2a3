"""`vaelab evaluate` and `vaelab features train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import VaelabError
from ._common import DataOpt, Table, _say_dim, _use_threads, _write_bytes, app, console, features_app


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run directory or a pretrained folder.")],
    split: Annotated[str | None, typer.Option(help="train, val or test (default: test; val when the data has none).")] = None,
    data: Annotated[str | None, typer.Option(help="Evaluate on this data spec instead of the run's own data.")] = None,
    nll_samples: Annotated[int, typer.Option(help="Importance samples k of the NLL (1000 or 5000 for papers).")] = 100,
    nll_also: Annotated[
        list[int] | None, typer.Option(help="Also the NLL at this smaller k, from the first k of the same samples (repeatable; free).")
    ] = None,
    fid: Annotated[bool, typer.Option("--fid/--no-fid", help="FID, precision/recall and conditional accuracy (--no-fid skips them).")] = True,
    binarized: Annotated[bool, typer.Option("--binarized", help="Also the NLL on dynamically binarized images (Bernoulli models; the MNIST number of the literature), in the same pass.")] = False,
    features: Annotated[str, typer.Option(help="Feature-network folder, or 'auto' (cached; trained when missing).")] = "auto",
    inception: Annotated[Path | None, typer.Option(help="Local Inception-v3 weights file for FID (no download).")] = None,
    max_generated: Annotated[int, typer.Option(help="At most this many generated (and real) images for FID.")] = 10_000,
    gmm_components: Annotated[int, typer.Option(help="Components of the ex-post GMM sampler.")] = 10,
    temperature: Annotated[float, typer.Option(help="Spread of z for the generated images (below 1: more typical, less varied).")] = 1.0,
    checkpoint: Annotated[str, typer.Option(help="best, last, epoch_N (train.keep_checkpoints), or a .ckpt file.")] = "best",
    disentanglement: Annotated[bool, typer.Option("--disentanglement", help="Also score BetaVAE, FactorVAE, MIG, SAP, DCI (data with factors, e.g. dsprites).")] = False,
    metric_scale: Annotated[float, typer.Option(help="Sample sizes of the disentanglement metrics, as a share of disentanglement_lib's (0.1 for quick CPU runs).")] = 1.0,
    batch_size: int = 500,
    seed: int = 0,
    sampler: Annotated[
        str | None, typer.Option(help="Also score this sampler's FID: maf or vq-prior (prior and gmm always are); fitted once, cached in RUN/samplers/.")
    ] = None,
):
    """Every number of a trained run: ELBO terms, IWAE NLL, MSE/PSNR/SSIM, active units, FID (prior, GMM, recon).

    Writes RUN/eval/<split>.json and RUN/eval/<split>_per_image.npz; the checkpoints are only read.

    Examples:

      vaelab evaluate runs/mnist-148-z2

      vaelab evaluate runs/mnist-mlp --nll-samples 5000 --nll-also 1000 --binarized --split test

      vaelab evaluate runs/fashion-z10 --no-fid

      vaelab evaluate runs/dsprites-tc --no-fid --disentanglement --metric-scale 0.1
    """
    from ..evaluate.report import json_bytes, npz_bytes, summary_rows
    from ..evaluate.run import evaluate_run
    from ..run import load_run

    if nll_samples < 1:
        raise VaelabError(f"--nll-samples is {nll_samples}", "use k >= 1 importance samples (100 by default, 1000+ for papers)")
    if not temperature > 0:
        raise VaelabError(f"--temperature is {temperature}", "use a positive number (1, the default, draws from the samplers themselves)")
    if inception is not None and not fid:
        raise VaelabError("--inception and --no-fid contradict each other", "drop one of them")
    if sampler is not None:
        from ..latent.expost import SAMPLERS

        if sampler not in SAMPLERS:
            raise VaelabError(f"--sampler is '{sampler}'", f"use one of: {', '.join(SAMPLERS)}")
    r = load_run(run, checkpoint=checkpoint)
    _use_threads(r.config.trainer.threads)  # the run's trainer.threads (feature-net training included)
    scores = None
    if disentanglement:  # first: data without factors stops here, before the long evaluation
        from ..evaluate.disentangle_run import disentanglement_of_run

        scores = disentanglement_of_run(r, data, seed=seed, scale=metric_scale, batch_size=batch_size)
    result = evaluate_run(
        r,
        split=split,
        data=data,
        nll_samples=nll_samples,
        nll_also=tuple(nll_also or ()),
        fid=fid,
        features=features,
        inception=inception,
        max_generated=max_generated,
        gmm_components=gmm_components,
        temperature=temperature,
        binarized=binarized,
        batch_size=batch_size,
        seed=seed,
        progress=_say_dim,
        sampler=sampler,
    )
    if split is None and result["split"] != "test":  # a photo folder with train/ and val/ only
        console.print("note: the run's data has no test split; evaluating its val split", highlight=False)
    split = result["split"]
    if scores is not None:
        result["disentanglement"] = scores
    out = Path(r.path) / "eval"
    _write_bytes(out / f"{split}.json", json_bytes(result))
    _write_bytes(out / f"{split}_per_image.npz", npz_bytes(result))
    from ..train.loggers import log_evaluation

    log_evaluation(r.path, result)  # eval/<split>/... scalars and hparams in the run's TensorBoard
    table = Table(title=f"{r.path} ({Path(result['checkpoint']).name}, epoch {result['epoch']}), {split} split", show_header=False)
    from ..evaluate.disentangle_run import disentanglement_rows

    for name, value in summary_rows(result) + disentanglement_rows(result):
        table.add_row(name, value)
    console.print(table)
    for note in result.get("notes", []):
        console.print(f"note: {note}", highlight=False)
    console.print(f"wrote {out / (split + '.json')} and {out / (split + '_per_image.npz')}", highlight=False)


@features_app.command("train")
def features_train(
    spec: Annotated[str, typer.Argument(help="A labelled data spec: mnist, fashion-mnist, folder:DIR, ...")],
    image_size: DataOpt = None,
    channels: Annotated[int | None, typer.Option(help="1 (gray) or 3 (RGB).")] = None,
    epochs: Annotated[int, typer.Option(help="At most this many epochs (early stopping on val accuracy).")] = 8,
    batch_size: int = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate of the one-cycle schedule.")] = 2e-3,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without a better val accuracy.")] = 2,
    limit: Annotated[int | None, typer.Option(help="At most this many images per split (quick tries).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder to write (default: the cache evaluate reads).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads (0: the physical cores, as trainer.threads).")] = 0,
    seed: int = 0,
):
    """Train the small ResNet classifier whose penultimate features FID uses, and save it with its test accuracy.

    Examples:

      vaelab features train mnist

      vaelab features train fashion-mnist --epochs 10

      vaelab features train folder:photos/ --image-size 64 --channels 3
    """
    import torch

    from ..evaluate.features import cache_path, load_training_data, save_feature_net, train_feature_net

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if threads < 0:
        raise VaelabError(f"--threads is {threads}", "give 0 (automatic) or a positive number")
    _use_threads(threads)
    data = load_training_data(spec, image_size=image_size, channels=channels, limit=limit, seed=seed)
    counts = data.split_counts()
    console.print(
        f"training a feature network on {spec} ({' x '.join(map(str, data.shape))}, {data.num_classes} classes; "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
        + f") on {device}",
        highlight=False,
    )
    trained = train_feature_net(
        data,
        spec=spec,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        seed=seed,
        device=device,
        limit=limit,
        progress=_say_dim,
    )
    folder = save_feature_net(trained, out if out is not None else cache_path(spec, data.shape, limit))
    m = trained.meta
    table = Table(title=f"feature network {m['name']}", show_header=False)
    table.add_row("saved to", str(folder))
    table.add_row(f"{m['held_out']} accuracy", f"{m['test_accuracy']:.4f} ({'test' if m['held_out'] == 'test' else 'no test split'})")
    table.add_row("best val accuracy", f"{m['val_accuracy']:.4f} (epoch {m['best_epoch']} of {m['epochs_run']})")
    table.add_row("training images", str(m["train_images"]))
    table.add_row("time", f"{m['train_seconds']:.1f} s on {m['device']}")
    console.print(table)
    if limit is None and out is None:
        console.print("vaelab evaluate uses it for every run on this data at this image size", highlight=False)


