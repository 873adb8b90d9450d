"""Crop geometry against hand-computed values: positions, heading alignment, box masks, IoU."""

import math

import torch

from bev_reid.config import GridConfig
from bev_reid.reid.crops import box_ious, crop_boxes

GRID = GridConfig(xbound=(-10.0, 10.0, 0.5), ybound=(-10.0, 10.0, 0.5))  # 40 x 40


def coordinate_map() -> torch.Tensor:
    """[2, X, Y]: channel 0 = cell-centre x, channel 1 = cell-centre y."""
    centres = torch.arange(40, dtype=torch.float32) * 0.5 - 10 + 0.25
    return torch.stack([centres.view(40, 1).expand(40, 40), centres.view(1, 40).expand(40, 40)])


def boxes(cx, cy, yaw, length=4.0, width=2.0):
    return {
        "center": torch.tensor([[cx, cy]]),
        "yaw": torch.tensor([yaw]),
        "length": torch.tensor([length]),
        "width": torch.tensor([width]),
    }


def test_unaligned_crop_reads_the_cells_around_the_centre():
    # Centre on a cell corner: crop cell centres fall on grid cell centres, so values are exact.
    crop = crop_boxes(
        coordinate_map(), boxes(2.0, -3.0, 0.7), GRID, 4, align=False, zero_outside=False
    )[0]
    offsets = torch.tensor([-0.75, -0.25, 0.25, 0.75])
    torch.testing.assert_close(crop[0], (2.0 + offsets).view(4, 1).expand(4, 4))  # rows follow x
    torch.testing.assert_close(
        crop[1], (-3.0 + offsets).view(1, 4).expand(4, 4)
    )  # columns follow y


def test_aligned_crop_turns_with_the_heading():
    # Heading +y (yaw 90 deg): crop rows (forward) run along +y, columns (left) along -x.
    crop = crop_boxes(
        coordinate_map(), boxes(2.0, -3.0, math.pi / 2), GRID, 4, align=True, zero_outside=False
    )[0]
    offsets = torch.tensor([-0.75, -0.25, 0.25, 0.75])
    torch.testing.assert_close(crop[0], (2.0 - offsets).view(1, 4).expand(4, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(crop[1], (-3.0 + offsets).view(4, 1).expand(4, 4), atol=1e-5, rtol=0)


def test_zero_outside_keeps_only_the_footprint():
    ones = torch.ones(1, 40, 40)
    crop = crop_boxes(
        ones, boxes(0.0, 0.0, 0.0, length=1.0, width=0.5), GRID, 4, align=True, zero_outside=True
    )[0, 0]
    expected = torch.zeros(4, 4)
    expected[1:3, 1:3] = 1  # |u| <= 0.5 keeps rows 1-2, |v| <= 0.25 keeps columns 1-2
    torch.testing.assert_close(crop, expected)


def test_off_map_cells_are_zero_and_no_boxes_is_empty():
    crop = crop_boxes(
        torch.ones(1, 40, 40), boxes(9.75, 0.0, 0.0), GRID, 4, align=False, zero_outside=False
    )[0, 0]
    assert (crop[:2] == 1).all() and (crop[3] == 0).all()  # rows past x = 10 m fall off the map
    empty = {k: v[:0] for k, v in boxes(0.0, 0.0, 0.0).items()}
    assert crop_boxes(torch.ones(3, 40, 40), empty, GRID, 6).shape == (0, 3, 6, 6)


def rasterised(cx, cy, yaw, length, width) -> torch.Tensor:
    """[X, Y] bool: grid cells whose centres lie inside the rotated rectangle."""
    m = coordinate_map()
    dx, dy = m[0] - cx, m[1] - cy
    u = math.cos(yaw) * dx + math.sin(yaw) * dy
    v = -math.sin(yaw) * dx + math.cos(yaw) * dy
    return (u.abs() <= length / 2) & (v.abs() <= width / 2)


def test_box_iou():
    box = boxes(1.0, 2.0, 0.4)
    exact = rasterised(1.0, 2.0, 0.4, 4.0, 2.0)
    assert box_ious(exact, box, GRID).item() == 1.0  # the footprint's own cells
    assert box_ious(torch.zeros(40, 40, dtype=torch.bool), box, GRID).item() == 0.0
    shifted = rasterised(3.0, 2.0, 0.4, 4.0, 2.0)
    # Shifted 2 m along a 4 m x 2 m box at 22 deg: about a third overlaps.
    assert 0.2 < box_ious(shifted, box, GRID).item() < 0.5
    # A neighbour 4 m away does not lower the score: only the box's surroundings count.
    with_neighbour = exact | rasterised(1.0, 6.0, 0.4, 4.0, 2.0)
    assert box_ious(with_neighbour, box, GRID).item() == 1.0
