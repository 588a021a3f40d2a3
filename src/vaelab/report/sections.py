"""What the run report says: the headline numbers and one builder per section.

A section is `Section(key, title, build)`; `build(ctx)` returns a list of HTML fragments made with the
helpers of `html.py` (an empty list leaves the section out of the page). `SECTIONS` is the page's order:
adding a section is one function and one line there (or `add_section`). Builders read the run through
`ReportContext` (the run, its figures drawn on demand, its eval/classify JSON) and never write files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..errors import VaelabError, shell
from ..visualize.run_figures import RunFigures, Skip, read_json_dir
from ..visualize.style import figure_bytes
from .html import (
    caption_for,
    details,
    duration,
    esc,
    figure_html,
    format_value,
    kv_table,
    measure_table,
    note,
    raw_json,
    record_table,
    render_json,
    rows_table,
)


class ReportContext:
    """What every section builder reads: the run, its figures (one shared `RunFigures`), its results."""

    def __init__(self, run, figs: RunFigures, dpi: int | None, animations: bool = True):
        self.run, self.figs, self.dpi, self.animations = run, figs, dpi, animations
        self.run_dir = Path(run.path)

    @cached_property
    def rows(self) -> list[dict]:
        return self.run.metrics()

    @cached_property
    def evals(self) -> dict[str, dict]:
        """RUN/eval/*.json by split, test first."""
        found = read_json_dir(self.run_dir / "eval")
        return dict(sorted(found.items(), key=lambda kv: (kv[0] != "test", kv[0] != "val", kv[0])))

    @property
    def classify(self) -> dict[str, dict]:
        return self.figs.classify

    def figures(self, kind: str, missing: str | None = None) -> list[str]:
        """One kind of figure as HTML, or a note saying why it is absent (and what produces it)."""
        skip = self.figs.skip_reason(kind)
        if skip is not None:
            return [] if missing == "silent" else [_skip_note(kind, skip)]
        try:
            drawn = self.figs.figures(kind)
            return [
                figure_html(name, title, figure_bytes(fig, "png", self.dpi), caption=self.figs.captions.get(name) or caption_for(name))
                for name, title, fig in drawn
            ]
        except VaelabError as e:
            return [note(f"The {kind} figure could not be drawn: {e}")]


def _skip_note(kind: str, skip: Skip) -> str:
    hint = skip.hint or ""
    for prefix in ("run: ", "train it: "):
        if hint.startswith(prefix):
            return note(f"No {kind} figure: {skip.reason}", hint[len(prefix) :])
    return note(f"No {kind} figure: {skip.reason}" + (f" ({hint})" if hint else ""))


@dataclass(frozen=True)
class Section:
    key: str  # the anchor (#key) and nav entry
    title: str
    build: Callable[[ReportContext], list[str]]


# ---------------------------------------------------------------------------------------------------------
# headline


def _get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d if isinstance(d, (int, float)) and not isinstance(d, bool) else None


def headline(ctx: ReportContext) -> list[tuple[str, str, str]]:
    """(label, value, detail) of the numbers a reader looks for first, as far as the run has them."""
    items = []
    split, ev = next(iter(ctx.evals.items()), (None, {}))
    if _get(ev, "loss", "elbo") is not None:
        items.append(("-ELBO", f"{ev['loss']['elbo']:.2f}", f"nats per image, {split} split"))
    elif ctx.rows and _get(ctx.rows[-1], "val/elbo") is not None:
        items.append(("-ELBO", f"{ctx.rows[-1]['val/elbo']:.2f}", f"nats per image, validation, epoch {ctx.rows[-1].get('epoch')}"))
    nll = _get(ev, "nll", "nll_binarized") or _get(ev, "nll", "nll")
    if nll is not None:
        k = _get(ev, "nll", "k")
        what = "binarized data" if _get(ev, "nll", "nll_binarized") is not None else "importance-sampled"
        items.append(("NLL", f"{nll:.2f}", f"nats per image, {what}" + (f", k={k}" if k else "")))
    if _get(ev, "recon_quality", "ssim") is not None:
        items.append(("SSIM", f"{ev['recon_quality']['ssim']:.3f}", f"reconstructions, {split} split (1 is perfect)"))
    fid = ev.get("fid") if isinstance(ev, dict) else None
    if isinstance(fid, dict):
        best = min(((k, fid[k]) for k in ("prior", "gmm") if _get(fid, k) is not None), key=lambda kv: kv[1], default=None)
        if best:
            items.append(("FID", f"{best[1]:.1f}", f"samples from the {'prior' if best[0] == 'prior' else 'GMM sampler'} (lower is better)"))
    results = [(stem, r) for stem, r in ctx.classify.items() if _get(r, "accuracy") is not None]
    if results:
        stem, r = max(results, key=lambda kv: kv[1]["accuracy"])
        labels = r.get("labels_per_class")
        items.append(("Accuracy", f"{100 * r['accuracy']:.1f}%", f"{r.get('method', stem)}" + (f", {labels} labels per class" if labels else "")))
    return items


# ---------------------------------------------------------------------------------------------------------
# sections


def data_section(ctx: ReportContext) -> list[str]:
    figs = ctx.figs
    if figs.data_error is not None:
        return [note(f"The run's data could not be loaded: {figs.data_error}")]
    from ..data.info import summarize

    info = summarize(figs.data)
    out = [
        measure_table(
            [
                ("source", info["source"], ""),
                ("images", info["samples"], "all splits"),
                ("image shape", " x ".join(map(str, info["shape"])), "channels x height x width, pixels"),
                ("classes", info["num_classes"], ""),
                ("pixel mean", info["pixel_mean"], "on a 0..1 scale"),
                ("pixel std", info["pixel_std"], "on a 0..1 scale"),
            ]
        )
    ]
    splits = info["splits"]
    if info["labelled"]:
        records = {name: {split: entry["per_class"][k] for split, entry in splits.items()} for k, name in enumerate(info["class_names"])}
        records["all classes"] = {split: entry["samples"] for split, entry in splits.items()}
        out.append("<h3>Images per class and split</h3>" + record_table(records, "class"))
    else:
        out.append(kv_table([(f"{s} images", e["samples"]) for s, e in splits.items()]))
    return out + ctx.figures("eda")


def training_section(ctx: ReportContext) -> list[str]:
    rows, out = ctx.rows, []
    if rows:
        last = rows[-1]
        val = [r for r in rows if isinstance(r.get("val/loss"), (int, float))]
        best = min(val, key=lambda r: r["val/loss"]) if val else None
        summary = [
            ("epochs", last.get("epoch"), ""),
            ("optimizer steps", last.get("step"), ""),
            ("best epoch", best["epoch"] if best else None, f"validation loss {format_value(best['val/loss'])} nats per image" if best else ""),
            ("training time", duration(last["time"]) if isinstance(last.get("time"), (int, float)) else None, "wall clock, all epochs"),
        ]
        out.append(measure_table(summary))
        terms = {
            split: {t: last.get(f"{split}/{t}") for t in ("loss", "recon", "kl", "elbo") if f"{split}/{t}" in last}
            for split in ("train", "val")
            if f"{split}/loss" in last
        }
        if terms:
            out.append(f"<h3>Last epoch ({esc(last.get('epoch'))}), nats per image</h3>" + record_table(terms, "split"))
    return out + ctx.figures("curves")


def _eval_rows(ev: dict) -> list[tuple[str, object, str]]:
    loss, nll, rq, fid = (ev.get(k) if isinstance(ev.get(k), dict) else {} for k in ("loss", "nll", "recon_quality", "fid"))
    rows = [
        ("images", ev.get("n_images"), f"{ev.get('split', '')} split, checkpoint {ev.get('checkpoint', '')}".strip(", ")),
        ("-ELBO", loss.get("elbo"), "nats per image (recon + KL)"),
        ("reconstruction term", loss.get("recon"), "nats per image"),
        ("KL term", loss.get("kl"), "nats per image"),
        ("training objective", loss.get("objective"), f"nats per image, beta {format_value(loss.get('beta'))}" if "beta" in loss else "nats per image"),
        ("bits per dim (ELBO)", loss.get("bits_per_dim"), "bits"),
        ("NLL", nll.get("nll"), f"nats per image, importance-sampled with k={nll.get('k')}"),
        ("NLL, binarized data", nll.get("nll_binarized"), "nats per image"),
        ("MSE", rq.get("mse"), "per pixel, 0..1 scale"),
        ("PSNR", rq.get("psnr"), "dB"),
        ("SSIM", rq.get("ssim"), "Gaussian 11x11 window, 1 is perfect"),
        ("active units", ev.get("active_units"), f"latent dimensions in use (of {ev['latent_dim']})" if "latent_dim" in ev else "latent dimensions in use"),
    ]
    extra = tuple((name, f"{name.upper()}-sampler samples") for name in (fid.get("samplers") or {}))  # evaluate --sampler maf
    for key, what in (("prior", "prior samples"), ("gmm", "GMM-sampler samples"), *extra, ("recon", "reconstructions")):
        rows.append((f"FID, {what}", fid.get(key), "lower is better"))
    return rows


def evaluation_section(ctx: ReportContext) -> list[str]:
    if not ctx.evals:
        return [note("No evaluation results yet", shell("vaelab", "evaluate", ctx.run_dir))]
    out = []
    for stem, result in ctx.evals.items():
        out.append(f"<h3>{esc(stem)} split</h3>" + measure_table(_eval_rows(result)))
        per_class = (result.get("recon_quality") or {}).get("per_class")
        if isinstance(per_class, dict) and per_class:
            out.append(details("Reconstruction quality per class", record_table(per_class, "class")))
        out.extend(note(str(n)) for n in result.get("notes") or [] if isinstance(n, str))
        out.append(raw_json(f"eval/{stem}.json", result, ctx.figs.class_names))
    table = disentanglement_html(ctx.evals)
    return out + ([table] if table else []) + ctx.figures("quality", missing="silent")


def disentanglement_html(evals: dict[str, dict]) -> str:
    """The disentanglement metrics of the eval JSONs that have them ('disentanglement' key, written by
    ``vaelab evaluate --disentanglement``): one row per metric, one column per split; '' when none has."""
    from ..evaluate.disentangle_run import LABELS

    scored = {stem: r["disentanglement"] for stem, r in evals.items() if isinstance(r.get("disentanglement"), dict)}
    if not scored:
        return ""
    table = {LABELS.get(k, k): {stem: d["headline"].get(k) for stem, d in scored.items()} for k in LABELS}
    how = "; ".join(
        f"{esc(s)}: {d['pool']} images, factors {esc(', '.join(d['factors']))}, seed {d['seed']}, sample scale {d['scale']:g}"
        for s, d in scored.items()
    )
    return "<h3>Disentanglement (disentanglement_lib's definitions)</h3>" + record_table(table, "metric") + f"<p>{how}</p>"


CLASSIFY_COLUMNS = (
    ("method", "method"),
    ("labels_per_class", "labels per class"),
    ("accuracy", "accuracy"),
    ("f1_macro", "F1 (macro)"),
    ("precision_macro", "precision (macro)"),
    ("recall_macro", "recall (macro)"),
    ("n_test", "test images"),
)


def _largest_budget(result: dict) -> dict:
    """A label-budget result (classify --budget) as its largest budget's numbers, named as such; others as they are."""
    budget = result.get("budget")
    if not (isinstance(budget, list) and budget and isinstance(budget[-1], dict)):
        return result
    levels = ", ".join(str(b.get("labels_per_class")) for b in budget)
    largest = budget[-1]
    return {**result, **largest, "labels_per_class": f"{largest.get('labels_per_class')} (largest of the budget {levels})"}


def classification_section(ctx: ReportContext) -> list[str]:
    if not ctx.classify:
        return [note("No classification results yet", shell("vaelab", "classify", ctx.run_dir, "--method", "gmm"))]
    # one row per result file: several results of one method (label budgets, options) each get a row
    table = [
        {"result": stem, **{label: r.get(key, r.get("method", stem) if key == "method" else None) for key, label in CLASSIFY_COLUMNS}}
        for stem, r in ((stem, _largest_budget(r)) for stem, r in ctx.classify.items())
    ]
    out = [rows_table(table), '<p class="muted">Accuracy on the test images, on a 0..1 scale; macro = the mean over classes.</p>']
    for stem, result in ctx.classify.items():
        out.append(raw_json(f"classify/{stem}.json ({result.get('method', stem)})", result, ctx.figs.class_names))
    out += ctx.figures("confusion")
    out += ctx.figures("budget", missing="silent")
    return out


def anomaly_section(ctx: ReportContext) -> list[str]:
    """RUN/anomaly/*.json (from `vaelab anomaly`): per result, what was scored, a row per score, its figures."""
    from ..anomaly.outputs import FOLDER, read_results

    results = read_results(ctx.run_dir)
    if not results:
        return [note("No anomaly scores yet", shell("vaelab", "anomaly", ctx.run_dir))]
    out: list[str] = []
    keys = ("threshold", "flagged", "flagged_share", "test_fpr", "auroc", "auprc", "fpr_at_95_tpr")
    for stem, rep in results.items():
        rule = rep.get("threshold_rule") or {}
        rule_text = f"FPR {rule['fpr']}" if "fpr" in rule else f"quantile {rule.get('quantile')}"
        outliers = f" + {rep['outliers']} (all anomalies)" if rep.get("outliers") else ""
        about = [
            ("scored", f"{rep.get('n_images')} {rep.get('split')} images of {rep.get('data')}{outliers}"),
            ("normal classes", ", ".join(map(str, rep.get("normal_classes") or [])) or "n/a"),
            ("threshold", f"{rule_text} of {(rep.get('calibration') or {}).get('n_images')} validation images; flags by {rep.get('primary')}"),
        ]
        if rep.get("conditional"):
            about.append(("conditional model", rep["conditional"]))
        for name, why in (rep.get("skipped_scores") or {}).items():
            about.append((f"not scored: {name}", why))
        rows = [{"score": name, **{k: e.get(k) for k in keys if k in e}} for name, e in rep["scores"].items() if isinstance(e, dict)]
        out.append(f"<h3>{esc(stem)}</h3>" + kv_table(about) + (rows_table(rows) if rows else ""))
        for suffix, title, caption in (
            ("roc", "ROC of the anomaly scores", "anomalies are the positives; the dotted line marks 95% TPR"),
            ("flagged", "Flagged images", "ordered by score, most anomalous first; the score under each image"),
        ):
            png = ctx.run_dir / FOLDER / f"{stem}_{suffix}.png"
            if png.is_file():
                out.append(figure_html(f"anomaly_{suffix}_{stem}", title, png.read_bytes(), caption=caption))
    return out


def reconstructions_section(ctx: ReportContext) -> list[str]:
    return ctx.figures("recon")


def samples_section(ctx: ReportContext) -> list[str]:
    return ctx.figures("samples")


def latent_section(ctx: ReportContext) -> list[str]:
    return ctx.figures("manifold") + ctx.figures("scatter") + ctx.figures("ellipses")


def traversals_section(ctx: ReportContext) -> list[str]:
    return ctx.figures("traversal") + ctx.figures("interpolate")


def animations_section(ctx: ReportContext) -> list[str]:
    if not ctx.animations:
        return [note("Animations were left out of this report (--no-animations)", shell("vaelab", "plot", ctx.run_dir, "animate"))]
    from ..visualize import animate as anim

    try:
        return [
            figure_html(name, title + " (animated GIF)", anim.encode_gif(frames, 4 if "evolution" in name else 12), "image/gif")
            for name, title, frames in ctx.figs.animations()
        ]
    except VaelabError as e:
        return [note(f"The animations could not be drawn: {e}")]


# ---------------------------------------------------------------------------------------------------------
# config: only the keys that apply to this model

# (key, applies(cfg)): keys of the config that mean nothing for some models (a conv model has no `hidden`)
APPLIES: list[tuple[str, Callable]] = [
    ("model.hidden", lambda c: c.model.arch == "mlp"),
    *[(f"model.{k}", lambda c: c.model.arch == "conv") for k in ("conv_channels", "kernel", "norm", "decoder_norm", "decoder", "res_blocks")],
    *[(f"model.{k}", lambda c: c.model.pixelcnn_layers > 0) for k in ("pixelcnn_layers", "pixelcnn_channels", "pixelcnn_kernel")],
    *[(f"model.{k}", lambda c: c.model.likelihood == "gaussian") for k in ("gaussian_scale", "gaussian_sigma")],
    ("model.prior_components", lambda c: c.model.prior == "mog"),
    ("train.warmup_steps", lambda c: c.train.warmup_steps > 0),
    ("data.images_key", lambda c: c.data.images_key is not None),
    ("data.labels_key", lambda c: c.data.labels_key is not None),
]


def applicable_config(cfg) -> tuple[dict, list[str]]:
    """The config as a nested dict without the keys that do not apply to its model, and those keys."""
    from ..config import to_dict

    data = to_dict(cfg)
    left_out = []
    for key, applies in APPLIES:
        section, _, name = key.partition(".")
        try:
            ok = bool(applies(cfg))
        except AttributeError:  # a key a newer/older config does not have
            continue
        if not ok and name in data.get(section, {}):
            del data[section][name]
            left_out.append(key)
    return data, left_out


def config_section(ctx: ReportContext) -> list[str]:
    import yaml

    from ..config import dump_config

    data, left_out = applicable_config(ctx.run.config)
    out = [f"<pre>{esc(yaml.safe_dump(data, sort_keys=False))}</pre>"]
    if left_out:
        out.append(f'<p class="muted">Not shown, as they do not apply to this model: {esc(", ".join(left_out))}.</p>')
    out.append(details("The full config.yaml", f"<pre>{esc(dump_config(ctx.run.config))}</pre>"))
    return out


SECTIONS: list[Section] = [
    Section("data", "Dataset", data_section),
    Section("training", "Training", training_section),
    Section("evaluation", "Evaluation", evaluation_section),
    Section("classification", "Classification", classification_section),
    Section("anomaly", "Anomaly detection", anomaly_section),
    Section("reconstructions", "Reconstructions", reconstructions_section),
    Section("samples", "Samples", samples_section),
    Section("latent", "Latent space", latent_section),
    Section("traversals", "Traversals and interpolation", traversals_section),
    Section("animations", "Animations", animations_section),
    Section("config", "Config", config_section),
]


def add_section(section: Section, after: str | None = None) -> None:
    """Register a section (e.g. an anomaly-detection section) after the section with key `after`
    (default: before the config, which stays last). Registering a key again replaces that section."""
    for i, s in enumerate(SECTIONS):
        if s.key == section.key:
            SECTIONS[i] = section
            return
    keys = [s.key for s in SECTIONS]
    at = keys.index(after) + 1 if after in keys else (keys.index("config") if "config" in keys else len(keys))
    SECTIONS.insert(at, section)


__all__ = ["SECTIONS", "ReportContext", "Section", "add_section", "applicable_config", "headline", "render_json"]
