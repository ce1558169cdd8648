"""Tests of duet_lib.failures: worst queries, cumulative match curve, gallery figure."""

import numpy as np
import pytest
import torch

from duet_lib.failures import (
    Failure,
    cumulative_match,
    failure_gallery,
    miss_anatomy,
    worst_queries,
)
from duet_lib.metrics import acc_at_k, ranks_pessimistic


@pytest.fixture
def small():
    # 4 queries, 5 gallery items; the true item of each query is given by target.
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.2, 0.3, 0.0],  # target 0: rank 1
            [0.5, 0.4, 0.6, 0.7, 0.1],  # target 1: rank 4
            [0.2, 0.2, 0.2, 0.1, 0.0],  # target 2: ties with 0 and 1 -> rank 3
            [0.8, 0.1, 0.9, 0.1, 0.2],  # target 4: rank 3
        ]
    )
    target = torch.tensor([0, 1, 2, 4])
    return sim, target


def test_worst_queries_order_ranks_and_top(small):
    sim, target = small
    out = worst_queries(sim, target, k=3, top=2)
    assert [f.query for f in out] == [1, 3, 2]
    assert [f.rank for f in out] == [4, 3, 3]
    # query 3 (gap 0.9 - 0.2) comes before query 2 (gap 0) at equal rank
    first = out[0]
    assert first.target == 1 and first.top == (3, 2)
    assert first.top_scores == pytest.approx((0.7, 0.6))
    assert first.target_score == pytest.approx(0.4)
    # ties among the top items are broken by gallery index
    assert out[2].top == (0, 1)


def test_worst_queries_agree_with_pessimistic_ranks():
    gen = torch.Generator().manual_seed(0)
    sim = torch.randn(30, 12, generator=gen)
    target = torch.randint(0, 12, (30,), generator=gen)
    ranks = ranks_pessimistic(sim, target)
    out = worst_queries(sim, target, k=30, top=12)
    assert len(out) == 30 and sorted(f.query for f in out) == list(range(30))
    assert [f.rank for f in out] == sorted(ranks.tolist(), reverse=True)
    for f in out:
        assert f.rank == int(ranks[f.query])
        # the true item sits at position rank - 1 of the full ranking (no ties)
        assert f.top[f.rank - 1] == f.target
        assert list(f.top_scores) == sorted(f.top_scores, reverse=True)


def test_worst_queries_clips_k_and_top(small):
    sim, target = small
    out = worst_queries(sim.numpy(), target.numpy(), k=10, top=9)
    assert len(out) == 4 and all(len(f.top) == 5 for f in out)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "k must be"),
        ({"top": 1.5}, "top must be"),
        ({"k": True}, "k must be"),
    ],
)
def test_worst_queries_rejects_bad_counts(small, kwargs, match):
    sim, target = small
    with pytest.raises(ValueError, match=match):
        worst_queries(sim, target, **kwargs)


def test_worst_queries_rejects_bad_inputs(small):
    sim, target = small
    with pytest.raises(ValueError, match="target"):
        worst_queries(sim, target[:2])
    with pytest.raises(ValueError, match="target indices"):
        worst_queries(sim, torch.tensor([0, 1, 2, 7]))
    bad = sim.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        worst_queries(bad, target)


def test_cumulative_match_matches_acc_at_k():
    gen = torch.Generator().manual_seed(1)
    sim = torch.randn(40, 15, generator=gen)
    target = torch.randint(0, 15, (40,), generator=gen)
    ranks = ranks_pessimistic(sim, target)
    cmc = cumulative_match(ranks, 15)
    assert cmc.shape == (15,)
    assert np.all(np.diff(cmc) >= 0) and cmc[-1] == pytest.approx(1.0)
    acc = acc_at_k(ranks, (1, 5, 10))
    for k in (1, 5, 10):
        assert cmc[k - 1] == pytest.approx(acc[f"acc@{k}"])


def test_cumulative_match_of_random_scores_is_near_chance():
    gen = torch.Generator().manual_seed(2)
    n = 20
    sim = torch.rand(4000, n, generator=gen)
    target = torch.randint(0, n, (4000,), generator=gen)
    cmc = cumulative_match(ranks_pessimistic(sim, target), n)
    chance = np.arange(1, n + 1) / n
    assert np.abs(cmc - chance).max() < 0.03


@pytest.mark.parametrize(
    "ranks, n, match",
    [
        ([], 5, "non-empty"),
        ([1, 6], 5, r"\[1, 5\]"),
        ([0, 2], 5, r"\[1, 5\]"),
        ([1.0, 2.0], 5, "integers"),
        ([1, 2], 0, "n_gallery"),
    ],
)
def test_cumulative_match_rejects_bad_input(ranks, n, match):
    with pytest.raises(ValueError, match=match):
        cumulative_match(np.asarray(ranks), n)


def _images(n, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_failure_gallery_layout(small):
    sim, target = small
    fails = worst_queries(sim, target, k=2, top=3)
    fig = failure_gallery(
        fails, _images(2), _images(5, seed=1), n_gallery=5, title="worst"
    )
    axes = fig.get_axes()
    assert len(axes) == 2 * (2 + 3)
    assert axes[1].get_title().startswith("truth: rank 4 / 5")
    assert axes[2].get_title().startswith("top-1")
    # the true photo's frame is thick; a wrong top item's frame is thin
    assert axes[1].spines["left"].get_linewidth() == pytest.approx(3.0)
    assert axes[2].spines["left"].get_linewidth() == pytest.approx(0.5)


def test_failure_gallery_frames_a_retrieved_true_photo(small):
    sim, target = small
    fails = worst_queries(sim, target, k=4, top=3)
    row = next(i for i, f in enumerate(fails) if f.query == 2)  # target 2 in top-3
    photos = {i: img for i, img in enumerate(_images(5)[..., 0])}  # greyscale (H, W)
    fig = failure_gallery(fails, list(_images(4)), photos)
    axes = np.asarray(fig.get_axes()).reshape(4, 5)
    col = 2 + fails[row].top.index(2)
    assert axes[row, col].spines["left"].get_linewidth() == pytest.approx(3.0)


def test_failure_gallery_rejects_bad_input(small):
    sim, target = small
    fails = worst_queries(sim, target, k=2, top=2)
    with pytest.raises(ValueError, match="at least one"):
        failure_gallery([], _images(0), _images(5))
    with pytest.raises(ValueError, match="2 failures"):
        failure_gallery(fails, _images(3), _images(5))
    with pytest.raises(ValueError, match="gallery index 1"):
        failure_gallery(fails, _images(2), {0: _images(1)[0]})
    with pytest.raises(ValueError, match="image"):
        failure_gallery(fails, [np.zeros((4, 4, 2))] * 2, _images(5))
    uneven = [fails[0], Failure(1, 0, 2, 0.1, (0,), (0.2,))]
    with pytest.raises(ValueError, match="same number"):
        failure_gallery(uneven, _images(2), _images(5))


def test_miss_anatomy_by_hand(small):
    sim, target = small
    # gallery items 0..4: shapes and colours
    attrs = {
        "shape": ["a", "b", "b", "c", "d"],
        "colour": ["red", "red", "blue", "blue", "red"],
    }
    anat = miss_anatomy(sim, target, attrs)
    # query 0 is a hit; query 1 (truth 1 = b/red) is beaten first by item 3
    # (c/blue); query 2 (truth 2 = b/blue) ties with 0 and 1, the lowest index 0
    # (a/red) counts; query 3 (truth 4 = d/red) is beaten first by item 2 (b/blue)
    assert anat.names == ("shape", "colour")
    assert (anat.n_queries, anat.n_misses) == (4, 3)
    assert anat.counts == {(False, False): 3}
    assert anat.wrong("shape") == 3 and anat.wrong("colour") == 3
    # the same ranking read by another attribute set
    anat2 = miss_anatomy(sim, target, {"colour": ["red", "red", "blue", "blue", "red"]})
    assert anat2.counts == {(False,): 3}
    hit_right_colour = miss_anatomy(
        sim, target, {"colour": ["red", "red", "red", "blue", "blue"]}
    )
    # query 1: item 3 blue vs red -> other; query 2: item 0 red vs red -> same;
    # query 3: item 2 red vs blue -> other
    assert hit_right_colour.counts == {(False,): 2, (True,): 1}
    assert hit_right_colour.wrong("colour") == 2
    both = miss_anatomy(
        sim,
        target,
        {
            "shape": ["a", "b", "c", "c", "d"],
            "colour": ["red", "red", "red", "blue", "blue"],
        },
    )
    # query 2's first item (0, shape a) has another shape but the same colour
    assert both.wrong("shape") == 3 and both.wrong("colour") == 2
    assert both.wrong("shape", "colour") == 3
    table = hit_right_colour.markdown()
    assert table.splitlines()[2] == "| **other** | 2 | 50.0 % |"
    assert table.splitlines()[3] == "| same | 1 | 25.0 % |"


def test_miss_anatomy_errors(small):
    sim, target = small
    with pytest.raises(ValueError, match="at least one attribute"):
        miss_anatomy(sim, target, {})
    with pytest.raises(ValueError, match="has 4 values for a gallery of 5"):
        miss_anatomy(sim, target, {"shape": ["a", "b", "c", "d"]})
    with pytest.raises(ValueError, match="unknown attribute"):
        miss_anatomy(sim, target, {"shape": list("abcde")}).wrong("colour")
    with pytest.raises(ValueError, match="at least one"):
        miss_anatomy(sim, target, {"shape": list("abcde")}).wrong()
    perfect = miss_anatomy(torch.eye(3), torch.arange(3), {"shape": list("abc")})
    assert perfect.n_misses == 0 and perfect.counts == {}
