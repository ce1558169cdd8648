"""Tests for duet_lib.data.manifests and the ``python -m duet_lib.data`` command."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from duet_lib.data.__main__ import main
from duet_lib.data.loaders import LAYOUTS
from duet_lib.data.manifests import (
    MANIFEST_DIR,
    REQUIRED_FIELDS,
    ManifestError,
    UnknownManifestError,
    available_manifests,
    load_manifest,
    verify,
)

REPO = Path(__file__).resolve().parents[2]
PHOTOS = {"train": ["a_1", "b_x_2", "c"], "test": ["d-4", "e_5"]}


def _toy_copy(root: Path) -> Path:
    data = {}
    for split, ids in PHOTOS.items():
        for i, pid in enumerate(ids):
            for k in range(1, 3):
                pts = np.array([[10.0 + i, 20.0, 0], [50, 60 + k, 1]])
                data[f"/{split}/{pid}_{k}"] = pts
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / "photo" / f"{pid}.png")
    (root / "Toy_Coordinate").write_bytes(pickle.dumps(data, protocol=3))
    return root


def _toy_manifest(root: Path, path: Path) -> Path:
    blob = (root / "Toy_Coordinate").read_bytes()
    manifest = {
        "name": "toy",
        "status": "ready",
        "version": "1",
        "license": "test data",
        "citation": None,
        "homepage": None,
        "manual": False,
        "layout": "coordinate",
        "loader_args": {"name": "Toy"},
        "files": [
            {
                "path": "Toy_Coordinate",
                "type": "file",
                "bytes": len(blob),
                "sha256": hashlib.sha256(blob).hexdigest(),
            },
            {"path": "photo", "type": "dir", "entries": 5},
        ],
        "splits": {
            "source": "key prefix",
            "counts": {
                "train+val": {"sketches": 6, "photos": 3},
                "test": {"sketches": 4, "photos": 2},
            },
            "skipped": 0,
        },
        "notes": "toy",
    }
    path.write_text(yaml.safe_dump(manifest))
    return path


@pytest.fixture()
def toy(tmp_path):
    root = tmp_path / "copy"
    (root / "photo").mkdir(parents=True)
    _toy_copy(root)
    return root, _toy_manifest(root, tmp_path / "toy.yaml")


def test_committed_manifests_are_valid():
    names = available_manifests()
    assert {"chairv2", "shoev2", "sketchy", "world", "fscoco", "imagenet_r"} <= set(
        names
    )
    assert MANIFEST_DIR == REPO / "data_manifests"
    for name in names:
        m = load_manifest(name)
        assert m["name"] == name
        assert set(REQUIRED_FIELDS) <= set(m)
        if m["status"] == "ready":
            assert m["layout"] in LAYOUTS
    chair = load_manifest("chairv2")
    assert chair["manual"] is True and chair["layout"] == "coordinate"
    assert chair["files"][0]["sha256"] == (
        "a22925201f3f7a0127b356b843671bc41fd8dd6d11ea16b5169e5733f440b959"
    )
    assert chair["splits"]["counts"]["test"] == {"sketches": 323, "photos": 100}
    assert load_manifest("fscoco")["status"] == "stub"
    assert load_manifest("imagenet_r")["status"] == "stub"
    assert load_manifest("world")["generator"] == "duet_lib.data.world"


def test_unknown_and_malformed_manifests(tmp_path):
    with pytest.raises(UnknownManifestError, match="chairv2"):
        load_manifest("no-such-dataset")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nstatus: ready\n")
    with pytest.raises(ManifestError, match="missing field"):
        load_manifest(bad)
    m = yaml.safe_load((MANIFEST_DIR / "chairv2.yaml").read_text())
    m["layout"] = "zip"
    bad.write_text(yaml.safe_dump(m))
    with pytest.raises(ManifestError, match="layout 'zip'"):
        load_manifest(bad)
    m["layout"] = "coordinate"
    m["splits"]["counts"]["dev"] = {"sketches": 1}
    bad.write_text(yaml.safe_dump(m))
    with pytest.raises(ManifestError, match="unknown count group 'dev'"):
        load_manifest(bad)


def test_verify_toy_copy_ok(toy):
    root, manifest = toy
    report = verify(manifest, root)
    assert report.ok, report.format()
    assert report.counts["train+val"] == {"sketches": 6, "photos": 3}
    assert report.counts["test"] == {"sketches": 4, "photos": 2}
    assert "RESULT: ok" in report.format()


def test_verify_reports_missing_file_precisely(toy):
    root, manifest = toy
    (root / "Toy_Coordinate").unlink()
    report = verify(manifest, root)
    assert not report.ok
    assert report.problems == [
        f"missing file Toy_Coordinate (expected at {root / 'Toy_Coordinate'})"
    ]


def test_verify_reports_wrong_hash_counts_and_folder(toy):
    root, manifest = toy
    (root / "photo" / "e_5.png").unlink()
    report = verify(manifest, root)
    text = "\n".join(report.problems)
    assert "folder photo/ has 4 entries, expected 5" in text
    assert "test: 1 photos, expected 2" in text
    assert "test: 2 sketches, expected 4" in text
    assert "2 item(s) skipped" in text and "no photo 'e_5'" in text

    blob = bytearray((root / "Toy_Coordinate").read_bytes())
    blob[-3] ^= 1  # same size, other content
    (root / "Toy_Coordinate").write_bytes(bytes(blob))
    report = verify(manifest, root)
    assert any(p.startswith("file Toy_Coordinate: sha256 ") for p in report.problems)
    assert not verify(manifest, root.parent / "elsewhere").ok


def test_verify_stub_is_not_ok(tmp_path):
    report = verify("fscoco", tmp_path)
    assert not report.ok and "stub" in report.problems[0]


def test_cli_verify_list_and_unknown(toy, capsys):
    root, manifest = toy
    assert main(["verify", str(manifest), "--root", str(root)]) == 0
    assert "RESULT: ok" in capsys.readouterr().out
    (root / "photo" / "c.png").unlink()
    assert main(["verify", str(manifest), "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "RESULT: NOT OK" in out and "no photo 'c'" in out
    assert main(["verify", "nonexistent", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "unknown dataset manifest 'nonexistent'" in err and "chairv2" in err
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "chairv2" in out and "stub" in out


def test_cli_runs_as_module(toy):
    root, manifest = toy
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "duet_lib.data", "verify", str(manifest), "--root"]
    ok = subprocess.run([*cmd, str(root)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (root / "Toy_Coordinate").unlink()
    bad = subprocess.run([*cmd, str(root)], capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "missing file Toy_Coordinate" in bad.stdout


def test_verify_glob_entry_and_missing_counts(toy):
    root, manifest = toy
    m = yaml.safe_load(manifest.read_text())
    m["files"][0] = {"path": "*_Coordinate", "type": "file", "sha256": None}
    m["loader_args"] = {}
    m["splits"]["counts"] = None
    m["splits"]["counts_note"] = "depends on the profile"
    report = verify(m, root)
    assert report.ok, report.format()
    notes = "\n".join(report.notes)
    assert "sha256 of Toy_Coordinate not recorded" in notes
    assert "depends on the profile" in notes and "test 4/2" in notes
    (root / "Other_Coordinate").write_bytes(b"x")
    report = verify(m, root)
    assert "several files match '*_Coordinate'" in report.problems[0]
