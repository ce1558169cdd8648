"""Failure analysis of one retrieval run: worst queries, match curves, a gallery.

A single Acc@K number says how often retrieval works; it does not say *how* it
fails. Chapter 11 reads the failures of FG-SBIR on real sketches with three tools:

- :func:`worst_queries`: the queries whose true photo ranks lowest, with the
  photos that were ranked above it.
- :func:`cumulative_match`: Acc@K for every K from 1 to the gallery size (the
  cumulative match characteristic), to compare a method with chance over the
  whole ranking, not at three cut-offs.
- :func:`failure_gallery`: a figure with one row per failure: the query sketch,
  its ground-truth photo with its rank, and the top retrieved photos.
- :func:`miss_anatomy` (chapter 10): for the queries whose true item is not
  ranked first, which attributes (shape, colour, pattern, ...) the item that beat
  it shares with the true one, so a table can say *what* a method misreads.

Ranks are the pessimistic ranks of :func:`duet_lib.metrics.ranks_pessimistic`
(ties count against the query), so these tools agree with every Acc@K the book
reports. Introduced in chapter 11.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from duet_lib.metrics import ranks_pessimistic

__all__ = [
    "Failure",
    "MissAnatomy",
    "cumulative_match",
    "failure_gallery",
    "miss_anatomy",
    "worst_queries",
]


@dataclass(frozen=True)
class Failure:
    """One query and what the ranking put above its true item (chapter 11).

    Attributes:
        query: row of the similarity matrix (index of the query).
        target: gallery index of the query's true item.
        rank: pessimistic 1-based rank of the true item.
        target_score: similarity of the query to its true item.
        top: gallery indices of the best-ranked items, best first.
        top_scores: their similarities, in the same order.
    """

    query: int
    target: int
    rank: int
    target_score: float
    top: tuple[int, ...]
    top_scores: tuple[float, ...]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def worst_queries(
    sim: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray | Sequence[int],
    k: int = 4,
    top: int = 3,
) -> list[Failure]:
    """The ``k`` queries whose true item ranks worst, worst first (chapter 11).

    Queries are ordered by pessimistic rank, highest first; equal ranks are
    ordered by the gap between the best score and the true item's score
    (largest first), then by query index, so the order is deterministic. Within
    a row the top items are ordered by score, highest first, ties by gallery
    index.

    Args:
        sim: (Q, N) similarities, higher = closer.
        target: (Q,) gallery index of each query's true item.
        k: how many queries to return (at most Q are returned).
        top: how many best-ranked items to list per query (at most N).

    Returns:
        A list of ``min(k, Q)`` :class:`Failure` records.

    Raises:
        ValueError: a malformed ``sim`` or ``target`` (see
            :func:`~duet_lib.metrics.ranks_pessimistic`), or ``k`` / ``top`` not
            positive integers.
    """
    k = _positive_int("k", k)
    top = _positive_int("top", top)
    ranks = ranks_pessimistic(sim, target).cpu().numpy()  # validates both
    sim_t = torch.as_tensor(sim).detach().cpu().double()
    target_t = torch.as_tensor(target).long().cpu()
    true = sim_t.gather(1, target_t[:, None])[:, 0].numpy()  # (Q,)
    best = sim_t.max(dim=1).values.numpy()  # (Q,)
    n_q, n_g = sim_t.shape
    # np.lexsort sorts by the last key first: rank, then gap, then index
    order = np.lexsort((np.arange(n_q), -(best - true), -ranks))[: min(k, n_q)]
    scores = sim_t.numpy()
    out = []
    for q in order:
        row = scores[q]
        ranked = np.lexsort((np.arange(n_g), -row))[: min(top, n_g)]
        out.append(
            Failure(
                query=int(q),
                target=int(target_t[q]),
                rank=int(ranks[q]),
                target_score=float(true[q]),
                top=tuple(int(i) for i in ranked),
                top_scores=tuple(float(row[i]) for i in ranked),
            )
        )
    return out


def cumulative_match(
    ranks: torch.Tensor | np.ndarray | Sequence[int], n_gallery: int
) -> np.ndarray:
    """Acc@K for K = 1 .. N: the cumulative match characteristic (chapter 11).

    Args:
        ranks: (Q,) 1-based ranks, e.g. from
            :func:`~duet_lib.metrics.ranks_pessimistic`.
        n_gallery: gallery size N.

    Returns:
        (N,) float64 array; entry K - 1 is the fraction of queries with rank <= K.
        It never decreases and ends at 1. Chance is ``K / N``.

    Raises:
        ValueError: empty or non-integer ranks, ranks outside [1, N], or a bad N.
    """
    n = _positive_int("n_gallery", n_gallery)
    r = np.asarray(torch.as_tensor(ranks).detach().cpu())
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"ranks must be a non-empty (Q,) vector, got shape {r.shape}")
    if not np.issubdtype(r.dtype, np.integer):
        raise ValueError(f"ranks must be integers, got dtype {r.dtype}")
    if r.min() < 1 or r.max() > n:
        raise ValueError(
            f"ranks must lie in [1, {n}] for a gallery of {n}; got range "
            f"[{int(r.min())}, {int(r.max())}]"
        )
    counts = np.bincount(r, minlength=n + 1)[1:]  # queries per rank, (N,)
    return np.cumsum(counts) / r.size


@dataclass(frozen=True)
class MissAnatomy:
    """What the missed queries of one ranking got wrong (chapter 10).

    Attributes:
        names: the attributes compared, in order (e.g. shape, colour, pattern).
        n_queries: Q, all queries.
        n_misses: queries whose true item is not ranked first (pessimistic rank
            above 1).
        counts: agreement pattern -> number of missed queries. A pattern is a
            tuple of booleans, one per name: does the item ranked first share
            that attribute with the true item?
    """

    names: tuple[str, ...]
    n_queries: int
    n_misses: int
    counts: dict[tuple[bool, ...], int]

    def wrong(self, *names: str) -> int:
        """Missed queries whose first item differs from the truth in any of ``names``."""
        if not names:
            raise ValueError("name at least one attribute")
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise ValueError(
                f"unknown attribute(s) {unknown}; valid: {', '.join(self.names)}"
            )
        idx = [self.names.index(n) for n in names]
        return sum(
            n for pattern, n in self.counts.items() if not all(pattern[i] for i in idx)
        )

    def rows(self) -> list[tuple[tuple[bool, ...], int]]:
        """(pattern, count) pairs, most frequent first (ties: pattern order)."""
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))

    def markdown(self, max_rows: int | None = None) -> str:
        """A table: one row per agreement pattern, with its share of all queries."""
        head = "| " + " | ".join(self.names) + " | misses | share of queries |"
        rule = "|" + "---|" * len(self.names) + "---:|---:|"
        lines = [head, rule]
        rows = self.rows()
        for pattern, n in rows[:max_rows] if max_rows else rows:
            marks = " | ".join("same" if ok else "**other**" for ok in pattern)
            lines.append(f"| {marks} | {n} | {100 * n / self.n_queries:.1f} % |")
        return "\n".join(lines)


def miss_anatomy(
    sim: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray | Sequence[int],
    attributes: Mapping[str, Sequence[Any]],
) -> MissAnatomy:
    """For each missed query, which attributes its first-ranked item shares with the truth.

    A query is missed when its pessimistic rank is above 1 (so ties with the true
    item count as misses, as in every Acc@1 of the book). Its first-ranked item is
    the best-scoring gallery item other than the true one (the lowest index among
    equal scores). Comparing that item's attributes with the true item's tells
    misreadings apart: a composed query that lands on a photo of the right shape in
    another colour misread the words; one that lands on another shape in the right
    colour misread the sketch.

    Args:
        sim: (Q, N) similarities, higher = closer.
        target: (Q,) gallery index of each query's true item.
        attributes: name -> N values, one per gallery item (hashable, e.g. shape
            ids or colour names); compared in the mapping's order.

    Returns:
        A :class:`MissAnatomy`.

    Raises:
        ValueError: a malformed ``sim`` or ``target``, no attributes, or an
            attribute with other than N values.
    """
    ranks = ranks_pessimistic(sim, target).cpu().numpy()  # validates both
    sim_t = torch.as_tensor(sim).detach().cpu().double()
    target_t = torch.as_tensor(target).long().cpu()
    n_q, n_g = sim_t.shape
    if not attributes:
        raise ValueError("attributes must name at least one attribute")
    names = tuple(attributes)
    values = []
    for name in names:
        vals = list(attributes[name])
        if len(vals) != n_g:
            raise ValueError(
                f"attribute {name!r} has {len(vals)} values for a gallery of {n_g}"
            )
        values.append(vals)
    others = sim_t.clone()
    others[torch.arange(n_q), target_t] = -torch.inf
    first = others.argmax(dim=1).numpy()  # argmax takes the lowest index on ties
    counts: dict[tuple[bool, ...], int] = {}
    missed = np.flatnonzero(ranks > 1)
    for q in missed:
        t, f = int(target_t[q]), int(first[q])
        pattern = tuple(bool(v[f] == v[t]) for v in values)
        counts[pattern] = counts.get(pattern, 0) + 1
    return MissAnatomy(names, int(n_q), int(missed.size), counts)


def _image(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4)):
        raise ValueError(
            f"{what} must be an (H, W) or (H, W, 3) image, got shape {arr.shape}"
        )
    return arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr


def failure_gallery(
    failures: Sequence[Failure],
    sketches: Sequence[Any] | np.ndarray,
    photos: Mapping[int, Any] | Sequence[Any] | np.ndarray,
    *,
    n_gallery: int | None = None,
    title: str | None = None,
):
    """A figure of failed queries: sketch, ground truth with its rank, top items.

    One row per failure, ``2 + len(top)`` columns: the query sketch, its true
    photo (titled with its rank and score), then the best-ranked photos (titled
    with their scores). The true photo gets a thick green frame, in its own
    column and wherever it appears among the retrieved ones.

    Args:
        failures: records from :func:`worst_queries` (all with the same number
            of top items).
        sketches: one image per failure, in the same order: (H, W) or
            (H, W, 3) arrays, uint8 or floats in [0, 1].
        photos: gallery images by gallery index, a mapping or a sequence /
            (N, H, W, 3) array; must hold every target and top index.
        n_gallery: gallery size, shown as "rank r / N" when given.
        title: optional figure title.

    Returns:
        A :class:`matplotlib.figure.Figure`.

    Raises:
        ValueError: no failures, a sketch count that differs from the failure
            count, unequal top lengths, a missing photo, or a malformed image.
    """
    from matplotlib.figure import Figure

    failures = list(failures)
    if not failures:
        raise ValueError("failure_gallery needs at least one failure")
    if not all(isinstance(f, Failure) for f in failures):
        raise ValueError("failures must be Failure records from worst_queries")
    if len(sketches) != len(failures):
        raise ValueError(
            f"got {len(sketches)} sketches for {len(failures)} failures; pass one "
            "sketch image per failure, in the same order"
        )
    n_top = len(failures[0].top)
    if any(len(f.top) != n_top for f in failures):
        raise ValueError("every failure must list the same number of top items")

    def photo(index: int) -> np.ndarray:
        try:
            item = photos[index]
        except (KeyError, IndexError):
            raise ValueError(f"photos has no image for gallery index {index}") from None
        return _image(item, f"photo {index}")

    rows, cols = len(failures), 2 + n_top
    fig = Figure(figsize=(1.7 * cols, 1.9 * rows), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    for r, (fail, sketch) in enumerate(zip(failures, sketches, strict=True)):
        rank = f"rank {fail.rank}" + (f" / {n_gallery}" if n_gallery else "")
        cells = [
            (_image(sketch, f"sketch {r}"), f"query {fail.query}", False),
            (photo(fail.target), f"truth: {rank}\ncos {fail.target_score:.3f}", True),
        ]
        for i, (g, s) in enumerate(zip(fail.top, fail.top_scores, strict=True)):
            cells.append((photo(g), f"top-{i + 1}\ncos {s:.3f}", g == fail.target))
        for ax, (img, label, framed) in zip(axes[r], cells, strict=True):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label, fontsize=8)
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_linewidth(3.0 if framed else 0.5)
                spine.set_edgecolor("#009E73" if framed else "#999999")
    if title:
        fig.suptitle(title)
    return fig
