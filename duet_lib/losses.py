"""The six losses of the sketch + text duet, our optional seventh, and their total.

The paper fixes which embeddings each loss compares; every functional form here
is our reconstruction, and the alternatives listed in the book's method notes are
selectable with a ``form`` argument. Conventions shared by all functions:

- Embeddings are (B, E) rows, one per training sample, and are L2-normalised
  inside every function, so callers may pass raw encoder outputs.
- The distance is the cosine distance delta(a, b) = 1 - cos(a, b), in [0, 2].
- Margins are ``margin`` (mu in the equations), temperatures ``tau``.
- Every loss returns a scalar tensor, the mean over the batch.
- ``labels`` (B,) are optional instance ids of the positive photos: batch entries
  that share the anchor's label are never used as its negatives (several
  sketches of one photo can share a batch).

Notation of the queries (all produced by the frozen text encoder):

==============  ==========================================  ================
symbol          token sequence                              argument name
==============  ==========================================  ================
s_L^T           [P^L ; s^w]                                 ``query_sketch``
s_L^{T,Delta}   [P^L ; s^w ; Delta^w], Delta = p+ - s       ``query_delta``
s_L^{T,N}       [P^L ; s^w ; N^w], N a neutral text          ``query_neutral``
s_F^T           [P^F ; s^w], P^F a fixed prompt              ``query_fixed``
s_L^{T,W}       [P^L ; s^w ; W], W self-labelled words       ``query_delta``
==============  ==========================================  ================

The seventh term, L_words (our option, off by default; chapter 09), is
:func:`compositionality_loss` again with real words in place of Delta^w: W is an
appearance phrase that the frozen CLIP writes for the paired photo by reading it
zero-shot (:func:`duet_lib.probes.zero_shot_phrases`), so no dataset text is used.

Chapters: L_trip in 03, L_comp in 04, L_reg and the neutral texts in 05, L_TT and
the fixed prompts in 06, L_RT and region pooling in 07, L_rec in 08, the weighted
total in 09.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

# the loss names (the paper's six, then our optional L_words, in the order of the
# total loss) have their one definition in the torch-free config module, which
# validates chapter parameters with them; re-exported here
from duet_lib.config import LOSS_NAMES

__all__ = [
    "LOSS_NAMES",
    "LossWeights",
    "compositionality_loss",
    "cosine_distance",
    "load_fixed_prompts",
    "load_neutral_texts",
    "neutral_regulariser",
    "prompt_text_loss",
    "reconstruction_loss",
    "region_pool",
    "region_similarity",
    "region_triplet_loss",
    "total_loss",
    "triplet_loss",
]

_EPS = 1e-8
# ITU-R BT.601 luma weights, for the greyscale reconstruction target.
_LUMA = (0.299, 0.587, 0.114)


# ------------------------------------------------------------------------ helpers


def _check_tensor(name: str, x: object, ndims: tuple[int, ...]) -> torch.Tensor:
    """A floating tensor with one of the allowed numbers of axes and no empty axis."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {want}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    return x


def _check_batch(**tensors: torch.Tensor) -> tuple[int, int]:
    """All given tensors are (B, E) with the same B and E; returns (B, E)."""
    shapes = {}
    for name, x in tensors.items():
        _check_tensor(name, x, (2,))
        shapes[name] = tuple(x.shape)
    if len(set(shapes.values())) != 1:
        listed = ", ".join(f"{n} {s}" for n, s in shapes.items())
        raise ValueError(f"embeddings must share one (B, E) shape, got {listed}")
    batch, dim = next(iter(shapes.values()))
    return batch, dim


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {list(choices)}")


def _check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        rule = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {rule}, got {value!r}")


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1, eps=_EPS)


def _negatives_3d(name: str, neg: torch.Tensor, batch: int, dim: int) -> torch.Tensor:
    """Negatives as (B, M, E) from (B, E) or (B, M, E)."""
    _check_tensor(name, neg, (2, 3))
    if neg.ndim == 2:
        neg = neg.unsqueeze(1)
    if neg.shape[0] != batch or neg.shape[2] != dim:
        raise ValueError(
            f"{name} must be (B={batch}, E={dim}) or (B={batch}, M, E={dim}), got "
            f"{tuple(neg.shape)}"
        )
    return neg


def _negative_mask(batch: int, labels: torch.Tensor | None, device) -> torch.Tensor:
    """(B, B) bool: True where batch entry j may serve as a negative for anchor i."""
    valid = ~torch.eye(batch, dtype=torch.bool, device=device)
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.shape != (batch,):
            shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else None
            raise ValueError(f"labels must be a ({batch},) tensor, got {shape}")
        labels = labels.to(device)
        valid &= labels[:, None] != labels[None, :]
    return valid


def _reduce_hinge(
    d_pos: torch.Tensor, d_neg: torch.Tensor, margin: float, negative_reduction: str
) -> torch.Tensor:
    """Per-anchor hinge from d_pos (B,) and d_neg (B, M): mean or hardest over M."""
    if negative_reduction == "hardest":
        return F.relu(margin + d_pos - d_neg.min(dim=1).values)
    return F.relu(margin + d_pos[:, None] - d_neg).mean(dim=1)


# ---------------------------------------------------------------------- distance


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """delta(a, b) = 1 - cos(a, b) along the last axis (chapter 03).

    Args:
        a: (..., E) embeddings.
        b: (..., E) embeddings; the leading axes must broadcast with ``a``'s.

    Returns:
        (...) distances in [0, 2]. A zero vector has cosine 0 with everything.

    Raises:
        ValueError: the widths differ or the leading axes do not broadcast.
    """
    _check_tensor("a", a, tuple(range(1, 9)))
    _check_tensor("b", b, tuple(range(1, 9)))
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"a and b must have the same width E, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    try:
        torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    except RuntimeError as err:
        raise ValueError(
            f"leading axes of a {tuple(a.shape)} and b {tuple(b.shape)} do not "
            "broadcast"
        ) from err
    return 1.0 - (_unit(a) * _unit(b)).sum(dim=-1)


# ------------------------------------------------------------------------ L_trip


_MINING = ("given", "batch_hardest")
_NEG_REDUCTION = ("mean", "hardest")


def triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor | None = None,
    margin: float = 0.2,
    *,
    mining: str = "given",
    negative_reduction: str = "mean",
    form: str = "hinge",
    tau: float = 0.07,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-modal triplet loss L_trip(p+, p-, s_L^T) (chapter 03).

    Paper's arguments: the anchor is the text-side sketch query s_L^T, the
    positive its paired photo p+, the negative another photo p-. Our default
    form, with cosine distance delta and margin mu_1::

        L = mean_i max(0, mu_1 + delta(a_i, p+_i) - delta(a_i, p-_i))

    Negative sampling (``mining``, used by ``form="hinge"``):

    - ``"given"``: negatives are passed in, (B, E) or (B, M, E) with M per
      anchor; the M hinge terms are averaged (``negative_reduction="mean"``) or
      only the closest negative counts (``"hardest"``).
    - ``"batch_hardest"``: for anchor i the closest photo ``positive[j]``,
      j != i (and ``labels[j] != labels[i]`` when labels are given); negatives
      passed in join the candidates.

    ``form="infonce"`` replaces the hinge by a softmax cross-entropy over the
    batch photos with temperature tau (``mining`` is then irrelevant)::

        L = -mean_i log softmax_j(cos(a_i, c_j) / tau)[j = i]

    where the candidates c are all photos of the batch (those sharing the
    anchor's label except its own are left out) plus any negatives passed in.

    Args:
        anchor: (B, E) queries, s_L^T.
        positive: (B, E) paired photos p+.
        negative: (B, E) or (B, M, E) negatives, or None.
        margin: mu_1 >= 0 of the hinge.
        mining: "given" or "batch_hardest".
        negative_reduction: "mean" or "hardest" over M given negatives.
        form: "hinge" or "infonce".
        tau: temperature of the InfoNCE form.
        labels: (B,) instance ids of the positives, or None (all distinct).

    Returns:
        Scalar loss.

    Raises:
        ValueError: mismatched shapes, unknown options, or an anchor without any
            negative (for example a batch of one with no negatives given).
    """
    _check_choice("form", form, ("hinge", "infonce"))
    _check_choice("mining", mining, _MINING)
    _check_choice("negative_reduction", negative_reduction, _NEG_REDUCTION)
    _check_positive("margin", margin, allow_zero=True)
    _check_positive("tau", tau)
    batch, dim = _check_batch(anchor=anchor, positive=positive)
    neg = None if negative is None else _negatives_3d("negative", negative, batch, dim)
    a, p = _unit(anchor), _unit(positive)

    if form == "infonce":
        valid = _negative_mask(batch, labels, a.device)
        valid |= torch.eye(batch, dtype=torch.bool, device=a.device)
        logits = (a @ p.T).masked_fill(~valid, float("-inf"))  # (B, B)
        if neg is not None:
            extra = torch.einsum("be,bme->bm", a, _unit(neg))  # (B, M)
            logits = torch.cat([logits, extra], dim=1)
        n_candidates = valid.sum(dim=1) + (0 if neg is None else neg.shape[1])
        if bool((n_candidates < 2).any()):
            raise ValueError(
                "InfoNCE needs at least one negative per anchor: use a batch of two "
                "or more distinct photos, or pass negatives"
            )
        target = torch.arange(batch, device=a.device)
        return F.cross_entropy(logits / tau, target)

    d_pos = 1.0 - (a * p).sum(dim=-1)  # (B,)
    if mining == "given":
        if neg is None:
            raise ValueError('mining="given" needs negatives; pass negative=...')
        d_neg = 1.0 - torch.einsum("be,bme->bm", a, _unit(neg))  # (B, M)
        return _reduce_hinge(d_pos, d_neg, margin, negative_reduction).mean()

    # batch_hardest: closest other photo of the batch (and any given negatives)
    valid = _negative_mask(batch, labels, a.device)
    d_batch = (1.0 - a @ p.T).masked_fill(~valid, float("inf"))  # (B, B)
    if neg is not None:
        d_given = 1.0 - torch.einsum("be,bme->bm", a, _unit(neg))
        d_batch = torch.cat([d_batch, d_given], dim=1)
    elif bool((~valid.any(dim=1)).any()):
        raise ValueError(
            'mining="batch_hardest" found an anchor without any other photo in the '
            "batch; use a batch of two or more distinct photos"
        )
    return _reduce_hinge(d_pos, d_batch, margin, "hardest").mean()


# ------------------------------------------------------------------------ L_comp


_COMP_FORMS = ("infonce", "triplet", "hinge", "pull")


def compositionality_loss(
    query_delta: torch.Tensor,
    query_sketch: torch.Tensor | None,
    positive: torch.Tensor,
    margin: float = 0.2,
    form: str = "infonce",
    negatives: torch.Tensor | None = None,
    tau: float = 0.07,
    *,
    labels: torch.Tensor | None = None,
    negative_reduction: str = "mean",
    detach_reference: bool = False,
) -> torch.Tensor:
    """Compositionality loss L_comp(p+, s_L^T, s_L^{T,Delta}) (chapter 04).

    Paper's arguments: the composed query s_L^{T,Delta} = T([P^L; s^w; Delta^w])
    with Delta = p+ - s, the sketch-only query s_L^T and the paired photo p+.
    Intent: adding the stand-in text word Delta^w must move the query towards p+.

    Forms:

    - ``"infonce"`` (default): softmax cross-entropy of cos(s_L^{T,Delta}, .) / tau
      over the batch photos, plus ``negatives`` (B, M, E) when given.
    - ``"triplet"``: hinge max(0, mu_2 + delta(s_L^{T,Delta}, p+) -
      delta(s_L^{T,Delta}, p-)) with the given negatives, or with the hardest
      other photo of the batch when ``negatives`` is None.
    - ``"hinge"``: the reading closest to the figure,
      max(0, mu_2 + delta(s_L^{T,Delta}, p+) - delta(s_L^T, p+)).
    - ``"pull"``: delta(s_L^{T,Delta}, p+).

    The hinge trap (measured). Delta is computed from the target photo itself, so
    the composed query holds the answer and starts far closer to p+ than the
    sketch-only query does. The ``"hinge"`` form is then satisfied almost at once
    (in a tiny-CLIP run it reached zero within about 50 steps) and from there on
    gives no gradient: it teaches nothing. The default therefore contrasts the
    composed query with other photos, which keeps a gradient as long as any
    competitor is close. It teaches most with hard negatives passed as
    ``negatives``: the same shape in another appearance (text must supply the
    appearance) and another shape in the same appearance (the sketch word must
    keep the shape). With random batch photos alone the InfoNCE too can become
    easy; the hard negatives are what kept it from collapsing in our runs.

    Args:
        query_delta: (B, E) composed queries s_L^{T,Delta}.
        query_sketch: (B, E) sketch-only queries s_L^T; needed only by
            ``form="hinge"`` (may be None otherwise).
        positive: (B, E) paired photos p+.
        margin: mu_2 of the hinge and triplet forms.
        form: "infonce", "triplet", "hinge" or "pull".
        negatives: (B, E) or (B, M, E) hard negatives, or None.
        tau: temperature of the InfoNCE form.
        labels: (B,) instance ids of the positives (see module docstring).
        negative_reduction: "mean" or "hardest" over M given negatives (triplet).
        detach_reference: stop the gradient through ``query_sketch`` in the
            hinge form, so the loss cannot be met by making s_L^T worse.

    Returns:
        Scalar loss.

    Raises:
        ValueError: mismatched shapes, unknown form, or a missing ``query_sketch``.
    """
    _check_choice("form", form, _COMP_FORMS)
    _check_positive("margin", margin, allow_zero=True)
    batch, dim = _check_batch(query_delta=query_delta, positive=positive)
    if query_sketch is not None:
        _check_batch(query_delta=query_delta, query_sketch=query_sketch)
    if form == "hinge":
        if query_sketch is None:
            raise ValueError('form="hinge" needs query_sketch (s_L^T)')
        reference = query_sketch.detach() if detach_reference else query_sketch
        gap = cosine_distance(query_delta, positive) - cosine_distance(
            reference, positive
        )
        return F.relu(margin + gap).mean()
    if form == "pull":
        return cosine_distance(query_delta, positive).mean()
    if form == "triplet":
        return triplet_loss(
            query_delta,
            positive,
            negatives,
            margin,
            mining="given" if negatives is not None else "batch_hardest",
            negative_reduction=negative_reduction,
            labels=labels,
        )
    return triplet_loss(
        query_delta, positive, negatives, form="infonce", tau=tau, labels=labels
    )


# ------------------------------------------------------------------------- L_reg


def neutral_regulariser(
    query_neutral: torch.Tensor,
    query_sketch: torch.Tensor,
    positive: torch.Tensor,
    form: str = "hinge",
    *,
    detach_reference: bool = False,
) -> torch.Tensor:
    """Neutral-text regulariser L_reg(p+, s_L^T, s_L^{T,N}) (chapter 05).

    Paper's arguments: the query with a neutral text appended, s_L^{T,N} =
    T([P^L; s^w; N^w]), the sketch-only query s_L^T and the paired photo p+.
    Intent: words that carry no information must not pull the query off target,
    which keeps P^L and s^w compatible with real words that follow them.

    Forms:

    - ``"hinge"`` (default): max(0, delta(s_L^{T,N}, p+) - delta(s_L^T, p+)),
      zero margin; only a neutral text that makes the query worse is penalised.
    - ``"symmetric"``: |cos(s_L^{T,N}, p+) - cos(s_L^T, p+)|, which also forbids
      a neutral text from helping.

    Args:
        query_neutral: (B, E) neutral-text queries, or (B, K, E) with K neutral
            texts per sample (the K terms are averaged).
        query_sketch: (B, E) sketch-only queries s_L^T.
        positive: (B, E) paired photos p+.
        form: "hinge" or "symmetric".
        detach_reference: stop the gradient through ``query_sketch``, so the
            regulariser only moves the neutral-text query.

    Returns:
        Scalar loss.

    Raises:
        ValueError: mismatched shapes or unknown form.
    """
    _check_choice("form", form, ("hinge", "symmetric"))
    batch, dim = _check_batch(query_sketch=query_sketch, positive=positive)
    neutral = _negatives_3d("query_neutral", query_neutral, batch, dim)  # (B, K, E)
    reference = query_sketch.detach() if detach_reference else query_sketch
    cos_ref = (_unit(reference) * _unit(positive)).sum(dim=-1)  # (B,)
    cos_neu = torch.einsum("bke,be->bk", _unit(neutral), _unit(positive))  # (B, K)
    if form == "hinge":
        # delta(N) - delta(ref) = cos(ref) - cos(N)
        per = F.relu(cos_ref[:, None] - cos_neu)
    else:
        per = (cos_neu - cos_ref[:, None]).abs()
    return per.mean()


# -------------------------------------------------------------------------- L_TT


def prompt_text_loss(
    query_learned: torch.Tensor,
    query_fixed: torch.Tensor,
    tau: float = 0.07,
    form: str = "infonce",
) -> torch.Tensor:
    """Text-to-text prompt loss L_TT(s_L^T, s_F^T) (chapter 06).

    Paper's arguments: the query with the learned prompt, s_L^T = T([P^L; s^w]),
    and the same sketch word behind fixed hand-written prompts, s_F^T =
    T([P^F; s^w]). Intent: keep the learned prompt near real English prompts.

    Forms:

    - ``"infonce"`` (default, after LASP's text-to-text loss): row i of the
      learned queries must pick its own fixed-prompt query among the batch,
      -mean_i log softmax_j(cos(s_L,i, s_F,j) / tau)[j = i].
    - ``"cosine"``: mean_i (1 - cos(s_L,i, s_F,i)).

    With several fixed prompts, ``query_fixed`` is (B, F, E); each of the F
    embeddings is L2-normalised, then they are averaged into one target per row.

    Args:
        query_learned: (B, E) queries with the learned prompt.
        query_fixed: (B, E) or (B, F, E) queries with fixed prompts.
        tau: temperature of the InfoNCE form.
        form: "infonce" or "cosine".

    Returns:
        Scalar loss.

    Raises:
        ValueError: mismatched shapes, unknown form, or ``form="infonce"`` with a
            batch of one (the loss would be identically zero).
    """
    _check_choice("form", form, ("infonce", "cosine"))
    _check_positive("tau", tau)
    batch, dim = _check_batch(query_learned=query_learned)
    fixed = _negatives_3d("query_fixed", query_fixed, batch, dim)  # (B, F, E)
    target = _unit(_unit(fixed).mean(dim=1))  # (B, E)
    learned = _unit(query_learned)
    if form == "cosine":
        return (1.0 - (learned * target).sum(dim=-1)).mean()
    if batch < 2:
        raise ValueError(
            'prompt_text_loss(form="infonce") needs a batch of at least 2 (with one '
            'row it is identically zero); drop the last partial batch or use form="cosine"'
        )
    logits = learned @ target.T / tau  # (B, B)
    return F.cross_entropy(logits, torch.arange(batch, device=logits.device))


# ------------------------------------------------------------- region-aware pooling


_POOL_FORMS = ("attention", "max")


def _pool_weights(scores: torch.Tensor, tau: float, form: str) -> torch.Tensor:
    """Patch weights (..., N) from cosine scores (..., N)."""
    if form == "attention":
        return torch.softmax(scores / tau, dim=-1)
    index = scores.argmax(dim=-1, keepdim=True)
    return torch.zeros_like(scores).scatter_(-1, index, 1.0)


def region_pool(
    query: torch.Tensor,
    patches: torch.Tensor,
    tau: float = 0.07,
    form: str = "attention",
    *,
    pairwise: bool = False,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Region-aware photo embedding p_s: patches pooled by their match to the query.

    Our reconstruction of the paper's region-aware embedding block (chapter 07).
    With unit vectors q (the query s_L^T) and v_i (the photo's patch tokens in
    the joint space, i = 1..N)::

        w_i = softmax_i(cos(q, v_i) / tau),   p_s = normalise(sum_i w_i v_i)

    so every photo gets an embedding that stresses the regions that match this
    query. ``form="max"`` keeps only the best-matching patch (the tau -> 0 limit),
    so cos(q, p_s) = max_i cos(q, v_i). The patches are normalised before the
    weighted sum: a patch contributes by its weight, not by its norm.

    Args:
        query: (B, E) queries; with ``pairwise=True`` (Q, E).
        patches: (B, N, E) patch tokens of each query's photo; with
            ``pairwise=True`` (G, N, E) patch tokens of G photos.
        tau: softmax temperature (attention form).
        form: "attention" or "max".
        pairwise: pool every photo for every query.
        return_weights: also return the patch weights.

    Returns:
        p_s, unit vectors of shape (B, E), or (Q, G, E) when ``pairwise``; with
        ``return_weights`` also the weights (B, N) or (Q, G, N), rows summing to 1.

    Raises:
        ValueError: mismatched shapes or unknown form.
    """
    _check_choice("form", form, _POOL_FORMS)
    _check_positive("tau", tau)
    _check_tensor("query", query, (2,))
    _check_tensor("patches", patches, (3,))
    if patches.shape[2] != query.shape[1]:
        raise ValueError(
            f"query {tuple(query.shape)} and patches {tuple(patches.shape)} must "
            "share the width E"
        )
    q, v = _unit(query), _unit(patches)
    if pairwise:
        scores = torch.einsum("qe,gne->qgn", q, v)  # (Q, G, N)
        weights = _pool_weights(scores, tau, form)
        pooled = _unit(torch.einsum("qgn,gne->qge", weights, v))  # (Q, G, E)
    else:
        if patches.shape[0] != query.shape[0]:
            raise ValueError(
                f"query {tuple(query.shape)} and patches {tuple(patches.shape)} must "
                "share the batch size B (or pass pairwise=True)"
            )
        scores = torch.einsum("be,bne->bn", q, v)  # (B, N)
        weights = _pool_weights(scores, tau, form)
        pooled = _unit(torch.einsum("bn,bne->be", weights, v))  # (B, E)
    return (pooled, weights) if return_weights else pooled


def region_similarity(
    queries: torch.Tensor,
    patches: torch.Tensor,
    tau: float = 0.07,
    form: str = "attention",
    *,
    chunk_size: int = 128,
) -> torch.Tensor:
    """Similarity of every query to every photo's region-aware embedding (chapter 07).

    Entry (q, n) equals cos(queries[q], region_pool(queries[q], patches[n])). The
    work is done in blocks of ``chunk_size`` queries by ``chunk_size`` photos, so
    memory stays near chunk_size^2 * max(P, E) numbers whatever Q and N are.

    Args:
        queries: (Q, E) queries.
        patches: (N, P, E) patch tokens of N gallery photos.
        tau: softmax temperature (attention form).
        form: "attention" or "max".
        chunk_size: block size along queries and photos.

    Returns:
        (Q, N) cosine similarities, for ranking.

    Raises:
        ValueError: mismatched shapes, unknown form, or chunk_size < 1.
    """
    _check_choice("form", form, _POOL_FORMS)
    _check_positive("tau", tau)
    _check_tensor("queries", queries, (2,))
    _check_tensor("patches", patches, (3,))
    if patches.shape[2] != queries.shape[1]:
        raise ValueError(
            f"queries {tuple(queries.shape)} and patches {tuple(patches.shape)} must "
            "share the width E"
        )
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int)
        or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    q_all, v_all = _unit(queries), _unit(patches)
    n_q, n_g = q_all.shape[0], v_all.shape[0]
    out = q_all.new_empty(n_q, n_g)
    for qs in range(0, n_q, chunk_size):
        q = q_all[qs : qs + chunk_size]
        for gs in range(0, n_g, chunk_size):
            v = v_all[gs : gs + chunk_size]
            scores = torch.einsum("qe,gpe->qgp", q, v)  # (q, g, P)
            if form == "max":
                block = scores.max(dim=-1).values
            else:
                weights = torch.softmax(scores / tau, dim=-1)
                pooled = torch.einsum("qgp,gpe->qge", weights, v)  # (q, g, E)
                # cos(q, pooled) = (sum_p w_p s_p) / |pooled|
                block = (weights * scores).sum(dim=-1) / pooled.norm(dim=-1).clamp_min(
                    _EPS
                )
            out[qs : qs + chunk_size, gs : gs + chunk_size] = block
    return out


# -------------------------------------------------------------------------- L_RT


def region_triplet_loss(
    query: torch.Tensor,
    pos_patches: torch.Tensor,
    neg_patches: torch.Tensor | None = None,
    margin: float = 0.2,
    tau: float = 0.07,
    *,
    form: str = "attention",
    negative_reduction: str = "mean",
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Region-aware triplet loss L_RT(p_s+, p_s-, s_L^T) (chapter 07).

    Paper's arguments: the sketch-only query s_L^T and the region-aware
    embeddings p_s+ and p_s- of the positive and negative photos. Our form::

        L = mean_i max(0, mu_3 + delta(s_i, p_s+_i) - delta(s_i, p_s-_i)),

    with p_s = :func:`region_pool` (query, photo's patches). When
    ``neg_patches`` is None, the negative of anchor i is the photo of the batch
    whose region-aware embedding (pooled for query i) is closest, excluding i
    and any photo with the same label.

    Args:
        query: (B, E) queries s_L^T.
        pos_patches: (B, N, E) patch tokens of the positive photos.
        neg_patches: (B, N, E) or (B, M, N, E) patch tokens of negative photos,
            or None for the hardest other photo of the batch.
        margin: mu_3 >= 0.
        tau: pooling temperature.
        form: pooling form, "attention" or "max".
        negative_reduction: "mean" or "hardest" over M given negatives.
        labels: (B,) instance ids of the positives, or None (all distinct).

    Returns:
        Scalar loss.

    Raises:
        ValueError: mismatched shapes, unknown options, or a batch without any
            usable negative.
    """
    _check_choice("negative_reduction", negative_reduction, _NEG_REDUCTION)
    _check_positive("margin", margin, allow_zero=True)
    _check_tensor("query", query, (2,))
    _check_tensor("pos_patches", pos_patches, (3,))
    batch, dim = query.shape
    if pos_patches.shape[0] != batch or pos_patches.shape[2] != dim:
        raise ValueError(
            f"pos_patches must be (B={batch}, N, E={dim}), got {tuple(pos_patches.shape)}"
        )
    q = _unit(query)
    if neg_patches is None:
        valid = _negative_mask(batch, labels, q.device)
        if bool((~valid.any(dim=1)).any()):
            raise ValueError(
                "region_triplet_loss without neg_patches needs, for every anchor, "
                "another photo in the batch"
            )
        pooled = region_pool(q, pos_patches, tau, form, pairwise=True)  # (B, B, E)
        dist = 1.0 - torch.einsum("be,bge->bg", q, pooled)  # (B, B)
        d_pos = dist.diagonal()
        d_neg = dist.masked_fill(~valid, float("inf"))
        return _reduce_hinge(d_pos, d_neg, margin, "hardest").mean()

    _check_tensor("neg_patches", neg_patches, (3, 4))
    neg = neg_patches.unsqueeze(1) if neg_patches.ndim == 3 else neg_patches
    if neg.shape[0] != batch or neg.shape[3] != dim:
        raise ValueError(
            f"neg_patches must be (B={batch}, N, E={dim}) or (B={batch}, M, N, "
            f"E={dim}), got {tuple(neg_patches.shape)}"
        )
    n_neg = neg.shape[1]
    p_pos = region_pool(q, pos_patches, tau, form)  # (B, E)
    q_rep = q.repeat_interleave(n_neg, dim=0)  # (B*M, E)
    p_neg = region_pool(q_rep, neg.reshape(batch * n_neg, -1, dim), tau, form)
    d_pos = 1.0 - (q * p_pos).sum(dim=-1)  # (B,)
    d_neg = 1.0 - (q_rep * p_neg).sum(dim=-1).view(batch, n_neg)  # (B, M)
    return _reduce_hinge(d_pos, d_neg, margin, negative_reduction).mean()


# ------------------------------------------------------------------------- L_rec


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == size:
        return images
    return F.interpolate(
        images, size=size, mode="bilinear", align_corners=False, antialias=True
    )


def _check_unit_range(name: str, images: torch.Tensor, tol: float = 1e-4) -> None:
    low, high = float(images.detach().min()), float(images.detach().max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} holds NaN or infinite values")
    if low < -tol or high > 1.0 + tol:
        raise ValueError(
            f"{name} must hold pixel values in [0, 1], found [{low:.3g}, {high:.3g}]; "
            "undo the CLIP mean/std normalisation (and pass decoder outputs after the "
            "sigmoid)"
        )


def reconstruction_loss(
    decoded_delta: torch.Tensor,
    decoded_sketch: torch.Tensor | None,
    target_photo: torch.Tensor,
    form: str = "l1",
    sketch_target: str = "photo",
) -> torch.Tensor:
    """Reconstruction loss L_rec(P+, s_L^T, s_L^{T,Delta}) (chapter 08).

    Paper's arguments: the decoder G's images of the composed query,
    G(s_L^{T,Delta}), and of the sketch-only query, G(s_L^T), both compared with
    the paired photo P+. Our default::

        L = mean|G(s_L^{T,Delta}) - P+| + mean|G(s_L^T) - P+|

    (per-pixel means, so the value does not depend on the resolution).

    All images are RGB with values in [0, 1] (the decoder ends in a sigmoid);
    photos that went through CLIP's mean/std normalisation must be mapped back
    first, and values outside [0, 1] raise an error. The target is resized to the
    decoder's output size here (bilinear with antialiasing).

    Options: ``form="l2"`` uses squared errors; ``sketch_target="grey"`` compares
    G(s_L^T) with the greyscale photo (the figure draws it as a shape-only grey
    object: the sketch alone cannot know the colour). ``decoded_sketch=None``
    keeps only the composed-query term.

    Args:
        decoded_delta: (B, 3, H, W) G(s_L^{T,Delta}) in [0, 1].
        decoded_sketch: (B, 3, H, W) G(s_L^T) in [0, 1], or None.
        target_photo: (B, 3, H', W') paired photos in [0, 1], any size.
        form: "l1" or "l2".
        sketch_target: "photo" or "grey".

    Returns:
        Scalar loss.

    Raises:
        ValueError: wrong shapes, values outside [0, 1], or unknown options.
    """
    _check_choice("form", form, ("l1", "l2"))
    _check_choice("sketch_target", sketch_target, ("photo", "grey"))
    named = {"decoded_delta": decoded_delta, "target_photo": target_photo}
    if decoded_sketch is not None:
        named["decoded_sketch"] = decoded_sketch
    for name, images in named.items():
        _check_tensor(name, images, (4,))
        if images.shape[1] != 3:
            raise ValueError(f"{name} must be (B, 3, H, W), got {tuple(images.shape)}")
        _check_unit_range(name, images)
    if decoded_sketch is not None and decoded_sketch.shape != decoded_delta.shape:
        raise ValueError(
            f"decoded_delta {tuple(decoded_delta.shape)} and decoded_sketch "
            f"{tuple(decoded_sketch.shape)} must have the same shape"
        )
    if target_photo.shape[0] != decoded_delta.shape[0]:
        raise ValueError(
            f"target_photo has {target_photo.shape[0]} images, the decoder output "
            f"{decoded_delta.shape[0]}"
        )
    target = _resize(target_photo.to(decoded_delta.dtype), decoded_delta.shape[-2:])

    def err(pred: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        diff = pred - tgt
        return diff.abs().mean() if form == "l1" else diff.square().mean()

    loss = err(decoded_delta, target)
    if decoded_sketch is not None:
        sketch_tgt = target
        if sketch_target == "grey":
            luma = torch.tensor(_LUMA, dtype=target.dtype, device=target.device)
            grey = torch.einsum("bchw,c->bhw", target, luma).unsqueeze(1)
            sketch_tgt = grey.expand_as(target)
        loss = loss + err(decoded_sketch, sketch_tgt)
    return loss


# ------------------------------------------------------------------------- total


@dataclass(frozen=True)
class LossWeights:
    """Weights lambda of the loss terms (chapter 09).

    The total is sum_k weight_k * L_k (the paper's L_trip has no lambda; ours has
    one so that it, too, can be switched off for ablations). A weight of 0 turns
    its term off: the training step should not compute it at all (see
    :meth:`enabled`). The paper's six weights default to 1.0 (its values are not
    available, so tune them on the validation split); ``words``, our optional
    seventh term, defaults to 0.0 (off).
    """

    trip: float = 1.0
    comp: float = 1.0
    reg: float = 1.0
    tt: float = 1.0
    rt: float = 1.0
    rec: float = 1.0
    words: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(
                    f"loss weight {f.name!r} must be a number, got {value!r}"
                )
            if not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"loss weight {f.name!r} must be finite and >= 0, got {value!r}"
                )

    @classmethod
    def from_dict(cls, values: Mapping[str, float]) -> LossWeights:
        """Build from a mapping; names must be among :data:`LOSS_NAMES`."""
        unknown = sorted(set(values) - set(LOSS_NAMES))
        if unknown:
            raise ValueError(
                f"unknown loss name(s) {unknown}; known names are {list(LOSS_NAMES)}"
            )
        return cls(**dict(values))

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    def enabled(self, name: str) -> bool:
        """True when the term ``name`` has a positive weight and must be computed."""
        _check_choice("loss name", name, LOSS_NAMES)
        return getattr(self, name) > 0

    def active(self) -> tuple[str, ...]:
        """Names of the terms with a positive weight, in :data:`LOSS_NAMES` order."""
        return tuple(name for name in LOSS_NAMES if getattr(self, name) > 0)


def total_loss(
    terms: Mapping[str, torch.Tensor], weights: LossWeights | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the loss terms, and a log of their values (chapter 09).

    L = lambda_trip L_trip + lambda_comp L_comp + lambda_reg L_reg + lambda_tt L_TT
    + lambda_rt L_RT + lambda_rec L_rec (+ lambda_words L_words, our option); the
    weighted-sum form is ours.

    Args:
        terms: scalar tensors keyed by names from :data:`LOSS_NAMES`. Every term
            with a positive weight must be present; terms whose weight is 0 may
            be left out (they are ignored if given).
        weights: the lambdas; None means the defaults (the paper's six at 1.0).

    Returns:
        (total, log): the scalar total loss (differentiable), and a dict of the
        unweighted value of every given term plus ``"total"``, as floats.

    Raises:
        ValueError: an unknown name, a missing enabled term, a non-scalar or
            non-finite term, or all weights 0.
    """
    weights = LossWeights() if weights is None else weights
    if not isinstance(weights, LossWeights):
        raise ValueError(f"weights must be a LossWeights, got {type(weights).__name__}")
    unknown = sorted(set(terms) - set(LOSS_NAMES))
    if unknown:
        raise ValueError(
            f"unknown loss term(s) {unknown}; known names are {list(LOSS_NAMES)}"
        )
    active = weights.active()
    if not active:
        raise ValueError("every loss weight is 0; enable at least one term")
    missing = [name for name in active if name not in terms]
    if missing:
        raise ValueError(
            f"enabled term(s) {missing} were not given; compute them or set their "
            "weight to 0"
        )
    log: dict[str, float] = {}
    total: torch.Tensor | None = None
    for name in LOSS_NAMES:
        if name not in terms:
            continue
        value = terms[name]
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else None
            raise ValueError(f"loss term {name!r} must be a scalar tensor, got {shape}")
        number = float(value.detach())
        if not math.isfinite(number):
            raise ValueError(f"loss term {name!r} is not finite ({number})")
        log[name] = number
        weight = getattr(weights, name)
        if weight > 0:
            part = weight * value.reshape(())
            total = part if total is None else total + part
    assert total is not None  # at least one active term is present
    log["total"] = float(total.detach())
    return total, log


# ------------------------------------------------------------------------- texts


def _read_phrases(path: str | Path | None, default_name: str, what: str) -> list[str]:
    if path is None:
        text = (
            resources.files("duet_lib")
            .joinpath("texts", default_name)
            .read_text(encoding="utf-8")
        )
        source = f"duet_lib/texts/{default_name}"
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{what} file not found: {path}")
        text = path.read_text(encoding="utf-8")
        source = str(path)
    phrases = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if line and not line.startswith("#"):
            phrases.append(line)
    if not phrases:
        raise ValueError(f"{source} holds no {what} (one per line, # for comments)")
    seen: set[str] = set()
    for phrase in phrases:
        if phrase.lower() in seen:
            raise ValueError(f"{source}: duplicate entry {phrase!r}")
        seen.add(phrase.lower())
    return phrases


def load_neutral_texts(path: str | Path | None = None) -> list[str]:
    """The neutral texts N of L_reg (chapter 05).

    Our own list (the paper's GPT-mined list is not public): short generic
    phrases about a free-hand sketch that name no colour, pattern, material or
    shape, appended after the sketch word as in "a photo of [s] drawn by hand".

    Args:
        path: a text file with one phrase per line (blank lines and lines
            starting with ``#`` are skipped); None reads the committed list
            ``duet_lib/texts/neutral_texts.txt``.

    Returns:
        The phrases, in file order, with whitespace collapsed.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds no phrase or a duplicate.
    """
    return _read_phrases(path, "neutral_texts.txt", "neutral texts")


def load_fixed_prompts(path: str | Path | None = None) -> list[str]:
    """The fixed hand-written prompts P^F of L_TT (chapter 06).

    Standard CLIP-style prompts such as "a photo of", each followed by the sketch
    word in s_F^T = T([P^F; s^w]).

    Args:
        path: a text file with one prompt per line; None reads the committed
            list ``duet_lib/texts/fixed_prompts.txt``.

    Returns:
        The prompts, in file order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds no prompt or a duplicate.
    """
    return _read_phrases(path, "fixed_prompts.txt", "fixed prompts")
