"""`vaelab data info` and `vaelab config show`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ._common import DataOpt, Table, _split_config_args, config_app, console, data_app, err_console


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
    factors: Annotated[str | None, typer.Option(help="dsprites: the factors that vary, e.g. shape,scale,posx,posy.")] = None,
):
    """Print samples per split and class, image shape, pixel mean/std and the source.

    Example: vaelab data info mnist-sample --classes 1,4,8
    """
    import warnings

    from ..data import load
    from ..data.info import summarize

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
            factors=[f for f in factors.split(",") if f.strip()] if factors else None,
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
    if info["factors"]:
        sizes = ", ".join(f"{name} {k}" for name, k in info["factors"].items())
        console.print(f"factors: {sizes} (values per factor)", markup=False, highlight=False, soft_wrap=True)
    console.print(f"source: {info['source']}", markup=False, highlight=False, soft_wrap=True)


@config_app.command("show")
def config_show(
    config: Annotated[Path | None, typer.Argument(help="A YAML config (default: the built-in defaults).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
):
    """Print the full resolved config, then the model families (as YAML comments).

    Example: vaelab config show configs/fashion-mlp-z2.yaml model.latent_dim=10
    """
    from ..config import dump_config, families_text, load_config

    config, overrides = _split_config_args(config, overrides)
    console.print(dump_config(load_config(config, overrides)), markup=False, highlight=False)
    console.print(families_text(), markup=False, highlight=False, soft_wrap=True)  # one line each: stays YAML


