"""Pretrained folders: a trained model as ``config.json`` + ``model.safetensors`` + a ``README.md`` model card.

    PRETRAINED_DIR/
      config.json          the full config (every ModelConfig field; data and training as the run had them),
                           class names, epoch and step: `models.build` rebuilds the model from it alone
      model.safetensors    the model's state_dict (weights, buffers, learned prior and sampler state)
      README.md            model card: data, family, metrics from eval/, how to load
      eval/*.json          the run's evaluation results, when it had any
      metrics.jsonl        the run's training curves, when it had any
      data.npz             only on request (include_data): the images of a run trained on in-memory data

The diffusers `ModelMixin`/`ConfigMixin` idea: the constructor's config is saved beside the weights, so a
folder rebuilds itself. No pickle anywhere: JSON and safetensors only. A run directory and a pretrained
folder are two views of one trained model: `vaelab.load_run` (and so every command that takes a run)
accepts either. The Hugging Face Hub is used only when `huggingface_hub` is installed (extra ``hub``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import VaelabError

CONFIG_JSON = "config.json"
WEIGHTS = "model.safetensors"
CARD = "README.md"
FORMAT = "vaelab-pretrained-1"
_HUB_FILES = [CONFIG_JSON, WEIGHTS, CARD, "eval/*.json", "metrics.jsonl", "data.npz"]


def is_pretrained_dir(path: str | Path) -> bool:
    """A folder holding ``config.json`` and ``model.safetensors`` (written by `save_pretrained`)."""
    path = Path(path)
    return (path / CONFIG_JSON).is_file() and (path / WEIGHTS).is_file()


# ---------------------------------------------------------------------------------------------------------
# writing


def _weights_bytes(model: torch.nn.Module) -> bytes:
    """The state_dict as safetensors bytes (each tensor its own contiguous CPU copy: safetensors refuses shared memory)."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    return save(tensors, metadata={"format": "pt", "vaelab": FORMAT})


def save_pretrained(
    model: torch.nn.Module,
    folder: str | Path,
    *,
    config: Any = None,
    class_names: list[str] | None = None,
    run_dir: str | Path | None = None,
    epoch: int | None = None,
    step: int | None = None,
    include_data: bool = False,
) -> Path:
    """Write `model` as a pretrained folder (created; files replaced atomically) and return its path.

    ``config``: the run's full `Config` (default: one holding only the model's config, data unknown).
    ``run_dir``: a run directory whose ``eval/*.json`` and ``metrics.jsonl`` are copied and summarised
    (and its ``data.npz`` with ``include_data``).
    """
    from .config import Config, to_dict
    from .train.checkpoint import atomic_write

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise VaelabError(f"{folder} is a file", "give a folder to write the pretrained model into")
    data_known = config is not None
    if config is None:
        config = Config(model=model.cfg)
    info = {
        "format": FORMAT,
        "library": "vaelab",
        "vaelab_version": _version(),
        "config": to_dict(config),
        "data_known": data_known,
        "class_names": [str(c) for c in (class_names or [])],
        "epoch": epoch,
        "step": step,
    }
    info["config"]["model"] = to_dict(model.cfg)  # the model as built (sizes resolved), whatever the run's file says
    try:
        folder.mkdir(parents=True, exist_ok=True)
        weights = _weights_bytes(model)
        atomic_write(folder / WEIGHTS, lambda f: f.write(weights))
        text = json.dumps(info, indent=2) + "\n"
        atomic_write(folder / CONFIG_JSON, lambda f: f.write(text.encode("utf-8")))
        evals = _copy_run_files(Path(run_dir), folder, include_data) if run_dir is not None else _read_evals(folder)
        card = model_card({**info, "files": {"data": (folder / "data.npz").is_file()}}, evals)
        atomic_write(folder / CARD, lambda f: f.write(card.encode("utf-8")))
    except OSError as e:
        raise VaelabError(f"cannot write {e.filename or folder}: {e.strerror or e}", "choose a writable folder") from None
    return folder


def _copy_run_files(run_dir: Path, folder: Path, include_data: bool = False) -> dict[str, dict]:
    """Copy the run's eval/*.json and metrics.jsonl (and data.npz) into the folder; the evaluation results by split."""
    from .data.memory import DATA_FILE

    if run_dir.resolve() == folder.resolve():
        return _read_evals(folder)
    if include_data and (run_dir / DATA_FILE).is_file():
        shutil.copyfile(run_dir / DATA_FILE, folder / DATA_FILE)
    for p in sorted((run_dir / "eval").glob("*.json")):
        (folder / "eval").mkdir(exist_ok=True)
        shutil.copyfile(p, folder / "eval" / p.name)
    if (run_dir / "metrics.jsonl").is_file():
        shutil.copyfile(run_dir / "metrics.jsonl", folder / "metrics.jsonl")
    return _read_evals(folder)


def _read_evals(folder: Path) -> dict[str, dict]:
    out = {}
    for p in sorted((folder / "eval").glob("*.json")):
        try:
            result = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(result, dict) and "loss" in result:
            out[p.stem] = result
    return out


def _version() -> str:
    from . import __version__

    return __version__


# ---------------------------------------------------------------------------------------------------------
# the model card


def model_card(info: dict, evals: dict[str, dict]) -> str:
    """README.md of a pretrained folder: what the model is, what it was trained on, how well, how to load it."""
    cfg = info["config"]
    m, d = cfg["model"], cfg.get("data", {})
    names = info.get("class_names") or []
    shape = f"{m.get('channels')} x {m.get('image_size')} x {m.get('image_size')}"
    family = f"{m.get('arch')} VAE, latent {m.get('latent_dim')}, {m.get('likelihood')} likelihood, prior {m.get('prior')}"
    if m.get("conditional"):
        family = "conditional " + family
    lines = [
        "---",
        "library_name: vaelab",
        "tags:",
        "- vae",
        "- vaelab",
        "- image-generation",
        "---",
        "",
        f"# {cfg.get('name', 'vaelab model')}",
        "",
        f"A {family}, trained with vaelab on images of {shape} (C x H x W).",
        "",
        "## Data",
        "",
    ]
    if info.get("data_known", True):
        shipped = (info.get("files") or {}).get("data", False)
        memory = " (in-memory arrays, shipped here as data.npz)" if shipped else " (in-memory arrays, not shipped here)"
        lines.append(f"- source: `{d.get('source')}`" + (memory if d.get("source") == "memory" else ""))
        for key in ("classes", "image_size", "channels", "limit"):
            if d.get(key) is not None:
                lines.append(f"- data.{key}: `{d[key]}`")
    else:
        lines.append("- not recorded (saved from a model, not a run)")
    if names:
        lines.append(f"- {len(names)} classes: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
    if info.get("epoch") is not None:
        lines.append(f"- trained {info['epoch']} epochs ({info.get('step')} steps)")
    lines += ["", "## Family", "", "| model key | value |", "|---|---|"]
    lines += [f"| `model.{k}` | `{v}` |" for k, v in m.items()]
    lines += ["", "## Metrics", ""]
    if evals:
        from .evaluate.report import summary_rows

        for split, result in evals.items():
            lines += [f"From `eval/{split}.json` ({result.get('split', split)} split):", "", "| quantity | value |", "|---|---|"]
            try:
                rows = summary_rows(result)
            except (KeyError, TypeError):  # an older or foreign result: show what it has
                rows = [(k, str(v)) for k, v in result.items() if isinstance(v, (int, float))]
            lines += [f"| {k} | {v} |" for k, v in rows]
            lines.append("")
    else:
        lines += ["Not evaluated yet: `vaelab evaluate THIS_FOLDER` writes `eval/test.json`.", ""]
    lines += [
        "## How to load",
        "",
        "```python",
        "import vaelab",
        "",
        'model = vaelab.VAE.from_pretrained("THIS_FOLDER_OR_REPO_ID")   # an nn.Module, eval mode',
        "images = model.sample(16)                                     # (16, C, H, W) in [0, 1]",
        'run = vaelab.load_run("THIS_FOLDER")                           # the run view: data, latents, ...',
        "```",
        "",
        "Every vaelab command that takes a run takes this folder: `vaelab evaluate THIS_FOLDER`, "
        "`vaelab sample THIS_FOLDER`, `vaelab report THIS_FOLDER`. Weights are safetensors and the config is JSON: "
        "nothing here is unpickled.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# reading


def read_info(folder: str | Path) -> dict:
    """The parsed config.json of a pretrained folder, checked to be one vaelab wrote."""
    path = Path(folder) / CONFIG_JSON
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VaelabError(f"cannot read {path} ({type(e).__name__})", "give a folder written by save_pretrained or 'vaelab export'") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT or not isinstance(info.get("config"), dict):
        raise VaelabError(f"{path} is not a vaelab pretrained config", "give a folder written by save_pretrained or 'vaelab export'")
    return info


def load_pretrained(folder: str | Path, device: str | torch.device = "cpu"):
    """(Config, model in eval mode, info dict) of a local pretrained folder."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .config import Config, from_dict
    from .models import build

    folder = Path(folder)
    info = read_info(folder)
    cfg = from_dict(info["config"], Config, where=f" in {folder / CONFIG_JSON}")
    if not info.get("data_known", True):
        from .data.memory import MEMORY_SOURCE

        cfg.data.source = MEMORY_SOURCE  # unknown data: commands ask for --data instead of guessing
    try:
        model = build(cfg.model)
    except VaelabError:
        raise
    except Exception as e:  # noqa: BLE001 - a config no model can be built from
        raise VaelabError(f"{folder / CONFIG_JSON} describes a model that cannot be built ({type(e).__name__}: {str(e)[:80]})", "give a folder written by save_pretrained") from None
    try:
        state = load_file(str(folder / WEIGHTS), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise VaelabError(f"cannot read {folder / WEIGHTS} ({str(e)[:80]})", "the file is damaged; download or export it again") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise VaelabError(
            f"{folder / WEIGHTS} does not fit the model config.json describes ({str(e).splitlines()[0][:100]})",
            "the weights come from another model; export the folder again",
        ) from None
    return cfg, model.to(device).eval(), info


def local_folder(name_or_path: str | Path, revision: str | None = None) -> Path:
    """A local pretrained folder: the path itself, or a Hub repo id ('owner/name') downloaded into the HF cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not is_pretrained_dir(path):
            raise VaelabError(f"{path} is not a pretrained folder (no {CONFIG_JSON} and {WEIGHTS})", "give a folder written by save_pretrained or 'vaelab export'")
        return path
    text = str(name_or_path)
    if path.exists() or text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise VaelabError(f"pretrained folder not found: {name_or_path}", "give a folder written by save_pretrained, or a Hub repo id owner/name")
    hub = _hub()
    try:
        return Path(hub.snapshot_download(repo_id=text, revision=revision, allow_patterns=_HUB_FILES))
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, gated: one line, whatever the hub raised
        raise VaelabError(f"cannot download {text} from the Hugging Face Hub ({type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''})", "check the repo id and the network, or give a local folder") from None


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise VaelabError("the Hugging Face Hub needs huggingface_hub", "pip install 'vaelab[hub]' (or give a local folder)") from None
    return huggingface_hub


def push_to_hub(model: torch.nn.Module, repo_id: str, *, private: bool = False, token: str | None = None, commit_message: str = "Upload vaelab model", **save_kwargs) -> str:
    """Save the model as a pretrained folder and upload it to the Hub repo `repo_id` (created if missing); its URL."""
    hub = _hub()
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp, **save_kwargs)
        try:
            api = hub.HfApi(token=token)
            api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
            info = api.upload_folder(folder_path=tmp, repo_id=repo_id, commit_message=commit_message)
        except Exception as e:  # noqa: BLE001 - network, auth: one line
            raise VaelabError(f"cannot push to {repo_id} ({type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''})", "log in with 'hf auth login' and check the network") from None
    return str(getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}")


class PretrainedMixin:
    """`save_pretrained`, `from_pretrained` and `push_to_hub` for the VAE (diffusers' ModelMixin, in small)."""

    def save_pretrained(self, folder: str | Path, **kwargs: Any) -> Path:
        """Write config.json, model.safetensors and a README.md model card into `folder`; see `pretrained.save_pretrained`."""
        return save_pretrained(self, folder, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, revision: str | None = None, device: str | torch.device = "cpu"):
        """The model of a pretrained folder, or of a Hub repo id when huggingface_hub is installed (eval mode).

        A run directory works too (its best checkpoint): the two are views of one trained model."""
        from .run import is_run_dir, load_run

        if is_run_dir(Path(name_or_path).expanduser()):
            return load_run(Path(name_or_path).expanduser(), device=device).model
        _, model, _ = load_pretrained(local_folder(name_or_path, revision), device=device)
        return model

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload the pretrained folder to the Hugging Face Hub (needs huggingface_hub and a login)."""
        return push_to_hub(self, repo_id, **kwargs)  # type: ignore[arg-type]
