"""Renderers of the procedural world: photos, clean line drawings and sketches.

All three start from the same :class:`~duet_lib.data.world_geometry.Geometry`
(chapter 01):

* :func:`render_photo` paints the parts with a named colour and pattern, shading and
  an outline, on a textured background, with a small pose jitter.
* :func:`line_drawing_strokes` / :func:`render_line_drawing` draw the exact visible
  edges, with no jitter (the "a line drawing of a ..." images of pretraining and the
  gallery side of the reference matcher).
* :func:`render_sketch` imitates a person drawing the object from memory: a global
  distortion, wobbly strokes, dropped details, over-traced lines. It returns the
  QMUL Coordinate format, (N, 3) float64 x, y, pen on a 256 canvas, and is drawn by
  the same :func:`duet_lib.data.strokes.rasterize` as real QMUL sketches.

Composability: :func:`render_scene` paints any list of :class:`SceneObject` (a
geometry, where it is placed and how it looks) on one background with a *style*
function. :func:`render_photo` is the one-object photo case; a new rendition domain
(cartoon, painting) is another style function registered in :data:`STYLES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from duet_lib.data.strokes import CANVAS, rasterize
from duet_lib.data.world_geometry import (
    Geometry,
    Part,
    Placement,
    Shape,
    fit_placement,
    place_parts,
    visible_edges,
)

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "PATTERNS",
    "STYLES",
    "Appearance",
    "AppearanceError",
    "SceneObject",
    "canonical_edges",
    "line_drawing_strokes",
    "random_appearance",
    "render_background",
    "render_line_drawing",
    "render_photo",
    "render_scene",
    "render_sketch",
]


class AppearanceError(ValueError):
    """An unknown colour, pattern or background name, or a bad render argument."""


#: Named colours (sRGB, 0-255). Every name is a word the captions use.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (196, 30, 36),
    "orange": (236, 122, 22),
    "yellow": (236, 204, 40),
    "green": (38, 140, 58),
    "blue": (34, 78, 196),
    "purple": (118, 50, 158),
    "pink": (236, 128, 176),
    "brown": (118, 72, 38),
    "black": (32, 32, 34),
    "white": (236, 236, 230),
    "grey": (128, 128, 134),
}

#: Surface patterns; "plain" has none.
PATTERNS: tuple[str, ...] = ("plain", "striped", "dotted", "checked", "zigzag")

#: Backgrounds (the context the object stands in).
BACKGROUNDS: tuple[str, ...] = ("plain", "grass", "floor", "sand", "tiles")


@dataclass(frozen=True)
class Appearance:
    """The named look of a photo: colour, pattern and background.

    Everything else that varies between photos (sole or frame material, light
    direction, pattern scale and angle, pose jitter) is drawn from the render's
    random generator and never named in text.
    """

    colour: str
    pattern: str
    background: str

    def __post_init__(self) -> None:
        for value, valid, what in (
            (self.colour, COLOURS, "colour"),
            (self.pattern, PATTERNS, "pattern"),
            (self.background, BACKGROUNDS, "background"),
        ):
            if value not in valid:
                raise AppearanceError(
                    f"unknown {what} {value!r}; valid: {', '.join(valid)}"
                )


def random_appearance(
    rng: np.random.Generator,
    category: str | None = None,
    exclude: frozenset[tuple[str, str, str]] | set | tuple = (),
    colours: tuple[str, ...] | None = None,
) -> Appearance:
    """A uniform random appearance (chapter 01).

    Args:
        rng: random generator.
        category: the object's category; needed only with ``exclude``.
        exclude: (category, colour, pattern) triples that must not be drawn (the
            world's held-out combinations).
        colours: restrict the colour to these names.

    Returns:
        An :class:`Appearance`.
    """
    pool = tuple(colours) if colours is not None else tuple(COLOURS)
    if not pool:
        raise AppearanceError("no colour left to draw from")
    excluded = set(exclude)
    for _ in range(1000):
        colour = pool[int(rng.integers(len(pool)))]
        pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
        background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        if (category, colour, pattern) not in excluded:
            return Appearance(colour, pattern, background)
    raise AppearanceError(f"every colour/pattern pair is excluded for {category!r}")


# ---------------------------------------------------------------------------
# Backgrounds


def _noise(rng: np.random.Generator, size: int, cells: tuple[int, int]) -> np.ndarray:
    """Smooth value noise in [-1, 1]: a (rows, cols) random grid resized to size."""
    rows, cols = max(2, cells[0]), max(2, cells[1])
    g = rng.random((rows, cols), dtype=np.float32) * 2 - 1
    img = Image.fromarray(g, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def render_background(
    name: str, rng: np.random.Generator, size: int = 256
) -> np.ndarray:
    """A background texture, float32 (size, size, 3) in [0, 1].

    Raises:
        AppearanceError: unknown background name.
    """
    if name not in BACKGROUNDS:
        raise AppearanceError(
            f"unknown background {name!r}; valid: {', '.join(BACKGROUNDS)}"
        )
    s = size
    f32 = np.float32
    yy = np.linspace(0.0, 1.0, s, dtype=f32)[:, None]
    xx = np.linspace(0.0, 1.0, s, dtype=f32)[None, :]
    if name == "plain":
        base = np.array([0.95, 0.95, 0.94], f32) - f32(0.05 * rng.random())
        light = np.broadcast_to(1.0 - 0.08 * yy, (s, s))
    elif name == "grass":
        base = np.array([0.30, 0.55, 0.18], f32) * f32(0.85 + 0.3 * rng.random())
        light = 1.0 + 0.22 * _noise(rng, s, (6, 48)) + 0.12 * _noise(rng, s, (4, 4))
    elif name == "sand":
        base = np.array([0.87, 0.76, 0.56], f32) * f32(0.93 + 0.1 * rng.random())
        f = f32(5 + 4 * rng.random())
        wob = _noise(rng, s, (3, 3))
        ripple = np.sin(f32(2 * np.pi) * (f * yy + 0.6 * wob + 0.3 * xx))
        light = 1.0 + 0.05 * ripple + 0.05 * _noise(rng, s, (40, 40))
    elif name == "floor":
        base = np.array([0.62, 0.42, 0.24], f32) * f32(0.8 + 0.35 * rng.random())
        n_planks = 6
        v = yy[:, 0] * n_planks + f32(rng.random())
        plank = np.floor(v)
        frac = v - plank
        phase = rng.random() * 6.28
        plank_tint = (np.sin(plank * 12.9898 + phase) * 43758.5453) % 1.0
        seam = np.clip(np.minimum(frac, 1 - frac) * (s / n_planks / 1.2), 0, 1)
        row = ((0.88 + 0.2 * plank_tint) * (0.55 + 0.45 * seam)).astype(f32)
        light = row[:, None] * (1.0 + 0.08 * _noise(rng, s, (40, 5)))
    else:  # tiles
        base = np.array([0.86, 0.86, 0.84], f32) - f32(0.12 * rng.random())
        period = s / (4 + 2 * rng.random())
        ox, oy = rng.random(2) * period
        u = (np.arange(s, dtype=f32) + f32(ox)) / f32(period)
        w = (np.arange(s, dtype=f32) + f32(oy)) / f32(period)
        du = np.minimum(u % 1, 1 - u % 1) * f32(period)
        dw = np.minimum(w % 1, 1 - w % 1) * f32(period)
        grout = np.clip(np.minimum(du[None, :], dw[:, None]) - 0.8, 0, 1)
        cell = (np.floor(u)[None, :] * 7 + np.floor(w)[:, None] * 13) % 5
        light = (0.94 + 0.03 * cell) * (0.62 + 0.38 * grout)
    img = light.astype(f32, copy=False)[..., None] * base
    np.minimum(img, 1.0, out=img)
    np.maximum(img, 0.0, out=img)
    return img


# ---------------------------------------------------------------------------
# Patterns and materials


def _stripe(t: np.ndarray, period: float) -> np.ndarray:
    """Soft square wave in [0, 1] of phase t (in periods), anti-aliased over 1 px."""
    f = t % 1.0
    d = (np.minimum(np.abs(f - 0.25), 1 - np.abs(f - 0.25)) - 0.25) * period
    return np.clip(0.5 - d, 0.0, 1.0)


def _pattern_mask(
    pattern: str,
    xs: np.ndarray,
    ys: np.ndarray,
    size: int,
    rng_vals: np.ndarray,
) -> np.ndarray | None:
    """Where the accent colour shows, in [0, 1], for pixel grids ``xs``, ``ys``."""
    if pattern == "plain":
        return None
    period = size * (0.065 + 0.03 * rng_vals[0])
    ang = math.radians(-40 + 80 * rng_vals[1]) if pattern != "checked" else 0.3
    ca, sa = math.cos(ang), math.sin(ang)
    u = (xs * ca + ys * sa) / period + rng_vals[2]
    v = (-xs * sa + ys * ca) / period + rng_vals[3]
    if pattern == "striped":
        return _stripe(u, period)
    if pattern == "checked":
        a = _stripe(u, period)
        b = _stripe(v, period)
        return a + b - 2 * a * b
    if pattern == "dotted":
        du = (u % 1.0) - 0.5
        dv = ((v + 0.5 * (np.floor(u) % 2)) % 1.0) - 0.5
        dist = np.sqrt(du * du + dv * dv) * period
        return np.clip(0.28 * period - dist + 0.5, 0.0, 1.0)
    # zigzag
    tri = np.abs((v * 0.9) % 1.0 - 0.5) * 2 - 0.5
    return _stripe(u + 0.35 * tri, period)


_SOLES = (
    (0.93, 0.92, 0.88),
    (0.12, 0.12, 0.13),
    (0.60, 0.42, 0.26),
    (0.55, 0.55, 0.57),
)
_FRAMES = (
    (0.52, 0.34, 0.19),
    (0.30, 0.19, 0.11),
    (0.14, 0.14, 0.15),
    (0.74, 0.75, 0.78),
)


def _accent_for(colour: str) -> np.ndarray:
    rgb = np.array(COLOURS[colour], dtype=np.float32) / 255
    if colour in ("white", "yellow", "pink"):
        return np.array([0.13, 0.13, 0.16], dtype=np.float32)
    return (
        np.array([0.95, 0.95, 0.93], dtype=np.float32)
        if rgb.mean() < 0.6
        else rgb * 0.3
    )


# ---------------------------------------------------------------------------
# Scene painting


@dataclass
class SceneObject:
    """One object of a scene: its geometry, where it stands and how it looks.

    Attributes:
        geometry: the object's parts (object units, y up).
        placement: placement on a 256-pixel canvas (scaled to the output size).
        centre: object-unit point the placement is relative to.
        appearance: the named look (colour, pattern; the background belongs to the
            scene and is ignored here).
    """

    geometry: Geometry
    placement: Placement
    centre: np.ndarray
    appearance: Appearance


#: A style paints one object into a float image: (img (H, W, 3) in [0, 1], parts in
#: pixel coordinates, appearance, random generator, output size) -> None.
StyleFn = Callable[[np.ndarray, list[Part], Appearance, np.random.Generator, int], None]


def _layers(parts: list[Part]) -> list[list[Part]]:
    """Consecutive parts with the same material role share one paint layer."""
    out: list[list[Part]] = []
    for p in parts:
        if out and out[-1][0].role == p.role:
            out[-1].append(p)
        else:
            out.append([p])
    return out


_SS = 2  # supersampling factor of the masks


def _photo_style(
    img: np.ndarray,
    parts: list[Part],
    app: Appearance,
    rng: np.random.Generator,
    size: int,
) -> None:
    """Paint an object like a product photo: flat colours with a pattern, a light
    gradient, per-face shading, darker outlines and detail lines."""
    h, w = img.shape[:2]
    main = np.array(COLOURS[app.colour], dtype=np.float32) / 255
    main = np.clip(main * (1 + 0.06 * rng.standard_normal(3).astype(np.float32)), 0, 1)
    accent = _accent_for(app.colour)
    materials = {
        "main": main,
        "sole": np.array(_SOLES[int(rng.integers(len(_SOLES)))], dtype=np.float32),
        "heel": np.array(_SOLES[int(rng.integers(len(_SOLES)))], dtype=np.float32),
        "frame": np.array(_FRAMES[int(rng.integers(len(_FRAMES)))], dtype=np.float32),
        "accent": accent if app.pattern == "plain" else main * 0.45,
    }
    pat_vals = rng.random(4)
    light_ang = math.radians(200 + 60 * rng.random())
    lx, ly = math.cos(light_ang), -math.sin(light_ang)
    all_pts = np.concatenate([p.polygon for p in parts])
    cx, cy = all_pts.mean(axis=0)
    radius = max(float(np.ptp(all_pts, axis=0).max()) / 2, 1.0)
    lw_out = max(1, int(round(_SS * size / 256 * 1.4)))
    lw_det = max(1, int(round(_SS * size / 256 * 1.8)))

    for layer in _layers(parts):
        pts = np.concatenate([p.polygon for p in layer])
        x0 = max(int(math.floor(pts[:, 0].min())) - 2, 0)
        y0 = max(int(math.floor(pts[:, 1].min())) - 2, 0)
        x1 = min(int(math.ceil(pts[:, 0].max())) + 3, w)
        y1 = min(int(math.ceil(pts[:, 1].max())) + 3, h)
        if x1 <= x0 or y1 <= y0:
            continue
        bw, bh = x1 - x0, y1 - y0
        alpha = Image.new("L", (bw * _SS, bh * _SS), 0)
        shade = Image.new("L", (bw * _SS, bh * _SS), 0)
        da, ds = ImageDraw.Draw(alpha), ImageDraw.Draw(shade)
        off = np.array([x0, y0], dtype=np.float64)

        def tr(q: np.ndarray, off: np.ndarray = off) -> list[tuple[float, float]]:
            return [tuple(v) for v in ((q - off) * _SS).tolist()]

        for part in layer:
            poly = tr(part.polygon)
            da.polygon(poly, fill=255)
            if part.faces:
                for face, s in part.faces:
                    ds.polygon(tr(face), fill=int(round(200 * s)))
            else:
                ds.polygon(poly, fill=200)
            for hole in part.holes:
                da.polygon(tr(hole), fill=0)
            ds.line(poly + poly[:1], fill=120, width=lw_out, joint="curve")
            for hole in part.holes:
                hp = tr(hole)
                ds.line(hp + hp[:1], fill=120, width=lw_out)
            for face, _ in part.faces:
                fp = tr(face)
                ds.line(fp + fp[:1], fill=150, width=max(1, lw_out - 1))
            for ln in part.lines:
                ds.line(tr(ln), fill=95, width=lw_det, joint="curve")
        if _SS > 1:
            alpha = alpha.reduce(_SS)
            shade = shade.reduce(_SS)
        a = np.asarray(alpha, dtype=np.float32)[..., None] * np.float32(1 / 255)
        xs = np.arange(x0, x1, dtype=np.float32)[None, :]
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        # light gradient times face shade, (bh, bw, 1)
        light = (1.0 + (0.16 / radius) * ((xs - cx) * lx + (ys - cy) * ly)).astype(
            np.float32
        )
        light = (light * np.asarray(shade, dtype=np.float32) * np.float32(1 / 200))[
            ..., None
        ]
        role = layer[0].role
        base = materials.get(role, main)
        m = (
            _pattern_mask(app.pattern, xs, ys, size, pat_vals)
            if role == "main"
            else None
        )
        if m is not None:
            paint = base + m.astype(np.float32)[..., None] * (accent - base)
            paint *= light
        else:
            paint = light * base
        np.minimum(paint, 1.0, out=paint)
        region = img[y0:y1, x0:x1]
        region += a * (paint - region)


#: Registered style functions; "photo" is the default.
STYLES: dict[str, StyleFn] = {"photo": _photo_style}


def _shadow(img: np.ndarray, parts: list[Part], size: int) -> None:
    """A soft contact shadow under the object's lowest points."""
    pts = np.concatenate([p.polygon for p in parts])
    x0, x1 = pts[:, 0].min(), pts[:, 0].max()
    ybot = pts[:, 1].max()
    h, w = img.shape[:2]
    small = max(8, size // 4)
    k = small / size
    m = Image.new("L", (small, small), 0)
    d = ImageDraw.Draw(m)
    ry = max(1.0, 0.035 * (x1 - x0)) * k
    d.ellipse(
        [x0 * k + 0.02 * small, ybot * k - ry, x1 * k - 0.02 * small, ybot * k + ry],
        fill=150,
    )
    m = m.filter(ImageFilter.GaussianBlur(radius=max(1.0, 0.02 * small)))
    m = m.resize((w, h), Image.Resampling.BILINEAR)
    img *= 1.0 - 0.55 * (np.asarray(m, dtype=np.float32)[..., None] / 255.0)


def render_scene(
    objects: list[SceneObject],
    background: str,
    rng: np.random.Generator,
    size: int = 256,
    style: str = "photo",
) -> np.ndarray:
    """Paint several objects, back to front, on one background (chapter 01).

    Args:
        objects: the scene's objects, painted in list order (later = nearer).
        background: a name from :data:`BACKGROUNDS`.
        rng: random generator for every unnamed variation.
        size: output side in pixels (placements are given on the 256 canvas).
        style: a key of :data:`STYLES`.

    Returns:
        uint8 array (size, size, 3).
    """
    if style not in STYLES:
        raise AppearanceError(f"unknown style {style!r}; valid: {', '.join(STYLES)}")
    _check_size(size)
    img = render_background(background, rng, size).astype(np.float32, copy=True)
    k = size / CANVAS
    for obj in objects:
        pl = obj.placement
        scaled = Placement(pl.cx * k, pl.cy * k, pl.scale * k, pl.angle)
        parts = place_parts(obj.geometry, scaled, obj.centre)
        _shadow(img, parts, size)
        STYLES[style](img, parts, obj.appearance, rng, size)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 16:
        raise AppearanceError(f"size must be an int >= 16, got {size!r}")


#: Pose jitter of photos: shift (canvas px), relative scale, rotation (degrees).
PHOTO_JITTER = (8.0, 0.06, 4.0)


def render_photo(
    shape: Shape,
    appearance: Appearance,
    rng: np.random.Generator,
    size: int = 256,
    jitter: bool = True,
    style: str = "photo",
) -> np.ndarray:
    """A photo-like rendering of one shape (chapter 01).

    Args:
        shape: the object.
        appearance: its named colour, pattern and background.
        rng: random generator for the unnamed variation (materials, light,
            pattern phase, pose jitter).
        size: output side in pixels; rendering happens at this size directly.
        jitter: apply the small pose jitter of :data:`PHOTO_JITTER`.
        style: a key of :data:`STYLES`.

    Returns:
        uint8 array (size, size, 3).
    """
    geo = shape.geometry
    placement, centre = fit_placement(geo, CANVAS, fill=0.8)
    if jitter:
        placement = placement.jittered(rng, *PHOTO_JITTER)
    obj = SceneObject(geo, placement, centre, appearance)
    return render_scene([obj], appearance.background, rng, size, style)


# ---------------------------------------------------------------------------
# Clean line drawings


def canonical_edges(shape: Shape) -> list[tuple[np.ndarray, str]]:
    """Visible edges of a shape at its canonical placement on the 256 canvas.

    Returns:
        (polyline (M, 2) in canvas pixels, "outline" | "local") pairs; cached on
        the shape.
    """
    cached = shape._edges
    if cached is None:
        geo = shape.geometry
        placement, centre = fit_placement(geo, CANVAS, fill=0.8)
        cached = visible_edges(place_parts(geo, placement, centre), step=2.0)
        shape._edges = cached
    return cached


def _to_strokes(polylines: list[np.ndarray]) -> np.ndarray:
    rows = []
    for pl in polylines:
        if len(pl) < 2:
            continue
        pen = np.zeros((len(pl), 1))
        pen[-1] = 1.0
        rows.append(np.concatenate([pl, pen], axis=1))
    if not rows:
        raise AppearanceError("the drawing has no strokes")
    out = np.concatenate(rows).astype(np.float64)
    out[:, :2] = np.clip(out[:, :2], 0.0, CANVAS - 1.0)
    return out


def line_drawing_strokes(shape: Shape, include_local: bool = True) -> np.ndarray:
    """The exact visible edges as strokes: (N, 3) float64 on the 256 canvas.

    Points are thinned to one every ~3 canvas pixels (every curve keeps its ends).
    """
    out = []
    for pl, lvl in canonical_edges(shape):
        if include_local or lvl == "outline":
            keep = np.zeros(len(pl), dtype=bool)
            keep[::2] = True
            keep[-1] = True
            out.append(pl[keep])
    return _to_strokes(out)


def render_line_drawing(
    shape: Shape, size: int = 256, line_width: float = 3.0
) -> np.ndarray:
    """Clean line drawing (black edges on white) of a shape, uint8 (size, size, 3).

    Drawn with the same :func:`~duet_lib.data.strokes.rasterize` as sketches.
    """
    _check_size(size)
    img = rasterize(line_drawing_strokes(shape), size=size, line_width=line_width)
    return np.asarray(img, dtype=np.uint8)


# ---------------------------------------------------------------------------
# Human-like sketches


def _seg_lengths(pl: np.ndarray) -> np.ndarray:
    d = np.diff(pl, axis=0)
    return np.hypot(d[:, 0], d[:, 1])


def _split_stroke(
    pl: np.ndarray, rng: np.random.Generator, max_len: float
) -> list[np.ndarray]:
    """Break a polyline like pen lifts: at some sharp turns, and evenly when it is
    longer than ``max_len`` pixels."""
    if len(pl) < 6:
        return [pl]
    d = np.diff(pl, axis=0)
    ang = np.arctan2(d[:, 1], d[:, 0])
    turn = np.abs((np.diff(ang) + np.pi) % (2 * np.pi) - np.pi)
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(d[:, 0], d[:, 1]))])
    sharp = np.flatnonzero(turn > 0.9) + 1
    keep = rng.random(len(sharp)) < 0.4
    cuts = [int(c) for c in sharp[keep]]
    # even cuts of long runs
    n_even = int(cum[-1] // max_len)
    if n_even:
        cuts += [
            int(np.searchsorted(cum, cum[-1] * (j + 1) / (n_even + 1)))
            for j in range(n_even)
        ]
    out, start = [], 0
    for c in sorted(set(cuts)):
        if c - start >= 2 and cum[c] - cum[start] > 12 and cum[-1] - cum[c] > 12:
            out.append(pl[start : c + 1])
            start = c
    out.append(pl[start:])
    return out


def _resample_open(pl: np.ndarray, step: float) -> np.ndarray:
    cum = np.concatenate([[0.0], np.cumsum(_seg_lengths(pl))])
    total = cum[-1]
    n = max(2, int(math.ceil(total / step)) + 1)
    t = np.linspace(0.0, total, n)
    return np.stack([np.interp(t, cum, pl[:, 0]), np.interp(t, cum, pl[:, 1])], axis=1)


_SMOOTH7 = np.ones(7) / math.sqrt(7.0)  # moving sum scaled to unit variance


def _jitter_stroke(
    pts: np.ndarray,
    rng: np.random.Generator,
    wobble: float,
    extend: float,
    offset: float,
    turn: float,
) -> np.ndarray:
    """One stroke as a hand would draw it: ends over/undershot along the tangent, a
    small rotation and offset, and a smooth sideways wobble."""
    n = len(pts)
    r = rng.standard_normal(n + 11)  # one draw per stroke
    d = np.empty_like(pts)
    d[1:-1] = pts[2:] - pts[:-2]
    d[0] = pts[1] - pts[0]
    d[-1] = pts[-1] - pts[-2]
    ln = np.hypot(d[:, 0], d[:, 1]) + 1e-9
    tx, ty = d[:, 0] / ln, d[:, 1] / ln
    out = pts.copy()
    out[0, 0] -= tx[0] * extend * r[0]
    out[0, 1] -= ty[0] * extend * r[0]
    out[-1, 0] += tx[-1] * extend * r[1]
    out[-1, 1] += ty[-1] * extend * r[1]
    ang = turn * r[2]
    ca, sa = math.cos(ang), math.sin(ang)
    cen = out.mean(axis=0)
    q = out - cen
    out = np.stack([ca * q[:, 0] - sa * q[:, 1], sa * q[:, 0] + ca * q[:, 1]], axis=1)
    out += cen + offset * r[3:5]
    if n >= 3 and wobble > 0:
        w = np.convolve(r[5 : n + 11], _SMOOTH7, mode="valid")
        w *= wobble
        out[:, 0] -= ty * w
        out[:, 1] += tx * w
    return out


def render_sketch(
    shape: Shape, rng: np.random.Generator, abstraction: float = 0.4
) -> np.ndarray:
    """A human-like sketch of a shape in the QMUL Coordinate format (chapter 01).

    The sketcher starts from the shape's visible edges and adds, in proportion to
    ``abstraction``: a global similarity jitter and a smooth warp of the whole
    drawing, pen lifts at corners, a per-stroke offset, rotation and wobble, over-
    and undershooting ends, dropped detail strokes (many) and short outline pieces
    (few), over-traced strokes, and a coarser point spacing. How much detail a
    sketch keeps also varies from sketch to sketch.

    Args:
        shape: the object.
        rng: random generator.
        abstraction: 0 (a traced line drawing with slight wobble) ... 1 (a rough,
            distorted sketch). The world's default is 0.4.

    Returns:
        float64 (N, 3): x, y on the 256 canvas and a pen flag, 1 on the last point of
        each stroke.

    Raises:
        AppearanceError: ``abstraction`` outside [0, 1].
    """
    if isinstance(abstraction, bool) or not isinstance(abstraction, int | float):
        raise AppearanceError(
            f"abstraction must be a number in [0, 1], got {abstraction!r}"
        )
    a = float(abstraction)
    if not 0.0 <= a <= 1.0:
        raise AppearanceError(f"abstraction must be in [0, 1], got {abstraction!r}")
    edges = canonical_edges(shape)

    detail_keep = float(np.clip(0.8 - 0.55 * a + 0.2 * rng.standard_normal(), 0.05, 1))
    outline_drop = 0.02 + 0.10 * a
    strokes: list[np.ndarray] = []
    for pl, level in edges:
        for piece in _split_stroke(pl, rng, max_len=230 - 90 * a):
            u = rng.random()
            if level == "local":
                if u > detail_keep:
                    continue
            elif u < outline_drop and _seg_lengths(piece).sum() < 40:
                continue
            strokes.append(piece)
    if not strokes:  # keep at least the longest edge
        strokes = [max((e[0] for e in edges), key=len)]

    step = 3.5 + 4.0 * a
    wobble = 0.35 + 1.3 * a
    over_p = 0.06 + 0.25 * a
    extend = 1.5 + 3.5 * a
    offset = 0.3 + 1.4 * a
    turn = math.radians(2.0 * a)
    lines: list[np.ndarray] = []
    for pl in strokes:
        pts = _resample_open(pl, step)
        lines.append(_jitter_stroke(pts, rng, wobble, extend, offset, turn))
        if rng.random() < over_p and len(pts) >= 4:
            n = len(pts)
            i0 = int(rng.integers(0, n // 3 + 1))
            i1 = n - int(rng.integers(0, n // 3 + 1))
            if i1 - i0 >= 2:
                again = pts[i0:i1] + (0.8 + 1.2 * a) * rng.standard_normal(2)
                lines.append(_jitter_stroke(again, rng, wobble, extend, offset, turn))

    # global similarity with a little anisotropy, then a smooth warp, applied to
    # all points at once
    c = CANVAS / 2
    g = rng.standard_normal(5)
    ang = math.radians(3.0 * a * g[0])
    scale = 1.0 + 0.05 * a * g[1]
    aspect = 1.0 + 0.04 * a * g[2]
    shift = 7.0 * a * g[3:5]
    ca, sa = math.cos(ang), math.sin(ang)
    mat = scale * np.array([[ca * aspect, -sa], [sa * aspect, ca]])
    freqs = rng.uniform(0.5, 1.6, size=(2, 2)) * 2 * math.pi / CANVAS
    phases = rng.uniform(0, 2 * math.pi, size=2)
    lens = [len(ln) for ln in lines]
    allp = np.concatenate(lines)
    q = (allp - c) @ mat.T + c + shift
    warp_amp = 4.5 * a
    if warp_amp > 0:
        q[:, 0] += warp_amp * np.sin(q @ freqs[0] + phases[0])
        q[:, 1] += warp_amp * np.sin(q @ freqs[1] + phases[1])
    pen = np.zeros((len(q), 1))
    pen[np.cumsum(lens) - 1] = 1.0
    out = np.concatenate([q, pen], axis=1)
    out[:, :2] = np.clip(out[:, :2], 0.0, CANVAS - 1.0)
    return out
