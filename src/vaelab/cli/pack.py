"""`vaelab data pack`: write any data spec as WebDataset tar shards (the ``shards:`` source)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ._common import DataOpt, Table, _say_dim, console, data_app, err_console


@data_app.command("pack")
def data_pack(
    spec: Annotated[str, typer.Argument(help="The data to pack: folder:DIR, npz:FILE, mnist, ...")],
    out: Annotated[Path, typer.Argument(help="An empty folder for the shards and shards.json.")],
    shard_size: Annotated[int, typer.Option(help="Images per shard (a few hundred MB per shard is typical).")] = 1000,
    image_size: DataOpt = None,
    channels: Annotated[int | None, typer.Option(help="1 (gray) or 3 (RGB).")] = None,
    classes: Annotated[str | None, typer.Option(help="Keep these classes, e.g. 1,4,8.")] = None,
    val_fraction: Annotated[float, typer.Option(help="Validation share when the source has none.")] = 0.1,
    limit: Annotated[int | None, typer.Option(help="At most this many images per split.")] = None,
    image_format: Annotated[str, typer.Option("--format", help="png (lossless) or jpg (smaller).")] = "png",
    seed: int = 0,
):
    """Pack a data set into tar shards ({key}.png + {key}.cls, one tar per --shard-size images and split) plus shards.json, for training from local disks or object storage with data.source=shards:LOCATION.

    Examples:

      vaelab data pack folder:photos/ shards/ --image-size 128 --shard-size 2000

      vaelab train configs/photos-128.yaml data.source=shards:shards/ trainer.devices=4
    """
    import warnings

    from ..data import load
    from ..data.shards import pack

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        ds = load(
            spec,
            image_size=image_size,
            channels=channels,
            classes=[c for c in classes.split(",") if c.strip()] if classes else None,
            val_fraction=val_fraction,
            limit=limit,
            seed=seed,
        )
    for w in caught:
        err_console.print(f"[yellow]warning:[/] {escape(str(w.message))}", highlight=False, soft_wrap=True)
    if getattr(ds, "streaming", False):
        from ..errors import VaelabError

        raise VaelabError(f"{spec} is already shards", "pack a folder, npz or dataset name")
    _say_dim(f"packing {len(ds)} images of {' x '.join(map(str, ds.shape))} into {out}")
    index = pack(ds, out, shard_size=shard_size, fmt=image_format, progress=_say_dim.update)
    table = Table(title=f"shards in {out}", show_header=False)
    for split, shards in index["splits"].items():
        table.add_row(split, f"{sum(s['count'] for s in shards)} images in {len(shards)} shards")
    console.print(table)
    console.print(f"train from them with: data.source=shards:{out}", highlight=False, markup=False)
