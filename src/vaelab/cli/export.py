"""`vaelab export`: a run (or pretrained folder) as a pretrained folder, ONNX graphs or TorchScript."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import app, console


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="A run directory or a pretrained folder.", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", help="pretrained (config.json + model.safetensors + README.md), onnx or torchscript.")] = "pretrained",
    out: Annotated[Path | None, typer.Option(help="Folder to write into (default: RUN/export/FORMAT).")] = None,
    checkpoint: Annotated[str, typer.Option(help="best, last, or a .ckpt file.")] = "best",
    with_data: Annotated[bool, typer.Option("--with-data", help="pretrained: ship the images of a run trained from Python (its data.npz) too.")] = False,
):
    """Share or deploy a trained model: a pretrained folder (safetensors, no pickle), or the encoder and the decoder as two graphs with a dynamic batch axis (ONNX: checked against torch in onnxruntime).

    Examples:

      vaelab export runs/mnist-148-z2 --out mnist-vae          # then VAE.from_pretrained("mnist-vae")

      vaelab export runs/fashion-z10 --format onnx --out fashion-onnx
    """
    from ..data.memory import DATA_FILE
    from ..export import check_exportable, export_run
    from ..run import load_run

    fmt = fmt.lower()
    check_exportable(None, fmt)  # an unknown format fails before the model is loaded
    r = load_run(run, checkpoint=checkpoint)
    result = export_run(r, fmt, out, include_data=with_data)
    folder = result["out"]
    for name in result["files"]:
        console.print(str(folder / name), markup=False, highlight=False, soft_wrap=True)
    if fmt == "pretrained" and not with_data and (Path(r.path) / DATA_FILE).is_file():
        console.print(
            f"note: the images {r.path} was trained on (its {DATA_FILE}) are not in the folder; evaluate, plot and anomaly "
            "of the folder then need --data SPEC (--with-data ships them)",
            highlight=False,
        )
    if result["max_diff"] is not None:
        console.print(f"checked against torch on a batch of 3: largest difference {result['max_diff']:.2e}", highlight=False)
