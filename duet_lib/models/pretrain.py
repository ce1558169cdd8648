"""Pretraining the embedded default's tiny CLIP on the procedural world (chapter 02).

Web CLIP has seen hundreds of millions of captioned photos; ours sees the world's
photos and captions only (never its free-hand sketches). Two additions make its photo
features carry *shape*, which plain caption contrast on this world does not teach:

1. **Shape words in captions**, binned coarsely ("a tall shaft", "a curved back"),
   so shape is part of what the text side asks for.
2. **An image–image term** (SLIP-style; Mu et al., ECCV 2022): two renderings of the
   same geometry in different appearance and pose are positives for each other.
   Clean line drawings of the geometry, captioned "a line drawing of …", join the
   corpus as web CLIP's drawings would.

A second phase makes its *text* tower able to say what the image tower sees:

3. **A pseudo-word inversion term** (our choice; cf. Pic2Word, Saito et al., CVPR
   2023, and SEARLE, Baldrati et al., ICCV 2023, who learn such a map on a frozen
   web CLIP): a small visual-to-word map writes a photo's (detached) embedding as a
   phrase of pseudo-words after "a photo of", and the text tower must send that
   phrase back to the photo (InfoNCE over the batch). In a share of the rows the
   pseudo-words come from the other rendering of the geometry (another appearance,
   or the line drawing) and the photo's appearance phrase follows them, so the
   tower also learns to read pseudo-words before real words. Web text is varied
   enough that CLIP's text encoder can do this out of the box; the captions of a
   small world are not, and without this phase the frozen text tower carries little
   of the fine shape a sketch's pseudo-words bring (chapters 02 and 09). With
   ``inversion_text_only`` the phase leaves the image tower as the first phase left
   it and runs the text tower alone (about twice as fast; chapter 02 measures what
   it costs).

The first phase minimises ``L = L_clip + w_ii * L_ii`` (plus, optionally and off in
the book's default, ``w_shape * L_shape``, a regression of the world's shape
parameters; chapter 02's short-budget comparison), where ``L_clip`` is CLIP's
symmetric InfoNCE with soft targets for identical captions in a batch and ``L_ii`` a
symmetric InfoNCE between the two renderings; the second adds ``w_inv * L_inv`` at a
constant learning rate (its map is discarded afterwards: the duet trains its own
C_v2w). The first phase is cached under its own key, so it is shared with every
configuration that differs only in the second. The data of step ``k`` depends only on
``(seed, k)``, so an interrupted run resumes from its last checkpoint and reaches the
same weights as an uninterrupted one. Checkpoints live in a cache folder keyed by a
hash of the configuration.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Collection
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from duet_lib.checkpoint import config_hash, load_checkpoint, save_checkpoint
from duet_lib.models.clip import (
    ClipBundle,
    HogStem,
    fast_attention,
    load_clip,
    save_clip,
    set_embedding_blocks,
)
from duet_lib.models.converter import VisualToWord
from duet_lib.models.text_encoding import (
    encode_text_with_pseudo_tokens,
    encode_token_ids,
    placeholder_id,
    placeholders,
)
from duet_lib.paths import cache_dir

FORMAT_VERSION = 1


#: Valid values of :attr:`PretrainConfig.caption_targets`.
CAPTION_TARGETS = ("identical", "described")

#: Valid values of :attr:`PretrainConfig.optimizer`.
OPTIMIZERS = ("adamw", "muon")


#: The HOG-stem backbones' recipe (see :data:`MODEL_PRESETS`).
_HOG_RECIPE: dict[str, Any] = {
    "optimizer": "muon",
    "image_image_weight": 1.5,
    "lr": 1.2e-2,
    "steps": 720,
    "inversion_steps": 900,
    "text_buckets": 3,
    "math_attention": True,
}

#: Per-model presets: selecting the model name reproduces the recipe its weights
#: were measured with. The fast backbone (32-stride stem) keeps the default recipe
#: with two speed settings (benchmarks/bench_pretrain.py) and no inversion term.
#: The HOG-stem backbone trains a short first phase (chapter 02, "Half an hour"):
#: Muon, the image–image term at 1.5, a peak learning rate of 1.2e-2 and 720 steps,
#: with the same speed settings, then a second phase of 900 steps instead of the
#: teach profile's 300, through the whole model (a text-only second phase, tried,
#: cost the sketch-only query on a second seed); chosen on the validation shapes and
#: chapter 09's validation split. The same histograms on a 3 x 3 grid
#: (``duet-tiny-hog32-96``) take the HOG recipe with the image–image term at 1
#: (chosen on the validation shapes: 1.5 cost colour). The smoke profile's sizes
#: (and its lack of a second phase) win over a preset's steps.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "duet-tiny-conv32-96": {
        "text_buckets": 3,
        "math_attention": True,
        "inversion_steps": 0,
    },
    "duet-tiny-hog-96": _HOG_RECIPE,
    "duet-tiny-hog32-96": {**_HOG_RECIPE, "image_image_weight": 1.0},
}


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that decides the pretrained weights (its hash keys the cache).

    Attributes:
        model_name: tiny architecture registered by the wrapper.
        seed: seed of initialisation and batch sampling.
        world_seed: seed of the corpus geometries and renderings.
        corpus_size: number of geometries pre-rendered for the corpus.
        difficulty: the world's shape-spread knob used for the corpus.
        steps: optimisation steps.
        batch_size: geometries per step (each gives two image–caption pairs).
        lr: peak AdamW learning rate (linear warm-up, cosine decay).
        warmup_steps: warm-up length.
        weight_decay: AdamW weight decay (not applied to gains, biases, embeddings).
        image_image_weight: w_ii, weight of the image–image term.
        image_image_dims: the image–image term sees only the first this many
            dimensions of the joint embedding (0: all of them). A shape subspace
            lets the remaining dimensions keep appearance for the captions.
        image_image_tau: temperature of the image–image InfoNCE.
        shape_share: with ``image_image_dims`` > 0, the image embedding becomes
            block-normalised (:func:`duet_lib.models.clip.block_normalize`): the
            image–image block holds this share of its squared norm, the rest the
            remainder, in training and in every later use of the model
            (0: a plain embedding).
        line_drawing_fraction: share of batch slots showing a line drawing.
        partial_captions: share of photo captions replaced by a short caption
            naming only some attributes ("a red chair", "a shoe on grass").
        caption_targets: positives of the caption loss. "identical": an image's
            positives are the captions identical to its own; "described": every
            caption in the batch that is true of the image (its description, as
            read by :func:`duet_lib.data.world_text.caption_description`, is a
            subset of the image's), so a short caption counts every photo it
            describes as a positive.
        shape_neighbours: batches are built from groups of this many geometries
            that lie close in shape-parameter space (1: uniform batches). Near
            shapes are the hard negatives of the image–image term.
        checkpoint_every: steps between resumable checkpoints.
        text_buckets: captions of a step run through the text tower in this many
            length groups, each trimmed to its longest caption (captions average
            about 21 of up to 32 tokens). A speed setting, but it changes float
            rounding and so the exact weights; 1 (one pass) reproduces the book's
            default backbone, trained before the setting existed.
        math_attention: on CPU use PyTorch's plain attention kernel, quicker than
            its flash kernel at these short sequences (:func:`fast_attention`); same
            caveat as ``text_buckets``.
        shape_weight: w_shape, weight of a shape-parameter term in the first phase
            (0: off, the book's default): a linear head, discarded afterwards, reads
            each geometry's shape parameters (:func:`shape_targets`) from the image
            embedding (masked mean squared error). Privileged information that only
            a procedural world has; our choice, for chapter 02's comparison of what
            a few minutes of pretraining buy.
        optimizer: the first phase's optimiser. ``"adamw"`` (the book's default):
            AdamW for every parameter. ``"muon"`` (our choice for chapter 02's
            short-budget comparison; Jordan et al., 2024): Muon, momentum whose
            update is orthogonalised by a few Newton-Schulz iterations, for the
            weight matrices of both transformers' residual blocks, at a rate
            matched to AdamW's update size (PyTorch's ``match_rms_adamw``), so the
            same ``lr`` and schedule serve both; AdamW for everything else (stem,
            embeddings, projections, gains and biases). The second phase keeps AdamW.
        inversion_steps, inversion_lr, inversion_map_lr, inversion_weight,
            inversion_tokens, inversion_scale, inversion_tau, inversion_mix: the
            second phase (module docstring, item 3): its steps (0: none), the
            learning rates of the model and of the map, the term's weight, the
            number of pseudo-words and their norm (in mean real-word norms), the
            temperature, and the share of composed rows.
        inversion_text_only: the second phase trains the text side only (our
            choice, off in every preset): the image tower stays as the first phase
            left it, its embeddings of the corpus are computed once when the phase
            begins, and each step runs the text tower alone (the caption loss and
            the inversion term; the image–image term has nothing left to move). The
            image tower's passes are most of a step's cost; what the image tower
            would have learned in the phase is the price (chapter 02).
    """

    model_name: str = "duet-tiny-conv-96"
    seed: int = 0
    world_seed: int = 1234
    corpus_size: int = 6000
    difficulty: float = 0.0
    steps: int = 2100
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 60
    weight_decay: float = 0.1
    image_image_weight: float = 1.0
    image_image_dims: int = 0
    image_image_tau: float = 0.1
    shape_share: float = 0.0
    line_drawing_fraction: float = 0.3
    partial_captions: float = 0.0
    caption_targets: str = "identical"
    shape_neighbours: int = 1
    checkpoint_every: int = 100
    text_buckets: int = 1
    math_attention: bool = False
    shape_weight: float = 0.0
    optimizer: str = "adamw"
    inversion_steps: int = 0
    inversion_lr: float = 3e-4
    inversion_map_lr: float = 1e-3
    inversion_weight: float = 1.0
    inversion_tokens: int = 8
    inversion_scale: float = 3.0
    inversion_tau: float = 0.07
    inversion_mix: float = 0.5
    inversion_text_only: bool = False
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        problems = []
        for name in (
            "corpus_size",
            "steps",
            "batch_size",
            "checkpoint_every",
            "shape_neighbours",
            "text_buckets",
            "inversion_tokens",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.caption_targets not in CAPTION_TARGETS:
            problems.append(
                f"caption_targets must be one of {', '.join(CAPTION_TARGETS)}, "
                f"got {self.caption_targets!r}"
            )
        if self.optimizer not in OPTIMIZERS:
            problems.append(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, "
                f"got {self.optimizer!r}"
            )
        if not 0 <= self.partial_captions <= 1:
            problems.append("partial_captions must lie in [0, 1]")
        if not 0 <= self.line_drawing_fraction <= 1:
            problems.append("line_drawing_fraction must lie in [0, 1]")
        if self.image_image_weight < 0:
            problems.append("image_image_weight must be >= 0")
        if not self.shape_weight >= 0:
            problems.append("shape_weight must be >= 0 (0: no shape-parameter term)")
        if self.image_image_dims < 0:
            problems.append("image_image_dims must be >= 0 (0: all dimensions)")
        if not 0 <= self.shape_share < 1:
            problems.append("shape_share must lie in [0, 1) (0: a plain embedding)")
        elif self.shape_share > 0 and self.image_image_dims == 0:
            problems.append(
                "shape_share > 0 needs image_image_dims > 0 (the block size)"
            )
        if not 0 < self.image_image_tau <= 1:
            problems.append("image_image_tau must lie in (0, 1]")
        if self.inversion_steps < 0:
            problems.append("inversion_steps must be >= 0 (0: no second phase)")
        if not 0 < self.inversion_lr < 1 or not 0 < self.inversion_map_lr < 1:
            problems.append("inversion_lr and inversion_map_lr must lie in (0, 1)")
        if self.inversion_weight < 0:
            problems.append("inversion_weight must be >= 0")
        if not self.inversion_scale > 0:
            problems.append("inversion_scale must be > 0")
        if not 0 <= self.inversion_mix <= 1:
            problems.append("inversion_mix must lie in [0, 1]")
        if not 0 < self.inversion_tau <= 1:
            problems.append("inversion_tau must lie in (0, 1]")
        if not 0 < self.lr < 1:
            problems.append("lr must lie in (0, 1)")
        if self.batch_size > self.corpus_size:
            problems.append("batch_size must not exceed corpus_size")
        if problems:
            raise ValueError("invalid PretrainConfig: " + "; ".join(problems))

    def key(self) -> str:
        """Cache key: a short hash of every field.

        Fields added after the first release are left out while they hold their
        neutral value, so existing caches keep their names.
        """
        # without a second phase its settings are moot and stay out of the key
        fields = asdict(self if self.inversion_steps else self.first_phase())
        for name, neutral in _NEUTRAL_LATER_FIELDS.items():
            if fields[name] == neutral:
                del fields[name]
        return config_hash(fields)

    def first_phase(self) -> PretrainConfig:
        """The configuration of the first phase: every inversion field neutral."""
        return replace(self, **_FIRST_PHASE_FIELDS)

    @property
    def total_steps(self) -> int:
        """Steps of both phases."""
        return self.steps + self.inversion_steps

    @classmethod
    def for_profile(cls, profile: str, **overrides: Any) -> PretrainConfig:
        """The book's preset for a run profile (chapter 02 trains it, later chapters
        reuse it from the cache).

        * ``smoke``: a few steps on a tiny corpus (mechanics only; no second phase).
        * ``teach``: the embedded default's backbone: the first phase, then 300
          steps of the second (pseudo-word inversion), chosen on chapter 09's
          validation split (chapter 02 tabulates both backbones).

        A model named in :data:`MODEL_PRESETS` also gets its preset (speed settings,
        and for the HOG-stem backbone its short recipe); in the smoke profile the
        smoke sizes win over the preset's. Explicit ``overrides`` win over both; an
        override of None keeps the preset's value (no field takes None).

        Raises:
            ValueError: an unknown profile (``paper`` uses web weights instead).
        """
        presets: dict[str, dict[str, Any]] = {
            "smoke": {
                "steps": 3,
                "batch_size": 8,
                "corpus_size": 32,
                "warmup_steps": 1,
                "inversion_steps": 0,
            },
            "teach": {"inversion_steps": 300},
        }
        if profile not in presets:
            raise ValueError(
                f"no tiny-CLIP pretraining preset for profile {profile!r}; valid: "
                f"{', '.join(presets)} (the paper profile loads ViT-B-32 weights)"
            )
        overrides = {k: v for k, v in overrides.items() if v is not None}
        model = overrides.get("model_name", cls.model_name)
        values = {**presets[profile], **MODEL_PRESETS.get(model, {})}
        if profile == "smoke":  # a smoke run checks mechanics: its sizes stay small
            values |= presets["smoke"]
        return cls(**{**values, **overrides})


#: Fields added to :class:`PretrainConfig` later, with the value that reproduces
#: the behaviour from before they existed.
_NEUTRAL_LATER_FIELDS: dict[str, Any] = {
    "shape_share": 0.0,
    "partial_captions": 0.0,
    "caption_targets": "identical",
    "text_buckets": 1,
    "math_attention": False,
    "shape_weight": 0.0,
    "optimizer": "adamw",
}

#: The second phase's fields as :meth:`PretrainConfig.first_phase` sets them: their
#: defaults, with no steps and no composed rows. With ``inversion_steps = 0`` they
#: all stay out of the key.
_FIRST_PHASE_FIELDS: dict[str, Any] = {
    f.name: f.default
    for f in dataclass_fields(PretrainConfig)
    if f.name.startswith("inversion_")
} | {"inversion_steps": 0, "inversion_mix": 0.0}
_NEUTRAL_LATER_FIELDS |= _FIRST_PHASE_FIELDS


@dataclass
class PretrainResult:
    """What :func:`pretrain_clip` returns."""

    bundle: ClipBundle
    checkpoint: Path
    history: list[dict[str, float]]
    pairs_per_s: float | None
    resumed_from: int
    trained_now: bool


def _to_batch(images: np.ndarray, bundle: ClipBundle) -> torch.Tensor:
    """(B, S, S, 3) uint8 -> normalised (B, 3, S, S) float32."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(bundle.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(bundle.image_std).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std).contiguous(memory_format=torch.channels_last)


def soft_caption_targets(ids: torch.Tensor) -> torch.Tensor:
    """Row-normalised (B, B) targets: 1 where two captions are identical.

    Identical captions in one batch are not negatives of each other; plain one-hot
    targets would push them apart.
    """
    same = (ids[:, None, :] == ids[None, :, :]).all(-1).float()
    return same / same.sum(1, keepdim=True)


def clip_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    targets,
    text_targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE with soft targets; embeddings (B, E) already normalised.

    ``targets`` (B, B): row i is image i's distribution over the texts;
    ``text_targets`` (B, B): row j is text j's distribution over the images
    (None: ``targets.t()``, right for symmetric targets).
    """
    logits = logit_scale * image_emb @ text_emb.t()
    if text_targets is None:
        text_targets = targets.t()
    loss_i = -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    loss_t = -(text_targets * F.log_softmax(logits.t(), dim=1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def described_targets(
    caption_desc: torch.Tensor, image_desc: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft targets from what each caption says (``caption_targets="described"``).

    Args:
        caption_desc: (B, V) bool, the facts each caption states (one column per
            (key, value) pair of the vocabulary).
        image_desc: (B, V) bool, the facts true of each image.

    Returns:
        ``(targets, text_targets)`` for :func:`clip_loss`: image rows over the
        captions true of them, and caption rows over the images they describe,
        each row normalised. Caption i describes image j when every fact of i is
        true of j; an image's own caption always counts.
    """
    violations = caption_desc.float() @ (~image_desc).float().t()  # (texts, images)
    match = (violations == 0) | torch.eye(len(caption_desc), dtype=torch.bool)
    m = match.float()
    return (m.t() / m.t().sum(1, keepdim=True), m / m.sum(1, keepdim=True))


def image_image_loss(
    a: torch.Tensor, b: torch.Tensor, tau: float = 0.1
) -> torch.Tensor:
    """Symmetric InfoNCE between two renderings of the same geometries (B, E)."""
    logits = a @ b.t() / tau
    labels = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def _param_groups(
    model: nn.Module, weight_decay: float, skip: Collection[int] = ()
) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in skip:
            continue
        if p.ndim < 2 or "embedding" in name or "logit_scale" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class MuonAdamW:
    """Muon for some parameters and AdamW for the rest, stepped as one optimiser.

    Exposes what the pretraining loop uses: ``param_groups`` (AdamW's groups, then
    Muon's, so a learning-rate schedule reaches both), ``zero_grad``, ``step`` and a
    ``state_dict`` / ``load_state_dict`` pair for resumable checkpoints.
    """

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer):
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.adamw.param_groups + self.muon.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none=set_to_none)
        self.muon.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.adamw.step()
        self.muon.step()

    def state_dict(self) -> dict[str, Any]:
        return {"adamw": self.adamw.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"adamw", "muon"}:
            raise ValueError(
                "the checkpoint's optimiser state is not a Muon + AdamW state; it "
                "belongs to another configuration"
            )
        self.adamw.load_state_dict(state["adamw"])
        self.muon.load_state_dict(state["muon"])


def muon_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The weight matrices of the transformers' residual blocks (Muon's share).

    Every trainable 2-D parameter whose name contains ``resblocks``: attention
    in-projections (queries, keys and values stacked) and out-projections, and both
    MLP layers, in the visual and the text transformer. Embeddings, the stem, the
    final projections, gains and biases stay with AdamW, as Muon's authors advise.
    """
    return [
        p
        for name, p in model.named_parameters()
        if p.requires_grad and p.ndim == 2 and "resblocks" in name
    ]


def _make_optimizer(
    model: nn.Module,
    cfg: PretrainConfig,
    extra: nn.Module | None = None,
    shape_head: nn.Module | None = None,
) -> torch.optim.Optimizer | MuonAdamW:
    # the second phase (``extra`` is its map) always uses AdamW
    matrices = (
        muon_parameters(model) if cfg.optimizer == "muon" and extra is None else []
    )
    groups = _param_groups(model, cfg.weight_decay, skip={id(p) for p in matrices})
    if shape_head is not None:  # trained at the model's learning rate
        groups += _param_groups(shape_head, cfg.weight_decay)
    if extra is not None:  # the inversion map: its own groups and learning rate
        groups += [g | {"map": True} for g in _param_groups(extra, cfg.weight_decay)]
    try:
        adamw = torch.optim.AdamW(
            groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, fused=True
        )
    except (RuntimeError, TypeError):
        adamw = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    if not matrices:
        return adamw
    muon = torch.optim.Muon(
        matrices,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        adjust_lr_fn="match_rms_adamw",
    )
    return MuonAdamW(muon, adamw)


def neighbour_table(attributes: list[dict[str, Any]], m: int) -> np.ndarray:
    """(N, m) indices of each corpus item's m nearest shapes of its category.

    Distances are L2 over the shape parameters (continuous values and one-hot
    outline choices, as :func:`~duet_lib.data.world_geometry.shape_distance`).
    """
    from duet_lib.data.world import shape_from_attributes

    n = len(attributes)
    table = np.zeros((n, m), dtype=np.int64)
    cats = np.array([a["category"] for a in attributes])
    for cat in sorted(set(cats.tolist())):
        idx = np.flatnonzero(cats == cat)
        vec = np.stack(
            [shape_from_attributes(attributes[i]).vector(False) for i in idx]
        )
        sq = (vec**2).sum(1)
        dist = sq[:, None] + sq[None, :] - 2 * vec @ vec.T
        np.fill_diagonal(dist, np.inf)
        k = min(m, len(idx) - 1)
        near = np.argsort(dist, axis=1, kind="stable")[:, :k]
        table[idx, :k] = idx[near]
        if k < m:  # tiny categories: repeat the nearest
            table[idx, k:] = idx[near[:, :1]] if k else idx[:, None]
    return table


def batch_plan(
    cfg: PretrainConfig, step: int, n: int, neighbours: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and line-drawing mask of one step; a function of (seed, step) only.

    With ``cfg.shape_neighbours = k > 1`` the batch is ``B / k`` random anchors,
    each followed by ``k - 1`` shapes drawn from its nearest neighbours
    (``neighbours``, from :func:`neighbour_table`); repeats are replaced by random
    items so no geometry appears twice.
    """
    rng = np.random.default_rng([cfg.seed, step, 7])
    k = cfg.shape_neighbours
    if k <= 1 or neighbours is None:
        idx = rng.choice(n, size=cfg.batch_size, replace=False)
    else:
        anchors = rng.choice(n, size=max(1, cfg.batch_size // k), replace=False)
        picks = [
            np.concatenate([[a], rng.choice(neighbours[a], size=k - 1, replace=False)])
            for a in anchors
        ]
        idx = np.array(list(dict.fromkeys(np.concatenate(picks).tolist())))
        idx = idx[: cfg.batch_size]
        if len(idx) < cfg.batch_size:
            rest = np.setdiff1d(np.arange(n), idx)
            extra = rng.choice(rest, size=cfg.batch_size - len(idx), replace=False)
            idx = np.concatenate([idx, extra])
    drawing = rng.random(cfg.batch_size) < cfg.line_drawing_fraction
    return idx, drawing


def world_corpus(cfg: PretrainConfig, size: int, quiet: bool = True):
    """The default corpus: ``cfg.corpus_size`` fresh world geometries, two photos
    and a line drawing each, rendered at the model's input size."""
    from duet_lib.data.world import pretraining_corpus

    workers = 1 if cfg.corpus_size < 512 else 2  # a pool costs more than it saves
    return pretraining_corpus(
        cfg.corpus_size,
        size,
        cfg.world_seed,
        difficulty=cfg.difficulty,
        quiet=quiet,
        workers=workers,
        partial_captions=cfg.partial_captions,
    )


def _description_masks(corpus: Any) -> dict[str, torch.Tensor]:
    """(N, V) bool fact tables of every corpus caption and image
    (``caption_targets="described"``): ``cap_a``, ``cap_b``, ``cap_d``, ``img_a``,
    ``img_b``, ``img_d`` over one vocabulary of (key, value) facts."""
    from duet_lib.data.world_text import caption_description, image_description

    if len(getattr(corpus, "attributes_b", [])) != len(corpus.caption_b):
        raise ValueError(
            'caption_targets="described" needs the corpus attributes of both views '
            "(attributes and attributes_b)"
        )
    sets = {
        "cap_a": [
            caption_description(c, a)
            for c, a in zip(corpus.caption_a, corpus.attributes, strict=True)
        ],
        "cap_b": [
            caption_description(c, a)
            for c, a in zip(corpus.caption_b, corpus.attributes_b, strict=True)
        ],
        "cap_d": [
            caption_description(c, a, "drawing")
            for c, a in zip(corpus.caption_drawing, corpus.attributes, strict=True)
        ],
        "img_a": [image_description(a) for a in corpus.attributes],
        "img_b": [image_description(a) for a in corpus.attributes_b],
        "img_d": [image_description(a, "drawing") for a in corpus.attributes],
    }
    vocab = {f: i for i, f in enumerate(sorted(set().union(*sum(sets.values(), []))))}
    out = {}
    for name, rows in sets.items():
        table = torch.zeros(len(rows), len(vocab), dtype=torch.bool)
        for r, facts in enumerate(rows):
            table[r, [vocab[f] for f in facts]] = True
        out[name] = table
    return out


def _first_view(
    drawn: torch.Tensor, idx: np.ndarray, photo: torch.Tensor, drawing: torch.Tensor
) -> torch.Tensor:
    """Rows ``idx`` of a per-item table (ids, facts, features or embeddings) for
    the first slot of a batch: the line drawing's row where ``drawn`` (B,) is True,
    the first photo's otherwise."""
    mask = drawn.view(-1, *([1] * (photo.ndim - 1)))
    return torch.where(mask, drawing[idx], photo[idx])


#: The corpus's three image tables, by the keys of the per-image tables built here.
_CORPUS_VIEWS = {"a": "view_a", "b": "view_b", "d": "drawing"}


def _per_corpus_image(
    bundle: ClipBundle,
    corpus: Any,
    fn: Callable[[torch.Tensor], torch.Tensor],
    batch: int,
    bar: Any = None,
) -> dict[str, torch.Tensor]:
    """``fn`` of every corpus image in batches, by view: ``a`` and ``b`` (the two
    photos) and ``d`` (the line drawings)."""
    out: dict[str, torch.Tensor] = {}
    for key, attr in _CORPUS_VIEWS.items():
        images = getattr(corpus, attr)
        parts = []
        for i in range(0, len(images), batch):
            parts.append(fn(_to_batch(images[i : i + batch], bundle)))
            if bar is not None:
                bar.update(len(parts[-1]))
        out[key] = torch.cat(parts)
    return out


@torch.no_grad()
def fixed_stem_features(
    bundle: ClipBundle, corpus: Any, batch: int = 256
) -> dict[str, torch.Tensor] | None:
    """The fixed features of every corpus image for a stem that has them (the HOG
    stem's gradient histograms and cell colours), or None for a learned stem.

    Keys ``a``, ``b`` and ``d`` as in :func:`corpus_image_embeddings`. The stem
    takes them in place of the images and gives the same result to the bit (the
    features of one image do not depend on its batch), so each image's histograms
    are computed once instead of once per step it is drawn in.
    """
    stem = getattr(bundle.model.visual, "conv1", None)
    if not isinstance(stem, HogStem):
        return None
    return _per_corpus_image(bundle, corpus, stem.features, batch)


@torch.no_grad()
def corpus_image_embeddings(
    bundle: ClipBundle, corpus: Any, batch: int = 256, quiet: bool = True
) -> dict[str, torch.Tensor]:
    """Unnormalised (N, E) embeddings of every corpus image by the current image
    tower: ``a`` and ``b`` (the two photos) and ``d`` (the line drawings).

    For a second phase that keeps the image tower frozen
    (``PretrainConfig.inversion_text_only``): each image is encoded once instead of
    once per step it is drawn in.
    """
    from duet_lib.progress import tqdm

    model = bundle.model
    device = next(model.parameters()).device
    total = sum(len(getattr(corpus, attr)) for attr in _CORPUS_VIEWS.values())
    with tqdm(
        total=total, desc="embedding the corpus", unit="img", disable=quiet
    ) as bar:
        return _per_corpus_image(
            bundle, corpus, lambda x: model.encode_image(x.to(device)), batch, bar
        )


def shape_targets(
    attributes: list[dict[str, Any]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Regression targets of the shape-parameter term (``shape_weight``).

    Each item's shape vector (continuous parameters and one-hot choices, local
    parts included; :meth:`~duet_lib.data.world_geometry.Shape.vector`) is
    standardised over the items of its category and placed in that category's
    columns of one table (categories in sorted order).

    Returns:
        ``(targets, mask)``: (N, D) float32 each; ``mask`` is 1 in the item's own
        category's columns and 0 elsewhere (where ``targets`` is 0).

    Raises:
        ValueError: no items.
    """
    from duet_lib.data.world import shape_from_attributes

    if not attributes:
        raise ValueError("shape_targets needs at least one item")
    vectors = [shape_from_attributes(a).vector(True) for a in attributes]
    cats = [a["category"] for a in attributes]
    offsets, width = {}, 0
    for cat in sorted(set(cats)):
        offsets[cat] = width
        width += len(vectors[cats.index(cat)])
    targets = np.zeros((len(vectors), width), dtype=np.float32)
    mask = np.zeros_like(targets)
    for cat, start in offsets.items():
        rows = [i for i, c in enumerate(cats) if c == cat]
        block = np.stack([vectors[i] for i in rows])
        block = (block - block.mean(0)) / (block.std(0) + 1e-6)
        cols = slice(start, start + block.shape[1])
        targets[rows, cols] = block
        mask[rows, cols] = 1.0
    return torch.from_numpy(targets), torch.from_numpy(mask)


def _shape_head(bundle: ClipBundle, width: int, seed: int) -> nn.Linear:
    """The shape-parameter term's linear head, initialised from its own generator
    (the global one stays untouched, so the rest of a run is unchanged)."""
    dim = int(bundle.model.text_projection.shape[1])
    head = nn.Linear(dim, width)
    gen = torch.Generator().manual_seed(seed + 2)
    bound = dim**-0.5
    with torch.no_grad():
        head.weight.uniform_(-bound, bound, generator=gen)
        head.bias.zero_()
    return head


def shape_loss(
    head: nn.Module, image_emb: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Masked mean squared error of ``head`` on normalised image embeddings (B, E),
    scaled by sqrt(E) so that each input dimension has about unit size."""
    pred = head(image_emb * math.sqrt(image_emb.shape[1]))
    return ((pred - targets) ** 2 * mask).sum() / mask.sum().clamp(min=1)


def pretrain_dir(cfg: PretrainConfig) -> Path:
    """Cache folder of one configuration."""
    return cache_dir("clip", f"{cfg.model_name}-{cfg.key()}")


#: The words that precede the inversion map's pseudo-words (the duet's P^L starts
#: from the same words).
INVERSION_PROMPT = "a photo of"


@dataclass
class Inversion:
    """The pseudo-word inversion term's map and template (pretraining only).

    Attributes:
        mapper: a :class:`~duet_lib.models.converter.VisualToWord` from the joint
            space to ``inversion_tokens`` pseudo-words of norm ``inversion_scale``
            times a real word's mean norm.
        ids: (1, L) token ids of "a photo of" followed by the placeholders.
        placeholder: id of the placeholder token.
        tokenize: the bundle's tokenizer, for rows with real words after the
            pseudo-words (composed rows).
    """

    mapper: VisualToWord
    ids: torch.Tensor
    placeholder: int
    tokenize: Callable[[list[str]], torch.Tensor]

    @classmethod
    def for_bundle(cls, bundle: ClipBundle, cfg: PretrainConfig) -> Inversion:
        """A fresh map for ``bundle``'s widths, seeded from ``cfg.seed``."""
        model = bundle.model
        table = model.token_embedding.weight.detach()
        mapper = VisualToWord(
            int(model.text_projection.shape[1]),
            int(table.shape[1]),
            token_norm=cfg.inversion_scale * float(table.norm(dim=-1).mean()),
            n_tokens=cfg.inversion_tokens,
            dropout=0.0,  # no draws from the global generator: resumes stay exact
            seed=cfg.seed + 1,
        )
        ids = bundle.tokenize(
            [f"{INVERSION_PROMPT} {placeholders(cfg.inversion_tokens)}"]
        ).cpu()
        return cls(mapper, ids, placeholder_id(bundle), bundle.tokenize)

    def loss(
        self,
        model: nn.Module,
        photo_emb: torch.Tensor,
        tau: float,
        sources: torch.Tensor | None = None,
        suffixes: list[str] | None = None,
    ) -> torch.Tensor:
        """InfoNCE of T(["a photo of" ; map(source) ; suffix]) against the photos.

        Args:
            model: the CLIP being pretrained (gradients reach its text tower).
            photo_emb: (B, E) normalised photo embeddings, the targets; they are
                detached, so the term never moves the image tower.
            tau: temperature.
            sources: (B, E) embeddings the pseudo-words are written from (detached);
                None: the photos themselves.
            suffixes: B strings of real words after the pseudo-words ("" for none);
                None: no words.

        Returns:
            A scalar: -mean_i log softmax_j(cos(q_i, p_j) / tau)[j = i].
        """
        target = photo_emb.detach()
        source = target if sources is None else sources.detach()
        words = self.mapper(source)  # (B, K, d)
        if suffixes is None:
            ids = self.ids.to(target.device).expand(len(target), -1)
        else:
            if len(suffixes) != len(target):
                raise ValueError("suffixes need one string per row")
            k = self.mapper.n_tokens
            texts = [
                f"{INVERSION_PROMPT} {placeholders(k)} {x}".strip() for x in suffixes
            ]
            ids = self.tokenize(texts).to(target.device)
        query = encode_text_with_pseudo_tokens(
            model, ids, words, self.placeholder, normalize=True
        )
        logits = query @ target.t() / tau
        labels = torch.arange(len(target), device=target.device)
        return F.cross_entropy(logits, labels)


def _composed_rows(
    cfg: PretrainConfig, step: int, idx: np.ndarray, corpus: Any
) -> tuple[torch.Tensor, list[str]]:
    """Which inversion rows of a step are composed, and their appearance phrases
    (a function of ``(seed, step)``); needs the corpus attributes of view b."""
    from duet_lib.data.world_text import appearance_phrase

    if len(getattr(corpus, "attributes_b", [])) != len(corpus.caption_b):
        raise ValueError("inversion_mix > 0 needs the corpus attributes of view b")
    rng = np.random.default_rng([cfg.seed, step, 11])
    rows = rng.random(len(idx)) < cfg.inversion_mix
    phrases = [
        appearance_phrase(corpus.attributes_b[i], rng) if r else ""
        for i, r in zip(idx, rows, strict=True)
    ]
    return torch.from_numpy(rows), phrases


def train_step(
    bundle: ClipBundle,
    optimizer: torch.optim.Optimizer,
    images_a: torch.Tensor | None,
    images_b: torch.Tensor | None,
    ids_a: torch.Tensor,
    ids_b: torch.Tensor,
    cfg: PretrainConfig,
    targets: tuple[torch.Tensor, torch.Tensor] | None = None,
    inversion: Inversion | None = None,
    composed: tuple[torch.Tensor, list[str]] | None = None,
    shape_term: tuple[nn.Module, torch.Tensor, torch.Tensor] | None = None,
    image_emb: torch.Tensor | None = None,
) -> dict[str, float]:
    """One optimisation step over B geometries; returns the loss terms as floats.

    Both renderings are image–caption pairs (2B pairs per step) and positives of
    each other in the image–image term, so the second view costs no extra pass.

    Args:
        images_a, images_b: (B, 3, S, S) normalised renderings of the same geometries,
            or for a HOG stem their fixed features (:func:`fixed_stem_features`);
            None with ``image_emb``.
        ids_a, ids_b: (B, L) token ids of their captions.
        targets: (image, text) soft targets of the caption loss over the 2B
            pairs (:func:`described_targets`); None: identical captions.
        inversion: the inversion term's map (second phase), or None; its targets
            are the second renderings, which are always photos.
        composed: ``(rows, phrases)``: a (B,) bool mask of composed inversion rows
            (pseudo-words from the first rendering, then the second's appearance
            phrase; ``cfg.inversion_mix``) and B phrases ("" where not composed).
        shape_term: ``(head, targets, mask)`` of the shape-parameter term over the 2B
            images (:func:`shape_targets` rows of both renderings), or None.
        image_emb: (2B, E) unnormalised embeddings of both renderings, computed
            beforehand by a frozen image tower (``cfg.inversion_text_only``); the
            images are then not encoded and the image–image term is left out.

    The forward passes run under :func:`fast_attention` when ``cfg.math_attention``.
    """
    model = bundle.model

    def kernel():
        return fast_attention(ids_a.device) if cfg.math_attention else nullcontext()

    ids = torch.cat([ids_a, ids_b])
    with kernel():
        if image_emb is None:
            if images_a is None or images_b is None:
                raise ValueError("train_step needs the images or their embeddings")
            raw = model.encode_image(torch.cat([images_a, images_b]))  # (2B, E)
        else:
            raw = image_emb.detach()
        txt = encode_token_ids(model, ids, normalize=True, buckets=cfg.text_buckets)
    img = F.normalize(raw, dim=-1)
    scale = model.logit_scale.exp().clamp(max=100)
    image_t, text_t = targets or (soft_caption_targets(ids), None)
    loss_clip = clip_loss(img, txt, scale, image_t, text_t)
    half = len(ids_a)
    loss = loss_clip
    terms = {"clip": loss_clip.item()}
    if image_emb is None:
        dims = cfg.image_image_dims or raw.shape[1]
        shape = F.normalize(raw[:, :dims], dim=-1) if dims < raw.shape[1] else img
        loss_ii = image_image_loss(shape[:half], shape[half:], cfg.image_image_tau)
        loss = loss + cfg.image_image_weight * loss_ii
        terms["image_image"] = loss_ii.item()
    params = [p for p in model.parameters() if p.requires_grad]
    if shape_term is not None:
        head, shape_t, shape_m = shape_term
        loss_shape = shape_loss(head, img, shape_t, shape_m)
        loss = loss + cfg.shape_weight * loss_shape
        terms["shape"] = loss_shape.item()
        params += list(head.parameters())
    if inversion is not None:
        sources, suffixes = None, None
        if composed is not None:
            rows, suffixes = composed
            sources = torch.where(rows[:, None].to(img.device), img[:half], img[half:])
        with kernel():
            loss_inv = inversion.loss(
                model, img[half:], cfg.inversion_tau, sources, suffixes
            )
        loss = loss + cfg.inversion_weight * loss_inv
        terms["inversion"] = loss_inv.item()
        params += list(inversion.mapper.parameters())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    return {"loss": loss.item(), **terms}


def pretrain_clip(
    cfg: PretrainConfig,
    corpus_fn: Callable[[PretrainConfig, int], Any] | None = None,
    quiet: bool = False,
    stop_after: int | None = None,
    force: bool = False,
) -> PretrainResult:
    """Pretrain (or load from the cache) the tiny CLIP of ``cfg``.

    Args:
        cfg: the configuration; its hash names the cache folder.
        corpus_fn: builds the corpus for ``(cfg, image_size)``; it must return an
            object with ``view_a``, ``view_b``, ``drawing`` (N, S, S, 3) uint8 arrays
            and ``caption_a``, ``caption_b``, ``caption_drawing`` lists. None uses
            :func:`world_corpus`.
        quiet: silence progress bars.
        stop_after: stop once this many steps are done (to simulate an interruption);
            a later call resumes from the last checkpoint.
        force: retrain even when a finished checkpoint exists.

    Returns:
        A :class:`PretrainResult`; ``trained_now`` is False when the cache was used.
    """
    from duet_lib.progress import tqdm

    folder = pretrain_dir(cfg)
    final = folder / "model.pt"
    history_file = folder / "history.json"
    if final.is_file() and not force:
        bundle = load_clip(cfg.model_name, final)
        history = json.loads(history_file.read_text()) if history_file.is_file() else []
        return PretrainResult(bundle, final, history, None, cfg.total_steps, False)

    two_phase = cfg.inversion_steps > 0
    first = cfg.first_phase() if two_phase else cfg
    first_final = pretrain_dir(first) / "model.pt"
    bundle = load_clip(cfg.model_name, None, seed=cfg.seed)
    model = bundle.model
    if cfg.shape_share > 0:
        set_embedding_blocks(model, cfg.image_image_dims, cfg.shape_share)
    model.train()
    corpus = (corpus_fn or world_corpus)(cfg, bundle.image_size)
    head, shape_t, shape_m = None, None, None
    if cfg.shape_weight > 0:
        if len(getattr(corpus, "attributes", [])) != len(corpus.caption_a):
            raise ValueError(
                "shape_weight > 0 needs the corpus attributes (one per geometry)"
            )
        shape_t, shape_m = shape_targets(list(corpus.attributes))
        head = _shape_head(bundle, shape_t.shape[1], cfg.seed)
    optimizer = _make_optimizer(model, cfg, shape_head=head)
    inversion: Inversion | None = None

    frozen_images: dict[str, torch.Tensor] | None = None
    frozen_params: list[nn.Parameter] = []

    def second_phase() -> torch.optim.Optimizer:
        # a fresh map and a fresh optimiser at a constant learning rate, whether the
        # first phase ran just now or came from the cache: the same weights either way
        nonlocal inversion, frozen_images
        inversion = Inversion.for_bundle(bundle, cfg)
        if cfg.inversion_text_only:
            frozen_params.extend(
                p for p in model.visual.parameters() if p.requires_grad
            )
            for p in frozen_params:
                p.requires_grad_(False)
            frozen_images = corpus_image_embeddings(bundle, corpus, quiet=quiet)
        return _make_optimizer(model, cfg, inversion.mapper)

    last = folder / "last.pt"
    start, history = 0, []
    if last.is_file() and not force:
        state = load_checkpoint(last)
        if state.get("config_key") != cfg.key():
            raise ValueError(f"{last} belongs to another configuration; delete it")
        model.load_state_dict(state["model"])
        if head is not None and "shape_head" in state:
            head.load_state_dict(state["shape_head"])
        if "inversion" in state:
            optimizer = second_phase()
            inversion.mapper.load_state_dict(state["inversion"])
            # the words' norm was measured on the token table when the phase began
            inversion.mapper.token_norm = float(state["inversion_norm"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = int(state["step"]), list(state["history"])
    elif two_phase and first_final.is_file() and not force:
        done_first = load_clip(cfg.model_name, first_final)
        model.load_state_dict(done_first.model.state_dict())
        first_history = pretrain_dir(first) / "history.json"
        if first_history.is_file():
            history = json.loads(first_history.read_text())
        start = cfg.steps
    resumed_from = start

    stem_table = fixed_stem_features(bundle, corpus)
    ids_a = bundle.tokenize(corpus.caption_a).cpu()
    ids_b = bundle.tokenize(corpus.caption_b).cpu()
    ids_d = bundle.tokenize(corpus.caption_drawing).cpu()
    facts = _description_masks(corpus) if cfg.caption_targets == "described" else None
    neighbours = None
    if cfg.shape_neighbours > 1:
        neighbours = neighbour_table(
            list(corpus.attributes), max(2 * cfg.shape_neighbours, 8)
        )

    total = cfg.total_steps
    end = total if stop_after is None else min(total, stop_after)
    t0, pairs = time.perf_counter(), 0
    bar = tqdm(range(start, end), desc="pretraining", unit="step", disable=quiet)
    for step in bar:
        if two_phase and step >= cfg.steps and inversion is None:
            if not first_final.is_file():
                # keep the first phase: it is the model of the config without it
                model.eval()
                save_clip(bundle, first_final, extra={"pretrain_config": asdict(first)})
                (pretrain_dir(first) / "history.json").write_text(json.dumps(history))
                model.train()
            optimizer = second_phase()
        idx, use_drawing = batch_plan(cfg, step, len(corpus), neighbours)
        drawn = torch.from_numpy(use_drawing)
        ids = _first_view(drawn, idx, ids_a, ids_d)
        targets = None
        if facts is not None:
            targets = described_targets(
                torch.cat(
                    [
                        _first_view(drawn, idx, facts["cap_a"], facts["cap_d"]),
                        facts["cap_b"][idx],
                    ]
                ),
                torch.cat(
                    [
                        _first_view(drawn, idx, facts["img_a"], facts["img_d"]),
                        facts["img_b"][idx],
                    ]
                ),
            )
        composed = None
        if inversion is not None and cfg.inversion_mix > 0:
            composed = _composed_rows(cfg, step, idx, corpus)
        lr = cfg.inversion_lr if inversion is not None else _lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = cfg.inversion_map_lr if group.get("map") else lr
        shape_term = None
        if head is not None and inversion is None:  # first phase only
            both = np.concatenate([idx, idx])
            shape_term = (head, shape_t[both], shape_m[both])
        # the step's image inputs: frozen embeddings (text-only second phase), a
        # stem's fixed features, or the renderings themselves
        images_a, images_b, image_emb = None, None, None
        table = frozen_images if frozen_images is not None else stem_table
        if table is None:
            first_view = np.where(
                use_drawing[:, None, None, None],
                corpus.drawing[idx],
                corpus.view_a[idx],
            )
            images_a = _to_batch(first_view, bundle)
            images_b = _to_batch(corpus.view_b[idx], bundle)
        else:
            slot_a = _first_view(drawn, idx, table["a"], table["d"])
            if frozen_images is not None:
                image_emb = torch.cat([slot_a, table["b"][idx]])
            else:
                images_a, images_b = slot_a, table["b"][idx]
        terms = train_step(
            bundle,
            optimizer,
            images_a,
            images_b,
            ids,
            ids_b[idx],
            cfg,
            targets,
            inversion,
            composed,
            shape_term,
            image_emb,
        )
        pairs += 2 * cfg.batch_size
        history.append({"step": step + 1, **terms})
        if not quiet:
            bar.set_postfix(loss=f"{terms['loss']:.3f}")
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == end:
            save_checkpoint(
                {
                    "config_key": cfg.key(),
                    "step": done,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "history": history,
                    **({"shape_head": head.state_dict()} if head is not None else {}),
                    **(
                        {
                            "inversion": inversion.mapper.state_dict(),
                            "inversion_norm": inversion.mapper.token_norm,
                        }
                        if inversion is not None
                        else {}
                    ),
                },
                last,
            )
    elapsed = time.perf_counter() - t0
    for p in frozen_params:  # a text-only second phase froze the image tower
        p.requires_grad_(True)
    model.eval()
    pairs_per_s = pairs / elapsed if elapsed > 0 and pairs else None
    if end >= total:
        save_clip(bundle, final, extra={"pretrain_config": asdict(cfg)})
        history_file.write_text(json.dumps(history))
        last.unlink(missing_ok=True)
        checkpoint = final
    else:
        checkpoint = last
    return PretrainResult(bundle, checkpoint, history, pairs_per_s, resumed_from, True)


def book_clip(
    profile: str = "teach", quiet: bool = True, **overrides: Any
) -> ClipBundle:
    """The book's tiny CLIP for a profile: from the cache, or pretrained now.

    Every chapter after chapter 02 starts here, so each runs from a fresh kernel
    whether or not chapter 02 ran before.
    """
    cfg = PretrainConfig.for_profile(profile, **overrides)
    return pretrain_clip(cfg, quiet=quiet).bundle


def chapter_backbone(
    profile: str,
    model_name: str = "duet-tiny-conv-96",
    pretrained: str | None = None,
    device: str | torch.device = "cpu",
) -> ClipBundle:
    """A freshly loaded backbone for a chapter's parameters (chapters 03-09).

    ``pretrained=None`` gives the book's tiny CLIP of the profile (the ``teach``
    preset for every profile but ``smoke``), from the cache or pretrained now; any
    other value is an open_clip tag or weights file for :func:`load_clip`. Each call
    loads anew: a :class:`~duet_lib.models.duet.DuetModel` freezes its bundle in
    place, so every model needs its own.
    """
    from duet_lib.repro import resolve_device

    target = resolve_device(device) if isinstance(device, str) else device
    if pretrained is None:
        bundle = book_clip(
            "smoke" if profile == "smoke" else "teach", model_name=model_name
        )
        bundle.model.to(target)
        return bundle
    return load_clip(model_name, pretrained, device=target)
