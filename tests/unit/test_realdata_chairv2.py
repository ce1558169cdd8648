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

import numpy as np
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
    # 30 validation photos (chance 1/30); as released (no framing) seed 0 keeps
    # 0.535 here. Learning the metric adds at least 10 points to the untrained
    # projection (0.317 with the thin, soft sketch lines of HogConfig).
    assert best >= 0.35, best
    assert best >= model.history[0]["val_acc@1"] + 0.1, model.history[:3]
    assert 0 < model.best_step <= 120


def test_framing_puts_real_sketches_and_photos_at_one_scale(chair):
    from duet_lib.data.framing import content_box, framed
    from duet_lib.probes import photo_arrays, sketch_arrays

    recs = chair.sketches_in("val")[:60]

    def box_sides(data):
        records = [r for r in data.sketches if r.key in {x.key for x in recs}]
        sk = sketch_arrays(records, 128)
        ph = photo_arrays(data, [r.photo_id for r in records], 128)
        sides = [
            [max(b[2] - b[0], b[3] - b[1]) for b in map(content_box, arr)]
            for arr in (sk, ph)
        ]
        return np.array(sides, float)

    plain, fr = box_sides(chair), box_sides(framed(chair, 0.7))
    # as given, the drawings are smaller than the chairs in their photos
    assert plain[0].mean() < plain[1].mean() - 8, plain.mean(1)
    # framed, both span about 70 % of the side (line width and resampling aside)
    assert np.abs(fr - 0.7 * 128).max() <= 6, fr.min(1)


def test_framing_lifts_the_classic_reference_on_validation(chair):
    from duet_lib.classic import MetricConfig, hog_split, train_hog_metric
    from duet_lib.data.framing import framed

    best = {}
    for name, data in (("plain", chair), ("framed", framed(chair, 0.7))):
        model = train_hog_metric(
            hog_split(data, "train"),
            hog_split(data, "val"),
            MetricConfig(max_steps=120),
        )
        best[name] = max(h["val_acc@1"] for h in model.history)
    # chapter 11's choice of framing rests on this gap (0.535 -> 0.644 here at seed 0;
    # with 3-pixel lines 0.538 -> 0.647 on the mean of three seeds): at least 5 of
    # 101 queries
    assert best["framed"] >= best["plain"] + 0.05, best


def test_test_time_views_lift_the_classic_reference_on_validation(chair):
    from duet_lib.classic import (
        TEST_VIEWS,
        MetricConfig,
        hog_split,
        train_hog_metric,
        view_similarity,
    )
    from duet_lib.data.framing import framed
    from duet_lib.metrics import retrieval_report

    data = framed(chair, 0.7)
    val = hog_split(data, "val", views=TEST_VIEWS)
    plain = val.view(TEST_VIEWS.index((False, 1.0, 0.0, 0.0)))
    # the state is kept on the plain view, which favours the plain view
    model = train_hog_metric(
        hog_split(data, "train"), plain, MetricConfig(max_steps=120)
    )
    one = retrieval_report(view_similarity(model, plain), plain.target)
    many = retrieval_report(view_similarity(model, val), plain.target)
    # seed 0: Acc@1 0.644 -> 0.683, MRR 0.747 -> 0.780 (seeds 1, 2: +0.02, +0.03);
    # at least 2 of 101 queries and 0.01 of MRR
    assert many["acc@1"] >= one["acc@1"] + 0.019, (one, many)
    assert many["mrr"] >= one["mrr"] + 0.01, (one, many)
