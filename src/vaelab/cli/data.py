"""`vaelab data info`, `vaelab config list` and `vaelab config show`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from ._common import ConfigArg, DataOpt, Table, _split_config_args, config_app, console, data_app, err_console


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


@config_app.command("list")
def config_list():
    """Name the configs that ship with vaelab, one line each (use a name wherever a config file goes).

    Example: vaelab config list, then vaelab train fashion-mlp-z2 or vaelab config show fashion-mlp-z2
    """
    from ..recipes import configs_dir, recipes

    found = recipes()
    if not found:
        err_console.print(f"no configs in {configs_dir()}", markup=False, highlight=False)
        return
    width = max(len(r.name) for r in found) + 2
    for r in found:
        line = f"{r.name:<{width}}{'study: ' if r.study else ''}{r.description}"
        if console.is_terminal:  # one screen line each; piped, the whole line
            console.print(line, markup=False, highlight=False, no_wrap=True, overflow="ellipsis")
        else:
            typer.echo(line)


@config_app.command("show")
def config_show(
    config: ConfigArg = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Print a shipped config's file as it is (comments kept), to copy and edit.")] = False,
):
    """Print the full resolved config (every key, then the model families as YAML comments), or with --raw the file itself.

    Examples:

      vaelab config show fashion-mlp-z2 model.latent_dim=10

      vaelab config show fashion-mlp-z2 --raw > my.yaml
    """
    from ..config import dump_config, families_text, load_config

    config, overrides = _split_config_args(config, overrides)
    if raw:
        from ..config import load_yaml
        from ..errors import VaelabError
        from ..recipes import resolve

        if config is None or overrides:
            raise VaelabError("--raw prints one config file as it is", "give a config name or file and no overrides")
        load_yaml(config)  # a missing or broken file: the usual one-line error
        console.out(resolve(config).read_text(encoding="utf-8"), end="", highlight=False)
        return
    console.print(dump_config(load_config(config, overrides)), markup=False, highlight=False)
    console.print(families_text(), markup=False, highlight=False, soft_wrap=True)  # one line each: stays YAML


