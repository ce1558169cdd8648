"""Tests for duet_lib.models.text_encoding: pseudo-word tokens in the text tower."""

from __future__ import annotations

import pytest
import torch

from duet_lib.models import clip as C
from duet_lib.models import text_encoding as T


@pytest.fixture(scope="module")
def tiny() -> C.ClipBundle:
    return C.load_clip("duet-tiny-conv-96", seed=0)


@pytest.fixture(scope="module")
def vitb32() -> C.ClipBundle:
    return C.load_clip("ViT-B-32", seed=0)


def _word_embedding(bundle: C.ClipBundle, word: str) -> torch.Tensor:
    ids = bundle.tokenizer.encode(word)
    assert len(ids) == 1, f"{word!r} is not a single token"
    return bundle.model.token_embedding.weight[ids[0]].detach()


def test_placeholder_is_one_ordinary_token(tiny: C.ClipBundle) -> None:
    pid = T.placeholder_id(tiny)
    assert pid == tiny.tokenizer.encode(T.PLACEHOLDER)[0]
    assert pid not in (tiny.tokenizer.sot_token_id, tiny.tokenizer.eot_token_id)
    with pytest.raises(ValueError, match="tokens"):
        T.placeholder_id(tiny, "$$ x")


def test_tokenize_templates(tiny: C.ClipBundle) -> None:
    pid = T.placeholder_id(tiny)
    ids = T.tokenize_templates(tiny, ["$ $ $ $ in shiny red", "$, $.", "a $shoe"])
    assert ids.shape == (3, tiny.context_length) and ids.dtype == torch.long
    assert (ids == pid).sum(dim=1).tolist() == [4, 2, 1]
    assert (ids[:, 0] == tiny.tokenizer.sot_token_id).all()
    # The end-of-text token is the largest id of each row (pooling relies on it).
    eot = ids.argmax(dim=-1)
    assert (ids[torch.arange(3), eot] == tiny.tokenizer.eot_token_id).all()
    with pytest.raises(ValueError, match="context length"):
        T.tokenize_templates(tiny, ["$ " + "word " * 40])
    with pytest.raises(ValueError, match="empty"):
        T.tokenize_templates(tiny, ["$ shoe", "  "])


@pytest.mark.parametrize("which", ["tiny", "vitb32"])
def test_inserted_word_embedding_matches_encode_text(
    which: str, request: pytest.FixtureRequest
) -> None:
    bundle: C.ClipBundle = request.getfixturevalue(which)
    model = bundle.model
    pid = T.placeholder_id(bundle)
    ids = T.tokenize_templates(bundle, ["a photo of a $ shoe"])
    pseudo = _word_embedding(bundle, "red").view(1, 1, -1)
    with torch.no_grad():
        reference = model.encode_text(bundle.tokenize(["a photo of a red shoe"]))
        for trim in (True, False):
            got = T.encode_text_with_pseudo_tokens(model, ids, pseudo, pid, trim=trim)
            torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)
        # A different vector changes the result (the insertion is not ignored).
        other = T.encode_text_with_pseudo_tokens(
            model, ids, _word_embedding(bundle, "blue").view(1, 1, -1), pid
        )
    assert not torch.allclose(other, reference, atol=1e-4)


@pytest.mark.parametrize("which", ["tiny", "vitb32"])
def test_several_placeholders_with_values_per_row(
    which: str, request: pytest.FixtureRequest
) -> None:
    bundle: C.ClipBundle = request.getfixturevalue(which)
    templates = ["$ $ photo of a $ chair", "a $ shoe with $ $ laces"]
    fills = [["one", "bright", "wooden"], ["red", "long", "white"]]
    sentences = [
        "one bright photo of a wooden chair",
        "a red shoe with long white laces",
    ]
    ids = T.tokenize_templates(bundle, templates)
    pseudo = torch.stack(
        [torch.stack([_word_embedding(bundle, w) for w in row]) for row in fills]
    )  # (B=2, K=3, d)
    with torch.no_grad():
        got = T.encode_text_with_pseudo_tokens(
            bundle.model, ids, pseudo, T.placeholder_id(bundle)
        )
        reference = bundle.model.encode_text(bundle.tokenize(sentences))
    assert got.shape == (2, bundle.embed_dim)
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)


def test_shared_pseudo_tokens_broadcast(tiny: C.ClipBundle) -> None:
    gen = torch.Generator().manual_seed(0)
    pid = T.placeholder_id(tiny)
    ids = T.tokenize_templates(tiny, ["$ $ $ $", "$ $ $ $ in red"])
    shared = torch.randn(4, tiny.token_dim, generator=gen)
    with torch.no_grad():
        a = T.encode_text_with_pseudo_tokens(tiny.model, ids, shared, pid)
        b = T.encode_text_with_pseudo_tokens(
            tiny.model, ids, shared.expand(2, -1, -1), pid
        )
    torch.testing.assert_close(a, b)


def test_placeholder_count_mismatch_is_an_error(tiny: C.ClipBundle) -> None:
    pid = T.placeholder_id(tiny)
    ids = T.tokenize_templates(tiny, ["$ $ shoe", "$ shoe"])
    with pytest.raises(ValueError, match="row 1 holds 1"):
        T.encode_text_with_pseudo_tokens(
            tiny.model, ids, torch.zeros(2, 2, tiny.token_dim), pid
        )
    with pytest.raises(ValueError, match="pseudo must be"):
        T.encode_text_with_pseudo_tokens(
            tiny.model, ids[:1], torch.zeros(1, 2, tiny.token_dim + 1), pid
        )


def test_gradient_reaches_pseudo_tokens_through_frozen_tower() -> None:
    bundle = C.load_clip("duet-tiny-conv-96", seed=1)
    model = bundle.model
    model.requires_grad_(False)
    pid = T.placeholder_id(bundle)
    ids = T.tokenize_templates(bundle, ["$ $ $ $ in red", "$ $ $ $ with laces"])
    gen = torch.Generator().manual_seed(0)
    pseudo = torch.randn(2, 4, bundle.token_dim, generator=gen, requires_grad=True)
    out = T.encode_text_with_pseudo_tokens(model, ids, pseudo, pid, normalize=True)
    target = torch.randn(2, bundle.embed_dim, generator=gen)
    loss = (out * target).sum()
    loss.backward()
    assert pseudo.grad is not None and torch.isfinite(pseudo.grad).all()
    assert (pseudo.grad.abs().sum(dim=-1) > 0).all()  # every inserted vector
    assert all(p.grad is None for p in model.parameters())
    # The token table was not modified in place.
    assert not model.token_embedding.weight.requires_grad


def test_encode_text_and_trimming(tiny: C.ClipBundle) -> None:
    sentences = ["a red shoe", "a tall wooden chair with four legs on grass"]
    with torch.no_grad():
        ref = tiny.model.encode_text(tiny.tokenize(sentences))
        got = T.encode_text(tiny, sentences)
        ids = tiny.tokenize(sentences)
        untrimmed = T.encode_token_ids(tiny.model, ids, trim=False)
        unit = T.encode_text(tiny, sentences, normalize=True)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(untrimmed, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(2))
    with pytest.raises(ValueError, match="empty"):
        T.encode_text(tiny, [""])


def test_length_buckets_give_the_same_embeddings_in_the_same_order(
    tiny: C.ClipBundle,
) -> None:
    sentences = [
        "a tall wooden chair with four legs and a slatted back on grass",
        "a red shoe",
        "a photo of a chair",
        "a blue striped shoe with a zip on a tiled floor",
        "grass",
    ]
    ids = tiny.tokenize(sentences)
    with torch.no_grad():
        ref = tiny.model.encode_text(ids)
        for buckets in (2, 3, 5, 9):
            got = T.encode_token_ids(tiny.model, ids, buckets=buckets)
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        # buckets only regroup rows of a trimmed pass; gradients still reach every row
    embedded = tiny.model.token_embedding(ids).detach().requires_grad_(True)
    T.encode_token_embeddings(tiny.model, embedded, ids, buckets=2).sum().backward()
    assert embedded.grad is not None and (embedded.grad.abs().sum((1, 2)) > 0).all()
    with pytest.raises(ValueError, match="buckets must be a positive integer"):
        T.encode_token_ids(tiny.model, ids, buckets=0)
