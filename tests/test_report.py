"""The HTML report: every figure and metric of a run, escaped user strings, offline and rendered by a browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import cli
from vaelab.report import build_report, format_value

EVIL = "<script>alert(1)</script>"




def leaves(d, prefix=""):
    """(path, value) of every scalar in a nested JSON dict (lists of scalars count as one value)."""
    for k, v in d.items():
        if isinstance(v, dict):
            yield from leaves(v, f"{prefix}{k} / ")
        elif not (isinstance(v, list) and v and isinstance(v[0], (list, dict))):
            yield f"{prefix}{k}", v


EVAL = {
    "split": "val",
    "checkpoint": "best.ckpt",
    "n_images": 150,
    "loss": {"elbo": 130.2468, "objective": 131.5, "recon": 124.93, "kl": 5.3168, "bits_per_dim": 0.23961},
    "nll": {"k": 100, "nll": 126.31},
    "recon_quality": {"mse": 0.04123, "psnr": 14.234, "ssim": 0.65321, "per_class": {"1": {"mse": 0.02, "psnr": 17.1, "ssim": 0.851}}},
    "active_units": 2,
    "fid": {"feature_net": "mnist-resnet-v1", "prior": 30.17, "gmm": 22.43, "recon": 12.08, "precision": 0.612, "recall": 0.507},
}
CLASSIFY = {
    "method": "gmm",
    "labels_per_class": 10,
    "accuracy": 0.9312,
    "precision_macro": 0.9287,
    "recall_macro": 0.9301,
    "f1_macro": 0.9294,
    "f1_micro": 0.9312,
    "confusion": [[48, 1, 1], [2, 45, 3], [1, 2, 47]],
    "class_names": ["1", "4", "8"],
    "n_test": 150,
    "budget": [{"labels_per_class": n, "accuracy": a} for n, a in ((1, 0.712), (10, 0.9312), ("all", 0.9534))],
}


def run_with_results(tiny_run: Path, tmp_path: Path, classify: dict = CLASSIFY, evaluation: dict = EVAL) -> Path:
    run_dir = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "val.json").write_text(json.dumps(evaluation))
    rng = np.random.default_rng(0)
    np.savez(run_dir / "eval" / "val_per_image.npz", ssim=rng.uniform(0.3, 0.9, 30), mse=rng.uniform(0, 0.1, 30), labels=np.arange(30) % 3)
    (run_dir / "classify").mkdir()
    (run_dir / "classify" / "gmm.json").write_text(json.dumps(classify))
    (run_dir / "classify" / "knn.json").write_text(json.dumps({**classify, "method": "knn", "labels_per_class": 1, "accuracy": 0.71}))
    return run_dir


def test_report_contains_every_figure_and_metric(tiny_run, tmp_path, monkeypatch):
    from vaelab import load_run

    run_dir = run_with_results(tiny_run, tmp_path)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    page = build_report(load_run(run_dir), dpi=30, animations=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # the library writes nothing
    figures = set(re.findall(r'data-figure="([^"]+)"', page))
    assert figures == {
        "eda_classes", "eda_pixels", "eda_means", "eda_examples", "curves", "recon", "samples", "manifold", "scatter",
        "traversal", "interpolate", "quality_val", "confusion_gmm", "confusion_knn", "budget",
    }
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', page)) == len(figures)
    for path, value in list(leaves(EVAL)) + list(leaves(CLASSIFY)):
        assert format_value(value) in page, path
        assert path.split(" / ")[-1] in page
    assert "<h4>budget</h4><table><tr><th>labels_per_class</th><th>accuracy</th></tr>" in page and "0.9534" in page
    assert "true \\ predicted" in page and "<td class=\"num\">45</td>" in page  # the confusion matrix as a table
    assert "No evaluation results yet" not in page and "No classification results yet" not in page
    assert "latent_dim: 2" in page  # the config
    assert "src=\"http" not in page and "<link" not in page  # self-contained: nothing to fetch
    assert "@media print" in page


def test_report_says_which_command_produces_missing_sections(tiny_run):
    from vaelab import load_run

    page = build_report(load_run(tiny_run), dpi=30, animations=False)
    assert f"vaelab evaluate {tiny_run}" in page
    assert f"vaelab classify {tiny_run} --method gmm" in page
    assert "No ellipses figure" in page


def test_class_names_from_folders_are_escaped(tiny_run, tmp_path):
    """A class folder named like a script shows as text (in data tables, JSON results and figures)."""
    from vaelab import load_run

    names = [EVIL, "4", 'x" onload="alert(2)']
    classify = {**CLASSIFY, "class_names": names}
    evaluation = {**EVAL, "recon_quality": {"ssim": 0.5, "per_class": {EVIL: {"ssim": 0.4}}}}
    run_dir = run_with_results(tiny_run, tmp_path, classify, evaluation)
    run = load_run(run_dir)
    data = run.data().replace(class_names=names)
    page = build_report(run, data=data, dpi=30, animations=False)
    assert EVIL not in page and "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'onload="alert(2)' not in page and "x&quot; onload=&quot;alert(2)" in page


def test_report_cli_writes_the_page_and_opens_it(tiny_run, tmp_path, monkeypatch, capsys):
    import webbrowser

    run_dir = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url))
    assert cli("report", str(run_dir), "--open", "--dpi", "30") == 0
    path = run_dir / "report.html"
    assert capsys.readouterr().out.strip() == str(path)
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert opened == [path.resolve().as_uri()]
    assert cli("report", str(tmp_path / "missing")) == 2


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
# injected into a copy of the report (the report itself has no scripts): after load, count decoded images
CHECK = (
    "<script>window.addEventListener('load', () => { const imgs = [...document.images];"
    " const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;"
    " document.body.setAttribute('data-rendered', ok + '/' + imgs.length); });</script></body>"
)


@pytest.mark.browser
@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_report_renders_its_images_in_headless_chromium(tiny_run, tmp_path):
    from PIL import Image

    from vaelab import load_run

    run_dir = run_with_results(tiny_run, tmp_path)
    page = build_report(load_run(run_dir), dpi=40)
    n_img = page.count("<img ")
    report = run_dir / "report.html"
    report.write_text(page, encoding="utf-8")
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", CHECK, 1), encoding="utf-8")
    base = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*base, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=180
    ).stdout
    assert f'data-rendered="{n_img}/{n_img}"' in dom, re.findall(r"data-rendered=\"[^\"]*\"", dom)
    shot = tmp_path / "shot.png"
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1200,3000", report.as_uri()], capture_output=True, timeout=180)
    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape == (3000, 1200)
    assert (img < 200).mean() > 0.02  # text, tables and figures, not a blank page
    assert len(np.unique(img)) > 50


def test_report_lists_every_classify_result_of_a_method(tiny_run, tmp_path):
    """Issue 27, item 4: two results of one method (other parameters, or --name) both appear, by name."""
    from vaelab import load_run

    run_dir = run_with_results(tiny_run, tmp_path)
    (run_dir / "classify" / "gmm_covariance_type-diag.json").write_text(json.dumps({**CLASSIFY, "accuracy": 0.8123}))
    page = build_report(load_run(run_dir), dpi=30, animations=False)
    assert "<td>gmm</td>" in page and "<td>gmm_covariance_type-diag</td>" in page  # one row per result file
    assert "0.9312" in page and "0.8123" in page


def test_report_skips_a_metrics_line_with_a_non_utf8_byte(tiny_run, tmp_path, capfd):
    """Issue 27, item 9: a damaged metrics.jsonl line (a non-UTF-8 byte) is skipped and named, not a traceback."""
    from vaelab.run import read_metrics

    run_dir = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    path = run_dir / "metrics.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    path.write_bytes(lines[0] + lines[1].replace(b'"epoch"', b'"ep\xffoch"') + lines[2])
    with pytest.warns(UserWarning, match=r"metrics.jsonl: skipped line 2 "):
        rows = read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == [1, 3]
    capfd.readouterr()
    with pytest.warns(UserWarning, match="skipped line 2"):  # the CLI prints it as one 'warning:' line
        assert cli("report", str(run_dir), "--dpi", "20") == 0
    assert "Traceback" not in capfd.readouterr().err
    assert (run_dir / "report.html").is_file()


def test_report_hints_are_shell_quoted_for_odd_run_names(tiny_run, tmp_path):
    """Issue 27, item 12: a run folder named with a space and a quote gets hints that paste into a shell."""
    import html
    import shlex

    from vaelab import load_run

    run_dir = Path(shutil.copytree(tiny_run, tmp_path / "my run's"))
    page = html.unescape(build_report(load_run(run_dir), dpi=20, animations=False))
    commands = re.findall(r"Run <code>(.*?)</code>", page)
    evaluate = [c for c in commands if c.startswith("vaelab evaluate")]
    assert evaluate and shlex.split(evaluate[0]) == ["vaelab", "evaluate", str(run_dir)]
    classify = [c for c in commands if c.startswith("vaelab classify")]
    assert classify and shlex.split(classify[0])[2] == str(run_dir)
    assert f"vaelab evaluate {run_dir}" not in page  # the unquoted form would split at the space
