"""The report's HTML layout: CSS, escaping, number formats, tables, figures, notes, collapsed raw values,
the headline card and the page. Section builders (`sections.py`) produce fragments with these; nothing here
knows what a run is.

Images are embedded as base64 data URIs (the page reads offline, from any folder, and prints with its own
print CSS); the page has no scripts. Every string that comes from data (class names, JSON keys and values,
the config, file names) goes through `esc`: class names come from folder names, which users control.
"""

from __future__ import annotations

import base64
import html
import json
import math

CSS = """
:root { --fg: #1d232a; --muted: #5b6670; --line: #d8dde2; --accent: #1f6feb; --bg-soft: #f5f7f9; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0 auto; max-width: 1120px; padding: 24px 28px 60px; }
h1 { font-size: 1.7em; margin: 0 0 4px; } h2 { font-size: 1.3em; margin: 36px 0 10px; padding-bottom: 4px;
border-bottom: 2px solid var(--line); } h3 { font-size: 1.08em; margin: 22px 0 8px; } h4 { margin: 14px 0 6px; }
.muted, figcaption, .note { color: var(--muted); }
nav { background: var(--bg-soft); border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; margin: 14px 0; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; white-space: nowrap; }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 0.92em; }
th, td { border: 1px solid var(--line); padding: 3px 9px; text-align: left; vertical-align: top; }
th { background: var(--bg-soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 14px 0 22px; } figure img { display: block; max-width: 100%; height: auto;
         border: 1px solid var(--line); border-radius: 4px; image-rendering: auto; }
figcaption { font-size: 0.9em; margin-top: 4px; }
pre { background: var(--bg-soft); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px;
      overflow-x: auto; font-size: 0.85em; }
code { font-size: 0.92em; background: var(--bg-soft); padding: 1px 4px; border-radius: 3px; }
.note { border-left: 3px solid var(--line); padding: 4px 10px; margin: 8px 0; background: #fafbfc; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 8px 24px; }
.meta { color: var(--muted); font-size: 0.9em; margin: 2px 0 10px; } .meta b { color: var(--fg); font-weight: 600; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 14px 0 6px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px 9px; min-width: 150px; background: var(--bg-soft); }
.card .label { font-size: 0.82em; color: var(--muted); text-transform: uppercase; letter-spacing: 0.03em; }
.card .value { font-size: 1.65em; font-weight: 650; font-variant-numeric: tabular-nums; line-height: 1.25; }
.card .detail { font-size: 0.8em; color: var(--muted); }
details { margin: 8px 0 14px; border: 1px solid var(--line); border-radius: 6px; padding: 4px 10px; }
details > summary { cursor: pointer; color: var(--muted); font-size: 0.92em; }
td.unit { color: var(--muted); font-size: 0.9em; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  nav { display: none; }
  h2, h3, h4 { break-after: avoid; }
  figure, table, pre { break-inside: avoid; }
  figure img { max-height: 240mm; width: auto; max-width: 100%; border: none; }
  a { color: inherit; text-decoration: none; }
  .grid2 { display: block; }
  details > *:not(summary) { display: none; }
  .card { break-inside: avoid; }
}
"""

def esc(value) -> str:
    """Any value as escaped HTML text (quotes too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


def format_value(v) -> str:
    """How a metric shows in the report (escaped): 4 significant digits for floats, n/a for NaN/None."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(format_value(x) for x in v)
    return esc(v)


def _is_scalar(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _is_matrix(v) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(isinstance(r, list) and r and all(_is_scalar(x) for x in r) for r in v)


def _is_record_table(v) -> bool:
    """{row: {col: scalar}}, e.g. per_class metrics: rendered as one table with a column per key."""
    return isinstance(v, dict) and len(v) > 0 and all(isinstance(r, dict) and r and all(_is_scalar(x) for x in r.values()) for r in v.values())


def _is_row_list(v) -> bool:
    """[{col: scalar}, ...], e.g. a label-budget table: rendered with one column per key."""
    return isinstance(v, list) and len(v) > 0 and all(isinstance(r, dict) and r and all(_is_scalar(x) for x in r.values()) for r in v)


def _num(v) -> str:
    cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
    return f"<td{cls}>{format_value(v)}</td>"


def kv_table(rows: list[tuple[str, object]]) -> str:
    body = "".join(f"<tr><th>{esc(k)}</th>{_num(v)}</tr>" for k, v in rows)
    return f"<table>{body}</table>"


def record_table(records: dict, first: str = "") -> str:
    cols: list[str] = []
    for r in records.values():
        cols += [c for c in r if c not in cols]
    head = "".join(f"<th>{esc(c)}</th>" for c in [first, *cols])
    body = "".join(f"<tr><th>{esc(name)}</th>{''.join(_num(r.get(c)) for c in cols)}</tr>" for name, r in records.items())
    return f"<table><tr>{head}</tr>{body}</table>"


def rows_table(rows: list[dict]) -> str:
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = "".join(f"<tr>{''.join(_num(r.get(c)) for c in cols)}</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def matrix_table(matrix: list[list], names: list[str] | None = None, corner: str = "") -> str:
    k = len(matrix)
    square = all(len(r) == k for r in matrix)
    names = [str(n) for n in names] if names and square and len(names) == k else None
    head = ""
    if names:
        head = "<tr>" + f"<th>{esc(corner)}</th>" + "".join(f"<th>{esc(n)}</th>" for n in names) + "</tr>"
    rows = "".join(
        "<tr>" + (f"<th>{esc(names[i])}</th>" if names else "") + "".join(_num(x) for x in r) + "</tr>" for i, r in enumerate(matrix)
    )
    return f"<table>{head}{rows}</table>"


def render_json(data: dict, class_names: list[str] | None = None) -> str:
    """A JSON result as tables: its scalar leaves as 'a / b' rows, per-class style dicts of dicts and lists
    of records (e.g. a label budget) as one table each, matrices (e.g. confusion) as grids labelled by class
    names when they fit."""
    rows: list[tuple[str, object]] = []
    extra: list[str] = []
    names = data.get("class_names") if isinstance(data.get("class_names"), list) else class_names

    def walk(d: dict, prefix: str) -> None:
        for key, v in d.items():
            path = f"{prefix}{key}"
            if _is_scalar(v) or (isinstance(v, list) and all(_is_scalar(x) for x in v)):
                rows.append((path, v))
            elif _is_matrix(v):
                extra.append(f"<h4>{esc(path)}</h4>" + matrix_table(v, names, "true \\ predicted" if "confusion" in key else ""))
            elif _is_row_list(v):
                extra.append(f"<h4>{esc(path)}</h4>" + rows_table(v))
            elif _is_record_table(v):
                extra.append(f"<h4>{esc(path)}</h4>" + record_table(v, str(key)))
            elif isinstance(v, dict):
                walk(v, f"{path} / ")
            else:  # lists of dicts and other shapes: one row per item
                for i, item in enumerate(v if isinstance(v, list) else [v]):
                    if isinstance(item, dict):
                        walk(item, f"{path}[{i}] / ")
                    else:
                        rows.append((f"{path}[{i}]", str(item)))

    walk(data, "")
    return (kv_table(rows) if rows else "") + "".join(extra)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure_html(name: str, title: str, data: bytes, mime: str = "image/png", caption: str | None = None) -> str:
    caption = caption_for(name) if caption is None else caption
    cap = f"<b>{esc(title)}</b>" + (f": {esc(caption)}" if caption else "")
    return (
        f'<figure id="fig-{esc(name)}"><img src="{data_uri(data, mime)}" alt="{esc(title)}" data-figure="{esc(name)}">'
        f"<figcaption>{cap}</figcaption></figure>"
    )


# what each figure shows (the captions under the figures), by file stem or its prefix
CAPTIONS = {
    "eda_classes": "images per class in each split",
    "eda_pixels": "how pixel values are distributed (log scale): Bernoulli likelihoods suit near-binary images",
    "eda_means": "the average image of each class",
    "eda_examples": "random examples, one row per class",
    "curves": "loss terms per image in nats, train and validation; the dashed line marks the best epoch",
    "recon": "top: images of the evaluation split; bottom: the decoded posterior means, SSIM under each",
    "samples": "decoded draws from the prior (and from a Gaussian mixture fitted on the training latents)",
    "manifold": "images decoded on a grid of latent points spaced by the inverse normal CDF",
    "scatter": "posterior means of the evaluation images, coloured by class",
    "ellipses": "the saved GMM classifier: each component at 1 and 2 sigma, coloured by the class it predicts",
    "traversal": "each row moves one latent dimension from -3 to +3 and holds the others; KL shows how much a dimension is used",
    "interpolate": "decoded points on the line (and the great circle) between two images' latent means",
    "quality": "per-image reconstruction quality by class, from vaelab evaluate",
    "confusion": "rows: true class, columns: predicted class",
    "budget": "accuracy on the test images against the number of labelled examples per class",
    "latent_evolution": "the validation latents after each epoch of training",
    "traversal_sweep": "every shown latent dimension swept from -3 to +3 and back",
}


def caption_for(name: str) -> str:
    return next((text for key, text in CAPTIONS.items() if name == key or name.startswith(key + "_")), "")


def note(text: str, command: str | None = None) -> str:
    cmd = f" Run <code>{esc(command)}</code> to add it." if command else ""
    return f'<p class="note">{esc(text)}.{cmd}</p>'




def details(summary: str, inner: str, open_: bool = False) -> str:
    """A collapsed block (raw values, long tables): the summary line shows, the rest on a click."""
    return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{inner}</details>"


def raw_json(name: str, data: dict, class_names: list[str] | None = None) -> str:
    """Every value of a JSON result, collapsed: as tables (`render_json`) and as the JSON text itself."""
    text = json.dumps(data, indent=1, default=str)
    return details(f"All values of {name}", render_json(data, class_names) + f"<pre>{esc(text)}</pre>")


def measure_table(rows: list[tuple[str, object, str]]) -> str:
    """A readable table of (quantity, value, unit or note) rows; None values are left out."""
    body = "".join(
        f"<tr><th>{esc(k)}</th>{_num(v)}<td class=\"unit\">{esc(unit)}</td></tr>" for k, v, unit in rows if v is not None
    )
    return f"<table>{body}</table>" if body else ""


def cards(items: list[tuple[str, str, str]]) -> str:
    """The headline card: (label, value already formatted, detail) per number."""
    if not items:
        return ""
    inner = "".join(
        f'<div class="card"><div class="label">{esc(label)}</div><div class="value">{esc(value)}</div>'
        f'<div class="detail">{esc(detail)}</div></div>'
        for label, value, detail in items
    )
    return f'<div class="cards" id="headline">{inner}</div>'


def duration(seconds: float) -> str:
    """'2 h 05 min', '3 min 12 s', '4.2 s'."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "n/a"
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def page(title: str, subtitle: str, meta: str, headline: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document: title, meta line, headline card, a nav bar and one <section> per (key, title, body)."""
    nav = "".join(f'<a href="#{esc(key)}">{esc(name)}</a>' for key, name, _ in sections)
    body = "".join(f'<section id="{esc(key)}"><h2>{esc(name)}</h2>{inner}</section>' for key, name, inner in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1>"
        f'<p class="muted">{esc(subtitle)}</p>'
        f"{meta}{headline}<nav>{nav}</nav>{body}</body></html>\n"
    )
