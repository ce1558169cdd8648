"""Progress-bar selection (duet_lib.progress)."""

import importlib

import pytest
import tqdm.auto
import tqdm.std

import duet_lib.progress as progress


@pytest.fixture
def reload_progress():
    yield lambda: importlib.reload(progress)
    importlib.reload(progress)  # leave the module as the environment says


@pytest.mark.parametrize(
    ("value", "expected"), [("text", tqdm.std.tqdm), ("auto", tqdm.auto.tqdm)]
)
def test_environment_selects_the_bar(monkeypatch, reload_progress, value, expected):
    monkeypatch.setenv(progress.PROGRESS_ENV, value)
    assert progress.progress_kind() == value
    assert reload_progress().tqdm is expected


def test_unset_means_auto(monkeypatch):
    monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)
    assert progress.progress_kind() == "auto"


def test_unknown_kind_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(progress.PROGRESS_ENV, "widgets")
    with pytest.raises(ValueError, match="valid: auto, text"):
        progress.progress_kind()
