"""What a finished study leaves in its directory, as {relative path: bytes} for the CLI to write:
results.csv, results.md (+ results_summary.csv with several seeds), figures/*.png and report.html."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import steps
from .figures import metric_figures, png_bytes, traversal_figure, traversal_note, traversal_panels
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


def data_overview(plan: StudyPlan, data=None) -> tuple[list[tuple[str, object]], dict[str, bytes]]:
    """The study data at a glance: (quantity, value) rows (source, images per split and class, shape, pixel
    statistics) and the class-count and pixel-histogram figures as PNG. ([], {}) when it cannot be loaded."""
    from ..data.info import summarize
    from ..errors import VaelabError
    from ..visualize.eda import class_distribution_figure, pixel_histogram_figure

    try:
        data = data if data is not None else steps.base_data(plan)
    except VaelabError as e:
        return [("data", f"could not be loaded: {e}")], {}
    info = summarize(data)
    rows: list[tuple[str, object]] = [
        ("source", info["source"]),
        ("images", ", ".join(f"{e['samples']} {s}" for s, e in info["splits"].items())),
        ("image shape", " x ".join(map(str, info["shape"])) + " (channels x height x width)"),
        ("pixel mean / std", f"{info['pixel_mean']:.3f} / {info['pixel_std']:.3f} (0..1 scale)"),
    ]
    if info["labelled"]:
        train = info["splits"].get("train", next(iter(info["splits"].values())))
        counts = ", ".join(f"{name} {n}" for name, n in zip(info["class_names"], train["per_class"], strict=False))
        rows.append((f"classes ({info['num_classes']})", f"{counts} (train images per class)"))
    figs = {}
    if info["labelled"]:
        counts = {split: entry["per_class"] for split, entry in info["splits"].items()}
        figs["data_classes"] = png_bytes(class_distribution_figure(counts, list(info["class_names"])))
    figs["data_pixels"] = png_bytes(pixel_histogram_figure(data.images))
    return rows, figs


def study_outputs(plan: StudyPlan, study_dir: str | Path, status: dict[str, dict], command: str | None = None,
                  results: Results | None = None, data=None) -> dict[str, bytes]:
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
    notes: dict[str, str] = {}  # each grid's caption: active units, total correlation (and MIG) of that model
    seen: set[str] = set()
    for r in rows:
        if r["point"] not in seen and len(chosen) < MAX_TRAVERSALS:
            seen.add(r["point"])
            chosen[r["trial"]] = study_dir / TRIALS_DIR / r["trial"]
            notes[r["trial"]] = traversal_note(r)
    if chosen:
        panels = traversal_panels(chosen, notes)
        figures["traversals"] = png_bytes(traversal_figure(panels, title=f"{plan.name}: latent traversals"))
    data_rows, data_figures = data_overview(plan, data)
    for name, png in {**figures, **data_figures}.items():
        files[f"figures/{name}.png"] = png
    files["report.html"] = study_html(plan, study_dir, results, figures, status, command, (data_rows, data_figures)).encode()
    return files
