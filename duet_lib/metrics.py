"""Retrieval metrics with pessimistic tie handling.

Every function here works on a similarity matrix ``sim`` of shape (Q, N): one row per
query, one column per gallery item, higher means closer (cosine similarity of
L2-normalised embeddings ranks exactly like Euclidean distance).

Ties always count against the query. A model that maps every input to the same
vector gives every gallery item the same score, and must score Acc@1 = 0, not 100 %;
an optimistic or index-order tie-break would hide such a collapse. Introduced in
chapter 10.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "acc_at_k",
    "bootstrap_rate",
    "attribute_at_1",
    "chance_acc_at_k",
    "mean_average_precision",
    "ranks_pessimistic",
    "retrieval_report",
]


def _as_sim(sim: Any) -> torch.Tensor:
    """Validate a (Q, N) similarity matrix and return it as a float tensor."""
    sim_t = torch.as_tensor(sim)
    if sim_t.ndim != 2:
        raise ValueError(
            f"sim must be a (Q, N) matrix of similarities, got shape {tuple(sim_t.shape)}"
        )
    if sim_t.shape[0] == 0 or sim_t.shape[1] == 0:
        raise ValueError(f"sim is empty: shape {tuple(sim_t.shape)}")
    if sim_t.is_complex() or sim_t.dtype == torch.bool:
        raise ValueError(f"sim must hold real numbers, got dtype {sim_t.dtype}")
    if not sim_t.is_floating_point():
        sim_t = sim_t.to(torch.float64)
    if not torch.isfinite(sim_t).all():
        bad = int((~torch.isfinite(sim_t)).sum())
        raise ValueError(f"sim contains {bad} NaN or infinite value(s)")
    return sim_t


def _as_ks(ks: Sequence[int] | int) -> tuple[int, ...]:
    if isinstance(ks, int | np.integer):
        ks = (int(ks),)
    ks = tuple(ks)
    if not ks:
        raise ValueError("ks is empty; give at least one cut-off, e.g. ks=(1, 5, 10)")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"every k must be a positive integer, got {k!r}")
    return tuple(int(k) for k in ks)


def ranks_pessimistic(sim: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1-based rank of each query's true gallery item, ties counted against it.

    ``rank[q] = #{ j : sim[q, j] >= sim[q, target[q]] }``. The true item itself is
    counted, so a perfect query has rank 1; a query whose true item ties with m
    other items has rank at least m + 1.

    Args:
        sim: (Q, N) similarities, higher = closer.
        target: (Q,) integer index in ``[0, N)`` of each query's true item.

    Returns:
        (Q,) int64 ranks in ``[1, N]``, on ``sim``'s device.

    Raises:
        ValueError: wrong shapes, non-finite similarities, non-integer or
            out-of-range targets.
    """
    sim_t = _as_sim(sim)
    target_t = torch.as_tensor(target, device=sim_t.device)
    if target_t.ndim != 1 or target_t.shape[0] != sim_t.shape[0]:
        raise ValueError(
            f"target must have shape ({sim_t.shape[0]},) to match sim "
            f"{tuple(sim_t.shape)}, got {tuple(target_t.shape)}"
        )
    if target_t.is_floating_point() or target_t.dtype == torch.bool:
        raise ValueError(
            f"target must hold integer indices, got dtype {target_t.dtype}"
        )
    target_t = target_t.long()
    n = sim_t.shape[1]
    if int(target_t.min()) < 0 or int(target_t.max()) >= n:
        raise ValueError(
            f"target indices must lie in [0, {n}); got range "
            f"[{int(target_t.min())}, {int(target_t.max())}]"
        )
    true_sim = sim_t.gather(1, target_t[:, None])  # (Q, 1)
    return (sim_t >= true_sim).sum(dim=1)


def acc_at_k(
    ranks: torch.Tensor, ks: Sequence[int] | int = (1, 5, 10)
) -> dict[str, float]:
    """Acc@K: fraction of queries whose true item ranks within the top K.

    Args:
        ranks: (Q,) 1-based ranks, e.g. from :func:`ranks_pessimistic`.
        ks: cut-offs.

    Returns:
        ``{"acc@1": 0.25, "acc@5": ...}``, fractions in [0, 1] (multiply by 100 for
        percentages).
    """
    ks = _as_ks(ks)
    ranks_t = torch.as_tensor(ranks)
    if ranks_t.ndim != 1 or ranks_t.numel() == 0:
        raise ValueError(
            f"ranks must be a non-empty (Q,) vector, got {tuple(ranks_t.shape)}"
        )
    if ranks_t.is_floating_point() or ranks_t.dtype == torch.bool:
        raise ValueError(f"ranks must be integers, got dtype {ranks_t.dtype}")
    if int(ranks_t.min()) < 1:
        raise ValueError(f"ranks are 1-based; found {int(ranks_t.min())}")
    return {f"acc@{k}": float((ranks_t <= k).double().mean()) for k in ks}


def bootstrap_rate(
    hits: Any,
    groups: Sequence[Any],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """A rate (e.g. Acc@1) with its uncertainty over the *groups* it was measured on.

    Queries of one shape share that shape's difficulty, so they are not independent
    draws: the spread of an Acc@1 over another set of shapes is wider than a
    per-query binomial error says. This resamples whole groups (a cluster
    bootstrap: draw as many groups as there are, with replacement, and pool their
    queries) and reports the spread of the pooled rate. Chapter 09 uses it to ask
    how far apart two models must be on 180 validation shapes before the
    difference says something about other shapes.

    Args:
        hits: (Q,) bools or 0/1 values, one per query.
        groups: Q hashable group labels (e.g. the target's shape id).
        n_boot: bootstrap resamples.
        seed: seed of the resampling (same seed, same numbers).
        level: coverage of the percentile interval.

    Returns:
        ``{"rate", "se", "low", "high", "groups"}``: the observed rate, the
        bootstrap standard error, the percentile interval and the number of groups.

    Raises:
        ValueError: empty or mismatched inputs, values other than 0/1, or a bad
            ``n_boot`` or ``level``.
    """
    h = np.asarray(hits.cpu() if isinstance(hits, torch.Tensor) else hits)
    if h.ndim != 1 or h.size == 0:
        raise ValueError(f"hits must be a non-empty (Q,) vector, got shape {h.shape}")
    if not np.isin(h, (0, 1)).all():
        raise ValueError("hits must be booleans or 0/1 values")
    if len(groups) != h.size:
        raise ValueError(f"{h.size} hits but {len(groups)} group labels")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 2:
        raise ValueError(f"n_boot must be an integer >= 2, got {n_boot!r}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    codes: dict[Any, int] = {}
    index = np.array([codes.setdefault(g, len(codes)) for g in groups])
    n_groups = len(codes)
    hit_sum = np.bincount(index, weights=h.astype(np.float64), minlength=n_groups)
    count = np.bincount(index, minlength=n_groups).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, n_groups, (n_boot, n_groups))
    rates = hit_sum[draws].sum(1) / count[draws].sum(1)
    tail = (1.0 - float(level)) / 2
    return {
        "rate": float(hit_sum.sum() / count.sum()),
        "se": float(rates.std(ddof=1)),
        "low": float(np.quantile(rates, tail)),
        "high": float(np.quantile(rates, 1 - tail)),
        "groups": n_groups,
    }


def chance_acc_at_k(n_gallery: int, k: int) -> float:
    """Acc@K of a random ranking when each query has one true item among N.

    Equals ``min(k, N) / N``; the baseline every Acc@K is read against.
    """
    for name, value in (("n_gallery", n_gallery), ("k", k)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | np.integer)
            or value < 1
        ):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return min(int(k), int(n_gallery)) / int(n_gallery)


def mean_average_precision(sim: torch.Tensor, relevant: torch.Tensor) -> float:
    """Mean average precision over queries with one or more relevant items.

    For each query the gallery is sorted by similarity, and **within a group of
    tied scores the irrelevant items are placed before the relevant ones** (the
    worst order consistent with the scores). Average precision is then the mean,
    over the query's relevant items, of precision at that item's position. With
    exactly one relevant item this is ``1 / ranks_pessimistic``; a collapsed
    model with R relevant items among N scores the minimum ``mean_{i=1..R} i /
    (N - R + i)``.

    Args:
        sim: (Q, N) similarities, higher = closer.
        relevant: (Q, N) bool, True where the gallery item is relevant to the query.

    Returns:
        mAP, a fraction in (0, 1].

    Raises:
        ValueError: shape mismatch, non-bool ``relevant``, or a query with no
            relevant item (its AP is undefined).
    """
    sim_t = _as_sim(sim)
    rel = torch.as_tensor(relevant, device=sim_t.device)
    if rel.shape != sim_t.shape:
        raise ValueError(
            f"relevant must have the shape of sim {tuple(sim_t.shape)}, "
            f"got {tuple(rel.shape)}"
        )
    if rel.dtype != torch.bool:
        raise ValueError(f"relevant must be a bool tensor, got dtype {rel.dtype}")
    n_rel = rel.sum(dim=1)  # (Q,)
    if bool((n_rel == 0).any()):
        empty = torch.nonzero(n_rel == 0).flatten()[:5].tolist()
        raise ValueError(
            f"{int((n_rel == 0).sum())} query(ies) have no relevant item "
            f"(first: {empty}); average precision is undefined for them"
        )
    # Pessimistic order: stable sort with irrelevant (0) before relevant (1), then a
    # stable descending sort on similarity keeps that order inside each tie group.
    by_rel = torch.sort(rel.to(torch.int8), dim=1, stable=True).indices
    sim_by_rel = sim_t.gather(1, by_rel)
    order = torch.sort(sim_by_rel, dim=1, descending=True, stable=True).indices
    hits = rel.gather(1, by_rel.gather(1, order)).double()  # (Q, N) in ranked order
    positions = torch.arange(1, sim_t.shape[1] + 1, device=sim_t.device).double()
    precision = hits.cumsum(dim=1) / positions
    ap = (precision * hits).sum(dim=1) / n_rel.double()
    return float(ap.mean())


def _codes(values: Any, name: str) -> list:
    """Turn a list/array/tensor of attribute values into a list of hashable items."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(
                f"{name} must be one-dimensional, got shape {values.shape}"
            )
        values = values.tolist()
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a sequence of attribute values, one per item")
    out = []
    for v in values:
        v = tuple(v) if isinstance(v, list) else v
        try:
            hash(v)
        except TypeError as err:
            raise ValueError(f"{name}: attribute value {v!r} is not hashable") from err
        out.append(v)
    return out


def attribute_at_1(sim: torch.Tensor, query_attr: Any, gallery_attr: Any) -> float:
    """Fraction of queries whose top-1 gallery item shares their attribute.

    Used for shape@1 (does the best match have the query's shape?) and
    appearance@1 (its colour/pattern?). Ties are pessimistic: if several items tie
    for the top score and any of them lacks the attribute, the query counts as a
    miss. A collapsed model therefore scores 0 whenever the gallery holds a single
    item without the query's attribute.

    Args:
        sim: (Q, N) similarities, higher = closer.
        query_attr: Q attribute values (list, 1-D array or tensor; any hashable
            values, e.g. shape ids or colour names).
        gallery_attr: N attribute values, comparable with ``query_attr``.

    Returns:
        Fraction in [0, 1].
    """
    sim_t = _as_sim(sim)
    q_vals = _codes(query_attr, "query_attr")
    g_vals = _codes(gallery_attr, "gallery_attr")
    if len(q_vals) != sim_t.shape[0] or len(g_vals) != sim_t.shape[1]:
        raise ValueError(
            f"attribute lengths ({len(q_vals)} queries, {len(g_vals)} gallery items) "
            f"do not match sim {tuple(sim_t.shape)}"
        )
    vocab: dict[Any, int] = {}
    q_codes = torch.tensor([vocab.setdefault(v, len(vocab)) for v in q_vals])
    g_codes = torch.tensor([vocab.setdefault(v, len(vocab)) for v in g_vals])
    q_codes, g_codes = q_codes.to(sim_t.device), g_codes.to(sim_t.device)
    top = sim_t.max(dim=1, keepdim=True).values
    tied = sim_t >= top  # (Q, N) items sharing the best score
    match = g_codes[None, :] == q_codes[:, None]  # (Q, N)
    hit = ~(tied & ~match).any(dim=1)
    return float(hit.double().mean())


def retrieval_report(
    sim: torch.Tensor,
    target: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    *,
    attributes: Mapping[str, tuple[Any, Any]] | None = None,
) -> dict[str, float | int]:
    """All instance-retrieval numbers for one (Q, N) similarity matrix.

    Args:
        sim: (Q, N) similarities, higher = closer.
        target: (Q,) index of each query's true gallery item.
        ks: Acc@K cut-offs.
        attributes: optional ``{name: (query_attr, gallery_attr)}``; each adds
            ``"<name>@1"`` from :func:`attribute_at_1`, e.g.
            ``{"shape": (q_shape, g_shape), "appearance": (q_col, g_col)}``.

    Returns:
        Dict with ``n_queries``, ``n_gallery``, ``acc@K`` and ``chance@K`` per K,
        ``mean_rank``, ``median_rank`` (lower median), ``mrr`` (mean reciprocal
        pessimistic rank) and the attribute scores. All rates are fractions.
    """
    sim_t = _as_sim(sim)
    ks = _as_ks(ks)
    ranks = ranks_pessimistic(sim_t, target)
    q, n = sim_t.shape
    report: dict[str, float | int] = {"n_queries": int(q), "n_gallery": int(n)}
    report.update(acc_at_k(ranks, ks))
    for k in ks:
        report[f"chance@{k}"] = chance_acc_at_k(n, k)
    ranks_f = ranks.double()
    report["mean_rank"] = float(ranks_f.mean())
    report["median_rank"] = float(ranks_f.median())
    report["mrr"] = float((1.0 / ranks_f).mean())
    for name, pair in (attributes or {}).items():
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise ValueError(
                f"attributes[{name!r}] must be a (query_attr, gallery_attr) pair"
            )
        report[f"{name}@1"] = attribute_at_1(sim_t, pair[0], pair[1])
    return report
