"""Tests for duet_lib.data.pairs: items, hard negatives, determinism, real layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from duet_lib.data.pairs import (
    PhotoCache,
    SketchAugment,
    SketchPhotoPairs,
    augment_strokes,
    sketch_array,
)
from duet_lib.data.records import SketchPhotoSet, SketchRecord
from duet_lib.data.strokes import split_strokes
from duet_lib.data.world import WorldConfig, generate_world, load_world

SIZE = 64
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SketchPhotoSet:
    cfg = WorldConfig.for_profile("smoke", train_shapes=5, test_shapes=3, image_size=96)
    root = generate_world(cfg, tmp_path_factory.mktemp("world") / "w", quiet=True)
    return load_world(root, val_fraction=0.2)


def _strokes(rng: np.random.Generator, n_strokes: int = 4) -> np.ndarray:
    rows = []
    for _ in range(n_strokes):
        pts = rng.uniform(40, 216, size=(5, 2))
        pen = np.zeros((5, 1))
        pen[-1] = 1
        rows.append(np.hstack([pts, pen]))
    return np.vstack(rows)


def plain_set(root: Path, raster: bool = False) -> SketchPhotoSet:
    """A QMUL-like set without attributes: 6 photos, 2 sketches each."""
    rng = np.random.default_rng(0)
    (root / "photo").mkdir(parents=True, exist_ok=True)
    photos, split, sketches = {}, {}, []
    for i in range(6):
        pid = f"{1000 + i}_v1"
        path = root / "photo" / f"{pid}.png"
        Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(path)
        photos[pid] = path
        split[pid] = "train" if i < 4 else ("val" if i == 4 else "test")
        for k in range(2):
            strokes = _strokes(rng)
            if raster:
                sk_path = root / f"{pid}_{k}.png"
                from duet_lib.data.strokes import rasterize

                rasterize(strokes, size=120).save(sk_path)
                rec = SketchRecord(
                    f"/{split[pid]}/{pid}_{k}", pid, split[pid], path=sk_path
                )
            else:
                rec = SketchRecord(
                    f"/{split[pid]}/{pid}_{k}", pid, split[pid], strokes=strokes
                )
            sketches.append(rec)
    return SketchPhotoSet("plain", root, photos, split, sketches)


def _pairs(ds: SketchPhotoSet, split: str = "train", **kw) -> SketchPhotoPairs:
    return SketchPhotoPairs(ds, split, SIZE, MEAN, STD, target_size=32, **kw)


def test_item_layout(world: SketchPhotoSet) -> None:
    data = _pairs(world, negatives=("same_shape", "same_appearance", "random"))
    item = data[0]
    assert item["sketch"].shape == item["photo"].shape == (3, SIZE, SIZE)
    assert item["negatives"].shape == (3, 3, SIZE, SIZE)
    assert item["target"].shape == (3, 32, 32)
    assert 0.0 <= float(item["target"].min()) and float(item["target"].max()) <= 1.0
    assert item["sketch"].dtype == torch.float32
    assert data.photo_ids[item["photo_index"]] == data.records[0].photo_id
    assert item["neg_index"].shape == (3,)
    # normalised: white sketch background maps to (1 - 0.5) / 0.25 = 2
    assert float(item["sketch"].max()) == pytest.approx(2.0)
    # the photo pool holds every train photo, gallery-only variants included
    assert set(data.photo_ids) == {
        p for p, s in world.photo_split.items() if s == "train"
    }
    assert data.has_attributes


def test_hard_negatives_follow_their_definition(world: SketchPhotoSet) -> None:
    data = _pairs(world, negatives=("same_shape", "same_appearance"))
    attrs = world.attributes
    for i in range(len(data)):
        item = data[i]
        pos = data.photo_ids[item["photo_index"]]
        same_shape, same_app = (data.photo_ids[j] for j in item["neg_index"].tolist())
        assert same_shape != pos
        assert attrs[same_shape]["shape_id"] == attrs[pos]["shape_id"]
        assert attrs[same_app]["shape_id"] != attrs[pos]["shape_id"]

        # the chosen one matches the appearance at least as well as any other shape
        def score(p: str, pos: str = pos) -> int:
            a, b = attrs[p], attrs[pos]
            return (
                8 * (a["category"] == b["category"])
                + 4 * (a["colour"] == b["colour"])
                + 2 * (a["pattern"] == b["pattern"])
                + (a["background"] == b["background"])
            )

        others = [
            p for p in data.photo_ids if attrs[p]["shape_id"] != attrs[pos]["shape_id"]
        ]
        assert score(same_app) == max(score(p) for p in others)


def test_items_are_deterministic_and_epochs_differ(world: SketchPhotoSet) -> None:
    aug = SketchAugment(stroke_drop=0.3, rotate_deg=10)
    a = _pairs(world, augment=aug, seed=3)
    b = _pairs(world, augment=aug, seed=3)
    for i in (0, 5):
        for key in ("sketch", "negatives", "neg_index"):
            assert torch.equal(a[i][key], b[i][key])
    first = a[0]["sketch"]
    a.set_epoch(1)
    assert not torch.equal(a[0]["sketch"], first)
    plain = _pairs(world, seed=3)
    plain.set_epoch(4)
    ref = _pairs(world, seed=3)[0]["sketch"]
    assert torch.equal(plain[0]["sketch"], ref)  # no augmentation: epoch-independent


def test_dataloader_batches(world: SketchPhotoSet) -> None:
    data = _pairs(world, augment=SketchAugment())
    loader = DataLoader(data, batch_size=4, generator=torch.Generator().manual_seed(0))
    batch = next(iter(loader))
    assert batch["sketch"].shape == (4, 3, SIZE, SIZE)
    assert batch["negatives"].shape == (4, 2, 3, SIZE, SIZE)
    assert batch["photo_index"].dtype == torch.int64 and batch["shape_index"].shape == (
        4,
    )


def test_augment_strokes_keeps_a_valid_sketch() -> None:
    rng = np.random.default_rng(0)
    strokes = _strokes(rng, 6)
    for seed in range(20):
        out = augment_strokes(
            strokes, SketchAugment(stroke_drop=0.9), np.random.default_rng(seed)
        )
        parts = split_strokes(out)
        assert 3 <= len(parts) <= 6  # at least half of the strokes survive
        assert out[:, 2].sum() == len(parts)
    same = augment_strokes(strokes, SketchAugment(0, 0, 0, 0), rng)
    np.testing.assert_allclose(same, strokes)
    with pytest.raises(ValueError, match="stroke_drop"):
        SketchAugment(stroke_drop=1.5)


@pytest.mark.parametrize("raster", [False, True])
def test_plain_dataset_without_attributes(tmp_path: Path, raster: bool) -> None:
    ds = plain_set(tmp_path, raster=raster)
    data = _pairs(
        ds, augment=SketchAugment(), negatives=("same_shape", "same_appearance")
    )
    assert not data.has_attributes
    assert len(data) == 8 and data.photo_ids == [f"{1000 + i}_v1" for i in range(4)]
    for i in range(len(data)):
        item = data[i]
        assert item["photo_index"] not in item["neg_index"].tolist()
        assert item["shape_index"] == item["photo_index"]  # every photo its own shape
    arr = sketch_array(ds.sketches[0], SIZE)
    assert arr.shape == (SIZE, SIZE, 3) and arr.dtype == np.uint8 and arr.min() < 128


def test_photo_cache_loads_once_and_errors(tmp_path: Path) -> None:
    ds = plain_set(tmp_path)
    cache = PhotoCache(ds, SIZE, 32)
    a = cache.model_image("1000_v1")
    assert a.shape == (SIZE, SIZE, 3) and cache.target_image("1000_v1").shape == (
        32,
        32,
        3,
    )
    assert cache.model_image("1000_v1") is a and len(cache) == 1
    with pytest.raises(KeyError, match="not in the dataset"):
        cache.model_image("nope")
    with pytest.raises(ValueError, match="differ"):
        _pairs(ds, cache=PhotoCache(ds, SIZE, 64))


def test_bad_arguments(tmp_path: Path) -> None:
    ds = plain_set(tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        _pairs(ds, split="dev")
    with pytest.raises(ValueError, match="negative kind"):
        _pairs(ds, negatives=("hardest",))
    empty = SketchPhotoSet(
        "e", tmp_path, ds.photos, ds.photo_split, ds.sketches_in("train")
    )
    with pytest.raises(ValueError, match="no val sketches"):
        _pairs(empty, split="val")
    one = SketchPhotoSet(
        "one", tmp_path, ds.photos, ds.photo_split, ds.sketches_in("val")
    )
    with pytest.raises(ValueError, match="single shape"):
        _pairs(one, split="val")[0]
    with pytest.raises(IndexError):
        _pairs(ds)[100]


def test_probe_arrays_are_drawn_as_the_training_data(tmp_path: Path) -> None:
    """The arrays of duet_lib.probes (chapters' figures, the classic reference) are
    the images the models train on: non-square photos centre-cropped, raster
    sketches padded to a square."""
    from duet_lib.probes import photo_arrays, sketch_arrays

    for raster in (False, True):
        ds = plain_set(tmp_path / f"r{int(raster)}", raster=raster)
        ids = ds.photo_ids("train")
        cache = PhotoCache(ds, SIZE)
        got = photo_arrays(ds, ids, SIZE)
        assert Image.open(ds.photos[ids[0]]).size == (100, 80)  # not square
        for pid, arr in zip(ids, got, strict=True):
            np.testing.assert_array_equal(arr, cache.model_image(pid))
        recs = ds.sketches_in("train")
        drawn = sketch_arrays(recs, SIZE, line_width=2.0)
        assert drawn.shape == (len(recs), SIZE, SIZE, 3) and drawn.dtype == np.uint8
        for rec, arr in zip(recs, drawn, strict=True):
            np.testing.assert_array_equal(arr, sketch_array(rec, SIZE, line_width=2.0))
