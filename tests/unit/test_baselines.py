"""Tests for duet_lib.baselines: B-CLIP, late fusion, two-stage textual inversion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from duet_lib.baselines import (
    BaselineConfig,
    bclip_triplet_loss,
    evaluate_baselines,
    evaluate_bclip,
    evaluate_inversion,
    evaluate_text_only,
    load_baseline,
    train_bclip,
    train_inversion,
)
from duet_lib.data.pairs import SketchPhotoPairs
from duet_lib.data.records import SketchPhotoSet, SketchRecord
from duet_lib.data.world import WorldConfig, duet_queries, generate_world, load_world
from duet_lib.models.clip import freeze_for_duet, load_clip
from duet_lib.models.converter import VisualToWord
from duet_lib.models.text_encoding import PLACEHOLDER
from duet_lib.train import TrainConfig, build_model, evaluate_duet
from tests.unit.test_pairs_data import plain_set

MODEL = "duet-tiny-conv-96"

#: Rates of retrieval_report (every key that is a fraction).
RATE_KEYS = ("acc@1", "acc@5", "acc@10", "chance@1", "chance@5", "chance@10", "mrr")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SketchPhotoSet:
    cfg = WorldConfig.for_profile("smoke", train_shapes=5, test_shapes=3, image_size=96)
    root = generate_world(cfg, tmp_path_factory.mktemp("world") / "w", quiet=True)
    return load_world(root, val_fraction=0.2)


def small_config(**changes) -> BaselineConfig:
    base = dict(
        device="cpu",
        quiet=True,
        steps=4,
        batch_size=4,
        eval_every=2,
        eval_batch_size=64,
        lr=3e-3,
        lr_map=3e-3,
    )
    return BaselineConfig(**{**base, **changes})


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


def _layernorm_names(model: nn.Module) -> list[str]:
    """Visual LayerNorm parameter names, found independently of freeze_for_duet."""
    names = []
    for mod_name, module in model.visual.named_modules():
        if isinstance(module, nn.LayerNorm):
            names += [f"visual.{mod_name}.{p}" for p, _ in module.named_parameters()]
    return sorted(names)


def _suffixes(metrics: dict, prefix: str, exclude: tuple[str, ...] = ()) -> set[str]:
    return {
        k[len(prefix) + 1 :]
        for k in metrics
        if k.startswith(prefix + "_") and not k.startswith(exclude)
    }


class _NoSketches(list):
    """A sketch list that fails on any read."""

    def _fail(self, *args, **kwargs):
        raise AssertionError("the sketches were read")

    __iter__ = __getitem__ = __len__ = __contains__ = _fail


def _climbing(monkeypatch: pytest.MonkeyPatch, target: str, key: str) -> list[str]:
    """Replace a validation function by one whose metric rises at every call."""
    calls: list[str] = []

    def fake(*args, **kwargs):
        calls.append(str(args[2]) if len(args) > 2 else "")
        return {key: len(calls) / 100.0}

    monkeypatch.setattr(target, fake)
    return calls


# ----------------------------------------------------------------------- config


def test_config_validation_and_round_trip() -> None:
    cfg = small_config(negatives=["random", "same_appearance"], mining="batch_hardest")
    assert cfg.negatives == ("random", "same_appearance")
    assert cfg.negative_kinds() == ("same_appearance", "random")
    assert BaselineConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.inversion_steps() == cfg.steps
    assert small_config(map_steps=9).inversion_steps() == 9
    # a run is named by the fields its method uses
    fixed = small_config(map_steps=5)
    assert fixed.identity("inversion") == fixed.replace(steps=9).identity("inversion")
    assert fixed.identity("bclip") != fixed.replace(steps=9).identity("bclip")
    assert cfg.identity("inversion") == cfg.replace(margin=0.5).identity("inversion")
    assert cfg.identity("bclip") != cfg.replace(margin=0.5).identity("bclip")
    # the map's output (how many pseudo-words, how large) decides its numbers too
    for change in ({"word_tokens": 3}, {"word_scale": 3.0}):
        assert cfg.identity("inversion") != cfg.replace(**change).identity("inversion")
        assert cfg.identity("bclip") == cfg.replace(**change).identity("bclip")
    with pytest.raises(ValueError) as err:
        small_config(steps=0, lr=-1.0, mining="hardest", word_scale=0.0)
    message = str(err.value)
    assert message.startswith("invalid BaselineConfig")
    assert all(name in message for name in ("steps", "lr", "mining", "word_scale"))
    with pytest.raises(ValueError, match="same_shape"):
        small_config(negatives=("same_shape",))
    with pytest.raises(ValueError, match="needs negatives"):
        small_config(negatives=(), mining="given")
    with pytest.raises(ValueError, match="placeholder"):
        small_config(template="a photo of a shoe")
    with pytest.raises(ValueError, match="batch_size"):
        small_config(batch_size=1)
    with pytest.raises(ValueError, match="stroke_drop"):
        small_config(stroke_drop=2.0)
    with pytest.raises(ValueError, match="unknown BaselineConfig field"):
        BaselineConfig.from_dict({"learning_rate": 0.1})


# ----------------------------------------------------------------------- B-CLIP


def test_bclip_triplet_loss_goes_down_on_a_fixed_batch(world: SketchPhotoSet) -> None:
    cfg = small_config()
    bundle = load_clip(MODEL, seed=0)
    freeze_for_duet(bundle.model)
    data = SketchPhotoPairs(
        world,
        "train",
        bundle.image_size,
        bundle.image_mean,
        bundle.image_std,
        negatives=cfg.negative_kinds(),
    )
    batch = next(iter(DataLoader(data, batch_size=8)))
    params = [p for p in bundle.model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(8):
        loss = bclip_triplet_loss(bundle, batch, cfg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.95 * losses[0], losses


def test_bclip_trains_only_layernorms_and_selects_on_val(
    world: SketchPhotoSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A validation metric that improves at every evaluation makes the last state
    # the selected one, so the trained LayerNorms are what comes back.
    calls = _climbing(
        monkeypatch, "duet_lib.baselines.evaluate_bclip", "bclip_fg_acc@1"
    )
    bundle = load_clip(MODEL, seed=0)
    before = _snapshot(bundle.model)
    result = train_bclip(bundle, world, small_config(steps=4, eval_every=2))
    assert calls == ["val", "val", "val"]  # steps 0, 2, 4; never "test"
    assert [v["step"] for v in result.history["val"]] == [0, 2, 4]
    assert result.best_step == 4 and result.select_metric == "bclip_fg_acc@1"
    expected = _layernorm_names(bundle.model)
    assert result.trainable_names == expected and expected
    # the input bundle is untouched; the copy differs in LayerNorms only
    assert all(torch.equal(before[k], v) for k, v in bundle.model.state_dict().items())
    after = result.bundle.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= set(expected)
    assert result.bundle.model is not bundle.model
    assert len(result.history["train"]) == 4


class _Recording(SketchPhotoSet):
    """Remembers which splits were asked for."""

    seen: set

    def sketches_in(self, split: str):
        self.seen.add(split)
        return super().sketches_in(split)

    def photo_ids(self, split: str):
        self.seen.add(split)
        return super().photo_ids(split)


def test_bclip_never_reads_the_test_split(world: SketchPhotoSet) -> None:
    photos = {
        p: Path("/nonexistent") / f"{p}.png" if world.photo_split[p] == "test" else path
        for p, path in world.photos.items()
    }
    sketches = [
        SketchRecord(s.key, s.photo_id, s.split) if s.split == "test" else s
        for s in world.sketches
    ]
    guarded = _Recording(
        world.name,
        world.root,
        photos,
        dict(world.photo_split),
        sketches,
        attributes=world.attributes,
    )
    guarded.seen = set()
    result = train_bclip(load_clip(MODEL, seed=0), guarded, small_config(steps=2))
    assert guarded.seen == {"train", "val"}
    assert 0.0 <= result.best_value <= 1.0


def test_same_seed_same_numbers(world: SketchPhotoSet) -> None:
    cfg = small_config(steps=3, eval_every=3)
    runs = [
        (
            train_bclip(load_clip(MODEL, seed=0), world, cfg),
            train_inversion(load_clip(MODEL, seed=0), world, cfg),
        )
        for _ in range(2)
    ]
    (b1, i1), (b2, i2) = runs
    assert [r["loss"] for r in b1.history["train"]] == [
        r["loss"] for r in b2.history["train"]
    ]
    assert b1.history["val"] == b2.history["val"]
    assert [r["loss"] for r in i1.history["train"]] == [
        r["loss"] for r in i2.history["train"]
    ]
    assert i1.history["val"] == i2.history["val"]
    m1 = evaluate_baselines(world, "test", bclip=b1, inversion=i1)
    m2 = evaluate_baselines(world, "test", bclip=b2, inversion=i2)
    assert m1 == m2
    other = train_inversion(load_clip(MODEL, seed=0), world, cfg.replace(seed=1))
    assert [r["loss"] for r in other.history["train"]] != [
        r["loss"] for r in i1.history["train"]
    ]


# ------------------------------------------------------------ textual inversion


def test_inversion_reads_no_sketch_and_trains_only_phi(
    world: SketchPhotoSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _climbing(
        monkeypatch, "duet_lib.baselines._roundtrip_metrics", "inversion_photo_acc@1"
    )
    photos_only = SketchPhotoSet(
        world.name,
        world.root,
        dict(world.photos),
        dict(world.photo_split),
        _NoSketches(),
        attributes=world.attributes,
    )
    bundle = load_clip(MODEL, seed=0)
    bundle.model.train()
    before = _snapshot(bundle.model)
    flags = {n: p.requires_grad for n, p in bundle.model.named_parameters()}
    cfg = small_config(map_steps=4, eval_every=2)
    result = train_inversion(bundle, photos_only, cfg)
    assert len(calls) == 3 and result.best_step == 4
    # the backbone is bit-identical, its flags and mode restored
    assert all(torch.equal(before[k], v) for k, v in bundle.model.state_dict().items())
    assert {n: p.requires_grad for n, p in bundle.model.named_parameters()} == flags
    assert bundle.model.training
    # phi moved away from its initialisation
    start = VisualToWord(
        bundle.embed_dim,
        bundle.token_dim,
        dropout=cfg.map_dropout,
        token_norm=1.0,
        seed=cfg.seed,
    )
    trained = dict(result.mapper.named_parameters())
    assert result.trainable_names == sorted(trained)
    assert any(not torch.equal(p, trained[n]) for n, p in start.named_parameters())
    assert result.bundle is bundle and not result.mapper.training


def test_inversion_word_scale_sets_the_pseudo_word_norm(world: SketchPhotoSet) -> None:
    clip = load_clip(MODEL, seed=0)
    real = float(clip.model.token_embedding.weight.detach().norm(dim=1).mean())
    emb = torch.randn(5, clip.embed_dim)
    for scale in (1.0, 3.0):
        cfg = small_config(map_steps=1, eval_every=1, word_scale=scale, word_tokens=2)
        mapper = train_inversion(clip, world, cfg).mapper
        with torch.no_grad():
            norms = mapper(emb).norm(dim=-1)
        torch.testing.assert_close(norms, torch.full((5, 2), scale * real))


@pytest.mark.parametrize("word_tokens", [1, 3])
def test_inversion_loss_goes_down(world: SketchPhotoSet, word_tokens: int) -> None:
    cfg = small_config(
        map_steps=12, eval_every=12, batch_size=8, lr_map=1e-2, word_tokens=word_tokens
    )
    clip = load_clip(MODEL, seed=0)
    result = train_inversion(clip, world, cfg)
    losses = [r["loss"] for r in result.history["train"]]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first, losses
    # a phrase of K pseudo-words: K placeholders in the stored template
    assert result.template.count(PLACEHOLDER) == word_tokens
    assert result.mapper.n_tokens == word_tokens
    metrics = evaluate_inversion(
        clip, result.mapper, world, "val", template=result.template
    )
    assert 0.0 <= metrics["inversion_fg_acc@1"] <= 1.0
    if word_tokens > 1:
        with pytest.raises(ValueError, match="per pseudo-word"):
            evaluate_inversion(clip, result.mapper, world, "val")


# ------------------------------------------------------------------- evaluation


def test_metric_keys_follow_evaluate_duet(world: SketchPhotoSet) -> None:
    duet = build_model(TrainConfig(device="cpu"), load_clip(MODEL, seed=0)).eval()
    reference = evaluate_duet(duet, world, "test", batch_size=64)
    clip = load_clip(MODEL, seed=0)
    inversion = train_inversion(clip, world, small_config(steps=2))
    metrics = evaluate_baselines(
        world, "test", clip=clip, bclip=load_clip(MODEL, seed=0), inversion=inversion
    )
    fg_keys = _suffixes(reference, "fgsbir")
    composed = _suffixes(reference, "sketch")
    assert {"acc@1", "acc@10", "shape@1"} <= fg_keys
    assert {"acc@1", "acc@10", "shape@1", "appearance@1", "colour@1"} <= composed
    assert _suffixes(metrics, "bclip_fg") == fg_keys
    assert _suffixes(metrics, "inversion_fg") == fg_keys
    assert _suffixes(metrics, "text") == composed
    assert _suffixes(metrics, "bclip_fusion") == composed
    assert _suffixes(metrics, "bclip", ("bclip_fg", "bclip_fusion")) == composed
    assert _suffixes(metrics, "inversion", ("inversion_fg",)) == composed
    n_queries = len(duet_queries(world, "test"))
    assert metrics["inversion_n_queries"] == n_queries == metrics["text_n_queries"]
    for key, value in metrics.items():
        if key.endswith(RATE_KEYS + ("shape@1", "appearance@1", "colour@1")):
            assert 0.0 <= value <= 1.0, key
    # the same galleries and queries as evaluate_duet: an untuned image encoder
    # gives its visual_* numbers, the frozen text tower its text_* numbers
    for suffix in fg_keys:
        assert metrics[f"bclip_fg_{suffix}"] == pytest.approx(
            reference[f"visual_{suffix}"]
        )
    for suffix in composed:
        assert metrics[f"text_{suffix}"] == pytest.approx(reference[f"text_{suffix}"])
    # each method alone gives the same numbers as in the combined call
    alone = evaluate_text_only(clip, world, "test", batch_size=5)
    assert alone == pytest.approx({k: v for k, v in metrics.items() if k in alone})
    inv = evaluate_inversion(clip, inversion.mapper, world, "test", batch_size=7)
    assert inv == pytest.approx({k: v for k, v in metrics.items() if k in inv})


def test_fusion_with_zero_weight_is_sketch_only(world: SketchPhotoSet) -> None:
    bundle = load_clip(MODEL, seed=0)
    metrics = evaluate_bclip(bundle, world, "test", fusion_weight=0.0)
    composed = _suffixes(metrics, "bclip", ("bclip_fg", "bclip_fusion"))
    assert composed
    for suffix in composed:
        assert metrics[f"bclip_fusion_{suffix}"] == metrics[f"bclip_{suffix}"]
    heavy = evaluate_bclip(bundle, world, "test", fusion_weight=1e4)
    text = evaluate_text_only(bundle, world, "test")
    # with an overwhelming text weight, late fusion ranks like the text alone
    assert heavy["bclip_fusion_acc@1"] == pytest.approx(text["text_acc@1"])


def test_plain_dataset_and_bad_inputs(world: SketchPhotoSet, tmp_path: Path) -> None:
    ds = plain_set(tmp_path)
    bundle = load_clip(MODEL, seed=0)
    fg_only = evaluate_bclip(bundle, ds, "train")
    assert fg_only["bclip_fg_n_gallery"] == 4 and fg_only["bclip_fg_n_queries"] == 8
    assert not any(k.startswith(("bclip_fusion", "bclip_acc")) for k in fg_only)
    texts = [f"in colour {i}" for i in range(8)]
    composed = evaluate_baselines(ds, "train", clip=bundle, bclip=bundle, texts=texts)
    assert composed["text_n_gallery"] == 4 and "bclip_fusion_acc@1" in composed
    with pytest.raises(ValueError, match="needs query texts"):
        evaluate_text_only(bundle, ds, "train")
    with pytest.raises(ValueError, match="composed queries"):
        evaluate_bclip(bundle, world, "test", texts=["in red"])
    with pytest.raises(ValueError, match="fusion_weight"):
        evaluate_bclip(bundle, world, "test", fusion_weight=-1.0)
    with pytest.raises(ValueError, match="at least one"):
        evaluate_baselines(world, "test")
    with pytest.raises(ValueError, match="placeholder"):
        mapper = VisualToWord(bundle.embed_dim, bundle.token_dim, seed=0)
        evaluate_inversion(bundle, mapper, world, "test", texts="costs ${phrase}")
    with pytest.raises(ValueError, match="fewer than the batch"):
        train_bclip(bundle, world, small_config(batch_size=64))
    no_val = SketchPhotoSet(
        world.name,
        world.root,
        world.photos,
        {p: "train" if s == "val" else s for p, s in world.photo_split.items()},
        [s for s in world.sketches if s.split != "val"],
        attributes=world.attributes,
    )
    with pytest.raises(ValueError, match="no val photos"):
        train_inversion(bundle, no_val, small_config())
    with pytest.raises(ValueError, match="no val sketches"):
        train_bclip(bundle, no_val, small_config())
    with pytest.raises(ValueError, match="BaselineConfig"):
        train_bclip(bundle, world, {"steps": 2})


def test_checkpoints_reload_without_training(
    world: SketchPhotoSet, tmp_path: Path
) -> None:
    cfg = small_config(steps=2)
    bclip = train_bclip(load_clip(MODEL, seed=0), world, cfg, tmp_path)
    inversion = train_inversion(load_clip(MODEL, seed=0), world, cfg, tmp_path)
    assert (tmp_path / "bclip.pt").exists() and (tmp_path / "inversion.pt").exists()
    saved = json.loads((tmp_path / "bclip_history.json").read_text())
    assert saved == bclip.history
    again = train_bclip(load_clip(MODEL, seed=0), world, cfg, tmp_path)
    assert not again.trained_now and again.best_step == bclip.best_step
    loaded = load_baseline(load_clip(MODEL, seed=0), tmp_path / "inversion.pt")
    first = evaluate_baselines(world, "val", bclip=bclip, inversion=inversion)
    second = evaluate_baselines(world, "val", bclip=again, inversion=loaded)
    assert first == second
    with pytest.raises(ValueError, match="another configuration"):
        train_bclip(load_clip(MODEL, seed=0), world, cfg.replace(margin=0.3), tmp_path)
    with pytest.raises(ValueError, match="another backbone"):
        load_baseline(load_clip(MODEL, seed=1), tmp_path / "bclip.pt")
