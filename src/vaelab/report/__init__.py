"""One self-contained HTML page per run: the headline numbers first, then data, training, evaluation,
classification, every figure, and the config.

`build_report(run)` returns the page as a string; `vaelab report RUN` writes it to RUN/report.html.
The page is assembled from `sections.SECTIONS` (one builder per section, see `add_section`) and laid out
by `html.py` (tables, figures, the headline card, collapsed raw values, print CSS); it has no scripts.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from .. import __version__
from ..visualize.run_figures import RunFigures
from .html import cards, esc, format_value, page, render_json
from .sections import SECTIONS, ReportContext, Section, add_section, disentanglement_html, headline

REPORT_FILE = "report.html"


def build_report(
    run,
    data=None,
    dpi: int | None = None,
    animations: bool = True,
    seed: int = 0,
    sections: list[Section] | None = None,
) -> str:
    """The HTML report of a run (a `vaelab.run.Run`): a headline card (ELBO, NLL, SSIM, FID, accuracy, as
    far as the run has them), then one section per entry of `sections` (default `SECTIONS`).

    data: an ImageSet to use instead of the run's own data (e.g. data already loaded); dpi: figure
    resolution (default the figures' own); animations: embed the animated GIFs (they are most of a report's
    size). Reads RUN/eval/*.json and RUN/classify/*.json generically.
    """
    ctx = ReportContext(run, RunFigures(run, data=data, seed=seed), dpi, animations)
    built = []
    for section in sections if sections is not None else SECTIONS:
        parts = section.build(ctx)
        if parts:
            built.append((section.key, section.title, "".join(parts)))
    cfg, m = run.config, run.config.model
    n_params = sum(p.numel() for p in run.model.parameters())
    model = f"{m.arch} VAE, latent {m.latent_dim}, {m.likelihood} likelihood, beta {m.beta:g}" + (", conditional" if m.conditional else "")
    meta = (
        f'<p class="meta"><b>model</b> {esc(model)}; {n_params:,} parameters &middot; <b>data</b> {esc(cfg.data.source)}'
        f" &middot; <b>checkpoint</b> {esc(Path(run.checkpoint).name)} (epoch {esc(run.epoch)}, step {esc(run.step)})"
        f" &middot; <b>run</b> <code>{esc(run.path)}</code></p>"
    )
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return page(f"vaelab report: {cfg.name}", f"written {when} by vaelab {__version__}", meta, cards(headline(ctx)), built)


__all__ = ["REPORT_FILE", "SECTIONS", "Section", "add_section", "build_report", "disentanglement_html", "format_value", "render_json"]
