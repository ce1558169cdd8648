"""Tests for duet_lib.models.clip: configs, stem, weights, preprocessing, freezing."""

from __future__ import annotations

import os
import socket
import time

import huggingface_hub.constants as hf_constants
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from duet_lib.checkpoint import CheckpointError
from duet_lib.models import clip as C


@pytest.fixture(scope="module")
def tiny() -> C.ClipBundle:
    return C.load_clip("duet-tiny-conv-96", seed=0)


@pytest.fixture(scope="module")
def vitb32() -> C.ClipBundle:
    return C.load_clip("ViT-B-32", seed=0)


# ------------------------------------------------------------------ configs and stem


def test_stem_kind_names_each_backbones_stem() -> None:
    assert C.stem_kind("duet-tiny-conv-96") == "conv"
    assert C.stem_kind("duet-tiny-conv32-96") == "conv"
    assert C.stem_kind("duet-tiny-hog-96") == "hog"
    assert C.stem_kind("duet-tiny-hog32-96") == "hog"
    assert C.stem_kind("duet-tiny-patch") is None
    assert C.stem_kind("ViT-B-32") is None
    # every kind the book ships is one the builder knows
    assert {C.stem_kind(n) for n in C.duet_model_names()} <= {*C.STEM_KINDS, None}


def test_hog_stem_model_learns_only_its_token_map() -> None:
    bundle = C.load_clip("duet-tiny-hog-96", seed=0)
    stem = bundle.model.visual.conv1
    assert isinstance(stem, C.HogStem) and stem.total_stride == 16
    assert [n for n, _ in stem.named_parameters()] == [
        "proj.0.weight",
        "proj.0.bias",
        "proj.2.weight",
    ]
    x = torch.randn(2, 3, 96, 96)
    assert stem(x).shape == (2, 128, 6, 6)
    assert bundle.model.encode_image(x).shape == (2, 128)
    x.requires_grad_(True)
    assert not stem.features(x).requires_grad  # the histograms are fixed


def test_hog_stem_on_a_three_by_three_grid_gathers_four_by_four_cells() -> None:
    bundle = C.load_clip("duet-tiny-hog32-96", seed=0)
    model = bundle.model
    stem = model.visual.conv1
    assert isinstance(stem, C.HogStem)
    assert (stem.cell, stem.group, stem.total_stride) == (8, 4, 32)
    assert stem.n_features == 16 * (9 + 3)  # 16 cells of 9 bins and 3 colour means
    x = torch.randn(2, 3, 96, 96)
    assert stem.features(x).shape == (2, 16 * 12, 3, 3)
    assert model.visual.positional_embedding.shape[0] == 3 * 3 + 1
    with torch.no_grad():
        _, patches = C.encode_image_with_tokens(model, x)
    assert patches.shape == (2, 9, 128)
    assert model.transformer.resblocks[0].mlp.c_fc.out_features == 2 * 128
    assert model.visual.transformer.resblocks[0].mlp.c_fc.out_features == 4 * 128
    # the same transformer widths as the 16-stride HOG backbone: fewer tokens only
    hog16 = C.load_clip("duet-tiny-hog-96", seed=0).model
    assert model.visual.transformer.width == hog16.visual.transformer.width


def test_hog_stem_histograms_follow_edge_orientation_and_keep_colour() -> None:
    stem = C.HogStem(width=8)
    ramp = torch.sin(torch.arange(32.0) * 0.8)
    across = ramp.view(1, 1, 1, 32).expand(1, 3, 32, 32)  # varies along x
    down = ramp.view(1, 1, 32, 1).expand(1, 3, 32, 32)  # varies along y
    for image, bins in ((across, {0, 8}), (down, {4})):
        feats = C.HogStem.features(stem, image.contiguous())  # (1, 4 * 12, 2, 2)
        cells = feats.view(1, 12, 4, 2, 2)[:, :9]  # pixel_unshuffle puts channel first
        totals = cells.sum((0, 2, 3, 4))
        assert int(totals.argmax()) in bins, totals
    colour = torch.zeros(1, 3, 32, 32)
    colour[:, 0] = 0.5
    colour[:, 2] = -1.0
    feats = stem.features(colour).view(1, 12, 4, 2, 2)
    torch.testing.assert_close(feats[:, 9], torch.full((1, 4, 2, 2), 0.5))
    torch.testing.assert_close(feats[:, 11], torch.full((1, 4, 2, 2), -1.0))
    with pytest.raises(ValueError, match="divisible by 16"):
        stem.features(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match="unknown stem kind"):
        C._build_stem({"kind": "wavelet"}, 8)


def _hog_reference(x: torch.Tensor, bins: int, cell: int, group: int) -> torch.Tensor:
    # the definition, written the slow way: every pixel's vote for every bin
    import math

    import torch.nn.functional as F

    grey = x.mean(1, keepdim=True)
    pad_x = F.pad(grey, (1, 1, 0, 0), mode="replicate")
    pad_y = F.pad(grey, (0, 0, 1, 1), mode="replicate")
    gx = pad_x[..., 2:] - pad_x[..., :-2]
    gy = pad_y[..., 2:, :] - pad_y[..., :-2, :]
    magnitude = torch.sqrt(gx**2 + gy**2 + 1e-6)
    angle = torch.atan2(gy, gx) % math.pi
    centres = ((torch.arange(bins) + 0.5) * math.pi / bins).view(1, -1, 1, 1)
    gap = (angle - centres).abs()
    gap = torch.minimum(gap, math.pi - gap)
    votes = (1 - gap * bins / math.pi).clamp(min=0) * magnitude
    hist = F.avg_pool2d(votes, cell).sqrt()
    energy = F.avg_pool2d(
        hist.pow(2).sum(1, keepdim=True), 3, 1, 1, count_include_pad=False
    )
    hist = hist / torch.sqrt(energy + 1e-3)
    return F.pixel_unshuffle(torch.cat([hist, F.avg_pool2d(x, cell)], 1), group)


@pytest.mark.parametrize("bins,cell,group", [(9, 8, 2), (6, 4, 4)])
def test_hog_stem_features_equal_the_per_bin_definition(bins, cell, group) -> None:
    stem = C.HogStem(width=8, bins=bins, cell=cell, group=group)
    assert stem.total_stride == cell * group
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 48, generator=gen) * 4 - 2
    x[0, :, :, :16] = 0.25  # a flat region: no gradient
    got = stem.features(x)
    assert got.shape == (
        3,
        group**2 * (bins + 3),
        32 // (cell * group),
        48 // (cell * group),
    )
    torch.testing.assert_close(got, _hog_reference(x, bins, cell, group))
    assert stem(x).shape == (3, 8, 32 // (cell * group), 48 // (cell * group))
    with pytest.raises(ValueError, match="positive"):
        C.HogStem(width=8, group=0)


def test_tiny_conv_config(tiny: C.ClipBundle) -> None:
    model = tiny.model
    assert isinstance(model.visual.conv1, C.ConvStem)
    assert tiny.image_size == 96
    assert tiny.context_length == 32 == model.context_length
    assert tiny.tokenizer(["a red shoe"]).shape == (1, 32)
    assert tiny.embed_dim == 128 and tiny.token_dim == 128
    assert model.token_embedding.weight.shape == (49408, 128)
    assert model.visual.transformer.width == 128
    assert len(model.visual.transformer.resblocks) == 4
    assert len(model.transformer.resblocks) == 4
    convs = [m for m in model.visual.conv1.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 128, 128]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 2, 1]
    assert tiny.meta["n_params"] == sum(p.numel() for p in model.parameters())


def test_stem_grid_matches_positional_embedding(tiny: C.ClipBundle) -> None:
    feats = tiny.model.visual.conv1(torch.zeros(2, 3, 96, 96))
    assert feats.shape == (2, 128, 6, 6)
    assert tiny.model.visual.positional_embedding.shape[0] == 6 * 6 + 1


def test_stride_32_config_has_a_three_by_three_grid() -> None:
    fast = C.load_clip("duet-tiny-conv32-96", seed=0)
    model = fast.model
    convs = [m for m in model.visual.conv1.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 128, 128]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 2, 2, 1]
    assert model.visual.positional_embedding.shape[0] == 3 * 3 + 1
    with torch.no_grad():
        _, patches = C.encode_image_with_tokens(model, torch.zeros(2, 3, 96, 96))
    assert patches.shape == (2, 9, 128)
    mlp = model.transformer.resblocks[0].mlp.c_fc
    assert mlp.out_features == 2 * 128  # text MLP ratio 2
    assert model.visual.transformer.resblocks[0].mlp.c_fc.out_features == 4 * 128


def test_fast_attention_keeps_values(tiny: C.ClipBundle) -> None:
    images = torch.randn(3, 3, 96, 96)
    ids = tiny.tokenize(["a red shoe", "a tall chair with armrests on grass", "x"])
    with torch.no_grad():
        ref_img, ref_txt = tiny.model.encode_image(images), tiny.model.encode_text(ids)
        with C.fast_attention("cpu"):
            img, txt = tiny.model.encode_image(images), tiny.model.encode_text(ids)
        with C.fast_attention(torch.device("meta")):  # not CPU: PyTorch's choice
            again = tiny.model.encode_text(ids)
    torch.testing.assert_close(img, ref_img, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(txt, ref_txt, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(again, ref_txt)


def test_conv_128_and_image_size_override() -> None:
    big = C.load_clip("duet-tiny-conv-128", seed=0)
    assert big.image_size == 128
    assert big.model.visual.positional_embedding.shape[0] == 8 * 8 + 1
    resized = C.load_clip("duet-tiny-conv-96", image_size=128, seed=0)
    with torch.no_grad():
        _, patches = C.encode_image_with_tokens(
            resized.model, torch.zeros(1, 3, 128, 128)
        )
    assert patches.shape == (1, 64, 128)


def test_patch_model_is_plain_vit() -> None:
    bundle = C.load_clip("duet-tiny-patch", seed=0)
    conv1 = bundle.model.visual.conv1
    assert isinstance(conv1, nn.Conv2d) and conv1.kernel_size == (16, 16)
    assert bundle.meta["stem"] is None


def test_seed_reproduces_weights() -> None:
    a = C.load_clip("duet-tiny-conv-96", seed=3).model.state_dict()
    b = C.load_clip("duet-tiny-conv-96", seed=3).model.state_dict()
    c = C.load_clip("duet-tiny-conv-96", seed=4).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(
        a["visual.conv1.layers.0.weight"], c["visual.conv1.layers.0.weight"]
    )


def test_bad_names_and_sizes() -> None:
    with pytest.raises(ValueError, match="duet-tiny-conv-96"):
        C.load_clip("duet-tiny-conv")
    with pytest.raises(ValueError, match="divisible"):
        C.load_clip("duet-tiny-conv-96", image_size=100)
    with pytest.raises(ValueError, match="no published weights"):
        C.load_clip("duet-tiny-conv-96", pretrained="openai")
    with pytest.raises(ValueError, match="known tags: .*openai"):
        C.load_clip("ViT-B-32", pretrained="no-such-tag")
    with pytest.raises(FileNotFoundError):
        C.load_clip("duet-tiny-conv-96", pretrained="missing/weights.pt")


# ------------------------------------------------------------------ patch tokens


@pytest.mark.parametrize("which", ["tiny", "vitb32"])
def test_encode_image_with_tokens(which: str, request: pytest.FixtureRequest) -> None:
    bundle: C.ClipBundle = request.getfixturevalue(which)
    gen = torch.Generator().manual_seed(0)
    size = bundle.image_size
    images = torch.randn(2, 3, size, size, generator=gen)
    with torch.no_grad():
        pooled, patches = C.encode_image_with_tokens(bundle.model, images)
        reference = bundle.model.encode_image(images)
    grid = size // bundle.model.visual.patch_size[0]
    assert pooled.shape == (2, bundle.embed_dim)
    assert patches.shape == (2, grid * grid, bundle.embed_dim)
    torch.testing.assert_close(pooled, reference, rtol=1e-5, atol=1e-5)
    # Patch tokens differ from one another and from the class token.
    assert not torch.allclose(patches[:, 0], patches[:, 1])
    _, unit = C.encode_image_with_tokens(bundle.model, images[:1], normalize=True)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(1, grid * grid))


def test_block_normalize_shares_and_cosine() -> None:
    x, y = torch.randn(5, 10), torch.randn(5, 10)
    bx, by = C.block_normalize(x, 4, 0.7), C.block_normalize(y, 4, 0.7)
    torch.testing.assert_close(bx.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close((bx[:, :4] ** 2).sum(-1), torch.full((5,), 0.7))
    cos = lambda a, b: torch.nn.functional.cosine_similarity(a, b, dim=-1)  # noqa: E731
    expected = 0.7 * cos(x[:, :4], y[:, :4]) + 0.3 * cos(x[:, 4:], y[:, 4:])
    torch.testing.assert_close((bx * by).sum(-1), expected)
    for dims, share in ((0, 0.5), (10, 0.5), (4, 0.0), (4, 1.0), (True, 0.5)):
        with pytest.raises(ValueError, match="block"):
            C.block_normalize(x, dims, share)


def test_embedding_blocks_apply_to_every_image_path(tmp_path) -> None:
    bundle = C.load_clip("duet-tiny-conv-96", None, seed=0)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        plain = bundle.model.encode_image(x)
    assert C.embedding_blocks(bundle.model) is None
    C.set_embedding_blocks(bundle.model, 32, 0.8)
    C.set_embedding_blocks(bundle.model, 64, 0.9)  # replaces, never stacks
    with torch.no_grad():
        pooled = bundle.model.encode_image(x)
        via_tokens, tokens = C.encode_image_with_tokens(bundle.model, x)
    torch.testing.assert_close(pooled, C.block_normalize(plain, 64, 0.9))
    torch.testing.assert_close(via_tokens, pooled)
    torch.testing.assert_close(
        (tokens[..., :64] ** 2).sum(-1), torch.full((2, 36), 0.9)
    )
    path = C.save_clip(bundle, tmp_path / "blocks.pt")
    again = C.load_clip("duet-tiny-conv-96", path)
    assert C.embedding_blocks(again.model) == {"dims": 64, "share": 0.9}
    with torch.no_grad():
        torch.testing.assert_close(again.model.encode_image(x), pooled)
    with pytest.raises(ValueError, match="block dims"):
        C.set_embedding_blocks(bundle.model, 128, 0.5)


def test_encode_image_with_tokens_rejects_wrong_size(tiny: C.ClipBundle) -> None:
    with pytest.raises(ValueError, match="tokens"):
        C.encode_image_with_tokens(tiny.model, torch.zeros(1, 3, 128, 128))


# ------------------------------------------------------------------------ freezing


def _expected_layernorm_names(model: nn.Module) -> set[str]:
    names = {
        f"visual.{ln}.{p}" for ln in ("ln_pre", "ln_post") for p in ("weight", "bias")
    }
    for i in range(len(model.visual.transformer.resblocks)):
        for ln in ("ln_1", "ln_2"):
            for p in ("weight", "bias"):
                names.add(f"visual.transformer.resblocks.{i}.{ln}.{p}")
    return names


def test_freeze_for_duet_only_visual_layernorms() -> None:
    model = C.load_clip("duet-tiny-conv-96", seed=0).model
    names = C.freeze_for_duet(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == sorted(trainable)
    assert trainable == _expected_layernorm_names(model)
    for forbidden in (
        "in_proj_weight",
        "class_embedding",
        "positional_embedding",
        "visual.proj",
        "logit_scale",
        "conv1",
        "token_embedding",
        "ln_final",
    ):
        assert not any(forbidden in n for n in trainable), forbidden


def test_freeze_for_duet_last_block_deviation() -> None:
    model = C.load_clip("duet-tiny-conv-96", seed=0).model
    names = set(C.freeze_for_duet(model, unfreeze_last_visual_blocks=1))
    last = {
        f"visual.transformer.resblocks.3.{n}"
        for n, _ in model.visual.transformer.resblocks[3].named_parameters()
    }
    assert names == _expected_layernorm_names(model) | last
    assert "visual.transformer.resblocks.3.attn.in_proj_weight" in names
    # Calling again with k = 0 freezes the block again.
    assert set(C.freeze_for_duet(model)) == _expected_layernorm_names(model)
    with pytest.raises(ValueError, match="unfreeze_last_visual_blocks"):
        C.freeze_for_duet(model, unfreeze_last_visual_blocks=5)


# ------------------------------------------------------------------- checkpoints


def test_save_and_load_roundtrip(tmp_path, tiny: C.ClipBundle) -> None:
    path = C.save_clip(tiny, tmp_path / "tiny.pt", extra={"step": 7, "note": "test"})
    loaded = C.load_clip("duet-tiny-conv-96", pretrained=path)
    assert loaded.meta["source"] == "file"
    assert loaded.meta["extra"] == {"step": 7, "note": "test"}
    ref = tiny.model.state_dict()
    got = loaded.model.state_dict()
    assert set(ref) == set(got)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    images = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.model.encode_image(images), tiny.model.encode_image(images)
        )


def test_checkpoint_of_other_model_is_refused(tmp_path, tiny: C.ClipBundle) -> None:
    path = C.save_clip(tiny, tmp_path / "tiny.pt")
    with pytest.raises(ValueError, match="duet-tiny-conv-96"):
        C.load_clip("duet-tiny-conv-128", pretrained=path)
    with pytest.raises(ValueError, match="image_size=96"):
        C.load_clip("duet-tiny-conv-96", pretrained=path, image_size=128)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        C.load_clip("duet-tiny-conv-96", pretrained=broken)


def test_raw_state_dict_loads_strictly(tmp_path, tiny: C.ClipBundle) -> None:
    path = tmp_path / "raw.pt"
    torch.save(tiny.model.state_dict(), path)
    loaded = C.load_clip("duet-tiny-conv-96", pretrained=str(path))
    assert torch.equal(
        loaded.model.visual.conv1.layers[0].weight,
        tiny.model.visual.conv1.layers[0].weight,
    )
    partial = {k: v for k, v in tiny.model.state_dict().items() if "conv1" not in k}
    torch.save(partial, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        C.load_clip("duet-tiny-conv-96", pretrained=path)


# --------------------------------------------------------------- offline weights


def _expect_fast_failure() -> None:
    start = time.perf_counter()
    with pytest.raises(C.WeightsUnavailableError, match="HF_HOME") as info:
        C.load_clip("ViT-B-32", "openai")
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    assert "local path" in str(info.value)


def test_tag_offline_fails_fast(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _expect_fast_failure()
    with pytest.raises(FileNotFoundError):  # the error is also a FileNotFoundError
        C.load_clip("ViT-B-32", "openai")


def test_tag_without_offline_flag_probes_and_fails_fast(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    # A reserved name that never resolves keeps the test hermetic on machines
    # with internet access.
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    _expect_fast_failure()
    # Offline mode was switched on only for the call.
    assert hf_constants.HF_HUB_OFFLINE is False
    assert "HF_HUB_OFFLINE" not in os.environ


def test_hanging_name_lookup_is_bounded(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)

    def slow_lookup(*args, **kwargs):
        time.sleep(3.0)
        raise socket.gaierror("no network")

    monkeypatch.setattr(socket, "getaddrinfo", slow_lookup)
    _expect_fast_failure()


# ------------------------------------------------------------------ preprocessing


def test_preprocess_shapes_and_values(tiny: C.ClipBundle) -> None:
    colour = (200, 100, 50)
    images = [
        Image.new("RGB", (256, 256), colour),
        Image.new("RGB", (300, 200), colour),
        np.full((96, 96, 3), colour, dtype=np.uint8),
        Image.new("L", (64, 64), 128),
    ]
    batch = tiny.preprocess(images)
    assert batch.shape == (4, 3, 96, 96) and batch.dtype == torch.float32
    mean = torch.tensor(tiny.image_mean).view(3, 1, 1)
    std = torch.tensor(tiny.image_std).view(3, 1, 1)
    expected = (
        torch.tensor(colour, dtype=torch.float32).view(3, 1, 1) / 255 - mean
    ) / std
    for i in range(3):
        torch.testing.assert_close(
            batch[i], expected.expand(3, 96, 96), atol=1e-5, rtol=0
        )
    grey = (torch.full((3, 1, 1), 128.0) / 255 - mean) / std
    torch.testing.assert_close(batch[3], grey.expand(3, 96, 96), atol=1e-5, rtol=0)


def test_preprocess_centre_crops_wide_images(tiny: C.ClipBundle) -> None:
    wide = np.zeros((96, 288, 3), dtype=np.uint8)
    wide[:, 96:192] = 255  # white centre third, black sides
    batch = tiny.preprocess(wide)
    white = (torch.ones(3) - torch.tensor(tiny.image_mean)) / torch.tensor(
        tiny.image_std
    )
    torch.testing.assert_close(batch[0, :, 48, 48], white, atol=1e-5, rtol=0)


def test_preprocess_rejects_bad_input(tiny: C.ClipBundle) -> None:
    with pytest.raises(ValueError, match="uint8"):
        tiny.preprocess(np.zeros((8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="at least one"):
        tiny.preprocess([])


def test_cached_tag_file_is_used_without_network(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Hugging Face cache layout holding a (corrupt) weights file: the loader must
    # find it offline and report the bad file, not a missing one.
    repo = tmp_path / "hub" / "models--timm--vit_base_patch32_clip_224.openai"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "open_clip_pytorch_model.bin").write_bytes(b"garbage")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)

    probes: list[str] = []
    monkeypatch.setattr(C, "_host_reachable", lambda url, *a: probes.append(url))
    with pytest.raises(CheckpointError, match="cached weights"):
        C.load_clip("ViT-B-32", "openai")
    assert probes == []  # no reachability probe: the cached file was found
    (snap / "open_clip_pytorch_model.bin").unlink()
    with pytest.raises(C.WeightsUnavailableError):
        C.load_clip("ViT-B-32", "openai")
    assert len(probes) == 1  # without the file, the Hub was probed once
