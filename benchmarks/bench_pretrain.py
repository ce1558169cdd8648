"""Tiny-CLIP pretraining throughput (chapter 02), measured in one run.

Compares, on this machine and in this process, image–caption pairs per second of:

1. ``naive``: the 16-stride conv-stem model (``duet-tiny-conv-96``) trained the
   plain way: full-context ``encode_text``, default AdamW, one caption per geometry;
2. ``book step, 16-stride``: the book's step
   (:func:`duet_lib.models.pretrain.train_step`: context trimmed to the longest
   caption, fused AdamW, both renderings as pairs) on the same model, the book's
   default backbone; then with the two speed settings of the fast preset (captions
   in length groups, CPU math attention);
   and the default's second-phase step (the pseudo-word inversion term added, half
   of its rows composed with appearance phrases);
3. the default model's step with the Muon optimiser (``optimizer="muon"``), and the
   HOG-stem backbone ``duet-tiny-hog-96`` (fixed gradient histograms under a learned
   map; its fixed histograms computed outside the timed step, as the library
   computes them once per corpus image) with AdamW, with Muon, and with its
   preset's first-phase step (Muon and the two speed settings); then its preset's
   second-phase step (through the whole model) and the same step on the text side
   only (``inversion_text_only``: the image tower frozen, the images embedded once
   outside the timed step), and the preset's rate over both phases either way (its
   step counts at the measured rates);
4. the HOG stem on a 3 x 3 token grid, ``duet-tiny-hog32-96`` (4 x 4 histogram
   cells per token, text MLP ratio 2), its preset's first- and second-phase steps
   and its rate over both phases;
5. ``book step, 32-stride``: the fast backbone ``duet-tiny-conv32-96`` (3 x 3 token
   grid, thin stem, text MLP ratio 2) with its preset, and with each speed setting
   switched off in turn.

Each row is the median of ``--steps`` timed steps after two warm-up steps.

Where the time goes is checked against the machine itself: one more step of each
row runs under PyTorch's FLOP counter (``torch.utils.flop_counter``; attention
through the plain kernel there, so its products are counted), and the same process
measures the best rate its float32 matrix products reach (square products of side
1024 and 2048 and the transformer's MLP product, the best median of each). From
these: the step's achieved GFLOP/s, its share of that rate, and the ceiling, the
pairs/s the step would reach if its counted arithmetic ran at that rate and nothing
else took time (an upper bound).

Prints a table, the ratios of the fast step to the naive and default ones, of both
to the 500 pairs/s target, and a JSON line.
Usage: ``python benchmarks/bench_pretrain.py [--threads 2] [--steps 7]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from duet_lib.data.world import pretraining_batch
from duet_lib.models.clip import load_clip
from duet_lib.models.pretrain import (
    MODEL_PRESETS,
    Inversion,
    PretrainConfig,
    _composed_rows,
    _make_optimizer,
    _to_batch,
    clip_loss,
    fixed_stem_features,
    soft_caption_targets,
    train_step,
)

TARGET = 500.0
BOOK = "duet-tiny-conv32-96"
OLD = "duet-tiny-conv-96"
HOG = "duet-tiny-hog-96"
HOG32 = "duet-tiny-hog32-96"
#: the HOG stem's preset without its speed settings and with the default optimiser
PLAIN = {"optimizer": "adamw", "text_buckets": 1, "math_attention": False}
HOG_PRESET = "book step, HOG stem, its preset (Muon + the speed settings)"
HOG_SECOND = "book step, HOG stem, its preset's second phase (whole model)"
HOG_TEXT_ONLY = "book step, HOG stem, second phase on the text side only"
HOG32_PRESET = f"book step, HOG stem, 3 x 3 grid ({HOG32}), its preset"
HOG32_SECOND = "book step, HOG stem, 3 x 3 grid, its preset's second phase"


def _median_time(fn, steps: int) -> float:
    fn()
    fn()  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _matmul_rate(repeats: int = 7) -> float:
    """The best median GFLOP/s of float32 matrix products in this process: squares
    of side 1024 and 2048, and the transformer MLP's product (37 tokens of 128
    photos, width 128 to 512)."""
    rates = []
    for m, k, n in ((1024, 1024, 1024), (2048, 2048, 2048), (37 * 128, 128, 512)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        product = functools.partial(torch.matmul, a, b)
        rates.append(2 * m * k * n / _median_time(product, repeats) / 1e9)
    return max(rates)


def _step_flops(fn) -> float:
    """FLOPs of one call of ``fn``, counted by PyTorch's FLOP counter (attention
    through the plain kernel, whose products the counter sees)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def _book_step(name: str, batch, second_phase: bool = False, **settings):
    """The book's step for ``name``'s teach preset (speed settings overridable);
    ``second_phase`` adds the inversion term of the second phase, on the text side
    only where the configuration says so (``inversion_text_only``: the images are
    embedded once beforehand, outside the timed step, as the library does once per
    phase). A HOG stem's fixed features are computed outside the timed step too, as
    the library does once per corpus image."""
    n = len(batch.caption_a)
    cfg = PretrainConfig.for_profile(
        "teach", model_name=name, batch_size=n, corpus_size=n, **settings
    )
    bundle = load_clip(name, None, seed=0)
    bundle.model.train()
    inversion = Inversion.for_bundle(bundle, cfg) if second_phase else None
    # a HOG stem's fixed histograms: once, as the library computes them per corpus
    table = fixed_stem_features(bundle, batch)
    if table is None:
        a, b = _to_batch(batch.view_a, bundle), _to_batch(batch.view_b, bundle)
    else:
        a, b = table["a"], table["b"]
    image_emb = None
    if second_phase and cfg.inversion_text_only:
        with torch.no_grad():
            image_emb = bundle.model.encode_image(torch.cat([a, b]))
        bundle.model.visual.requires_grad_(False)
        a, b = None, None
    opt = _make_optimizer(bundle.model, cfg, inversion.mapper if inversion else None)
    ids_a, ids_b = bundle.tokenize(batch.caption_a), bundle.tokenize(batch.caption_b)
    composed = None
    if second_phase and cfg.inversion_mix > 0:
        composed = _composed_rows(cfg, 0, np.arange(n), batch)
    return lambda: train_step(
        bundle, opt, a, b, ids_a, ids_b, cfg, None, inversion, composed, None, image_emb
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--batch", type=int, default=128, help="geometries per step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = pretraining_batch(np.random.default_rng(0), args.batch, 96)

    # 1. naive reference: plain encode_text (full context, no trimming), default
    #    AdamW, one caption per geometry (the second view only feeds the
    #    image-image term)
    ref = load_clip(OLD, None, seed=0)
    ref.model.train()
    ref_model = ref.model
    ref_opt = torch.optim.AdamW(ref_model.parameters(), lr=1e-4)
    ref_a, ref_b = _to_batch(batch.view_a, ref), _to_batch(batch.view_b, ref)
    ref_ids = ref.tokenize(batch.caption_a)
    targets = soft_caption_targets(ref_ids)

    def ref_step():
        img = F.normalize(ref_model.encode_image(torch.cat([ref_a, ref_b])), dim=-1)
        txt = F.normalize(ref_model.encode_text(ref_ids), dim=-1)
        ia, ib = img[: len(ref_a)], img[len(ref_a) :]
        loss = clip_loss(ia, txt, ref_model.logit_scale.exp(), targets)
        loss = loss + 0.3 * F.cross_entropy(ia @ ib.t() / 0.1, torch.arange(len(ia)))
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()

    rows = [
        (
            "naive, 16-stride (1 caption per geometry)",
            args.batch / _median_time(ref_step, args.steps),
        )
    ]
    # FLOPs per image-caption pair of each row's step (one extra step, counted)
    flops = {rows[0][0]: _step_flops(ref_step) / args.batch}
    plan = [
        (f"book step, 16-stride ({OLD}, default)", OLD, {}),
        (
            "book step, 16-stride, second phase (inversion term)",
            OLD,
            {"second_phase": True},
        ),
        (
            "book step, 16-stride, length groups + math attention",
            OLD,
            MODEL_PRESETS[BOOK],
        ),
        ("book step, 32-stride, one text pass", BOOK, {"text_buckets": 1}),
        ("book step, 32-stride, default attention", BOOK, {"math_attention": False}),
        ("book step, 16-stride, Muon (optimizer='muon')", OLD, {"optimizer": "muon"}),
        (f"book step, HOG stem ({HOG}), AdamW", HOG, PLAIN),
        ("book step, HOG stem, Muon", HOG, {**PLAIN, "optimizer": "muon"}),
        (HOG_PRESET, HOG, {}),
        (HOG_SECOND, HOG, {"second_phase": True}),
        (HOG_TEXT_ONLY, HOG, {"second_phase": True, "inversion_text_only": True}),
        (HOG32_PRESET, HOG32, {}),
        (HOG32_SECOND, HOG32, {"second_phase": True}),
        (f"book step, 32-stride ({BOOK})", BOOK, {}),
    ]
    for label, name, settings in plan:
        step = _book_step(name, batch, **settings)
        rows.append((label, 2 * args.batch / _median_time(step, args.steps)))
        flops[label] = _step_flops(step) / (2 * args.batch)
    rate = _matmul_rate()

    print(
        f"threads {args.threads}, {args.batch} geometries per step, median of "
        f"{args.steps} steps; best float32 matrix-product rate in this process: "
        f"{rate:.0f} GFLOP/s"
    )
    print(
        f"{'':66s} {'pairs/s':>7s} {'MFLOP/pair':>10s} {'GFLOP/s':>7s} "
        f"{'of rate':>7s} {'ceiling':>7s}"
    )
    for label, pairs in rows:
        per_pair = flops[label] / 1e6
        achieved = pairs * flops[label] / 1e9
        print(
            f"{label:66s} {pairs:7.0f} {per_pair:10.0f} {achieved:7.0f} "
            f"{achieved / rate:7.2f} {rate * 1e3 / per_pair:7.0f}"
        )
    naive, old, book = rows[0][1], rows[1][1], rows[-1][1]  # old: the book's default
    old_label = rows[1][0]
    old_ceiling = rate * 1e9 / flops[old_label]
    print(
        f"the default step: {flops[old_label] / 1e6:.0f} MFLOP per pair, run at "
        f"{old * flops[old_label] / 1e9 / rate:.2f} of the matrix-product rate; at "
        f"the full rate it would reach {old_ceiling:.0f} pairs/s "
        f"({old_ceiling / TARGET:.2f} of the target); {TARGET:.0f} pairs/s at the "
        f"full rate needs at most {rate * 1e3 / TARGET:.0f} MFLOP per pair"
    )
    rate_of = dict(rows)
    hog = rate_of[HOG_PRESET]

    def both_phases(cfg: PretrainConfig, first: str, second: str) -> float:
        """A preset's whole pretraining in pairs/s (corpus left out): its steps of
        both phases at the rates measured for rows ``first`` and ``second``."""
        seconds = cfg.steps / rate_of[first] + cfg.inversion_steps / rate_of[second]
        return cfg.total_steps / seconds

    preset = PretrainConfig.for_profile("teach", model_name=HOG)
    hog_whole = both_phases(preset, HOG_PRESET, HOG_SECOND)
    hog_text_only = both_phases(preset, HOG_PRESET, HOG_TEXT_ONLY)
    grid = PretrainConfig.for_profile("teach", model_name=HOG32)
    hog32_whole = both_phases(grid, HOG32_PRESET, HOG32_SECOND)
    print(
        f"HOG preset, both phases ({preset.steps} + {preset.inversion_steps} steps, "
        f"corpus left out): {hog_whole:.0f} pairs/s; with the second phase on the "
        f"text side only (its one embedding pass left out): {hog_text_only:.0f}; "
        f"the 3 x 3 HOG grid's preset ({grid.steps} + {grid.inversion_steps} steps): "
        f"{hog32_whole:.0f} ({hog32_whole / TARGET:.2f} of the target)"
    )
    print(
        f"fast / naive: {book / naive:.2f}x; fast / default book step: {book / old:.2f}x; "
        f"default / target {TARGET:.0f}: {old / TARGET:.2f}; fast / target: {book / TARGET:.2f}; "
        f"HOG preset / default: {hog / old:.2f}x, / target: {hog / TARGET:.2f}"
    )
    print(
        json.dumps(
            {
                "threads": args.threads,
                "pairs_per_s": {label: round(p, 1) for label, p in rows},
                "mflop_per_pair": {
                    label: round(f / 1e6, 1) for label, f in flops.items()
                },
                "matmul_gflop_per_s": round(rate, 1),
                "default_ceiling_pairs_per_s": round(old_ceiling, 1),
                "default_ceiling_ratio_to_target": round(old_ceiling / TARGET, 3),
                "default_pairs_per_s": round(old, 1),
                "fast_pairs_per_s": round(book, 1),
                "fast_ratio_to_naive": round(book / naive, 3),
                "fast_ratio_to_default": round(book / old, 3),
                "default_ratio_to_target": round(old / TARGET, 3),
                "fast_ratio_to_target": round(book / TARGET, 3),
                "hog_preset_ratio_to_default": round(hog / old, 3),
                "hog_preset_ratio_to_target": round(hog / TARGET, 3),
                "hog_preset_both_phases_pairs_per_s": round(hog_whole, 1),
                "hog_preset_both_phases_ratio_to_target": round(hog_whole / TARGET, 3),
                "hog32_preset_both_phases_pairs_per_s": round(hog32_whole, 1),
                "hog32_preset_both_phases_ratio_to_target": round(
                    hog32_whole / TARGET, 3
                ),
                "hog_text_only_both_phases_pairs_per_s": round(hog_text_only, 1),
                "hog_text_only_both_phases_ratio_to_target": round(
                    hog_text_only / TARGET, 3
                ),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
