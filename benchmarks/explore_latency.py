"""Decode round-trip of `vaelab explore`: HTTP request for a new latent point -> PNG bytes, at 28 and 128 px.

    OMP_NUM_THREADS=2 python benchmarks/explore_latency.py [--requests 50] [--threads 2]

Models: the conv architectures of two recipes, *untrained* (random weights: decoding costs the same as
after training): configs/mnist-nll-conv.yaml (28 px, conv [32, 64], z = 32) and configs/photos-128.yaml
(128 px RGB, conv 32-512, z = 128). Each is served by the real app (`vaelab.explore`, the standard library
server on 127.0.0.1, the batched decode worker) over 200 random images; the client asks
``/api/decode?z=...`` with a fresh random code each time, one request after another (as a dragged mouse
does), and times request to last byte. "decoder only" is `model.generate` on one code in-process, for
comparison. "burst" sends 64 requests from 16 client threads at once (the worker batches them) and gives
images per second. Targets of issue 25: under 100 ms at 28 px and under 300 ms at 128 px.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CASES = (("28 px (mnist-nll-conv, z=32)", "configs/mnist-nll-conv.yaml", 28, 1),
         ("128 px (photos-128, z=128)", "configs/photos-128.yaml", 128, 3))


def _explorer(config: Path, size: int, channels: int):
    from vaelab.config import load_config
    from vaelab.data import ImageSet
    from vaelab.explore import Explorer
    from vaelab.models import build
    from vaelab.run import Run

    cfg = load_config(config, ["data.source=mnist-sample"])
    cfg.model.image_size, cfg.model.channels, cfg.model.num_classes = size, channels, 0
    model = build(cfg.model).eval()
    images = torch.randint(0, 256, (200, channels, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    run = Run(Path("/nonexistent-run"), cfg, model, Path("/nonexistent-run/best.ckpt"), 0, 0, [])
    return Explorer(run, data=ImageSet(images, source="random"), method="pca", cache=False)


def _get(host: str, port: int, path: str) -> tuple[float, bytes]:
    t = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    assert r.status == 200 and body[:4] == b"\x89PNG", (r.status, body[:200])
    return time.perf_counter() - t, body


def measure(name: str, config: str, size: int, channels: int, n: int) -> dict:
    from vaelab.explore import make_server

    ex = _explorer(ROOT / config, size, channels)
    server = make_server(ex, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    rng = np.random.default_rng(0)
    d = ex.model.latent_dim

    def path() -> str:
        return "/api/decode?z=" + ",".join(f"{v:.4f}" for v in rng.normal(size=d))

    for _ in range(5):  # warm-up
        _get(host, port, path())
    times = [_get(host, port, path())[0] for _ in range(n)]
    with torch.no_grad():
        dec = []
        for _ in range(n):
            z = torch.randn(1, d)
            t = time.perf_counter()
            ex.model.generate(z)
            dec.append(time.perf_counter() - t)
    paths = [path() for _ in range(64)]
    t = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: _get(host, port, p), paths))
    burst = 64 / (time.perf_counter() - t)
    server.shutdown()
    server.server_close()
    ms = sorted(1000 * x for x in times)
    return {"model": name, "median": statistics.median(ms), "p90": ms[int(0.9 * (len(ms) - 1))], "max": ms[-1],
            "decoder": 1000 * statistics.median(dec), "burst": burst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50, help="timed requests per model")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(*case, args.requests) for case in CASES]
    print(f"decode round-trip, {args.requests} sequential requests, torch threads {args.threads}, untrained recipe models")
    print("| model | median ms | p90 ms | max ms | decoder only ms | burst of 64, images/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['median']:.1f} | {r['p90']:.1f} | {r['max']:.1f} | {r['decoder']:.1f} | {r['burst']:.0f} |")


if __name__ == "__main__":
    main()
