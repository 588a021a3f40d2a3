"""`vaelab anomaly`: scores, thresholds, metrics, the command's outputs and errors, the report section, predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cli, copy_run
from vaelab.anomaly import (
    code_length_bits,
    complexity_score,
    detection_metrics,
    flag,
    perturb,
    score_images,
    threshold_at_fpr,
    threshold_at_quantile,
)
from vaelab.errors import VaelabError


def test_scores_on_a_tiny_model(tiny_run):
    from vaelab import load_run
    from vaelab.evaluate.reconstruction import reconstruction_metrics

    run = load_run(tiny_run)
    digits = run.data().split("val").images[:20]
    noise = torch.randint(0, 256, (20, *digits.shape[1:]), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    names = ["nll", "elbo", "recon", "ssim", "complexity"]
    s = score_images(run, digits, names, k=8)
    assert list(s) == names and all(v.shape == (20,) and np.isfinite(v).all() for v in s.values())
    rec = reconstruction_metrics(run.model, digits)
    np.testing.assert_allclose(s["recon"], rec["mse"])
    np.testing.assert_allclose(s["ssim"], 1 - rec["ssim"])
    np.testing.assert_allclose(s["complexity"], complexity_score(s["nll"], code_length_bits(digits), 784))
    assert s["nll"].mean() < s["elbo"].mean()  # the IWAE bound is tighter than the ELBO
    assert score_images(run, noise, ["nll"], k=8)["nll"].min() > s["nll"].max()  # noise is far less likely than digits
    assert score_images(run, digits[:5], ["nll"], k=8, seed=3)["nll"].tolist() == score_images(run, digits[:5], ["nll"], k=8, seed=3)["nll"].tolist()


def test_threshold_at_the_requested_fpr_on_synthetic_scores():
    rng = np.random.default_rng(0)
    normal = rng.normal(size=10_000)
    t = threshold_at_fpr(normal, 0.05)
    assert flag(normal, t).mean() == pytest.approx(0.05, abs=1e-4)  # exactly floor(n * fpr) above it
    assert t == pytest.approx(1.645, abs=0.05)  # the normal's 95% quantile
    fresh = rng.normal(size=20_000)
    assert flag(fresh, t).mean() == pytest.approx(0.05, abs=0.006)  # the realised FPR on new normal scores
    assert flag(normal, threshold_at_fpr(normal, 0.0)).sum() == 0
    assert flag(np.arange(10.0), threshold_at_fpr(np.arange(10.0), 0.25)).tolist() == [False] * 8 + [True] * 2
    q = threshold_at_quantile(normal, 0.9)
    assert flag(normal, q).mean() == pytest.approx(0.1, abs=1e-3)
    with pytest.raises(VaelabError, match="fpr"):
        threshold_at_fpr(normal, 1.0)
    with pytest.raises(VaelabError, match="quantile"):
        threshold_at_quantile(normal, 1.5)


def test_auroc_auprc_and_fpr_at_95_tpr_against_scikit_learn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(1)
    y = (rng.random(500) < 0.3).astype(int)
    s = rng.normal(size=500) + 1.5 * y
    m = detection_metrics(y, s)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s)) and 0.8 < m["auroc"] < 0.95
    assert m["auprc"] == pytest.approx(average_precision_score(y, s))
    # brute force: the lowest FPR among thresholds that catch at least 95% of the anomalies
    best = min((s[y == 0] >= t).mean() for t in np.sort(s) if (s[y == 1] >= t).mean() >= 0.95)
    assert m["fpr_at_95_tpr"] == pytest.approx(best)
    assert (m["n_normal"], m["n_anomalies"]) == (int((y == 0).sum()), int(y.sum()))
    assert detection_metrics(y, -s)["auroc"] == pytest.approx(1 - m["auroc"])
    with pytest.raises(VaelabError, match="both"):
        detection_metrics(np.zeros(5), np.arange(5.0))


@pytest.mark.parametrize("compressor", ["png", "zlib"])
def test_complexity_score_sign_on_a_flat_and_a_noisy_image(compressor):
    flat = torch.full((1, 1, 28, 28), 128, dtype=torch.uint8)
    noisy = torch.randint(0, 256, (1, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    bits = code_length_bits(torch.cat([flat, noisy]), compressor)
    assert bits[1] > 4 * bits[0]  # noise does not compress, a flat image does
    assert bits[1] > 784 * 7  # close to 8 bits per pixel
    # the same likelihood under the model: the complex image is the less surprising one once its complexity is discounted
    same_nll = np.array([500.0, 500.0])
    s = complexity_score(same_nll, bits, 784)
    assert s[0] > s[1]
    rgb = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    assert code_length_bits(rgb, compressor).shape == (2,)


def test_perturb_replaces_the_requested_share_of_pixels():
    x = torch.full((50, 1, 28, 28), 0.5)
    y = perturb(x, 0.2, torch.Generator().manual_seed(0))
    assert (y != x).float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert y.min() >= 0 and y.max() <= 1
    assert perturb(x, 0.0) is x


def _background_run(tmp_path) -> Path:
    """train.perturb is validated, and a tiny background model trains with it."""
    from conftest import tiny_config
    from vaelab.train import fit

    with pytest.raises(VaelabError, match="train.perturb"):
        tiny_config(tmp_path, "train.perturb=1.5")
    out = fit(tiny_config(tmp_path, "train.perturb=0.2", "train.epochs=1", "name=bg"), quiet=True)
    assert (Path(out["run_dir"]) / "checkpoints" / "last.ckpt").is_file()
    return Path(out["run_dir"])


def test_likelihood_ratio_against_a_background_run(tiny_run, tmp_path):
    from vaelab import load_run

    bg = _background_run(tmp_path)
    run = copy_run(tiny_run, tmp_path)
    assert cli("anomaly", run, "--split", "val", "--background", bg, "--score", "ratio,nll", "--nll-samples", "4", "--name", "lr") == 0
    rep = json.loads((run / "anomaly" / "lr.json").read_text())
    assert rep["primary"] == "ratio" and rep["background"] == str(bg)
    npz = np.load(run / "anomaly" / "lr_scores.npz")
    images = load_run(run).data().split("val").images
    bg_nll = score_images(load_run(bg), images, ["nll"], k=4)["nll"]
    np.testing.assert_allclose(npz["score_ratio"], npz["score_nll"] - bg_nll, rtol=1e-6)


def _noise_npz(path: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    return path


def test_anomaly_cli_writes_scores_figures_and_metrics(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path)
    assert cli("anomaly", run, "--data", "mnist-sample", "--split", "train", "--normal", "1", "--nll-samples", "4", "--limit", "120",
               "--score", "nll,recon,complexity") == 0
    out = capsys.readouterr().out
    assert "AUROC" in out and "normal classes: 1" in out
    folder = run / "anomaly"
    rep = json.loads((folder / "mnist-sample_train.json").read_text())
    assert rep["primary"] == "nll" and list(rep["scores"]) == ["nll", "recon", "complexity"]
    assert rep["normal_classes"] == ["1"] and rep["calibration"]["split"] == "val"
    for e in rep["scores"].values():
        assert 0 <= e["auroc"] <= 1 and 0 <= e["auprc"] <= 1 and 0 <= e["fpr_at_95_tpr"] <= 1
        assert e["val_flagged_share"] <= 0.05 and e["test_fpr"] is not None
    npz = np.load(folder / "mnist-sample_train_scores.npz")
    assert npz["score_nll"].shape == (120,) and set(npz["is_anomaly"].tolist()) == {0, 1}
    assert int(npz["flagged"].sum()) == rep["scores"]["nll"]["flagged"]
    rows = (folder / "mnist-sample_train_scores.csv").read_text().splitlines()
    assert rows[0] == "index,label,is_anomaly,nll,recon,complexity,flagged_by_nll" and len(rows) == 121
    for png in ("mnist-sample_train_flagged.png", "mnist-sample_train_roc.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_anomaly_cli_out_of_distribution_and_quantile(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path)
    noise = _noise_npz(tmp_path / "noise.npz")
    # the run's own digits (train split) against noise images, all anomalies: labels come from the sources
    assert cli("anomaly", run, "--outliers", f"npz:{noise}", "--split", "train", "--nll-samples", "4", "--limit", "60",
               "--score", "nll,elbo", "--quantile", "0.9", "--name", "ood") == 0
    rep = json.loads((run / "anomaly" / "ood.json").read_text())
    assert rep["outliers"] == f"npz:{noise}" and rep["n_anomalies"] == 40 and rep["threshold_rule"] == {"quantile": 0.9}
    assert rep["scores"]["nll"]["auroc"] > 0.95 and rep["best_score"]["name"] in ("nll", "elbo")
    assert rep["scores"]["nll"]["test_tpr"] > 0.9
    npz = np.load(run / "anomaly" / "ood_scores.npz")
    assert npz["source"].tolist() == [0] * 60 + [1] * 40
    capsys.readouterr()
    assert cli("anomaly", run, "--data", f"npz:{noise}", "--split", "train", "--normal", "none", "--nll-samples", "4", "--score", "nll") == 0
    rep = json.loads((run / "anomaly" / "noise_train.json").read_text())
    assert rep["scores"]["nll"]["flagged_share"] > 0.9 and "auroc" not in rep["scores"]["nll"]  # noise: all above the digits' threshold


def test_anomaly_cli_one_line_errors(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path)
    assert cli("anomaly", run) == 2  # mnist-sample has no test split
    err = capsys.readouterr().err
    assert "no 'test' split" in err and "--split" in err and len(err.strip().splitlines()) == 1
    assert cli("anomaly", run, "--data", "mnist-sample", "--split", "train") == 2
    err = capsys.readouterr().err
    assert "no normal class given" in err and "--normal" in err and len(err.strip().splitlines()) == 1
    for args, text in (
        (["--split", "val", "--score", "ratio"], "background"),
        (["--split", "val", "--score", "nl"], "did you mean 'nll'"),
        (["--split", "val", "--fpr", "0.1", "--quantile", "0.9"], "not both"),
        (["--split", "val", "--fpr", "1.5"], "--fpr"),
        (["--data", "mnist-sample", "--split", "train", "--normal", "cat"], "class 'cat' does not exist"),
        (["--data", "mnist-sample", "--split", "train", "--normal", "0"], "no images of the normal classes"),
    ):
        assert cli("anomaly", run, *args) == 2, args
        err = capsys.readouterr().err
        assert text in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (run / "anomaly").exists()  # nothing half-written


def test_report_has_an_anomaly_section(tiny_run, tmp_path):
    import re

    from vaelab import load_run
    from vaelab.report import build_report

    run = copy_run(tiny_run, tmp_path)
    page = build_report(load_run(run), dpi=30, animations=False)
    assert "Anomaly detection" in page and f"vaelab anomaly {run}" in page
    assert cli("anomaly", run, "--data", "mnist-sample", "--split", "train", "--normal", "1,4", "--nll-samples", "2",
               "--limit", "80", "--score", "elbo,ssim") == 0
    page = build_report(load_run(run), dpi=30, animations=False)
    section = page[page.index('<section id="anomaly">') : page.index("</section>", page.index('<section id="anomaly">'))]
    assert "mnist-sample_train" in section and "<th>auroc</th>" in section and "1, 4" in section
    assert set(re.findall(r'data-figure="(anomaly_[^"]+)"', section)) == {"anomaly_roc_mnist-sample_train", "anomaly_flagged_mnist-sample_train"}
    rep = json.loads((run / "anomaly" / "mnist-sample_train.json").read_text())
    assert f"{rep['scores']['elbo']['auroc']:.4g}" in section


def test_predict_flags_a_single_image(tiny_run, tmp_path, capsys):
    from PIL import Image

    from vaelab import load_run

    run = copy_run(tiny_run, tmp_path)
    assert cli("predict", run, "x.png", "--anomaly") == 2  # no threshold saved yet
    assert "vaelab anomaly" in capsys.readouterr().err
    assert cli("anomaly", run, "--split", "val", "--nll-samples", "4", "--score", "nll") == 0
    digit = load_run(run).data().split("val").images[0, 0].numpy()
    Image.fromarray(digit).save(tmp_path / "digit.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / "noise.png")
    capsys.readouterr()
    assert cli("predict", run, tmp_path / "digit.png", tmp_path / "noise.png", "--anomaly") == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if "│" in line and ".png" in line}
    assert "yes" in rows["noise.png"] and "no" in rows["digit.png"].split("│")[3]


def _bench():
    import importlib.util
    import sys

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "anomaly.py"
    spec = importlib.util.spec_from_file_location("bench_anomaly", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_anomaly"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_baselines_and_table():
    b = _bench()
    assert len(b.DEEP_SVDD_MNIST) == 10 and round(float(np.mean(b.DEEP_SVDD_MNIST)), 1) == 94.8
    rng = np.random.default_rng(0)
    train = rng.normal(0.3, 0.05, (200, 16)).clip(0, 1)
    test = np.concatenate([rng.normal(0.3, 0.05, (50, 16)), rng.normal(0.7, 0.05, (50, 16))]).clip(0, 1)
    y = np.r_[np.zeros(50), np.ones(50)].astype(int)
    base = b.baselines(train, test, y, svm_fit=100)
    assert set(base) == {"pca", "iforest", "ocsvm"} and all(v > 0.95 for v in base.values())
    row = {"class": "0", **{s: 0.9 for s in b.SCORES}, **base, "train_s": 1.0, "score_s": 1.0, "baseline_s": 1.0}
    text = b.tables({"oneclass-mnist": {"0": row}})
    assert "| 0 (0) | 90.0 |" in text and "| **mean** |" in text and text.rstrip().count("98.0") >= 1


@pytest.mark.slow
def test_benchmark_quick_end_to_end(tmp_path, monkeypatch, capsys):
    from conftest import shared_data

    root = shared_data()
    if root is None or not (root / "mnist").is_dir() or not (root / "fashion-mnist").is_dir():
        pytest.skip("$VAELAB_DATA/mnist and fashion-mnist not present")
    b = _bench()
    assert b.main(["--budget", "quick", "--only", "oneclass-mnist", "--classes", "1", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert 0.5 < res["oneclass-mnist"]["1"]["nll"] <= 1
    assert "oneclass-mnist (AUROC, %)" in capsys.readouterr().out


def test_a_run_without_validation_images_cannot_calibrate(tmp_path, capsys):
    from conftest import tiny_config
    from vaelab.train import fit

    run = Path(fit(tiny_config(tmp_path, "data.val_fraction=0", "train.epochs=1", "name=noval"), quiet=True)["run_dir"])
    assert cli("anomaly", run, "--split", "train", "--nll-samples", "2") == 2
    err = capsys.readouterr().err
    assert "no 'val' split" in err and "data.val_fraction" in err and len(err.strip().splitlines()) == 1


# -- families whose likelihood needs care (issue 25 audit) ------------------------------------------------
def _family_run(tmp_path, name: str, *overrides: str) -> Path:
    from conftest import tiny_config
    from vaelab.train import fit

    cfg = tiny_config(tmp_path, "train.epochs=1", "data.limit=150", "model.latent_dim=3", f"name={name}", *overrides)
    return Path(fit(cfg, quiet=True)["run_dir"])


def test_a_deterministic_encoder_gets_reconstruction_scores_and_one_line_refusals(tmp_path, capsys):
    run = _family_run(tmp_path, "rae", "model.objective=rae")
    assert cli("anomaly", run, "--split", "val", "--limit", "30") == 0  # the defaults it can give
    out = capsys.readouterr().out
    rep = json.loads((run / "anomaly" / "val.json").read_text())
    assert list(rep["scores"]) == ["ssim", "recon"] and set(rep["skipped_scores"]) == {"nll", "elbo", "complexity"}
    assert "deterministic encoder" in rep["skipped_scores"]["nll"] and "not scored: nll" in out
    from vaelab import load_run
    from vaelab.report import build_report

    page = build_report(load_run(run), dpi=30, animations=False)
    section = page[page.index('<section id="anomaly">') : page.index("</section>", page.index('<section id="anomaly">'))]
    assert "not scored: nll" in section and "deterministic encoder" in section
    for score in ("nll", "elbo", "complexity"):
        assert cli("anomaly", run, "--split", "val", "--score", score) == 2
        err = capsys.readouterr().err
        assert f"'{score}' score needs a likelihood" in err and "deterministic encoder" in err and "--score ssim,recon" in err
        assert len(err.strip().splitlines()) == 1


def test_a_vq_run_scores_its_code_bound_once_its_code_prior_is_trained(tmp_path, capsys):
    from vaelab import load_run
    from vaelab.models.vq_prior import code_bound, code_bound_terms

    run = _family_run(tmp_path, "vq", "model.latent=vq", "model.objective=vq", "model.latent_dim=4", "model.code_dim=2",
                      "model.codebook_size=8")
    assert cli("anomaly", run, "--split", "val", "--score", "nll") == 2
    err = capsys.readouterr().err
    assert "code prior" in err and "vaelab train-prior" in err and len(err.strip().splitlines()) == 1
    assert cli("train-prior", run, "--epochs", "1", "--width", "8", "--layers", "1") == 0
    r = load_run(run)
    images = r.data().split("val").images[:12]
    s = score_images(r, images, ["nll", "elbo", "complexity", "recon"], k=4)
    rec, code = code_bound_terms(r, images)
    np.testing.assert_allclose(s["nll"], rec + code)
    np.testing.assert_allclose(s["elbo"], s["nll"])  # a point-mass q(z|x): the bound is the ELBO
    assert np.isfinite(s["complexity"]).all() and (code > 0).all()
    assert abs(code_bound(r, images)["nll"] - float((rec + code).mean())) < 1e-6


def test_a_conditional_run_scores_the_likelihood_marginalised_over_its_classes(tiny_conditional_run, tmp_path, capsys):
    from scipy.special import logsumexp

    from vaelab import load_run
    from vaelab.anomaly.scores import best_class
    from vaelab.evaluate.likelihood import likelihood_terms
    from vaelab.evaluate.reconstruction import reconstruction_metrics

    r = load_run(tiny_conditional_run)
    x = r.data().split("val").images[:10]
    s = score_images(r, x, ["nll", "elbo", "recon"], k=4)
    per = [likelihood_terms(r.model, x, torch.full((10,), y), 4) for y in range(3)]
    np.testing.assert_allclose(s["nll"], np.log(3) - logsumexp(np.stack([-p.nll for p in per]), 0))
    assert (s["nll"] <= np.min([p.nll for p in per], 0) + np.log(3) + 1e-9).all()  # never worse than the best class by more than log K
    np.testing.assert_allclose(s["recon"], reconstruction_metrics(r.model, x, best_class(r, x))["mse"])
    run = copy_run(tiny_conditional_run, tmp_path)
    assert cli("anomaly", run, "--split", "val", "--limit", "20", "--nll-samples", "2", "--score", "nll,ssim") == 0
    rep = json.loads((run / "anomaly" / "val.json").read_text())
    assert "marginalised" in rep["conditional"] and np.isfinite(rep["scores"]["nll"]["threshold"])


def test_bad_fpr_is_refused_in_one_line(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path)
    for fpr in ("-0.1", "nan", "1"):
        assert cli("anomaly", run, "--split", "val", "--fpr", fpr) == 2
        err = capsys.readouterr().err
        assert "--fpr is" in err and "[0, 1)" in err and len(err.strip().splitlines()) == 1
    assert not (run / "anomaly").exists()


def test_a_pretrained_folder_is_scored_like_its_run_and_flags_with_predict(tiny_run, tmp_path, capsys):
    from PIL import Image

    from vaelab import load_run
    from vaelab.anomaly import detect

    folder = load_run(tiny_run).save_pretrained(tmp_path / "pretrained")
    a = detect(tiny_run, split="val", scores="nll,ssim", k=4, limit=30)
    b = detect(folder, split="val", scores="nll,ssim", k=4, limit=30)
    for name in ("nll", "ssim"):
        np.testing.assert_allclose(a.scores[name], b.scores[name], rtol=1e-5)
        assert a.threshold(name) == pytest.approx(b.threshold(name), rel=1e-5)
    assert cli("anomaly", folder, "--split", "val", "--limit", "30", "--nll-samples", "4", "--score", "nll") == 0
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / "noise.png")
    capsys.readouterr()
    assert cli("predict", folder, tmp_path / "noise.png", "--anomaly") == 0  # the saved threshold of the folder
    assert "1 of 1 images flagged" in capsys.readouterr().out
