"""Depth targets from LiDAR: the pixels and depths of the devkit, moved with the image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bev_reid.config import DataConfig
from bev_reid.data.augment import sample_augmentation
from bev_reid.data.depth import NO_TARGET, depth_bins, depth_maps
from bev_reid.data.keyframes import NuScenesKeyframes
from bev_reid.data.nuscenes import NuScenesDB

CAMERAS = DataConfig().cameras


@pytest.fixture(scope="module")
def db(dataroot) -> NuScenesDB:
    return NuScenesDB(dataroot.path, dataroot.version)


def test_nearest_depth_per_pixel_matches_the_devkit(dataroot, db):
    """At full size and stride 1, the depth of every pixel is the nearest of the points the
    devkit's map_pointcloud_to_image puts on it, and no other pixel has one."""
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(dataroot.version, str(dataroot.path), verbose=False)
    token = db.keyframes(db.scene_names[0])[1]
    sample = nusc.get("sample", token)
    points = db.lidar_points(token)
    checked = 0
    for channel in CAMERAS:
        cam = db.camera(token, channel)
        dev_uv, dev_depth, _ = nusc.explorer.map_pointcloud_to_image(
            sample["data"]["LIDAR_TOP"], sample["data"][channel], min_dist=1.0
        )
        want = np.full((cam.height, cam.width), np.inf)
        cols, rows = np.floor(dev_uv[:2]).astype(int)
        np.minimum.at(want, (rows, cols), dev_depth)
        got = depth_maps(points, [cam], [np.eye(3)], [np.zeros(3)], (cam.height, cam.width), 1,
                         min_depth=1.0)[0]  # fmt: skip
        # The devkit leaves out a one-pixel margin: compare inside it. It carries the points in
        # float32 through global coordinates (0.01 px typically, 0.1 px on the nearest points,
        # see test_lidar): a point that close to a pixel edge may fall in the neighbouring pixel,
        # which on the real scene's front-left camera happens to 1.2% of the pixels hit.
        inner = (slice(2, cam.height - 1), slice(2, cam.width - 1))
        g, w = got[inner], want[inner]
        differ = np.isfinite(g) != np.isfinite(w)
        both = np.isfinite(g) & np.isfinite(w)
        far = np.abs(g[both] - w[both]) > 5e-3
        assert differ.sum() <= 0.02 * np.isfinite(w).sum(), channel
        assert far.sum() <= 0.002 * both.sum() + 1, channel
        checked += int(both.sum())
    assert checked > 1000


def test_targets_move_with_the_augmented_image(dataroot, db):
    """A dot drawn at a LiDAR point's pixel and moved by the image augmentation itself (PIL's
    resize, crop, flip and rotation) lands on the point's target cell."""
    token = db.keyframes(db.scene_names[0])[0]
    cam = db.camera(token, "CAM_FRONT")
    points = db.lidar_points(token)
    uv, depth = cam.project(points)
    seen = (depth > 5) & (uv[:, 0] > 300) & (uv[:, 0] < cam.width - 300)
    seen &= (uv[:, 1] > 250) & (uv[:, 1] < cam.height - 250)
    rng = np.random.default_rng(0)
    data = DataConfig(final_dim=(128, 352), rot_lim=(-10.0, 10.0), bot_pct_lim=(0.0, 0.1))
    picks = rng.choice(np.flatnonzero(seen), 6, replace=False)
    flips = set()
    for k, p in enumerate(picks):
        aug = sample_augmentation(data, cam.width, cam.height, rng)
        flips.add(aug.flip)
        dot = Image.new("L", (cam.width, cam.height), 0)
        (u, v), r = uv[p], 12
        ImageDraw.Draw(dot).ellipse([u - r, v - r, u + r, v + r], fill=255)
        moved = np.asarray(aug.apply(dot), dtype=np.float64)  # H x W
        ys, xs = np.nonzero(moved > 0)
        w = moved[ys, xs]
        centre = np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()]) + 0.5
        rot, tran = aug.matrices()
        got = depth_maps(points[p : p + 1], [cam], [rot], [tran], data.final_dim, 1)[0]
        (row,), (col,) = np.nonzero(np.isfinite(got))
        assert np.hypot(col + 0.5 - centre[0], row + 0.5 - centre[1]) < 1.5, (k, aug)
        assert got[row, col] == pytest.approx(depth[p], abs=1e-3)
    assert flips == {True, False}


def test_bins_and_the_dataset_item(synth_world):
    """Bins: the nearest frustum depth, -1 outside; the Dataset's target has the feature size
    and agrees with depth_bins of depth_maps of the same augmentation."""
    dbound = (4.0, 36.0, 1.0)
    metres = np.array([3.4, 3.6, 4.0, 4.49, 4.51, 35.4, 35.6, np.inf])
    assert depth_bins(metres, dbound).tolist() == [NO_TARGET, 0, 0, 0, 1, 31, NO_TARGET, NO_TARGET]

    data = DataConfig(dataroot=str(synth_world.path), version=synth_world.version,
                      final_dim=(64, 176), resize_lim=(0.105, 0.125))  # fmt: skip
    from bev_reid.config import GridConfig

    grid = GridConfig(dbound=dbound)
    ds = NuScenesKeyframes(data, grid, is_train=True, seed=3, depth=(8, dbound))
    item = ds[2]
    target = item["depth_target"]
    assert tuple(target.shape) == (6, 8, 22) and target.dtype.is_signed
    cams = [ds.db.camera(item["sample_token"], ch) for ch in data.cameras]
    metres = depth_maps(item["lidar"].numpy(), cams, item["post_rots"].numpy(),
                        item["post_trans"].numpy(), data.final_dim, 8)  # fmt: skip
    assert np.array_equal(target.numpy(), depth_bins(metres, dbound))
    assert (target >= 0).float().mean() > 0.3  # most cells see a LiDAR return
    with pytest.raises(ValueError, match="images=False"):
        NuScenesKeyframes(data, grid, images=False, depth=(8, dbound))


def test_points_in_boxes_and_vehicle_targets_match_the_devkit(dataroot, db):
    """points_in_boxes equals the devkit's points_in_box over every box of a keyframe; a cell's
    vehicle target is whether its nearest point lies in a vehicle box."""
    from nuscenes.utils.geometry_utils import points_in_box

    from bev_reid.data.depth import nearest_points, points_in_boxes

    token = db.keyframes(db.scene_names[0])[3]
    points, boxes = db.lidar_points(token), db.boxes(token)
    want = np.zeros(len(points), dtype=bool)
    for box in boxes:
        want |= points_in_box(box.devkit_box(), points[:, :3].T.astype(np.float64))
    got = points_in_boxes(points, boxes)
    assert want.sum() > 100 and np.array_equal(got, want)

    data = DataConfig(dataroot=str(dataroot.path), version=dataroot.version,
                      final_dim=(64, 176))  # fmt: skip
    from bev_reid.config import GridConfig

    ds = NuScenesKeyframes(data, GridConfig(), depth=(8, (4.0, 45.0, 1.0)))
    item = ds[ds.index_of(token)]
    cams = [db.camera(token, ch) for ch in data.cameras]
    metres, nearest = nearest_points(points, cams, item["post_rots"].numpy(),
                                     item["post_trans"].numpy(), data.final_dim, 8)  # fmt: skip
    vehicles = [b for b in boxes if b.category.startswith("vehicle")]
    on = np.zeros(len(points), dtype=bool)
    for box in vehicles:
        on |= points_in_box(box.devkit_box(), points[:, :3].T.astype(np.float64))
    want = np.where(nearest >= 0, on[np.maximum(nearest, 0)], -1)
    assert np.array_equal(item["vehicle_target"].numpy(), want)
    assert (want == 1).sum() > 10 and (want == 0).sum() > 10
    assert np.all(np.isfinite(metres) == (nearest >= 0))
    # the point a cell names is at the cell's depth
    n, r, c = np.argwhere(nearest >= 0)[0]
    assert cams[n].project(points[nearest[n, r, c] : nearest[n, r, c] + 1])[1][0] == pytest.approx(
        metres[n, r, c], abs=1e-4
    )
