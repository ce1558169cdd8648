"""Tests for duet_lib.checkpoint: atomic saves, safe loads, config hashes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from duet_lib.checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    atomic_write,
    config_hash,
    load_checkpoint,
    save_checkpoint,
)

ROOT = Path(__file__).resolve().parents[2]


def _sample() -> dict:
    gen = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    return {
        "model": layer.state_dict(),
        "step": 120,
        "lr": 3e-4,
        "name": "duet",
        "done": False,
        "best": None,
        "history": [0.9, 0.7, torch.randn(2, generator=gen)],
        "pair": (1, "a"),
        "nested": {"a": {"b": torch.arange(5)}, 3: "int key"},
    }


def _assert_same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert a == b and type(a) is type(b)


def test_round_trip_creates_parents_and_leaves_no_temp_files(tmp_path):
    obj = _sample()
    path = tmp_path / "deep" / "er" / "ckpt.pt"
    returned = save_checkpoint(obj, path)
    assert returned == path and path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pt"]
    _assert_same(obj, load_checkpoint(path))


def test_loaded_state_dict_restores_a_model(tmp_path):
    torch.manual_seed(1)
    source, copy = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    save_checkpoint({"model": source.state_dict()}, tmp_path / "m.pt")
    copy.load_state_dict(load_checkpoint(tmp_path / "m.pt")["model"])
    x = torch.randn(2, 4)
    torch.testing.assert_close(source(x), copy(x))


def test_overwrite_replaces_content(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"step": 1}, path)
    save_checkpoint({"step": 2}, path)
    assert load_checkpoint(path) == {"step": 2}


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"step": 1}, path)

    def broken(handle):
        handle.write(b"partial bytes")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    assert load_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_save_rejects_content_weights_only_cannot_load(tmp_path):
    with pytest.raises(CheckpointError, match="must be a dict"):
        save_checkpoint([1, 2], tmp_path / "a.pt")
    with pytest.raises(
        CheckpointError, match=r"checkpoint\['stats'\]\['mean'\].*numpy"
    ):
        save_checkpoint({"stats": {"mean": np.zeros(3)}}, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="Path"):
        save_checkpoint({"root": Path("/tmp")}, tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []


def test_missing_file_is_a_file_not_found_and_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="not found") as info:
        load_checkpoint(tmp_path / "nope.pt")
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "directory"])
def test_damaged_files_raise_checkpoint_error(tmp_path, damage):
    path = tmp_path / "c.pt"
    save_checkpoint(_sample(), path)
    data = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint " * 20)
    else:
        path.unlink()
        path.mkdir()
    with pytest.raises(CheckpointError, match=str(path.name)):
        load_checkpoint(path)


def test_non_dict_content_is_rejected(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(path)


def _leave_mark(marker: str) -> dict:
    Path(marker).write_text("code ran")
    return {}


class _Trap:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_leave_mark, (self.marker,))


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    torch.save({"x": _Trap(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_checkpoint(path)
    assert not marker.exists()


def test_config_hash_is_order_free_and_sensitive_to_values():
    cfg = {"lr": 1e-4, "model": {"embed": 128, "layers": 4}, "sizes": (96, 96)}
    same = {"sizes": [96, 96], "model": {"layers": 4, "embed": 128}, "lr": 1e-4}
    h = config_hash(cfg)
    assert len(h) == 12 and all(c in "0123456789abcdef" for c in h)
    assert config_hash(same) == h
    assert config_hash({**cfg, "lr": 2e-4}) != h
    assert config_hash({**cfg, "model": {"embed": 128, "layers": 5}}) != h
    assert config_hash({"flag": True}) != config_hash({"flag": 1})
    assert config_hash({"p": Path("a/b")}) == config_hash({"p": "a/b"})
    assert config_hash({"n": np.int64(3)}) == config_hash({"n": 3})


def test_config_hash_is_stable_across_processes():
    cfg = {"b": [1, 2.5, "x"], "a": {"z": None, "y": True}}
    code = f"from duet_lib.checkpoint import config_hash;print(config_hash({cfg!r}))"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == config_hash(cfg)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"lr": float("nan")}, "non-finite"),
        ({1: "a"}, "must be strings"),
        ({"obj": object()}, "not JSON-like"),
        (["not", "a", "dict"], "expects a dict"),
    ],
)
def test_config_hash_rejects_values_without_a_canonical_form(cfg, message):
    with pytest.raises(ValueError, match=message):
        config_hash(cfg)
