"""Model families against the likelihood records: train and evaluate each family, print one table
(docs/families.md, "The likelihood table").

One protocol: MNIST, dynamically binarized training images (``train.binarize``), the standard test set, NLL
by importance sampling on the binarized test images with k = 5000 and, from the first 1,000 of those samples,
k = 1000, nats. The test set is binarized once, with the draws `vaelab evaluate --binarized` makes, into
OUT/mnist-test-binarized.npz, and each row is scored on it with `vaelab evaluate RUN --data npz:that
--nll-samples 5000 --nll-also 1000` (fields ``nll``, ``nll_at_k``): one pass, where `--binarized` also scores
the grey-level images (a second pass for runs trained on binarized images). Every row is what a user would type: `vaelab train
configs/mnist-fam-<row>.yaml`, `vaelab evaluate`, `vaelab plot RUN curves`; the numbers are read back from
the files those commands write, as benchmarks/quality.py does. The Fashion-MNIST rows add each family to the
quality table's quantity (BCE on grey levels + KL per image, beta = 1) on the fashion-wide-z10 net.

    VAELAB_DATA=../shared/datasets python benchmarks/families.py                 # CPU budget (hours)
    python benchmarks/families.py --budget full                                  # the paper's K = 50, on a GPU
    python benchmarks/families.py --budget quick                                 # plumbing check, minutes
    python benchmarks/families.py --only vae,iaf --list

Budgets: ``quick`` (1 epoch on 1,000 images per split, k = 5 and 2, the MNIST rows unless --only names others:
checks the plumbing, not the numbers),
``cpu`` (each row under about an hour of a 2-core CPU: IWAE with K = 5, compared with the paper's K = 5 row),
``full`` (K = 50 and the long schedules, for a GPU). Runs go to ``--out`` (default runs/families/<budget>/);
a row whose run has its epochs is not trained again, and one that stopped part-way resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import ROOT, Step, fashion_elbo, machine, read_metrics, train_seconds, trained_epochs  # noqa: E402

BUDGETS = ("quick", "cpu", "full")
NLL_K = {"quick": (2, 5), "cpu": (1000, 5000), "full": (1000, 5000)}


@dataclass
class Family:
    name: str
    family: str  # the table's first column
    config: str  # configs/<config>.yaml
    arch: str  # as printed
    paper: str  # the published number(s)
    pythae: str  # pythae's reproduced number, or "-"
    target: float | str | None  # NLL to reach; "iaf": 1 nat below the vae row; None: reported only
    epochs: dict[str, int]
    overrides: dict[str, list[str]] = field(default_factory=dict)  # per budget
    run_name: str | None = None  # the run dir (default: the config's name)
    measure: str = "mnist"  # mnist (NLL protocol) | fashion (the quality table's quantity)


K5 = ["model.iw_samples=5"]  # the CPU budget's K, compared with the paper's K = 5 rows
PIWAE_CPU, PIWAE_FULL = ["model.iw_groups=2", "model.iw_samples=5"], ["model.iw_groups=8", "model.iw_samples=8"]
MLP1 = "MLP 784-200-200-50, tanh"
MLP2 = "MLP 784-200-200-z1(100)-100-100-z2(50), tanh"
FASHION = ("fashion-wide-z10", "MLP 1024-512-256, z = 10")
FAMILIES = [
    Family("vae", "VAE, N(0, I)", "mnist-fam-vae", MLP1, "86.76 (Burda 2016, T.1); 88.56 (Tomczak 2018)", "89.78",
           86.76, {"quick": 1, "cpu": 100, "full": 1000}),
    Family("iwae", "IWAE, K = 50 (CPU: K = 5)", "mnist-fam-iwae-k50", MLP1, "84.78 (Burda 2016; K = 5: 85.54)", "86.82",
           84.78, {"quick": 1, "cpu": 40, "full": 1000}, {"cpu": K5, "quick": K5}),
    # PIWAE on the IWAE row's net and schedule; M = K = 8 as Rainforth 2018 and pythae. A step costs two passes
    # of M x K samples, about 4x the IWAE K = 5 row's at the CPU budget's M = 2, K = 5: a quarter of its epochs
    Family("piwae", "PIWAE, M = K = 8 (CPU: M = 2, K = 5)", "mnist-fam-iwae-k50", MLP1, "84.46 (Rainforth 2018)", "84.58",
           84.46, {"quick": 1, "cpu": 10, "full": 1000},
           {b: ["model.objective=piwae", *mk] for b, mk in (("quick", PIWAE_CPU), ("cpu", PIWAE_CPU), ("full", PIWAE_FULL))},
           run_name="mnist-fam-piwae"),
    Family("vamp", "VampPrior, K = 500", "mnist-fam-vamp", "MLP 784-300-300-40", "85.57 (Tomczak 2018)", "85.79",
           85.57, {"quick": 1, "cpu": 60, "full": 1000}, {"quick": ["model.prior_components=50"]}),
    Family("2layer", "VAE, 2 stochastic layers", "mnist-fam-2layer", MLP2, "85.33 (Burda 2016)", "-",
           85.33, {"quick": 1, "cpu": 100, "full": 1000}),
    Family("2layer-iwae", "IWAE, 2 layers, K = 50 (CPU: K = 5)", "mnist-fam-2layer-iwae-k50", MLP2,
           "82.90 (Burda 2016; K = 5: 83.89)", "-", 82.90, {"quick": 1, "cpu": 40, "full": 1000}, {"cpu": K5, "quick": K5}),
    Family("hvae-vamp", "2 layers + VampPrior", "mnist-fam-hvae-vamp", "MLP 784-300-300-z1(40)-300-300-z2(40)",
           "83.19 (Tomczak 2018, HVAE)", "-", 83.19, {"quick": 1, "cpu": 60, "full": 1000},
           {"quick": ["model.prior_components=50"]}),
    Family("iaf", "IAF posterior (2 steps)", "mnist-fam-iaf", MLP1 + " + IAF",
           "79.10 (Kingma 2016, ResNet VAE + IAF; 81.08 diagonal)", "-", "iaf", {"quick": 1, "cpu": 100, "full": 1000}),
] + [
    Family(f"fashion-{n}", f"Fashion-MNIST: {label}", FASHION[0], FASHION[1], "-", "-", None,
           {"quick": 1, "cpu": 30, "full": 300}, {"quick": over, "cpu": over, "full": over}, f"fashion-fam-{n}", "fashion")
    for n, label, over in (
        ("vae", "VAE", []),
        ("iwae", "IWAE, K = 5", ["model.objective=iwae", "model.iw_samples=5"]),
        ("vamp", "VampPrior, K = 500", ["model.prior=vamp", "model.prior_components=500"]),
        ("2layer", "2 stochastic layers", ["model.stochastic_layers=2", "model.layer_dims=[20]"]),
        ("iaf", "IAF posterior", ["model.posterior=iaf", "model.flow_steps=2"]),
    )
]


def curve(run_dir: Path) -> str:
    """The measured trend: validation -ELBO at the middle and the last epoch."""
    rows = [r for r in read_metrics(run_dir) if "val/elbo" in r]
    if len(rows) < 2:
        return ""
    mid, last = rows[(len(rows) - 1) // 2], rows[-1]
    return f"val -ELBO {mid['val/elbo']:.2f} (ep {mid['epoch']}) -> {last['val/elbo']:.2f} (ep {last['epoch']})"


def binarized_test_set(out: Path, limit: int | None = None) -> Path:
    """MNIST's test images binarized once into OUT/mnist-test-binarized.npz (uint8 0/255, with the labels), by
    the draws `vaelab evaluate --binarized` makes (`evaluate.likelihood.binarize`, seed 0 + 1)."""
    path = out / ("mnist-test-binarized.npz" if limit is None else f"mnist-test-binarized-{limit}.npz")
    if path.is_file():
        return path
    import numpy as np
    import torch

    from vaelab.data import load
    from vaelab.evaluate.likelihood import binarize

    test = load("mnist").split("test")
    n = limit or len(test)
    binary = binarize(test.pixels[:n], 0 + 1)  # the same draws as evaluate's batch by batch (checked equal)
    labels = test.labels[:n]
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, x_test=(binary * 255).to(torch.uint8).numpy(), y_test=labels.numpy())
    os.replace(tmp, path)
    return path


def measure_mnist(step: Step, ks: tuple[int, ...]) -> dict:
    """One pass with the largest k on the binarized test set; the smaller k read off its first samples."""
    k = max(ks)
    also = [a for m in sorted(ks) if m < k for a in ("--nll-also", str(m))]
    data = binarized_test_set(step.run_dir.parent, 1000 if step.budget == "quick" else None)
    ev = step.evaluate("--no-fid", "--data", f"npz:{data}", "--nll-samples", str(k), *also)
    nll = {k: ev["nll"]["nll"], **{int(m): v for m, v in (ev["nll"].get("nll_at_k") or {}).items()}}
    elbo = ev["nll"]["elbo"]
    per_layer = ev.get("active_units_per_layer")
    units = " + ".join(map(str, per_layer)) if per_layer else str(ev["active_units"])
    dims = " + ".join(map(str, ev["latent_dims"])) if per_layer else str(ev["latent_dim"])
    return {"nll": {str(k): v for k, v in nll.items()}, "elbo": elbo, "active_units": f"{units} of {dims}",
            "kl_per_layer": ev["loss"].get("kl_per_layer")}


def measure_fashion(step: Step, ks: tuple[int, ...]) -> dict:
    row = fashion_elbo(float("inf"))(step)
    ev = step.json(step.eval_file())
    return {"elbo": row.detail["elbo"], "nll": {step.k(100): row.detail["nll_k100"]}, "detail": row.value,
            "active_units": f"{ev['active_units']} of {ev['latent_dim']}"}


def run_row(fam: Family, args, log) -> dict:
    run_dir = args.out / (fam.run_name or fam.config)
    epochs = args.epochs or fam.epochs[args.budget]
    step = Step(run_dir, args.budget, args, log)
    extra = list(fam.overrides.get(args.budget, []))
    if args.budget == "quick":
        extra.append("data.limit=1000")
    have = trained_epochs(run_dir) if run_dir.is_dir() else 0
    if have == 0:
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)  # a start that never finished an epoch
        name = [f"name={fam.run_name}"] if fam.run_name else []
        step.vaelab("train", str(ROOT / "configs" / f"{fam.config}.yaml"), *extra, *name, f"train.epochs={epochs}",
                    "--run-dir", str(run_dir), "-q")
    elif have < epochs:
        step.vaelab("train", "--resume", str(run_dir), f"train.epochs={epochs}", "-q")
    ks = (100,) if fam.measure == "fashion" else NLL_K[args.budget]
    t = time.perf_counter()
    out = (measure_fashion if fam.measure == "fashion" else measure_mnist)(step, ks)
    step.vaelab("plot", str(run_dir), "curves")  # the learning curve, RUN/figures/curves.png
    out.update(epochs=epochs, train_minutes=train_seconds(run_dir) / 60, trend=curve(run_dir),
               measure_seconds=time.perf_counter() - t, overrides=extra)
    return out


def best_nll(r: dict) -> float | None:
    """The NLL with the most importance samples."""
    nll = r.get("nll") or {}
    return nll[max(nll, key=int)] if nll else None


def judge(fam: Family, r: dict, results: dict) -> bool | None:
    value = best_nll(r)
    if value is None or fam.target is None:
        return None
    if fam.target == "iaf":  # at least 1 nat better than the Gaussian posterior on the same net
        base = best_nll(results.get("vae", {}))
        return None if base is None else value <= base - 1.0
    return value <= float(fam.target)


def table(results: dict) -> str:
    head = ("| family | architecture | epochs | train time | ELBO | NLL k=1000 | NLL k=5000 | active units | paper "
            "| pythae reproduces | met | trend | machine | measured |")
    lines = [head, "|" + "---|" * 14]
    by_name = {f.name: f for f in FAMILIES}
    for name, r in results.items():
        fam = by_name.get(name)
        if fam is None:
            continue
        if "error" in r:
            lines.append(f"| {fam.family} | {fam.arch} | | | | error: {r['error']} | | | {fam.paper} | {fam.pythae} | error | | | |")
            continue
        nll = r.get("nll", {})
        ks = sorted(nll, key=int)
        first = f"{nll[ks[0]]:.2f}" + ("" if ks[0] == "1000" else f" (k={ks[0]})") if ks else ""
        second = f"{nll[ks[1]]:.2f}" + ("" if ks[1] == "5000" else f" (k={ks[1]})") if len(ks) > 1 else "-"
        met = {True: "yes", False: "**no**", None: "reported"}[judge(fam, r, results)]
        lines.append(
            f"| {fam.family} | {fam.arch} | {r.get('epochs', '')} | {r.get('train_minutes', 0):.1f} min "
            f"| {r.get('elbo', float('nan')):.2f} | {first} | {second} | {r.get('active_units', '-')} | {fam.paper} "
            f"| {fam.pythae} | {met} | {r.get('trend', '')} | {r.get('machine', '')} | {r.get('date', '')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=BUDGETS, default="cpu")
    parser.add_argument("--only", help="comma-separated rows (see --list)")
    parser.add_argument("--out", type=Path, help="where the runs go (default runs/families/<budget>)")
    parser.add_argument("--epochs", type=int, help="override every row's epochs")
    parser.add_argument("--no-measure", action="store_true", help="print the last measured table only")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    args = parser.parse_args(argv)
    if args.list:
        for f in FAMILIES:
            print(f"{f.name:16s} configs/{f.config}.yaml  epochs {f.epochs}  target {f.target}")
        return
    chosen = FAMILIES
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(names) - {f.name for f in FAMILIES})
        if unknown:
            parser.error(f"unknown row(s) {', '.join(unknown)}; see --list")
        chosen = [f for f in FAMILIES if f.name in names]
    elif args.budget == "quick":
        chosen = [f for f in FAMILIES if f.measure == "mnist"]
    args.out = (args.out or ROOT / "runs" / "families" / args.budget).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if not args.no_measure:
        for fam in chosen:
            log(f"{fam.name}: configs/{fam.config}.yaml")
            entry = {"config": f"configs/{fam.config}.yaml", "budget": args.budget, "machine": machine(),
                     "date": date.today().isoformat()}
            try:
                entry.update(run_row(fam, args, log))
            except Exception as e:  # one failed row still leaves the others
                entry["error"] = str(e)
                log(f"{fam.name} failed: {e}")
            results = json.loads(results_path.read_text()) if results_path.is_file() else {}
            results[fam.name] = entry
            tmp = results_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(results, indent=2))
            os.replace(tmp, results_path)
            log(f"{fam.name}: NLL {entry.get('nll', entry.get('error'))}")
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    print(table({f.name: results[f.name] for f in FAMILIES if f.name in results}))


if __name__ == "__main__":
    main()
