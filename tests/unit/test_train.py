"""Tests for duet_lib.train: config, losses, resumable training, evaluation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from duet_lib.checkpoint import load_checkpoint
from duet_lib.data.pairs import SketchPhotoPairs
from duet_lib.data.records import SketchPhotoSet, SketchRecord
from duet_lib.data.world import WorldConfig, duet_queries, generate_world, load_world
from duet_lib.losses import (
    LOSS_NAMES,
    LossWeights,
    prompt_text_loss,
    total_loss,
    triplet_loss,
)
from duet_lib.metrics import acc_at_k, ranks_pessimistic
from duet_lib.models.clip import load_clip
from duet_lib.models.decoder import ImageDecoder
from duet_lib.probes import zero_shot_phrases
from duet_lib.train import (
    TrainConfig,
    _run_identity,
    _WeightAverage,
    build_model,
    duet_losses,
    evaluate_duet,
    load_trained_duet,
    loss_weights_for,
    lr_scale,
    mine_near_shapes,
    plot_history,
    train_duet,
)
from tests.unit.test_pairs_data import plain_set

MODEL = "duet-tiny-conv-96"


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


def small_config(**changes) -> TrainConfig:
    base = dict(
        device="cpu",
        max_steps=6,
        batch_size=4,
        eval_every=2,
        lr_visual=1e-3,
        lr_modules=3e-3,
        eval_batch_size=64,
    )
    return TrainConfig(**{**base, **changes})


# ----------------------------------------------------------------------- config


def test_config_round_trip_and_validation() -> None:
    cfg = small_config(weights={"rec": 0.0, "rt": 0.5}, trip_negatives=["random"])
    assert isinstance(cfg.weights, LossWeights) and cfg.weights.rec == 0.0
    assert cfg.trip_negatives == ("random",)
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert cfg.negative_kinds() == ("same_shape", "same_appearance", "random")
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ValueError, match="comp_form"):
        small_config(comp_form="contrastive")
    with pytest.raises(ValueError, match="batch_size"):
        small_config(batch_size=1)
    with pytest.raises(ValueError, match="trip_negatives"):
        small_config(trip_negatives=(), trip_mining="given")
    with pytest.raises(ValueError, match="every loss weight is 0"):
        small_config(weights={k: 0.0 for k in LOSS_NAMES})
    with pytest.raises(ValueError, match="stroke_drop"):
        small_config(stroke_drop=2.0)
    with pytest.raises(ValueError, match="sketch_tokens"):
        small_config(sketch_tokens=0)


# ----------------------------------------------------------------------- losses


@pytest.mark.parametrize("sketch_tokens", [1, 3])
def test_training_steps_lower_the_loss(world: SketchPhotoSet, sketch_tokens) -> None:
    cfg = small_config(
        lr_visual=3e-3,
        lr_modules=1e-2,
        converter_dropout=0.0,
        sketch_tokens=sketch_tokens,
        weights={"words": 1.0},  # every term, our seventh included
    )
    bundle = load_clip(MODEL, seed=0)
    model = build_model(cfg, bundle).train()
    assert model.sketch_tokens == model.converter.n_tokens == sketch_tokens
    kinds = cfg.negative_kinds()
    data = SketchPhotoPairs(
        world,
        "train",
        bundle.image_size,
        bundle.image_mean,
        bundle.image_std,
        negatives=kinds,
    )
    batch = next(iter(DataLoader(data, batch_size=6)))
    groups = model.parameter_groups()
    opt = torch.optim.Adam(
        [
            {"params": groups["visual"], "lr": 3e-3},
            {"params": groups["modules"], "lr": 1e-2},
        ]
    )
    fixed = torch.arange(6) % len(model.fixed_prompts)
    neutral = torch.arange(6) % len(model.neutral_texts)
    totals = []
    for _ in range(12):
        out = model(
            batch["sketch"],
            batch["photo"],
            batch["negatives"],
            fixed_index=fixed,
            neutral_index=neutral,
            texts=[
                world.attributes[data.photo_ids[int(i)]]["appearance_phrase"]
                for i in batch["photo_index"]
            ],
        )
        terms = duet_losses(out, batch, cfg, kinds)
        assert set(terms) == set(LOSS_NAMES)
        loss, log = total_loss(terms, cfg.weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
        totals.append(log["total"])
    assert totals[-1] < 0.9 * totals[0], totals


def test_zero_weight_terms_are_not_computed(
    world: SketchPhotoSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("a switched-off term was computed")

    monkeypatch.setattr(ImageDecoder, "forward", forbidden)
    monkeypatch.setattr("duet_lib.train.region_triplet_loss", forbidden)
    monkeypatch.setattr("duet_lib.train.neutral_regulariser", forbidden)
    cfg = small_config(max_steps=2, weights={"rec": 0.0, "rt": 0.0, "reg": 0.0})
    result = train_duet(
        cfg, load_clip(MODEL, seed=0), world, tmp_path / "run", quiet=True
    )
    assert set(result.history["train"][0]) == {
        "trip",
        "comp",
        "tt",
        "total",
        "step",
        "seconds",
    }


# --------------------------------------------------------------------- training


def killed_and_resumed(cfg: TrainConfig, world: SketchPhotoSet, folder: Path):
    """Train until step 5 (the last evaluation is step 3), then resume to the end."""
    train_duet(cfg, load_clip(MODEL, seed=0), world, folder, quiet=True, stop_after=5)
    resumed = train_duet(cfg, load_clip(MODEL, seed=0), world, folder, quiet=True)
    assert resumed.resumed_from == 3
    return resumed


def test_resume_after_a_kill_equals_a_straight_run(
    world: SketchPhotoSet, tmp_path: Path
) -> None:
    cfg = small_config(max_steps=7, eval_every=3)  # 4 steps per epoch: crosses epochs
    straight = train_duet(
        cfg, load_clip(MODEL, seed=0), world, tmp_path / "a", quiet=True
    )
    assert straight.stopped == "max_steps" and straight.step == 7
    killed = train_duet(
        cfg, load_clip(MODEL, seed=0), world, tmp_path / "b", quiet=True, stop_after=5
    )
    assert killed.stopped == "stop_after"
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 3  # the last eval
    resumed = train_duet(
        cfg, load_clip(MODEL, seed=0), world, tmp_path / "b", quiet=True
    )
    assert resumed.resumed_from == 3 and resumed.step == 7
    assert [r["total"] for r in resumed.history["train"]] == [
        r["total"] for r in straight.history["train"]
    ]
    assert resumed.history["val"] == straight.history["val"]
    assert resumed.best_metrics == straight.best_metrics
    a = load_trained_duet(load_clip(MODEL, seed=0), tmp_path / "a" / "last.pt")
    b = load_trained_duet(load_clip(MODEL, seed=0), tmp_path / "b" / "last.pt")
    sa, sb = a.trainable_state_dict(), b.trainable_state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    again = train_duet(cfg, load_clip(MODEL, seed=0), world, tmp_path / "b", quiet=True)
    assert again.stopped == "already_done" and not again.trained_now
    other = cfg.replace(margin_trip=0.3)
    with pytest.raises(ValueError, match="another configuration"):
        train_duet(other, load_clip(MODEL, seed=0), world, tmp_path / "b", quiet=True)
    fig = plot_history(straight.history)
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="no training steps"):
        plot_history({"train": [], "val": []})


def test_a_shorter_request_does_not_load_a_longer_run(
    world: SketchPhotoSet, tmp_path: Path
) -> None:
    """max_steps is not hashed: a finished run can be extended, but a folder holding
    a longer run must not answer a shorter request with its later kept state."""
    short = small_config(max_steps=3, eval_every=3)

    def run(cfg: TrainConfig):
        return train_duet(cfg, load_clip(MODEL, seed=0), world, tmp_path, quiet=True)

    run(short)
    longer = run(short.replace(max_steps=6))
    assert longer.resumed_from == 3 and longer.step == 6 and longer.trained_now
    with pytest.raises(ValueError, match="trained to step 6, beyond max_steps=3"):
        run(short)
    # the folder is untouched: the longer request still finds its finished run
    again = run(short.replace(max_steps=6))
    assert again.stopped == "already_done" and again.step == 6


def test_trip_memory_resumes_exactly_and_changes_training(
    world: SketchPhotoSet, tmp_path: Path
) -> None:
    cfg = small_config(max_steps=7, eval_every=3, trip_form="infonce", trip_memory=2)
    straight = train_duet(
        cfg, load_clip(MODEL, seed=0), world, tmp_path / "a", quiet=True
    )
    # the remembered pairs live in last.pt, so a resumed run sees the same memory
    saved = load_checkpoint(tmp_path / "a" / "last.pt")["trip_memory"]
    assert len(saved) == 2 and saved[0]["s"].shape == (4, 128)
    assert saved[0]["shape_index"].shape == (4,)
    resumed = killed_and_resumed(cfg, world, tmp_path / "b")
    assert [r["total"] for r in resumed.history["train"]] == [
        r["total"] for r in straight.history["train"]
    ]
    plain = train_duet(
        cfg.replace(trip_memory=0),
        load_clip(MODEL, seed=0),
        world,
        tmp_path / "c",
        quiet=True,
    )
    mem_trip = [r["trip"] for r in straight.history["train"]]
    plain_trip = [r["trip"] for r in plain.history["train"]]
    # step 1 has an empty memory: identical; from step 2 the memory term adds on
    assert mem_trip[0] == plain_trip[0]
    assert all(m > p for m, p in zip(mem_trip[1:], plain_trip[1:], strict=True))


def test_trip_memory_config_and_hash(world: SketchPhotoSet) -> None:
    with pytest.raises(ValueError, match='trip_memory > 0 needs trip_form="infonce"'):
        TrainConfig(trip_memory=2, trip_form="hinge")
    with pytest.raises(ValueError, match="trip_memory"):
        TrainConfig(trip_memory=-1, trip_form="infonce")
    bundle = load_clip(MODEL, seed=0)
    off = _run_identity(TrainConfig(trip_form="infonce"), bundle, world)
    on = _run_identity(TrainConfig(trip_form="infonce", trip_memory=2), bundle, world)
    # switched off, the option is left out of the run identity (cached runs keep
    # their folders); switched on, it is part of it
    assert "trip_memory" not in off["config"] and on["config"]["trip_memory"] == 2
    scaled = _run_identity(
        TrainConfig(trip_form="infonce", token_scale=3.0), bundle, world
    )
    assert "token_scale" not in off["config"]
    assert scaled["config"]["token_scale"] == 3.0
    with pytest.raises(ValueError, match="token_scale"):
        TrainConfig(token_scale=0.0)


def test_trip_temperature_is_its_own(world: SketchPhotoSet) -> None:
    gen = torch.Generator().manual_seed(0)
    b, m, f, e = 6, 1, 3, 8  # one negative column per kind
    out = {
        "q_sketch": torch.randn(b, e, generator=gen),
        "p": torch.randn(b, e, generator=gen),
        "n": torch.randn(b, m, e, generator=gen),
        "q_fixed": torch.randn(b, f, e, generator=gen),
    }
    batch = {
        "photo_index": torch.arange(b),
        "shape_index": torch.tensor([0, 0, 1, 2, 3, 4]),
    }
    kinds = ("same_appearance",)
    weights = {"comp": 0, "reg": 0, "rt": 0, "rec": 0, "tt": 1}
    shared = small_config(
        trip_form="infonce", trip_negatives=kinds, weights=weights, tau=0.1
    )
    own = shared.replace(tau_trip=0.3)
    t_shared = duet_losses(out, batch, shared, kinds)
    t_own = duet_losses(out, batch, own, kinds)

    def trip(tau: float) -> torch.Tensor:
        return triplet_loss(
            out["q_sketch"],
            out["p"],
            out["n"],
            form="infonce",
            tau=tau,
            labels=batch["shape_index"],
        )

    # None: L_trip uses tau; set: L_trip alone takes tau_trip, L_TT keeps tau
    assert torch.allclose(t_shared["trip"], trip(0.1))
    assert torch.allclose(t_own["trip"], trip(0.3))
    assert not torch.allclose(t_own["trip"], t_shared["trip"])
    expected_tt = prompt_text_loss(out["q_sketch"], out["q_fixed"], 0.1)
    assert torch.allclose(t_own["tt"], expected_tt)
    assert torch.allclose(t_shared["tt"], expected_tt)
    bundle = load_clip(MODEL, seed=0)
    assert "tau_trip" not in _run_identity(shared, bundle, world)["config"]
    assert _run_identity(own, bundle, world)["config"]["tau_trip"] == 0.3
    with pytest.raises(ValueError, match="tau_trip"):
        TrainConfig(tau_trip=0.0)


def test_words_scale_reaches_the_model_and_the_hash(world: SketchPhotoSet) -> None:
    bundle = load_clip(MODEL, seed=0)
    plain, quiet = small_config(), small_config(words_scale=0.67)
    assert "words_scale" not in _run_identity(plain, bundle, world)["config"]
    assert _run_identity(quiet, bundle, world)["config"]["words_scale"] == 0.67
    assert build_model(quiet, bundle).words_scale == 0.67
    assert build_model(plain, bundle).words_scale == 1.0
    assert TrainConfig.from_dict(quiet.to_dict()) == quiet
    with pytest.raises(ValueError, match="words_scale"):
        TrainConfig(words_scale=0.0)


def test_weight_average_is_bias_corrected() -> None:
    class Toy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))
            self.frozen = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

        def trainable_parameter_names(self) -> list[str]:
            return ["w"]

    toy, d = Toy(), 0.5
    average = _WeightAverage(toy, d)
    with average.swapped_in():  # no step yet: the weights as they are
        assert torch.equal(toy.w, torch.zeros(2))
    values = [1.0, 2.0, 3.0]
    for v in values:
        with torch.no_grad():
            toy.w.fill_(v)
        average.update()
    weights = [(1 - d) * d ** (len(values) - 1 - i) for i in range(len(values))]
    expected = sum(w * v for w, v in zip(weights, values, strict=True)) / sum(weights)
    with average.swapped_in():
        assert torch.allclose(toy.w, torch.full((2,), expected))
    # the raw weights come back after the block
    assert torch.equal(toy.w, torch.full((2,), 3.0))
    assert average.names == ["w"]


def test_weight_average_is_evaluated_saved_and_resumed(
    world: SketchPhotoSet, tmp_path: Path
) -> None:
    cfg = small_config(max_steps=7, eval_every=3, ema_decay=0.5)
    straight = train_duet(
        cfg, load_clip(MODEL, seed=0), world, tmp_path / "a", quiet=True
    )
    last = load_checkpoint(tmp_path / "a" / "last.pt")
    raw, ema = last["trainable"], last["ema"]
    assert ema["steps"] == 7 and sorted(raw) == sorted(ema["shadow"])
    avg = {k: v / (1 - 0.5**7) for k, v in ema["shadow"].items()}
    # the average trails the raw weights, and it is what best.pt and val saw
    assert any(not torch.equal(raw[k], avg[k]) for k in raw)
    model = load_trained_duet(load_clip(MODEL, seed=0), tmp_path / "a")
    assert evaluate_duet(model, world, "val") == pytest.approx(straight.best_metrics)
    model.load_trainable_state_dict(avg)
    final = {k: v for k, v in straight.history["val"][-1].items() if k != "step"}
    assert evaluate_duet(model, world, "val") == pytest.approx(final)
    # a killed run resumes its average exactly
    resumed = killed_and_resumed(cfg, world, tmp_path / "b")
    assert resumed.history["val"] == straight.history["val"]
    ema_b = load_checkpoint(tmp_path / "b" / "last.pt")["ema"]
    assert ema_b["steps"] == 7
    assert all(torch.equal(ema["shadow"][k], ema_b["shadow"][k]) for k in avg)
    # the training trajectory is the plain one; only what is evaluated differs
    plain = train_duet(
        cfg.replace(ema_decay=None),
        load_clip(MODEL, seed=0),
        world,
        tmp_path / "c",
        quiet=True,
    )
    assert [r["total"] for r in plain.history["train"]] == [
        r["total"] for r in straight.history["train"]
    ]
    bundle = load_clip(MODEL, seed=0)
    assert (
        "ema_decay"
        not in _run_identity(cfg.replace(ema_decay=None), bundle, world)["config"]
    )
    assert _run_identity(cfg, bundle, world)["config"]["ema_decay"] == 0.5
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)


def test_near_shape_negatives_are_mined_other_shapes_and_resume(
    world: SketchPhotoSet, tmp_path: Path
) -> None:
    cfg = small_config(
        max_steps=7,
        eval_every=3,
        trip_form="infonce",
        trip_negatives=("near_shape",),
        near_shape_pool=2,
    )
    model = build_model(cfg, load_clip(MODEL, seed=0))
    data = SketchPhotoPairs(world, "train", 96, (0.5,) * 3, (0.5,) * 3, negatives=())
    table = mine_near_shapes(model, data, k=2)
    assert table.shape == (len(data.photo_ids), 2)
    assert (data.photo_shape[table] != data.photo_shape[:, None]).all()
    # the closest candidate of each photo is the most similar other-shape photo
    # to the mean of its shape's sketches
    with torch.no_grad():
        photos = torch.nn.functional.normalize(
            model.encode_photo(data.photo_tensor(data.photo_ids)), dim=-1
        )
        sketches = torch.nn.functional.normalize(
            model.encode_sketch(data.sketch_tensor(range(len(data.records)))), dim=-1
        )
    first = int(data.sketch_photo[0])
    own = data.photo_shape[data.sketch_photo] == data.photo_shape[first]
    rep = sketches[torch.from_numpy(own)].sum(0)
    sim = photos @ rep
    sim[torch.from_numpy(data.photo_shape == data.photo_shape[first])] = -1e9
    assert table[first, 0] == int(sim.argmax())
    with pytest.raises(ValueError, match="own shape"):
        data.set_near_shapes(np.arange(len(data.photo_ids))[:, None])
    with pytest.raises(ValueError, match=r"must be \("):
        data.set_near_shapes(table[:1])
    plain = SketchPhotoPairs(
        world, "train", 96, (0.5,) * 3, (0.5,) * 3, negatives=("near_shape",)
    )
    with pytest.raises(ValueError, match="candidate table"):
        plain[0]
    straight = train_duet(
        cfg, load_clip(MODEL, seed=0), world, tmp_path / "a", quiet=True
    )
    resumed = killed_and_resumed(cfg, world, tmp_path / "b")
    assert [r["total"] for r in resumed.history["train"]] == [
        r["total"] for r in straight.history["train"]
    ]
    with pytest.raises(ValueError, match="near_shape_pool"):
        TrainConfig(near_shape_pool=0)


def test_lr_schedule_values_and_hash(world: SketchPhotoSet) -> None:
    const = TrainConfig(max_steps=10, warmup_steps=2)
    cos = const.replace(lr_schedule="cosine")
    assert [lr_scale(const, s) for s in (1, 2, 5, 10)] == [0.5, 1.0, 1.0, 1.0]
    # warm-up, then half a cosine period from 1 at step 2 to 0 at step 10
    assert lr_scale(cos, 1) == 0.5 and lr_scale(cos, 2) == 1.0
    assert lr_scale(cos, 6) == pytest.approx(0.5)
    assert lr_scale(cos, 10) == pytest.approx(0.0)
    values = [lr_scale(cos, s) for s in range(2, 11)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")
    bundle = load_clip(MODEL, seed=0)
    plain = _run_identity(const, bundle, world)
    # a constant schedule leaves max_steps out (a run can be extended); a cosine
    # run's numbers depend on it, so it names the run
    assert "lr_schedule" not in plain["config"] and "max_steps" not in plain["config"]
    ident = _run_identity(cos, bundle, world)
    assert ident["config"]["lr_schedule"] == "cosine"
    assert ident["config"]["max_steps"] == 10
    longer = _run_identity(cos.replace(max_steps=20), bundle, world)
    assert longer != ident


class _Recording(SketchPhotoSet):
    """Remembers which splits were asked for."""

    seen: set

    def sketches_in(self, split: str):
        self.seen.add(split)
        return super().sketches_in(split)

    def photo_ids(self, split: str):
        self.seen.add(split)
        return super().photo_ids(split)


def test_model_selection_reads_val_and_never_test(
    world: SketchPhotoSet, tmp_path: Path
) -> None:
    # Test photos point nowhere and test sketches have no content: touching any
    # of them during training would raise.
    photos = {
        p: (
            Path("/nonexistent") / f"{p}.png"
            if world.photo_split.get(p) == "test"
            else path
        )
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
    cfg = small_config(max_steps=6, eval_every=2)
    result = train_duet(
        cfg, load_clip(MODEL, seed=0), guarded, tmp_path / "run", quiet=True
    )
    assert guarded.seen == {"train", "val"}
    assert result.select_metric == "duet_acc@1"
    vals = result.history["val"]
    assert [v["step"] for v in vals] == [2, 4, 6]
    values = [v["duet_acc@1"] for v in vals]
    best = values.index(max(values))  # the first of equal values wins
    assert result.best_step == vals[best]["step"]
    stored = load_checkpoint(tmp_path / "run" / "best.pt")
    assert stored["step"] == result.best_step
    assert {"step": stored["step"], **stored["val_metrics"]} == vals[best]
    saved = json.loads((tmp_path / "run" / "history.json").read_text())
    assert saved["val"] == vals


def test_selection_on_both_queries(world: SketchPhotoSet, tmp_path: Path) -> None:
    cfg = small_config(max_steps=4, eval_every=2, select_metric="both_acc@1")
    bundle = load_clip(MODEL, seed=0)
    result = train_duet(cfg, bundle, world, tmp_path / "run", quiet=True)
    assert result.select_metric == "both_acc@1"
    vals = result.history["val"]
    for v in vals:
        assert v["both_acc@1"] == pytest.approx(
            (v["duet_acc@1"] + v["fgsbir_acc@1"]) / 2
        )
    values = [v["both_acc@1"] for v in vals]
    assert result.best_step == vals[values.index(max(values))]["step"]
    assert load_checkpoint(tmp_path / "run" / "best.pt")["step"] == result.best_step
    # the selection is part of the run's identity
    assert _run_identity(cfg, bundle, world) != _run_identity(
        small_config(max_steps=4, eval_every=2), bundle, world
    )
    # a dataset without world attributes has no duet metric to average: refused
    # before anything is trained or written
    with pytest.raises(ValueError, match="both_acc@1.*world attributes"):
        train_duet(
            cfg, bundle, plain_set(tmp_path / "plain"), tmp_path / "p", quiet=True
        )
    assert not (tmp_path / "p").exists()


def test_bad_training_inputs(world: SketchPhotoSet, tmp_path: Path) -> None:
    no_val = SketchPhotoSet(
        world.name,
        world.root,
        world.photos,
        world.photo_split,
        [s for s in world.sketches if s.split != "val"],
        attributes=world.attributes,
    )
    with pytest.raises(ValueError, match="no val sketches"):
        train_duet(
            small_config(), load_clip(MODEL, seed=0), no_val, tmp_path / "x", quiet=True
        )
    with pytest.raises(ValueError, match="fewer than the batch"):
        train_duet(
            small_config(batch_size=64),
            load_clip(MODEL, seed=0),
            world,
            tmp_path / "y",
            quiet=True,
        )


# ------------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def eval_model():
    return build_model(small_config(), load_clip(MODEL, seed=0)).eval()


def test_evaluate_world_keys(world: SketchPhotoSet, eval_model) -> None:
    metrics = evaluate_duet(eval_model, world, "test", batch_size=16)
    n_gallery = len(world.photo_ids("test"))
    n_queries = len(duet_queries(world, "test"))
    for prefix in ("fgsbir", "visual"):
        assert metrics[f"{prefix}_n_gallery"] == n_gallery
        assert metrics[f"{prefix}_n_queries"] == len(world.sketches_in("test"))
        for key in ("acc@1", "acc@5", "acc@10", "mrr", "shape@1"):
            assert 0.0 <= metrics[f"{prefix}_{key}"] <= 1.0
    for prefix in ("duet", "sketch", "text", "fusion"):
        assert metrics[f"{prefix}_n_queries"] == n_queries
        for key in ("acc@1", "acc@5", "acc@10", "shape@1", "appearance@1", "colour@1"):
            assert 0.0 <= metrics[f"{prefix}_{key}"] <= 1.0
    assert metrics["duet_chance@1"] == pytest.approx(1 / metrics["duet_n_gallery"])
    # evaluation leaves the training mode alone and is deterministic
    eval_model.train()
    assert evaluate_duet(eval_model, world, "test", batch_size=7) == pytest.approx(
        metrics
    )
    assert eval_model.training
    eval_model.eval()
    # other texts change the composed query only
    phrased = evaluate_duet(eval_model, world, "test", texts="in {phrase}")
    assert phrased["fgsbir_acc@1"] == metrics["fgsbir_acc@1"]
    with pytest.raises(ValueError, match="composed queries"):
        evaluate_duet(eval_model, world, "test", texts=["in red"])


def test_evaluate_hands_out_the_similarities_it_ranked(
    world: SketchPhotoSet, eval_model
) -> None:
    sims: dict = {}
    metrics = evaluate_duet(eval_model, world, "test", similarities=sims)
    assert set(sims) == {"fgsbir", "visual", "duet", "sketch", "text", "fusion"}
    for prefix, (sim, target, gallery) in sims.items():
        assert sim.shape == (metrics[f"{prefix}_n_queries"], len(gallery))
        assert (
            len(target) == len(sim) and len(gallery) == metrics[f"{prefix}_n_gallery"]
        )
        ranks = ranks_pessimistic(sim, target)
        for k in (1, 5, 10):
            assert acc_at_k(ranks, k)[f"acc@{k}"] == metrics[f"{prefix}_acc@{k}"]
    assert sims["fgsbir"][2] == world.photo_ids("test")
    # every composed target is a variant of its sketch's shape
    _, target, gallery = sims["duet"]
    queries = duet_queries(world, "test")
    assert [gallery[t] for t in target.tolist()] == [pid for _, pid, _ in queries]
    with pytest.raises(TypeError, match="dict to fill"):
        evaluate_duet(eval_model, world, "test", similarities=[])


def test_evaluate_plain_dataset(tmp_path: Path, eval_model) -> None:
    ds = plain_set(tmp_path)
    metrics = evaluate_duet(eval_model, ds, "train")
    assert metrics["fgsbir_n_gallery"] == 4 and metrics["fgsbir_n_queries"] == 8
    assert not any(k.startswith(("duet_", "text_")) for k in metrics)
    texts = [f"in colour {i}" for i in range(8)]
    composed = evaluate_duet(eval_model, ds, "train", texts=texts)
    assert composed["duet_n_gallery"] == 4 and "fusion_acc@1" in composed
    texts[3] = " "
    with pytest.raises(ValueError, match="empty"):
        evaluate_duet(eval_model, ds, "train", texts=texts)


# ---------------------------------------------------------- L_words (our option)


def test_words_term_is_hashed_only_when_on(world: SketchPhotoSet) -> None:
    bundle = load_clip(MODEL, seed=0)
    off = _run_identity(small_config(), bundle, world)
    on = _run_identity(small_config(weights={"words": 0.5}), bundle, world)
    # off, the seventh weight is left out, so runs cached before it keep their names
    assert "words" not in off["config"]["weights"]
    assert "words_per_class" not in off["config"]
    assert on["config"]["weights"]["words"] == 0.5
    assert on["config"]["words_per_class"] == 16
    with pytest.raises(ValueError, match="words_per_class"):
        small_config(words_per_class=0)


def test_words_run_writes_its_phrases_and_resumes(
    world: SketchPhotoSet, tmp_path: Path
) -> None:
    cfg = small_config(
        max_steps=5, eval_every=2, weights={"words": 1.0}, words_per_class=2
    )
    straight = train_duet(
        cfg, load_clip(MODEL, seed=0), world, tmp_path / "a", quiet=True
    )
    assert all(r["words"] > 0 for r in straight.history["train"])
    phrases = json.loads((tmp_path / "a" / "phrases.json").read_text())
    train_photos = {r.photo_id for r in world.sketches_in("train")}
    assert train_photos <= set(phrases)
    assert all(world.photo_split[p] == "train" for p in phrases)  # never val or test
    # the phrases are the untrained CLIP's zero-shot reading, not the photos' captions
    again = zero_shot_phrases(
        load_clip(MODEL, seed=0), world, sorted(phrases), seed=0, per_class=2
    )
    assert again == {p: phrases[p] for p in sorted(phrases)}
    killed = train_duet(
        cfg, load_clip(MODEL, seed=0), world, tmp_path / "b", quiet=True, stop_after=3
    )
    assert killed.stopped == "stop_after"
    resumed = train_duet(
        cfg, load_clip(MODEL, seed=0), world, tmp_path / "b", quiet=True
    )
    assert resumed.resumed_from == 2
    assert [r["total"] for r in resumed.history["train"]] == [
        r["total"] for r in straight.history["train"]
    ]
    (tmp_path / "b" / "phrases.json").unlink()
    with pytest.raises(ValueError, match="phrases.json is missing"):
        train_duet(
            cfg.replace(max_steps=6), load_clip(MODEL, seed=0), world, tmp_path / "b"
        )


def test_words_term_needs_world_attributes(
    world: SketchPhotoSet, tmp_path: Path
) -> None:
    plain = dataclasses.replace(world, attributes={})
    with pytest.raises(ValueError, match="L_words .*world attributes"):
        train_duet(
            small_config(weights={"words": 1.0}, words_per_class=2),
            load_clip(MODEL, seed=0),
            plain,
            tmp_path / "c",
            quiet=True,
        )


def test_loss_weights_for_switches_words_off_without_attributes(
    world: SketchPhotoSet,
) -> None:
    values = {"trip": 1, "comp": 0.5, "words": 1}
    on = loss_weights_for(values, world)
    assert on.words == 1.0 and on.comp == 0.5 and on.reg == 0.0
    plain = dataclasses.replace(world, attributes={})
    with pytest.warns(UserWarning, match="L_words is off"):
        off = loss_weights_for(values, plain)
    assert off.words == 0.0 and off.trip == 1.0
    with pytest.raises(ValueError, match="unknown loss name"):
        loss_weights_for({"recon": 1}, world)


def test_evaluate_test_shift_averages_shifted_views(
    world: SketchPhotoSet, eval_model
) -> None:
    from duet_lib.tasks import retrieval_task
    from duet_lib.train import _text_embeddings, _view_similarities
    from duet_lib.views import shift_offsets

    plain: dict = {}
    metrics = evaluate_duet(eval_model, world, "test", similarities=plain)
    assert evaluate_duet(eval_model, world, "test", test_shift=0) == metrics
    shifted: dict = {}
    out = evaluate_duet(eval_model, world, "test", similarities=shifted, test_shift=2)
    assert set(out) == set(metrics)
    bundle = eval_model.bundle
    task = retrieval_task(
        world,
        "test",
        image_size=bundle.image_size,
        mean=bundle.image_mean,
        std=bundle.image_std,
    )
    t_emb = _text_embeddings(eval_model, task.texts, 64)
    views = [
        _view_similarities(eval_model, task, t_emb, 64, 1.0, dx, dy)
        for dx, dy in shift_offsets(2)
    ]
    for prefix in ("fgsbir", "visual", "duet", "text"):
        # the shift reaches the encoders: another view ranks with other numbers
        assert not torch.allclose(views[1][prefix], views[0][prefix])
        torch.testing.assert_close(views[0][prefix], plain[prefix][0])
        # and the reported matrix is the mean of the nine
        mean = torch.stack([v[prefix] for v in views]).mean(0)
        torch.testing.assert_close(shifted[prefix][0], mean)
        assert shifted[prefix][2] == plain[prefix][2]
    with pytest.raises(ValueError, match="shift must be an integer"):
        evaluate_duet(eval_model, world, "test", test_shift=-1)
