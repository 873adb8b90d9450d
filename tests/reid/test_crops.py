"""Crop geometry against hand-computed values: positions, heading alignment, box masks, IoU;
the LiDAR box raster against a plain loop and the devkit."""

import math

import numpy as np
import pytest
import torch

from bev_reid.config import GridConfig
from bev_reid.reid.crops import box_ious, crop_boxes, lidar_box_channel_names, lidar_box_crops

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


# ---------------------------------------------------------------------------------------------
# LiDAR points rasterised in each box's frame


def box_raster_reference(
    points, boxes, size, cell, bands, margin, align, zero_outside, colours=None
):
    """lidar_box_crops with a plain loop over boxes and points, in float64."""
    k, nb = len(boxes["yaw"]), len(bands) + 1
    out = np.zeros((k, 3 + nb, size, size))
    paint = np.zeros((k, 3, size, size))
    if colours is None:
        colours = np.full((len(points), 3), np.nan)
    half = size * cell / 2
    for i in range(k):
        cx, cy = boxes["center"][i].tolist()
        yaw, length, width = (boxes[key][i].item() for key in ("yaw", "length", "width"))
        bottom, height = boxes["bottom"][i].item(), boxes["height"][i].item()
        count = np.zeros((size, size))
        shine = np.zeros((size, size))
        painted = np.zeros((size, size))
        for (x, y, z, intensity), rgb in zip(points[:, :4].tolist(), colours, strict=True):
            dx, dy = x - cx, y - cy
            fu = math.cos(yaw) * dx + math.sin(yaw) * dy  # box frame
            fv = -math.sin(yaw) * dx + math.cos(yaw) * dy
            u, v = (fu, fv) if align else (dx, dy)
            rz = z - bottom
            if not (-margin <= rz <= height + margin and abs(u) < half and abs(v) < half):
                continue
            if zero_outside and (abs(fu) > length / 2 + margin or abs(fv) > width / 2 + margin):
                continue
            a, b = int(math.floor((u + half) / cell)), int(math.floor((v + half) / cell))
            count[a, b] += 1
            out[i, 1, a, b] = max(out[i, 1, a, b], rz)
            shine[a, b] += intensity
            out[i, 3 + int(np.searchsorted(bands, rz, side="right")), a, b] += 1
            if np.isfinite(rgb).all():
                paint[i, :, a, b] += rgb
                painted[a, b] += 1
        out[i, 0] = count > 0
        out[i, 2] = shine / np.maximum(count, 1)
        paint[i] /= np.maximum(painted, 1)
    out[:, 3:] = np.log1p(out[:, 3:])
    return out if np.isnan(colours).all() else np.concatenate([out, paint], 1)


def random_scene(seed, k=5, p=3000):
    g = torch.Generator().manual_seed(seed)
    points = torch.cat(
        [
            torch.rand(p, 2, generator=g) * 24 - 12,  # x, y in [-12, 12)
            torch.rand(p, 1, generator=g) * 3 - 0.5,  # z
            torch.rand(p, 1, generator=g) * 255,  # intensity
        ],
        1,
    )
    boxes = {
        "center": torch.rand(k, 2, generator=g) * 16 - 8,
        "yaw": torch.rand(k, generator=g) * 2 * math.pi - math.pi,
        "length": 3 + torch.rand(k, generator=g) * 3,
        "width": 1.5 + torch.rand(k, generator=g),
        "bottom": torch.rand(k, generator=g) * 0.4 - 0.2,
        "height": 1.2 + torch.rand(k, generator=g),
    }
    return points, boxes


@pytest.mark.parametrize("align,zero_outside", [(True, True), (False, True), (True, False)])
def test_box_raster_matches_a_plain_loop(align, zero_outside):
    points, boxes = random_scene(0)
    args = (12, 0.5, (0.5, 1.0, 1.5), 0.25, align, zero_outside)
    got = lidar_box_crops(points, boxes, *args)
    want = box_raster_reference(points.numpy(), boxes, *args)
    assert got.shape == (5, 7, 12, 12) and want[:, 0].sum() > 100  # points did land
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-4)
    assert len(lidar_box_channel_names((0.5, 1.0, 1.5))) == 7


def test_box_raster_colours_match_a_plain_loop():
    points, boxes = random_scene(3)
    g = torch.Generator().manual_seed(3)
    colours = torch.rand(len(points), 3, generator=g)
    colours[torch.rand(len(points), generator=g) < 0.3] = float("nan")  # unpainted points
    args = (12, 0.5, (0.5, 1.0), 0.25, True, True)
    got = lidar_box_crops(points, boxes, *args, colours=colours)
    want = box_raster_reference(points.numpy(), boxes, *args, colours=colours.numpy())
    assert got.shape == (5, 9, 12, 12) and (want[:, 6:] > 0).sum() > 100
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-4)
    names = lidar_box_channel_names((0.5, 1.0), colour=True)
    assert len(names) == 9 and names[-3:] == [f"lidar_mean_{c}" for c in ("red", "green", "blue")]
    # without colours, the same crops less the three colour channels
    torch.testing.assert_close(lidar_box_crops(points, boxes, *args), got[:, :6])
    with pytest.raises(ValueError, match=r"colours must be \[P, 3\]"):
        lidar_box_crops(points, boxes, *args, colours=colours[:10])


def test_pairs_near_finds_every_point_in_each_square():
    """The sorted-bucket search against all box-point pairs, with boxes off the points' extent."""
    from bev_reid.reid.crops import _pairs_near

    g = torch.Generator().manual_seed(3)
    xy = torch.rand(2000, 2, generator=g) * 20 - 10
    centers = torch.cat([torch.rand(30, 2, generator=g) * 30 - 15, torch.tensor([[40.0, 0.0]])])
    reach = torch.rand(31, generator=g) * 4
    box_i, point_i = _pairs_near(xy, centers, reach, bucket=0.7)
    d = (xy[None] - centers[:, None]).abs()  # K x P x 2
    want = ((d[..., 0] <= reach[:, None]) & (d[..., 1] <= reach[:, None])).nonzero()
    got = sorted(zip(box_i.tolist(), point_i.tolist(), strict=True))
    assert got == sorted(map(tuple, want.tolist())) and len(got) > 500


def test_box_raster_ignores_where_the_ego_stands():
    """Moving and turning the whole scene (points and boxes together) changes no crop."""
    points, boxes = random_scene(1)
    turn, shift = 0.9, torch.tensor([3.0, -5.0])
    rot = torch.tensor([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    moved_points = points.clone()
    moved_points[:, :2] = points[:, :2] @ rot.T + shift
    moved = dict(boxes, center=boxes["center"] @ rot.T + shift, yaw=boxes["yaw"] + turn)
    args = (16, 0.25, (0.5, 1.0), 0.1)
    a, b = lidar_box_crops(points, boxes, *args), lidar_box_crops(moved_points, moved, *args)
    # Cells of points within float rounding of a cell edge may differ: allow a few.
    assert a[:, 0].sum() > 100
    assert (a - b).abs().gt(1e-4).any(1).float().mean() < 0.002


def test_box_raster_rejects_bad_input():
    points, boxes = random_scene(2)
    with pytest.raises(ValueError, match="must be \\[P, >=4\\]"):
        lidar_box_crops(points[:, :3], boxes, 8, 0.5)
    with pytest.raises(ValueError, match="bands must increase"):
        lidar_box_crops(points, boxes, 8, 0.5, bands=(1.0, 0.5))
    empty = {key: value[:0] for key, value in boxes.items()}
    assert lidar_box_crops(points, empty, 8, 0.5).shape == (0, 7, 8, 8)
    # Rows with NaN or inf count nowhere; the others as without them.
    bad = torch.tensor([[float("nan"), 0.0, 0.5, 9.0], [0.0, float("inf"), 0.5, 9.0]])
    torch.testing.assert_close(
        lidar_box_crops(torch.cat([points, bad]), boxes, 8, 0.5),
        lidar_box_crops(points, boxes, 8, 0.5),
    )


def test_box_raster_counts_the_devkit_points_in_box(dataroot):
    """With no margin, the band counts of a box add up to the devkit's points_in_box.

    The raster's boxes turn about z only (as BEV boxes do), so the devkit box drops the small
    pitch and roll a real ego pose gives an ego-frame box (about 0.01 rad on the real scene).
    """
    from nuscenes.utils.data_classes import Box
    from nuscenes.utils.geometry_utils import points_in_box
    from pyquaternion import Quaternion

    from bev_reid.data.nuscenes import NuScenesDB

    db = NuScenesDB(dataroot.path, dataroot.version)
    tokens = [s["token"] for s in db.nusc.sample]
    checked, off = 0, 0  # boxes with points; points counted differently
    for token in tokens[:: max(1, len(tokens) // 4)]:
        points = db.lidar_points(token)
        cars = [b for b in db.boxes(token) if b.category.startswith("vehicle")]
        cars = [b for b in cars if b.wlh[1] < 7.5 and np.hypot(*b.center[:2]) < 50]
        geometry = {
            "center": torch.tensor(np.array([b.center[:2] for b in cars]), dtype=torch.float32),
            "yaw": torch.tensor([b.yaw for b in cars], dtype=torch.float32),
            "length": torch.tensor([b.wlh[1] for b in cars], dtype=torch.float32),
            "width": torch.tensor([b.wlh[0] for b in cars], dtype=torch.float32),
            "bottom": torch.tensor([b.center[2] - b.wlh[2] / 2 for b in cars]),
            "height": torch.tensor([b.wlh[2] for b in cars], dtype=torch.float32),
        }
        crops = lidar_box_crops(torch.from_numpy(points), geometry, 32, 0.25, (1.0,), 0.0)
        counts = torch.expm1(crops[:, 3:]).sum((1, 2, 3)).round().long().tolist()
        for box, got in zip(cars, counts, strict=True):
            flat = Box(box.center, box.wlh, Quaternion(axis=(0, 0, 1), angle=box.yaw))
            want = int(points_in_box(flat, points[:, :3].T.astype(np.float64)).sum())
            checked += want > 0
            off += abs(got - want)
    assert checked >= 10 and off == 0


def test_painted_crops_show_their_camera_colour():
    """crops_to_rgb: painted cells as their colour, occupied unpainted cells grey, empty black."""
    from bev_reid.reid.visualize import UNPAINTED_GREY, crops_to_rgb

    names = lidar_box_channel_names((1.0,), colour=True)
    crops = torch.zeros(1, len(names), 2, 2)
    crops[0, 0, 0, 0] = crops[0, 0, 1, 1] = 1.0  # two occupied cells
    crops[0, 2, :, :] = 200.0  # intensity everywhere: must not show
    crops[0, -3:, 0, 0] = torch.tensor([0.8, 0.1, 0.2])  # one painted
    got = crops_to_rgb(crops, names)
    want = np.zeros((1, 2, 2, 3), np.float32)
    want[0, 0, 0], want[0, 1, 1] = (0.8, 0.1, 0.2), UNPAINTED_GREY
    np.testing.assert_allclose(got, want, atol=1e-6)
