"""Tests of duet_lib.models.converter: C_v2w and the learnable prompt P^L."""

from __future__ import annotations

import pytest
import torch

from duet_lib.models.converter import LearnablePrompt, VisualToWord


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_visual_to_word_shapes_and_size():
    conv = VisualToWord(128, 96, hidden=64)
    assert conv(torch.randn(5, 128)).shape == (5, 96)
    assert conv(torch.randn(128)).shape == (96,)
    # three linear layers, E -> H -> H -> d
    assert n_params(conv) == (128 * 64 + 64) + (64 * 64 + 64) + (64 * 96 + 96)
    default = VisualToWord(128, 128)
    assert default.hidden == 512  # 4 * E, as SEARLE's phi


def test_visual_to_word_several_tokens_per_input():
    conv = VisualToWord(32, 16, hidden=24, n_tokens=3, token_norm=2.0).eval()
    out = conv(torch.randn(5, 32))
    assert out.shape == (5, 3, 16)
    torch.testing.assert_close(out.norm(dim=-1), torch.full((5, 3), 2.0))
    assert conv(torch.randn(32)).shape == (3, 16)
    # only the last layer grows: H -> K d
    assert n_params(conv) == (32 * 24 + 24) + (24 * 24 + 24) + (24 * 48 + 48)
    # the K tokens of one input differ (they are not copies)
    assert not torch.allclose(out[:, 0], out[:, 1])
    with pytest.raises(ValueError, match="n_tokens"):
        VisualToWord(32, 16, n_tokens=0)


def test_visual_to_word_seed_is_deterministic_and_local():
    x = torch.randn(4, 32)
    torch.manual_seed(0)
    before = torch.rand(1)
    a = VisualToWord(32, 16, seed=7).eval()
    b = VisualToWord(32, 16, seed=7).eval()
    c = VisualToWord(32, 16, seed=8).eval()
    torch.manual_seed(0)
    assert torch.equal(before, torch.rand(1))  # the global generator was untouched
    assert torch.equal(a(x), b(x))
    assert not torch.allclose(a(x), c(x))
    # seed=None follows the global generator
    torch.manual_seed(3)
    d = VisualToWord(32, 16).eval()
    torch.manual_seed(3)
    e = VisualToWord(32, 16).eval()
    assert torch.equal(d(x), e(x))


def test_visual_to_word_dropout_only_in_training():
    conv = VisualToWord(16, 8, dropout=0.5, seed=0)
    x = torch.randn(64, 16)
    conv.train()
    assert not torch.equal(conv(x), conv(x))
    conv.eval()
    assert torch.equal(conv(x), conv(x))


def test_visual_to_word_token_norm_fixed_and_learnable():
    x = torch.randn(6, 16)
    fixed = VisualToWord(16, 8, token_norm=0.5, seed=1).eval()
    norms = fixed(x).norm(dim=-1)
    assert torch.allclose(norms, torch.full((6,), 0.5), atol=1e-6)
    assert fixed.scale == 0.5
    assert not any("scale" in name for name, _ in fixed.named_parameters())

    learn = VisualToWord(16, 8, token_norm=0.5, learnable_scale=True, seed=1).eval()
    assert torch.allclose(learn(x), fixed(x), atol=1e-6)  # same start
    learn(x).sum().backward()
    assert learn.log_scale.grad is not None and float(learn.log_scale.grad.abs()) > 0

    raw = VisualToWord(16, 8, seed=1).eval()
    assert not torch.allclose(raw(x).norm(dim=-1), norms)


def test_visual_to_word_gradients_reach_every_parameter():
    conv = VisualToWord(16, 8, token_norm=1.0, seed=2)
    x = torch.randn(4, 16, requires_grad=True)
    (conv(x) * torch.randn(4, 8)).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    for name, param in conv.named_parameters():
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, name


def test_visual_to_word_errors():
    conv = VisualToWord(16, 8)
    with pytest.raises(ValueError, match="embed_dim 16"):
        conv(torch.randn(2, 15))
    with pytest.raises(ValueError, match=r"\(B, E\)"):
        conv(torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="token_norm"):
        VisualToWord(16, 8, token_norm=0.0)
    with pytest.raises(ValueError, match="learnable_scale"):
        VisualToWord(16, 8, learnable_scale=True)
    with pytest.raises(ValueError, match="dropout"):
        VisualToWord(16, 8, dropout=1.0)
    with pytest.raises(ValueError, match="embed_dim"):
        VisualToWord(0, 8)


def test_prompt_random_init_seed_and_scale():
    a = LearnablePrompt(3, 2048, seed=0)
    b = LearnablePrompt(3, 2048, seed=0)
    c = LearnablePrompt(3, 2048, seed=1)
    assert a().shape == (3, 2048)
    assert torch.equal(a(), b()) and not torch.equal(a(), c())
    std = float(a.tokens.detach().std())
    assert 0.018 < std < 0.022  # N(0, 0.02^2)


def test_prompt_init_is_copied():
    init = torch.randn(3, 8)
    prompt = LearnablePrompt(3, 8, init=init)
    assert torch.equal(prompt(), init)
    init.zero_()  # the prompt keeps its own copy
    assert float(prompt().detach().abs().sum()) > 0
    assert prompt.tokens.data_ptr() != init.data_ptr()


def test_prompt_batch_expansion_and_gradient():
    prompt = LearnablePrompt(3, 8, seed=0)
    batch = prompt(batch_size=4)
    assert batch.shape == (4, 3, 8)
    assert torch.equal(batch[0], batch[3])
    (batch * torch.arange(4.0).view(4, 1, 1)).sum().backward()
    # every row shares the same vectors, so the gradient sums over the batch
    assert torch.allclose(prompt.tokens.grad, torch.full((3, 8), 6.0))


def test_prompt_errors():
    with pytest.raises(ValueError, match=r"\(3, 8\)"):
        LearnablePrompt(3, 8, init=torch.randn(2, 8))
    with pytest.raises(ValueError, match="finite"):
        LearnablePrompt(1, 2, init=torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="n_tokens"):
        LearnablePrompt(0, 8)
    with pytest.raises(ValueError, match="batch_size"):
        LearnablePrompt(3, 8)(batch_size=0)
