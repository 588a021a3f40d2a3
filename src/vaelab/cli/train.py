"""`vaelab train`, `vaelab sample` and `vaelab demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..errors import VaelabError
from ._common import (
    Overrides,
    Quiet,
    Table,
    _pct,
    _split_config_args,
    _write_bytes,
    _write_json,
    app,
    console,
)


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="A YAML config (see configs/).", show_default=False)] = None,
    overrides: Overrides = None,
    resume: Annotated[Path | None, typer.Option(help="Continue this run exactly where it stopped.")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Write the run here (default: out_dir/name).")] = None,
    quiet: Quiet = False,
):
    """Train a VAE; writes a run directory (config, checkpoints, metrics, TensorBoard, images).

    Examples:

      vaelab train configs/mnist-148-z2.yaml train.epochs=20

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
        f"training [bold]{cfg.model.arch}[/] VAE (latent {cfg.model.latent_dim}, {cfg.model.likelihood}) on "
        f"{escape(cfg.data.source)} -> {escape(str(target))}",
        highlight=False,
        soft_wrap=True,
    )
    result = fit(cfg, run_dir=target, resume=resume is not None, quiet=quiet)
    _print_fit_summary(result, cfg)


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
    run: Annotated[Path, typer.Argument(help="A run directory.")],
    n: Annotated[int, typer.Option("-n", help="How many images.")] = 64,
    label: Annotated[str | None, typer.Option(help="Class index or name (conditional models).")] = None,
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("samples.png"),
    seed: int = 0,
    nrow: Annotated[int | None, typer.Option(help="Images per row.")] = None,
    sampler: Annotated[
        str, typer.Option(help="prior: z from the model's prior; gmm: from a Gaussian mixture fitted to the training latents (one per class for a conditional model).")
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
    if sampler not in ("prior", "gmm"):
        raise VaelabError(f"--sampler is '{sampler}'", "use prior or gmm")
    if not temperature > 0:
        raise VaelabError(f"--temperature is {temperature}", "use a positive number, e.g. 0.7 (1 draws from the sampler itself)")
    r = load_run(run)
    labels = None
    if label is not None:
        if not r.model.conditional:
            raise VaelabError(f"{run} is not a conditional model, so --label does not apply", "train with model.conditional=true")
        labels = torch.full((n,), _class_index(r, label))
    g = torch.Generator().manual_seed(seed)
    if sampler == "prior":
        images = r.model.sample(n, labels=labels, generator=g, temperature=temperature)
        what = "the prior"
    else:
        images, what = _gmm_samples(r, n, labels, components, seed, temperature)
    if temperature != 1:
        what += f" at temperature {temperature:g}"
    grid = make_grid(images, nrow=nrow)
    _write_bytes(out, png_bytes(grid, 2 if grid.shape[0] < 400 else 1))
    console.print(f"wrote {out} ({n} samples from {what}, {r.checkpoint})", markup=False, highlight=False)


def _gmm_samples(r, n: int, labels, components: int | None, seed: int, temperature: float = 1.0):
    """Images decoded from z drawn from a GMM fitted to the training latent means (per class if conditional)."""
    import torch

    from ..latent.encode import encode
    from ..latent.samplers import ClassGMMSampler, GMMSampler

    if components is not None and components < 1:
        raise VaelabError(f"--components is {components}", "use at least 1")
    train = encode(r, split="train")
    model = r.model
    if model.conditional:
        k = model.num_classes
        labels = torch.arange(n) % k if labels is None else labels
        z = ClassGMMSampler(components or 5, seed=seed).fit(train.z, train.labels, k, list(r.class_names)).sample(labels.numpy(), temperature)
        what = f"a {components or 5}-component GMM per class"
    else:
        z = GMMSampler(components or 10, seed=seed).fit(train.z).sample(n, temperature=temperature)
        what = f"a {components or 10}-component GMM"
    y = labels.to(r.device) if labels is not None else None
    return model.generate(torch.from_numpy(z).to(r.device), y), f"{what} on {len(train)} training latents"


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
    """The main job on the embedded default: train a small conv VAE on the bundled MNIST sample, evaluate
    it, classify from its latents with 10 labels per class, and write the HTML report; prints its path.

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
    console.print("2/4 evaluating on the validation split (FID: vaelab evaluate RUN --split val)", highlight=False)
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


