"""Tests of duet_lib.classic: HOG features and the learned linear metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.feature import hog

from duet_lib.classic import (
    TEST_SHIFT,
    TEST_VIEWS,
    TRAIN_VIEWS,
    HogConfig,
    HogSplit,
    MetricConfig,
    _sketch_images,
    hog_features,
    hog_split,
    train_hog_metric,
    view_images,
    view_similarity,
)
from duet_lib.data import world as W
from duet_lib.metrics import acc_at_k, ranks_pessimistic
from duet_lib.probes import photo_arrays


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), np.uint8)


def test_hog_features_are_scikit_image_hog_of_the_gray_image():
    cfg = HogConfig(image_size=32, cell=8)
    rgb = _images(3, 32)
    out = hog_features(rgb, cfg)
    assert out.shape == (3, cfg.dim) and out.dtype == torch.float32
    gray = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) / 255
    ref = hog(
        gray[1],
        orientations=9,
        pixels_per_cell=(8, 8),
        cells_per_block=(2, 2),
        block_norm="L2-Hys",
    )
    np.testing.assert_allclose(out[1].numpy(), ref, rtol=1e-5, atol=1e-6)
    # a gray image given as (N, S, S) or as three equal channels reads the same
    g = rgb[..., 0]
    np.testing.assert_allclose(
        hog_features(g, cfg).numpy(),
        hog_features(np.repeat(g[..., None], 3, -1), cfg).numpy(),
        atol=1e-4,
    )


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((0, 32, 32, 3), np.uint8), "non-empty"),
        (np.zeros((2, 16, 16, 3), np.uint8), "expects 32x32"),
        (np.zeros((2, 32, 32, 4), np.uint8), "non-empty"),
    ],
)
def test_hog_features_reject_bad_images(images, message):
    with pytest.raises(ValueError, match=message):
        hog_features(images, HogConfig(image_size=32, cell=8))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 100, "cell": 16}, "not a multiple"),
        ({"image_size": 16, "cell": 16}, "cannot hold a block"),
        ({"cell": 0}, "positive integer"),
        ({"orientations": 2.5}, "positive integer"),
    ],
)
def test_hog_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HogConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dim": 0}, "dim"),
        ({"tau": 0}, "tau"),
        ({"lr": -1.0}, "lr"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"eval_every": True}, "eval_every"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_metric_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MetricConfig(**kwargs)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = W.generate_world(
        W.WorldConfig.for_profile("smoke"),
        tmp_path_factory.mktemp("w") / "world",
        quiet=True,
        workers=1,
    )
    return W.load_world(root)


def test_hog_split_follows_the_split_and_the_given_order(world):
    cfg = HogConfig(image_size=32, cell=8)
    out = hog_split(world, "test", cfg)
    recs, gallery = world.sketches_in("test"), world.photo_ids("test")
    assert out.gallery == gallery
    assert out.sketches.shape == (len(recs), cfg.dim)
    assert out.photos.shape == (len(gallery), cfg.dim)
    assert [gallery[i] for i in out.target.tolist()] == [r.photo_id for r in recs]
    # a caller's order (e.g. a retrieval task's) is kept
    flipped = hog_split(world, "test", cfg, recs[::-1], gallery[::-1])
    torch.testing.assert_close(flipped.sketches, out.sketches.flip(0))
    torch.testing.assert_close(flipped.photos, out.photos.flip(0))
    with pytest.raises(ValueError, match="outside the gallery"):
        hog_split(world, "test", cfg, recs, gallery[1:])
    with pytest.raises(ValueError, match="no sketches"):
        hog_split(world, "test", cfg, [], gallery)


def test_views_add_one_block_of_rows_per_view(world):
    cfg = HogConfig(image_size=32, cell=8)
    plain = hog_split(world, "test", cfg)
    q, n = len(plain.sketches), len(plain.photos)
    views = [(False, 1.0), (True, 1.0), (False, 1.25)]
    out = hog_split(world, "test", cfg, views=views)
    assert out.sketches.shape == (3 * q, cfg.dim) and out.photos.shape == (
        3 * n,
        cfg.dim,
    )
    assert out.gallery == plain.gallery * 3
    torch.testing.assert_close(out.sketches[:q], plain.sketches)
    torch.testing.assert_close(out.photos[:n], plain.photos)
    # each sketch's target is its own photo in its own view
    for v in range(3):
        torch.testing.assert_close(
            out.target[v * q : (v + 1) * q], plain.target + v * n
        )
    # the mirrored block is the HOG of the mirrored images
    photos = photo_arrays(world, plain.gallery, 32)
    torch.testing.assert_close(
        out.photos[n : 2 * n], hog_features(photos[:, :, ::-1].copy(), cfg)
    )
    torch.testing.assert_close(
        out.photos[2 * n :], hog_features(view_images(photos, False, 1.25), cfg)
    )
    assert len(TRAIN_VIEWS) == 6 and (False, 1.0) in TRAIN_VIEWS
    bad_views = (
        [],
        [(1, 1.0)],
        [(False, 0)],
        [(False, True)],
        [("x",)],
        [(False, 1.0, 0.1)],  # a shift needs both directions
        [(False, 1.0, 1.0, 0.0)],  # a whole side
        [(False, 1.0, True, 0.0)],
    )
    for bad in bad_views:
        with pytest.raises(ValueError, match="view"):
            hog_split(world, "test", cfg, views=bad)


def test_hog_config_draws_thin_soft_sketch_lines(world):
    recs = world.sketches_in("test")[:3]
    thin = _sketch_images(recs, HogConfig(image_size=32, cell=8))
    thick = _sketch_images(recs, HogConfig(image_size=32, cell=8, line_width=6.0))
    hard = _sketch_images(recs, HogConfig(image_size=32, cell=8, supersample=1))
    ink = lambda a: float((255 - a.astype(float)).sum())  # noqa: E731
    assert ink(thin) < ink(thick)
    # resized down from twice the size, lines have grey edges; drawn at size, not
    grey = lambda a: int(((a > 20) & (a < 235)).sum())  # noqa: E731
    assert grey(thin) > grey(hard)
    for bad in (0, -1.0, True, "2"):
        with pytest.raises(ValueError, match="line_width"):
            HogConfig(line_width=bad)


def test_view_images_mirror_and_zoom_about_the_centre():
    img = np.full((1, 20, 20, 3), 255, np.uint8)
    img[0, 8:12, 2:6] = 0  # a dark square left of centre
    mirrored = view_images(img, True, 1.0)
    assert mirrored[0, 8:12, 14:18].max() == 0 and mirrored[0, 8:12, 2:6].min() == 255
    # zoomed by 2 about the centre (10, 10): columns 2-6 go to -6-2 (cut at the
    # border), rows 8-12 to 6-14
    zoomed = view_images(img, False, 2.0)
    dark = np.argwhere(zoomed[0, ..., 0] < 128)
    assert dark[:, 1].min() == 0 and dark[:, 1].max() <= 2
    assert dark[:, 0].min() in (5, 6, 7) and dark[:, 0].max() in (13, 14, 15)
    np.testing.assert_array_equal(view_images(img, False, 1.0), img)
    out = view_images(img, False, 0.5)  # shrinks: white border
    assert out[0, 0].min() == 255 and out.shape == img.shape


def test_view_images_shift_by_a_share_of_the_side():
    img = np.full((2, 32, 32, 3), 255, np.uint8)
    img[:, 10:14, 4:8] = 0
    # 4 / 32 of the side right and 2 / 32 up: integer pixel shifts are exact
    out = view_images(img, False, 1.0, 4 / 32, -2 / 32)
    ref = np.full_like(img, 255)
    ref[:, 8:12, 8:12] = 0
    np.testing.assert_array_equal(out, ref)
    # mirror and zoom come first, then the shift (in output pixels)
    both = view_images(img, True, 2.0, 4 / 32, 0.0)
    np.testing.assert_array_equal(
        both[:, :, 4:], view_images(img, True, 2.0)[:, :, :-4]
    )
    assert both[:, :, :4].min() == 255  # the border that appears is white
    # content shifted off the canvas is gone, not wrapped round
    gone = view_images(img, False, 1.0, -0.5, 0.0)
    assert gone.min() == 255


def test_test_views_hold_the_training_views_and_eight_small_shifts():
    assert len(TEST_VIEWS) == len(set(TEST_VIEWS)) == 14
    assert [v[:2] for v in TEST_VIEWS[:6]] == list(TRAIN_VIEWS)
    assert all(v[2:] == (0.0, 0.0) for v in TEST_VIEWS[:6])
    shifts = {v[2:] for v in TEST_VIEWS[6:]}
    assert shifts == {
        (dx * TEST_SHIFT, dy * TEST_SHIFT)
        for dx in (-1, 0, 1)
        for dy in (-1, 0, 1)
        if dx or dy
    }
    assert all(v[:2] == (False, 1.0) for v in TEST_VIEWS[6:])
    assert TEST_SHIFT * 128 == 6


def test_view_similarity_averages_matched_views_and_metrics(world):
    cfg = HogConfig(image_size=32, cell=8)
    views = [(False, 1.0), (True, 1.0, 0.0, 0.0), (False, 1.0, 4 / 32, 0.0)]
    split = hog_split(world, "test", cfg, views=views)
    assert split.views == 3
    train = hog_split(world, "train", cfg)
    metrics = [
        train_hog_metric(train, split.view(0), MetricConfig(max_steps=3, seed=s))
        for s in (0, 1)
    ]
    # each block alone is the split of that one view, targets re-based
    for i, view in enumerate(views):
        alone = hog_split(world, "test", cfg, views=[view])
        block = split.view(i)
        torch.testing.assert_close(block.sketches, alone.sketches)
        torch.testing.assert_close(block.photos, alone.photos)
        assert torch.equal(block.target, alone.target) and block.views == 1
        assert block.gallery == alone.gallery
    # one metric, one view: its own similarity; otherwise the mean over both
    torch.testing.assert_close(
        view_similarity(metrics[0], split.view(0)),
        metrics[0].similarity(split.view(0).sketches, split.view(0).photos),
    )
    expected = (
        sum(
            m.similarity(split.view(i).sketches, split.view(i).photos)
            for m in metrics
            for i in range(3)
        )
        / 6
    )
    torch.testing.assert_close(view_similarity(metrics, split), expected)
    with pytest.raises(ValueError, match="at least one metric"):
        view_similarity([], split)
    odd = HogSplit(split.sketches[:-1], split.photos, split.target[:-1], views=3)
    with pytest.raises(ValueError, match="do not split into 3 views"):
        view_similarity(metrics, odd)
    for bad in (3, -1, True, "0"):
        with pytest.raises(ValueError, match="view must be an index"):
            split.view(bad)


def _synthetic(n_photos: int, per: int, dim: int, noise: float, seed: int) -> HogSplit:
    """A sketch keeps its photo's first half of the vector (shape) and draws the
    second half anew (what a sketch cannot show), scaled so that the second half
    dominates a raw cosine: only a learned projection that drops it matches well."""
    g = torch.Generator().manual_seed(seed)
    half = dim // 2
    photos = torch.rand(n_photos, dim, generator=g)
    photos[:, half:] *= 4
    target = torch.arange(n_photos).repeat_interleave(per)
    sketches = photos[target].clone()
    sketches[:, half:] = 4 * torch.rand(len(target), dim - half, generator=g)
    sketches[:, :half] += noise * torch.randn(len(target), half, generator=g)
    return HogSplit(sketches, photos, target, [f"p{i}" for i in range(n_photos)])


def test_linear_metric_learns_and_keeps_its_best_validation_state():
    train = _synthetic(60, 3, 24, 0.05, seed=0)
    val = _synthetic(20, 2, 24, 0.05, seed=1)
    cfg = MetricConfig(dim=24, tau=0.1, lr=1e-2, max_steps=150, eval_every=10)
    model = train_hog_metric(train, val, cfg)
    start = model.history[0]["val_acc@1"]
    best = max(h["val_acc@1"] for h in model.history)
    assert best >= 0.8 > start + 0.3  # it learned to drop the second half
    assert model.best_step == min(
        h["step"] for h in model.history if h["val_acc@1"] == best
    )
    ranks = ranks_pessimistic(model.similarity(val.sketches, val.photos), val.target)
    assert acc_at_k(ranks, 1)["acc@1"] == best  # the returned state is the kept one
    assert model.config["max_steps"] == 150 and not model.training
    # same seed, same weights; another seed, other weights
    again = train_hog_metric(train, val, cfg)
    torch.testing.assert_close(again.proj.weight, model.proj.weight, rtol=0, atol=0)
    other = train_hog_metric(train, val, MetricConfig(**{**cfg.__dict__, "seed": 1}))
    assert not torch.equal(other.proj.weight, model.proj.weight)


def test_linear_metric_rejects_mismatched_features():
    train = _synthetic(10, 2, 8, 0.1, seed=0)
    val = _synthetic(5, 2, 6, 0.1, seed=1)
    with pytest.raises(ValueError, match="differ in size"):
        train_hog_metric(train, val, MetricConfig(max_steps=2))
    one = HogSplit(
        train.sketches[:1], train.photos[:1], torch.zeros(1, dtype=torch.long)
    )
    with pytest.raises(ValueError, match="two training photos"):
        train_hog_metric(one, _synthetic(5, 2, 8, 0.1, seed=1), MetricConfig())
