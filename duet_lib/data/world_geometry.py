"""Parametric 2D geometry of the procedural world's objects (chapter 01).

Every object of the world is a *shape*: a category ("shoe" or "chair") and a
dictionary of shape parameters. Continuous parameters are stored normalised to
[0, 1]; discrete ones as a choice name. :func:`build_geometry` turns a shape into a
:class:`Geometry`, an ordered list of flat :class:`Part` polygons (painted back to
front) in object units with y pointing up. The same geometry feeds every renderer:
the photo painter, the clean line drawing and the human-like sketcher, so a sketch
and a photo of one shape always agree on the outline.

Two kinds of parameters exist, and the difference matters for learning:

* ``outline`` parameters change the silhouette (heel height, shaft height, back
  height, leg style ...). They stay visible at 96 px and define an instance.
* ``local`` parameters change small parts inside the silhouette (closure, toe cap,
  back slats, crossbar). At low model resolution they barely register, so the world
  only lets them vary independently at the harder difficulty levels
  (:func:`difficulty_settings`).

A :class:`Placement` maps object units to canvas pixels (x right, y down); a scene
of several objects is a list of (geometry, placement) pairs, which is why nothing
here assumes a single object per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CATEGORIES",
    "PARAM_SPECS",
    "Difficulty",
    "Geometry",
    "ParamSpec",
    "Part",
    "Placement",
    "Shape",
    "ShapeError",
    "build_geometry",
    "difficulty_settings",
    "fit_placement",
    "place_parts",
    "sample_shapes",
    "shape_distance",
    "to_canvas",
    "visible_edges",
]

CATEGORIES = ("shoe", "chair")


class ShapeError(ValueError):
    """An unknown category, parameter name or parameter value."""


# ---------------------------------------------------------------------------
# Parameter specifications


@dataclass(frozen=True)
class ParamSpec:
    """One shape parameter of a category.

    Attributes:
        name: parameter name, e.g. "heel_height".
        kind: "continuous" (value in [0, 1]) or "discrete" (one of ``choices``).
        level: "outline" (changes the silhouette) or "local" (a small inner part).
        choices: the discrete values (empty for continuous parameters).
        bins: number of coarse word levels of a continuous parameter (2 or 3).
    """

    name: str
    kind: str
    level: str
    choices: tuple[str, ...] = ()
    bins: int = 3


def _c(name: str, bins: int) -> ParamSpec:
    return ParamSpec(name, "continuous", "outline", (), bins)


def _d(name: str, level: str, choices: tuple[str, ...]) -> ParamSpec:
    return ParamSpec(name, "discrete", level, choices, 0)


#: Shape parameters per category, in a fixed order.
PARAM_SPECS: dict[str, tuple[ParamSpec, ...]] = {
    "shoe": (
        _c("heel_height", 3),
        _c("shaft_height", 3),
        _c("toe_shape", 3),
        _c("sole_thickness", 2),
        _c("upper_volume", 2),
        _c("collar_slope", 2),
        _d("heel_style", "outline", ("block", "stiletto", "wedge")),
        _d("closure", "local", ("laces", "strap", "zip", "slip-on")),
        _d("toe_cap", "local", ("none", "cap")),
    ),
    "chair": (
        _c("back_height", 3),
        _c("back_tilt", 2),
        _c("back_top", 3),
        _c("seat_depth", 2),
        _c("seat_height", 3),
        _c("seat_width", 2),
        _d("leg_style", "outline", ("four_legs", "splayed", "pedestal", "sled")),
        _d("armrests", "outline", ("none", "arms")),
        _d("back_style", "local", ("solid", "slats", "rails", "frame")),
        _d("crossbar", "local", ("none", "bar")),
    ),
}


def _specs(category: str) -> tuple[ParamSpec, ...]:
    try:
        return PARAM_SPECS[category]
    except KeyError:
        raise ShapeError(
            f"unknown category {category!r}; valid: {', '.join(CATEGORIES)}"
        ) from None


# ---------------------------------------------------------------------------
# Shapes and difficulty


@dataclass
class Shape:
    """One object instance: a category and its shape parameters.

    Attributes:
        category: "shoe" or "chair".
        params: parameter name -> value (float in [0, 1] or a choice name).
        shape_id: an optional id such as "shoe_00012" (the world sets it).
    """

    category: str
    params: dict[str, float | str]
    shape_id: str = ""
    _geometry: Geometry | None = field(default=None, repr=False, compare=False)
    _edges: list | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        specs = _specs(self.category)
        names = {s.name for s in specs}
        unknown = set(self.params) - names
        if unknown:
            raise ShapeError(
                f"{self.category}: unknown shape parameter(s) {sorted(unknown)}; "
                f"valid: {sorted(names)}"
            )
        missing = names - set(self.params)
        if missing:
            raise ShapeError(
                f"{self.category}: missing shape parameter(s) {sorted(missing)}"
            )
        for s in specs:
            v = self.params[s.name]
            if s.kind == "continuous":
                if not isinstance(v, int | float) or not 0.0 <= float(v) <= 1.0:
                    raise ShapeError(
                        f"{self.category}.{s.name} must be a number in [0, 1], got {v!r}"
                    )
            elif v not in s.choices:
                raise ShapeError(
                    f"{self.category}.{s.name} must be one of {s.choices}, got {v!r}"
                )

    @property
    def geometry(self) -> Geometry:
        """The shape's :class:`Geometry`, built once and cached."""
        if self._geometry is None:
            self._geometry = build_geometry(self)
        return self._geometry

    def vector(self, include_local: bool = True) -> np.ndarray:
        """Parameters as a float vector: continuous values, then one-hot choices."""
        out: list[float] = []
        for s in _specs(self.category):
            if s.kind == "continuous":
                out.append(float(self.params[s.name]))
            elif include_local or s.level == "outline":
                out.extend(1.0 if self.params[s.name] == c else 0.0 for c in s.choices)
        return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True)
class Difficulty:
    """What a difficulty level means for the shapes of a world.

    Attributes:
        value: the difficulty in [0, 1] it was made from.
        spread: fraction of each continuous parameter's range that instances use
            (centred on 0.5); smaller means instances look more alike.
        local_identity: when True the local parts (closure, toe cap, back style,
            crossbar) vary independently, so identity is partly carried by small
            parts; when False they follow the outline and add no information.
    """

    value: float
    spread: float
    local_identity: bool


_NAMED_DIFFICULTY = {"easy": 0.0, "medium": 0.5, "hard": 1.0}


def difficulty_settings(difficulty: float | str = 0.0) -> Difficulty:
    """Map a difficulty in [0, 1] (or "easy" / "medium" / "hard") to settings.

    The spread of continuous outline parameters shrinks linearly from 1.0 at 0 to
    0.4 at 1; from 0.5 on, local parts also vary independently between instances.

    Raises:
        ShapeError: an unknown name or a value outside [0, 1].
    """
    if isinstance(difficulty, str):
        if difficulty not in _NAMED_DIFFICULTY:
            raise ShapeError(
                f"unknown difficulty {difficulty!r}; use a number in [0, 1] or one of "
                f"{', '.join(_NAMED_DIFFICULTY)}"
            )
        difficulty = _NAMED_DIFFICULTY[difficulty]
    if isinstance(difficulty, bool) or not isinstance(difficulty, int | float):
        raise ShapeError(f"difficulty must be a number in [0, 1], got {difficulty!r}")
    d = float(difficulty)
    if not 0.0 <= d <= 1.0:
        raise ShapeError(f"difficulty must be in [0, 1], got {difficulty!r}")
    return Difficulty(value=d, spread=1.0 - 0.6 * d, local_identity=d >= 0.5)


def _local_from_outline(category: str, p: dict[str, float | str]) -> dict[str, str]:
    """Local parts as a fixed function of the outline (no extra identity)."""
    if category == "shoe":
        if float(p["shaft_height"]) > 0.6:
            closure = "zip"
        elif float(p["heel_height"]) > 0.6:
            closure = "strap"
        elif float(p["upper_volume"]) > 0.5:
            closure = "laces"
        else:
            closure = "slip-on"
        cap = "cap" if float(p["sole_thickness"]) > 0.5 else "none"
        return {"closure": closure, "toe_cap": cap}
    top = float(p["back_top"])
    style = "rails" if top < 1 / 3 else ("solid" if top < 2 / 3 else "slats")
    bar = (
        "bar"
        if p["leg_style"] in ("four_legs", "splayed") and float(p["seat_height"]) > 0.5
        else "none"
    )
    return {"back_style": style, "crossbar": bar}


def shape_distance(a: Shape, b: Shape) -> float:
    """Distance between two shapes' parameters (continuous L2 + 1 per differing
    outline choice). Used for separation when sampling and by the book's figures."""
    if a.category != b.category:
        return math.inf
    return float(_distance_rows(a.vector(False)[None], b.vector(False)[None])[0])


def _distance_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.sqrt(((x - y) ** 2).sum(axis=1))


def sample_shapes(
    category: str,
    n: int,
    rng: np.random.Generator,
    difficulty: float | str = 0.0,
    *,
    id_prefix: str | None = None,
) -> list[Shape]:
    """Draw ``n`` distinct shapes of one category (chapter 01).

    Continuous outline parameters are uniform over the central ``spread`` of their
    range; discrete outline parameters are uniform over their choices. Shapes are
    kept apart by dart throwing: a new shape closer than a minimum distance to an
    accepted one of the same outline class is redrawn (the distance shrinks when the
    space fills up), so no two instances are near-duplicates.

    Args:
        category: "shoe" or "chair".
        n: number of shapes.
        rng: the random generator (the result depends only on its state).
        difficulty: a number in [0, 1] or "easy" / "medium" / "hard"
            (see :func:`difficulty_settings`).
        id_prefix: if given, shapes get ids ``f"{id_prefix}_{i:05d}"``.

    Returns:
        A list of ``n`` :class:`Shape` objects.

    Raises:
        ShapeError: unknown category, bad ``n`` or difficulty.
    """
    specs = _specs(category)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ShapeError(f"n must be a non-negative int, got {n!r}")
    diff = difficulty_settings(difficulty)
    cont = [s for s in specs if s.kind == "continuous"]
    disc = [s for s in specs if s.kind == "discrete"]
    n_cont = len(cont)
    lo = 0.5 - diff.spread / 2
    # Expected nearest-neighbour spacing of n uniform points in the continuous cube,
    # per outline class; darts closer than a fraction of it are rejected.
    n_classes = int(np.prod([len(s.choices) for s in disc if s.level == "outline"]))
    per_class = max(1.0, n / max(1, n_classes))
    d_min = 0.45 * diff.spread * per_class ** (-1.0 / n_cont)
    accepted_u: list[np.ndarray] = []
    accepted_key: list[tuple[str, ...]] = []
    shapes: list[Shape] = []
    tries = 0
    while len(shapes) < n:
        u = lo + diff.spread * rng.random(n_cont)
        choice = {s.name: s.choices[int(rng.integers(len(s.choices)))] for s in disc}
        key = tuple(choice[s.name] for s in disc if s.level == "outline")
        if accepted_u:
            same = [i for i, k in enumerate(accepted_key) if k == key]
            if same:
                dist = _distance_rows(np.stack([accepted_u[i] for i in same]), u[None])
                if dist.min() < d_min:
                    tries += 1
                    if tries > 50:
                        d_min *= 0.9
                        tries = 0
                    continue
        tries = 0
        params: dict[str, float | str] = {
            s.name: float(round(v, 6)) for s, v in zip(cont, u, strict=True)
        }
        params.update(choice)
        if not diff.local_identity:
            params.update(_local_from_outline(category, params))
        sid = f"{id_prefix}_{len(shapes):05d}" if id_prefix else ""
        ordered = {s.name: params[s.name] for s in specs}
        shapes.append(Shape(category, ordered, sid))
        accepted_u.append(u)
        accepted_key.append(key)
    return shapes


# ---------------------------------------------------------------------------
# Geometry containers


@dataclass
class Part:
    """One flat part of an object, in object units (y up).

    Attributes:
        name: e.g. "upper", "sole", "seat", "leg".
        role: material role the painter colours by: "main" (the object's colour and
            pattern), "sole", "heel", "frame", "accent".
        polygon: (K, 2) closed outline (first point not repeated).
        holes: (K_i, 2) closed polygons cut out of the part (back slats).
        faces: (polygon, shade) pairs filled instead of ``polygon`` when given
            (box faces with their own brightness); their union is ``polygon``.
        lines: (M, 2) open polylines drawn inside the part (edges between faces,
            laces, a toe cap seam).
        line_level: "outline" when ``lines`` are structural edges, "local" when they
            are small details a sketcher often leaves out.
    """

    name: str
    role: str
    polygon: np.ndarray
    holes: list[np.ndarray] = field(default_factory=list)
    faces: list[tuple[np.ndarray, float]] = field(default_factory=list)
    lines: list[np.ndarray] = field(default_factory=list)
    line_level: str = "outline"


@dataclass
class Geometry:
    """An object's parts in painting order (back to front), object units, y up."""

    category: str
    parts: list[Part]

    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) over all part polygons."""
        pts = np.concatenate([p.polygon for p in self.parts])
        return (
            float(pts[:, 0].min()),
            float(pts[:, 1].min()),
            float(pts[:, 0].max()),
            float(pts[:, 1].max()),
        )


@dataclass(frozen=True)
class Placement:
    """Where an object sits on a canvas: centre (px), scale (px per object unit)
    and rotation (degrees, counter-clockwise on screen). Canvas y points down."""

    cx: float
    cy: float
    scale: float
    angle: float = 0.0

    def apply(self, pts: np.ndarray) -> np.ndarray:
        """Map (K, 2) object points (y up, relative to the object centre) to pixels."""
        a = math.radians(self.angle)
        ca, sa = math.cos(a), math.sin(a)
        x, y = pts[:, 0], pts[:, 1]
        # rotate in the y-up frame, then flip y for the canvas
        xr = ca * x - sa * y
        yr = sa * x + ca * y
        return np.stack([self.cx + self.scale * xr, self.cy - self.scale * yr], axis=1)

    def jittered(
        self, rng: np.random.Generator, shift: float, scale: float, angle: float
    ) -> Placement:
        """A copy moved by up to ``shift`` px, scaled by up to +-``scale`` and
        rotated by up to +-``angle`` degrees (uniform draws)."""
        return Placement(
            self.cx + shift * (2 * rng.random() - 1),
            self.cy + shift * (2 * rng.random() - 1),
            self.scale * (1 + scale * (2 * rng.random() - 1)),
            self.angle + angle * (2 * rng.random() - 1),
        )


def fit_placement(
    geometry: Geometry, canvas: float = 256.0, fill: float = 0.8
) -> tuple[Placement, np.ndarray]:
    """Canonical placement: the object centred, its longer side ``fill`` x canvas.

    Returns:
        The placement and the object-unit centre it is relative to (subtract it from
        object points before :meth:`Placement.apply`; :func:`to_canvas` does both).
    """
    x0, y0, x1, y1 = geometry.bounds()
    side = max(x1 - x0, y1 - y0, 1e-6)
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    return Placement(canvas / 2, canvas / 2, fill * canvas / side), centre


def to_canvas(pts: np.ndarray, placement: Placement, centre: np.ndarray) -> np.ndarray:
    """Object points (K, 2) -> canvas pixels (K, 2) under a placement."""
    return placement.apply(pts - centre)


# ---------------------------------------------------------------------------
# Curve helpers


def _chaikin(pts: np.ndarray, corners: np.ndarray, closed: bool, iters: int = 3):
    """Corner-cutting subdivision; points flagged in ``corners`` stay sharp."""
    p = np.asarray(pts, dtype=np.float64)
    c = np.asarray(corners, dtype=bool)
    for _ in range(iters):
        n = len(p)
        prev = np.roll(p, 1, axis=0)
        nxt = np.roll(p, -1, axis=0)
        a = 0.75 * p + 0.25 * prev
        b = 0.75 * p + 0.25 * nxt
        if not closed:
            c = c.copy()
            c[0] = c[-1] = True
        out = np.empty((2 * n, 2))
        out[0::2] = a
        out[1::2] = b
        keep = np.ones(2 * n, dtype=bool)
        # a sharp vertex keeps itself once instead of its two cut points
        out[0::2][c] = p[c]
        keep[1::2][c] = False
        newc = np.zeros(2 * n, dtype=bool)
        newc[0::2] = c
        p = out[keep]
        c = newc[keep]
    return p


def _smooth(ctrl: list[tuple[float, float]], sharp: set[int], closed: bool, iters=3):
    corners = np.array([i in sharp for i in range(len(ctrl))])
    return _chaikin(np.asarray(ctrl, dtype=np.float64), corners, closed, iters)


def _thick_polyline(pts: np.ndarray, width: float) -> np.ndarray:
    """Polygon of a polyline drawn with ``width`` (mitred joins, square ends)."""
    p = np.asarray(pts, dtype=np.float64)
    d = np.diff(p, axis=0)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    nrm = np.stack([-d[:, 1], d[:, 0]], axis=1)
    vn = np.empty_like(p)
    vn[0], vn[-1] = nrm[0], nrm[-1]
    if len(p) > 2:
        m = nrm[:-1] + nrm[1:]
        m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)
        cos = np.maximum((m * nrm[1:]).sum(axis=1, keepdims=True), 0.3)
        vn[1:-1] = m / cos
    h = width / 2
    return np.concatenate([p + h * vn, (p - h * vn)[::-1]])


def _hull(pts: np.ndarray) -> np.ndarray:
    """Convex hull (counter-clockwise) of (K, 2) points, monotone chain."""
    p = sorted({(round(float(x), 9), round(float(y), 9)) for x, y in pts})
    if len(p) < 3:
        return np.asarray(p, dtype=np.float64)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for q in p:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], q) <= 0:
            lower.pop()
        lower.append(q)
    upper: list = []
    for q in reversed(p):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], q) <= 0:
            upper.pop()
        upper.append(q)
    return np.asarray(lower[:-1] + upper[:-1], dtype=np.float64)


def _interp_curve(curve: np.ndarray, x: float) -> float:
    """y of a curve (monotone in x over the range used) at ``x``."""
    order = np.argsort(curve[:, 0])
    return float(np.interp(x, curve[order, 0], curve[order, 1]))


# ---------------------------------------------------------------------------
# Shoe: a side view, heel at x = -1, toe at x = +1, ground at y = 0


def _shoe(p: dict[str, float | str]) -> Geometry:
    heel = 0.03 + 0.50 * float(p["heel_height"])  # heel lift
    sole_t = 0.05 + 0.15 * float(p["sole_thickness"])
    shaft = 0.42 + 1.05 * float(p["shaft_height"])  # collar height above the sole
    vol = float(p["upper_volume"])
    instep = 0.26 + 0.22 * vol
    toe_box = 0.16 + 0.13 * vol
    toe = float(p["toe_shape"])  # 0 round ... 1 pointed
    slope = float(p["collar_slope"])
    style = str(p["heel_style"])

    x_seat, x_ball = -0.55, 0.28

    def bottom(x: np.ndarray | float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        t = np.clip((x - x_seat) / (x_ball - x_seat), 0.0, 1.0)
        y = heel * (0.5 + 0.5 * np.cos(np.pi * t))
        spring = 0.035 * np.clip((x - 0.78) / 0.22, 0.0, 1.0) ** 2
        return y + spring

    def top(x):
        return bottom(x) + sole_t

    # --- upper: back line, collar, front (shin or throat), instep, toe box, toe
    x_tip = 1.0
    y_tip = float(top(0.97)) + toe_box * (0.50 - 0.38 * toe)
    boot = float(np.clip((shaft - instep - 0.10) / 0.45, 0.0, 1.0))
    y_back = float(top(-1.0)) + shaft
    throat_x = -0.30 + 0.40 * slope
    throat = (throat_x, float(top(throat_x)) + instep * (0.92 - 0.1 * slope))
    boot_front = (-0.38 - 0.05 * slope, y_back - 0.06 - 0.30 * slope)
    p3 = (
        throat[0] + boot * (boot_front[0] - throat[0]),
        throat[1] + boot * (boot_front[1] - throat[1]),
    )
    box_top = (0.55, float(top(0.55)) + toe_box)
    # where the vamp meets the instep: on boots the bend below the shin, on low
    # shoes a point on the vamp between the throat and the toe box
    vx = throat[0] + 0.2 + (-0.05 - throat[0] - 0.2) * boot
    vamp_y = 0.55 * throat[1] + 0.45 * box_top[1] + 0.02
    boot_y = float(top(vx)) + instep
    instep_pt = (vx, vamp_y + boot * (boot_y - vamp_y))
    collar_mid = (
        0.5 * (-1.0 + p3[0]),
        0.5 * (y_back + p3[1]) - 0.05 * (1 - boot) - 0.03 * slope,
    )
    # toe profile: round toes bulge, pointed toes run straight to a low tip
    k = 0.55 - 0.35 * toe
    toe_a = (box_top[0] + (x_tip - box_top[0]) * (0.55 + 0.25 * k), box_top[1] - 0.01)
    toe_b = (x_tip - 0.02 * (1 - toe), y_tip + (box_top[1] - y_tip) * (0.45 * k + 0.1))
    top_ctrl = [(-1.0, y_back), collar_mid, p3]
    sharp_top = {0, 2}
    if boot > 0.05:
        shin_lo = (
            instep_pt[0] - 0.12 * boot,
            instep_pt[1] + 0.10 * boot,
        )
        top_ctrl.append(shin_lo)
    top_ctrl += [instep_pt, box_top, toe_a, toe_b, (x_tip, y_tip)]
    # (the tip is the open curve's end point and so stays where it is anyway)
    top_line = _smooth(top_ctrl, sharp_top, closed=False)

    bx = np.linspace(0.97, -0.98, 24)
    under = np.stack([bx, top(bx) - 0.03], axis=1)
    back = np.array(
        [
            (-1.0, float(top(-1.0)) - 0.03),
            (-1.03, float(top(-1.0)) + 0.35 * min(shaft, 0.6)),
            (-1.01, y_back - 0.05),
        ]
    )
    front_down = np.array([(x_tip - 0.01, (y_tip + float(top(0.99))) / 2)])
    upper_poly = np.concatenate([back, top_line, front_down, under])

    upper_lines: list[np.ndarray] = []
    closure = str(p["closure"])
    accent_parts: list[Part] = []
    # positions along the instep/throat where laces or a strap sit
    if closure == "laces":
        x0 = p3[0] + 0.04 if boot < 0.5 else instep_pt[0] - 0.08
        for i in range(4):
            x = x0 + (0.40 - x0) * (i + 0.5) / 4 * 0.8
            yt = _interp_curve(top_line[top_line[:, 0] > p3[0] - 0.01], x)
            upper_lines.append(
                np.array([(x - 0.04, yt - 0.09), (x + 0.05, yt - 0.005)])
            )
    elif closure == "strap":
        xs = instep_pt[0] - 0.05
        yt = _interp_curve(top_line[top_line[:, 0] > p3[0] - 0.01], xs)
        ys = float(top(xs))
        w = 0.09
        accent_parts.append(
            Part(
                "strap",
                "accent",
                np.array(
                    [
                        (xs - w, yt + 0.02),
                        (xs + w * 0.6, yt + 0.02),
                        (xs + w * 0.2, ys + 0.02),
                        (xs - w * 1.3, ys + 0.02),
                    ]
                ),
            )
        )
    elif closure == "zip":
        if boot > 0.3:
            xz = -0.72
            upper_lines.append(
                np.array([(xz, y_back - 0.08), (xz + 0.06, float(top(xz)) + 0.25)])
            )
        else:
            upper_lines.append(
                np.array([(p3[0] - 0.02, p3[1] - 0.03), (p3[0] + 0.22, p3[1] - 0.12)])
            )
    if str(p["toe_cap"]) == "cap":
        cap_x = 0.62
        yt = _interp_curve(top_line[top_line[:, 0] > 0.3], cap_x + 0.06)
        upper_lines.append(
            _smooth(
                [
                    (cap_x, float(top(cap_x)) + 0.01),
                    (cap_x - 0.02, float(top(cap_x)) + 0.5 * toe_box),
                    (cap_x + 0.06, yt - 0.01),
                ],
                set(),
                closed=False,
                iters=2,
            )
        )

    sx = np.linspace(-1.0, 0.985, 32)
    sole_poly = np.concatenate(
        [
            np.stack([sx, top(sx)], axis=1),
            [(1.0, float(top(0.99)) - 0.3 * sole_t)],
            np.stack([sx[::-1], bottom(sx[::-1])], axis=1),
        ]
    )

    # heel block under the back of the sole; its top sits inside the sole so that
    # the seam is hidden
    def under_sole(x0: float, x1: float, n: int = 8) -> np.ndarray:
        xs = np.linspace(x0, x1, n)
        return np.stack([xs, bottom(xs) + 0.02], axis=1)

    if style == "wedge":
        heel_poly = np.concatenate(
            [under_sole(-1.0, x_ball - 0.05, 14), [(x_ball - 0.12, 0.0), (-0.98, 0.0)]]
        )
    elif style == "stiletto":
        heel_poly = np.concatenate(
            [
                under_sole(-1.0, -0.74),
                _smooth(
                    [
                        (-0.74, float(bottom(-0.74))),
                        (-0.84, 0.35 * heel),
                        (-0.875, 0.0),
                    ],
                    set(),
                    closed=False,
                    iters=2,
                )[1:],
                [(-0.925, 0.0), (-0.97, 0.5 * heel)],
            ]
        )
    else:  # block
        heel_poly = np.concatenate(
            [under_sole(-1.0, -0.70), [(-0.745, 0.0), (-0.975, 0.0)]]
        )

    parts = [
        Part("upper", "main", upper_poly, lines=upper_lines, line_level="local"),
        *accent_parts,
        Part("heel", "heel", heel_poly),
        Part("sole", "sole", sole_poly),
    ]
    return Geometry("shoe", parts)


# ---------------------------------------------------------------------------
# Chair: a 3/4 view of a 3D model, projected orthographically

_YAW = math.radians(35.0)
_PITCH = math.radians(16.0)
_LIGHT = np.array([0.45, 0.8, 0.4])


def _project(p3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, 3) points (x right, y up, z to the front) -> (K, 2) screen points and
    (K,) depth toward the viewer."""
    x, y, z = p3[:, 0], p3[:, 1], p3[:, 2]
    sx = x * math.cos(_YAW) - z * math.sin(_YAW)
    d = x * math.sin(_YAW) + z * math.cos(_YAW)
    sy = y * math.cos(_PITCH) - d * math.sin(_PITCH)
    depth = d * math.cos(_PITCH) + y * math.sin(_PITCH)
    return np.stack([sx, sy], axis=1), depth


def _view_dir() -> np.ndarray:
    # direction toward the viewer in model coordinates
    v = np.array(
        [
            math.sin(_YAW) * math.cos(_PITCH),
            math.sin(_PITCH),
            math.cos(_YAW) * math.cos(_PITCH),
        ]
    )
    return v


def _box(name: str, role: str, lo, hi, edges: bool = True) -> tuple[Part, float]:
    """A box part: visible faces with their own shade, hull outline, inner edges."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    corners = np.array(
        [
            [(lo, hi)[i][0], (lo, hi)[j][1], (lo, hi)[k][2]]
            for i in (0, 1)
            for j in (0, 1)
            for k in (0, 1)
        ]
    )
    p2, depth = _project(corners)
    hull = _hull(p2)
    view = _view_dir()
    faces = []
    inner: list[np.ndarray] = []
    # face: (axis, side) with corner indices in order around the face
    face_defs = {
        (0, 0): [0, 1, 3, 2],
        (0, 1): [4, 5, 7, 6],
        (1, 0): [0, 1, 5, 4],
        (1, 1): [2, 3, 7, 6],
        (2, 0): [0, 2, 6, 4],
        (2, 1): [1, 3, 7, 5],
    }
    light = _LIGHT / np.linalg.norm(_LIGHT)
    key = [(round(float(q[0]), 7), round(float(q[1]), 7)) for q in p2]
    hull_keys = [(round(float(q[0]), 7), round(float(q[1]), 7)) for q in hull]
    hull_edges = {
        frozenset((hull_keys[i], hull_keys[(i + 1) % len(hull_keys)]))
        for i in range(len(hull_keys))
    }
    seen: set[frozenset] = set()
    for (axis, side), idx in face_defs.items():
        normal = np.zeros(3)
        normal[axis] = 1.0 if side else -1.0
        if normal @ view <= 1e-6:
            continue
        shade = 0.62 + 0.38 * max(0.0, float(normal @ light))
        faces.append((p2[idx], shade))
        if edges:
            for a, b in zip(idx, idx[1:] + idx[:1], strict=True):
                e = frozenset((key[a], key[b]))
                if e in hull_edges or e in seen:
                    continue
                seen.add(e)
                inner.append(np.array([p2[a], p2[b]]))
    part = Part(name, role, hull, faces=faces, lines=inner, line_level="outline")
    return part, float(depth.mean())


def _tube(name: str, role: str, pts3: np.ndarray, width: float, smooth: bool = False):
    """A round bar along a 3D polyline, drawn with a constant screen width."""
    p2, depth = _project(np.asarray(pts3, dtype=np.float64))
    if smooth and len(p2) > 2:
        p2 = _smooth([tuple(q) for q in p2], set(), closed=False, iters=3)
    poly = _thick_polyline(p2, width)
    return Part(name, role, poly), float(depth.mean())


def _chair(p: dict[str, float | str]) -> Geometry:
    width = 0.80 + 0.40 * float(p["seat_width"])
    depth = 0.58 + 0.45 * float(p["seat_depth"])
    seat_h = 0.42 + 0.50 * float(p["seat_height"])
    seat_t = 0.08
    back_h = 0.40 + 0.95 * float(p["back_height"])
    tilt = math.radians(2.0 + 24.0 * float(p["back_tilt"]))
    top_c = float(p["back_top"])
    legs = str(p["leg_style"])
    arms = str(p["armrests"]) == "arms"
    back_style = str(p["back_style"])
    crossbar = str(p["crossbar"]) == "bar"
    leg_w = 0.065

    hw, hd = width / 2, depth / 2
    below: list[tuple[Part, float]] = []  # parts under the seat (legs, base)

    y_under = seat_h - seat_t
    inset = 0.06
    corners = [(sx, sz) for sx in (-1, 1) for sz in (-1, 1)]
    if legs in ("four_legs", "splayed"):
        splay = 0.13 if legs == "splayed" else 0.0
        feet = {}
        for sx, sz in corners:
            top_pt = (sx * (hw - inset), y_under + 0.02, sz * (hd - inset))
            foot = (sx * (hw - inset + splay), 0.0, sz * (hd - inset + splay))
            feet[(sx, sz)] = (top_pt, foot)
            below.append(_tube("leg", "frame", np.array([top_pt, foot]), leg_w))
        if crossbar:
            hy = 0.32 * y_under
            for a, b in (((-1, 1), (1, 1)), ((1, -1), (1, 1)), ((-1, -1), (-1, 1))):
                ta, fa = map(np.array, feet[a])
                tb, fb = map(np.array, feet[b])
                s = hy / y_under
                pa = fa + (ta - fa) * s
                pb = fb + (tb - fb) * s
                below.append(_tube("crossbar", "frame", np.array([pa, pb]), 0.035))
    elif legs == "pedestal":
        below.append(
            _tube(
                "column",
                "frame",
                np.array([(0, 0.08, 0), (0, y_under + 0.02, 0)]),
                0.09,
            )
        )
        r = 0.38 + 0.25 * max(width, depth) / 2
        for i in range(5):
            a = 2 * math.pi * i / 5 + 0.3
            tip = (r * math.cos(a), 0.03, r * math.sin(a))
            below.append(_tube("spoke", "frame", np.array([(0, 0.08, 0), tip]), 0.05))
        if crossbar:
            ring = [
                (0.22 * math.cos(t), 0.38 * y_under, 0.22 * math.sin(t))
                for t in np.linspace(0, 2 * math.pi, 13)
            ]
            below.append(_tube("footring", "frame", np.array(ring), 0.03))
    else:  # sled: a bent bar on each side
        for sx in (-1, 1):
            x = sx * (hw - 0.04)
            path = np.array(
                [
                    (x, y_under + 0.02, hd - 0.08),
                    (x, 0.02, hd + 0.04),
                    (x, 0.02, -hd - 0.02),
                    (x, y_under + 0.02, -hd + 0.08),
                ]
            )
            below.append(_tube("runner", "frame", path, leg_w, smooth=False))
        if crossbar:
            below.append(
                _tube(
                    "crossbar",
                    "frame",
                    np.array([(-hw + 0.04, 0.02, -hd), (hw - 0.04, 0.02, -hd)]),
                    0.035,
                )
            )
    below.sort(key=lambda t: t[1])

    seat, _ = _box("seat", "main", (-hw, y_under, -hd), (hw, seat_h, hd))

    # back: a flat panel hinged at the seat's back edge, tilted backwards
    bw = width * 0.96
    xs = np.linspace(-bw / 2, bw / 2, 21)
    u = 2 * xs / bw
    top_t = back_h + top_c * 0.26 * back_h * (1 - u**2)
    corner_r = 0.04 + 0.12 * top_c
    prof = [(-bw / 2, -seat_t - 0.02)]
    prof += [(-bw / 2, back_h - corner_r)]
    prof += list(zip(xs[1:-1], top_t[1:-1], strict=True))
    prof += [(bw / 2, back_h - corner_r), (bw / 2, -seat_t - 0.02)]
    prof2 = np.asarray(prof)
    top_profile = _smooth(
        [tuple(q) for q in prof2], {0, len(prof2) - 1}, closed=True, iters=2
    )

    def back_to_3d(q2: np.ndarray) -> np.ndarray:
        x, t = q2[:, 0], q2[:, 1]
        return np.stack(
            [x, seat_h + t * math.cos(tilt), -hd + 0.03 - t * math.sin(tilt)], axis=1
        )

    back2, _ = _project(back_to_3d(top_profile))
    holes2: list[np.ndarray] = []
    t0, t1 = 0.18 * back_h, 0.86 * back_h
    margin = 0.09
    if back_style == "slats":
        n_gap = 3
        gap_w = (bw - 2 * margin) / (2 * n_gap - 1)
        for i in range(n_gap):
            xa = -bw / 2 + margin + (2 * i) * gap_w + gap_w * 0.5
            xb = xa + gap_w * 0.9
            holes2.append(np.array([(xa, t0), (xb, t0), (xb, t1), (xa, t1)]))
    elif back_style == "rails":
        n_gap = 2
        gap_h = (t1 - t0) / (2 * n_gap - 1)
        for i in range(n_gap):
            ta = t0 + (2 * i) * gap_h
            tb = ta + gap_h
            holes2.append(
                np.array(
                    [
                        (-bw / 2 + margin, ta),
                        (bw / 2 - margin, ta),
                        (bw / 2 - margin, tb),
                        (-bw / 2 + margin, tb),
                    ]
                )
            )
    elif back_style == "frame":
        holes2.append(
            np.array(
                [
                    (-bw / 2 + margin, t0),
                    (bw / 2 - margin, t0),
                    (bw / 2 - margin, t1),
                    (-bw / 2 + margin, t1),
                ]
            )
        )
    holes = [_project(back_to_3d(h))[0] for h in holes2]
    back_faces = []
    # the panel faces the viewer with its front; its shade follows the tilt
    n_back = np.array([0.0, math.sin(tilt), math.cos(tilt)])
    back_shade = 0.62 + 0.38 * max(
        0.0, float(n_back @ (_LIGHT / np.linalg.norm(_LIGHT)))
    )
    back_faces.append((back2, back_shade))
    back = Part("back", "main", back2, holes=holes, faces=back_faces)

    arm_parts: list[tuple[Part, float]] = []
    if arms:
        arm_y = seat_h + min(0.26, 0.7 * back_h)
        for sx in (-1, 1):
            x = sx * (hw + 0.01)
            path = np.array(
                [
                    (x, seat_h, hd - 0.10),
                    (x, arm_y, hd - 0.10),
                    (x, arm_y, hd - 0.06),
                    (x, arm_y, -hd + 0.02 - 0.3 * math.sin(tilt) * 0.26),
                ]
            )
            arm_parts.append(_tube("arm", "frame", path, 0.06))
    parts = [pt for pt, _ in below]
    parts.append(back)
    near_arms = []
    for pt, _ in sorted(arm_parts, key=lambda t: t[1]):
        # the far arm (left, x < 0) is hidden behind the seat and back; the near
        # one is painted last
        if pt.polygon[:, 0].mean() < 0 and len(parts):
            parts.append(pt)
        else:
            near_arms.append(pt)
    parts.append(seat)
    parts.extend(near_arms)
    return Geometry("chair", parts)


def build_geometry(shape: Shape) -> Geometry:
    """The parts of a shape in painting order (object units, y up)."""
    if shape.category == "shoe":
        return _shoe(shape.params)
    if shape.category == "chair":
        return _chair(shape.params)
    raise ShapeError(f"unknown category {shape.category!r}")


# ---------------------------------------------------------------------------
# Visible edges (shared by the line drawing, the sketcher and the reference)


def _resample(poly: np.ndarray, step: float, closed: bool) -> np.ndarray:
    p = np.asarray(poly, dtype=np.float64)
    if closed:
        p = np.concatenate([p, p[:1]])
    seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    total = cum[-1]
    if total <= 0:
        return p[:1]
    n = max(2, int(math.ceil(total / step)) + 1)
    t = np.linspace(0.0, total, n)
    x = np.interp(t, cum, p[:, 0])
    y = np.interp(t, cum, p[:, 1])
    return np.stack([x, y], axis=1)


def _inside(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test for (M, 2) points against a (K, 2) polygon."""
    x, y = pts[:, 0:1], pts[:, 1:2]
    a = poly
    b = np.roll(poly, -1, axis=0)
    ax, ay, bx, by = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
    cond = (ay > y) != (by > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = ax + (y - ay) * (bx - ax) / (by - ay)
    crossing = cond & (x < xi)
    return (crossing.sum(axis=1) % 2) == 1


def visible_edges(parts: list[Part], step: float = 2.0) -> list[tuple[np.ndarray, str]]:
    """Edges a viewer sees: part outlines, holes and inner lines, minus what later
    (nearer) parts cover.

    Args:
        parts: parts in painting order, already in canvas coordinates.
        step: resampling step in canvas pixels before the occlusion test.

    Returns:
        (polyline (M, 2), level) pairs; level is "outline" for silhouettes, holes and
        structural edges, "local" for small details.
    """
    out: list[tuple[np.ndarray, str]] = []
    boxes = [(p.polygon.min(axis=0), p.polygon.max(axis=0)) for p in parts]
    for i, part in enumerate(parts):
        curves: list[tuple[np.ndarray, bool, str]] = [(part.polygon, True, "outline")]
        curves += [(h, True, "outline") for h in part.holes]
        curves += [(ln, False, part.line_level) for ln in part.lines]
        sampled = [
            (_resample(c, step, closed), closed, lvl) for c, closed, lvl in curves
        ]
        sampled = [t for t in sampled if len(t[0]) >= 2]
        if not sampled:
            continue
        # one occlusion test per occluder for all curves of the part
        pts = np.concatenate([t[0] for t in sampled])
        hidden = np.zeros(len(pts), dtype=bool)
        for j in range(i + 1, len(parts)):
            lo, hi = boxes[j]
            cand = (
                (pts[:, 0] >= lo[0])
                & (pts[:, 0] <= hi[0])
                & (pts[:, 1] >= lo[1])
                & (pts[:, 1] <= hi[1])
                & ~hidden
            )
            if not cand.any():
                continue
            idx = np.flatnonzero(cand)
            ins = _inside(pts[idx], parts[j].polygon)
            for h in parts[j].holes:
                ins &= ~_inside(pts[idx], h)
            hidden[idx[ins]] = True
        start = 0
        for cpts, closed, level in sampled:
            vis = ~hidden[start : start + len(cpts)]
            start += len(cpts)
            if vis.all():
                out.append((cpts, level))
                continue
            if not vis.any():
                continue
            if closed and vis[0] and vis[-1]:
                # rotate so that the run crossing the start is not cut in two
                # (a closed curve repeats its first point at the end)
                shift = int(np.flatnonzero(~vis)[-1]) + 1
                cpts = np.concatenate([cpts[shift:-1], cpts[:shift]])
                vis = np.concatenate([vis[shift:-1], vis[:shift]])
            flips = np.flatnonzero(np.diff(np.concatenate([[0], vis.astype(int), [0]])))
            for s, e in zip(flips[0::2], flips[1::2], strict=True):
                if e - s >= 2:
                    out.append((cpts[s:e], level))
    return out


def place_parts(
    geometry: Geometry, placement: Placement, centre: np.ndarray
) -> list[Part]:
    """Copies of a geometry's parts mapped to canvas pixels (y down)."""
    arrays: list[np.ndarray] = []
    for p in geometry.parts:
        arrays.append(p.polygon)
        arrays.extend(p.holes)
        arrays.extend(f for f, _ in p.faces)
        arrays.extend(p.lines)
    # one transform for all points, then split back
    moved = to_canvas(np.concatenate(arrays), placement, centre)
    bounds = np.cumsum([len(a) for a in arrays])[:-1]
    it = iter(np.split(moved, bounds))
    out = []
    for p in geometry.parts:
        poly = next(it)
        holes = [next(it) for _ in p.holes]
        faces = [(next(it), s) for _, s in p.faces]
        lines = [next(it) for _ in p.lines]
        out.append(Part(p.name, p.role, poly, holes, faces, lines, p.line_level))
    return out
