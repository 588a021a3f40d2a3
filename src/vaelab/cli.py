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
from rich.markup import escape
from rich.table import Table as _RichTable
from rich.text import Text

from . import __version__
from .errors import VaelabError


class Table(_RichTable):
    """A rich Table whose strings are plain text: class, file and folder names from data are never markup
    (a class folder named '[/bold]' would otherwise crash the table, '[red]x' would turn red)."""

    def __init__(self, *columns, title=None, **kwargs):
        super().__init__(*columns, title=_plain(title), **kwargs)

    def add_column(self, header="", *args, **kwargs):
        super().add_column(_plain(header), *args, **kwargs)

    def add_row(self, *cells, **kwargs):
        super().add_row(*(_plain(c) for c in cells), **kwargs)


def _plain(value):
    return Text(value) if isinstance(value, str) else value

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
    text = str(config) if config is not None else ""
    if text and not Path(text).exists() and "/" not in text and Path(text).suffix not in (".yaml", ".yml"):
        from .config import all_keys

        if text in all_keys() or text.split(".")[0] in ("data", "model", "train", "trainer", "name", "out_dir"):
            raise VaelabError(f"'{text}' is not key=value", f"write it like {text}=VALUE")
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
        from .run import CONFIG_FILE
        from .train.rundir import check_resumable

        if config is not None:
            raise VaelabError("give either a config or --resume RUN_DIR, not both", "overrides such as train.epochs=20 work with --resume")
        if run_dir is not None:
            raise VaelabError("give either --resume RUN_DIR or --run-dir, not both", "--resume continues the run in its own folder")
        data = load_yaml(check_resumable(resume) / CONFIG_FILE)
        cfg = validate(from_dict(apply_overrides(data, overrides)))
        target = resume
    else:
        from .config import load_config

        cfg = load_config(config, overrides)
        target = run_dir
    console.print(f"training [bold]{cfg.model.arch}[/] VAE (latent {cfg.model.latent_dim}, {cfg.model.likelihood}) on {escape(cfg.data.source)}", highlight=False)
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
    console.print(f"wrote {out} ({n} samples from {r.checkpoint})", markup=False, highlight=False)


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
        try:
            code = app(args=argv, prog_name="vaelab", standalone_mode=False)
        except Exception as e:
            if not _is_click_error(e):
                raise
            _click_error(e)
        sys.exit(code if isinstance(code, int) else 0)  # as click's standalone mode: typer.Exit(n), Ctrl-C 130
    except VaelabError as e:
        from .train.loop import TrainingInterrupted

        if isinstance(e, TrainingInterrupted):
            err_console.print(f"[bold yellow]stopped:[/] {escape(e.message)}\n{escape(e.hint or '')}", highlight=False, soft_wrap=True)
            sys.exit(128 + e.signum)
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except (OSError, MemoryError) as e:  # the machine, not vaelab: a full disk, a read-only folder, no memory
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(_system_error(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)


def _is_click_error(e: BaseException, name: str | None = None) -> bool:
    """By class name: typer ships its own copy of click, so the classes are not importable by one path."""
    names = {c.__name__ for c in type(e).__mro__}
    return name in names if name else bool(names & {"ClickException", "Abort"})


def _click_error(e: BaseException) -> None:
    """A misused command line: one line and exit 2, like every other bad input (help when nothing is given)."""
    if _is_click_error(e, "Abort"):
        err_console.print("aborted")
        sys.exit(1)
    if _is_click_error(e, "NoArgsIsHelpError") or not hasattr(e, "format_message"):
        e.show()  # `vaelab data` with nothing after it: the help, as usual
    else:
        where = getattr(getattr(e, "ctx", None), "command_path", None) or "vaelab"
        err_console.print(f"[bold red]error:[/] {escape(e.format_message())} (see '{where} --help')",
                          highlight=False, soft_wrap=True)
    sys.exit(getattr(e, "exit_code", 2))


def _system_error(e: BaseException) -> str:
    """One line for an OSError/MemoryError that escaped the library's own checks."""
    import errno

    if isinstance(e, MemoryError):
        return "out of memory (use a smaller train.batch_size, data.image_size or data.limit)"
    where = f" {e.filename}" if getattr(e, "filename", None) else ""
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return f"disk full while writing{where} (free some space and run it again)"
    return f"{e.strerror or e}:{where} (check the path and its permissions; VAELAB_DEBUG=1 shows the traceback)"
