"""Vector sketches in the QMUL "Coordinate" format, and their rasterisation.

A sketch is a float array of shape (N, 3): columns x, y on a 256 x 256 canvas and a
pen flag that is 1 on the **last point of each stroke** (0 elsewhere). Real QMUL-V2
sketches and the procedural world's sketches (chapter 01) share this format and this
rasteriser, so a model sees both through the same code.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 256  # QMUL coordinates live on a 256 x 256 canvas


class StrokeError(ValueError):
    """A stroke array that is not a usable sketch."""


def validate_strokes(strokes: np.ndarray, name: str = "sketch") -> np.ndarray:
    """Check one sketch and return it as float64 (N, 3).

    Raises:
        StrokeError: wrong shape, non-finite values or fewer than two points.
    """
    arr = np.asarray(strokes)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise StrokeError(
            f"{name}: expected an (N, 3) array of x, y, pen; got shape {arr.shape}"
        )
    if arr.shape[0] < 2:
        raise StrokeError(
            f"{name}: empty sketch ({arr.shape[0]} points; at least 2 needed)"
        )
    if not np.isfinite(arr).all():
        raise StrokeError(f"{name}: contains NaN or infinite coordinates")
    return arr.astype(np.float64, copy=False)


def split_strokes(strokes: np.ndarray) -> list[np.ndarray]:
    """Split an (N, 3) sketch into strokes, each a (k, 2) array of x, y points.

    The pen flag marks the last point of a stroke; points after the final flag form
    one more stroke (some real sketches omit the closing flag).
    """
    arr = validate_strokes(strokes)
    ends = np.flatnonzero(arr[:, 2] > 0.5)
    out, start = [], 0
    for end in ends:
        out.append(arr[start : end + 1, :2])
        start = end + 1
    if start < len(arr):
        out.append(arr[start:, :2])
    return [s for s in out if len(s) > 0]


def rasterize(
    strokes: np.ndarray,
    size: int = 256,
    line_width: float = 3.0,
    canvas: int = CANVAS,
    max_strokes: int | None = None,
) -> Image.Image:
    """Draw a sketch as black lines on white, as an RGB image of ``size`` x ``size``.

    Args:
        strokes: (N, 3) array in canvas coordinates.
        size: output side in pixels.
        line_width: stroke width in canvas pixels (scaled with ``size``).
        canvas: side of the coordinate canvas (256 for QMUL).
        max_strokes: draw only the first strokes (for stroke-by-stroke figures).

    Returns:
        A PIL RGB image.
    """
    parts = split_strokes(strokes)
    if max_strokes is not None:
        parts = parts[:max_strokes]
    scale = size / canvas
    width = max(1, int(round(line_width * scale)))
    img = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(img)
    for part in parts:
        pts = [(float(x) * scale, float(y) * scale) for x, y in part]
        if len(pts) == 1:
            x, y = pts[0]
            r = width / 2
            draw.ellipse([x - r, y - r, x + r, y + r], fill=0)
        else:
            draw.line(pts, fill=0, width=width, joint="curve")
    return img.convert("RGB")


def stroke_count(strokes: np.ndarray) -> int:
    """Number of strokes in an (N, 3) sketch."""
    return len(split_strokes(strokes))
