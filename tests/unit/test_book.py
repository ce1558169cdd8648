"""The book runner: execution into build/, results, summary, failure reporting."""

import json

import nbformat
import pytest

from duet_lib import book
from duet_lib.config import ParameterError


def _notebook(path, body, extra=""):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    params = nbformat.v4.new_code_cell(
        'profile = "teach"\nseed = 0\ndevice = "auto"\noutput_dir = None\n' + extra
    )
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 98. Test"),
        params,
        nbformat.v4.new_code_cell(body),
    ]
    nbformat.write(nb, path)
    return book.Chapter(path.stem[:2], path.stem, path, "Test")


@pytest.fixture
def build(tmp_path, monkeypatch):
    monkeypatch.setenv("DUET_BUILD_DIR", str(tmp_path / "build"))
    return tmp_path / "build"


def test_ok_chapter_records_results_and_summary(tmp_path, build):
    body = (
        "from duet_lib.results import save_metrics\n"
        "assert profile == 'smoke'\n"
        "save_metrics(output_dir, {'answer': 42, 'acc@1': 0.5})\n"
    )
    chapter = _notebook(tmp_path / "98_ok.ipynb", body)
    original = chapter.notebook.read_text()
    record = book.run_chapter(chapter, "smoke", quiet=True)
    assert record["status"] == "ok"
    assert record["metrics"] == {"answer": 42, "acc@1": 0.5}
    assert chapter.notebook.read_text() == original, (
        "the source notebook must not change"
    )
    saved = json.loads((build / "results" / "98_ok.smoke.json").read_text())
    assert saved["wall_s"] > 0 and saved["environment"]["torch"]
    assert (build / "executed" / "98_ok.smoke.ipynb").is_file()
    summary = (build / "results" / "summary.md").read_text()
    assert "| 98_ok | smoke | ok |" in summary and "answer=42" in summary


def test_failing_chapter_names_chapter_cell_and_error(tmp_path, build):
    chapter = _notebook(
        tmp_path / "97_bad.ipynb", "x = 1\nraise ValueError('boom here')"
    )
    with pytest.raises(book.ChapterFailed) as err:
        book.run_chapter(chapter, "smoke", quiet=True)
    text = str(err.value)
    assert "97_bad" in text and "raise ValueError('boom here')" in text
    assert "ValueError: boom here" in text
    saved = json.loads((build / "results" / "97_bad.smoke.json").read_text())
    assert saved["status"] == "failed"


def test_unknown_override_is_refused_before_running(tmp_path, build):
    chapter = _notebook(tmp_path / "96_p.ipynb", "pass")
    with pytest.raises(ParameterError, match="no parameter 'stepz'"):
        book.chapter_parameters(chapter, "smoke", {"stepz": 3})
    with pytest.raises(ParameterError, match="seed"):
        book.chapter_parameters(chapter, "smoke", {"seed": -4})


def test_overrides_reach_only_the_chapters_that_declare_them(tmp_path, build):
    plain = _notebook(tmp_path / "94_a.ipynb", "pass")
    richer = _notebook(tmp_path / "95_b.ipynb", "pass", extra="model_name = 'x'\n")
    shares = book.split_overrides([plain, richer], "smoke", {"model_name": "y"})
    assert shares == {"94_a": {}, "95_b": {"model_name": "y"}}
    with pytest.raises(ParameterError, match="no chosen chapter has parameter"):
        book.split_overrides([plain, richer], "smoke", {"stepz": 3})
    with pytest.raises(ParameterError, match="no chosen chapter has parameter"):
        book.split_overrides([plain], "smoke", {"model_name": "y"})
    with pytest.raises(ParameterError, match="seed"):  # values checked up front
        book.split_overrides([plain, richer], "smoke", {"seed": -4})


def test_select_by_number_and_stem():
    chapters = book.discover()
    assert book.select(chapters, ["0"])[0].stem == "00_duet_at_a_glance"
    assert book.select(chapters, ["00_duet_at_a_glance"])[0].number == "00"
    with pytest.raises(SystemExit, match="unknown chapter"):
        book.select(chapters, ["99"])


def test_cli_list(capsys):
    assert book.main(["list"]) == 0
    assert "00_duet_at_a_glance" in capsys.readouterr().out


def test_runner_records_text_progress_bars(tmp_path, build, monkeypatch):
    # the kernel inherits DUET_PROGRESS=text from the runner, so duet_lib's bars are
    # tqdm's text bars (a saved notebook cannot replay widget bars)
    monkeypatch.setenv("DUET_PROGRESS", "unset-by-test")
    monkeypatch.delenv("DUET_PROGRESS")  # restored to "absent" after the test
    body = (
        "import os\n"
        "import tqdm.std as tstd\n"
        "from duet_lib.progress import tqdm as bar\n"
        "assert os.environ['DUET_PROGRESS'] == 'text'\n"
        "assert bar is tstd.tqdm, bar\n"
        "for _ in bar(range(3), desc='demo'):\n"
        "    pass\n"
    )
    chapter = _notebook(tmp_path / "96_bars.ipynb", body)
    assert book.run_chapter(chapter, "smoke", quiet=True)["status"] == "ok"
    executed = nbformat.read(build / "executed" / "96_bars.smoke.ipynb", as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert "demo: 100%" in text and "3/3" in text, text
    assert "IProgress" not in text
    assert not any(
        "application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs
    )


@pytest.mark.parametrize("keep_going", [False, True])
def test_failure_stops_the_run_unless_keep_going(
    tmp_path, build, monkeypatch, keep_going
):
    bad = _notebook(tmp_path / "94_bad.ipynb", "raise ValueError('first fails')")
    ok = _notebook(tmp_path / "95_ok.ipynb", "x = 1")
    monkeypatch.setattr(book, "discover", lambda: [bad, ok])
    with pytest.raises(book.ChapterFailed) as err:
        book.run("smoke", [], quiet=True, keep_going=keep_going)
    assert "94_bad" in str(err.value) and "first fails" in str(err.value)
    ran_second = (build / "results" / "95_ok.smoke.json").is_file()
    assert ran_second is keep_going
    if keep_going:
        assert str(err.value).startswith("1 of 2 chapter(s) failed: 94_bad")
        saved = json.loads((build / "results" / "95_ok.smoke.json").read_text())
        assert saved["status"] == "ok"
