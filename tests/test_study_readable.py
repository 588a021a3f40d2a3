"""A study as a reader sees it (issue 27 item 18): a data overview in its report, a terminal table that fits
80 columns without ellipses, and the FID feature network's one-off training announced with its cache."""

from __future__ import annotations

import io

from rich.console import Console

from test_sweep import fake_steps, run_cli, tiny_yaml  # noqa: F401 (fake_steps is a fixture)


def results_of_a_big_study():
    from vaelab.sweep.results import EVAL_COLUMNS, VAL_COLUMNS, Column, Results

    cols = [Column("trial", "trial"), Column("variant", "variant"), Column("model.beta", "beta", "g", True),
            Column("model.latent_dim", "latent_dim", "g", True), Column("status", "status")]
    cols += [Column(k, h, f, True) for k, h, f in VAL_COLUMNS] + [Column(k, h, f, True) for k, h, f, _ in EVAL_COLUMNS]
    cols += [Column("accuracy_gmm", "accuracy (gmm)", ".3f", True)]
    rows = []
    for i, (beta, d) in enumerate([(0.5, 2), (1, 2), (4, 16), (8, 64)]):
        rows.append({"trial": f"conv-beta-{beta}_latent_dim-{d}", "variant": "conv", "model.beta": beta, "model.latent_dim": d,
                     "status": "complete", "val_loss": 231.456 + i, "val_recon": 220.1, "val_kl": 11.35, "test_total": 232.1,
                     "test_recon": 221.0, "test_kl": 11.1, "nll": 228.93, "ssim": 0.7312, "fid": 23.52, "accuracy_gmm": 0.9312})
    return Results(rows, cols)


def test_terminal_table_fits_80_columns_without_ellipses(monkeypatch, tmp_path):
    from vaelab.cli import sweep as sweep_cli

    out = io.StringIO()
    monkeypatch.setattr(sweep_cli, "console", Console(file=out, width=80, force_terminal=False, color_system=None))
    sweep_cli._print_results(results_of_a_big_study(), tmp_path)
    text = out.getvalue()
    assert "…" not in text and "..." not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "conv-beta-0.5_latent_dim-2" in text and "231.46" in text  # whole names and numbers
    assert "more column(s) in results.md" in text and "accuracy (gmm)" in text  # what did not fit is named
    wide = io.StringIO()
    monkeypatch.setattr(sweep_cli, "console", Console(file=wide, width=250, force_terminal=False, color_system=None))
    sweep_cli._print_results(results_of_a_big_study(), tmp_path)
    assert "more column(s)" not in wide.getvalue() and "0.931" in wide.getvalue()


def test_study_report_has_a_data_overview(tmp_path, capsys, fake_steps):  # noqa: F811
    path = tiny_yaml(tmp_path)
    code, out, err = run_cli([str(path), "--grid", "model.beta=1", "-q"], capsys)
    assert code == 0, err
    study = tmp_path / "runs" / "s"
    report = (study / "report.html").read_text()
    data = report[report.index("<h2>Data</h2>") : report.index("<h2>Results</h2>")]
    assert "mnist-sample" in data and "1 x 28 x 28" in data and "train images per class" in data
    assert data.count("data:image/png;base64,") == 2  # class counts and pixel histogram
    assert {"data_classes.png", "data_pixels.png"} <= {p.name for p in (study / "figures").iterdir()}


def test_first_evaluation_announces_the_feature_network_and_its_cache(tmp_path, capsys, fake_steps, monkeypatch):  # noqa: F811
    from vaelab.evaluate import features
    from vaelab.sweep import steps

    trained = []

    def fake_train(spec, shape, progress=None):
        for e in (1, 2):
            if progress:
                progress(f"epoch {e}/2: train loss 0.5, val accuracy 0.9{e} (1 s)")
        trained.append((spec, shape))
        return type("Net", (), {"name": "fake-net", "path": features.cache_path(spec, shape)})()

    monkeypatch.setattr(steps, "train_feature_net", fake_train)
    path = tiny_yaml(tmp_path)
    code, out, err = run_cli([str(path), "--grid", "model.beta=1", "--evaluate"], capsys)
    assert code == 0, err
    assert trained == [("mnist-sample", (1, 28, 28))]
    flat = " ".join(out.split())
    assert "FID needs a feature network for mnist-sample at 1x28x28" in flat
    assert f"cached in {features.cache_path('mnist-sample', (1, 28, 28))}" in flat
    assert flat.index("FID needs a feature network") < flat.index("trial beta-1: training")
    # cached: nothing is said the next time
    monkeypatch.setattr(features, "find_cached", lambda spec, shape: tmp_path)
    code, out, err = run_cli([str(path), "--grid", "model.beta=1", "--evaluate"], capsys)
    assert code == 0 and "FID needs" not in out and len(trained) == 1


def test_fit_columns_keeps_the_first_and_never_cuts():
    from vaelab.cli.sweep import fit_columns

    headers = ["trial", "val total", "test recon", "accuracy (gmm)"]
    lines = [["a-very-long-trial-name-that-is-wide", "231.46", "220.10", "0.931"]]
    assert fit_columns(headers, lines, 30) == [0]
    assert fit_columns(headers, lines, 60) == [0, 1, 2]
    assert fit_columns(headers, lines, 200) == [0, 1, 2, 3]
