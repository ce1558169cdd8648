"""Benchmark bookkeeping: per-seed results, aggregates, tables, JSON, figures.

Chapter 10 trains every method of the comparison for several seeds and evaluates
them on the test split. This module holds what turns those runs into a report:

- :class:`BenchmarkResults`: one flat metrics dict per (method, seed, dataset),
  where ``dataset`` names the gallery a column group of the table ranks against
  (e.g. the world's composed-query gallery, or a real dataset's FG-SBIR gallery).
- :func:`aggregate`: mean and sample standard deviation over seeds.
- :func:`reference_levels`: exact levels every Acc@1 is read against: chance, and
  the expected Acc@1 of a query that knows only the shape or only the appearance.
- :func:`markdown_table`: a table shaped like the paper's (rows methods, columns
  dataset x Acc@1 / Acc@10, plus shape@1 and appearance@1) with the reference
  levels in a footer; :func:`table_cells` reads one back.
- :func:`save_benchmark` / :func:`load_benchmark`: ``benchmark.json``, written
  atomically.
- :func:`ablation_configs`: one :class:`~duet_lib.train.TrainConfig` per removed
  loss.
- Figures: :func:`topk_figure` (top-k photos per query, sketch-only against the
  duet, ground truth framed in green, like the paper's Figure 2) and
  :func:`embedding_map` (a 2-D PCA map of sketch-only, text-only and composed
  queries with their target photos), fed by :func:`topk_indices` and
  :func:`composed_query_embeddings`.

Rates are fractions in [0, 1]; the table prints them in percent, as the paper does.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from duet_lib.checkpoint import atomic_write
from duet_lib.losses import LOSS_NAMES, LossWeights
from duet_lib.models.text_encoding import encode_text
from duet_lib.retrieval import GalleryIndex
from duet_lib.train import TrainConfig

__all__ = [
    "BENCHMARK_FORMAT",
    "DEFAULT_COLUMNS",
    "DEFAULT_METRICS",
    "GROUND_TRUTH_COLOUR",
    "Benchmark",
    "BenchmarkError",
    "BenchmarkNotFoundError",
    "BenchmarkResults",
    "BenchmarkRun",
    "Summary",
    "ablation_configs",
    "aggregate",
    "aggregates_from_dict",
    "aggregates_to_dict",
    "composed_query_embeddings",
    "embedding_map",
    "format_cell",
    "load_benchmark",
    "markdown_table",
    "method_metrics",
    "pca_2d",
    "reference_levels",
    "save_benchmark",
    "table_cells",
    "topk_figure",
    "topk_indices",
]

BENCHMARK_FORMAT = "duet_lib.benchmark/1"

#: Columns of a table per dataset: (metric key, column header).
DEFAULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("acc@1", "Acc@1"),
    ("acc@10", "Acc@10"),
    ("shape@1", "shape@1"),
    ("appearance@1", "appearance@1"),
)

#: Metrics :func:`aggregate` summarises when none are named (those present).
DEFAULT_METRICS: tuple[str, ...] = (
    "acc@1",
    "acc@5",
    "acc@10",
    "mrr",
    "shape@1",
    "appearance@1",
    "colour@1",
    "chance@1",
    "chance@5",
    "chance@10",
    "n_queries",
    "n_gallery",
)

#: Border colour of the ground-truth photo in :func:`topk_figure` (Okabe-Ito green).
GROUND_TRUTH_COLOUR = "#009E73"

MISSING = "–"

# A key of duet_lib.metrics.retrieval_report: "acc@10", "shape@1", "mrr", ...
_REPORT_KEY = re.compile(
    r"^(n_queries|n_gallery|mean_rank|median_rank|mrr|[a-z]+@\d+)$"
)


def _json_ready(value: Any) -> Any:
    """Paths, tuples and numpy / torch scalars as plain JSON values."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


class BenchmarkError(ValueError):
    """Malformed benchmark input: runs, metrics, tables or a benchmark file."""


class BenchmarkNotFoundError(BenchmarkError, FileNotFoundError):
    """The benchmark file does not exist."""


# --------------------------------------------------------------------- results


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BenchmarkError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _check_metrics(metrics: Any, where: str) -> dict[str, float]:
    if not isinstance(metrics, Mapping) or not metrics:
        raise BenchmarkError(f"{where}: metrics must be a non-empty dict")
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key:
            raise BenchmarkError(f"{where}: metric names must be strings, got {key!r}")
        if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BenchmarkError(
                f"{where}: metric {key!r} must be a number, got {value!r}"
            )
        if not math.isfinite(value):
            raise BenchmarkError(f"{where}: metric {key!r} is not finite ({value!r})")
        out[key] = value
    return out


def method_metrics(flat: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """The metrics of one query type out of a flat evaluation dict (chapter 10).

    ``evaluate_duet`` and ``evaluate_baselines`` name their metrics
    ``<prefix>_<key>``, e.g. ``bclip_fusion_acc@1``. Prefixes share beginnings
    (``bclip``, ``bclip_fg``, ``bclip_fusion``), so only keys whose remainder is a
    key of :func:`~duet_lib.metrics.retrieval_report` are taken.

    Args:
        flat: the flat metrics dict.
        prefix: the query type, e.g. "duet", "bclip", "bclip_fusion".

    Returns:
        ``{"acc@1": ..., "shape@1": ..., ...}``.

    Raises:
        BenchmarkError: no metric carries the prefix.
    """
    _check_name(prefix, "prefix")
    head = prefix + "_"
    out = {
        key[len(head) :]: value
        for key, value in flat.items()
        if key.startswith(head) and _REPORT_KEY.match(key[len(head) :])
    }
    if not out:
        known = sorted({k.rsplit("_", 1)[0] for k in flat if "_" in k})
        raise BenchmarkError(
            f"no metric with prefix {prefix!r}; prefixes present: {known}"
        )
    return out


@dataclass(frozen=True)
class BenchmarkRun:
    """One evaluated run: a method, trained with one seed, on one dataset.

    Attributes:
        method: the method's key, e.g. "duet" or "bclip_fusion".
        seed: the training seed.
        dataset: the gallery the metrics rank against, e.g. "world".
        metrics: flat ``retrieval_report`` keys, e.g. ``{"acc@1": 0.9}``.
    """

    method: str
    seed: int
    dataset: str
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "seed": self.seed,
            "dataset": self.dataset,
            "metrics": dict(self.metrics),
        }


class BenchmarkResults:
    """Flat metrics per (method, seed, dataset), in the order they were added.

    Example:
        >>> results = BenchmarkResults()
        >>> _ = results.add("duet", 0, {"acc@1": 0.75, "acc@10": 1.0})
        >>> _ = results.add("duet", 1, {"acc@1": 1.0, "acc@10": 1.0})
        >>> aggregate(results)["world"]["duet"]["acc@1"].mean
        0.875
    """

    def __init__(self, runs: Iterable[BenchmarkRun] = ()) -> None:
        self._runs: dict[tuple[str, int, str], BenchmarkRun] = {}
        for run in runs:
            self.add(run.method, run.seed, run.metrics, run.dataset)

    def add(
        self,
        method: str,
        seed: int,
        metrics: Mapping[str, Any],
        dataset: str = "world",
    ) -> BenchmarkRun:
        """Record the metrics of ``method`` trained with ``seed`` on ``dataset``.

        Raises:
            BenchmarkError: empty names, a seed that is not a non-negative int,
                non-numeric or non-finite metrics, or a (method, seed, dataset)
                recorded before.
        """
        _check_name(method, "method")
        _check_name(dataset, "dataset")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise BenchmarkError(f"seed must be a non-negative integer, got {seed!r}")
        key = (method, int(seed), dataset)
        if key in self._runs:
            raise BenchmarkError(
                f"method {method!r}, seed {seed}, dataset {dataset!r} is recorded twice"
            )
        run = BenchmarkRun(
            method,
            int(seed),
            dataset,
            _check_metrics(metrics, f"{method} / seed {seed} / {dataset}"),
        )
        self._runs[key] = run
        return run

    @property
    def runs(self) -> list[BenchmarkRun]:
        """Every run, in insertion order."""
        return list(self._runs.values())

    def __len__(self) -> int:
        return len(self._runs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BenchmarkResults) and self.runs == other.runs

    @property
    def methods(self) -> list[str]:
        """Method keys in order of first appearance."""
        return list(dict.fromkeys(r.method for r in self._runs.values()))

    @property
    def seeds(self) -> list[int]:
        """Seeds in order of first appearance."""
        return list(dict.fromkeys(r.seed for r in self._runs.values()))

    @property
    def datasets(self) -> list[str]:
        """Dataset names in order of first appearance."""
        return list(dict.fromkeys(r.dataset for r in self._runs.values()))

    def get(self, method: str, seed: int, dataset: str = "world") -> dict[str, float]:
        """The metrics of one run.

        Raises:
            KeyError: no such run.
        """
        run = self._runs.get((method, seed, dataset))
        if run is None:
            raise KeyError(f"no run of {method!r} with seed {seed} on {dataset!r}")
        return dict(run.metrics)

    def to_list(self) -> list[dict[str, Any]]:
        """JSON-ready list of runs."""
        return [r.to_dict() for r in self._runs.values()]

    @classmethod
    def from_list(cls, rows: Any) -> BenchmarkResults:
        """Inverse of :meth:`to_list`."""
        if not isinstance(rows, list):
            raise BenchmarkError(f"runs must be a list, got {type(rows).__name__}")
        out = cls()
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping) or set(row) != {
                "method",
                "seed",
                "dataset",
                "metrics",
            }:
                raise BenchmarkError(
                    f"run {i} must have exactly method, seed, dataset and metrics"
                )
            out.add(row["method"], row["seed"], row["metrics"], row["dataset"])
        return out


# ------------------------------------------------------------------ aggregation


@dataclass(frozen=True)
class Summary:
    """Mean and spread of one metric over seeds.

    Attributes:
        mean: mean over seeds.
        std: sample standard deviation (n - 1 in the denominator); None for one
            seed, where it is undefined.
        n: number of seeds.
    """

    mean: float
    std: float | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n}

    @classmethod
    def from_dict(cls, values: Any) -> Summary:
        if not isinstance(values, Mapping) or set(values) != {"mean", "std", "n"}:
            raise BenchmarkError(f"a summary needs mean, std and n, got {values!r}")
        std = values["std"]
        return cls(
            float(values["mean"]), None if std is None else float(std), int(values["n"])
        )


Aggregates = dict[str, dict[str, dict[str, Summary]]]


def aggregate(
    results: BenchmarkResults | Iterable[BenchmarkRun],
    metrics: Sequence[str] | None = None,
) -> Aggregates:
    """Mean and sample standard deviation over seeds, per dataset and method.

    Args:
        results: the runs.
        metrics: metric keys to summarise; None takes those of
            :data:`DEFAULT_METRICS` that the runs of a (dataset, method) carry.

    Returns:
        ``{dataset: {method: {metric: Summary}}}`` in insertion order.

    Raises:
        BenchmarkError: no runs, or a requested metric missing from some seeds
            of a method (a mean over different seeds would mislead).
    """
    runs = results.runs if isinstance(results, BenchmarkResults) else list(results)
    if not runs:
        raise BenchmarkError("no runs to aggregate")
    groups: dict[str, dict[str, list[BenchmarkRun]]] = {}
    for run in runs:
        groups.setdefault(run.dataset, {}).setdefault(run.method, []).append(run)
    out: Aggregates = {}
    for dataset, by_method in groups.items():
        out[dataset] = {}
        for method, group in by_method.items():
            if metrics is None:
                present = set().union(*(r.metrics for r in group))
                names = [m for m in DEFAULT_METRICS if m in present]
            else:
                names = list(metrics)
            summaries: dict[str, Summary] = {}
            for name in names:
                have = [r for r in group if name in r.metrics]
                if not have and metrics is not None:
                    continue  # this method does not report it (e.g. appearance@1)
                if len(have) != len(group):
                    missing = sorted(r.seed for r in group if name not in r.metrics)
                    raise BenchmarkError(
                        f"{method} on {dataset}: metric {name!r} is missing for "
                        f"seed(s) {missing}"
                    )
                values = np.array([r.metrics[name] for r in group], dtype=np.float64)
                std = float(values.std(ddof=1)) if len(values) > 1 else None
                summaries[name] = Summary(float(values.mean()), std, len(values))
            out[dataset][method] = summaries
    return out


def aggregates_to_dict(aggregates: Aggregates) -> dict[str, Any]:
    """JSON-ready form of :func:`aggregate`'s output."""
    return {
        d: {m: {k: s.to_dict() for k, s in ms.items()} for m, ms in by.items()}
        for d, by in aggregates.items()
    }


def aggregates_from_dict(values: Any) -> Aggregates:
    """Inverse of :func:`aggregates_to_dict`."""
    if not isinstance(values, Mapping):
        raise BenchmarkError("aggregates must be a dict")
    try:
        return {
            d: {
                m: {k: Summary.from_dict(s) for k, s in ms.items()}
                for m, ms in by.items()
            }
            for d, by in values.items()
        }
    except (AttributeError, TypeError, ValueError) as err:
        raise BenchmarkError(f"malformed aggregates: {err}") from None


# ------------------------------------------------------------------- references


def reference_levels(
    target: Sequence[int] | np.ndarray | torch.Tensor,
    n_gallery: int,
    *,
    gallery_shape: Sequence[Any] | None = None,
    gallery_appearance: Sequence[Any] | None = None,
    ks: Sequence[int] = (1, 10),
) -> dict[str, float]:
    """Exact reference levels of one gallery and query set (chapter 10).

    - ``chance@K`` = min(K, N) / N: a random ranking.
    - ``shape_only@1``: expected Acc@1 of a query that knows its target's shape
      exactly and picks uniformly among the gallery photos of that shape, i.e.
      the mean over queries of 1 / #{photos with the target's shape}.
    - ``appearance_only@1``: the same for a query that knows only the appearance
      (colour, pattern, background), as a text alone does on the world.

    A method whose Acc@1 is near ``appearance_only@1`` reads the words and
    ignores the sketch; near ``shape_only@1``, the reverse.

    Args:
        target: (Q,) index of each query's target in the gallery.
        n_gallery: N, the gallery size.
        gallery_shape: N shape labels (hashable), or None.
        gallery_appearance: N appearance labels (hashable), or None.
        ks: cut-offs of the chance levels.

    Returns:
        Dict with ``n_gallery``, ``n_queries``, ``chance@K`` and, when the labels
        are given, ``shape_only@1`` and ``appearance_only@1``.

    Raises:
        BenchmarkError: an empty query set or gallery, targets outside the
            gallery, label lists of the wrong length, or a bad cut-off.
    """
    tgt = np.asarray(
        target.cpu() if isinstance(target, torch.Tensor) else target, dtype=np.int64
    )
    if isinstance(n_gallery, bool) or not isinstance(n_gallery, int) or n_gallery < 1:
        raise BenchmarkError(f"n_gallery must be a positive integer, got {n_gallery!r}")
    n = n_gallery
    if tgt.ndim != 1 or len(tgt) == 0:
        raise BenchmarkError(f"target must be a non-empty (Q,) vector, got {tgt.shape}")
    if tgt.min() < 0 or tgt.max() >= n:
        raise BenchmarkError(f"target indices must lie in [0, {n})")
    out: dict[str, float] = {"n_gallery": n, "n_queries": len(tgt)}
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise BenchmarkError(f"every k must be a positive integer, got {k!r}")
        out[f"chance@{k}"] = min(k, n) / n

    def level(labels: Sequence[Any], name: str) -> float:
        labels = [tuple(v) if isinstance(v, list) else v for v in labels]
        if len(labels) != n:
            raise BenchmarkError(f"{name} has {len(labels)} labels for {n} photos")
        counts: dict[Any, int] = {}
        for v in labels:
            counts[v] = counts.get(v, 0) + 1
        return float(np.mean([1.0 / counts[labels[t]] for t in tgt]))

    if gallery_shape is not None:
        out["shape_only@1"] = level(gallery_shape, "gallery_shape")
    if gallery_appearance is not None:
        out["appearance_only@1"] = level(gallery_appearance, "gallery_appearance")
    return out


# ----------------------------------------------------------------------- tables


def format_cell(
    summary: Summary | Mapping[str, Any] | None, percent: bool = True, digits: int = 1
) -> str:
    """One table cell: "mean ± std" (percent), "mean" for one seed, "–" if None."""
    if summary is None:
        return MISSING
    if isinstance(summary, Mapping):
        summary = Summary.from_dict(summary)
    scale = 100.0 if percent else 1.0
    text = f"{summary.mean * scale:.{digits}f}"
    if summary.std is not None:
        text += f" ± {summary.std * scale:.{digits}f}"
    return text


def _labels(
    items: Sequence[str] | Mapping[str, str], what: str
) -> list[tuple[str, str]]:
    pairs = (
        list(items.items()) if isinstance(items, Mapping) else [(k, k) for k in items]
    )
    if not pairs:
        raise BenchmarkError(f"name at least one {what}")
    labels = [label for _, label in pairs]
    if len(set(labels)) != len(labels):
        raise BenchmarkError(f"{what} labels must be unique, got {labels}")
    for key, label in pairs:
        _check_name(key, what)
        _check_name(label, f"{what} label")
        if "|" in label:
            raise BenchmarkError(f"{what} label {label!r} must not contain '|'")
    return pairs


def _column_header(dataset_label: str, metric_label: str, single: bool) -> str:
    return metric_label if single else f"{dataset_label} · {metric_label}"


def markdown_table(
    aggregates: Aggregates,
    methods: Sequence[str] | Mapping[str, str],
    datasets: Sequence[str] | Mapping[str, str],
    columns: Sequence[tuple[str, str]] = DEFAULT_COLUMNS,
    *,
    references: Mapping[str, Mapping[str, float]] | None = None,
    text_method: str | None = None,
    percent: bool = True,
    digits: int = 1,
) -> str:
    """A Markdown table shaped like the paper's, with reference levels below it.

    Rows are methods; columns are dataset x metric (Acc@1, Acc@10, then shape@1
    and appearance@1 by default). Each cell is the mean over seeds and, with two
    or more seeds, the sample standard deviation ("91.7 ± 1.2"); a method that
    does not report a metric on a dataset shows "–". With one dataset the column
    headers drop its name.

    Args:
        aggregates: :func:`aggregate`'s output.
        methods: method keys in row order, or ``{key: row label}``.
        datasets: dataset keys in column order, or ``{key: label}``.
        columns: (metric key, header) per dataset.
        references: ``{dataset: reference_levels(...)}``; adds a footer line per
            dataset with its chance, shape-only and appearance-only levels.
        text_method: a method key whose Acc@1 the footer quotes as the
            text-only reference.
        percent: print rates in percent.
        digits: decimals.

    Returns:
        The Markdown text (table, a blank line, then the footer lines).

    Raises:
        BenchmarkError: an unknown method or dataset key, or duplicate labels.
    """
    method_pairs = _labels(methods, "method")
    dataset_pairs = _labels(datasets, "dataset")
    column_pairs = list(columns)
    if not column_pairs:
        raise BenchmarkError("name at least one column")
    for key, _ in dataset_pairs:
        if key not in aggregates:
            raise BenchmarkError(
                f"unknown dataset {key!r}; aggregated: {sorted(aggregates)}"
            )
    known = {m for by in aggregates.values() for m in by}
    for key, _ in method_pairs:
        if key not in known:
            raise BenchmarkError(f"unknown method {key!r}; aggregated: {sorted(known)}")
    single = len(dataset_pairs) == 1
    header = ["method"] + [
        _column_header(d_label, c_label, single)
        for _, d_label in dataset_pairs
        for _, c_label in column_pairs
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for m_key, m_label in method_pairs:
        cells = [m_label]
        for d_key, _ in dataset_pairs:
            by_metric = aggregates[d_key].get(m_key, {})
            for c_key, _ in column_pairs:
                cells.append(format_cell(by_metric.get(c_key), percent, digits))
        lines.append("| " + " | ".join(cells) + " |")

    footer = []
    unit = " %" if percent else ""
    scale = 100.0 if percent else 1.0
    for d_key, d_label in dataset_pairs:
        ref = (references or {}).get(d_key)
        if not ref:
            continue
        parts = [f"N = {int(ref['n_gallery'])} photos"]
        chances = sorted(
            (int(k.split("@")[1]), v) for k, v in ref.items() if k.startswith("chance@")
        )
        parts += [f"chance Acc@{k} = {v * scale:.{digits}f}{unit}" for k, v in chances]
        if "shape_only@1" in ref:
            parts.append(
                "shape known, appearance guessed: Acc@1 = "
                f"{ref['shape_only@1'] * scale:.{digits}f}{unit}"
            )
        if "appearance_only@1" in ref:
            parts.append(
                "appearance known, shape guessed: Acc@1 = "
                f"{ref['appearance_only@1'] * scale:.{digits}f}{unit}"
            )
        text_summary = None
        if text_method is not None:
            text_summary = aggregates[d_key].get(text_method, {}).get("acc@1")
        if text_summary is not None:
            cell = format_cell(text_summary, percent, digits)
            parts.append(f"text only (measured): Acc@1 = {cell}{unit}")
        footer.append(f"*{d_label}*: " + "; ".join(parts) + ".")
    text = "\n".join(lines)
    if footer:
        text += "\n\n" + "\n\n".join(footer)
    return text


def table_cells(markdown: str) -> dict[str, dict[str, str]]:
    """Read a table written by :func:`markdown_table` back into cells.

    Returns:
        ``{row label: {column header: cell text}}``.

    Raises:
        BenchmarkError: no table, or rows of the wrong width.
    """
    if not isinstance(markdown, str):
        raise BenchmarkError("markdown must be a string")
    rows = [ln.strip() for ln in markdown.splitlines() if ln.strip().startswith("|")]
    if len(rows) < 2:
        raise BenchmarkError("no Markdown table found")

    def split(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    header = split(rows[0])
    out: dict[str, dict[str, str]] = {}
    for line in rows[2:]:
        cells = split(line)
        if len(cells) != len(header):
            raise BenchmarkError(
                f"a table row has {len(cells)} cells, the header {len(header)}: {line}"
            )
        out[cells[0]] = dict(zip(header[1:], cells[1:], strict=True))
    return out


# ------------------------------------------------------------------------- json


@dataclass
class Benchmark:
    """Everything ``benchmark.json`` holds (see :func:`save_benchmark`)."""

    results: BenchmarkResults
    aggregates: Aggregates
    references: dict[str, dict[str, float]]
    config: dict[str, Any]
    environment: dict[str, Any]
    tables: dict[str, str]

    @property
    def methods(self) -> list[str]:
        return self.results.methods

    @property
    def seeds(self) -> list[int]:
        return self.results.seeds


def save_benchmark(
    path: str | os.PathLike,
    results: BenchmarkResults,
    *,
    aggregates: Aggregates | None = None,
    references: Mapping[str, Mapping[str, float]] | None = None,
    config: Mapping[str, Any] | None = None,
    environment: Mapping[str, Any] | None = None,
    tables: Mapping[str, str] | None = None,
) -> Path:
    """Write ``benchmark.json`` atomically (chapter 10).

    The file holds ``format``, ``methods``, ``seeds``, ``datasets``, ``runs``
    (per-seed metrics), ``aggregates`` (mean, std, n), ``references``,
    ``config``, ``environment`` and the Markdown ``tables``. It is first written
    to a temporary file in the same folder and then moved over ``path``, so a
    reader sees the old file or the new one, never half of one.

    Args:
        path: destination, e.g. ``build/results/benchmark.json``.
        results: the runs.
        aggregates: :func:`aggregate`'s output; None computes it.
        references: per dataset, :func:`reference_levels`' output.
        config: the settings of the benchmark (JSON-ready after conversion of
            paths, tuples and numpy scalars).
        environment: versions, device, git SHA (``env_report``).
        tables: name -> Markdown table.

    Returns:
        The written path.

    Raises:
        BenchmarkError: no runs, or content that cannot be written as JSON.
    """
    if not isinstance(results, BenchmarkResults) or not len(results):
        raise BenchmarkError("results must be a non-empty BenchmarkResults")
    aggregates = aggregate(results) if aggregates is None else aggregates
    doc = {
        "format": BENCHMARK_FORMAT,
        "methods": results.methods,
        "seeds": results.seeds,
        "datasets": results.datasets,
        "runs": results.to_list(),
        "aggregates": aggregates_to_dict(aggregates),
        "references": {k: dict(v) for k, v in (references or {}).items()},
        "config": dict(config or {}),
        "environment": dict(environment or {}),
        "tables": dict(tables or {}),
    }
    try:
        text = json.dumps(_json_ready(doc), indent=1, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise BenchmarkError(
            f"the benchmark cannot be written as JSON: {err}"
        ) from None
    data = (text + "\n").encode("utf-8")
    return atomic_write(path, lambda handle: handle.write(data))


def load_benchmark(path: str | os.PathLike) -> Benchmark:
    """Read a file written by :func:`save_benchmark`.

    Raises:
        BenchmarkNotFoundError: ``path`` does not exist.
        BenchmarkError: not valid JSON, or not a benchmark file.
    """
    source = Path(path)
    if not source.is_file():
        raise BenchmarkNotFoundError(f"benchmark file not found: {source}")
    try:
        doc = json.loads(source.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BenchmarkError(f"{source}: not valid JSON ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != BENCHMARK_FORMAT:
        raise BenchmarkError(
            f"{source}: not a benchmark file (expected format {BENCHMARK_FORMAT!r})"
        )
    missing = {"runs", "aggregates"} - set(doc)
    if missing:
        raise BenchmarkError(f"{source}: missing {sorted(missing)}")
    return Benchmark(
        results=BenchmarkResults.from_list(doc["runs"]),
        aggregates=aggregates_from_dict(doc["aggregates"]),
        references=dict(doc.get("references") or {}),
        config=dict(doc.get("config") or {}),
        environment=dict(doc.get("environment") or {}),
        tables=dict(doc.get("tables") or {}),
    )


# -------------------------------------------------------------------- ablations


def ablation_configs(
    base: TrainConfig, ablations: Sequence[str], steps: int | None = None
) -> dict[str, TrainConfig]:
    """One training configuration per removed loss (chapter 10).

    Each configuration equals ``base`` except that the weight of one loss is 0,
    which switches the term off entirely (its queries and passes are skipped).

    Args:
        base: the full model's configuration.
        ablations: loss names to remove, one at a time (among
            :data:`~duet_lib.losses.LOSS_NAMES`).
        steps: training steps of each ablation run (None keeps ``base.max_steps``);
            ``eval_every`` is capped at it.

    Returns:
        ``{loss name: TrainConfig}`` in the order given.

    Raises:
        ValueError: not a TrainConfig, an unknown or repeated name, a loss that
            ``base`` already switches off, or a removal that leaves no loss.
    """
    if not isinstance(base, TrainConfig):
        raise ValueError(f"base must be a TrainConfig, got {type(base).__name__}")
    if isinstance(ablations, str) or not isinstance(ablations, Sequence):
        raise ValueError(f"ablations must be a list of loss names, got {ablations!r}")
    unknown = [a for a in ablations if a not in LOSS_NAMES]
    if unknown:
        raise ValueError(
            f"unknown loss name(s) {unknown}; valid: {', '.join(LOSS_NAMES)}"
        )
    if len(set(ablations)) != len(ablations):
        raise ValueError(f"ablations repeat a loss: {list(ablations)}")
    changes: dict[str, Any] = {}
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer or None, got {steps!r}")
        changes = {"max_steps": steps, "eval_every": min(base.eval_every, steps)}
    weights = base.weights.as_dict()
    out: dict[str, TrainConfig] = {}
    for name in ablations:
        if weights[name] == 0:
            raise ValueError(
                f"loss {name!r} is already off in the base configuration; removing "
                "it would repeat the full model"
            )
        reduced = LossWeights.from_dict({**weights, name: 0.0})
        if not reduced.active():
            raise ValueError(f"removing {name!r} leaves no active loss")
        out[name] = dataclasses.replace(base, weights=reduced, **changes)
    return out


# ----------------------------------------------------------------- embeddings


def topk_indices(
    queries: torch.Tensor | np.ndarray,
    gallery: torch.Tensor | np.ndarray,
    k: int = 5,
) -> np.ndarray:
    """Top-k gallery rows per query by cosine similarity (exact search).

    Args:
        queries: (Q, D) query embeddings (normalised here).
        gallery: (N, D) gallery embeddings (normalised here).
        k: hits per query, 1 <= k <= N.

    Returns:
        (Q, k) int64 gallery indices, best first; exact ties go to the lower
        index (:class:`~duet_lib.retrieval.GalleryIndex`).
    """
    index = GalleryIndex(gallery, normalize=True)
    _, rows = index.search(queries, k)
    return rows.numpy()


@torch.no_grad()
def composed_query_embeddings(
    model: Any,
    task: Any,
    rows: Sequence[int] | None = None,
    *,
    batch_size: int = 128,
) -> dict[str, torch.Tensor]:
    """Embeddings of composed queries and their galleries, as evaluate_duet ranks them.

    For the chosen composed queries of ``task`` (a
    :class:`~duet_lib.baselines.RetrievalTask` with a composed task) this returns
    the duet's sketch-only query s_L^T = T([P^L ; s^w]), the composed query
    s_L^{T,q} = T([P^L ; s^w ; t^w]), the frozen text tower's embedding of the
    words alone, the target photos and the whole composed-query gallery, each
    L2-normalised. Ranking ``composed`` against ``gallery`` reproduces
    ``evaluate_duet``'s ``duet_*`` numbers.

    Args:
        model: a trained :class:`~duet_lib.models.duet.DuetModel`.
        task: the split's retrieval task.
        rows: indices of composed queries (into ``task.texts``); None = all.
        batch_size: images or queries per forward pass.

    Returns:
        ``{"sketch", "composed", "text", "target"}``: (Q, E) each; ``"gallery"``:
        (N, E); ``"target_index"``: (Q,) long, each target's row in the gallery.
    """
    if not getattr(task, "has_composed", False):
        raise ValueError("the task has no composed queries (no texts)")
    n_all = len(task.texts)
    rows = list(range(n_all)) if rows is None else [int(r) for r in rows]
    if not rows:
        raise ValueError("rows is empty")
    if min(rows) < 0 or max(rows) >= n_all:
        raise ValueError(f"rows must lie in [0, {n_all})")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        data = task.data
        sketch_idx = task.duet_index[rows].tolist()
        texts = [task.texts[r] for r in rows]
        sketch, composed = [], []
        for start in range(0, len(rows), batch_size):
            part = sketch_idx[start : start + batch_size]
            words = model.sketch_word(
                model.encode_sketch(data.sketch_tensor(part).to(device))
            )  # (B, d)
            out = model.encode_queries(
                {
                    "s": model.spec_sketch(words),
                    "q": model.spec_text(words, texts[start : start + batch_size]),
                }
            )
            sketch.append(out["s"].float())
            composed.append(out["q"].float())
        text = torch.cat(
            [
                encode_text(model.bundle, texts[s : s + batch_size]).float()
                for s in range(0, len(texts), batch_size)
            ]
        )
        ids = task.duet_gallery
        gallery = torch.cat(
            [
                model.encode_photo(
                    data.photo_tensor(ids[s : s + batch_size]).to(device)
                ).float()
                for s in range(0, len(ids), batch_size)
            ]
        )
    finally:
        model.train(was_training)
    gallery = F.normalize(gallery, dim=-1).cpu()
    target_index = task.duet_target[rows].long().cpu()
    return {
        "sketch": F.normalize(torch.cat(sketch), dim=-1).cpu(),
        "composed": F.normalize(torch.cat(composed), dim=-1).cpu(),
        "text": F.normalize(text, dim=-1).cpu(),
        "target": gallery[target_index],
        "gallery": gallery,
        "target_index": target_index,
    }


def pca_2d(points: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project points onto their first two principal components (numpy SVD).

    The sign of each component is fixed so that its largest-magnitude loading is
    positive, so the same points always give the same picture.

    Args:
        points: (M, D) points, M >= 2.

    Returns:
        ``(coords, explained)``: (M, 2) coordinates and the (2,) fraction of the
        total variance each component explains.
    """
    x = np.asarray(
        points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else points,
        dtype=np.float64,
    )
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(f"points must be (M, D) with M, D >= 2, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("points contain NaN or infinite values")
    centred = x - x.mean(axis=0)
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:2]
    flip = np.sign(comps[np.arange(2), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(flip == 0, 1.0, flip)[:, None]
    total = float((sing**2).sum())
    explained = (sing[:2] ** 2) / total if total > 0 else np.zeros(2)
    return centred @ comps.T, explained


# ---------------------------------------------------------------------- figures


def _image_axis(ax: Any, image: np.ndarray, ground_truth: bool) -> None:
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(ground_truth)
        if ground_truth:
            spine.set_edgecolor(GROUND_TRUTH_COLOUR)
            spine.set_linewidth(4)


def topk_figure(
    sketches: np.ndarray | Sequence[np.ndarray],
    texts: Sequence[str],
    gallery_images: np.ndarray | Sequence[np.ndarray],
    rankings: Mapping[str, np.ndarray],
    targets: Sequence[int] | np.ndarray,
    k: int = 5,
):
    """Top-k photos per query for several query types, like the paper's Figure 2.

    Each row is one query: its sketch, its words, then the top ``k`` gallery
    photos of each ranking (e.g. sketch-only, then the duet). The ground-truth
    photo, wherever it appears, is framed in green (:data:`GROUND_TRUTH_COLOUR`);
    other photos have no frame.

    Args:
        sketches: Q sketch images (H, W, 3) uint8 or floats in [0, 1].
        texts: Q query texts.
        gallery_images: N gallery photos (H, W, 3).
        rankings: label -> (Q, >= k) gallery indices, best first
            (:func:`topk_indices`).
        targets: (Q,) gallery index of each query's ground truth.
        k: photos shown per ranking.

    Returns:
        A matplotlib Figure with Q x (2 + k * len(rankings)) axes.
    """
    from matplotlib.figure import Figure

    n_q = len(sketches)
    if n_q == 0:
        raise ValueError("no queries to show")
    if len(texts) != n_q or len(targets) != n_q:
        raise ValueError(
            f"got {n_q} sketches, {len(texts)} texts and {len(targets)} targets"
        )
    if not rankings:
        raise ValueError("rankings is empty; give at least one label -> indices")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    n_gallery = len(gallery_images)
    ranked = {}
    for label, idx in rankings.items():
        arr = np.asarray(idx)
        if arr.ndim != 2 or arr.shape[0] != n_q or arr.shape[1] < k:
            raise ValueError(
                f"ranking {label!r} must be ({n_q}, >= {k}), got {arr.shape}"
            )
        if arr.min() < 0 or arr.max() >= n_gallery:
            raise ValueError(f"ranking {label!r} indexes outside the gallery")
        ranked[label] = arr[:, :k]
    n_cols = 2 + k * len(ranked)
    fig = Figure(figsize=(1.25 * n_cols, 1.45 * n_q + 0.4), layout="constrained")
    axes = np.asarray(fig.subplots(n_q, n_cols, squeeze=False))
    for q in range(n_q):
        row = axes[q]
        _image_axis(row[0], np.asarray(sketches[q]), False)
        row[1].axis("off")
        for spine in row[1].spines.values():
            spine.set_visible(False)
        row[1].text(
            0.5,
            0.5,
            "\n".join(textwrap.wrap(f"“{texts[q]}”", 16)),
            ha="center",
            va="center",
            fontsize=8,
            transform=row[1].transAxes,
        )
        col = 2
        for label, arr in ranked.items():
            for j in range(k):
                g = int(arr[q, j])
                ax = row[col]
                _image_axis(ax, np.asarray(gallery_images[g]), g == int(targets[q]))
                if q == 0:
                    ax.set_title(f"{label}\n#{j + 1}" if j == 0 else f"#{j + 1}")
                col += 1
    axes[0, 0].set_title("sketch")
    axes[0, 1].set_title("text")
    return fig


def embedding_map(
    sketch: torch.Tensor | np.ndarray,
    text: torch.Tensor | np.ndarray,
    composed: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
):
    """A 2-D PCA map of queries and their target photos (chapter 10).

    The four sets of Q points are L2-normalised, stacked and projected with
    :func:`pca_2d`; each set gets its own colour and marker, and a thin line joins
    every composed query to its target photo.

    Args:
        sketch: (Q, E) sketch-only queries.
        text: (Q, E) text-only queries.
        composed: (Q, E) composed (sketch + text) queries.
        target: (Q, E) the target photos, row i belonging to query i.

    Returns:
        A matplotlib Figure with one axes: four scatter collections (sketch only,
        text only, sketch + text, target photo) and Q lines.
    """
    from matplotlib.figure import Figure

    sets = []
    for name, value in (
        ("sketch", sketch),
        ("text", text),
        ("composed", composed),
        ("target", target),
    ):
        arr = torch.as_tensor(
            value.detach().cpu() if isinstance(value, torch.Tensor) else value
        ).double()
        if arr.ndim != 2:
            raise ValueError(f"{name} must be (Q, E), got shape {tuple(arr.shape)}")
        sets.append(F.normalize(arr, dim=-1))
    shapes = {tuple(s.shape) for s in sets}
    if len(shapes) != 1:
        raise ValueError(f"sketch, text, composed and target differ in shape: {shapes}")
    n_q = sets[0].shape[0]
    coords, explained = pca_2d(torch.cat(sets))
    parts = [coords[i * n_q : (i + 1) * n_q] for i in range(4)]
    fig = Figure(figsize=(6.0, 5.0), layout="constrained")
    ax = fig.subplots()
    for i in range(n_q):
        ax.plot(
            [parts[2][i, 0], parts[3][i, 0]],
            [parts[2][i, 1], parts[3][i, 1]],
            color="0.6",
            linewidth=0.8,
            zorder=1,
        )
    styles = (
        ("sketch only $s_L^T$", "o", "C0"),
        ("text only $T(t)$", "s", "C1"),
        ("sketch + text $s_L^{T,q}$", "^", "C2"),
        ("target photo $V(p)$", "*", "C3"),
    )
    for part, (label, marker, colour) in zip(parts, styles, strict=True):
        ax.scatter(
            part[:, 0],
            part[:, 1],
            marker=marker,
            color=colour,
            s=70 if marker == "*" else 36,
            label=label,
            zorder=2,
            edgecolors="none",
        )
    ax.set_xlabel(f"PC 1 ({100 * explained[0]:.0f} % of variance)")
    ax.set_ylabel(f"PC 2 ({100 * explained[1]:.0f} % of variance)")
    ax.set_title("queries and targets in the joint space (2-D PCA)")
    ax.legend(loc="best")
    return fig
