"""The results table of a study, read from the trials' own files.

Each row is one trial: the varied values (from the run's config.yaml), its seed and state, the
validation loss of its best epoch (metrics.jsonl), the test metrics of ``eval/test.json`` (what
`vaelab evaluate` writes), the accuracy of each ``classify/<method>.json``, and its epochs and
training time. With several seeds the trials of one grid point are also summarised as mean ± std
(sample standard deviation over seeds). Tables are returned as text; the CLI writes the files.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import flatten, load_yaml, to_dict
from ..errors import VaelabError
from ..run import CONFIG_FILE, read_metrics
from . import steps
from .grid import StudyPlan, short_names

# (column, header, number format, path in eval/test.json): all per image, in nats where a loss
EVAL_COLUMNS = [
    ("test_total", "test total", ".2f", "loss.objective"),  # recon + beta * KL: the seed table's "Total Loss"
    ("test_recon", "test recon", ".2f", "loss.recon"),
    ("test_kl", "test KL", ".2f", "loss.kl"),
    ("nll", "NLL", ".2f", "nll.nll"),
    ("ssim", "SSIM", ".3f", "recon_quality.ssim"),
    ("fid", "FID", ".2f", "fid.prior"),
    ("cond_acc", "cond. acc.", ".3f", "conditional_accuracy.accuracy"),  # a dict: accuracy, per_class, gmm, ...
    ("active_units", "active units", "g", "active_units"),
    ("total_corr", "TC (nats)", ".2f", "total_correlation.tc"),  # of the aggregate posterior (evaluate_trial)
]
# the disentanglement metrics (eval/test.json's 'disentanglement.headline', from `evaluate --disentanglement`)
DISENTANGLEMENT_COLUMNS = [
    ("beta_vae", "BetaVAE", ".3f"),
    ("factor_vae", "FactorVAE", ".3f"),
    ("mig", "MIG", ".3f"),
    ("sap", "SAP", ".3f"),
    ("dci_d", "DCI dis.", ".3f"),
    ("dci_c", "DCI compl.", ".3f"),
    ("dci_i", "DCI info.", ".3f"),
]
VAL_COLUMNS = [("val_loss", "val total", ".2f"), ("val_recon", "val recon", ".2f"), ("val_kl", "val KL", ".2f")]
RUN_COLUMNS = [("epochs", "epochs", "d"), ("train_time_s", "train time (s)", ".1f")]


@dataclass
class Column:
    key: str
    header: str
    fmt: str = ""  # number format; '' = as text
    numeric: bool = False


@dataclass
class Results:
    """Per-trial rows, per-point summary rows (several seeds only), and their columns."""

    rows: list[dict]
    columns: list[Column]
    summary: list[dict] | None = None
    summary_columns: list[Column] = field(default_factory=list)
    seeds: int = 1

    def csv(self) -> str:
        return _csv(self.rows, self.columns)

    def summary_csv(self) -> str | None:
        if self.summary is None:
            return None
        cols = []
        for c in self.summary_columns:
            cols.append(c)
            if c.numeric:
                cols.append(Column(c.key + "_std", c.header + " std", c.fmt, True))
        return _csv(self.summary, cols)

    def markdown(self, title: str | None = None) -> str:
        out = [f"# {title}\n"] if title else []
        if self.summary is not None:
            out.append(f"## Mean ± std over {self.seeds} seeds\n")
            out.append(_markdown(self.summary, self.summary_columns, with_std=True))
            out.append("\n## All trials\n")
        out.append(_markdown(self.rows, self.columns))
        out.append(
            "\nLosses are per image in nats; test total = recon + beta * KL (the training objective), "
            "val columns are the best epoch's validation loss. Empty cells: not measured (run with --evaluate / --classify)."
        )
        return "\n".join(out) + "\n"

    def metric_columns(self) -> list[Column]:
        return [c for c in self.columns if c.numeric and c.key not in ("seed", "epochs", "train_time_s")
                and any(_is_num(r.get(c.key)) for r in self.rows)]


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise VaelabError(f"{path} is not valid JSON", "run that step again for this trial") from None
    return data if isinstance(data, dict) else None


def trial_row(run_dir: Path, varied: list[str], methods: list[str]) -> dict:
    """The measured values of one trial directory (missing files give missing values)."""
    row: dict[str, Any] = {}
    cfg = flatten(load_yaml(run_dir / CONFIG_FILE)) if (run_dir / CONFIG_FILE).is_file() else {}
    for key in varied:
        if key in cfg:
            row[key] = cfg[key]
    metrics = [m for m in read_metrics(run_dir) if isinstance(m, dict)]
    vals = [m for m in metrics if _is_num(m.get("val/loss"))]
    if vals:
        best = min(vals, key=lambda m: m["val/loss"])
        row.update(val_loss=best["val/loss"], val_recon=best.get("val/recon"), val_kl=best.get("val/kl"))
    if metrics:
        row["epochs"] = metrics[-1].get("epoch")
        row["train_time_s"] = metrics[-1].get("time")
    ev = _read_json(steps.eval_path(run_dir))
    if ev is not None:
        for key, _, _, path in EVAL_COLUMNS:
            value = _dig(ev, path)
            if key == "fid" and _is_num(ev.get("fid")):
                value = ev["fid"]
            if _is_num(value):
                row[key] = float(value)
        for key, _, _ in DISENTANGLEMENT_COLUMNS:
            value = _dig(ev, f"disentanglement.headline.{key}")
            if _is_num(value):
                row[key] = float(value)
    for method in methods:
        cl = _read_json(steps.classify_path(run_dir, method))
        if cl is not None and _is_num(cl.get("accuracy")):
            row[f"accuracy_{method}"] = float(cl["accuracy"])
    return row


def _methods(plan: StudyPlan, trial_dirs: list[Path]) -> list[str]:
    methods = list(plan.classify)
    for d in trial_dirs:
        folder = d / steps.CLASSIFY_DIR
        if folder.is_dir():
            methods += [p.stem for p in sorted(folder.glob("*.json")) if p.stem not in methods]
    return methods


def build_results(plan: StudyPlan, study_dir: str | Path, status: dict[str, dict] | None = None) -> Results:
    """The table of a study from its trial directories; `status` (from `study_status`) adds each
    trial's state. Grid studies list their trials in plan order; searches list the trials found."""
    from .study import TRIAL_FILE, TRIALS_DIR

    trials_dir = Path(study_dir) / TRIALS_DIR
    varied = plan.varied_keys()
    status = status or {}
    if plan.is_search:
        names = sorted(set(status) | {p.name for p in trials_dir.glob("*") if (p / CONFIG_FILE).is_file()})
        entries = [(n, n, None, None) for n in names]
    else:
        entries = [(s.name, s.point, s.variant, s.seed) for s in plan.trials()]
    methods = _methods(plan, [trials_dir / e[0] for e in entries])
    specs = {s.name: s for s in plan.trials()}

    rows = []
    for name, point, variant, seed in entries:
        run_dir = trials_dir / name
        row: dict[str, Any] = {"trial": name, "point": point}
        if variant is not None:
            row["variant"] = variant
        if seed is not None:
            row["seed"] = seed
        state = status.get(name, {}).get("state")
        if state is None:
            info = _read_json(run_dir / TRIAL_FILE) if run_dir.is_dir() else None
            state = (info or {}).get("status", "not started")
        row["status"] = state
        row.update(trial_row(run_dir, varied, methods) if run_dir.is_dir() else {})
        if name in specs and not run_dir.is_dir():  # its folder is on another machine: the planned values
            planned = flatten(to_dict(plan.trial_config(specs[name].overrides, name, trials_dir)))
            row.update({k: planned[k] for k in varied if k in planned})
        if plan.is_search:  # the sampled values, also for trials pruned before writing a config
            for key, value in (status.get(name, {}).get("overrides") or {}).items():
                row.setdefault(key, value)
            row["objective"] = status.get(name, {}).get("value")
        rows.append(row)

    short = short_names(varied)
    ident = [Column("trial", "trial")]
    if plan.variants and any(r.get("variant") != r["trial"] for r in rows):  # else the names say it
        ident.append(Column("variant", "variant"))
    ident += [Column(k, short[k], "g" if _numeric_key(rows, k) else "", False) for k in varied]
    if plan.seeds > 1:
        ident.append(Column("seed", "seed", "d", True))
    ident.append(Column("status", "status"))
    metric_cols = [Column("objective", "val -ELBO (objective)", ".2f", True)] if plan.is_search else []
    metric_cols += [Column(k, h, f, True) for k, h, f in VAL_COLUMNS]
    metric_cols += [Column(k, h, f, True) for k, h, f, _ in EVAL_COLUMNS]
    metric_cols += [Column(k, h, f, True) for k, h, f in DISENTANGLEMENT_COLUMNS if any(k in r for r in rows)]  # where measured
    metric_cols += [Column(f"accuracy_{m}", f"accuracy ({m})", ".3f", True) for m in methods]
    metric_cols += [Column(k, h, f, True) for k, h, f in RUN_COLUMNS]
    results = Results(rows, ident + metric_cols, seeds=plan.seeds)

    if plan.seeds > 1:
        sum_ident = [Column("point", "trial")] + ident[1:]
        sum_ident = [c for c in sum_ident if c.key not in ("seed", "status")]
        sum_ident += [Column("n", "seeds done", "d", True), Column("status", "status")]
        results.summary = aggregate(rows, [c.key for c in metric_cols], [c.key for c in ident if c.key not in ("trial", "seed", "status")])
        results.summary_columns = sum_ident + metric_cols
    return results


def _numeric_key(rows: list[dict], key: str) -> bool:
    values = [r.get(key) for r in rows if r.get(key) is not None]
    return bool(values) and all(_is_num(v) for v in values)


def aggregate(rows: list[dict], metrics: list[str], ident: list[str]) -> list[dict]:
    """One row per grid point: mean and sample std (over seeds) of each metric, and how many seeds finished."""
    import numpy as np

    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["point"], []).append(r)
    out = []
    for point, members in groups.items():
        row: dict[str, Any] = {"point": point}
        for k in ident:
            row[k] = members[0].get(k)
        done = [m for m in members if m.get("status") == "complete"]
        row["n"] = len(done)
        row["status"] = f"{len(done)}/{len(members)} complete"
        for k in metrics:
            values = np.array([m[k] for m in done if _is_num(m.get(k))], dtype=float)
            if len(values):
                row[k] = float(values.mean())
                row[k + "_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
        out.append(row)
    return out


def _cell(value: Any, col: Column) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if col.fmt and _is_num(value):
        if col.fmt == "d":
            return str(int(value))
        return format(value, col.fmt)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _csv(rows: list[dict], columns: list[Column]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c.key for c in columns])
    for r in rows:
        w.writerow([_raw(r.get(c.key)) for c in columns])
    return buf.getvalue()


def _raw(value: Any) -> str:
    """A CSV cell at full precision ('' when missing)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def visible(rows: list[dict], columns: list[Column]) -> list[Column]:
    """Columns with at least one value (a table without evaluation has no test columns)."""
    return [c for c in columns if any(r.get(c.key) not in (None, "") for r in rows)]


def cells(rows: list[dict], columns: list[Column], with_std: bool = False) -> list[list[str]]:
    out = []
    for r in rows:
        line = []
        for c in columns:
            text = _cell(r.get(c.key), c)
            std = r.get(c.key + "_std") if with_std and c.numeric else None
            if text and _is_num(std):
                text += " ± " + _cell(std, c)
            line.append(text)
        out.append(line)
    return out


def _markdown(rows: list[dict], columns: list[Column], with_std: bool = False) -> str:
    cols = visible(rows, columns)
    lines = ["| " + " | ".join(c.header for c in cols) + " |",
             "| " + " | ".join("---:" if c.numeric else ":---" for c in cols) + " |"]
    for line in cells(rows, cols, with_std):
        lines.append("| " + " | ".join(t.replace("|", "\\|") for t in line) + " |")
    return "\n".join(lines) + "\n"
