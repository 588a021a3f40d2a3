"""Generators: every family x sampler on the same conv net, one table of FID, precision / recall, MSE, SSIM
(docs/generators.md).

One protocol: MNIST and Fashion-MNIST, the architecture of ``configs/gen-conv.yaml`` for every family, FID
with vaelab's domain feature network (as `vaelab evaluate` computes it; ``--inception FILE`` adds the
Inception-feature FID when you have the weights). Every row is what a user would type: `vaelab train
configs/gen-conv.yaml <family overrides>`, for the VQ-VAE `vaelab train-prior RUN`, then `vaelab evaluate
RUN --sampler maf`; the numbers are read back from RUN/eval/test.json.

    VAELAB_DATA=../shared/datasets python benchmarks/generators.py --budget quick    # plumbing, minutes
    python benchmarks/generators.py                                                  # CPU budget (hours)
    python benchmarks/generators.py --budget full --only mnist-vae,mnist-vq          # for a GPU
    python benchmarks/generators.py --list

Budgets: ``quick`` (1 epoch on 1,000 images per split, a 1-epoch feature network on 2,000 images, 200
generated images, the MNIST rows: checks the plumbing, not the numbers), ``cpu`` (about 20 epochs a row),
``full`` (the long schedules). Runs go to ``--out`` (default runs/generators/<budget>/); a trained row is not
trained again.

Targets (issue 23): for every Gaussian family GMM or MAF beats the prior; the best MNIST generator has at
least 30% lower FID than the VAE + GMM row; the VQ-VAE has the lowest reconstruction MSE of its dataset.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import ROOT, Step, machine, train_seconds, trained_epochs  # noqa: E402

BUDGETS = ("quick", "cpu", "full")
EPOCHS = {"quick": 1, "cpu": 20, "full": 100}
GENERATED = {"quick": 200, "cpu": 10_000, "full": 10_000}
DATASETS = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


@dataclass
class Family:
    name: str
    label: str
    overrides: list[str]
    samplers: tuple[str, ...]
    reference: str
    gaussian: bool = False  # the ranking target applies (GMM or MAF beats the prior)


VQ = ["model.latent=vq", "model.objective=vq", "model.latent_dim=64", "model.code_dim=4", "model.codebook_size=64"]
FAMILIES = [
    Family("vae", "VAE", [], ("prior", "gmm", "maf"), "Kingma & Welling 2014", gaussian=True),
    Family("vamp", "VAE, VampPrior (K = 50)", ["model.prior=vamp", "model.prior_components=50"], ("prior", "gmm", "maf"),
           "Tomczak & Welling 2018", gaussian=True),
    Family("rae-l2", "RAE-L2", ["model.objective=rae", "model.rae_reg=l2"], ("gmm", "maf"), "Ghosh et al. 2020"),
    Family("rae-gp", "RAE-GP", ["model.objective=rae", "model.rae_reg=gp"], ("gmm", "maf"), "Ghosh et al. 2020"),
    Family("wae", "WAE-MMD (IMQ)", ["model.objective=mmd", "model.posterior=delta"], ("prior", "gmm"), "Tolstikhin et al. 2018"),
    Family("vq", "VQ-VAE (4x4 codes, K = 64)", VQ, ("vq-prior",), "van den Oord et al. 2017"),
]
ROWS = [(f"{'fashion-' if ds == 'fashion-mnist' else 'mnist-'}{f.name}", ds, f) for ds in DATASETS for f in FAMILIES]


def code_bits(ev: dict, fam: Family) -> str:
    """Bits of the code: P log2 K for the VQ-VAE; '-' for a continuous latent (32-bit floats, not comparable)."""
    if fam.name != "vq":
        return "-"
    over = dict(o.split("=", 1) for o in fam.overrides)
    positions = int(over["model.latent_dim"]) // int(over["model.code_dim"])
    return f"{positions * math.log2(int(over['model.codebook_size'])):.0f}"


def feature_net(dataset: str, args, log) -> str | None:
    """The quick budget's feature network (1 epoch on 2,000 images); None: evaluate's cached one."""
    if args.budget != "quick":
        return None
    out = args.out / f"features-{dataset}"
    if not (out / "meta.json").is_file():
        Step(out, args.budget, args, log).vaelab("features", "train", dataset, "--epochs", "1", "--limit", "2000", "--out", str(out))
    return str(out)


def run_row(name: str, dataset: str, fam: Family, args, log) -> dict:
    run_dir = args.out / name
    epochs = args.epochs or EPOCHS[args.budget]
    step = Step(run_dir, args.budget, args, log)
    extra = [f"data.source={dataset}", f"name={name}", *fam.overrides]
    if args.budget == "quick":
        extra.append("data.limit=1000")
    have = trained_epochs(run_dir) if run_dir.is_dir() else 0
    if have == 0:
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        step.vaelab("train", str(ROOT / "configs" / "gen-conv.yaml"), *extra, f"train.epochs={epochs}", "--run-dir", str(run_dir), "-q")
    elif have < epochs:
        step.vaelab("train", "--resume", str(run_dir), f"train.epochs={epochs}", "-q")
    if "vq-prior" in fam.samplers:
        step.vaelab("train-prior", str(run_dir), "--epochs", "1" if args.budget == "quick" else "30")
    fx = feature_net(dataset, args, log)
    opts = ["--nll-samples", "1" if args.budget == "quick" else "100", "--max-generated", str(GENERATED[args.budget])]
    opts += ["--features", fx] if fx else []
    opts += ["--inception", str(args.inception)] if args.inception else []
    opts += ["--sampler", "maf"] if "maf" in fam.samplers else []
    ev = step.evaluate(*opts)
    fid = ev["fid"]
    rows = {}
    for s in fam.samplers:
        key = "prior" if s in ("prior", "vq-prior") else s  # a VQ run's 'prior' column is its code prior
        rows[s] = {"fid": fid[key], "precision": fid["precision"][key], "recall": fid["recall"][key]}
    rq = ev["recon_quality"]
    return {"samplers": rows, "mse": rq["mse"], "ssim": rq["ssim"], "code_bits": code_bits(ev, fam), "epochs": epochs,
            "train_minutes": train_seconds(run_dir) / 60, "feature_net": fid["feature_net"].get("name"),
            "fid_recon": fid["recon"], "vq_bound": (ev["nll"].get("vq_bound") or {}).get("nll")}


def judge(results: dict) -> dict[str, bool | None]:
    """The issue's three targets, from the measured rows (None: not measured)."""
    out: dict[str, bool | None] = {}
    ranks = []
    for name, _, fam in ROWS:
        r = results.get(name) or {}
        s = r.get("samplers")
        if fam.gaussian and s and "prior" in s:
            ranks.append(min(s[k]["fid"] for k in ("gmm", "maf") if k in s) < s["prior"]["fid"])
    out["ex-post beats the prior (every Gaussian family)"] = all(ranks) if ranks else None
    mnist = {n: results[n] for n, ds, _ in ROWS if ds == "mnist" and "samplers" in results.get(n, {})}
    ref = mnist.get("mnist-vae", {}).get("samplers", {}).get("gmm")
    if ref and mnist:
        best = min(v["fid"] for r in mnist.values() for v in r["samplers"].values())
        out["best MNIST FID <= 0.7 x VAE + GMM"] = best <= 0.7 * ref["fid"]
    else:
        out["best MNIST FID <= 0.7 x VAE + GMM"] = None
    for ds in DATASETS:
        rows = {n: results[n] for n, d, _ in ROWS if d == ds and "mse" in results.get(n, {})}
        vq = next((n for n in rows if n.endswith("-vq")), None)
        out[f"VQ-VAE lowest MSE ({DATASETS[ds]})"] = None if vq is None else rows[vq]["mse"] <= min(r["mse"] for r in rows.values())
    return out


def table(results: dict) -> str:
    head = "| data | family | sampler | FID | precision | recall | recon MSE | SSIM | code bits | epochs | train time | reference |"
    lines = [head, "|" + "---|" * 12]
    for name, ds, fam in ROWS:
        r = results.get(name)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {DATASETS[ds]} | {fam.label} | | error: {r['error']} | | | | | | | | {fam.reference} |")
            continue
        for s, v in r["samplers"].items():
            lines.append(
                f"| {DATASETS[ds]} | {fam.label} | {s} | {v['fid']:.2f} | {v['precision']:.3f} | {v['recall']:.3f} "
                f"| {r['mse']:.5f} | {r['ssim']:.4f} | {r['code_bits']} | {r['epochs']} | {r['train_minutes']:.1f} min | {fam.reference} |"
            )
    lines.append("")
    for target, met in judge(results).items():
        lines.append(f"- {target}: {({True: 'met', False: '**not met**', None: 'not measured'})[met]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=BUDGETS, default="cpu")
    parser.add_argument("--only", help="comma-separated rows (see --list)")
    parser.add_argument("--out", type=Path, help="where the runs go (default runs/generators/<budget>)")
    parser.add_argument("--epochs", type=int, help="override every row's epochs")
    parser.add_argument("--inception", type=Path, help="Inception-v3 weights file: FID with Inception features too")
    parser.add_argument("--no-measure", action="store_true", help="print the last measured table only")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, ds, fam in ROWS:
            print(f"{name:18s} {ds:14s} {' '.join(fam.overrides) or '(the base config)'}  samplers {','.join(fam.samplers)}")
        return
    names = [n for n, _, _ in ROWS]
    chosen = [r for r in ROWS if r[1] == "mnist"] if args.budget == "quick" else ROWS
    if args.only:
        want = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(want) - set(names))
        if unknown:
            parser.error(f"unknown row(s) {', '.join(unknown)}; see --list")
        chosen = [r for r in ROWS if r[0] in want]
    args.out = (args.out or ROOT / "runs" / "generators" / args.budget).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if not args.no_measure:
        for name, ds, fam in chosen:
            log(f"{name}: configs/gen-conv.yaml {' '.join(fam.overrides)}")
            entry = {"budget": args.budget, "machine": machine(), "date": date.today().isoformat()}
            try:
                entry.update(run_row(name, ds, fam, args, log))
            except Exception as e:  # one failed row still leaves the others
                entry["error"] = str(e)
                log(f"{name} failed: {e}")
            results = json.loads(results_path.read_text()) if results_path.is_file() else {}
            results[name] = entry
            tmp = results_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(results, indent=2))
            os.replace(tmp, results_path)
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    print(table(results))


if __name__ == "__main__":
    main()
