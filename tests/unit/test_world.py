"""Tests of the procedural world (duet_lib.data.world and its three submodules)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from duet_lib.data import world as W
from duet_lib.data.safe_pickle import safe_load
from duet_lib.data.strokes import rasterize, split_strokes, validate_strokes
from duet_lib.data.world_geometry import ShapeError, _local_from_outline
from duet_lib.data.world_render import AppearanceError
from duet_lib.data.world_text import (
    BACKGROUND_PHRASES,
    PATTERN_WORDS,
    TextError,
    caption_description,
    image_description,
    partial_caption,
    templates,
)

REPO = Path(__file__).resolve().parents[2]
SMOKE = W.WorldConfig.for_profile("smoke")


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    return W.generate_world(
        SMOKE, tmp_path_factory.mktemp("w") / "world", quiet=True, workers=1
    )


@pytest.fixture(scope="module")
def ws(world_dir):
    return W.load_world(world_dir)


# --- configuration and shapes -------------------------------------------------


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"train_shapes": 0}, "train_shapes"),
        ({"difficulty": 1.5}, "difficulty"),
        ({"abstraction": -0.1}, "abstraction"),
        ({"categories": ("shoe", "boat")}, "boat"),
        ({"test_variants": 40}, "test_variants"),
        ({"held_out": (("shoe", "mauve", "striped"),)}, "held_out"),
        ({"seed": -1}, "seed"),
        ({"held_out": 5}, "held_out"),
        ({"image_size": 8}, "image_size"),
    ],
)
def test_bad_config_raises_clear_error(bad, field):
    with pytest.raises(W.WorldError, match=field):
        W.WorldConfig(**bad)


def test_profiles_and_unknown_override():
    teach = W.WorldConfig.for_profile("teach")
    n_cat = len(teach.categories)
    photos = n_cat * (
        teach.train_shapes * teach.train_variants
        + teach.test_shapes * teach.test_variants
    )
    sketches = (
        n_cat * (teach.train_shapes + teach.test_shapes) * teach.sketches_per_shape
    )
    assert photos >= 2000 and sketches >= 6000 and n_cat * teach.test_shapes == 200
    with pytest.raises(W.WorldError, match="profile"):
        W.WorldConfig.for_profile("huge")
    with pytest.raises(W.WorldError, match="unknown WorldConfig field"):
        W.WorldConfig.for_profile("smoke", colours=3)
    assert SMOKE.key() != W.WorldConfig.for_profile("smoke", seed=1).key()


def test_shape_validation():
    good = W.sample_shapes("shoe", 1, np.random.default_rng(0))[0].params
    with pytest.raises(ShapeError, match="unknown shape parameter"):
        W.Shape("shoe", {**good, "wings": 1.0})
    with pytest.raises(ShapeError, match="heel_height"):
        W.Shape("shoe", {**good, "heel_height": 2.0})
    with pytest.raises(ShapeError, match="closure"):
        W.Shape("shoe", {**good, "closure": "velcro"})
    with pytest.raises(ShapeError, match="category"):
        W.sample_shapes("boat", 3, np.random.default_rng(0))
    with pytest.raises(ShapeError, match="difficulty"):
        W.difficulty_settings("impossible")


@pytest.mark.parametrize("category", W.CATEGORIES)
def test_sample_shapes_parameters_and_difficulty(category):
    specs = W.PARAM_SPECS[category]
    assert len(specs) >= 6
    assert {s.kind for s in specs} == {"continuous", "discrete"}
    a = W.sample_shapes(category, 40, np.random.default_rng(3), "easy")
    b = W.sample_shapes(category, 40, np.random.default_rng(3), "easy")
    assert [s.params for s in a] == [s.params for s in b]
    hard = W.sample_shapes(category, 40, np.random.default_rng(3), "hard")
    cont = [s.name for s in specs if s.kind == "continuous"]
    spread_easy = np.ptp([[s.params[n] for n in cont] for s in a], axis=0)
    spread_hard = np.ptp([[s.params[n] for n in cont] for s in hard], axis=0)
    assert (spread_hard <= 0.4 + 1e-9).all() and spread_easy.mean() > spread_hard.mean()
    # easy: local parts follow the outline; hard: they vary on their own
    local = [s.name for s in specs if s.level == "local"]

    def follows_outline(s: W.Shape) -> bool:
        rule = _local_from_outline(category, s.params)
        return all(s.params[n] == rule[n] for n in local)

    assert all(follows_outline(s) for s in a)
    assert not all(follows_outline(s) for s in hard)
    assert W.difficulty_settings(0.0).local_identity is False
    assert W.difficulty_settings(1.0).local_identity is True
    # no two shapes of a category are near-duplicates
    vecs = np.stack([s.vector(include_local=False) for s in a])
    d = np.sqrt(((vecs[:, None] - vecs[None]) ** 2).sum(-1)) + np.eye(len(vecs)) * 9
    assert d.min() > 0.05


# --- renderers ----------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes():
    rng = np.random.default_rng(11)
    return W.sample_shapes("shoe", 4, rng) + W.sample_shapes("chair", 4, rng)


def test_sketch_stroke_format(shapes):
    for i, shape in enumerate(shapes):
        sk = W.render_sketch(shape, np.random.default_rng(i), abstraction=0.6)
        validate_strokes(sk)
        assert sk.dtype == np.float64 and sk.ndim == 2 and sk.shape[1] == 3
        assert set(np.unique(sk[:, 2])) <= {0.0, 1.0}
        assert sk[-1, 2] == 1.0  # pen flag on the last point of the last stroke
        assert sk[:, :2].min() >= 0 and sk[:, :2].max() <= 255
        assert len(split_strokes(sk)) == int(sk[:, 2].sum())
        img = np.asarray(rasterize(sk, size=96))
        assert img.shape == (96, 96, 3) and (img < 128).any()
    with pytest.raises(AppearanceError, match="abstraction"):
        W.render_sketch(shapes[0], np.random.default_rng(0), abstraction=2.0)


def test_abstraction_moves_sketches_away_from_the_geometry(shapes):
    clean = [W.line_drawing_strokes(s) for s in shapes]
    mean_d = []
    for a in (0.0, 1.0):
        sk = [W.render_sketch(s, np.random.default_rng(5), a) for s in shapes]
        d = W.chamfer_distances(sk, clean, size=96)
        mean_d.append(np.diag(d).mean())
    assert mean_d[1] > mean_d[0] * 1.5


def test_photo_and_line_drawing(shapes):
    app = W.Appearance("red", "striped", "grass")
    a = W.render_photo(shapes[0], app, np.random.default_rng(1), 96)
    b = W.render_photo(shapes[0], app, np.random.default_rng(1), 96)
    assert a.dtype == np.uint8 and a.shape == (96, 96, 3)
    np.testing.assert_array_equal(a, b)
    blue = W.render_photo(
        shapes[0], W.Appearance("blue", "plain", "grass"), np.random.default_rng(1), 96
    )

    # the red photo has more red-dominant pixels than the blue one
    def reddish(img):
        return ((img[..., 0].astype(int) - img[..., 2]) > 80).sum()

    assert reddish(a) > reddish(blue) + 50
    ld = W.render_line_drawing(shapes[5], 128)
    assert ld.shape == (128, 128, 3) and (ld == 255).mean() > 0.7 and (ld < 50).any()
    with pytest.raises(AppearanceError, match="colour"):
        W.Appearance("mauve", "plain", "grass")
    with pytest.raises(AppearanceError, match="style"):
        W.render_photo(shapes[0], app, np.random.default_rng(0), style="oil")


def test_captions_and_appearance_phrases(shapes):
    rng = np.random.default_rng(0)
    vocab = W.shape_vocabulary()
    for shape in shapes:
        app = W.random_appearance(rng)
        attrs = W.photo_attributes(shape, app)
        phrases = [p for p, _ in W.shape_phrases(shape.category, shape.params).values()]
        adjs = [
            a for _, a in W.shape_phrases(shape.category, shape.params).values() if a
        ]
        for _ in range(10):
            cap = W.caption(attrs, rng)
            assert app.colour in cap and shape.category in cap
            assert any(p in cap for p in phrases) or any(a in cap for a in adjs), cap
            assert any(b in cap for b in BACKGROUND_PHRASES[app.background])
            assert any(
                w in cap
                for w in PATTERN_WORDS[app.pattern][0] + PATTERN_WORDS[app.pattern][1]
            )
            phrase = W.appearance_phrase(attrs, rng)
            tokens = set(re.findall(r"[a-z]+(?:-[a-z]+)*", phrase))
            assert not tokens & vocab, phrase
            assert shape.category not in phrase and app.colour in phrase
            ld = W.line_drawing_caption(attrs, rng)
            assert "drawing" in ld and not any(c in ld.split() for c in W.COLOURS)


# --- the generated world ----------------------------------------------------------


def test_world_layout_and_pickle(world_dir):
    assert (world_dir / W.MARKER).read_text().strip() == SMOKE.key()
    data = safe_load(world_dir / "World_Coordinate")
    assert isinstance(data, dict) and len(data) == 2 * 24 * SMOKE.sketches_per_shape
    for key, arr in data.items():
        assert re.fullmatch(r"/(train|test)/(shoe|chair)_\d{5}_v\d+_\d+", key), key
        assert (
            isinstance(arr, np.ndarray)
            and arr.dtype == np.float64
            and arr.shape[1] == 3
        )
    meta = json.loads((world_dir / "world.json").read_text())
    assert meta["format_version"] == W.FORMAT_VERSION
    assert [tuple(t) for t in meta["held_out"]] == list(SMOKE.held_out)
    one = next(iter(meta["photos"].values()))
    for k in (
        "category", "shape_id", "params", "shape_words", "colour", "pattern",
        "background", "variant", "split", "captions", "appearance_phrase",
    ):  # fmt: skip
        assert k in one
    with Image.open(world_dir / "photo" / f"{next(iter(meta['photos']))}.png") as im:
        assert im.size == (SMOKE.image_size, SMOKE.image_size)


def test_generation_is_deterministic_across_processes(world_dir, tmp_path):
    """Same seed -> identical bytes, with another worker count and hash seed."""
    out = tmp_path / "again"
    code = (
        "from duet_lib.data import world as W;"
        f"W.generate_world(W.WorldConfig.for_profile('smoke'), r'{out}', quiet=True, workers=2)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    assert _tree_digest(out) == _tree_digest(world_dir)


def test_generate_is_idempotent_and_safe(world_dir, tmp_path):
    before = (world_dir / "World_Coordinate").stat().st_mtime_ns
    assert W.generate_world(SMOKE, world_dir, quiet=True) == world_dir
    assert (world_dir / "World_Coordinate").stat().st_mtime_ns == before
    stranger = tmp_path / "mine"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("keep me")
    with pytest.raises(W.WorldError, match="refusing"):
        W.generate_world(SMOKE, stranger, quiet=True)
    assert (stranger / "notes.txt").exists()
    photos_only = tmp_path / "photos_only"
    (photos_only / "photo").mkdir(parents=True)
    (photos_only / "photo" / "mine.png").write_bytes(b"x")
    with pytest.raises(W.WorldError, match="refusing"):
        W.generate_world(SMOKE, photos_only, quiet=True)
    # an unfinished world (no marker) is regenerated
    tiny = W.WorldConfig.for_profile(
        "smoke", train_shapes=2, test_shapes=1, categories=("shoe",)
    )
    out = W.generate_world(tiny, tmp_path / "tiny", quiet=True, workers=1)
    (out / W.MARKER).unlink()
    with pytest.raises(W.WorldNotFoundError, match="marker"):
        W.load_world(out)
    W.generate_world(tiny, out, quiet=True, workers=1)
    assert (out / W.MARKER).read_text().strip() == tiny.key()


def test_splits_are_disjoint_by_shape(ws):
    shapes_of = {sp: set() for sp in ("train", "val", "test")}
    for pid, sp in ws.photo_split.items():
        shapes_of[sp].add(ws.attributes[pid]["shape_id"])
    assert all(shapes_of.values())
    assert not shapes_of["train"] & shapes_of["val"]
    assert not shapes_of["train"] & shapes_of["test"]
    assert not shapes_of["val"] & shapes_of["test"]
    for rec in ws.sketches:
        assert rec.split == ws.photo_split[rec.photo_id]


def test_every_test_shape_has_its_variants(ws):
    gallery = W.duet_gallery(ws, "test")
    by_shape: dict[str, list[str]] = {}
    for pid in gallery:
        by_shape.setdefault(ws.attributes[pid]["shape_id"], []).append(pid)
    assert len(by_shape) == 2 * SMOKE.test_shapes
    for pids in by_shape.values():
        assert len(pids) == SMOKE.test_variants
        colours = {ws.attributes[p]["colour"] for p in pids}
        assert len(colours) == SMOKE.test_variants  # variants differ in colour
        assert len({json.dumps(ws.attributes[p]["params"]) for p in pids}) == 1
        assert all(p in ws.photos and p in ws.photo_split for p in pids)
    # the FG-SBIR gallery of every split holds one photo per shape (variant 0)
    fg = ws.photo_ids("test")
    assert len(fg) == len(by_shape) and all(p.endswith("_v0") for p in fg)
    val_fg = ws.photo_ids("val")
    assert val_fg and all(p.endswith("_v0") for p in val_fg)
    assert len(W.duet_gallery(ws, "val")) == SMOKE.train_variants * len(val_fg)


def test_duet_queries(ws):
    queries = W.duet_queries(ws, "test")
    n_sk = len(ws.sketches_in("test"))
    assert len(queries) == n_sk * SMOKE.test_variants
    for rec, target, text in queries:
        assert (
            ws.attributes[rec.photo_id]["shape_id"] == ws.attributes[target]["shape_id"]
        )
        assert text == ws.attributes[target]["appearance_phrase"]
    texts_per_sketch: dict[str, set] = {}
    for rec, _, text in queries:
        texts_per_sketch.setdefault(rec.key, set()).add(text)
    assert all(len(t) == SMOKE.test_variants for t in texts_per_sketch.values())


def test_widen_split_builds_a_validation_gallery_like_the_test_one(world_dir, tmp_path):
    import shutil

    root = tmp_path / "world"
    shutil.copytree(world_dir, root)  # widening writes photos into the world folder
    ws = W.load_world(root)
    before = (dict(ws.photos), dict(ws.photo_split), dict(ws.attributes))
    wide = W.widen_split(ws, "val")
    assert (dict(ws.photos), dict(ws.photo_split), dict(ws.attributes)) == before
    by_shape: dict[str, list[str]] = {}
    for pid in W.duet_gallery(wide, "val"):
        by_shape.setdefault(wide.attributes[pid]["shape_id"], []).append(pid)
    assert by_shape and len(by_shape) == len(ws.photo_ids("val"))
    for sid, pids in by_shape.items():
        assert len(pids) == SMOKE.test_variants  # as many as a test shape has
        colours = [wide.attributes[p]["colour"] for p in pids]
        assert len(set(colours)) == len(pids)
        assert len({json.dumps(wide.attributes[p]["params"]) for p in pids}) == 1
        new = [p for p in pids if p not in ws.photos]
        assert len(new) == SMOKE.test_variants - SMOKE.train_variants
        for p in new:
            a = wide.attributes[p]
            assert a["split"] == "val" and a["shape_id"] == sid
            assert a["appearance_phrase"] and a["captions"]
            with Image.open(wide.photos[p]) as im:
                assert im.size == (SMOKE.image_size, SMOKE.image_size)
    # the new photos are gallery-only: FG-SBIR queries and gallery are unchanged,
    # and every sketch is asked once per variant of its shape
    assert wide.photo_ids("val") == ws.photo_ids("val")
    assert wide.sketches == ws.sketches
    n_sk = len(ws.sketches_in("val"))
    assert len(W.duet_queries(wide, "val")) == n_sk * SMOKE.test_variants
    assert W.duet_gallery(wide, "test") == W.duet_gallery(ws, "test")
    # rendered once: a second call reuses the files and gives the same attributes
    files = sorted((root / "photo_wide").glob("*.png"))
    stamps = [f.stat().st_mtime_ns for f in files]
    again = W.widen_split(W.load_world(root), "val")
    assert again.attributes == wide.attributes and again.photos == wide.photos
    assert [f.stat().st_mtime_ns for f in files] == stamps
    # more variants: the first ones stay, more colours follow
    wider = W.widen_split(ws, "val", variants=SMOKE.test_variants + 2)
    assert set(wide.photos) < set(wider.photos)
    assert all(wider.attributes[p] == wide.attributes[p] for p in wide.attributes)


@pytest.mark.parametrize(
    "split, variants, message",
    [
        ("train", None, "evaluation split"),
        ("val", 1, "would remove photos"),
        ("val", 12, "integer in 1..11"),
        ("val", 2.5, "integer in 1..11"),
    ],
)
def test_widen_split_refuses_bad_requests(ws, split, variants, message):
    with pytest.raises(W.WorldError, match=message):
        W.widen_split(ws, split, variants)


def test_held_out_combinations_absent_from_training(ws):
    held = set(SMOKE.held_out)
    for pid, attrs in ws.attributes.items():
        triple = (attrs["category"], attrs["colour"], attrs["pattern"])
        if attrs["split"] in ("train", "val"):
            assert triple not in held, pid
    batch = W.pretraining_batch(np.random.default_rng(0), 96, 32, drawings=False)
    for attrs in batch.attributes:
        assert (attrs["category"], attrs["colour"], attrs["pattern"]) not in held


def test_round_trip_through_load_world(world_dir, ws):
    data = safe_load(world_dir / "World_Coordinate")
    assert {r.key for r in ws.sketches} == set(data)
    for rec in ws.sketches[:20]:
        np.testing.assert_array_equal(rec.strokes, data[rec.key])
    meta = json.loads((world_dir / "world.json").read_text())
    assert set(ws.attributes) == set(meta["photos"]) == set(ws.photos)
    n_photos = 2 * (
        SMOKE.train_shapes * SMOKE.train_variants
        + SMOKE.test_shapes * SMOKE.test_variants
    )
    assert len(ws.photos) == n_photos and not ws.skipped
    assert ws.counts()["val"]["sketches"] > 0
    # the in-memory split reproduces the written sketches exactly
    shapes, sketches, targets = W.split_sketches(SMOKE, "test")
    written = {k: v for k, v in data.items() if k.startswith("/test/")}
    assert len(sketches) == len(written)
    for sk, t in zip(sketches, targets, strict=True):
        keys = [k for k in written if k.startswith(f"/test/{shapes[t].shape_id}_v0_")]
        assert any(np.array_equal(sk, written[k]) for k in keys)
    with pytest.raises(W.WorldNotFoundError):
        W.load_world(world_dir / "missing")


def test_reference_matcher_identifies_shapes(ws):
    res = W.reference_accuracy_world(ws, "test", size=96)
    chance = 1 / res["n_gallery"]
    assert res["n_gallery"] == 2 * SMOKE.test_shapes
    assert res["acc@1"] >= 0.5 > 5 * chance
    assert res["acc@1"] <= res["acc@5"] <= res["acc@10"]


def test_nearest_shapes_finds_a_near_copy():
    rng = np.random.default_rng(2)
    pool = W.sample_shapes("chair", 12, rng)
    params = dict(pool[3].params)
    params["back_height"] = min(1.0, params["back_height"] + 0.02)
    pool.append(W.Shape("chair", params))
    idx, dist = W.nearest_shapes(pool, k=3, size=64, queries=[3])
    assert idx.shape == (1, 3) and idx[0, 0] == len(pool) - 1
    assert (np.diff(dist[0]) >= 0).all() and 3 not in idx[0]


def test_pretraining_batch():
    a = W.pretraining_batch(np.random.default_rng(4), 6, 48)
    b = W.pretraining_batch(np.random.default_rng(4), 6, 48)
    assert a.view_a.shape == a.view_b.shape == a.drawing.shape == (6, 48, 48, 3)
    np.testing.assert_array_equal(a.view_a, b.view_a)
    assert a.caption_a == b.caption_a and len(a.caption_drawing) == 6
    assert not np.array_equal(a.view_a, a.view_b)
    for cap_a, cap_b, attrs in zip(a.caption_a, a.caption_b, a.attributes, strict=True):
        assert attrs["colour"] in cap_a and attrs["category"] in cap_b
    with pytest.raises(W.WorldError, match="n must be"):
        W.pretraining_batch(np.random.default_rng(0), 0)


def test_partial_captions_name_a_subset_and_keep_the_images():
    full = W.pretraining_batch(np.random.default_rng(4), 24, 32)
    mixed = W.pretraining_batch(np.random.default_rng(4), 24, 32, partial_captions=0.5)
    np.testing.assert_array_equal(full.view_a, mixed.view_a)
    np.testing.assert_array_equal(full.view_b, mixed.view_b)
    changed = [
        (f, m, attrs)
        for f, m, attrs in zip(
            full.caption_a, mixed.caption_a, full.attributes, strict=True
        )
        if f != m
    ]
    assert 4 <= len(changed) <= 20  # about half of 24
    for _, m, attrs in changed:
        assert attrs["category"] in m, m
    # full captions always name the colour; short ones often leave it out
    assert any(attrs["colour"] not in m.split() for _, m, attrs in changed)
    every = W.pretraining_batch(np.random.default_rng(4), 8, 32, partial_captions=1.0)
    assert all(c not in full.caption_a for c in every.caption_a)
    with pytest.raises(W.WorldError, match="partial_captions"):
        W.pretraining_batch(np.random.default_rng(0), 2, 32, partial_captions=1.5)


def test_caption_descriptions_are_true_of_their_own_image(shapes):
    rng = np.random.default_rng(2)
    for shape in shapes:
        attrs = W.photo_attributes(shape, W.random_appearance(rng))
        full = image_description(attrs)
        for cap in (W.caption(attrs, rng), partial_caption(attrs, rng)):
            told = caption_description(cap, attrs)
            assert told <= full, (cap, told - full)
        told = caption_description(W.caption(attrs, rng), attrs)
        assert {k for k, _ in told} >= {"colour", "pattern", "background", "category"}
        drawing = caption_description(
            W.line_drawing_caption(attrs, rng), attrs, "drawing"
        )
        assert ("kind", "drawing") in drawing and drawing <= image_description(
            attrs, "drawing"
        )
    red = {
        "category": "chair",
        "params": shapes[-1].params,
        "colour": "red",
        "pattern": "plain",
        "background": "plain",
    }
    if shapes[-1].category == "chair":
        told = caption_description("a chair on a plain background", red)
        assert ("background", "plain") in told and ("pattern", "plain") not in told
    with pytest.raises(TextError, match="kind"):
        image_description(red, "sketch")


def test_partial_caption_templates_cover_every_attribute_subset(shapes):
    fields = ("{colour}", "{pattern_", "{shape}", "{bg}")
    subsets = {
        tuple(any(f in t for t in [tpl]) for f in fields)
        for tpl in templates()["photo_partial"]
    }
    # every proper subset (2^4 - 1, the empty one included); all four: [photo]
    assert len(subsets) == 15 and (True, True, True, True) not in subsets
    rng = np.random.default_rng(1)
    attrs = W.photo_attributes(shapes[0], W.random_appearance(rng))
    for _ in range(20):
        short = partial_caption(attrs, rng)
        assert shapes[0].category in short and "{" not in short


def test_scenes_and_styles_are_composable(shapes):
    """Several objects share one canvas, and a new style function plugs in."""
    objs = []
    for i, shape in enumerate(shapes[:2]):
        pl, centre = W.fit_placement(shape.geometry, fill=0.4)
        pl = W.Placement(64 + 128 * i, 128, pl.scale)
        objs.append(
            W.SceneObject(
                shape.geometry, pl, centre, W.Appearance("blue", "plain", "plain")
            )
        )
    img = W.render_scene(objs, "plain", np.random.default_rng(0), 64)
    blue = (img[..., 2].astype(int) - img[..., 0]) > 60
    assert blue[:, :32].any() and blue[:, 32:].any()

    def flat(img, parts, app, rng, size):  # a toy "silhouette" domain
        from PIL import Image as _Image
        from PIL import ImageDraw as _Draw

        mask = _Image.new("L", img.shape[1::-1], 0)
        for p in parts:
            _Draw.Draw(mask).polygon([tuple(q) for q in p.polygon.tolist()], fill=255)
        img[np.asarray(mask) > 0] = 0.0

    W.STYLES["silhouette"] = flat
    try:
        sil = W.render_scene(
            objs, "plain", np.random.default_rng(0), 64, style="silhouette"
        )
    finally:
        del W.STYLES["silhouette"]
    black = (sil == 0).all(axis=-1)
    assert black[:, :32].sum() > 20 and black[:, 32:].sum() > 20


def test_pretraining_corpus_independent_of_workers():
    kw = dict(n=6, size=32, seed=3, chunk=3, quiet=True)
    one = W.pretraining_corpus(workers=1, **kw)
    two = W.pretraining_corpus(workers=2, **kw)
    np.testing.assert_array_equal(one.view_b, two.view_b)
    assert one.caption_drawing == two.caption_drawing and len(one) == 6


def test_combination_captions_describe_the_combination_and_no_one_shape():
    from duet_lib.data.world_text import (
        SHAPE_WORDS,
        TextError,
        combination_captions,
    )

    out = combination_captions("shoe", "red", "dotted", "grass")
    assert out == sorted(set(out)) and len(out) > 50
    # every caption names the category, colour, pattern and background
    for text in out:
        for word in ("shoe", "red", "dot", "grass"):
            assert word in text, text
    # every binned with-phrase of the category appears in some caption
    phrases = {lv[0] for lvs in SHAPE_WORDS["shoe"].values() for lv in lvs if lv}
    assert all(any(p in text for text in out) for p in phrases)
    with pytest.raises(TextError, match="unknown pattern"):
        combination_captions("shoe", "red", "tartan", "grass")
    with pytest.raises(TextError, match="unknown category"):
        combination_captions("hat", "red", "plain", "grass")
