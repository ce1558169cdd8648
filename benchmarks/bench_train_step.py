"""Cost of one multitask duet training step against its unavoidable passes.

A step of :func:`duet_lib.train.train_duet` with all six losses must run

* the image tower forward and backward once over [sketches ; photos ; negatives]
  (B * (2 + M) images),
* the text tower forward and backward once over every query row (s_L^T, s_F^T,
  s_L^{T,Delta}, s_L^{T,N}: 4 B rows),
* the decoder forward and backward once over [s_L^{T,Delta} ; s_L^T] (2 B rows).

The script times each of these passes alone and the complete step (forward,
the six losses, backward, Adam update) and prints the ratio

    full step / (image tower + text tower + decoder)

whose target is <= 1.3: everything else (C_v2w, placeholder insertion, losses,
optimiser) should be small. It also times the text side done the naive way, one
text-tower call per query kind, against the single batched call.

The model is the tiny book CLIP (``duet-tiny-conv-96`` by default) with random
weights (the cost does not depend on the values), a batch of random images and
the training configuration's defaults. Every timing is the median of
``--repeats`` runs after ``--warmup`` runs; the variants take turns inside each
repeat, so load from other programs affects them alike.

Usage (from the project root)::

    PYTHONPATH=. python benchmarks/bench_train_step.py
    PYTHONPATH=. python benchmarks/bench_train_step.py --threads 1 --repeats 20
    PYTHONPATH=. python benchmarks/bench_train_step.py --device cuda --batch-size 128

The last line printed is one JSON object with every number. Used in chapter 09.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch

from duet_lib.losses import total_loss
from duet_lib.models.clip import encode_image_with_tokens, load_clip
from duet_lib.models.duet import DuetModel, QuerySpec
from duet_lib.repro import resolve_device
from duet_lib.train import TrainConfig, _forward_options, build_model, duet_losses


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timer(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def make_batch(
    batch: int, size: int, n_neg: int, decoder: int, device: torch.device, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random images and labels shaped like a SketchPhotoPairs batch."""
    g = torch.Generator().manual_seed(seed)
    return {
        "sketch": torch.randn(batch, 3, size, size, generator=g).to(device),
        "photo": torch.randn(batch, 3, size, size, generator=g).to(device),
        "negatives": torch.randn(batch, n_neg, 3, size, size, generator=g).to(device),
        "target": torch.rand(batch, 3, decoder, decoder, generator=g).to(device),
        "photo_index": torch.arange(batch, device=device),
        "shape_index": torch.arange(batch, device=device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="duet-tiny-conv-96")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--sketch-tokens",
        type=int,
        default=8,
        help="pseudo-words per sketch (8: the teach default; 1: the paper)",
    )
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=4)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    bundle = load_clip(args.model, image_size=args.image_size, seed=0, device=device)
    cfg = TrainConfig(
        device=str(device),
        batch_size=args.batch_size,
        sketch_tokens=args.sketch_tokens,
    )
    model: DuetModel = build_model(cfg, bundle).to(device).train()
    kinds = cfg.negative_kinds()
    b, size = args.batch_size, bundle.image_size
    batch = make_batch(b, size, len(kinds), cfg.decoder_size, device)
    optimizer = torch.optim.Adam(
        [{"params": ps} for ps in model.parameter_groups().values()], lr=1e-4
    )
    gen = torch.Generator().manual_seed(0)

    def full_step() -> None:
        opts = _forward_options(cfg, model, b, gen)
        for key in ("fixed_index", "neutral_index"):
            if torch.is_tensor(opts[key]):
                opts[key] = opts[key].to(device)
        out = model(batch["sketch"], batch["photo"], batch["negatives"], **opts)
        loss, _ = total_loss(duet_losses(out, batch, cfg, kinds), cfg.weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    images = torch.cat(
        [batch["sketch"], batch["photo"], batch["negatives"].flatten(0, 1)]
    )

    def image_tower() -> None:
        pooled, tokens = encode_image_with_tokens(model.clip, images)
        (pooled.sum() + tokens.mean()).backward()

    # The text rows of one step, with leaf vectors standing in for C_v2w outputs.
    d = bundle.token_dim
    k = model.sketch_tokens
    shape = (b, d) if k == 1 else (b, k, d)
    word = torch.randn(*shape, device=device) * model.token_norm

    def text_specs(leaf: torch.Tensor) -> dict[str, QuerySpec]:
        opts = _forward_options(cfg, model, b, torch.Generator().manual_seed(1))
        return {
            "sketch": model.spec_sketch(leaf),
            "fixed": model.spec_fixed(leaf, opts["fixed_index"].to(device)),
            "delta": model.spec_delta(leaf, leaf),
            "neutral": model.spec_neutral(leaf, opts["neutral_index"].to(device)),
        }

    def text_batched() -> None:
        leaf = word.clone().requires_grad_(True)
        outs = model.encode_queries(text_specs(leaf))
        sum(o.sum() for o in outs.values()).backward()

    def text_per_kind() -> None:
        leaf = word.clone().requires_grad_(True)
        specs = text_specs(leaf)
        outs = [model.encode_queries({k: s})[k] for k, s in specs.items()]
        sum(o.sum() for o in outs).backward()

    emb = torch.randn(2 * b, bundle.embed_dim, device=device)

    def decoder() -> None:
        x = emb.clone().requires_grad_(True)
        model.decoder(x).mean().backward()

    variants = {
        "full_step": full_step,
        "image_tower": image_tower,
        "text_batched": text_batched,
        "decoder": decoder,
        "text_per_kind": text_per_kind,
    }
    for _ in range(args.warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(_timer(fn, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    floor = med["image_tower"] + med["text_batched"] + med["decoder"]
    specs = text_specs(word)
    n_rows = sum(s.rows for s in specs.values())
    # Token positions the text tower computes: the batched call pads every row
    # to the longest row of the step, one call per kind only to that kind's.
    eot = {k: s.ids.argmax(dim=-1) + 1 for k, s in specs.items()}
    longest = max(int(e.max()) for e in eot.values())
    tokens_batched = n_rows * longest
    tokens_per_kind = sum(s.rows * int(eot[k].max()) for k, s in specs.items())
    report = {
        "model": args.model,
        "image_size": size,
        "batch_size": b,
        "sketch_tokens": k,
        "images_per_step": int(images.shape[0]),
        "text_rows_per_step": n_rows,
        "text_tokens_batched": tokens_batched,
        "text_tokens_per_kind": tokens_per_kind,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "repeats": args.repeats,
        "median_s": med,
        "unavoidable_sum_s": floor,
        "ratio_full_to_unavoidable": med["full_step"] / floor,
        "text_per_kind_over_batched": med["text_per_kind"] / med["text_batched"],
    }
    print(
        f"device {device}, threads {report['threads']}, batch {b}, {size} px, "
        f"{report['images_per_step']} images and {n_rows} text rows per step"
    )
    for name, value in med.items():
        print(f"  {name:<14s} {1000 * value:8.1f} ms")
    print(f"  unavoidable sum {1000 * floor:7.1f} ms")
    print(
        f"ratio full step / unavoidable passes: {report['ratio_full_to_unavoidable']:.2f}"
        " (target <= 1.3)"
    )
    print(
        f"text side, one call per kind / one batched call: "
        f"{report['text_per_kind_over_batched']:.2f}x (token positions computed: "
        f"{tokens_per_kind} per kind, {tokens_batched} batched)"
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
