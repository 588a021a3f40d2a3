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


# ---------------------------------------------------------------------------------------------------------
# classify / predict (issue: latent classifiers)


# ---------------------------------------------------------------------------------------------------------
# plot / report (issue: figures and report)


# ---------------------------------------------------------------------------------------------------------
# sweep (issue: studies)


@app.command()
def sweep(
    config: Annotated[Path | None, typer.Argument(help="A config or study YAML (with an optional sweep: section).", show_default=False)] = None,
    overrides: Overrides = None,
    grid: Annotated[list[str] | None, typer.Option("--grid", help="KEY=V1,V2,... to vary (repeat: the product).", show_default=False)] = None,
    seeds: Annotated[int | None, typer.Option(help="Train every grid point with this many seeds (mean ± std).", show_default=False)] = None,
    jobs: Annotated[int, typer.Option(help="Worker processes on this machine.")] = 1,
    evaluate: Annotated[bool | None, typer.Option("--evaluate/--no-evaluate", help="Evaluate each trial on the test split.", show_default=False)] = None,
    classify: Annotated[list[str] | None, typer.Option("--classify", help="Fit this latent classifier per trial (e.g. gmm).", show_default=False)] = None,
    study_dir: Annotated[Path | None, typer.Option(help="Study directory (default: out_dir/name).", show_default=False)] = None,
    storage: Annotated[str | None, typer.Option(help="Database URL of the study (default: sqlite in the study directory).", show_default=False)] = None,
    worker: Annotated[bool, typer.Option("--worker", help="Only run trials (join a study from another machine); no results files.")] = False,
    search: Annotated[bool, typer.Option("--search", help="Sample lr, beta, latent size with Optuna TPE instead of a grid.")] = False,
    trials: Annotated[int | None, typer.Option(help="Trials of --search.", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Reuse a study directory made by another config.")] = False,
    quiet: Quiet = False,
):
    """Train a family of configs, evaluate each, and compare them in one table, figures and report.

    Every trial is an ordinary run in STUDY/trials/<name>; the study state is an Optuna study, so an
    interrupted sweep resumes (run the same command again) and workers on several machines can share
    one study (--storage URL --worker).

    Examples:

      vaelab sweep data.source=mnist-sample --grid model.beta=0.5,1,4 --grid model.latent_dim=2,10 --evaluate

      vaelab sweep configs/fashion-study.yaml                 # the named variants of its sweep: section

      vaelab sweep data.source=mnist-sample --search --trials 20 --jobs 2

      vaelab sweep configs/fashion-study.yaml --storage postgresql://u:p@db/vaelab --worker   # on each machine
    """
    import shlex

    import optuna

    from .sweep import (
        build_plan,
        build_results,
        finish_steps,
        prepare_study,
        run_workers,
        study_outputs,
        study_status,
    )
    from .sweep.steps import check_available

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config, overrides = _split_config_args(config, overrides)
    if jobs < 1:
        raise VaelabError(f"--jobs is {jobs}", "use 1 or more worker processes")
    plan = build_plan(config, overrides, grid, seeds, search, trials, evaluate, classify)
    check_available(plan.evaluate, plan.classify)
    directory = study_dir or Path(plan.base["out_dir"]) / plan.name
    info = prepare_study(plan, directory, storage, force)
    what = f"{plan.search['trials']} search trials" if plan.is_search else f"{info['total']} trials"
    console.print(f"study [bold]{directory}[/]: {what} ({info['complete']} done, {info['waiting']} queued, "
                  f"{info['running']} running elsewhere); storage {info['storage']}", highlight=False)
    if info["moved_aside"]:
        console.print(f"--force: set aside {len(info['moved_aside'])} trial folder(s) of the old config in {directory / 'replaced'}")
    run_workers(plan, directory, storage, jobs=jobs, evaluate=plan.evaluate, classify=plan.classify,
                on_event=_sweep_event if not quiet else None, show_epochs=jobs == 1 and not quiet)
    if worker:
        console.print("worker done: no trial left to run")
        return
    status = study_status(plan, directory, storage)
    errors = finish_steps(plan, directory, status, plan.evaluate, plan.classify, _sweep_event if not quiet else None)
    args = ([str(config)] if config else []) + overrides + [f"--grid={g}" for g in grid or []]
    args += [f"--seeds={seeds}"] * (seeds is not None) + ["--search"] * search + [f"--trials={trials}"] * (trials is not None)
    args += {True: ["--evaluate"], False: ["--no-evaluate"], None: []}[evaluate] + [f"--classify={m}" for m in classify or []]
    args += [f"--study-dir={study_dir}"] * (study_dir is not None)
    command = "vaelab sweep " + " ".join(shlex.quote(a) for a in args)
    results = build_results(plan, directory, status)
    for rel, data in study_outputs(plan, directory, status, command, results).items():
        _write_bytes(directory / rel, data)
    _print_results(results, directory)
    failed = sorted(k for k, v in status.items() if v["state"] in ("failed", "interrupted", "not started"))
    if failed or errors:
        names = ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else "")
        first = next((f"; {k}: {status[k]['error'][:160]}" for k in failed if status[k].get("error")), "")
        raise VaelabError(
            f"{len(failed)} of {len(status)} trials did not finish ({names}){first}" if failed else errors[0],
            f"see {directory / 'report.html'} and trials/<name>/sweep.json; run the same command again to retry",
        )


def _sweep_event(event: dict) -> None:
    """One line per trial event (module level: worker processes of --jobs call it too)."""
    kind, name = event["event"], event.get("trial", "")
    if kind == "start":
        how = {"new": "training", "partial": f"resuming from epoch {event['epoch']}", "finished": "already trained"}[event["state"]]
        text = f"trial {name}: {how} ({event['epochs']} epoch{'s' if event['epochs'] != 1 else ''})"
    elif kind == "done":
        t = event.get("train_time")
        text = f"trial {name}: done, best val -ELBO {event['value']:.2f}" + (f", {t:.1f} s" if t else "")
    elif kind == "step":
        text = f"trial {name}: {event['step']}"
    elif kind == "failed":
        text = f"[red]trial {name}: failed[/]: {event['error']}"
    elif kind == "pruned":
        text = f"trial {name}: {event['message']}"
    elif kind == "interrupted":
        text = f"trial {name}: interrupted, checkpoint kept"
    else:
        text = f"trial {name}: {event.get('message', kind)}"
    Console().print(text, highlight=False, soft_wrap=True)


def _print_results(results, directory: Path) -> None:
    """The study's table (mean ± std per point with several seeds) as a rich table."""
    from .sweep.results import cells, visible

    rows, columns = (results.summary, results.summary_columns) if results.summary is not None else (results.rows, results.columns)
    cols = [c for c in visible(rows, columns) if c.key not in ("epochs", "train_time_s")]  # in results.md
    if all(r.get("status") == "complete" for r in results.rows):
        cols = [c for c in cols if c.key != "status"]
    table = Table(title=f"study results ({len(results.rows)} trials)")
    for c in cols:
        table.add_column(c.header, justify="right" if c.numeric else "left")
    for line in cells(rows, cols, with_std=results.summary is not None):
        table.add_row(*line)
    console.print(table)
    console.print(f"wrote {directory / 'results.csv'}, results.md, figures/, report.html", highlight=False)


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
