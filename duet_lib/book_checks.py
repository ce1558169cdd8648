"""Checks that keep the chapter pairs honest (used by the test suite).

- :func:`pair_problems`: the ``.py`` and ``.ipynb`` halves of a chapter have the same
  cells (types, sources, tags) and the notebook is stripped (no outputs, null execution
  counts, only the generic ``python3`` kernelspec and the jupytext block in its
  metadata, no papermill traces).
- :func:`parameter_cell_problems`: exactly one ``parameters`` cell, literals only.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

ALLOWED_NOTEBOOK_METADATA = {"kernelspec", "jupytext", "language_info"}


def _cells(nb: Any) -> list[tuple[str, str, tuple[str, ...]]]:
    out = []
    for cell in nb.cells:
        tags = tuple(cell.get("metadata", {}).get("tags", []) or [])
        out.append((cell.cell_type, cell.source.strip(), tags))
    return out


def pair_problems(py_path: Path, ipynb_path: Path) -> list[str]:
    """Everything that is wrong with one chapter pair; empty when it is in order."""
    import jupytext

    problems: list[str] = []
    if not py_path.is_file():
        return [f"{py_path.name}: missing (its pair {ipynb_path.name} exists)"]
    if not ipynb_path.is_file():
        return [f"{ipynb_path.name}: missing (its pair {py_path.name} exists)"]
    raw = json.loads(ipynb_path.read_text())
    for i, cell in enumerate(raw.get("cells", [])):
        if cell.get("cell_type") == "code":
            if cell.get("outputs"):
                problems.append(f"{ipynb_path.name}: cell {i} has outputs")
            if cell.get("execution_count") is not None:
                problems.append(f"{ipynb_path.name}: cell {i} has an execution count")
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            problems.append(
                f"{ipynb_path.name}: cell {i} is a papermill injected-parameters cell"
            )
        extra = set(cell.get("metadata", {})) - {"tags"}
        if extra:
            problems.append(
                f"{ipynb_path.name}: cell {i} carries metadata {sorted(extra)}"
            )
    meta = raw.get("metadata", {})
    extra_meta = set(meta) - ALLOWED_NOTEBOOK_METADATA
    if extra_meta:
        problems.append(
            f"{ipynb_path.name}: notebook metadata has {sorted(extra_meta)}"
        )
    if meta.get("kernelspec", {}).get("name") != "python3":
        problems.append(f"{ipynb_path.name}: kernelspec must be the generic 'python3'")

    from_py = _cells(jupytext.read(py_path))
    from_nb = _cells(jupytext.read(ipynb_path))
    if len(from_py) != len(from_nb):
        problems.append(
            f"{py_path.stem}: out of sync: {len(from_py)} cells in .py, {len(from_nb)} in .ipynb"
        )
    for i, (a, b) in enumerate(zip(from_py, from_nb, strict=False)):
        if a != b:
            what = "type" if a[0] != b[0] else "tags" if a[2] != b[2] else "source"
            problems.append(
                f"{py_path.stem}: out of sync at cell {i} ({what} differs); "
                "run `jupytext --sync` on the pair"
            )
            break
    return problems


def parameter_cell_problems(ipynb_path: Path) -> list[str]:
    """Exactly one cell tagged ``parameters``, holding only ``name = literal`` lines."""
    import jupytext

    nb = jupytext.read(ipynb_path)
    cells = [
        c for c in nb.cells if "parameters" in (c.get("metadata", {}).get("tags") or [])
    ]
    if len(cells) != 1:
        return [
            f"{ipynb_path.name}: {len(cells)} cells tagged 'parameters' (need exactly 1)"
        ]
    problems = []
    try:
        tree = ast.parse(cells[0].source)
    except SyntaxError as exc:
        return [f"{ipynb_path.name}: parameters cell does not parse: {exc}"]
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            problems.append(
                f"{ipynb_path.name}: parameters cell line {node.lineno} is not `name = literal`"
            )
            continue
        try:
            ast.literal_eval(node.value)
        except ValueError:
            problems.append(
                f"{ipynb_path.name}: parameter on line {node.lineno} is not a literal"
            )
    return problems


def parameter_names(ipynb_path: Path) -> list[str]:
    """Names assigned in a chapter's parameters cell."""
    import jupytext

    nb = jupytext.read(ipynb_path)
    for cell in nb.cells:
        if "parameters" in (cell.get("metadata", {}).get("tags") or []):
            tree = ast.parse(cell.source)
            return [
                n.targets[0].id
                for n in tree.body
                if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
            ]
    return []
