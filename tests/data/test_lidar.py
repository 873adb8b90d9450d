"""LiDAR BEV rasters against a plain numpy reference (written here, independent of the ops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bev_reid.config import GridConfig
from bev_reid.data.lidar import lidar_bev_rasters
from bev_reid.data.nuscenes import NuScenesDB

GRID = GridConfig()


def reference_rasters(points: np.ndarray, grid: GridConfig) -> np.ndarray:
    """[3, X, Y]: occupancy, max height above zbound[0], mean intensity; a loop over points."""
    nx, ny, nz = grid.shape
    out = np.zeros((3, nx, ny))
    count = np.zeros((nx, ny))
    for x, y, z, intensity in points[:, :4].astype(np.float64):
        i = math.floor((x - grid.xbound[0]) / grid.xbound[2])
        j = math.floor((y - grid.ybound[0]) / grid.ybound[2])
        k = math.floor((z - grid.zbound[0]) / grid.zbound[2])
        if not (0 <= i < nx and 0 <= j < ny and 0 <= k < nz):
            continue
        height = z - grid.zbound[0]
        out[1, i, j] = height if count[i, j] == 0 else max(out[1, i, j], height)
        out[2, i, j] += intensity
        count[i, j] += 1
    out[0] = count > 0
    out[2] /= np.maximum(count, 1)
    return out


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
    from bev_reid.data.nuscenes import box_in_grid, category_boxes, rasterize_boxes

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
