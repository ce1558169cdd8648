"""Read pickled NumPy arrays without running arbitrary code.

The QMUL-V2 "Coordinate" files (chapter 01) are Python pickles: a dict from sketch
keys to (N, 3) float64 arrays. ``pickle.load`` on a file from the internet can run
any callable the file names, so the book never calls it directly. Instead
:func:`safe_load` uses an unpickler that resolves only the handful of globals NumPy
needs to rebuild plain numeric arrays:

* ``numpy.core.multiarray._reconstruct`` (and its NumPy 2 home
  ``numpy._core.multiarray._reconstruct``), ``numpy.ndarray`` and ``numpy.dtype``:
  what pickle protocols 0 to 4 write for an array, and all that the ChairV2 file uses;
* ``numpy.core.numeric._frombuffer`` / ``numpy._core.numeric._frombuffer``: what
  protocol 5 writes instead of ``_reconstruct``;
* ``_codecs.encode``, restricted to the latin-1 codec: how protocols 0 to 2 store
  the raw bytes of an array.

Dicts, lists, tuples, strings and numbers need no globals at all. Arrays of Python
objects (``dtype=object``) are refused too, so the result holds numbers and strings
only. Any other global raises :class:`UnsafePickleError` before it is called.
"""

from __future__ import annotations

import codecs
import io
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy._core import multiarray as _multiarray
from numpy._core import numeric as _numeric

__all__ = [
    "ALLOWED_GLOBALS",
    "CorruptPickleError",
    "SafePickleError",
    "UnsafePickleError",
    "safe_load",
]


class SafePickleError(ValueError):
    """Base class for pickles that :func:`safe_load` will not return."""


class UnsafePickleError(SafePickleError):
    """The pickle names a global outside the allow-list (it is never called)."""


class CorruptPickleError(SafePickleError):
    """The bytes are not a complete, well-formed pickle (truncated, empty, garbled)."""


def _checked_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype`` that refuses object dtypes (they could hold any Python object)."""
    dt = np.dtype(*args)
    if dt.hasobject:
        raise UnsafePickleError(
            f"refused numpy.dtype({args[0]!r}): arrays of Python objects are not allowed"
        )
    return dt


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` limited to latin-1, the only use NumPy makes of it."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise UnsafePickleError(
            f"refused _codecs.encode with encoding {encoding!r} (only latin-1 is used "
            "by NumPy array pickles)"
        )
    return codecs.encode(text, "latin-1")


#: (module, name) -> the object the unpickler hands out for it.
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _checked_dtype,
    ("_codecs", "encode"): _latin1_encode,
}

# Errors that a malformed byte stream can raise from inside the unpickler or from
# NumPy's reconstruction functions.
_CORRUPT_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    AttributeError,
    OverflowError,
    UnicodeDecodeError,
    struct.error,
)


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(sorted(f"{m}.{n}" for m, n in ALLOWED_GLOBALS))
            raise UnsafePickleError(
                f"refused global {module}.{name}: only NumPy array reconstruction is "
                f"allowed ({allowed})"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refused persistent id {pid!r}")


def safe_load(source: str | Path | bytes | bytearray | memoryview) -> Any:
    """Unpickle a file or a byte string, allowing only NumPy array reconstruction.

    Args:
        source: path to a pickle file, or the pickle bytes themselves.

    Returns:
        The unpickled object, made of dicts, lists, tuples, strings, numbers and
        numeric ``numpy.ndarray`` values only (for QMUL-V2: ``dict[str, ndarray]``
        with (N, 3) float64 arrays).

    Raises:
        FileNotFoundError: ``source`` is a path that does not exist.
        UnsafePickleError: the pickle names a global outside :data:`ALLOWED_GLOBALS`
            or holds an object-dtype array; nothing it names is called.
        CorruptPickleError: the data are empty, truncated or otherwise malformed.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        label = f"<{len(data)} bytes>"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"pickle file not found: {path}")
        data = path.read_bytes()
        label = str(path)
    if not data:
        raise CorruptPickleError(f"{label}: empty file, not a pickle")
    try:
        return _AllowListUnpickler(io.BytesIO(data), encoding="latin1").load()
    except SafePickleError as exc:
        raise type(exc)(f"{label}: {exc}") from None
    except (EOFError, pickle.UnpicklingError) as exc:
        if isinstance(exc, pickle.UnpicklingError) and "truncated" not in str(exc):
            raise CorruptPickleError(
                f"{label}: malformed pickle ({type(exc).__name__}: {exc})"
            ) from None
        raise CorruptPickleError(
            f"{label}: pickle ends early (truncated file? {len(data)} bytes read)"
        ) from None
    except _CORRUPT_ERRORS as exc:
        raise CorruptPickleError(
            f"{label}: malformed pickle ({type(exc).__name__}: {exc})"
        ) from None
