"""The `vaelab` command line: thin typed commands that call the library and print a summary.

Every command builds a config or spec, calls one library function, and prints what it did. A
`VaelabError` becomes one line on stderr and exit code 2 (a traceback only with ``VAELAB_DEBUG=1``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import VaelabError

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="vaelab",
    help="Variational Autoencoders for images: train, evaluate, look, classify, study.\n\n"
    "Examples:\n\n"
    "  vaelab data info mnist-sample\n\n"
    "  vaelab train configs/mnist-148-z2.yaml train.epochs=5\n\n"
    "  vaelab sample runs/demo -n 64 --out grid.png",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
data_app = typer.Typer(help="Look at data sources.", no_args_is_help=True)
config_app = typer.Typer(help="Show and check configs.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")


def _version(value: bool):
    if value:
        console.print(f"vaelab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
):
    """Variational Autoencoders for images."""


# ---------------------------------------------------------------------------------------------------------
# data

DataOpt = Annotated[Optional[int], typer.Option(help="Resize to SIZE x SIZE (center crop for photos).")]


@data_app.command("info")
def data_info(
    spec: Annotated[str, typer.Argument(help="mnist, fashion-mnist, mnist-sample, npz:FILE, folder:DIR, ...")],
    image_size: DataOpt = None,
    channels: Annotated[Optional[int], typer.Option(help="1 (gray) or 3 (RGB).")] = None,
    classes: Annotated[Optional[str], typer.Option(help="Keep these classes, e.g. 1,4,8.")] = None,
    val_fraction: Annotated[float, typer.Option(help="Validation share when the source has none.")] = 0.1,
    limit: Annotated[Optional[int], typer.Option(help="At most this many images per split.")] = None,
    seed: int = 0,
):
    """Print samples per split and class, image shape, pixel mean/std and the source.

    Example: vaelab data info mnist-sample --classes 1,4,8
    """
    from .data import load
    from .data.info import summarize

    ds = load(
        spec,
        image_size=image_size,
        channels=channels,
        classes=classes.split(",") if classes else None,
        val_fraction=val_fraction,
        limit=limit,
        seed=seed,
    )
    info = summarize(ds)
    table = Table(title=f"{spec}: {info['samples']} images, {' x '.join(map(str, info['shape']))} (C x H x W)")
    table.add_column("split")
    table.add_column("samples", justify="right")
    names = info["class_names"]
    for name in names:
        table.add_column(name, justify="right")
    for split, entry in info["splits"].items():
        table.add_row(split, str(entry["samples"]), *[str(c) for c in entry.get("per_class", [])])
    console.print(table)
    console.print(f"pixel mean {info['pixel_mean']:.4f}, std {info['pixel_std']:.4f} (on 0..1)")
    console.print(f"source: {info['source']}")


# ---------------------------------------------------------------------------------------------------------
# config


@config_app.command("show")
def config_show(
    config: Annotated[Optional[Path], typer.Argument(help="A YAML config (default: the built-in defaults).")] = None,
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value overrides.")] = None,
):
    """Print the full resolved config.

    Example: vaelab config show configs/fashion-mlp-z2.yaml model.latent_dim=10
    """
    from .config import dump_config, load_config

    config, overrides = _split_config_args(config, overrides)
    console.print(dump_config(load_config(config, overrides)), markup=False, highlight=False)


def _split_config_args(config: Optional[Path], overrides: Optional[list[str]]) -> tuple[Optional[Path], list[str]]:
    """Allow `vaelab train key=value` with no config file: a first argument with '=' is an override."""
    overrides = list(overrides or [])
    if config is not None and "=" in str(config) and not Path(config).exists():
        overrides.insert(0, str(config))
        config = None
    return config, overrides


# ---------------------------------------------------------------------------------------------------------
# train / sample / demo

Overrides = Annotated[Optional[list[str]], typer.Argument(help="key=value overrides, e.g. model.latent_dim=2.", show_default=False)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or per-epoch lines.")]


@app.command()
def train(
    config: Annotated[Optional[Path], typer.Argument(help="A YAML config (see configs/).", show_default=False)] = None,
    overrides: Overrides = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue this run exactly where it stopped.")] = None,
    run_dir: Annotated[Optional[Path], typer.Option(help="Write the run here (default: out_dir/name).")] = None,
    quiet: Quiet = False,
):
    """Train a VAE; writes a run directory (config, checkpoints, metrics, TensorBoard, images).

    Examples:

      vaelab train configs/mnist-148-z2.yaml train.epochs=20

      vaelab train data.source=fashion-mnist model.arch=conv model.latent_dim=10

      vaelab train --resume runs/mnist-148-z2
    """
    from .config import from_dict, load_yaml, apply_overrides, validate
    from .train import fit

    config, overrides = _split_config_args(config, overrides)
    if resume is not None:
        from .run import CONFIG_FILE, require_run_dir

        if config is not None:
            raise VaelabError("give either a config or --resume RUN_DIR, not both", "overrides such as train.epochs=20 work with --resume")
        data = load_yaml(require_run_dir(resume) / CONFIG_FILE)
        cfg = validate(from_dict(apply_overrides(data, overrides)))
        target = resume
    else:
        from .config import load_config

        cfg = load_config(config, overrides)
        target = run_dir
    console.print(f"training [bold]{cfg.model.arch}[/] VAE (latent {cfg.model.latent_dim}, {cfg.model.likelihood}) on {cfg.data.source}", highlight=False)
    result = fit(cfg, run_dir=target, resume=resume is not None, quiet=quiet)
    _print_fit_summary(result)


def _print_fit_summary(result: dict) -> None:
    last = result["last"]
    table = Table(title="training summary", show_header=False)
    table.add_row("run directory", result["run_dir"])
    table.add_row("epochs / steps", f"{result['epochs']} / {result['steps']}  ({result['stop_reason']})")
    if last:
        split = "val" if "val/loss" in last else "train"
        table.add_row(f"{split} loss per image (nats)", f"{last[split + '/loss']:.2f} = recon {last[split + '/recon']:.2f} + kl {last[split + '/kl']:.2f}")
    table.add_row("best epoch", f"{result['best_epoch']} ({result['best_val']:.2f})")
    table.add_row("time", f"{result['train_time']:.1f} s")
    console.print(table)


@app.command()
def sample(
    run: Annotated[Path, typer.Argument(help="A run directory.")],
    n: Annotated[int, typer.Option("-n", help="How many images.")] = 64,
    label: Annotated[Optional[str], typer.Option(help="Class index or name (conditional models).")] = None,
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("samples.png"),
    seed: int = 0,
    nrow: Annotated[Optional[int], typer.Option(help="Images per row.")] = None,
):
    """Draw images from the prior of a trained run into one PNG grid.

    Example: vaelab sample runs/fashion-cvae -n 64 --label Sneaker --out sneakers.png
    """
    import torch

    from . import load_run
    from .visualize.grid import make_grid, png_bytes

    if n < 1:
        raise VaelabError(f"-n is {n}", "ask for at least one image")
    r = load_run(run)
    labels = None
    if label is not None:
        if not r.model.conditional:
            raise VaelabError(f"{run} is not a conditional model, so --label does not apply", "train with model.conditional=true")
        labels = torch.full((n,), _class_index(r, label))
    g = torch.Generator().manual_seed(seed)
    images = r.model.sample(n, labels=labels, generator=g)
    grid = make_grid(images, nrow=nrow)
    _write_bytes(out, png_bytes(grid, 2 if grid.shape[0] < 400 else 1))
    console.print(f"wrote {out} ({n} samples from {r.checkpoint})")


def _class_index(run, label: str) -> int:
    names = list(run.data_class_names()) if hasattr(run, "data_class_names") else []
    k = run.model.num_classes
    if label.isdigit() and int(label) < k:
        return int(label)
    if label in names:
        return names.index(label)
    raise VaelabError(f"class '{label}' is not one of the model's {k} classes", f"use an index 0..{k - 1}" + (f" or a name: {', '.join(names)}" if names else ""))


def _write_bytes(path: Path, data: bytes) -> None:
    from .train.checkpoint import atomic_write

    try:
        atomic_write(path, lambda f: f.write(data))
    except OSError as e:
        raise VaelabError(f"cannot write {path}: {e.strerror}", "choose a writable path") from None


# ---------------------------------------------------------------------------------------------------------
# evaluate / features (issue: honest numbers)

features_app = typer.Typer(help="Domain feature networks for FID (one per dataset and image shape).", no_args_is_help=True)
app.add_typer(features_app, name="features")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run directory.")],
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    data: Annotated[str | None, typer.Option(help="Evaluate on this data spec instead of the run's own data.")] = None,
    nll_samples: Annotated[int, typer.Option(help="Importance samples k of the NLL (1000 or 5000 for papers).")] = 100,
    no_fid: Annotated[bool, typer.Option("--no-fid", help="Skip FID, precision/recall and conditional accuracy.")] = False,
    features: Annotated[str, typer.Option(help="Feature-network folder, or 'auto' (cached; trained when missing).")] = "auto",
    inception: Annotated[Path | None, typer.Option(help="Local Inception-v3 weights file for FID (no download).")] = None,
    max_generated: Annotated[int, typer.Option(help="At most this many generated (and real) images for FID.")] = 10_000,
    gmm_components: Annotated[int, typer.Option(help="Components of the ex-post GMM sampler.")] = 10,
    checkpoint: Annotated[str, typer.Option(help="best, last, or a .ckpt file.")] = "best",
    batch_size: int = 500,
    seed: int = 0,
):
    """Every number of a trained run: ELBO terms, IWAE NLL, MSE/PSNR/SSIM, active units, FID (prior, GMM, recon).

    Writes RUN/eval/<split>.json and RUN/eval/<split>_per_image.npz; the checkpoints are only read.

    Examples:

      vaelab evaluate runs/mnist-148-z2

      vaelab evaluate runs/mnist-mlp --nll-samples 5000 --split test

      vaelab evaluate runs/fashion-z10 --no-fid
    """
    from .evaluate.report import json_bytes, npz_bytes, summary_rows
    from .run import load_run
    from .evaluate.run import evaluate_run

    if nll_samples < 1:
        raise VaelabError(f"--nll-samples is {nll_samples}", "use k >= 1 importance samples (100 by default, 1000+ for papers)")
    if inception is not None and no_fid:
        raise VaelabError("--inception and --no-fid contradict each other", "drop one of them")
    r = load_run(run, checkpoint=checkpoint)
    result = evaluate_run(
        r,
        split=split,
        data=data,
        nll_samples=nll_samples,
        fid=not no_fid,
        features=features,
        inception=inception,
        max_generated=max_generated,
        gmm_components=gmm_components,
        batch_size=batch_size,
        seed=seed,
        progress=lambda msg: console.print(f"[dim]{msg}[/]", highlight=False),
    )
    out = Path(r.path) / "eval"
    _write_bytes(out / f"{split}.json", json_bytes(result))
    _write_bytes(out / f"{split}_per_image.npz", npz_bytes(result))
    table = Table(title=f"{r.path} ({Path(result['checkpoint']).name}, epoch {result['epoch']}), {split} split", show_header=False)
    for name, value in summary_rows(result):
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
    seed: int = 0,
):
    """Train the small ResNet classifier whose penultimate features FID uses, and save it with its test accuracy.

    Examples:

      vaelab features train mnist

      vaelab features train fashion-mnist --epochs 10

      vaelab features train folder:photos/ --image-size 64 --channels 3
    """
    import torch

    from .evaluate.features import cache_path, load_training_data, save_feature_net, train_feature_net

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
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
        progress=lambda msg: console.print(f"[dim]{msg}[/]", highlight=False),
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


# ---------------------------------------------------------------------------------------------------------
# classify / predict (issue: latent classifiers)


# ---------------------------------------------------------------------------------------------------------
# plot / report (issue: figures and report)


# ---------------------------------------------------------------------------------------------------------
# sweep (issue: studies)


# ---------------------------------------------------------------------------------------------------------
# entry point


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the app, turning user errors into one line and exit code 2."""
    debug = os.environ.get("VAELAB_DEBUG", "") not in ("", "0")
    try:
        app(args=argv, prog_name="vaelab")
    except VaelabError as e:
        from .train.loop import TrainingInterrupted

        if isinstance(e, TrainingInterrupted):
            err_console.print(f"[bold yellow]stopped:[/] {e.message}\n{e.hint}", highlight=False, soft_wrap=True)
            sys.exit(128 + e.signum)
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
