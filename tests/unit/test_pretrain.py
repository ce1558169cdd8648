"""Tiny-CLIP pretraining: resume equals a straight run, cache reuse, bad configs."""

import ast
from dataclasses import replace

import numpy as np
import pytest
import torch

from duet_lib.models.pretrain import (
    PretrainConfig,
    book_clip,
    pretrain_clip,
    soft_caption_targets,
)


def _cfg(**kw):
    base = dict(
        steps=4, batch_size=8, corpus_size=16, warmup_steps=1, checkpoint_every=2
    )
    return PretrainConfig.for_profile("smoke", **{**base, **kw})


def _state(bundle):
    return {k: v.clone() for k, v in bundle.model.state_dict().items()}


@pytest.mark.parametrize("inversion_steps,stop", [(0, 2), (2, 5)])
def test_resume_reaches_the_same_weights_as_a_straight_run(
    tmp_path, monkeypatch, inversion_steps, stop
):
    # (2, 5): interrupted inside the second phase, its map and optimiser restored
    cfg = _cfg(inversion_steps=inversion_steps)
    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path / "a"))
    part = pretrain_clip(cfg, quiet=True, stop_after=stop)
    assert part.checkpoint.name == "last.pt" and len(part.history) == stop
    resumed = pretrain_clip(cfg, quiet=True)
    assert resumed.resumed_from == stop and resumed.checkpoint.name == "model.pt"

    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path / "b"))
    straight = pretrain_clip(cfg, quiet=True)
    a, b = _state(resumed.bundle), _state(straight.bundle)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]


def test_finished_model_is_reused_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path))
    cfg = _cfg(steps=2)
    first = pretrain_clip(cfg, quiet=True)
    again = pretrain_clip(cfg, quiet=True)
    assert first.trained_now and not again.trained_now
    torch.testing.assert_close(_state(first.bundle), _state(again.bundle))
    other = book_clip("smoke", steps=2, batch_size=8, corpus_size=16, warmup_steps=1)
    assert other is not None


def test_config_key_changes_with_any_field():
    assert _cfg().key() != _cfg(image_image_weight=0.5).key()
    assert _cfg().key() == _cfg().key()
    blocks = _cfg(image_image_dims=4, shape_share=0.9)
    assert blocks.key() not in (_cfg().key(), _cfg(image_image_dims=4).key())


def test_key_of_a_config_without_later_fields_is_unchanged():
    # fields added later must not rename, at their neutral values, the caches
    # written before they existed (the hash of the old field set)
    from dataclasses import asdict

    from duet_lib.checkpoint import config_hash

    cfg = _cfg(image_image_dims=4, inversion_steps=0)
    later = (
        "shape_share",
        "partial_captions",
        "caption_targets",
        "text_buckets",
        "math_attention",
        "shape_weight",
        "optimizer",
        "inversion_steps",
        "inversion_lr",
        "inversion_map_lr",
        "inversion_weight",
        "inversion_tokens",
        "inversion_scale",
        "inversion_tau",
        "inversion_mix",
        "inversion_text_only",
    )
    old_fields = {k: v for k, v in asdict(cfg).items() if k not in later}
    assert cfg.key() == config_hash(old_fields)


def test_shape_share_trains_saves_and_reloads_a_block_embedding(tmp_path, monkeypatch):
    from duet_lib.models.clip import embedding_blocks, load_clip

    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path))
    cfg = _cfg(steps=2, image_image_dims=16, shape_share=0.75)
    result = pretrain_clip(cfg, quiet=True)
    assert embedding_blocks(result.bundle.model) == {"dims": 16, "share": 0.75}
    again = load_clip(cfg.model_name, result.checkpoint)
    assert embedding_blocks(again.model) == {"dims": 16, "share": 0.75}
    x = torch.randn(3, 3, again.image_size, again.image_size)
    with torch.no_grad():
        a, b = result.bundle.model.encode_image(x), again.model.encode_image(x)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close((a[:, :16] ** 2).sum(-1), torch.full((3,), 0.75))


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"steps": 0}, "steps"),
        ({"line_drawing_fraction": 1.5}, "line_drawing_fraction"),
        ({"batch_size": 64, "corpus_size": 16}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"shape_share": 0.5}, "needs image_image_dims"),
        ({"image_image_dims": 8, "shape_share": 1.0}, "shape_share"),
        ({"caption_targets": "all"}, "identical, described"),
    ],
)
def test_bad_config_is_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        _cfg(**kw)


def test_described_targets_count_every_photo_a_caption_is_true_of():
    from duet_lib.models.pretrain import described_targets

    # facts: 0 kind=photo, 1 red, 2 blue, 3 chair, 4 striped
    images = torch.tensor(
        [[1, 1, 0, 1, 1], [1, 1, 0, 1, 0], [1, 0, 1, 1, 0]], dtype=torch.bool
    )
    captions = torch.tensor(
        [
            [1, 1, 0, 1, 1],  # full caption of image 0
            [1, 1, 0, 1, 0],  # "a red chair": true of images 0 and 1
            [1, 0, 0, 1, 0],  # "a photo of a chair": true of all three
        ],
        dtype=torch.bool,
    )
    targets, text_targets = described_targets(captions, images)
    expected_text = torch.tensor([[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]])
    torch.testing.assert_close(text_targets, expected_text)
    expected_image = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [0, 0.5, 0.5], [0, 0, 1]])
    torch.testing.assert_close(targets, expected_image)
    # captions stating everything: image 1's full caption is also true of image 0
    full, _ = described_targets(images, images)
    expected_full = torch.tensor([[0.5, 0.5, 0], [0, 1, 0], [0, 0, 1]])
    torch.testing.assert_close(full, expected_full)


def test_described_targets_train_and_differ_from_identical(tmp_path, monkeypatch):
    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path))
    plain = pretrain_clip(_cfg(steps=2, partial_captions=0.5), quiet=True)
    told = pretrain_clip(
        _cfg(steps=2, partial_captions=0.5, caption_targets="described"), quiet=True
    )
    assert plain.checkpoint != told.checkpoint
    assert all(torch.isfinite(torch.tensor([h["loss"] for h in told.history])))
    assert [h["clip"] for h in plain.history] != [h["clip"] for h in told.history]


def test_unknown_profile_preset():
    with pytest.raises(ValueError, match="smoke, teach"):
        PretrainConfig.for_profile("paper")


def test_identical_captions_share_targets():
    ids = torch.tensor([[1, 2], [1, 2], [3, 4]])
    t = soft_caption_targets(ids)
    torch.testing.assert_close(t[0], torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(t[2], torch.tensor([0.0, 0.0, 1.0]))


def _attrs(category, values):
    """World attribute dicts of shapes that differ in one continuous parameter."""
    import numpy as np

    from duet_lib.data.world_geometry import sample_shapes

    (shape,) = sample_shapes(category, 1, np.random.default_rng(0))
    cont = [k for k, x in shape.params.items() if isinstance(x, float)]
    base = {**shape.params, **{k: 0.5 for k in cont}}
    return [
        {"category": category, "params": {**base, cont[0]: v}, "shape_id": ""}
        for v in values
    ]


def test_neighbour_table_finds_the_nearest_shapes_of_the_same_category():
    from duet_lib.models.pretrain import neighbour_table

    values = [0.0, 0.1, 0.5, 0.55, 1.0]
    attrs = _attrs("chair", values) + _attrs("shoe", [0.0, 0.9, 0.95])
    table = neighbour_table(attrs, 2)
    assert table.shape == (8, 2)
    assert table[0].tolist() == [1, 2]  # 0.0 -> 0.1, then 0.5
    assert table[3, 0] == 2  # 0.55 -> 0.5
    assert set(table[5:].ravel().tolist()) <= {5, 6, 7}  # never crosses categories
    assert table[6, 0] == 7


def test_neighbour_batches_have_no_repeats_and_depend_on_seed_and_step_only():
    import numpy as np

    from duet_lib.models.pretrain import batch_plan

    rng = np.random.default_rng(1)
    n = 60
    table = np.stack([rng.choice(n, 8, replace=False) for _ in range(n)])
    cfg = _cfg(batch_size=16, corpus_size=n, shape_neighbours=4)
    idx, drawing = batch_plan(cfg, 3, n, table)
    assert len(idx) == 16 == len(set(idx.tolist())) and drawing.shape == (16,)
    anchor = idx[0]
    assert set(idx[1:4].tolist()) <= set(table[anchor].tolist())
    again, _ = batch_plan(cfg, 3, n, table)
    np.testing.assert_array_equal(idx, again)
    other, _ = batch_plan(cfg, 4, n, table)
    assert not np.array_equal(idx, other)


def test_speed_settings_name_their_run_and_train_the_same_model(tmp_path, monkeypatch):
    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path))
    plain = _cfg(steps=2)
    fast = _cfg(steps=2, text_buckets=3, math_attention=True)
    assert fast.key() != plain.key()  # other float rounding: another run
    a = pretrain_clip(plain, quiet=True)
    b = pretrain_clip(fast, quiet=True)
    assert b.trained_now and a.checkpoint.parent != b.checkpoint.parent
    # the same computation up to rounding: two steps later the weights still agree
    sa, sb = _state(a.bundle), _state(b.bundle)
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-3, atol=1e-4, msg=k)


def test_inversion_term_trains_the_text_tower_and_never_the_image_tower():
    from duet_lib.models.clip import load_clip
    from duet_lib.models.pretrain import Inversion

    cfg = _cfg(inversion_steps=2)
    bundle = load_clip(cfg.model_name, None, seed=0)
    model = bundle.model
    inv = Inversion.for_bundle(bundle, cfg)
    words = inv.mapper(torch.randn(5, model.text_projection.shape[1]))
    assert words.shape == (
        5,
        cfg.inversion_tokens,
        model.token_embedding.weight.shape[1],
    )
    real = model.token_embedding.weight.detach().norm(dim=-1).mean()
    torch.testing.assert_close(
        words.norm(dim=-1),
        torch.full((5, cfg.inversion_tokens), cfg.inversion_scale * real),
    )
    x = torch.randn(6, 3, bundle.image_size, bundle.image_size)
    photos = torch.nn.functional.normalize(model.encode_image(x), dim=-1)
    loss = inv.loss(model, photos, cfg.inversion_tau)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None for n, g in grads.items() if n.startswith("visual."))
    assert grads["transformer.resblocks.0.attn.in_proj_weight"].abs().sum() > 0
    assert all(p.grad is not None for p in inv.mapper.parameters())


def test_second_phase_reuses_the_first_and_equals_a_straight_run(tmp_path, monkeypatch):
    from duet_lib.models.pretrain import pretrain_dir

    teach = PretrainConfig.for_profile("teach")
    assert teach.inversion_steps == 300  # the book's backbone has both phases
    assert PretrainConfig.for_profile("smoke").inversion_steps == 0
    assert teach.first_phase().inversion_steps == 0
    cfg = _cfg(steps=2, inversion_steps=2)
    # the first phase is the configuration without the inversion fields: its key
    # is the one written before they existed
    assert cfg.first_phase().key() == _cfg(steps=2, inversion_steps=0).key()
    assert cfg.key() != cfg.first_phase().key() and cfg.total_steps == 4

    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path / "a"))
    first = pretrain_clip(cfg.first_phase(), quiet=True)
    both = pretrain_clip(cfg, quiet=True)
    assert both.trained_now and both.resumed_from == 2  # started from the cache
    assert both.history[:2] == first.history
    assert all("inversion" in h for h in both.history[2:])
    assert all("inversion" not in h for h in first.history)
    a, f = _state(both.bundle), _state(first.bundle)
    key = "transformer.resblocks.0.attn.in_proj_weight"
    assert not torch.equal(a[key], f[key])

    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path / "b"))
    straight = pretrain_clip(cfg, quiet=True)
    assert straight.resumed_from == 0
    assert (pretrain_dir(cfg.first_phase()) / "model.pt").is_file()  # kept on the way
    b = _state(straight.bundle)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    with pytest.raises(ValueError, match="inversion_steps"):
        _cfg(inversion_steps=-1)
    with pytest.raises(ValueError, match="inversion_tau"):
        _cfg(inversion_tau=0.0)


def test_text_only_second_phase_moves_the_text_tower_and_resumes_exactly(
    tmp_path, monkeypatch
):
    from duet_lib.models.pretrain import pretrain_dir

    cfg = _cfg(steps=2, inversion_steps=3, inversion_text_only=True)
    assert cfg.first_phase().key() == _cfg(steps=2, inversion_steps=0).key()
    assert cfg.key() != _cfg(steps=2, inversion_steps=3).key()
    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path / "a"))
    part = pretrain_clip(cfg, quiet=True, stop_after=4)  # inside the second phase
    resumed = pretrain_clip(cfg, quiet=True)
    assert resumed.resumed_from == 4
    first = _state(pretrain_clip(cfg.first_phase(), quiet=True).bundle)
    final = _state(resumed.bundle)
    visual = [k for k in final if k.startswith("visual.")]
    text = [k for k in final if k.startswith(("transformer.", "token_embedding"))]
    assert visual and text
    for k in visual:  # the image tower is the first phase's, to the bit
        torch.testing.assert_close(final[k], first[k], rtol=0, atol=0, msg=k)
    assert all(not torch.equal(final[k], first[k]) for k in text)
    # no image-image term in the text-only steps; the image tower is trainable again
    assert all("image_image" not in h and "inversion" in h for h in part.history[2:])
    assert all(p.requires_grad for p in resumed.bundle.model.parameters())

    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path / "b"))
    straight = pretrain_clip(cfg, quiet=True)
    assert (pretrain_dir(cfg) / "model.pt").is_file()
    for k, v in _state(straight.bundle).items():
        torch.testing.assert_close(final[k], v, rtol=0, atol=0, msg=k)


def test_hog_features_computed_once_train_the_same_weights(tmp_path, monkeypatch):
    # the HOG stem's histograms have no parameters: pretraining computes them once
    # per corpus image, and must reach the weights of computing them in every step
    from duet_lib.models import pretrain as pt

    cfg = _cfg(model_name="duet-tiny-hog-96", steps=3, inversion_steps=2)
    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path / "once"))
    once = pretrain_clip(cfg, quiet=True)
    monkeypatch.setattr(pt, "fixed_stem_features", lambda bundle, corpus: None)
    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path / "every"))
    every = pretrain_clip(cfg, quiet=True)
    a, b = _state(once.bundle), _state(every.bundle)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert [h["loss"] for h in once.history] == [h["loss"] for h in every.history]


def test_fixed_stem_features_stand_in_for_the_images():
    from duet_lib.models.clip import load_clip
    from duet_lib.models.pretrain import _to_batch, fixed_stem_features, world_corpus

    cfg = _cfg(model_name="duet-tiny-hog-96")
    hog = load_clip("duet-tiny-hog-96", None, seed=0)
    corpus = world_corpus(cfg, hog.image_size)
    table = fixed_stem_features(hog, corpus, batch=5)  # batches of 5: same features
    assert set(table) == {"a", "b", "d"} and len(table["d"]) == len(corpus.drawing)
    images = _to_batch(corpus.view_b, hog)
    torch.testing.assert_close(
        table["b"], hog.model.visual.conv1.features(images), rtol=0, atol=0
    )
    with torch.no_grad():
        torch.testing.assert_close(
            hog.model.encode_image(table["b"]),
            hog.model.encode_image(images),
            rtol=0,
            atol=0,
        )
    conv = load_clip("duet-tiny-conv-96", None, seed=0)
    assert fixed_stem_features(conv, corpus) is None  # a learned stem has none


def test_composed_inversion_rows_read_pseudo_words_before_real_words(
    tmp_path, monkeypatch
):
    from duet_lib.models.clip import load_clip
    from duet_lib.models.pretrain import Inversion, _composed_rows, world_corpus

    cfg = _cfg(steps=2, inversion_steps=2, inversion_mix=0.5)
    bundle = load_clip(cfg.model_name, None, seed=0)
    inv = Inversion.for_bundle(bundle, cfg)
    photos = torch.nn.functional.normalize(torch.randn(4, bundle.embed_dim), dim=-1)
    other = torch.nn.functional.normalize(torch.randn(4, bundle.embed_dim), dim=-1)
    with torch.no_grad():
        plain = inv.loss(bundle.model, photos, 0.07)
        words = ["", "in red", "", "with stripes on grass"]
        mixed = inv.loss(bundle.model, photos, 0.07, sources=other, suffixes=words)
        same = inv.loss(bundle.model, photos, 0.07, sources=photos, suffixes=[""] * 4)
    torch.testing.assert_close(same, plain)  # empty suffixes are the plain template
    assert not torch.isclose(mixed, plain)
    with pytest.raises(ValueError, match="one string per row"):
        inv.loss(bundle.model, photos, 0.07, suffixes=["x"])

    corpus = world_corpus(cfg, bundle.image_size)
    idx = np.arange(8)
    rows, phrases = _composed_rows(cfg, 5, idx, corpus)
    again, same_phrases = _composed_rows(cfg, 5, idx, corpus)
    assert torch.equal(rows, again) and phrases == same_phrases
    assert all(
        (p != "") == bool(r) for p, r in zip(phrases, rows.tolist(), strict=True)
    )
    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path))
    run = pretrain_clip(cfg, quiet=True)
    assert len(run.history) == 4 and "inversion" in run.history[-1]


def test_fast_backbone_preset_and_bad_speed_settings():
    fast = PretrainConfig.for_profile("teach", model_name="duet-tiny-conv32-96")
    assert (fast.text_buckets, fast.math_attention) == (3, True)
    assert fast.inversion_steps == 0  # the recipe it was measured with
    default = PretrainConfig.for_profile("teach")
    assert (default.text_buckets, default.math_attention) == (1, False)
    off = PretrainConfig.for_profile(
        "teach", model_name="duet-tiny-conv32-96", text_buckets=1
    )
    assert off.text_buckets == 1 and off.math_attention
    with pytest.raises(ValueError, match="text_buckets must be >= 1"):
        _cfg(text_buckets=0)


def test_chapter_02_teach_literals_build_the_teach_preset():
    # chapter 02 passes its parameter literals to PretrainConfig.for_profile, and the
    # later chapters load book_clip("teach"): the two must name the same cache entry,
    # or chapter 02 would train a backbone no later chapter reads
    from duet_lib import book

    (chapter,) = book.select(book.discover(), ["02"])
    # the teach profile runs the literals of the parameters cell (source text here)
    declared = book.declared_parameters(chapter.notebook)
    p = {name: ast.literal_eval(text) for name, text in declared.items()}

    def from_chapter(model_name: str) -> PretrainConfig:
        # as the chapter builds it: a None length keeps the backbone's preset
        return PretrainConfig.for_profile(
            "teach",
            model_name=model_name,
            seed=p["seed"],
            steps=p["pretrain_steps"],
            inversion_steps=p["inversion_steps"],
            batch_size=p["batch_size"],
            corpus_size=p["subset_size"],
        )

    assert (
        from_chapter(p["model_name"]).key() == PretrainConfig.for_profile("teach").key()
    )
    # a reader who runs chapter 02 on another backbone trains what the later
    # chapters load for that name (chapter_backbone -> book_clip)
    for name in ("duet-tiny-hog-96", "duet-tiny-hog32-96", "duet-tiny-conv32-96"):
        assert from_chapter(name) == PretrainConfig.for_profile(
            "teach", model_name=name
        )


def test_hog_backbone_preset_is_its_short_recipe_and_smoke_stays_small():
    hog = PretrainConfig.for_profile("teach", model_name="duet-tiny-hog-96")
    assert (hog.optimizer, hog.image_image_weight, hog.lr) == ("muon", 1.5, 1.2e-2)
    assert (hog.steps, hog.inversion_steps) == (720, 900)
    assert (hog.text_buckets, hog.math_attention) == (3, True)
    # its second phase trains the whole model (text only cost a seed's sketch query)
    assert not hog.inversion_text_only
    # the 3 x 3 HOG grid: the same recipe with the image-image term at 1
    hog32 = PretrainConfig.for_profile("teach", model_name="duet-tiny-hog32-96")
    assert hog32 == replace(
        hog, model_name="duet-tiny-hog32-96", image_image_weight=1.0
    )
    assert hog32.first_phase().key() != hog.first_phase().key()
    # the default keeps its own recipe
    default = PretrainConfig.for_profile("teach")
    assert (default.optimizer, default.steps, default.lr) == ("adamw", 2100, 2e-3)
    assert not default.inversion_text_only
    # smoke sizes win over the preset's steps; the preset's optimiser stays
    smoke = PretrainConfig.for_profile("smoke", model_name="duet-tiny-hog-96")
    assert (smoke.steps, smoke.batch_size, smoke.corpus_size) == (3, 8, 32)
    assert smoke.inversion_steps == 0  # smoke has no second phase
    assert smoke.optimizer == "muon"
    # an explicit override wins over the preset
    assert (
        PretrainConfig.for_profile(
            "teach", model_name="duet-tiny-hog-96", steps=360
        ).steps
        == 360
    )


def test_shape_targets_are_standardised_per_category_with_a_mask():
    from duet_lib.data.world import pretraining_corpus
    from duet_lib.models.pretrain import shape_targets

    corpus = pretraining_corpus(24, 32, seed=3, workers=1, quiet=True, drawings=False)
    attrs = list(corpus.attributes)
    targets, mask = shape_targets(attrs)
    cats = np.array([a["category"] for a in attrs])
    assert set(cats) == {"chair", "shoe"} and targets.shape == mask.shape
    for cat in ("chair", "shoe"):
        rows = torch.from_numpy(cats == cat)
        cols = mask[rows].bool().all(0)  # the category's own columns
        assert cols.any() and not mask[rows][:, ~cols].any()
        assert torch.all(targets[rows][:, ~cols] == 0)
        block = targets[rows][:, cols]
        varying = block.std(0, unbiased=False) > 1e-3
        torch.testing.assert_close(
            block.mean(0), torch.zeros(block.shape[1]), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            block[:, varying].std(0, unbiased=False),
            torch.ones(int(varying.sum())),
            atol=1e-3,
            rtol=0,
        )
    # the two categories' columns do not overlap
    assert not (
        mask[torch.from_numpy(cats == "chair")].bool().any(0)
        & mask[torch.from_numpy(cats == "shoe")].bool().any(0)
    ).any()
    with pytest.raises(ValueError, match="at least one"):
        shape_targets([])


def test_shape_weight_is_validated_and_named_in_the_key():
    with pytest.raises(ValueError, match="shape_weight"):
        _cfg(shape_weight=-1.0)
    assert _cfg(shape_weight=0.0).key() == _cfg().key()
    assert _cfg(shape_weight=1.0).key() != _cfg().key()


def test_shape_term_trains_its_head_and_resumes_exactly(tmp_path, monkeypatch):
    # the head lives only in pretraining: the saved model has the plain CLIP's
    # tensors; an interrupted run restores the head and reaches the same weights
    cfg = _cfg(shape_weight=1.0, inversion_steps=2)
    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path / "a"))
    part = pretrain_clip(cfg, quiet=True, stop_after=3)
    assert all("shape" in h for h in part.history)
    resumed = pretrain_clip(cfg, quiet=True)
    first, second = resumed.history[: cfg.steps], resumed.history[cfg.steps :]
    assert all("shape" in h for h in first) and not any("shape" in h for h in second)
    assert all(np.isfinite(h["shape"]) and h["shape"] > 0 for h in first)
    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path / "b"))
    straight = pretrain_clip(cfg, quiet=True)
    a, b = _state(resumed.bundle), _state(straight.bundle)
    assert (
        a.keys()
        == b.keys()
        == _state(pretrain_clip(_cfg(inversion_steps=2), quiet=True).bundle).keys()
    )
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    # the term changes what is learned
    plain = _state(pretrain_clip(_cfg(inversion_steps=2), quiet=True).bundle)
    assert any(not torch.equal(a[k], plain[k]) for k in a)


def test_shape_loss_is_zero_at_the_targets_and_ignores_masked_columns():
    from torch import nn

    from duet_lib.models.pretrain import shape_loss

    head = nn.Linear(4, 3)
    emb = torch.nn.functional.normalize(torch.randn(5, 4), dim=-1)
    with torch.no_grad():
        pred = head(emb * 2.0)  # sqrt(E) = 2 for E = 4
    mask = torch.tensor([[1.0, 1.0, 0.0]]).expand(5, 3)
    targets = pred.clone()
    targets[:, 2] += 100.0  # masked out
    assert shape_loss(head, emb, targets, mask).item() < 1e-10
    targets[:, 0] += 1.0
    torch.testing.assert_close(shape_loss(head, emb, targets, mask), torch.tensor(0.5))


def test_shape_term_without_corpus_attributes_fails_clearly(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from duet_lib.models.pretrain import world_corpus

    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path))

    def bare(cfg, size):
        full = world_corpus(cfg, size)
        fields = ("view_a", "view_b", "drawing", "caption_a", "caption_b")
        return SimpleNamespace(
            **{f: getattr(full, f) for f in fields},
            caption_drawing=full.caption_drawing,
        )

    with pytest.raises(ValueError, match="needs the corpus attributes"):
        pretrain_clip(_cfg(shape_weight=1.0), corpus_fn=bare, quiet=True)
    assert not list(tmp_path.rglob("*.pt"))  # nothing half-written


def test_optimizer_is_validated_and_named_in_the_key():
    with pytest.raises(ValueError, match="optimizer must be one of adamw, muon"):
        _cfg(optimizer="sgd")
    assert _cfg(optimizer="adamw").key() == _cfg().key()
    assert _cfg(optimizer="muon").key() != _cfg().key()


def test_muon_takes_the_block_matrices_and_adamw_everything_else():
    from duet_lib.models.clip import load_clip
    from duet_lib.models.pretrain import MuonAdamW, _make_optimizer, muon_parameters

    model = load_clip("duet-tiny-conv-96", None, seed=0).model
    names = {id(p): n for n, p in model.named_parameters()}
    opt = _make_optimizer(model, _cfg(optimizer="muon"))
    assert isinstance(opt, MuonAdamW)
    muon = [names[id(p)] for g in opt.muon.param_groups for p in g["params"]]
    adamw = [names[id(p)] for g in opt.adamw.param_groups for p in g["params"]]
    # 4 matrices per block (attention in/out, MLP in/out), 4 blocks per tower
    assert len(muon) == 32 == len(muon_parameters(model))
    assert all("resblocks" in n and n.endswith("weight") for n in muon)
    assert any(n.startswith("visual.") for n in muon)
    assert any(n.startswith("transformer.") for n in muon)
    assert not set(muon) & set(adamw)
    assert sorted(muon + adamw) == sorted(names.values())
    for n in ("token_embedding.weight", "text_projection", "visual.proj"):
        assert n in adamw
    # one schedule reaches both: the loop sets the rate on every group
    assert len(opt.param_groups) == len(opt.adamw.param_groups) + 1
    # the second phase (an inversion map) keeps plain AdamW
    second = _make_optimizer(model, _cfg(optimizer="muon"), extra=torch.nn.Linear(2, 2))
    assert isinstance(second, torch.optim.AdamW)
    with pytest.raises(ValueError, match="not a Muon"):
        opt.load_state_dict(second.state_dict())


def test_muon_run_resumes_exactly_and_differs_from_adamw(tmp_path, monkeypatch):
    cfg = _cfg(optimizer="muon", inversion_steps=2)
    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path / "a"))
    pretrain_clip(cfg, quiet=True, stop_after=3)  # inside the first phase
    resumed = pretrain_clip(cfg, quiet=True)
    assert resumed.resumed_from == 3
    monkeypatch.setenv("DUET_CACHE_DIR", str(tmp_path / "b"))
    straight = pretrain_clip(cfg, quiet=True)
    a, b = _state(resumed.bundle), _state(straight.bundle)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    plain = _state(pretrain_clip(_cfg(inversion_steps=2), quiet=True).bundle)
    assert a.keys() == plain.keys()
    assert any(not torch.equal(a[k], plain[k]) for k in a)
    assert all(np.isfinite(h["loss"]) for h in resumed.history)
