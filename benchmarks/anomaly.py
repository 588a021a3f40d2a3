"""Anomaly detection with vaelab's VAE scores against scikit-learn baselines and the published Deep SVDD.

    python benchmarks/anomaly.py --budget quick            # a minute: 2 classes, few images (for the tests)
    python benchmarks/anomaly.py --budget cpu              # the tables of docs/anomaly.md (one CPU thread, 15 min on 2026-12-03)
    python benchmarks/anomaly.py --only ood --budget cpu   # one part: oneclass-mnist, oneclass-fashion, ood

1. One-class protocol (Ruff et al. 2018): for each class c of MNIST and Fashion-MNIST, train a VAE on the
   training images of class c only, score the whole test set (10,000 images; class c normal, the nine
   others anomalies) and report the AUROC of each vaelab score (`vaelab.anomaly.detect`, the library
   behind `vaelab anomaly RUN --data mnist --normal c`). Side by side on the same pixels (scaled to
   [0, 1], flattened): PCA reconstruction error, Isolation Forest and One-class SVM from scikit-learn,
   fitted on the same training images, and the published Deep SVDD AUROCs.
2. Out-of-distribution (Nalisnick et al. 2019): a VAE trained on all of Fashion-MNIST scores the
   Fashion-MNIST test images (normal) and the MNIST test images (anomalies), with every score, the
   likelihood ratio against a background model trained on perturbed inputs (`train.perturb`, Ren et al.
   2019), and the PNG code length alone (no model) as a reference.

Writes OUT/results.json as it goes (a stopped run keeps what it measured) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# One-Class Deep SVDD, MNIST, AUROC (%) per normal class 0..9: Ruff et al. 2018, "Deep One-Class
# Classification", ICML, Table 1 (mean over 10 seeds; soft-boundary Deep SVDD: 97.8 99.6 89.5 90.3 93.8
# 85.8 98.0 92.7 92.9 94.9). Read from the table as reproduced in the README of a reimplementation of the
# paper's code (lukasruff/Deep-SVDD-PyTorch is the reference code). The paper has no Fashion-MNIST column.
DEEP_SVDD_MNIST = [98.0, 99.7, 91.7, 91.9, 94.9, 88.5, 98.3, 94.6, 93.9, 96.5]

BUDGETS = {
    # epochs per one-class model, per OOD model; importance samples; training images for the OC-SVM
    "quick": {"epochs": 1, "ood_epochs": 1, "k": 4, "classes": [0, 1], "limit": 300, "svm_fit": 300, "ood_likelihood": "bernoulli"},
    "cpu": {"epochs": 15, "ood_epochs": 4, "k": 8, "classes": list(range(10)), "limit": None, "svm_fit": 2000, "ood_likelihood": "bernoulli"},
}
DATASETS = {"oneclass-mnist": "mnist", "oneclass-fashion": "fashion-mnist"}
SCORES = ["ssim", "recon", "nll", "elbo", "complexity"]
MODEL = ["model.arch=mlp", "model.hidden=[512,256]", "model.latent_dim=16", "model.activation=relu", "train.batch_size=128",
         "train.lr=1e-3", "train.images_every=0", "train.save_latents=false", "train.log_every=100"]


def baselines(train: np.ndarray, test: np.ndarray, is_anomaly: np.ndarray, svm_fit: int, seed: int = 0) -> dict[str, float]:
    """AUROC of PCA reconstruction error, Isolation Forest and One-class SVM on flattened [0, 1] pixels."""
    from sklearn.decomposition import PCA
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score
    from sklearn.svm import OneClassSVM

    out = {}
    pca = PCA(n_components=0.9, random_state=seed).fit(train)  # the components keeping 90% of the variance
    recon = pca.inverse_transform(pca.transform(test))
    out["pca"] = roc_auc_score(is_anomaly, ((test - recon) ** 2).mean(1))
    forest = IsolationForest(n_estimators=200, random_state=seed).fit(train)
    out["iforest"] = roc_auc_score(is_anomaly, -forest.score_samples(test))
    rng = np.random.default_rng(seed)
    fit = train[rng.choice(len(train), size=min(svm_fit, len(train)), replace=False)]
    svm = OneClassSVM(kernel="rbf", gamma="scale", nu=0.1).fit(fit)
    out["ocsvm"] = roc_auc_score(is_anomaly, -svm.decision_function(test))
    return {k: float(v) for k, v in out.items()}


def flat(images) -> np.ndarray:
    return images.reshape(len(images), -1).numpy().astype(np.float32) / 255.0


def train_run(out: Path, name: str, overrides: list[str]):
    from vaelab import load_run
    from vaelab.config import load_config
    from vaelab.train import fit

    cfg = load_config(None, [*MODEL, *overrides, f"out_dir={out}", f"name={name}"])
    if (out / name / "checkpoints" / "best.ckpt").is_file():  # trained by an earlier, interrupted call
        return load_run(out / name), float("nan")
    t = time.perf_counter()
    done = fit(cfg, run_dir=out / name, quiet=True)
    return load_run(done["run_dir"]), time.perf_counter() - t


def one_class(part: str, budget: dict, out: Path, results: dict, save) -> None:
    from vaelab.anomaly import detect
    from vaelab.data import load

    spec = DATASETS[part]
    test = load(spec, val_fraction=0.0).split("test")
    rows = results.setdefault(part, {})
    for c in budget["classes"]:
        key = str(c)
        if key in rows:
            continue
        overrides = [f"data.source={spec}", f"data.classes=[{c}]", f"train.epochs={budget['epochs']}"]
        if budget["limit"]:
            overrides.append(f"data.limit={budget['limit']}")
        run, train_s = train_run(out / part, f"class{c}", overrides)
        t = time.perf_counter()
        name = test.class_names[c]
        scored = test if not budget["limit"] else test.subset(np.arange(min(len(test), budget["limit"] * 3)))
        res = detect(run, data=scored, normal=[name], scores=SCORES, fpr=0.05, k=budget["k"], seed=0)
        score_s = time.perf_counter() - t
        is_anomaly = res.is_anomaly
        t = time.perf_counter()
        base = baselines(flat(run.data().split("train").images), flat(scored.images), is_anomaly, budget["svm_fit"])
        rows[key] = {
            "class": name,
            **{s: res.report["scores"][s]["auroc"] for s in SCORES},
            **base,
            "test_fpr_nll": res.report["scores"]["nll"]["test_fpr"],
            "train_s": round(train_s, 1), "score_s": round(score_s, 1), "baseline_s": round(time.perf_counter() - t, 1),
        }
        print(f"{part} class {c} ({name}): " + ", ".join(f"{k} {v:.4f}" for k, v in rows[key].items() if isinstance(v, float)), flush=True)
        save()


def ood(budget: dict, out: Path, results: dict, save) -> None:
    from vaelab.anomaly import code_length_bits, detect, detection_metrics
    from vaelab.data import load

    if "ood" in results:
        return
    extra = [f"data.limit={budget['limit']}"] if budget["limit"] else []
    common = ["data.source=fashion-mnist", f"train.epochs={budget['ood_epochs']}", f"model.likelihood={budget['ood_likelihood']}", *extra]
    run, train_s = train_run(out / "ood", "fashion", common)
    bg, bg_s = train_run(out / "ood", "fashion-background", [*common, "train.perturb=0.2"])
    mnist = load("mnist", val_fraction=0.0)
    if budget["limit"]:
        mnist = mnist.subset(np.arange(len(mnist))[-budget["limit"]:])  # the last images are test images
    t = time.perf_counter()
    res = detect(run, outliers=mnist, scores=[*SCORES, "ratio"], background=bg, fpr=0.05, k=budget["k"], seed=0, limit=budget["limit"])
    bits = code_length_bits(res.images)
    ref = detection_metrics(res.is_anomaly, -bits)  # simpler (shorter code) = anomalous: no model at all
    row = {s: {m: res.report["scores"][s][m] for m in ("auroc", "auprc", "fpr_at_95_tpr", "test_fpr", "test_tpr")} for s in res.report["scores"]}
    row["png_length_alone"] = {m: ref[m] for m in ("auroc", "auprc", "fpr_at_95_tpr")}
    nll = res.scores["nll"]
    results["ood"] = {
        "scores": row,
        "mean_nll_fashion": float(nll[res.is_anomaly == 0].mean()), "mean_nll_mnist": float(nll[res.is_anomaly == 1].mean()),
        "train_s": round(train_s, 1), "background_train_s": round(bg_s, 1), "score_s": round(time.perf_counter() - t, 1),
    }
    print("ood: " + ", ".join(f"{k} AUROC {v['auroc']:.4f}" for k, v in row.items()), flush=True)
    save()


def tables(results: dict) -> str:
    lines = []
    for part in DATASETS:
        rows = results.get(part)
        if not rows:
            continue
        cols = [*SCORES, "pca", "iforest", "ocsvm"]
        svdd = part == "oneclass-mnist"
        head = ["class", *(f"VAE {c}" for c in SCORES), "PCA", "IForest", "OC-SVM"] + (["Deep SVDD (paper)"] if svdd else [])
        lines += [f"\n{part} (AUROC, %)", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        keys = sorted(rows, key=int)
        for k in keys:
            r = rows[k]
            cells = [f"{100 * r[c]:.1f}" for c in cols] + ([f"{DEEP_SVDD_MNIST[int(k)]:.1f}"] if svdd else [])
            lines.append(f"| {k} ({r['class']}) | " + " | ".join(cells) + " |")
        means = [100 * np.mean([rows[k][c] for k in keys]) for c in cols]
        svdd_mean = [f"{np.mean([DEEP_SVDD_MNIST[int(k)] for k in keys]):.1f}"] if svdd else []
        lines.append("| **mean** | " + " | ".join(f"{m:.1f}" for m in means) + (" | " + svdd_mean[0] if svdd else "") + " |")
        best_vae = max(SCORES, key=lambda c: np.mean([rows[k][c] for k in keys]))
        lines.append(f"best VAE score: {best_vae}; seconds per class: train {np.mean([rows[k]['train_s'] for k in keys]):.0f}, "
                     f"score {np.mean([rows[k]['score_s'] for k in keys]):.0f}, baselines {np.mean([rows[k]['baseline_s'] for k in keys]):.0f}")
    if "ood" in results:
        o = results["ood"]
        lines += ["\nood: Fashion-MNIST model, Fashion-MNIST test (normal) vs MNIST test (anomalies)",
                  "| score | AUROC | AUPRC | FPR at 95% TPR |", "|---|---|---|---|"]
        for name, m in o["scores"].items():
            lines.append(f"| {name} | {m['auroc']:.4f} | {m['auprc']:.4f} | {m['fpr_at_95_tpr']:.4f} |")
        lines.append(f"mean NLL: Fashion-MNIST {o['mean_nll_fashion']:.1f}, MNIST {o['mean_nll_mnist']:.1f} nats; "
                     f"train {o['train_s']:.0f} s + background {o['background_train_s']:.0f} s, scoring {o['score_s']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=list(BUDGETS), default="quick")
    parser.add_argument("--only", choices=[*DATASETS, "ood"], action="append", help="run only these parts (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-anomaly"))
    parser.add_argument("--classes", help="one-class protocol on these classes only, e.g. 2,5 (default: the budget's)")
    parser.add_argument("--epochs", type=int, help="epochs of each one-class model (default: the budget's)")
    parser.add_argument("--ood-likelihood", choices=["bernoulli", "gaussian"], help="the OOD models' likelihood")
    parser.add_argument("--ood-epochs", type=int, help="epochs of the OOD model and its background model")
    parser.add_argument("--limit", type=int, help="at most this many images per split (quick tries)")
    parser.add_argument("--set", action="append", default=[], help="an override of every model's config, e.g. model.latent_dim=32")
    args = parser.parse_args(argv)
    if not os.environ.get("VAELAB_DATA"):
        print("warning: VAELAB_DATA is not set; MNIST/Fashion-MNIST are looked up in the cache", file=sys.stderr)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    budget = dict(BUDGETS[args.budget])
    MODEL.extend(args.set)
    if args.classes:
        budget["classes"] = [int(c) for c in args.classes.split(",")]
    for key in ("epochs", "ood_likelihood", "ood_epochs", "limit"):
        if getattr(args, key):
            budget[key] = getattr(args, key)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results["budget"] = args.budget

    def save():
        path.write_text(json.dumps(results, indent=2) + "\n")

    parts = args.only or ["oneclass-mnist", "ood", "oneclass-fashion"]
    start = time.perf_counter()
    for part in parts:
        if part == "ood":
            ood(budget, args.out, results, save)
        else:
            one_class(part, budget, args.out, results, save)
    results["wall_s"] = round(time.perf_counter() - start, 1)
    save()
    print(tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
