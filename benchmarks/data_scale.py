"""Memory and speed of photo folders as they grow: the memory-mapped folder cache (issue 26).

For each size (images x target px) the script first generates synthetic photo-like JPEGs (about 500 x 375
px, 10 class folders; the largest count once, smaller ones as hard links to a part of it), then runs each
step as its own process and samples that process's memory from /proc/PID/status every 20 ms:

- cache build: the first load of ``folder:DIR`` (decode into the memory-mapped cache), images/s;
- ``vaelab data info`` on the cached folder (counts and chunked pixel statistics);
- training (`vaelab.train.fit`): one epoch of a tiny conv VAE from the map, with its validation pass;
  ``--max-images`` caps the images per split with ``data.limit`` (a seeded subset of indices: the whole
  set stays mapped), images/s from the first logged step on;
- ``vaelab evaluate --no-fid`` (ELBO, IWAE NLL, reconstruction metrics) on the val split;
- with ``--ram-max N``, for sizes up to N images, the same training with ``VAELAB_NO_CACHE=1`` (the
  in-RAM path) for the throughput and memory comparison.

Memory is counted the way the OOM killer does: the peak of the process's anonymous memory (RssAnon). The
table also gives ru_maxrss, the peak resident set, which adds file-backed pages: the pages of the map that
were read (the kernel can drop them at any time) and the shared libraries (torch alone maps ~300 MB).

    VAELAB_DATA=... python benchmarks/data_scale.py --sizes 5000x128,20000x128,5000x256 --threads 1

Generated data and caches live under --workdir and are deleted at the end unless --keep is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

CLASSES = 10
SRC_SIZE = (500, 375)


# ---------------------------------------------------------------------------------------------------------
# synthetic photos


def _make_jpeg(args: tuple[str, int]) -> int:
    """One photo-like JPEG: a colour gradient with random ellipses and boxes, a little noise."""
    import numpy as np
    from PIL import Image, ImageDraw

    path, seed = args
    rng = np.random.default_rng(seed)
    w, h = SRC_SIZE
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, w)[None, :, None]
    base = (c0 * (1 - t) + c1 * t).repeat(h, axis=0)
    im = Image.fromarray(base.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(4, 10))):
        x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        box = (x0, y0, x0 + int(rng.integers(30, 200)), y0 + int(rng.integers(30, 200)))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    a = np.asarray(im, dtype=np.int16) + rng.integers(-8, 9, (h, w, 3), dtype=np.int16)
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path, quality=85)
    return os.path.getsize(path)


def generate(folder: Path, n: int, workers: int) -> float:
    """n JPEGs in CLASSES class folders under `folder` (reused when already there); returns seconds."""
    marker = folder / f".done-{n}"
    if marker.exists():
        return 0.0
    t0 = time.perf_counter()
    jobs = []
    for i in range(n):
        sub = folder / f"class{i % CLASSES}"
        sub.mkdir(parents=True, exist_ok=True)
        jobs.append((str(sub / f"img{i:06d}.jpg"), i))
    with ProcessPoolExecutor(workers) as pool:
        sizes = list(pool.map(_make_jpeg, jobs, chunksize=64))
    marker.write_text(str(sum(sizes)))
    return time.perf_counter() - t0


def linked_subset(src: Path, dst: Path, n: int) -> Path:
    """A folder of the first n images of `src` as hard links (no extra disk space)."""
    if dst.exists():
        shutil.rmtree(dst)
    for i in range(n):
        name = f"class{i % CLASSES}/img{i:06d}.jpg"
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        os.link(src / name, dst / name)
    return dst


# ---------------------------------------------------------------------------------------------------------
# measuring a child process


def _status_kb(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def measure(cmd: list[str], env: dict[str, str], log: Path) -> dict:
    """Run `cmd`; its wall time, exit code, peak RssAnon / RssFile / VmRSS (MB) and ru_maxrss (MB)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak: dict[str, int] = {}
        t0 = time.perf_counter()
        usage = None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            for k, v in _status_kb(proc.pid).items():
                peak[k] = max(peak.get(k, 0), v)
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "seconds": time.perf_counter() - t0,
        "rc": proc.returncode,
        "rss_anon_mb": peak.get("RssAnon", 0) / 1024,
        "rss_file_mb": peak.get("RssFile", 0) / 1024,
        "vm_rss_mb": peak.get("VmRSS", 0) / 1024,
        "maxrss_mb": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,  # with the children it waited for (decode workers)
        "log": str(log),
    }


BUILD = """
import resource, sys, time
from vaelab.data import load
t0, c0 = time.perf_counter(), time.process_time()
ds = load(sys.argv[1], image_size=int(sys.argv[2]))
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = time.process_time() - c0 + kids.ru_utime + kids.ru_stime  # this process and its decode workers
print("BUILD", len(ds), time.perf_counter() - t0, cpu, ds.mapped)
"""

# one epoch (with its validation pass and checkpoint); training images/s from the first logged step on
TRAIN = """
import sys, time
from vaelab.config import load_config
from vaelab.train import Callback, default_callbacks, fit

cfg = load_config(None, sys.argv[1:])

class Rate(Callback):
    t0 = None
    def on_train_batch_end(self, ctx, batch, n_batches, loss, kl_weight):
        now = time.perf_counter()
        if self.t0 is None:  # start-up and the first batches excluded
            self.t0, self.b0 = now, batch
        else:
            self.rate = (batch - self.b0) * cfg.train.batch_size / (now - self.t0)

cb = Rate()
fit(cfg, callbacks=default_callbacks(cfg, quiet=True) + [cb])
print("TRAIN", getattr(cb, "rate", float("nan")))
"""


def run_size(n: int, px: int, root: Path, args, results: list) -> None:
    py = sys.executable
    folder = linked_subset(root / "photos", root / f"photos-{n}", n) if n < args.largest else root / "photos"
    cache = root / f"cache-{n}-{px}"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "VAELAB_CACHE": str(cache), "OMP_NUM_THREADS": str(args.threads), "MPLBACKEND": "Agg"}
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    tag = f"{n}x{px}"
    row: dict = {"images": n, "px": px}
    print(f"[{tag}] cache build", flush=True)
    b = measure([py, "-c", BUILD, f"folder:{folder}", str(px)], env, logs / f"{tag}-build.log")
    text = Path(b["log"]).read_text()
    line = [ln for ln in text.splitlines() if ln.startswith("BUILD")]
    if b["rc"] != 0 or not line:
        raise SystemExit(f"cache build failed, see {b['log']}:\n{text[-2000:]}")
    _, count, secs, cpu, mapped = line[-1].split()
    row["build_images_per_s"] = int(count) / float(secs)
    row["build_images_per_cpu_s"] = int(count) / float(cpu)
    row["build"] = b
    row["cache_mb"] = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20
    print(f"[{tag}] data info", flush=True)
    row["info"] = measure([py, "-m", "vaelab", "data", "info", f"folder:{folder}", "--image-size", str(px)], env, logs / f"{tag}-info.log")
    runs = root / f"runs-{tag}"
    shutil.rmtree(runs, ignore_errors=True)

    def train(name: str) -> list[str]:
        return [
            py, "-c", TRAIN, f"data.source=folder:{folder}", f"data.image_size={px}", "data.channels=3",
            "model.arch=conv", "model.conv_channels=[16,32,64]", "model.latent_dim=32", "model.likelihood=gaussian",
            "train.epochs=1", f"train.batch_size={args.batch_size}", "train.images_every=0", "train.save_latents=false",
            "train.log_every=5", f"trainer.threads={args.threads}", f"out_dir={runs}", f"name={name}",
            *([f"data.limit={args.max_images}"] if args.max_images < n else []),
        ]

    print(f"[{tag}] train (map)", flush=True)
    row["train"] = measure(train("map"), env, logs / f"{tag}-train.log")
    row["train_images_per_s"] = _rate(row["train"])
    print(f"[{tag}] evaluate", flush=True)
    row["evaluate"] = measure(
        [py, "-m", "vaelab", "evaluate", str(runs / "map"), "--no-fid", "--nll-samples", str(args.nll_samples),
         "--split", "val"],
        env, logs / f"{tag}-evaluate.log",
    )
    if n <= args.ram_max:
        print(f"[{tag}] train (in RAM)", flush=True)
        ram_env = {**env, "VAELAB_NO_CACHE": "1"}
        row["train_ram"] = measure(train("ram"), ram_env, logs / f"{tag}-train-ram.log")
        row["train_ram_images_per_s"] = _rate(row["train_ram"])
    results.append(row)
    shutil.rmtree(runs, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)


def _rate(m: dict) -> float:
    """Training images/s printed by the TRAIN child."""
    lines = [ln for ln in Path(m["log"]).read_text().splitlines() if ln.startswith("TRAIN")]
    if m["rc"] != 0 or not lines:
        raise SystemExit(f"training failed, see {m['log']}")
    return float(lines[-1].split()[1])


def _mem(m: dict | None) -> str:
    if not m:
        return "-"
    return f"{m['rss_anon_mb']:,.0f} ({m['maxrss_mb']:,.0f})"


def table(results: list[dict]) -> str:
    lines = [
        "| images | px | cache build img/s (per CPU-s) | cache MB | data info MB | train MB | evaluate MB | train img/s (map) | train img/s (RAM) | train MB (RAM) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ram = f"{r['train_ram_images_per_s']:,.0f}" if "train_ram_images_per_s" in r else "-"
        lines.append(
            f"| {r['images']:,} | {r['px']} | {r['build_images_per_s']:,.0f} ({r['build_images_per_cpu_s']:,.0f}) | {r['cache_mb']:,.0f} | {_mem(r['info'])} | "
            f"{_mem(r['train'])} | {_mem(r['evaluate'])} | {r['train_images_per_s']:,.0f} | {ram} | {_mem(r.get('train_ram'))} |"
        )
    lines.append("")
    lines.append("MB: peak RssAnon (anonymous memory, what an OOM killer counts), and in brackets ru_maxrss (adds the")
    lines.append("file-backed pages: the map's pages read, which the kernel can drop, and the shared libraries).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="5000x128,20000x128,5000x256", help="comma list of IMAGESxPX")
    p.add_argument("--threads", type=int, default=1, help="trainer.threads and OMP_NUM_THREADS of every step")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes generating the JPEGs")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-images", type=int, default=3000, help="at most this many images per split (data.limit)")
    p.add_argument("--nll-samples", type=int, default=2, help="k of evaluate's IWAE NLL")
    p.add_argument("--ram-max", type=int, default=5000, help="also train in RAM for sizes up to this many images")
    p.add_argument("--workdir", default=None, help="where the JPEGs and caches go (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the generated JPEGs")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    sizes = []
    for item in args.sizes.split(","):
        n, _, px = item.strip().partition("x")
        sizes.append((int(n), int(px)))
    args.largest = max(n for n, _ in sizes)
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="vaelab-data-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"generating {args.largest:,} JPEGs of {SRC_SIZE[0]} x {SRC_SIZE[1]} px in {root}", flush=True)
    secs = generate(root / "photos", args.largest, args.workers)
    print(f"  {secs:.0f} s", flush=True)
    results: list[dict] = []
    try:
        for n, px in sizes:
            run_size(n, px, root, args, results)
            print(table(results), flush=True)
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"threads {args.threads}, batch {args.batch_size}, tiny conv VAE (16-32-64 channels, z=32), one epoch of at "
          f"most {args.max_images:,} images per split; evaluate --no-fid, k={args.nll_samples}; "
          f"python {sys.version.split()[0]}")
    print(table(results))


if __name__ == "__main__":
    main()
