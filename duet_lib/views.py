"""Test-time views of image batches: shifted copies of sketches and photos
(chapter 09).

A retrieval model that compares a sketch with a photo is, at the resolution of a
tiny backbone, sensitive to where exactly the lines fall: a line drawn two pixels
off lands on other patches of the convolutional stem. Test-time augmentation
averages that out: sketch and photos are seen in the same few views (here: shifted
by ``k`` pixels in each of eight directions, and as they are), each query is ranked
in every view, and the similarities are averaged. Chapter 11's classic reference
does the same with HOG vectors (:func:`duet_lib.classic.view_similarity`); this
module holds the tensor version for the deep models.

Our choice, not the paper's (which ranks the images as they are): it costs one
encoder pass per view and per image, and the book keeps it off unless asked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["shift_images", "shift_offsets"]


def shift_offsets(shift: int) -> list[tuple[int, int]]:
    """The views of a test-time shift of ``shift`` pixels: ``(0, 0)`` first, then
    ``(dx, dy)`` for the eight directions (dx right, dy down); ``[(0, 0)]`` for 0.

    Raises:
        ValueError: a shift that is not an integer >= 0.
    """
    if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
        raise ValueError(f"shift must be an integer >= 0 (pixels), got {shift!r}")
    if shift == 0:
        return [(0, 0)]
    return [(0, 0)] + [
        (dx * shift, dy * shift) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy
    ]


def shift_images(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """(N, C, H, W) images moved ``dx`` pixels right and ``dy`` down; the border
    that appears repeats the edge pixels (a photo's background, a sketch's white
    paper), so no value outside the images is invented.

    Raises:
        ValueError: not a 4-d batch, or a shift of half the image or more.
    """
    if images.ndim != 4:
        raise ValueError(
            f"images must be (N, C, H, W), got shape {tuple(images.shape)}"
        )
    for name, d in (("dx", dx), ("dy", dy)):
        if isinstance(d, bool) or not isinstance(d, int):
            raise ValueError(f"{name} must be an integer, got {d!r}")
    h, w = images.shape[-2:]
    if 2 * abs(dx) >= w or 2 * abs(dy) >= h:
        raise ValueError(f"a shift of ({dx}, {dy}) is half of a {w}x{h} image or more")
    if not dx and not dy:
        return images
    p = max(abs(dx), abs(dy))
    padded = F.pad(images, (p, p, p, p), mode="replicate")
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]
