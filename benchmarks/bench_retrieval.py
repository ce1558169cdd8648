"""Per-query latency of gallery search: chunked exact top-k against faiss.

For each gallery size N x D the script times a batch of Q queries (default 256) with

* ``floor``: one bare ``queries @ gallery.T`` followed by ``topk`` (no chunking, no
  checks; the whole (Q, N) score matrix in memory), the reference every other
  method is divided by;
* ``torch``: :class:`duet_lib.retrieval.GalleryIndex` exact search (chunked matmul);
* ``faiss-flat``: faiss ``IndexFlatIP`` (exact);
* ``faiss-ivf``: faiss ``IndexIVFFlat`` (approximate, sqrt(N) cells, 16 probed);
* ``faiss-hnsw``: faiss ``IndexHNSWFlat`` (approximate; skipped above
  ``--hnsw-max-n`` because building the graph takes minutes on a laptop CPU).

Latency is the best of ``--repeats`` timed batches divided by Q (the median is in
the JSON too); the methods take turns in each repeat, after one warm-up batch each,
so load from other programs on a shared machine affects them alike. Build time (copying the gallery, training and filling a faiss index)
is reported separately. Recall@k compares each method's top-k with the exact one.
The gallery is synthetic: L2-normalised points around 1,000 centres, and each query
is a noisy copy of one gallery row, so nearest neighbours are meaningful.

Usage (from the project root)::

    PYTHONPATH=. python benchmarks/bench_retrieval.py
    PYTHONPATH=. python benchmarks/bench_retrieval.py --sizes 10000x128 --repeats 5

The last line printed is one JSON object with every number. Used in chapter 10.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import faiss
import numpy as np
import torch

from duet_lib.retrieval import FaissOptions, GalleryIndex

METHODS = ("floor", "torch", "faiss-flat", "faiss-ivf", "faiss-hnsw")


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"10000x128,1000000x128"`` -> [(10000, 128), (1000000, 128)]."""
    sizes = []
    for item in text.split(","):
        try:
            n_text, d_text = item.lower().split("x")
            n, d = int(n_text), int(d_text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(
                f"bad size {item!r}; write sizes as NxD, e.g. 10000x128"
            ) from err
        if n < 1 or d < 1:
            raise argparse.ArgumentTypeError(f"bad size {item!r}: N and D must be >= 1")
        sizes.append((n, d))
    return sizes


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {unknown}; choose from {METHODS}"
        )
    return methods


def make_data(n: int, d: int, q: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clustered unit-norm gallery (n, d) and queries (q, d) near gallery rows."""
    gen = torch.Generator().manual_seed(seed)
    n_centres = min(1000, n)
    centres = torch.randn(n_centres, d, generator=gen)
    gallery = torch.randn(n, d, generator=gen).mul_(0.6)
    gallery += centres[torch.randint(0, n_centres, (n,), generator=gen)]
    gallery /= gallery.norm(dim=1, keepdim=True)
    queries = gallery[torch.randint(0, n, (q,), generator=gen)]
    queries = queries + 0.05 * torch.randn(q, d, generator=gen)
    queries /= queries.norm(dim=1, keepdim=True)
    return gallery, queries


def recall(found: torch.Tensor, truth: torch.Tensor) -> float:
    hits = sum(
        len(set(a) & set(b))
        for a, b in zip(found.tolist(), truth.tolist(), strict=True)
    )
    return hits / truth.numel()


def bench_size(
    n: int, d: int, args: argparse.Namespace
) -> list[dict[str, float | int | str | None]]:
    """Build every index for one gallery size, then time them round-robin."""
    gallery, queries = make_data(n, d, args.queries, args.seed)
    k = min(args.k, n)
    rows: dict[str, dict[str, float | int | str | None]] = {}
    searches = {}
    for method in args.methods:
        rows[method] = {"n": n, "d": d, "method": method}
        if method == "floor":
            rows[method]["build_s"] = 0.0
            searches[method] = lambda: (queries @ gallery.T).topk(k, dim=1).indices
            continue
        if method == "faiss-hnsw" and n > args.hnsw_max_n:
            rows[method]["skipped"] = f"N > --hnsw-max-n={args.hnsw_max_n}"
            continue
        start = time.perf_counter()
        if method == "torch":
            index = GalleryIndex(gallery, chunk_size=args.chunk_size)
        else:
            index = GalleryIndex(
                gallery,
                backend="faiss",
                faiss_kind=method.removeprefix("faiss-"),
                faiss_options=FaissOptions(seed=args.seed),
            ).build()
        rows[method]["build_s"] = time.perf_counter() - start
        searches[method] = lambda index=index: index.search(queries, k)[1]

    # Exact answer for recall, and one warm-up call per method.
    truth = (queries @ gallery.T).topk(k, dim=1).indices
    for method, search in searches.items():
        rows[method]["recall"] = recall(search(), truth)
    # Round-robin repeats: background load on a shared CPU hits every method alike.
    times: dict[str, list[float]] = {m: [] for m in searches}
    for _ in range(args.repeats):
        for method, search in searches.items():
            start = time.perf_counter()
            search()
            times[method].append(time.perf_counter() - start)
    floor_best = min(times["floor"]) if "floor" in times else None
    for method, ts in times.items():
        best_ms = 1e3 * min(ts) / args.queries
        rows[method]["per_query_ms"] = best_ms
        rows[method]["per_query_ms_median"] = 1e3 * statistics.median(ts) / args.queries
        rows[method]["ratio"] = min(ts) / floor_best if floor_best else None
    return list(rows.values())


def print_table(rows: list[dict], k: int) -> None:
    header = (
        f"{'N':>9} {'D':>4}  {'method':<11} {'build s':>8} {'ms/query':>9} "
        f"{'x floor':>8} {f'recall@{k}':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        if "skipped" in r:
            print(f"{r['n']:>9} {r['d']:>4}  {r['method']:<11} skipped: {r['skipped']}")
            continue
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(
            f"{r['n']:>9} {r['d']:>4}  {r['method']:<11} {r['build_s']:>8.2f} "
            f"{r['per_query_ms']:>9.4f} {ratio:>8} {r['recall']:>10.3f}"
        )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=parse_sizes("10000x128,10000x512,1000000x128"),
        help="comma-separated NxD gallery sizes (default: 10000x128,10000x512,1000000x128)",
    )
    parser.add_argument(
        "--queries", type=int, default=256, help="queries per batch (Q)"
    )
    parser.add_argument("--k", type=int, default=10, help="hits per query")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed batches per method"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the synthetic data"
    )
    parser.add_argument(
        "--methods",
        type=parse_methods,
        default=list(METHODS),
        help=f"comma-separated subset of {','.join(METHODS)}",
    )
    parser.add_argument(
        "--hnsw-max-n", type=int, default=200_000, help="skip HNSW above this N"
    )
    parser.add_argument(
        "--chunk-size", type=int, default=32_768, help="gallery rows per torch block"
    )
    args = parser.parse_args(argv)
    if args.queries < 1 or args.k < 1 or args.repeats < 1:
        parser.error("--queries, --k and --repeats must be >= 1")

    env = {
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
    }
    print(
        f"Q={args.queries} k={args.k} repeats={args.repeats} "
        f"torch threads={env['torch_threads']} faiss threads={env['faiss_threads']}"
    )
    start = time.perf_counter()
    rows = []
    for n, d in args.sizes:
        rows.extend(bench_size(n, d, args))
    total_s = time.perf_counter() - start
    print_table(rows, args.k)
    print(f"total {total_s:.1f} s")
    result = {
        "benchmark": "retrieval",
        "queries": args.queries,
        "k": args.k,
        "repeats": args.repeats,
        "chunk_size": args.chunk_size,
        "ivf": "IndexIVFFlat, nlist=round(sqrt(N)), nprobe=16",
        "hnsw": "IndexHNSWFlat, M=32, efConstruction=80, efSearch=128",
        "env": env,
        "total_s": round(total_s, 2),
        "results": rows,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
