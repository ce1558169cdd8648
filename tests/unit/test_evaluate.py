"""Tests for duet_lib.evaluate: the checkpoint evaluation command line."""

from __future__ import annotations

import json
import runpy
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch

from duet_lib.data.framing import framed
from duet_lib.data.loaders import load_qmul_coordinate
from duet_lib.data.world import WorldConfig, generate_world, load_world
from duet_lib.evaluate import (
    LAYOUT_CHOICES,
    EvaluationError,
    EvaluationInputNotFoundError,
    evaluate_checkpoint,
    main,
)
from duet_lib.models.clip import load_clip, save_clip
from duet_lib.train import TrainConfig, evaluate_duet, load_trained_duet, train_duet
from tests.unit.test_loaders import _make_coordinate

MODEL = "duet-tiny-conv-96"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A smoke world, two saved backbones (seeds 0 and 1) and a tiny run on seed 0."""
    base = tmp_path_factory.mktemp("evaluate")
    cfg = WorldConfig.for_profile("smoke", train_shapes=5, test_shapes=3, image_size=96)
    world_dir = generate_world(cfg, base / "world", quiet=True)
    clip0 = save_clip(load_clip(MODEL, seed=0), base / "weights" / "clip0.pt")
    clip1 = save_clip(load_clip(MODEL, seed=1), base / "other" / "clip1.pt")
    train_cfg = TrainConfig(
        device="cpu",
        max_steps=2,
        eval_every=2,
        batch_size=4,
        eval_batch_size=64,
        lr_visual=1e-3,
        lr_modules=3e-3,
    )
    run = base / "run"
    train_duet(
        train_cfg,
        load_clip(MODEL, clip0),
        load_world(world_dir, val_fraction=0.2),
        run,
        quiet=True,
    )
    toy = _make_coordinate(base / "toy")
    return {
        "base": base,
        "world": world_dir,
        "clip0": clip0,
        "clip1": clip1,
        "run": run,
        "toy": toy,
    }


def run_cli(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def world_args(setup: dict[str, Path], *extra: object) -> list[object]:
    return [
        "--checkpoint",
        setup["run"],
        "--layout",
        "world",
        "--root",
        setup["world"],
        "--batch-size",
        32,
        *extra,
    ]


def prefixed(metrics: dict, prefix: str) -> dict:
    return {k: v for k, v in metrics.items() if k.startswith(prefix + "_")}


# ----------------------------------------------------------------------- success


def test_world_json_equals_evaluate_duet(
    setup: dict[str, Path], capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    target = tmp_path / "out" / "metrics.json"
    code, out, err = run_cli(capsys, *world_args(setup, "--output", target))
    assert code == 0, err
    result = json.loads(out)
    assert json.loads(target.read_text()) == result
    assert result["checkpoint"] == str(setup["run"] / "best.pt")
    assert (result["layout"], result["split"], result["dataset"]) == (
        "world",
        "test",
        "world",
    )
    assert result["root"] == str(setup["world"])
    assert result["backbone"]["model_name"] == MODEL
    assert result["backbone"]["pretrained"] == str(setup["clip0"])
    assert result["backbone"]["verified"] is True
    metrics = result["metrics"]
    for prefix in ("fgsbir", "visual", "duet", "sketch", "text", "fusion"):
        assert 0.0 <= metrics[f"{prefix}_acc@1"] <= 1.0
    world = load_world(setup["world"])
    assert result["n_queries"] == len(world.sketches_in("test"))
    assert result["n_gallery"] == len(world.photo_ids("test"))

    model = load_trained_duet(load_clip(MODEL, setup["clip0"]), setup["run"])
    expected = evaluate_duet(model, world, "test", batch_size=32)
    assert metrics == expected


def test_text_changes_the_composed_queries_only(
    setup: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    base = json.loads(run_cli(capsys, *world_args(setup))[1])["metrics"]
    code, out, err = run_cli(capsys, *world_args(setup, "--text", "in red"))
    assert code == 0, err
    fixed = json.loads(out)
    assert fixed["text"] == "in red"
    fixed = fixed["metrics"]
    assert prefixed(fixed, "fgsbir") == prefixed(base, "fgsbir")
    assert prefixed(fixed, "sketch") == prefixed(base, "sketch")
    assert prefixed(fixed, "duet") != prefixed(base, "duet")
    assert fixed["duet_n_queries"] == base["duet_n_queries"]

    code, out, err = run_cli(
        capsys, *world_args(setup, "--text", "a thing {phrase}", "--split", "train")
    )
    assert code == 0, err
    templ = json.loads(out)
    model = load_trained_duet(load_clip(MODEL, setup["clip0"]), setup["run"])
    expected = evaluate_duet(
        model, load_world(setup["world"]), "train", "a thing {phrase}", batch_size=32
    )
    assert templ["split"] == "train" and templ["metrics"] == expected


def test_coordinate_layout(
    setup: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    # A world folder is also a plain Coordinate copy (no attributes).
    args = ["--checkpoint", setup["run"] / "last.pt", "--layout", "coordinate"]
    code, out, err = run_cli(capsys, *args, "--root", setup["world"])
    assert code == 0, err
    plain = json.loads(out)
    assert plain["checkpoint"] == str(setup["run"] / "last.pt")
    assert plain["dataset"] == "world"
    assert not any(k.startswith(("duet_", "text_")) for k in plain["metrics"])
    ds = load_qmul_coordinate(setup["world"], quiet=True)
    assert plain["n_queries"] == len(ds.sketches_in("test"))

    code, out, err = run_cli(capsys, *args, "--root", setup["toy"], "--text", "red")
    assert code == 0, err
    toy = json.loads(out)
    assert (toy["dataset"], toy["n_queries"], toy["n_gallery"]) == ("toy", 3, 2)
    metrics = toy["metrics"]
    assert metrics["duet_n_gallery"] == 2 and 0.0 <= metrics["duet_acc@1"] <= 1.0
    model = load_trained_duet(
        load_clip(MODEL, setup["clip0"]), setup["run"] / "last.pt"
    )
    expected = evaluate_duet(
        model, load_qmul_coordinate(setup["toy"], quiet=True), "test", ["red"] * 3
    )
    assert metrics == expected

    code, _, err = run_cli(capsys, *args, "--root", setup["toy"], "--text", "{phrase}")
    assert code == 2 and "no appearance phrases" in err

    # --framing evaluates the content-framed copy (as chapter 11 trains on ChairV2)
    code, out, err = run_cli(capsys, *args, "--root", setup["toy"], "--framing", "0.7")
    assert code == 0, err
    fr = json.loads(out)
    assert fr["framing"] == 0.7 and plain["framing"] is None
    expected = evaluate_duet(
        model, framed(load_qmul_coordinate(setup["toy"], quiet=True), 0.7), "test"
    )
    assert fr["metrics"] == expected

    # --test-shift averages nine shifted views (chapter 09)
    code, out, err = run_cli(
        capsys, *args, "--root", setup["world"], "--test-shift", "2"
    )
    assert code == 0, err
    sh = json.loads(out)
    assert sh["test_shift"] == 2 and plain["test_shift"] == 0
    expected = evaluate_duet(model, ds, "test", test_shift=2)
    assert sh["metrics"] == expected != plain["metrics"]


def test_moved_weights_need_pretrained(
    setup: dict[str, Path], capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    moved = tmp_path / "elsewhere" / "clip0.pt"
    moved.parent.mkdir()
    shutil.move(setup["clip0"], moved)
    try:
        code, out, err = run_cli(capsys, *world_args(setup))
        assert code == 2 and out == ""
        assert "--pretrained" in err and str(setup["clip0"]) in err
        code, out, err = run_cli(capsys, *world_args(setup, "--pretrained", moved))
        assert code == 0, err
        result = json.loads(out)
        assert result["backbone"]["pretrained"] == str(moved)
        assert result["backbone"]["trained_with"] == str(setup["clip0"])
    finally:
        shutil.move(moved, setup["clip0"])


def test_copied_checkpoint_is_self_describing(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    lone = tmp_path / "copy" / "best.pt"
    lone.parent.mkdir()
    shutil.copy(setup["run"] / "best.pt", lone)
    result = evaluate_checkpoint(lone, "world", setup["world"])
    assert result["backbone"]["verified"] is True
    assert 0.0 <= result["metrics"]["duet_acc@1"] <= 1.0


def test_checkpoint_without_record(
    setup: dict[str, Path], capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    from duet_lib.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(setup["run"] / "best.pt")
    for key in ("pretrained", "bundle", "dataset"):
        state.pop(key)
    lone = tmp_path / "copy" / "best.pt"
    lone.parent.mkdir()
    save_checkpoint(state, lone)
    args = ["--checkpoint", lone, "--layout", "world", "--root", setup["world"]]
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "does not record" in err and "--pretrained" in err
    result = evaluate_checkpoint(
        lone, "world", setup["world"], pretrained=setup["clip0"]
    )
    assert result["backbone"]["verified"] is False
    assert 0.0 <= result["metrics"]["duet_acc@1"] <= 1.0


def test_random_init_backbone_is_rebuilt_from_its_seed(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    cfg = TrainConfig(device="cpu", max_steps=2, eval_every=2, batch_size=4, seed=2)
    world = load_world(setup["world"], val_fraction=0.2)
    train_duet(cfg, load_clip(MODEL, seed=2), world, tmp_path / "run", quiet=True)
    result = evaluate_checkpoint(tmp_path / "run", "world", setup["world"])
    assert result["backbone"]["pretrained"] is None
    assert result["backbone"]["verified"] is True
    model = load_trained_duet(load_clip(MODEL, seed=2), tmp_path / "run")
    assert result["metrics"] == evaluate_duet(model, world, "test")
    with pytest.raises(EvaluationError, match="seed 3 .*--backbone-seed"):
        evaluate_checkpoint(tmp_path / "run", "world", setup["world"], backbone_seed=3)


# ------------------------------------------------------------------------ errors


def test_other_backbone_is_refused(
    setup: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    code, out, err = run_cli(capsys, *world_args(setup, "--pretrained", setup["clip1"]))
    assert code == 2 and out == ""
    assert "backbone mismatch" in err
    assert str(setup["clip0"]) in err and str(setup["clip1"]) in err
    with pytest.raises(EvaluationError, match="backbone mismatch"):
        evaluate_checkpoint(
            setup["run"], "world", setup["world"], pretrained=setup["clip1"]
        )


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing_checkpoint", "checkpoint not found"),
        ("folder_without_best", "without best.pt"),
        ("clip_file", "not a duet training checkpoint"),
        ("garbage_file", "not a duet checkpoint"),
        ("foreign_dict", "not a duet training checkpoint (format None"),
        ("missing_root", "dataset root not found"),
        ("root_of_other_layout", "trainA"),
        ("coordinate_as_world", "marker"),
        ("empty_split", "split 'val'"),
        ("missing_pretrained", "backbone weights file not found"),
        ("empty_text", "--text is empty"),
        ("output_folder", "is a folder"),
        ("bad_device", "device 'cuda:7'"),
        ("bad_framing", "--framing 1.5"),
        ("bad_test_shift", "--test-shift -1"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(
    setup: dict[str, Path],
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    case: str,
    needle: str,
) -> None:
    args = {
        "--checkpoint": setup["run"],
        "--layout": "world",
        "--root": setup["world"],
    }
    extra: list[object] = []
    if case == "missing_checkpoint":
        args["--checkpoint"] = tmp_path / "nope.pt"
    elif case == "folder_without_best":
        args["--checkpoint"] = tmp_path
    elif case == "clip_file":
        args["--checkpoint"] = setup["clip0"]
    elif case == "garbage_file":
        args["--checkpoint"] = tmp_path / "junk.pt"
        args["--checkpoint"].write_bytes(b"not a checkpoint at all")
    elif case == "foreign_dict":
        args["--checkpoint"] = tmp_path / "other.pt"
        torch.save({"weights": torch.zeros(2)}, args["--checkpoint"])
    elif case == "missing_root":
        args["--root"] = tmp_path / "no_such_world"
    elif case == "root_of_other_layout":
        args["--layout"] = "folders"
    elif case == "coordinate_as_world":
        args["--root"] = setup["toy"]
    elif case == "empty_split":
        extra = ["--split", "val", "--val-fraction", "0"]
    elif case == "missing_pretrained":
        extra = ["--pretrained", tmp_path / "gone" / "clip.pt"]
    elif case == "empty_text":
        extra = ["--text", "  "]
    elif case == "output_folder":
        extra = ["--output", tmp_path]
    elif case == "bad_framing":
        extra = ["--framing", "1.5"]
    elif case == "bad_test_shift":
        extra = ["--test-shift", "-1"]
    elif case == "bad_device":
        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has a cuda:7")
        extra = ["--device", "cuda:7"]
    flat = [item for pair in args.items() for item in pair]
    code, out, err = run_cli(capsys, *flat, *extra)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert needle in err, err


def test_unknown_layout(setup: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(setup["run"]), "--layout", "qmul", "--root", "."])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'qmul'" in err
    assert all(name in err for name in LAYOUT_CHOICES)
    with pytest.raises(EvaluationError, match="valid layouts: coordinate"):
        evaluate_checkpoint(setup["run"], "qmul", setup["world"])


def test_library_errors_are_typed(setup: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(EvaluationInputNotFoundError):
        evaluate_checkpoint(tmp_path / "missing.pt", "world", setup["world"])
    with pytest.raises(FileNotFoundError, match="dataset root not found"):
        evaluate_checkpoint(setup["run"], "world", tmp_path / "absent")
    with pytest.raises(EvaluationError, match="batch_size"):
        evaluate_checkpoint(setup["run"], "world", setup["world"], batch_size=0)
    with pytest.raises(EvaluationError, match="unknown split"):
        evaluate_checkpoint(setup["run"], "world", setup["world"], split="dev")


def test_module_entry_point(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m duet_lib.evaluate`` runs main() and exits with its status."""
    missing = tmp_path / "missing.pt"
    argv = ["duet_lib.evaluate", "--checkpoint", str(missing), "--layout", "world"]
    monkeypatch.setattr(sys, "argv", [*argv, "--root", str(tmp_path)])
    with warnings.catch_warnings():
        # runpy warns that the module is already imported; harmless here
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_module("duet_lib.evaluate", run_name="__main__")
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"error: checkpoint not found: {missing}\n"
