"""The benchmark's baselines: B-CLIP, late fusion, textual inversion (chapter 10).

The benchmark compares the duet with the query types the paper's figures name
(method notes, section 9) plus the two-stage methods the paper contrasts itself
with. The constructions are ours; the names follow the paper.

==================  =========================================================
prefix              query, ranked against V(photo)
==================  =========================================================
``text``            zero-shot CLIP text embedding T(t) of the user's words
                    alone (frozen backbone, no training)
``bclip_fg``        B-CLIP (sketch only): V'(sketch) on the FG-SBIR gallery,
                    V' = the image encoder with its LayerNorms tuned by a
                    triplet loss (:func:`train_bclip`, after Sain et al.,
                    "CLIP for All Things Zero-Shot Sketch-Based Image
                    Retrieval, Fine-Grained or Not", CVPR 2023)
``bclip``           the same query on the composed-query (duet) gallery
``bclip_fusion``    B-CLIP (sketch + text), late fusion as in TASK-former
                    (Sangkloy et al., "A Sketch Is Worth a Thousand Words",
                    ECCV 2022): normalise(V'(s)/|V'(s)| + w T(t)/|T(t)|)
``inversion_fg``    two-stage textual inversion, sketch word alone:
                    T("a photo of $") with $ = phi(V(sketch))
``inversion``       the same with the user's words appended:
                    T("a photo of $ <words>")
==================  =========================================================

Two-stage textual inversion follows Pic2Word (Saito et al., "Pic2Word: Mapping
Pictures to Words for Zero-shot Composed Image Retrieval", CVPR 2023) and SEARLE
(Baldrati et al., "Zero-Shot Composed Image Retrieval with Textual Inversion",
ICCV 2023). Stage 1 (:func:`train_inversion`) trains a map phi from the frozen
image embedding to one pseudo-word token on **photos only**: the frozen text
encoder's embedding of "a photo of $" with $ = phi(V(photo)) must pick its own
photo in the batch (symmetric InfoNCE). Stage 2 applies phi, unchanged, to
sketches and writes the user's words after the pseudo-word. The duet differs in
every respect that stage 1 leaves out: it trains on sketch-photo pairs, tunes
V's LayerNorms and a prompt, and learns composition through Delta, in one stage.

Every metric dict uses the key scheme of :func:`duet_lib.train.evaluate_duet`:
``<prefix>_<key>`` with the keys of :func:`duet_lib.metrics.retrieval_report`
(``acc@K``, ``chance@K``, ``mrr``, ``shape@1``, ``appearance@1``, ...). The
galleries, queries, targets and query texts of a split are built by
:func:`retrieval_task` exactly as ``evaluate_duet`` builds them, so a baseline
row and a duet row of the benchmark table rank the same galleries.

Model selection reads the **validation** split only: B-CLIP keeps the LayerNorm
state with the best ``bclip_fg_<select_metric>`` on "val"; the inversion map,
which must never see a sketch, keeps the state whose pseudo-word queries best
retrieve their own photos among the validation photos. The test split is never
read during training.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from duet_lib.checkpoint import config_hash, load_checkpoint, save_checkpoint
from duet_lib.data.pairs import (
    NEGATIVE_KINDS,
    PhotoCache,
    SketchAugment,
    SketchPhotoPairs,
    normalize_images,
)
from duet_lib.data.records import SketchPhotoSet
from duet_lib.losses import triplet_loss
from duet_lib.metrics import retrieval_report
from duet_lib.models.clip import ClipBundle, freeze_for_duet
from duet_lib.models.converter import VisualToWord
from duet_lib.models.pretrain import clip_loss
from duet_lib.models.text_encoding import (
    PLACEHOLDER,
    encode_text,
    encode_text_with_pseudo_tokens,
    placeholder_id,
    placeholders,
    pseudo_rows,
    tokenize_templates,
)
from duet_lib.progress import tqdm
from duet_lib.repro import resolve_device
from duet_lib.tasks import DEFAULT_TARGET_SIZE, RetrievalTask, retrieval_task
from duet_lib.train import (
    _choice,
    _chunks,
    _flat,
    _integer,
    _number,
    _step_seed,
    _write_json,
    bundle_fingerprint,
)

__all__ = [
    "BASELINE_PREFIXES",
    "CHECKPOINT_FORMAT",
    "METHODS",
    "BaselineConfig",
    "BaselineResult",
    "bclip_triplet_loss",
    "evaluate_baselines",
    "evaluate_bclip",
    "evaluate_inversion",
    "evaluate_text_only",
    "inversion_loss",
    "load_baseline",
    "train_bclip",
    "train_inversion",
]

CHECKPOINT_FORMAT = "duet_lib.baselines/1"

#: The trained baselines (each has its own checkpoint file ``<method>.pt``).
METHODS = ("bclip", "inversion")

#: Metric prefixes the evaluation functions produce.
BASELINE_PREFIXES = (
    "text",
    "bclip_fg",
    "bclip",
    "bclip_fusion",
    "inversion_fg",
    "inversion",
)

#: Side of the reconstruction target a PhotoCache keeps; the baselines never use
#: it, so it is kept small.
_TARGET_SIZE = DEFAULT_TARGET_SIZE

_SELECT = ("acc@1", "mrr")
_MINING = ("given", "batch_hardest")
_REDUCTION = ("mean", "hardest")
_BCLIP_NEGATIVES = ("same_appearance", "random")

# Fields that change the numbers of each method (the rest only say where or how
# loudly it runs); they name a run in its checkpoint hash.
_COMMON_FIELDS = ("seed", "batch_size", "eval_every", "patience", "select_metric")
_METHOD_FIELDS = {
    "bclip": (
        "steps",
        "lr",
        "weight_decay",
        "margin",
        "negatives",
        "mining",
        "negative_reduction",
        "augment",
        "stroke_drop",
        "rotate_deg",
        "scale_jitter",
        "translate",
        "line_width",
    ),
    "inversion": (
        "map_steps",
        "lr_map",
        "map_weight_decay",
        "tau",
        "map_hidden",
        "map_dropout",
        "template",
        "word_tokens",
        "word_scale",
    ),
}


# -------------------------------------------------------------------------- config


@dataclass(frozen=True)
class BaselineConfig:
    """Knobs of the trained baselines, B-CLIP and textual inversion (chapter 10).

    Defaults follow the method notes (section 5) where they apply: B-CLIP uses
    the duet's triplet (cosine distance, margin 0.2, Adam 1e-4 on V's
    LayerNorms, "same appearance" hard negatives), so that the duet and its
    sketch-only baseline differ only in the query side. The inversion map uses
    SEARLE's phi shape (:class:`~duet_lib.models.converter.VisualToWord`) and a
    temperature of 0.07. The tiny CPU backbone usually wants larger rates.

    Attributes:
        seed: seed of initialisation, data order, augmentation and dropout.
        device: "auto", "cpu", "cuda", "cuda:N" or "mps".
        quiet: hide progress bars.
        steps: B-CLIP optimisation steps.
        batch_size: sketches (B-CLIP) or photos (inversion) per step.
        eval_every: steps between validation runs.
        eval_batch_size: images or texts per forward pass when evaluating.
        patience: evaluations without improvement before stopping; None = never.
        select_metric: validation key that selects the kept state, "acc@1" or
            "mrr" (B-CLIP: of ``bclip_fg``; inversion: of the photo round trip).
        lr: Adam learning rate of V's LayerNorms (B-CLIP).
        weight_decay: Adam weight decay of the LayerNorms (B-CLIP).
        margin: mu of the B-CLIP triplet hinge (cosine distance).
        negatives: negative kinds from the training data (see
            :class:`~duet_lib.data.pairs.SketchPhotoPairs`): "same_appearance"
            and/or "random". "same_shape" is refused: a sketch carries no
            appearance, so another variant of its own shape is not a negative.
        mining: "given" (the data's negatives) or "batch_hardest" (the closest
            photo of another shape in the batch, the given negatives included).
        negative_reduction: "mean" or "hardest" over several given negatives.
        augment: augment training sketches (B-CLIP).
        stroke_drop: probability of dropping a stroke.
        rotate_deg: maximum sketch rotation in degrees.
        scale_jitter: maximum relative sketch scale change.
        translate: maximum sketch shift (fraction of the canvas).
        line_width: stroke width of rasterised sketches (canvas pixels).
        map_steps: inversion optimisation steps; None = ``steps``.
        lr_map: AdamW learning rate of the inversion map phi.
        map_weight_decay: AdamW weight decay of phi.
        tau: temperature of the inversion's symmetric InfoNCE.
        map_hidden: hidden width of phi; None = 4 E.
        map_dropout: dropout inside phi.
        template: the prompt that holds the pseudo-word, with exactly one
            placeholder symbol ``$`` (Pic2Word writes it "a photo of *").
        word_tokens: pseudo-words phi emits per image (1 as in Pic2Word and
            SEARLE); with K > 1 the placeholder of ``template`` stands for a phrase
            of K pseudo-words, the same option the duet has (``sketch_tokens``).
        word_scale: norm of each pseudo-word in units of the mean norm of a real
            word's token (1 as in Pic2Word and SEARLE); the duet's option of the
            same meaning is ``token_scale``.
    """

    seed: int = 0
    device: str = "auto"
    quiet: bool = False
    steps: int = 400
    batch_size: int = 32
    eval_every: int = 100
    eval_batch_size: int = 128
    patience: int | None = None
    select_metric: str = "acc@1"
    lr: float = 1e-4
    weight_decay: float = 0.0
    margin: float = 0.2
    negatives: tuple[str, ...] = ("same_appearance",)
    mining: str = "given"
    negative_reduction: str = "mean"
    augment: bool = True
    stroke_drop: float = 0.1
    rotate_deg: float = 5.0
    scale_jitter: float = 0.1
    translate: float = 0.05
    line_width: float = 3.0
    map_steps: int | None = None
    lr_map: float = 1e-3
    map_weight_decay: float = 0.0
    tau: float = 0.07
    map_hidden: int | None = None
    map_dropout: float = 0.1
    template: str = f"a photo of {PLACEHOLDER}"
    word_tokens: int = 1
    word_scale: float = 1.0

    def __post_init__(self) -> None:
        negatives = self.negatives
        if isinstance(negatives, str) or not isinstance(negatives, Sequence):
            problems = [f"negatives must be a list of kinds, got {negatives!r}"]
            negatives = ()
        else:
            problems = []
            negatives = tuple(negatives)
            object.__setattr__(self, "negatives", negatives)
        problems += [
            _integer("seed", self.seed, 0),
            _integer("steps", self.steps, 1),
            _integer("batch_size", self.batch_size, 2),
            _integer("eval_every", self.eval_every, 1),
            _integer("eval_batch_size", self.eval_batch_size, 1),
            _integer("patience", self.patience, 1, none_ok=True),
            _choice("select_metric", self.select_metric, _SELECT),
            _number("lr", self.lr, 0.0, 1.0),
            _number("weight_decay", self.weight_decay, 0.0, 1.0),
            _number("margin", self.margin, 0.0, 2.0),
            _choice("mining", self.mining, _MINING),
            _choice("negative_reduction", self.negative_reduction, _REDUCTION),
            _number("line_width", self.line_width, 0.1, 64.0),
            _integer("map_steps", self.map_steps, 1, none_ok=True),
            _number("lr_map", self.lr_map, 0.0, 1.0),
            _number("map_weight_decay", self.map_weight_decay, 0.0, 1.0),
            _number("tau", self.tau, 1e-4, 10.0),
            _integer("map_hidden", self.map_hidden, 1, none_ok=True),
            _integer("word_tokens", self.word_tokens, 1),
            _number("word_scale", self.word_scale, 1e-3, 100.0),
            _number("map_dropout", self.map_dropout, 0.0, 0.99),
        ]
        for name in ("quiet", "augment"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not isinstance(self.device, str):
            problems.append(f"device must be a string, got {self.device!r}")
        for kind in negatives:
            if kind == "same_shape":
                problems.append(
                    "negatives: 'same_shape' is not a negative of a sketch-only "
                    "query (a sketch carries no appearance); use 'same_appearance' "
                    "or 'random'"
                )
            elif kind not in _BCLIP_NEGATIVES:
                problems.append(
                    f"negatives: unknown kind {kind!r}; choose from "
                    f"{list(_BCLIP_NEGATIVES)}"
                )
        if len(set(negatives)) != len(negatives):
            problems.append("negatives must not repeat a kind")
        if self.mining == "given" and not negatives:
            problems.append(
                'mining="given" needs negatives; name a kind or use "batch_hardest"'
            )
        if not isinstance(self.template, str) or self.template.count(PLACEHOLDER) != 1:
            problems.append(
                f"template must be a string with exactly one placeholder "
                f"{PLACEHOLDER!r}, got {self.template!r}"
            )
        problems = [p for p in problems if p]
        if problems:
            raise ValueError("invalid BaselineConfig: " + "; ".join(problems))
        self.sketch_augment()  # validates the augmentation ranges

    def sketch_augment(self) -> SketchAugment | None:
        """The B-CLIP training sketch augmentation, or None when ``augment`` is off."""
        if not self.augment:
            return None
        try:
            return SketchAugment(
                stroke_drop=self.stroke_drop,
                rotate_deg=self.rotate_deg,
                scale=self.scale_jitter,
                translate=self.translate,
            )
        except ValueError as err:
            raise ValueError(f"invalid BaselineConfig: {err}") from None

    def negative_kinds(self) -> tuple[str, ...]:
        """``negatives`` in :data:`~duet_lib.data.pairs.NEGATIVE_KINDS` order."""
        return tuple(k for k in NEGATIVE_KINDS if k in self.negatives)

    def inversion_steps(self) -> int:
        """Steps of inversion stage 1 (``map_steps``, or ``steps`` when None)."""
        return self.steps if self.map_steps is None else self.map_steps

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> BaselineConfig:
        """Inverse of :meth:`to_dict`; unknown names raise ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown BaselineConfig field(s) {unknown}; valid: {sorted(known)}"
            )
        return cls(**dict(values))

    def replace(self, **changes: Any) -> BaselineConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def identity(self, method: str) -> dict[str, Any]:
        """The fields that decide the numbers of ``method`` ("bclip", "inversion")."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {list(METHODS)}")
        values = self.to_dict()
        values["map_steps"] = self.inversion_steps()  # the steps the map really runs
        return {k: values[k] for k in (*_COMMON_FIELDS, *_METHOD_FIELDS[method])}


@dataclass
class BaselineResult:
    """What :func:`train_bclip` and :func:`train_inversion` return (chapter 10).

    Attributes:
        method: "bclip" or "inversion".
        bundle: B-CLIP: a tuned **copy** of the input bundle (its visual
            LayerNorms hold the selected state); inversion: the input bundle,
            unchanged.
        mapper: the inversion map phi in eval mode (None for B-CLIP).
        template: the inversion prompt, e.g. "a photo of $" (None for B-CLIP).
        config: the configuration.
        history: {"train": [{"step", "loss", "seconds"}, ...], "val": [{"step",
            **metrics}, ...], "select_metric": name}; validation at step 0 (the
            untrained state) and every ``eval_every`` steps.
        best_step: step of the kept state (0 = the untrained state was best).
        best_value: its validation value of ``select_metric``.
        select_metric: the full validation key, e.g. "bclip_fg_acc@1".
        best_metrics: all validation metrics of the kept state.
        trainable_names: names of the trained parameters (B-CLIP: exactly the
            visual LayerNorms, as in ``bundle.model.named_parameters()``;
            inversion: phi's, as in ``mapper.named_parameters()``).
        stopped: "steps", "patience" or "loaded" (a finished checkpoint of the
            same configuration was found in ``out_dir``).
        seconds: wall time of the call.
        config_hash: hash of everything that names the run.
        checkpoint: the written ``<out_dir>/<method>.pt``, or None.
    """

    method: str
    bundle: ClipBundle
    mapper: VisualToWord | None
    template: str | None
    config: BaselineConfig
    history: dict[str, Any]
    best_step: int
    best_value: float
    select_metric: str
    best_metrics: dict[str, float]
    trainable_names: list[str]
    stopped: str
    seconds: float
    config_hash: str
    checkpoint: Path | None = None

    @property
    def trained_now(self) -> bool:
        """False when the result was loaded from a finished checkpoint."""
        return self.stopped != "loaded"


# ------------------------------------------------------------------ retrieval task


def _task_for(
    bundle: ClipBundle,
    dataset: SketchPhotoSet,
    split: str,
    texts: Sequence[str] | str | None,
    cache: PhotoCache | None,
) -> RetrievalTask:
    return retrieval_task(
        dataset,
        split,
        texts,
        image_size=bundle.image_size,
        mean=bundle.image_mean,
        std=bundle.image_std,
        cache=cache,
    )


# ---------------------------------------------------------------------- embeddings


class _Views:
    """Image-encoder embeddings of one bundle on one task, each computed once."""

    def __init__(self, bundle: ClipBundle, task: RetrievalTask, batch_size: int):
        self.bundle = bundle
        self.task = task
        self.batch_size = batch_size
        self.device = bundle.device

    def _photos(self, ids: Sequence[str]) -> torch.Tensor:
        model, data = self.bundle.model, self.task.data
        parts = [
            model.encode_image(data.photo_tensor([ids[i] for i in r]).to(self.device))
            for r in _chunks(len(ids), self.batch_size)
        ]
        return F.normalize(torch.cat(parts).float(), dim=-1)

    @cached_property
    def sketches(self) -> torch.Tensor:
        """(Q, E) raw V(sketch) of the split's sketches."""
        model, data = self.bundle.model, self.task.data
        parts = [
            model.encode_image(data.sketch_tensor(list(r)).to(self.device))
            for r in _chunks(len(data.records), self.batch_size)
        ]
        return torch.cat(parts).float()

    @cached_property
    def gallery(self) -> torch.Tensor:
        """(N, E) L2-normalised V(photo) of the FG-SBIR gallery."""
        return self._photos(self.task.gallery)

    @cached_property
    def duet_gallery(self) -> torch.Tensor:
        """(N_d, E) L2-normalised V(photo) of the composed task's gallery."""
        if self.task.duet_gallery == self.task.gallery:
            return self.gallery
        return self._photos(self.task.duet_gallery)

    @cached_property
    def texts(self) -> torch.Tensor:
        """(Q_d, E) L2-normalised T(t) of the composed queries' texts."""
        texts = self.task.texts
        unique = list(dict.fromkeys(texts))
        emb = torch.cat(
            [
                encode_text(self.bundle, unique[r.start : r.stop]).float()
                for r in _chunks(len(unique), self.batch_size)
            ]
        )
        where = {t: i for i, t in enumerate(unique)}
        return F.normalize(emb[torch.tensor([where[t] for t in texts])], dim=-1)


def _fg_report(
    prefix: str, queries: torch.Tensor, views: _Views, ks: tuple[int, ...]
) -> dict[str, float | int]:
    task = views.task
    sim = queries @ views.gallery.T
    return _flat(
        prefix, retrieval_report(sim, task.target, ks, attributes=task.attributes)
    )


def _duet_report(
    prefix: str, queries: torch.Tensor, views: _Views, ks: tuple[int, ...]
) -> dict[str, float | int]:
    task = views.task
    sim = queries @ views.duet_gallery.T
    return _flat(
        prefix,
        retrieval_report(sim, task.duet_target, ks, attributes=task.duet_attributes),
    )


def _check_eval_args(batch_size: Any, ks: Any) -> tuple[int, ...]:
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return tuple(ks)


def _check_fusion_weight(value: Any) -> float:
    problem = _number("fusion_weight", value, 0.0)
    if problem:
        raise ValueError(problem)
    return float(value)


class _EvalMode:
    """Put modules in eval mode for a block and restore their modes after it."""

    def __init__(self, *modules: torch.nn.Module | None):
        self.modules = [m for m in modules if m is not None]
        self.modes: list[bool] = []

    def __enter__(self) -> None:
        self.modes = [m.training for m in self.modules]
        for m in self.modules:
            m.eval()

    def __exit__(self, *exc: Any) -> None:
        for m, mode in zip(self.modules, self.modes, strict=True):
            m.train(mode)


# --------------------------------------------------------------- method metrics


def _text_metrics(views: _Views, ks: tuple[int, ...]) -> dict[str, float | int]:
    return _duet_report("text", views.texts, views, ks)


def _bclip_metrics(
    views: _Views, ks: tuple[int, ...], fusion_weight: float
) -> dict[str, float | int]:
    s_unit = F.normalize(views.sketches, dim=-1)  # (Q, E)
    out = _fg_report("bclip_fg", s_unit, views, ks)
    if views.task.has_composed:
        s_only = s_unit[views.task.duet_index]  # (Q_d, E)
        out |= _duet_report("bclip", s_only, views, ks)
        fused = F.normalize(s_only + fusion_weight * views.texts, dim=-1)
        out |= _duet_report("bclip_fusion", fused, views, ks)
    return out


def _pseudo_queries(
    bundle: ClipBundle,
    words: torch.Tensor,
    templates: Sequence[str],
    batch_size: int,
) -> torch.Tensor:
    """T(template with the pseudo-word): words (Q, d), Q templates -> (Q, E) unit."""
    model, pid = bundle.model, placeholder_id(bundle)
    shared = len(set(templates)) == 1
    ids_all = tokenize_templates(bundle, [templates[0]] if shared else list(templates))
    parts = []
    for r in _chunks(len(words), batch_size):
        ids = ids_all.expand(len(r), -1) if shared else ids_all[r.start : r.stop]
        parts.append(
            encode_text_with_pseudo_tokens(
                model, ids, pseudo_rows(words[r.start : r.stop]), pid
            )
        )
    return F.normalize(torch.cat(parts).float(), dim=-1)


def _composed_template(template: str, text: str, index: int) -> str:
    if PLACEHOLDER in text:
        raise ValueError(
            f"text {index} ({text!r}) contains the placeholder symbol "
            f"{PLACEHOLDER!r}, which is reserved for the pseudo-word"
        )
    return f"{template} {text.strip()}"


def _inversion_metrics(
    views: _Views,
    mapper: VisualToWord,
    template: str,
    ks: tuple[int, ...],
) -> dict[str, float | int]:
    bundle, task = views.bundle, views.task
    words = mapper(F.normalize(views.sketches, dim=-1).to(_param_device(mapper)))
    words = words.to(views.device)  # (Q, d)
    bs = views.batch_size
    q_fg = _pseudo_queries(bundle, words, [template] * len(words), bs)
    out = _fg_report("inversion_fg", q_fg, views, ks)
    if task.has_composed:
        texts = [_composed_template(template, t, i) for i, t in enumerate(task.texts)]
        q = _pseudo_queries(bundle, words[task.duet_index.to(words.device)], texts, bs)
        out |= _duet_report("inversion", q, views, ks)
    return out


def _param_device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


# ------------------------------------------------------------------ evaluation API


def _check_bundle(bundle: Any, name: str = "bundle") -> ClipBundle:
    if not isinstance(bundle, ClipBundle):
        raise ValueError(f"{name} must be a ClipBundle, got {type(bundle).__name__}")
    return bundle


def _check_dataset(dataset: Any) -> SketchPhotoSet:
    if not isinstance(dataset, SketchPhotoSet):
        raise ValueError(
            f"dataset must be a SketchPhotoSet, got {type(dataset).__name__}"
        )
    return dataset


@torch.no_grad()
def evaluate_text_only(
    bundle: ClipBundle,
    dataset: SketchPhotoSet,
    split: str,
    texts: Sequence[str] | str | None = None,
    *,
    batch_size: int = 128,
    ks: Sequence[int] = (1, 5, 10),
    cache: PhotoCache | None = None,
) -> dict[str, float | int]:
    """Zero-shot text-only CLIP on the composed-query gallery: ``text_*`` (chapter 10).

    The query is the frozen text embedding of the user's words alone; no part
    of the backbone is trained. On the world the duet gallery holds every
    appearance variant of each shape, so the words can find the right variant
    only by luck about the shape.

    Args:
        bundle: the frozen CLIP (pass the untuned backbone).
        dataset: the data; only ``split`` is read.
        split: "train", "val" or "test".
        texts: see :func:`retrieval_task`.
        batch_size: images or texts per forward pass.
        ks: Acc@K cut-offs.
        cache: a PhotoCache to reuse.

    Returns:
        Flat dict ``text_<key>`` with the keys of ``retrieval_report``.

    Raises:
        ValueError: the split has no composed task (no world attributes and no
            ``texts``), or bad texts.
    """
    _check_bundle(bundle)
    _check_dataset(dataset)
    ks = _check_eval_args(batch_size, ks)
    task = _task_for(bundle, dataset, split, texts, cache)
    if not task.has_composed:
        raise ValueError(
            f"text-only retrieval needs query texts: dataset {dataset.name!r} has no "
            "appearance phrases, so pass texts=[one string per sketch]"
        )
    with _EvalMode(bundle.model):
        return _text_metrics(_Views(bundle, task, batch_size), ks)


@torch.no_grad()
def evaluate_bclip(
    bundle: ClipBundle,
    dataset: SketchPhotoSet,
    split: str,
    texts: Sequence[str] | str | None = None,
    *,
    fusion_weight: float = 1.0,
    batch_size: int = 128,
    ks: Sequence[int] = (1, 5, 10),
    cache: PhotoCache | None = None,
) -> dict[str, float | int]:
    """B-CLIP sketch-only and late-fusion metrics (chapter 10).

    - ``bclip_fg_*``: V(sketch) against the FG-SBIR gallery.
    - ``bclip_*``: V(sketch) against the composed-query gallery (needs a
      composed task; on the world it cannot tell variants of a shape apart).
    - ``bclip_fusion_*``: normalise(V(s)/|V(s)| + w T(t)/|T(t)|) on the
      composed-query gallery (TASK-former-style late fusion).

    Args:
        bundle: the CLIP whose image encoder embeds sketches and photos (the
            tuned bundle of :func:`train_bclip`, or any bundle for zero-shot).
        dataset: the data; only ``split`` is read.
        split: "train", "val" or "test".
        texts: see :func:`retrieval_task`.
        fusion_weight: w >= 0 of the text term; 0 gives the sketch-only query.
        batch_size: images or texts per forward pass.
        ks: Acc@K cut-offs.
        cache: a PhotoCache to reuse.

    Returns:
        Flat dict of metrics (``bclip_fg_*`` always; ``bclip_*`` and
        ``bclip_fusion_*`` when the split has a composed task).
    """
    _check_bundle(bundle)
    _check_dataset(dataset)
    ks = _check_eval_args(batch_size, ks)
    weight = _check_fusion_weight(fusion_weight)
    task = _task_for(bundle, dataset, split, texts, cache)
    with _EvalMode(bundle.model):
        return _bclip_metrics(_Views(bundle, task, batch_size), ks, weight)


@torch.no_grad()
def evaluate_inversion(
    bundle: ClipBundle,
    mapper: VisualToWord,
    dataset: SketchPhotoSet,
    split: str,
    texts: Sequence[str] | str | None = None,
    *,
    template: str = f"a photo of {PLACEHOLDER}",
    batch_size: int = 128,
    ks: Sequence[int] = (1, 5, 10),
    cache: PhotoCache | None = None,
) -> dict[str, float | int]:
    """Stage 2 of two-stage textual inversion, applied to sketches (chapter 10).

    The map phi trained on photos (:func:`train_inversion`) turns V(sketch) into
    a pseudo-word $; the frozen text encoder reads ``template`` with it, e.g.
    "a photo of $" (``inversion_fg_*``, FG-SBIR gallery), or the template
    followed by the user's words, e.g. "a photo of $ in plain red, on grass"
    (``inversion_*``, composed-query gallery; Pic2Word and SEARLE compose the
    same way).

    Args:
        bundle: the frozen CLIP phi was trained on.
        mapper: phi, a :class:`~duet_lib.models.converter.VisualToWord`.
        dataset: the data; only ``split`` is read.
        split: "train", "val" or "test".
        texts: see :func:`retrieval_task`.
        template: prompt with one placeholder ``$`` per pseudo-word of ``mapper``
            (one unless it was built with several tokens).
        batch_size: images or texts per forward pass.
        ks: Acc@K cut-offs.
        cache: a PhotoCache to reuse.

    Returns:
        Flat dict of metrics (``inversion_fg_*`` always; ``inversion_*`` with a
        composed task).
    """
    _check_bundle(bundle)
    _check_dataset(dataset)
    if not isinstance(mapper, VisualToWord):
        raise ValueError(f"mapper must be a VisualToWord, got {type(mapper).__name__}")
    if not isinstance(template, str) or template.count(PLACEHOLDER) != mapper.n_tokens:
        raise ValueError(
            f"template must hold one placeholder {PLACEHOLDER!r} per pseudo-word of "
            f"the map ({mapper.n_tokens}), got {template!r}"
        )
    ks = _check_eval_args(batch_size, ks)
    task = _task_for(bundle, dataset, split, texts, cache)
    with _EvalMode(bundle.model, mapper):
        return _inversion_metrics(
            _Views(bundle, task, batch_size), mapper, template, ks
        )


@torch.no_grad()
def evaluate_baselines(
    dataset: SketchPhotoSet,
    split: str,
    *,
    clip: ClipBundle | None = None,
    bclip: BaselineResult | ClipBundle | None = None,
    inversion: BaselineResult | None = None,
    texts: Sequence[str] | str | None = None,
    fusion_weight: float = 1.0,
    batch_size: int = 128,
    ks: Sequence[int] = (1, 5, 10),
    cache: PhotoCache | None = None,
) -> dict[str, float | int]:
    """Every baseline's metrics on one split, in evaluate_duet's key scheme (chapter 10).

    Prefixes (see the module docstring): ``text`` from ``clip``; ``bclip_fg``,
    ``bclip`` and ``bclip_fusion`` from ``bclip``; ``inversion_fg`` and
    ``inversion`` from ``inversion``. The composed prefixes (``text``,
    ``bclip``, ``bclip_fusion``, ``inversion``) appear when the split has a
    composed task, as in :func:`duet_lib.train.evaluate_duet`. Embeddings of a
    bundle used by several methods are computed once.

    Args:
        dataset: the data; only ``split`` is read.
        split: "train", "val" or "test".
        clip: the frozen, untuned CLIP for the zero-shot text-only query.
        bclip: :func:`train_bclip`'s result (or a bundle whose image encoder to
            use as is).
        inversion: :func:`train_inversion`'s result.
        texts: see :func:`retrieval_task`.
        fusion_weight: w of the B-CLIP late fusion.
        batch_size: images or texts per forward pass.
        ks: Acc@K cut-offs.
        cache: a PhotoCache to reuse (its image size must match the bundles').

    Returns:
        Flat dict of metrics.

    Raises:
        ValueError: no method given, a result of the wrong method, or bundles of
            different image sizes.
    """
    _check_dataset(dataset)
    ks = _check_eval_args(batch_size, ks)
    weight = _check_fusion_weight(fusion_weight)
    if clip is None and bclip is None and inversion is None:
        raise ValueError(
            "evaluate_baselines needs at least one of clip, bclip, inversion"
        )
    if clip is not None:
        _check_bundle(clip, "clip")
    bclip_bundle = None
    if isinstance(bclip, BaselineResult):
        if bclip.method != "bclip":
            raise ValueError(f"bclip must be a B-CLIP result, got {bclip.method!r}")
        bclip_bundle = bclip.bundle
    elif bclip is not None:
        bclip_bundle = _check_bundle(bclip, "bclip")
    if inversion is not None and (
        not isinstance(inversion, BaselineResult) or inversion.method != "inversion"
    ):
        raise ValueError("inversion must be the result of train_inversion")
    bundles = [
        b
        for b in (clip, bclip_bundle, None if inversion is None else inversion.bundle)
        if b is not None
    ]
    sizes = {b.image_size for b in bundles}
    if len(sizes) != 1:
        raise ValueError(f"the bundles have different image sizes {sorted(sizes)}")
    first = bundles[0]
    if cache is None:
        cache = PhotoCache(dataset, first.image_size, _TARGET_SIZE)
    task = _task_for(first, dataset, split, texts, cache)
    views: dict[int, _Views] = {}

    def view(bundle: ClipBundle) -> _Views:
        key = id(bundle.model)
        if key not in views:
            views[key] = _Views(bundle, task, batch_size)
        return views[key]

    out: dict[str, float | int] = {}
    modules = [b.model for b in bundles] + (
        [inversion.mapper] if inversion is not None else []
    )
    with _EvalMode(*modules):
        if clip is not None and task.has_composed:
            out |= _text_metrics(view(clip), ks)
        if bclip_bundle is not None:
            out |= _bclip_metrics(view(bclip_bundle), ks, weight)
        if inversion is not None:
            out |= _inversion_metrics(
                view(inversion.bundle), inversion.mapper, inversion.template, ks
            )
    return out


# --------------------------------------------------------------- checkpoints, runs


def _run_identity(
    method: str, cfg: BaselineConfig, bundle: ClipBundle, dataset: SketchPhotoSet
) -> dict[str, Any]:
    if method == "bclip":
        counts = {
            split: [len(dataset.sketches_in(split)), len(dataset.photo_ids(split))]
            for split in ("train", "val")
        }
    else:  # the inversion never reads sketches, not even to count them
        counts = {
            split: len(_split_photos(dataset, split)) for split in ("train", "val")
        }
    return {
        "format": CHECKPOINT_FORMAT,
        "method": method,
        "config": cfg.identity(method),
        "model_name": bundle.model_name,
        "pretrained": None if bundle.pretrained is None else str(bundle.pretrained),
        "bundle": bundle_fingerprint(bundle),
        "dataset": dataset.name,
        "counts": counts,
    }


def _existing(path: Path, run_hash: str, method: str) -> dict | None:
    """The finished checkpoint at ``path`` if it is this run's; error if foreign."""
    if not path.exists():
        return None
    ckpt = load_checkpoint(path)
    if ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("method") != method:
        raise ValueError(f"{path} is not a {method} baseline checkpoint")
    if ckpt.get("config_hash") != run_hash:
        raise ValueError(
            f"{path} holds a {method} run of another configuration, model or dataset "
            f"(hash {ckpt.get('config_hash')!r}, this run {run_hash!r}); use another "
            "out_dir or delete the file"
        )
    return ckpt


def _save_run(
    out_dir: Path,
    method: str,
    cfg: BaselineConfig,
    bundle: ClipBundle,
    run_hash: str,
    state: dict[str, torch.Tensor],
    history: dict[str, Any],
    best: tuple[int, float, dict],
) -> Path:
    path = out_dir / f"{method}.pt"
    save_checkpoint(
        {
            "format": CHECKPOINT_FORMAT,
            "method": method,
            "config": cfg.to_dict(),
            "config_hash": run_hash,
            "model_name": bundle.model_name,
            "bundle": bundle_fingerprint(bundle),
            "trainable": state,
            "best_step": best[0],
            "best_value": best[1],
            "best_metrics": dict(best[2]),
            "history_json": json.dumps(history),
        },
        path,
    )
    _write_json(out_dir / f"{method}_history.json", history)
    return path


def _copy_bundle(bundle: ClipBundle) -> ClipBundle:
    """A bundle with its own deep copy of the model (tokenizer shared)."""
    return dataclasses.replace(
        bundle, model=copy.deepcopy(bundle.model), meta=copy.deepcopy(bundle.meta)
    )


def _layernorm_state(bundle: ClipBundle, names: Sequence[str]) -> dict:
    params = dict(bundle.model.named_parameters())
    return {n: params[n].detach().cpu().clone() for n in names}


def _load_state(module: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    params = dict(module.named_parameters())
    missing = sorted(set(state) - set(params))
    if missing:
        raise ValueError(f"stored parameters {missing[:5]} do not exist in this model")
    with torch.no_grad():
        for name, value in state.items():
            if tuple(value.shape) != tuple(params[name].shape):
                raise ValueError(
                    f"{name}: stored shape {tuple(value.shape)} differs from "
                    f"{tuple(params[name].shape)}"
                )
            params[name].copy_(value.to(params[name].device))


def _token_norm(bundle: ClipBundle) -> float:
    """Mean norm of the rows of the token table (the scale of a real word)."""
    return float(bundle.model.token_embedding.weight.detach().norm(dim=1).mean())


def _build_mapper(bundle: ClipBundle, cfg: BaselineConfig) -> VisualToWord:
    return VisualToWord(
        int(bundle.embed_dim),
        int(bundle.token_dim),
        hidden=cfg.map_hidden,
        dropout=cfg.map_dropout,
        token_norm=cfg.word_scale * _token_norm(bundle),
        n_tokens=cfg.word_tokens,
        seed=cfg.seed,
    ).to(bundle.device)


def _phrase_template(cfg: BaselineConfig) -> str:
    """``cfg.template`` with its placeholder repeated once per pseudo-word."""
    return cfg.template.replace(PLACEHOLDER, placeholders(cfg.word_tokens))


def _result_from_checkpoint(
    ckpt: dict,
    bundle: ClipBundle,
    path: Path,
    t_start: float,
) -> BaselineResult:
    cfg = BaselineConfig.from_dict(ckpt["config"])
    method = ckpt["method"]
    if ckpt.get("bundle") != bundle_fingerprint(bundle):
        raise ValueError(
            f"{path} was trained on another backbone (fingerprint "
            f"{ckpt.get('bundle')!r}, this one {bundle_fingerprint(bundle)!r})"
        )
    history = json.loads(ckpt["history_json"])
    if method == "bclip":
        tuned = _copy_bundle(bundle)
        names = freeze_for_duet(tuned.model, 0)
        if sorted(ckpt["trainable"]) != names:
            raise ValueError(f"{path}: stored parameters are not V's LayerNorms")
        _load_state(tuned.model, ckpt["trainable"])
        tuned.model.eval()
        out_bundle, mapper, template = tuned, None, None
    else:
        mapper = _build_mapper(bundle, cfg)
        names = sorted(n for n, _ in mapper.named_parameters())
        if sorted(ckpt["trainable"]) != names:
            raise ValueError(f"{path}: stored parameters do not fit the map phi")
        _load_state(mapper, ckpt["trainable"])
        mapper.eval()
        out_bundle, template = bundle, _phrase_template(cfg)
    return BaselineResult(
        method=method,
        bundle=out_bundle,
        mapper=mapper,
        template=template,
        config=cfg,
        history=history,
        best_step=int(ckpt["best_step"]),
        best_value=float(ckpt["best_value"]),
        select_metric=str(history.get("select_metric")),
        best_metrics=dict(ckpt["best_metrics"]),
        trainable_names=names,
        stopped="loaded",
        seconds=time.perf_counter() - t_start,
        config_hash=str(ckpt["config_hash"]),
        checkpoint=path,
    )


def load_baseline(bundle: ClipBundle, checkpoint: str | os.PathLike) -> BaselineResult:
    """Rebuild a trained baseline from ``<out_dir>/bclip.pt`` or ``inversion.pt``.

    Args:
        bundle: a fresh bundle of the backbone the baseline was trained on (it is
            copied for B-CLIP, used as is for the inversion).
        checkpoint: the checkpoint file.

    Returns:
        A :class:`BaselineResult` with ``stopped="loaded"``.

    Raises:
        ValueError: not a baseline checkpoint, or another backbone.
        duet_lib.checkpoint.CheckpointError: a missing or corrupt file.
    """
    _check_bundle(bundle)
    t_start = time.perf_counter()
    path = Path(checkpoint)
    ckpt = load_checkpoint(path)
    if ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("method") not in METHODS:
        raise ValueError(f"{path} is not a baseline checkpoint")
    return _result_from_checkpoint(ckpt, bundle, path, t_start)


# ----------------------------------------------------------------------- B-CLIP


def bclip_triplet_loss(
    bundle: ClipBundle,
    batch: Mapping[str, torch.Tensor],
    cfg: BaselineConfig,
) -> torch.Tensor:
    """The B-CLIP triplet loss of one batch (chapter 10).

    Anchor V(sketch), positive V(paired photo), negatives V(p-) from the batch's
    hard negatives and/or the closest photo of another shape in the batch
    (``cfg.mining``); cosine distance, margin ``cfg.margin``
    (:func:`duet_lib.losses.triplet_loss`). One image-encoder pass over
    [sketches ; photos ; negatives].

    Args:
        bundle: the CLIP whose image encoder is being tuned.
        batch: a collated :class:`SketchPhotoPairs` batch with ``sketch`` (B, 3,
            S, S), ``photo`` (B, 3, S, S), ``negatives`` (B, M, 3, S, S) and
            ``shape_index`` (B,).
        cfg: the configuration (margin, mining, negative reduction).

    Returns:
        Scalar loss.
    """
    device = bundle.device
    sketch = batch["sketch"].to(device)
    photo = batch["photo"].to(device)
    negatives = batch.get("negatives")
    b = sketch.shape[0]
    m = 0 if negatives is None or negatives.ndim != 5 else int(negatives.shape[1])
    parts = [sketch, photo] + ([negatives.to(device).flatten(0, 1)] if m else [])
    emb = bundle.model.encode_image(torch.cat(parts)).float()  # (B (2 + M), E)
    neg = emb[2 * b :].view(b, m, -1) if m else None
    return triplet_loss(
        emb[:b],
        emb[b : 2 * b],
        neg,
        cfg.margin,
        mining=cfg.mining,
        negative_reduction=cfg.negative_reduction,
        form="hinge",
        # a sketch says nothing about appearance: photos of its own shape are
        # never its negatives
        labels=batch["shape_index"].to(device),
    )


def _check_training_inputs(bundle: Any, dataset: Any, cfg: Any) -> None:
    _check_bundle(bundle)
    _check_dataset(dataset)
    if not isinstance(cfg, BaselineConfig):
        raise ValueError(f"cfg must be a BaselineConfig, got {type(cfg).__name__}")


def _apply_step(optimizer, loss, step, t0, history, bar) -> None:
    """Backward and update for ``loss``, then log the step (both baselines)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    value = float(loss.detach())
    history["train"].append(
        {"step": step, "loss": value, "seconds": time.perf_counter() - t0}
    )
    bar.update(1)
    bar.set_postfix(loss=f"{value:.4f}")


def train_bclip(
    bundle: ClipBundle,
    dataset: SketchPhotoSet,
    cfg: BaselineConfig,
    out_dir: str | os.PathLike | None = None,
) -> BaselineResult:
    """B-CLIP: tune the image encoder's LayerNorms with a triplet loss (chapter 10).

    The sketch-only baseline of the paper's figures, built as Sain et al. tune
    CLIP for FG-SBIR: every CLIP parameter is frozen except the LayerNorm
    weights and biases of the image encoder V
    (:func:`~duet_lib.models.clip.freeze_for_duet`), which learn from
    :func:`bclip_triplet_loss` on augmented training sketches. Validation
    ``bclip_fg_<select_metric>`` on the "val" split, at step 0 and every
    ``eval_every`` steps, selects the kept state; the test split is never read.

    The input bundle is **not** modified: training works on a deep copy, returned
    as ``result.bundle``. With ``out_dir``, the selected LayerNorm state and the
    history are written to ``<out_dir>/bclip.pt`` and ``bclip_history.json``; a
    later call with the same configuration, backbone and data loads that file
    instead of training again.

    Args:
        bundle: the backbone to start from.
        dataset: data with "train" and "val" sketches.
        cfg: the configuration.
        out_dir: optional run folder.

    Returns:
        A :class:`BaselineResult` with ``method="bclip"``.

    Raises:
        ValueError: bad arguments, a dataset without train or val sketches, a
            train split smaller than the batch, or an ``out_dir`` holding a
            B-CLIP run of another configuration.
    """
    _check_training_inputs(bundle, dataset, cfg)
    for split in ("train", "val"):
        if not dataset.sketches_in(split):
            raise ValueError(
                f"dataset {dataset.name!r} has no {split} sketches; B-CLIP needs "
                "train and val splits (load it with val_fraction > 0)"
            )
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    identity = _run_identity("bclip", cfg, bundle, dataset)
    run_hash = config_hash(identity)
    folder = None if out_dir is None else Path(out_dir)
    if folder is not None:
        ckpt = _existing(folder / "bclip.pt", run_hash, "bclip")
        if ckpt is not None:
            result = _result_from_checkpoint(ckpt, bundle, folder / "bclip.pt", t_start)
            result.bundle.model.to(device)
            return result

    tuned = _copy_bundle(bundle)
    tuned.model.to(device)
    names = freeze_for_duet(tuned.model, 0)  # LayerNorms of V only
    params = [p for p in tuned.model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    cache = PhotoCache(dataset, tuned.image_size, _TARGET_SIZE)
    train_data = SketchPhotoPairs(
        dataset,
        "train",
        tuned.image_size,
        tuned.image_mean,
        tuned.image_std,
        target_size=cache.target_size,
        negatives=cfg.negative_kinds(),
        augment=cfg.sketch_augment(),
        seed=cfg.seed,
        line_width=cfg.line_width,
        cache=cache,
    )
    n_train = len(train_data)
    per_epoch = n_train // cfg.batch_size
    if per_epoch < 1:
        raise ValueError(
            f"the train split has {n_train} sketches, fewer than the batch "
            f"({cfg.batch_size}); lower batch_size"
        )
    select = f"bclip_fg_{cfg.select_metric}"
    history: dict[str, Any] = {"train": [], "val": [], "select_metric": select}

    def validate() -> dict[str, float | int]:
        return evaluate_bclip(
            tuned, dataset, "val", batch_size=cfg.eval_batch_size, cache=cache
        )

    def loop() -> tuple[str, tuple[int, float, dict], dict]:
        metrics = validate()
        history["val"].append({"step": 0, **metrics})
        best = (0, float(metrics[select]), metrics)
        best_state = _layernorm_state(tuned, names)
        stale, step, stop = 0, 0, "steps"
        bar = tqdm(total=cfg.steps, disable=cfg.quiet, desc="B-CLIP", unit="step")
        try:
            while step < cfg.steps:
                epoch, pos = divmod(step, per_epoch)
                train_data.set_epoch(epoch)
                order = np.random.default_rng([cfg.seed, epoch, 11]).permutation(
                    n_train
                )
                chunk = order[pos * cfg.batch_size : (pos + 1) * cfg.batch_size]
                batch = default_collate([train_data[int(i)] for i in chunk])
                t0 = time.perf_counter()
                step += 1
                torch.manual_seed(_step_seed(cfg.seed, step))
                tuned.model.train()
                loss = bclip_triplet_loss(tuned, batch, cfg)
                _apply_step(optimizer, loss, step, t0, history, bar)
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    metrics = validate()
                    history["val"].append({"step": step, **metrics})
                    if float(metrics[select]) > best[1]:
                        best = (step, float(metrics[select]), metrics)
                        best_state = _layernorm_state(tuned, names)
                        stale = 0
                    else:
                        stale += 1
                    if cfg.patience is not None and stale >= cfg.patience:
                        stop = "patience"
                        break
        finally:
            bar.close()
        return stop, best, best_state

    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        stop, best, best_state = loop()
    _load_state(tuned.model, best_state)
    tuned.model.eval()
    path = None
    if folder is not None:
        path = _save_run(
            folder, "bclip", cfg, bundle, run_hash, best_state, history, best
        )
    return BaselineResult(
        method="bclip",
        bundle=tuned,
        mapper=None,
        template=None,
        config=cfg,
        history=history,
        best_step=best[0],
        best_value=best[1],
        select_metric=select,
        best_metrics=dict(best[2]),
        trainable_names=names,
        stopped=stop,
        seconds=time.perf_counter() - t_start,
        config_hash=run_hash,
        checkpoint=path,
    )


# -------------------------------------------------------------- textual inversion


def _split_photos(dataset: SketchPhotoSet, split: str) -> list[str]:
    """Every photo of a split (gallery-only variants too), from ``photo_split`` only."""
    return [
        p for p, s in dataset.photo_split.items() if s == split and p in dataset.photos
    ]


@torch.no_grad()
def _photo_embeddings(
    bundle: ClipBundle, cache: PhotoCache, ids: Sequence[str], batch_size: int
) -> torch.Tensor:
    """(N, E) L2-normalised V(photo) of the given photos (frozen, no augmentation)."""
    parts = []
    for r in _chunks(len(ids), batch_size):
        arr = np.stack([cache.model_image(ids[i]) for i in r])
        x = normalize_images(arr, bundle.image_mean, bundle.image_std)
        parts.append(bundle.model.encode_image(x.to(bundle.device)).float())
    return F.normalize(torch.cat(parts), dim=-1)


def inversion_loss(
    bundle: ClipBundle,
    mapper: VisualToWord,
    photo_emb: torch.Tensor,
    template_ids: torch.Tensor,
    tau: float,
) -> torch.Tensor:
    """Pic2Word's stage-1 objective for one batch of photos (chapter 10).

    The pseudo-word phi(V(p)) is written into the template ("a photo of $"), the
    frozen text encoder embeds it, and a symmetric InfoNCE with temperature tau
    asks each text to pick its own photo among the batch and each photo its own
    text. Gradients reach only phi (the caller freezes the text encoder, whose
    graph still carries them).

    Args:
        bundle: the frozen CLIP.
        mapper: phi.
        photo_emb: (B, E) L2-normalised photo embeddings V(p).
        template_ids: (1, L) ids of the template, one placeholder.
        tau: temperature.

    Returns:
        Scalar loss.
    """
    b = photo_emb.shape[0]
    if b < 2:
        raise ValueError("the inversion's InfoNCE needs a batch of at least 2 photos")
    words = mapper(photo_emb)  # (B, d)
    text = encode_text_with_pseudo_tokens(
        bundle.model,
        template_ids.expand(b, -1),
        pseudo_rows(words),
        placeholder_id(bundle),
        normalize=True,
    )  # (B, E)
    targets = torch.eye(b, device=photo_emb.device)
    scale = torch.tensor(1.0 / tau, device=photo_emb.device)
    return clip_loss(photo_emb, text.float(), scale, targets)


def _roundtrip_metrics(
    bundle: ClipBundle,
    mapper: VisualToWord,
    photo_emb: torch.Tensor,
    template: str,
    batch_size: int,
) -> dict[str, float | int]:
    """Validation of the map without sketches: T("a photo of phi(V(p))") -> p."""
    with torch.no_grad(), _EvalMode(mapper):
        words = mapper(photo_emb)
        q = _pseudo_queries(bundle, words, [template] * len(words), batch_size)
    target = torch.arange(len(photo_emb))
    return _flat("inversion_photo", retrieval_report(q @ photo_emb.T, target, (1, 5)))


def train_inversion(
    bundle: ClipBundle,
    dataset: SketchPhotoSet,
    cfg: BaselineConfig,
    out_dir: str | os.PathLike | None = None,
) -> BaselineResult:
    """Stage 1 of two-stage textual inversion: a photo-to-word map phi (chapter 10).

    Pic2Word (Saito et al., CVPR 2023) and SEARLE (Baldrati et al., ICCV 2023)
    learn, from unlabelled images alone, a map phi from CLIP's image embedding to
    one pseudo-word token such that the frozen text encoder's embedding of
    "a photo of $" with $ = phi(V(p)) matches V(p). We train phi
    (:class:`~duet_lib.models.converter.VisualToWord`, SEARLE's shape) with
    Pic2Word's symmetric InfoNCE (:func:`inversion_loss`) on the **photos** of the
    train split (every appearance variant); V and the text encoder stay frozen,
    so photo embeddings are computed once. **No sketch is read**: neither the
    sketch records nor their count. Model selection uses the validation photos:
    the state whose pseudo-word queries best retrieve their own photo
    (``inversion_photo_<select_metric>``, at step 0 and every ``eval_every``
    steps) is kept. Stage 2 is :func:`evaluate_inversion`.

    The bundle's weights are not changed (its ``requires_grad`` flags and
    train/eval mode are restored on return); it is moved to ``cfg.device``.

    Args:
        bundle: the frozen backbone (the untuned one).
        dataset: data whose ``photo_split`` has "train" and "val" photos.
        cfg: the configuration (``map_steps``, ``batch_size``, ``lr_map``,
            ``map_weight_decay``, ``tau``, ``map_hidden``, ``map_dropout``,
            ``template``, ``seed``, ``eval_every``, ``patience``).
        out_dir: optional run folder for ``inversion.pt`` and
            ``inversion_history.json``; a finished run of the same configuration
            is loaded instead of trained again.

    Returns:
        A :class:`BaselineResult` with ``method="inversion"`` and the map in
        ``mapper``.

    Raises:
        ValueError: bad arguments, no train or val photos, fewer train photos
            than the batch, or an ``out_dir`` holding another inversion run.
    """
    _check_training_inputs(bundle, dataset, cfg)
    train_ids = _split_photos(dataset, "train")
    val_ids = _split_photos(dataset, "val")
    for split, ids in (("train", train_ids), ("val", val_ids)):
        if not ids:
            raise ValueError(
                f"dataset {dataset.name!r} has no {split} photos; the inversion map "
                "needs train and val photos"
            )
    if len(train_ids) < cfg.batch_size:
        raise ValueError(
            f"the train split has {len(train_ids)} photos, fewer than the batch "
            f"({cfg.batch_size}); lower batch_size"
        )
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    identity = _run_identity("inversion", cfg, bundle, dataset)
    run_hash = config_hash(identity)
    folder = None if out_dir is None else Path(out_dir)
    model = bundle.model
    model.to(device)
    if folder is not None:
        ckpt = _existing(folder / "inversion.pt", run_hash, "inversion")
        if ckpt is not None:
            return _result_from_checkpoint(
                ckpt, bundle, folder / "inversion.pt", t_start
            )

    steps = cfg.inversion_steps()
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    was_training = model.training
    select = f"inversion_photo_{cfg.select_metric}"
    history: dict[str, Any] = {"train": [], "val": [], "select_metric": select}
    try:
        model.requires_grad_(False)
        model.eval()
        cache = PhotoCache(dataset, bundle.image_size, _TARGET_SIZE)
        train_emb = _photo_embeddings(bundle, cache, train_ids, cfg.eval_batch_size)
        val_emb = _photo_embeddings(bundle, cache, val_ids, cfg.eval_batch_size)
        mapper = _build_mapper(bundle, cfg)
        names = sorted(n for n, _ in mapper.named_parameters())
        optimizer = torch.optim.AdamW(
            mapper.parameters(), lr=cfg.lr_map, weight_decay=cfg.map_weight_decay
        )
        template = _phrase_template(cfg)
        ids = tokenize_templates(bundle, [template])  # (1, L)
        n_train = len(train_ids)
        per_epoch = n_train // cfg.batch_size

        def validate() -> dict[str, float | int]:
            return _roundtrip_metrics(
                bundle, mapper, val_emb, template, cfg.eval_batch_size
            )

        def state() -> dict[str, torch.Tensor]:
            return {n: p.detach().cpu().clone() for n, p in mapper.named_parameters()}

        metrics = validate()
        history["val"].append({"step": 0, **metrics})
        best = (0, float(metrics[select]), metrics)
        best_state = state()
        stale, step, stop = 0, 0, "steps"
        cuda = [device.index or 0] if device.type == "cuda" else []
        bar = tqdm(total=steps, disable=cfg.quiet, desc="inversion", unit="step")
        with torch.random.fork_rng(devices=cuda):
            try:
                while step < steps:
                    epoch, pos = divmod(step, per_epoch)
                    order = np.random.default_rng([cfg.seed, epoch, 13]).permutation(
                        n_train
                    )
                    chunk = order[pos * cfg.batch_size : (pos + 1) * cfg.batch_size]
                    t0 = time.perf_counter()
                    step += 1
                    torch.manual_seed(_step_seed(cfg.seed, step))  # phi's dropout
                    mapper.train()
                    index = torch.as_tensor(chunk, device=train_emb.device)
                    loss = inversion_loss(
                        bundle, mapper, train_emb[index], ids, cfg.tau
                    )
                    _apply_step(optimizer, loss, step, t0, history, bar)
                    if step % cfg.eval_every == 0 or step == steps:
                        metrics = validate()
                        history["val"].append({"step": step, **metrics})
                        if float(metrics[select]) > best[1]:
                            best = (step, float(metrics[select]), metrics)
                            best_state = state()
                            stale = 0
                        else:
                            stale += 1
                        if cfg.patience is not None and stale >= cfg.patience:
                            stop = "patience"
                            break
            finally:
                bar.close()
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
        model.train(was_training)
    _load_state(mapper, best_state)
    mapper.eval()
    path = None
    if folder is not None:
        path = _save_run(
            folder, "inversion", cfg, bundle, run_hash, best_state, history, best
        )
    return BaselineResult(
        method="inversion",
        bundle=bundle,
        mapper=mapper,
        template=template,
        config=cfg,
        history=history,
        best_step=best[0],
        best_value=best[1],
        select_metric=select,
        best_metrics=dict(best[2]),
        trainable_names=names,
        stopped=stop,
        seconds=time.perf_counter() - t_start,
        config_hash=run_hash,
        checkpoint=path,
    )
