"""Tests of duet_lib.models.decoder: the reconstruction decoder G."""

from __future__ import annotations

import pytest
import torch

from duet_lib.losses import reconstruction_loss
from duet_lib.models.decoder import ImageDecoder


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("size", [32, 64, 128])
def test_decoder_shape_and_range(size):
    decoder = ImageDecoder(16, out_size=size, seed=0)
    with torch.no_grad():
        images = decoder(torch.randn(2, 16) * 10)
    assert images.shape == (2, 3, size, size)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert float(images.std()) > 0  # not a constant image


@pytest.mark.parametrize("embed_dim", [128, 512])
def test_decoder_stays_small(embed_dim):
    assert n_params(ImageDecoder(embed_dim, out_size=64)) < 1_000_000
    assert n_params(ImageDecoder(embed_dim, out_size=128)) < 1_000_000


def test_decoder_gradient_reaches_input_and_every_parameter():
    decoder = ImageDecoder(16, out_size=32, seed=1)
    z = torch.randn(3, 16, requires_grad=True)
    target = torch.rand(3, 3, 64, 64)
    loss = reconstruction_loss(decoder(z), None, target)
    loss.backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0
    for name, param in decoder.named_parameters():
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, name


def test_decoder_learns_flat_colours():
    """Per-image colours survive the normalisations (adaptive GroupNorm)."""
    g = torch.Generator().manual_seed(0)
    decoder = ImageDecoder(8, out_size=32, seed=2)
    z = torch.randn(4, 8, generator=g)
    target = torch.rand(4, 3, 1, 1, generator=g).expand(4, 3, 32, 32)
    opt = torch.optim.Adam(decoder.parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        loss = reconstruction_loss(decoder(z), None, target)
        history.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert history[-1] < 0.3 * history[0]


def test_decoder_seed_and_input_normalisation():
    z = torch.randn(2, 16)
    a, b = ImageDecoder(16, seed=3), ImageDecoder(16, seed=3)
    assert torch.equal(a(z), b(z))
    assert not torch.allclose(a(z), ImageDecoder(16, seed=4)(z))
    # only the direction of the embedding matters by default
    assert torch.allclose(a(z), a(5.0 * z), atol=1e-6)
    raw = ImageDecoder(16, seed=3, normalize_input=False)
    assert not torch.allclose(raw(z), raw(5.0 * z))


def test_decoder_skips_carry_the_embedding():
    decoder = ImageDecoder(16, out_size=32, seed=5)
    z = torch.randn(2, 16)
    before = decoder(z)
    with torch.no_grad():
        decoder.skips[-1].weight.add_(0.5)  # the finest level's skip projection
    assert not torch.allclose(before, decoder(z))
    plain = ImageDecoder(16, out_size=32, skip_channels=0, seed=5)
    assert len(plain.skips) == 0 and plain(z).shape == (2, 3, 32, 32)
    assert n_params(plain) < n_params(decoder)


def test_decoder_errors():
    with pytest.raises(ValueError, match="out_size"):
        ImageDecoder(16, out_size=48)
    with pytest.raises(ValueError, match="embed_dim 16"):
        ImageDecoder(16)(torch.randn(2, 8))
    with pytest.raises(ValueError, match=r"\(B, E\)"):
        ImageDecoder(16)(torch.randn(16))
    with pytest.raises(ValueError, match="widths"):
        ImageDecoder(16, out_size=64, widths=(32, 16))
    with pytest.raises(ValueError, match="divisible"):
        ImageDecoder(16, out_size=32, widths=(32, 16, 12, 8))
