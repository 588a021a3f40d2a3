"""The report as a reader sees it (issue 27 item 17): headline numbers first, readable tables with units,
raw values collapsed, only the config keys that apply, animations optional; sections are pluggable."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import cli, copy_run, tiny_config
from test_report import CLASSIFY, run_with_results


def visible(page: str) -> str:
    """The page without its collapsed <details> blocks."""
    return re.sub(r"<details>.*?</details>", "", page, flags=re.S)


@pytest.fixture(scope="module")
def page(tiny_run, tmp_path_factory) -> str:
    from vaelab import load_run
    from vaelab.report import build_report

    classify = {**CLASSIFY, "params": {"reg_covar": 1e-6, "n_init": 3}, "fitted": {"n_iter_": 12}}
    run_dir = run_with_results(tiny_run, tmp_path_factory.mktemp("layout"), classify=classify)
    return build_report(load_run(run_dir), dpi=20, animations=False)


def test_the_page_opens_with_a_headline_card(page):
    card = page[page.index('id="headline"') : page.index("<nav>")]
    assert page.index('id="headline"') < page.index('<section id="data">')
    for label, value in (("-ELBO", "130.25"), ("NLL", "126.31"), ("SSIM", "0.653"), ("FID", "22.4"), ("Accuracy", "93.1%")):
        assert f'<div class="label">{label}</div><div class="value">{value}</div>' in card, label
    assert "nats per image" in card and "k=100" in card and "lower is better" in card


def test_raw_key_value_dumps_are_collapsed_and_tables_have_units(page):
    shown = visible(page)
    assert "params / reg_covar" in page and "fitted / n_iter_" in page  # every value is still there ...
    assert "params / reg_covar" not in shown and "fitted / n_iter_" not in shown  # ... but collapsed
    assert "<summary>All values of classify/gmm.json (gmm)</summary>" in page
    evaluation = shown[shown.index('<section id="evaluation">') : shown.index('<section id="classification">')]
    assert "loss / elbo" not in evaluation
    assert "<th>PSNR</th><td class=\"num\">14.23</td><td class=\"unit\">dB</td>" in evaluation
    assert "nats per image" in evaluation
    classification = shown[shown.index('<section id="classification">') : shown.index('<section id="reconstructions">')]
    assert "<th>labels per class</th><th>accuracy</th>" in classification  # one row per result file
    assert classification.count("<td>gmm</td>") == 2 and "<td>knn</td>" in classification


def test_config_shows_only_the_keys_that_apply(page, tmp_path):
    from vaelab.report.sections import applicable_config

    shown = visible(page)
    config = shown[shown.index('<section id="config">') :]
    config = config[: config.index("</pre>")]  # the config shown, before the note on the keys left out
    assert "hidden:" in config and "conv_channels:" not in config and "pixelcnn_" not in config
    assert "conv_channels:" in page  # the full config.yaml, collapsed
    conv, left_out = applicable_config(tiny_config(tmp_path, "model.arch=conv", "model.pixelcnn_layers=2"))
    assert "hidden" not in conv["model"] and "conv_channels" in conv["model"] and "pixelcnn_kernel" in conv["model"]
    assert "model.hidden" in left_out


def test_a_section_is_one_function(tiny_run):
    from vaelab import load_run
    from vaelab.report import SECTIONS, Section, build_report
    from vaelab.report.sections import add_section

    def anomaly(ctx):
        return [f"<p>scores of {ctx.run_dir.name}</p>"]

    extra = Section("anomaly", "Anomaly detection", anomaly)
    page = build_report(load_run(tiny_run), sections=[extra, Section("empty", "Empty", lambda ctx: [])])
    assert '<a href="#anomaly">Anomaly detection</a>' in page and f"<p>scores of {tiny_run.name}</p>" in page
    assert 'id="empty"' not in page  # a builder with nothing to say leaves its section out
    before = list(SECTIONS)
    try:
        add_section(extra, after="classification")
        keys = [s.key for s in SECTIONS]
        assert keys.index("anomaly") == keys.index("classification") + 1
    finally:
        SECTIONS[:] = before


def test_report_without_animations_is_smaller(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path)
    assert cli("report", str(run_dir), "--dpi", "20") == 0
    full = (run_dir / "report.html").read_text(encoding="utf-8")
    assert cli("report", str(run_dir), "--dpi", "20", "--no-animations") == 0
    small = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "image/gif" in full and "image/gif" not in small
    assert len(small) < 0.8 * len(full)
    assert "--no-animations" in small  # the note says why they are missing


def test_headline_without_evaluation_uses_the_training_metrics(tiny_run):
    from vaelab import load_run
    from vaelab.report.sections import ReportContext, headline
    from vaelab.visualize import RunFigures

    run = load_run(tiny_run)
    ctx = ReportContext(run, RunFigures(run), dpi=20)
    (label, value, detail), = headline(ctx)
    last = json.loads((Path(tiny_run) / "metrics.jsonl").read_text().splitlines()[-1])
    assert label == "-ELBO" and value == f"{last['val/elbo']:.2f}" and "validation" in detail
