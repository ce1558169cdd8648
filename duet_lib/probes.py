"""What a CLIP knows about the world: zero-shot probes and retrieval gates (chapter 02).

Every later chapter rests on a backbone whose photo features carry both appearance
(colour, pattern, background, category) and *shape*. These probes measure both on
held-out photos:

- :func:`attribute_probes`: zero-shot classification of category, colour, pattern
  and background from prompts, on photos of held-out shapes (optionally only held-out
  attribute combinations).
- :func:`joint_attribute_predictions`: the same four attributes read at once, from
  caption-style prompts over every attribute combination of the world.
- :func:`colour_in_context`: the colour probe again, with each photo's own caption
  (only its colour word varied) as the prompt instead of a short one.
- :func:`same_shape_retrieval`: photo → photo retrieval of the same shape in another
  appearance (the shape gate; chance is 1 / number of shapes).
- :func:`sketch_to_photo_zero_shot`: sketch → photo retrieval with no training on
  sketches (what the duet must improve).
- :func:`text_to_photo_retrieval`: caption → photo retrieval of held-out attribute
  combinations.
- :func:`zero_shot_phrases`: the caption-style reading written back as an appearance
  phrase per photo ("in red with stripes on grass"): self-labelled words for the
  duet's optional L_words (chapter 09), no dataset text involved.

Ranks are pessimistic (:mod:`duet_lib.metrics`): ties count against the query.
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from duet_lib.data.framing import load_photo
from duet_lib.data.pairs import sketch_array, square_resize
from duet_lib.data.records import SketchPhotoSet, SketchRecord
from duet_lib.data.world_text import appearance_phrase, combination_captions
from duet_lib.metrics import acc_at_k, attribute_at_1, ranks_pessimistic
from duet_lib.models.clip import ClipBundle
from duet_lib.models.text_encoding import encode_text

# Prompt templates of the zero-shot probes; "{}" is the class word. Our choice,
# phrased like the world's captions.
PROBE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "category": ("a photo of a {}", "a {}"),
    "colour": ("a {} {noun}", "a {noun} in {}"),
    "pattern": ("a {} {noun}",),
    "background": ("a {noun} {}",),
}
PATTERN_PROMPT = {
    "plain": "plain",
    "striped": "striped",
    "dotted": "dotted",
    "checked": "checked",
    "zigzag": "zigzag",
}
BACKGROUND_PROMPT = {
    "plain": "on a white background",
    "grass": "on grass",
    "floor": "on a wooden floor",
    "sand": "on sand",
    "tiles": "on a tiled floor",
}


def photo_arrays(ws: SketchPhotoSet, photo_ids: Sequence[str], size: int) -> np.ndarray:
    """Photos of ``photo_ids`` as (N, size, size, 3) uint8 (framed to their
    content when ``ws.framing`` is set), resized and centre-cropped as the training
    data are (:func:`duet_lib.data.pairs.square_resize`)."""
    return np.stack(
        [square_resize(load_photo(ws.photos[p], ws.framing), size) for p in photo_ids]
    )


def sketch_arrays(
    records: Sequence[SketchRecord], size: int, line_width: float = 3.0
) -> np.ndarray:
    """Sketches as (N, size, size, 3) uint8, drawn as the training data are
    (:func:`duet_lib.data.pairs.sketch_array` without augmentation: vector
    sketches rasterised with strokes ``line_width`` canvas pixels wide, raster
    sketches padded to a square with white and resized)."""
    return np.stack([sketch_array(rec, size, line_width=line_width) for rec in records])


@torch.no_grad()
def embed_images(
    bundle: ClipBundle, images: np.ndarray, batch_size: int = 256
) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> L2-normalised image embeddings (N, E) on the CPU."""
    model = bundle.model
    was_training = model.training
    model.eval()
    outs = []
    for i in range(0, len(images), batch_size):
        x = bundle.preprocess(list(images[i : i + batch_size]))
        outs.append(F.normalize(model.encode_image(x), dim=-1).float().cpu())
    model.train(was_training)
    return torch.cat(outs)


@torch.no_grad()
def embed_texts(
    bundle: ClipBundle, texts: Sequence[str], batch_size: int = 512
) -> torch.Tensor:
    """Sentences -> L2-normalised text embeddings (N, E) on the CPU."""
    was_training = bundle.model.training
    bundle.model.eval()
    outs = [
        encode_text(bundle, list(texts[i : i + batch_size]), normalize=True)
        .float()
        .cpu()
        for i in range(0, len(texts), batch_size)
    ]
    bundle.model.train(was_training)
    return torch.cat(outs)


def class_embeddings(
    bundle: ClipBundle, classes: Sequence[str], prompts: dict[str, list[str]]
) -> torch.Tensor:
    """One embedding per class: the normalised mean of its prompts' embeddings."""
    rows = []
    for c in classes:
        emb = embed_texts(bundle, prompts[c])
        rows.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(rows)


def _prompts(
    attribute: str, classes: Sequence[str], nouns: Sequence[str]
) -> dict[str, list[str]]:
    templates = PROBE_TEMPLATES[attribute]
    out: dict[str, list[str]] = {}
    for c in classes:
        word = {"pattern": PATTERN_PROMPT, "background": BACKGROUND_PROMPT}.get(
            attribute, {}
        ).get(c, c)
        if attribute == "category":
            out[c] = [t.format(word) for t in templates]
        else:
            out[c] = [t.format(word, noun=n) for t in templates for n in nouns]
    return out


def attribute_predictions(
    bundle: ClipBundle,
    ws: SketchPhotoSet,
    photo_ids: Sequence[str],
    attribute: str,
    image_emb: torch.Tensor | None = None,
) -> tuple[list[str], list[str], list[str]]:
    """Zero-shot class of one attribute for every photo (chapter 02).

    Each photo gets the class whose prompt embedding (the normalised mean over the
    probe templates and the world's nouns) is nearest to the photo's embedding.

    Returns:
        ``(classes, truth, predicted)``: the sorted class names of the world, and
        per photo its true and its predicted class.
    """
    if not photo_ids:
        raise ValueError("attribute probes need at least one photo")
    if attribute not in PROBE_TEMPLATES:
        raise ValueError(
            f"unknown attribute {attribute!r}; valid: {', '.join(PROBE_TEMPLATES)}"
        )
    if image_emb is None:
        image_emb = embed_images(bundle, photo_arrays(ws, photo_ids, bundle.image_size))
    nouns = sorted({ws.attributes[p]["category"] for p in ws.attributes})
    classes = sorted({ws.attributes[p][attribute] for p in ws.attributes})
    text = class_embeddings(bundle, classes, _prompts(attribute, classes, nouns))
    pred = (image_emb @ text.t()).argmax(1).tolist()
    truth = [ws.attributes[p][attribute] for p in photo_ids]
    return classes, truth, [classes[i] for i in pred]


#: Attributes the caption-style probe classifies jointly, in combination order.
JOINT_ATTRIBUTES: tuple[str, ...] = ("colour", "category", "pattern", "background")


def caption_class_embeddings(
    bundle: ClipBundle,
    ws: SketchPhotoSet,
    per_class: int | None = None,
    seed: int = 0,
) -> tuple[dict[str, list[str]], list[tuple[str, ...]], torch.Tensor]:
    """Class embeddings of the caption-style probe (chapter 02).

    The classes are all (colour, category, pattern, background) combinations of
    the world (:data:`JOINT_ATTRIBUTES` order). Each class embedding is the
    normalised mean of the embeddings of the captions
    :func:`~duet_lib.data.world_text.combination_captions` writes for it.

    Args:
        per_class: use at most this many captions per class (a seeded random
            subset; None: all of them, about 170).
        seed: seed of that subset.

    Returns:
        ``(values, combos, emb)``: the sorted values of each attribute, the
        combinations, and their (C, E) embeddings.
    """
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class must be >= 1 or None, got {per_class!r}")
    values = {
        a: sorted({str(ws.attributes[p][a]) for p in ws.attributes})
        for a in JOINT_ATTRIBUTES
    }
    combos = list(itertools.product(*(values[a] for a in JOINT_ATTRIBUTES)))
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    owner: list[int] = []
    for i, (colour, category, pattern, background) in enumerate(combos):
        captions = combination_captions(category, colour, pattern, background)
        if per_class is not None and len(captions) > per_class:
            keep = np.sort(rng.choice(len(captions), per_class, replace=False))
            captions = [captions[k] for k in keep]
        texts += captions
        owner += [i] * len(captions)
    emb = embed_texts(bundle, texts)  # (T, E), each row unit length
    sums = torch.zeros(len(combos), emb.shape[1]).index_add_(
        0, torch.tensor(owner), emb
    )
    return values, combos, F.normalize(sums, dim=-1)  # the mean's direction


def joint_attribute_predictions(
    bundle: ClipBundle,
    ws: SketchPhotoSet,
    photo_ids: Sequence[str],
    image_emb: torch.Tensor | None = None,
    per_class: int | None = None,
    seed: int = 0,
    classes: tuple[dict[str, list[str]], list[tuple[str, ...]], torch.Tensor]
    | None = None,
) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """Caption-style zero-shot reading of every attribute at once (chapter 02).

    Each photo is read as the nearest class of :func:`caption_class_embeddings`
    (every colour, category, pattern and background combination, described by
    caption-style prompts that look like what the text encoder was trained on; no
    photo's own caption is used); its four attributes are that class's. This is
    CLIP's zero-shot protocol with a prompt ensemble (Radford et al., 2021) over
    the world's joint label space.

    Args:
        per_class, seed: passed to :func:`caption_class_embeddings`.
        classes: its result, to reuse across calls.

    Returns:
        ``{attribute: (classes, truth, predicted)}`` for each of
        :data:`JOINT_ATTRIBUTES`, as :func:`attribute_predictions` returns.
    """
    if not photo_ids:
        raise ValueError("attribute probes need at least one photo")
    if classes is None:
        classes = caption_class_embeddings(bundle, ws, per_class, seed)
    values, combos, class_emb = classes
    if image_emb is None:
        image_emb = embed_images(bundle, photo_arrays(ws, photo_ids, bundle.image_size))
    best = (image_emb @ class_emb.t()).argmax(1).tolist()
    out = {}
    for j, attribute in enumerate(JOINT_ATTRIBUTES):
        truth = [str(ws.attributes[p][attribute]) for p in photo_ids]
        out[attribute] = (values[attribute], truth, [combos[b][j] for b in best])
    return out


def zero_shot_phrases(
    bundle: ClipBundle,
    ws: SketchPhotoSet,
    photo_ids: Sequence[str],
    *,
    seed: int = 0,
    per_class: int | None = None,
    classes: tuple[dict[str, list[str]], list[tuple[str, ...]], torch.Tensor]
    | None = None,
) -> dict[str, str]:
    """An appearance phrase per photo, written from the CLIP's own zero-shot reading.

    Each photo's colour, pattern and background are read by
    :func:`joint_attribute_predictions` (caption-style prompts over every
    combination of the world's vocabulary; no photo's own caption or attributes are
    used) and written as a duet-style phrase by
    :func:`~duet_lib.data.world_text.appearance_phrase`, its template drawn from a
    generator seeded with ``seed`` and the photo id, so each photo's phrase does not
    depend on which other photos are labelled or in what order.
    These are the self-labelled words of the duet's optional L_words (chapter 09):
    text the model writes for itself, so the method still trains on sketch–photo
    pairs alone. Where the reading is wrong, so is the phrase (the caller can
    measure how often on the world, whose true attributes are known).

    Args:
        bundle: the frozen CLIP that reads the photos (before any training).
        ws: a dataset with world attributes (their vocabulary names the classes).
        photo_ids: photos to label.
        seed: seed of the phrase templates.
        per_class, classes: passed to :func:`joint_attribute_predictions`.

    Returns:
        photo id -> phrase.

    Raises:
        ValueError: no photos, or a dataset without world attributes.
    """
    if not photo_ids:
        raise ValueError("zero_shot_phrases needs at least one photo")
    if not ws.attributes or any(p not in ws.attributes for p in photo_ids):
        raise ValueError(
            "self-labelled phrases need a dataset with world attributes (their "
            "colour, pattern and background vocabulary names the classes); "
            f"{ws.name!r} has none for some of the photos"
        )
    reading = joint_attribute_predictions(
        bundle, ws, list(photo_ids), per_class=per_class, classes=classes
    )
    out = {}
    for i, pid in enumerate(photo_ids):
        attrs = {a: reading[a][2][i] for a in ("colour", "pattern", "background")}
        rng = np.random.default_rng([seed, zlib.crc32(pid.encode("utf-8"))])
        out[pid] = appearance_phrase(attrs, rng)
    return out


def attribute_probes(
    bundle: ClipBundle,
    ws: SketchPhotoSet,
    photo_ids: Sequence[str],
    attributes: Sequence[str] = ("category", "colour", "pattern", "background"),
    image_emb: torch.Tensor | None = None,
    prompts: str = "short",
    per_class: int | None = None,
    classes: tuple[dict[str, list[str]], list[tuple[str, ...]], torch.Tensor]
    | None = None,
) -> dict[str, float]:
    """Zero-shot accuracy per attribute on ``photo_ids`` (world attributes needed).

    Args:
        prompts: "short": one attribute at a time, class prompts such as "a red
            shoe" averaged over the world's nouns (:func:`attribute_predictions`);
            "captions": all attributes at once from caption-style prompts
            (:func:`joint_attribute_predictions`).
        per_class: with "captions", at most this many captions per class.
        classes: with "captions", precomputed :func:`caption_class_embeddings`.

    Returns:
        ``{"<attribute>": accuracy, "<attribute>_chance": 1/C}``.
    """
    if not photo_ids:
        raise ValueError("attribute_probes needs at least one photo")
    if prompts not in ("short", "captions"):
        raise ValueError(f"prompts must be 'short' or 'captions', got {prompts!r}")
    unknown = [a for a in attributes if a not in PROBE_TEMPLATES]
    if unknown:
        raise ValueError(
            f"unknown attribute(s) {unknown}; valid: {', '.join(PROBE_TEMPLATES)}"
        )
    if image_emb is None:
        image_emb = embed_images(bundle, photo_arrays(ws, photo_ids, bundle.image_size))
    if prompts == "captions":
        joint = joint_attribute_predictions(
            bundle, ws, photo_ids, image_emb, per_class=per_class, classes=classes
        )
    result: dict[str, float] = {}
    for attribute in attributes:
        if prompts == "captions":
            classes, truth, pred = joint[attribute]
        else:
            classes, truth, pred = attribute_predictions(
                bundle, ws, photo_ids, attribute, image_emb
            )
        correct = [p == t for p, t in zip(pred, truth, strict=True)]
        result[attribute] = float(np.mean(correct))
        result[f"{attribute}_chance"] = 1.0 / len(classes)
    return result


def colour_swaps(caption: str, colour: str, colours: Sequence[str]) -> list[str] | None:
    """``caption`` once per entry of ``colours``, with the word ``colour`` replaced.

    Returns None when ``colour`` is not a whole word of the caption.
    """
    pattern = re.compile(rf"\b{re.escape(colour)}\b")
    if not pattern.search(caption):
        return None
    return [pattern.sub(c, caption) for c in colours]


def colour_in_context(
    bundle: ClipBundle,
    ws: SketchPhotoSet,
    photo_ids: Sequence[str],
    image_emb: torch.Tensor | None = None,
) -> dict[str, float]:
    """Zero-shot colour with the photo's own caption as context (chapter 02).

    Each photo's first stored caption is written once per colour of the world,
    only the colour word changed (:func:`colour_swaps`), and the photo is read
    as the colour of the nearest variant. The prompt is then in the style the
    text encoder was trained on, so comparing with the short prompts of
    :func:`attribute_probes` separates what the image features lack from what
    the prompt lacks. Photos whose caption does not name the colour as a word
    are skipped.

    Returns:
        {"colour": accuracy, "n": number of photos used}.
    """
    if not photo_ids:
        raise ValueError("colour_in_context needs at least one photo")
    if image_emb is None:
        image_emb = embed_images(bundle, photo_arrays(ws, photo_ids, bundle.image_size))
    colours = sorted({ws.attributes[p]["colour"] for p in ws.attributes})
    rows, truth, variants = [], [], []
    for row, pid in enumerate(photo_ids):
        attrs = ws.attributes[pid]
        swapped = colour_swaps(attrs["captions"][0], attrs["colour"], colours)
        if swapped is not None:
            rows.append(row)
            truth.append(attrs["colour"])
            variants += swapped
    if not rows:
        raise ValueError("no caption of these photos names its colour as a word")
    text = embed_texts(bundle, variants).view(len(rows), len(colours), -1)
    scores = (text @ image_emb[rows].unsqueeze(-1)).squeeze(-1)  # (n, C)
    correct = [
        colours[i] == t for i, t in zip(scores.argmax(1).tolist(), truth, strict=True)
    ]
    return {"colour": float(np.mean(correct)), "n": len(correct)}


def _variants_by_shape(ws: SketchPhotoSet, split: str) -> dict[str, list[str]]:
    by_shape: dict[str, list[str]] = {}
    for pid in sorted(ws.attributes):
        if ws.photo_split.get(pid) == split:
            by_shape.setdefault(ws.attributes[pid]["shape_id"], []).append(pid)
    return by_shape


def same_shape_retrieval(
    bundle: ClipBundle,
    ws: SketchPhotoSet,
    split: str = "test",
    max_shapes: int | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Photo → photo: query variant v0 of each shape, gallery variant v1 of every shape.

    The two photos share the geometry and differ in colour, pattern, background,
    materials and pose jitter, so only shape can match them. Chance Acc@1 = 1/N.
    """
    by_shape = _variants_by_shape(ws, split)
    shapes = [s for s, v in by_shape.items() if len(v) >= 2]
    if max_shapes is not None:
        shapes = shapes[:max_shapes]
    if len(shapes) < 2:
        raise ValueError(f"split {split!r} has fewer than two shapes with two variants")
    size = bundle.image_size
    q = embed_images(bundle, photo_arrays(ws, [by_shape[s][0] for s in shapes], size))
    g = embed_images(bundle, photo_arrays(ws, [by_shape[s][1] for s in shapes], size))
    ranks = ranks_pessimistic(q @ g.t(), torch.arange(len(shapes)))
    out = acc_at_k(ranks, ks)
    out["n_gallery"] = len(shapes)
    out["chance@1"] = 1.0 / len(shapes)
    return out


def sketch_to_photo_zero_shot(
    bundle: ClipBundle,
    ws: SketchPhotoSet,
    split: str = "test",
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """FG-SBIR with the pretrained backbone as it is: sketch → its paired photo.

    The gallery is the unique photos paired with the split's sketches.
    """
    records = ws.sketches_in(split)
    gallery = ws.photo_ids(split)
    if not records:
        raise ValueError(f"split {split!r} has no sketches")
    index = {p: i for i, p in enumerate(gallery)}
    size = bundle.image_size
    q = embed_images(bundle, sketch_arrays(records, size))
    g = embed_images(bundle, photo_arrays(ws, gallery, size))
    target = torch.tensor([index[r.photo_id] for r in records])
    out = acc_at_k(ranks_pessimistic(q @ g.t(), target), ks)
    out["n_gallery"] = len(gallery)
    out["chance@1"] = 1.0 / len(gallery)
    return out


def text_to_photo_retrieval(
    bundle: ClipBundle,
    ws: SketchPhotoSet,
    photo_ids: Sequence[str],
    gallery_ids: Sequence[str],
) -> dict[str, float]:
    """Caption → photo on ``photo_ids`` against ``gallery_ids``.

    Captions name coarse shape bins and the appearance, not the exact instance, so
    exact-photo accuracy is low by design; what matters is whether the top photo has
    the caption's colour, pattern and category (``<attribute>@1``).
    """
    if not photo_ids:
        raise ValueError("text_to_photo_retrieval needs at least one query photo")
    captions = [ws.attributes[p]["captions"][0] for p in photo_ids]
    q = embed_texts(bundle, captions)
    g = embed_images(bundle, photo_arrays(ws, gallery_ids, bundle.image_size))
    sim = q @ g.t()
    out = {}
    for attribute in ("category", "colour", "pattern", "background"):
        qa = [ws.attributes[p][attribute] for p in photo_ids]
        ga = [ws.attributes[p][attribute] for p in gallery_ids]
        out[f"{attribute}@1"] = attribute_at_1(sim, qa, ga)
    return out
