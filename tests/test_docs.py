"""The documentation site builds with `mkdocs build --strict`: every page in the nav, no broken link, the API
reference generated from the docstrings."""

from __future__ import annotations

import os
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
