"""Content framing of sketches and photos (duet_lib.data.framing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from duet_lib.config import validate_params
from duet_lib.data.framing import (
    content_box,
    frame_image,
    frame_strokes,
    framed,
    load_photo,
)
from duet_lib.data.pairs import PhotoCache
from duet_lib.data.records import SketchPhotoSet, SketchRecord
from duet_lib.data.strokes import CANVAS
from duet_lib.probes import photo_arrays
from duet_lib.train import TrainConfig, run_dir


def _photo(size=(200, 160), box=(30, 40, 90, 70), colour=(200, 30, 30)):
    """A white photo with one coloured rectangle (left, top, right, bottom)."""
    arr = np.full((size[1], size[0], 3), 255, np.uint8)
    left, top, right, bottom = box
    arr[top:bottom, left:right] = colour
    return Image.fromarray(arr)


def _dataset(root: Path, raster: bool = False) -> SketchPhotoSet:
    (root / "photo").mkdir(parents=True, exist_ok=True)
    photos, split, sketches = {}, {}, []
    for i, s in enumerate(("train", "val", "test")):
        pid = f"p{i}"
        photos[pid] = root / "photo" / f"{pid}.png"
        _photo(box=(20 + 10 * i, 30, 80 + 10 * i, 60)).save(photos[pid])
        split[pid] = s
        strokes = np.array(
            [[40, 50, 0], [100, 50, 0], [100, 90, 1], [60, 60, 0], [70, 80, 1]],
            float,
        )
        if raster:
            path = root / f"{pid}.png"
            _photo().save(path)
            sketches.append(SketchRecord(f"/{s}/{pid}_1", pid, s, path=path))
        else:
            sketches.append(SketchRecord(f"/{s}/{pid}_1", pid, s, strokes=strokes))
    return SketchPhotoSet("plain", root, photos, split, sketches)


def test_content_box_finds_the_drawn_pixels() -> None:
    img = np.asarray(_photo())
    assert content_box(img) == (30, 40, 90, 70)
    assert content_box(img[..., 0]) == (30, 40, 90, 70)  # grayscale: red channel
    assert content_box(np.full((8, 8, 3), 255, np.uint8)) is None
    with pytest.raises(ValueError, match="image"):
        content_box(np.zeros((2, 3, 4, 5)))


def test_frame_image_centres_and_scales_the_content() -> None:
    out = frame_image(_photo(), 0.5)
    assert out.size == (200, 200) and out.mode == "RGB"
    left, top, right, bottom = content_box(np.asarray(out))
    # the longer side (60 px) now spans half of the 200 px square, centred,
    # and the aspect ratio (60 x 30) is kept
    assert abs((right - left) - 100) <= 2 and abs((bottom - top) - 50) <= 2
    assert abs((left + right) / 2 - 100) <= 1.5 and abs((top + bottom) / 2 - 100) <= 1.5
    # the colour survives the resampling inside the box
    assert tuple(np.asarray(out)[100, 100]) == (200, 30, 30)
    blank = frame_image(Image.new("RGB", (40, 20), "white"), 0.8)
    assert blank.size == (40, 40) and np.asarray(blank).min() == 255


def test_frame_strokes_centres_and_scales_the_drawing() -> None:
    strokes = np.array([[10, 20, 0], [30, 20, 0], [30, 60, 1]], float)
    out = frame_strokes(strokes, 0.5)
    xy = out[:, :2]
    assert xy[:, 1].max() - xy[:, 1].min() == pytest.approx(0.5 * CANVAS)
    assert xy[:, 0].max() - xy[:, 0].min() == pytest.approx(0.25 * CANVAS)
    np.testing.assert_allclose((xy.max(0) + xy.min(0)) / 2, [CANVAS / 2] * 2)
    np.testing.assert_array_equal(out[:, 2], strokes[:, 2])
    np.testing.assert_array_equal(strokes[:, 0], [10, 30, 30])  # input untouched
    for bad in (0, 1.5, True, "0.8", None):
        with pytest.raises(ValueError, match="fill"):
            frame_strokes(strokes, bad)
    with pytest.raises(ValueError, match="strokes"):
        frame_strokes(np.zeros((0, 3)), 0.8)


def test_framed_dataset_frames_both_sides_and_leaves_the_original(
    tmp_path: Path,
) -> None:
    ds = _dataset(tmp_path)
    before = [r.strokes.copy() for r in ds.sketches]
    fr = framed(ds, 0.7)
    assert fr.framing == 0.7 and ds.framing is None
    for rec, old in zip(ds.sketches, before, strict=True):
        np.testing.assert_array_equal(rec.strokes, old)
    for rec in fr.sketches:
        span = rec.strokes[:, :2].max(0) - rec.strokes[:, :2].min(0)
        assert span.max() == pytest.approx(0.7 * CANVAS)
    # photos are framed on load, by the photo cache and by photo_arrays alike
    pid = "p1"
    raw = np.asarray(load_photo(ds.photos[pid]).resize((32, 32)))
    cache = PhotoCache(fr, 32, 16).model_image(pid)
    arrays = photo_arrays(fr, [pid], 32)[0]
    np.testing.assert_array_equal(cache, arrays)
    assert not np.array_equal(cache, raw)
    left, top, right, bottom = content_box(np.asarray(load_photo(ds.photos[pid], 0.7)))
    assert right - left == pytest.approx(0.7 * 200, abs=2)


def test_framed_refuses_what_it_cannot_frame(tmp_path: Path) -> None:
    ds = _dataset(tmp_path)
    with pytest.raises(ValueError, match="framed already"):
        framed(framed(ds, 0.8), 0.8)
    with pytest.raises(ValueError, match="fill"):
        framed(ds, 0.0)
    with pytest.raises(ValueError, match="raster"):
        framed(_dataset(tmp_path / "r", raster=True), 0.8)


def test_framing_enters_the_run_folder_and_the_parameters(tmp_path: Path) -> None:
    from duet_lib.models.clip import load_clip

    ds = _dataset(tmp_path)
    bundle = load_clip("duet-tiny-conv-96", None, seed=0)
    cfg = TrainConfig(max_steps=1)
    plain = run_dir(tmp_path, "run", cfg, bundle, ds)
    assert run_dir(tmp_path, "run", cfg, bundle, framed(ds, 0.8)) != plain
    assert run_dir(tmp_path, "run", cfg, bundle, framed(ds, 0.7)) != run_dir(
        tmp_path, "run", cfg, bundle, framed(ds, 0.8)
    )
    assert validate_params(framing=None)["framing"] is None
    assert validate_params(framing=0.7)["framing"] == 0.7
    with pytest.raises(ValueError, match="framing"):
        validate_params(framing=1.5)
