"""Every chapter is a jupytext pair in sync, with a stripped notebook."""

import json
import shutil

import pytest

from duet_lib.book_checks import pair_problems
from tests.conftest import CHAPTERS

STEMS = sorted(
    {p.stem for p in CHAPTERS.glob("[0-9][0-9]_*.py")}
    | {p.stem for p in CHAPTERS.glob("[0-9][0-9]_*.ipynb")}
)


def test_there_are_chapters():
    assert "00_duet_at_a_glance" in STEMS


@pytest.mark.parametrize("stem", STEMS)
def test_pair_in_sync_and_stripped(stem):
    problems = pair_problems(CHAPTERS / f"{stem}.py", CHAPTERS / f"{stem}.ipynb")
    assert problems == []


@pytest.fixture
def pair_copy(tmp_path):
    stem = "00_duet_at_a_glance"
    for ext in (".py", ".ipynb"):
        shutil.copy(CHAPTERS / f"{stem}{ext}", tmp_path / f"{stem}{ext}")
    return tmp_path / f"{stem}.py", tmp_path / f"{stem}.ipynb"


def test_checker_accepts_the_copy(pair_copy):
    assert pair_problems(*pair_copy) == []


def test_checker_catches_a_desynced_pair(pair_copy):
    py, nb = pair_copy
    py.write_text(py.read_text().replace("seed = 0", "seed = 1", 1))
    problems = pair_problems(py, nb)
    assert any("out of sync" in p for p in problems), problems


def test_checker_catches_outputs_and_papermill_traces(pair_copy):
    py, nb = pair_copy
    data = json.loads(nb.read_text())
    code = next(c for c in data["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}]
    code["execution_count"] = 3
    data["metadata"]["papermill"] = {"parameters": {}}
    nb.write_text(json.dumps(data))
    problems = " | ".join(pair_problems(py, nb))
    assert "has outputs" in problems
    assert "execution count" in problems
    assert "papermill" in problems


def test_checker_catches_a_missing_half(pair_copy):
    py, nb = pair_copy
    nb.unlink()
    assert "missing" in pair_problems(py, nb)[0]
