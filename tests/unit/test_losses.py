"""Tests of duet_lib.losses: hand-computed values, margins, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from duet_lib.losses import (
    LOSS_NAMES,
    LossWeights,
    compositionality_loss,
    cosine_distance,
    load_fixed_prompts,
    load_neutral_texts,
    neutral_regulariser,
    prompt_text_loss,
    reconstruction_loss,
    region_pool,
    region_similarity,
    region_triplet_loss,
    total_loss,
    triplet_loss,
)

R2 = 1.0 / math.sqrt(2.0)  # cos of 45 degrees


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def close(value: torch.Tensor, expected: float, tol: float = 1e-9) -> None:
    assert value.ndim == 0
    assert abs(float(value) - expected) < tol, (float(value), expected)


def xent(logits: list[float], target: int) -> float:
    """Cross-entropy of one row, by hand."""
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


# ---------------------------------------------------------------- cosine distance


def test_cosine_distance_values_and_scale_invariance():
    a = t([2.0, 0.0], [1.0, 0.0], [0.0, 5.0])
    b = t([0.0, 3.0], [1.0, 1.0], [0.0, -1.0])
    d = cosine_distance(a, b)
    assert d.shape == (3,)
    assert torch.allclose(d, t(1.0, 1 - R2, 2.0))


def test_cosine_distance_broadcasts():
    a = t([1.0, 0.0], [0.0, 1.0]).unsqueeze(1)  # (2, 1, 2)
    b = t([1.0, 0.0], [1.0, 1.0], [-1.0, 0.0])  # (3, 2)
    d = cosine_distance(a, b)
    assert d.shape == (2, 3)
    assert torch.allclose(d, t([0.0, 1 - R2, 2.0], [1.0, 1 - R2, 1.0]))


def test_cosine_distance_errors():
    with pytest.raises(ValueError, match="width"):
        cosine_distance(torch.ones(2, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="broadcast"):
        cosine_distance(torch.ones(2, 3), torch.ones(5, 3))
    with pytest.raises(ValueError, match="floating"):
        cosine_distance(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3))


# ------------------------------------------------------------------------ L_trip


def test_triplet_given_single_negative_and_margin():
    anchor, pos, neg = t([1.0, 0.0]), t([1.0, 1.0]), t([0.0, 1.0])
    # delta(a, p) = 1 - 1/sqrt2, delta(a, n) = 1
    close(triplet_loss(anchor, pos, neg, margin=0.2), 0.0)
    close(triplet_loss(anchor, pos, neg, margin=0.8), 0.8 + (1 - R2) - 1.0)


def test_triplet_given_several_negatives_mean_and_hardest():
    anchor, pos = t([1.0, 0.0]), t([1.0, 0.0])
    negs = t([0.0, 1.0], [1.0, 1.0]).unsqueeze(0)  # (B=1, M=2, E=2)
    # hinge per negative: max(0, 0.5 - 1) = 0 and 0.5 - (1 - 1/sqrt2)
    second = 0.5 - (1 - R2)
    close(triplet_loss(anchor, pos, negs, margin=0.5), second / 2)
    close(
        triplet_loss(anchor, pos, negs, margin=0.5, negative_reduction="hardest"),
        second,
    )


BATCH_A = t([1.0, 0.0], [0.0, 1.0], [-1.0, 0.0])
BATCH_P = t([1.0, 0.0], [1.0, 1.0], [0.0, 1.0])
# distance matrix delta(a_i, p_j):
#   [[0, 1 - r, 1], [1, 1 - r, 0], [2, 1 + r, 1]]   (r = 1/sqrt2)


def test_triplet_batch_hardest_by_hand():
    loss = triplet_loss(BATCH_A, BATCH_P, margin=0.2, mining="batch_hardest")
    # row 0: 0.2 + 0 - (1 - r) < 0; row 1: 0.2 + (1 - r) - 0; row 2: 0.2 + 1 - (1 + r) < 0
    close(loss, (0.2 + 1 - R2) / 3)


def test_triplet_batch_hardest_respects_labels():
    labels = torch.tensor([0, 1, 1])
    # row 1 may only use photo 0 (distance 1), row 2 only photo 0 (distance 2)
    loss = triplet_loss(BATCH_A, BATCH_P, mining="batch_hardest", labels=labels)
    close(loss, 0.0)
    loss = triplet_loss(
        BATCH_A, BATCH_P, margin=1.0, mining="batch_hardest", labels=labels
    )
    expected = (max(0, 1 + 0 - (1 - R2)) + max(0, 1 + (1 - R2) - 1) + 0.0) / 3
    close(loss, expected)


def test_triplet_infonce_by_hand():
    loss = triplet_loss(BATCH_A, BATCH_P, form="infonce", tau=1.0)
    rows = [[1.0, R2, 0.0], [0.0, R2, 1.0], [-1.0, -R2, 0.0]]
    close(loss, sum(xent(r, i) for i, r in enumerate(rows)) / 3)
    # tau sharpens the logits
    loss = triplet_loss(BATCH_A, BATCH_P, form="infonce", tau=0.5)
    close(loss, sum(xent([v / 0.5 for v in r], i) for i, r in enumerate(rows)) / 3)


def test_triplet_infonce_labels_and_given_negatives():
    labels = torch.tensor([0, 1, 1])
    loss = triplet_loss(BATCH_A, BATCH_P, form="infonce", tau=1.0, labels=labels)
    expected = (xent([1.0, R2, 0.0], 0) + xent([0.0, R2], 1) + xent([-1.0, 0.0], 1)) / 3
    close(loss, expected)
    neg = t([0.0, -1.0], [1.0, 0.0], [-1.0, 0.0])  # one extra negative per anchor
    loss = triplet_loss(BATCH_A, BATCH_P, neg, form="infonce", tau=1.0)
    rows = [[1.0, R2, 0.0, 0.0], [0.0, R2, 1.0, 0.0], [-1.0, -R2, 0.0, 1.0]]
    close(loss, sum(xent(r, i) for i, r in enumerate(rows)) / 3)


def test_triplet_errors():
    a = torch.randn(4, 8)
    with pytest.raises(ValueError, match="share one"):
        triplet_loss(a, torch.randn(4, 9), torch.randn(4, 8))
    with pytest.raises(ValueError, match="needs negatives"):
        triplet_loss(a, torch.randn(4, 8))
    with pytest.raises(ValueError, match=r"\(B=4"):
        triplet_loss(a, torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match="unknown mining"):
        triplet_loss(a, a, a, mining="random")
    with pytest.raises(ValueError, match="margin"):
        triplet_loss(a, a, a, margin=-0.1)
    with pytest.raises(ValueError, match="another photo|other photo"):
        triplet_loss(a[:1], a[:1], mining="batch_hardest")
    with pytest.raises(ValueError, match="at least one negative"):
        triplet_loss(a[:1], a[:1], form="infonce")
    with pytest.raises(ValueError, match="labels"):
        triplet_loss(a, a, mining="batch_hardest", labels=torch.zeros(3))


# ------------------------------------------------------------------------ L_comp


def test_comp_hinge_and_pull_by_hand():
    p = t([1.0, 0.0])
    # the composed query already on the photo: satisfied, zero
    close(compositionality_loss(t([1.0, 0.0]), t([0.0, 1.0]), p, form="hinge"), 0.0)
    # composed query further than the sketch query: mu + 1 - (1 - r)
    loss = compositionality_loss(t([0.0, 1.0]), t([1.0, 1.0]), p, form="hinge")
    close(loss, 0.2 + 1.0 - (1 - R2))
    loss = compositionality_loss(t([0.0, 1.0]), None, p, form="pull")
    close(loss, 1.0)


def test_comp_triplet_and_infonce_delegate_to_triplet():
    g = torch.Generator().manual_seed(0)
    qd, p = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g)
    negs = torch.randn(5, 3, 6, generator=g)
    loss = compositionality_loss(
        qd, None, p, margin=0.3, form="triplet", negatives=negs
    )
    d_pos = cosine_distance(qd, p)
    d_neg = cosine_distance(qd[:, None], negs)
    expected = F.relu(0.3 + d_pos[:, None] - d_neg).mean()
    assert torch.allclose(loss, expected)
    # without negatives the triplet mines the hardest other batch photo
    loss = compositionality_loss(qd, None, p, form="triplet")
    assert torch.allclose(loss, triplet_loss(qd, p, mining="batch_hardest"))
    # default form is InfoNCE over batch photos plus hard negatives
    loss = compositionality_loss(qd, torch.randn(5, 6), p, negatives=negs, tau=0.1)
    logits = torch.cat(
        [F.normalize(qd, dim=-1) @ F.normalize(p, dim=-1).T, 1 - d_neg], dim=1
    )
    expected = F.cross_entropy(logits / 0.1, torch.arange(5))
    assert torch.allclose(loss, expected, atol=1e-6)


def test_comp_errors_and_detached_reference():
    q = torch.randn(3, 4, requires_grad=True)
    s = torch.randn(3, 4, requires_grad=True)
    p = torch.randn(3, 4)
    with pytest.raises(ValueError, match="query_sketch"):
        compositionality_loss(q, None, p, form="hinge")
    with pytest.raises(ValueError, match="unknown form"):
        compositionality_loss(q, s, p, form="cosine")
    with pytest.raises(ValueError, match="share one"):
        compositionality_loss(q, s[:2], p)
    loss = compositionality_loss(
        q, s, p, margin=2.0, form="hinge", detach_reference=True
    )
    loss.backward()
    assert s.grad is None and q.grad is not None


def _factor_problem(seed: int, dim: int = 32, n_shapes: int = 8, n_apps: int = 4):
    """Photos = shape + appearance; sketches = shape + a common sketch style.

    Returns sketch embeddings s (B, E), their photos p (B, E) and two hard
    negatives per photo (B, 2, E): same shape in another appearance, another
    shape in the same appearance.
    """
    g = torch.Generator().manual_seed(seed)
    shapes = torch.randn(n_shapes, dim, generator=g)
    apps = torch.randn(n_apps, dim, generator=g)
    style = torch.randn(dim, generator=g)

    def photo(k, c):
        return F.normalize(
            shapes[k] + apps[c] + 0.2 * torch.randn(dim, generator=g), dim=0
        )

    sketches, photos, negs = [], [], []
    for k in range(n_shapes):
        c = k % n_apps
        sketches.append(
            F.normalize(shapes[k] + style + 0.2 * torch.randn(dim, generator=g), dim=0)
        )
        photos.append(photo(k, c))
        negs.append(
            torch.stack([photo(k, (c + 1) % n_apps), photo((k + 1) % n_shapes, c)])
        )
    return torch.stack(sketches), torch.stack(photos), torch.stack(negs)


def test_comp_hinge_trap_static():
    """With Delta = p+ - s from the true photo, the hinge is already zero.

    A composed query only 30 % of the way from the sketch to its photo already
    beats the sketch-only query by more than the margin: the hinge and its
    gradient vanish. The default (InfoNCE with hard negatives) still has a
    clear loss and gradient, which the batch alone would not give.
    """
    s, p, negs = _factor_problem(seed=3)
    query_delta = (s + 0.3 * (p - s)).requires_grad_(True)
    query_sketch = s.clone()

    hinge = compositionality_loss(query_delta, query_sketch, p, form="hinge")
    hinge.backward()
    assert float(hinge.detach()) == 0.0
    assert float(query_delta.grad.abs().max()) == 0.0  # nothing to learn

    query_delta.grad = None
    default = compositionality_loss(query_delta, query_sketch, p, negatives=negs)
    default.backward()
    assert float(default.detach()) > 0.05
    assert float(query_delta.grad.norm()) > 0.1
    batch_only = compositionality_loss(query_delta, query_sketch, p)
    assert float(default.detach()) > 10 * float(batch_only.detach())


def test_comp_hinge_trap_training():
    """A learned composer stops learning under the hinge, not under the default.

    Plain gradient descent (no momentum) on a linear composer: once the hinge
    is met its gradient is exactly zero and the parameters freeze; the default
    still has a gradient after the same number of steps and is still falling.
    """
    s, p, negs = _factor_problem(seed=3)
    delta = p - s
    dim = s.shape[1]

    def train(form: str, steps: int = 40) -> list[tuple[float, float]]:
        g = torch.Generator().manual_seed(4)
        w_s = torch.nn.Parameter(
            torch.eye(dim) + 0.01 * torch.randn(dim, dim, generator=g)
        )
        w_d = torch.nn.Parameter(0.01 * torch.randn(dim, dim, generator=g))
        opt = torch.optim.SGD([w_s, w_d], lr=0.5)
        history = []
        for _ in range(steps):
            query_delta = s @ w_s.T + delta @ w_d.T
            loss = compositionality_loss(query_delta, s, p, form=form, negatives=negs)
            opt.zero_grad()
            loss.backward()
            grad = float(w_s.grad.norm() + w_d.grad.norm())
            history.append((float(loss.detach()), grad))
            opt.step()
        return history

    hinge = train("hinge")
    assert hinge[0][0] > 0.1  # the composer starts no better than the sketch query
    first_zero = next(i for i, (loss, _) in enumerate(hinge) if loss == 0.0)
    assert first_zero < 30
    assert all(loss == 0.0 and grad == 0.0 for loss, grad in hinge[first_zero:])

    default = train("infonce")
    assert default[-1][0] > 0.0 and default[-1][1] > 1e-3
    assert default[-1][0] < default[-10][0] < default[0][0]


# ------------------------------------------------------------------------- L_reg


def test_neutral_regulariser_by_hand():
    p = t([1.0, 0.0])
    # neutral query worse than the sketch query: penalised by the cosine gap
    close(neutral_regulariser(t([1.0, 1.0]), t([1.0, 0.0]), p), 1 - R2)
    # neutral query better: hinge is zero, the symmetric form is not
    close(neutral_regulariser(t([1.0, 0.0]), t([1.0, 1.0]), p), 0.0)
    close(
        neutral_regulariser(t([1.0, 0.0]), t([1.0, 1.0]), p, form="symmetric"), 1 - R2
    )
    # K = 2 neutral texts per sample are averaged
    neutral = t([1.0, 1.0], [0.0, 1.0]).unsqueeze(0)  # (1, 2, 2)
    close(neutral_regulariser(neutral, t([1.0, 0.0]), p), ((1 - R2) + 1.0) / 2)


def test_neutral_regulariser_errors():
    with pytest.raises(ValueError, match="unknown form"):
        neutral_regulariser(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3), "l1")
    with pytest.raises(ValueError, match="query_neutral"):
        neutral_regulariser(torch.ones(3, 3), torch.ones(2, 3), torch.ones(2, 3))


# -------------------------------------------------------------------------- L_TT


def test_prompt_text_cosine_averages_normalised_prompts():
    learned = t([1.0, 0.0])
    fixed = t([5.0, 0.0], [0.0, 1.0]).unsqueeze(0)  # (1, F=2, 2): norms must not matter
    close(prompt_text_loss(learned, fixed, form="cosine"), 1 - R2)
    close(prompt_text_loss(learned, t([3.0, 0.0]), form="cosine"), 0.0)


def test_prompt_text_infonce_by_hand():
    learned = t([1.0, 0.0], [0.0, 1.0])
    fixed = t([1.0, 0.0], [1.0, 1.0])
    loss = prompt_text_loss(learned, fixed, tau=1.0)
    close(loss, (xent([1.0, R2], 0) + xent([0.0, R2], 1)) / 2)


def test_prompt_text_errors():
    with pytest.raises(ValueError, match="batch of at least 2"):
        prompt_text_loss(torch.ones(1, 4), torch.ones(1, 4))
    with pytest.raises(ValueError, match="query_fixed"):
        prompt_text_loss(torch.ones(2, 4), torch.ones(3, 2, 4))
    with pytest.raises(ValueError, match="tau"):
        prompt_text_loss(torch.ones(2, 4), torch.ones(2, 4), tau=0.0)


# --------------------------------------------------------- region pooling and L_RT

E1 = 1.0 / (1.0 + math.exp(-1.0))  # softmax([1, 0])[0]


def test_region_pool_attention_and_max_by_hand():
    query = t([1.0, 0.0])
    patches = t([3.0, 0.0], [0.0, 0.5]).unsqueeze(0)  # (1, N=2, 2), norms irrelevant
    pooled, weights = region_pool(query, patches, tau=1.0, return_weights=True)
    assert torch.allclose(weights, t([E1, 1 - E1]))
    expected = F.normalize(t([E1, 1 - E1]), dim=-1)
    assert torch.allclose(pooled, expected)
    pooled = region_pool(query, patches, form="max")
    assert torch.allclose(pooled, t([1.0, 0.0]))
    # a low temperature approaches the max form
    pooled = region_pool(query, patches, tau=0.01)
    assert torch.allclose(pooled, t([1.0, 0.0]), atol=1e-6)


def test_region_pool_pairwise_matches_paired():
    g = torch.Generator().manual_seed(0)
    queries = torch.randn(3, 8, generator=g)
    patches = torch.randn(4, 5, 8, generator=g)
    pooled = region_pool(queries, patches, tau=0.2, pairwise=True)
    assert pooled.shape == (3, 4, 8)
    for qi in range(3):
        for gi in range(4):
            one = region_pool(queries[qi : qi + 1], patches[gi : gi + 1], tau=0.2)
            assert torch.allclose(pooled[qi, gi], one[0], atol=1e-6)
    assert torch.allclose(pooled.norm(dim=-1), torch.ones(3, 4))


@pytest.mark.parametrize("form", ["attention", "max"])
@pytest.mark.parametrize("chunk", [1, 2, 128])
def test_region_similarity_matches_pooling(form, chunk):
    g = torch.Generator().manual_seed(1)
    queries = torch.randn(5, 8, generator=g)
    patches = torch.randn(7, 6, 8, generator=g)
    sim = region_similarity(queries, patches, tau=0.1, form=form, chunk_size=chunk)
    assert sim.shape == (5, 7)
    pooled = region_pool(queries, patches, tau=0.1, form=form, pairwise=True)
    expected = torch.einsum("qe,qge->qg", F.normalize(queries, dim=-1), pooled)
    assert torch.allclose(sim, expected, atol=1e-5)


def test_region_triplet_by_hand():
    query = t([1.0, 0.0])
    pos = t([1.0, 0.0], [0.0, 1.0]).unsqueeze(0)
    neg = t([0.0, 1.0], [-1.0, 0.0]).unsqueeze(0)
    # p_s+ = normalise([e, 1 - e]), p_s- = normalise([-(1 - e), e]), e = sigmoid(1)
    norm = math.hypot(E1, 1 - E1)
    d_pos = 1 - E1 / norm
    d_neg = 1 + (1 - E1) / norm
    close(region_triplet_loss(query, pos, neg, margin=0.2, tau=1.0), 0.0)
    close(
        region_triplet_loss(query, pos, neg, margin=1.5, tau=1.0),
        1.5 + d_pos - d_neg,
    )
    # (B, M, N, E) with M = 2: the same negative twice gives the same mean
    close(
        region_triplet_loss(
            query, pos, torch.stack([neg, neg], 1), margin=1.5, tau=1.0
        ),
        1.5 + d_pos - d_neg,
    )


def test_region_triplet_batch_hardest_matches_explicit():
    g = torch.Generator().manual_seed(2)
    query = torch.randn(4, 8, generator=g)
    patches = torch.randn(4, 5, 8, generator=g)
    loss = region_triplet_loss(query, patches, None, margin=0.5, tau=0.3)
    expected = []
    for i in range(4):
        dist = [
            float(
                cosine_distance(
                    query[i],
                    region_pool(query[i : i + 1], patches[j : j + 1], tau=0.3)[0],
                )
            )
            for j in range(4)
        ]
        hardest = min(d for j, d in enumerate(dist) if j != i)
        expected.append(max(0.0, 0.5 + dist[i] - hardest))
    close(loss, sum(expected) / 4, tol=1e-5)


def test_region_errors():
    with pytest.raises(ValueError, match="width"):
        region_pool(torch.ones(2, 4), torch.ones(2, 3, 5))
    with pytest.raises(ValueError, match="batch size"):
        region_pool(torch.ones(2, 4), torch.ones(3, 3, 4))
    with pytest.raises(ValueError, match="unknown form"):
        region_pool(torch.ones(2, 4), torch.ones(2, 3, 4), form="mean")
    with pytest.raises(ValueError, match="chunk_size"):
        region_similarity(torch.ones(2, 4), torch.ones(3, 3, 4), chunk_size=0)
    with pytest.raises(ValueError, match="neg_patches"):
        region_triplet_loss(torch.ones(2, 4), torch.ones(2, 3, 4), torch.ones(3, 3, 4))
    with pytest.raises(ValueError, match="another photo"):
        region_triplet_loss(torch.ones(1, 4), torch.ones(1, 3, 4))


# ------------------------------------------------------------------------- L_rec


def test_reconstruction_l1_l2_and_resizing():
    zeros, ones = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    target = torch.full((2, 3, 16, 16), 0.25)  # resized to 4x4 inside
    close(reconstruction_loss(zeros, ones, target), 0.25 + 0.75, tol=1e-6)
    close(
        reconstruction_loss(zeros, ones, target, form="l2"), 0.0625 + 0.5625, tol=1e-6
    )
    close(reconstruction_loss(zeros, None, target), 0.25, tol=1e-6)


def test_reconstruction_resizes_like_interpolate():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(1, 3, 8, 8, generator=g)
    pred = torch.rand(1, 3, 4, 4, generator=g)
    small = F.interpolate(target, size=(4, 4), mode="bilinear", antialias=True)
    expected = (pred - small).abs().mean()
    assert torch.allclose(reconstruction_loss(pred, None, target), expected)


def test_reconstruction_grey_sketch_target():
    target = torch.zeros(1, 3, 2, 2)
    target[:, 0] = 1.0  # pure red: luma 0.299
    decoded_sketch = torch.full((1, 3, 2, 2), 0.299)
    loss = reconstruction_loss(
        target.clone(), decoded_sketch, target, sketch_target="grey"
    )
    close(loss, 0.0, tol=1e-6)
    loss = reconstruction_loss(target.clone(), decoded_sketch, target)
    close(loss, (0.701 + 0.299 + 0.299) / 3, tol=1e-6)


def test_reconstruction_errors():
    img = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reconstruction_loss(img, img, img * 4 - 2)  # CLIP-normalised photos
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        reconstruction_loss(img, img, torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        reconstruction_loss(img, torch.rand(2, 3, 8, 8), img)
    with pytest.raises(ValueError, match="images"):
        reconstruction_loss(img, img, torch.rand(3, 3, 4, 4))
    with pytest.raises(ValueError, match="unknown sketch_target"):
        reconstruction_loss(img, img, img, sketch_target="edges")


# ----------------------------------------------------------------------- gradients


def test_every_loss_passes_gradients():
    g = torch.Generator().manual_seed(5)

    def leaf(*shape):
        return torch.randn(*shape, generator=g).requires_grad_(True)

    a, p, n, q = leaf(4, 6), leaf(4, 6), leaf(4, 2, 6), leaf(4, 6)
    patches, neg_patches = leaf(4, 5, 6), leaf(4, 5, 6)
    raw = leaf(4, 3, 8, 8)
    decoded = torch.sigmoid(raw)
    losses = {
        "trip": triplet_loss(a, p, n, margin=5.0),
        "trip_batch": triplet_loss(a, p, margin=5.0, mining="batch_hardest"),
        "trip_nce": triplet_loss(a, p, form="infonce"),
        "comp": compositionality_loss(q, a, p, negatives=n),
        "comp_hinge": compositionality_loss(q, a, p, margin=5.0, form="hinge"),
        "reg": neutral_regulariser(q, a, p, form="symmetric"),
        "tt": prompt_text_loss(a, q),
        "rt": region_triplet_loss(a, patches, neg_patches, margin=5.0),
        "rec": reconstruction_loss(decoded, decoded, torch.rand(4, 3, 16, 16)),
        # L_words is L_comp's function with a words query in place of Delta^w
        "words": compositionality_loss(q, a, p, negatives=n),
    }
    total, log = total_loss(
        {k: losses[k] for k in LOSS_NAMES}, LossWeights(trip=1.0, rec=0.5)
    )
    total.backward()
    for name, tensor in [
        ("a", a),
        ("p", p),
        ("q", q),
        ("patches", patches),
        ("raw", raw),
    ]:
        assert tensor.grad is not None and float(tensor.grad.abs().sum()) > 0, name
    for name in ("trip_batch", "trip_nce", "comp_hinge"):
        x = leaf(4, 6)
        value = {
            "trip_batch": lambda x: triplet_loss(
                x, p, margin=5.0, mining="batch_hardest"
            ),
            "trip_nce": lambda x: triplet_loss(x, p, form="infonce"),
            "comp_hinge": lambda x: compositionality_loss(
                x, a, p, margin=5.0, form="hinge"
            ),
        }[name](x)
        value.backward()
        assert float(x.grad.abs().sum()) > 0, name


# -------------------------------------------------------------------------- total


def test_total_loss_weighted_sum_and_log():
    terms = {
        "trip": torch.tensor(1.0),
        "comp": torch.tensor(2.0),
        "reg": torch.tensor(4.0),
    }
    weights = LossWeights(trip=1.0, comp=0.5, reg=0.0, tt=0.0, rt=0.0, rec=0.0)
    total, log = total_loss(terms, weights)
    close(total, 2.0)
    assert log == {"trip": 1.0, "comp": 2.0, "reg": 4.0, "total": 2.0}


def test_total_loss_errors():
    full = {name: torch.tensor(1.0) for name in LOSS_NAMES}
    total, _ = total_loss(full)
    close(total, 6.0)
    with pytest.raises(ValueError, match="not given"):
        total_loss({"trip": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="unknown loss term"):
        total_loss({**full, "kl": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="scalar"):
        total_loss({**full, "rec": torch.ones(3)})
    with pytest.raises(ValueError, match="not finite"):
        total_loss({**full, "rec": torch.tensor(float("nan"))})
    with pytest.raises(ValueError, match="every loss weight is 0"):
        total_loss({}, LossWeights(0, 0, 0, 0, 0, 0))


def test_loss_weights_validation_and_switches():
    weights = LossWeights.from_dict({"rec": 0.0, "comp": 2.0})
    assert weights.active() == ("trip", "comp", "reg", "tt", "rt")
    assert not weights.enabled("rec") and weights.enabled("comp")
    assert weights.as_dict()["comp"] == 2.0
    with pytest.raises(ValueError, match="unknown loss name"):
        LossWeights.from_dict({"recon": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        LossWeights(trip=-1.0)
    with pytest.raises(ValueError, match="number"):
        LossWeights(trip=True)
    with pytest.raises(ValueError, match="unknown loss name"):
        weights.enabled("kl")


# -------------------------------------------------------------------------- texts

BANNED = {
    # colours
    "black",
    "white",
    "red",
    "green",
    "blue",
    "yellow",
    "brown",
    "grey",
    "gray",
    "pink",
    "purple",
    "orange",
    "beige",
    "navy",
    "colour",
    "color",
    "colourful",
    "dark",
    "bright",
    "pale",
    # patterns
    "striped",
    "stripes",
    "dotted",
    "dots",
    "checked",
    "plaid",
    "floral",
    "plain",
    "pattern",
    "patterned",
    "spotted",
    # materials
    "leather",
    "wood",
    "wooden",
    "metal",
    "metallic",
    "plastic",
    "fabric",
    "suede",
    "canvas",
    "rubber",
    "velvet",
    "cotton",
    "shiny",
    "glossy",
    "matte",
    # shapes and sizes
    "round",
    "rounded",
    "square",
    "pointed",
    "curved",
    "straight",
    "tall",
    "short",
    "long",
    "wide",
    "narrow",
    "thin",
    "thick",
    "high",
    "low",
    "flat",
    "big",
    "small",
    "large",
    # object categories
    "shoe",
    "shoes",
    "boot",
    "sneaker",
    "chair",
    "seat",
    "stool",
}


def test_neutral_texts_are_generic_short_phrases():
    phrases = load_neutral_texts()
    assert 30 <= len(phrases) <= 50
    for phrase in phrases:
        words = phrase.lower().split()
        assert 3 <= len(words) <= 5, phrase
        assert not (set(words) & BANNED), phrase


def test_fixed_prompts():
    prompts = load_fixed_prompts()
    assert 5 <= len(prompts) <= 10
    assert prompts[0] == "a photo of"
    assert all(not p.endswith((".", ",")) for p in prompts)


def test_text_loaders_read_custom_files_and_fail_clearly(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("# comment\n\n drawn  by hand \nwith quick strokes\n")
    assert load_neutral_texts(path) == ["drawn by hand", "with quick strokes"]
    with pytest.raises(FileNotFoundError, match="not found"):
        load_fixed_prompts(tmp_path / "missing.txt")
    path.write_text("# only a comment\n")
    with pytest.raises(ValueError, match="holds no"):
        load_fixed_prompts(path)
    path.write_text("a photo of\nA photo of\n")
    with pytest.raises(ValueError, match="duplicate"):
        load_fixed_prompts(path)
