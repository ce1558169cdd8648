"""The one in-memory shape every sketch/photo dataset is loaded into.

Loaders for real layouts (QMUL-V2 Coordinate, trainA/B folders, the SVG release,
Sketchy, plain folder pairs) and the procedural world all return a
:class:`SketchPhotoSet`, so training and evaluation code never branches on the
source. Introduced in chapter 01.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SketchRecord:
    """One sketch and the photo it depicts.

    Exactly one of ``strokes`` (vector, (N, 3) QMUL format) or ``path`` (a raster
    image file) is set.
    """

    key: str  # unique key, e.g. "/train/2429245009_1"
    photo_id: str  # id of the paired photo
    split: str  # "train", "val" or "test"
    strokes: np.ndarray | None = None
    path: Path | None = None


@dataclass
class SketchPhotoSet:
    """Sketches, photos and their pairing, split by photo.

    Attributes:
        name: dataset name (manifest name, e.g. "chairv2", "world").
        root: folder it was read from.
        photos: photo id -> image path.
        photo_split: photo id -> split name.
        sketches: all sketch records.
        skipped: (item, reason) pairs that the loader counted and left out.
        attributes: optional photo id -> attribute dict (the world provides these).
        framing: None, or the fill share of content framing
            (:func:`duet_lib.data.framing.framed`): photos are then cropped to
            their content when loaded, and the sketches were framed already.
    """

    name: str
    root: Path
    photos: dict[str, Path]
    photo_split: dict[str, str]
    sketches: list[SketchRecord]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    attributes: dict[str, dict] = field(default_factory=dict)
    framing: float | None = None

    def sketches_in(self, split: str) -> list[SketchRecord]:
        """Sketch records of one split, in a stable order."""
        _check_split(split)
        return [s for s in self.sketches if s.split == split]

    def photo_ids(self, split: str) -> list[str]:
        """Unique photos paired with the split's sketches, in first-seen order.

        This is the FG-SBIR gallery of that split (chapter 10).
        """
        _check_split(split)
        seen: dict[str, None] = {}
        for s in self.sketches:
            if s.split == split:
                seen.setdefault(s.photo_id, None)
        return list(seen)

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {"sketches": n, "photos": m}} for a quick report."""
        sk = Counter(s.split for s in self.sketches)
        return {
            sp: {"sketches": sk.get(sp, 0), "photos": len(self.photo_ids(sp))}
            for sp in SPLITS
        }


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
