"""Evaluate a trained duet checkpoint on any dataset layout (chapter 10).

Command line::

    python -m duet_lib.evaluate --checkpoint runs/duet-3f9a0c2b71de \\
        --layout world --root ~/.cache/duet/worlds/world-1a2b3c4d5e6f
    python -m duet_lib.evaluate --checkpoint best.pt --layout coordinate \\
        --root /data/ChairV2 --text "a red chair" --output chairv2.json

The command rebuilds the duet from a checkpoint written by
:func:`duet_lib.train.train_duet` (``best.pt``, ``last.pt`` or their run folder),
loads the dataset with the loader of ``--layout`` (the loaders of
:mod:`duet_lib.data.loaders`, or ``world`` for a folder written by
:func:`duet_lib.data.world.ensure_world`), runs
:func:`duet_lib.train.evaluate_duet` on one split and prints one JSON object.

Before anything is evaluated the backbone is checked: a duet is only meaningful
on the CLIP weights it was trained on, so the fingerprint of the freshly loaded
backbone must equal the one recorded for the run (in the checkpoint, or in the
``config.json`` that :func:`~duet_lib.train.train_duet` writes next to it).
``--pretrained`` points at the backbone weights when the run folder was moved to
another machine.

Every foreseeable input problem (missing or foreign checkpoint, unknown layout,
a root that does not fit the layout, an empty split, missing backbone weights, a
backbone other than the run's, an empty text) raises :class:`EvaluationError`
with one precise sentence; the command prints it to stderr and exits with 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from duet_lib.checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    atomic_write,
    load_checkpoint,
)
from duet_lib.data.framing import framed
from duet_lib.data.loaders import (
    LAYOUTS,
    CorruptImageError,
    DatasetFormatError,
    DatasetNotFoundError,
    load_dataset,
)
from duet_lib.data.records import SPLITS, SketchPhotoSet
from duet_lib.data.safe_pickle import SafePickleError
from duet_lib.data.world import (
    WorldError,
    WorldNotFoundError,
    duet_queries,
    load_world,
)
from duet_lib.models.clip import CHECKPOINT_FORMAT as CLIP_CHECKPOINT_FORMAT
from duet_lib.models.clip import ClipBundle, WeightsUnavailableError, load_clip
from duet_lib.repro import resolve_device
from duet_lib.train import (
    CHECKPOINT_FORMAT,
    TrainConfig,
    bundle_fingerprint,
    evaluate_duet,
    load_trained_duet,
)
from duet_lib.views import shift_offsets

__all__ = [
    "LAYOUT_CHOICES",
    "EvaluationError",
    "EvaluationInputNotFoundError",
    "evaluate_checkpoint",
    "main",
]

#: Values of ``--layout``: the loaders' layouts and the procedural world.
LAYOUT_CHOICES = (*LAYOUTS, "world")

_REQUIRED_KEYS = ("config", "trainable", "model_name")


class EvaluationError(ValueError):
    """An input of :func:`evaluate_checkpoint` that cannot be evaluated."""


class EvaluationInputNotFoundError(EvaluationError, FileNotFoundError):
    """A checkpoint, dataset or weights file that does not exist."""


# ---------------------------------------------------------------------- checkpoint


def _checkpoint_file(checkpoint: str | os.PathLike) -> Path:
    """The checkpoint file named by a file or a run folder (its ``best.pt``)."""
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise EvaluationInputNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        best = path / "best.pt"
        if not best.is_file():
            raise EvaluationInputNotFoundError(
                f"{path} is a folder without best.pt; pass a run folder written by "
                "train_duet or a checkpoint file"
            )
        return best
    return path


def _read_checkpoint(path: Path) -> dict:
    """Load a duet training checkpoint and check that it is one."""
    try:
        ckpt = load_checkpoint(path)
    except CheckpointNotFoundError as exc:
        raise EvaluationInputNotFoundError(str(exc)) from None
    except CheckpointError as exc:
        raise EvaluationError(f"not a duet checkpoint: {exc}") from None
    fmt = ckpt.get("format")
    if fmt == CLIP_CHECKPOINT_FORMAT:
        raise EvaluationError(
            f"{path} holds CLIP backbone weights (written by save_clip), not a duet "
            "training checkpoint; pass it as --pretrained and a best.pt as "
            "--checkpoint"
        )
    if fmt != CHECKPOINT_FORMAT:
        raise EvaluationError(
            f"{path} is not a duet training checkpoint (format {fmt!r}, expected "
            f"{CHECKPOINT_FORMAT!r})"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in ckpt]
    if missing:
        raise EvaluationError(
            f"{path} is a damaged duet checkpoint: it lacks {', '.join(missing)}"
        )
    try:
        TrainConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as exc:
        raise EvaluationError(
            f"{path}: its training configuration does not fit this version of "
            f"duet_lib ({exc})"
        ) from None
    return ckpt


def _backbone_record(path: Path, ckpt: dict) -> dict[str, Any] | None:
    """What the run recorded about its backbone: ``pretrained`` and ``bundle``.

    Read from the checkpoint when it carries them, else from the ``config.json``
    that ``train_duet`` writes into the run folder (only when its hash names
    this very run). None when neither records the backbone.
    """
    if "bundle" in ckpt and "pretrained" in ckpt:
        return {
            "pretrained": ckpt["pretrained"],
            "bundle": ckpt["bundle"],
            "source": str(path),
        }
    config_file = path.parent / "config.json"
    try:
        identity = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if (
        not isinstance(identity, dict)
        or identity.get("config_hash") is None
        or identity.get("config_hash") != ckpt.get("config_hash")
        or "bundle" not in identity
        or "pretrained" not in identity
    ):
        return None
    if identity.get("model_name", ckpt["model_name"]) != ckpt["model_name"]:
        return None
    return {
        "pretrained": identity["pretrained"],
        "bundle": identity["bundle"],
        "source": str(config_file),
    }


# ------------------------------------------------------------------------ backbone


def _describe(pretrained: str | None) -> str:
    return "a random initialisation" if pretrained is None else repr(pretrained)


def _load_backbone(
    model_name: str,
    pretrained: str | None,
    seed: int,
    overridden: bool,
) -> ClipBundle:
    """``load_clip`` on the CPU with each failure turned into one sentence."""
    try:
        if pretrained is None:
            return load_clip(model_name, None, device="cpu", seed=seed)
        return load_clip(model_name, pretrained, device="cpu")
    except WeightsUnavailableError as exc:
        raise EvaluationInputNotFoundError(
            f"backbone weights unavailable: {exc}; pass --pretrained with a local "
            "weights file"
        ) from None
    except FileNotFoundError:
        if overridden:
            raise EvaluationInputNotFoundError(
                f"backbone weights file not found: {pretrained} (given as --pretrained)"
            ) from None
        raise EvaluationInputNotFoundError(
            f"the backbone weights this checkpoint was trained with are not at "
            f"{pretrained}; pass --pretrained with their location on this machine"
        ) from None
    except (CheckpointError, ValueError) as exc:
        raise EvaluationError(
            f"backbone weights {_describe(pretrained)} do not load as the "
            f"checkpoint's backbone {model_name!r}: {exc}"
        ) from None


# ------------------------------------------------------------------------- dataset


def _load_data(
    layout: str, root: str | os.PathLike, val_fraction: float, quiet: bool
) -> SketchPhotoSet:
    if layout not in LAYOUT_CHOICES:
        raise EvaluationError(
            f"unknown layout {layout!r}; valid layouts: {', '.join(LAYOUT_CHOICES)}"
        )
    if not Path(root).expanduser().exists():
        raise EvaluationInputNotFoundError(
            f"dataset root not found: {root} (layout {layout!r})"
        )
    try:
        if layout == "world":
            return load_world(root, val_fraction=val_fraction, quiet=quiet)
        return load_dataset(layout, root, val_fraction=val_fraction, quiet=quiet)
    except (DatasetNotFoundError, WorldNotFoundError) as exc:
        raise EvaluationInputNotFoundError(
            f"cannot load {root} as layout {layout!r}: {exc}"
        ) from None
    except (DatasetFormatError, WorldError, SafePickleError, CorruptImageError) as exc:
        raise EvaluationError(
            f"{root} does not match layout {layout!r}: {exc}"
        ) from None


def _query_texts(
    text: str | None, dataset: SketchPhotoSet, split: str, layout: str
) -> str | list[str] | None:
    """The ``texts`` argument of :func:`evaluate_duet` for one ``--text``."""
    if text is None:
        return None
    if not isinstance(text, str) or not text.strip():
        raise EvaluationError("--text is empty; give a phrase such as 'in red'")
    has_phrases = bool(dataset.attributes)
    if "{phrase}" in text:
        if not has_phrases:
            raise EvaluationError(
                f"--text {text!r} uses {{phrase}}, but layout {layout!r} has no "
                "appearance phrases (only the world does); give a plain phrase"
            )
        try:
            text.format(phrase="red")
        except (IndexError, KeyError, ValueError) as exc:
            raise EvaluationError(
                f"--text {text!r} is not a valid format string; the only field "
                f"allowed is {{phrase}} ({type(exc).__name__}: {exc})"
            ) from None
        return text
    if has_phrases:
        return [text] * len(duet_queries(dataset, split))
    return [text] * len(dataset.sketches_in(split))


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such values become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------------- library


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    layout: str,
    root: str | os.PathLike,
    split: str = "test",
    text: str | None = None,
    pretrained: str | os.PathLike | None = None,
    device: str = "cpu",
    batch_size: int = 128,
    *,
    val_fraction: float = 0.1,
    backbone_seed: int | None = None,
    framing: float | None = None,
    test_shift: int = 0,
    quiet: bool = True,
) -> dict[str, Any]:
    """Rebuild a trained duet and measure it on one split of a dataset (chapter 10).

    Args:
        checkpoint: ``best.pt`` / ``last.pt`` of a run, or the run folder (its
            ``best.pt`` is used).
        layout: one of :data:`LAYOUT_CHOICES`: a loader layout of
            :func:`duet_lib.data.loaders.load_dataset`, or "world".
        root: the dataset folder.
        split: "train", "val" or "test".
        text: one phrase used for every composed query (e.g. "in red"), which on
            datasets without appearance phrases enables the duet_* metrics; on
            the world also a format string with ``{phrase}``, e.g.
            ``"a chair {phrase}"``. None: the world's own phrases, and no
            composed queries elsewhere.
        pretrained: the backbone weights (file or open_clip tag) to use instead of
            the ones the run recorded, e.g. after moving it to another machine.
        device: "cpu", "cuda", "cuda:N", "mps" or "auto".
        batch_size: images or queries per forward pass.
        val_fraction: share of train photos (world: shapes) carved out as "val"
            by the loaders (seed 0); only matters for the train and val splits.
        backbone_seed: seed of a randomly initialised backbone (runs trained
            without pretrained weights); None uses the run's training seed.
        framing: crop sketches and photos to their content at this fill
            (:func:`duet_lib.data.framing.framed`; chapter 11 trains on ChairV2
            framed at 0.7); None: the data as the release has it.
        test_shift: 0 ranks the images as they are (the paper's protocol); k > 0
            averages over nine views shifted by k pixels (chapter 09,
            :func:`duet_lib.train.evaluate_duet`).
        quiet: hide the loaders' progress bars.

    Returns:
        A JSON-ready dict: ``checkpoint``, ``step``, ``layout``, ``root``,
        ``dataset``, ``split``, ``text``, ``framing``, ``test_shift``, ``backbone``
        (``model_name``, ``pretrained``, ``trained_with``, ``fingerprint``,
        ``verified``),
        ``n_queries`` and ``n_gallery`` of the FG-SBIR task, and ``metrics``
        (the flat dict of :func:`duet_lib.train.evaluate_duet`).

    Raises:
        EvaluationInputNotFoundError: a missing checkpoint, dataset root or
            backbone weights file.
        EvaluationError: any other input that cannot be evaluated (foreign
            checkpoint, unknown layout, root of another layout, empty split,
            backbone other than the run's, empty text, bad option).
    """
    if split not in SPLITS:
        raise EvaluationError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise EvaluationError(f"batch_size must be an integer, got {batch_size!r}")
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1, got {batch_size}")
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, int | float)
        or not 0.0 <= val_fraction < 1.0
    ):
        raise EvaluationError(f"val_fraction must lie in [0, 1), got {val_fraction!r}")
    if layout not in LAYOUT_CHOICES:
        raise EvaluationError(
            f"unknown layout {layout!r}; valid layouts: {', '.join(LAYOUT_CHOICES)}"
        )
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise EvaluationError("--text is empty; give a phrase such as 'in red'")
    if pretrained is not None and not os.fspath(pretrained).strip():
        raise EvaluationError("--pretrained is empty; give a weights file or a tag")
    try:
        target = resolve_device(device)
    except RuntimeError as exc:
        raise EvaluationError(f"device {device!r}: {exc}") from None

    path = _checkpoint_file(checkpoint)
    ckpt = _read_checkpoint(path)
    model_name = str(ckpt["model_name"])
    cfg = TrainConfig.from_dict(ckpt["config"])
    record = _backbone_record(path, ckpt)

    if pretrained is not None:
        weights: str | None = os.fspath(pretrained)
    elif record is not None:
        weights = record["pretrained"]
    else:
        raise EvaluationError(
            f"{path} does not record which {model_name!r} backbone weights it was "
            "trained with (no matching config.json next to it); pass --pretrained"
        )
    seed = cfg.seed if backbone_seed is None else backbone_seed
    bundle = _load_backbone(model_name, weights, seed, pretrained is not None)
    fingerprint = bundle_fingerprint(bundle)
    if record is not None and fingerprint != record["bundle"]:
        if weights is None:
            used = f"a random initialisation with seed {seed}"
            fix = "pass --backbone-seed with the seed the backbone was built with"
        else:
            used = repr(weights)
            fix = "pass --pretrained with the weights the run was trained on"
        raise EvaluationError(
            f"backbone mismatch: the checkpoint was trained on {model_name!r} "
            f"weights from {_describe(record['pretrained'])} (fingerprint "
            f"{record['bundle']}), but {used} gives fingerprint {fingerprint}; "
            f"{fix}"
        )

    try:
        shift_offsets(test_shift)
    except ValueError as exc:
        raise EvaluationError(f"--test-shift {test_shift!r}: {exc}") from None
    dataset = _load_data(layout, root, val_fraction, quiet)
    if framing is not None:
        try:
            dataset = framed(dataset, framing)
        except ValueError as exc:
            raise EvaluationError(f"--framing {framing!r}: {exc}") from None
    if not dataset.sketches_in(split):
        present = ", ".join(
            f"{name} ({len(dataset.sketches_in(name))})"
            for name in SPLITS
            if dataset.sketches_in(name)
        )
        hint = " (val exists only with --val-fraction > 0)" if split == "val" else ""
        raise EvaluationError(
            f"split {split!r} of {root} (layout {layout!r}) has no sketches"
            f"{hint}; splits with sketches: {present or 'none'}"
        )
    texts = _query_texts(text, dataset, split, layout)

    bundle.model.to(target)
    try:
        model = load_trained_duet(bundle, path)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise EvaluationError(
            f"{path}: the stored duet weights do not fit backbone {model_name!r} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    try:
        metrics = evaluate_duet(
            model, dataset, split, texts, batch_size=batch_size, test_shift=test_shift
        )
    except (CorruptImageError, FileNotFoundError) as exc:
        raise EvaluationError(
            f"cannot read the {split} data of {root}: {exc}"
        ) from None

    return {
        "checkpoint": str(path),
        "step": ckpt.get("step"),
        "layout": layout,
        "root": str(root),
        "dataset": dataset.name,
        "split": split,
        "text": text,
        "framing": framing,
        "test_shift": test_shift,
        "backbone": {
            "model_name": model_name,
            "pretrained": weights,
            "trained_with": None if record is None else record["pretrained"],
            "fingerprint": fingerprint,
            "verified": record is not None,
        },
        "n_queries": metrics["fgsbir_n_queries"],
        "n_gallery": metrics["fgsbir_n_gallery"],
        "metrics": {key: _finite(value) for key, value in metrics.items()},
    }


# ---------------------------------------------------------------------------- CLI


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m duet_lib.evaluate",
        description=(
            "Evaluate a trained duet checkpoint on one split of a dataset and print "
            "the retrieval metrics as one JSON object."
        ),
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="best.pt / last.pt of a training run, or the run folder",
    )
    parser.add_argument(
        "--layout",
        required=True,
        choices=LAYOUT_CHOICES,
        help="dataset layout: one of the loaders' layouts, or 'world'",
    )
    parser.add_argument("--root", required=True, help="the dataset folder")
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument(
        "--text",
        default=None,
        help=(
            "one phrase for every composed query, e.g. 'in red'; on the world also "
            "a format string with {phrase}, e.g. 'a chair {phrase}'"
        ),
    )
    parser.add_argument(
        "--pretrained",
        default=None,
        help="backbone weights file (or open_clip tag) replacing the recorded one",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps, auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of train photos carved out as val (train/val splits only)",
    )
    parser.add_argument(
        "--backbone-seed",
        type=int,
        default=None,
        help="seed of a randomly initialised backbone (default: the run's seed)",
    )
    parser.add_argument(
        "--framing",
        type=float,
        default=None,
        help=(
            "crop sketches and photos to their content at this fill, as the run was "
            "trained (chapter 11: 0.7); default: the data as released"
        ),
    )
    parser.add_argument(
        "--test-shift",
        type=int,
        default=0,
        help=(
            "also rank sketch and photos shifted by this many pixels in eight "
            "directions and average (chapter 09); default 0: as they are"
        ),
    )
    parser.add_argument("--output", default=None, help="also write the JSON here")
    parser.add_argument(
        "--progress", action="store_true", help="show the loaders' progress bars"
    )
    return parser


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m duet_lib.evaluate``; returns the exit status.

    0 on success (the JSON is on stdout), 2 on bad input (one line on stderr).
    """
    args = _build_parser().parse_args(argv)
    output = Path(args.output).expanduser() if args.output else None
    if output is not None and output.is_dir():
        return _error(f"--output {output} is a folder; give a file path")
    try:
        result = evaluate_checkpoint(
            args.checkpoint,
            args.layout,
            args.root,
            split=args.split,
            text=args.text,
            pretrained=args.pretrained,
            device=args.device,
            batch_size=args.batch_size,
            val_fraction=args.val_fraction,
            backbone_seed=args.backbone_seed,
            framing=args.framing,
            test_shift=args.test_shift,
            quiet=not args.progress,
        )
    except EvaluationError as exc:
        return _error(str(exc))
    text = json.dumps(result, indent=2, allow_nan=False)
    if output is not None:
        data = (text + "\n").encode("utf-8")
        try:
            atomic_write(output, lambda handle: handle.write(data))
        except OSError as exc:
            return _error(f"cannot write --output {output}: {exc}")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
