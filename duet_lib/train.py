"""One-stage multitask training of the duet, and its evaluation (chapters 09-10).

:func:`train_duet` trains {LayerNorms of V, C_v2w, P^L, G} with all six losses at
once (the paper's one-stage recipe; the weighted-sum form is ours):

    L = l_trip L_trip + l_comp L_comp + l_reg L_reg + l_tt L_TT + l_rt L_RT + l_rec L_rec

A term whose weight is 0 is not computed at all: its queries are not built and
its forward passes are skipped. Each step runs

1. one image-tower pass over [sketches ; photos ; negatives],
2. one C_v2w pass over [s ; Delta],
3. one text-tower pass over every query kind the active terms need
   (s_L^T, s_F^T, s_L^{T,Delta}, s_L^{T,N}),
4. one decoder pass over [s_L^{T,Delta} ; s_L^T],

then the losses of :mod:`duet_lib.losses` and one optimiser step (Adam, two
learning rates: one for the LayerNorms of V, one for C_v2w, P^L and G).

Model selection uses the **validation** split only: every ``eval_every`` steps
:func:`evaluate_duet` runs on "val", the best value of ``select_metric`` decides
``best.pt``, and ``patience`` evaluations without improvement stop the run. The
test split is never read during training.

Checkpoints are written atomically: ``last.pt`` at every evaluation (trainable
weights, optimiser state, step, best-so-far, history) and ``best.pt`` when the
validation metric improves. All randomness of step k is a function of
``(seed, k)``: the data order and augmentation of an epoch come from the seed and
the epoch number, and the global torch generator (dropout) is reseeded from
``(seed, step)`` before each step. A run that is killed and started again with
the same ``output_dir`` therefore resumes from ``last.pt`` and ends with the same
numbers as an uninterrupted run.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in
:class:`torch.nn.parallel.DistributedDataParallel` and the data are split with
:class:`torch.utils.data.DistributedSampler`; ``batch_size`` is the global batch.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from duet_lib.checkpoint import (
    atomic_write,
    config_hash,
    load_checkpoint,
    save_checkpoint,
)
from duet_lib.config import SELECT_METRICS as _SELECT
from duet_lib.data.pairs import (
    NEGATIVE_KINDS,
    PhotoCache,
    SketchAugment,
    SketchPhotoPairs,
)
from duet_lib.data.records import SketchPhotoSet
from duet_lib.losses import (
    LOSS_NAMES,
    LossWeights,
    compositionality_loss,
    neutral_regulariser,
    prompt_text_loss,
    reconstruction_loss,
    region_triplet_loss,
    total_loss,
    triplet_loss,
)
from duet_lib.metrics import retrieval_report
from duet_lib.models.clip import ClipBundle
from duet_lib.models.duet import DELTA_SPACES, DeltaOptions, DuetModel
from duet_lib.models.text_encoding import encode_text
from duet_lib.probes import zero_shot_phrases
from duet_lib.progress import tqdm
from duet_lib.repro import resolve_device
from duet_lib.tasks import RetrievalTask, retrieval_task
from duet_lib.views import shift_images, shift_offsets

__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "duet_losses",
    "evaluate_duet",
    "load_trained_duet",
    "loss_weights_for",
    "mine_near_shapes",
    "plot_history",
    "run_dir",
    "train_duet",
]

CHECKPOINT_FORMAT = "duet_lib.train/1"

#: Config fields that do not change the numbers of a run (left out of its hash,
#: so a run can be resumed on another device or trained for more steps).
_NOT_HASHED = ("device", "num_workers", "max_steps", "eval_batch_size")
#: Options added after runs were cached: they enter the hash only when they
#: differ from their default, so existing runs keep their folders.
_HASHED_WHEN_CHANGED = (
    "trip_memory",
    "token_scale",
    "lr_schedule",
    "ema_decay",
    "near_shape_pool",
    "tau_trip",
    "words_scale",
)

_AMP = ("off", "bf16", "fp16")


def _choice(name: str, value: Any, choices: Sequence[Any]) -> str | None:
    if value not in choices:
        return f"{name} must be one of {list(choices)}, got {value!r}"
    return None


def _number(name: str, value: Any, lo: float, hi: float = math.inf) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not lo <= value <= hi:
        return f"{name} must be a number in [{lo}, {hi}], got {value!r}"
    return None


def _integer(name: str, value: Any, lo: int, none_ok: bool = False) -> str | None:
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        return f"{name} must be an integer >= {lo}, got {value!r}"
    return None


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of the duet training stage (chapter 09).

    Defaults follow the method notes (section 5) for ViT-B/32; the tiny CPU
    model of the ``teach`` profile usually wants larger learning rates.

    Attributes:
        seed: seed of initialisation, data order, augmentation and dropout.
        device: "auto", "cpu", "cuda", "cuda:N" or "mps".
        amp: mixed precision on CUDA: "off", "bf16" or "fp16" (ignored elsewhere).
        max_steps: optimisation steps.
        batch_size: sketches per step (the global batch under torchrun).
        eval_every: steps between validation runs (and ``last.pt`` writes).
        patience: evaluations without improvement before stopping; None = never.
        select_metric: validation metric that picks ``best.pt``; "auto" is
            "duet_acc@1" for datasets with world attributes, else "fgsbir_acc@1".
            "both_acc@1" (our option) is the mean of the two, so that neither
            query the one model serves can be traded away unseen.
        num_workers: DataLoader worker processes (0 on CPU is usually fastest).
        eval_batch_size: batch size of evaluation passes.
        lr_visual: Adam learning rate of V's trainable parameters (LayerNorms).
        lr_modules: Adam learning rate of C_v2w, P^L and G.
        weight_decay: Adam weight decay (L2), 0 by default.
        warmup_steps: linear learning-rate warm-up.
        words_per_class: captions per attribute combination with which the frozen
            CLIP reads the training photos for L_words
            (:func:`duet_lib.probes.zero_shot_phrases`); None: all of them (about
            170). Only used when ``weights.words`` > 0.
        lr_schedule: "constant" (after the warm-up) or "cosine" (decays to zero
            at ``max_steps``; such a run's hash then includes ``max_steps``, since
            the schedule depends on it).
        grad_clip: clip the global gradient norm to this value; None = off.
        ema_decay: keep an exponential moving average of the trainable weights
            with this decay (our option; Polyak averaging, as in Tarvainen and
            Valpola's mean teacher, 2017); None = off. Validation, checkpoint
            selection, ``best.pt`` and the returned model use the average, while
            the optimiser keeps stepping the raw weights. The average is
            bias-corrected (divided by 1 - ema_decay^t after t steps), so the
            initial weights do not linger in it.
        weights: lambda of each loss (:class:`~duet_lib.losses.LossWeights`).
        margin_trip: mu_1 of L_trip.
        margin_comp: mu_2 of L_comp (hinge and triplet forms).
        margin_rt: mu_3 of L_RT.
        tau: temperature of the InfoNCE forms (L_trip, L_comp, L_TT).
        tau_trip: L_trip's own temperature (our option); None uses ``tau``.
        tau_region: temperature of the region pooling of L_RT.
        trip_form: "hinge" or "infonce".
        trip_mining: "given" (the dataset's negatives) or "batch_hardest".
        trip_negatives: negative kinds used by L_trip and L_RT.
        near_shape_pool: k, the photos of other shapes the frozen backbone ranks
            closest to a photo's training sketches, among which a
            ``"near_shape"`` negative is drawn (mined once, before training).
        trip_memory: k, remember the (detached) sketch and photo embeddings of
            the last k batches for L_trip (our choice, MoCo-style; 0 = off). The
            remembered sketch embeddings pass through C_v2w and the text encoder
            again each step, and an InfoNCE over the current and remembered
            (query, photo) pairs is added to L_trip, so C_v2w and P^L learn from
            (k + 1) B pairs per step for the price of k B text-encoder rows; V
            learns from the current batch only. Needs ``trip_form="infonce"``.
        comp_form: "infonce", "triplet", "hinge" or "pull".
        comp_negatives: negative kinds used by L_comp.
        comp_detach_reference: stop gradients through s_L^T in the hinge form.
        negative_reduction: "mean" or "hardest" over several given negatives.
        reg_form: "hinge" or "symmetric".
        reg_detach_reference: stop gradients through s_L^T in L_reg.
        neutral_per_sample: neutral texts drawn per sample and step.
        tt_form: "infonce" or "cosine".
        tt_prompts: "sample" (one fixed prompt per sample and step) or "all".
        rt_form: region pooling, "attention" or "max".
        rec_form: "l1" or "l2".
        rec_sketch_target: "photo" or "grey" (target of G(s_L^T)).
        delta_space: "unit" or "raw" (see :class:`~duet_lib.models.duet.DeltaOptions`).
        delta_normalize: L2-normalise Delta before C_v2w.
        delta_detach: stop gradients through Delta.
        unfreeze_last_visual_blocks: also train the last k visual blocks (a
            labelled deviation from the paper).
        n_prompt_tokens: length of P^L.
        sketch_tokens: pseudo-words C_v2w emits per sketch (and per Delta); 1 is
            the paper's single word, more is our option for the tiny text encoder.
        prompt_init: words that initialise P^L, or None for random.
        converter_hidden: hidden width of C_v2w (None = 4 E).
        converter_dropout: dropout of C_v2w.
        token_scale: norm of C_v2w's pseudo-words as a multiple of the mean
            norm of a real word's token embedding (1 = the same size).
        words_scale: factor on s^w where real words follow it, in the duet
            query [P^L ; s^w ; words] and in L_words (1 = none; our option).
        decoder_size: G's output side (32, 64 or 128).
        augment: augment training sketches.
        stroke_drop: probability of dropping a stroke.
        rotate_deg: maximum sketch rotation.
        scale_jitter: maximum relative sketch scale change.
        translate: maximum sketch shift (fraction of the canvas).
        line_width: stroke width of rasterised sketches (canvas pixels).
    """

    seed: int = 0
    device: str = "auto"
    amp: str = "off"
    max_steps: int = 1000
    batch_size: int = 32
    eval_every: int = 100
    patience: int | None = None
    select_metric: str = "auto"
    num_workers: int = 0
    eval_batch_size: int = 128
    lr_visual: float = 1e-4
    lr_modules: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    words_per_class: int | None = 16
    grad_clip: float | None = None
    ema_decay: float | None = None
    weights: LossWeights = field(default_factory=LossWeights)
    margin_trip: float = 0.2
    margin_comp: float = 0.2
    margin_rt: float = 0.2
    tau: float = 0.07
    tau_trip: float | None = None
    tau_region: float = 0.07
    trip_form: str = "hinge"
    trip_mining: str = "given"
    trip_negatives: tuple[str, ...] = ("same_appearance",)
    near_shape_pool: int = 8
    trip_memory: int = 0
    comp_form: str = "infonce"
    comp_negatives: tuple[str, ...] = ("same_shape", "same_appearance")
    comp_detach_reference: bool = False
    negative_reduction: str = "mean"
    reg_form: str = "hinge"
    reg_detach_reference: bool = False
    neutral_per_sample: int = 1
    tt_form: str = "infonce"
    tt_prompts: str = "sample"
    rt_form: str = "attention"
    rec_form: str = "l1"
    rec_sketch_target: str = "photo"
    delta_space: str = "unit"
    delta_normalize: bool = False
    delta_detach: bool = True
    unfreeze_last_visual_blocks: int = 0
    n_prompt_tokens: int = 3
    sketch_tokens: int = 1
    prompt_init: str | None = "a photo of"
    converter_hidden: int | None = None
    converter_dropout: float = 0.1
    token_scale: float = 1.0
    words_scale: float = 1.0
    decoder_size: int = 64
    augment: bool = True
    stroke_drop: float = 0.1
    rotate_deg: float = 5.0
    scale_jitter: float = 0.1
    translate: float = 0.05
    line_width: float = 3.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "trip_negatives", tuple(self.trip_negatives))
        object.__setattr__(self, "comp_negatives", tuple(self.comp_negatives))
        if isinstance(self.weights, Mapping):
            object.__setattr__(self, "weights", LossWeights.from_dict(self.weights))
        problems = [
            _integer("seed", self.seed, 0),
            _choice("amp", self.amp, _AMP),
            _integer("max_steps", self.max_steps, 1),
            _integer("batch_size", self.batch_size, 2),
            _integer("eval_every", self.eval_every, 1),
            _integer("patience", self.patience, 1, none_ok=True),
            _choice("select_metric", self.select_metric, _SELECT),
            _integer("num_workers", self.num_workers, 0),
            _integer("eval_batch_size", self.eval_batch_size, 1),
            _number("lr_visual", self.lr_visual, 0.0, 1.0),
            _number("lr_modules", self.lr_modules, 0.0, 1.0),
            _number("weight_decay", self.weight_decay, 0.0, 1.0),
            _integer("warmup_steps", self.warmup_steps, 0),
            None
            if self.grad_clip is None
            else _number("grad_clip", self.grad_clip, 1e-8),
            None
            if self.ema_decay is None
            else _number("ema_decay", self.ema_decay, 0.0, 0.9999),
            None
            if isinstance(self.weights, LossWeights)
            else "weights must be a LossWeights",
            _number("margin_trip", self.margin_trip, 0.0, 2.0),
            _number("margin_comp", self.margin_comp, 0.0, 2.0),
            _number("margin_rt", self.margin_rt, 0.0, 2.0),
            _number("tau", self.tau, 1e-4, 10.0),
            None
            if self.tau_trip is None
            else _number("tau_trip", self.tau_trip, 1e-4, 10.0),
            _number("tau_region", self.tau_region, 1e-4, 10.0),
            _choice("trip_form", self.trip_form, ("hinge", "infonce")),
            _choice("trip_mining", self.trip_mining, ("given", "batch_hardest")),
            _integer("trip_memory", self.trip_memory, 0),
            _integer("near_shape_pool", self.near_shape_pool, 1),
            _choice(
                "comp_form", self.comp_form, ("infonce", "triplet", "hinge", "pull")
            ),
            _choice("negative_reduction", self.negative_reduction, ("mean", "hardest")),
            _choice("reg_form", self.reg_form, ("hinge", "symmetric")),
            _integer("neutral_per_sample", self.neutral_per_sample, 1),
            _choice("tt_form", self.tt_form, ("infonce", "cosine")),
            _choice("lr_schedule", self.lr_schedule, ("constant", "cosine")),
            _integer("words_per_class", self.words_per_class, 1, none_ok=True),
            _choice("tt_prompts", self.tt_prompts, ("sample", "all")),
            _choice("rt_form", self.rt_form, ("attention", "max")),
            _choice("rec_form", self.rec_form, ("l1", "l2")),
            _choice("rec_sketch_target", self.rec_sketch_target, ("photo", "grey")),
            _choice("delta_space", self.delta_space, DELTA_SPACES),
            _integer(
                "unfreeze_last_visual_blocks", self.unfreeze_last_visual_blocks, 0
            ),
            _integer("n_prompt_tokens", self.n_prompt_tokens, 1),
            _integer("sketch_tokens", self.sketch_tokens, 1),
            _integer("converter_hidden", self.converter_hidden, 1, none_ok=True),
            _number("converter_dropout", self.converter_dropout, 0.0, 0.99),
            _number("token_scale", self.token_scale, 0.01, 99.0),
            _number("words_scale", self.words_scale, 0.01, 10.0),
            _choice("decoder_size", self.decoder_size, (32, 64, 128)),
            _number("line_width", self.line_width, 0.1, 64.0),
        ]
        for name in (
            "comp_detach_reference",
            "reg_detach_reference",
            "delta_normalize",
            "delta_detach",
            "augment",
        ):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be a bool")
        for name in ("trip_negatives", "comp_negatives"):
            for kind in getattr(self, name):
                if kind not in NEGATIVE_KINDS:
                    problems.append(
                        f"{name}: unknown kind {kind!r}; choose from {list(NEGATIVE_KINDS)}"
                    )
            if len(set(getattr(self, name))) != len(getattr(self, name)):
                problems.append(f"{name} must not repeat a kind")
        if self.prompt_init is not None and (
            not isinstance(self.prompt_init, str) or not self.prompt_init.strip()
        ):
            problems.append("prompt_init must be a non-empty string or None")
        if not isinstance(self.device, str):
            problems.append(f"device must be a string, got {self.device!r}")
        w = self.weights if isinstance(self.weights, LossWeights) else None
        if w is not None and not w.active():
            problems.append("every loss weight is 0; enable at least one term")
        if (
            w is not None
            and (w.enabled("trip") and self.trip_form == "hinge")
            and self.trip_mining == "given"
            and not self.trip_negatives
        ):
            problems.append(
                'trip_mining="given" needs trip_negatives; name a kind or use '
                '"batch_hardest"'
            )
        if (
            isinstance(self.trip_memory, int)
            and self.trip_memory > 0
            and self.trip_form != "infonce"
        ):
            problems.append('trip_memory > 0 needs trip_form="infonce"')
        problems = [p for p in problems if p]
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))
        # Building the augmentation validates its ranges too.
        self.sketch_augment()

    def sketch_augment(self) -> SketchAugment | None:
        """The training sketch augmentation, or None when ``augment`` is off."""
        if not self.augment:
            return None
        return SketchAugment(
            stroke_drop=self.stroke_drop,
            rotate_deg=self.rotate_deg,
            scale=self.scale_jitter,
            translate=self.translate,
        )

    def delta_options(self) -> DeltaOptions:
        """Delta settings for the model."""
        return DeltaOptions(self.delta_space, self.delta_normalize, self.delta_detach)

    def negative_kinds(self) -> tuple[str, ...]:
        """Negative kinds the training data must carry, in :data:`NEGATIVE_KINDS` order."""
        need: set[str] = set()
        if self.weights.enabled("trip") or self.weights.enabled("rt"):
            need.update(self.trip_negatives)
        if self.weights.enabled("comp") and self.comp_form in ("infonce", "triplet"):
            need.update(self.comp_negatives)
        return tuple(k for k in NEGATIVE_KINDS if k in need)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (weights as a dict, tuples as lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, LossWeights):
                value = value.as_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown names raise ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown TrainConfig field(s) {unknown}; valid: {sorted(known)}"
            )
        return cls(**dict(values))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


@dataclass
class TrainResult:
    """What :func:`train_duet` returns.

    Attributes:
        output_dir: the run folder.
        last_checkpoint: ``last.pt`` (may not exist if stopped before any eval).
        best_checkpoint: ``best.pt``, or None before the first evaluation.
        step: steps done.
        best_step: step of the best validation value (-1 before any eval).
        best_value: best validation value of ``select_metric``.
        select_metric: the validation metric used.
        best_metrics: all validation metrics of the best evaluation.
        history: {"train": [...], "val": [...]} per-step losses and evaluations.
        stopped: "max_steps", "patience", "stop_after" or "already_done".
        resumed_from: step of the checkpoint the run started from (0 = fresh).
        trained_now: False when the output folder already held a finished run.
        seconds: wall time of this call.
        amp_used: the autocast dtype used, or "off".
        config_hash: hash of the configuration (names the run).
    """

    output_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    step: int
    best_step: int
    best_value: float
    select_metric: str
    best_metrics: dict[str, float]
    history: dict[str, Any]
    stopped: str
    resumed_from: int
    trained_now: bool
    seconds: float
    amp_used: str
    config_hash: str


# --------------------------------------------------------------------------- model


def build_model(cfg: TrainConfig, bundle: ClipBundle) -> DuetModel:
    """The :class:`DuetModel` a config describes (freezes ``bundle.model`` in place)."""
    return DuetModel(
        bundle,
        n_prompt_tokens=cfg.n_prompt_tokens,
        sketch_tokens=cfg.sketch_tokens,
        prompt_init=cfg.prompt_init,
        converter_hidden=cfg.converter_hidden,
        converter_dropout=cfg.converter_dropout,
        token_scale=cfg.token_scale,
        words_scale=cfg.words_scale,
        decoder_size=cfg.decoder_size,
        unfreeze_last_visual_blocks=cfg.unfreeze_last_visual_blocks,
        delta=cfg.delta_options(),
        seed=cfg.seed,
    )


def load_trained_duet(bundle: ClipBundle, checkpoint: str | os.PathLike) -> DuetModel:
    """Rebuild a trained duet from ``best.pt`` / ``last.pt`` (or a run folder).

    ``best.pt`` holds the weights that were validated (the moving average when
    the run had ``ema_decay``); ``last.pt`` holds the raw weights the optimiser
    stepped last.

    Args:
        bundle: a fresh bundle of the same CLIP the run started from.
        checkpoint: a checkpoint file, or a run folder (its ``best.pt`` is used).

    Returns:
        The model in eval mode.
    """
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "best.pt"
    ckpt = load_checkpoint(path)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a duet training checkpoint")
    cfg = TrainConfig.from_dict(ckpt["config"])
    model = build_model(cfg, bundle)
    model.load_trainable_state_dict(ckpt["trainable"])
    return model.eval()


def bundle_fingerprint(bundle: ClipBundle) -> str:
    """Hash of weights the duet never trains (tells two random inits apart)."""
    clip = bundle.model
    values = {
        "token_embedding": float(clip.token_embedding.weight.detach().double().sum()),
        "text_projection": float(clip.text_projection.detach().double().sum()),
        "visual_proj": float(clip.visual.proj.detach().double().sum()),
    }
    return config_hash(
        {k: round(v, 6) for k, v in values.items()}
        | {"name": bundle.model_name, "size": bundle.image_size}
    )


def _run_identity(
    cfg: TrainConfig, bundle: ClipBundle, dataset: SketchPhotoSet
) -> dict:
    conf = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_HASHED}
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for name in _HASHED_WHEN_CHANGED:
        if conf[name] == defaults[name]:
            del conf[name]
    if cfg.lr_schedule != "constant":
        conf["max_steps"] = cfg.max_steps
    if not conf["weights"].get("words"):
        # our optional seventh term, added after runs were cached: off, it (and its
        # setting) is left out so that existing runs keep their folders
        conf["weights"] = {k: v for k, v in conf["weights"].items() if k != "words"}
        del conf["words_per_class"]
    identity = {
        "format": CHECKPOINT_FORMAT,
        "config": conf,
        "model_name": bundle.model_name,
        "pretrained": None if bundle.pretrained is None else str(bundle.pretrained),
        "bundle": bundle_fingerprint(bundle),
        "dataset": dataset.name,
        # train and val only: training never reads the test split
        "counts": {
            split: [len(dataset.sketches_in(split)), len(dataset.photo_ids(split))]
            for split in ("train", "val")
        },
    }
    if dataset.framing is not None:  # added later: unframed runs keep their folders
        identity["framing"] = dataset.framing
    return identity


def run_dir(
    parent: str | os.PathLike,
    name: str,
    cfg: TrainConfig,
    bundle: ClipBundle,
    dataset: SketchPhotoSet,
) -> Path:
    """``<parent>/<name>-<hash>``: a run folder named by everything that identifies a
    run (configuration, backbone weights, dataset), so a changed backbone or config
    gets its own folder instead of colliding with an old run (chapters 05-09)."""
    return Path(parent) / f"{name}-{config_hash(_run_identity(cfg, bundle, dataset))}"


# -------------------------------------------------------------------------- losses


def _columns(kinds: Sequence[str], wanted: Sequence[str]) -> list[int]:
    return [list(kinds).index(k) for k in wanted if k in kinds]


def duet_losses(
    out: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    cfg: TrainConfig,
    negative_kinds: Sequence[str],
) -> dict[str, torch.Tensor]:
    """The active loss terms of one step from :meth:`DuetModel.forward` outputs.

    Args:
        out: the model outputs (cast to float32 here).
        batch: the data batch (``photo_index``, ``shape_index``, ``target``; with
            ``q_memory`` in ``out`` also ``memory_photo`` (N, E) and
            ``memory_shape_index`` (N,), see ``TrainConfig.trip_memory``).
        cfg: the training configuration (forms, margins, temperatures).
        negative_kinds: the kinds of the columns of ``out["n"]``.

    Returns:
        name -> scalar tensor for every term with a positive weight.
    """
    w = cfg.weights
    o = {k: v.float() for k, v in out.items()}
    photo_labels = batch["photo_index"].to(o["p"].device)
    shape_labels = batch["shape_index"].to(o["p"].device)
    trip_cols = _columns(negative_kinds, cfg.trip_negatives)
    comp_cols = _columns(negative_kinds, cfg.comp_negatives)
    terms: dict[str, torch.Tensor] = {}
    tau_trip = cfg.tau if cfg.tau_trip is None else cfg.tau_trip
    if w.enabled("trip"):
        neg = o["n"][:, trip_cols] if trip_cols else None
        terms["trip"] = triplet_loss(
            o["q_sketch"],
            o["p"],
            neg,
            cfg.margin_trip,
            mining=cfg.trip_mining,
            negative_reduction=cfg.negative_reduction,
            form=cfg.trip_form,
            tau=tau_trip,
            # a sketch says nothing about appearance: photos of its shape are
            # never its negatives
            labels=shape_labels,
        )
        if "q_memory" in o:
            # the memory term: one InfoNCE over current and remembered pairs
            terms["trip"] = terms["trip"] + triplet_loss(
                torch.cat([o["q_sketch"], o["q_memory"]]),
                torch.cat([o["p"], batch["memory_photo"].to(o["p"].device).float()]),
                form="infonce",
                tau=tau_trip,
                labels=torch.cat(
                    [shape_labels, batch["memory_shape_index"].to(o["p"].device)]
                ),
            )
    # L_comp composes with Delta^w; our L_words has the same form with the
    # self-labelled phrase in its place
    neg = o["n"][:, comp_cols] if comp_cols else None
    for name, query in (("comp", "q_delta"), ("words", "q_words")):
        if w.enabled(name):
            terms[name] = compositionality_loss(
                o[query],
                o["q_sketch"],
                o["p"],
                cfg.margin_comp,
                form=cfg.comp_form,
                negatives=neg,
                tau=cfg.tau,
                labels=photo_labels,
                negative_reduction=cfg.negative_reduction,
                detach_reference=cfg.comp_detach_reference,
            )
    if w.enabled("reg"):
        terms["reg"] = neutral_regulariser(
            o["q_neutral"],
            o["q_sketch"],
            o["p"],
            form=cfg.reg_form,
            detach_reference=cfg.reg_detach_reference,
        )
    if w.enabled("tt"):
        terms["tt"] = prompt_text_loss(
            o["q_sketch"], o["q_fixed"], cfg.tau, cfg.tt_form
        )
    if w.enabled("rt"):
        neg = o["n_tokens"][:, trip_cols] if trip_cols else None
        terms["rt"] = region_triplet_loss(
            o["q_sketch"],
            o["p_tokens"],
            neg,
            cfg.margin_rt,
            cfg.tau_region,
            form=cfg.rt_form,
            negative_reduction=cfg.negative_reduction,
            labels=shape_labels,
        )
    if w.enabled("rec"):
        terms["rec"] = reconstruction_loss(
            o["g_delta"],
            o["g_sketch"],
            batch["target"].to(o["g_delta"].device),
            form=cfg.rec_form,
            sketch_target=cfg.rec_sketch_target,
        )
    return terms


def _forward_options(
    cfg: TrainConfig, model: DuetModel, batch_size: int, gen: torch.Generator
) -> dict[str, Any]:
    """Keyword arguments of DuetModel.forward for the active terms of one step."""
    w = cfg.weights
    opts: dict[str, Any] = {
        "with_delta": w.enabled("comp") or w.enabled("rec"),
        "with_tokens": w.enabled("rt"),
        "decode": w.enabled("rec"),
        "fixed_index": None,
        "neutral_index": None,
    }
    if w.enabled("tt"):
        if cfg.tt_prompts == "all":
            opts["fixed_index"] = "all"
        else:
            opts["fixed_index"] = torch.randint(
                len(model.fixed_prompts), (batch_size,), generator=gen
            )
    if w.enabled("reg"):
        shape = (
            (batch_size,)
            if cfg.neutral_per_sample == 1
            else (batch_size, cfg.neutral_per_sample)
        )
        opts["neutral_index"] = torch.randint(
            len(model.neutral_texts), shape, generator=gen
        )
    return opts


# ---------------------------------------------------------------------- evaluation


def _flat(prefix: str, report: Mapping[str, Any]) -> dict[str, float | int]:
    return {f"{prefix}_{k}": v for k, v in report.items()}


def _chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def evaluate_duet(
    model: DuetModel,
    dataset: SketchPhotoSet,
    split: str,
    texts: Sequence[str] | None = None,
    *,
    batch_size: int = 128,
    ks: Sequence[int] = (1, 5, 10),
    fusion_weight: float = 1.0,
    cache: PhotoCache | None = None,
    similarities: dict[str, tuple] | None = None,
    test_shift: int = 0,
) -> dict[str, float | int]:
    """Retrieval metrics of a duet model on one split (chapter 10).

    Always computed (gallery = the unique photos paired with the split's
    sketches, pessimistic ranks from :mod:`duet_lib.metrics`):

    - ``fgsbir_*``: FG-SBIR with the sketch-only query s_L^T = T([P^L ; s^w]).
    - ``visual_*``: the image-side baseline V(sketch) vs V(photo).

    With world attributes (``shape_id``, ``colour``, ``pattern``, ``background``,
    ``appearance_phrase``), the duet task on the split's duet gallery (every
    appearance variant of every shape; query = sketch + the target's appearance
    phrase, target = that variant):

    - ``duet_*``: the composed query s_L^{T,q} = T([P^L ; s^w ; t^w]).
    - ``sketch_*``: s_L^T alone on the same gallery.
    - ``text_*``: the frozen CLIP text embedding of the phrase alone.
    - ``fusion_*``: late fusion normalise(s_L^T / |s_L^T| + w t / |t|).

    Without attributes, ``texts`` (one per sketch of the split) gives the same four
    query types on the FG-SBIR gallery.

    Each prefix carries the keys of :func:`~duet_lib.metrics.retrieval_report`:
    ``n_queries``, ``n_gallery``, ``acc@K``, ``chance@K``, ``mean_rank``,
    ``median_rank``, ``mrr``, and with attributes ``shape@1``, ``appearance@1``
    (colour, pattern and background all right) and ``colour@1``. Rates are
    fractions.

    Args:
        model: the duet model (switched to eval mode for the call).
        dataset: the data; only ``split`` is read.
        split: "train", "val" or "test".
        texts: replace the appearance phrases: one string per duet query (in
            :func:`duet_lib.data.world.duet_queries` order), or a format string
            containing ``{phrase}``, e.g. ``"in {phrase}"``; without attributes,
            one string per sketch of the split.
        batch_size: images or queries per forward pass.
        ks: Acc@K cut-offs.
        fusion_weight: w of the late-fusion reference.
        cache: a :class:`PhotoCache` to reuse (sizes must match the model).
        similarities: a dict to fill, for a per-query analysis (chapter 09), with
            ``prefix -> (sim, target, gallery)`` for every query type above: the
            (Q, N) similarity matrix it ranked, the (Q,) index of each query's true
            photo and the N gallery photo ids.
        test_shift: 0 (the paper's protocol) ranks the images as they are; k > 0
            also sees every sketch and photo shifted by k pixels in eight
            directions (:func:`duet_lib.views.shift_offsets`) and averages each
            query type's similarities over the nine views (chapter 09; our
            addition, nine times the encoder passes).

    Returns:
        Flat dict of metrics.
    """
    offsets = shift_offsets(test_shift)
    if similarities is not None and not isinstance(similarities, dict):
        raise TypeError(
            f"similarities must be a dict to fill (or None), got {type(similarities)}"
        )
    was_training = model.training
    model.eval()
    try:
        return _evaluate(
            model,
            dataset,
            split,
            texts,
            batch_size,
            tuple(ks),
            fusion_weight,
            cache,
            similarities,
            offsets,
        )
    finally:
        model.train(was_training)


def _evaluate(
    model: DuetModel,
    dataset: SketchPhotoSet,
    split: str,
    texts: Sequence[str] | str | None,
    batch_size: int,
    ks: tuple[int, ...],
    fusion_weight: float,
    cache: PhotoCache | None,
    keep: dict[str, tuple] | None = None,
    offsets: Sequence[tuple[int, int]] = ((0, 0),),
) -> dict[str, float | int]:
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    bundle = model.bundle
    if cache is None:
        cache = PhotoCache(dataset, bundle.image_size, model.decoder.out_size)
    task = retrieval_task(
        dataset,
        split,
        texts,
        image_size=bundle.image_size,
        mean=bundle.image_mean,
        std=bundle.image_std,
        cache=cache,
    )
    t_emb = (
        _text_embeddings(model, task.texts, batch_size) if task.has_composed else None
    )
    sims: dict[str, torch.Tensor] = {}
    for dx, dy in offsets:
        for prefix, sim in _view_similarities(
            model, task, t_emb, batch_size, fusion_weight, dx, dy
        ).items():
            sims[prefix] = sims[prefix] + sim if prefix in sims else sim
    out: dict[str, float | int] = {}
    for prefix, sim in sims.items():
        sim = sim / len(offsets)
        fg = prefix in ("fgsbir", "visual")
        target = task.target if fg else task.duet_target
        gallery = task.gallery if fg else task.duet_gallery
        if keep is not None:
            keep[prefix] = (sim, target, list(gallery))
        attributes = task.attributes if fg else task.duet_attributes
        out |= _flat(prefix, retrieval_report(sim, target, ks, attributes=attributes))
    return out


def _text_embeddings(
    model: DuetModel, texts: Sequence[str], batch_size: int
) -> torch.Tensor:
    """(Q, E) normalised frozen-CLIP embeddings of the query texts (each unique
    text encoded once); they do not depend on the image view."""
    unique = list(dict.fromkeys(texts))
    t_unique = torch.cat(
        [
            encode_text(model.bundle, unique[r.start : r.stop]).float()
            for r in _chunks(len(unique), batch_size)
        ]
    )
    t_pos = {t: i for i, t in enumerate(unique)}
    return F.normalize(t_unique[torch.tensor([t_pos[t] for t in texts])], dim=-1)


def _view_similarities(
    model: DuetModel,
    task: RetrievalTask,
    t_emb: torch.Tensor | None,
    batch_size: int,
    fusion_weight: float,
    dx: int,
    dy: int,
) -> dict[str, torch.Tensor]:
    """Every query type's (Q, N) similarity matrix with sketches and photos
    shifted by (dx, dy) pixels (:func:`_evaluate` averages over views); ``t_emb``
    holds the composed task's text embeddings (:func:`_text_embeddings`)."""
    device = next(model.parameters()).device
    data = task.data
    n_sk = len(data.records)

    def encode_photos(ids: Sequence[str]) -> torch.Tensor:
        parts = [
            model.encode_photo(
                shift_images(data.photo_tensor([ids[i] for i in r]), dx, dy).to(device)
            )
            for r in _chunks(len(ids), batch_size)
        ]
        return torch.cat(parts).float()

    s_img = torch.cat(
        [
            model.encode_sketch(
                shift_images(data.sketch_tensor(list(r)), dx, dy).to(device)
            )
            for r in _chunks(n_sk, batch_size)
        ]
    )
    s_word = torch.cat(
        [model.sketch_word(s_img[r.start : r.stop]) for r in _chunks(n_sk, batch_size)]
    )
    q_sketch = torch.cat(
        [
            model.encode_queries({"q": model.spec_sketch(s_word[r.start : r.stop])})[
                "q"
            ]
            for r in _chunks(n_sk, batch_size)
        ]
    ).float()
    s_img = s_img.float()

    g_emb = F.normalize(encode_photos(task.gallery), dim=-1)
    qs = F.normalize(q_sketch, dim=-1)
    vs = F.normalize(s_img, dim=-1)
    out = {"fgsbir": qs @ g_emb.T, "visual": vs @ g_emb.T}
    if not task.has_composed:
        return out

    # ------------------------------------------------------------- composed task
    query_texts = task.texts
    n_q = len(query_texts)
    d_emb = (
        F.normalize(encode_photos(task.duet_gallery), dim=-1)
        if task.duet_gallery != task.gallery
        else g_emb
    )
    idx = task.duet_index
    duet = torch.cat(
        [
            model.encode_queries(
                {
                    "q": model.spec_text(
                        s_word[idx[r.start : r.stop]], query_texts[r.start : r.stop]
                    )
                }
            )["q"]
            for r in _chunks(n_q, batch_size)
        ]
    ).float()
    s_only = qs[idx]
    fusion = F.normalize(s_only + fusion_weight * t_emb, dim=-1)
    for prefix, q in (
        ("duet", F.normalize(duet, dim=-1)),
        ("sketch", s_only),
        ("text", t_emb),
        ("fusion", fusion),
    ):
        out[prefix] = q @ d_emb.T
    return out


# -------------------------------------------------------------------------- history


def plot_history(history: Mapping[str, Any], smooth: int = 10):
    """Loss curves and validation metric of a run (chapter 09).

    Args:
        history: ``TrainResult.history`` (or the saved ``history.json``).
        smooth: moving-average window over steps for the loss curves (1 = raw).

    Returns:
        A matplotlib Figure with two panels: the unweighted loss terms and their
        weighted total per step, and the validation metric per evaluation.
    """
    from matplotlib.figure import Figure

    train = list(history.get("train", []))
    val = list(history.get("val", []))
    if not train and not val:
        raise ValueError("history holds no training steps and no evaluations")
    if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1:
        raise ValueError(f"smooth must be a positive integer, got {smooth!r}")
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_val = fig.subplots(1, 2)
    steps = np.array([row["step"] for row in train])
    for name in (*LOSS_NAMES, "total"):
        values = np.array([row.get(name, np.nan) for row in train], dtype=float)
        if not len(values) or np.isnan(values).all():
            continue
        if smooth > 1 and len(values) >= smooth:
            kernel = np.ones(smooth) / smooth
            values = np.convolve(values, kernel, mode="valid")
            x = steps[smooth - 1 :]
        else:
            x = steps
        style = {"color": "black", "linewidth": 2} if name == "total" else {}
        ax_loss.plot(x, values, label=name, **style)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss (unweighted terms)")
    ax_loss.set_title(
        "training losses" + (f" ({smooth}-step mean)" if smooth > 1 else "")
    )
    if train:
        ax_loss.legend(ncol=2)
    metric = history.get("select_metric", "fgsbir_acc@1")
    if val:
        v_steps = [row["step"] for row in val]
        for name in dict.fromkeys([metric, "fgsbir_acc@1", "duet_acc@1"]):
            if name in val[0]:
                ax_val.plot(
                    v_steps,
                    [100 * row[name] for row in val],
                    marker="o",
                    label=name + (" (selects)" if name == metric else ""),
                )
        ax_val.legend()
    ax_val.set_xlabel("step")
    ax_val.set_ylabel("validation %")
    ax_val.set_title("validation (model selection)")
    return fig


# -------------------------------------------------------------------------- training


class _ResumableSampler(DistributedSampler):
    """DistributedSampler that can start part-way into an epoch (for resuming)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.start = 0

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return super().__len__() - self.start


def _distributed() -> tuple[int, int, int]:
    """(world_size, rank, local_rank) from the torchrun environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 1, 0, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return world, dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def loss_weights_for(
    values: Mapping[str, float], dataset: SketchPhotoSet
) -> LossWeights:
    """A chapter's ``loss_weights`` dict as :class:`LossWeights` for one dataset.

    Names left out get weight 0. Our seventh term L_words needs the world's
    vocabulary of attributes to write its phrases
    (:func:`duet_lib.probes.zero_shot_phrases`); on a dataset without attributes
    (ShoeV2, ChairV2) it is switched off with a warning, so the same chapter runs the
    paper's six losses there.
    """
    unknown = sorted(set(values) - set(LOSS_NAMES))
    if unknown:
        raise ValueError(
            f"unknown loss name(s) {unknown}; known names are {list(LOSS_NAMES)}"
        )
    full = {name: float(values.get(name, 0.0)) for name in LOSS_NAMES}
    if full["words"] > 0 and not dataset.attributes:
        warnings.warn(
            f"L_words is off on {dataset.name!r}: it writes its phrases from the "
            "world's attribute vocabulary, which this dataset does not have",
            stacklevel=2,
        )
        full["words"] = 0.0
    return LossWeights.from_dict(full)


def lr_scale(cfg: TrainConfig, step: int) -> float:
    """Learning-rate multiplier of optimisation step ``step`` (1-based).

    A linear warm-up over ``cfg.warmup_steps``, then 1 ("constant") or a cosine
    from 1 down to 0 at ``cfg.max_steps`` ("cosine").
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return step / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    span = max(cfg.max_steps - cfg.warmup_steps, 1)
    done = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * done))


def _step_seed(seed: int, step: int, rank: int = 0) -> int:
    return int(np.random.SeedSequence([seed, step, rank, 9]).generate_state(1)[0])


def _self_labelled_phrases(
    cfg: TrainConfig,
    bundle: ClipBundle,
    photo_ids: Sequence[str],
    dataset: SketchPhotoSet,
    out_dir: Path,
    resumed: bool,
    rank: int,
) -> dict[str, str]:
    """The phrases of L_words: read once from the untrained CLIP, kept in the run.

    A fresh run reads every training photo zero-shot with the bundle as passed
    (before any LayerNorm is trained) and writes ``phrases.json`` into the run
    folder; a resumed run reads that file, since its bundle has already been
    trained.
    """
    path = out_dir / "phrases.json"
    if resumed:
        if not path.is_file():
            raise ValueError(
                f"{out_dir}: this run uses L_words but its phrases.json is missing; "
                "delete the folder to start the run again"
            )
        phrases = json.loads(path.read_text(encoding="utf-8"))
        ok = isinstance(phrases, dict) and all(
            isinstance(phrases.get(p), str) for p in photo_ids
        )
        if not ok:
            raise ValueError(f"{path} does not hold a phrase for every training photo")
        return phrases
    was_training = bundle.model.training
    bundle.model.eval()
    try:
        phrases = zero_shot_phrases(
            bundle,
            dataset,
            list(photo_ids),
            seed=cfg.seed,
            per_class=cfg.words_per_class,
        )
    except ValueError as err:
        raise ValueError(f"L_words (weights.words > 0): {err}") from None
    finally:
        bundle.model.train(was_training)
    if rank == 0:
        _write_json(path, phrases)
    return phrases


def _write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=1, sort_keys=False).encode("utf-8")
    atomic_write(path, lambda handle: handle.write(text))


def _with_selection(cfg: TrainConfig, metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` plus the derived selection metric ``both_acc@1`` when selected
    (:func:`train_duet` refuses it up front on datasets without duet metrics)."""
    if cfg.select_metric == "both_acc@1":
        metrics["both_acc@1"] = 0.5 * (
            float(metrics["duet_acc@1"]) + float(metrics["fgsbir_acc@1"])
        )
    return metrics


def _select_name(cfg: TrainConfig, metrics: Mapping[str, Any]) -> str:
    if cfg.select_metric != "auto":
        if cfg.select_metric not in metrics:
            raise ValueError(
                f"select_metric {cfg.select_metric!r} is not produced for this dataset "
                "(duet_* metrics need world attributes)"
            )
        return cfg.select_metric
    return "duet_acc@1" if "duet_acc@1" in metrics else "fgsbir_acc@1"


@torch.no_grad()
def mine_near_shapes(
    model: DuetModel,
    data: SketchPhotoPairs,
    k: int,
    batch_size: int = 128,
) -> np.ndarray:
    """Candidates of ``"near_shape"`` negatives, mined with the model as it is.

    Each shape of the training pool is represented by the mean of its sketches'
    normalised embeddings V(sketch) (shapes without a sketch: by their photos'),
    and every photo gets the ``k`` photos of *other* shapes that lie closest to
    its shape's representative: the photos a sketch of it is most easily
    mistaken for.

    Args:
        model: the duet model (its visual encoder V is used, in eval mode).
        data: the :class:`~duet_lib.data.pairs.SketchPhotoPairs` of the split.
        k: candidates per photo (fewer when the pool is smaller).
        batch_size: images per forward pass.

    Returns:
        (P, k') int64 indices into ``data.photo_ids``, closest first.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:

        def embed(tensors: Callable[[range], torch.Tensor], n: int) -> torch.Tensor:
            rows = [
                F.normalize(model.encode_photo(tensors(r).to(device)).float(), dim=-1)
                for r in _chunks(n, batch_size)
            ]
            return torch.cat(rows).cpu()

        ids = data.photo_ids
        photos = embed(lambda r: data.photo_tensor([ids[i] for i in r]), len(ids))
        sketches = embed(lambda r: data.sketch_tensor(list(r)), len(data.records))
    finally:
        model.train(was_training)
    shape = torch.from_numpy(data.photo_shape)
    n_shapes = int(shape.max()) + 1
    sketch_shape = shape[torch.from_numpy(data.sketch_photo)]
    rep = torch.zeros(n_shapes, photos.shape[1])
    rep.index_add_(0, sketch_shape, sketches)
    has_sketch = torch.bincount(sketch_shape, minlength=n_shapes) > 0
    by_photo = torch.zeros_like(rep).index_add_(0, shape, photos)
    rep = torch.where(has_sketch[:, None], rep, by_photo)
    sim = F.normalize(rep, dim=-1) @ photos.T  # (shapes, photos)
    sim[shape[None, :] == torch.arange(n_shapes)[:, None]] = -math.inf
    # no row may ask for more photos than the largest shape leaves over
    k = max(1, min(k, len(shape) - int(torch.bincount(shape).max())))
    table = sim.topk(k, dim=1).indices  # (shapes, k), closest first
    return table[shape].numpy().astype(np.int64)


def _trainable_parameters(
    model: torch.nn.Module,
) -> tuple[list[str], list[torch.Tensor]]:
    """The model's trainable parameter names and the parameters, in one order."""
    named = dict(model.named_parameters())
    names = list(model.trainable_parameter_names())
    return names, [named[n] for n in names]


@contextmanager
def _parameters_set_to(params: Sequence[torch.Tensor], values: Sequence[torch.Tensor]):
    """Within the block ``params`` hold ``values``; afterwards their own again."""
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, v in zip(params, values, strict=True):
            p.copy_(v)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, w in zip(params, saved, strict=True):
                p.copy_(w)


class _WeightAverage:
    """Exponential moving average of the trainable weights (``ema_decay``).

    Bias-corrected as Adam's moments are: the running sum starts at zero and is
    divided by 1 - d^t, so after t steps the average weights step s by
    (1 - d) d^(t - s) / (1 - d^t), and the initial weights count for nothing.
    """

    def __init__(self, model: DuetModel, decay: float) -> None:
        self.names, self.params = _trainable_parameters(model)
        self.decay = decay
        self.steps = 0
        self.shadow = [torch.zeros_like(p, requires_grad=False) for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        for e, p in zip(self.shadow, self.params, strict=True):
            e.lerp_(p.detach(), 1.0 - self.decay)

    def averaged(self) -> list[torch.Tensor]:
        """The bias-corrected average, one tensor per parameter."""
        if self.steps == 0:
            return [p.detach().clone() for p in self.params]
        correction = 1.0 - self.decay**self.steps
        return [e / correction for e in self.shadow]

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "shadow": {
                n: e.cpu().clone() for n, e in zip(self.names, self.shadow, strict=True)
            },
        }

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        shadow = state["shadow"]
        if sorted(shadow) != sorted(self.names):
            raise ValueError("the stored weight average does not fit this model")
        self.steps = int(state["steps"])
        for n, e in zip(self.names, self.shadow, strict=True):
            e.copy_(shadow[n].to(e.device))

    def swapped_in(self):
        """Within the block the model holds the averaged weights."""
        return _parameters_set_to(self.params, self.averaged())


def train_duet(
    cfg: TrainConfig,
    bundle: ClipBundle,
    dataset: SketchPhotoSet,
    output_dir: str | os.PathLike,
    quiet: bool = False,
    *,
    stop_after: int | None = None,
    on_eval: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Train the duet in one stage with all active losses (chapter 09).

    The CLIP model of ``bundle`` is frozen and its visual LayerNorms are trained
    **in place**; pass a freshly loaded bundle. When ``output_dir`` holds a
    ``last.pt`` of the same configuration, training resumes from it; a finished
    run is not repeated (``trained_now=False``). The test split is never read.

    Args:
        cfg: the training configuration.
        bundle: the CLIP to build the duet on.
        dataset: data with "train" and "val" sketches.
        output_dir: run folder for ``last.pt``, ``best.pt``, ``history.json``,
            ``config.json``.
        quiet: hide the progress bar.
        stop_after: stop right after this global step without writing anything,
            as if the process had been killed (for testing resumption).
        on_eval: optional callback ``(step, val_metrics)`` after each evaluation.

    Returns:
        A :class:`TrainResult`; load the best model with :func:`load_trained_duet`.

    Raises:
        ValueError: a bad config, a dataset without train or val sketches, a
            train split smaller than the batch, or an ``output_dir`` that holds a
            run of another configuration.
    """
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if not isinstance(dataset, SketchPhotoSet):
        raise ValueError(
            f"dataset must be a SketchPhotoSet, got {type(dataset).__name__}"
        )
    if stop_after is not None and (
        isinstance(stop_after, bool)
        or not isinstance(stop_after, int)
        or stop_after < 1
    ):
        raise ValueError(
            f"stop_after must be a positive integer or None, got {stop_after!r}"
        )
    for split in ("train", "val"):
        if not dataset.sketches_in(split):
            raise ValueError(
                f"dataset {dataset.name!r} has no {split} sketches; training needs "
                "train and val splits (load it with val_fraction > 0)"
            )
    if cfg.select_metric.startswith(("duet_", "both_")) and not dataset.attributes:
        raise ValueError(
            f"select_metric {cfg.select_metric!r} needs the duet metrics, which need "
            f"world attributes; dataset {dataset.name!r} has none (use "
            "'fgsbir_acc@1' or 'auto')"
        )
    t_start = time.perf_counter()
    world, rank, local_rank = _distributed()
    if world > 1 and torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = resolve_device(cfg.device)
    if cfg.batch_size % world:
        raise ValueError(
            f"batch_size {cfg.batch_size} is not divisible by the {world} processes"
        )
    per_rank = cfg.batch_size // world
    out_dir = Path(output_dir)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    identity = _run_identity(cfg, bundle, dataset)
    run_hash = config_hash(identity)

    ckpt = None
    if last_path.exists():
        ckpt = load_checkpoint(last_path)
        if (
            ckpt.get("format") != CHECKPOINT_FORMAT
            or ckpt.get("config_hash") != run_hash
        ):
            raise ValueError(
                f"{out_dir} holds a run of another configuration, model or dataset "
                f"(hash {ckpt.get('config_hash')!r}, this run {run_hash!r}); use a "
                "new output_dir or delete the folder"
            )
        if int(ckpt["step"]) > cfg.max_steps:
            # max_steps is not hashed (a finished run can be extended), so a folder
            # may hold a longer run whose kept state comes from beyond this request
            raise ValueError(
                f"{out_dir} holds this run trained to step {int(ckpt['step'])}, "
                f"beyond max_steps={cfg.max_steps}; its kept state may come from a "
                "later step. Use a new output_dir, or delete the folder to train anew"
            )

    bundle.model.to(device)
    model = build_model(cfg, bundle)
    model.train()
    groups = model.parameter_groups()
    optimizer = torch.optim.Adam(
        [
            {"params": groups["visual"], "lr": cfg.lr_visual, "name": "visual"},
            {"params": groups["modules"], "lr": cfg.lr_modules, "name": "modules"},
        ],
        weight_decay=cfg.weight_decay,
    )
    amp_dtype = None
    if device.type == "cuda" and cfg.amp != "off":
        amp_dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)

    history: dict[str, Any] = {"train": [], "val": [], "select_metric": None}
    step, best_step, best_value, best_metrics = 0, -1, -math.inf, {}
    stale, stopped = 0, ""
    # trip_memory: (sketch emb, photo emb, shape index) of the last k batches
    memory: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    # near_shape negatives are mined with the weights of step 0, also when resuming
    _, trainable_params = _trainable_parameters(model)
    step0 = (
        [p.detach().clone() for p in trainable_params]
        if ckpt is not None and "near_shape" in cfg.negative_kinds()
        else None
    )
    if ckpt is not None:
        model.load_trainable_state_dict(ckpt["trainable"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        step = int(ckpt["step"])
        best_step, best_value = int(ckpt["best_step"]), float(ckpt["best_value"])
        best_metrics = dict(ckpt["best_metrics"])
        stale, stopped = int(ckpt["stale"]), str(ckpt["stopped"])
        history = json.loads(ckpt["history_json"])
        memory = [
            (m["s"].to(device), m["p"].to(device), m["shape_index"].to(device))
            for m in ckpt.get("trip_memory") or []
        ]
    average = _WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
    if average is not None and ckpt is not None:
        average.load_state_dict(ckpt["ema"])
    resumed_from = step

    def result(stop: str, trained: bool) -> TrainResult:
        return TrainResult(
            output_dir=out_dir,
            last_checkpoint=last_path,
            best_checkpoint=best_path if best_path.exists() else None,
            step=step,
            best_step=best_step,
            best_value=best_value,
            select_metric=history.get("select_metric") or cfg.select_metric,
            best_metrics=best_metrics,
            history=history,
            stopped=stop,
            resumed_from=resumed_from,
            trained_now=trained,
            seconds=time.perf_counter() - t_start,
            amp_used="off" if amp_dtype is None else cfg.amp,
            config_hash=run_hash,
        )

    if stopped == "patience" or step >= cfg.max_steps:
        return result("already_done", False)

    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_json(
            out_dir / "config.json",
            {"config_hash": run_hash, **identity, "config": cfg.to_dict()},
        )
    kinds = cfg.negative_kinds()
    cache = PhotoCache(dataset, bundle.image_size, cfg.decoder_size)
    train_data = SketchPhotoPairs(
        dataset,
        "train",
        bundle.image_size,
        bundle.image_mean,
        bundle.image_std,
        target_size=cfg.decoder_size,
        negatives=kinds,
        augment=cfg.sketch_augment(),
        seed=cfg.seed,
        line_width=cfg.line_width,
        cache=cache,
    )
    if "near_shape" in kinds:
        with _parameters_set_to(trainable_params, step0) if step0 else nullcontext():
            table = mine_near_shapes(
                model, train_data, cfg.near_shape_pool, cfg.eval_batch_size
            )
        train_data.set_near_shapes(table)
    phrases = (
        _self_labelled_phrases(
            cfg, bundle, train_data.photo_ids, dataset, out_dir, ckpt is not None, rank
        )
        if cfg.weights.enabled("words")
        else None
    )
    sampler = _ResumableSampler(
        train_data,
        num_replicas=world,
        rank=rank,
        shuffle=True,
        seed=cfg.seed,
        drop_last=False,
    )
    per_epoch = sampler.num_samples // per_rank
    if per_epoch < 1:
        raise ValueError(
            f"the train split has {len(train_data)} sketches, fewer than the batch "
            f"({cfg.batch_size}); lower batch_size"
        )
    if cfg.num_workers > 0:
        # Workers are forked per epoch; decode every photo once, before the first
        # fork, so that they all share (copy-on-write) the same cache.
        cache.preload(train_data.photo_ids)
    net: torch.nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=not cfg.weights.enabled("rec"),
        )

    def evaluate_and_save(current: int) -> bool:
        """Validation, best/last checkpoints; returns True to stop (patience)."""
        nonlocal best_step, best_value, best_metrics, stale
        with average.swapped_in() if average is not None else nullcontext():
            metrics = _with_selection(
                cfg,
                evaluate_duet(
                    model, dataset, "val", batch_size=cfg.eval_batch_size, cache=cache
                ),
            )
            # the evaluated weights (the average when ema_decay is set)
            state = model.trainable_state_dict()
        raw_state = state if average is None else model.trainable_state_dict()
        name = _select_name(cfg, metrics)
        history["select_metric"] = name
        value = float(metrics[name])
        history["val"].append({"step": current, **metrics})
        improved = value > best_value
        if improved:
            best_step, best_value, best_metrics, stale = (
                current,
                value,
                dict(metrics),
                0,
            )
        else:
            stale += 1
        stop = cfg.patience is not None and stale >= cfg.patience
        if rank == 0:
            common = {
                "format": CHECKPOINT_FORMAT,
                "config": cfg.to_dict(),
                "config_hash": run_hash,
                "model_name": bundle.model_name,
                # the backbone it needs, so a copied checkpoint is self-describing
                "pretrained": identity["pretrained"],
                "bundle": identity["bundle"],
                "dataset": identity["dataset"],
                "step": current,
                # data position (informative: it follows from the step)
                "epoch": current // per_epoch,
                "batch_in_epoch": current % per_epoch,
            }
            if improved:
                save_checkpoint(
                    {
                        **common,
                        "trainable": state,
                        "val_metrics": dict(metrics),
                        "select_metric": name,
                    },
                    best_path,
                )
            save_checkpoint(
                {
                    **common,
                    "trainable": raw_state,
                    "ema": None if average is None else average.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                    "best_step": best_step,
                    "best_value": best_value,
                    "best_metrics": best_metrics,
                    "stale": stale,
                    "stopped": "patience" if stop else "",
                    "trip_memory": [
                        {"s": ms.cpu(), "p": mp.cpu(), "shape_index": ml.cpu()}
                        for ms, mp, ml in memory
                    ],
                    "history_json": json.dumps(history),
                },
                last_path,
            )
            _write_json(out_dir / "history.json", history)
        _barrier(world)
        if on_eval is not None:
            on_eval(current, metrics)
        return stop

    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    bar = tqdm(
        total=cfg.max_steps,
        initial=step,
        disable=quiet or rank != 0,
        desc="duet",
        unit="step",
    )
    final = "max_steps"
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            while step < cfg.max_steps:
                epoch, pos = divmod(step, per_epoch)
                sampler.set_epoch(epoch)
                sampler.start = pos * per_rank
                train_data.set_epoch(epoch)
                loader = DataLoader(
                    train_data,
                    batch_size=per_rank,
                    sampler=sampler,
                    drop_last=True,
                    num_workers=cfg.num_workers,
                    generator=torch.Generator().manual_seed(cfg.seed + epoch),
                    pin_memory=device.type == "cuda",
                )
                for batch in loader:
                    t0 = time.perf_counter()
                    step += 1
                    torch.manual_seed(_step_seed(cfg.seed, step, rank))
                    gen = torch.Generator().manual_seed(_step_seed(cfg.seed, step))
                    scale = lr_scale(cfg, step)
                    for g in optimizer.param_groups:
                        base = (
                            cfg.lr_visual if g["name"] == "visual" else cfg.lr_modules
                        )
                        g["lr"] = base * scale
                    batch = {
                        k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                        for k, v in batch.items()
                    }
                    b = batch["sketch"].shape[0]
                    opts = _forward_options(cfg, model, b, gen)
                    for key in ("fixed_index", "neutral_index"):
                        if torch.is_tensor(opts[key]):
                            opts[key] = opts[key].to(device)
                    if memory:
                        opts["memory"] = torch.cat([m[0] for m in memory])
                        batch["memory_photo"] = torch.cat([m[1] for m in memory])
                        batch["memory_shape_index"] = torch.cat([m[2] for m in memory])
                    autocast = (
                        torch.autocast("cuda", dtype=amp_dtype)
                        if amp_dtype is not None
                        else nullcontext()
                    )
                    if phrases is not None:
                        opts["texts"] = [
                            phrases[train_data.photo_ids[int(i)]]
                            for i in batch["photo_index"]
                        ]
                    with autocast:
                        out = net(
                            batch["sketch"],
                            batch["photo"],
                            batch["negatives"] if kinds else None,
                            **opts,
                        )
                    terms = duet_losses(out, batch, cfg, kinds)
                    loss, log = total_loss(terms, cfg.weights)
                    if cfg.trip_memory and cfg.weights.enabled("trip"):
                        memory.append(
                            (
                                out["s"].detach().float(),
                                out["p"].detach().float(),
                                batch["shape_index"],
                            )
                        )
                        del memory[: -cfg.trip_memory]
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if cfg.grad_clip is not None:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(
                            [p for g in optimizer.param_groups for p in g["params"]],
                            cfg.grad_clip,
                        )
                    scaler.step(optimizer)
                    scaler.update()
                    if average is not None:
                        average.update()
                    log["step"] = step
                    log["seconds"] = time.perf_counter() - t0
                    history["train"].append(log)
                    bar.update(1)
                    bar.set_postfix(loss=f"{log['total']:.4f}")
                    stop = False
                    if step % cfg.eval_every == 0 or step == cfg.max_steps:
                        stop = evaluate_and_save(step)
                    if stop_after is not None and step >= stop_after:
                        return result("stop_after", True)
                    if stop:
                        final = "patience"
                        break
                    if step >= cfg.max_steps:
                        break
                if final == "patience":
                    break
    finally:
        bar.close()
    return result(final, True)
