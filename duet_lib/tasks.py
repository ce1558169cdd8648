"""The retrieval tasks every method is ranked on (chapters 09-11).

One function builds, for a split, the FG-SBIR task (one query per sketch; gallery =
the unique photos paired with the split's sketches) and the composed task (on the
world: one query per sketch and appearance variant of its shape, gallery = every
variant of every shape, text = the variant's appearance phrase; on other data: one
given text per sketch on the FG-SBIR gallery). The duet's evaluation and every
baseline use it, so all rank exactly the same galleries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from duet_lib.data.pairs import PhotoCache, SketchPhotoPairs
from duet_lib.data.records import SPLITS, SketchPhotoSet, SketchRecord

__all__ = ["DEFAULT_TARGET_SIZE", "RetrievalTask", "retrieval_task"]

# side of the decoder targets a task's photo cache holds when the caller has no
# decoder (evaluation never reads them; a small side keeps the cache cheap)
DEFAULT_TARGET_SIZE = 16


@dataclass
class RetrievalTask:
    """Queries, galleries, targets and texts of one split (chapter 10).

    Built by :func:`retrieval_task` with the same rules as
    :func:`duet_lib.train.evaluate_duet`, so every method ranks the same galleries.

    Attributes:
        split: the split.
        data: the split's (non-augmented) :class:`SketchPhotoPairs`; its
            ``records`` are the FG-SBIR queries, in order.
        gallery: FG-SBIR gallery, the unique photos paired with the sketches (N,).
        target: (Q,) index in ``gallery`` of each sketch's photo.
        attributes: ``retrieval_report`` attributes of the FG-SBIR task ("shape"
            with world attributes), or None.
        duet_gallery: gallery of the composed task, or None when the split has
            no composed task (no world attributes and no texts).
        duet_index: (Q_d,) sketch index (into ``data.records``) of each composed
            query.
        duet_target: (Q_d,) index in ``duet_gallery`` of each composed target.
        texts: Q_d query texts (the target's appearance phrase on the world).
        duet_attributes: attributes of the composed task ("shape",
            "appearance", "colour"), or None.
    """

    split: str
    data: SketchPhotoPairs
    gallery: list[str]
    target: torch.Tensor
    attributes: dict[str, tuple[list, list]] | None
    duet_gallery: list[str] | None = None
    duet_index: torch.Tensor | None = None
    duet_target: torch.Tensor | None = None
    texts: list[str] | None = None
    duet_attributes: dict[str, tuple[list, list]] | None = None

    @property
    def records(self) -> list[SketchRecord]:
        """The split's sketches (FG-SBIR queries)."""
        return self.data.records

    @property
    def has_composed(self) -> bool:
        """True when the split has a composed (sketch + text) task."""
        return self.duet_gallery is not None


def retrieval_task(
    dataset: SketchPhotoSet,
    split: str,
    texts: Sequence[str] | str | None = None,
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    cache: PhotoCache | None = None,
) -> RetrievalTask:
    """Galleries, queries and query texts of one split, as evaluate_duet builds them.

    FG-SBIR: gallery = the unique photos paired with the split's sketches, one
    query per sketch. Composed task: with world attributes, the split's duet
    gallery (every appearance variant of every shape) and one query per (sketch,
    variant of its shape), text = the variant's appearance phrase
    (:func:`duet_lib.data.world.duet_queries`); without attributes, ``texts`` (one
    per sketch) on the FG-SBIR gallery, or no composed task at all.

    Args:
        dataset: the data; only ``split`` is read.
        split: "train", "val" or "test".
        texts: replace the appearance phrases: one string per composed query, or
            a format string with ``{phrase}``; without attributes, one string per
            sketch.
        image_size: model input side S.
        mean: CLIP normalisation mean.
        std: CLIP normalisation standard deviation.
        cache: a PhotoCache to reuse (its image size must be ``image_size``).

    Returns:
        A :class:`RetrievalTask`.

    Raises:
        ValueError: an unknown split, a split without sketches, texts of the
            wrong count, a single text without ``{phrase}``, or an empty text.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if cache is None:
        cache = PhotoCache(dataset, image_size, DEFAULT_TARGET_SIZE)
    data = SketchPhotoPairs(
        dataset,
        split,
        image_size,
        mean,
        std,
        target_size=cache.target_size,
        negatives=(),
        cache=cache,
    )
    gallery = dataset.photo_ids(split)
    pos = {p: i for i, p in enumerate(gallery)}
    target = torch.tensor([pos[r.photo_id] for r in data.records])
    attrs = dataset.attributes if data.has_attributes else {}
    fg_attr = None
    if attrs:
        fg_attr = {
            "shape": (
                [attrs[r.photo_id]["shape_id"] for r in data.records],
                [attrs[p]["shape_id"] for p in gallery],
            )
        }
    task = RetrievalTask(split, data, gallery, target, fg_attr)

    if attrs and all("appearance_phrase" in attrs[p] for p in data.photo_ids):
        from duet_lib.data.world import duet_gallery, duet_queries

        queries = duet_queries(dataset, split)
        d_gallery = duet_gallery(dataset, split)
        key_pos = {r.key: i for i, r in enumerate(data.records)}
        q_index = [key_pos[rec.key] for rec, _, _ in queries]
        targets_id = [pid for _, pid, _ in queries]
        phrases: list[str] | None = [phrase for _, _, phrase in queries]
    elif texts is not None:
        d_gallery = gallery
        q_index = list(range(len(data.records)))
        targets_id = [r.photo_id for r in data.records]
        phrases = None
    else:
        return task

    n_q = len(q_index)
    if texts is None:
        query_texts = list(phrases)
    elif isinstance(texts, str):
        if "{phrase}" not in texts or phrases is None:
            raise ValueError(
                "a single text must be a format string with '{phrase}' (world data)"
            )
        query_texts = [texts.format(phrase=p) for p in phrases]
    else:
        query_texts = list(texts)
        if len(query_texts) != n_q:
            raise ValueError(
                f"texts has {len(query_texts)} entries, but the {split} split has "
                f"{n_q} composed queries"
            )
    for i, t in enumerate(query_texts):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"text {i} of the composed queries is empty")

    d_pos = {p: i for i, p in enumerate(d_gallery)}
    d_attr = None
    if attrs:

        def appearance(pid: str) -> tuple:
            a = attrs[pid]
            return (a["colour"], a["pattern"], a["background"])

        d_attr = {
            "shape": (
                [attrs[p]["shape_id"] for p in targets_id],
                [attrs[p]["shape_id"] for p in d_gallery],
            ),
            "appearance": (
                [appearance(p) for p in targets_id],
                [appearance(p) for p in d_gallery],
            ),
            "colour": (
                [attrs[p]["colour"] for p in targets_id],
                [attrs[p]["colour"] for p in d_gallery],
            ),
        }
    task.duet_gallery = d_gallery
    task.duet_index = torch.tensor(q_index, dtype=torch.long)
    task.duet_target = torch.tensor([d_pos[p] for p in targets_id])
    task.texts = query_texts
    task.duet_attributes = d_attr
    return task
