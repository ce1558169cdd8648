"""Training and evaluation samples for the duet: sketch, photo, hard negatives.

Chapter 09 trains the duet on these. :class:`SketchPhotoPairs` is a torch
``Dataset`` over the sketches of one split of a :class:`SketchPhotoSet`; each item
holds the rasterised sketch, its paired photo p+, negative photos p- and the
photo at the decoder's size (the target of L_rec), plus integer indices for
losses and metrics.

Negatives, per kind (:data:`NEGATIVE_KINDS`):

``same_shape``
    the same shape in another appearance: the text has to supply what differs.
``same_appearance``
    another shape in the same appearance: the sketch has to supply what differs.
    Among the photos of other shapes (of the same category when there are any)
    the candidates are those that share the most of colour, pattern and
    background, in that order of importance.
``random``
    any photo of another shape.
``near_shape``
    a shape the model confuses with this one: one of the photos of other shapes
    that a table (:meth:`SketchPhotoPairs.set_near_shapes`) names for the photo;
    :func:`duet_lib.train.train_duet` mines it once, before training, from the
    backbone's own sketch-to-photo ranking (our option: fine-grained negatives
    that work on real data too).

The hard kinds need the world's attributes (``SketchPhotoSet.attributes`` with
``shape_id``, ``category``, ``colour``, ``pattern``, ``background``). Without them
(real data such as ChairV2) every photo is its own shape and both hard kinds
fall back to ``random``.

Determinism. All randomness of item ``i`` in epoch ``e`` (sketch augmentation,
choice of negatives) is drawn from ``numpy.random.default_rng([seed, e, i])``, so
an item does not depend on the order of loading, on the number of workers or on
where an interrupted run resumes. Photos are decoded and resized once and kept in
memory (:class:`PhotoCache`); the galleries of sketch datasets are small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from duet_lib.data.framing import load_photo
from duet_lib.data.loaders import load_sketch_image
from duet_lib.data.records import SPLITS, SketchPhotoSet, SketchRecord
from duet_lib.data.strokes import CANVAS, rasterize, split_strokes

__all__ = [
    "NEGATIVE_KINDS",
    "PhotoCache",
    "SketchAugment",
    "SketchPhotoPairs",
    "augment_strokes",
    "normalize_images",
    "sketch_array",
    "square_resize",
]

#: Kinds of negative photos an item can carry.
NEGATIVE_KINDS = ("same_shape", "same_appearance", "random", "near_shape")

_APPEARANCE_KEYS = ("colour", "pattern", "background")


# --------------------------------------------------------------------------- images


def square_resize(image: Image.Image, size: int) -> np.ndarray:
    """Shorter side to ``size`` (bicubic), centre crop: (size, size, 3) uint8.

    The same geometry as :meth:`duet_lib.models.clip.ClipBundle.preprocess`.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    w, h = image.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        if (new_w, new_h) != (size, size):
            image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8)


def normalize_images(
    images: np.ndarray | torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """uint8 images (..., S, S, 3) -> CLIP-normalised float32 (..., 3, S, S)."""
    x = torch.tensor(np.ascontiguousarray(images))
    if x.dtype != torch.uint8 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 (..., S, S, 3) images, got {tuple(x.shape)}")
    x = x.movedim(-1, -3).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return x.sub_(m).div_(s)


class PhotoCache:
    """Decoded photos of a dataset, resized once and kept in memory.

    Args:
        dataset: the dataset whose ``photos`` maps photo id -> path.
        image_size: model input side S.
        target_size: side of the reconstruction target (G's output size).

    Memory: (S^2 + T^2) * 3 bytes per photo, about 40 KB at 96 / 64 px.
    """

    def __init__(self, dataset: SketchPhotoSet, image_size: int, target_size: int = 64):
        for name, value in (("image_size", image_size), ("target_size", target_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 8:
                raise ValueError(f"{name} must be an integer >= 8, got {value!r}")
        self.paths: dict[str, Path] = dict(dataset.photos)
        self.framing = dataset.framing
        self.image_size = image_size
        self.target_size = target_size
        self._model: dict[str, np.ndarray] = {}
        self._target: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._model)

    def _load(self, photo_id: str) -> None:
        if photo_id not in self.paths:
            raise KeyError(f"photo {photo_id!r} is not in the dataset")
        image = load_photo(self.paths[photo_id], self.framing)
        self._model[photo_id] = square_resize(image, self.image_size)
        self._target[photo_id] = square_resize(image, self.target_size)

    def preload(self, photo_ids: Sequence[str]) -> None:
        """Decode and resize the given photos now (before forking data workers)."""
        for pid in photo_ids:
            if pid not in self._model:
                self._load(pid)

    def model_image(self, photo_id: str) -> np.ndarray:
        """(S, S, 3) uint8 photo at the model's input size."""
        if photo_id not in self._model:
            self._load(photo_id)
        return self._model[photo_id]

    def target_image(self, photo_id: str) -> np.ndarray:
        """(T, T, 3) uint8 photo at the reconstruction target size."""
        if photo_id not in self._target:
            self._load(photo_id)
        return self._target[photo_id]


# ------------------------------------------------------------------------- sketches


@dataclass(frozen=True)
class SketchAugment:
    """Light sketch augmentation for training (ours).

    Attributes:
        stroke_drop: probability of dropping each stroke (vector sketches only;
            at least half of the strokes, and never fewer than one, are kept).
        rotate_deg: maximum rotation in degrees (uniform in +-).
        scale: maximum relative scale change (uniform in 1 +- scale).
        translate: maximum shift as a fraction of the canvas (uniform in +-).
    """

    stroke_drop: float = 0.1
    rotate_deg: float = 5.0
    scale: float = 0.1
    translate: float = 0.05

    def __post_init__(self) -> None:
        for name, hi in (
            ("stroke_drop", 0.9),
            ("rotate_deg", 45.0),
            ("scale", 0.5),
            ("translate", 0.5),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ValueError(f"SketchAugment.{name} must be a number, got {v!r}")
            if not math.isfinite(v) or not 0 <= v <= hi:
                raise ValueError(f"SketchAugment.{name} must lie in [0, {hi}], got {v}")

    def matrix(self, rng: np.random.Generator, centre: float) -> np.ndarray:
        """A random 2x3 affine map about (centre, centre) in pixel coordinates."""
        angle = math.radians(rng.uniform(-self.rotate_deg, self.rotate_deg))
        zoom = rng.uniform(1.0 - self.scale, 1.0 + self.scale)
        shift = rng.uniform(-self.translate, self.translate, size=2) * 2 * centre
        c, s = math.cos(angle) * zoom, math.sin(angle) * zoom
        lin = np.array([[c, -s], [s, c]])
        offset = np.array([centre, centre]) + shift - lin @ np.array([centre, centre])
        return np.concatenate([lin, offset[:, None]], axis=1)


def augment_strokes(
    strokes: np.ndarray, augment: SketchAugment, rng: np.random.Generator
) -> np.ndarray:
    """Drop strokes at random and apply a random affine map: (N, 3) -> (N', 3)."""
    parts = split_strokes(strokes)
    if augment.stroke_drop > 0 and len(parts) > 1:
        keep = rng.random(len(parts)) >= augment.stroke_drop
        minimum = max(1, len(parts) // 2)
        if keep.sum() < minimum:
            # keep the longest strokes until the minimum is reached
            order = np.argsort([-len(p) for p in parts], kind="stable")
            for i in order:
                if keep.sum() >= minimum:
                    break
                keep[i] = True
        parts = [p for p, k in zip(parts, keep, strict=True) if k]
    mat = augment.matrix(rng, CANVAS / 2)
    rows = []
    for part in parts:
        xy = part @ mat[:, :2].T + mat[:, 2]
        pen = np.zeros((len(xy), 1))
        pen[-1, 0] = 1.0
        rows.append(np.concatenate([xy, pen], axis=1))
    return np.concatenate(rows, axis=0)


def sketch_array(
    record: SketchRecord,
    size: int,
    *,
    augment: SketchAugment | None = None,
    rng: np.random.Generator | None = None,
    line_width: float = 3.0,
) -> np.ndarray:
    """The sketch of ``record`` as (size, size, 3) uint8, optionally augmented.

    Vector sketches are drawn with :func:`~duet_lib.data.strokes.rasterize` at the
    model size (the same drawing the tiny CLIP's line drawings use); raster
    sketches are read with :func:`~duet_lib.data.loaders.load_sketch_image`.
    Augmentation moves stroke coordinates before drawing (vector) or warps the
    image with a white fill (raster; stroke dropping needs vectors).
    """
    if augment is not None and rng is None:
        raise ValueError("augmentation needs an rng")
    if record.strokes is not None:
        strokes = record.strokes
        if augment is not None:
            strokes = augment_strokes(strokes, augment, rng)
        image = rasterize(strokes, size=size, line_width=line_width)
    else:
        image = load_sketch_image(record, size=size, line_width=line_width)
        if augment is not None:
            mat = augment.matrix(rng, size / 2)
            full = np.vstack([mat, [0.0, 0.0, 1.0]])
            inv = np.linalg.inv(full)[:2].ravel()  # PIL maps output -> input
            image = image.transform(
                (size, size),
                Image.Transform.AFFINE,
                tuple(float(v) for v in inv),
                resample=Image.Resampling.BILINEAR,
                fillcolor=(255, 255, 255),
            )
    return np.asarray(image, dtype=np.uint8)


# -------------------------------------------------------------------------- dataset


class SketchPhotoPairs(Dataset):
    """Sketch/photo samples of one split, with negatives (chapter 09).

    Args:
        dataset: the sketches, photos and pairing.
        split: "train", "val" or "test".
        image_size: model input side S (sketches and photos).
        mean: CLIP normalisation mean (RGB).
        std: CLIP normalisation standard deviation (RGB).
        target_size: side of the L_rec target photo.
        negatives: kinds from :data:`NEGATIVE_KINDS`, one negative photo each,
            in this order.
        augment: sketch augmentation, or None (no augmentation; evaluation).
        seed: seed of every random choice (see the module docstring).
        line_width: stroke width of vector sketches, in canvas pixels.
        cache: a shared :class:`PhotoCache` (must match the sizes), or None.

    Items are dicts:

    ==================  =======================  ================================
    key                 shape / type             content
    ==================  =======================  ================================
    ``sketch``          (3, S, S) float32        normalised sketch
    ``photo``           (3, S, S) float32        normalised paired photo p+
    ``negatives``       (M, 3, S, S) float32     normalised negatives, M kinds
    ``target``          (3, T, T) float32        p+ in [0, 1] for L_rec
    ``sketch_index``    int                      index into :attr:`records`
    ``photo_index``     int                      index of p+ in :attr:`photo_ids`
    ``neg_index``       (M,) int64               indices of the negatives
    ``shape_index``     int                      index of p+'s shape in
                                                 :attr:`shape_ids`
    ==================  =======================  ================================

    Raises:
        ValueError: unknown split or negative kind, a split without sketches, or
            a sketch whose photo is missing.
    """

    def __init__(
        self,
        dataset: SketchPhotoSet,
        split: str,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        target_size: int = 64,
        negatives: Sequence[str] = ("same_shape", "same_appearance"),
        augment: SketchAugment | None = None,
        seed: int = 0,
        line_width: float = 3.0,
        cache: PhotoCache | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        negatives = tuple(negatives)
        for kind in negatives:
            if kind not in NEGATIVE_KINDS:
                raise ValueError(
                    f"unknown negative kind {kind!r}; choose from {list(NEGATIVE_KINDS)}"
                )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if augment is not None and not isinstance(augment, SketchAugment):
            raise ValueError("augment must be a SketchAugment or None")
        self.split = split
        self.image_size = int(image_size)
        self.target_size = int(target_size)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.negative_kinds = negatives
        self.augment = augment
        self.seed = seed
        self.line_width = float(line_width)
        self.epoch = 0
        if cache is None:
            cache = PhotoCache(dataset, self.image_size, self.target_size)
        elif (cache.image_size, cache.target_size) != (
            self.image_size,
            self.target_size,
        ):
            raise ValueError(
                f"cache sizes {(cache.image_size, cache.target_size)} differ from "
                f"{(self.image_size, self.target_size)}"
            )
        self.cache = cache

        self.records: list[SketchRecord] = dataset.sketches_in(split)
        if not self.records:
            raise ValueError(f"dataset {dataset.name!r} has no {split} sketches")
        paired = dataset.photo_ids(split)
        missing = [p for p in paired if p not in dataset.photos]
        if missing:
            raise ValueError(
                f"{len(missing)} {split} sketches pair with photos that are not in "
                f"the dataset, e.g. {missing[0]!r}"
            )
        # The photo pool: every photo of the split (gallery-only variants too).
        pool = dict.fromkeys(paired)
        for pid, sp in dataset.photo_split.items():
            if sp == split and pid in dataset.photos:
                pool.setdefault(pid, None)
        #: photo ids of the split's pool; ``photo_index`` points into this list.
        self.photo_ids: list[str] = list(pool)
        self._photo_pos = {p: i for i, p in enumerate(self.photo_ids)}
        self.has_attributes = all(
            pid in dataset.attributes
            and all(
                k in dataset.attributes[pid] for k in ("shape_id", *_APPEARANCE_KEYS)
            )
            for pid in self.photo_ids
        ) and bool(dataset.attributes)
        attrs = dataset.attributes if self.has_attributes else {}
        shapes = [attrs[p]["shape_id"] if attrs else p for p in self.photo_ids]
        #: shape ids; ``shape_index`` points into this list.
        self.shape_ids: list[str] = list(dict.fromkeys(shapes))
        shape_pos = {s: i for i, s in enumerate(self.shape_ids)}
        self.photo_shape = np.array([shape_pos[s] for s in shapes], dtype=np.int64)
        self.sketch_photo = np.array(
            [self._photo_pos[r.photo_id] for r in self.records], dtype=np.int64
        )
        self._build_candidates(attrs)

    # ------------------------------------------------------------- negatives

    def _build_candidates(self, attrs: dict[str, dict]) -> None:
        """Per pool photo: same-shape and same-appearance candidate indices."""
        n = len(self.photo_ids)
        shape = self.photo_shape
        self._same_shape: list[np.ndarray] = []
        self._same_app: list[np.ndarray] = []
        self._near: np.ndarray | None = None
        if not attrs or not self.negative_kinds:
            return
        cats = _codes([attrs[p].get("category", "") for p in self.photo_ids])
        cols = _codes([attrs[p]["colour"] for p in self.photo_ids])
        pats = _codes([attrs[p]["pattern"] for p in self.photo_ids])
        bgs = _codes([attrs[p]["background"] for p in self.photo_ids])
        index = np.arange(n)
        for i in range(n):
            other = shape != shape[i]
            same = np.flatnonzero((shape == shape[i]) & (index != i))
            self._same_shape.append(same)
            score = (
                8 * (cats == cats[i])
                + 4 * (cols == cols[i])
                + 2 * (pats == pats[i])
                + 1 * (bgs == bgs[i])
            )
            score = np.where(other, score, -1)
            best = score.max() if n else -1
            self._same_app.append(
                np.flatnonzero(score == best) if best >= 0 else same[:0]
            )

    def _random_other(self, photo: int, rng: np.random.Generator) -> int:
        n = len(self.photo_ids)
        shape = self.photo_shape[photo]
        if not (self.photo_shape != shape).any():
            raise ValueError(
                f"the {self.split} split has a single shape; negatives need at least two"
            )
        while True:  # rejection sampling: other shapes are the vast majority
            j = int(rng.integers(n))
            if self.photo_shape[j] != shape:
                return j

    def set_near_shapes(self, table: np.ndarray) -> None:
        """The candidates of ``near_shape`` negatives.

        Args:
            table: (P, k) int indices into :attr:`photo_ids`, one row per pool
                photo: photos of *other* shapes, drawn from uniformly.

        Raises:
            ValueError: a wrong shape, an index outside the pool, or a candidate
                of the row's own shape.
        """
        table = np.asarray(table)
        n = len(self.photo_ids)
        if table.ndim != 2 or table.shape[0] != n or table.shape[1] < 1:
            raise ValueError(
                f"near-shape table must be ({n}, k >= 1), got {table.shape}"
            )
        if not np.issubdtype(table.dtype, np.integer) or (
            table.size and (table.min() < 0 or table.max() >= n)
        ):
            raise ValueError(f"near-shape table must hold photo indices in [0, {n})")
        if (self.photo_shape[table] == self.photo_shape[:, None]).any():
            raise ValueError("near-shape table names a photo of the row's own shape")
        self._near = table.astype(np.int64)

    def _negative(self, kind: str, photo: int, rng: np.random.Generator) -> int:
        if kind == "near_shape":
            if self._near is None:
                raise ValueError(
                    "near_shape negatives need a candidate table: call "
                    "set_near_shapes (train_duet mines one from the backbone)"
                )
            row = self._near[photo]
            return int(row[rng.integers(len(row))])
        if kind == "same_shape" and self._same_shape:
            cands = self._same_shape[photo]
            if len(cands):
                return int(cands[rng.integers(len(cands))])
        elif kind == "same_appearance" and self._same_app:
            cands = self._same_app[photo]
            if len(cands):
                return int(cands[rng.integers(len(cands))])
        return self._random_other(photo, rng)

    # ---------------------------------------------------------------- access

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws items use (as DistributedSampler)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def rng_for(self, index: int) -> np.random.Generator:
        """The generator of item ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def photo_tensor(self, photo_ids: Sequence[str]) -> torch.Tensor:
        """Normalised photos (B, 3, S, S) for the given ids, from the cache."""
        arr = np.stack([self.cache.model_image(p) for p in photo_ids])
        return normalize_images(arr, self.mean, self.std)

    def sketch_tensor(self, indices: Sequence[int]) -> torch.Tensor:
        """Normalised, non-augmented sketches (B, 3, S, S) of the given items."""
        arr = np.stack(
            [
                sketch_array(
                    self.records[i], self.image_size, line_width=self.line_width
                )
                for i in indices
            ]
        )
        return normalize_images(arr, self.mean, self.std)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        if not 0 <= index < len(self.records):
            raise IndexError(f"item {index} outside [0, {len(self.records)})")
        rng = self.rng_for(index)
        record = self.records[index]
        sketch = sketch_array(
            record,
            self.image_size,
            augment=self.augment,
            rng=rng if self.augment is not None else None,
            line_width=self.line_width,
        )
        photo = int(self.sketch_photo[index])
        pid = self.photo_ids[photo]
        neg = [self._negative(kind, photo, rng) for kind in self.negative_kinds]
        size = self.image_size
        neg_images = (
            np.stack([self.cache.model_image(self.photo_ids[j]) for j in neg])
            if neg
            else np.zeros((0, size, size, 3), np.uint8)
        )
        target = torch.from_numpy(self.cache.target_image(pid).copy())
        return {
            "sketch": normalize_images(sketch, self.mean, self.std),
            "photo": normalize_images(self.cache.model_image(pid), self.mean, self.std),
            "negatives": normalize_images(neg_images, self.mean, self.std),
            "target": target.permute(2, 0, 1).float().div_(255.0),
            "sketch_index": index,
            "photo_index": photo,
            "neg_index": torch.tensor(neg, dtype=torch.long),
            "shape_index": int(self.photo_shape[photo]),
        }


def _codes(values: list) -> np.ndarray:
    vocab: dict = {}
    return np.array([vocab.setdefault(v, len(vocab)) for v in values], dtype=np.int64)
