"""Loaders for real sketch/photo datasets, all returning a :class:`SketchPhotoSet`.

Chapter 01 introduces these. Five on-disk layouts are read (see the data manifests'
README for where each comes from):

``coordinate`` (:func:`load_qmul_coordinate`)
    QMUL-V2 as used by most SketchX code: ``<root>/<Name>_Coordinate``, a pickle
    ``{"/train/<photo_id>_<n>" | "/test/<photo_id>_<n>": (N, 3) float64}``, and
    ``<root>/photo/<photo_id>.png`` (or ``.jpg``).
``folders`` (:func:`load_qmul_folders`)
    pix2pix-style folders: ``trainA/ testA/`` hold sketch images ``<photo_id>_<k>.png``,
    ``trainB/ testB/`` hold photos ``<photo_id>.png``.
``svg`` (:func:`load_qmul_svg`)
    the official QMUL-V2 release: ``<X>_photo/<photo_id>.png``,
    ``<X>_sketch/<photo_id>_<k>.svg`` and the lists ``photo_train.txt``,
    ``photo_test.txt`` (plus, optionally, ``sketch_train.txt``, ``sketch_test.txt``).
``sketchy`` (:func:`load_sketchy`)
    the Sketchy database: ``photo/tx_000000000000/<category>/<id>.jpg``,
    ``sketch/tx_000000000000/<category>/<id>-<k>.png`` and ``testset.txt``.
``folder_pair`` (:func:`load_folder_pair`)
    any plain ``photo/`` + ``sketch/`` pair of image folders, with an optional
    ``test.txt``.

Shared rules:

* A sketch is paired with the photo named by its file name (or pickle key) minus
  the final ``_<k>`` (or ``-<k>``): the split is made at the **last** separator,
  because photo ids themselves may contain it (ChairV2 has ``00140128_v1``).
* Nothing is dropped silently: empty or malformed sketches, sketches whose photo
  is missing, split conflicts and (with ``check_images=True``) unreadable images go
  to ``SketchPhotoSet.skipped`` as ``(item, reason)`` pairs.
* No dataset ships a validation split, so one is carved out of train **by photo**
  (:func:`split_val_by_photo`): a seeded ``val_fraction`` of the train photos, with
  all their sketches, become ``"val"``. Test stays test.
* ``photo_split`` holds every photo that has sketches, and every photo whose split
  the layout states (folders, lists). A photo without sketches in the coordinate
  layout has no stated split: it stays in ``photos`` (a gallery-only photo) and is
  left out of ``photo_split`` unless ``unpaired_split`` names one (``"test"`` adds
  such photos to the test gallery as distractors). This matches the published
  protocol, whose gallery holds exactly the photos paired with test sketches.
"""

from __future__ import annotations

import inspect
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from duet_lib.data.records import SPLITS, SketchPhotoSet, SketchRecord
from duet_lib.data.safe_pickle import safe_load
from duet_lib.data.strokes import CANVAS, StrokeError, rasterize, validate_strokes
from duet_lib.progress import tqdm

__all__ = [
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "CorruptImageError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "SvgParseError",
    "check_image",
    "load_dataset",
    "load_folder_pair",
    "load_image",
    "load_qmul_coordinate",
    "load_qmul_folders",
    "load_qmul_svg",
    "load_sketch_image",
    "load_sketchy",
    "parse_svg_strokes",
    "split_val_by_photo",
]

#: Layout names accepted by :func:`load_dataset`.
LAYOUTS = ("coordinate", "folders", "svg", "sketchy", "folder_pair")

#: Image file extensions the raster loaders read, in order of preference when a
#: photo id exists with several of them.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

_SEPARATORS = {"underscore": "_", "hyphen": "-"}


class DatasetNotFoundError(FileNotFoundError):
    """The dataset root, or a file or folder its layout requires, does not exist."""


class DatasetFormatError(ValueError):
    """The files exist but their content does not fit the layout."""


class CorruptImageError(ValueError):
    """An image file that PIL cannot decode."""


class SvgParseError(ValueError):
    """An SVG sketch whose strokes cannot be read."""


# ---------------------------------------------------------------------------
# Images


def _composite_on_white(img: Image.Image) -> Image.Image:
    """RGB copy of ``img``; transparent areas become white (sketch PNGs often have
    a transparent background whose hidden colour is black)."""
    if img.mode in ("RGBA", "LA", "PA") or (
        img.mode == "P" and "transparency" in img.info
    ):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Read an image file as a fully decoded RGB PIL image.

    Transparent pixels are composited on white.

    Raises:
        FileNotFoundError: no file at ``path``.
        CorruptImageError: the file exists but cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return _composite_on_white(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise CorruptImageError(
            f"cannot read image {path}: {type(exc).__name__}: {exc}"
        ) from None


def check_image(path: str | Path) -> str | None:
    """Why an image file is unusable, or None when it opens, verifies and decodes."""
    path = Path(path)
    if not path.is_file():
        return "file not found"
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:  # verify() leaves the image unusable
            img.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return f"unreadable image ({type(exc).__name__}: {exc})"
    return None


def load_sketch_image(
    record: SketchRecord, size: int | None = 256, line_width: float = 3.0
) -> Image.Image:
    """The sketch of ``record`` as an RGB image of ``size`` x ``size``.

    Vector sketches are drawn with :func:`duet_lib.data.strokes.rasterize`; raster
    sketches are read, padded to a square with white and resized (bilinear).

    Args:
        record: a sketch with ``strokes`` (N, 3) or ``path`` set.
        size: output side in pixels; None keeps a raster file's own size (vector
            sketches are then drawn at the 256 canvas size).
        line_width: stroke width in canvas pixels, for vector sketches.

    Raises:
        ValueError: the record has neither strokes nor a path.
        CorruptImageError: the raster file cannot be decoded.
    """
    if record.strokes is not None:
        return rasterize(record.strokes, size=size or CANVAS, line_width=line_width)
    if record.path is None:
        raise ValueError(f"sketch {record.key!r} has neither strokes nor a path")
    img = load_image(record.path)
    if size is None:
        return img
    w, h = img.size
    if w != h:
        side = max(w, h)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(img, ((side - w) // 2, (side - h) // 2))
        img = square
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return img


# ---------------------------------------------------------------------------
# SVG sketches

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PATH_TOKENS = re.compile(
    rf"(?P<cmd>[A-Za-z])|(?P<num>{_NUMBER})|(?P<sep>[\s,]+)|(?P<bad>.)"
)
_TRANSFORM = re.compile(r"\s*([A-Za-z]+)\s*\(([^)]*)\)\s*,?")
_SKIP_SUBTREES = {"defs", "clipPath", "mask", "symbol", "metadata", "title", "desc"}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _numbers(text: str, what: str) -> list[float]:
    out = []
    for m in _PATH_TOKENS.finditer(text):
        if m.group("num") is not None:
            out.append(float(m.group("num")))
        elif m.group("sep") is None:
            raise SvgParseError(f"{what}: unexpected {m.group(0)!r} in {text[:60]!r}")
    return out


def _pairs(values: list[float], what: str) -> list[tuple[float, float]]:
    if len(values) % 2:
        raise SvgParseError(f"{what}: odd number of coordinates ({len(values)})")
    return list(zip(values[0::2], values[1::2], strict=True))


def _parse_transform(text: str | None) -> np.ndarray:
    """3 x 3 affine matrix of an SVG ``transform`` attribute."""
    mat = np.eye(3)
    if not text or not text.strip():
        return mat
    pos = 0
    for m in _TRANSFORM.finditer(text):
        if m.start() != pos:
            break
        pos = m.end()
        kind, args = m.group(1), _numbers(m.group(2), "transform")
        t = np.eye(3)
        if kind == "matrix" and len(args) == 6:
            a, b, c, d, e, f = args
            t = np.array([[a, c, e], [b, d, f], [0, 0, 1]], dtype=float)
        elif kind == "translate" and len(args) in (1, 2):
            t[0, 2] = args[0]
            t[1, 2] = args[1] if len(args) == 2 else 0.0
        elif kind == "scale" and len(args) in (1, 2):
            t[0, 0] = args[0]
            t[1, 1] = args[1] if len(args) == 2 else args[0]
        elif kind == "rotate" and len(args) in (1, 3):
            r = math.radians(args[0])
            rot = np.array(
                [
                    [math.cos(r), -math.sin(r), 0],
                    [math.sin(r), math.cos(r), 0],
                    [0, 0, 1],
                ]
            )
            if len(args) == 3:
                cx, cy = args[1], args[2]
                to = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]], dtype=float)
                back = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], dtype=float)
                rot = to @ rot @ back
            t = rot
        elif kind == "skewX" and len(args) == 1:
            t[0, 1] = math.tan(math.radians(args[0]))
        elif kind == "skewY" and len(args) == 1:
            t[1, 0] = math.tan(math.radians(args[0]))
        else:
            raise SvgParseError(f"unsupported transform {m.group(0).strip()!r}")
        mat = mat @ t
    if text[pos:].strip():
        raise SvgParseError(f"cannot parse transform {text!r}")
    return mat


def _path_strokes(d: str) -> list[list[tuple[float, float]]]:
    """Subpaths of an SVG path ``d`` built from M/m, L/l, H/h, V/v and Z/z."""
    tokens: list[str | float] = []
    for m in _PATH_TOKENS.finditer(d):
        if m.group("cmd") is not None:
            tokens.append(m.group("cmd"))
        elif m.group("num") is not None:
            tokens.append(float(m.group("num")))
        elif m.group("bad") is not None:
            raise SvgParseError(f"path: unexpected {m.group('bad')!r} in {d[:60]!r}")
    strokes: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    x = y = 0.0
    start = (0.0, 0.0)
    i, cmd = 0, None

    def take(n: int) -> list[float]:
        nonlocal i
        vals = tokens[i : i + n]
        if len(vals) < n or not all(isinstance(v, float) for v in vals):
            raise SvgParseError(
                f"path: command {cmd!r} needs {n} numbers in {d[:60]!r}"
            )
        i += n
        return vals  # type: ignore[return-value]

    while i < len(tokens):
        tok = tokens[i]
        if isinstance(tok, str):
            cmd = tok
            i += 1
            if cmd in "Zz":
                if current:
                    current.append(start)
                    x, y = start
                continue
            if cmd not in "MmLlHhVv":
                raise SvgParseError(
                    f"unsupported path command {cmd!r} (only M, L, H, V, Z and their "
                    "relative forms are read)"
                )
        elif cmd is None:
            raise SvgParseError(f"path must start with a command: {d[:60]!r}")
        if cmd in "Mm":
            dx, dy = take(2)
            if cmd == "m" and (strokes or current):
                x, y = x + dx, y + dy
            else:
                x, y = dx, dy
            if len(current) > 1:
                strokes.append(current)
            current = [(x, y)]
            start = (x, y)
            cmd = "l" if cmd == "m" else "L"  # further pairs are implicit line-tos
        elif cmd in "Ll":
            dx, dy = take(2)
            x, y = (x + dx, y + dy) if cmd == "l" else (dx, dy)
            current.append((x, y))
        elif cmd in "Hh":
            (v,) = take(1)
            x = x + v if cmd == "h" else v
            current.append((x, y))
        else:  # V / v
            (v,) = take(1)
            y = y + v if cmd == "v" else v
            current.append((x, y))
    if len(current) > 1:
        strokes.append(current)
    return strokes


def _viewport(svg: ET.Element, canvas: int) -> np.ndarray:
    """Matrix from the SVG's user units to the ``canvas`` x ``canvas`` grid."""
    view_box = svg.get("viewBox")
    if view_box:
        vals = _numbers(view_box, "viewBox")
        if len(vals) != 4 or vals[2] <= 0 or vals[3] <= 0:
            raise SvgParseError(f"bad viewBox {view_box!r}")
        mx, my, w, h = vals
        return np.array(
            [
                [canvas / w, 0, -mx * canvas / w],
                [0, canvas / h, -my * canvas / h],
                [0, 0, 1],
            ]
        )
    sizes = []
    for attr in ("width", "height"):
        m = re.fullmatch(rf"\s*({_NUMBER})\s*(px)?\s*", svg.get(attr, ""))
        sizes.append(float(m.group(1)) if m else None)
    if sizes[0] and sizes[1] and sizes[0] > 0 and sizes[1] > 0:
        return np.diag([canvas / sizes[0], canvas / sizes[1], 1.0])
    return np.eye(3)


def parse_svg_strokes(source: str | Path | bytes, canvas: int = CANVAS) -> np.ndarray:
    """Read the strokes of an SVG sketch into the QMUL (N, 3) format.

    Each ``<polyline>``, ``<polygon>``, ``<line>`` and each subpath of a ``<path>``
    (absolute or relative M, L, H, V, Z commands) becomes one stroke. ``transform``
    attributes are applied, and the ``viewBox`` (or ``width``/``height``) is mapped
    onto a ``canvas`` x ``canvas`` grid. Curves are not read: a path that uses them
    raises :class:`SvgParseError` rather than being drawn wrong.

    Args:
        source: SVG file path, or the SVG text as ``bytes``.
        canvas: side of the target coordinate grid (256 for QMUL).

    Returns:
        float64 array (N, 3): x, y and a pen flag that is 1 on each stroke's last point.

    Raises:
        SvgParseError: not SVG, unsupported content or no strokes.
    """
    what = "svg"
    try:
        if isinstance(source, bytes):
            root = ET.fromstring(source)
        else:
            what = str(source)
            root = ET.parse(source).getroot()
    except ET.ParseError as exc:
        raise SvgParseError(f"{what}: not well-formed XML ({exc})") from None
    except OSError as exc:
        raise SvgParseError(f"{what}: cannot read ({exc})") from None
    if _local(root.tag) != "svg":
        raise SvgParseError(f"{what}: root element is <{_local(root.tag)}>, not <svg>")

    strokes: list[np.ndarray] = []

    def add(points: list[tuple[float, float]], mat: np.ndarray) -> None:
        if len(points) < 2:
            return
        xy = np.asarray(points, dtype=float)
        xy = xy @ mat[:2, :2].T + mat[:2, 2]
        pen = np.zeros((len(xy), 1))
        pen[-1] = 1.0
        strokes.append(np.hstack([xy, pen]))

    def walk(el: ET.Element, parent: np.ndarray) -> None:
        tag = _local(el.tag)
        if tag in _SKIP_SUBTREES:
            return
        mat = parent @ _parse_transform(el.get("transform"))
        if tag in ("polyline", "polygon"):
            pts = _pairs(_numbers(el.get("points", ""), tag), tag)
            if tag == "polygon" and pts:
                pts.append(pts[0])
            add(pts, mat)
        elif tag == "line":
            vals = [float(el.get(a, "0")) for a in ("x1", "y1", "x2", "y2")]
            add([(vals[0], vals[1]), (vals[2], vals[3])], mat)
        elif tag == "path":
            for sub in _path_strokes(el.get("d", "")):
                add(sub, mat)
        elif tag == "use":
            raise SvgParseError(f"{what}: <use> references are not supported")
        for child in el:
            walk(child, mat)

    try:
        walk(root, _viewport(root, canvas))
    except SvgParseError as exc:
        if str(exc).startswith(what):
            raise
        raise SvgParseError(f"{what}: {exc}") from None
    except ValueError as exc:  # float() of a bad attribute
        raise SvgParseError(f"{what}: {exc}") from None
    if not strokes:
        raise SvgParseError(f"{what}: no polyline, line or path strokes found")
    try:
        return validate_strokes(np.concatenate(strokes), name=what)
    except StrokeError as exc:
        raise SvgParseError(str(exc)) from None


# ---------------------------------------------------------------------------
# Shared assembly


def split_val_by_photo(
    photo_ids: Iterable[str], val_fraction: float, seed: int = 0
) -> set[str]:
    """Pick the validation photos out of the train photos, deterministically.

    The ids are sorted, shuffled with ``numpy.random.default_rng(seed)`` and the first
    ``round(val_fraction * n)`` are taken (at least one, and at least one left for
    train, when ``val_fraction > 0`` and there are two or more photos). The result
    depends only on the set of ids, the fraction and the seed.

    Raises:
        ValueError: ``val_fraction`` outside [0, 1).
    """
    if not (isinstance(val_fraction, int | float) and 0.0 <= val_fraction < 1.0):
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    ids = sorted(set(photo_ids))
    n = len(ids)
    if val_fraction == 0 or n < 2:
        return set()
    n_val = min(max(int(math.floor(val_fraction * n + 0.5)), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return {ids[i] for i in order[:n_val]}


@dataclass
class _Candidate:
    key: str
    photo_id: str
    split: str  # "train" or "test", as the source states it
    strokes: np.ndarray | None = None
    path: Path | None = None


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _require_dir(path: Path, expected: str) -> Path:
    if not path.is_dir():
        raise DatasetNotFoundError(f"missing folder {path} (expected {expected})")
    return path


def _require_root(root: str | Path, layout: str, expected: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"dataset root {root} does not exist or is not a folder "
            f"(layout {layout!r} expects {expected})"
        )
    return root


def _is_image(p: Path) -> bool:
    return (
        p.is_file()
        and not p.name.startswith(".")
        and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _index_images(
    folder: Path, root: Path, skipped: list[tuple[str, str]], prefix: str = ""
) -> dict[str, Path]:
    """Image files of ``folder`` by id (``prefix`` + stem); duplicates are skipped."""
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    files = sorted(
        (p for p in folder.iterdir() if _is_image(p)),
        key=lambda p: (p.stem, rank[p.suffix.lower()], p.name),
    )
    out: dict[str, Path] = {}
    for p in files:
        pid = prefix + p.stem
        if pid in out:
            skipped.append(
                (_rel(p, root), f"duplicate photo id {pid!r}; using {out[pid].name}")
            )
            continue
        out[pid] = p
    return out


def _pair_id(stem: str, sep: str) -> str | None:
    """Photo id of a sketch file stem: everything before the last ``sep``."""
    head, found, tail = stem.rpartition(sep)
    return head if found and head and tail else None


def _read_id_list(path: Path) -> list[str]:
    """Ids in a split list: one per line, folders and image/SVG extensions dropped."""
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = line.replace("\\", "/").rsplit("/", 1)[-1]
        stem, dot, ext = name.rpartition(".")
        if dot and "." + ext.lower() in (*IMAGE_EXTENSIONS, ".svg"):
            name = stem
        ids.append(name)
    return ids


def _validate_common(val_fraction: float, seed: int) -> None:
    if not (isinstance(val_fraction, int | float) and 0.0 <= val_fraction < 1.0):
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an int, got {seed!r}")


def _assemble(
    *,
    name: str,
    root: Path,
    photos: dict[str, Path],
    candidates: list[_Candidate],
    skipped: list[tuple[str, str]],
    val_fraction: float,
    seed: int,
    stated_split: dict[str, str] | None = None,
    unpaired_split: str | None = None,
    check_images: bool = False,
    quiet: bool = False,
) -> SketchPhotoSet:
    """Pair candidates with photos, resolve splits, hold out val and build the set.

    ``stated_split`` is photo id -> "train"/"test" where the layout says it; a
    sketch whose split disagrees with its photo's stated split is skipped.
    """
    photos = dict(photos)
    if check_images:
        for pid, p in tqdm(
            sorted(photos.items()), desc="check photos", disable=quiet, leave=False
        ):
            reason = check_image(p)
            if reason:
                skipped.append((_rel(p, root), reason))
                del photos[pid]

    kept: list[_Candidate] = []
    raster = [c for c in candidates if c.path is not None]
    bad_sketch: dict[str, str] = {}
    if check_images and raster:
        for c in tqdm(raster, desc="check sketches", disable=quiet, leave=False):
            reason = check_image(c.path)
            if reason:
                bad_sketch[c.key] = reason
    for c in candidates:
        if c.key in bad_sketch:
            skipped.append((c.key, bad_sketch[c.key]))
        elif c.photo_id not in photos:
            skipped.append((c.key, f"no photo {c.photo_id!r} for this sketch"))
        elif stated_split is not None and c.photo_id not in stated_split:
            skipped.append(
                (c.key, f"photo {c.photo_id!r} is in no split list, split unknown")
            )
        elif stated_split is not None and stated_split[c.photo_id] != c.split:
            skipped.append(
                (
                    c.key,
                    f"sketch is listed as {c.split} but its photo {c.photo_id!r} as "
                    f"{stated_split[c.photo_id]}",
                )
            )
        else:
            kept.append(c)

    # A photo with both train and test sketches would leak test into training:
    # the test sketches win and the train ones are skipped.
    test_photos = {c.photo_id for c in kept if c.split == "test"}
    clean = []
    for c in kept:
        if c.split == "train" and c.photo_id in test_photos:
            skipped.append((c.key, f"photo {c.photo_id!r} also has test sketches"))
        else:
            clean.append(c)

    train_photos = {c.photo_id for c in clean if c.split == "train"}
    val_photos = split_val_by_photo(train_photos, val_fraction, seed)

    records = []
    photo_split: dict[str, str] = {}
    for c in sorted(clean, key=lambda c: c.key):
        split = "val" if c.split == "train" and c.photo_id in val_photos else c.split
        photo_split[c.photo_id] = split
        records.append(
            SketchRecord(
                key=c.key,
                photo_id=c.photo_id,
                split=split,
                strokes=c.strokes,
                path=c.path,
            )
        )
    for pid in sorted(photos):
        if pid in photo_split:
            continue
        if stated_split is not None and pid in stated_split:
            photo_split[pid] = stated_split[pid]
        elif unpaired_split is not None:
            photo_split[pid] = unpaired_split
    return SketchPhotoSet(
        name=name,
        root=root,
        photos=dict(sorted(photos.items())),
        photo_split=dict(sorted(photo_split.items())),
        sketches=records,
        skipped=skipped,
    )


def _raster_candidates(
    folder: Path,
    root: Path,
    split: str,
    sep: str,
    skipped: list[tuple[str, str]],
    prefix: str = "",
) -> list[_Candidate]:
    out = []
    for p in sorted(folder.iterdir()):
        if not _is_image(p):
            continue
        key = _rel(p, root)
        pid = _pair_id(p.stem, sep)
        if pid is None:
            skipped.append(
                (key, f"file name has no '{sep}<k>' suffix naming the photo")
            )
            continue
        out.append(_Candidate(key=key, photo_id=prefix + pid, split=split, path=p))
    return out


# ---------------------------------------------------------------------------
# Layout C: coordinate pickle


def load_qmul_coordinate(
    root: str | Path,
    name: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    *,
    unpaired_split: str | None = None,
    check_images: bool = False,
    dataset_name: str | None = None,
    quiet: bool = False,
) -> SketchPhotoSet:
    """Load QMUL-V2 in the Coordinate layout (layout C; chapter 01).

    Expects ``<root>/<name>_Coordinate`` (a pickle read with
    :func:`duet_lib.data.safe_pickle.safe_load`) and ``<root>/photo/<id>.png|jpg``.

    Args:
        root: dataset folder.
        name: file prefix, e.g. "ChairV2"; None finds the single ``*_Coordinate`` file.
        val_fraction: share of train photos held out as "val" (by photo).
        seed: seed of the validation draw.
        unpaired_split: split given to photos that no sketch depicts (None: leave
            them out of ``photo_split``; they stay in ``photos``).
        check_images: decode every photo and skip unreadable ones.
        dataset_name: ``SketchPhotoSet.name``; default ``name.lower()``.
        quiet: hide progress bars.

    Returns:
        The set; sketches carry ``strokes`` (N, 3) float64 and keep the pickle keys.

    Raises:
        DatasetNotFoundError: root, pickle or ``photo/`` missing.
        DatasetFormatError: several pickles and no ``name``, or the pickle is not a
            dict with string keys.
        duet_lib.data.safe_pickle.SafePickleError: unsafe or corrupt pickle.
    """
    _validate_common(val_fraction, seed)
    if unpaired_split is not None and unpaired_split not in SPLITS:
        raise ValueError(
            f"unpaired_split must be None or one of {SPLITS}, got {unpaired_split!r}"
        )
    expected = "<Name>_Coordinate (pickle) and photo/<id>.png"
    root = _require_root(root, "coordinate", expected)
    if name is None:
        found = sorted(p for p in root.glob("*_Coordinate") if p.is_file())
        if not found:
            raise DatasetNotFoundError(
                f"no '<Name>_Coordinate' pickle in {root} (layout 'coordinate' "
                f"expects {expected})"
            )
        if len(found) > 1:
            raise DatasetFormatError(
                f"several Coordinate pickles in {root}: "
                f"{', '.join(p.name for p in found)}; pass name= to pick one"
            )
        pickle_path = found[0]
        name = pickle_path.name[: -len("_Coordinate")]
    else:
        pickle_path = root / f"{name}_Coordinate"
        if not pickle_path.is_file():
            raise DatasetNotFoundError(f"missing pickle {pickle_path} (name={name!r})")
    photo_dir = _require_dir(root / "photo", "photo/<id>.png, the photos")

    data = safe_load(pickle_path)
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise DatasetFormatError(
            f"{pickle_path}: expected a dict from '/train/<id>_<n>' keys to (N, 3) "
            f"arrays, got {type(data).__name__}"
        )
    skipped: list[tuple[str, str]] = []
    photos = _index_images(photo_dir, root, skipped)
    candidates = []
    for key in sorted(data):
        parts = key.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in ("train", "test"):
            skipped.append((key, "key is not '/train/<id>_<n>' or '/test/<id>_<n>'"))
            continue
        pid = _pair_id(parts[1], "_")
        if pid is None:
            skipped.append((key, "key has no '_<n>' suffix after the photo id"))
            continue
        try:
            strokes = validate_strokes(data[key], name=key)
        except StrokeError as exc:
            skipped.append((key, str(exc)))
            continue
        candidates.append(
            _Candidate(key=key, photo_id=pid, split=parts[0], strokes=strokes)
        )
    return _assemble(
        name=dataset_name or name.lower(),
        root=root,
        photos=photos,
        candidates=candidates,
        skipped=skipped,
        val_fraction=val_fraction,
        seed=seed,
        unpaired_split=unpaired_split,
        check_images=check_images,
        quiet=quiet,
    )


# ---------------------------------------------------------------------------
# Layout B: trainA/testA/trainB/testB


def load_qmul_folders(
    root: str | Path,
    val_fraction: float = 0.1,
    seed: int = 0,
    *,
    check_images: bool = False,
    dataset_name: str | None = None,
    quiet: bool = False,
) -> SketchPhotoSet:
    """Load the pix2pix-style folders (layout B; chapter 01).

    ``trainA/``, ``testA/`` hold sketch images ``<photo_id>_<k>.png``; ``trainB/``,
    ``testB/`` hold photos ``<photo_id>.png``. A sketch pairs only with a photo of
    its own split.

    Args:
        root: dataset folder.
        val_fraction, seed: validation hold-out by photo (see
            :func:`split_val_by_photo`).
        check_images: decode every image and skip unreadable ones.
        dataset_name: ``SketchPhotoSet.name``; default the root folder's name.
        quiet: hide progress bars.

    Raises:
        DatasetNotFoundError: root or one of the four folders missing.
    """
    _validate_common(val_fraction, seed)
    root = _require_root(root, "folders", "trainA/ testA/ trainB/ testB/")
    missing = [
        d for d in ("trainA", "testA", "trainB", "testB") if not (root / d).is_dir()
    ]
    if missing:
        raise DatasetNotFoundError(
            f"{root}: missing folder(s) {', '.join(missing)} (layout 'folders' expects "
            "trainA/ testA/ with sketches <id>_<k>.png and trainB/ testB/ with photos)"
        )
    skipped: list[tuple[str, str]] = []
    photos: dict[str, Path] = {}
    stated: dict[str, str] = {}
    candidates: list[_Candidate] = []
    for split in ("train", "test"):
        for pid, p in _index_images(root / f"{split}B", root, skipped).items():
            if pid in photos:  # in trainB and testB: the test copy wins
                skipped.append(
                    (_rel(photos[pid], root), f"photo {pid!r} is also in testB")
                )
            photos[pid] = p
            stated[pid] = split
        candidates += _raster_candidates(root / f"{split}A", root, split, "_", skipped)
    return _assemble(
        name=dataset_name or root.name,
        root=root,
        photos=photos,
        candidates=candidates,
        skipped=skipped,
        val_fraction=val_fraction,
        seed=seed,
        stated_split=stated,
        check_images=check_images,
        quiet=quiet,
    )


# ---------------------------------------------------------------------------
# Layout A: official SVG release


def load_qmul_svg(
    root: str | Path,
    name: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    *,
    canvas: int = CANVAS,
    check_images: bool = False,
    dataset_name: str | None = None,
    quiet: bool = False,
) -> SketchPhotoSet:
    """Load the official QMUL-V2 SVG release (layout A; chapter 01).

    Expects ``<name>_photo/<id>.png``, ``<name>_sketch/<id>_<k>.svg``,
    ``photo_train.txt`` and ``photo_test.txt`` (one photo per line, with or without
    extension). ``sketch_train.txt``/``sketch_test.txt`` are optional: when present,
    a sketch's split comes from them and must agree with its photo's; a sketch in
    neither list is skipped. SVG strokes are parsed with :func:`parse_svg_strokes`.

    Args:
        root: dataset folder.
        name: folder prefix, e.g. "ShoeV2"; None finds the single ``*_photo`` folder.
        val_fraction, seed: validation hold-out by photo.
        canvas: coordinate grid the SVGs are mapped onto.
        check_images: decode every photo and skip unreadable ones.
        dataset_name: ``SketchPhotoSet.name``; default ``name.lower()``.
        quiet: hide the parsing progress bar.

    Raises:
        DatasetNotFoundError: root, folders or the photo split lists missing.
        DatasetFormatError: several ``*_photo`` folders and no ``name``.
    """
    _validate_common(val_fraction, seed)
    expected = "<X>_photo/, <X>_sketch/, photo_train.txt and photo_test.txt"
    root = _require_root(root, "svg", expected)
    if name is None:
        found = sorted(
            p.name[: -len("_photo")] for p in root.glob("*_photo") if p.is_dir()
        )
        if not found:
            raise DatasetNotFoundError(
                f"no '<X>_photo' folder in {root} (layout 'svg' expects {expected})"
            )
        if len(found) > 1:
            raise DatasetFormatError(
                f"several photo folders in {root}: {', '.join(found)}; pass name="
            )
        name = found[0]
    photo_dir = _require_dir(root / f"{name}_photo", f"{name}_photo/<id>.png")
    sketch_dir = _require_dir(root / f"{name}_sketch", f"{name}_sketch/<id>_<k>.svg")
    lists = {}
    for kind in ("photo", "sketch"):
        for split in ("train", "test"):
            lists[kind, split] = root / f"{kind}_{split}.txt"
    missing = [p.name for k, p in lists.items() if k[0] == "photo" and not p.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{root}: missing split list(s) {', '.join(missing)}"
        )
    have_sketch_lists = [lists["sketch", s].is_file() for s in ("train", "test")]
    if any(have_sketch_lists) and not all(have_sketch_lists):
        raise DatasetNotFoundError(
            f"{root}: found only one of sketch_train.txt / sketch_test.txt; need both "
            "or neither"
        )

    skipped: list[tuple[str, str]] = []
    photos = _index_images(photo_dir, root, skipped)
    stated: dict[str, str] = {}
    for split in ("train", "test"):
        for pid in _read_id_list(lists["photo", split]):
            if stated.get(pid, split) != split:
                skipped.append((pid, "photo listed in both photo_train and photo_test"))
                stated[pid] = "test"
                continue
            stated[pid] = split
            if pid not in photos:
                skipped.append((pid, f"listed in photo_{split}.txt but no photo file"))
    sketch_split: dict[str, str] | None = None
    if all(have_sketch_lists):
        sketch_split = {}
        for split in ("train", "test"):
            for sid in _read_id_list(lists["sketch", split]):
                sketch_split[sid] = split

    candidates = []
    files = sorted(p for p in sketch_dir.iterdir() if p.suffix.lower() == ".svg")
    for p in tqdm(files, desc="parse SVG sketches", disable=quiet, leave=False):
        key = _rel(p, root)
        pid = _pair_id(p.stem, "_")
        if pid is None:
            skipped.append((key, "file name has no '_<k>' suffix naming the photo"))
            continue
        if sketch_split is not None:
            if p.stem not in sketch_split:
                skipped.append((key, "in neither sketch_train.txt nor sketch_test.txt"))
                continue
            split = sketch_split[p.stem]
        else:
            split = stated.get(pid, "train")  # unlisted photos are skipped later
        try:
            strokes = parse_svg_strokes(p, canvas=canvas)
        except SvgParseError as exc:
            skipped.append((key, str(exc)))
            continue
        candidates.append(
            _Candidate(key=key, photo_id=pid, split=split, strokes=strokes)
        )
    return _assemble(
        name=dataset_name or name.lower(),
        root=root,
        photos=photos,
        candidates=candidates,
        skipped=skipped,
        val_fraction=val_fraction,
        seed=seed,
        stated_split=stated,
        check_images=check_images,
        quiet=quiet,
    )


# ---------------------------------------------------------------------------
# Sketchy


def load_sketchy(
    root: str | Path,
    val_fraction: float = 0.1,
    seed: int = 0,
    *,
    variant: str = "tx_000000000000",
    drop_invalid: bool = False,
    check_images: bool = False,
    dataset_name: str | None = None,
    quiet: bool = False,
) -> SketchPhotoSet:
    """Load the Sketchy database (chapter 01).

    Photos ``photo/<variant>/<category>/<id>.jpg`` get the id ``<category>/<id>``;
    sketches ``sketch/<variant>/<category>/<id>-<k>.png`` pair with the photo of the
    same category minus the last ``-<k>``. ``testset.txt`` (in ``root`` or
    ``root/info``) lists test photos as ``<category>/<id>.jpg``; all other photos are
    train (minus the validation hold-out).

    Args:
        root: dataset folder.
        val_fraction, seed: validation hold-out by photo.
        variant: the ``tx_*`` rendering folder (tx_000000000000: no transformation).
        drop_invalid: skip sketches named in the ``invalid-*.txt`` lists.
        check_images: decode every image and skip unreadable ones.
        dataset_name: ``SketchPhotoSet.name``; default "sketchy".
        quiet: hide progress bars.

    Raises:
        DatasetNotFoundError: root, the variant folders, testset.txt, or (with
            ``drop_invalid``) the invalid lists missing.
    """
    _validate_common(val_fraction, seed)
    expected = f"photo/{variant}/<category>/, sketch/{variant}/<category>/, testset.txt"
    root = _require_root(root, "sketchy", expected)
    photo_root = _require_dir(root / "photo" / variant, f"photo/{variant}/<category>/")
    sketch_root = _require_dir(
        root / "sketch" / variant, f"sketch/{variant}/<category>/"
    )
    info_dirs = [root, root / "info"]
    testset = next(
        (d / "testset.txt" for d in info_dirs if (d / "testset.txt").is_file()), None
    )
    if testset is None:
        raise DatasetNotFoundError(
            f"{root}: missing testset.txt (looked in . and info/)"
        )

    invalid: dict[str, str] = {}
    if drop_invalid:
        lists = sorted(
            p for d in info_dirs if d.is_dir() for p in d.glob("invalid-*.txt")
        )
        if not lists:
            raise DatasetNotFoundError(
                f"{root}: drop_invalid=True but no invalid-*.txt list in . or info/"
            )
        for p in lists:
            for line in p.read_text(encoding="utf-8").splitlines():
                entry = line.strip().replace("\\", "/")
                entry = entry.removesuffix(".png")
                if entry:
                    invalid.setdefault(entry, p.name)

    skipped: list[tuple[str, str]] = []
    photos: dict[str, Path] = {}
    candidates: list[_Candidate] = []
    categories = sorted(d for d in photo_root.iterdir() if d.is_dir())
    for cat_dir in categories:
        photos.update(_index_images(cat_dir, root, skipped, prefix=f"{cat_dir.name}/"))
    test_ids = set()
    for line in testset.read_text(encoding="utf-8").splitlines():
        entry = line.strip().replace("\\", "/")
        if not entry:
            continue
        stem, dot, ext = entry.rpartition(".")
        pid = stem if dot and "." + ext.lower() in IMAGE_EXTENSIONS else entry
        if pid not in photos:
            skipped.append((pid, f"listed in {testset.name} but no photo file"))
        test_ids.add(pid)
    stated = {pid: ("test" if pid in test_ids else "train") for pid in photos}

    for cat_dir in sorted(d for d in sketch_root.iterdir() if d.is_dir()):
        cands = _raster_candidates(
            cat_dir, root, "train", "-", skipped, prefix=f"{cat_dir.name}/"
        )
        for c in cands:
            stem = c.path.stem
            reason = invalid.get(f"{cat_dir.name}/{stem}") or invalid.get(stem)
            if reason:
                skipped.append((c.key, f"listed in {reason}"))
                continue
            c.split = stated.get(c.photo_id, "train")
            candidates.append(c)
    return _assemble(
        name=dataset_name or "sketchy",
        root=root,
        photos=photos,
        candidates=candidates,
        skipped=skipped,
        val_fraction=val_fraction,
        seed=seed,
        stated_split=stated,
        check_images=check_images,
        quiet=quiet,
    )


# ---------------------------------------------------------------------------
# Plain photo/ + sketch/ folders


def load_folder_pair(
    root: str | Path,
    rule: str = "underscore",
    val_fraction: float = 0.1,
    seed: int = 0,
    *,
    photo_dir: str = "photo",
    sketch_dir: str = "sketch",
    check_images: bool = False,
    dataset_name: str | None = None,
    quiet: bool = False,
) -> SketchPhotoSet:
    """Load a plain pair of image folders (chapter 01).

    Photos ``<root>/photo/<id>.png|jpg``, sketches ``<root>/sketch/<id>_<k>.png``
    (``rule="underscore"``) or ``<id>-<k>.png`` (``rule="hyphen"``). Every photo is
    train unless ``<root>/test.txt`` lists its id (one per line, extension optional).

    Args:
        root: dataset folder.
        rule: "underscore" or "hyphen", the separator before the sketch number.
        val_fraction, seed: validation hold-out by photo.
        photo_dir, sketch_dir: folder names inside ``root``.
        check_images: decode every image and skip unreadable ones.
        dataset_name: ``SketchPhotoSet.name``; default the root folder's name.
        quiet: hide progress bars.

    Raises:
        ValueError: unknown ``rule``.
        DatasetNotFoundError: root or folders missing.
    """
    _validate_common(val_fraction, seed)
    if rule not in _SEPARATORS:
        raise ValueError(f"rule must be one of {', '.join(_SEPARATORS)}, got {rule!r}")
    root = _require_root(root, "folder_pair", f"{photo_dir}/ and {sketch_dir}/")
    pdir = _require_dir(root / photo_dir, f"{photo_dir}/<id>.png, the photos")
    sdir = _require_dir(
        root / sketch_dir, f"{sketch_dir}/<id>{_SEPARATORS[rule]}<k>.png"
    )
    skipped: list[tuple[str, str]] = []
    photos = _index_images(pdir, root, skipped)
    test_ids: set[str] = set()
    if (root / "test.txt").is_file():
        for pid in _read_id_list(root / "test.txt"):
            if pid not in photos:
                skipped.append((pid, "listed in test.txt but no photo file"))
            test_ids.add(pid)
    stated = {pid: ("test" if pid in test_ids else "train") for pid in photos}
    candidates = _raster_candidates(sdir, root, "train", _SEPARATORS[rule], skipped)
    for c in candidates:
        c.split = stated.get(c.photo_id, "train")
    return _assemble(
        name=dataset_name or root.name,
        root=root,
        photos=photos,
        candidates=candidates,
        skipped=skipped,
        val_fraction=val_fraction,
        seed=seed,
        stated_split=stated,
        check_images=check_images,
        quiet=quiet,
    )


# ---------------------------------------------------------------------------
# Dispatch

_LOADERS: dict[str, Callable[..., SketchPhotoSet]] = {
    "coordinate": load_qmul_coordinate,
    "folders": load_qmul_folders,
    "svg": load_qmul_svg,
    "sketchy": load_sketchy,
    "folder_pair": load_folder_pair,
}


def load_dataset(layout: str, root: str | Path, **kw: object) -> SketchPhotoSet:
    """Load ``root`` with the loader of ``layout`` (one of :data:`LAYOUTS`).

    Keyword arguments go to that loader unchanged.

    Raises:
        ValueError: unknown layout, or a keyword the loader does not take.
    """
    if layout not in _LOADERS:
        raise ValueError(
            f"unknown layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}"
        )
    loader = _LOADERS[layout]
    params = inspect.signature(loader).parameters
    unknown = sorted(k for k in kw if k not in params or k == "root")
    if unknown:
        valid = ", ".join(k for k in params if k != "root")
        raise ValueError(
            f"layout {layout!r} does not take {', '.join(unknown)}; valid: {valid}"
        )
    return loader(root, **kw)
