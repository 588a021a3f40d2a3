"""Export a trained model for serving: the encoder and the decoder as two graphs, ONNX or TorchScript.

    OUT/encoder.onnx    x (B, C, H, W) float in [0, 1]  [, y (B,) int64 class]  ->  mean (B, D), std (B, D)
    OUT/decoder.onnx    z (B, D) float                   [, y (B,) int64 class]  ->  image (B, C, H, W) in [0, 1]
    OUT/export.json     the inputs and outputs, image shape, latent size, prior, class names

The batch axis is dynamic. ``image`` is the likelihood's mean (sigmoid of the decoder's output), the
picture a user wants; to draw new images feed z ~ N(0, I) (``prior: normal``) to the decoder. ONNX uses
the TorchScript-based exporter (``torch.onnx.export(dynamo=False)``): it needs no network and handles every
architecture here; each export is checked against torch in onnxruntime when that is installed.

A model with an autoregressive head (``model.pixelcnn_layers > 0``) is refused: it decodes pixel by pixel
in a Python loop, which is no single graph, and exporting only its factorized base decoder would give
images of another model. Share it as a pretrained folder instead (``--format pretrained``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from .errors import VaelabError

FORMATS = ("pretrained", "onnx", "torchscript")
OPSET = 17


class EncoderGraph(nn.Module):
    """x (B, C, H, W) in [0, 1] [, y (B,)] -> (mean, std) of q(z|x), both (B, D)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.model.encode(x, y)
        return q.mean, q.std


class DecoderGraph(nn.Module):
    """z (B, D) [, y (B,)] -> images (B, C, H, W) in [0, 1] (the likelihood's mean)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.likelihood.mean(self.model.decode(z, y))


def check_exportable(model: nn.Module, fmt: str) -> None:
    """One error for a format or model that cannot be exported."""
    if fmt not in FORMATS:
        raise VaelabError(f"unknown export format '{fmt}'", f"use one of: {', '.join(FORMATS)}")
    if fmt != "pretrained" and getattr(model, "autoregressive", False):
        raise VaelabError(
            f"a model with an autoregressive head (model.pixelcnn_layers) cannot be exported as {fmt}: it decodes pixel by pixel in a loop",
            "share it with --format pretrained",
        )


def example_inputs(model: nn.Module, batch: int = 2, seed: int = 0) -> tuple[tuple, tuple]:
    """(encoder inputs, decoder inputs) of a given batch size, on the model's device."""
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    x = torch.rand((batch, *model.image_shape), generator=g).to(device)
    z = torch.randn((batch, model.latent_dim), generator=g).to(device)
    if model.conditional:
        y = (torch.arange(batch) % model.num_classes).to(device)
        return (x, y), (z, y)
    return (x,), (z,)


def _io_names(model: nn.Module) -> tuple[list[str], list[str]]:
    extra = ["y"] if model.conditional else []
    return ["x", *extra], ["z", *extra]


def describe(model: nn.Module, fmt: str, class_names: list[str]) -> dict:
    """What export.json says: the graphs' inputs and outputs, the image shape, latent size, prior, classes."""
    enc_in, dec_in = _io_names(model)
    c, h, w = model.image_shape
    return {
        "format": fmt,
        "encoder": {"inputs": enc_in, "outputs": ["mean", "std"]},
        "decoder": {"inputs": dec_in, "outputs": ["image"]},
        "image_shape": [c, h, w],
        "latent_dim": model.latent_dim,
        "x": "float32 (B, C, H, W) in [0, 1]",
        "y": "int64 (B,) class index" if model.conditional else None,
        "prior": model.cfg.prior,
        "likelihood": model.cfg.likelihood,
        "class_names": list(class_names),
    }


def export_onnx(model: nn.Module, out: Path) -> dict[str, Path]:
    """encoder.onnx and decoder.onnx in `out`, with a dynamic batch axis."""
    try:
        import onnx  # noqa: F401  (torch.onnx needs it)
    except ImportError:
        raise VaelabError("ONNX export needs the onnx package", "pip install 'vaelab[export]'") from None
    enc_in, dec_in = _io_names(model)
    enc_x, dec_x = example_inputs(model)
    paths = {"encoder": out / "encoder.onnx", "decoder": out / "decoder.onnx"}
    graphs = (
        (EncoderGraph(model), enc_x, enc_in, ["mean", "std"], paths["encoder"]),
        (DecoderGraph(model), dec_x, dec_in, ["image"], paths["decoder"]),
    )
    for graph, args, names, outputs, path in graphs:
        axes = {n: {0: "batch"} for n in names + outputs}
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with warnings.catch_warnings():  # the tracer's notes on Python-side checks, not about this graph
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    graph.eval(), args, str(tmp), input_names=names, output_names=outputs, dynamic_axes=axes, opset_version=OPSET, dynamo=False
                )
            tmp.replace(path)
        except VaelabError:
            raise
        except Exception as e:  # noqa: BLE001 - an operator the exporter does not know: one line
            raise VaelabError(f"ONNX export of the {path.stem} failed ({type(e).__name__}: {str(e).splitlines()[0][:120]})", "use --format torchscript or pretrained") from None
        finally:
            tmp.unlink(missing_ok=True)
    return paths


def trace_graphs(model: nn.Module) -> dict[str, torch.jit.ScriptModule]:
    """The encoder and the decoder traced to TorchScript (in memory)."""
    enc_x, dec_x = example_inputs(model)
    traced = {}
    for name, graph, args in (("encoder", EncoderGraph(model), enc_x), ("decoder", DecoderGraph(model), dec_x)):
        with torch.no_grad(), warnings.catch_warnings():  # TorchScript's deprecation notes
            warnings.simplefilter("ignore")
            traced[name] = torch.jit.trace(graph.eval(), args, check_trace=False)
    return traced


def export_torchscript(model: nn.Module, out: Path) -> tuple[dict[str, Path], dict[str, torch.jit.ScriptModule]]:
    """encoder.pt and decoder.pt (traced TorchScript; load with torch.jit.load) in `out`: (paths, traced modules)."""
    traced = trace_graphs(model)
    paths = {"encoder": out / "encoder.pt", "decoder": out / "decoder.pt"}
    for name, path in paths.items():
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.jit.save(traced[name], str(tmp))
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    return paths, traced


@torch.no_grad()
def max_difference(model: nn.Module, exported: dict, fmt: str, batch: int = 3) -> float | None:
    """The largest |exported - torch| over both graphs on a batch of another size than the export's
    (so the dynamic batch axis is checked too). `exported`: the ONNX files by name (None when onnxruntime
    is not installed), or the traced TorchScript modules (vaelab never loads a TorchScript file: that can
    run code)."""
    enc_x, dec_x = example_inputs(model, batch=batch, seed=1)
    want = [*EncoderGraph(model)(*enc_x), DecoderGraph(model)(*dec_x)]
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        got = []
        for name, args in (("encoder", enc_x), ("decoder", dec_x)):
            sess = ort.InferenceSession(str(exported[name]), providers=["CPUExecutionProvider"])
            feed = {i.name: a.cpu().numpy() for i, a in zip(sess.get_inputs(), args, strict=True)}
            got += [torch.from_numpy(o) for o in sess.run(None, feed)]
    else:
        got = [*exported["encoder"](*enc_x), exported["decoder"](*dec_x)]
    return max(float((g.cpu().float() - w.cpu().float()).abs().max()) for g, w in zip(got, want, strict=True))


def export_run(run, fmt: str, out: str | Path | None = None, include_data: bool = False) -> dict:
    """Export a `Run` (or a pretrained folder's run view) as ``pretrained``, ``onnx`` or ``torchscript`` into
    `out` (default ``RUN/export/<format>``); returns {"out", "files", "max_diff"}."""
    import copy

    from .train.checkpoint import atomic_write

    model = run.model
    check_exportable(model, fmt)
    out = Path(out) if out is not None else Path(run.path) / "export" / fmt
    if out.exists() and not out.is_dir():
        raise VaelabError(f"{out} is a file", "give a folder with --out")
    if fmt == "pretrained":
        run.save_pretrained(out, include_data=include_data)
        return {"out": out, "files": sorted(p.name for p in out.iterdir() if p.is_file()), "max_diff": None}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VaelabError(f"cannot write {out}: {e.strerror or e}", "choose a writable folder with --out") from None
    cpu = copy.deepcopy(model).cpu().eval()  # export on CPU: the graphs then run anywhere
    if fmt == "onnx":
        paths = export_onnx(cpu, out)
        diff = max_difference(cpu, paths, fmt)
    else:
        paths, traced = export_torchscript(cpu, out)
        diff = max_difference(cpu, traced, fmt)
    info = describe(cpu, fmt, list(run.class_names))
    info["max_abs_difference_to_torch"] = diff
    text = json.dumps(info, indent=2) + "\n"
    atomic_write(out / "export.json", lambda f: f.write(text.encode("utf-8")))
    return {"out": out, "files": [p.name for p in paths.values()] + ["export.json"], "max_diff": diff}
