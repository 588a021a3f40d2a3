"""One self-contained HTML page per run: data, config, training, evaluation, classification, every figure.

`build_report(run)` returns the page as a string; `vaelab report RUN` writes it to RUN/report.html. Images
are embedded as base64 data URIs (the page reads offline, from any folder, and prints with its own print
CSS); the page has no scripts. Every string that comes from data (class names, JSON keys and values, the
config, file names) goes through `html.escape`: class names come from folder names, which users control.
"""

from __future__ import annotations

import base64
import datetime
import html
import math
from pathlib import Path

from . import __version__
from .errors import VaelabError
from .visualize import animate as anim
from .visualize.run_figures import RunFigures, Skip, read_json_dir
from .visualize.style import figure_bytes

REPORT_FILE = "report.html"

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
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  nav { display: none; }
  h2, h3, h4 { break-after: avoid; }
  figure, table, pre { break-inside: avoid; }
  figure img { max-height: 240mm; width: auto; max-width: 100%; border: none; }
  a { color: inherit; text-decoration: none; }
  .grid2 { display: block; }
}
"""

SECTIONS = (
    ("data", "Dataset"),
    ("training", "Training"),
    ("evaluation", "Evaluation"),
    ("classification", "Classification"),
    ("reconstructions", "Reconstructions"),
    ("samples", "Samples"),
    ("latent", "Latent space"),
    ("traversals", "Traversals and interpolation"),
    ("animations", "Animations"),
    ("config", "Config"),
)


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


class _Page:
    """Collects sections; figures are drawn on demand through one RunFigures (shared data and latents)."""

    def __init__(self, run, figs: RunFigures, dpi: int | None):
        self.run, self.figs, self.dpi = run, figs, dpi
        self.sections: dict[str, list[str]] = {key: [] for key, _ in SECTIONS}

    def add(self, section: str, text: str) -> None:
        self.sections[section].append(text)

    def figures(self, section: str, kind: str, missing: str | None = None) -> None:
        """Draw one kind of figure into a section, or say why it is absent (and what produces it)."""
        skip = self.figs.skip_reason(kind)
        if skip is not None:
            if missing != "silent":
                self.add(section, note(f"No {kind} figure: {skip.reason}", _command(skip)))
            return
        try:
            for name, title, fig in self.figs.figures(kind):
                self.add(section, figure_html(name, title, figure_bytes(fig, "png", self.dpi)))
        except VaelabError as e:
            self.add(section, note(f"The {kind} figure could not be drawn: {e}"))


def _command(skip: Skip) -> str | None:
    hint = skip.hint or ""
    for prefix in ("run: ", "train it: "):
        if hint.startswith(prefix):
            return hint[len(prefix) :]
    return None


def build_report(run, data=None, dpi: int | None = None, animations: bool = True, seed: int = 0) -> str:
    """The HTML report of a run (a `vaelab.run.Run`): dataset summary, config, training curves, evaluation
    and classification results, and every figure that applies, drawn in memory.

    data: an ImageSet to use instead of the run's own data (e.g. data already loaded); dpi: figure
    resolution (default the figures' own). Reads RUN/eval/*.json and RUN/classify/*.json generically.
    """
    run_dir = Path(run.path)
    figs = RunFigures(run, data=data, seed=seed)
    page = _Page(run, figs, dpi)
    cfg = run.config
    rows = run.metrics()

    # -- dataset -----------------------------------------------------------------------------------------
    if figs.data_error is not None:
        page.add("data", note(f"The run's data could not be loaded: {figs.data_error}"))
    else:
        from .data.info import summarize

        info = summarize(figs.data)
        page.add(
            "data",
            kv_table(
                [
                    ("source", info["source"]),
                    ("images", info["samples"]),
                    ("shape (C x H x W)", " x ".join(map(str, info["shape"]))),
                    ("classes", info["num_classes"]),
                    ("pixel mean / std (0..1)", f"{info['pixel_mean']:.4f} / {info['pixel_std']:.4f}"),
                ]
            ),
        )
        splits = info["splits"]
        if info["labelled"]:
            records = {
                name: {split: entry["per_class"][k] for split, entry in splits.items()}
                for k, name in enumerate(info["class_names"])
            }
            records["all classes"] = {split: entry["samples"] for split, entry in splits.items()}
            page.add("data", "<h3>Images per class and split</h3>" + record_table(records, "class"))
        else:
            page.add("data", kv_table([(f"{s} images", e["samples"]) for s, e in splits.items()]))
        page.figures("data", "eda")

    # -- training ----------------------------------------------------------------------------------------
    if rows:
        last = rows[-1]
        val = [r for r in rows if isinstance(r.get("val/loss"), (int, float))]
        best = min(val, key=lambda r: r["val/loss"]) if val else None
        summary = [("epochs", last.get("epoch")), ("optimizer steps", last.get("step"))]
        if best:
            summary.append(("best epoch (val loss)", f"{best['epoch']} ({format_value(best['val/loss'])})"))
        if isinstance(last.get("time"), (int, float)):
            summary.append(("training time (s)", float(last["time"])))
        page.add("training", kv_table(summary))
        terms = {
            split: {t: last.get(f"{split}/{t}") for t in ("loss", "recon", "kl", "elbo") if f"{split}/{t}" in last}
            for split in ("train", "val")
            if f"{split}/loss" in last
        }
        if terms:
            page.add("training", f"<h3>Last epoch, nats per image (epoch {esc(last.get('epoch'))})</h3>" + record_table(terms, "split"))
    page.figures("training", "curves")

    # -- evaluation --------------------------------------------------------------------------------------
    evals = read_json_dir(run_dir / "eval")
    if not evals:
        page.add("evaluation", note("No evaluation results yet", f"vaelab evaluate {run_dir}"))
    for stem, result in evals.items():
        page.add("evaluation", f"<h3>{esc(stem)}</h3>" + render_json(result, figs.class_names))
    page.figures("evaluation", "quality", missing="silent" if not evals else None)
    page.add("evaluation", disentanglement_html(evals))

    # -- classification ----------------------------------------------------------------------------------
    if not figs.classify:
        page.add("classification", note("No classification results yet", f"vaelab classify {run_dir} --method gmm"))
    for stem, result in figs.classify.items():
        page.add("classification", f"<h3>{esc(result.get('method', stem))}</h3>" + render_json(result, figs.class_names))
    if figs.classify:
        page.figures("classification", "confusion")
        page.figures("classification", "budget", missing="silent")

    # -- pictures of the model ---------------------------------------------------------------------------
    page.figures("reconstructions", "recon")
    page.figures("samples", "samples")
    for kind in ("manifold", "scatter", "ellipses"):
        page.figures("latent", kind)
    page.figures("traversals", "traversal")
    page.figures("traversals", "interpolate")
    if animations:
        try:
            for name, title, frames in figs.animations():
                fps = 4 if "evolution" in name else 12
                page.add("animations", figure_html(name, title + " (animated GIF)", anim.encode_gif(frames, fps), "image/gif"))
        except VaelabError as e:
            page.add("animations", note(f"The animations could not be drawn: {e}"))
    else:
        page.add("animations", note("Animations were left out of this report", f"vaelab plot {run_dir} animate"))

    # -- config ------------------------------------------------------------------------------------------
    from .config import dump_config

    page.add("config", f"<pre>{esc(dump_config(cfg))}</pre>")
    return _html(run, page)


def disentanglement_html(evals: dict[str, dict]) -> str:
    """The disentanglement metrics of the eval JSONs that have them ('disentanglement' key, written by
    ``vaelab evaluate --disentanglement``): one row per metric, one column per split; '' when none has."""
    from .evaluate.disentangle_run import LABELS

    scored = {stem: r["disentanglement"] for stem, r in evals.items() if isinstance(r.get("disentanglement"), dict)}
    if not scored:
        return ""
    table = {LABELS.get(k, k): {stem: d["headline"].get(k) for stem, d in scored.items()} for k in LABELS}
    how = "; ".join(f"{esc(s)}: {d['pool']} images, factors {esc(', '.join(d['factors']))}, seed {d['seed']}, sample scale {d['scale']:g}" for s, d in scored.items())
    return "<h3>Disentanglement (disentanglement_lib's definitions)</h3>" + record_table(table, "metric") + f"<p>{how}</p>"


def _html(run, page: _Page) -> str:
    cfg = run.config
    m = cfg.model
    n_params = sum(p.numel() for p in run.model.parameters())
    model = f"{m.arch} VAE, latent {m.latent_dim}, {m.likelihood} likelihood, beta {m.beta:g}" + (
        ", conditional" if m.conditional else ""
    )
    meta = kv_table(
        [
            ("run directory", str(run.path)),
            ("checkpoint", f"{Path(run.checkpoint).name} (epoch {run.epoch}, step {run.step})"),
            ("model", f"{model}; {n_params:,} parameters"),
            ("data", cfg.data.source),
        ]
    )
    nav = "".join(f'<a href="#{key}">{esc(title)}</a>' for key, title in SECTIONS)
    body = "".join(
        f'<section id="{key}"><h2>{esc(title)}</h2>{"".join(page.sections[key])}</section>' for key, title in SECTIONS
    )
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>vaelab report: {esc(cfg.name)}</title><style>{CSS}</style></head><body>"
        f"<h1>vaelab report: {esc(cfg.name)}</h1>"
        f'<p class="muted">written {esc(when)} by vaelab {esc(__version__)}</p>'
        f"{meta}<nav>{nav}</nav>{body}</body></html>\n"
    )
