"""Tests for duet_lib.benchmark: results, aggregation, tables, JSON, figures."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba

from duet_lib.benchmark import (
    GROUND_TRUTH_COLOUR,
    BenchmarkError,
    BenchmarkNotFoundError,
    BenchmarkResults,
    Summary,
    ablation_configs,
    aggregate,
    composed_query_embeddings,
    embedding_map,
    format_cell,
    load_benchmark,
    markdown_table,
    method_metrics,
    pca_2d,
    reference_levels,
    save_benchmark,
    table_cells,
    topk_figure,
    topk_indices,
)
from duet_lib.data.world import WorldConfig, generate_world, load_world
from duet_lib.losses import LossWeights
from duet_lib.metrics import acc_at_k, ranks_pessimistic
from duet_lib.models.clip import load_clip
from duet_lib.tasks import retrieval_task
from duet_lib.train import TrainConfig, build_model, evaluate_duet


def hand_results() -> BenchmarkResults:
    """Two seeds of two methods, one seed of an ablation, on one dataset."""
    r = BenchmarkResults()
    r.add(
        "duet", 0, {"acc@1": 0.90, "acc@10": 1.0, "shape@1": 1.0, "appearance@1": 0.9}
    )
    r.add(
        "duet", 1, {"acc@1": 0.80, "acc@10": 0.96, "shape@1": 0.98, "appearance@1": 0.8}
    )
    r.add(
        "text", 0, {"acc@1": 0.10, "acc@10": 0.50, "shape@1": 0.1, "appearance@1": 1.0}
    )
    r.add(
        "text", 1, {"acc@1": 0.10, "acc@10": 0.50, "shape@1": 0.1, "appearance@1": 1.0}
    )
    r.add("bclip", 0, {"acc@1": 0.25, "acc@10": 0.75})
    r.add("bclip", 1, {"acc@1": 0.35, "acc@10": 0.85})
    r.add("no_comp", 0, {"acc@1": 0.5, "acc@10": 0.9})
    return r


# ---------------------------------------------------------------- result model


def test_method_metrics_keeps_prefixes_apart():
    flat = {
        "bclip_acc@1": 0.1,
        "bclip_fg_acc@1": 0.2,
        "bclip_fusion_acc@1": 0.3,
        "bclip_fusion_shape@1": 0.4,
        "bclip_mrr": 0.5,
    }
    assert method_metrics(flat, "bclip") == {"acc@1": 0.1, "mrr": 0.5}
    assert method_metrics(flat, "bclip_fg") == {"acc@1": 0.2}
    assert method_metrics(flat, "bclip_fusion") == {"acc@1": 0.3, "shape@1": 0.4}
    with pytest.raises(BenchmarkError, match="no metric with prefix 'duet'"):
        method_metrics(flat, "duet")


def test_results_reject_bad_runs():
    r = BenchmarkResults()
    r.add("duet", 0, {"acc@1": 0.5})
    with pytest.raises(BenchmarkError, match="recorded twice"):
        r.add("duet", 0, {"acc@1": 0.6})
    with pytest.raises(BenchmarkError, match="not finite"):
        r.add("duet", 1, {"acc@1": float("nan")})
    with pytest.raises(BenchmarkError, match="must be a number"):
        r.add("duet", 2, {"acc@1": True})
    with pytest.raises(BenchmarkError, match="non-empty dict"):
        r.add("duet", 3, {})
    with pytest.raises(BenchmarkError, match="seed"):
        r.add("duet", -1, {"acc@1": 0.5})
    assert len(r) == 1 and r.get("duet", 0) == {"acc@1": 0.5}


def test_aggregate_mean_and_sample_std_by_hand():
    agg = aggregate(hand_results())
    duet = agg["world"]["duet"]
    assert duet["acc@1"].mean == pytest.approx(0.85)
    # sample std of (0.9, 0.8): |0.9 - 0.8| / sqrt(2)
    assert duet["acc@1"].std == pytest.approx(0.1 / math.sqrt(2))
    assert duet["acc@10"].std == pytest.approx(0.04 / math.sqrt(2))
    assert duet["acc@1"].n == 2
    assert agg["world"]["text"]["acc@1"].std == pytest.approx(0.0)
    assert "shape@1" not in agg["world"]["bclip"]
    one = agg["world"]["no_comp"]["acc@1"]
    assert one == Summary(0.5, None, 1)


def test_aggregate_refuses_metric_missing_for_some_seeds():
    r = BenchmarkResults()
    r.add("duet", 0, {"acc@1": 0.5, "shape@1": 1.0})
    r.add("duet", 1, {"acc@1": 0.7})
    with pytest.raises(
        BenchmarkError, match=r"'shape@1' is missing for seed\(s\) \[1\]"
    ):
        aggregate(r)
    with pytest.raises(BenchmarkError, match="no runs"):
        aggregate(BenchmarkResults())


def test_reference_levels_by_hand():
    # gallery: shape a has 2 photos, shape b has 3; appearances red x3, blue x2
    shapes = ["a", "a", "b", "b", "b"]
    looks = ["red", "blue", "red", "blue", "red"]
    ref = reference_levels(
        [0, 2, 3], 5, gallery_shape=shapes, gallery_appearance=looks, ks=(1, 10)
    )
    assert ref["chance@1"] == pytest.approx(1 / 5)
    assert ref["chance@10"] == 1.0
    assert ref["shape_only@1"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 3) / 3)
    assert ref["appearance_only@1"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2) / 3)
    assert set(reference_levels([1], 3)) == {
        "n_gallery",
        "n_queries",
        "chance@1",
        "chance@10",
    }
    with pytest.raises(BenchmarkError, match="target indices"):
        reference_levels([5], 5, gallery_shape=shapes)
    with pytest.raises(BenchmarkError, match="4 labels for 5 photos"):
        reference_levels([0], 5, gallery_shape=shapes[:4])


# ----------------------------------------------------------------------- tables


def test_markdown_table_contents():
    agg = aggregate(hand_results())
    ref = {
        "world": reference_levels(
            [0, 1], 2, gallery_shape=["a", "b"], gallery_appearance=["x", "x"]
        )
    }
    text = markdown_table(
        agg,
        {"text": "text only", "bclip": "B-CLIP", "duet": "duet"},
        {"world": "world"},
        references=ref,
        text_method="text",
    )
    cells = table_cells(text)
    assert list(cells) == ["text only", "B-CLIP", "duet"]
    assert list(cells["duet"]) == ["Acc@1", "Acc@10", "shape@1", "appearance@1"]
    assert cells["duet"]["Acc@1"] == f"85.0 ± {100 * 0.1 / math.sqrt(2):.1f}"
    assert cells["duet"]["Acc@10"] == "98.0 ± 2.8"
    assert cells["text only"]["Acc@1"] == "10.0 ± 0.0"
    assert cells["B-CLIP"]["appearance@1"] == "–"
    assert cells["B-CLIP"]["Acc@1"] == "30.0 ± 7.1"
    footer = text.split("\n\n", 1)[1]
    assert "N = 2 photos" in footer and "chance Acc@1 = 50.0 %" in footer
    assert "appearance known, shape guessed: Acc@1 = 50.0 %" in footer
    assert "text only (measured): Acc@1 = 10.0 ± 0.0 %" in footer
    # the cells are exactly what format_cell gives for the aggregates
    assert cells["duet"]["Acc@1"] == format_cell(agg["world"]["duet"]["acc@1"])
    assert format_cell(Summary(0.5, None, 1)) == "50.0"


def test_markdown_table_two_datasets_and_errors():
    r = hand_results()
    r.add("duet", 0, {"acc@1": 0.4, "acc@10": 0.9}, dataset="chairv2")
    agg = aggregate(r)
    text = markdown_table(agg, ["duet", "text"], {"world": "W", "chairv2": "C"})
    cells = table_cells(text)
    assert "W · Acc@1" in cells["duet"] and "C · Acc@10" in cells["duet"]
    assert cells["duet"]["C · Acc@1"] == "40.0"
    assert cells["text"]["C · Acc@1"] == "–"
    with pytest.raises(BenchmarkError, match="unknown method 'nope'"):
        markdown_table(agg, ["nope"], ["world"])
    with pytest.raises(BenchmarkError, match="unknown dataset"):
        markdown_table(agg, ["duet"], ["shoev2"])


# ------------------------------------------------------------------------- json


def test_json_round_trip(tmp_path: Path):
    results = hand_results()
    agg = aggregate(results)
    path = tmp_path / "results" / "benchmark.json"
    table = markdown_table(agg, ["duet", "text"], ["world"])
    written = save_benchmark(
        path,
        results,
        aggregates=agg,
        references={"world": {"chance@1": 0.25, "n_gallery": 4}},
        config={"seeds": (0, 1), "out": tmp_path, "lr": np.float32(0.5)},
        environment={"torch": torch.__version__},
        tables={"main": table},
    )
    assert written == path
    doc = json.loads(path.read_text())
    assert doc["methods"] == ["duet", "text", "bclip", "no_comp"]
    assert doc["seeds"] == [0, 1]
    assert doc["config"] == {"seeds": [0, 1], "out": str(tmp_path), "lr": 0.5}
    loaded = load_benchmark(path)
    assert loaded.results == results
    assert loaded.aggregates == agg
    assert loaded.tables["main"] == table
    assert loaded.references["world"]["chance@1"] == 0.25
    # the table read back agrees with the stored aggregates
    cells = table_cells(loaded.tables["main"])
    assert cells["duet"]["Acc@1"] == format_cell(
        loaded.aggregates["world"]["duet"]["acc@1"]
    )


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "benchmark.json"
    save_benchmark(path, hand_results())
    before = path.read_bytes()
    other = BenchmarkResults()
    other.add("duet", 7, {"acc@1": 0.1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_benchmark(path, other)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["benchmark.json"]
    # content that is not JSON fails before anything is written
    with pytest.raises(BenchmarkError, match="cannot be written as JSON"):
        save_benchmark(path, other, config={"bad": object()})
    assert path.read_bytes() == before


def test_load_errors(tmp_path: Path):
    with pytest.raises(BenchmarkNotFoundError):
        load_benchmark(tmp_path / "missing.json")
    assert issubclass(BenchmarkNotFoundError, FileNotFoundError)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BenchmarkError, match="not valid JSON"):
        load_benchmark(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(BenchmarkError, match="not a benchmark file"):
        load_benchmark(bad)


# -------------------------------------------------------------------- ablations


def test_ablation_configs():
    base = TrainConfig(max_steps=40, eval_every=20, weights=LossWeights(rec=0.5))
    cfgs = ablation_configs(base, ["comp", "rec"], steps=10)
    assert list(cfgs) == ["comp", "rec"]
    assert cfgs["comp"].weights.comp == 0 and cfgs["comp"].weights.rec == 0.5
    assert cfgs["rec"].weights.rec == 0 and cfgs["rec"].weights.comp == 1.0
    for cfg in cfgs.values():
        assert cfg.max_steps == 10 and cfg.eval_every == 10
        assert cfg.lr_visual == base.lr_visual and cfg.seed == base.seed
    assert ablation_configs(base, ["tt"])["tt"].max_steps == 40
    with pytest.raises(ValueError, match="unknown loss"):
        ablation_configs(base, ["colour"])
    with pytest.raises(ValueError, match="repeat"):
        ablation_configs(base, ["tt", "tt"])
    off = base.replace(weights=LossWeights(rt=0.0))
    with pytest.raises(ValueError, match="already off"):
        ablation_configs(off, ["rt"])
    only = base.replace(weights=LossWeights(0, 0, 0, 1, 0, 0))
    with pytest.raises(ValueError, match="leaves no active loss"):
        ablation_configs(only, ["tt"])


# ------------------------------------------------------------------ retrieval


def test_topk_indices_hand_computed():
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    queries = torch.tensor([[1.0, 0.1], [0.0, 2.0], [1.0, 1.0]])
    top = topk_indices(queries, gallery, k=3)
    # q0: cos with g0 ~ .995, g2 ~ .77, g1 ~ .10; q1: g1, g2, then g0 ties g3 (0):
    # the lower index wins; q2: g2 (1.0), then g0 and g1 tie (.707): g0 first
    np.testing.assert_array_equal(top, [[0, 2, 1], [1, 2, 0], [2, 0, 1]])
    assert top.dtype == np.int64


def test_pca_2d_line_and_sign():
    rng = np.random.default_rng(0)
    t = rng.normal(size=20)
    points = np.stack([t, 2 * t, np.zeros(20)], axis=1) + 5.0
    coords, explained = pca_2d(points)
    assert coords.shape == (20, 2)
    np.testing.assert_allclose(explained, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(np.abs(coords[:, 0]), np.sqrt(5) * np.abs(t - t.mean()))
    # the sign convention makes the projection independent of the input's sign
    flipped, _ = pca_2d(-points)
    np.testing.assert_allclose(flipped[:, 0], -coords[:, 0])
    with pytest.raises(ValueError):
        pca_2d(np.zeros((1, 3)))


# ---------------------------------------------------------------------- figures


def test_topk_figure_axes_and_green_ground_truth():
    rng = np.random.default_rng(0)
    sketches = rng.random((2, 8, 8, 3))
    gallery = rng.random((6, 8, 8, 3))
    rankings = {
        "sketch only": np.array([[0, 1, 2], [3, 4, 5]]),
        "duet": np.array([[2, 0, 1], [5, 3, 4]]),
    }
    targets = [2, 4]
    fig = topk_figure(sketches, ["in red", "in blue"], gallery, rankings, targets, k=3)
    axes = fig.axes
    assert len(axes) == 2 * (2 + 3 * 2)
    green = to_rgba(GROUND_TRUTH_COLOUR)
    framed = []
    for i, ax in enumerate(axes):
        spines = list(ax.spines.values())
        if all(s.get_visible() for s in spines):
            assert all(s.get_edgecolor() == green for s in spines)
            framed.append(i)
        else:
            assert not any(s.get_visible() for s in spines)
    # row 0: target 2 is 3rd of sketch-only (col 4) and 1st of duet (col 5);
    # row 1 (offset 8): target 4 is 2nd of sketch-only (col 3), 3rd of duet (col 7)
    assert framed == [4, 5, 8 + 3, 8 + 7]
    assert "in red" in axes[1].texts[0].get_text()
    with pytest.raises(ValueError, match="must be"):
        topk_figure(
            sketches, ["a", "b"], gallery, {"x": np.zeros((2, 2), int)}, targets
        )


def test_embedding_map_artists():
    rng = np.random.default_rng(1)
    q = 5
    sets = [torch.from_numpy(rng.normal(size=(q, 16))) for _ in range(4)]
    fig = embedding_map(*sets)
    (ax,) = fig.axes
    assert len(ax.collections) == 4
    assert len(ax.lines) == q
    labels = [c.get_label() for c in ax.collections]
    assert any("sketch + text" in lb for lb in labels)
    assert any("target" in lb for lb in labels)
    # each line joins a composed query (collection 2) to its target (collection 3)
    comp = ax.collections[2].get_offsets()
    targ = ax.collections[3].get_offsets()
    for i, line in enumerate(ax.lines):
        xs, ys = line.get_data()
        np.testing.assert_allclose([xs[0], ys[0]], comp[i])
        np.testing.assert_allclose([xs[1], ys[1]], targ[i])
    with pytest.raises(ValueError, match="differ in shape"):
        embedding_map(sets[0], sets[1], sets[2], sets[3][:2])


# ------------------------------------------------------- embeddings vs evaluate


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory):
    cfg = WorldConfig.for_profile("smoke", train_shapes=4, test_shapes=3, image_size=64)
    root = generate_world(cfg, tmp_path_factory.mktemp("world") / "w", quiet=True)
    return load_world(root, val_fraction=0.25)


def test_composed_embeddings_reproduce_evaluate_duet(tiny_world):
    torch.set_num_threads(1)
    bundle = load_clip("duet-tiny-conv-96", None, seed=0)
    model = build_model(TrainConfig(device="cpu"), bundle).eval()
    metrics = evaluate_duet(model, tiny_world, "test")
    task = retrieval_task(
        tiny_world,
        "test",
        image_size=bundle.image_size,
        mean=bundle.image_mean,
        std=bundle.image_std,
    )
    emb = composed_query_embeddings(model, task, batch_size=5)
    n_q = len(task.texts)
    assert emb["composed"].shape[0] == n_q == metrics["duet_n_queries"]
    assert emb["gallery"].shape[0] == metrics["duet_n_gallery"]
    for key, prefix in (("composed", "duet"), ("sketch", "sketch"), ("text", "text")):
        sim = emb[key] @ emb["gallery"].T
        ranks = ranks_pessimistic(sim, emb["target_index"])
        assert acc_at_k(ranks, (1, 5))["acc@5"] == pytest.approx(
            metrics[f"{prefix}_acc@5"]
        )
        assert float((1.0 / ranks.double()).mean()) == pytest.approx(
            metrics[f"{prefix}_mrr"], abs=1e-6
        )
    torch.testing.assert_close(emb["target"], emb["gallery"][emb["target_index"]])
    part = composed_query_embeddings(model, task, rows=[3, 0])
    torch.testing.assert_close(
        part["composed"], emb["composed"][[3, 0]], atol=1e-5, rtol=0
    )
