"""The `vaelab` command line: thin typed commands that call the library and print a summary.

Every command builds a config or spec, calls one library function, and prints what it did. A
`VaelabError` becomes one line on stderr and exit code 2 (a traceback only with ``VAELAB_DEBUG=1``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table as _RichTable
from rich.text import Text

from . import __version__
from .errors import VaelabError


class Table(_RichTable):
    """A rich Table whose strings are plain text: class, file and folder names from data are never markup
    (a class folder named '[/bold]' would otherwise crash the table, '[red]x' would turn red)."""

    def __init__(self, *columns, title=None, **kwargs):
        super().__init__(*columns, title=_plain(title), **kwargs)

    def add_column(self, header="", *args, **kwargs):
        super().add_column(_plain(header), *args, **kwargs)

    def add_row(self, *cells, **kwargs):
        super().add_row(*(_plain(c) for c in cells), **kwargs)


def _plain(value):
    return Text(value) if isinstance(value, str) else value

console = Console()


def _say_dim(msg: str) -> None:
    """A library's progress line, dimmed (the `progress=` callback of long library calls)."""
    console.print(f"[dim]{msg}[/]", highlight=False)
err_console = Console(stderr=True)

app = typer.Typer(
    name="vaelab",
    help="Variational Autoencoders for images: train, evaluate, look, classify, study.\n\n"
    "Examples:\n\n"
    "  vaelab data info mnist-sample\n\n"
    "  vaelab train configs/mnist-148-z2.yaml train.epochs=5\n\n"
    "  vaelab sample runs/demo -n 64 --out grid.png",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
data_app = typer.Typer(help="Look at data sources.", no_args_is_help=True)
config_app = typer.Typer(help="Show and check configs.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")


def _version(value: bool):
    if value:
        console.print(f"vaelab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
):
    """Variational Autoencoders for images."""


# ---------------------------------------------------------------------------------------------------------
# data

DataOpt = Annotated[int | None, typer.Option(help="Resize to SIZE x SIZE (center crop for photos).")]


@data_app.command("info")
def data_info(
    spec: Annotated[str, typer.Argument(help="mnist, fashion-mnist, mnist-sample, npz:FILE, folder:DIR, ...")],
    image_size: DataOpt = None,
    channels: Annotated[int | None, typer.Option(help="1 (gray) or 3 (RGB).")] = None,
    classes: Annotated[str | None, typer.Option(help="Keep these classes, e.g. 1,4,8.")] = None,
    val_fraction: Annotated[float, typer.Option(help="Validation share when the source has none.")] = 0.1,
    limit: Annotated[int | None, typer.Option(help="At most this many images per split.")] = None,
    seed: int = 0,
    images_key: Annotated[str | None, typer.Option(help="npz: name of the images array.")] = None,
    labels_key: Annotated[str | None, typer.Option(help="npz: name of the labels array (npy: labels file).")] = None,
):
    """Print samples per split and class, image shape, pixel mean/std and the source.

    Example: vaelab data info mnist-sample --classes 1,4,8
    """
    import warnings

    from rich.markup import escape

    from .data import load
    from .data.info import summarize

    with warnings.catch_warnings(record=True) as caught:  # skipped files etc.: one clean line each
        warnings.simplefilter("always", UserWarning)
        ds = load(
            spec,
            image_size=image_size,
            channels=channels,
            classes=[c for c in classes.split(",") if c.strip()] if classes else None,
            val_fraction=val_fraction,
            limit=limit,
            seed=seed,
            images_key=images_key,
            labels_key=labels_key,
        )
    for w in caught:
        err_console.print(f"[yellow]warning:[/] {escape(str(w.message))}", highlight=False, soft_wrap=True)
    info = summarize(ds)
    splits = list(info["splits"])
    # one row per class, one column per split: stays readable for EMNIST's 62 classes
    console.print(f"{spec}: {info['samples']} images of {' x '.join(map(str, info['shape']))} (C x H x W)", markup=False, soft_wrap=True)
    table = Table()
    table.add_column("class" if info["labelled"] else "")
    for split in splits:
        table.add_column(split, justify="right")
    if info["labelled"]:
        for k, name in enumerate(info["class_names"]):
            table.add_row(name, *[str(info["splits"][sp]["per_class"][k]) for sp in splits])
        table.add_section()
    table.add_row("total", *[str(info["splits"][sp]["samples"]) for sp in splits])
    console.print(table)
    if not info["labelled"]:
        console.print("unlabelled")
    console.print(f"pixel mean {info['pixel_mean']:.4f}, std {info['pixel_std']:.4f} (on 0..1)")
    console.print(f"source: {info['source']}", markup=False, highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------------------------------
# config


@config_app.command("show")
def config_show(
    config: Annotated[Path | None, typer.Argument(help="A YAML config (default: the built-in defaults).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
):
    """Print the full resolved config.

    Example: vaelab config show configs/fashion-mlp-z2.yaml model.latent_dim=10
    """
    from .config import dump_config, load_config

    config, overrides = _split_config_args(config, overrides)
    console.print(dump_config(load_config(config, overrides)), markup=False, highlight=False)


def _split_config_args(config: Path | None, overrides: list[str] | None) -> tuple[Path | None, list[str]]:
    """Allow `vaelab train key=value` with no config file: a first argument with '=' is an override."""
    overrides = list(overrides or [])
    if config is not None and "=" in str(config) and not Path(config).exists():
        overrides.insert(0, str(config))
        config = None
    text = str(config) if config is not None else ""
    if text and not Path(text).exists() and "/" not in text and Path(text).suffix not in (".yaml", ".yml"):
        from .config import all_keys

        if text in all_keys() or text.split(".")[0] in ("data", "model", "train", "trainer", "name", "out_dir"):
            raise VaelabError(f"'{text}' is not key=value", f"write it like {text}=VALUE")
    return config, overrides


# ---------------------------------------------------------------------------------------------------------
# train / sample / demo

Overrides = Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. model.latent_dim=2.", show_default=False)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or per-epoch lines.")]


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
    from .config import apply_overrides, from_dict, load_yaml, validate
    from .train import fit

    config, overrides = _split_config_args(config, overrides)
    if resume is not None:
        from .run import CONFIG_FILE
        from .train.rundir import check_resumable

        if config is not None:
            raise VaelabError("give either a config or --resume RUN_DIR, not both", "overrides such as train.epochs=20 work with --resume")
        if run_dir is not None:
            raise VaelabError("give either --resume RUN_DIR or --run-dir, not both", "--resume continues the run in its own folder")
        data = load_yaml(check_resumable(resume) / CONFIG_FILE)
        cfg = validate(from_dict(apply_overrides(data, overrides)))
        target = resume
    else:
        from .config import load_config
        from .train.rundir import new_run_dir

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
    from .train.callbacks import val_loss_terms

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

    from . import load_run
    from .visualize.grid import make_grid, png_bytes

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

    from .latent.encode import encode
    from .latent.samplers import ClassGMMSampler, GMMSampler

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


def _write_bytes(path: Path, data: bytes) -> None:
    from .train.checkpoint import atomic_write

    try:
        atomic_write(path, lambda f: f.write(data))
    except OSError as e:
        raise VaelabError(f"cannot write {path}: {e.strerror}", "choose a writable path") from None


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

    from .config import load_config
    from .evaluate.report import json_bytes, npz_bytes
    from .evaluate.run import evaluate_run
    from .latent import classifiers, fewlabels
    from .report import build_report
    from .run import load_run
    from .train import fit
    from .train.rundir import new_run_dir

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


# ---------------------------------------------------------------------------------------------------------
# evaluate / features (issue: honest numbers)

features_app = typer.Typer(help="Domain feature networks for FID (one per dataset and image shape).", no_args_is_help=True)
app.add_typer(features_app, name="features")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run directory.")],
    split: Annotated[str | None, typer.Option(help="train, val or test (default: test; val when the data has none).")] = None,
    data: Annotated[str | None, typer.Option(help="Evaluate on this data spec instead of the run's own data.")] = None,
    nll_samples: Annotated[int, typer.Option(help="Importance samples k of the NLL (1000 or 5000 for papers).")] = 100,
    no_fid: Annotated[bool, typer.Option("--no-fid", help="Skip FID, precision/recall and conditional accuracy.")] = False,
    features: Annotated[str, typer.Option(help="Feature-network folder, or 'auto' (cached; trained when missing).")] = "auto",
    inception: Annotated[Path | None, typer.Option(help="Local Inception-v3 weights file for FID (no download).")] = None,
    max_generated: Annotated[int, typer.Option(help="At most this many generated (and real) images for FID.")] = 10_000,
    gmm_components: Annotated[int, typer.Option(help="Components of the ex-post GMM sampler.")] = 10,
    temperature: Annotated[float, typer.Option(help="Spread of z for the generated images (below 1: more typical, less varied).")] = 1.0,
    checkpoint: Annotated[str, typer.Option(help="best, last, or a .ckpt file.")] = "best",
    batch_size: int = 500,
    seed: int = 0,
):
    """Every number of a trained run: ELBO terms, IWAE NLL, MSE/PSNR/SSIM, active units, FID (prior, GMM, recon).

    Writes RUN/eval/<split>.json and RUN/eval/<split>_per_image.npz; the checkpoints are only read.

    Examples:

      vaelab evaluate runs/mnist-148-z2

      vaelab evaluate runs/mnist-mlp --nll-samples 5000 --split test

      vaelab evaluate runs/fashion-z10 --no-fid
    """
    from .evaluate.report import json_bytes, npz_bytes, summary_rows
    from .evaluate.run import evaluate_run
    from .run import load_run

    if nll_samples < 1:
        raise VaelabError(f"--nll-samples is {nll_samples}", "use k >= 1 importance samples (100 by default, 1000+ for papers)")
    if not temperature > 0:
        raise VaelabError(f"--temperature is {temperature}", "use a positive number (1, the default, draws from the samplers themselves)")
    if inception is not None and no_fid:
        raise VaelabError("--inception and --no-fid contradict each other", "drop one of them")
    r = load_run(run, checkpoint=checkpoint)
    result = evaluate_run(
        r,
        split=split,
        data=data,
        nll_samples=nll_samples,
        fid=not no_fid,
        features=features,
        inception=inception,
        max_generated=max_generated,
        gmm_components=gmm_components,
        temperature=temperature,
        batch_size=batch_size,
        seed=seed,
        progress=_say_dim,
    )
    if split is None and result["split"] != "test":  # a photo folder with train/ and val/ only
        console.print("note: the run's data has no test split; evaluating its val split", highlight=False)
    split = result["split"]
    out = Path(r.path) / "eval"
    _write_bytes(out / f"{split}.json", json_bytes(result))
    _write_bytes(out / f"{split}_per_image.npz", npz_bytes(result))
    table = Table(title=f"{r.path} ({Path(result['checkpoint']).name}, epoch {result['epoch']}), {split} split", show_header=False)
    for name, value in summary_rows(result):
        table.add_row(name, value)
    console.print(table)
    for note in result.get("notes", []):
        console.print(f"note: {note}", highlight=False)
    console.print(f"wrote {out / (split + '.json')} and {out / (split + '_per_image.npz')}", highlight=False)


@features_app.command("train")
def features_train(
    spec: Annotated[str, typer.Argument(help="A labelled data spec: mnist, fashion-mnist, folder:DIR, ...")],
    image_size: DataOpt = None,
    channels: Annotated[int | None, typer.Option(help="1 (gray) or 3 (RGB).")] = None,
    epochs: Annotated[int, typer.Option(help="At most this many epochs (early stopping on val accuracy).")] = 8,
    batch_size: int = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate of the one-cycle schedule.")] = 2e-3,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without a better val accuracy.")] = 2,
    limit: Annotated[int | None, typer.Option(help="At most this many images per split (quick tries).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder to write (default: the cache evaluate reads).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    seed: int = 0,
):
    """Train the small ResNet classifier whose penultimate features FID uses, and save it with its test accuracy.

    Examples:

      vaelab features train mnist

      vaelab features train fashion-mnist --epochs 10

      vaelab features train folder:photos/ --image-size 64 --channels 3
    """
    import torch

    from .evaluate.features import cache_path, load_training_data, save_feature_net, train_feature_net

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    data = load_training_data(spec, image_size=image_size, channels=channels, limit=limit, seed=seed)
    counts = data.split_counts()
    console.print(
        f"training a feature network on {spec} ({' x '.join(map(str, data.shape))}, {data.num_classes} classes; "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
        + f") on {device}",
        highlight=False,
    )
    trained = train_feature_net(
        data,
        spec=spec,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        seed=seed,
        device=device,
        limit=limit,
        progress=_say_dim,
    )
    folder = save_feature_net(trained, out if out is not None else cache_path(spec, data.shape, limit))
    m = trained.meta
    table = Table(title=f"feature network {m['name']}", show_header=False)
    table.add_row("saved to", str(folder))
    table.add_row(f"{m['held_out']} accuracy", f"{m['test_accuracy']:.4f} ({'test' if m['held_out'] == 'test' else 'no test split'})")
    table.add_row("best val accuracy", f"{m['val_accuracy']:.4f} (epoch {m['best_epoch']} of {m['epochs_run']})")
    table.add_row("training images", str(m["train_images"]))
    table.add_row("time", f"{m['train_seconds']:.1f} s on {m['device']}")
    console.print(table)
    if limit is None and out is None:
        console.print("vaelab evaluate uses it for every run on this data at this image size", highlight=False)


# ---------------------------------------------------------------------------------------------------------
# classify / predict (issue: latent classifiers)

METHODS_HELP = "gmm (semi-supervised Gaussian mixture), spread (label spreading on a k-NN graph), mlp (head on K latent samples), logreg, knn."


def _classifier_params(params: list[str] | None) -> dict:
    """``['covariance_type=diag', 'samples=20']`` -> a dict, values read as YAML (numbers stay numbers)."""
    import yaml

    out = {}
    for text in params or []:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise VaelabError(f"--param '{text}' is not key=value", "write it like --param covariance_type=diag")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def _write_json(path: Path, data: dict) -> None:
    import json

    _write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


@app.command()
def classify(
    run: Annotated[Path, typer.Argument(help="A run directory.")],
    method: Annotated[str, typer.Option(help=METHODS_HELP)] = "gmm",
    labels_per_class: Annotated[
        str | None, typer.Option(help="N labels per class from the run's train split (seeded), or 'all'. Default 10.")
    ] = None,
    labelled: Annotated[str | None, typer.Option(help="Take the labels from this data spec instead (all of it).")] = None,
    test: Annotated[str | None, typer.Option(help="Score on this data spec (default: the run's test split, else val).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the label draw (and of the MLP head).")] = 0,
    budget: Annotated[str | None, typer.Option(help="Label-budget table, e.g. 1,5,10,100,all.")] = None,
    repeats: Annotated[int, typer.Option(help="--budget: average over this many seeded draws.")] = 1,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Classifier parameter key=value, e.g. covariance_type=diag.")
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
):
    """Classify from the latent space with few labels; writes RUN/classify/<method>.json and the classifier.

    Examples:

      vaelab classify runs/mnist-148-z2 --method gmm --labels-per-class 10

      vaelab classify runs/mnist-148-z2 --method gmm --labelled npz:val.npz --test npz:test.npz

      vaelab classify runs/mnist-148-z2 --method mlp -p samples=20 --budget 1,5,10,100,all
    """
    from .latent import classifiers, fewlabels
    from .run import load_run

    params = _classifier_params(param)
    classifiers.make(method, params)  # a bad method or parameter fails before any encoding
    if budget is not None and labels_per_class is not None:
        raise VaelabError("give either --budget or --labels-per-class, not both", "--budget 1,5,10,all sweeps the labels per class")
    budgets = fewlabels.parse_budget(budget) if budget is not None else None
    r = load_run(run, checkpoint=checkpoint)
    out_dir = r.path / "classify"
    if budgets is not None:
        result = fewlabels.label_budget(r, method, budgets, seed=seed, labelled=labelled, test=test, params=params, repeats=repeats)
        path = out_dir / f"{method}_budget.json"
        _write_json(path, result)
        table = Table(title=f"{method}: label budget (test: {result['test_source']}, {result['n_test']} images, seed {seed})")
        for col in ("labels per class", "labelled", "accuracy", "macro F1"):
            table.add_column(col, justify="right")
        for row in result["budget"]:
            acc, f1 = _pct(row["accuracy"]), f"{row['f1_macro']:.4f}"
            if repeats > 1:
                acc, f1 = f"{acc} ± {100 * row['accuracy_std']:.2f}", f"{f1} ± {row['f1_macro_std']:.4f}"
            table.add_row(str(row["labels_per_class"]), str(row["n_labelled"]), acc, f1)
        console.print(table)
        console.print(f"wrote {path}", highlight=False)
        return
    result = fewlabels.classify(r, method, labels_per_class=labels_per_class, labelled=labelled, test=test, seed=seed, params=params)
    rep = result.report
    npz_path, _ = classifiers.save(result.classifier, fewlabels.classifier_path(r.path, method), run=r)
    path = out_dir / f"{method}.json"
    _write_json(path, rep)
    table = Table(title=f"{method} on {rep['test_source']} ({rep['n_test']} images)", show_header=False)
    table.add_row("labels", f"{rep['labels_per_class']} per class: {rep['n_labelled']} from {rep['labelled_source']}" + (f", {rep['n_unlabelled']} unlabelled" if rep["n_unlabelled"] else ""))
    table.add_row("accuracy", _pct(rep["accuracy"]))
    table.add_row("precision / recall (macro)", f"{rep['precision_macro']:.4f} / {rep['recall_macro']:.4f}")
    table.add_row("F1 macro / micro", f"{rep['f1_macro']:.4f} / {rep['f1_micro']:.4f}")
    fitted = rep["fitted"]
    if "lower_bound_" in fitted:
        table.add_row("EM", f"{fitted['n_iter_']} iterations, {'converged' if fitted['converged_'] else 'NOT converged'}, lower bound {fitted['lower_bound_']:.4f}")
    if "n_neighbors_" in fitted and "n_iter_" in fitted:
        table.add_row("label spreading", f"{fitted['n_iter_']} iterations on a {fitted['n_neighbors_']}-nearest-neighbour graph")
    if "best_epoch_" in fitted:
        stop = f"best validation accuracy {_pct(fitted['val_accuracy_'])}" if fitted["early_stopping_"] else "too few labels for a hold-out: no early stopping"
        table.add_row("training", f"epoch {fitted['best_epoch_']} of {fitted['n_epochs_']} ({stop})")
    console.print(table)
    cm = Table(title="confusion matrix")
    cm.add_column("true \\ predicted")
    for name in rep["class_names"]:
        cm.add_column(name, justify="right")
    for name, row in zip(rep["class_names"], rep["confusion"], strict=True):
        cm.add_row(name, *map(str, row))
    console.print(cm)
    console.print(f"wrote {path} and {npz_path} (+ .classifier.json)", highlight=False)


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="A run directory.")],
    images: Annotated[list[Path] | None, typer.Argument(help="Image files (resized to the model's size).", show_default=False)] = None,
    data: Annotated[str | None, typer.Option(help="Predict every image of this data spec instead.")] = None,
    method: Annotated[str, typer.Option(help="Which saved classifier of the run.")] = "gmm",
):
    """Print the predicted class and its probability for each image, with the run's saved classifier.

    Examples:

      vaelab predict runs/mnist-148-z2 digit.png other.png

      vaelab predict runs/mnist-148-z2 --data npz:test.npz --method mlp
    """
    from .latent import classifiers, fewlabels
    from .run import load_run

    if bool(images) == (data is not None):
        raise VaelabError("give image files or --data SPEC (one of the two)", "e.g. vaelab predict RUN digit.png")
    if method not in classifiers.CLASSIFIERS:
        classifiers.make(method)  # the unknown-method error, with a suggestion
    path = fewlabels.classifier_path(run, method)
    if not path.with_name(f"{method}.classifier.json").is_file():
        from .run import require_run_dir

        require_run_dir(run)
        raise VaelabError(f"{run} has no saved {method} classifier", f"run vaelab classify {run} --method {method} first")
    meta = classifiers.read_meta(path)
    # the checkpoint the classifier was fitted on (load() refuses it if that checkpoint changed since)
    ckpt = Path(run) / (meta.get("run") or {}).get("checkpoint", "")
    r = load_run(run, checkpoint=str(ckpt) if ckpt.suffix == ".ckpt" and ckpt.is_file() else "best")
    clf = classifiers.load(path, run=r)
    source = fewlabels.images_from_files(images, r.model.image_shape) if images else data
    pred = fewlabels.predict(r, clf, source)
    table = Table(title=f"{method} predictions ({len(pred.classes)} images)")
    table.add_column("image")
    table.add_column("class")
    table.add_column("probability", justify="right")
    if pred.labels is not None:
        table.add_column("true class")
    names = [str(p) for p in images] if images else [str(i) for i in range(len(pred.classes))]
    if images and len({p.name for p in images}) == len(images):  # short names when they are unambiguous
        names = [p.name for p in images]
    for i, (name, cls, prob) in enumerate(zip(names, pred.classes, pred.probability, strict=True)):
        table.add_row(name, cls, f"{prob:.3f}", *([pred.labels[i]] if pred.labels is not None else []))
    console.print(table)
    if pred.labels is not None:
        acc = sum(a == b for a, b in zip(pred.classes, pred.labels, strict=True)) / len(pred.labels)
        console.print(f"accuracy {_pct(acc)} on {len(pred.classes)} labelled images", highlight=False)


# ---------------------------------------------------------------------------------------------------------
# plot / report (issue: figures and report)


def _int_list(text: str | None, option: str) -> list[int] | None:
    """'0,3' -> [0, 3]; a clear error for anything else."""
    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise VaelabError(f"{option} '{text}' is not a list of integers", f"write it like {option} 0,1") from None


@app.command()
def plot(
    run: Annotated[Path, typer.Argument(help="A run directory.", show_default=False)],
    kinds: Annotated[
        list[str] | None,
        typer.Argument(
            help="Figures: recon samples manifold scatter ellipses traversal interpolate curves eda quality "
            "confusion budget animate (default: all that apply to the run).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Folder to write into (default: RUN/figures).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="png, pdf or svg (animations are GIF, and MP4 with imageio-ffmpeg).")] = "png",
    dims: Annotated[str | None, typer.Option(help="Latent dims i,j for manifold/scatter/ellipses; all listed for traversals.")] = None,
    image_index: Annotated[str | None, typer.Option(help="Images a,b of the val split (else test, train) to interpolate; a is also the traversal centre.")] = None,
    dpi: Annotated[int | None, typer.Option(help="Resolution of PNG figures (default 100).")] = None,
    video: Annotated[bool, typer.Option(help="Also write MP4 next to each GIF when imageio-ffmpeg is installed.")] = True,
):
    """Draw the figures of a trained run into RUN/figures/ and print their paths.

    Examples:

      vaelab plot runs/mnist-148-z2

      vaelab plot runs/fashion-z10 manifold traversal --dims 0,3 --format pdf

      vaelab plot runs/mnist-148-z2 interpolate --image-index 3,17
    """
    from . import load_run
    from .visualize import render_run

    r = load_run(run)
    rendered, skipped = render_run(
        r, kinds, fmt=fmt, dpi=dpi, video=video, dims=_int_list(dims, "--dims"), image_index=_int_list(image_index, "--image-index")
    )
    folder = out if out is not None else Path(run) / "figures"
    for item in rendered:  # whole paths, one per line: easy to copy and to pipe
        path = folder / item.filename
        _write_bytes(path, item.data)
        console.print(str(path), markup=False, highlight=False, soft_wrap=True)
    for kind, skip in skipped.items():
        err_console.print(f"skipped {kind}: {skip.reason}" + (f" ({skip.hint})" if skip.hint else ""), markup=False, highlight=False, soft_wrap=True)


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="A run directory.", show_default=False)],
    open_: Annotated[bool, typer.Option("--open", help="Open the report in the web browser.")] = False,
    dpi: Annotated[int | None, typer.Option(help="Resolution of the embedded figures (default 100).")] = None,
):
    """Write RUN/report.html: one self-contained page (data, config, curves, metrics, every figure).

    Example: vaelab report runs/mnist-148-z2 --open
    """
    from . import load_run
    from .report import REPORT_FILE, build_report

    r = load_run(run)
    page = build_report(r, dpi=dpi)
    path = Path(run) / REPORT_FILE
    _write_bytes(path, page.encode("utf-8"))
    console.print(str(path), markup=False, highlight=False, soft_wrap=True)
    if open_:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


# ---------------------------------------------------------------------------------------------------------
# sweep (issue: studies)


@app.command()
def sweep(
    config: Annotated[Path | None, typer.Argument(help="A config or study YAML (with an optional sweep: section).", show_default=False)] = None,
    overrides: Overrides = None,
    grid: Annotated[list[str] | None, typer.Option("--grid", help="KEY=V1,V2,... to vary (repeat: the product).", show_default=False)] = None,
    seeds: Annotated[int | None, typer.Option(help="Train every grid point with this many seeds (mean ± std).", show_default=False)] = None,
    jobs: Annotated[int, typer.Option(help="Worker processes on this machine.")] = 1,
    evaluate: Annotated[bool | None, typer.Option("--evaluate/--no-evaluate", help="Evaluate each trial on the test split.", show_default=False)] = None,
    classify: Annotated[list[str] | None, typer.Option("--classify", help="Fit this latent classifier per trial (e.g. gmm).", show_default=False)] = None,
    study_dir: Annotated[Path | None, typer.Option(help="Study directory (default: out_dir/name).", show_default=False)] = None,
    storage: Annotated[str | None, typer.Option(help="Database URL of the study (default: sqlite in the study directory).", show_default=False)] = None,
    worker: Annotated[bool, typer.Option("--worker", help="Only run trials (join a study from another machine); no results files.")] = False,
    search: Annotated[bool, typer.Option("--search", help="Sample lr, beta, latent size with Optuna TPE instead of a grid.")] = False,
    trials: Annotated[int | None, typer.Option(help="Trials of --search.", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Reuse a study directory made by another config.")] = False,
    quiet: Quiet = False,
):
    """Train a family of configs, evaluate each, and compare them in one table, figures and report.

    Every trial is an ordinary run in STUDY/trials/<name>; the study state is an Optuna study, so an
    interrupted sweep resumes (run the same command again) and workers on several machines can share
    one study (--storage URL --worker).

    Examples:

      vaelab sweep data.source=mnist-sample --grid model.beta=0.5,1,4 --grid model.latent_dim=2,10 --evaluate

      vaelab sweep configs/fashion-study.yaml                 # the named variants of its sweep: section

      vaelab sweep data.source=mnist-sample --search --trials 20 --jobs 2

      vaelab sweep configs/fashion-study.yaml --storage postgresql://u:p@db/vaelab --worker   # on each machine
    """
    import shlex

    import optuna

    from .sweep import (
        build_plan,
        build_results,
        finish_steps,
        prepare_study,
        run_workers,
        study_outputs,
        study_status,
    )
    from .sweep.steps import check_available

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config, overrides = _split_config_args(config, overrides)
    if jobs < 1:
        raise VaelabError(f"--jobs is {jobs}", "use 1 or more worker processes")
    plan = build_plan(config, overrides, grid, seeds, search, trials, evaluate, classify)
    check_available(plan.evaluate, plan.classify)
    directory = study_dir or Path(plan.base["out_dir"]) / plan.name
    info = prepare_study(plan, directory, storage, force)
    what = f"{plan.search['trials']} search trials" if plan.is_search else f"{info['total']} trials"
    console.print(f"study [bold]{escape(str(directory))}[/]: {what} ({info['complete']} done, {info['waiting']} queued, "
                  f"{info['running']} running elsewhere); storage {info['storage']}", highlight=False)
    if info["moved_aside"]:
        console.print(f"--force: set aside {len(info['moved_aside'])} trial folder(s) of the old config in {directory / 'replaced'}")
    run_workers(plan, directory, storage, jobs=jobs, evaluate=plan.evaluate, classify=plan.classify,
                on_event=_sweep_event if not quiet else None, show_epochs=jobs == 1 and not quiet)
    if worker:
        console.print("worker done: no trial left to run")
        return
    status = study_status(plan, directory, storage)
    errors = finish_steps(plan, directory, status, plan.evaluate, plan.classify, _sweep_event if not quiet else None)
    args = ([str(config)] if config else []) + overrides + [f"--grid={g}" for g in grid or []]
    args += [f"--seeds={seeds}"] * (seeds is not None) + ["--search"] * search + [f"--trials={trials}"] * (trials is not None)
    args += {True: ["--evaluate"], False: ["--no-evaluate"], None: []}[evaluate] + [f"--classify={m}" for m in classify or []]
    args += [f"--study-dir={study_dir}"] * (study_dir is not None)
    command = "vaelab sweep " + " ".join(shlex.quote(a) for a in args)
    results = build_results(plan, directory, status)
    for rel, data in study_outputs(plan, directory, status, command, results).items():
        _write_bytes(directory / rel, data)
    _print_results(results, directory)
    elsewhere = sorted(k for k, v in status.items() if v["state"] == "complete" and not (directory / "trials" / k).is_dir())
    if elsewhere:
        console.print(f"{len(elsewhere)} trial(s) ran on other machines and their folders are not in "
                      f"{escape(str(directory / 'trials'))} ({escape(', '.join(elsewhere[:3]))}{' ...' if len(elsewhere) > 3 else ''}): "
                      "copy them there and run the same command again to fill their rows", highlight=False)
    failed = sorted(k for k, v in status.items() if v["state"] in ("failed", "interrupted", "not started"))
    if failed or errors:
        names = ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else "")
        first = next((f"; {k}: {status[k]['error'][:160]}" for k in failed if status[k].get("error")), "")
        raise VaelabError(
            f"{len(failed)} of {len(status)} trials did not finish ({names}){first}" if failed else errors[0],
            f"see {directory / 'report.html'} and trials/<name>/sweep.json; run the same command again to retry",
        )


def _sweep_event(event: dict) -> None:
    """One line per trial event (module level: worker processes of --jobs call it too)."""
    kind, name = event["event"], escape(str(event.get("trial", "")))
    if kind == "start":
        how = {"new": "training", "partial": f"resuming from epoch {event['epoch']}", "finished": "already trained"}[event["state"]]
        text = f"trial {name}: {how} ({event['epochs']} epoch{'s' if event['epochs'] != 1 else ''})"
    elif kind == "done":
        t = event.get("train_time")
        text = f"trial {name}: done, best val -ELBO {event['value']:.2f}" + (f", {t:.1f} s" if t else "")
    elif kind == "step":
        text = f"trial {name}: {escape(str(event['step']))}"
    elif kind == "failed":
        text = f"[red]trial {name}: failed[/]: {escape(str(event['error']))}"
    elif kind == "pruned":
        text = f"trial {name}: {escape(str(event['message']))}"
    elif kind == "interrupted":
        text = f"trial {name}: interrupted, checkpoint kept"
    else:
        text = f"trial {name}: {escape(str(event.get('message', kind)))}"
    Console().print(text, highlight=False, soft_wrap=True)


def _print_results(results, directory: Path) -> None:
    """The study's table (mean ± std per point with several seeds) as a rich table."""
    from .sweep.results import cells, visible

    rows, columns = (results.summary, results.summary_columns) if results.summary is not None else (results.rows, results.columns)
    cols = [c for c in visible(rows, columns) if c.key not in ("epochs", "train_time_s")]  # in results.md
    if all(r.get("status") == "complete" for r in results.rows):
        cols = [c for c in cols if c.key != "status"]
    table = Table(title=f"study results ({len(results.rows)} trials)")
    for c in cols:
        table.add_column(c.header, justify="right" if c.numeric else "left")
    for line in cells(rows, cols, with_std=results.summary is not None):
        table.add_row(*line)
    console.print(table)
    console.print(f"wrote {directory / 'results.csv'}, results.md, figures/, report.html", highlight=False)


# ---------------------------------------------------------------------------------------------------------
# entry point


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the app, turning user errors into one line and exit code 2."""
    debug = os.environ.get("VAELAB_DEBUG", "") not in ("", "0")
    try:
        try:
            code = app(args=argv, prog_name="vaelab", standalone_mode=False)
        except Exception as e:
            if not _is_click_error(e):
                raise
            _click_error(e)
        sys.exit(code if isinstance(code, int) else 0)  # as click's standalone mode: typer.Exit(n), Ctrl-C 130
    except VaelabError as e:
        from .train.loop import TrainingInterrupted

        if isinstance(e, TrainingInterrupted):
            err_console.print(f"[bold yellow]stopped:[/] {escape(e.message)}\n{escape(e.hint or '')}", highlight=False, soft_wrap=True)
            sys.exit(128 + e.signum)
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except (OSError, MemoryError) as e:  # the machine, not vaelab: a full disk, a read-only folder, no memory
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(_system_error(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)


def _is_click_error(e: BaseException, name: str | None = None) -> bool:
    """By class name: typer ships its own copy of click, so the classes are not importable by one path."""
    names = {c.__name__ for c in type(e).__mro__}
    return name in names if name else bool(names & {"ClickException", "Abort"})


def _click_error(e: BaseException) -> None:
    """A misused command line: one line and exit 2, like every other bad input (help when nothing is given)."""
    if _is_click_error(e, "Abort"):
        err_console.print("aborted")
        sys.exit(1)
    if _is_click_error(e, "NoArgsIsHelpError") or not hasattr(e, "format_message"):
        e.show()  # `vaelab data` with nothing after it: the help, as usual
    else:
        where = getattr(getattr(e, "ctx", None), "command_path", None) or "vaelab"
        err_console.print(f"[bold red]error:[/] {escape(e.format_message())} (see '{where} --help')",
                          highlight=False, soft_wrap=True)
    sys.exit(getattr(e, "exit_code", 2))


def _system_error(e: BaseException) -> str:
    """One line for an OSError/MemoryError that escaped the library's own checks."""
    import errno

    if isinstance(e, MemoryError):
        return "out of memory (use a smaller train.batch_size, data.image_size or data.limit)"
    where = f" {e.filename}" if getattr(e, "filename", None) else ""
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return f"disk full while writing{where} (free some space and run it again)"
    return f"{e.strerror or e}:{where} (check the path and its permissions; VAELAB_DEBUG=1 shows the traceback)"
