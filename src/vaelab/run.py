"""Run directories: what a training run writes, and `load_run` to rebuild it with no flags.

    RUN_DIR/
      config.yaml          the full resolved config (model sizes filled in from the data)
      metrics.jsonl        one line per epoch: train/val loss terms, lr, grad norm, time
      checkpoints/         last.ckpt (every epoch), best.ckpt (best validation loss)
      tensorboard/         scalars and image grids
      images/              recon_epoch_N.png, samples_epoch_N.png
      latents/             validation latent means per epoch (for the scatter animation)
      data.npz             the prepared images, for a run trained on in-memory data (data.source: memory)

A pretrained folder (config.json + model.safetensors, `vaelab.pretrained`) is the other view of a trained
model: `load_run` takes either, so every command that takes a run takes a pretrained folder too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config, from_dict, load_yaml
from .errors import VaelabError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"


def is_run_dir(path: str | Path) -> bool:
    """A folder holding a run's config.yaml."""
    return (Path(path) / CONFIG_FILE).is_file()


def require_run_dir(path: str | Path) -> Path:
    """The run directory, or one error saying what `path` is instead."""
    path = Path(path)
    if not path.exists():
        raise VaelabError(f"run directory not found: {path}", "give the folder 'vaelab train' printed")
    if not is_run_dir(path):
        raise VaelabError(f"{path} is not a vaelab run (no {CONFIG_FILE})", "give the folder 'vaelab train' printed")
    return path


def checkpoint_path(run_dir: str | Path, which: str = "best") -> Path:
    """best.ckpt (falls back to last.ckpt), last.ckpt, or a path to a .ckpt file."""
    run_dir = Path(run_dir)
    if which.endswith(".ckpt") or (which not in ("best", "last") and Path(which).is_file()):
        return Path(which)  # load_checkpoint says what is wrong with a file that is not a checkpoint
    folder = run_dir / CHECKPOINTS
    if which not in ("best", "last") and not (folder / f"{which}.ckpt").is_file():  # epoch_N (train.keep_checkpoints)
        raise VaelabError(
            f"checkpoint '{which}' is neither best, last, a kept epoch_N of the run nor an existing file",
            "use --checkpoint best, last, epoch_N (with train.keep_checkpoints) or the path of a .ckpt file",
        )
    order = ["best", "last"] if which == "best" else [which]
    for name in order:
        p = folder / f"{name}.ckpt"
        if p.is_file():
            return p
    raise VaelabError(f"{run_dir} has no checkpoint yet", "train it first (vaelab train), or resume it with --resume")


def read_config(run_dir: str | Path) -> Config:
    """The Config of a run directory's config.yaml."""
    path = require_run_dir(run_dir) / CONFIG_FILE
    return from_dict(load_yaml(path), Config, where=f" in {path}")


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The epochs of metrics.jsonl (a torn last line, from a crash mid-write, is ignored; any other line that
    is not a JSON object, e.g. with a non-UTF-8 byte, is skipped with a one-line warning naming it)."""
    import warnings

    path = Path(run_dir) / METRICS_FILE
    rows, bad = [], []
    if path.is_file():
        lines = path.read_bytes().splitlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                row = None
            if isinstance(row, dict):
                rows.append(row)
            elif number < len(lines):  # the last line may be torn by a crash mid-write: no warning for it
                bad.append(number)
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
        warnings.warn(f"{path}: skipped line {shown} (not a JSON object in UTF-8)", stacklevel=2)
    return rows


@dataclass(repr=False)
class Run:
    """A trained run: its folder, config, model (weights loaded, eval mode) and training position.

    The notebook steps: ``run.data()``, ``run.latents("val")``, ``run.encode(x)``, ``run.reconstruct(x)``,
    ``run.sample(16)``, ``run.decode(z)``, ``run.evaluate()``, ``run.save_pretrained(folder)``."""

    path: Path
    config: Config
    model: torch.nn.Module
    checkpoint: Path
    epoch: int
    step: int
    class_names: list[str] = field(default_factory=list)  # the labels' names, as in training

    @property
    def data_spec(self) -> str:
        """The data spec the run was trained on (``memory`` for data given from Python)."""
        return self.config.data.source

    @property
    def pretrained(self) -> bool:
        """True for a pretrained folder (config.json + model.safetensors), False for a run directory."""
        return self.checkpoint.suffix == ".safetensors"

    def data(self, **overrides: Any):
        """The run's data, loaded as in training (overrides: DataConfig fields).

        A run trained on in-memory data (``data.source: memory``) gives back the images saved with it
        (``RUN/data.npz``, already prepared, so `overrides` do not apply); when they were not saved, one
        error asks for the data (``--data SPEC``)."""
        import dataclasses

        from .data import from_config
        from .data.memory import DATA_FILE, MEMORY_SOURCE, load_npz

        if self.config.data.source == MEMORY_SOURCE:
            saved = Path(self.path) / DATA_FILE
            if not saved.is_file():
                what = "is a pretrained model whose in-memory data was not shipped with it" if self.pretrained else "was trained on in-memory data that was not saved with it"
                raise VaelabError(f"{self.path} {what}", "give the images with --data SPEC; in Python, pass an ImageSet")
            return load_npz(saved)
        return from_config(dataclasses.replace(self.config.data, **overrides))

    def metrics(self) -> list[dict]:
        """The rows of metrics.jsonl: one per epoch."""
        return read_metrics(self.path)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.model.parameters()).device

    # -- notebook helpers --------------------------------------------------------------------------------
    def as_model_input(self, x: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Float (N, C, H, W) in [0, 1] from an ImageSet, or an array/tensor in any layout `from_arrays` takes
        (floats in [0, 1] are used as they are, not rounded to 8 bits)."""
        from .data import ImageSet, to_float
        from .data.arrays import _layout, _pixels
        from .data.memory import _as_numpy

        if isinstance(x, ImageSet):
            images, labels = to_float(x.images), x.labels
        else:
            arr = _layout(_as_numpy(x, "the images"), "the images", self.model.image_shape[1])
            arr = arr[:, :3] if arr.shape[1] == 4 else arr
            if arr.dtype.kind == "f" and arr.size and np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1:
                images = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
            else:
                images = to_float(torch.from_numpy(np.ascontiguousarray(_pixels(arr, "the images"))))
            labels = None
        if tuple(images.shape[1:]) != tuple(self.model.image_shape):
            raise VaelabError(f"the images have shape {tuple(images.shape[1:])} but the model takes {tuple(self.model.image_shape)} (C, H, W)", "resize them to the model's size and channels")
        return images.to(self.device), labels

    def _labels(self, labels: Any, n: int, given: torch.Tensor | None) -> torch.Tensor | None:
        if not self.model.conditional:
            return None
        y = given if labels is None else torch.as_tensor(np.asarray(labels)).long().flatten()
        if y is None or len(y) != n:
            raise VaelabError("this conditional model needs one class label per image", "pass labels=... (class indices)")
        return y.to(self.device)

    @torch.no_grad()
    def encode(self, x: Any, labels: Any = None, batch_size: int = 1000) -> torch.Tensor:
        """Posterior means (N, D) of images (an ImageSet, or an array/tensor in any layout from_arrays takes)."""
        images, given = self.as_model_input(x)
        y = self._labels(labels, len(images), given)
        out = [self.model.encode(images[i : i + batch_size], None if y is None else y[i : i + batch_size]).mean for i in range(0, len(images), batch_size)]
        return torch.cat(out).cpu()

    @torch.no_grad()
    def reconstruct(self, x: Any, labels: Any = None, batch_size: int = 500) -> torch.Tensor:
        """Reconstructions (N, C, H, W) in [0, 1]: the decoded posterior means of images."""
        images, given = self.as_model_input(x)
        y = self._labels(labels, len(images), given)
        out = [self.model.reconstruct(images[i : i + batch_size], None if y is None else y[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        return torch.cat(out).cpu()

    @torch.no_grad()
    def decode(self, z: Any, labels: Any = None) -> torch.Tensor:
        """Images (N, C, H, W) in [0, 1] of latent points z (N, D)."""
        z = torch.as_tensor(np.asarray(z) if not isinstance(z, torch.Tensor) else z, dtype=torch.float32).to(self.device)
        if z.ndim != 2 or z.shape[1] != self.model.latent_dim:
            raise VaelabError(f"z has shape {tuple(z.shape)}", f"give points of shape (N, {self.model.latent_dim})")
        return self.model.generate(z, self._labels(labels, len(z), None)).cpu()

    @torch.no_grad()
    def sample(self, n: int = 16, labels: Any = None, seed: int | None = 0, temperature: float = 1.0) -> torch.Tensor:
        """`n` images (N, C, H, W) in [0, 1] from the model's prior (class `labels[i]` for a conditional model)."""
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        return self.model.sample(n, labels=labels, generator=g, temperature=temperature).cpu()

    def latents(self, split: str = "val", samples: int = 0):
        """Latent means (or `samples` posterior draws) of one split of the run's data, with labels (a `Latents`)."""
        from .latent.encode import encode

        return encode(self, split=split, samples=samples)

    def evaluate(self, split: str | None = None, **kwargs: Any) -> dict:
        """Every number of `vaelab evaluate` (kwargs: see `evaluate.run.evaluate_run`), without writing files."""
        from .evaluate.run import evaluate_run

        kwargs.setdefault("fid", False)
        return evaluate_run(self, split=split, **kwargs)

    def save_pretrained(self, folder: str | Path, include_data: bool = False) -> Path:
        """Write this run as a pretrained folder: config.json, model.safetensors, README.md card, eval results.

        ``include_data``: ship the images of a run trained on in-memory data (its data.npz) too, so the
        folder works in every command without ``--data``."""
        from .pretrained import save_pretrained

        return save_pretrained(
            self.model, folder, config=self.config, class_names=self.class_names, run_dir=self.path, epoch=self.epoch, step=self.step,
            include_data=include_data,
        )

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload this run as a pretrained folder to the Hugging Face Hub (needs huggingface_hub and a login)."""
        from .pretrained import push_to_hub

        return push_to_hub(
            self.model, repo_id, config=self.config, class_names=self.class_names, run_dir=self.path, epoch=self.epoch, step=self.step, **kwargs
        )

    # -- notebook display --------------------------------------------------------------------------------
    def _summary(self) -> list[tuple[str, str]]:
        m = self.model.cfg
        c, h, w = self.model.image_shape
        family = f"{'conditional ' if m.conditional else ''}{m.arch}, latent {m.latent_dim}, {m.likelihood}, prior {m.prior}"
        rows = [("path", str(self.path)), ("model", family), ("images", f"{c}x{h}x{w}"), ("data", self.data_spec)]
        rows.append(("checkpoint", f"{self.checkpoint.name}, epoch {self.epoch}, step {self.step}"))
        if self.class_names:
            rows.append(("classes", f"{len(self.class_names)}: {', '.join(self.class_names[:10])}{' ...' if len(self.class_names) > 10 else ''}"))
        return rows

    def __repr__(self) -> str:
        rows = dict(self._summary())
        return f"Run({rows['path']!r}: {rows['model']}, {rows['images']} images of {rows['data']!r}, {rows['checkpoint']})"

    def _repr_html_(self) -> str:
        import html

        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in self._summary())
        return f"<table><caption style='text-align:left'><b>vaelab Run</b></caption>{body}</table>"


def model_from_checkpoint(state: dict, path: Path):
    """Rebuild the model a checkpoint describes and load its weights (errors name the file)."""
    from .models import build

    cfg = from_dict(state.get("config"), Config, where=f" in {path}")
    if cfg.model.image_size is None or cfg.model.channels is None:
        raise VaelabError(f"{path} does not say which image shape its model takes", "give a checkpoint written by 'vaelab train'")
    try:
        model = build(cfg.model)
    except VaelabError:
        raise
    except Exception as e:  # noqa: BLE001 - a forged or foreign config that no model can be built from
        raise VaelabError(f"{path} describes a model that cannot be built ({type(e).__name__}: {str(e)[:80]})", "give a checkpoint written by 'vaelab train'") from None
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as e:
        raise VaelabError(
            f"{path} does not fit the model its config describes ({str(e).splitlines()[0][:100]})",
            "the checkpoint comes from another model; use the run directory it was trained in",
        ) from None
    return cfg, model


def check_same_model(run_cfg: Config, ckpt_cfg: Config, ckpt: Path, run_dir: Path) -> None:
    """A checkpoint copied in from another run (another model) must not pass as this run's model."""
    from .config import to_dict

    mine, theirs = to_dict(run_cfg.model), to_dict(ckpt_cfg.model)
    diff = [k for k in mine if mine[k] != theirs.get(k) and not (mine[k] is None and k in ("image_size", "channels", "num_classes"))]
    if diff:
        keys = ", ".join(f"model.{k}" for k in diff[:4])
        raise VaelabError(
            f"{ckpt} holds another model than {run_dir / CONFIG_FILE} describes (differs in {keys})",
            "it was copied from another run; use the run directory the checkpoint was trained in",
        )


def load_run(path: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu") -> Run:
    """Rebuild a run from its directory (or a .ckpt file inside one), or from a pretrained folder:
    model with weights, config, data spec."""
    from .pretrained import is_pretrained_dir
    from .train.checkpoint import load_checkpoint

    path = Path(path)
    if path.is_dir() and not is_run_dir(path) and is_pretrained_dir(path):
        return _load_pretrained_run(path, checkpoint, device)
    if path.is_file() and path.suffix == ".ckpt":
        ckpt, run_dir = path, path.parent.parent
    else:
        run_dir = require_run_dir(path)
        ckpt = checkpoint_path(run_dir, checkpoint)
    state = load_checkpoint(ckpt)
    cfg, model = model_from_checkpoint(state, ckpt)
    if is_run_dir(run_dir):
        check_same_model(read_config(run_dir), cfg, ckpt, run_dir)
    model.to(device).eval()
    names = [str(n) for n in state.get("class_names") or []]
    return Run(run_dir, cfg, model, ckpt, int(state.get("epoch", 0)), int(state.get("step", 0)), names)


def _load_pretrained_run(path: Path, checkpoint: str, device) -> Run:
    """The run view of a pretrained folder (its one set of weights is both 'best' and 'last')."""
    from .pretrained import WEIGHTS, load_pretrained

    if checkpoint not in ("best", "last"):
        raise VaelabError(f"{path} is a pretrained folder with one set of weights, so --checkpoint {checkpoint} does not apply", "drop --checkpoint")
    cfg, model, info = load_pretrained(path, device=device)
    names = [str(n) for n in info.get("class_names") or []]
    return Run(path, cfg, model, path / WEIGHTS, int(info.get("epoch") or 0), int(info.get("step") or 0), names)
