"""The dSprites disentanglement study at a fixed budget: one table of BetaVAE, FactorVAE, MIG, SAP and DCI per
model (mean +- std over seeds), next to the ranges Locatello et al. 2019 report on dSprites
(docs/disentanglement.md).

The models and their settings are configs/dsprites-study.yaml's variants (VAE, beta-VAE 4 / 16, beta-TCVAE 6,
FactorVAE 35, DIP-VAE-II), built by the same `vaelab.sweep` plan as ``vaelab sweep configs/dsprites-study.yaml``;
each trial is trained with `vaelab.train.fit` and scored with `evaluate.disentangle_run.disentanglement_of_run`
(the same function as ``vaelab evaluate RUN --disentanglement``).

    python benchmarks/disentanglement.py --budget quick      # plumbing check, about a minute
    OMP_NUM_THREADS=1 python benchmarks/disentanglement.py   # CPU budget: about 20 minutes on one thread
    python benchmarks/disentanglement.py --budget full       # the study file as written (GPU: hours)

Budgets: ``quick`` (2 models, 1 seed, 1 epoch on 300 images, metrics at 1% of disentanglement_lib's sample
sizes: checks the plumbing, not the numbers), ``cpu`` (6 models x 2 seeds on the 18,432 images of shape x
scale x posx x posy, a 512-256 MLP, 2 epochs, metrics at 5%), ``full`` (the study file: 3 seeds, 30 epochs,
metrics at 10%). Runs go to ``--out`` (default runs/disentanglement/<budget>/); a trained trial is reused.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "configs" / "dsprites-study.yaml"
BUDGETS = ("quick", "cpu", "full")
# (overrides of the study file, seeds, metric sample scale, variants kept (None: all))
SETTINGS = {
    "quick": (["data.limit=300", "train.epochs=1", "model.hidden=[64]", "model.disc_hidden=[32]"], 1, 0.01, ["vae", "beta-tcvae-6"]),
    "cpu": (["train.epochs=2", "model.hidden=[512,256]", "model.disc_hidden=[256,256]"], 2, 0.05, None),
    "full": ([], 3, 0.1, None),
}
METRICS = [("beta_vae", "BetaVAE"), ("factor_vae", "FactorVAE"), ("mig", "MIG"), ("sap", "SAP"), ("dci_d", "DCI D"),
           ("dci_c", "DCI C"), ("dci_i", "DCI I")]
# Locatello et al. 2019 ("Challenging common assumptions ...", ICML), dSprites, all six methods and their
# hyperparameter sweeps together: the span of the score distributions of their Figure 13 (appendix, violin
# plots of each metric per method and data set), read off the plot to about 0.05, so approximate.
PUBLISHED = {"beta_vae": (0.55, 0.90), "factor_vae": (0.45, 0.85), "mig": (0.0, 0.40), "sap": (0.0, 0.10), "dci_d": (0.0, 0.65)}


def plan_for(budget: str):
    from vaelab.sweep.grid import build_plan

    overrides, seeds, _, keep = SETTINGS[budget]
    plan = build_plan(STUDY, overrides, seeds=seeds)
    trials = [t for t in plan.trials() if keep is None or t.variant in keep]
    return plan, trials


def run_trial(plan, spec, out: Path, scale: float) -> dict:
    """Train (or reuse) one trial and score it; the result is cached in RUN/disentanglement.json."""
    from vaelab.evaluate.disentangle_run import disentanglement_of_run
    from vaelab.run import read_metrics
    from vaelab.train import fit

    run_dir = out / spec.name
    cached = run_dir / "disentanglement.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    cfg = plan.trial_config(spec.overrides, spec.name, out)
    t0 = time.perf_counter()
    done = run_dir.is_dir() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    if not done:
        fit(cfg, run_dir=run_dir, quiet=True)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    d = disentanglement_of_run(run_dir, scale=scale, pool=20_000)
    last = read_metrics(run_dir)[-1]
    result = {"variant": spec.variant, "seed": spec.seed, **d["headline"], "val_recon": last.get("val/recon"),
              "val_kl": last.get("val/kl"), "train_s": train_s, "metrics_s": time.perf_counter() - t1, "pool": d["pool"]}
    cached.write_text(json.dumps(result, indent=1))
    return result


def table(results: list[dict]) -> str:
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["variant"], []).append(r)
    head = "| model | seeds | " + " | ".join(h for _, h in METRICS) + " | val recon | val KL |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for variant, rows in by.items():
        cells = []
        for key, _ in [*METRICS, ("val_recon", ""), ("val_kl", "")]:
            v = np.array([r[key] for r in rows if r.get(key) is not None], dtype=float)
            digits = 1 if key.startswith("val") else 3
            cells.append("" if not len(v) else f"{v.mean():.{digits}f}" + (f" ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else ""))
        lines.append(f"| {variant} | {len(rows)} | " + " | ".join(cells) + " |")
    pub = [f"{PUBLISHED[k][0]:.2f}-{PUBLISHED[k][1]:.2f}" if k in PUBLISHED else "" for k, _ in METRICS]
    lines.append("| Locatello et al. 2019, dSprites (approx. range) | | " + " | ".join(pub) + " | | |")
    return "\n".join(lines)


def verdicts(results: list[dict]) -> list[str]:
    """The issue's targets: beta-TCVAE and FactorVAE above the plain VAE in mean MIG; inside the ranges."""
    mean = {}
    for r in results:
        mean.setdefault(r["variant"], []).append(r)
    mig = {v: float(np.mean([r["mig"] for r in rows])) for v, rows in mean.items()}
    out = []
    for v in ("beta-tcvae-6", "factor-vae-35"):
        if v in mig and "vae" in mig:
            out.append(f"MIG {v} {mig[v]:.3f} vs vae {mig['vae']:.3f}: {'higher' if mig[v] > mig['vae'] else 'NOT higher'}")
    for key, (lo, hi) in PUBLISHED.items():
        outside = [v for v, rows in mean.items() if not lo - 1e-9 <= float(np.mean([r[key] for r in rows])) <= hi + 1e-9]
        out.append(f"{key}: " + ("every model's mean inside the published range" if not outside else f"outside the range: {', '.join(outside)}"))
    return out


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", choices=BUDGETS, default="cpu")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--list", action="store_true", help="print the trials and stop")
    args = p.parse_args(argv)
    plan, trials = plan_for(args.budget)
    if args.list:
        for t in trials:
            print(t.name, t.overrides)
        return 0
    out = args.out or ROOT / "runs" / "disentanglement" / args.budget
    scale = SETTINGS[args.budget][2]
    t0 = time.perf_counter()
    from vaelab.train.loop import TrainingInterrupted

    results = []
    old = signal.signal(signal.SIGTERM, _interrupt)  # `timeout` stops it: print the trials done so far
    try:
        for spec in trials:
            r = run_trial(plan, spec, out, scale)
            print(f"{spec.name}: MIG {r['mig']:.3f}, train {r['train_s']:.0f} s, metrics {r['metrics_s']:.0f} s", file=sys.stderr, flush=True)
            results.append(r)
    except (KeyboardInterrupt, TrainingInterrupted):  # (a signal inside training saves its checkpoint first)
        print(f"stopped after {len(results)} of {len(trials)} trials", file=sys.stderr)
        if not results:
            return 1
    finally:
        signal.signal(signal.SIGTERM, old)
    print(f"dSprites ({results[0]['pool']} images scored per trial), budget {args.budget}, metrics at {scale:g} x "
          f"disentanglement_lib's sample sizes, {date.today()}, {time.perf_counter() - t0:.0f} s in all, "
          f"{len(results)} of {len(trials)} trials\n")
    print(table(results))
    print()
    for line in verdicts(results):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
