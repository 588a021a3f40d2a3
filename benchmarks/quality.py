"""Beat the published numbers: run each workflow's recipe and print one table (docs/results.md).

Every recipe is what a user would type: `vaelab train configs/<recipe>.yaml`, then `vaelab evaluate` and/or
`vaelab classify` on the run, reading the numbers back from the files those commands write
(RUN/eval/test.json, RUN/classify/<method>.json). Nothing here computes a metric of its own except the
entropy floor of the Fashion-MNIST grey-level targets, the anchor of the BCE recipes.

    VAELAB_DATA=../shared/datasets python benchmarks/quality.py                  # every recipe, CPU budget
    python benchmarks/quality.py --budget full                                   # the epochs meant for a GPU
    python benchmarks/quality.py --only mnist148,mnist100 --budget quick         # a smoke run (tiny data)
    python benchmarks/quality.py --list

Runs go to ``--out`` (default runs/quality/<budget>/). A recipe whose run already has its epochs is not
trained again, and one that stopped part-way resumes (`vaelab train --resume`), so the script can be
stopped and started; measurements are redone from the checkpoints each time (``--no-measure`` prints the
table of the last measurements kept in ``results.json``). Budgets: ``quick`` (1-2 epochs on 2,000 images per
split: checks the plumbing, not the numbers), ``cpu`` (what a 2-core machine trains in a few hours), ``full``
(the long schedules, for a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from vaelab.run import read_metrics

ROOT = Path(__file__).resolve().parent.parent
BUDGETS = ("quick", "cpu", "full")


# ---------------------------------------------------------------------------------------------------------
# running the CLI


class Step:
    """The context a recipe's measure function gets: its run dir and the way to call `vaelab`."""

    def __init__(self, run_dir: Path, budget: str, args, log):
        self.run_dir, self.budget, self.args, self.log = run_dir, budget, args, log

    def vaelab(self, *argv: str) -> None:
        cmd = [sys.executable, "-m", "vaelab", *argv]
        self.log(f"$ vaelab {shlex.join(argv)}")
        done = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            raise RuntimeError(f"`vaelab {shlex.join(argv)}` failed ({done.returncode}): " + " | ".join(tail))

    def json(self, rel: str) -> dict:
        return json.loads((self.run_dir / rel).read_text())

    def eval_file(self) -> str:
        """eval/test.json, or eval/val.json for data without a test split (what `vaelab evaluate` chose)."""
        return "eval/test.json" if (self.run_dir / "eval" / "test.json").is_file() else "eval/val.json"

    def k(self, n: int) -> str:
        """Importance samples for the NLL: n, or 1 in the quick budget (which checks plumbing, not numbers)."""
        return "1" if self.budget == "quick" else str(n)

    def evaluate(self, *extra: str) -> dict:
        for old in ("test", "val"):  # a stale file from an earlier measurement must not be read back
            (self.run_dir / "eval" / f"{old}.json").unlink(missing_ok=True)
        self.vaelab("evaluate", str(self.run_dir), *extra)
        return self.json(self.eval_file())

    def classify(self, method: str, *extra: str) -> dict:
        self.vaelab("classify", str(self.run_dir), "--method", method, "--name", method, *extra)  # -p would name it
        return self.json(f"classify/{method}.json")


@dataclass
class Row:
    value: str  # vaelab's number(s), as printed
    met: bool | None  # None: no target to meet (a recipe that only has to work)
    detail: dict = field(default_factory=dict)


@dataclass
class Recipe:
    name: str
    workflow: str
    anchor: str
    target: str
    config: str  # configs/<config>.yaml
    epochs: dict[str, int]  # per budget
    measure: Callable[[Step], Row]
    overrides: list[str] = field(default_factory=list)
    data_files: Callable[[Path], list[str]] | None = None  # extra overrides that need prepared files
    resume_last_epoch: bool = False  # train all but the last epoch, then `vaelab train --resume` for it


# ---------------------------------------------------------------------------------------------------------
# anchors computed from the data


def fashion_entropy_floor() -> float:
    """Mean over the Fashion-MNIST test images of sum_pixels H(x), H(p) = -p ln p - (1-p) ln(1-p): the lowest
    BCE any model can reach on grey-level targets (the seed's loss is BCE, so its 'recon' never goes below)."""
    import numpy as np

    from vaelab.data import load

    x = load("fashion-mnist", val_fraction=0.0).split("test").images.numpy().astype(np.float64) / 255.0
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(x > 0, x * np.log(x), 0.0) + np.where(x < 1, (1 - x) * np.log(1 - x), 0.0))
    return float(h.reshape(len(x), -1).sum(1).mean())


_FLOOR: list[float] = []


def floor() -> float:
    if not _FLOOR:
        _FLOOR.append(fashion_entropy_floor())
    return _FLOOR[0]


# ---------------------------------------------------------------------------------------------------------
# what each recipe measures


def fashion_elbo(limit: float) -> Callable[[Step], Row]:
    def measure(step: Step) -> Row:
        ev = step.evaluate("--no-fid", "--nll-samples", step.k(100))
        loss = ev["loss"]
        total = loss["recon"] + loss["kl"]  # beta=1 ELBO, BCE on grey levels, per image (the seed's quantity)
        gap = total - floor()
        return Row(
            f"{total:.2f} ({loss['recon']:.2f} + {loss['kl']:.2f}); {gap:.1f} above the floor",
            total <= limit,
            {"elbo": total, "recon": loss["recon"], "kl": loss["kl"], "floor": floor(), "nll_k100": ev["nll"]["nll"]},
        )

    return measure


def mnist148(step: Step) -> Row:
    ev = step.evaluate("--no-fid", "--nll-samples", step.k(10))
    ssim, box7 = ev["recon_quality"]["ssim"], ev["recon_quality"]["ssim_box7"]
    files = step.args.mnist148
    seeded = ("--labelled", f"npz:{files}/val.npz", "--test", f"npz:{files}/test.npz")
    one = step.classify("gmm", *seeded)  # the seed's three groups, one per digit, reported next to it
    # the recipe's: three components per digit, as the ReLU model's digit clusters are curved and one
    # Gaussian each drifts in EM; it runs last, so RUN/classify/gmm.json is this one
    gmm = step.classify("gmm", *seeded, "-p", "n_components_per_class=3")
    f1 = gmm["f1_macro"]
    return Row(
        f"SSIM {ssim:.3f} (Gaussian 11x11), {box7:.3f} (7x7 box, the seed's scale); GMM macro F1 {f1:.4f} "
        f"(3 components per digit; {one['f1_macro']:.4f} with one)",
        ssim >= 0.80 and f1 >= 0.97,
        {"ssim": ssim, "ssim_box7": box7, "mse": ev["recon_quality"]["mse"], "f1_macro": f1, "f1_micro": gmm["f1_micro"],
         "accuracy": gmm["accuracy"], "f1_macro_one_component": one["f1_macro"], "ssim_met": ssim >= 0.80, "f1_met": f1 >= 0.97},
    )


def mnist100(step: Step) -> Row:
    """The recipe's number is label spreading (a k-NN graph over all 60,000 codes); the GMM, the MLP head and
    k-NN on the 100 labelled codes alone are reported next to it."""
    res = {}
    for method, params in (("spread", []), ("gmm", ["-p", "n_components_per_class=3"]), ("mlp", []), ("knn", [])):
        res[method] = step.classify(method, "--labels-per-class", "10", *params)["accuracy"]
    text = ", ".join(f"{m} {a:.1%}" for m, a in res.items() if m != "spread")
    return Row(f"{res['spread']:.1%} label spreading ({text})", res["spread"] >= 0.92, {"accuracy": res})


def mnist_nll(limit: float | None) -> Callable[[Step], Row]:
    """The IWAE paper's protocol: k = 1000 importance samples per dynamically binarized test image."""

    def measure(step: Step) -> Row:
        k = step.k(1000)
        ev = step.evaluate("--no-fid", "--binarized", "--nll-samples", k)
        nll = ev["nll"]["nll_binarized"]
        return Row(
            f"{nll:.2f} nats (k={k}; ELBO {ev['nll']['elbo_binarized']:.2f})",
            None if limit is None else nll <= limit,
            {"nll_binarized": nll, "elbo_binarized": ev["nll"]["elbo_binarized"], "k": int(k)},
        )

    return measure


def cvae(step: Step) -> Row:
    """Two samplers of z for the same decoder: the model's prior, and a Gaussian mixture fitted per class to
    the training latents (ex-post density estimation, Ghosh et al. 2020); the better one is the recipe's."""
    ev = step.evaluate("--nll-samples", step.k(10))
    ca = ev["conditional_accuracy"]
    samplers = {"prior": ca}
    if ca.get("gmm"):
        samplers["per-class GMM"] = ca["gmm"]
    best = max(samplers, key=lambda s: samplers[s]["accuracy"])
    worst = min(samplers[best]["per_class"].items(), key=lambda kv: kv[1])
    others = ", ".join(f"{s} {v['accuracy']:.1%}" for s, v in samplers.items() if s != best)
    acc = samplers[best]["accuracy"]
    return Row(
        f"{acc:.1%} with z from the {best} (worst class {worst[0]} {worst[1]:.1%})" + (f"; {others}" if others else ""),
        acc >= 0.90,
        {"conditional_accuracy": ca, "sampler": best},
    )


def gmm_fid(step: Step) -> Row:
    ev = step.evaluate("--nll-samples", step.k(10))
    fid = ev["fid"]
    return Row(
        f"FID prior {fid['prior']:.2f}, GMM {fid['gmm']:.2f} (reconstructions {fid['recon']:.2f})",
        fid["gmm"] < fid["prior"],
        {"fid": {k: fid.get(k) for k in ("prior", "gmm", "recon", "feature_net", "n_generated")}},
    )


def photos(step: Step) -> Row:
    head = step.classify("mlp", "--labels-per-class", "all")
    ev = step.evaluate("--no-fid", "--nll-samples", step.k(10))
    return Row(
        f"MLP head accuracy {head['accuracy']:.1%}, macro F1 {head['f1_macro']:.3f}; SSIM {ev['recon_quality']['ssim']:.3f}",
        None,
        {"accuracy": head["accuracy"], "f1_macro": head["f1_macro"], "f1_micro": head["f1_micro"],
         "ssim": ev["recon_quality"]["ssim"], "psnr": ev["recon_quality"]["psnr"]},
    )


def landscape(step: Step) -> Row:
    """Trained for all but one epoch by the runner; resume for the last one and check the per-epoch samples."""
    rows = read_metrics(step.run_dir)
    epochs = [r["epoch"] for r in rows]
    samples = sorted(int(p.stem.rsplit("_", 1)[1]) for p in (step.run_dir / "images").glob("samples_epoch_*.png"))
    ok = epochs == list(range(1, len(epochs) + 1)) and samples == epochs
    return Row(
        f"{len(epochs)} epochs (resumed at {len(epochs) - 1}), samples for epochs "
        f"{samples[0]}..{samples[-1]}, val -ELBO {rows[-1]['val/elbo']:.0f}",
        ok,
        {"epochs": epochs, "sample_epochs": samples, "val_elbo": rows[-1]["val/elbo"]},
    )


def mnist148_files(out: Path) -> list[str]:
    d = out
    return [f"data.source=npz:{d}/train.npz", f"data.val=npz:{d}/val.npz", f"data.test=npz:{d}/test.npz"]


RECIPES = [
    Recipe("fashion-z2", "Fashion-MNIST, best vaelab VAE at z=2, beta=1 (BCE on grey levels; MLP + autoregressive head)",
           "261.66 (seed 004, MLP)", "<= 245", "fashion-best-z2", {"quick": 1, "cpu": 30, "full": 300},
           fashion_elbo(245.0)),
    Recipe("fashion-z10", "Fashion-MNIST, best vaelab VAE at z=10, beta=1 (MLP + autoregressive head)", "241.50 (seed 004, MLP)", "<= 228",
           "fashion-best-z10", {"quick": 1, "cpu": 30, "full": 300}, fashion_elbo(228.0)),
    Recipe("mnist148", "MNIST digits 1/4/8 from NumPy arrays, z=2: test SSIM; GMM seeded from val.npz",
           "SSIM 0.694 (seed 001)", "SSIM >= 0.80, macro F1 >= 0.97", "mnist-148-best", {"quick": 1, "cpu": 150, "full": 300},
           mnist148, data_files=lambda out: mnist148_files(out)),
    Recipe("mnist100", "MNIST, 100 labels (10 per class) from VAE latents", "88.2% (M1+TSVM, Kingma et al. 2014)",
           ">= 92%", "mnist-100-labels", {"quick": 1, "cpu": 20, "full": 100}, mnist100),
    Recipe("nll-mlp", "MNIST NLL, one-stochastic-layer MLP VAE, dynamic binarization, IS k=1000",
           "86.76 (IWAE paper, VAE k=1)", "<= 86", "mnist-nll-mlp", {"quick": 1, "cpu": 100, "full": 1000},
           mnist_nll(86.0)),
    Recipe("nll-conv", "MNIST NLL, conv VAE, same protocol", "86.76 (IWAE paper, MLP)", "reported",
           "mnist-nll-conv", {"quick": 1, "cpu": 100, "full": 300}, mnist_nll(None)),
    Recipe("cvae", "Fashion-MNIST conditional VAE: class-conditional samples judged by the feature classifier",
           "seed 004: a per-class grid only", ">= 90%", "fashion-cvae-best", {"quick": 1, "cpu": 100, "full": 300}, cvae),
    Recipe("gmm-fid", "Fashion-MNIST FID of samples: prior vs ex-post GMM sampler (z=10, factorized decoder)",
           "Ghosh et al. 2020: GMM improves FID", "GMM < prior", "fashion-wide-z10", {"quick": 1, "cpu": 30, "full": 300},
           gmm_fid),
    Recipe("photos-128", "photo folder at 128 px, latent 128, then the MLP head on latent samples",
           "seed 000: accuracy/F1 only", "a working recipe", "photos-128", {"quick": 1, "cpu": 20, "full": 250}, photos),
    Recipe("landscape-256", "photo folder at 256 px, BCE + beta, samples each epoch, stop and resume",
           "seed 003: none", "trains, resumes, samples each epoch", "landscape-256", {"quick": 2, "cpu": 6, "full": 50},
           landscape, resume_last_epoch=True),
]


# ---------------------------------------------------------------------------------------------------------
# the runner


def trained_epochs(run_dir: Path) -> int:
    return max((r["epoch"] for r in read_metrics(run_dir)), default=0)


def train(recipe: Recipe, run_dir: Path, epochs: int, args, log) -> None:
    """Train (or finish training) the recipe's run."""
    step = Step(run_dir, args.budget, args, log)
    extra = list(recipe.overrides) + (recipe.data_files(args.mnist148) if recipe.data_files else [])
    if args.budget == "quick":
        extra.append("data.limit=2000")
    have = trained_epochs(run_dir)
    if recipe.resume_last_epoch and have < epochs:
        if have < epochs - 1:
            _train_cmd(step, recipe, run_dir, epochs - 1, extra, have)
        step.vaelab("train", "--resume", str(run_dir), f"train.epochs={epochs}", "-q")
    elif have < epochs:
        _train_cmd(step, recipe, run_dir, epochs, extra, have)


def _train_cmd(step: Step, recipe: Recipe, run_dir: Path, epochs: int, extra: list[str], have: int) -> None:
    if have == 0:
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)  # a start that never finished an epoch
        step.vaelab("train", str(ROOT / "configs" / f"{recipe.config}.yaml"), *extra, f"train.epochs={epochs}",
                    "--run-dir", str(run_dir), "-q")
    else:
        step.vaelab("train", "--resume", str(run_dir), f"train.epochs={epochs}", "-q")


def train_seconds(run_dir: Path) -> float:
    rows = read_metrics(run_dir)
    return float(rows[-1].get("time", 0.0)) if rows else 0.0


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:  # Linux: the CPU's marketing name, e.g. "AMD EPYC 7B13"
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} thread(s)"


def table(results: dict) -> str:
    head = "| workflow | anchor | vaelab | target | met | epochs | train time | machine | measured |"
    lines = [head, "|" + "---|" * 9]
    for r in results.values():
        met = {True: "yes", False: "**no**", None: "works"}[r["met"]] if "error" not in r else "error"
        value = r.get("value") or r.get("error", "")
        lines.append(
            f"| {r['workflow']} | {r['anchor']} | {value} | {r['target']} | {met} | {r.get('epochs', '')} "
            f"| {r.get('train_minutes', 0):.1f} min | {r.get('machine', '')} | {r.get('date', '')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=BUDGETS, default="cpu")
    parser.add_argument("--only", help="comma-separated recipe names (see --list)")
    parser.add_argument("--out", type=Path, help="where the runs go (default runs/quality/<budget>)")
    parser.add_argument("--epochs", type=int, help="override every recipe's epochs")
    parser.add_argument("--no-measure", action="store_true", help="print the last measured table only")
    parser.add_argument("--list", action="store_true", help="list the recipes and exit")
    args = parser.parse_args()

    if args.list:
        for r in RECIPES:
            print(f"{r.name:14s} configs/{r.config}.yaml  epochs {r.epochs}  target {r.target}")
        return
    chosen = RECIPES
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(names) - {r.name for r in RECIPES})
        if unknown:
            parser.error(f"unknown recipe(s) {', '.join(unknown)}; see --list")
        chosen = [r for r in RECIPES if r.name in names]
    out = (args.out or ROOT / "runs" / "quality" / args.budget).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    if os.environ.get("VAELAB_DATA") is None:
        print("note: VAELAB_DATA is not set; datasets are looked up in the user cache", file=sys.stderr)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    if not args.no_measure:
        args.mnist148 = out / "mnist148-npz"
        if any(r.data_files for r in chosen) and not (args.mnist148 / "test.npz").is_file():
            subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_mnist148_npz.py"), str(args.mnist148)], check=True)
        for recipe in chosen:
            epochs = args.epochs or recipe.epochs[args.budget]
            run_dir = out / recipe.config
            log(f"{recipe.name}: configs/{recipe.config}.yaml, {epochs} epochs -> {run_dir}")
            entry = {"workflow": recipe.workflow, "anchor": recipe.anchor, "target": recipe.target,
                     "config": f"configs/{recipe.config}.yaml", "budget": args.budget, "epochs": epochs,
                     "machine": machine(), "date": date.today().isoformat()}
            try:
                train(recipe, run_dir, epochs, args, log)
                t = time.perf_counter()
                row = recipe.measure(Step(run_dir, args.budget, args, log))
                entry.update(value=row.value, met=row.met, detail=row.detail,
                             train_minutes=train_seconds(run_dir) / 60, measure_seconds=time.perf_counter() - t)
            except Exception as e:  # one failed recipe still leaves the others' rows
                entry.update(error=str(e), met=False)
                log(f"{recipe.name} failed: {e}")
            # merge into the file as it is now: another quality.py on other recipes may have written it
            results = json.loads(results_path.read_text()) if results_path.is_file() else {}
            results[recipe.name] = entry
            tmp = results_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(results, indent=2))
            os.replace(tmp, results_path)
            log(f"{recipe.name}: {entry.get('value', entry.get('error'))}")
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    order = [r.name for r in RECIPES if r.name in results]
    print(table({n: results[n] for n in order}))


if __name__ == "__main__":
    main()
