"""LiDAR BEV rasters on the camera model's grid: occupancy, max height, mean intensity."""

from __future__ import annotations

import torch

from bev_reid.config import GridConfig
from bev_reid.ops import dynamic_voxelize

RASTER_CHANNELS = ("occupancy", "max_height", "mean_intensity")


def lidar_bev_rasters(points_ego: torch.Tensor, grid: GridConfig) -> torch.Tensor:
    """Rasterises ego-frame LiDAR points on the BEV grid.

    Points are assigned to cells by :func:`bev_reid.ops.dynamic_voxelize` over the grid's x, y
    and z ranges; points outside them (including above or below the z range) are ignored.

    Args:
        points_ego: [P, F >= 4] float (x, y, z, intensity, ...) in the ego frame; CPU or CUDA.
        grid: the BEV grid (X x Y cells; its z range bounds the points kept).
    Returns:
        [3, X, Y] float32 on the points' device, x index along ego x, y along ego y:
        0 occupancy: 1 where any point falls, else 0;
        1 max height: the highest point's z above the grid's z minimum (``z - zbound[0]``,
          metres, >= 0), 0 where empty;
        2 mean intensity: mean of column 3 (nuScenes: 0-255), 0 where empty.
    """
    if points_ego.dim() != 2 or points_ego.shape[1] < 4:
        raise ValueError(
            f"points_ego must be [P, >=4] (x, y, z, intensity, ...), got {tuple(points_ego.shape)}"
        )
    nx, ny, _ = grid.shape
    bounds = (grid.xbound, grid.ybound, grid.zbound)
    points = (
        points_ego if points_ego.dtype in (torch.float32, torch.float64) else points_ego.float()
    )
    coords = dynamic_voxelize(
        points[:, :3].contiguous(),
        [b[2] for b in bounds],
        [b[0] for b in bounds] + [b[1] for b in bounds],
    )  # P x 3 (z, y, x), -1 rows outside
    keep = coords[:, 0] >= 0  # P
    cell = coords[keep, 2].long() * ny + coords[keep, 1].long()  # P' flat x * Y + y
    height = (points[keep, 2] - grid.zbound[0]).float()  # P'
    intensity = points[keep, 3].float()  # P'

    out = torch.zeros(3, nx * ny, dtype=torch.float32, device=points.device)  # 3 x XY
    count = torch.zeros(nx * ny, dtype=torch.float32, device=points.device).index_add_(
        0, cell, torch.ones_like(height)
    )  # XY
    out[0] = (count > 0).float()
    out[1].scatter_reduce_(0, cell, height, reduce="amax", include_self=False)  # empty cells stay 0
    out[2].index_add_(0, cell, intensity)
    out[2] /= count.clamp(min=1)
    return out.view(3, nx, ny)
