"""Structure rules of the book: index, anatomy, parameters, profiles, file sizes."""

import ast
import subprocess

import jupytext
import pytest

from duet_lib.book import discover, load_index
from duet_lib.book_checks import parameter_cell_problems, parameter_names
from duet_lib.config import PARAMS, PROFILE_VALUES, validate_params
from tests.conftest import REPO

REQUIRED = {
    "title",
    "objectives",
    "prerequisites",
    "kind",
    "accelerator",
    "runtime_s",
    "expected",
    "authors",
}
CHAPTER_LIST = discover()
IDS = [c.stem for c in CHAPTER_LIST]


@pytest.mark.parametrize("chapter", CHAPTER_LIST, ids=IDS)
def test_listed_in_index_with_required_fields(chapter):
    fields = load_index()[chapter.stem]
    assert not fields.get("planned"), "a chapter with a pair must not be marked planned"
    assert REQUIRED <= set(fields), f"missing: {REQUIRED - set(fields)}"
    assert fields["kind"] in ("teaching", "pipeline")
    assert set(fields["runtime_s"]) == {"smoke", "teach", "paper"}


@pytest.mark.parametrize("chapter", CHAPTER_LIST, ids=IDS)
def test_parameters_cell_literals_and_valid(chapter):
    assert parameter_cell_problems(chapter.notebook) == []
    names = parameter_names(chapter.notebook)
    assert {"profile", "seed", "device"} <= set(names)
    unknown = set(names) - set(PARAMS)
    assert not unknown, f"parameters not defined in duet_lib.config: {unknown}"
    nb = jupytext.read(chapter.notebook)
    cell = next(c for c in nb.cells if "parameters" in (c.metadata.get("tags") or []))
    teach = {
        n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse(cell.source).body
    }
    assert teach["profile"] == "teach"
    validate_params(**teach)


@pytest.mark.parametrize("chapter", CHAPTER_LIST, ids=IDS)
def test_anatomy(chapter):
    nb = jupytext.read(chapter.notebook)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith(f"# {int(chapter.number)}. "), first.source[:40]
    text = "\n".join(c.source for c in nb.cells)
    for heading in ("## Summary", "## Exercises", "## References"):
        assert heading in text, f"{chapter.stem} lacks {heading}"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "env_report(" in code, "environment report missing"
    assert "assert " in code, "a chapter ends with asserts on its own claims"
    assert (
        "%run" not in code
        and "from chapters" not in code
        and "import chapters" not in code
    )


def test_profile_values_name_existing_parameters():
    declared = set()
    for chapter in CHAPTER_LIST:
        declared |= set(parameter_names(chapter.notebook))
    for profile, values in PROFILE_VALUES.items():
        assert set(values) <= set(PARAMS), profile
        assert "profile" in values
        validate_params(**values)
    # every profile knob is used by at least one chapter parameter or is reserved
    # for chapters still planned (listed in the index)
    assert {"profile", "seed", "device"} <= declared


def test_no_large_files_tracked():
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    )
    big = []
    for name in filter(None, out.stdout.decode().split("\0")):
        path = REPO / name
        if path.is_file() and path.stat().st_size > 250_000:
            big.append(name)
    assert big == []


def test_index_lists_only_existing_or_planned():
    stems = {c.stem for c in CHAPTER_LIST}
    for stem, fields in load_index().items():
        assert stem in stems or fields.get("planned"), (
            f"{stem}: no pair and not planned"
        )


@pytest.mark.parametrize("chapter", CHAPTER_LIST, ids=IDS)
def test_papermill_reads_every_parameter(chapter):
    import papermill

    found = set(papermill.inspect_notebook(str(chapter.notebook)))
    assert found == set(parameter_names(chapter.notebook)), (
        "a parameter line papermill cannot parse"
    )
