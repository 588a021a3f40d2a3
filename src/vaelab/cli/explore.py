"""`vaelab explore` (the local web app over a run's latent space) and `vaelab edit` (attribute arithmetic)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import VaelabError
from ._common import _say_dim, _write_bytes, app, console


@app.command()
def explore(
    run: Annotated[Path, typer.Argument(help="A run directory or pretrained folder.", show_default=False)],
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8765,
    split: Annotated[str | None, typer.Option(help="Images on the map: val, test or train (default: the first present).")] = None,
    method: Annotated[str, typer.Option(help="Map of the latent: auto (the latent itself when 2-D, else pca), pca, tsne, umap.")] = "auto",
    data: Annotated[str | None, typer.Option(help="Another data spec to map (default: the run's data).")] = None,
    limit: Annotated[int | None, typer.Option(help="Map only the first N images of the split.")] = None,
    browser: Annotated[bool, typer.Option("--browser/--no-browser", help="Open the page in the web browser.")] = True,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
):
    """Explore the latent space in the browser: map, live decoding, sliders, interpolation, attributes, samples.

    Served locally (no internet needed) from this process; Ctrl-C stops it.

    Examples:

      vaelab explore runs/mnist-148-z2

      vaelab explore runs/fashion-z10 --method tsne --split test --port 8800 --no-browser
    """
    from .. import load_run
    from ..explore import Explorer, make_server

    if not 0 <= port <= 65535:
        raise VaelabError(f"--port is {port}", "use 0..65535 (0 picks a free one)")
    r = load_run(run, checkpoint=checkpoint)
    explorer = Explorer(r, split=split, method=method, data=data, limit=limit, progress=_say_dim)
    server = make_server(explorer, host, port)
    url = server.url
    what = "cached map" if explorer.cached else "map"
    console.print(f"vaelab explore: {url}  ({len(explorer.z)} {explorer.split} images, {what}: {explorer.projection.method}; Ctrl-C stops it)",
                  markup=False, highlight=False, soft_wrap=True)
    if browser:
        import webbrowser

        webbrowser.open(url)
    server.serve_until_interrupted()  # Ctrl-C: stops between requests, closes the app
    console.print("stopped", highlight=False)


@app.command()
def edit(
    run: Annotated[Path, typer.Argument(help="A run directory or pretrained folder.", show_default=False)],
    images: Annotated[list[Path], typer.Argument(help="Image files (resized to the model's size).", show_default=False)],
    from_: Annotated[str, typer.Option("--from", help="Set A: a class (name or index) of the run's data, or a folder of images without the attribute.")],
    to: Annotated[str, typer.Option("--to", help="Set B: a class, or a folder of images with the attribute.")],
    strength: Annotated[float, typer.Option(help="How far along the vector from A's mean code to B's (1: the whole way).")] = 1.0,
    out: Annotated[Path | None, typer.Option(help="Output PNG (default: <image>_edited.png beside the first image).")] = None,
    split: Annotated[str, typer.Option(help="Split of the run's data whose codes define the classes.")] = "train",
):
    """Move images from A towards B in the latent space: decode(z + strength * (mean z of B - mean z of A)).

    Writes one PNG: each input image next to its edit (one row per image).

    A conditional model encodes the images as class A and decodes them as class B.

    Examples:

      vaelab edit runs/mnist-z16 digit.png --from 4 --to 9 --strength 1.0

      vaelab edit runs/faces-z64 face.png --from faces/no-glasses --to faces/glasses --strength 0.8 --out glasses.png
    """
    import numpy as np
    import torch

    from .. import load_run
    from ..latent.edit import edit as edit_images
    from ..latent.encode import Latents, encode
    from ..latent.fewlabels import images_from_files
    from ..visualize.grid import make_grid, png_bytes

    r = load_run(run)
    shape = r.model.image_shape
    x = images_from_files(images, shape)
    folders = [Path(s) for s in (from_, to) if Path(s).is_dir()]
    if folders:
        if len(folders) != 2:
            raise VaelabError("give two folders (--from and --to) or two classes", "mix of a class and a folder is not supported")
        if r.model.conditional:
            raise VaelabError("a conditional model needs classes for --from and --to", "give class names or indices")
        parts = [encode(r, images_from_files(_image_files(f), shape)).z for f in folders]
        lat = Latents(np.concatenate(parts), None, [])
        source, target = np.arange(len(parts[0])), np.arange(len(parts[0]), len(lat.z))
    else:
        ds = r.data()
        lat = encode(r, ds, split=split if ds.has_split(split) else None)
        if lat.labels is None:
            raise VaelabError(f"{r.data_spec} has no labels, so --from/--to cannot name classes", "give two folders of images instead")
        source, target = from_, to
    result = edit_images(r, x, source, target, strength=strength, latents=lat)
    pairs = torch.stack([x.images.float() / 255, result.images], 1).flatten(0, 1)
    path = out if out is not None else images[0].with_name(f"{images[0].stem}_edited.png")
    grid = make_grid(pairs, nrow=2)
    _write_bytes(path, png_bytes(grid, max(1, 256 // grid.shape[1])))
    console.print(f"wrote {path} ({len(images)} image{'' if len(images) == 1 else 's'} and {'its edit' if len(images) == 1 else 'their edits'}, strength {strength:g}, ‖vector‖ {float(np.linalg.norm(result.vector)):.2f})",
                  markup=False, highlight=False, soft_wrap=True)


def _image_files(folder: Path) -> list[Path]:
    exts = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in exts and p.is_file())
    if not found:
        raise VaelabError(f"{folder} has no image files", "put PNG or JPEG images in it")
    return found
