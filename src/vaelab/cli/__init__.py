"""The `vaelab` command line: thin typed commands that call the library and print a summary.

Every command builds a config or spec, calls one library function, and prints what it did. A
`VaelabError` becomes one line on stderr and exit code 2 (a traceback only with ``VAELAB_DEBUG=1``).
Each command group lives in its own module; importing them registers the commands on `app`.
"""

from __future__ import annotations

import importlib
import os
import sys

from rich.markup import escape

from ..errors import VaelabError
from ._common import app, err_console

__all__ = ["app", "main"]

# importing a command module registers its commands, in this order in `vaelab --help`
COMMAND_MODULES = ("data", "pack", "train", "evaluate", "latent", "anomaly", "figures", "explore", "export", "sweep", "vq")
for _module in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_module}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the app, turning user errors into one line and exit code 2."""
    import warnings

    formatted = warnings.formatwarning
    warnings.formatwarning = _one_line_warning  # (the format only: a caller recording warnings still gets them)
    try:
        _main(argv)
    finally:
        warnings.formatwarning = formatted


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning (a dark npz, a skipped file) as one line on stderr, like errors, not Python's two."""
    return f"warning: {' '.join(str(message).split())}\n"


def _main(argv: list[str] | None) -> None:
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
        from ..train.loop import TrainingInterrupted

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
