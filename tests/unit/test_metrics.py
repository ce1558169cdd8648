"""Tests for duet_lib.metrics: pessimistic ranks, Acc@K, mAP, attribute@1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from duet_lib.metrics import (
    acc_at_k,
    attribute_at_1,
    bootstrap_rate,
    chance_acc_at_k,
    mean_average_precision,
    ranks_pessimistic,
    retrieval_report,
)


def _brute_ap(scores: list[float], rel: list[bool]) -> float:
    """Average precision from an explicit worst-case ordering (reference)."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], rel[j]))
    hits, total = 0, 0.0
    for pos, j in enumerate(order, start=1):
        if rel[j]:
            hits += 1
            total += hits / pos
    return total / sum(rel)


# --------------------------------------------------------------------------- ranks
def test_ranks_hand_computed_with_ties():
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.3, 0.2],  # target 0 is strictly best -> 1
            [0.5, 0.5, 0.7, 0.1],  # target 1 ties with 0, below 2 -> 3
            [0.2, 0.2, 0.2, 0.2],  # all tied -> 4
            [0.1, 0.4, 0.3, 0.2],  # target 3 beaten by 1 and 2 -> 3
        ]
    )
    ranks = ranks_pessimistic(sim, torch.tensor([0, 1, 2, 3]))
    assert ranks.tolist() == [1, 3, 4, 3]
    assert ranks.dtype == torch.int64


def test_collapsed_model_scores_zero_at_one():
    sim = torch.full((6, 10), 0.37)  # every query and photo mapped to one vector
    ranks = ranks_pessimistic(sim, torch.arange(6))
    assert ranks.tolist() == [10] * 6
    acc = acc_at_k(ranks, ks=(1, 5, 10))
    assert acc == {"acc@1": 0.0, "acc@5": 0.0, "acc@10": 1.0}


def test_ranks_match_a_brute_force_count_on_integer_scores():
    gen = torch.Generator().manual_seed(0)
    sim = torch.randint(0, 4, (30, 12), generator=gen).float()  # many ties
    target = torch.randint(0, 12, (30,), generator=gen)
    expected = [
        sum(1 for j in range(12) if sim[q, j] >= sim[q, target[q]]) for q in range(30)
    ]
    assert ranks_pessimistic(sim, target).tolist() == expected


def test_ranks_accept_numpy_and_integer_similarities():
    sim = np.array([[3, 1, 3], [0, 2, 1]])
    assert ranks_pessimistic(sim, np.array([0, 1])).tolist() == [2, 1]


@pytest.mark.parametrize(
    ("sim", "target", "message"),
    [
        (torch.zeros(3), torch.zeros(3, dtype=torch.long), r"\(Q, N\)"),
        (torch.zeros(2, 3), torch.tensor([0, 3]), r"\[0, 3\)"),
        (torch.zeros(2, 3), torch.tensor([0, -1]), r"\[0, 3\)"),
        (torch.zeros(2, 3), torch.tensor([0.0, 1.0]), "integer"),
        (torch.zeros(2, 3), torch.tensor([0]), "shape"),
        (torch.tensor([[0.0, float("nan")], [0, 0]]), torch.tensor([0, 1]), "NaN"),
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), "empty"),
    ],
)
def test_ranks_reject_bad_input(sim, target, message):
    with pytest.raises(ValueError, match=message):
        ranks_pessimistic(sim, target)


# --------------------------------------------------------------------------- acc@k
def test_acc_at_k_hand_computed():
    acc = acc_at_k(torch.tensor([1, 2, 5, 11]), ks=(1, 5, 10))
    assert acc == {"acc@1": 0.25, "acc@5": 0.75, "acc@10": 0.75}
    assert acc_at_k(torch.tensor([3, 1]), ks=2) == {"acc@2": 0.5}


@pytest.mark.parametrize(
    ("ranks", "ks", "message"),
    [
        (torch.tensor([0, 1]), (1,), "1-based"),
        (torch.tensor([1.0, 2.0]), (1,), "integers"),
        (torch.tensor([], dtype=torch.long), (1,), "non-empty"),
        (torch.tensor([1, 2]), (), "ks is empty"),
        (torch.tensor([1, 2]), (0,), "positive"),
        (torch.tensor([1, 2]), (1.5,), "positive"),
    ],
)
def test_acc_at_k_rejects_bad_input(ranks, ks, message):
    with pytest.raises(ValueError, match=message):
        acc_at_k(ranks, ks)


def test_chance_levels():
    assert chance_acc_at_k(200, 1) == pytest.approx(0.005)
    assert chance_acc_at_k(200, 10) == pytest.approx(0.05)
    assert chance_acc_at_k(5, 10) == 1.0
    with pytest.raises(ValueError, match="n_gallery"):
        chance_acc_at_k(0, 1)
    with pytest.raises(ValueError, match="k must"):
        chance_acc_at_k(10, 0)


def test_random_scores_land_near_chance():
    gen = torch.Generator().manual_seed(3)
    sim = torch.rand(4000, 50, generator=gen)
    ranks = ranks_pessimistic(sim, torch.randint(0, 50, (4000,), generator=gen))
    acc = acc_at_k(ranks, ks=(5,))["acc@5"]
    assert abs(acc - chance_acc_at_k(50, 5)) < 0.02


# ---------------------------------------------------------------------------- mAP
def test_map_hand_computed_without_ties():
    sim = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    rel = torch.tensor([[True, False, True, False]])
    assert mean_average_precision(sim, rel) == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_map_ties_put_irrelevant_items_first():
    sim = torch.tensor([[0.5, 0.5, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2]])
    rel = torch.tensor([[True, False, False, False], [True, True, False, False]])
    # row 0: worst order puts the relevant item third -> 1/3
    # row 1 (collapsed): order F, F, T, T -> (1/3 + 2/4) / 2
    expected = (1 / 3 + (1 / 3 + 2 / 4) / 2) / 2
    assert mean_average_precision(sim, rel) == pytest.approx(expected)


def test_map_with_one_relevant_item_is_mean_reciprocal_pessimistic_rank():
    gen = torch.Generator().manual_seed(1)
    sim = torch.randint(0, 5, (40, 15), generator=gen).float()
    target = torch.randint(0, 15, (40,), generator=gen)
    rel = torch.zeros(40, 15, dtype=torch.bool)
    rel[torch.arange(40), target] = True
    mrr = (1.0 / ranks_pessimistic(sim, target).double()).mean().item()
    assert mean_average_precision(sim, rel) == pytest.approx(mrr)


def test_map_matches_brute_force_with_many_ties():
    gen = torch.Generator().manual_seed(2)
    sim = torch.randint(0, 3, (25, 9), generator=gen).float()
    rel = torch.rand(25, 9, generator=gen) < 0.35
    rel[:, 0] = True  # every query has at least one relevant item
    expected = np.mean([_brute_ap(sim[q].tolist(), rel[q].tolist()) for q in range(25)])
    assert mean_average_precision(sim, rel) == pytest.approx(expected)


def test_map_rejects_queries_without_relevant_items_and_bad_masks():
    sim = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="no relevant item"):
        mean_average_precision(sim, torch.tensor([[True, False, False], [False] * 3]))
    with pytest.raises(ValueError, match="bool"):
        mean_average_precision(sim, torch.ones(2, 3))
    with pytest.raises(ValueError, match="shape"):
        mean_average_precision(sim, torch.ones(2, 2, dtype=torch.bool))


# ------------------------------------------------------------------ attribute@1
def test_attribute_at_1_hand_computed_with_pessimistic_ties():
    gallery = ["red", "blue", "red", "green"]
    queries = ["red", "red", "blue", "green"]
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.2, 0.0],  # top item 0 is red -> hit
            [0.8, 0.8, 0.1, 0.0],  # tie between red and blue -> miss
            [0.1, 0.2, 0.9, 0.0],  # top item 2 is red, query blue -> miss
            [0.5, 0.1, 0.1, 0.5],  # tie between red and green -> miss
        ]
    )
    assert attribute_at_1(sim, queries, gallery) == pytest.approx(0.25)
    sim_all_red_tie = torch.tensor([[0.7, 0.1, 0.7, 0.0]])
    assert attribute_at_1(sim_all_red_tie, ["red"], gallery) == 1.0


def test_attribute_at_1_collapsed_model_and_array_inputs():
    shapes_g = np.array([0, 0, 1, 1, 2])
    shapes_q = torch.tensor([0, 1, 2])
    assert attribute_at_1(torch.ones(3, 5), shapes_q, shapes_g) == 0.0
    sim = -torch.cdist(
        shapes_q[:, None].float(), torch.from_numpy(shapes_g)[:, None].float()
    )
    assert attribute_at_1(sim, shapes_q, shapes_g) == 1.0


def test_attribute_at_1_rejects_length_mismatch_and_unhashable_values():
    with pytest.raises(ValueError, match="do not match"):
        attribute_at_1(torch.zeros(2, 3), [0, 1], [0, 1])
    with pytest.raises(ValueError, match="not hashable"):
        attribute_at_1(torch.zeros(1, 1), [{"a": 1}], [0])
    with pytest.raises(ValueError, match="sequence"):
        attribute_at_1(torch.zeros(1, 3), "abc", [0, 1, 2])


# ------------------------------------------------------------------------ report
def test_retrieval_report_agrees_with_its_parts():
    gen = torch.Generator().manual_seed(4)
    sim = torch.randn(12, 20, generator=gen)
    target = torch.randint(0, 20, (12,), generator=gen)
    shape_q = torch.randint(0, 3, (12,), generator=gen).tolist()
    shape_g = torch.randint(0, 3, (20,), generator=gen).tolist()
    report = retrieval_report(
        sim, target, ks=(1, 5), attributes={"shape": (shape_q, shape_g)}
    )
    ranks = ranks_pessimistic(sim, target)
    assert report["n_queries"] == 12 and report["n_gallery"] == 20
    assert report["acc@1"] == acc_at_k(ranks, (1,))["acc@1"]
    assert report["acc@5"] == acc_at_k(ranks, (5,))["acc@5"]
    assert report["chance@5"] == pytest.approx(5 / 20)
    assert report["mean_rank"] == pytest.approx(ranks.double().mean().item())
    assert report["median_rank"] == float(ranks.median())
    assert report["mrr"] == pytest.approx((1 / ranks.double()).mean().item())
    assert report["shape@1"] == attribute_at_1(sim, shape_q, shape_g)
    with pytest.raises(ValueError, match="pair"):
        retrieval_report(sim, target, attributes={"shape": shape_q})


def test_retrieval_report_perfect_and_collapsed():
    perfect = retrieval_report(torch.eye(5), torch.arange(5), ks=(1,))
    assert perfect["acc@1"] == 1.0 and perfect["mrr"] == 1.0
    collapsed = retrieval_report(torch.zeros(5, 5), torch.arange(5), ks=(1,))
    assert collapsed["acc@1"] == 0.0 and collapsed["mean_rank"] == 5.0


# --------------------------------------------------------------- bootstrap_rate


def test_bootstrap_rate_is_exact_when_every_group_has_the_same_rate():
    hits = [1, 0] * 30  # each group: one hit of two
    groups = [g for g in range(30) for _ in range(2)]
    out = bootstrap_rate(hits, groups, n_boot=200)
    assert out == {"rate": 0.5, "se": 0.0, "low": 0.5, "high": 0.5, "groups": 30}


def test_bootstrap_rate_widens_with_clustered_queries():
    # 50 groups of 10 queries; a group is all hits or all misses
    hits = np.repeat(np.arange(50) % 2, 10).astype(bool)
    clustered = bootstrap_rate(hits, np.repeat(np.arange(50), 10), n_boot=4000)
    independent = bootstrap_rate(hits, np.arange(500), n_boot=4000)
    assert clustered["rate"] == independent["rate"] == 0.5
    assert clustered["groups"] == 50 and independent["groups"] == 500
    # binomial errors over 50 groups and over 500 queries
    assert clustered["se"] == pytest.approx((0.25 / 50) ** 0.5, rel=0.15)
    assert independent["se"] == pytest.approx((0.25 / 500) ** 0.5, rel=0.15)
    assert clustered["low"] < 0.5 - clustered["se"] < 0.5 + clustered["se"]
    assert 0.5 + clustered["se"] < clustered["high"]
    # torch input, string labels and the seed give the same numbers again
    again = bootstrap_rate(
        torch.from_numpy(hits),
        [f"s{g}" for g in np.repeat(np.arange(50), 10)],
        n_boot=4000,
    )
    assert again == clustered
    assert bootstrap_rate(hits, np.arange(500), n_boot=4000, seed=1) != independent


@pytest.mark.parametrize(
    "hits, groups, kwargs, message",
    [
        ([], [], {}, "non-empty"),
        ([1, 0, 2], [0, 1, 2], {}, "0/1"),
        ([1, 0], [0], {}, "2 hits but 1 group"),
        ([1, 0], [0, 1], {"n_boot": 1}, "n_boot"),
        ([1, 0], [0, 1], {"level": 1.0}, "level"),
    ],
)
def test_bootstrap_rate_rejects_bad_input(hits, groups, kwargs, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_rate(hits, groups, **kwargs)
