"""Safe checkpoint files: atomic writes, ``weights_only`` loads, config hashes.

A checkpoint is a plain ``dict`` whose leaves are tensors, numbers, strings, booleans
or ``None``, nested in lists, tuples and dicts. That is exactly what
``torch.load(..., weights_only=True)`` accepts, so loading a checkpoint never runs
code from the file. Writes go to a temporary file in the target folder, are flushed
and fsynced, then renamed over the target with :func:`os.replace`, so an
interrupted run leaves either the old file or the new one, never half of one.

:func:`config_hash` names cached artefacts (a pretrained tiny CLIP, a trained duet
stage) after the configuration that produced them, so a pipeline chapter can skip
work whose result already exists. Introduced in chapter 09.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "atomic_write",
    "config_hash",
    "load_checkpoint",
    "save_checkpoint",
]

_SCALARS = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read as a plain dict of tensors."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist (also a :class:`FileNotFoundError`)."""


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file so that readers see either the old or the complete new version.

    ``write`` receives a binary file object opened on a temporary file in the same
    folder as ``path``. The file is then flushed, fsynced and moved over ``path``
    with :func:`os.replace` (atomic on POSIX and Windows within one file system).
    Missing parent folders are created. On any error the temporary file is
    removed and ``path`` is left untouched.

    Args:
        path: destination file.
        write: callable that writes the whole content to the file object it gets.

    Returns:
        The destination as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target}: is a directory, expected a file path")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(target.parent)
    return target


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (best effort; not every platform allows it)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _check_content(obj: Any, where: str) -> None:
    """Raise CheckpointError at the first value ``weights_only`` loading would reject."""
    if isinstance(obj, (torch.Tensor, *_SCALARS)):
        return
    if isinstance(obj, Mapping):
        if not isinstance(obj, dict):
            raise CheckpointError(
                f"{where}: {type(obj).__name__} is not a dict; convert it with dict()"
            )
        for key, value in obj.items():
            if not isinstance(key, str | int):
                raise CheckpointError(
                    f"{where}: dict key {key!r} has type {type(key).__name__}; "
                    "use str or int keys"
                )
            _check_content(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            _check_content(value, f"{where}[{i}]")
        return
    hint = ""
    if type(obj).__module__ == "numpy":
        hint = " (convert numpy values with torch.from_numpy() or .item())"
    raise CheckpointError(
        f"{where}: values of type {type(obj).__module__}.{type(obj).__qualname__} "
        "cannot be stored in a weights-only checkpoint; use tensors, numbers, "
        f"strings, lists and dicts{hint}"
    )


def save_checkpoint(obj: dict, path: str | os.PathLike) -> Path:
    """Save a checkpoint dict atomically with :func:`torch.save`.

    The content is checked first, so a file that :func:`load_checkpoint` could not
    read is never written. Typical content::

        {"model": model.state_dict(), "step": 1200, "config": cfg,
         "config_hash": config_hash(cfg), "metrics": {"val_acc@1": 0.31}}

    Args:
        obj: a dict whose leaves are tensors, numbers, strings, booleans or None,
            nested in lists, tuples and dicts with str or int keys.
        path: destination file; parent folders are created.

    Returns:
        The destination path.

    Raises:
        CheckpointError: ``obj`` is not a dict or holds a value that a weights-only
            load would refuse (numpy arrays, arbitrary objects, ...).
    """
    if not isinstance(obj, dict):
        raise CheckpointError(f"a checkpoint must be a dict, got {type(obj).__name__}")
    _check_content(obj, "checkpoint")
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device | None = "cpu"
) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Uses ``torch.load(..., weights_only=True)``: no code stored in the file runs.

    Args:
        path: checkpoint file.
        map_location: where tensors are placed (default ``"cpu"``).

    Returns:
        The stored dict.

    Raises:
        CheckpointNotFoundError: ``path`` does not exist.
        CheckpointError: ``path`` is a folder, empty, truncated, corrupt, holds
            objects other than tensors and plain containers, or holds a non-dict.
    """
    source = Path(path)
    if not source.exists():
        raise CheckpointNotFoundError(f"checkpoint not found: {source}")
    if source.is_dir():
        raise CheckpointError(f"{source}: is a directory, expected a checkpoint file")
    if source.stat().st_size == 0:
        raise CheckpointError(f"{source}: checkpoint file is empty (0 bytes)")
    try:
        obj = torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if "weights only load failed" in first_line.lower():
            raise CheckpointError(
                f"{source}: holds objects other than tensors, numbers, strings, lists "
                "and dicts, or is not a torch checkpoint; refusing to unpickle it"
            ) from err
        raise CheckpointError(f"{source}: corrupt checkpoint ({first_line})") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"{source}: corrupt or truncated checkpoint, cannot be read by torch.load "
            f"({type(err).__name__})"
        ) from err
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{source}: expected a dict checkpoint, found {type(obj).__name__}"
        )
    return obj


def _canonical(value: Any, where: str) -> Any:
    """Turn a config into JSON-ready values with one spelling per meaning."""
    if isinstance(value, bool | type(None) | str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(
                f"config {where}: non-finite float {value!r} cannot be hashed"
            )
        return value
    if isinstance(value, os.PathLike):
        return Path(value).as_posix()
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(
                    f"config {where}: key {key!r} is a {type(key).__name__}; "
                    "config keys must be strings"
                )
            out[key] = _canonical(item, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_canonical(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if type(value).__module__ == "numpy" and hasattr(value, "item") and value.ndim == 0:
        return _canonical(value.item(), where)
    raise ValueError(
        f"config {where}: value of type {type(value).__name__} is not JSON-like; "
        "use numbers, strings, booleans, None, lists and dicts"
    )


def config_hash(cfg: dict) -> str:
    """Stable 12-hex-digit name for a configuration.

    The config is written as canonical JSON (keys sorted, no spaces, ASCII only,
    tuples as lists, paths as POSIX strings, numpy scalars as Python numbers) and
    hashed with SHA-256; the first 12 hex digits are returned. Equal configs give
    equal hashes across runs, processes and key orders.

    Args:
        cfg: dict of parameters (string keys; JSON-like values).

    Returns:
        12 lowercase hex characters, e.g. ``"3f9a0c2b71de"``.

    Raises:
        ValueError: ``cfg`` is not a dict, has a non-string key, a non-finite float
            or a value with no JSON form.
    """
    if not isinstance(cfg, Mapping):
        raise ValueError(f"config_hash expects a dict, got {type(cfg).__name__}")
    text = json.dumps(
        _canonical(cfg, "cfg"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]
