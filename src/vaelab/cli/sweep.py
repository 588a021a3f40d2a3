"""`vaelab sweep`: studies of several configs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import VaelabError
from ._common import Overrides, Quiet, Table, _complete_config, _split_config_args, _write_bytes, app, console


@app.command()
def sweep(
    config: Annotated[
        Path | None,
        typer.Argument(help="A shipped config's name or a config/study YAML (with an optional sweep: section).", show_default=False, autocompletion=_complete_config),
    ] = None,
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

    Every trial is an ordinary run in STUDY/trials/<name>; the study state is an Optuna study, so an interrupted sweep resumes (run the same command again) and workers on several machines can share one study (--storage URL --worker).

    Examples:

      vaelab sweep data.source=mnist-sample --grid model.beta=0.5,1,4 --grid model.latent_dim=2,10 --evaluate

      vaelab sweep fashion-study                 # the named variants of its sweep: section

      vaelab sweep data.source=mnist-sample --search --trials 20 --jobs 2

      vaelab sweep fashion-study --storage postgresql://u:p@db/vaelab --worker   # on each machine
    """
    import shlex

    from ..extras import require

    require("sweep")  # without optuna: one line saying what to install
    import optuna

    from ..sweep import (
        build_plan,
        build_results,
        finish_steps,
        prepare_study,
        run_workers,
        study_outputs,
        study_status,
    )
    from ..sweep.steps import base_data, check_available

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config, overrides = _split_config_args(config, overrides)
    if jobs < 1:
        raise VaelabError(f"--jobs is {jobs}", "use 1 or more worker processes")
    plan = build_plan(config, overrides, grid, seeds, search, trials, evaluate, classify)
    check_available(plan.evaluate, plan.classify)
    directory = study_dir or Path(plan.base["out_dir"]) / plan.name
    info = prepare_study(plan, directory, storage, force)
    what = f"{plan.search['trials']} search trials" if plan.is_search else f"{info['total']} trials"
    console.print(f"study [bold]{escape(str(directory))}[/]: {what} ({info['complete']} done, {info['waiting']} queued, "
                  f"{info['running']} running elsewhere); storage {info['storage']}", highlight=False)
    if info["moved_aside"]:
        console.print(f"--force: set aside {len(info['moved_aside'])} trial folder(s) of the old config in {directory / 'replaced'}")
    data = None
    if not worker:
        try:
            data = base_data(plan)
        except VaelabError:
            data = None  # each trial reports its own data error
    if plan.evaluate and (data is not None or worker):
        _prepare_feature_net(plan, data, quiet)
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
    for rel, blob in study_outputs(plan, directory, status, command, results, data=data).items():
        _write_bytes(directory / rel, blob)
    _print_results(results, directory)
    elsewhere = sorted(k for k, v in status.items() if v["state"] == "complete" and not (directory / "trials" / k).is_dir())
    if elsewhere:
        console.print(f"{len(elsewhere)} trial(s) ran on other machines and their folders are not in "
                      f"{escape(str(directory / 'trials'))} ({escape(', '.join(elsewhere[:3]))}{' ...' if len(elsewhere) > 3 else ''}): "
                      "copy them there and run the same command again to fill their rows", highlight=False)
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
    kind, name = event["event"], escape(str(event.get("trial", "")))
    if kind == "start":
        how = {"new": "training", "partial": f"resuming from epoch {event['epoch']}", "finished": "already trained"}[event["state"]]
        text = f"trial {name}: {how} ({event['epochs']} epoch{'s' if event['epochs'] != 1 else ''})"
    elif kind == "done":
        t = event.get("train_time")
        text = f"trial {name}: done, best val -ELBO {event['value']:.2f}" + (f", {t:.1f} s" if t else "")
    elif kind == "step":
        text = f"trial {name}: {escape(str(event['step']))}"
    elif kind == "failed":
        text = f"[red]trial {name}: failed[/]: {escape(str(event['error']))}"
    elif kind == "pruned":
        text = f"trial {name}: {escape(str(event['message']))}"
    elif kind == "interrupted":
        text = f"trial {name}: interrupted, checkpoint kept"
    else:
        text = f"trial {name}: {escape(str(event.get('message', kind)))}"
    Console().print(text, highlight=False, soft_wrap=True)


def _prepare_feature_net(plan, data, quiet: bool) -> None:
    """Before the first evaluation: train the FID feature network when none is cached for this data, and
    say so (it takes minutes), with a progress bar over its epochs and where it is cached."""
    import re

    from ..sweep.steps import missing_feature_net, train_feature_net

    try:
        need = missing_feature_net(plan, data)
    except VaelabError:
        return  # the evaluation itself will say what is wrong
    if need is None:
        return
    c, h, w = need["shape"]
    console.print(
        f"[bold]FID needs a feature network for {escape(need['spec'])} at {c}x{h}x{w}[/]: none is cached yet, so it is "
        f"trained once now (minutes on a CPU, 10 or more on a full dataset); it is cached in {escape(str(need['path']))} "
        "and every later evaluation reuses it", highlight=False, soft_wrap=True,
    )
    if quiet:
        train_feature_net(need["spec"], need["shape"])
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("feature network"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task("features", total=None, note="loading the data")

        def progress(message: str) -> None:
            found = re.match(r"epoch (\d+)/(\d+): .*?(val accuracy [0-9.]+)?", message)
            if found:
                bar.update(task, completed=int(found.group(1)), total=int(found.group(2)), note=found.group(3) or "")
            elif message.startswith("trained feature network"):
                bar.update(task, note="done")
            else:
                bar.update(task, note=message[:60])

        trained = train_feature_net(need["spec"], need["shape"], progress)
    console.print(f"feature network {escape(trained.name)} cached in {escape(str(trained.path))}", highlight=False, soft_wrap=True)


def fit_columns(headers: list[str], lines: list[list[str]], width: int, keep: int = 1, priority: list[int] | None = None) -> list[int]:
    """Indices (in table order) of the columns that fit a terminal `width` wide without cutting a value: the
    first `keep` always, then the others in `priority` order (default left to right) while they fit. A header
    may wrap at its spaces; a value never does."""
    def need(i: int) -> int:
        longest_word = max((len(word) for word in headers[i].split()), default=1)
        return max([longest_word] + [len(line[i]) for line in lines])

    order = list(range(keep)) + [i for i in (priority or range(len(headers))) if i >= keep]
    chosen, used = [], 1  # the table's left border
    for i in order:
        cost = need(i) + 3  # padding on both sides and a border
        if i < keep or used + cost <= width:
            chosen.append(i)
            used += cost
    return sorted(chosen)


# the study columns a reader looks for first when not all fit the terminal
FIRST_COLUMNS = ("objective", "test_total", "val_loss", "nll", "ssim", "fid", "accuracy_", "cond_acc")


def _print_results(results, directory: Path, width: int | None = None) -> None:
    """The study's table (mean ± std per point with several seeds) as a rich table, with as many columns as
    fit the terminal; the others are named below it (all of them are in results.md and report.html)."""
    import textwrap

    from ..sweep.results import cells, visible

    rows, columns = (results.summary, results.summary_columns) if results.summary is not None else (results.rows, results.columns)
    cols = [c for c in visible(rows, columns) if c.key not in ("epochs", "train_time_s")]  # in results.md
    if all(r.get("status") == "complete" for r in results.rows):
        cols = [c for c in cols if c.key != "status"]
    lines = cells(rows, cols, with_std=results.summary is not None)
    width = width or console.width
    ident = sum(1 for c in cols if not c.numeric or c.key.startswith(("model.", "data.", "train.", "seed")))
    rank = {i: next((k for k, p in enumerate(FIRST_COLUMNS) if c.key.startswith(p)), len(FIRST_COLUMNS)) for i, c in enumerate(cols)}
    priority = sorted(range(len(cols)), key=lambda i: (i >= ident, rank[i], i))  # the varied keys, then the main metrics
    shown = fit_columns([c.header for c in cols], lines, width, keep=1, priority=priority)
    table = Table(title=f"study results ({len(results.rows)} trials)")
    for i in shown:
        c = cols[i]
        size = max([len(w) for w in c.header.split()] + [len(line[i]) for line in lines])
        table.add_column("\n".join(textwrap.wrap(c.header, size)), justify="right" if c.numeric else "left", no_wrap=True, min_width=size)
    for line in lines:
        table.add_row(*[line[i] for i in shown])
    console.print(table, width=width)
    left = [cols[i].header for i in range(len(cols)) if i not in shown]
    if left:
        console.print(f"{len(left)} more column(s) in results.md and report.html: {', '.join(left)}", highlight=False)
    console.print(f"wrote {directory / 'results.csv'}, results.md, figures/, report.html", highlight=False)


