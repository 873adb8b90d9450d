"""LiDAR BEV rasters against a plain numpy reference (written here, independent of the ops);
painted LiDAR against hand-placed cameras and the devkit's own projection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bev_reid.config import GridConfig
from bev_reid.data.lidar import lidar_bev_rasters, paint_points
from bev_reid.data.nuscenes import NuScenesDB
from bev_reid.data.records import CameraFrame

GRID = GridConfig()


def reference_rasters(
    points: np.ndarray, grid: GridConfig, colours: np.ndarray | None = None
) -> np.ndarray:
    """[3, X, Y]: occupancy, max height above zbound[0], mean intensity; with colours [3 + 3,
    X, Y], the mean colour of the painted (finite) ones last; a loop over points."""
    nx, ny, nz = grid.shape
    out = np.zeros((3, nx, ny))
    count = np.zeros((nx, ny))
    paint, painted = np.zeros((3, nx, ny)), np.zeros((nx, ny))
    if colours is None:
        colours = np.full((len(points), 3), np.nan)
    for (x, y, z, intensity), rgb in zip(points[:, :4].astype(np.float64), colours, strict=True):
        i = math.floor((x - grid.xbound[0]) / grid.xbound[2])
        j = math.floor((y - grid.ybound[0]) / grid.ybound[2])
        k = math.floor((z - grid.zbound[0]) / grid.zbound[2])
        if not (0 <= i < nx and 0 <= j < ny and 0 <= k < nz):
            continue
        height = z - grid.zbound[0]
        out[1, i, j] = height if count[i, j] == 0 else max(out[1, i, j], height)
        out[2, i, j] += intensity
        count[i, j] += 1
        if np.isfinite(rgb).all():
            paint[:, i, j] += rgb
            painted[i, j] += 1
    out[0] = count > 0
    out[2] /= np.maximum(count, 1)
    return np.concatenate([out, paint / np.maximum(painted, 1)]) if painted.any() else out


def test_hand_made_points():
    grid = GridConfig(xbound=(-2.0, 2.0, 1.0), ybound=(-1.0, 1.0, 0.5), zbound=(-1.0, 3.0, 4.0))
    points = torch.tensor(
        [
            [0.2, 0.1, 0.5, 10.0, 0.0],  # cell (2, 2), with the next one
            [0.9, 0.4, 2.0, 30.0, 0.0],
            [-2.0, -1.0, -1.0, 7.0, 0.0],  # exactly on the lower corner: cell (0, 0), height 0
            [1.5, 0.9, -1.5, 99.0, 0.0],  # below the z range: dropped
            [2.0, 0.0, 0.0, 99.0, 0.0],  # on the upper x edge: outside
        ]
    )
    rasters = lidar_bev_rasters(points, grid)
    assert rasters.shape == (3, 4, 4) and rasters.dtype == torch.float32
    expect = np.zeros((3, 4, 4))
    expect[:, 2, 2] = (1.0, 3.0, 20.0)
    expect[:, 0, 0] = (1.0, 0.0, 7.0)
    np.testing.assert_allclose(rasters.numpy(), expect, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_points_match_the_reference(dtype):
    rng = np.random.default_rng(0)
    points = np.concatenate(
        [
            rng.uniform(-60, 60, (3000, 2)),
            rng.uniform(-12, 12, (3000, 1)),
            rng.uniform(0, 255, (3000, 1)),
        ],
        1,
    )
    points[:1000, :2] = np.round(points[:1000, :2] * 2) / 2  # many points on cell edges
    rasters = lidar_bev_rasters(torch.from_numpy(points).to(dtype), GRID)
    expect = reference_rasters(
        points if dtype == torch.float64 else points.astype(np.float32), GRID
    )
    np.testing.assert_allclose(rasters.numpy(), expect, rtol=1e-5, atol=1e-4)


def test_colour_channels_match_the_reference():
    rng = np.random.default_rng(2)
    points = np.concatenate([rng.uniform(-55, 55, (4000, 3)), rng.uniform(0, 255, (4000, 1))], 1)
    points[:2000, :2] = rng.uniform(-3, 3, (2000, 2))  # crowded cells, painted and not
    colours = rng.uniform(0, 1, (4000, 3))
    colours[rng.random(4000) < 0.4] = np.nan  # no camera sees these
    got = lidar_bev_rasters(
        torch.from_numpy(points).float(), GRID, torch.from_numpy(colours).float()
    )
    expect = reference_rasters(points.astype(np.float32), GRID, colours.astype(np.float32))
    assert got.shape == (6, 200, 200) and (expect[3:] > 0).sum() > 500
    np.testing.assert_allclose(got.numpy(), expect, rtol=1e-5, atol=1e-4)


def test_rejects_points_without_intensity():
    with pytest.raises(ValueError, match=r"\[P, >=4\]"):
        lidar_bev_rasters(torch.zeros(5, 3), GRID)


@pytest.fixture(scope="module")
def db(dataroot) -> NuScenesDB:
    return NuScenesDB(dataroot.path, dataroot.version)


def test_real_sweep(dataroot, db):
    """A real sweep equals the reference, and the rasters line up with the boxes: every vehicle
    box on the grid with 20+ LiDAR points has an occupied cell under its GT mask cells, and a
    raised one (max height > 0.5 m above the ego's ground plane, z = 0)."""
    from bev_reid.data.raster import box_in_grid, category_boxes, rasterize_boxes

    token = db.keyframes(db.scene_names[0])[0]
    points = db.lidar_points(token)  # P x 5, ego frame
    rasters = lidar_bev_rasters(torch.from_numpy(points), GRID).numpy()
    np.testing.assert_allclose(rasters, reference_rasters(points, GRID), rtol=1e-5, atol=1e-4)
    checked = 0
    for box in category_boxes(db.boxes(token), ("vehicle",)):
        if box.num_lidar_pts < 20 or not box_in_grid(box, GRID):
            continue
        cells = rasterize_boxes([box], GRID) > 0
        assert rasters[0][cells].any(), box.token
        assert (rasters[1][cells] > 0.5 - GRID.zbound[0]).any(), box.token
        checked += 1
    assert checked >= 3


@pytest.mark.gpu
def test_cuda_matches_cpu():
    import bev_reid.ops as ops

    if not (torch.cuda.is_available() and ops.cuda_built()):
        pytest.skip("needs a GPU and a FORCE_CUDA=1 build")
    rng = np.random.default_rng(1)
    points = torch.from_numpy(
        np.concatenate([rng.uniform(-55, 55, (20000, 3)), rng.uniform(0, 255, (20000, 2))], 1)
    ).float()
    cpu = lidar_bev_rasters(points, GRID)
    cuda = lidar_bev_rasters(points.cuda(), GRID)
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Painted LiDAR


def looking(forward: tuple[float, float, float], left: tuple[float, float, float]) -> np.ndarray:
    """camera -> ego rotation of a camera whose optical axis (z) is ``forward`` and whose image
    x axis (to the right) is minus ``left``, image y pointing down."""
    z, x = np.asarray(forward, float), -np.asarray(left, float)
    return np.stack([x, np.cross(z, x), z], 1)  # columns: the camera axes in ego


def toy_camera(rot: np.ndarray) -> CameraFrame:
    k = np.array([[4.0, 0.0, 4.0], [0.0, 4.0, 2.0], [0.0, 0.0, 1.0]])  # 8 x 4 pixels, f = 4
    return CameraFrame("CAM", "t", None, 8, 4, k, rot, np.zeros(3))


def test_paint_hand_placed_cameras():
    """Pixels worked out by hand: a point on the optical axis 10 m ahead lands at (column 4, row
    2); 2.5 m to the side moves it f * 2.5 / 10 = 1 column."""
    front = toy_camera(looking((1, 0, 0), (0, 1, 0)))
    back = toy_camera(looking((-1, 0, 0), (0, -1, 0)))
    full = np.arange(4 * 8 * 3, dtype=np.uint8).reshape(4, 8, 3)  # every pixel its own colour
    half = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3) + 100  # the back, 1/2 size
    other = np.full((4, 8, 3), 255, np.uint8)
    points = np.array(
        [
            [10.0, 0.0, 0.0],  # front, column 4, row 2
            [10.0, 2.5, 0.0],  # front, 1 column left of the axis: column 3
            [10.0, 0.0, 2.6],  # front, 1.04 rows up: row 0.96 -> 0
            [-10.0, 0.0, 0.0],  # back, full-size (4, 2) -> half-size column 2, row 1
            [-10.0, 2.5, 0.0],  # back: to its right, full-size column 5 -> half-size 2.5 -> 2
            [0.0, 0.0, 30.0],  # straight up: no camera
            [10.0, 9.0, 0.0],  # front, column 4 - 3.6 = 0.4 -> 0
            [10.0, 11.0, 0.0],  # front, off the image's left edge (column -0.4)
            [0.3, 0.0, 0.0],  # in front of the front camera, nearer than MIN_PAINT_DEPTH
        ]
    )
    got = paint_points(points, [front, back, front], [full, half, other])
    want = np.full((9, 3), np.nan)
    want[0], want[1], want[2] = full[2, 4], full[2, 3], full[0, 4]
    want[3], want[4], want[6] = half[1, 2], half[1, 2], full[2, 0]
    np.testing.assert_allclose(got, want / 255.0, rtol=1e-6)  # the later front camera never wins
    assert got.dtype == np.float32


def test_projection_matches_the_devkit(dataroot, db):
    """Every LiDAR point the devkit maps into a camera image (its own chain: sensor -> ego at
    the sweep -> global -> ego at the image -> camera) lands on the same pixel through our
    keyframe-ego points and CameraFrame.project, for all six cameras of a keyframe."""
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(dataroot.version, str(dataroot.path), verbose=False)
    token = db.keyframes(db.scene_names[0])[2]
    sample = nusc.get("sample", token)
    points = db.lidar_points(token)
    checked = 0
    for channel in ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT",
                    "CAM_BACK", "CAM_BACK_RIGHT"):  # fmt: skip
        cam = db.camera(token, channel)
        dev_uv, dev_depth, _ = nusc.explorer.map_pointcloud_to_image(
            sample["data"]["LIDAR_TOP"], sample["data"][channel], min_dist=1.0
        )
        uv, depth = cam.project(points)
        # the devkit's filter: depth > min_dist and a pixel's margin inside the image
        keep = (depth > 1.0) & (uv[:, 0] > 1) & (uv[:, 0] < cam.width - 1)
        keep &= (uv[:, 1] > 1) & (uv[:, 1] < cam.height - 1)
        assert keep.sum() == dev_uv.shape[1], channel
        # The devkit keeps the points in float32 through global coordinates (a thousand metres
        # out: ~1e-4 m steps): ~0.01 px at 10 m, a few hundredths on the nearest points.
        error = np.abs(uv[keep] - dev_uv[:2].T).max(1)
        assert error.max() < 0.1 and np.median(error) < 0.01, (channel, error.max())
        np.testing.assert_allclose(depth[keep], dev_depth, atol=2e-3)
        checked += int(keep.sum())
    assert checked > 1000
