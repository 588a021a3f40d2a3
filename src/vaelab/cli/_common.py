"""What every command module of the CLI shares: the consoles, the typer apps, option types and small helpers.

Every command builds a config or spec, calls one library function, and prints what it did. A
`VaelabError` becomes one line on stderr and exit code 2 (a traceback only with ``VAELAB_DEBUG=1``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table as _RichTable
from rich.text import Text

from .. import __version__
from ..errors import VaelabError


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


def _say_dim(msg: str) -> None:
    """A library's progress line, dimmed (the `progress=` callback of long library calls)."""
    _say_dim.bar.stop()
    console.print(f"[dim]{msg}[/]", highlight=False)


def _use_threads(threads: int = 0) -> int:
    """torch's CPU threads for a command: `threads` (a run's trainer.threads), 0 for the physical cores."""
    from ..threads import apply_threads

    return apply_threads(threads)


class _StepBar:
    """The bar with ETA of a long library step: ``progress.update(done, total)`` (the optional second half
    of the `progress=` protocol: a library calls it when its callable has it). Only on a terminal."""

    def __init__(self):
        self.bar = None
        self.task = None

    def update(self, done: int, total: int) -> None:
        if not console.is_terminal:
            return
        if self.bar is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), "ETA", TimeRemainingColumn(),
                console=console, transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("", total=total)
        self.bar.update(self.task, completed=done, total=total)
        if done >= total:
            self.stop()

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = self.task = None


_say_dim.bar = _StepBar()  # type: ignore[attr-defined]
_say_dim.update = _say_dim.bar.update  # type: ignore[attr-defined]
err_console = Console(stderr=True)

# -h as well as --help, on every command (click passes the names down to sub-commands)
CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="vaelab",
    help="Variational Autoencoders for images: train, evaluate, look, classify, study.\n\n"
    "Examples:\n\n"
    "  vaelab data info mnist-sample\n\n"
    "  vaelab config list\n\n"
    "  vaelab train mnist-148-z2 train.epochs=5\n\n"
    "  vaelab sample runs/demo -n 64 --out grid.png",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    rich_markup_mode="rich",
    context_settings=CONTEXT,
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




DataOpt = Annotated[int | None, typer.Option(help="Resize to SIZE x SIZE (center crop for photos).")]

features_app = typer.Typer(help="Domain feature networks for FID (one per dataset and image shape).", no_args_is_help=True)
app.add_typer(features_app, name="features")

def _complete_config(incomplete: str) -> list[str]:
    """Shell completion of a config argument: the shipped configs' names, then YAML files and folders."""
    import glob

    from ..recipes import names

    out = [n for n in names() if n.startswith(incomplete)]
    for p in sorted(glob.glob(glob.escape(incomplete) + "*")):
        if Path(p).is_dir() or Path(p).suffix in (".yaml", ".yml"):
            out.append(p + ("/" if Path(p).is_dir() else ""))
    return out


ConfigArg = Annotated[
    Path | None,
    typer.Argument(
        help="A shipped config's name (vaelab config list) or a YAML file.",
        show_default=False,
        autocompletion=_complete_config,
    ),
]

Overrides = Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. model.latent_dim=2.", show_default=False)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or per-epoch lines.")]



def _split_config_args(config: Path | None, overrides: list[str] | None) -> tuple[Path | None, list[str]]:
    """Allow `vaelab train key=value` with no config file: a first argument with '=' is an override."""
    overrides = list(overrides or [])
    if config is not None and "=" in str(config) and not Path(config).exists():
        overrides.insert(0, str(config))
        config = None
    text = str(config) if config is not None else ""
    if text and not Path(text).exists() and "/" not in text and Path(text).suffix not in (".yaml", ".yml"):
        from ..config import all_keys

        if text in all_keys() or text.split(".")[0] in ("data", "model", "train", "trainer", "name", "out_dir"):
            raise VaelabError(f"'{text}' is not key=value", f"write it like {text}=VALUE")
    return config, overrides



def _write_bytes(path: Path, data: bytes) -> None:
    from ..train.checkpoint import atomic_write

    try:
        atomic_write(path, lambda f: f.write(data))
    except OSError as e:
        raise VaelabError(f"cannot write {path}: {e.strerror}", "choose a writable path") from None



def _write_json(path: Path, data: dict) -> None:
    import json

    _write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"



def _int_list(text: str | None, option: str) -> list[int] | None:
    """'0,3' -> [0, 3]; a clear error for anything else."""
    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise VaelabError(f"{option} '{text}' is not a list of integers", f"write it like {option} 0,1") from None



__all__ = [
    "ConfigArg", "DataOpt", "Overrides", "Quiet", "Table", "_int_list", "_pct", "_say_dim", "_split_config_args", "_use_threads",
    "_write_bytes",
    "_write_json", "app", "config_app", "console", "data_app", "err_console", "features_app",
]
