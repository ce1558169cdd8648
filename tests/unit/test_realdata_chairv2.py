"""Checks on the real QMUL-Chair-V2 copy (Coordinate layout), read in place.

The data is research-only and never part of the project: these tests look for it
beside the project (``<project>/../shared/data/qmul-chairv2``) or at
``$DUET_CHAIRV2_ROOT`` and skip with a reason when it is absent.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from duet_lib.data.loaders import load_qmul_coordinate, split_val_by_photo

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = REPO.parent / "shared/data/qmul-chairv2"
ROOT = Path(os.environ.get("DUET_CHAIRV2_ROOT", DEFAULT_ROOT))
SHA256 = "a22925201f3f7a0127b356b843671bc41fd8dd6d11ea16b5169e5733f440b959"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(
        not (ROOT / "ChairV2_Coordinate").is_file(),
        reason=f"QMUL-Chair-V2 not found at {ROOT} (set DUET_CHAIRV2_ROOT)",
    ),
]


@pytest.fixture(scope="module")
def chair():
    return load_qmul_coordinate(ROOT, quiet=True)


def test_sha256_matches():
    digest = hashlib.sha256((ROOT / "ChairV2_Coordinate").read_bytes()).hexdigest()
    assert digest == SHA256


def test_counts_and_disjoint_splits(chair):
    assert chair.name == "chairv2" and chair.skipped == []
    counts = chair.counts()
    assert counts["train"]["sketches"] + counts["val"]["sketches"] == 952
    assert counts["test"]["sketches"] == 323
    train, val, test = (set(chair.photo_ids(s)) for s in ("train", "val", "test"))
    assert len(train | val) == 300 and len(test) == 100
    assert not (train | val) & test
    assert len(chair.photos) == 400 and set(chair.photo_split) == set(chair.photos)
    # Ids with underscores pair with their own photo file.
    underscored = [s for s in chair.sketches if "_" in s.photo_id]
    assert underscored
    for s in chair.sketches:
        assert chair.photos[s.photo_id].stem == s.photo_id
        assert s.key.startswith(f"/{'train' if s.split == 'val' else s.split}/")


def test_val_is_disjoint_from_train_by_photo(chair):
    train, val = set(chair.photo_ids("train")), set(chair.photo_ids("val"))
    assert len(val) == 30 and not train & val
    assert val == split_val_by_photo(train | val, 0.1, seed=0)
    other = load_qmul_coordinate(ROOT, seed=1, quiet=True)
    assert set(other.photo_ids("val")) != val  # the seed, and only it, moves val
    assert set(other.photo_ids("test")) == set(chair.photo_ids("test"))


def test_verify_command_exits_zero():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "duet_lib.data",
            "verify",
            "chairv2",
            "--root",
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RESULT: ok" in result.stdout


def test_classic_hog_reference_ranks_real_validation_photos_well_above_chance(chair):
    from duet_lib.classic import MetricConfig, hog_split, train_hog_metric

    train, val = hog_split(chair, "train"), hog_split(chair, "val")
    model = train_hog_metric(train, val, MetricConfig(max_steps=120))
    best = max(h["val_acc@1"] for h in model.history)
    # 30 validation photos (chance 1/30); chapter 11's run keeps 0.505 here
    assert best >= 0.35 > model.history[0]["val_acc@1"] + 0.1, model.history[:3]
    assert 0 < model.best_step <= 120
