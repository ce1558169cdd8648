"""Tests for duet_lib.data.loaders on tiny toy copies of every supported layout."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from duet_lib.data.loaders import (
    LAYOUTS,
    CorruptImageError,
    DatasetFormatError,
    DatasetNotFoundError,
    SvgParseError,
    load_dataset,
    load_folder_pair,
    load_image,
    load_qmul_coordinate,
    load_qmul_folders,
    load_qmul_svg,
    load_sketch_image,
    load_sketchy,
    parse_svg_strokes,
    split_val_by_photo,
)
from duet_lib.data.records import SketchPhotoSet
from duet_lib.data.safe_pickle import UnsafePickleError

# Photo ids with underscores and hyphens, as in ChairV2.
TRAIN_IDS = [f"chair_{i:02d}_v1" for i in range(10)]
TEST_IDS = ["9910-02-carbon", "sdich070_laque"]


def _image(path: Path, size=(8, 8), color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _sketch(n: int = 5, offset: float = 0.0) -> np.ndarray:
    pts = np.zeros((n, 3))
    pts[:, 0] = np.linspace(10, 200, n) + offset
    pts[:, 1] = 50.0
    pts[n // 2, 2] = 1
    pts[-1, 2] = 1
    return pts


def _make_coordinate(root: Path, extra: dict | None = None) -> Path:
    data = {}
    for i, pid in enumerate(TRAIN_IDS):
        for k in range(1, 3 if i % 2 else 2):  # 1 or 2 sketches per photo
            data[f"/train/{pid}_{k}"] = _sketch(offset=i + k)
    data["/test/9910-02-carbon_1"] = _sketch()
    data["/test/9910-02-carbon_A1YX741QQ"] = _sketch(offset=3)  # non-numeric suffix
    data["/test/sdich070_laque_1"] = _sketch(offset=5)
    data.update(extra or {})
    root.mkdir(parents=True, exist_ok=True)
    (root / "Toy_Coordinate").write_bytes(pickle.dumps(data, protocol=3))
    for pid in TRAIN_IDS + TEST_IDS:
        _image(root / "photo" / f"{pid}.png")
    return root


# ---------------------------------------------------------------------------
# split_val_by_photo


def test_split_val_by_photo_is_seeded_and_order_free():
    ids = [f"p{i}" for i in range(20)]
    a = split_val_by_photo(ids, 0.25, seed=3)
    assert len(a) == 5 and a <= set(ids)
    assert a == split_val_by_photo(reversed(ids), 0.25, seed=3)
    draws = {frozenset(split_val_by_photo(ids, 0.25, seed=s)) for s in range(6)}
    assert len(draws) > 1  # the seed matters
    assert split_val_by_photo(ids, 0.0) == set()
    assert len(split_val_by_photo(ids[:3], 0.01)) == 1  # at least one
    assert len(split_val_by_photo(ids[:2], 0.9)) == 1  # at least one left for train
    for bad in (-0.1, 1.0, 2):
        with pytest.raises(ValueError, match="val_fraction"):
            split_val_by_photo(ids, bad)


# ---------------------------------------------------------------------------
# Layout C: coordinate


def test_coordinate_pairs_ids_with_underscores(tmp_path):
    ds = load_qmul_coordinate(_make_coordinate(tmp_path / "toy"), val_fraction=0.2)
    assert isinstance(ds, SketchPhotoSet)
    assert ds.name == "toy" and ds.skipped == []
    by_key = {s.key: s for s in ds.sketches}
    assert by_key["/train/chair_03_v1_2"].photo_id == "chair_03_v1"
    assert by_key["/test/9910-02-carbon_A1YX741QQ"].photo_id == "9910-02-carbon"
    assert by_key["/test/sdich070_laque_1"].photo_id == "sdich070_laque"
    np.testing.assert_array_equal(
        by_key["/test/sdich070_laque_1"].strokes, _sketch(offset=5)
    )
    assert all(s.path is None and s.strokes.shape[1] == 3 for s in ds.sketches)
    assert set(ds.photos) == set(TRAIN_IDS + TEST_IDS)
    counts = ds.counts()
    assert counts["test"] == {"sketches": 3, "photos": 2}
    assert counts["train"]["sketches"] + counts["val"]["sketches"] == 15
    assert counts["val"]["photos"] == 2 and counts["train"]["photos"] == 8


def test_coordinate_val_is_held_out_by_photo(tmp_path):
    root = _make_coordinate(tmp_path / "toy")
    ds = load_qmul_coordinate(root, val_fraction=0.3, seed=7)
    train, val, test = (set(ds.photo_ids(s)) for s in ("train", "val", "test"))
    assert len(val) == 3 and not train & val and not (train | val) & test
    assert train | val == set(TRAIN_IDS)
    for s in ds.sketches:  # every sketch of a val photo is val
        assert s.split == ds.photo_split[s.photo_id]
        if s.photo_id in val:
            assert s.split == "val"
    again = load_qmul_coordinate(root, val_fraction=0.3, seed=7)
    assert set(again.photo_ids("val")) == val
    assert [s.split for s in again.sketches] == [s.split for s in ds.sketches]
    assert val == split_val_by_photo(TRAIN_IDS, 0.3, seed=7)
    none = load_qmul_coordinate(root, val_fraction=0.0)
    assert none.counts()["val"] == {"sketches": 0, "photos": 0}


def test_coordinate_counts_bad_sketches_as_skipped(tmp_path):
    extra = {
        "/train/chair_00_v1_9": np.zeros((0, 3)),  # empty
        "/train/chair_01_v1_9": np.full((4, 3), np.nan),  # non-finite
        "/train/chair_02_v1_9": np.zeros((5, 2)),  # wrong shape
        "/train/ghost_photo_1": _sketch(),  # no such photo
        "/val/chair_03_v1_9": _sketch(),  # unknown split prefix
        "/train/nosuffix": _sketch(),  # no _<n>
    }
    ds = load_qmul_coordinate(_make_coordinate(tmp_path / "toy", extra))
    reasons = dict(ds.skipped)
    assert set(reasons) == set(extra)
    assert "empty" in reasons["/train/chair_00_v1_9"]
    assert "NaN" in reasons["/train/chair_01_v1_9"]
    assert "shape" in reasons["/train/chair_02_v1_9"]
    assert "ghost_photo" in reasons["/train/ghost_photo_1"]
    assert "/train/" in reasons["/val/chair_03_v1_9"]
    assert "_<n>" in reasons["/train/nosuffix"]
    assert len(ds.sketches) == 18  # the good ones are all still there


def test_coordinate_photo_in_train_and_test_keeps_test(tmp_path):
    extra = {"/train/9910-02-carbon_7": _sketch()}
    ds = load_qmul_coordinate(_make_coordinate(tmp_path / "toy", extra))
    assert dict(ds.skipped) == {
        "/train/9910-02-carbon_7": "photo '9910-02-carbon' also has test sketches"
    }
    assert ds.photo_split["9910-02-carbon"] == "test"


def test_coordinate_gallery_only_photos(tmp_path):
    root = _make_coordinate(tmp_path / "toy")
    _image(root / "photo" / "extra_distractor.jpg")
    ds = load_qmul_coordinate(root)
    assert "extra_distractor" in ds.photos and "extra_distractor" not in ds.photo_split
    assert set(ds.photo_split) == set(TRAIN_IDS + TEST_IDS)
    ds = load_qmul_coordinate(root, unpaired_split="test")
    assert ds.photo_split["extra_distractor"] == "test"
    assert "extra_distractor" not in ds.photo_ids("test")  # gallery-only, no sketch
    with pytest.raises(ValueError, match="unpaired_split"):
        load_qmul_coordinate(root, unpaired_split="gallery")


def test_coordinate_bad_inputs(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_qmul_coordinate(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError, match="_Coordinate"):
        load_qmul_coordinate(empty)
    root = _make_coordinate(tmp_path / "toy")
    with pytest.raises(DatasetNotFoundError, match="Other_Coordinate"):
        load_qmul_coordinate(root, name="Other")
    (root / "Other_Coordinate").write_bytes(pickle.dumps({}))
    with pytest.raises(DatasetFormatError, match="pass name="):
        load_qmul_coordinate(root)
    assert load_qmul_coordinate(root, name="Toy").name == "toy"
    (root / "Other_Coordinate").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DatasetFormatError, match="expected a dict"):
        load_qmul_coordinate(root, name="Other")
    (root / "Other_Coordinate").write_bytes(
        pickle.dumps({"/train/a_1": _Evil()}, protocol=4)
    )
    with pytest.raises(UnsafePickleError):
        load_qmul_coordinate(root, name="Other")
    nophoto = tmp_path / "nophoto"
    nophoto.mkdir()
    (nophoto / "X_Coordinate").write_bytes(pickle.dumps({}))
    with pytest.raises(DatasetNotFoundError, match="photo"):
        load_qmul_coordinate(nophoto)
    with pytest.raises(ValueError, match="val_fraction"):
        load_qmul_coordinate(root, name="Toy", val_fraction=1.5)


class _Evil:
    def __reduce__(self):
        return os.system, ("echo should-not-run",)


def test_check_images_skips_unreadable_photos(tmp_path):
    root = _make_coordinate(tmp_path / "toy")
    (root / "photo" / "sdich070_laque.png").write_bytes(b"not an image at all")
    ds = load_qmul_coordinate(root)  # not checked: the path is kept
    assert "sdich070_laque" in ds.photos and ds.skipped == []
    ds = load_qmul_coordinate(root, check_images=True, quiet=True)
    reasons = dict(ds.skipped)
    assert "unreadable image" in reasons["photo/sdich070_laque.png"]
    assert "no photo 'sdich070_laque'" in reasons["/test/sdich070_laque_1"]
    assert "sdich070_laque" not in ds.photos
    with pytest.raises(CorruptImageError, match="sdich070_laque.png"):
        load_image(root / "photo" / "sdich070_laque.png")
    with pytest.raises(FileNotFoundError):
        load_image(root / "photo" / "missing.png")


# ---------------------------------------------------------------------------
# Images


def test_load_image_and_sketch_image(tmp_path):
    rgba = Image.new("RGBA", (6, 4), (0, 0, 0, 0))
    rgba.putpixel((1, 1), (0, 0, 0, 255))
    rgba.save(tmp_path / "s_1.png")
    img = load_image(tmp_path / "s_1.png")
    assert img.mode == "RGB" and img.size == (6, 4)
    assert img.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    assert img.getpixel((1, 1)) == (0, 0, 0)

    ds = load_qmul_coordinate(_make_coordinate(tmp_path / "toy"))
    vec = load_sketch_image(ds.sketches[0], size=64)
    assert vec.size == (64, 64) and vec.mode == "RGB"
    assert np.asarray(vec).min() == 0 and np.asarray(vec).max() == 255

    _image(tmp_path / "fp" / "photo" / "a_b.png")
    _image(tmp_path / "fp" / "sketch" / "a_b_1.png", size=(20, 10), color=(0, 0, 0))
    rec = load_folder_pair(tmp_path / "fp").sketches[0]
    square = load_sketch_image(rec, size=32)
    assert square.size == (32, 32)
    arr = np.asarray(square)
    assert arr[0, 16].tolist() == [255, 255, 255]  # white padding above
    assert arr[16, 16].tolist() == [0, 0, 0]
    assert load_sketch_image(rec, size=None).size == (20, 10)


# ---------------------------------------------------------------------------
# Layout B: folders


def _make_folders(root: Path) -> Path:
    for pid in TRAIN_IDS[:6]:
        _image(root / "trainB" / f"{pid}.png")
        for k in (1, 2):
            _image(root / "trainA" / f"{pid}_{k}.png", color=(0, 0, 0))
    for pid in TEST_IDS:
        _image(root / "testB" / f"{pid}.png")
        _image(root / "testA" / f"{pid}_1.png", color=(0, 0, 0))
    _image(root / "testB" / "gallery_only.png")
    return root


def test_folders_layout(tmp_path):
    root = _make_folders(tmp_path / "toyB")
    _image(root / "trainA" / "9910-02-carbon_5.png")  # its photo is in testB
    _image(root / "trainA" / "nosep.png")
    (root / "trainA" / "notes.txt").write_text("not an image")
    ds = load_qmul_folders(root, val_fraction=0.34, seed=1)
    assert ds.name == "toyB"
    reasons = dict(ds.skipped)
    assert set(reasons) == {"trainA/9910-02-carbon_5.png", "trainA/nosep.png"}
    assert "listed as train" in reasons["trainA/9910-02-carbon_5.png"]
    rec = {s.key: s for s in ds.sketches}["trainA/chair_02_v1_2.png"]
    assert (
        rec.photo_id == "chair_02_v1"
        and rec.path == root / "trainA" / "chair_02_v1_2.png"
    )
    assert rec.strokes is None
    counts = ds.counts()
    assert counts["test"] == {"sketches": 2, "photos": 2}
    assert counts["val"] == {"sketches": 4, "photos": 2}
    assert counts["train"] == {"sketches": 8, "photos": 4}
    assert ds.photo_split["gallery_only"] == "test"  # stated by its folder
    assert not set(ds.photo_ids("train")) & set(ds.photo_ids("val"))


def test_folders_missing_folder(tmp_path):
    root = _make_folders(tmp_path / "toyB")
    for p in (root / "testB").iterdir():
        p.unlink()
    (root / "testB").rmdir()
    with pytest.raises(DatasetNotFoundError, match="testB"):
        load_qmul_folders(root)


# ---------------------------------------------------------------------------
# Layout A: SVG


def _svg(body: str, attrs: str = 'width="256" height="256"') -> str:
    return f'<svg xmlns="http://www.w3.org/2000/svg" {attrs}>{body}</svg>'


def test_parse_svg_paths_and_polylines():
    svg = _svg(
        '<path d="M 10 20 L 30 40 l 10 0 M100,100 l0,10 h5 z"/>',
        attrs='viewBox="0 0 512 512"',
    )
    got = parse_svg_strokes(svg.encode())
    want = np.array(
        [
            [5, 10, 0],
            [15, 20, 0],
            [20, 20, 1],
            [50, 50, 0],
            [50, 55, 0],
            [52.5, 55, 0],
            [50, 50, 1],
        ],
        dtype=float,
    )
    np.testing.assert_allclose(got, want)

    svg = _svg(
        '<rect width="256" height="256" fill="white"/>'
        '<g transform="translate(10, 0)"><polyline points="0,0 10,10 20,0"/></g>'
        '<path d="m 1 1 2 2 2 2"/>'
    )
    got = parse_svg_strokes(svg.encode())
    want = np.array(
        [[10, 0, 0], [20, 10, 0], [30, 0, 1], [1, 1, 0], [3, 3, 0], [5, 5, 1]],
        dtype=float,
    )
    np.testing.assert_allclose(got, want)


@pytest.mark.parametrize(
    "text,match",
    [
        (_svg('<path d="M 0 0 C 1 1 2 2 3 3"/>'), "unsupported path command 'C'"),
        (_svg('<path d="M 0 0 L 5"/>'), "needs 2 numbers"),
        (_svg('<polyline points="0,0 1"/>'), "odd number"),
        (_svg('<rect width="5" height="5"/>'), "no polyline"),
        ("<svg><path d='M 0 0 L 1 1'/>", "not well-formed"),
        ("<html/>", "not <svg>"),
    ],
)
def test_parse_svg_errors(text, match):
    with pytest.raises(SvgParseError, match=match):
        parse_svg_strokes(text.encode())


def _make_svg(root: Path, sketch_lists: bool = True) -> Path:
    photos = TRAIN_IDS[:4] + TEST_IDS
    for pid in photos:
        _image(root / "ShoeV2_photo" / f"{pid}.png")
    sketches = {}
    for i, pid in enumerate(photos):
        for k in (1, 2):
            name = f"{pid}_{k}"
            path = root / "ShoeV2_sketch" / f"{name}.svg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_svg(f'<polyline points="0,0 {10 + i},{k} 40,40"/>'))
            sketches[name] = "test" if pid in TEST_IDS else "train"
    (root / "ShoeV2_sketch" / "chair_00_v1_3.svg").write_text(
        _svg('<path d="M 0 0 Q 1 1 2 2"/>')
    )
    sketches["chair_00_v1_3"] = "train"
    (root / "photo_train.txt").write_text(
        "\n".join(f"{p}.png" for p in TRAIN_IDS[:4]) + "\n"
    )
    (root / "photo_test.txt").write_text("\n".join(TEST_IDS) + "\n")
    if sketch_lists:
        for split in ("train", "test"):
            names = [n for n, s in sketches.items() if s == split]
            (root / f"sketch_{split}.txt").write_text("\n".join(names) + "\n")
    return root


def test_svg_layout(tmp_path):
    root = _make_svg(tmp_path / "toyA")
    ds = load_qmul_svg(root, val_fraction=0.25, quiet=True)
    assert ds.name == "shoev2"
    reasons = dict(ds.skipped)
    assert list(reasons) == ["ShoeV2_sketch/chair_00_v1_3.svg"]
    assert "unsupported path command 'Q'" in reasons["ShoeV2_sketch/chair_00_v1_3.svg"]
    rec = {s.key: s for s in ds.sketches}["ShoeV2_sketch/chair_01_v1_2.svg"]
    assert rec.photo_id == "chair_01_v1"
    np.testing.assert_allclose(rec.strokes, [[0, 0, 0], [11, 2, 0], [40, 40, 1]])
    counts = ds.counts()
    assert counts["test"] == {"sketches": 4, "photos": 2}
    assert counts["val"]["photos"] == 1
    assert counts["train"]["sketches"] + counts["val"]["sketches"] == 8


def test_svg_layout_split_conflict_and_lists(tmp_path):
    root = _make_svg(tmp_path / "toyA")
    # Claim a train photo's sketch is a test sketch: never paired across splits.
    train = (root / "sketch_train.txt").read_text().replace("chair_02_v1_1\n", "")
    (root / "sketch_train.txt").write_text(train)
    test = (root / "sketch_test.txt").read_text() + "chair_02_v1_1\n"
    (root / "sketch_test.txt").write_text(test)
    ds = load_qmul_svg(root, quiet=True)
    assert (
        "its photo 'chair_02_v1' as train"
        in dict(ds.skipped)["ShoeV2_sketch/chair_02_v1_1.svg"]
    )
    (root / "sketch_test.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="sketch_train.txt"):
        load_qmul_svg(root, quiet=True)
    (root / "sketch_train.txt").unlink()
    ds = load_qmul_svg(root, quiet=True)  # splits from the photo lists alone
    assert ds.counts()["test"]["sketches"] == 4
    (root / "photo_test.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="photo_test.txt"):
        load_qmul_svg(root, quiet=True)


# ---------------------------------------------------------------------------
# Sketchy


def _make_sketchy(root: Path) -> Path:
    tx = "tx_000000000000"
    cats = {
        "hot-air_balloon": ["n0001_10", "n0001_11", "n0001_12"],
        "cat": ["n0002_5", "n0001_10"],
    }
    for cat, ids in cats.items():
        for pid in ids:
            _image(root / "photo" / tx / cat / f"{pid}.jpg")
            for k in (1, 2):
                _image(root / "sketch" / tx / cat / f"{pid}-{k}.png", color=(0, 0, 0))
    (root / "info").mkdir(parents=True)
    (root / "info" / "testset.txt").write_text(
        "cat/n0002_5.jpg\nhot-air_balloon/n0001_12.jpg\n"
    )
    (root / "info" / "invalid-error.txt").write_text("n0001_11-2\n")
    return root


def test_sketchy_layout(tmp_path):
    root = _make_sketchy(tmp_path / "sketchy")
    ds = load_sketchy(root, val_fraction=0.34, seed=0)
    assert ds.name == "sketchy" and ds.skipped == []
    assert len(ds.photos) == 5 and "cat/n0001_10" in ds.photos
    rec = {s.key: s for s in ds.sketches}[
        "sketch/tx_000000000000/hot-air_balloon/n0001_10-2.png"
    ]
    assert (
        rec.photo_id == "hot-air_balloon/n0001_10"
    )  # same stem in "cat" is another photo
    assert set(ds.photo_ids("test")) == {"cat/n0002_5", "hot-air_balloon/n0001_12"}
    counts = ds.counts()
    assert counts["test"]["sketches"] == 4
    assert counts["val"]["photos"] == 1 and counts["train"]["photos"] == 2
    dropped = load_sketchy(root, drop_invalid=True)
    assert dict(dropped.skipped) == {
        "sketch/tx_000000000000/hot-air_balloon/n0001_11-2.png": "listed in invalid-error.txt"
    }
    (root / "info" / "testset.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="testset.txt"):
        load_sketchy(root)
    with pytest.raises(DatasetNotFoundError, match="tx_000000000001"):
        load_sketchy(root, variant="tx_000000000001")


# ---------------------------------------------------------------------------
# Plain folder pairs


def test_folder_pair_rules_and_test_list(tmp_path):
    root = tmp_path / "pair"
    for pid in ("a_1x", "b-2", "c"):
        _image(root / "photo" / f"{pid}.png")
    for name in ("a_1x_1", "a_1x_2", "b-2_1", "c_1", "c_2"):
        _image(root / "sketch" / f"{name}.png", color=(0, 0, 0))
    (root / "test.txt").write_text("c.png\nmissing\n")
    ds = load_folder_pair(root, val_fraction=0.0)
    assert {s.key: s.photo_id for s in ds.sketches} == {
        "sketch/a_1x_1.png": "a_1x",
        "sketch/a_1x_2.png": "a_1x",
        "sketch/b-2_1.png": "b-2",
        "sketch/c_1.png": "c",
        "sketch/c_2.png": "c",
    }
    assert ds.photo_split == {"a_1x": "train", "b-2": "train", "c": "test"}
    assert dict(ds.skipped) == {"missing": "listed in test.txt but no photo file"}

    hy = tmp_path / "hyphen"
    _image(hy / "photo" / "x_y.jpg")
    _image(hy / "sketch" / "x_y-1.png")
    _image(hy / "sketch" / "x_y_2.png")
    ds = load_folder_pair(hy, rule="hyphen")
    assert [(s.key, s.photo_id, s.split) for s in ds.sketches] == [
        ("sketch/x_y-1.png", "x_y", "train")
    ]
    assert "no '-<k>' suffix" in dict(ds.skipped)["sketch/x_y_2.png"]
    with pytest.raises(ValueError, match="rule"):
        load_folder_pair(hy, rule="dot")
    with pytest.raises(DatasetNotFoundError, match="sketch"):
        load_folder_pair(tmp_path / "pair", sketch_dir="sketches")


# ---------------------------------------------------------------------------
# Dispatch


def test_load_dataset_dispatches_every_layout(tmp_path):
    roots = {
        "coordinate": _make_coordinate(tmp_path / "c"),
        "folders": _make_folders(tmp_path / "b"),
        "svg": _make_svg(tmp_path / "a"),
        "sketchy": _make_sketchy(tmp_path / "s"),
        "folder_pair": tmp_path / "fp",
    }
    _image(roots["folder_pair"] / "photo" / "p_q.png")
    _image(roots["folder_pair"] / "sketch" / "p_q_1.png")
    assert set(roots) == set(LAYOUTS)
    for layout, root in roots.items():
        ds = load_dataset(layout, root, seed=0, quiet=True)
        assert isinstance(ds, SketchPhotoSet) and ds.sketches, layout
    with pytest.raises(ValueError, match="valid layouts: coordinate, folders"):
        load_dataset("pickle", roots["coordinate"])
    with pytest.raises(ValueError, match="does not take colour"):
        load_dataset("coordinate", roots["coordinate"], colour=True)
