"""The procedural sketch/photo/text world: the book's embedded default dataset.

Chapter 01 introduces it; every later chapter of the ``teach`` profile trains and
evaluates on it. It mirrors QMUL-ShoeV2 and QMUL-ChairV2 with two parametric
categories (shoe-like side views, chair-like 3/4 views) and writes itself in the
QMUL Coordinate layout, so the same loader reads it and real data:

.. code-block:: text

    <out>/photo/<photo_id>.png      photos (256 px by default)
    <out>/World_Coordinate          pickle {"/train/<photo_id>_<n>": (N, 3) float64}
    <out>/world.json                config, attributes, captions, held-out combos
    <out>/WORLD_COMPLETE            completion marker (the config hash), written last

Photo ids are ``<category>_<shape:05d>_v<variant>``. Every test shape has
``test_variants`` photos in different appearances (the *duet gallery*), every
training shape ``train_variants``. A shape's sketches all pair with variant ``v0``,
so the FG-SBIR gallery of each split holds exactly one photo per shape; the other
variants are gallery-only photos (in ``photo_split`` and ``attributes``, with no
sketch of their own), used as duet targets and as "same shape, other appearance"
negatives.

The pieces live in three modules, re-exported here:
:mod:`~duet_lib.data.world_geometry` (shapes and parts),
:mod:`~duet_lib.data.world_render` (photos, line drawings, sketches) and
:mod:`~duet_lib.data.world_text` (shape words, captions, appearance phrases).
This module adds the configuration, generation, loading, the pretraining batches
of chapter 02 and a reference matcher that shows how well sketches identify their
shape without any learning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import pickle
import shutil
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from duet_lib.data.framing import frame_strokes
from duet_lib.data.records import SPLITS, SketchPhotoSet, SketchRecord
from duet_lib.data.strokes import rasterize
from duet_lib.data.world_geometry import (
    CATEGORIES,
    PARAM_SPECS,
    Difficulty,
    Geometry,
    ParamSpec,
    Part,
    Placement,
    Shape,
    build_geometry,
    difficulty_settings,
    fit_placement,
    sample_shapes,
    shape_distance,
)
from duet_lib.data.world_render import (
    BACKGROUNDS,
    COLOURS,
    PATTERNS,
    STYLES,
    Appearance,
    SceneObject,
    line_drawing_strokes,
    random_appearance,
    render_line_drawing,
    render_photo,
    render_scene,
    render_sketch,
)
from duet_lib.data.world_text import (
    appearance_phrase,
    caption,
    line_drawing_caption,
    partial_caption,
    shape_phrases,
    shape_vocabulary,
)
from duet_lib.progress import tqdm

__all__ = [
    "BACKGROUNDS",
    "CATEGORIES",
    "COLOURS",
    "DEFAULT_HELD_OUT",
    "FORMAT_VERSION",
    "MARKER",
    "PARAM_SPECS",
    "PATTERNS",
    "STYLES",
    "Appearance",
    "Difficulty",
    "Geometry",
    "ParamSpec",
    "Part",
    "Placement",
    "PretrainingBatch",
    "SceneObject",
    "Shape",
    "WorldConfig",
    "WorldError",
    "WorldNotFoundError",
    "appearance_phrase",
    "build_geometry",
    "caption",
    "chamfer_distances",
    "difficulty_settings",
    "duet_gallery",
    "duet_queries",
    "fit_placement",
    "generate_world",
    "line_drawing_caption",
    "line_drawing_strokes",
    "load_world",
    "nearest_shapes",
    "neighbour_grid",
    "photo_attributes",
    "pretraining_batch",
    "pretraining_corpus",
    "preview_world",
    "random_appearance",
    "read_world_meta",
    "reference_accuracy",
    "reference_accuracy_world",
    "render_line_drawing",
    "render_photo",
    "render_scene",
    "render_sketch",
    "sample_shapes",
    "shape_distance",
    "shape_from_attributes",
    "shape_phrases",
    "shape_vocabulary",
    "split_sketches",
    "widen_split",
]

#: Version of the on-disk format and of the generator; part of the config hash, so
#: a change of the renderers regenerates cached worlds.
FORMAT_VERSION = 1

#: Name of the completion marker (holds the config hash).
MARKER = "WORLD_COMPLETE"

_PICKLE_NAME = "World_Coordinate"
_IN_PROGRESS = "WORLD_INCOMPLETE"

#: (category, colour, pattern) triples that no training photo, caption or
#: pretraining batch shows; test photos may show them (composition test).
DEFAULT_HELD_OUT: tuple[tuple[str, str, str], ...] = (
    ("shoe", "red", "striped"),
    ("shoe", "blue", "dotted"),
    ("shoe", "green", "checked"),
    ("chair", "yellow", "striped"),
    ("chair", "purple", "dotted"),
    ("chair", "brown", "checked"),
)


class WorldError(ValueError):
    """A bad world configuration, or a world folder that does not fit the format."""


class WorldNotFoundError(FileNotFoundError):
    """No complete world at the given folder."""


# ---------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class WorldConfig:
    """Everything that decides a generated world (its hash names the cache).

    Attributes:
        seed: seed of shapes, appearances, renderings and sketches.
        categories: object categories ("shoe", "chair").
        train_shapes: training shapes per category.
        test_shapes: test shapes per category.
        train_variants: appearance variants (photos) per training shape; more than
            one gives "same shape, other appearance" negatives.
        test_variants: appearance variants per test shape (the duet gallery).
        sketches_per_shape: sketches per shape.
        difficulty: 0 (easy) .. 1 (hard), see
            :func:`~duet_lib.data.world_geometry.difficulty_settings`.
        abstraction: sketch abstraction, 0 (traced) .. 1 (rough).
        image_size: side of the written photos in pixels.
        captions_per_photo: paraphrased captions stored per photo.
        held_out: (category, colour, pattern) triples kept out of training.
    """

    seed: int = 0
    categories: tuple[str, ...] = CATEGORIES
    train_shapes: int = 900
    test_shapes: int = 100
    train_variants: int = 2
    test_variants: int = 4
    sketches_per_shape: int = 3
    difficulty: float = 0.0
    abstraction: float = 0.4
    image_size: int = 256
    captions_per_photo: int = 3
    held_out: tuple[tuple[str, str, str], ...] = DEFAULT_HELD_OUT

    def __post_init__(self) -> None:
        # normalise list inputs (e.g. from JSON) to tuples, then validate
        try:
            object.__setattr__(self, "categories", tuple(self.categories))
            object.__setattr__(self, "held_out", tuple(tuple(t) for t in self.held_out))
        except TypeError:
            raise WorldError(
                "invalid WorldConfig: categories must be a sequence of names and "
                "held_out a sequence of (category, colour, pattern) triples"
            ) from None
        problems = []

        def is_int(v: Any) -> bool:
            return isinstance(v, int | np.integer) and not isinstance(v, bool)

        if not is_int(self.seed) or self.seed < 0:
            problems.append(f"seed must be a non-negative int, got {self.seed!r}")
        if not self.categories:
            problems.append("categories must not be empty")
        for c in self.categories:
            if c not in CATEGORIES:
                problems.append(
                    f"unknown category {c!r} (valid: {', '.join(CATEGORIES)})"
                )
        if len(set(self.categories)) != len(self.categories):
            problems.append("categories must not repeat")
        for name, lo in (
            ("train_shapes", 1),
            ("test_shapes", 1),
            ("train_variants", 1),
            ("test_variants", 1),
            ("sketches_per_shape", 1),
            ("captions_per_photo", 1),
            ("image_size", 32),
        ):
            v = getattr(self, name)
            if not is_int(v) or v < lo:
                problems.append(f"{name} must be an int >= {lo}, got {v!r}")
        for name in ("train_variants", "test_variants"):
            v = getattr(self, name)
            if is_int(v) and v > len(COLOURS):
                problems.append(
                    f"{name} must be <= {len(COLOURS)} (variants differ in colour), got {v}"
                )
        for name in ("difficulty", "abstraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
                problems.append(f"{name} must be a number in [0, 1], got {v!r}")
        for t in self.held_out:
            if len(t) != 3:
                problems.append(
                    f"held_out entries are (category, colour, pattern), got {t!r}"
                )
                continue
            c, col, pat = t
            if c not in CATEGORIES or col not in COLOURS or pat not in PATTERNS:
                problems.append(
                    f"held_out entry {t!r} names an unknown category, colour or pattern"
                )
        if problems:
            raise WorldError("invalid WorldConfig: " + "; ".join(problems))

    @classmethod
    def for_profile(cls, profile: str, **overrides: Any) -> WorldConfig:
        """Preset of a run profile.

        * ``smoke``: 2 x (16 train + 8 test) shapes, 2 sketches each, 128 px photos;
          generated in a few seconds.
        * ``teach``: 2 x (900 train + 100 test) shapes, 2 training variants and 4 test
          variants per shape, 3 sketches each: 4,400 photos, 6,000 sketches,
          200 test shapes.

        Raises:
            WorldError: unknown profile or bad override.
        """
        presets: dict[str, dict[str, Any]] = {
            "smoke": dict(
                train_shapes=16,
                test_shapes=8,
                train_variants=2,
                test_variants=3,
                sketches_per_shape=2,
                image_size=128,
                captions_per_photo=2,
            ),
            "teach": {},
        }
        if profile not in presets:
            raise WorldError(
                f"unknown profile {profile!r}; valid: {', '.join(presets)}"
            )
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise WorldError(f"unknown WorldConfig field(s) {sorted(unknown)}")
        return cls(**{**presets[profile], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of all fields."""
        d = dataclasses.asdict(self)
        d["categories"] = list(self.categories)
        d["held_out"] = [list(t) for t in self.held_out]
        return d

    def key(self) -> str:
        """Short hash of the configuration and the format version."""
        blob = json.dumps(
            {"format_version": FORMAT_VERSION, "config": self.to_dict()}, sort_keys=True
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    @property
    def held_out_set(self) -> frozenset[tuple[str, str, str]]:
        """The held-out triples as a set."""
        return frozenset(self.held_out)


# ---------------------------------------------------------------------------
# Attributes


def photo_attributes(
    shape: Shape,
    appearance: Appearance,
    *,
    variant: int = 0,
    split: str = "train",
) -> dict[str, Any]:
    """The attribute dict of one photo (what ``world.json`` stores, without texts).

    Keys: ``category``, ``shape_id``, ``params`` (raw shape parameters: continuous
    ones normalised to [0, 1], discrete ones as choice names), ``shape_words``
    (parameter -> binned phrase), ``colour``, ``pattern``, ``background``,
    ``variant``, ``split``.
    """
    words = {k: v[0] for k, v in shape_phrases(shape.category, shape.params).items()}
    return {
        "category": shape.category,
        "shape_id": shape.shape_id,
        "params": dict(shape.params),
        "shape_words": words,
        "colour": appearance.colour,
        "pattern": appearance.pattern,
        "background": appearance.background,
        "variant": int(variant),
        "split": split,
    }


def shape_from_attributes(attrs: dict[str, Any]) -> Shape:
    """Rebuild the :class:`Shape` of a photo from its attributes."""
    try:
        return Shape(
            attrs["category"], dict(attrs["params"]), attrs.get("shape_id", "")
        )
    except KeyError as exc:
        raise WorldError(f"photo attributes lack {exc.args[0]!r}") from None


def _variant_appearances(
    rng: np.random.Generator,
    category: str,
    n: int,
    exclude: frozenset[tuple[str, str, str]],
) -> list[Appearance]:
    """``n`` appearances with pairwise different colours."""
    colours = list(COLOURS)
    out = []
    for _ in range(n):
        app = random_appearance(rng, category, exclude, colours=tuple(colours))
        colours.remove(app.colour)
        out.append(app)
    return out


# ---------------------------------------------------------------------------
# Generation


def _shape_seed(
    seed: int, kind: int, cat_index: int, *rest: int
) -> np.random.Generator:
    return np.random.default_rng([seed, kind, cat_index, *rest])


def _described_photo(
    shape: Shape,
    app: Appearance,
    variant: int,
    split: str,
    rng: np.random.Generator,
    cfg: WorldConfig,
) -> dict[str, Any]:
    """A photo's attributes with its texts: ``cfg.captions_per_photo`` captions, a
    line-drawing caption and the appearance phrase, drawn from ``rng`` in that
    order (the order fixes a world's texts)."""
    attrs = photo_attributes(shape, app, variant=variant, split=split)
    attrs["captions"] = [caption(attrs, rng) for _ in range(cfg.captions_per_photo)]
    attrs["line_drawing_caption"] = line_drawing_caption(attrs, rng)
    attrs["appearance_phrase"] = appearance_phrase(attrs, rng)
    return attrs


def _render_task(
    task: dict[str, Any],
) -> tuple[list[tuple[str, dict]], list[tuple[str, np.ndarray]]]:
    """Render the photos and sketches of one shape (runs in a worker process)."""
    cfg = WorldConfig(**task["config"])
    shape = Shape(task["category"], task["params"], task["shape_id"])
    ci, idx, split = task["cat_index"], task["index"], task["split"]
    photo_dir = Path(task["photo_dir"])
    n_var = cfg.test_variants if split == "test" else cfg.train_variants
    exclude = cfg.held_out_set if split == "train" else frozenset()
    rng = _shape_seed(cfg.seed, 1, ci, idx)
    apps = _variant_appearances(rng, shape.category, n_var, exclude)
    photos = []
    for k, app in enumerate(apps):
        pid = f"{shape.shape_id}_v{k}"
        prng = _shape_seed(cfg.seed, 2, ci, idx, k)
        img = render_photo(shape, app, prng, cfg.image_size)
        Image.fromarray(img).save(
            photo_dir / f"{pid}.png", format="PNG", compress_level=1
        )
        attrs = _described_photo(
            shape, app, k, split, _shape_seed(cfg.seed, 3, ci, idx, k), cfg
        )
        photos.append((pid, attrs))
    sketches = []
    for n in range(cfg.sketches_per_shape):
        srng = _shape_seed(cfg.seed, 4, ci, idx, n)
        strokes = render_sketch(shape, srng, cfg.abstraction)
        sketches.append((f"/{split}/{shape.shape_id}_v0_{n}", strokes))
    return photos, sketches


def _plan(cfg: WorldConfig, photo_dir: Path) -> list[dict[str, Any]]:
    """One task per shape, in a fixed order (category, then shape index)."""
    tasks = []
    for cat in cfg.categories:
        ci = CATEGORIES.index(cat)  # seeds do not depend on which others are drawn
        n_total = cfg.train_shapes + cfg.test_shapes
        rng = _shape_seed(cfg.seed, 0, ci)
        shapes = sample_shapes(cat, n_total, rng, cfg.difficulty, id_prefix=cat)
        test_idx = set(rng.permutation(n_total)[: cfg.test_shapes].tolist())
        for i, sh in enumerate(shapes):
            tasks.append(
                {
                    "config": cfg.to_dict(),
                    "category": cat,
                    "cat_index": ci,
                    "index": i,
                    "shape_id": sh.shape_id,
                    "params": sh.params,
                    "split": "test" if i in test_idx else "train",
                    "photo_dir": str(photo_dir),
                }
            )
    return tasks


def _is_complete(out: Path, key: str) -> bool:
    marker = out / MARKER
    return (
        marker.is_file()
        and marker.read_text(encoding="utf-8").strip() == key
        and (out / "world.json").is_file()
        and (out / _PICKLE_NAME).is_file()
        and (out / "photo").is_dir()
    )


def generate_world(
    cfg: WorldConfig, out_dir: str | Path, quiet: bool = False, workers: int = 2
) -> Path:
    """Write a world to ``out_dir`` (chapter 01), or reuse a complete one.

    Idempotent: a folder whose completion marker holds this configuration's hash is
    returned as is. Any other world folder there (incomplete, or another config) is
    deleted and regenerated. The output is byte-identical for the same config,
    whatever the number of workers.

    Args:
        cfg: the configuration.
        out_dir: target folder.
        quiet: hide the progress bar.
        workers: worker processes (1 renders in this process).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        WorldError: ``out_dir`` holds files that are not a world (never deleted).
    """
    if not isinstance(cfg, WorldConfig):
        raise WorldError(f"cfg must be a WorldConfig, got {type(cfg).__name__}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise WorldError(f"workers must be an int >= 1, got {workers!r}")
    out = Path(out_dir)
    key = cfg.key()
    if _is_complete(out, key):
        return out
    if out.exists():
        if not out.is_dir():
            raise WorldError(f"{out} exists and is not a folder")
        entries = {p.name for p in out.iterdir()}
        ours = {MARKER, _IN_PROGRESS, "world.json", _PICKLE_NAME, "photo"}
        signed = entries & {MARKER, _IN_PROGRESS, "world.json"}
        if entries - ours or (entries and not signed):
            raise WorldError(
                f"{out} holds files that are not part of a generated world "
                f"({', '.join(sorted(entries)[:5])}); refusing to overwrite"
            )
        shutil.rmtree(out)
    photo_dir = out / "photo"
    photo_dir.mkdir(parents=True)
    # marks the folder as ours while it is incomplete, so a crashed run can be
    # cleaned up by the next one
    (out / _IN_PROGRESS).write_text(key + "\n", encoding="utf-8")

    tasks = _plan(cfg, photo_dir)
    bar = tqdm(total=len(tasks), desc="world", unit="shape", disable=quiet)
    results: list[Any] = []
    if workers == 1:
        for t in tasks:
            results.append(_render_task(t))
            bar.update()
    else:
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("fork" if "fork" in methods else "spawn")
        with ctx.Pool(workers) as pool:
            for r in pool.imap(_render_task, tasks, chunksize=8):
                results.append(r)
                bar.update()
    bar.close()

    photos: dict[str, dict] = {}
    strokes: dict[str, np.ndarray] = {}
    shapes: dict[str, dict] = {}
    for task, (ph, sk) in zip(tasks, results, strict=True):
        shapes[task["shape_id"]] = {
            "category": task["category"],
            "split": task["split"],
            "params": task["params"],
        }
        photos.update(ph)
        for key_, arr in sk:
            strokes[key_] = np.ascontiguousarray(arr, dtype=np.float64)
    with open(out / _PICKLE_NAME, "wb") as f:
        pickle.dump(strokes, f, protocol=4)
    meta = {
        "format_version": FORMAT_VERSION,
        "config_hash": key,
        "config": cfg.to_dict(),
        "held_out": [list(t) for t in cfg.held_out],
        "counts": {
            "shapes": len(shapes),
            "photos": len(photos),
            "sketches": len(strokes),
        },
        "shapes": shapes,
        "photos": photos,
    }
    (out / "world.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    (out / _IN_PROGRESS).unlink()
    (out / MARKER).write_text(key + "\n", encoding="utf-8")
    return out


def ensure_world(
    cfg: WorldConfig | str = "teach",
    root: str | Path | None = None,
    quiet: bool = False,
    workers: int = 2,
) -> Path:
    """Generate a world into the book cache, or reuse it (every chapter's entry).

    Args:
        cfg: a :class:`WorldConfig`, or a profile name ("smoke", "teach").
        root: folder to use; None -> ``<cache>/worlds/world-<config hash>``.
        quiet: hide the progress bar.
        workers: worker processes.

    Returns:
        The world folder, complete.
    """
    from duet_lib.paths import cache_dir

    if isinstance(cfg, str):
        cfg = WorldConfig.for_profile(cfg)
    out = Path(root) if root is not None else cache_dir("worlds") / f"world-{cfg.key()}"
    return generate_world(cfg, out, quiet=quiet, workers=workers)


def read_world_meta(root: str | Path) -> dict[str, Any]:
    """The parsed ``world.json`` of a complete world.

    Raises:
        WorldNotFoundError: no folder, or no completion marker (unfinished world).
        WorldError: unreadable or other-version ``world.json``.
    """
    root = Path(root)
    if not root.is_dir():
        raise WorldNotFoundError(f"no world folder at {root}")
    if not (root / MARKER).is_file():
        raise WorldNotFoundError(
            f"{root} has no {MARKER} marker: the world is missing or was not finished; "
            "run generate_world again"
        )
    try:
        meta = json.loads((root / "world.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorldNotFoundError(f"{root} lacks world.json") from None
    except json.JSONDecodeError as exc:
        raise WorldError(f"{root / 'world.json'} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        got = meta.get("format_version") if isinstance(meta, dict) else None
        raise WorldError(
            f"{root / 'world.json'}: format version {got!r}, expected {FORMAT_VERSION}; "
            "regenerate the world"
        )
    return meta


def split_sketches(
    cfg: WorldConfig, split: str = "test"
) -> tuple[list[Shape], list[np.ndarray], list[int]]:
    """The shapes and sketches of one split of a world, without writing or
    rendering photos (identical to what :func:`generate_world` writes).

    Useful to measure the reference matcher for many configurations quickly.

    Args:
        cfg: the world configuration.
        split: "train" or "test" (the validation split is carved at load time).

    Returns:
        (shapes, sketches (N, 3), index of each sketch's shape in ``shapes``).
    """
    if split not in ("train", "test"):
        raise WorldError(f"split must be 'train' or 'test', got {split!r}")
    shapes: list[Shape] = []
    sketches: list[np.ndarray] = []
    targets: list[int] = []
    for task in _plan(cfg, Path(".")):
        if task["split"] != split:
            continue
        shape = Shape(task["category"], task["params"], task["shape_id"])
        for n in range(cfg.sketches_per_shape):
            srng = _shape_seed(cfg.seed, 4, task["cat_index"], task["index"], n)
            sketches.append(render_sketch(shape, srng, cfg.abstraction))
            targets.append(len(shapes))
        shapes.append(shape)
    return shapes, sketches, targets


# ---------------------------------------------------------------------------
# Loading


def load_world(
    root: str | Path, val_fraction: float = 0.1, seed: int = 0, quiet: bool = True
) -> SketchPhotoSet:
    """Load a generated world as a :class:`SketchPhotoSet` (chapter 01).

    Reads the Coordinate layout with
    :func:`duet_lib.data.loaders.load_qmul_coordinate`, then carves the validation
    split out of train **by shape** (all variants of a shape move together, so no
    shape is in both train and val), puts every photo, the gallery-only variants
    included, into ``photo_split``, and attaches ``world.json``'s per-photo
    attributes as ``attributes`` (with ``split`` updated to the final split).

    Args:
        root: the world folder.
        val_fraction: share of training shapes moved to "val".
        seed: seed of that draw.
        quiet: hide progress bars.

    Raises:
        WorldNotFoundError: no complete world at ``root``.
        WorldError: a world whose files disagree with each other.
    """
    from duet_lib.data.loaders import load_qmul_coordinate, split_val_by_photo

    root = Path(root)
    meta = read_world_meta(root)
    ws = load_qmul_coordinate(
        root,
        name=_PICKLE_NAME[: -len("_Coordinate")],
        val_fraction=0.0,
        seed=seed,
        dataset_name="world",
        quiet=quiet,
    )
    if ws.skipped:
        raise WorldError(f"{root}: the loader skipped items: {ws.skipped[:3]}")
    photos_meta: dict[str, dict] = meta["photos"]
    missing = sorted(set(photos_meta) - set(ws.photos))
    if missing:
        raise WorldError(
            f"{root}: {len(missing)} photos listed in world.json are missing, e.g. {missing[0]}"
        )
    train_shapes = sorted(
        {a["shape_id"] for a in photos_meta.values() if a["split"] == "train"}
    )
    val_shapes = split_val_by_photo(train_shapes, val_fraction, seed)

    def final_split(attrs: dict) -> str:
        if attrs["split"] == "train" and attrs["shape_id"] in val_shapes:
            return "val"
        return attrs["split"]

    attributes = {}
    photo_split = {}
    for pid in sorted(photos_meta):
        attrs = dict(photos_meta[pid])
        attrs["split"] = final_split(attrs)
        attributes[pid] = attrs
        photo_split[pid] = attrs["split"]
    sketches = []
    for rec in ws.sketches:
        if rec.photo_id not in attributes:
            raise WorldError(
                f"{root}: sketch {rec.key} pairs with unknown photo {rec.photo_id}"
            )
        split = photo_split[rec.photo_id]
        sketches.append(
            dataclasses.replace(rec, split=split) if split != rec.split else rec
        )
    return SketchPhotoSet(
        name="world",
        root=root,
        photos=ws.photos,
        photo_split=photo_split,
        sketches=sketches,
        skipped=list(ws.skipped),
        attributes=attributes,
    )


def widen_split(
    ws: SketchPhotoSet,
    split: str = "val",
    variants: int | None = None,
    quiet: bool = True,
) -> SketchPhotoSet:
    """The world with more appearance variants for each shape of a split
    (chapter 09): a validation duet gallery built like the test one.

    The validation shapes are carved out of the training shapes, so they carry
    ``train_variants`` photos each (two in the teach world) drawn without the
    held-out colour/pattern combinations, while every test shape has
    ``test_variants`` (four), held-out combinations allowed. A duet query on the
    validation split therefore chooses among fewer photos of its shape, none of
    them in an unseen combination, and validation flatters the duet against test.
    This adds, for each shape of ``split``, new gallery-only photos (no sketch pairs
    with them; :func:`duet_queries` makes a query of each) until the shape has
    ``variants`` of them, each in a colour the shape does not have yet, drawn as a
    test variant is drawn. The photos are rendered once into ``<world>/photo_wide``
    (a function of the world seed and the shape only) and reused.

    Args:
        ws: a world loaded with :func:`load_world`.
        split: the split to widen ("val"; widening "train" would add training data).
        variants: photos per shape afterwards; None: the world's ``test_variants``.
        quiet: hide the progress bar.

    Returns:
        A new :class:`SketchPhotoSet` (``ws`` is left as it was).

    Raises:
        WorldError: a dataset without world attributes, the training split, or a
            ``variants`` below what a shape already has or above the colours.
    """
    _require_attrs(ws)
    if split not in ("val", "test"):
        raise WorldError(
            f"widen_split widens an evaluation split ('val' or 'test'), not {split!r}"
        )
    meta = read_world_meta(ws.root)
    cfg = WorldConfig(**meta["config"])
    n = cfg.test_variants if variants is None else variants
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= len(COLOURS):
        raise WorldError(f"variants must be an integer in 1..{len(COLOURS)}, got {n!r}")
    by_shape: dict[str, list[str]] = {}
    for pid, s in sorted(ws.photo_split.items()):
        if s == split and pid in ws.attributes:
            by_shape.setdefault(ws.attributes[pid]["shape_id"], []).append(pid)
    most = max((len(v) for v in by_shape.values()), default=0)
    if n < most:
        raise WorldError(
            f"{split} shapes already have up to {most} variants; variants={n} would "
            "remove photos"
        )
    folder = Path(ws.root) / "photo_wide"
    folder.mkdir(exist_ok=True)
    photos, photo_split = dict(ws.photos), dict(ws.photo_split)
    attributes = {pid: dict(a) for pid, a in ws.attributes.items()}
    for sid, pids in tqdm(
        sorted(by_shape.items()), desc=f"widen {split}", disable=quiet, leave=False
    ):
        first = ws.attributes[pids[0]]
        shape = shape_from_attributes(first)
        ci = CATEGORIES.index(shape.category)
        try:
            number = int(sid.rsplit("_", 1)[-1])
        except ValueError:
            raise WorldError(
                f"shape id {sid!r} is not '<category>_<number>' as generated worlds name "
                "their shapes"
            ) from None
        used = [ws.attributes[p]["colour"] for p in pids]
        rng = _shape_seed(cfg.seed, 5, ci, number)
        free = tuple(c for c in COLOURS if c not in used)
        for k in range(len(pids), n):
            app = random_appearance(rng, shape.category, colours=free)
            free = tuple(c for c in free if c != app.colour)
            pid = f"{sid}_w{k}"
            path = folder / f"{pid}.png"
            if not path.is_file():
                img = render_photo(
                    shape, app, _shape_seed(cfg.seed, 6, ci, number, k), cfg.image_size
                )
                part = path.with_suffix(".part")
                Image.fromarray(img).save(part, format="PNG", compress_level=1)
                part.replace(path)
            attrs = _described_photo(
                shape, app, k, split, _shape_seed(cfg.seed, 7, ci, number, k), cfg
            )
            photos[pid], photo_split[pid], attributes[pid] = path, split, attrs
    return dataclasses.replace(
        ws, photos=photos, photo_split=photo_split, attributes=attributes
    )


def _require_attrs(ws: SketchPhotoSet) -> None:
    if not ws.attributes:
        raise WorldError(
            f"dataset {ws.name!r} has no attributes; duet queries need a world loaded "
            "with load_world"
        )


def duet_gallery(ws: SketchPhotoSet, split: str = "test") -> list[str]:
    """Photo ids of the duet gallery of a split: every appearance variant of every
    shape of that split, sorted (shape, then variant)."""
    _require_attrs(ws)
    if split not in SPLITS:
        raise WorldError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return sorted(
        p for p, s in ws.photo_split.items() if s == split and p in ws.attributes
    )


def duet_queries(
    ws: SketchPhotoSet, split: str = "test"
) -> list[tuple[SketchRecord, str, str]]:
    """Composed queries of a split (chapter 01; used from chapter 10 on).

    Each sketch of the split is combined with every appearance variant of its
    shape: (sketch record, target photo id, the target's appearance phrase). The
    sketch tells the shape, the phrase tells the variant; neither alone suffices.
    """
    gallery = duet_gallery(ws, split)
    by_shape: dict[str, list[str]] = {}
    for pid in gallery:
        by_shape.setdefault(ws.attributes[pid]["shape_id"], []).append(pid)
    out = []
    for rec in ws.sketches_in(split):
        sid = ws.attributes[rec.photo_id]["shape_id"]
        for pid in by_shape.get(sid, []):
            out.append((rec, pid, ws.attributes[pid]["appearance_phrase"]))
    return out


# ---------------------------------------------------------------------------
# Pretraining data (chapter 02)


@dataclass
class PretrainingBatch:
    """Two renderings of each of ``n`` fresh geometries, with texts.

    Attributes:
        view_a: (n, S, S, 3) uint8, a photo of each geometry.
        view_b: (n, S, S, 3) uint8, another photo of the same geometry: other
            colour, pattern, background, materials and pose.
        drawing: (n, S, S, 3) uint8 clean line drawings, or None when not asked for.
        caption_a: n captions of ``view_a``.
        caption_b: n captions of ``view_b``.
        caption_drawing: n line-drawing captions ("a line drawing of ...").
        attributes: n dicts (category, params, shape words, view_a appearance).
        attributes_b: the same with ``view_b``'s appearance.
    """

    view_a: np.ndarray
    view_b: np.ndarray
    drawing: np.ndarray | None
    caption_a: list[str]
    caption_b: list[str]
    caption_drawing: list[str]
    attributes: list[dict[str, Any]] = field(default_factory=list)
    attributes_b: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.caption_a)


def pretraining_batch(
    rng: np.random.Generator,
    n: int,
    size: int = 96,
    *,
    categories: Sequence[str] = CATEGORIES,
    difficulty: float | str = 0.0,
    held_out: Sequence[tuple[str, str, str]] = DEFAULT_HELD_OUT,
    drawings: bool = True,
    partial_captions: float = 0.0,
) -> PretrainingBatch:
    """Render a batch of pretraining pairs at the model size (chapter 02).

    Each item is a fresh random geometry rendered twice in different appearances
    and poses (positives for an image-image term), with captions, and optionally
    its clean line drawing with a line-drawing caption. Held-out
    (category, colour, pattern) triples never appear.

    Args:
        rng: random generator (the batch depends only on its state).
        n: batch size.
        size: image side in pixels (render directly at the model size).
        categories: categories to draw from (uniformly).
        difficulty: the shape spread knob (as for the world).
        held_out: triples to exclude.
        drawings: also render line drawings.
        partial_captions: share of photo captions replaced by a short caption
            that names only some attributes (:func:`partial_caption`). The choice
            draws from a child generator spawned from ``rng``, so images and full
            captions are the same as with 0.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise WorldError(f"n must be an int >= 1, got {n!r}")
    if not 0.0 <= partial_captions <= 1.0:
        raise WorldError(
            f"partial_captions must lie in [0, 1], got {partial_captions!r}"
        )
    short_rng = rng.spawn(1)[0] if partial_captions > 0 else None
    for c in categories:
        if c not in CATEGORIES:
            raise WorldError(f"unknown category {c!r}; valid: {', '.join(CATEGORIES)}")
    exclude = frozenset(tuple(t) for t in held_out)
    cats = [categories[int(i)] for i in rng.integers(len(categories), size=n)]
    pools = {
        c: iter(sample_shapes(c, cats.count(c), rng, difficulty))
        for c in sorted(set(cats))  # sorted: set order varies between runs
    }
    va = np.empty((n, size, size, 3), np.uint8)
    vb = np.empty_like(va)
    dr = np.empty_like(va) if drawings else None
    cap_a, cap_b, cap_d, attrs_out, attrs_b = [], [], [], [], []
    for i, c in enumerate(cats):
        shape = next(pools[c])
        app_a, app_b = _variant_appearances(rng, c, 2, exclude)
        va[i] = render_photo(shape, app_a, rng, size)
        vb[i] = render_photo(shape, app_b, rng, size)
        a = photo_attributes(shape, app_a)
        b = photo_attributes(shape, app_b)
        cap_a.append(caption(a, rng))
        cap_b.append(caption(b, rng))
        if short_rng is not None:
            for caps, attrs in ((cap_a, a), (cap_b, b)):
                if short_rng.random() < partial_captions:
                    caps[-1] = partial_caption(attrs, short_rng)
        cap_d.append(line_drawing_caption(a, rng))
        if dr is not None:
            dr[i] = render_line_drawing(shape, size)
        attrs_out.append(a)
        attrs_b.append(b)
    return PretrainingBatch(va, vb, dr, cap_a, cap_b, cap_d, attrs_out, attrs_b)


def _corpus_chunk(args: tuple) -> PretrainingBatch:
    seed, chunk, n, size, categories, difficulty, held_out, drawings, partial = args
    rng = np.random.default_rng([seed, 77, chunk])
    return pretraining_batch(
        rng,
        n,
        size,
        categories=categories,
        difficulty=difficulty,
        held_out=held_out,
        drawings=drawings,
        partial_captions=partial,
    )


def pretraining_corpus(
    n: int,
    size: int = 96,
    seed: int = 0,
    *,
    categories: Sequence[str] = CATEGORIES,
    difficulty: float | str = 0.0,
    held_out: Sequence[tuple[str, str, str]] = DEFAULT_HELD_OUT,
    drawings: bool = True,
    workers: int = 2,
    chunk: int = 256,
    quiet: bool = False,
    partial_captions: float = 0.0,
) -> PretrainingBatch:
    """Pre-render ``n`` pretraining items in parallel (chapter 02).

    The result depends on (n, size, seed, ...) only, not on ``workers``: item
    chunks have their own seeds and are concatenated in order.
    ``partial_captions`` is passed to :func:`pretraining_batch`.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise WorldError(f"n must be an int >= 1, got {n!r}")
    sizes = [min(chunk, n - s) for s in range(0, n, chunk)]
    jobs = [
        (
            seed,
            i,
            k,
            size,
            tuple(categories),
            difficulty,
            tuple(map(tuple, held_out)),
            drawings,
            partial_captions,
        )
        for i, k in enumerate(sizes)
    ]
    bar = tqdm(total=n, desc="pretraining corpus", unit="item", disable=quiet)
    parts: list[PretrainingBatch] = []
    if workers <= 1:
        for j in jobs:
            parts.append(_corpus_chunk(j))
            bar.update(j[2])
    else:
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("fork" if "fork" in methods else "spawn")
        with ctx.Pool(workers) as pool:
            for j, part in zip(jobs, pool.imap(_corpus_chunk, jobs), strict=True):
                parts.append(part)
                bar.update(j[2])
    bar.close()
    return PretrainingBatch(
        np.concatenate([p.view_a for p in parts]),
        np.concatenate([p.view_b for p in parts]),
        np.concatenate([p.drawing for p in parts]) if drawings else None,
        [c for p in parts for c in p.caption_a],
        [c for p in parts for c in p.caption_b],
        [c for p in parts for c in p.caption_drawing],
        [a for p in parts for a in p.attributes],
        [a for p in parts for a in p.attributes_b],
    )


# ---------------------------------------------------------------------------
# Reference matcher: chamfer distance between edge maps


def _edge_maps(drawings: Sequence[np.ndarray], size: int) -> np.ndarray:
    maps = np.empty((len(drawings), size, size), dtype=bool)
    for i, st in enumerate(drawings):
        img = rasterize(frame_strokes(st, 0.8), size=size, line_width=3.0)
        maps[i] = np.asarray(img)[..., 0] < 128
    return maps


def _truncated_dt(maps: np.ndarray, radius: int) -> np.ndarray:
    """Euclidean distance to the nearest edge pixel, capped at ``radius`` (exact
    below the cap; two separable passes of shifted minima)."""
    n, h, w = maps.shape
    cap = float(radius * radius)
    big = cap + 1.0
    row = np.full(maps.shape, big, np.float32)
    for dx in range(-radius, radius + 1):
        sh = np.zeros_like(maps)
        if dx >= 0:
            sh[:, :, dx:] = maps[:, :, : w - dx]
        else:
            sh[:, :, :dx] = maps[:, :, -dx:]
        np.minimum(row, np.where(sh, np.float32(dx * dx), np.float32(big)), out=row)
    out = np.full(maps.shape, big, np.float32)
    for dy in range(-radius, radius + 1):
        sh = np.full(maps.shape, big, np.float32)
        if dy >= 0:
            sh[:, dy:, :] = row[:, : h - dy, :]
        else:
            sh[:, :dy, :] = row[:, -dy:, :]
        np.minimum(out, sh + np.float32(dy * dy), out=out)
    return np.sqrt(np.minimum(out, cap))


def chamfer_distances(
    queries: Sequence[np.ndarray],
    gallery: Sequence[np.ndarray],
    size: int = 96,
    radius: int | None = None,
) -> np.ndarray:
    """Symmetric truncated chamfer distance between drawings (chapter 01).

    Both sides are (N, 3) stroke arrays, normalised to the same box (translation
    and scale removed, aspect kept), rasterised at ``size`` with
    :func:`~duet_lib.data.strokes.rasterize` and compared as edge maps:
    d(q, g) = mean over q's pixels of the distance to g + mean over g's pixels of
    the distance to q, distances capped at ``radius`` pixels.

    Args:
        queries: Q sketches.
        gallery: G drawings (e.g. clean line drawings of the gallery shapes).
        size: raster side (the model resolution being judged).
        radius: distance cap in pixels; default 8 % of ``size``.

    Returns:
        float64 (Q, G), smaller = more alike.
    """
    if not len(queries) or not len(gallery):
        raise WorldError(
            "chamfer_distances needs at least one query and one gallery item"
        )
    r = radius if radius is not None else max(2, int(round(0.08 * size)))
    gm = _edge_maps(gallery, size)
    g_dt = _truncated_dt(gm, r).reshape(len(gm), -1)
    g_flat = gm.reshape(len(gm), -1).astype(np.float32)
    g_cnt = np.maximum(g_flat.sum(axis=1), 1.0)
    out = np.empty((len(queries), len(gallery)))
    step = 128
    for s in range(0, len(queries), step):
        qm = _edge_maps(queries[s : s + step], size)
        q_dt = _truncated_dt(qm, r).reshape(len(qm), -1)
        q_flat = qm.reshape(len(qm), -1).astype(np.float32)
        q_cnt = np.maximum(q_flat.sum(axis=1), 1.0)
        t1 = (q_flat @ g_dt.T) / q_cnt[:, None]
        t2 = (q_dt @ g_flat.T) / g_cnt[None, :]
        out[s : s + len(qm)] = t1 + t2
    return out


def _accuracy(dist: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    d_true = dist[np.arange(len(dist)), targets]
    rank = (dist <= d_true[:, None]).sum(axis=1)  # ties count against the query
    return {f"acc@{k}": float((rank <= k).mean()) for k in (1, 5, 10)}


def reference_accuracy(
    sketches: Sequence[np.ndarray],
    targets: Sequence[int],
    gallery: Sequence[Shape],
    size: int = 96,
) -> dict[str, float]:
    """FG-SBIR accuracy of the chamfer reference (no learning; chapter 01).

    Each sketch is matched against the clean line drawings of the gallery shapes.

    Args:
        sketches: Q sketches (N, 3).
        targets: index into ``gallery`` of each sketch's true shape.
        gallery: the gallery shapes.
        size: raster side.

    Returns:
        {"acc@1", "acc@5", "acc@10", "n_queries", "n_gallery"}; ranks are
        pessimistic (ties count against the query).
    """
    targets = np.asarray(targets, dtype=int)
    if len(targets) != len(sketches):
        raise WorldError("one target per sketch is needed")
    if len(targets) and (targets.min() < 0 or targets.max() >= len(gallery)):
        raise WorldError("a target index lies outside the gallery")
    drawings = [line_drawing_strokes(s) for s in gallery]
    dist = chamfer_distances(list(sketches), drawings, size=size)
    out: dict[str, float] = _accuracy(dist, targets)
    out["n_queries"] = float(len(targets))
    out["n_gallery"] = float(len(gallery))
    return out


def reference_accuracy_world(
    ws: SketchPhotoSet, split: str = "test", size: int = 96
) -> dict[str, float]:
    """:func:`reference_accuracy` on a loaded world: the split's sketches against
    its FG-SBIR gallery (one photo per shape)."""
    _require_attrs(ws)
    gallery_ids = ws.photo_ids(split)
    if not gallery_ids:
        raise WorldError(f"split {split!r} has no sketches")
    index = {p: i for i, p in enumerate(gallery_ids)}
    recs = ws.sketches_in(split)
    shapes = [shape_from_attributes(ws.attributes[p]) for p in gallery_ids]
    return reference_accuracy(
        [r.strokes for r in recs], [index[r.photo_id] for r in recs], shapes, size
    )


def nearest_shapes(
    shapes: Sequence[Shape],
    k: int = 5,
    size: int = 96,
    queries: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar other shapes of each query shape (chapter 01).

    Similarity is the chamfer distance between clean line drawings at ``size``
    pixels, i.e. how alike two instances look at the model's resolution.

    Args:
        shapes: the pool of shapes.
        k: neighbours per query.
        size: raster side.
        queries: indices into ``shapes`` (default: all).

    Returns:
        (indices (Q, k) int, distances (Q, k) float), nearest first; a shape is
        never its own neighbour.
    """
    if len(shapes) < 2:
        raise WorldError("nearest_shapes needs at least two shapes")
    q_idx = list(range(len(shapes))) if queries is None else list(queries)
    k = min(k, len(shapes) - 1)
    drawings = [line_drawing_strokes(s) for s in shapes]
    dist = chamfer_distances([drawings[i] for i in q_idx], drawings, size=size)
    dist[np.arange(len(q_idx)), q_idx] = np.inf
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(dist, order, axis=1)


def neighbour_grid(
    shapes: Sequence[Shape],
    queries: Sequence[int],
    k: int = 4,
    size: int = 96,
    tile: int = 128,
) -> Image.Image:
    """A figure of near-neighbour instances: one row per query shape, its clean line
    drawing first, then its ``k`` nearest shapes at ``size`` pixels with their
    chamfer distance (chapter 01; shows how fine "fine-grained" is)."""
    idx, dist = nearest_shapes(shapes, k=k, size=size, queries=queries)
    k = idx.shape[1]
    img = Image.new("RGB", ((k + 1) * tile, len(queries) * (tile + 14)), "white")
    draw = ImageDraw.Draw(img)
    for r, q in enumerate(queries):
        y = r * (tile + 14)
        row = [(q, None)] + list(zip(idx[r].tolist(), dist[r].tolist(), strict=True))
        for c, (j, d) in enumerate(row):
            img.paste(
                Image.fromarray(render_line_drawing(shapes[j], tile)), (c * tile, y)
            )
            label = shapes[j].shape_id or f"#{j}"
            label += " (query)" if d is None else f"  d={d:.2f}"
            draw.text((c * tile + 2, y + tile + 1), label, fill=(0, 0, 0))
    return img


# ---------------------------------------------------------------------------
# Preview figure


def preview_world(
    ws: SketchPhotoSet, n: int = 6, split: str = "test", tile: int = 160
) -> Image.Image:
    """A figure of ``n`` test shapes: each variant photo with its appearance phrase,
    the clean line drawing, the sketches, and one caption (chapter 01)."""
    _require_attrs(ws)
    gallery = duet_gallery(ws, split)
    by_shape: dict[str, list[str]] = {}
    for pid in gallery:
        by_shape.setdefault(ws.attributes[pid]["shape_id"], []).append(pid)
    sketches: dict[str, list[np.ndarray]] = {}
    for rec in ws.sketches_in(split):
        sid = ws.attributes[rec.photo_id]["shape_id"]
        sketches.setdefault(sid, []).append(rec.strokes)
    shape_ids = sorted(by_shape)
    if not shape_ids:
        raise WorldError(f"split {split!r} is empty")
    # spread the rows over the categories
    step = max(1, len(shape_ids) // n)
    chosen = shape_ids[::step][:n]
    n_var = max(len(by_shape[s]) for s in chosen)
    n_sk = max(len(sketches.get(s, [])) for s in chosen)
    cols = n_var + 1 + n_sk
    text_h = 28
    img = Image.new("RGB", (cols * tile, len(chosen) * (tile + text_h)), "white")
    draw = ImageDraw.Draw(img)
    for r, sid in enumerate(chosen):
        y = r * (tile + text_h)
        for c, pid in enumerate(by_shape[sid]):
            with Image.open(ws.photos[pid]) as ph:
                img.paste(ph.convert("RGB").resize((tile, tile)), (c * tile, y))
            phrase = ws.attributes[pid]["appearance_phrase"]
            draw.text(
                (c * tile + 2, y + tile + 1),
                "\n".join(textwrap.wrap(phrase, width=tile // 6)[:2]),
                fill=(0, 0, 0),
                spacing=1,
            )
        shape = shape_from_attributes(ws.attributes[by_shape[sid][0]])
        ld = Image.fromarray(render_line_drawing(shape, tile))
        img.paste(ld, (n_var * tile, y))
        for j, st in enumerate(sketches.get(sid, [])):
            img.paste(rasterize(st, size=tile), ((n_var + 1 + j) * tile, y))
        cap = ws.attributes[by_shape[sid][0]]["captions"][0]
        draw.text((n_var * tile + 2, y + tile + 8), f"{sid}: {cap}", fill=(0, 0, 120))
    return img


def duet_ambiguity(ws: SketchPhotoSet, split: str = "test") -> dict[str, float]:
    """Why the duet gallery defeats either modality alone (chapter 01).

    For every composed query of the split (a sketch and its target variant):

    - ``same_shape``: gallery photos with the target's shape (a perfect shape matcher
      cannot tell these apart: its best expected Acc@1 is the mean of 1/count);
    - ``same_appearance``: gallery photos with the target's colour, pattern and
      background (a perfect appearance matcher cannot tell these apart).

    Returns mean counts and the two ceilings ``sketch_only_ceiling`` and
    ``text_only_ceiling`` (expected Acc@1 of a perfect single-modality matcher that
    breaks ties at random), plus ``n_queries`` and ``n_gallery``.
    """
    gallery = duet_gallery(ws, split)
    queries = duet_queries(ws, split)
    if not queries:
        raise WorldError(f"split {split!r} has no composed queries")
    shape_count: dict[str, int] = {}
    look_count: dict[tuple[str, str, str], int] = {}
    for pid in gallery:
        a = ws.attributes[pid]
        shape_count[a["shape_id"]] = shape_count.get(a["shape_id"], 0) + 1
        look = (a["colour"], a["pattern"], a["background"])
        look_count[look] = look_count.get(look, 0) + 1
    same_shape, same_look = [], []
    for _, pid, _ in queries:
        a = ws.attributes[pid]
        same_shape.append(shape_count[a["shape_id"]])
        same_look.append(look_count[(a["colour"], a["pattern"], a["background"])])
    shape_arr, look_arr = np.array(same_shape, float), np.array(same_look, float)
    return {
        "n_queries": float(len(queries)),
        "n_gallery": float(len(gallery)),
        "same_shape": float(shape_arr.mean()),
        "same_appearance": float(look_arr.mean()),
        "sketch_only_ceiling": float((1 / shape_arr).mean()),
        "text_only_ceiling": float((1 / look_arr).mean()),
    }
