"""The nuScenes data layer and the frustum geometry, checked against the devkit on real data.

Tests taking ``dataroot`` run once per data source of tests/conftest.py (the real scene is marked
``data``); the others need no data.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from nuscenes.utils import splits
from nuscenes.utils.data_classes import Box, LidarPointCloud
from nuscenes.utils.geometry_utils import BoxVisibility, points_in_box, view_points
from PIL import Image
from pyquaternion import Quaternion

from bev_reid.config import ConfigError, DataConfig, GridConfig
from bev_reid.data.augment import ImageAug, jitter_colours, sample_augmentation
from bev_reid.data.keyframes import NuScenesKeyframes, collate
from bev_reid.data.nuscenes import TABLES, NuScenesDB, resolve_scenes
from bev_reid.data.records import NuScenesFileError, NuScenesFormatError, scene_conditions
from bev_reid.models.geometry import (
    create_frustum,
    frustum_to_ego,
    inside_grid,
    points_to_voxel_coords,
)

GRID = GridConfig()


@pytest.fixture(scope="module")
def db(dataroot) -> NuScenesDB:
    return NuScenesDB(dataroot.path, dataroot.version)


def _data_cfg(dataroot, **kw) -> DataConfig:
    return DataConfig(dataroot=str(dataroot.path), version=dataroot.version, **kw)


def _spread(n_total: int, k: int) -> list[int]:
    """k indices spread over range(n_total): first, last and between."""
    return sorted({round(i * (n_total - 1) / max(k - 1, 1)) for i in range(k)})


# ---------------------------------------------------------------------------------------------
# Samples


def test_sample_contents_and_collate(dataroot, db):
    ds = NuScenesKeyframes(_data_cfg(dataroot), GRID, is_train=False, db=db)
    n_cams, (h, w), (nx, ny, _) = len(ds.cfg.cameras), ds.cfg.final_dim, GRID.shape
    a, b = ds[0], ds[len(ds) - 1]
    assert a["imgs"].shape == (n_cams, 3, h, w) and a["imgs"].dtype == torch.float32
    assert abs(float(a["imgs"].mean())) < 1.5  # ImageNet-normalised, not 0-255
    for key, shape in [
        ("rots", (3, 3)),
        ("trans", (3,)),
        ("intrins", (3, 3)),
        ("post_rots", (3, 3)),
        ("post_trans", (3,)),
    ]:
        assert a[key].shape == (n_cams, *shape) and a[key].dtype == torch.float32, key
    assert a["bev_mask"].shape == (1, nx, ny) and set(a["bev_mask"].unique().tolist()) <= {0.0, 1.0}
    assert a["bev_mask"].sum() > 0
    assert a["lidar"].ndim == 2 and a["lidar"].shape[1] == 5 and len(a["lidar"]) > 1000
    # rotation matrices are orthonormal; validation: same centre resize/crop for every camera
    eye = torch.eye(3).expand(n_cams, 3, 3)
    assert torch.allclose(a["rots"] @ a["rots"].transpose(1, 2), eye, atol=1e-5)
    assert torch.allclose(a["post_rots"], b["post_rots"]) and (a["post_rots"][:, 0, 0] > 0).all()
    assert torch.all(a["post_rots"][:, 0, 1] == 0)  # no rotation
    box = a["boxes"][0]
    assert {
        "center",
        "wlh",
        "yaw",
        "instance_token",
        "category",
        "visibility",
        "num_lidar_pts",
        "attributes",
        "token",
    } <= set(box)
    assert all(1 <= bx["visibility"] <= 4 for bx in a["boxes"])
    (x0, x1, _), (y0, y1, _) = GRID.xbound, GRID.ybound
    assert all(x0 <= bx["center"][0] < x1 and y0 <= bx["center"][1] < y1 for bx in a["boxes"])
    assert a["scene"] in db.scene_names and a["sample_token"] == ds.samples[0][1]
    assert a["conditions"] in (["day"], ["night"], ["day", "rain"], ["night", "rain"])
    assert b["timestamp"] > a["timestamp"]

    batch = collate([a, b])
    assert batch["imgs"].shape == (2, n_cams, 3, h, w) and batch["bev_mask"].shape == (2, 1, nx, ny)
    assert isinstance(batch["lidar"], list) and len(batch["lidar"]) == 2
    assert batch["boxes"] == [a["boxes"], b["boxes"]] and batch["sample_token"] == [
        a["sample_token"],
        b["sample_token"],
    ]


def test_training_augmentation_is_seeded(dataroot, db):
    ds = NuScenesKeyframes(_data_cfg(dataroot), GRID, is_train=True, db=db, seed=3)
    cams = [db.camera(ds.samples[0][1], ch) for ch in ds.cfg.cameras]
    first = ds.image_augmentations(0, cams)
    assert first == ds.image_augmentations(0, cams) and first != ds.image_augmentations(1, cams)
    ds.set_epoch(1)
    assert first != ds.image_augmentations(0, cams)


def test_colour_jitter_against_the_formulas_pixel_by_pixel():
    """jitter_colours: a gain, then contrast about the image's mean grey, then saturation about
    each pixel's grey, factors drawn in that order; computed here one pixel at a time."""
    img = np.random.default_rng(1).random((3, 4, 3)).astype(np.float32)
    img[0, 0] = 1.0  # a white pixel the gain pushes past 1: clipped
    strength = (0.3, 0.5, 0.7)
    draws = np.random.default_rng(7)
    gain, contrast, saturation = (draws.uniform(1 - s, 1 + s) for s in strength)
    weights = (0.299, 0.587, 0.114)
    bright = img.astype(np.float64) * gain

    def grey_of(px):
        return sum(w * p for w, p in zip(weights, px, strict=True))

    mean = np.mean([[grey_of(px) for px in row] for row in bright])
    want = np.empty_like(bright)
    for i in range(3):
        for j in range(4):
            px = (bright[i, j] - mean) * contrast + mean
            grey = grey_of(px)
            want[i, j] = np.clip((px - grey) * saturation + grey, 0, 1)
    got = jitter_colours(img.copy(), strength, np.random.default_rng(7))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got.max() <= 1.0 and got.min() >= 0.0
    identity = jitter_colours(img.copy(), (0, 0, 0), np.random.default_rng(0))
    np.testing.assert_allclose(identity, img, atol=1e-6)


def test_colour_jitter_changes_training_pixels_only(dataroot, db):
    """data.colour_jitter: training images change, reproducibly with the seed, while the
    geometry, the mask and the depth targets stay those of the same draw without it;
    validation images are never jittered."""
    depth = (8, (4.0, 36.0, 1.0))
    kw = {"final_dim": (64, 176), "resize_lim": (0.105, 0.125), "bot_pct_lim": (0.0, 0.1)}
    plain = NuScenesKeyframes(_data_cfg(dataroot, **kw), GRID, True, db=db, seed=5, depth=depth)
    cfg = _data_cfg(dataroot, colour_jitter=(0.4, 0.4, 0.4), **kw)
    jit = NuScenesKeyframes(cfg, GRID, True, db=db, seed=5, depth=depth)
    a, b, again = plain[(1, 0)], jit[(1, 0)], jit[(1, 0)]
    assert not torch.equal(a["imgs"], b["imgs"])
    torch.testing.assert_close(b["imgs"], again["imgs"], rtol=0, atol=0)
    for key in ("post_rots", "post_trans", "rots", "bev_mask", "depth_target"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    val = NuScenesKeyframes(cfg, GRID, False, db=db)
    plain_val = NuScenesKeyframes(_data_cfg(dataroot, **kw), GRID, False, db=db)
    torch.testing.assert_close(val[0]["imgs"], plain_val[0]["imgs"], rtol=0, atol=0)
    with pytest.raises(ConfigError, match="colour_jitter"):
        DataConfig(colour_jitter=(1.0, 0.0, 0.0))


def test_cached_keyframes_equal_fresh_reads(dataroot, db):
    """With data.cache_keyframes a training keyframe is read, decoded and projected once; every
    later epoch's item equals what a Dataset without the cache reads from disk for the same
    (epoch, index), and what a caller does to an item leaves the cache as it was."""
    depth = (8, (4.0, 36.0, 1.0))
    kw = {"final_dim": (64, 176), "resize_lim": (0.105, 0.125), "bot_pct_lim": (0.0, 0.1)}
    fresh = NuScenesKeyframes(_data_cfg(dataroot, **kw), GRID, True, db=db, seed=5, depth=depth)
    cfg = _data_cfg(dataroot, cache_keyframes=2, **kw)
    cached = NuScenesKeyframes(cfg, GRID, True, db=db, seed=5, depth=depth)
    keys = (
        "imgs",
        "post_rots",
        "post_trans",
        "bev_mask",
        "lidar",
        "depth_target",
        "vehicle_target",
    )
    for epoch, index in [(0, 0), (0, 1), (1, 0), (2, 1), (0, 2), (3, 0)]:
        got, want = cached[(epoch, index)], fresh[(epoch, index)]
        for key in keys:
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)
        assert got["boxes"] == want["boxes"]
        got["lidar"].zero_()
        got["bev_mask"].zero_()
    assert sorted(cached._cache) == [0, 2]  # at most two kept, the least recently used dropped
    # (epoch, index) is the augmentation set_epoch(epoch) gives index.
    fresh.set_epoch(3)
    torch.testing.assert_close(fresh[0]["imgs"], cached[(3, 0)]["imgs"], rtol=0, atol=0)
    torch.testing.assert_close(fresh[0]["lidar"], cached[(3, 0)]["lidar"], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# GT BEV mask against the devkit's points_in_box


def _cell_of(xy: np.ndarray) -> np.ndarray:
    lo = np.array([GRID.xbound[0], GRID.ybound[0]])
    step = np.array([GRID.xbound[2], GRID.ybound[2]])
    return np.floor((xy - lo) / step).astype(int)


def test_lidar_points_in_vehicle_boxes_fall_on_the_mask(dataroot, db):
    """Every LiDAR point inside a vehicle box (devkit points_in_box) lies on an 'on' cell.

    Tolerance: a cell is on when its *centre* is inside the footprint, so a point inside the box
    but within half a cell diagonal (sqrt(dx^2 + dy^2) / 2 = 0.354 m at 0.5 m cells) of the
    footprint's edge may sit on an off cell; such points must have an 'on' cell among their
    8 neighbours. Conversely every 'on' cell's centre lies inside a vehicle box.
    """
    ds = NuScenesKeyframes(_data_cfg(dataroot), GRID, is_train=False, db=db)
    dx, dy = GRID.xbound[2], GRID.ybound[2]
    tol = math.hypot(dx, dy) / 2
    nx, ny, _ = GRID.shape
    strict_checked = 0
    for index in _spread(len(ds), 3):
        item = ds[index]
        mask = item["bev_mask"][0].numpy()  # X x Y
        points = item["lidar"][:, :3].numpy().astype(np.float64)  # P x 3
        vehicles = [
            b for b in db.boxes(item["sample_token"]) if b.category.startswith(ds.cfg.categories)
        ]
        assert vehicles
        for box in vehicles:
            devkit_box = box.devkit_box()
            inside = points_in_box(devkit_box, points.T)
            pts = points[inside]
            cells = _cell_of(pts[:, :2])
            on_grid = ((cells >= 0) & (cells < (nx, ny))).all(1)
            pts, cells = pts[on_grid], cells[on_grid]
            # depth of each point inside the footprint, in the box frame
            c, s = math.cos(box.yaw), math.sin(box.yaw)
            rel = pts[:, :2] - box.center[:2]
            along, across = rel[:, 0] * c + rel[:, 1] * s, -rel[:, 0] * s + rel[:, 1] * c
            margin = np.minimum(box.wlh[1] / 2 - np.abs(along), box.wlh[0] / 2 - np.abs(across))
            deep = margin >= tol
            assert np.all(mask[cells[deep, 0], cells[deep, 1]] == 1), (
                f"box {box.token}: deep points off the mask"
            )
            strict_checked += int(deep.sum())
            padded = np.pad(mask, 1)
            for i, j in cells[~deep]:
                assert padded[i : i + 3, j : j + 3].any(), (
                    f"box {box.token}: edge point at cell {(i, j)} far from the mask"
                )
        # no stray cells: every on cell's centre is inside some vehicle box (1% slack for edges)
        ii, jj = np.nonzero(mask)
        centres = np.stack([GRID.xbound[0] + (ii + 0.5) * dx, GRID.ybound[0] + (jj + 0.5) * dy], 1)
        covered = np.zeros(len(ii), dtype=bool)
        for box in vehicles:
            probe = np.concatenate([centres, np.full((len(ii), 1), box.center[2])], 1).T  # 3 x K
            covered |= points_in_box(box.devkit_box(), probe, wlh_factor=1.01)
        assert covered.all(), f"{(~covered).sum()} mask cells outside every vehicle box"
    assert strict_checked > 100  # the check saw real points


def test_box_lidar_counts_match_the_annotations(dataroot, db):
    """Boxes and LiDAR points line up in our ego frame: the devkit's points_in_box count of
    each box equals the annotation's num_lidar_pts (one point of slack for 1% of the boxes)."""
    keyframes = db.keyframes(db.scene_names[0])
    diffs = []
    for token in (keyframes[0], keyframes[-1]):
        points = db.lidar_points(token)[:, :3].T.astype(np.float64)  # 3 x P
        diffs += [
            abs(int(points_in_box(b.devkit_box(), points).sum()) - b.num_lidar_pts)
            for b in db.boxes(token)
        ]
    diffs = np.array(diffs)
    assert len(diffs) > 10 and diffs.max() <= 1 and (diffs > 0).mean() <= 0.01


# ---------------------------------------------------------------------------------------------
# Projection: our extrinsics/intrinsics/post-augmentation vs the devkit's view_points


def _marker_centroid(aug: ImageAug, pixel: np.ndarray, radius: float) -> np.ndarray:
    """Where a disk drawn at ``pixel`` of the original image lands after ``aug.apply``."""
    width, height = aug.src_size
    img = np.zeros((height, width), dtype=np.uint8)
    u0, v0 = int(pixel[0] - radius - 1), int(pixel[1] - radius - 1)
    size = int(2 * radius + 3)
    jj, ii = np.meshgrid(np.arange(u0, u0 + size), np.arange(v0, v0 + size))
    disk = (jj + 0.5 - pixel[0]) ** 2 + (ii + 0.5 - pixel[1]) ** 2 <= radius**2
    img[ii[disk], jj[disk]] = 255
    out = np.asarray(aug.apply(Image.fromarray(img)), dtype=np.float64)  # H' x W'
    rows, cols = np.mgrid[: out.shape[0], : out.shape[1]]
    return np.array([((cols + 0.5) * out).sum(), ((rows + 0.5) * out).sum()]) / out.sum()


def _augmented(post_rot: np.ndarray, post_tran: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    return (post_rot @ np.array([pixel[0], pixel[1], 1.0]) + post_tran)[:2]


@pytest.mark.parametrize(
    "aug",
    [
        ImageAug((1600, 900), (352, 198), (0, 48, 352, 176), False, 0.0),
        ImageAug(
            (1600, 900), (339, 191), (10, 40, 362, 168), True, 4.7
        ),  # crop beyond the right edge
        ImageAug((1600, 900), (360, 202), (5, 60, 357, 188), False, -5.4),
        ImageAug((1600, 900), (310, 174), (0, 30, 352, 158), True, -2.0),
    ],
)
def test_post_matrices_follow_the_image_operations(aug):
    """post_rot @ p + post_tran is where the pixel content at p ends up in aug.apply(image)."""
    post_rot, post_tran = aug.matrices()
    out_w, out_h = aug.crop[2] - aug.crop[0], aug.crop[3] - aug.crop[1]
    radius = 25.0
    hits = 0
    for pixel in np.array(
        [[400.5, 500.0], [800.0, 450.0], [1212.3, 640.7], [150.0, 380.0], [1500.0, 700.0]]
    ):
        expect = _augmented(post_rot, post_tran, pixel)
        r_out = radius * aug.resize_dims[0] / aug.src_size[0] + 2
        if not (r_out <= expect[0] <= out_w - r_out and r_out <= expect[1] <= out_h - r_out):
            continue
        assert np.abs(_marker_centroid(aug, pixel, radius) - expect).max() < 0.25, pixel
        hits += 1
    assert hits >= 2


def test_validation_augmentation_is_a_centre_crop():
    aug = sample_augmentation(DataConfig(), 1600, 900, None)
    assert aug == ImageAug((1600, 900), (352, 198), (0, 48, 352, 176), False, 0.0)


def test_box_corners_project_like_the_devkit(dataroot, db):
    """Box corners through our rots/trans/intrins and a seeded training augmentation land where
    the devkit's view_points puts them: through the same post matrices within 0.05 px, and
    through the real image operations (a marker disk pushed through ImageAug.apply) within
    0.25 px (measured: 2e-5 px and 0.02 px)."""
    ds = NuScenesKeyframes(_data_cfg(dataroot), GRID, is_train=True, db=db, seed=0)
    index = len(ds) // 2
    item = ds[index]
    token = item["sample_token"]
    cams = [db.camera(token, ch) for ch in ds.cfg.cameras]
    augs = ds.image_augmentations(index, cams)
    assert any(a.flip for a in augs) and any(a.rotate != 0 for a in augs)  # the seed exercises both
    ours_boxes = {b["token"]: b for b in item["boxes"]}
    (out_h, out_w), radius, checked = ds.cfg.final_dim, 25.0, 0
    for n, (cam, aug) in enumerate(zip(cams, augs, strict=True)):
        _, devkit_boxes, intrinsic = db.nusc.get_sample_data(
            cam.token, box_vis_level=BoxVisibility.ANY
        )
        rot, tran = item["rots"][n].double().numpy(), item["trans"][n].double().numpy()
        intrins = item["intrins"][n].double().numpy()
        post_rot, post_tran = (
            item["post_rots"][n].double().numpy(),
            item["post_trans"][n].double().numpy(),
        )
        markers = 0
        for dbox in devkit_boxes:
            if dbox.token not in ours_boxes:
                continue  # centre off the grid
            ob = ours_boxes[dbox.token]
            ego_corners = Box(
                ob["center"], ob["wlh"], Quaternion(ob["rotation"])
            ).corners()  # 3 x 8
            cam_corners = rot.T @ (ego_corners - tran[:, None])  # 3 x 8
            dev_corners = dbox.corners()  # 3 x 8 in the devkit's camera frame
            front = dev_corners[2] > 1.0
            ours_px = view_points(cam_corners, intrins, normalize=True)[:2]  # 2 x 8
            dev_px = view_points(dev_corners, np.asarray(intrinsic), normalize=True)[:2]  # 2 x 8
            for k in np.nonzero(front)[0]:
                ours = _augmented(post_rot, post_tran, ours_px[:, k])
                devkit = _augmented(post_rot, post_tran, dev_px[:, k])
                assert np.abs(ours - devkit).max() < 0.05, (cam.channel, dbox.token)
                checked += 1
                r_out = radius * aug.resize_dims[0] / aug.src_size[0] + 2
                inside_src = (
                    radius + 2 <= dev_px[0, k] <= cam.width - radius - 2
                    and radius + 2 <= dev_px[1, k] <= cam.height - radius - 2
                )
                if (
                    markers < 3
                    and inside_src
                    and r_out <= ours[0] <= out_w - r_out
                    and r_out <= ours[1] <= out_h - r_out
                ):
                    centroid = _marker_centroid(aug, dev_px[:, k], radius)
                    assert np.abs(centroid - ours).max() < 0.25, (
                        cam.channel,
                        dbox.token,
                        centroid,
                        ours,
                    )
                    markers += 1
    assert checked > 50


# ---------------------------------------------------------------------------------------------
# Frustum geometry


def test_create_frustum_layout():
    frustum = create_frustum((128, 352), 16, GRID.dbound)
    assert frustum.shape == (GRID.depth_bins, 8, 22, 3)
    assert torch.allclose(frustum[0, 0, :, 0], (torch.arange(22) + 0.5) * 16)
    assert torch.allclose(frustum[0, :, 0, 1], (torch.arange(8) + 0.5) * 16)
    assert torch.allclose(frustum[:, 0, 0, 2], 4.0 + torch.arange(41, dtype=torch.float32))


def test_frustum_to_ego_recovers_lidar_points(dataroot, db):
    """LiDAR points projected into each camera by the devkit's chain (sensor -> ego -> global ->
    camera's ego -> camera), moved by the training augmentation, then lifted back with
    frustum_to_ego at their depth, land on the points' ego positions within 2 cm."""
    ds = NuScenesKeyframes(_data_cfg(dataroot), GRID, is_train=True, db=db, seed=1)
    item = ds[0]
    token = item["sample_token"]
    nusc = db.nusc
    lidar_sd = nusc.get("sample_data", nusc.get("sample", token)["data"]["LIDAR_TOP"])
    ego_points = item["lidar"][:, :3].double()  # P x 3
    rng = np.random.default_rng(0)
    for n, channel in enumerate(ds.cfg.cameras):
        cam_sd = nusc.get("sample_data", nusc.get("sample", token)["data"][channel])
        pc = LidarPointCloud.from_file(str(db.dataroot / lidar_sd["filename"]))
        for sd, inverse in ((lidar_sd, False), (cam_sd, True)):
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            pose = nusc.get("ego_pose", sd["ego_pose_token"])
            steps = [(cs["rotation"], cs["translation"]), (pose["rotation"], pose["translation"])]
            for q, t in steps if not inverse else steps[::-1]:
                if not inverse:
                    pc.rotate(Quaternion(q).rotation_matrix)
                    pc.translate(np.array(t))
                else:
                    pc.translate(-np.array(t))
                    pc.rotate(Quaternion(q).rotation_matrix.T)
        depth = pc.points[2]
        pixels = view_points(
            pc.points[:3],
            np.asarray(
                nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])["camera_intrinsic"]
            ),
            normalize=True,
        )
        keep = (
            (depth > 1.0)
            & (pixels[0] >= 0)
            & (pixels[0] < cam_sd["width"])
            & (pixels[1] >= 0)
            & (pixels[1] < cam_sd["height"])
        )
        idx = rng.choice(np.nonzero(keep)[0], size=min(300, int(keep.sum())), replace=False)
        assert len(idx) > 50, channel
        post_rot, post_tran = item["post_rots"][n].double(), item["post_trans"][n].double()
        uv = torch.from_numpy(
            np.stack([pixels[0, idx], pixels[1, idx], np.ones(len(idx))], 1)
        )  # K x 3
        uv_aug = uv @ post_rot.T + post_tran  # K x 3
        frustum = torch.stack([uv_aug[:, 0], uv_aug[:, 1], torch.from_numpy(depth[idx])], 1).view(
            -1, 1, 1, 3
        )  # K x 1 x 1 x 3
        sel = slice(n, n + 1)
        lifted = frustum_to_ego(
            frustum.float(),
            item["rots"][None, sel],
            item["trans"][None, sel],
            item["intrins"][None, sel],
            item["post_rots"][None, sel],
            item["post_trans"][None, sel],
        )  # 1 x 1 x K x 1 x 1 x 3
        err = (lifted.view(-1, 3).double() - ego_points[idx]).norm(dim=1)
        assert err.max() < 0.02, (channel, float(err.max()))


def test_points_to_voxel_coords_and_inside_grid():
    points = torch.tensor(
        [
            [-50.0, -50.0, -10.0],
            [49.999, 0.1, 9.99],
            [50.0, 0.0, 0.0],
            [-50.001, 0.0, 0.0],
            [0.0, 0.0, 10.0],
        ]
    )
    coords = points_to_voxel_coords(points, GRID)
    assert coords.dtype == torch.int64
    assert coords.tolist() == [[0, 0, 0], [199, 100, 0], [200, 100, 0], [-1, 100, 0], [100, 100, 1]]
    assert inside_grid(coords, GRID).tolist() == [True, True, False, False, False]


# ---------------------------------------------------------------------------------------------
# Scenes, conditions, and bad input


def test_scene_conditions():
    assert scene_conditions("Parking lot, bus, many peds") == ["day"]
    assert scene_conditions("Night, RAIN, wet road") == ["night", "rain"]
    assert scene_conditions("Rainy, intersection") == ["day", "rain"]
    assert scene_conditions("Construction on the terrain") == ["day"]


class _FakeTables:
    def __init__(self, version: str, names: list[str]):
        self.version, self.dataroot = version, "/fake"
        self.scene = [{"name": n} for n in names]


def test_resolve_scenes_without_data():
    train, val = splits.train[0], splits.val[0]
    tables = _FakeTables("v1.0-trainval", [val, train, "scene-extra"])
    assert resolve_scenes(tables, "train", ()) == [train]
    assert resolve_scenes(tables, "val", ()) == [val]
    assert resolve_scenes(tables, None, ()) == [val, train, "scene-extra"]
    assert resolve_scenes(tables, "val", ["scene-extra", train, train]) == [
        "scene-extra",
        train,
    ]  # explicit wins
    with pytest.raises(NuScenesFormatError, match="unknown split 'bogus'"):
        resolve_scenes(tables, "bogus", ())
    with pytest.raises(NuScenesFormatError, match=r"unknown scene\(s\) scene-9999.*valid: scene-"):
        resolve_scenes(tables, None, ["scene-9999"])
    synth = _FakeTables(
        "v1.0-mini", ["synth-0", "synth-1"]
    )  # none of mini's scenes: a synthetic world
    assert (
        resolve_scenes(synth, "train", ())
        == resolve_scenes(synth, "val", ())
        == ["synth-0", "synth-1"]
    )
    assert resolve_scenes(_FakeTables("v2.0-custom", ["a", "b"]), "train", ()) == ["a", "b"]
    with pytest.raises(NuScenesFormatError, match="no scenes"):
        resolve_scenes(_FakeTables("v1.0-mini", []), "train", ())


def test_resolve_scenes_on_a_partial_copy(dataroot, db):
    present = db.scene_names
    official = set(splits.mini_train + splits.mini_val)
    if dataroot.version != "v1.0-mini" or not official & set(present):
        pytest.skip("not a partial copy of v1.0-mini")
    val = [s for s in present if s in splits.mini_val]
    assert resolve_scenes(db, "val", ()) == val
    if not set(present) & set(splits.mini_train):
        with pytest.raises(NuScenesFormatError, match="'mini_train' of v1.0-mini has no scene"):
            resolve_scenes(db, "train", ())
    with pytest.raises(NuScenesFormatError, match="unknown scene"):
        NuScenesKeyframes(_data_cfg(dataroot, scenes=("scene-9999",)), GRID, db=db)


def _broken_copy(
    src: Path,
    dst: Path,
    version: str,
    drop_table: str | None = None,
    drop_files: tuple[str, ...] = (),
) -> Path:
    """Copies the tables (without ``drop_table``) and links the sensor folders, leaving out
    ``drop_files`` (paths relative to the dataroot)."""
    (dst / version).mkdir(parents=True)
    for name in TABLES:
        if name != drop_table:
            shutil.copy(src / version / f"{name}.json", dst / version / f"{name}.json")
    for folder in (src / "samples").iterdir():
        dropped = {
            Path(f).name for f in drop_files if Path(f).parent == Path("samples") / folder.name
        }
        if not dropped:
            (dst / "samples").mkdir(exist_ok=True)
            (dst / "samples" / folder.name).symlink_to(folder)
            continue
        (dst / "samples" / folder.name).mkdir(parents=True)
        for f in folder.iterdir():
            if f.name not in dropped:
                (dst / "samples" / folder.name / f.name).symlink_to(f)
    return dst


def test_missing_dataroot(tmp_path):
    with pytest.raises(NuScenesFileError, match="dataroot .*nope.* does not exist"):
        NuScenesDB(tmp_path / "nope", "v1.0-mini")


def test_wrong_version_lists_the_versions(dataroot):
    with pytest.raises(
        NuScenesFileError,
        match=f"version 'v9.9-none' not found.*Versions in .*: {dataroot.version}",
    ):
        NuScenesDB(dataroot.path, "v9.9-none")


def test_missing_or_broken_table(dataroot, tmp_path):
    root = _broken_copy(dataroot.path, tmp_path / "a", dataroot.version, drop_table="visibility")
    with pytest.raises(NuScenesFileError, match=r"visibility\.json.* is missing"):
        NuScenesDB(root, dataroot.version)
    root = _broken_copy(dataroot.path, tmp_path / "b", dataroot.version)
    (root / dataroot.version / "scene.json").write_text("[{", encoding="utf-8")
    with pytest.raises(NuScenesFormatError, match=r"scene\.json: not valid JSON"):
        NuScenesDB(root, dataroot.version)


def test_missing_image_or_point_cloud(dataroot, db, tmp_path):
    token = db.keyframes(db.scene_names[0])[0]
    image = db.camera(token, "CAM_FRONT").path.relative_to(db.dataroot)
    cloud = db.lidar_path(token).relative_to(db.dataroot)
    root = _broken_copy(
        dataroot.path, tmp_path / "c", dataroot.version, drop_files=(str(image), str(cloud))
    )
    cfg = DataConfig(dataroot=str(root), version=dataroot.version, scenes=(db.scene_names[0],))
    ds = NuScenesKeyframes(cfg, GRID)
    with pytest.raises(
        NuScenesFileError, match=f"camera image .*{re.escape(image.name)}.* is missing"
    ):
        ds[ds.index_of(token)]
    with pytest.raises(
        NuScenesFileError, match=f"LiDAR point cloud .*{re.escape(cloud.name)}.* is missing"
    ):
        ds.db.lidar_points(token)


def test_table_copy_round_trips(dataroot, tmp_path):
    """The broken-copy helper itself makes a loadable root when nothing is dropped."""
    root = _broken_copy(dataroot.path, tmp_path / "d", dataroot.version)
    scenes = json.loads(
        (dataroot.path / dataroot.version / "scene.json").read_text(encoding="utf-8")
    )
    assert NuScenesDB(root, dataroot.version).scene_names == [s["name"] for s in scenes]


# ---------------------------------------------------------------------------------------------
# Picture


def test_show_sample_writes_a_png(dataroot, db, tmp_path):
    from bev_reid.data.visualize import show_sample

    token = db.keyframes(db.scene_names[0])[0]
    out = show_sample(dataroot.path, dataroot.version, token, tmp_path / "sample.png")
    assert [p.name for p in tmp_path.iterdir()] == ["sample.png"]  # no temporary left behind
    with Image.open(out) as img:
        assert img.size[0] > 1000 and img.size[1] > 400


def test_picture_format_follows_the_suffix(dataroot, db, tmp_path):
    from bev_reid.data.visualize import show_sample

    token = db.keyframes(db.scene_names[0])[0]
    out = show_sample(dataroot.path, dataroot.version, token, tmp_path / "sample.PDF")
    assert out.read_bytes()[:5] == b"%PDF-"
    out = show_sample(dataroot.path, dataroot.version, token, tmp_path / "sample.jpg")
    assert out.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG's start-of-image marker
    with pytest.raises(ValueError, match=r"'.*sample.txt'.*\.png, \.pdf, \.svg or \.jpg"):
        show_sample(dataroot.path, dataroot.version, token, tmp_path / "sample.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.PDF", "sample.jpg"]


def test_min_visibility_leaves_hidden_vehicles_out_of_the_mask(dataroot, db):
    """data.min_visibility: the mask is that of the vehicle boxes whose visibility token (read
    with the devkit) is at least the level; 0 keeps every box."""
    from nuscenes import NuScenes

    from bev_reid.data.raster import category_boxes, rasterize_boxes

    nusc = NuScenes(version=dataroot.version, dataroot=str(dataroot.path), verbose=False)
    every = NuScenesKeyframes(_data_cfg(dataroot), GRID, is_train=False, db=db)
    checked = 0
    for level in (2, 4):
        ds = NuScenesKeyframes(_data_cfg(dataroot, min_visibility=level), GRID, db=db)
        for index in _spread(len(ds), 2):
            item, whole = ds[index], every[index]
            sample = nusc.get("sample", item["sample_token"])
            tokens = {
                t for t in sample["anns"]
                if int(nusc.get("sample_annotation", t)["visibility_token"]) >= level
            }  # fmt: skip
            kept = [b for b in db.boxes(item["sample_token"]) if b.token in tokens]
            want = rasterize_boxes(category_boxes(kept, ds.cfg.categories), GRID)
            assert np.array_equal(item["bev_mask"][0].numpy(), want)
            assert bool((item["bev_mask"] <= whole["bev_mask"]).all())
            checked += int(whole["bev_mask"].sum() > item["bev_mask"].sum())
    assert checked >= 1  # some hidden vehicle was left out


def test_bev_augmentation_moves_cameras_boxes_and_points_together(dataroot, db):
    """data.bev_rot_lim / bev_flip: each camera sees every LiDAR point where it saw it before
    (camera-frame coordinates unchanged), the points inside vehicle boxes land on the moved
    mask, the images and depth targets stay; seeded draws repeat; off in evaluation."""
    cfg = _data_cfg(dataroot, bev_rot_lim=(-180.0, 180.0), bev_flip=True)
    plain = NuScenesKeyframes(
        _data_cfg(dataroot), GRID, is_train=True, db=db, seed=3, depth=(16, GRID.dbound)
    )
    moved = NuScenesKeyframes(cfg, GRID, is_train=True, db=db, seed=3, depth=(16, GRID.dbound))
    assert NuScenesKeyframes(cfg, GRID, is_train=False, db=db).bev_augmentation(0) is None
    assert np.array_equal(moved.bev_augmentation(1), moved.bev_augmentation(1))
    for index in _spread(len(moved), 2):
        a, b = plain[index], moved[index]
        matrix = moved.bev_augmentation(index)
        assert torch.equal(a["imgs"], b["imgs"]) and torch.equal(
            a["depth_target"], b["depth_target"]
        )
        pa, pb = a["lidar"][:, :3].double(), b["lidar"][:, :3].double()
        assert torch.allclose(pb, pa @ torch.from_numpy(matrix).T, atol=1e-4)
        for n in range(a["rots"].shape[0]):
            cam_a = (pa - a["trans"][n].double()) @ a["rots"][n].double()  # rots^T (p - t)
            cam_b = (pb - b["trans"][n].double()) @ b["rots"][n].double()
            assert torch.allclose(cam_a, cam_b, atol=1e-3)
        # Points well inside a vehicle box (true frame, devkit) fall on the moved mask.
        points = pa.numpy()
        mask = b["bev_mask"][0].numpy()
        for box in db.boxes(a["sample_token"]):
            if not box.category.startswith(cfg.categories) or box.wlh[0] < 1.2:
                continue
            shrunk = Box(box.center, box.wlh - 0.8, box.rotation)  # 0.4 m margin each side
            inside = points_in_box(shrunk, points.T)
            cells = _cell_of(pb.numpy()[inside][:, :2])
            on = ((cells >= 0) & (cells < GRID.shape[:2])).all(1)
            assert np.all(mask[cells[on, 0], cells[on, 1]] == 1)


def test_bev_augmentation_draws_turns_and_mirrorings():
    """The draws: angles spread over the limits, each mirroring about half the time."""
    import types

    ds = NuScenesKeyframes.__new__(NuScenesKeyframes)
    ds.is_train, ds.seed, ds.epoch = True, 0, 0
    ds.cfg = types.SimpleNamespace(bev_rot_lim=(-30.0, 30.0), bev_flip=True)
    mats = np.stack([ds.bev_augmentation(i) for i in range(400)])
    assert np.allclose(np.abs(np.linalg.det(mats)), 1.0)
    assert 0.35 < (np.linalg.det(mats) < 0).mean() < 0.65
    angles = np.degrees(np.arctan2(np.abs(mats[:, 1, 0]), np.abs(mats[:, 0, 0])))
    assert angles.max() <= 30.0 + 1e-9 and angles.max() > 25.0
