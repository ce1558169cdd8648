"""A classic FG-SBIR reference without deep features: dense HOG and a learned
linear metric (chapter 11).

Before deep networks, fine-grained sketch-based retrieval matched histograms of
oriented gradients (HOG; Dalal and Triggs, CVPR 2005) of the sketch and of the
photo, and learned a ranking on top. Yu et al. ("Sketch Me That Shoe", CVPR 2016)
report such a row, dense HOG with a ranking SVM, beside their Triplet-SN. The book
uses the idea as a reference that owes nothing to web pretraining: if gradient
histograms plus a linear map learned from a few hundred real sketches rank real
photos better than the embedded backbone does, then the backbone's features, not
the amount of sketch data alone, are what hold the book's real-sketch numbers
back.

Our construction (a choice, not Yu et al.'s): HOG from scikit-image on grayscale
images (photos resized; vector sketches drawn with thin strokes at twice the side
and resized down, which softens their lines as a photo's edges are soft); one linear
projection shared by sketches and photos, applied to features centred on the
training mean; trained with an InfoNCE in which each sketch must pick its photo
among all training photos, on six views of the training split (every sketch and
photo also mirrored and zoomed by 0.9 and 1.1, :data:`TRAIN_VIEWS`); the state with
the best validation Acc@1 is kept. At test time sketch and photos are compared in
fourteen views alike (the six training views and eight small shifts,
:data:`TEST_VIEWS`), and the similarity is averaged over the views and over metrics
trained from several seeds (:func:`view_similarity`; chapter 11 uses three). The
test split is never read while training or choosing.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from duet_lib.data.records import SketchPhotoSet, SketchRecord
from duet_lib.failures import _positive_int
from duet_lib.metrics import acc_at_k, ranks_pessimistic
from duet_lib.probes import photo_arrays, sketch_arrays
from duet_lib.views import shift_offsets

__all__ = [
    "TEST_SHIFT",
    "TEST_VIEWS",
    "TRAIN_VIEWS",
    "HogConfig",
    "HogMetric",
    "HogSplit",
    "MetricConfig",
    "hog_features",
    "hog_split",
    "train_hog_metric",
    "view_images",
    "view_similarity",
]


def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class HogConfig:
    """How images become HOG vectors.

    Attributes:
        image_size: side the images are resized (photos) or rasterised
            (sketches) to.
        cell: side of a HOG cell in pixels (``image_size`` must be a multiple).
        orientations: orientation bins (unsigned gradients, 0-180 degrees).
        block: cells per side of a normalisation block (L2-Hys).
        supersample: vector sketches are drawn at this many times
            ``image_size`` and resized down (bicubic), which gives their lines
            soft, photo-like edges (1: drawn at ``image_size``, hard-edged lines).
            Our choice, 2, made on ChairV2's validation split (chapter 11).
        line_width: stroke width of vector sketches in pixels of the 256-pixel
            canvas (the book's sketches elsewhere use 3); with ``supersample`` 2 at
            128 px, 2 draws one-pixel soft lines. Our choice, made on ChairV2's
            validation split (chapter 11).
    """

    image_size: int = 128
    cell: int = 16
    orientations: int = 9
    block: int = 2
    supersample: int = 2
    line_width: float = 2.0

    def __post_init__(self) -> None:
        for name in ("image_size", "cell", "orientations", "block", "supersample"):
            _positive_int(name, getattr(self, name))
        _positive_float("line_width", self.line_width)
        if self.image_size % self.cell:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of cell {self.cell}"
            )
        if self.image_size // self.cell < self.block:
            raise ValueError(
                f"{self.image_size // self.cell} cells per side cannot hold a block "
                f"of {self.block}"
            )

    @property
    def dim(self) -> int:
        """Length of one HOG vector."""
        n = self.image_size // self.cell - self.block + 1
        return n * n * self.block * self.block * self.orientations


def hog_features(images: np.ndarray, cfg: HogConfig = HogConfig()) -> torch.Tensor:
    """HOG vectors of images.

    Args:
        images: (N, S, S, 3) or (N, S, S) uint8 images with S = ``cfg.image_size``.
        cfg: the HOG settings.

    Returns:
        (N, ``cfg.dim``) float32 tensor.

    Raises:
        ValueError: an empty batch, or images of another size or layout.
    """
    from skimage.feature import hog

    arr = np.asarray(images)
    if arr.ndim == 4 and arr.shape[-1] == 3:
        arr = arr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if arr.ndim != 3 or len(arr) == 0:
        raise ValueError(
            f"images must be a non-empty (N, S, S[, 3]) array, got shape {arr.shape}"
        )
    if arr.shape[1:] != (cfg.image_size, cfg.image_size):
        raise ValueError(
            f"images are {arr.shape[1]}x{arr.shape[2]}, the config expects "
            f"{cfg.image_size}x{cfg.image_size}"
        )
    gray = arr.astype(np.float32) / 255.0
    rows = [
        hog(
            g,
            orientations=cfg.orientations,
            pixels_per_cell=(cfg.cell, cfg.cell),
            cells_per_block=(cfg.block, cfg.block),
            block_norm="L2-Hys",
            feature_vector=True,
        )
        for g in gray
    ]
    return torch.from_numpy(np.stack(rows).astype(np.float32))


def _sketch_images(records: Sequence[SketchRecord], cfg: HogConfig) -> np.ndarray:
    """(N, S, S, 3) uint8 sketches, drawn at ``cfg.supersample`` times S and
    resized down (a resize to the same size is a copy)."""
    size = cfg.image_size
    big = sketch_arrays(records, size * cfg.supersample, cfg.line_width)
    return np.stack(
        [
            np.asarray(
                Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC)
            )
            for img in big
        ]
    )


@dataclass
class HogSplit:
    """HOG vectors of one split's FG-SBIR task.

    Attributes:
        sketches: (Q, D) one row per sketch of the split, in ``records`` order
            (with several views of :func:`hog_split`: one block of rows per view).
        photos: (N, D) one row per gallery photo, in ``gallery`` order.
        target: (Q,) index in ``photos`` of each sketch's photo.
        gallery: the photo id of every row of ``photos``.
        views: how many view blocks the rows hold (1: the images as they are).
    """

    sketches: torch.Tensor
    photos: torch.Tensor
    target: torch.Tensor
    gallery: list[str] = field(default_factory=list)
    views: int = 1

    def __post_init__(self) -> None:
        _positive_int("views", self.views)

    def view(self, i: int) -> HogSplit:
        """The rows of view block ``i`` alone (targets index its photos)."""
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.views:
            raise ValueError(f"view must be an index in [0, {self.views}), got {i!r}")
        q, n = len(self.sketches), len(self.photos)
        if q % self.views or n % self.views:
            raise ValueError(
                f"{q} sketch rows and {n} photo rows do not split into "
                f"{self.views} views"
            )
        q, n = q // self.views, n // self.views
        return HogSplit(
            self.sketches[i * q : (i + 1) * q],
            self.photos[i * n : (i + 1) * n],
            self.target[i * q : (i + 1) * q] - i * n,
            self.gallery[i * n : (i + 1) * n],
        )


#: Views of the training split for the classic reference: (mirrored, zoom) pairs,
#: every combination of a left-right mirror and a zoom about the centre of 0.9,
#: 1 or 1.1 (our choice, made on ChairV2's validation split: chapter 11).
TRAIN_VIEWS: tuple[tuple[bool, float], ...] = tuple(
    (mirror, zoom) for mirror in (False, True) for zoom in (0.9, 1.0, 1.1)
)

#: Shift of the test-time views, as a share of the image side (6 pixels at 128).
TEST_SHIFT = 6 / 128

#: Views a query and the gallery are both seen in at test time, the similarity
#: being the mean over views (:func:`view_similarity`): the six training views and
#: the images shifted by :data:`TEST_SHIFT` in eight directions, as
#: (mirrored, zoom, shift right, shift down) tuples. Our choice, made by five-fold
#: cross-validation over ChairV2's training and validation photos (chapter 11).
TEST_VIEWS: tuple[tuple[bool, float, float, float], ...] = tuple(
    (mirror, zoom, 0.0, 0.0) for mirror, zoom in TRAIN_VIEWS
) + tuple(
    (False, 1.0, dx * TEST_SHIFT, dy * TEST_SHIFT) for dx, dy in shift_offsets(1)[1:]
)


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _check_views(
    views: Sequence[Sequence[Any]],
) -> list[tuple[bool, float, float, float]]:
    out = []
    for view in views:
        ok = isinstance(view, tuple | list) and len(view) in (2, 4)
        if ok:
            mirror, zoom, *shift = view
            ok = isinstance(mirror, bool) and _number(zoom) and zoom > 0
            ok = ok and all(_number(d) and abs(d) < 1 for d in shift)
        if not ok:
            raise ValueError(
                "a view is a (mirrored: bool, zoom > 0) pair or a (mirrored, zoom, "
                f"shift right, shift down) tuple with shifts in (-1, 1), got {view!r}"
            )
        dx, dy = (float(d) for d in shift) if shift else (0.0, 0.0)
        out.append((mirror, float(zoom), dx, dy))
    if not out:
        raise ValueError("views must hold at least one (mirrored, zoom) pair")
    return out


def view_images(
    images: np.ndarray, mirror: bool, zoom: float, dx: float = 0.0, dy: float = 0.0
) -> np.ndarray:
    """(N, S, S, 3) uint8 images mirrored left-right and/or zoomed about their
    centre (zoom > 1 enlarges), then shifted by ``dx`` (right) and ``dy`` (down)
    times the side; the border that appears is white."""
    out = images[:, :, ::-1] if mirror else images
    if zoom != 1.0 or dx or dy:
        size = images.shape[1]
        half = size / zoom / 2
        # the input box that fills the output; moving it left moves the content right
        x0 = size / 2 - half - dx * size / zoom
        y0 = size / 2 - half - dy * size / zoom
        box = (x0, y0, x0 + 2 * half, y0 + 2 * half)
        out = np.stack(
            [
                np.asarray(
                    Image.fromarray(np.ascontiguousarray(img)).transform(
                        (size, size),
                        Image.Transform.EXTENT,
                        box,
                        resample=Image.Resampling.BICUBIC,
                        fillcolor=(255, 255, 255),
                    )
                )
                for img in out
            ]
        )
    return np.ascontiguousarray(out)


def hog_split(
    dataset: SketchPhotoSet,
    split: str,
    cfg: HogConfig = HogConfig(),
    records: Sequence[SketchRecord] | None = None,
    gallery: Sequence[str] | None = None,
    views: Sequence[Sequence[Any]] = ((False, 1.0),),
) -> HogSplit:
    """HOG vectors of a split's sketches and gallery photos.

    Args:
        dataset: the data.
        split: "train", "val" or "test".
        cfg: the HOG settings.
        records: the queries (None: the split's sketches); pass a
            :class:`~duet_lib.tasks.RetrievalTask`'s ``data.records`` to rank in
            its order.
        gallery: the photo ids (None: :meth:`SketchPhotoSet.photo_ids`).
        views: (mirrored, zoom) pairs or (mirrored, zoom, shift right, shift
            down) tuples; each view transforms every sketch and every photo alike
            (:func:`view_images`) and adds a block of rows, a sketch's target
            being its photo in the same view. The default is the images as they
            are; :data:`TRAIN_VIEWS` augments a training split and
            :data:`TEST_VIEWS` is what :func:`view_similarity` averages over.

    Returns:
        A :class:`HogSplit` with V blocks of Q sketches and of N photos (V views);
        ``gallery`` lists the photo id of every photo row.

    Raises:
        ValueError: a split without sketches, a sketch whose photo is not in the
            gallery, or a malformed view.
    """
    records = list(dataset.sketches_in(split) if records is None else records)
    gallery = list(dataset.photo_ids(split) if gallery is None else gallery)
    if not records or not gallery:
        raise ValueError(f"split {split!r} has no sketches or no photos to rank")
    where = {p: i for i, p in enumerate(gallery)}
    missing = [r.photo_id for r in records if r.photo_id not in where]
    if missing:
        raise ValueError(
            f"{len(missing)} sketches pair with photos outside the gallery"
        )
    views = _check_views(views)
    sketch_images = _sketch_images(records, cfg)
    photo_images = photo_arrays(dataset, gallery, cfg.image_size)
    target = torch.tensor([where[r.photo_id] for r in records])
    return HogSplit(
        sketches=torch.cat(
            [hog_features(view_images(sketch_images, *v), cfg) for v in views]
        ),
        photos=torch.cat(
            [hog_features(view_images(photo_images, *v), cfg) for v in views]
        ),
        target=torch.cat([target + i * len(gallery) for i in range(len(views))]),
        gallery=gallery * len(views),
        views=len(views),
    )


@dataclass(frozen=True)
class MetricConfig:
    """Training of the linear metric (our choices, picked on ChairV2's validation
    split: chapter 11).

    Attributes:
        dim: output dimension of the shared projection.
        tau: InfoNCE temperature.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        batch_size: sketches per step (each ranks all training photos).
        max_steps: optimisation steps.
        eval_every: steps between validation passes (the best is kept).
        seed: seed of the initialisation and the batch order.
    """

    dim: int = 256
    tau: float = 0.1
    lr: float = 3e-4
    weight_decay: float = 1e-4
    batch_size: int = 64
    max_steps: int = 400
    eval_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("dim", "batch_size", "max_steps", "eval_every"):
            _positive_int(name, getattr(self, name))
        for name in ("tau", "lr"):
            _positive_float(name, getattr(self, name))
        if isinstance(self.weight_decay, bool) or not (
            isinstance(self.weight_decay, int | float) and self.weight_decay >= 0
        ):
            raise ValueError(
                f"weight_decay must be a number >= 0, got {self.weight_decay!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")


class HogMetric(nn.Module):
    """A linear projection shared by sketch and photo HOG vectors.

    ``embed(x)`` = normalise(W (x - mean)), with the mean of the training sketches
    and photos; ``similarity(s, p)`` is the (Q, N) cosine matrix. Built by
    :func:`train_hog_metric`, which seeds the weights (they are left uninitialised
    here).
    """

    def __init__(self, mean: torch.Tensor, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone().float())
        # no draw from the global generator: train_hog_metric seeds the weights
        self.proj = nn.utils.skip_init(nn.Linear, mean.numel(), dim, bias=False)
        self.best_step = 0
        self.history: list[dict[str, float]] = []
        self.config: dict[str, Any] = {}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) HOG vectors -> (N, dim) unit vectors."""
        return F.normalize(self.proj(x - self.mean), dim=-1)

    @torch.no_grad()
    def similarity(self, sketches: torch.Tensor, photos: torch.Tensor) -> torch.Tensor:
        """(Q, N) cosine similarities of sketches to photos."""
        return self.embed(sketches) @ self.embed(photos).T


def _val_acc1(model: HogMetric, val: HogSplit) -> float:
    ranks = ranks_pessimistic(model.similarity(val.sketches, val.photos), val.target)
    return acc_at_k(ranks, 1)["acc@1"]


def train_hog_metric(
    train: HogSplit, val: HogSplit, cfg: MetricConfig = MetricConfig()
) -> HogMetric:
    """Train the linear metric on ``train`` and keep its best state on ``val``.

    Each step draws ``cfg.batch_size`` training sketches; each must pick its own
    photo among all training photos (cross-entropy over cosine / tau). Every
    ``cfg.eval_every`` steps the validation Acc@1 is measured; the earliest state
    with the best value is returned (``best_step``; ``history`` holds every
    evaluation). Same seed, same weights.

    Raises:
        ValueError: feature sizes that disagree, or fewer than two training photos.
    """
    dims = {train.sketches.shape[1], train.photos.shape[1], val.sketches.shape[1]}
    if len(dims) != 1 or val.photos.shape[1] not in dims:
        raise ValueError(f"train and val HOG vectors differ in size: {sorted(dims)}")
    if len(train.photos) < 2:
        raise ValueError("the metric needs at least two training photos")
    gen = torch.Generator().manual_seed(cfg.seed)
    mean = torch.cat([train.sketches, train.photos]).mean(0)
    model = HogMetric(mean, cfg.dim)
    with torch.no_grad():  # a seeded initialisation independent of global state
        bound = 1.0 / mean.numel() ** 0.5
        model.proj.weight.copy_(
            torch.rand(model.proj.weight.shape, generator=gen) * 2 * bound - bound
        )
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    best_value, best_state = _val_acc1(model, val), copy.deepcopy(model.state_dict())
    history = [{"step": 0, "val_acc@1": best_value}]
    best_step = 0
    n = len(train.sketches)
    for step in range(1, cfg.max_steps + 1):
        idx = torch.randperm(n, generator=gen)[: min(cfg.batch_size, n)]
        logits = model.embed(train.sketches[idx]) @ model.embed(train.photos).T
        loss = F.cross_entropy(logits / cfg.tau, train.target[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            value = _val_acc1(model, val)
            history.append({"step": step, "loss": loss.item(), "val_acc@1": value})
            if value > best_value:
                best_value, best_step = value, step
                best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.best_step, model.history, model.config = best_step, history, asdict(cfg)
    return model.eval()


@torch.no_grad()
def view_similarity(
    models: HogMetric | Sequence[HogMetric], split: HogSplit
) -> torch.Tensor:
    """(Q, N) similarity of a split's sketches to its photos, averaged over its
    view blocks and over one or several metrics.

    A sketch in one view is compared with the photos in the same view
    (:func:`hog_split` with ``views``, e.g. :data:`TEST_VIEWS`), and the cosine
    similarities are averaged over the views and over ``models`` (e.g. metrics
    trained from several seeds). Averaging over small shifts, zooms and the mirror
    makes the match tolerant of where exactly a sketch's lines fall, which a HOG
    cell by cell is not.

    Raises:
        ValueError: no models, or a split whose rows are not whole view blocks.
    """
    models = [models] if isinstance(models, HogMetric) else list(models)
    if not models:
        raise ValueError("view_similarity needs at least one metric")
    blocks = [split.view(i) for i in range(split.views)]
    total = sum(
        model.similarity(block.sketches, block.photos)
        for model in models
        for block in blocks
    )
    return total / (len(blocks) * len(models))
