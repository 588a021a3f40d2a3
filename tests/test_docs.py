"""The documentation site builds with `mkdocs build --strict`: every page in the nav, no broken link, the API
reference generated from the docstrings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]



def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("material", reason="mkdocs-material is not installed (pip install -e '.[docs]')")
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src")},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    pages = {p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("index.html")}
    assert {"index.html", "workflows/index.html", "results/index.html"} <= pages


def _guide():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import make_notebook
    finally:
        sys.path.pop(0)
    return make_notebook, (ROOT / "docs" / "python.md").read_text()


def test_notebook_matches_the_guide():
    make_notebook, text = _guide()
    assert (ROOT / "docs" / "python_guide.ipynb").read_text() == make_notebook.render(text), (
        "docs/python_guide.ipynb is stale: run python docs/make_notebook.py"
    )


def test_python_guide_runs_as_written(tmp_path, monkeypatch):
    """Every code cell of the Python guide, in order, in an empty folder: what a notebook user runs."""
    make_notebook, text = _guide()
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    code = [t for kind, t in make_notebook.cells(text) if kind == "code"]
    assert len(code) >= 6
    for i, cell in enumerate(code):
        exec(compile(cell, f"python.md cell {i}", "exec"), namespace)  # noqa: S102
    assert namespace["run"].epoch == 4
    assert tuple(namespace["samples"].shape) == (16, 1, 16, 16)
    assert (tmp_path / "bands-vae" / "model.safetensors").is_file()
    assert 0.0 <= namespace["fitted"].report["accuracy"] <= 1.0


# ---------------------------------------------------------------------------------------------------------
# the short README: the families, every command, and links that land (mkdocs checks the docs' links to pages,
# but an anchor that went away with a moved heading is only an INFO there, and nothing checks the README)

LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """The anchor of a heading, as mkdocs' toc (and GitHub, for these plain headings) writes it."""
    text = re.sub(r"[^\w\s-]", "", heading).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+?)\s*$", text, re.M)}


def _broken_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    bad = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{page.name}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{page.name}: {target} (no heading #{anchor})")
    return bad


def test_readme_and_docs_links_land_on_a_file_and_a_heading():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    bad = [b for page in pages for b in _broken_links(page)]
    assert not bad, bad
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {t.partition("#")[0] for t in LINK.findall(readme)}
    nav = re.findall(r"^\s+- [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert {f"docs/{page}" for page in nav} <= linked, "the README links every page of the docs"


def test_readme_lists_every_model_family_with_its_reference():
    from vaelab.config import FAMILIES

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for key, entries in FAMILIES.items():
        for value, text in entries.items():
            line = next((ln for ln in readme.splitlines() if f"`{key}={value}`" in ln), None)
            assert line is not None, f"README has no line for {key}={value}"
            refs = re.findall(r"\(([^()]*\d{4}[^()]*)\)", text)  # the reference(s) in the registry's line
            assert all(ref in line for ref in refs), (line, refs)


def test_readme_tour_shows_every_command():
    import typer

    from vaelab.cli import app

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    group = typer.main.get_command(app)
    names = []
    for name, cmd in group.commands.items():
        subs = getattr(cmd, "commands", None)
        names += [f"{name} {sub}" for sub in subs] if subs else [name]
    missing = [n for n in names if not re.search(rf"`vaelab {n}[ `]", readme)]
    assert not missing, f"the README's tour has no example of: {missing}"
