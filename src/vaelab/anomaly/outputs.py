"""What `vaelab anomaly` writes into RUN/anomaly/, as bytes (the CLI writes them atomically), and reading it back.

    NAME.json            the report: thresholds, flagged counts, AUROC/AUPRC/FPR@95%TPR per score
    NAME_scores.npz      per image: every score, is_anomaly (-1 unknown), flagged (by the first score), source
    NAME_scores.csv      the same as a table (index, label, is_anomaly, scores..., flagged)
    NAME_flagged.png     the flagged images, most anomalous first
    NAME_roc.png         ROC curves (when labels allow)
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from ..errors import VaelabError

FOLDER = "anomaly"


def _clean(v):
    from ..evaluate.run import json_safe  # NumPy scalars and NaN/inf made strict JSON

    return json_safe(v)


def json_bytes(report: dict) -> bytes:
    return (json.dumps(_clean(report), indent=2, allow_nan=False) + "\n").encode()


def npz_bytes(result) -> bytes:
    arrays = {f"score_{k}": np.asarray(v, np.float64) for k, v in result.scores.items()}
    n = len(result.images)
    arrays["is_anomaly"] = result.is_anomaly if result.is_anomaly is not None else np.full(n, -1, np.int64)
    arrays["flagged"] = result.flagged()
    arrays["source"] = result.source
    arrays["labels"] = np.asarray(result.labels, dtype=str)
    for name, (fpr, tpr, _) in result.roc.items():
        arrays[f"roc_{name}_fpr"], arrays[f"roc_{name}_tpr"] = fpr, tpr
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def csv_bytes(result) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    names = list(result.scores)
    w.writerow(["index", "label", "is_anomaly", *names, f"flagged_by_{result.primary}"])
    flagged = result.flagged()
    for i in range(len(result.images)):
        known = "" if result.is_anomaly is None else int(result.is_anomaly[i])
        w.writerow([i, result.labels[i], known, *(f"{result.scores[n][i]:.6g}" for n in names), int(flagged[i])])
    return buf.getvalue().encode()


def read_results(run_dir: str | Path) -> dict[str, dict]:
    """{name: report} of RUN/anomaly/*.json, newest last (unreadable files are skipped)."""
    folder = Path(run_dir) / FOLDER
    out: dict[str, dict] = {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.glob("*.json"), key=lambda p: (p.stat().st_mtime, p.name)):
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("scores"), dict):
            out[p.stem] = data
    return out


def saved_result(run_dir: str | Path, name: str | None = None) -> tuple[str, dict]:
    """The saved result `name` (default: the newest) of a run, for `vaelab predict --anomaly`."""
    results = read_results(run_dir)
    if name is not None:
        if name not in results:
            raise VaelabError(f"{run_dir} has no anomaly result '{name}'", f"have: {', '.join(results) or 'none'}")
        return name, results[name]
    if not results:
        raise VaelabError(f"{run_dir} has no anomaly threshold yet", f"run vaelab anomaly {run_dir} first")
    name = list(results)[-1]
    return name, results[name]
