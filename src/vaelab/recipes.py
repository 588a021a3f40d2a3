"""The configs that ship inside the package: find one by name, list them with one line each.

In a checkout, ``src/vaelab/configs`` is a link to the repository's ``configs/`` folder, so every YAML file
put there is packaged (a wheel copies the files; nothing lists them one by one). `vaelab train NAME`,
`vaelab config show NAME` and `vaelab sweep NAME` find ``NAME.yaml`` here when no such file exists
where they run; ``configs/NAME.yaml`` outside a checkout reads the packaged copy too, so the README's
commands work from any folder after a plain ``pip install``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Recipe:
    name: str  # the file name without .yaml: what `vaelab train NAME` takes
    path: Path
    description: str  # the first sentence of the file's leading comment
    study: bool  # has a sweep: section (run it with `vaelab sweep NAME`)


def configs_dir() -> Path:
    """The folder of the shipped configs (inside the installed package, or the checkout's configs/)."""
    return Path(str(files("vaelab") / "configs"))


def names() -> list[str]:
    folder = configs_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())


def packaged(name: str) -> Path | None:
    """The shipped config called ``name`` (with or without .yaml), else None."""
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix in SUFFIXES else name
    if not stem or "/" in stem or "\\" in stem or stem.startswith("."):
        return None
    for suffix in SUFFIXES:
        path = configs_dir() / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def resolve(path: str | Path) -> Path:
    """A config argument -> the file to read: the path itself when it is a file, else the shipped config of
    that name (``fashion-mlp-z2``, ``fashion-mlp-z2.yaml`` or ``configs/fashion-mlp-z2.yaml``), else the
    path unchanged (the caller reports it missing)."""
    p = Path(path)
    if p.is_file():  # a folder of that name (a run called fashion-mlp-z2) does not hide the config
        return p
    parts = p.parts
    if len(parts) == 1 or (len(parts) == 2 and parts[0] == "configs"):
        found = packaged(parts[-1])
        if found is not None:
            return found
    return p


def suggestion(path: str | Path) -> str | None:
    """The shipped config name closest to a missing config argument, if one is close."""
    close = difflib.get_close_matches(Path(path).stem, names(), n=1, cutoff=0.6)
    return close[0] if close else None


def describe(path: Path) -> Recipe:
    """A shipped config's name, the first sentence of its leading comment, and whether it is a study."""
    lines = path.read_text(encoding="utf-8").splitlines()
    comment = []
    for line in lines:
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not text and comment:
            break
        comment.append(text)
    text = _first_sentence(" ".join(t for t in comment if t))
    study = any(line.startswith("sweep:") for line in lines)
    return Recipe(path.stem, path, text or "(no description)", study)


def _first_sentence(text: str, width: int = 110) -> str:
    """Up to the first full stop outside parentheses (not an 'et al.'), shortened at a comma past ``width``."""
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch == "." and depth == 0 and (i + 1 == len(text) or text[i + 1] == " ") and not text[:i].endswith(" al"):
            text = text[:i]
            break
    text = text.rstrip(" :.")
    if len(text) > width:
        cut = max(text.rfind(", ", 0, width), text.rfind(": ", 0, width), text.rfind("; ", 0, width))
        text = (text[:cut] if cut > width // 2 else text[:width].rstrip()) + " ..."
    return text


def recipes() -> list[Recipe]:
    """Every shipped config, by name."""
    return [describe(configs_dir() / f"{n}{s}") for n in names() for s in SUFFIXES if (configs_dir() / f"{n}{s}").is_file()]


__all__ = ["Recipe", "configs_dir", "describe", "names", "packaged", "recipes", "resolve", "suggestion"]
