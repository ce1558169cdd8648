"""Tests for duet_lib.models.duet: trainable set, query builders, batched text pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from duet_lib.models.clip import load_clip
from duet_lib.models.duet import DeltaOptions, DuetModel, QuerySpec
from duet_lib.models.text_encoding import encode_text

B = 3


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> DuetModel:
    return DuetModel(load_clip("duet-tiny-conv-96", seed=0), seed=0).eval()


def _visual_layernorm_names(clip: nn.Module, prefix: str = "clip.visual.") -> set[str]:
    names = set()
    for mod_name, module in clip.visual.named_modules():
        if isinstance(module, nn.LayerNorm):
            for p_name, _ in module.named_parameters(recurse=False):
                names.add(f"{prefix}{mod_name}.{p_name}")
    return names


def _word(model: DuetModel, word: str) -> torch.Tensor:
    ids = model.bundle.tokenizer.encode(word)
    assert len(ids) == 1, word
    return model.clip.token_embedding.weight[ids[0]].detach()


def _assert_slot_counts(
    model: DuetModel, word: torch.Tensor, sketch: int, delta: int, fixed: int
) -> None:
    """Every query kind's rows hold the expected number of placeholders, and as
    many vectors fill them (neutral and text rows have the sketch query's slots)."""
    pid = model.placeholder
    for spec, k in (
        (model.spec_sketch(word), sketch),
        (model.spec_delta(word, word), delta),
        (model.spec_fixed(word, 0), fixed),
        (model.spec_neutral(word, 0), sketch),
        (model.spec_text(word, "in red"), sketch),
    ):
        assert (spec.ids == pid).sum(dim=1).tolist() == [k] * B
        assert spec.pseudo.shape == (B, k, model.bundle.token_dim)


def test_trainable_names_are_visual_layernorms_and_our_modules(
    model: DuetModel,
) -> None:
    expected = _visual_layernorm_names(model.clip)
    for prefix, module in (
        ("converter.", model.converter),
        ("prompt.", model.prompt),
        ("decoder.", model.decoder),
    ):
        expected |= {prefix + n for n, _ in module.named_parameters()}
    names = model.trainable_parameter_names()
    assert names == sorted(expected)
    assert "prompt.tokens" in names
    assert len(_visual_layernorm_names(model.clip)) == 2 * (
        2 + 2 * 4
    )  # pre, post, 4 x 2
    assert not any(".transformer." in n and "visual" not in n for n in names)
    assert not any("token_embedding" in n or "text_projection" in n for n in names)
    groups = model.parameter_groups()
    assert sum(p.numel() for g in groups.values() for p in g) == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )


def test_unfreezing_last_block_is_an_explicit_option() -> None:
    m = DuetModel(load_clip("duet-tiny-conv-96", seed=0), unfreeze_last_visual_blocks=1)
    extra = set(m.trainable_parameter_names()) - set(
        DuetModel(load_clip("duet-tiny-conv-96", seed=0)).trainable_parameter_names()
    )
    assert extra and all(
        n.startswith("clip.visual.transformer.resblocks.3.") for n in extra
    )
    assert any(n.endswith("attn.in_proj_weight") for n in extra)


def test_prompt_starts_at_a_photo_of_and_token_norm(model: DuetModel) -> None:
    table = model.clip.token_embedding.weight
    ids = model.bundle.tokenizer.encode("a photo of")
    torch.testing.assert_close(model.prompt.tokens.detach(), table[ids].detach())
    assert model.token_norm == pytest.approx(float(table.norm(dim=1).mean()), rel=1e-6)
    with pytest.raises(ValueError, match="tokens"):
        DuetModel(load_clip("duet-tiny-conv-96", seed=0), prompt_init="a photo")


def test_query_builder_shapes(model: DuetModel) -> None:
    e, f = model.bundle.embed_dim, len(model.fixed_prompts)
    s = torch.randn(B, e)
    with torch.no_grad():
        assert model.query_sketch(s).shape == (B, e)
        assert model.query_fixed(s).shape == (B, f, e)
        assert model.query_fixed(s, 2).shape == (B, e)
        assert model.query_fixed(s, torch.tensor([0, 1, 2])).shape == (B, e)
        assert model.query_delta(s, model.delta(s, torch.randn(B, e))).shape == (B, e)
        assert model.query_neutral(s, torch.tensor([0, 3, 1])).shape == (B, e)
        assert model.query_neutral(s, torch.zeros(B, 2, dtype=torch.long)).shape == (
            B,
            2,
            e,
        )
        assert model.query_text(s, ["in red", "striped", "on sand"]).shape == (B, e)
    _assert_slot_counts(
        model, torch.randn(B, model.bundle.token_dim), sketch=4, delta=5, fixed=1
    )
    with pytest.raises(ValueError, match=r"\[0, "):
        model.query_fixed(s, f)


def test_real_words_through_the_placeholders_equal_plain_text(model: DuetModel) -> None:
    """With s^w = the embedding of "shoe" (and P^L still at "a photo of"), every
    kind of query equals encode_text of the sentence with real words."""
    fresh = DuetModel(model.bundle, seed=0)  # P^L at its "a photo of" init
    shoe = _word(fresh, "shoe").expand(2, -1)
    red = _word(fresh, "red").expand(2, -1)
    specs = {
        "sketch": fresh.spec_sketch(shoe),
        "fixed": fresh.spec_fixed(shoe, 1),
        "delta": fresh.spec_delta(shoe, red),
        "neutral": fresh.spec_neutral(shoe, 0),
        "text": fresh.spec_text(shoe, ["in shiny red", "with a striped pattern"]),
    }
    with torch.no_grad():
        got = fresh.encode_queries(specs)
        want = {
            "sketch": ["a photo of shoe"] * 2,
            "fixed": [f"{fresh.fixed_prompts[1]} shoe"] * 2,
            "delta": ["a photo of shoe red"] * 2,
            "neutral": [f"a photo of shoe {fresh.neutral_texts[0]}"] * 2,
            "text": [
                "a photo of shoe in shiny red",
                "a photo of shoe with a striped pattern",
            ],
        }
        for kind, sentences in want.items():
            ref = encode_text(fresh.bundle, sentences)
            torch.testing.assert_close(got[kind], ref, atol=1e-5, rtol=1e-5)


def test_batched_text_pass_equals_one_call_per_kind(model: DuetModel) -> None:
    d = model.bundle.token_dim
    g = torch.Generator().manual_seed(0)
    w1 = (torch.randn(B, d, generator=g) * model.token_norm).requires_grad_(True)
    w2 = w1.detach().clone().requires_grad_(True)

    def specs(w: torch.Tensor) -> dict[str, QuerySpec]:
        return {
            "sketch": model.spec_sketch(w),
            "fixed": model.spec_fixed(w),  # all prompts: (B, F)
            "delta": model.spec_delta(w, w.flip(0)),
            "neutral": model.spec_neutral(w, torch.tensor([[0, 1], [2, 3], [4, 5]])),
        }

    batched = model.encode_queries(specs(w1))
    single = {k: model.encode_queries({k: s})[k] for k, s in specs(w2).items()}
    for k in batched:
        assert batched[k].shape == single[k].shape
        torch.testing.assert_close(batched[k], single[k], atol=1e-5, rtol=1e-5)
    weights = {k: torch.randn(v.shape, generator=g) for k, v in batched.items()}
    sum((batched[k] * weights[k]).sum() for k in batched).backward()
    sum((single[k] * weights[k]).sum() for k in single).backward()
    torch.testing.assert_close(w1.grad, w2.grad, atol=1e-5, rtol=1e-4)
    assert model.prompt.tokens.grad is not None  # gradients pass the frozen tower
    model.zero_grad(set_to_none=True)


def test_text_errors_are_clear(model: DuetModel) -> None:
    s = torch.randn(2, model.bundle.embed_dim)
    with pytest.raises(ValueError, match="empty"):
        model.query_text(s, ["in red", "  "])
    with pytest.raises(ValueError, match="placeholder"):
        model.query_text(s, ["in red", "costs $5"])
    with pytest.raises(ValueError, match="3 texts for 2"):
        model.query_text(s, ["a", "b", "c"])
    word = torch.randn(2, model.bundle.token_dim)
    bad = QuerySpec(model.spec_sketch(word).ids, word.unsqueeze(1), (2,))
    with pytest.raises(ValueError, match="placeholders"):
        model.encode_queries({"bad": bad})


def test_delta_options() -> None:
    s, p = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8)
    bundle = load_clip("duet-tiny-conv-96", seed=0)
    m = DuetModel(bundle)
    d = m.delta(s, p)
    torch.testing.assert_close(
        d,
        torch.nn.functional.normalize(p, dim=-1)
        - torch.nn.functional.normalize(s, dim=-1),
    )
    assert not d.requires_grad
    m.delta_options = DeltaOptions(space="raw", normalize=True, detach=False)
    d = m.delta(s, p)
    assert d.requires_grad
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(d, torch.nn.functional.normalize(p - s, dim=-1))
    with pytest.raises(ValueError, match="delta space"):
        DeltaOptions(space="cosine")


def test_forward_runs_every_pass_once_and_skips_what_is_off(model: DuetModel) -> None:
    e, size = model.bundle.embed_dim, model.bundle.image_size
    g = torch.Generator().manual_seed(1)
    sk, ph = (
        torch.randn(B, 3, size, size, generator=g),
        torch.randn(B, 3, size, size, generator=g),
    )
    neg = torch.randn(B, 2, 3, size, size, generator=g)
    calls = {"image": 0, "text": 0, "decoder": 0}
    tokens_fn = model.encode_queries
    hooks = [
        model.clip.visual.transformer.register_forward_hook(
            lambda *a: calls.__setitem__("image", calls["image"] + 1)
        ),
        model.decoder.register_forward_hook(
            lambda *a: calls.__setitem__("decoder", calls["decoder"] + 1)
        ),
    ]

    def counting(specs, normalize=False):
        calls["text"] += 1
        return tokens_fn(specs, normalize)

    model.encode_queries = counting  # type: ignore[method-assign]
    try:
        out = model(
            sk,
            ph,
            neg,
            fixed_index=torch.tensor([0, 1, 2]),
            neutral_index=torch.tensor([1, 1, 0]),
        )
        assert calls == {"image": 1, "text": 1, "decoder": 1}
        assert out["s"].shape == (B, e) and out["n"].shape == (B, 2, e)
        assert out["p_tokens"].shape == (B, (size // 16) ** 2, e)
        assert out["n_tokens"].shape == (B, 2, (size // 16) ** 2, e)
        for key in ("q_sketch", "q_fixed", "q_delta", "q_neutral"):
            assert out[key].shape == (B, e)
        assert out["g_delta"].shape == out["g_sketch"].shape == (B, 3, 64, 64)
        calls.update(image=0, text=0, decoder=0)
        out = model(sk, ph, None, with_delta=False, with_tokens=False, decode=False)
        assert set(out) == {"s", "p", "q_sketch"}
        assert calls == {"image": 1, "text": 1, "decoder": 0}
    finally:
        del model.encode_queries
        for h in hooks:
            h.remove()


def test_remembered_sketches_share_the_passes_and_match_query_sketch(
    model: DuetModel,
) -> None:
    e, size = model.bundle.embed_dim, model.bundle.image_size
    g = torch.Generator().manual_seed(2)
    sk, ph = (
        torch.randn(B, 3, size, size, generator=g),
        torch.randn(B, 3, size, size, generator=g),
    )
    remembered = torch.randn(5, e, generator=g)
    calls = {"text": 0}
    tokens_fn = model.encode_queries

    def counting(specs, normalize=False):
        calls["text"] += 1
        return tokens_fn(specs, normalize)

    model.encode_queries = counting  # type: ignore[method-assign]
    assert not model.training  # no dropout, so the two routes must agree
    try:
        with torch.no_grad():
            out = model(
                sk, ph, None, with_tokens=False, decode=False, memory=remembered
            )
            assert calls["text"] == 1 and out["q_memory"].shape == (5, e)
            torch.testing.assert_close(
                out["q_memory"], model.query_sketch(remembered), atol=1e-5, rtol=1e-5
            )
            plain = model(sk, ph, None, with_tokens=False, decode=False)
            # remembering rows does not change the current batch's queries
            torch.testing.assert_close(plain["q_sketch"], out["q_sketch"])
            torch.testing.assert_close(plain["q_delta"], out["q_delta"])
            with pytest.raises(ValueError, match="memory must be"):
                model(sk, ph, None, memory=torch.zeros(5, e + 1))
    finally:
        del model.encode_queries


def test_token_scale_sets_the_pseudo_word_norm() -> None:
    bundle = load_clip("duet-tiny-conv-96", seed=0)
    scaled = DuetModel(bundle, token_scale=3.0, sketch_tokens=2, seed=0).eval()
    emb = torch.randn(4, bundle.embed_dim, generator=torch.Generator().manual_seed(0))
    norms = scaled.sketch_word(emb).norm(dim=-1)
    assert norms.shape == (4, 2)
    torch.testing.assert_close(norms, torch.full((4, 2), 3.0 * scaled.token_norm))
    for bad in (0, -1.0, True, "3"):
        with pytest.raises(ValueError, match="token_scale"):
            DuetModel(load_clip("duet-tiny-conv-96", seed=0), token_scale=bad)


def test_gradients_reach_only_trainable_parameters() -> None:
    m = DuetModel(load_clip("duet-tiny-conv-96", seed=0)).train()
    size = m.bundle.image_size
    g = torch.Generator().manual_seed(2)
    out = m(
        torch.randn(2, 3, size, size, generator=g),
        torch.randn(2, 3, size, size, generator=g),
        fixed_index="all",
        neutral_index=torch.tensor([0, 1]),
    )
    total = sum(v.float().mean() for v in out.values())
    total.backward()
    trainable = set(m.trainable_parameter_names())
    for name, p in m.named_parameters():
        if name in trainable:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    assert float(m.prompt.tokens.grad.abs().sum()) > 0
    assert float(m.clip.visual.ln_post.weight.grad.abs().sum()) > 0


def test_sketch_phrase_of_several_pseudo_words() -> None:
    """sketch_tokens=K_s: C_v2w emits K_s vectors per input, every query kind holds
    K_s slots per word, and real words through them equal plain text."""
    m = DuetModel(load_clip("duet-tiny-conv-96", seed=0), sketch_tokens=2, seed=0)
    m.eval()
    e, d = m.bundle.embed_dim, m.bundle.token_dim
    s = torch.randn(B, e)
    with torch.no_grad():
        word = m.sketch_word(s)
        assert word.shape == (B, 2, d)
        norms = word.norm(dim=-1)
        torch.testing.assert_close(norms, torch.full_like(norms, m.token_norm))
        assert m.query_sketch(s).shape == (B, e)
        assert m.query_fixed(s).shape == (B, len(m.fixed_prompts), e)
        assert m.query_delta(s, m.delta(s, torch.randn(B, e))).shape == (B, e)
        assert m.query_neutral(s, torch.zeros(B, 2, dtype=torch.long)).shape == (
            B,
            2,
            e,
        )
        assert m.query_text(s, "in red").shape == (B, e)
    _assert_slot_counts(m, word, sketch=5, delta=7, fixed=2)
    with pytest.raises(ValueError, match=r"\(B, 2, d\)"):
        m.spec_sketch(torch.randn(B, d))
    pair = torch.stack([_word(m, "shoe"), _word(m, "chair")])[None].expand(2, -1, -1)
    with torch.no_grad():
        got = m.encode_queries({"q": m.spec_text(pair, "in red")})["q"]
        want = encode_text(m.bundle, ["a photo of shoe chair in red"] * 2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="sketch_tokens"):
        DuetModel(load_clip("duet-tiny-conv-96", seed=0), sketch_tokens=0)


def test_words_scale_scales_the_sketch_word_only_before_real_words() -> None:
    bundle = load_clip("duet-tiny-conv-96", seed=0)
    plain = DuetModel(bundle, token_scale=3.0, sketch_tokens=2, seed=0).eval()
    quiet = DuetModel(
        bundle, token_scale=3.0, sketch_tokens=2, words_scale=0.5, seed=0
    ).eval()
    emb = torch.randn(B, bundle.embed_dim, generator=torch.Generator().manual_seed(1))
    word = plain.sketch_word(emb)
    k = plain.n_prompt_tokens
    text, text_q = plain.spec_text(word, "in red"), quiet.spec_text(word, "in red")
    torch.testing.assert_close(text_q.pseudo[:, :k], text.pseudo[:, :k])  # P^L
    torch.testing.assert_close(text_q.pseudo[:, k:], 0.5 * text.pseudo[:, k:])
    assert torch.equal(text_q.ids, text.ids)
    # the sketch-only, Delta, neutral and fixed-prompt queries are untouched
    for name, args in (
        ("spec_sketch", (word,)),
        ("spec_delta", (word, word)),
        ("spec_neutral", (word, 0)),
        ("spec_fixed", (word, 0)),
    ):
        a, b = getattr(plain, name)(*args), getattr(quiet, name)(*args)
        torch.testing.assert_close(b.pseudo, a.pseudo, msg=name)
    # and the encoded duet query changes with it
    assert not torch.allclose(
        plain.query_text(emb, "in red"), quiet.query_text(emb, "in red")
    )
    for bad in (0, -1.0, 11, True, "0.5"):
        with pytest.raises(ValueError, match="words_scale"):
            DuetModel(bundle, words_scale=bad)
