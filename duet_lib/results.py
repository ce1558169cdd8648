"""Chapter-side bookkeeping: output folders, metrics JSON and saved figures.

A chapter resolves its ``output_dir`` parameter with :func:`resolve_output_dir`, saves
its key numbers with :func:`save_metrics` (the book runner copies them into
``build/results/`` and ``summary.md``) and its figures with :func:`save_figure`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from duet_lib.paths import build_dir

METRICS_FILE = "metrics.json"


def resolve_output_dir(
    output_dir: str | Path | None, chapter: str, profile: str
) -> Path:
    """``output_dir`` if given, else ``build/outputs/<chapter>/<profile>``; created."""
    path = Path(output_dir) if output_dir else build_dir("outputs", chapter, profile)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _plain(value: Any) -> Any:
    """Convert numpy / torch scalars and containers into JSON-ready values."""
    if (
        hasattr(value, "item")
        and callable(value.item)
        and getattr(value, "ndim", 0) == 0
    ):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write JSON through a temporary file and ``os.replace`` (no torn files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(_plain(obj), fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_metrics(output_dir: str | Path, metrics: dict[str, Any]) -> Path:
    """Merge ``metrics`` into ``<output_dir>/metrics.json`` and return its path."""
    path = Path(output_dir) / METRICS_FILE
    current = json.loads(path.read_text()) if path.is_file() else {}
    current.update(_plain(metrics))
    return write_json_atomic(path, current)


def save_figure(fig: Any, output_dir: str | Path, name: str) -> Path:
    """Save a matplotlib figure as ``<output_dir>/figures/<name>.svg``."""
    path = Path(output_dir) / "figures" / f"{name}.svg"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path
