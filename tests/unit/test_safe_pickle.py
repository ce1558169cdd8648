"""Tests for duet_lib.data.safe_pickle: only NumPy arrays come out, nothing runs."""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess

import numpy as np
import pytest

from duet_lib.data.safe_pickle import (
    CorruptPickleError,
    SafePickleError,
    UnsafePickleError,
    safe_load,
)


class _Payload:
    """Pickles as a call of ``func(*args)`` (what a malicious file does)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _arrays() -> dict:
    rng = np.random.default_rng(0)
    return {
        "/train/chair_a_v1_1": rng.normal(size=(7, 3)),
        "/test/b_2": np.asfortranarray(rng.normal(size=(4, 3))),
        "ints": np.arange(5, dtype=np.int32),
        "nested": [np.zeros((2, 2), dtype=np.float32), ("label", 3)],
    }


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_dict_of_arrays_round_trips(protocol, tmp_path):
    data = _arrays()
    path = tmp_path / "arrays.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    for source in (path, str(path), path.read_bytes()):
        out = safe_load(source)
        assert set(out) == set(data)
        for key in ("/train/chair_a_v1_1", "/test/b_2", "ints"):
            np.testing.assert_array_equal(out[key], data[key])
            assert out[key].dtype == data[key].dtype
        np.testing.assert_array_equal(out["nested"][0], data["nested"][0])
        assert out["nested"][1] == ("label", 3)


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_os_system_payload_is_refused_and_never_runs(protocol, tmp_path):
    marker = tmp_path / "ran"
    blob = pickle.dumps(
        {"/train/x_1": _Payload(os.system, f"touch {marker}")}, protocol=protocol
    )
    # Control: the plain unpickler really would run it.
    pickle.loads(blob)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(UnsafePickleError, match=r"refused global \w+\.system"):
        safe_load(blob)
    assert not marker.exists()


@pytest.mark.parametrize(
    "func,args",
    [
        (builtins.eval, ("1 + 1",)),
        (builtins.__import__, ("os",)),
        (subprocess.check_output, (["true"],)),
        (np.load, ("somefile.npy",)),
    ],
)
def test_other_globals_are_refused_by_name(func, args):
    blob = pickle.dumps(_Payload(func, *args), protocol=4)
    with pytest.raises(UnsafePickleError) as info:
        safe_load(blob)
    assert func.__name__ in str(info.value)
    assert isinstance(info.value, ValueError)


def test_numpy_scalars_and_object_arrays_are_refused():
    with pytest.raises(UnsafePickleError, match="scalar"):
        safe_load(pickle.dumps(np.float64(1.5)))
    with pytest.raises(UnsafePickleError, match="Python objects"):
        safe_load(pickle.dumps(np.array([1, "a"], dtype=object)))


def test_codecs_encode_only_for_latin1():
    # Protocol 0 stores array bytes via _codecs.encode(text, "latin1"): allowed above.
    blob = b"c_codecs\nencode\n(Vabc\nVutf-8\ntR."
    with pytest.raises(UnsafePickleError, match="latin-1"):
        safe_load(blob)


def test_truncated_and_garbage_pickles_give_clear_errors(tmp_path):
    blob = pickle.dumps(_arrays(), protocol=3)
    for cut in (1, 20, len(blob) // 2, len(blob) - 1):
        with pytest.raises(CorruptPickleError, match="truncated|ends early|malformed"):
            safe_load(blob[:cut])
    with pytest.raises(CorruptPickleError, match="empty"):
        safe_load(b"")
    with pytest.raises(CorruptPickleError):
        safe_load(b"\x80\x03this is not a pickle at all")
    # An array whose shape (7,) does not match its 6-element byte payload.
    good = pickle.dumps(np.arange(6.0), protocol=3)
    bad = good.replace(b"K\x06\x85", b"K\x07\x85", 1)  # BININT1 6, TUPLE1
    assert bad != good
    with pytest.raises(CorruptPickleError, match="size") as info:
        safe_load(bad)
    assert isinstance(info.value, SafePickleError)
    with pytest.raises(FileNotFoundError, match="not found"):
        safe_load(tmp_path / "missing.pkl")
