"""Benchmark of the procedural world: generation speed and the reference ceiling.

Run from the repository root:

    python benchmarks/bench_world.py                # teach world, 2 workers
    python benchmarks/bench_world.py --skip-reference --profile smoke

It generates the world into a fresh temporary folder (or ``--out``), and prints

* photos/s, sketches/s, total wall time and its ratio to the 60 s budget, and the
  CPU seconds spent (a machine shared with other jobs inflates wall time, CPU time
  does not);
* photos/s when rendering directly at 96 px (chapter 02's pretraining), and
  pretraining items/s (two photos, a line drawing and three captions per item);
* the reference matcher's FG-SBIR Acc@1 / Acc@5 over the test shapes at 96 and
  128 px, at difficulty 0 (easy) and 1 (hard).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from duet_lib.data import world as W

BUDGET_S = 60.0


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def bench_generation(cfg: W.WorldConfig, out: Path, workers: int) -> Path:
    if out.exists():
        shutil.rmtree(out)
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    W.generate_world(cfg, out, quiet=True, workers=workers)
    wall = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    meta = W.read_world_meta(out)
    n_ph, n_sk = meta["counts"]["photos"], meta["counts"]["sketches"]
    size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    print(
        f"world: {n_ph} photos ({cfg.image_size} px), {n_sk} sketches, {size_mb:.0f} MB"
    )
    print(
        f"  total wall time  {wall:6.1f} s  ({wall / BUDGET_S:.2f} x the {BUDGET_S:.0f} s budget)"
    )
    print(
        f"  CPU time         {cpu:6.1f} s  (/{workers} workers = {cpu / workers:.1f} s)"
    )
    print(
        f"  photos/s         {n_ph / wall:6.1f}   sketches/s {n_sk / wall:6.1f}  (wall)"
    )
    return out


def bench_small_render(size: int = 96, n: int = 400) -> None:
    rng = np.random.default_rng(0)
    shapes = W.sample_shapes("shoe", n // 2, rng) + W.sample_shapes(
        "chair", n // 2, rng
    )
    apps = [W.random_appearance(rng) for _ in shapes]
    t0 = time.process_time()
    for s, a in zip(shapes, apps, strict=True):
        W.render_photo(s, a, rng, size)
    dt = time.process_time() - t0
    print(f"photos/s at {size} px (one core, geometry included): {n / dt:.0f}")
    t0 = time.process_time()
    W.pretraining_batch(np.random.default_rng(1), 256, size)
    dt = time.process_time() - t0
    print(
        f"pretraining items/s at {size} px (one core, 2 photos + drawing): {256 / dt:.0f}"
    )


def bench_reference(root: Path | None, cfg: W.WorldConfig) -> None:
    print("reference matcher (chamfer on edge maps), test split, Acc@1 / Acc@5:")
    for difficulty in (0.0, 1.0):
        c = W.WorldConfig(**{**cfg.to_dict(), "difficulty": difficulty})
        if root is not None and difficulty == cfg.difficulty:
            ws = W.load_world(root)
            recs = ws.sketches_in("test")
            gallery = ws.photo_ids("test")
            index = {p: i for i, p in enumerate(gallery)}
            shapes = [W.shape_from_attributes(ws.attributes[p]) for p in gallery]
            sketches = [r.strokes for r in recs]
            targets = [index[r.photo_id] for r in recs]
        else:
            shapes, sketches, targets = W.split_sketches(c, "test")
        for size in (96, 128):
            r = W.reference_accuracy(sketches, targets, shapes, size)
            print(
                f"  difficulty {difficulty:.1f}, {size:3d} px: "
                f"{r['acc@1']:.3f} / {r['acc@5']:.3f}  "
                f"({int(r['n_queries'])} sketches, {int(r['n_gallery'])} shapes)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="teach", choices=("smoke", "teach"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="keep the world here")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--preview", type=Path, default=None, help="save a preview PNG")
    args = parser.parse_args()

    cfg = W.WorldConfig.for_profile(args.profile)
    tmp = None
    out = args.out
    if out is None:
        tmp = tempfile.mkdtemp(prefix="bench_world_")
        out = Path(tmp) / "world"
    try:
        bench_generation(cfg, out, args.workers)
        bench_small_render()
        if not args.skip_reference:
            bench_reference(out, cfg)
        if args.preview is not None:
            W.preview_world(W.load_world(out)).save(args.preview)
            print(f"preview saved to {args.preview}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
