"""Write docs/python_guide.ipynb from docs/python.md: markdown between the code blocks becomes markdown
cells, each ```python block one code cell. Run it after editing the guide; a test keeps the two in step."""

from __future__ import annotations

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
BLOCK = re.compile(r"```python\n(.*?)```\n", re.S)


def cells(markdown: str) -> list[tuple[str, str]]:
    """[(kind, text)] in order: ('markdown', ...) and ('code', ...)."""
    out, pos = [], 0
    for m in BLOCK.finditer(markdown):
        text = markdown[pos : m.start()].strip()
        if text:
            out.append(("markdown", text))
        out.append(("code", m.group(1).rstrip("\n")))
        pos = m.end()
    if markdown[pos:].strip():
        out.append(("markdown", markdown[pos:].strip()))
    return out


def notebook(markdown: str) -> dict:
    def cell(kind: str, text: str) -> dict:
        lines = text.splitlines(keepends=True)
        base = {"cell_type": kind, "metadata": {}, "source": lines}
        return {**base, "execution_count": None, "outputs": []} if kind == "code" else base

    return {
        "cells": [cell(k, t) for k, t in cells(markdown)],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def render(markdown: str) -> str:
    return json.dumps(notebook(markdown), indent=1) + "\n"


if __name__ == "__main__":
    (HERE / "python_guide.ipynb").write_text(render((HERE / "python.md").read_text()))
    print(HERE / "python_guide.ipynb")
