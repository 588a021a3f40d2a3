"""benchmarks/quality.py: its recipes point at valid configs, and a quick run measures from the CLI's files."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_data, shared_data
from vaelab.config import load_config

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "quality.py"


def _quality():
    spec = importlib.util.spec_from_file_location("quality", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["quality"] = mod  # its dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_every_recipe_has_a_valid_config_and_a_budget():
    q = _quality()
    assert len({r.name for r in q.RECIPES}) == len(q.RECIPES)
    for r in q.RECIPES:
        cfg = load_config(ROOT / "configs" / f"{r.config}.yaml", [])
        assert cfg.name == r.config, r.name  # the run dir, the config and its name agree
        assert set(r.epochs) == set(q.BUDGETS) and all(e >= 1 for e in r.epochs.values())
        assert r.epochs["quick"] <= r.epochs["cpu"] <= r.epochs["full"]


def test_table_says_met_not_met_and_errors():
    q = _quality()
    base = {"workflow": "w", "anchor": "a", "target": "t", "epochs": 3, "train_minutes": 1.25, "machine": "m"}
    text = q.table({"x": {**base, "value": "1.0", "met": True}, "y": {**base, "value": "2.0", "met": False},
                    "z": {**base, "error": "boom", "met": False}, "u": {**base, "value": "3", "met": None}})
    rows = text.splitlines()[2:]
    assert [r.split("|")[5].strip() for r in rows] == ["yes", "**no**", "error", "works"]
    assert "| boom |" in rows[2] and "1.2 min" in rows[0]


@pytest.mark.slow
@needs_data("mnist")
def test_quick_mnist148_recipe_end_to_end(tmp_path):
    env = {**os.environ, "VAELAB_DATA": str(shared_data()), "OMP_NUM_THREADS": "1", "VAELAB_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, str(SCRIPT), "--only", "mnist148", "--budget", "quick", "--out", str(tmp_path / "q")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads((tmp_path / "q" / "results.json").read_text())["mnist148"]
    assert "error" not in row, row
    run_dir = tmp_path / "q" / "mnist-148-best"
    ev = json.loads((run_dir / "eval" / "test.json").read_text())
    gmm = json.loads((run_dir / "classify" / "gmm.json").read_text())
    # the table's numbers are the ones the CLI wrote, and the GMM was seeded from val.npz, scored on test.npz
    assert row["detail"]["ssim"] == ev["recon_quality"]["ssim"] and 0 < row["detail"]["ssim"] < 1
    assert row["detail"]["f1_macro"] == gmm["f1_macro"] and gmm["class_names"] == ["1", "4", "8"]
    assert gmm["accuracy"] > 0.6  # one epoch on 2,000 digits already separates 1/4/8 far above chance (1/3)
    assert row["met"] == (row["detail"]["ssim"] >= 0.80 and row["detail"]["f1_macro"] >= 0.97)
    assert "| MNIST digits 1/4/8" in done.stdout and row["epochs"] == 1


def test_ssim_ceiling_scores_a_copied_test_set_as_perfect(tmp_path):
    """Test digits that are copies of training digits: the nearest training image is the digit itself."""
    rng = np.random.default_rng(0)
    train = (rng.random((40, 28, 28)) * 255).astype(np.uint8)
    labels = np.repeat([1, 4, 8, 1], 10)
    np.savez(tmp_path / "train.npz", images=train, labels=labels)
    keep = [0, 12, 25, 33]
    noisy = train[keep].copy()
    noisy[1] = 255 - noisy[1]  # one test digit that is no training digit: its SSIM is below 1
    np.savez(tmp_path / "test.npz", images=noisy, labels=labels[keep])
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ssim_ceiling.py"), str(tmp_path), "--k", "3"],
                         capture_output=True, text=True, check=True).stdout
    rows = {ln.split(" | ")[0].strip("| "): ln.split(" | ") for ln in out.splitlines() if ln.startswith("| nearest") or ln.startswith("| best")}
    nearest = rows["nearest training image (pixel L2)"]
    assert float(nearest[3]) == pytest.approx(1.0) and float(nearest[5].strip(" |")) == pytest.approx(1.0)  # digits 1 and 8: copies
    assert float(nearest[4]) < 0.5  # digit 4, the inverted one
    assert float(rows["best of the 3 nearest, by SSIM (oracle)"][1]) >= float(nearest[1])


# ---------------------------------------------------------------------------------------------------------
# benchmarks/families.py


def _families():
    spec = importlib.util.spec_from_file_location("families", ROOT / "benchmarks" / "families.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["families"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_every_family_row_has_a_valid_config_and_a_budget():
    f = _families()
    assert len({r.name for r in f.FAMILIES}) == len(f.FAMILIES)
    for r in f.FAMILIES:
        for budget in f.BUDGETS:
            cfg = load_config(ROOT / "configs" / f"{r.config}.yaml", r.overrides.get(budget, []))
            assert cfg.name == r.config, r.name
        assert set(r.epochs) == set(f.BUDGETS) and r.epochs["quick"] <= r.epochs["cpu"] <= r.epochs["full"]
    # the CPU budget compares IWAE at K = 5; the full budget is the paper's K = 50
    iwae = next(r for r in f.FAMILIES if r.name == "iwae")
    assert load_config(ROOT / "configs" / f"{iwae.config}.yaml", iwae.overrides["cpu"]).model.iw_samples == 5
    assert load_config(ROOT / "configs" / f"{iwae.config}.yaml", iwae.overrides.get("full", [])).model.iw_samples == 50


def test_families_table_judges_targets_and_the_iaf_against_the_gaussian():
    f = _families()
    base = {"epochs": 3, "train_minutes": 1.0, "elbo": 90.0, "active_units": "20 of 50", "machine": "m", "date": "d"}
    results = {"vae": {**base, "nll": {"1000": 86.9, "5000": 86.5}}, "iwae": {**base, "nll": {"1000": 85.0, "5000": 84.7}},
               "iaf": {**base, "nll": {"1000": 85.8, "5000": 85.6}}, "vamp": {"error": "boom"}}
    rows = {line.split("|")[1].strip(): line for line in f.table(results).splitlines()[2:]}
    assert "| yes |" in rows["VAE, N(0, I)"] and "| 86.90 | 86.50 |" in rows["VAE, N(0, I)"]  # 86.50 <= 86.76
    assert "| yes |" in rows["IWAE, K = 50 (CPU: K = 5)"]
    assert "| **no** |" in rows["IAF posterior (2 steps)"]  # 85.6 is 0.9 nats below the Gaussian's 86.5: not 1
    assert "error: boom" in rows["VampPrior, K = 500"]


@pytest.mark.slow
@needs_data("mnist")
def test_quick_families_end_to_end(tmp_path):
    env = {**os.environ, "VAELAB_DATA": str(shared_data()), "OMP_NUM_THREADS": "1", "VAELAB_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "families.py"), "--only", "2layer,iaf", "--budget", "quick",
           "--out", str(tmp_path / "q")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "q" / "results.json").read_text())
    for name, run in (("2layer", "mnist-fam-2layer"), ("iaf", "mnist-fam-iaf")):
        assert "error" not in results[name], results[name]
        ev = json.loads((tmp_path / "q" / run / "eval" / "test.json").read_text())
        assert results[name]["nll"]["5"] == ev["nll"]["nll"]  # the table's number is the CLI's, on the binarized set
        assert results[name]["nll"]["2"] == ev["nll"]["nll_at_k"]["2"]  # the smaller k, from the same pass
        assert ev["n_images"] == 1000  # the quick budget's first 1,000 binarized test digits
        assert (tmp_path / "q" / run / "figures" / "curves.png").is_file()
    assert results["2layer"]["active_units"].endswith("of 100 + 50")  # per layer, z1 then z2
    # the test set binarized once, as `vaelab evaluate --binarized` draws it: binary pixels, MNIST's first labels
    data = np.load(tmp_path / "q" / "mnist-test-binarized-1000.npz")
    assert data["x_test"].shape == (1000, 1, 28, 28) and set(np.unique(data["x_test"])) == {0, 255}
    assert list(data["y_test"][:5]) == [7, 2, 1, 0, 4]
    assert "| IAF posterior (2 steps) |" in done.stdout


# ---------------------------------------------------------------------------------------------------------
# benchmarks/disentanglement.py


def _disent():
    spec = importlib.util.spec_from_file_location("disent_bench", ROOT / "benchmarks" / "disentanglement.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["disent_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_disentanglement_budgets_build_the_study_trials():
    d = _disent()
    plan, trials = d.plan_for("cpu")
    assert {t.variant for t in trials} == {"vae", "beta-vae-4", "beta-vae-16", "beta-tcvae-6", "factor-vae-35", "dip-vae-ii"}
    assert len(trials) == 12 and plan.trial_config(trials[0].overrides, "x", "t").model.hidden == [512, 256]
    assert [t.variant for t in d.plan_for("quick")[1]] == ["vae", "beta-tcvae-6"]


def test_disentanglement_table_and_targets():
    d = _disent()
    row = {"beta_vae": 0.8, "factor_vae": 0.7, "mig": 0.1, "sap": 0.05, "dci_d": 0.3, "dci_c": 0.3, "dci_i": 0.9, "val_recon": 30.0, "val_kl": 20.0}
    results = [{"variant": "vae", **row}, {"variant": "vae", **row, "mig": 0.2}, {"variant": "beta-tcvae-6", **row, "mig": 0.3}]
    text = d.table(results)
    assert "| vae | 2 | 0.800 ± 0.000 | 0.700 ± 0.000 | 0.150 ± 0.071 |" in text and "Locatello" in text
    lines = d.verdicts(results)
    assert "MIG beta-tcvae-6 0.300 vs vae 0.150: higher" in lines
    assert all("inside" in line for line in lines if line.startswith(("mig", "sap", "dci_d")))


@pytest.mark.slow
def test_quick_disentanglement_end_to_end(tmp_path, capsys):
    d = _disent()
    assert d.main(["--budget", "quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| vae | 1 |" in out and "| beta-tcvae-6 | 1 |" in out and "MIG beta-tcvae-6" in out
