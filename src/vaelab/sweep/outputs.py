"""What a finished study leaves in its directory, as {relative path: bytes} for the CLI to write:
results.csv, results.md (+ results_summary.csv with several seeds), figures/*.png and report.html."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import steps
from .figures import metric_figures, png_bytes, traversal_figure, traversal_panels
from .grid import StudyPlan
from .report import study_html
from .results import Results, build_results

MAX_TRAVERSALS = 12


def finish_steps(plan: StudyPlan, study_dir: str | Path, status: dict[str, dict], evaluate: bool,
                 classify: list[str], on_event: Callable[[dict], None] | None = None) -> list[str]:
    """Evaluate / classify complete trials that lack those files (e.g. a study first run without
    --evaluate), and write their report.html when the report library exists. Trials whose folder is not
    in this study directory (run by a worker elsewhere) are left out. Returns one message per step that
    failed."""
    from .study import TRIALS_DIR

    on_event = on_event or (lambda e: None)
    errors = []
    for name, info in status.items():
        if info.get("state") != "complete":
            continue
        run_dir = Path(study_dir) / TRIALS_DIR / name
        if not run_dir.is_dir():  # a worker on another machine, with its own study directory, ran it
            continue
        todo = []
        if evaluate and not steps.eval_path(run_dir).is_file():
            todo.append(("evaluate", lambda d=run_dir: steps.evaluate_trial(d, disentanglement=plan.disentanglement)))
        for m in classify:
            if not steps.classify_path(run_dir, m).is_file():
                todo.append((f"classify {m}", lambda d=run_dir, m=m: steps.classify_trial(d, m)))
        if todo or (steps.has_report_library() and not steps.report_path(run_dir).is_file()):
            todo.append(("report", lambda d=run_dir: steps.report_trial(d)))  # (re)made after new results
        for what, fn in todo:
            on_event({"event": "step", "trial": name, "step": what})
            try:
                fn()
            except Exception as e:
                errors.append(f"{name}: {what} failed: {e}")
                on_event({"event": "warning", "trial": name, "message": f"{what} failed: {e}"})
    return errors


def study_outputs(plan: StudyPlan, study_dir: str | Path, status: dict[str, dict], command: str | None = None,
                  results: Results | None = None) -> dict[str, bytes]:
    from .study import TRIALS_DIR

    study_dir = Path(study_dir)
    results = results or build_results(plan, study_dir, status)
    files: dict[str, bytes] = {"results.csv": results.csv().encode(), "results.md": results.markdown(f"Study {plan.name}").encode()}
    summary = results.summary_csv()
    if summary is not None:
        files["results_summary.csv"] = summary.encode()
    figures = {name: png_bytes(fig) for name, fig in metric_figures(results, plan).items()}
    # traversals: the first seed of each complete point (search: the best trials by validation loss)
    rows = [r for r in results.rows if r.get("status") == "complete" and (study_dir / TRIALS_DIR / r["trial"]).is_dir()]
    if plan.is_search:
        rows = sorted(rows, key=lambda r: r.get("objective") or float("inf"))
    chosen: dict[str, Path] = {}
    seen: set[str] = set()
    for r in rows:
        if r["point"] not in seen and len(chosen) < MAX_TRAVERSALS:
            seen.add(r["point"])
            chosen[r["trial"]] = study_dir / TRIALS_DIR / r["trial"]
    if chosen:
        figures["traversals"] = png_bytes(traversal_figure(traversal_panels(chosen), title=f"{plan.name}: latent traversals"))
    for name, png in figures.items():
        files[f"figures/{name}.png"] = png
    files["report.html"] = study_html(plan, study_dir, results, figures, status, command).encode()
    return files
