"""The Python entry point: `fit(config, data)` trains from a notebook exactly as ``vaelab train`` does.

    import vaelab
    data = vaelab.ImageSet.from_arrays(x_train, labels=y_train)        # NumPy or torch, uint8 or [0, 1] floats
    run = vaelab.fit({"model.latent_dim": 2, "train.epochs": 5}, data)  # same run directory, progress, resume
    run.latents("val").z, run.reconstruct(x_train[:8]), run.sample(16)

The same run directory, progress bar, checkpoints and exact resume as the CLI (it calls the same
`train.fit`). Data given from Python is recorded as ``data.source: memory`` and kept in ``RUN_DIR/data.npz``
(``save_data=False`` to not keep it), so `evaluate`, `plot`, `report` and `classify` score those images and
never another data set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import Config
from .errors import VaelabError
from .run import Run


def make_config(config: Any = None) -> Config:
    """A validated `Config` from None (the defaults), a Config, a YAML path, a mapping (nested, or dotted
    keys such as ``{"model.latent_dim": 2}``), or a list of ``"key=value"`` strings as on the command line."""
    import copy

    from .config import all_keys, from_dict, load_config, set_dotted, validate

    if config is None:
        return validate(Config())
    if isinstance(config, Config):
        return validate(copy.deepcopy(config))
    if isinstance(config, (str, Path)) and "=" not in str(config):
        return load_config(config)
    if isinstance(config, str):
        config = [config]
    if isinstance(config, Mapping):
        data: dict = {}
        valid = set(all_keys())
        for key, value in _flat_items(config):
            if key not in valid:
                from .config import _unknown_key

                raise _unknown_key(key)
            set_dotted(data, key, value)
        return validate(from_dict(data))
    if isinstance(config, Sequence) and all(isinstance(c, str) for c in config):
        return load_config(None, list(config))
    raise VaelabError(
        f"cannot make a config of a {type(config).__name__}",
        'give a Config, a YAML path, a dict such as {"model.latent_dim": 2}, or ["model.latent_dim=2"]',
    )


def _flat_items(mapping: Mapping, prefix: str = ""):
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _flat_items(v, key + ".")
        else:
            yield key, v


def fit(
    config: Any = None,
    data: Any = None,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    save_data: bool = True,
    quiet: bool = False,
) -> Run:
    """Train a VAE from Python and return the trained `Run` (best checkpoint, eval mode).

    ``config``: see `make_config` (with ``resume=True``: overrides of the run's own config, e.g.
    ``{"train.epochs": 20}``). ``data``: an `ImageSet` (``ImageSet.from_arrays``), an image array or tensor,
    a pair ``(images, labels)``, a torch ``Dataset`` of (image, label) pairs, or a data spec string such as
    ``"fashion-mnist"``; None uses the config's ``data.source`` (or, on resume, the data the run kept).
    In-memory data goes through the config's data steps (classes, validation split, limit, size) and is
    kept in ``RUN_DIR/data.npz`` unless ``save_data=False``. ``run_dir``: where the run goes (default
    ``out_dir/name``); ``resume=True`` continues that run exactly where its last checkpoint stopped.
    """
    from .data import ImageSet
    from .data.memory import MEMORY_SOURCE, as_imageset, prepare
    from .run import load_run
    from .train import fit as train_fit

    if resume:
        cfg = _resume_config(run_dir, config)
    else:
        cfg = make_config(config)
    prepared: ImageSet | None = None
    if isinstance(data, str):
        cfg.data.source = data
    elif data is not None:
        prepared = prepare(as_imageset(data), cfg.data)
        if resume and cfg.data.source != MEMORY_SOURCE:
            raise VaelabError(f"{run_dir} was trained on data.source '{cfg.data.source}', not on in-memory data", "resume it without data=")
        cfg.data.source = MEMORY_SOURCE
    result = train_fit(cfg, data=prepared, run_dir=run_dir, resume=resume, quiet=quiet, save_data=prepared is not None and save_data)
    return load_run(result["run_dir"])


def _resume_config(run_dir: str | Path | None, overrides: Any) -> Config:
    """The run's own config.yaml with overrides applied (as ``vaelab train --resume RUN key=value``)."""
    from .config import apply_overrides, from_dict, load_yaml, validate
    from .run import CONFIG_FILE
    from .train.rundir import check_resumable

    if run_dir is None:
        raise VaelabError("resume=True needs the run directory", "vaelab.fit(run_dir='runs/NAME', resume=True)")
    if isinstance(overrides, Config):
        raise VaelabError("with resume=True, config gives overrides of the run's own config", 'give a dict such as {"train.epochs": 20}, or nothing')
    items: list[str] = []
    if isinstance(overrides, Mapping):
        import yaml

        items = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}" for k, v in _flat_items(overrides)]
    elif isinstance(overrides, str):
        items = [overrides]
    elif overrides is not None:
        items = list(overrides)
    data = load_yaml(check_resumable(run_dir) / CONFIG_FILE)
    return validate(from_dict(apply_overrides(data, items)))
