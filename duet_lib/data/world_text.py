"""Words of the procedural world: binned shape words, captions and appearance
phrases (chapter 01).

Captions come from a small grammar: a template from ``duet_lib/texts/
world_templates.txt`` filled with the photo's colour, pattern, background, the
category noun and one to three *binned* shape phrases. Shape words exist only at a
coarse grain (each continuous parameter falls into 2 or 3 levels, e.g. "a flat
heel" / "a mid heel" / "a high heel"), so a model can learn shape vocabulary from
captions while the variation inside a level, which is what tells two instances
apart, reaches retrieval only through the sketch.

The *appearance phrase* ("in red with stripes on grass") names colour, pattern and
background only; it is the text half of a duet query.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

import numpy as np

from duet_lib.data.world_geometry import PARAM_SPECS, ParamSpec, ShapeError

__all__ = [
    "BACKGROUND_PHRASES",
    "PATTERN_WORDS",
    "SHAPE_WORDS",
    "TextError",
    "appearance_phrase",
    "bin_level",
    "caption",
    "caption_description",
    "combination_captions",
    "image_description",
    "line_drawing_caption",
    "partial_caption",
    "shape_phrases",
    "shape_vocabulary",
    "templates",
]


class TextError(ValueError):
    """Attributes a caption cannot be built from."""


# (with-phrase, adjective or None) per level of each parameter; None as a whole
# level means "say nothing" (e.g. no toe cap).
_Level = tuple[str, str | None] | None

#: Binned shape words: category -> parameter -> one entry per bin (continuous) or
#: per choice (discrete), in the order of ``PARAM_SPECS``.
SHAPE_WORDS: dict[str, dict[str, tuple[_Level, ...]]] = {
    "shoe": {
        "heel_height": (
            ("a flat heel", "flat"),
            ("a mid heel", "mid-heeled"),
            ("a high heel", "high-heeled"),
        ),
        "shaft_height": (
            ("a low-cut top", "low-cut"),
            ("an ankle-high shaft", "ankle-high"),
            ("a tall shaft", "knee-high"),
        ),
        "toe_shape": (
            ("a round toe", "round-toed"),
            ("an almond toe", None),
            ("a pointed toe", "pointy"),
        ),
        "sole_thickness": (("a thin sole", "thin-soled"), ("a thick sole", "chunky")),
        "upper_volume": (("a slim upper", "slim"), ("a bulky upper", "bulky")),
        "collar_slope": (("a level collar", None), ("a sloping collar", None)),
        "heel_style": (
            ("a block heel", None),
            ("a stiletto heel", None),
            ("a wedge heel", "wedge"),
        ),
        "closure": (
            ("laces", "lace-up"),
            ("a strap", "strappy"),
            ("a zip", None),
            ("no fastening", "slip-on"),
        ),
        "toe_cap": (None, ("a toe cap", None)),
    },
    "chair": {
        "back_height": (
            ("a low back", "low-backed"),
            ("a medium back", None),
            ("a high back", "high-backed"),
        ),
        "back_tilt": (("an upright back", None), ("a reclined back", "reclining")),
        "back_top": (
            ("a square-topped back", None),
            ("a rounded back", None),
            ("an arched back", None),
        ),
        "seat_depth": (("a shallow seat", None), ("a deep seat", None)),
        "seat_height": (
            ("a low seat", "low"),
            ("a mid-height seat", None),
            ("a high seat", "tall"),
        ),
        "seat_width": (("a narrow seat", "narrow"), ("a wide seat", "wide")),
        "leg_style": (
            ("four straight legs", None),
            ("splayed legs", None),
            ("a pedestal base", "swivel"),
            ("a sled base", None),
        ),
        "armrests": (("no armrests", "armless"), ("armrests", None)),
        "back_style": (
            ("a solid back", None),
            ("a slatted back", "slat-back"),
            ("a ladder back", "ladder-back"),
            ("an open-frame back", None),
        ),
        "crossbar": (None, ("a crossbar", None)),
    },
}

_NOUNS = {"shoe": "shoe", "chair": "chair"}

#: pattern -> (adjectives, noun phrases)
PATTERN_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "plain": (("plain",), ("no pattern",)),
    "striped": (("striped",), ("stripes",)),
    "dotted": (("dotted", "polka-dot"), ("dots", "polka dots")),
    "checked": (("checked", "checkered"), ("checks", "a check pattern")),
    "zigzag": (("zigzag",), ("a zigzag pattern", "zigzags")),
}

#: background -> paraphrases of "where it stands"
BACKGROUND_PHRASES: dict[str, tuple[str, ...]] = {
    "plain": ("on a white background", "on a plain background", "in a studio"),
    "grass": ("on grass", "on the grass", "on a lawn"),
    "floor": ("on a wooden floor", "on wooden floorboards", "on a parquet floor"),
    "sand": ("on sand", "on a sandy floor", "on the beach"),
    "tiles": ("on a tiled floor", "on tiles", "on floor tiles"),
}


@lru_cache(maxsize=1)
def templates() -> dict[str, tuple[str, ...]]:
    """Caption templates by section, read from ``duet_lib/texts/world_templates.txt``."""
    text = (
        resources.files("duet_lib")
        .joinpath("texts/world_templates.txt")
        .read_text("utf-8")
    )
    out: dict[str, list[str]] = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            section = m.group(1)
            out[section] = []
        elif section is None:
            raise TextError(
                "world_templates.txt: a template before the first [section]"
            )
        else:
            out[section].append(line)
    needed = {
        "photo",
        "photo_adj",
        "photo_partial",
        "line_drawing",
        "line_drawing_adj",
        "appearance",
    }
    if missing := needed - set(out):
        raise TextError(f"world_templates.txt: missing sections {sorted(missing)}")
    return {k: tuple(v) for k, v in out.items()}


def bin_level(spec: ParamSpec, value: float | str) -> int:
    """Coarse level of a parameter value: the bin of a continuous value (equal
    thirds or halves of [0, 1]) or the index of a discrete choice."""
    if spec.kind == "continuous":
        v = float(value)
        return min(int(v * spec.bins), spec.bins - 1)
    try:
        return spec.choices.index(str(value))
    except ValueError:
        raise ShapeError(f"{spec.name}: unknown choice {value!r}") from None


def _spec_map(category: str) -> dict[str, ParamSpec]:
    if category not in PARAM_SPECS:
        raise TextError(
            f"unknown category {category!r}; valid: {', '.join(PARAM_SPECS)}"
        )
    return {s.name: s for s in PARAM_SPECS[category]}


def shape_phrases(category: str, params: dict) -> dict[str, tuple[str, str | None]]:
    """Binned shape words of a shape: parameter -> (with-phrase, adjective or None).

    Parameters whose level says nothing (no toe cap, no crossbar) are left out; a
    shoe's heel style is left out when the heel is flat.
    """
    specs = _spec_map(category)
    out = {}
    for name, levels in SHAPE_WORDS[category].items():
        if name not in params:
            raise TextError(f"{category}: attribute params lack {name!r}")
        level = levels[bin_level(specs[name], params[name])]
        if level is None:
            continue
        out[name] = level
    if (
        category == "shoe"
        and bin_level(specs["heel_height"], params["heel_height"]) == 0
    ):
        out.pop("heel_style", None)
    return out


_STOP = frozenset({"a", "an", "and", "no", "the", "with"})


def shape_vocabulary(category: str | None = None) -> set[str]:
    """Every content token of the shape phrases (lower case; articles and
    connectives left out), for checks that other text carries no shape word."""
    cats = [category] if category else list(SHAPE_WORDS)
    words: set[str] = set()
    for c in cats:
        for levels in SHAPE_WORDS[c].values():
            for lv in levels:
                if lv is None:
                    continue
                for part in lv:
                    if part:
                        words.update(re.findall(r"[a-z]+(?:-[a-z]+)*", part.lower()))
    return words - _STOP


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _check_attrs(attrs: dict, need_appearance: bool) -> None:
    keys = ["category", "params"] + (
        ["colour", "pattern", "background"] if need_appearance else []
    )
    missing = [k for k in keys if k not in attrs]
    if missing:
        raise TextError(f"caption attributes lack {missing}; got keys {sorted(attrs)}")
    if need_appearance:
        _check_appearance(attrs["pattern"], attrs["background"])


def _check_appearance(pattern: str, background: str) -> None:
    if pattern not in PATTERN_WORDS:
        raise TextError(f"unknown pattern {pattern!r}")
    if background not in BACKGROUND_PHRASES:
        raise TextError(f"unknown background {background!r}")


def _shape_fields(attrs: dict, rng: np.random.Generator, max_words: int) -> dict:
    phrases = shape_phrases(attrs["category"], attrs["params"])
    names = list(phrases)
    k = int(rng.integers(1, min(max_words, len(names)) + 1))
    chosen = [names[i] for i in sorted(rng.choice(len(names), size=k, replace=False))]
    withs = [phrases[n][0] for n in chosen]
    if len(withs) == 1:
        shape = withs[0]
    else:
        shape = ", ".join(withs[:-1]) + " and " + withs[-1]
    adjs = [phrases[n][1] for n in names if phrases[n][1]]
    return {"shape": shape, "shape_adj": _pick(rng, adjs) if adjs else None}


def _appearance_fields(attrs: dict, rng: np.random.Generator) -> dict:
    adjs, nouns = PATTERN_WORDS[attrs["pattern"]]
    return {
        "colour": str(attrs["colour"]),
        "pattern_adj": _pick(rng, adjs),
        "pattern_noun": _pick(rng, nouns),
        "bg": _pick(rng, BACKGROUND_PHRASES[attrs["background"]]),
    }


def _fill(template: str, fields: dict) -> str:
    text = template.format(**fields)
    return re.sub(r"\s+", " ", text).strip()


def caption(attrs: dict, rng: np.random.Generator, max_shape_words: int = 3) -> str:
    """One caption of a photo (chapter 01 and 02).

    Args:
        attrs: a photo's attributes (as in ``world.json``): ``category``,
            ``params``, ``colour``, ``pattern``, ``background``.
        rng: random generator choosing template, paraphrases and shape words.
        max_shape_words: at most this many shape phrases (at least one is used).

    Returns:
        e.g. "a red striped shoe with a high heel on grass".
    """
    _check_attrs(attrs, need_appearance=True)
    fields = {"noun": _NOUNS[attrs["category"]]}
    fields.update(_appearance_fields(attrs, rng))
    fields.update(_shape_fields(attrs, rng, max_shape_words))
    t = templates()
    if fields["shape_adj"] and rng.random() < 0.25:
        return _fill(_pick(rng, t["photo_adj"]), fields)
    return _fill(_pick(rng, t["photo"]), fields)


def partial_caption(
    attrs: dict, rng: np.random.Generator, max_shape_words: int = 2
) -> str:
    """A short caption naming only some of a photo's attributes (chapter 02).

    One template of the ``[photo_partial]`` section, drawn uniformly: it names the
    category and any subset of colour, pattern, shape words and background
    (e.g. "a red chair", "a striped shoe on grass"). Pretraining mixes these with
    full captions so that short prompts lie where the text encoder has been.
    """
    _check_attrs(attrs, need_appearance=True)
    fields = {"noun": _NOUNS[attrs["category"]]}
    fields.update(_appearance_fields(attrs, rng))
    fields.update(_shape_fields(attrs, rng, max_shape_words))
    return _fill(_pick(rng, templates()["photo_partial"]), fields)


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", text) is not None


def _description_base(
    attrs: dict, kind: str
) -> tuple[set[tuple[str, str]], dict[str, tuple[str, str | None]]]:
    """The facts every description holds (kind, category) and the image's shape
    phrases, after checking ``kind`` and the attributes."""
    if kind not in ("photo", "drawing"):
        raise TextError(f"kind must be 'photo' or 'drawing', got {kind!r}")
    _check_attrs(attrs, need_appearance=kind == "photo")
    base = {("kind", kind), ("category", str(attrs["category"]))}
    return base, shape_phrases(attrs["category"], attrs["params"])


def caption_description(
    caption: str, attrs: dict, kind: str = "photo"
) -> frozenset[tuple[str, str]]:
    """What a caption says about the image it was written for (chapter 02).

    A set of ``(key, value)`` pairs: always the image kind ("photo" or "drawing")
    and the category; for a photo, its colour, pattern and background when the
    caption names them; and ``("shape:<parameter>", phrase)`` for every binned
    shape word it uses. Read from the text against the image's own attributes,
    so it works for full, short and line-drawing captions alike. A caption
    describes another image when its description is a subset of that image's
    :func:`image_description`.
    """
    out, phrases = _description_base(attrs, kind)
    text = caption.lower()
    if kind == "photo":
        for phrase in BACKGROUND_PHRASES[attrs["background"]]:
            if phrase in text:
                out.add(("background", str(attrs["background"])))
                text = text.replace(phrase, " ")  # "plain", "white" belong to it
                break
        adjs, nouns = PATTERN_WORDS[attrs["pattern"]]
        if any(_has_word(text, w) for w in adjs + nouns):
            out.add(("pattern", str(attrs["pattern"])))
        if _has_word(text, str(attrs["colour"])):
            out.add(("colour", str(attrs["colour"])))
    for name, (phrase, adj) in phrases.items():
        if phrase in text or (adj is not None and _has_word(text, adj)):
            out.add((f"shape:{name}", phrase))
    return frozenset(out)


def image_description(attrs: dict, kind: str = "photo") -> frozenset[tuple[str, str]]:
    """Everything a caption could truly say about an image (chapter 02): the
    full description that :func:`caption_description` is compared with."""
    out, phrases = _description_base(attrs, kind)
    if kind == "photo":
        out |= {(k, str(attrs[k])) for k in ("colour", "pattern", "background")}
    out |= {(f"shape:{name}", phrase) for name, (phrase, _adj) in phrases.items()}
    return frozenset(out)


def line_drawing_caption(
    attrs: dict, rng: np.random.Generator, max_shape_words: int = 3
) -> str:
    """Caption of a clean line drawing: category and shape words, no appearance
    (e.g. "a line drawing of a chair with a high back")."""
    _check_attrs(attrs, need_appearance=False)
    fields = {"noun": _NOUNS[attrs["category"]]}
    fields.update(_shape_fields(attrs, rng, max_shape_words))
    t = templates()
    if fields["shape_adj"] and rng.random() < 0.25:
        return _fill(_pick(rng, t["line_drawing_adj"]), fields)
    return _fill(_pick(rng, t["line_drawing"]), fields)


def appearance_phrase(attrs: dict, rng: np.random.Generator) -> str:
    """The text half of a duet query: colour, pattern and background only
    (e.g. "in red with stripes on grass"); no category noun, no shape word."""
    missing = [k for k in ("colour", "pattern", "background") if k not in attrs]
    if missing:
        raise TextError(f"appearance attributes lack {missing}")
    _check_appearance(attrs["pattern"], attrs["background"])
    return _fill(_pick(rng, templates()["appearance"]), _appearance_fields(attrs, rng))


def combination_captions(
    category: str, colour: str, pattern: str, background: str
) -> list[str]:
    """Every photo caption the world's templates write for one attribute
    combination, over all of the category's shape words (chapter 02).

    The ``[photo]`` and ``[photo_adj]`` templates are filled with each binned shape
    phrase (and adjective) of ``category`` and the first paraphrase of the pattern
    and background words. No particular shape is named more than another, so the
    mean of their embeddings stands for the combination itself: the class prompts
    of the caption-style zero-shot probe
    (:func:`duet_lib.probes.joint_attribute_predictions`).

    Returns:
        The distinct captions, sorted.

    Raises:
        TextError: an unknown category, pattern or background.
    """
    _spec_map(category)  # raises on an unknown category
    _check_appearance(pattern, background)
    levels = [lv for lvs in SHAPE_WORDS[category].values() for lv in lvs if lv]
    fields = {
        "noun": _NOUNS[category],
        "colour": str(colour),
        "pattern_adj": PATTERN_WORDS[pattern][0][0],
        "pattern_noun": PATTERN_WORDS[pattern][1][0],
        "bg": BACKGROUND_PHRASES[background][0],
    }
    out = set()
    for section in ("photo", "photo_adj"):
        for template in templates()[section]:
            for phrase, adjective in levels:
                if "{shape_adj}" in template and not adjective:
                    continue
                out.add(
                    _fill(template, {**fields, "shape": phrase, "shape_adj": adjective})
                )
    return sorted(out)
