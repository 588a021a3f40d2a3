"""`vaelab plot` and `vaelab report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import _int_list, _say_dim, _write_bytes, app, console, err_console


@app.command()
def plot(
    run: Annotated[Path, typer.Argument(help="A run directory or a pretrained folder.", show_default=False)],
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
    from .. import load_run
    from ..visualize import render_run

    r = load_run(run)
    rendered, skipped = render_run(
        r, kinds, fmt=fmt, dpi=dpi, video=video, dims=_int_list(dims, "--dims"), image_index=_int_list(image_index, "--image-index"),
        progress=_say_dim.update,
    )
    _say_dim.bar.stop()
    folder = out if out is not None else Path(run) / "figures"
    for item in rendered:  # whole paths, one per line: easy to copy and to pipe
        path = folder / item.filename
        _write_bytes(path, item.data)
        console.print(str(path), markup=False, highlight=False, soft_wrap=True)
    for kind, skip in skipped.items():
        err_console.print(f"skipped {kind}: {skip.reason}" + (f" ({skip.hint})" if skip.hint else ""), markup=False, highlight=False, soft_wrap=True)


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="A run directory or a pretrained folder.", show_default=False)],
    open_: Annotated[bool, typer.Option("--open", help="Open the report in the web browser.")] = False,
    dpi: Annotated[int | None, typer.Option(help="Resolution of the embedded figures (default 100).")] = None,
    animations: Annotated[bool, typer.Option("--animations/--no-animations", help="Embed the animated GIFs (most of the page's size).")] = True,
):
    """Write RUN/report.html: one self-contained page (headline numbers, data, curves, metrics, every figure, config).

    Example: vaelab report runs/mnist-148-z2 --open

    Example: vaelab report runs/mnist-148-z2 --no-animations      # a smaller page, without the GIFs
    """
    from .. import load_run
    from ..report import REPORT_FILE, build_report

    r = load_run(run)
    page = build_report(r, dpi=dpi, animations=animations)
    path = Path(run) / REPORT_FILE
    _write_bytes(path, page.encode("utf-8"))
    console.print(str(path), markup=False, highlight=False, soft_wrap=True)
    if open_:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


