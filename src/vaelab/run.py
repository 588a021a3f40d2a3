"""Run directories: what a training run writes, and `load_run` to rebuild it with no flags.

    RUN_DIR/
      config.yaml          the full resolved config (model sizes filled in from the data)
      metrics.jsonl        one line per epoch: train/val loss terms, lr, grad norm, time
      checkpoints/         last.ckpt (every epoch), best.ckpt (best validation loss)
      tensorboard/         scalars and image grids
      images/              recon_epoch_N.png, samples_epoch_N.png
      latents/             validation latent means per epoch (for the scatter animation)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import Config, from_dict, load_yaml
from .errors import VaelabError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def require_run_dir(path: str | Path) -> Path:
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
    if which not in ("best", "last"):
        raise VaelabError(f"checkpoint '{which}' is neither best, last nor an existing file", "use --checkpoint best, last or the path of a .ckpt file")
    folder = run_dir / CHECKPOINTS
    order = ["best", "last"] if which == "best" else [which]
    for name in order:
        p = folder / f"{name}.ckpt"
        if p.is_file():
            return p
    raise VaelabError(f"{run_dir} has no checkpoint yet", "train it first (vaelab train), or resume it with --resume")


def read_config(run_dir: str | Path) -> Config:
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


@dataclass
class Run:
    """A trained run: its folder, config, model (weights loaded, eval mode) and training position."""

    path: Path
    config: Config
    model: torch.nn.Module
    checkpoint: Path
    epoch: int
    step: int
    class_names: list[str] = field(default_factory=list)  # the labels' names, as in training

    @property
    def data_spec(self) -> str:
        return self.config.data.source

    def data(self, **overrides):
        """The run's data, loaded as in training (overrides: DataConfig fields)."""
        import dataclasses

        from .data import from_config

        return from_config(dataclasses.replace(self.config.data, **overrides))

    def metrics(self) -> list[dict]:
        return read_metrics(self.path)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


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
    """Rebuild a run from its directory (or a .ckpt file inside one): model with weights, config, data spec."""
    from .train.checkpoint import load_checkpoint

    path = Path(path)
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
