"""Where the book keeps caches, data and outputs.

Everything the book writes lands under the repository's ``build/`` (executed
notebooks, metrics, figures) or ``.cache/`` (generated worlds, pretrained tiny CLIP
checkpoints), both git-ignored. Environment variables move them:

- ``DUET_CACHE_DIR``: cache root (default ``<repo>/.cache``).
- ``DUET_DATA_DIR``: root of real datasets (default ``<cache>/data``).
- ``DUET_BUILD_DIR``: build root (default ``<repo>/build``).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def cache_dir(*parts: str) -> Path:
    """A folder under the cache root, created on demand."""
    root = Path(os.environ.get("DUET_CACHE_DIR", REPO_ROOT / ".cache"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir(name: str | None = None, data_root: str | Path | None = None) -> Path:
    """Root of a real dataset: ``data_root`` if given, else ``$DUET_DATA_DIR/<name>``."""
    if data_root is not None:
        return Path(data_root).expanduser()
    base = Path(os.environ.get("DUET_DATA_DIR", cache_dir("data")))
    return base / name if name else base


def build_dir(*parts: str) -> Path:
    """A folder under the build root, created on demand."""
    root = Path(os.environ.get("DUET_BUILD_DIR", REPO_ROOT / "build"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_chairv2() -> Path | None:
    """The real QMUL-Chair-V2 copy, if present.

    Looked up in ``DUET_CHAIRV2_ROOT``, then ``../shared/data/qmul-chairv2`` beside the
    repository, then ``$DUET_DATA_DIR/chairv2``. Returns None when none holds the
    Coordinate pickle.
    """
    candidates = []
    if os.environ.get("DUET_CHAIRV2_ROOT"):
        candidates.append(Path(os.environ["DUET_CHAIRV2_ROOT"]))
    candidates.append(REPO_ROOT.parent / "shared" / "data" / "qmul-chairv2")
    candidates.append(data_dir("chairv2"))
    for cand in candidates:
        if (cand / "ChairV2_Coordinate").is_file() and (cand / "photo").is_dir():
            return cand
    return None
