"""Run profiles (smoke / teach / paper) and validation of chapter parameters.

Every chapter has one ``parameters`` cell of literals whose values are the **teach**
profile. The other profiles are defined here, once, and the book runner passes them to
papermill. ``validate_params`` is called by every chapter right after its parameters
cell, so a wrong name or value fails at once with one message listing what is valid.
Introduced in chapter 00.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PROFILES: tuple[str, ...] = ("smoke", "teach", "paper")
DEFAULT_PROFILE = "teach"


class ParameterError(ValueError):
    """A chapter parameter with an unknown name or an invalid value."""


@dataclass(frozen=True)
class ParamSpec:
    """How one chapter parameter is checked.

    Attributes:
        doc: one line shown in error messages and in the README table.
        check: returns None when the value is valid, else a short reason.
        choices: the valid values, when the parameter is an enumeration.
    """

    doc: str
    check: Callable[[Any], str | None]
    choices: tuple[Any, ...] | None = None


#: Validation metrics that can select a training run's checkpoint (duet_lib.train).
SELECT_METRICS = (
    "auto",
    "fgsbir_acc@1",
    "duet_acc@1",
    "both_acc@1",
    "fgsbir_mrr",
    "duet_mrr",
)


def _int(lo: int | None = None, hi: int | None = None, none_ok: bool = False):
    def check(v: Any) -> str | None:
        if v is None and none_ok:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            return f"expected an integer, got {type(v).__name__} {v!r}"
        if lo is not None and v < lo:
            return f"must be >= {lo}"
        if hi is not None and v > hi:
            return f"must be <= {hi}"
        return None

    return check


def _float(lo: float | None = None, hi: float | None = None, none_ok: bool = False):
    def check(v: Any) -> str | None:
        if v is None and none_ok:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float):
            return f"expected a number, got {type(v).__name__} {v!r}"
        if not math.isfinite(float(v)):
            return "must be finite"
        if lo is not None and v < lo:
            return f"must be >= {lo}"
        if hi is not None and v > hi:
            return f"must be <= {hi}"
        return None

    return check


def _str(none_ok: bool = False, nonempty: bool = True):
    def check(v: Any) -> str | None:
        if v is None and none_ok:
            return None
        if not isinstance(v, str):
            return f"expected a string, got {type(v).__name__} {v!r}"
        if nonempty and not v.strip():
            return "must not be empty"
        return None

    return check


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"expected True or False, got {v!r}"


def _choice(*choices: Any) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return (
            None if v in choices else f"must be one of {', '.join(map(repr, choices))}"
        )

    return check


def _device(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"expected a string, got {v!r}"
    if v in ("auto", "cpu", "cuda", "mps"):
        return None
    if v.startswith("cuda:") and v[5:].isdigit():
        return None
    return "must be 'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps'"


#: Names of the loss terms (the paper's six, then our optional L_words); the one
#: definition, re-exported as :data:`duet_lib.losses.LOSS_NAMES`.
LOSS_NAMES: tuple[str, ...] = ("trip", "comp", "reg", "tt", "rt", "rec", "words")


def _loss_weights(v: Any) -> str | None:
    if not isinstance(v, dict):
        return f"expected a dict such as {{'trip': 1.0, 'comp': 1.0}}, got {v!r}"
    unknown = set(v) - set(LOSS_NAMES)
    if unknown:
        return f"unknown loss name(s) {sorted(unknown)}; valid: {', '.join(LOSS_NAMES)}"
    for k, w in v.items():
        if isinstance(w, bool) or not isinstance(w, int | float) or not w >= 0:
            return f"weight of {k!r} must be a number >= 0, got {w!r}"
    return None


def _seeds(v: Any) -> str | None:
    if not isinstance(v, list | tuple) or not v:
        return f"expected a non-empty list of seeds such as [0, 1], got {v!r}"
    for x in v:
        if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < 2**31:
            return f"seeds must be integers in [0, 2**31), got {x!r}"
    if len(set(v)) != len(v):
        return f"seeds must be distinct, got {v!r}"
    return None


def _loss_list(v: Any) -> str | None:
    if not isinstance(v, list | tuple):
        return f"expected a list of loss names such as ['comp', 'reg'], got {v!r}"
    unknown = [x for x in v if x not in LOSS_NAMES]
    if unknown:
        return f"unknown loss name(s) {unknown}; valid: {', '.join(LOSS_NAMES)}"
    return None


# One spec per parameter name used anywhere in the book; names are stable across
# chapters (see STYLE.md).
PARAMS: dict[str, ParamSpec] = {
    "profile": ParamSpec("run profile", _choice(*PROFILES), PROFILES),
    "seed": ParamSpec("random seed for everything", _int(0, 2**31 - 1)),
    "device": ParamSpec("'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'", _device),
    "data_root": ParamSpec(
        "dataset folder; None -> DUET_DATA_DIR or the book cache", _str(none_ok=True)
    ),
    "output_dir": ParamSpec(
        "where metrics, figures and checkpoints go; None -> build/outputs/<chapter>",
        _str(none_ok=True),
    ),
    "dataset": ParamSpec(
        "'world' (embedded default), 'chairv2', 'shoev2'",
        _choice("world", "chairv2", "shoev2"),
        ("world", "chairv2", "shoev2"),
    ),
    "world_size": ParamSpec(
        "size preset of the procedural world",
        _choice("smoke", "teach"),
        ("smoke", "teach"),
    ),
    "difficulty": ParamSpec(
        "spread knob of the world's shapes, 0 (easy) .. 1", _float(0, 1)
    ),
    "model_name": ParamSpec("backbone config name", _str()),
    "pretrained": ParamSpec(
        "None (random / book-pretrained), an open_clip tag or a local path",
        _str(none_ok=True),
    ),
    "image_size": ParamSpec("model input side in pixels", _int(32, 1024)),
    "max_steps": ParamSpec("training steps", _int(1)),
    "num_epochs": ParamSpec("training epochs", _int(1)),
    "batch_size": ParamSpec("batch size", _int(1)),
    "lr": ParamSpec("learning rate", _float(0, 1)),
    "num_workers": ParamSpec("data-loading workers", _int(0, 64)),
    "subset_size": ParamSpec(
        "use at most this many items (None = all)", _int(1, none_ok=True)
    ),
    "eval_every": ParamSpec("evaluate every N steps", _int(1)),
    "inversion_steps": ParamSpec(
        "steps of pretraining's second phase, the pseudo-word inversion (0: off; "
        "None: the backbone's preset)",
        _int(0, none_ok=True),
    ),
    "pretrain_steps": ParamSpec(
        "steps of the tiny CLIP's first pretraining phase (None: the backbone's "
        "preset, 2100 for the default)",
        _int(1, none_ok=True),
    ),
    "pretrain_seconds": ParamSpec("wall-clock budget for pretraining", _float(1)),
    "lr_visual": ParamSpec("learning rate of V's LayerNorms", _float(0, 1)),
    "lr_modules": ParamSpec("learning rate of C_v2w, P^L and G", _float(0, 1)),
    "loss_weights": ParamSpec(
        "lambda per loss: a dict with keys among trip, comp, reg, tt, rt, rec",
        _loss_weights,
    ),
    "lr_schedule": ParamSpec(
        "learning-rate schedule after the warm-up: constant (the book) or cosine",
        _choice("constant", "cosine"),
        ("constant", "cosine"),
    ),
    "trip_form": ParamSpec(
        "form of the cross-modal triplet L_trip: hinge (the paper) or infonce",
        _choice("hinge", "infonce"),
        ("hinge", "infonce"),
    ),
    "sketch_tokens": ParamSpec(
        "pseudo-words per sketch from C_v2w: 1 (the paper) or more (our option)",
        _int(1, 16),
    ),
    "token_scale": ParamSpec(
        "norm of the pseudo-words as a multiple of a real word's (our option; "
        "1 keeps real-word size)",
        _float(0.01, 99),
    ),
    "words_scale": ParamSpec(
        "factor on the sketch's pseudo-words where the user's words follow them "
        "(our option; 1 = the same pseudo-words as the sketch-only query)",
        _float(0.01, 10),
    ),
    "trip_memory": ParamSpec(
        "remembered batches in L_trip's InfoNCE (our option; 0 = off, needs "
        "trip_form infonce)",
        _int(0, 64),
    ),
    "ema_decay": ParamSpec(
        "decay of the moving average of the trained weights that is validated and "
        "saved (our option; None = off, the paper)",
        _float(0, 0.9999, none_ok=True),
    ),
    "tau_trip": ParamSpec(
        "temperature of L_trip's InfoNCE (our option; None = the shared tau of "
        "the InfoNCE terms)",
        _float(1e-4, 10.0, none_ok=True),
    ),
    "reg_detach": ParamSpec(
        "stop L_reg's gradient through the sketch-only query, so the hinge can only "
        "move the neutral-text query (our option; False = the paper's equation as "
        "written)",
        _bool,
    ),
    "select_metric": ParamSpec(
        "validation metric that selects the checkpoint: auto (duet_acc@1 on the "
        "world, fgsbir_acc@1 elsewhere), fgsbir_acc@1, duet_acc@1, both_acc@1 (their "
        "mean, our option), fgsbir_mrr or duet_mrr",
        _choice(*SELECT_METRICS),
        SELECT_METRICS,
    ),
    "unfreeze_blocks": ParamSpec(
        "also train the last k visual blocks (a deviation from the paper)", _int(0, 48)
    ),
    "amp": ParamSpec("mixed precision on CUDA", _choice("off", "bf16", "fp16")),
    "patience": ParamSpec(
        "evaluations without improvement before stopping (None = never)",
        _int(1, none_ok=True),
    ),
    "n_show": ParamSpec("how many examples a figure shows", _int(1, 64)),
    "seeds": ParamSpec("training seeds of a benchmark (mean and spread)", _seeds),
    "ablations": ParamSpec(
        "losses removed one at a time in the ablation rows: a list among trip, "
        "comp, reg, tt, rt, rec",
        _loss_list,
    ),
    "ablation_steps": ParamSpec(
        "training steps of each ablation run (None = max_steps)",
        _int(1, none_ok=True),
    ),
    "baseline_steps": ParamSpec("training steps of each baseline", _int(1)),
    "deviation_blocks": ParamSpec(
        "visual blocks also trained in chapter 11's labelled-deviation run "
        "(0 skips the run)",
        _int(0, 48),
    ),
    "deviation_steps": ParamSpec(
        "training steps of chapter 11's labelled-deviation run", _int(1)
    ),
    "hog_steps": ParamSpec(
        "training steps of chapter 11's classic reference, dense HOG with a "
        "learned linear metric (0 skips it)",
        _int(0),
    ),
    "test_shift": ParamSpec(
        "pixels of the test-time shifted views of chapters 09-11 (sketch and "
        "photos seen in nine views, similarities averaged; 0 skips them)",
        _int(0, 32),
    ),
    "hog_seeds": ParamSpec(
        "metrics of chapter 11's classic reference, trained from seeds seed, "
        "seed + 1, ...; their similarities are averaged",
        _int(1, 16),
    ),
    "framing": ParamSpec(
        "content framing of real sketches and photos: the share of the side the "
        "drawing or object spans after cropping to it (None: as the data has them)",
        _float(0.05, 1, none_ok=True),
    ),
    "fusion_weight": ParamSpec(
        "weight of the text in late fusion (sketch + w text)", _float(0, 100)
    ),
    "text": ParamSpec(
        "words added to every sketch query; None = the dataset's own phrases",
        _str(none_ok=True),
    ),
    "split": ParamSpec(
        "split to report", _choice("train", "val", "test"), ("train", "val", "test")
    ),
    "quiet": ParamSpec("silence progress bars", _bool),
}


# Values the runner passes for the non-default profiles. ``teach`` is the literals in
# each chapter's parameters cell. Only names a chapter declares are passed to it.
PROFILE_VALUES: dict[str, dict[str, Any]] = {
    "smoke": {
        "profile": "smoke",
        "world_size": "smoke",
        "max_steps": 3,
        "pretrain_steps": 3,
        "num_epochs": 1,
        "batch_size": 8,
        "subset_size": 16,
        "eval_every": 2,
        "inversion_steps": 2,
        "pretrain_seconds": 5.0,
        "n_show": 4,
        "quiet": True,
    },
    "teach": {"profile": "teach"},
    "paper": {
        "profile": "paper",
        "device": "cuda",
        "dataset": "shoev2",
        "model_name": "ViT-B-32",
        "pretrained": "openai",
        "image_size": 224,
        "batch_size": 32,
        "lr": 1e-4,
        "lr_visual": 1e-4,
        "lr_modules": 1e-3,
        "trip_form": "hinge",
        "trip_memory": 0,
        "ema_decay": None,
        "tau_trip": None,
        "deviation_blocks": 0,
        "token_scale": 1.0,
        "sketch_tokens": 1,
        "amp": "bf16",
        "max_steps": 20000,
        "eval_every": 500,
        "patience": 10,
        "num_workers": 8,
        "subset_size": None,
    },
}


def profile_values(
    profile: str, declared: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Parameters a profile sets, restricted to the names a chapter declares.

    Args:
        profile: one of :data:`PROFILES`.
        declared: the chapter's parameters (name -> default); None keeps all.
    """
    check_profile(profile)
    values = dict(PROFILE_VALUES[profile])
    if declared is not None:
        values = {k: v for k, v in values.items() if k in declared}
    return values


def check_profile(profile: Any) -> str:
    """Return ``profile`` if valid, else raise :class:`ParameterError`."""
    if profile not in PROFILES:
        raise ParameterError(
            f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}"
        )
    return profile


def validate_params(**params: Any) -> dict[str, Any]:
    """Validate a chapter's parameters; return them unchanged when all are valid.

    Raises:
        ParameterError: one message naming every unknown name (with the valid names)
            and every invalid value (with what is valid).
    """
    problems = []
    for name, value in params.items():
        spec = PARAMS.get(name)
        if spec is None:
            problems.append(
                f"unknown parameter {name!r}; valid parameters: {', '.join(sorted(PARAMS))}"
            )
            continue
        reason = spec.check(value)
        if reason is not None:
            problems.append(f"parameter {name}={value!r}: {reason} ({spec.doc})")
    if problems:
        raise ParameterError("; ".join(problems))
    return dict(params)
