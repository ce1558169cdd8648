"""Tests of duet_lib.classic: HOG features and the learned linear metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.feature import hog

from duet_lib.classic import (
    HogConfig,
    HogSplit,
    MetricConfig,
    hog_features,
    hog_split,
    train_hog_metric,
)
from duet_lib.data import world as W
from duet_lib.metrics import acc_at_k, ranks_pessimistic


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
