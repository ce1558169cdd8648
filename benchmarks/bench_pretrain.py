"""Tiny-CLIP pretraining throughput (chapter 02), measured in one run.

Compares, on this machine and in this process:

1. ``naive``: the same conv-stem model trained the plain way: full-context
   ``encode_text``, default AdamW, one caption per geometry;
2. ``book``: the book's pretraining step (:func:`duet_lib.models.pretrain.train_step`):
   conv-stem tiny CLIP at 96 px, context 32 trimmed to the batch's longest caption,
   fused AdamW, both renderings of each geometry used as image–caption pairs.

Prints pairs/s of each, the ratio to the 500 pairs/s target, and a JSON line.
Usage: ``python benchmarks/bench_pretrain.py [--threads 2] [--steps 5]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from duet_lib.data.world import pretraining_batch
from duet_lib.models.clip import load_clip
from duet_lib.models.pretrain import (
    PretrainConfig,
    _make_optimizer,
    _to_batch,
    clip_loss,
    soft_caption_targets,
    train_step,
)

TARGET = 500.0


def _time(fn, steps: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128, help="geometries per step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = pretraining_batch(np.random.default_rng(0), args.batch, 96)

    # 1. naive reference: same model, plain encode_text (full context, no trimming),
    #    default AdamW, one caption per geometry (the second view only feeds the
    #    image-image term)
    ref = load_clip("duet-tiny-conv-96", None, seed=0)
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

    t_ref = _time(ref_step, args.steps)
    ref_pairs = args.batch / t_ref

    # 2. the book's step
    cfg = PretrainConfig(batch_size=args.batch, corpus_size=args.batch)
    book = load_clip(cfg.model_name, None, seed=0)
    book.model.train()
    opt = _make_optimizer(book.model, cfg)
    a, b = _to_batch(batch.view_a, book), _to_batch(batch.view_b, book)
    ids_a, ids_b = book.tokenize(batch.caption_a), book.tokenize(batch.caption_b)
    t_book = _time(lambda: train_step(book, opt, a, b, ids_a, ids_b, cfg), args.steps)
    book_pairs = 2 * args.batch / t_book

    print(f"threads {args.threads}, {args.batch} geometries per step")
    print(
        f"naive (full context, AdamW, 1 caption): {t_ref * 1e3:7.0f} ms/step {ref_pairs:6.0f} pairs/s"
    )
    print(
        f"book (conv stem 96 px, ctx 32, fused): {t_book * 1e3:7.0f} ms/step {book_pairs:6.0f} pairs/s"
    )
    print(
        f"book / naive: {book_pairs / ref_pairs:.2f}x; book / target {TARGET:.0f}: {book_pairs / TARGET:.2f}"
    )
    print(
        json.dumps(
            {
                "threads": args.threads,
                "reference_pairs_per_s": round(ref_pairs, 1),
                "book_pairs_per_s": round(book_pairs, 1),
                "ratio_to_reference": round(book_pairs / ref_pairs, 3),
                "ratio_to_target": round(book_pairs / TARGET, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
