"""The `vaelab` command line: thin typed commands that call the library and print a summary.

Every command builds a config or spec, calls one library function, and prints what it did. A
`VaelabError` becomes one line on stderr and exit code 2 (a traceback only with ``VAELAB_DEBUG=1``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

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

DataOpt = Annotated[int | None, typer.Option(help="Resize to SIZE x SIZE (center crop for photos).")]


@data_app.command("info")
def data_info(
    spec: Annotated[str, typer.Argument(help="mnist, fashion-mnist, mnist-sample, npz:FILE, folder:DIR, ...")],
    image_size: DataOpt = None,
    channels: Annotated[int | None, typer.Option(help="1 (gray) or 3 (RGB).")] = None,
    classes: Annotated[str | None, typer.Option(help="Keep these classes, e.g. 1,4,8.")] = None,
    val_fraction: Annotated[float, typer.Option(help="Validation share when the source has none.")] = 0.1,
    limit: Annotated[int | None, typer.Option(help="At most this many images per split.")] = None,
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
    config: Annotated[Path | None, typer.Argument(help="A YAML config (default: the built-in defaults).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
):
    """Print the full resolved config.

    Example: vaelab config show configs/fashion-mlp-z2.yaml model.latent_dim=10
    """
    from .config import dump_config, load_config

    config, overrides = _split_config_args(config, overrides)
    console.print(dump_config(load_config(config, overrides)), markup=False, highlight=False)


def _split_config_args(config: Path | None, overrides: list[str] | None) -> tuple[Path | None, list[str]]:
    """Allow `vaelab train key=value` with no config file: a first argument with '=' is an override."""
    overrides = list(overrides or [])
    if config is not None and "=" in str(config) and not Path(config).exists():
        overrides.insert(0, str(config))
        config = None
    return config, overrides


# ---------------------------------------------------------------------------------------------------------
# train / sample / demo

Overrides = Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. model.latent_dim=2.", show_default=False)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or per-epoch lines.")]


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="A YAML config (see configs/).", show_default=False)] = None,
    overrides: Overrides = None,
    resume: Annotated[Path | None, typer.Option(help="Continue this run exactly where it stopped.")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Write the run here (default: out_dir/name).")] = None,
    quiet: Quiet = False,
):
    """Train a VAE; writes a run directory (config, checkpoints, metrics, TensorBoard, images).

    Examples:

      vaelab train configs/mnist-148-z2.yaml train.epochs=20

      vaelab train data.source=fashion-mnist model.arch=conv model.latent_dim=10

      vaelab train --resume runs/mnist-148-z2
    """
    from .config import apply_overrides, from_dict, load_yaml, validate
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
        from .train.rundir import new_run_dir

        cfg = load_config(config, overrides)
        target = run_dir if run_dir is not None else new_run_dir(cfg)
    console.print(
        f"training [bold]{cfg.model.arch}[/] VAE (latent {cfg.model.latent_dim}, {cfg.model.likelihood}) on "
        f"{cfg.data.source} -> {target}",
        highlight=False,
        soft_wrap=True,
    )
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
    label: Annotated[str | None, typer.Option(help="Class index or name (conditional models).")] = None,
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("samples.png"),
    seed: int = 0,
    nrow: Annotated[int | None, typer.Option(help="Images per row.")] = None,
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
    names = list(run.class_names)
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


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option(help="Where the run directory goes.")] = Path("runs"),
    epochs: Annotated[int | None, typer.Option(help="Override the demo config's train.epochs.")] = None,
    quiet: Quiet = False,
):
    """Train the demo VAE (configs/demo.yaml) on the bundled MNIST sample into OUT_DIR/demo; prints the run dir.

    About a minute on a laptop CPU. Example: vaelab demo --out-dir runs --epochs 5
    """
    from .config import load_config
    from .train import fit
    from .train.rundir import new_run_dir

    overrides = [f"out_dir={out_dir}"] + ([f"train.epochs={epochs}"] if epochs is not None else [])
    cfg = load_config(_demo_config(), overrides)
    run_dir = new_run_dir(cfg)  # OUT_DIR/demo, or demo-2... when a demo run is already there (never overwritten)
    console.print(f"training the demo VAE on {cfg.data.source} into {run_dir}", highlight=False)
    result = fit(cfg, run_dir=run_dir, quiet=quiet)
    _print_fit_summary(result)
    console.print(result["run_dir"], highlight=False, soft_wrap=True)


def _demo_config() -> Path:
    """configs/demo.yaml of the working directory, else the one beside the installed source tree."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        path = root / "configs" / "demo.yaml"
        if path.is_file():
            return path
    raise VaelabError("configs/demo.yaml not found", "run 'vaelab demo' from the vaelab repository (make demo)")


# ---------------------------------------------------------------------------------------------------------
# evaluate / features (issue: honest numbers)


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
