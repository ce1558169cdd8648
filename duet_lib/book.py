"""The book runner: execute chapters in order with papermill and collect results.

Usage::

    python -m duet_lib.book list
    python -m duet_lib.book run [--profile P] [CHAPTER ...] [-p NAME VALUE ...]

Each chapter ``chapters/NN_slug.ipynb`` is executed into ``build/executed/``
(never over the committed pair) with the profile's parameters (``duet_lib.config``).
Per chapter the runner records wall time, status, environment and the chapter's
metrics in ``build/results/NN_slug.<profile>.json`` and rewrites
``build/results/summary.md``. A failing chapter stops the run, naming the chapter and
showing the failing cell and its error. Introduced in chapter 00.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from duet_lib.config import PROFILES, ParameterError, profile_values, validate_params
from duet_lib.paths import REPO_ROOT, build_dir
from duet_lib.progress import PROGRESS_ENV
from duet_lib.repro import env_report
from duet_lib.results import METRICS_FILE, write_json_atomic

CHAPTERS_DIR = REPO_ROOT / "chapters"
INDEX_FILE = CHAPTERS_DIR / "chapters.yml"


class ChapterFailed(RuntimeError):
    """A chapter raised while executing."""


@dataclass(frozen=True)
class Chapter:
    """One chapter pair: ``chapters/<stem>.py`` and ``chapters/<stem>.ipynb``."""

    number: str  # "00"
    stem: str  # "00_duet_at_a_glance"
    notebook: Path
    title: str

    @property
    def script(self) -> Path:
        return self.notebook.with_suffix(".py")


def load_index(path: Path = INDEX_FILE) -> dict[str, dict[str, Any]]:
    """``chapters.yml`` as {stem: fields}."""
    if not path.is_file():
        raise FileNotFoundError(f"chapter index not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    chapters = data.get("chapters", {})
    if not isinstance(chapters, dict):
        raise ValueError(f"{path}: 'chapters' must map chapter stems to their fields")
    return chapters


def discover(chapters_dir: Path = CHAPTERS_DIR) -> list[Chapter]:
    """All chapter notebooks, in reading order."""
    index = load_index(chapters_dir / "chapters.yml")
    found = []
    for nb in sorted(chapters_dir.glob("[0-9][0-9]_*.ipynb")):
        stem = nb.stem
        title = str(index.get(stem, {}).get("title", stem))
        found.append(Chapter(stem[:2], stem, nb, title))
    return found


def select(chapters: list[Chapter], names: list[str]) -> list[Chapter]:
    """Pick chapters by number ("9", "09"), stem or slug; all when ``names`` is empty."""
    if not names:
        return chapters
    picked = []
    for name in names:
        key = name.removesuffix(".ipynb").removesuffix(".py").split("/")[-1]
        hits = [
            c
            for c in chapters
            if key in (c.stem, c.number, c.stem[3:])
            or (key.isdigit() and int(key) == int(c.number))
        ]
        if not hits:
            valid = ", ".join(c.stem for c in chapters)
            raise SystemExit(f"unknown chapter {name!r}; chapters: {valid}")
        picked.extend(h for h in hits if h not in picked)
    return sorted(picked, key=lambda c: c.stem)


def declared_parameters(notebook: Path) -> dict[str, Any]:
    """The names and defaults of a notebook's ``parameters`` cell.

    Read once per version of the file: a run checks every chapter's parameters
    before it starts and again as it executes each one.
    """
    path = Path(notebook).resolve()
    return copy.deepcopy(_inspect_parameters(str(path), path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=64)
def _inspect_parameters(path: str, _mtime_ns: int) -> dict[str, Any]:
    import papermill

    info = papermill.inspect_notebook(path)
    return {name: spec.get("default") for name, spec in info.items()}


def chapter_parameters(
    chapter: Chapter, profile: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Profile values plus ``overrides``, checked against the chapter's parameters."""
    declared = declared_parameters(chapter.notebook)
    params = profile_values(profile, declared)
    for name, value in (overrides or {}).items():
        if name not in declared:
            raise ParameterError(
                f"chapter {chapter.stem} has no parameter {name!r}; "
                f"its parameters: {', '.join(declared)}"
            )
        params[name] = value
    if "output_dir" in declared and "output_dir" not in params:
        params["output_dir"] = str(build_dir("outputs", chapter.stem, profile))
    validate_params(**params)
    return params


def _parse_value(text: str) -> Any:
    """Parse a ``-p NAME VALUE`` value the way papermill's CLI does (YAML scalars)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _failure_text(chapter: Chapter, exc: Exception) -> str:
    cell = getattr(exc, "cell_index", None)
    source = getattr(exc, "source", None)
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    lines = [
        f"chapter {chapter.stem} failed"
        + (f" in cell {cell}" if cell is not None else "")
    ]
    if source:
        lines += ["--- failing cell ---", source.rstrip(), "---"]
    lines.append(f"{ename}: {evalue}")
    return "\n".join(lines)


def run_chapter(
    chapter: Chapter,
    profile: str,
    overrides: dict[str, Any] | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Execute one chapter; return its result record (also written to build/results)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    params = chapter_parameters(chapter, profile, overrides)
    executed = build_dir("executed") / f"{chapter.stem}.{profile}.ipynb"
    out_dir = Path(
        params.get("output_dir") or build_dir("outputs", chapter.stem, profile)
    )
    stale = out_dir / METRICS_FILE
    if stale.is_file():
        stale.unlink()
    record: dict[str, Any] = {
        "chapter": chapter.stem,
        "title": chapter.title,
        "profile": profile,
        "parameters": params,
        "executed_notebook": str(executed.relative_to(REPO_ROOT))
        if executed.is_relative_to(REPO_ROOT)
        else str(executed),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": env_report(profile=profile, quiet=True),
    }
    if profile != "paper":
        # The embedded default never downloads: a missing weight fails at once.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Text progress bars: a saved notebook cannot replay widget bars (progress.py).
    os.environ.setdefault(PROGRESS_ENV, "text")
    t0 = time.perf_counter()
    error = None
    try:
        papermill.execute_notebook(
            str(chapter.notebook),
            str(executed),
            parameters=params,
            kernel_name="python3",
            cwd=str(chapter.notebook.parent),
            progress_bar=not quiet,
            log_output=False,
        )
        record["status"] = "ok"
    except PapermillExecutionError as exc:
        record["status"] = "failed"
        error = _failure_text(chapter, exc)
    except Exception as exc:  # noqa: BLE001 - kernel death, timeouts, ...
        record["status"] = "failed"
        error = _failure_text(chapter, exc)
    record["wall_s"] = round(time.perf_counter() - t0, 2)
    record["metrics"] = json.loads(stale.read_text()) if stale.is_file() else {}
    if error:
        record["error"] = error
    write_json_atomic(build_dir("results") / f"{chapter.stem}.{profile}.json", record)
    write_summary()
    if error:
        raise ChapterFailed(error)
    return record


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def write_summary(results_dir: Path | None = None, max_metrics: int = 6) -> Path:
    """Rewrite ``summary.md``: one row per chapter and profile with time and metrics."""
    results_dir = results_dir or build_dir("results")
    rows = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict) or "chapter" not in rec:
            continue
        metrics = rec.get("metrics") or {}
        flat = [
            f"{k}={_fmt(v)}"
            for k, v in metrics.items()
            if isinstance(v, int | float | str)
        ]
        shown = ", ".join(flat[:max_metrics]) + (
            " …" if len(flat) > max_metrics else ""
        )
        rows.append(
            f"| {rec['chapter']} | {rec.get('profile', '?')} | {rec.get('status', '?')} "
            f"| {rec.get('wall_s', float('nan')):.1f} | {shown or '–'} |"
        )
    text = "\n".join(
        [
            "# Book run summary",
            "",
            "| chapter | profile | status | time (s) | key metrics |",
            "|---|---|---|---:|---|",
            *rows,
            "",
        ]
    )
    out = results_dir / "summary.md"
    out.write_text(text)
    return out


def split_overrides(
    chapters: list[Chapter], profile: str, overrides: dict[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Each chapter's share of ``-p`` overrides, all checked before anything runs.

    An override goes to every chosen chapter that declares the parameter (so
    ``-p model_name …`` reaches chapters 02–11 and skips 00–01); a name that no
    chosen chapter declares, or a bad value, raises :class:`ParameterError`.
    """
    overrides = overrides or {}
    declared = {ch.stem: declared_parameters(ch.notebook) for ch in chapters}
    unknown = [n for n in overrides if not any(n in d for d in declared.values())]
    if unknown:
        known = sorted({n for d in declared.values() for n in d})
        raise ParameterError(
            f"no chosen chapter has parameter(s) {', '.join(map(repr, unknown))}; "
            f"their parameters: {', '.join(known)}"
        )
    shares = {
        ch.stem: {k: v for k, v in overrides.items() if k in declared[ch.stem]}
        for ch in chapters
    }
    for ch in chapters:
        chapter_parameters(ch, profile, shares[ch.stem])  # bad values fail now
    return shares


def run(
    profile: str,
    names: list[str],
    overrides: dict[str, Any] | None = None,
    quiet: bool = False,
    keep_going: bool = False,
) -> list[dict[str, Any]]:
    """Run the selected chapters in order and return their records.

    Overrides reach the chapters that declare them (:func:`split_overrides`).
    A failing chapter stops the run (:class:`ChapterFailed`). With ``keep_going``
    the remaining chapters still run, and one :class:`ChapterFailed` naming every
    failed chapter is raised at the end.
    """
    from duet_lib.progress import tqdm

    chapters = select(discover(), names)
    per_chapter = split_overrides(chapters, profile, overrides)
    records, failures = [], []
    bar = tqdm(chapters, desc=f"book [{profile}]", unit="chapter", disable=quiet)
    for chapter in bar:
        bar.set_postfix_str(chapter.stem)
        try:
            records.append(
                run_chapter(chapter, profile, per_chapter[chapter.stem], quiet=quiet)
            )
        except ChapterFailed as exc:
            if not keep_going:
                raise
            failures.append((chapter.stem, str(exc)))
            tqdm.write(f"{chapter.stem}: FAILED (going on with the next chapter)")
            continue
        if not quiet:
            tqdm.write(f"{chapter.stem}: ok in {records[-1]['wall_s']:.1f} s")
    if failures:
        names_failed = ", ".join(stem for stem, _ in failures)
        details = "\n\n".join(text for _, text in failures)
        raise ChapterFailed(
            f"{len(failures)} of {len(chapters)} chapter(s) failed: {names_failed}"
            f"\n\n{details}"
        )
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m duet_lib.book", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute chapters with papermill into build/")
    p_run.add_argument("chapters", nargs="*", help="numbers or stems (default: all)")
    p_run.add_argument("--profile", default="teach", choices=PROFILES)
    p_run.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="override one chapter parameter (VALUE parsed as YAML)",
    )
    p_run.add_argument("--quiet", action="store_true", help="no progress bars")
    p_run.add_argument(
        "-k",
        "--keep-going",
        action="store_true",
        help="run the remaining chapters after a failure; report every failure at the end",
    )
    sub.add_parser("list", help="list chapters")
    args = parser.parse_args(argv)

    if args.command == "list":
        for ch in discover():
            print(f"{ch.number}  {ch.stem:<36} {ch.title}")
        return 0
    overrides = {name: _parse_value(value) for name, value in args.parameter}
    try:
        records = run(
            args.profile,
            args.chapters,
            overrides,
            quiet=args.quiet,
            keep_going=args.keep_going,
        )
    except (ChapterFailed, ParameterError) as exc:
        print(f"\nbook run stopped: {exc}", file=sys.stderr)
        print(f"results so far: {build_dir('results') / 'summary.md'}", file=sys.stderr)
        return 1
    total = sum(r["wall_s"] for r in records)
    print(
        f"{len(records)} chapter(s) ok in {total:.1f} s; summary: {build_dir('results') / 'summary.md'}"
    )
    return 0


def chapter_card(stem: str) -> str:
    """Markdown card for a chapter: objectives, prerequisites and runtime per profile."""
    fields = load_index().get(stem)
    if fields is None:
        raise KeyError(f"{stem} is not listed in {INDEX_FILE}")
    runtime = fields.get("runtime_s", {}) or {}
    lines = ["**You will learn to**", ""]
    lines += [f"- {o}" for o in fields.get("objectives", [])]
    lines += [
        "",
        "**Prerequisites:** " + ", ".join(fields.get("prerequisites", [])),
        "",
    ]
    lines += ["| profile | runtime |", "|---|---|"]
    for prof in PROFILES:
        sec = runtime.get(prof)
        lines.append(
            f"| {prof} | {'not measured yet' if sec is None else f'about {sec} s'} |"
        )
    return "\n".join(lines)


def chapter_map() -> list[dict[str, Any]]:
    """Every chapter of the index with its title, kind and whether its pair exists."""
    rows = []
    for stem, fields in load_index().items():
        rows.append(
            {
                "chapter": stem,
                "title": fields.get("title", stem),
                "kind": fields.get("kind", "teaching"),
                "available": (CHAPTERS_DIR / f"{stem}.ipynb").is_file(),
            }
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
