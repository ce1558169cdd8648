"""Tests of duet_lib.views: shifted test-time views of image batches."""

from __future__ import annotations

import pytest
import torch

from duet_lib.views import shift_images, shift_offsets


def test_shift_offsets_are_the_image_and_eight_directions():
    assert shift_offsets(0) == [(0, 0)]
    views = shift_offsets(2)
    assert views[0] == (0, 0) and len(views) == len(set(views)) == 9
    assert set(views) == {(dx, dy) for dx in (-2, 0, 2) for dy in (-2, 0, 2)}
    for bad in (-1, 1.5, True, "2", None):
        with pytest.raises(ValueError, match="shift must be an integer"):
            shift_offsets(bad)


def test_shift_images_moves_content_and_repeats_the_edge():
    x = torch.zeros(2, 3, 8, 8)
    x[:, :, 3, 4] = 1.0  # one bright pixel at row 3, column 4
    x[:, :, :, 0] = -1.0  # a dark left edge
    out = shift_images(x, 2, -1)  # two right, one up
    assert out.shape == x.shape
    assert out[0, 0, 2, 6] == 1.0 and int((out == 1.0).sum()) == 2 * 3  # moved, kept
    # the left border that appeared repeats the edge column
    assert (out[:, :, :, :3] == -1.0).all()
    # the bottom row that appeared repeats the last row
    torch.testing.assert_close(out[:, :, 7], out[:, :, 6])
    # no shift: the same tensor; there and back again: the interior is restored
    assert shift_images(x, 0, 0) is x
    back = shift_images(shift_images(x, 1, 1), -1, -1)
    torch.testing.assert_close(back[..., 1:-1, 1:-1], x[..., 1:-1, 1:-1])


def test_shift_images_rejects_bad_input():
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="half of"):
        shift_images(x, 4, 0)
    with pytest.raises(ValueError, match="dy must be an integer"):
        shift_images(x, 0, 1.0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        shift_images(x[0], 1, 0)
