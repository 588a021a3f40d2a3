"""CPU seconds of vaelab's start-up: `vaelab --help`, `vaelab data info mnist`, and a training run of one step.

Each command runs in a fresh interpreter (`python -m vaelab ...`); its user + system CPU seconds come from
`resource.getrusage(RUSAGE_CHILDREN)` around the child, so other jobs on a shared machine slow the wall clock
but hardly the count. Each row is the best of ``--repeat`` runs. The training row trains one step of a small
MLP on 100 images of the bundled MNIST sample (no image grids, no latent snapshots), so it is the cost of
importing torch and the trainer, reading the sample, building the model and Fabric, and one step.

    VAELAB_DATA=/work/shared/datasets OMP_NUM_THREADS=1 python benchmarks/startup.py --repeat 3

``--src LABEL=DIR`` (repeatable) imports vaelab from a checkout's ``src``, one column each, the rounds
alternating between them (a before/after pair: ``--src before=/tmp/old/src --src after=src``);
``--python`` picks the interpreter. `python -X importtime -m vaelab --help` shows what an import costs.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile

TORCH = ["-c", "import torch"]  # the baseline: issue 26's start-up target counts CPU seconds beyond it
COMMANDS = {
    "python -c 'import torch' (baseline)": TORCH,
    "vaelab --help": ["--help"],
    "vaelab data info mnist": ["data", "info", "mnist"],
    "vaelab train (one step)": [
        "train", "data.source=mnist-sample", "data.limit=100", "train.batch_size=100", "train.epochs=1",
        "model.hidden=[64]", "model.latent_dim=2", "train.images_every=0", "train.save_latents=false",
        "--quiet",
    ],
}


def cpu_seconds(python: str, args: list[str], env: dict, cwd: str) -> tuple[float, float]:
    """(user + system CPU seconds, wall seconds) of one child run."""
    import time

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    argv = [python, *args] if args == TORCH else [python, "-m", "vaelab", *args]
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--src", action="append", default=[], metavar="LABEL=DIR",
                   help="a checkout's src folder to import vaelab from, as a column (repeat to compare)")
    p.add_argument("--only", default=None, help="a substring of the rows to run")
    args = p.parse_args(argv)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MPLBACKEND", "Agg")
    columns = [tuple(s.split("=", 1)) if "=" in s else (s, s) for s in args.src] or [("vaelab", None)]
    rows = {name: cmd for name, cmd in COMMANDS.items() if not args.only or args.only in name}
    best: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):  # rounds alternate the columns, so a busy spell hits all of them
            for label, src in columns:
                run_env = dict(env)
                if src:
                    run_env["PYTHONPATH"] = os.path.abspath(src)
                for name, cmd in rows.items():
                    out = cmd + [f"out_dir={tmp}/runs", f"name={label}-{i}"] if cmd[0] == "train" else cmd
                    cpu, _ = cpu_seconds(args.python, out, run_env, tmp)
                    best[label, name] = min(cpu, best.get((label, name), cpu))
    labels = [label for label, _ in columns]
    print(f"CPU seconds (user + system), best of {args.repeat}")
    print("| command | " + " | ".join(labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for name in rows:
        print(f"| {name} | " + " | ".join(f"{best[label, name]:.2f}" for label in labels) + " |")
    train, torch_row = "vaelab train (one step)", next(iter(COMMANDS))
    if train in rows and torch_row in rows:
        for label in labels:
            beyond = best[label, train] - best[label, torch_row]
            print(f"{label}: training's first step costs {beyond:.2f} CPU s beyond import torch (target: under 3)")


if __name__ == "__main__":
    main()
