"""Every chapter executes end to end in the smoke profile (papermill, fresh kernel),
and its recorded metrics lie in the bands chapters.yml gives for smoke."""

import pytest

from duet_lib import book
from duet_lib.paths import shared_chairv2

CHAPTER_LIST = book.discover()

# chapters whose smoke run reads real data that may be absent on a machine
NEEDS_REAL_DATA = {"11_real_sketches": ("QMUL-Chair-V2", shared_chairv2)}


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return tmp_path_factory.mktemp("build")


@pytest.mark.parametrize("chapter", CHAPTER_LIST, ids=[c.stem for c in CHAPTER_LIST])
def test_chapter_runs_in_smoke_profile(chapter, build, monkeypatch):
    if chapter.stem in NEEDS_REAL_DATA:
        name, locate = NEEDS_REAL_DATA[chapter.stem]
        if locate() is None:
            pytest.skip(f"{name} is not present beside the project (../shared/data)")
    monkeypatch.setenv("DUET_BUILD_DIR", str(build))
    record = book.run_chapter(chapter, "smoke", quiet=True)
    assert record["status"] == "ok"
    bands = (book.load_index()[chapter.stem].get("expected") or {}).get("smoke") or {}
    for name, (lo, hi) in bands.items():
        assert name in record["metrics"], f"{chapter.stem} did not record {name}"
        assert lo <= record["metrics"][name] <= hi, (
            name,
            record["metrics"][name],
            (lo, hi),
        )
