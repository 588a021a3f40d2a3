"""The one place where a study calls the evaluation, classification and report libraries.

Each trial is an ordinary run directory, so its evaluation is the same file `vaelab evaluate RUN` writes
(``RUN/eval/test.json``), its classification the one of `vaelab classify RUN --method M`
(``RUN/classify/M.json``) and its report ``RUN/report.html``. The functions are imported lazily: a
study that does not ask for them never imports them, and one that asks for a missing one fails with
a clear message before any trial starts.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import VaelabError

# (module, function) of each step. The function takes the loaded `Run` and returns the JSON-able dict
# of the contract in HELPERS.md; if it writes the file itself, the file it wrote is kept.
EVALUATE = ("vaelab.evaluate.run", "evaluate_run")
CLASSIFY = ("vaelab.sweep.steps", "classify_and_save")
REPORT = ("vaelab.report", "build_report")

EVAL_DIR = "eval"
CLASSIFY_DIR = "classify"
REPORT_FILE = "report.html"


def eval_path(run_dir: str | Path, split: str | None = None) -> Path:
    """RUN/eval/<split>.json; without a split, the test evaluation (or val's, for data with no test split)."""
    folder = Path(run_dir) / EVAL_DIR
    if split is None:
        split = "val" if not (folder / "test.json").is_file() and (folder / "val.json").is_file() else "test"
    return folder / f"{split}.json"


def classify_path(run_dir: str | Path, method: str) -> Path:
    return Path(run_dir) / CLASSIFY_DIR / f"{method}.json"


def report_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / REPORT_FILE


def _find(target: tuple[str, str]) -> Callable | None:
    module, name = target
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            return None  # the module is not part of this install; an import error inside it is a bug: raise
        raise
    return getattr(mod, name, None)


def _require(target: tuple[str, str], flag: str) -> Callable:
    fn = _find(target)
    if fn is None:
        raise VaelabError(
            f"{flag} needs {target[0]}.{target[1]}, which this vaelab install does not have",
            f"update vaelab, or run the sweep without {flag}",
        )
    return fn


def check_available(evaluate: bool, classify: list[str] | tuple[str, ...]) -> None:
    """Fail before any trial starts when a requested step's library function is missing."""
    if evaluate:
        _require(EVALUATE, "--evaluate")
    if classify:
        _require(CLASSIFY, "--classify")


def _write_json(path: Path, data: dict) -> None:
    from ..train.checkpoint import atomic_write

    text = json.dumps(data, indent=2, default=_jsonable)
    atomic_write(path, lambda f: f.write(text.encode()))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return value.tolist()
    return str(value)


def evaluate_trial(run_dir: str | Path, split: str = "test", disentanglement: float = 0.0) -> dict:
    """Evaluate a trial's best checkpoint on `split` (val when its data has no test split), writing
    RUN/eval/<split>.json and <split>_per_image.npz as `vaelab evaluate` does; with `disentanglement` > 0
    (a share of the metrics' sample sizes) and data with factors, also the disentanglement metrics."""
    from ..evaluate.report import json_bytes, npz_bytes
    from ..run import load_run
    from ..train.checkpoint import atomic_write

    fn = _require(EVALUATE, "--evaluate")
    run = load_run(run_dir)
    result = fn(run, split=None if split == "test" else split)  # None: test, else val
    if isinstance(result, dict):
        from ..evaluate.disentangle_run import disentanglement_of_run, total_correlation_of_run

        # the total correlation of the aggregate posterior (no factors needed): beside the active units
        data = run.data()
        part = data.split(result.get("split") or ("test" if data.has_split("test") else "val"))
        result["total_correlation"] = total_correlation_of_run(run, part)
        if disentanglement > 0:
            result["disentanglement"] = disentanglement_of_run(run, scale=disentanglement)
    if not isinstance(result, dict):
        raise VaelabError(f"{EVALUATE[0]}.{EVALUATE[1]} returned {type(result).__name__}, not a dict of metrics")
    split = result.get("split", split)
    if "per_image" in result:
        for name, data in ((f"{split}.json", json_bytes(result)), (f"{split}_per_image.npz", npz_bytes(result))):
            atomic_write(Path(run_dir) / EVAL_DIR / name, lambda f, d=data: f.write(d))
    else:
        _write_json(eval_path(run_dir, split), result)
    return result


def classify_and_save(run, method: str) -> dict:
    """`vaelab classify RUN --method M` with its defaults: fit, save the classifier, return the metrics."""
    from ..latent import classifiers, fewlabels

    result = fewlabels.classify(run, method)
    classifiers.save(result.classifier, fewlabels.classifier_path(run.path, method), run=run)
    return result.report


def classify_trial(run_dir: str | Path, method: str) -> dict:
    """Fit the latent classifier `method` with few labels; the result is (also) in RUN/classify/<method>.json."""
    from ..run import load_run

    fn = _require(CLASSIFY, "--classify")
    path = classify_path(run_dir, method)
    before = path.stat().st_mtime_ns if path.is_file() else None
    result = fn(load_run(run_dir), method=method)
    if not isinstance(result, dict):
        raise VaelabError(f"{CLASSIFY[0]}.{CLASSIFY[1]} returned {type(result).__name__}, not a dict of metrics")
    if not path.is_file() or path.stat().st_mtime_ns == before:
        _write_json(path, result)
    return result


def report_trial(run_dir: str | Path) -> Path | None:
    """Write RUN/report.html with the run report library when this install has it (else None)."""
    from ..run import load_run
    from ..train.checkpoint import atomic_write

    fn = _find(REPORT)
    if fn is None:
        return None
    path = report_path(run_dir)
    result = fn(load_run(run_dir))
    if isinstance(result, str):
        atomic_write(path, lambda f: f.write(result.encode("utf-8")))
    elif isinstance(result, (bytes, bytearray)):
        atomic_write(path, lambda f: f.write(bytes(result)))
    return path if path.is_file() else None


def has_report_library() -> bool:
    return _find(REPORT) is not None


# ---------------------------------------------------------------------------------------------------------
# before the first evaluation: the FID feature network (trained once per dataset and shape, then cached)


def base_data(plan):
    """The data of the study's base config (what the trials train on, unless a grid varies data.*)."""
    from ..config import from_dict
    from ..data import from_config

    return from_config(from_dict(plan.base).data)


def missing_feature_net(plan, data=None) -> dict | None:
    """When the study evaluates and no FID feature network is cached for its data and image shape yet:
    {spec, shape, path} of the one the first evaluation would train (minutes on a CPU); else None."""
    if not plan.evaluate:
        return None
    from ..evaluate.features import cache_path, find_cached

    data = data if data is not None else base_data(plan)
    spec = str(plan.base["data"]["source"])
    shape = (int(data.channels), int(data.image_size), int(data.image_size))
    if find_cached(spec, shape) is not None:
        return None
    return {"spec": spec, "shape": shape, "path": cache_path(spec, shape)}


def train_feature_net(spec: str, shape: tuple[int, int, int], progress: Callable[[str], None] | None = None):
    """Train and cache the feature network the evaluations will use (as the first `vaelab evaluate` would)."""
    from ..evaluate.features import ensure_feature_net

    return ensure_feature_net(spec, shape, progress=progress)
