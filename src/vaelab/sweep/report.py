"""The study's report.html: one self-contained page (figures embedded) with the results table, the
comparison figures and a link to each trial's own report (``trials/<name>/report.html``) or folder."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from pathlib import Path

from .grid import StudyPlan
from .results import Results, cells, visible
from .steps import report_path

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;color:#222}
table{border-collapse:collapse;font-size:.9rem;margin:.5rem 0 1.5rem}
th,td{border-bottom:1px solid #ddd;padding:.25rem .6rem}th{background:#f4f4f4;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee;margin:.5rem 0}
code{background:#f4f4f4;padding:0 .2rem}.failed{color:#b00}.muted{color:#777}
.pair{display:flex;flex-wrap:wrap;gap:12px}.pair img{max-width:calc(50% - 8px);min-width:320px}
"""


def _table(rows: list[dict], columns, with_std: bool = False) -> str:
    cols = visible(rows, columns)
    head = "".join(f"<th>{html.escape(c.header)}</th>" for c in cols)
    body = []
    for line in cells(rows, cols, with_std):
        tds = "".join(f'<td class="{"n" if c.numeric else ""}">{html.escape(t)}</td>' for c, t in zip(cols, line, strict=True))
        body.append(f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _plan_lines(plan: StudyPlan) -> list[str]:
    lines = []
    if plan.variants:
        for v in plan.variants:
            sets = ", ".join(f"{k}={json.dumps(val)}" for k, val in v["overrides"].items()) or "the base config"
            lines.append(f"variant <b>{html.escape(v['name'])}</b>: {html.escape(sets)}")
    for key, values in plan.grid.items():
        lines.append(f"grid <code>{html.escape(key)}</code> = {html.escape(', '.join(map(str, values)))}")
    if plan.seeds > 1:
        lines.append(f"{plan.seeds} seeds per point (train.seed + 0..{plan.seeds - 1})")
    if plan.search:
        s = plan.search
        for key, spec in s["space"].items():
            rng = ", ".join(map(str, spec["choices"])) if "choices" in spec else f"{spec['low']:g} .. {spec['high']:g}" + (" (log)" if spec["log"] else "")
            lines.append(f"search <code>{html.escape(key)}</code> in {html.escape(rng)}")
        lines.append(f"{s['trials']} trials, TPE sampler, median pruning from epoch {s['prune_warmup']} "
                     f"(after {s['prune_startup']} finished trials), minimising the validation -ELBO (recon + KL per image)")
    return lines


def study_html(plan: StudyPlan, study_dir: str | Path, results: Results, figures: dict[str, bytes],
               status: dict[str, dict] | None = None, command: str | None = None,
               data: tuple[list[tuple[str, object]], dict[str, bytes]] | None = None) -> str:
    """The page as a string. `figures`: name -> PNG bytes; `data`: the data overview (rows, figures) of
    `outputs.data_overview`; links are relative to the study directory."""
    from .study import TRIALS_DIR

    study_dir = Path(study_dir)
    status = status or {}
    b = plan.base
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(plan.name)}: study</title><style>{STYLE}</style></head><body>",
        f"<h1>Study {html.escape(plan.name)}</h1>",
        f"<p class='muted'>{len(results.rows)} trials &middot; data <code>{html.escape(str(b['data']['source']))}</code>"
        f" &middot; base model {html.escape(str(b['model']['arch']))}, latent {b['model']['latent_dim']}, beta {b['model']['beta']:g}"
        f" &middot; {b['train']['epochs']} epochs &middot; written {_dt.datetime.now():%Y-%m-%d %H:%M}</p>",
    ]
    if command:
        parts.append(f"<p>Reproduce: <code>{html.escape(command)}</code></p>")
    parts.append("<h2>What varies</h2><ul>" + "".join(f"<li>{line}</li>" for line in _plan_lines(plan)) + "</ul>")
    if data is not None and (data[0] or data[1]):
        rows, pngs = data
        body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        parts.append(f"<h2>Data</h2><table>{body}</table><div class='pair'>")
        for name, png in pngs.items():
            title = {"data_classes": "images per class and split", "data_pixels": "pixel intensities"}.get(name, name)
            parts.append(f"<img alt='{html.escape(title)}' title='{html.escape(title)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
        parts.append("</div>")
    parts.append("<h2>Results</h2>")
    if results.summary is not None:
        parts.append(f"<h3>Mean ± std over {results.seeds} seeds</h3>")
        parts.append(_table(results.summary, results.summary_columns, with_std=True))
        parts.append("<h3>All trials</h3>")
    parts.append(_table(results.rows, results.columns))
    parts.append("<p class='muted'>Losses per image in nats; test total = recon + beta &times; KL. "
                 "Test columns come from each trial's eval/test.json, accuracy from classify/&lt;method&gt;.json.</p>")
    if figures:
        parts.append("<h2>Figures</h2>")
        for name, png in figures.items():
            data = base64.b64encode(png).decode()
            parts.append(f"<h3>{html.escape(name.replace('_', ' '))}</h3><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>")
    parts.append("<h2>Trials</h2><table><thead><tr><th>trial</th><th>status</th><th>report</th><th>note</th></tr></thead><tbody>")
    for row in results.rows:
        name = row["trial"]
        trial_dir = study_dir / TRIALS_DIR / name
        rel = f"{TRIALS_DIR}/{name}"
        if report_path(trial_dir).is_file():
            link = f"<a href='{html.escape(rel)}/report.html'>report</a>"
        elif trial_dir.is_dir():
            link = f"<a href='{html.escape(rel)}/'>folder</a> <span class='muted'>(vaelab report {html.escape(rel)})</span>"
        else:
            link = "<span class='muted'>not run</span>"
        note = status.get(name, {}).get("error") or ""
        cls = " class='failed'" if row.get("status") == "failed" else ""
        parts.append(f"<tr><td>{html.escape(name)}</td><td{cls}>{html.escape(str(row.get('status', '')))}</td>"
                     f"<td>{link}</td><td>{html.escape(str(note))}</td></tr>")
    parts.append("</tbody></table></body></html>")
    return "\n".join(parts)
