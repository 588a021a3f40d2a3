"""`vaelab train`, `vaelab sample` and `vaelab demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..errors import VaelabError, shell
from ._common import (
    ConfigArg,
    Overrides,
    Quiet,
    Table,
    _pct,
    _say_dim,
    _split_config_args,
    _write_bytes,
    _write_json,
    app,
    console,
)


@app.command()
def train(
    config: ConfigArg = None,
    overrides: Overrides = None,
    resume: Annotated[Path | None, typer.Option(help="Continue this run exactly where it stopped.")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Write the run here (default: out_dir/name).")] = None,
    quiet: Quiet = False,
):
    """Train a VAE; writes a run directory (config, checkpoints, metrics, TensorBoard, images).

    Examples:

      vaelab train mnist-148-z2 train.epochs=20     # a shipped config: vaelab config list

      vaelab train my.yaml model.latent_dim=10

      vaelab train data.source=fashion-mnist model.arch=conv model.latent_dim=10

      vaelab train --resume runs/mnist-148-z2
    """
    from ..config import apply_overrides, from_dict, load_yaml, validate
    from ..train import fit

    config, overrides = _split_config_args(config, overrides)
    if resume is not None:
        from ..run import CONFIG_FILE
        from ..train.rundir import check_resumable

        if config is not None:
            raise VaelabError("give either a config or --resume RUN_DIR, not both", "overrides such as train.epochs=20 work with --resume")
        if run_dir is not None:
            raise VaelabError("give either --resume RUN_DIR or --run-dir, not both", "--resume continues the run in its own folder")
        data = load_yaml(check_resumable(resume) / CONFIG_FILE)
        cfg = validate(from_dict(apply_overrides(data, overrides)))
        target = resume
    else:
        from ..config import load_config
        from ..train.rundir import new_run_dir

        cfg = load_config(config, overrides)
        target = run_dir if run_dir is not None else new_run_dir(cfg)
    console.print(
        f"{'resuming' if resume is not None else 'training'} [bold]{cfg.model.arch}[/] VAE (latent {cfg.model.latent_dim}, "
        f"{cfg.model.likelihood}{_family(cfg.model)}) on {escape(cfg.data.source)} -> {escape(str(target))}",
        highlight=False,
        soft_wrap=True,
    )
    result = fit(cfg, run_dir=target, resume=resume is not None, quiet=quiet)
    _print_fit_summary(result, cfg)


def _family(m) -> str:
    """The model's registry choices that differ from the plain VAE's, for the first line of `vaelab train`."""
    parts = [f"{k} {v}" for k, v, plain in (
        ("objective", m.objective, "elbo"), ("posterior", m.posterior, "gaussian"), ("prior", m.prior, "normal"), ("latent", m.latent, "gaussian"),
    ) if v != plain]
    if m.stochastic_layers > 1:
        parts.append(f"{m.stochastic_layers} stochastic layers")
    if m.conditional:
        parts.append("conditional")
    return "; " + ", ".join(parts) if parts else ""


def _print_fit_summary(result: dict, cfg) -> None:
    from ..train.callbacks import val_loss_terms

    last = result["last"]
    table = Table(title="training summary", show_header=False)
    table.add_row("run directory", result["run_dir"])
    table.add_row("epochs / steps", f"{result['epochs']} / {result['steps']}  ({result['stop_reason']})")
    if last and "val/loss" in last:
        table.add_row("val loss per image (nats)", f"{last['val/loss']:.2f} = {val_loss_terms(last, cfg.model)}")
    elif last:  # the training loss also carries the KL warm-up and free bits: its terms, not a sum
        table.add_row("train loss per image (nats)", f"{last['train/loss']:.2f} (recon {last['train/recon']:.2f}, kl {last['train/kl']:.2f})")
    table.add_row("best epoch", f"{result['best_epoch']} ({result['best_val']:.2f})")
    table.add_row("time", f"{result['train_time']:.1f} s")
    if "threads" in result:
        ranks = result.get("world_size", 1)
        table.add_row("CPU threads", f"{result['threads']}" + (f" per rank ({ranks} ranks)" if ranks > 1 else "") + ("" if cfg.trainer.threads else " (auto: trainer.threads)"))
    console.print(table)


@app.command()
def sample(
    run: Annotated[Path, typer.Argument(help="A run directory or a pretrained folder.")],
    n: Annotated[int, typer.Option("-n", help="How many images.")] = 64,
    label: Annotated[str | None, typer.Option(help="Class index or name (conditional models).")] = None,
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("samples.png"),
    seed: int = 0,
    nrow: Annotated[int | None, typer.Option(help="Images per row.")] = None,
    sampler: Annotated[
        str, typer.Option(help="prior: z from the model's prior; gmm: a Gaussian mixture fitted to the training latents (one per class for a conditional model); maf: a masked autoregressive flow fitted to them; vq-prior: the code prior of a VQ run (vaelab train-prior). Fitted once per run, cached in RUN/samplers/.")
    ] = "prior",
    components: Annotated[int | None, typer.Option(help="Components of the gmm sampler (default 10; 5 per class for conditional models).")] = None,
    temperature: Annotated[float, typer.Option(help="Scale of the spread of z (1: the sampler itself; below 1: more typical, less varied).")] = 1.0,
):
    """Draw images from a trained run into one PNG grid: z from the prior, or from the ex-post GMM.

    Examples: vaelab sample runs/fashion-cvae -n 64 --label Sneaker --out sneakers.png

    vaelab sample runs/fashion-cvae --sampler gmm --temperature 0.7 --out per-class-gmm.png
    """
    import torch

    from .. import load_run
    from ..visualize.grid import make_grid, png_bytes

    if n < 1:
        raise VaelabError(f"-n is {n}", "ask for at least one image")
    from ..latent.expost import SAMPLERS, sample_images

    if sampler not in SAMPLERS:
        raise VaelabError(f"--sampler is '{sampler}'", f"use one of: {', '.join(SAMPLERS)}")
    if not temperature > 0:
        raise VaelabError(f"--temperature is {temperature}", "use a positive number, e.g. 0.7 (1 draws from the sampler itself)")
    if nrow is not None and nrow < 1:
        raise VaelabError(f"--nrow is {nrow}", "give at least 1 image per row")
    r = load_run(run)
    _check_grid(n, nrow, r.model.image_shape)
    labels = None
    if label is not None:
        if not r.model.conditional:
            raise VaelabError(f"{run} is not a conditional model, so --label does not apply", "train with model.conditional=true")
        labels = torch.full((n,), _class_index(r, label))
    elif r.model.conditional:  # every class in turn, across the chunks too
        labels = torch.arange(n) % r.model.num_classes
    if sampler == "prior" and getattr(r.model, "native_sampler", None) is None:
        g = torch.Generator().manual_seed(seed)
        images = _in_chunks(n, lambda a, b: r.model.sample(b - a, labels=None if labels is None else labels[a:b], generator=g, temperature=temperature))
        what = "the prior"
    else:
        images, what = sample_images(r, sampler, n, labels, seed=seed, components=components, temperature=temperature)
    if temperature != 1:
        what += f" at temperature {temperature:g}"
    grid = make_grid(images, nrow=nrow)
    _write_bytes(out, png_bytes(grid, 2 if grid.shape[0] < 400 else 1))
    console.print(f"wrote {out} ({n} samples from {what}, {r.checkpoint})", markup=False, highlight=False)


SAMPLE_CHUNK = 4096  # images decoded at once by `vaelab sample`
MAX_GRID_BYTES = 2**28  # one PNG grid of at most 256 MiB of pixels (16,000 x 16,000 gray)


def _check_grid(n: int, nrow: int | None, shape: tuple[int, int, int]) -> None:
    """Refuse -n before sampling when its one PNG grid would be absurdly large, with the figure and the most that fits."""
    import math

    from ..data.budget import human_bytes

    c, h, w = shape
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    size = (rows * (h + 2) + 2) * (cols * (w + 2) + 2) * c
    if size > MAX_GRID_BYTES:
        most = MAX_GRID_BYTES // ((h + 2) * (w + 2) * c)
        raise VaelabError(
            f"-n {n:,}: one grid of {n:,} images of {c} x {h} x {w} would be {human_bytes(size)}, above the {human_bytes(MAX_GRID_BYTES)} "
            "vaelab writes as one PNG",
            f"ask for at most about {int(most * 0.9):,} images" + (" (or more per row with --nrow)" if nrow else ""),
        )


def _in_chunks(n: int, draw):
    """`draw(start, stop)` over chunks of SAMPLE_CHUNK images, kept as uint8 (a quarter of float32's memory), with a
    progress line per chunk when there is more than one."""
    import torch

    from ..visualize.grid import to_uint8

    if n <= SAMPLE_CHUNK:
        return draw(0, n)
    parts = []
    for a in range(0, n, SAMPLE_CHUNK):
        b = min(n, a + SAMPLE_CHUNK)
        parts.append(torch.from_numpy(to_uint8(draw(a, b))))
        _say_dim(f"sampled {b:,} / {n:,} images")
    return torch.cat(parts)


def _class_index(run, label: str) -> int:
    names = list(run.class_names)
    k = run.model.num_classes
    if label.isdigit() and int(label) < k:
        return int(label)
    if label in names:
        return names.index(label)
    raise VaelabError(f"class '{label}' is not one of the model's {k} classes", f"use an index 0..{k - 1}" + (f" or a name: {', '.join(names)}" if names else ""))



@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option(help="Where the run directory goes.")] = Path("runs"),
    epochs: Annotated[int | None, typer.Option(help="Override the demo config's train.epochs.")] = None,
    quiet: Quiet = False,
):
    """The main job on the embedded default: train a small conv VAE on the bundled MNIST sample, evaluate it, classify from its latents with 10 labels per class, and write the HTML report; prints its path.

    A couple of minutes on a laptop CPU. Example: vaelab demo --out-dir runs --epochs 5
    """
    from importlib.resources import files

    from ..config import load_config
    from ..evaluate.report import json_bytes, npz_bytes
    from ..evaluate.run import evaluate_run
    from ..latent import classifiers, fewlabels
    from ..report import build_report
    from ..run import load_run
    from ..train import fit
    from ..train.rundir import new_run_dir

    overrides = [f"out_dir={out_dir}"] + ([f"train.epochs={epochs}"] if epochs is not None else [])
    cfg = load_config(Path(str(files("vaelab") / "resources" / "demo.yaml")), overrides)
    run_dir = new_run_dir(cfg)  # OUT_DIR/demo, or demo-2... when a demo run is already there (never overwritten)
    console.print(f"1/4 training the demo VAE on {cfg.data.source} into {run_dir}", highlight=False)
    _print_fit_summary(fit(cfg, run_dir=run_dir, quiet=quiet), cfg)
    run = load_run(run_dir)
    console.print(f"2/4 evaluating on the validation split, without FID (for FID: {shell('vaelab', 'evaluate', run_dir, '--split', 'val')})", highlight=False, markup=False)
    result = evaluate_run(run, split="val", fid=False)
    _write_bytes(run_dir / "eval" / "val.json", json_bytes(result))
    _write_bytes(run_dir / "eval" / "val_per_image.npz", npz_bytes(result))
    console.print(f"   -ELBO {result['loss']['elbo']:.2f} nats, NLL {result['nll']['nll']:.2f}, SSIM {result['recon_quality']['ssim']:.3f}", highlight=False)
    console.print("3/4 classifying from the latents with 10 labels per class (GMM)", highlight=False)
    fitted = fewlabels.classify(run, "gmm", labels_per_class=10)
    classifiers.save(fitted.classifier, fewlabels.classifier_path(run_dir, "gmm"), run=run)
    _write_json(run_dir / "classify" / "gmm.json", fitted.report)
    console.print(f"   accuracy {_pct(fitted.report['accuracy'])}, macro F1 {fitted.report['f1_macro']:.3f}", highlight=False)
    console.print("4/4 writing the report", highlight=False)
    report = run_dir / "report.html"
    _write_bytes(report, build_report(run).encode("utf-8"))
    console.print(str(report), highlight=False, soft_wrap=True, markup=False)


