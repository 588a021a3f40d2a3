"""A study plan: the base config, what varies (``--grid`` product, named variants, seeds, or a search
space), and one trial config per grid point.

A study file is an ordinary config with an extra ``sweep:`` section::

    sweep:
      seeds: 1
      evaluate: true
      variants:                        # named models, each a set of overrides of the base config
        - {name: mlp-z2-b0.5, overrides: {model.beta: 0.5}}
        - {name: conv-z2, overrides: {model: {arch: conv}}}
      grid: {model.latent_dim: [2, 10]}  # crossed with the variants (same as --grid on the command line)
      search: {trials: 20, space: {train.lr: {low: 1e-4, high: 1e-2, log: true}}}

The section is popped before the rest is parsed as a `Config`, so everything else reads as usual.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import (
    Config,
    _unknown_key,
    all_keys,
    apply_overrides,
    flatten,
    from_dict,
    load_yaml,
    set_dotted,
    to_dict,
    validate,
)
from ..errors import VaelabError

SWEEP_KEYS = ("variants", "grid", "seeds", "evaluate", "classify", "search", "disentanglement")
SEARCH_KEYS = ("trials", "space", "prune_warmup", "prune_startup")
# keys the study sets itself for each trial
RESERVED = ("name", "out_dir")
# Ranges `--search` samples when the study file gives no `search.space`: learning rate (log-uniform),
# KL weight and latent size (log scale, so small values get as many trials as large ones).
DEFAULT_SPACE: dict[str, dict] = {
    "train.lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "model.beta": {"low": 0.25, "high": 4.0, "log": True},
    "model.latent_dim": {"low": 2, "high": 32, "log": True},
}


@dataclass(frozen=True)
class TrialSpec:
    """One trial of a grid study: its directory name (also its key in the Optuna study) and overrides."""

    name: str
    point: str  # the grid point without the seed: trials of one point are averaged over seeds
    overrides: dict[str, Any]  # dotted key -> value, applied to the base config in this order
    seed: int  # train.seed of this trial
    variant: str | None = None


@dataclass
class StudyPlan:
    """Everything that defines a study (hashed into its fingerprint) plus how to run it (not hashed)."""

    name: str
    base: dict  # the full base config (a `Config` as a dict), with command-line overrides applied
    grid: dict[str, list] = field(default_factory=dict)  # key -> values, crossed in this order
    variants: list[dict] = field(default_factory=list)  # [{"name": str, "overrides": {dotted: value}}]
    seeds: int = 1
    search: dict | None = None  # {"trials", "space", "prune_warmup", "prune_startup"} in --search mode
    evaluate: bool = False
    classify: list[str] = field(default_factory=list)
    disentanglement: float = 0.0  # > 0: evaluation adds the disentanglement metrics at this share of their sample sizes
    source: str | None = None  # the YAML file it came from (for the report)

    @property
    def is_search(self) -> bool:
        return self.search is not None

    def identity(self) -> dict:
        """What makes two studies the same study: not the run options (evaluate, classify, source)."""
        base = {k: v for k, v in self.base.items() if k not in RESERVED}
        if isinstance(base.get("train"), dict):  # the experiment tracker does not change what a trial is
            base["train"] = {k: v for k, v in base["train"].items() if k not in ("logger", "logger_project")}
        return {"base": base, "grid": self.grid, "variants": self.variants, "seeds": self.seeds, "search": self.search}

    def fingerprint(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def optuna_name(self) -> str:
        """The Optuna study name: one study per (name, fingerprint) even in a shared database."""
        return f"vaelab-{self.name}-{self.fingerprint()[:10]}"

    def trials(self) -> list[TrialSpec]:
        """The grid trials in run order (empty in search mode: Optuna proposes those)."""
        if self.is_search:
            return []
        return expand(self.grid, self.variants, self.seeds, int(self.base["train"]["seed"]))

    def varied_keys(self) -> list[str]:
        """The config keys that differ between trials (columns of the results table)."""
        keys: list[str] = []
        for v in self.variants:
            keys += [k for k in v["overrides"] if k not in keys]
        keys += [k for k in self.grid if k not in keys]
        if self.search:
            keys += [k for k in self.search["space"] if k not in keys]
        return keys

    def trial_config(self, overrides: dict[str, Any], name: str, trials_dir: str | Path) -> Config:
        """The validated config of one trial: base + overrides, written to trials_dir/name."""
        data = copy.deepcopy(self.base)
        for key, value in overrides.items():
            set_dotted(data, key, value)
        data["name"] = name
        data["out_dir"] = str(trials_dir)
        try:
            return validate(from_dict(data, Config))
        except VaelabError as e:
            raise VaelabError(f"trial {name}: {e.message}", e.hint) from None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> StudyPlan:
        return cls(**data)


# ---------------------------------------------------------------------------------------------------------
# config keys and values


def key_type(key: str) -> Any:
    """The annotated type of a dotted config key (``model.latent_dim`` -> int)."""
    cls: Any = Config
    *parents, last = key.split(".")
    for p in parents:
        cls = typing.get_type_hints(cls)[p]
    tp = typing.get_type_hints(cls)[last]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if len(args) == 1 and typing.get_origin(tp) is not list else tp


def check_key(key: str, where: str) -> str:
    """A dotted key that a study may vary, or a clear error with the closest valid key."""
    key = key.strip()
    if key in RESERVED:
        raise VaelabError(f"'{key}' cannot be varied{where}", "the study names each trial and puts it in STUDY/trials/")
    if key not in all_keys():
        raise _unknown_key(key, where)
    return key


def parse_grid(texts: list[str] | None) -> dict[str, list]:
    """``["model.beta=0.5,1,4", "model.hidden=[64],[128,64]"]`` -> ``{"model.beta": [0.5, 1, 4], ...}``.

    The value list is read as a YAML flow sequence, so lists and strings work: ``model.arch=mlp,conv``.
    """
    grid: dict[str, list] = {}
    for text in texts or []:
        if "=" not in text:
            raise VaelabError(f"--grid '{text}' is not KEY=V1,V2,...", "write it like --grid model.beta=0.5,1,4")
        key, _, raw = text.partition("=")
        key = check_key(key, " in --grid")
        if key in grid:
            raise VaelabError(f"--grid gives '{key}' twice", "put all its values in one --grid KEY=V1,V2,...")
        if not raw.strip():
            raise VaelabError(f"--grid {key}= has an empty value list", f"give at least one value: --grid {key}=V1,V2")
        try:
            values = yaml.safe_load(f"[{raw}]")
        except yaml.YAMLError:
            raise VaelabError(f"--grid {key}={raw} is not a comma-separated list of values", "write it like --grid model.beta=0.5,1,4") from None
        grid[key] = _check_values(key, values, " in --grid")
    return grid


def _check_values(key: str, values: Any, where: str) -> list:
    if not isinstance(values, list):
        values = [values]
    if not values:
        raise VaelabError(f"'{key}'{where} has an empty value list", f"give at least one value for {key}")
    if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
        raise VaelabError(f"'{key}'{where} lists a value twice: {values}", "give each value once")
    return values


def _value_name(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"{value:g}".replace("+", "") if isinstance(value, float) else str(value)
    if isinstance(value, (list, tuple)):
        return "x".join(_value_name(v) for v in value)
    return re.sub(r"[^A-Za-z0-9.-]+", "-", str(value)).strip("-.") or "none"


def _short_names(keys: list[str]) -> dict[str, str]:
    """``model.beta`` -> ``beta`` unless two varied keys share their last part (then the full key)."""
    tails = [k.split(".")[-1] for k in keys]
    return {k: (t if tails.count(t) == 1 else k.replace(".", "-")) for k, t in zip(keys, tails, strict=True)}


def short_names(keys: list[str]) -> dict[str, str]:
    return _short_names(keys)


def expand(grid: dict[str, list], variants: list[dict], seeds: int, base_seed: int = 0) -> list[TrialSpec]:
    """The product variants x grid values x seeds, each with a readable unique name.

    Names: ``<variant>_<key>-<value>_..._seed<i>``; parts that do not vary are left out (one variant and
    no grid gives the variant's name; a grid alone gives ``beta-0.5_latent_dim-2``).
    """
    short = _short_names(list(grid))
    points: list[tuple[str, dict, str | None]] = []
    for variant in variants or [None]:
        for combo in itertools.product(*grid.values()) if grid else [()]:
            overrides = dict(variant["overrides"]) if variant else {}
            parts = [variant["name"]] if variant else []
            for key, value in zip(grid, combo, strict=True):
                overrides[key] = value
                parts.append(f"{short[key]}-{_value_name(value)}")
            points.append(("_".join(parts) or "base", overrides, variant["name"] if variant else None))
    names = [p[0] for p in points]
    if len(set(names)) != len(names):  # values that differ only in characters a folder name cannot hold
        points = [(f"{n}-{i}", o, v) for i, (n, o, v) in enumerate(points)]
    specs = []
    for point, overrides, variant in points:
        for s in range(seeds):
            seed = base_seed + s
            name = f"{point}_seed{s}" if seeds > 1 else point
            specs.append(TrialSpec(name, point, {**overrides, **({"train.seed": seed} if seeds > 1 else {})}, seed, variant))
    return specs


# ---------------------------------------------------------------------------------------------------------
# the sweep: section of a study file


def _flat_overrides(data: Any, where: str) -> dict[str, Any]:
    """A variant's overrides as dotted keys; nested mappings (``model: {beta: 4}``) are flattened."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise VaelabError(f"overrides{where} must be a mapping of config keys, got {data!r}", "write e.g. overrides: {model.beta: 0.5}")
    return {check_key(k, where): v for k, v in flatten(data).items()}


def _parse_variants(items: Any, where: str) -> list[dict]:
    if items is None:
        return []
    if not isinstance(items, list) or not items:
        raise VaelabError(f"sweep.variants{where} must be a non-empty list of {{name, overrides}}")
    variants, seen = [], set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "name" not in item:
            raise VaelabError(f"sweep.variants[{i}]{where} needs a name", "write - {name: mlp-z2, overrides: {model.latent_dim: 2}}")
        extra = set(item) - {"name", "overrides"}
        if extra:
            raise VaelabError(f"sweep.variants[{i}]{where} has unknown key(s) {sorted(extra)}", "a variant has only name and overrides")
        name = str(item["name"])
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise VaelabError(f"variant name '{name}'{where} is not a valid folder name", "use letters, digits, '.', '_' and '-'")
        if name in seen:
            raise VaelabError(f"variant name '{name}'{where} is used twice", "give each variant its own name")
        seen.add(name)
        variants.append({"name": name, "overrides": _flat_overrides(item.get("overrides"), f" in variant '{name}'{where}")})
    return variants


def _parse_space(space: Any, where: str) -> dict[str, dict]:
    if space is None:
        return copy.deepcopy(DEFAULT_SPACE)
    if not isinstance(space, dict) or not space:
        raise VaelabError(f"sweep.search.space{where} must map config keys to {{low, high, log}} or {{choices}}")
    out = {}
    for key, spec in space.items():
        key = check_key(str(key), f" in sweep.search.space{where}")
        if not isinstance(spec, dict):
            raise VaelabError(f"sweep.search.space.{key}{where} must be {{low, high, log}} or {{choices: [...]}}")
        if "choices" in spec:
            out[key] = {"choices": _check_values(key, spec["choices"], f" in sweep.search.space{where}")}
            continue
        try:
            low, high = float(spec["low"]), float(spec["high"])
        except (KeyError, TypeError, ValueError):
            raise VaelabError(f"sweep.search.space.{key}{where} needs numbers low and high") from None
        log = bool(spec.get("log", False))
        if not low < high or (log and low <= 0):
            raise VaelabError(f"sweep.search.space.{key}{where} has low={low:g}, high={high:g}", "low must be below high (and above 0 with log: true)")
        if key_type(key) not in (int, float):
            raise VaelabError(f"sweep.search.space.{key}{where} is not a number key", "give it choices: [...] instead of low/high")
        out[key] = {"low": low, "high": high, "log": log}
    return out


def read_study_file(path: str | Path | None) -> tuple[dict, dict]:
    """A study YAML -> (config mapping, sweep section). The ``sweep:`` key is popped before the config is
    parsed, so the rest must be an ordinary config."""
    if path is None:
        return {}, {}
    data = load_yaml(path)
    section = data.pop("sweep", None) or {}
    if not isinstance(section, dict):
        raise VaelabError(f"'sweep' in {path} must be a mapping", "give it variants:, grid:, seeds:, search: ...")
    for key in section:
        if key not in SWEEP_KEYS:
            import difflib

            close = difflib.get_close_matches(str(key), SWEEP_KEYS, n=1)
            hint = f"did you mean 'sweep.{close[0]}'?" if close else f"the keys are: {', '.join(SWEEP_KEYS)}"
            raise VaelabError(f"unknown key 'sweep.{key}' in {path}", hint)
    from_dict(data, Config, where=f" in {path}")  # file errors name the file
    return data, section


def _metric_scale(value) -> float:
    """``sweep.disentanglement``: false/0 (off), true (disentanglement_lib's sample sizes) or a share of them."""
    if value is None or value is False:
        return 0.0
    if value is True:
        return 1.0
    if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:
        return float(value)
    raise VaelabError(f"'sweep.disentanglement' is {value!r}", "write true, false, or a share of the metrics' sample sizes such as 0.1")


def build_plan(
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    grid: list[str] | None = None,
    seeds: int | None = None,
    search: bool = False,
    trials: int | None = None,
    evaluate: bool | None = None,
    classify: list[str] | None = None,
) -> StudyPlan:
    """The plan of `vaelab sweep CONFIG [key=value ...] --grid ...`: command-line flags win over the
    file's ``sweep:`` section. Every trial config is built and validated here, before anything runs."""
    data, section = read_study_file(config)
    where = f" in {config}" if config else ""
    base = validate(from_dict(apply_overrides(data, overrides), Config))

    file_grid = section.get("grid") or {}
    if not isinstance(file_grid, dict):
        raise VaelabError(f"sweep.grid{where} must map config keys to value lists", "write grid: {model.beta: [0.5, 1, 4]}")
    merged = {check_key(str(k), f" in sweep.grid{where}"): _check_values(str(k), v, f" in sweep.grid{where}") for k, v in file_grid.items()}
    cli_grid = parse_grid(grid)
    merged.update(cli_grid)  # --grid replaces the file's values of the same key
    variants = _parse_variants(section.get("variants"), where)
    for v in variants:
        clash = [k for k in v["overrides"] if k in merged]
        if clash:
            raise VaelabError(f"'{clash[0]}' is set by variant '{v['name']}' and varied by the grid", "vary it in one place only")

    n_seeds = seeds if seeds is not None else section.get("seeds", 1)
    if not isinstance(n_seeds, int) or isinstance(n_seeds, bool) or n_seeds < 1:
        raise VaelabError(f"seeds is {n_seeds!r}, it must be a whole number >= 1", "use --seeds 3")

    search_cfg = None
    file_search = section.get("search")
    if search or (trials is not None):
        if not search:
            raise VaelabError("--trials only applies with --search", "add --search, or drop --trials")
        file_search = file_search or {}
        if not isinstance(file_search, dict):
            raise VaelabError(f"sweep.search{where} must be a mapping", f"keys: {', '.join(SEARCH_KEYS)}")
        bad = set(file_search) - set(SEARCH_KEYS)
        if bad:
            raise VaelabError(f"unknown key(s) {sorted(bad)} in sweep.search{where}", f"keys: {', '.join(SEARCH_KEYS)}")
        if variants:
            raise VaelabError("--search does not combine with named variants", "run the variants as a grid study, or search from one base config")
        n_trials = trials if trials is not None else file_search.get("trials", 20)
        if not isinstance(n_trials, int) or n_trials < 1:
            raise VaelabError(f"--trials is {n_trials!r}, it must be >= 1")
        if n_seeds != 1:
            raise VaelabError("--search picks one seed per trial", "drop --seeds, or run a grid study with --seeds")
        space = _parse_space(file_search.get("space"), where)
        for key, values in merged.items():  # grid keys become categorical choices of the search
            space[key] = {"choices": values}
        search_cfg = {
            "trials": n_trials,
            "space": space,
            "prune_warmup": int(file_search.get("prune_warmup", 2)),
            "prune_startup": int(file_search.get("prune_startup", 3)),
        }
        merged = {}

    cls = section.get("classify", [])
    cls = [cls] if isinstance(cls, str) else list(cls or [])
    plan = StudyPlan(
        name=base.name,
        base=to_dict(base),
        grid=merged,
        variants=variants,
        seeds=n_seeds,
        search=search_cfg,
        evaluate=bool(section.get("evaluate", False)) if evaluate is None else evaluate,
        classify=list(classify) if classify else cls,
        disentanglement=_metric_scale(section.get("disentanglement")),
        source=str(config) if config else None,
    )
    if not plan.is_search and not merged and not variants:
        if n_seeds == 1:
            raise VaelabError("nothing varies: give --grid KEY=V1,V2, a sweep: section with variants, --seeds N or --search",
                              "e.g. vaelab sweep CONFIG --grid model.beta=0.5,1,4")
    sources = {str(base.data.source)}
    for spec in plan.trials():  # every trial config must be valid before anything starts
        sources.add(plan.trial_config(spec.overrides, spec.name, "trials").data.source)
    if plan.disentanglement > 0:  # scoring disentanglement needs factors: say so before any training
        from ..evaluate.disentangle_run import may_have_factors

        for src in sorted(sources):
            if not may_have_factors(src):
                raise VaelabError(
                    f"sweep.disentanglement is set but data.source={src} has no ground-truth factors",
                    "use data with factors (dsprites, or an npz with a 'factors' array), or drop sweep.disentanglement",
                )
    if plan.is_search:
        _check_space_bounds(plan)
    return plan


def _check_space_bounds(plan: StudyPlan) -> None:
    """The ends of each search range must give valid configs (e.g. latent_dim >= 1)."""
    for key, spec in plan.search["space"].items():
        values = spec["choices"] if "choices" in spec else [spec["low"], spec["high"]]
        for v in values:
            if "choices" not in spec and key_type(key) is int:
                v = int(round(v))
            plan.trial_config({key: v}, "search-range", "trials")


def config_differences(a: dict, b: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ between two (nested) dicts."""
    fa, fb = flatten(a), flatten(b)
    keys = sorted(set(fa) | set(fb))
    return [k for k in keys if fa.get(k) != fb.get(k) and not any(k == i or k.startswith(i + ".") for i in ignore)]
