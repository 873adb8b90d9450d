"""LiDAR BEV rasters on the camera model's grid (occupancy, max height, mean intensity), and
LiDAR points painted with the colour of the camera pixel they fall in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from bev_reid.config import GridConfig
from bev_reid.ops import dynamic_voxelize

if TYPE_CHECKING:
    from bev_reid.data.records import CameraFrame

RASTER_CHANNELS = ("occupancy", "max_height", "mean_intensity")
COLOUR_CHANNELS = ("mean_red", "mean_green", "mean_blue")
MIN_PAINT_DEPTH = 0.5  # metres in front of a camera before it may paint a point


def cell_mean_colour(cell: torch.Tensor, colours: torch.Tensor, cells: int) -> torch.Tensor:
    """Mean colour of the painted points of each cell.

    Args:
        cell: [M] flat cell index of each point, in [0, cells); colours: [M, 3] (NaN: unpainted).
    Returns:
        [3, cells] float32: the mean over the cell's painted points, 0 where it has none.
    """
    painted = torch.isfinite(colours).all(1)
    cell, colours = cell[painted], colours[painted].float()
    total = colours.new_zeros(cells, 3).index_add_(0, cell, colours)
    count = colours.new_zeros(cells).index_add_(0, cell, torch.ones_like(colours[:, 0]))
    return (total / count.clamp(min=1)[:, None]).T


def lidar_bev_rasters(
    points_ego: torch.Tensor, grid: GridConfig, colours: torch.Tensor | None = None
) -> torch.Tensor:
    """Rasterises ego-frame LiDAR points on the BEV grid.

    Points are assigned to cells by :func:`bev_reid.ops.dynamic_voxelize` over the grid's x, y
    and z ranges; points outside them (including above or below the z range) are ignored.

    Args:
        points_ego: [P, F >= 4] float (x, y, z, intensity, ...) in the ego frame; CPU or CUDA.
        grid: the BEV grid (X x Y cells; its z range bounds the points kept).
        colours: [P, 3] painted colours (:func:`paint_points`, NaN where unpainted), or None.
    Returns:
        [3 (+ 3), X, Y] float32 on the points' device, x index along ego x, y along ego y:
        0 occupancy: 1 where any point falls, else 0;
        1 max height: the highest point's z above the grid's z minimum (``z - zbound[0]``,
          metres, >= 0), 0 where empty;
        2 mean intensity: mean of column 3 (nuScenes: 0-255), 0 where empty;
        with ``colours``, 3-5 mean red, green, blue of the painted points, 0 where none.
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
    if colours is not None:
        paint = cell_mean_colour(cell, colours.to(out.device)[keep], nx * ny)
        out = torch.cat([out, paint])
    return out.view(-1, nx, ny)


def paint_points(
    points_ego: np.ndarray,
    cameras: Sequence[CameraFrame],
    images: Sequence[np.ndarray],
    hidden: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """The camera colour under each LiDAR point ("painted" LiDAR).

    Each point is projected into the cameras in order; the first camera that sees it in front of
    its lens (depth > ``MIN_PAINT_DEPTH``) and inside its image gives the colour of the pixel the
    point falls in (nearest pixel, PIL's convention: pixel (i, j) covers [j, j+1) x [i, i+1)).
    Occlusion is not tested: the LiDAR sits a few decimetres from the cameras, so a point hidden
    from a camera by a nearer object (rare at those baselines) takes that object's colour.

    Args:
        points_ego: [P, >= 3] ego-frame x, y, z.
        cameras: the calibrations (``intrinsics``, camera -> ego ``rot`` / ``trans``, full-size
            ``width`` / ``height``).
        images: per camera an [H, W, 3] uint8 RGB image at any scale of the full-size one
            (e.g. decoded at 1/4 size): pixel coordinates are scaled by W / width, H / height.
        hidden: ``hidden(origin [3], rows [M]) -> [M] bool``: whether the points ``rows`` are
            hidden from a camera at ego ``origin`` (an occlusion test); a hidden point is left
            to the next camera. None: nothing is hidden.
    Returns:
        [P, 3] float32 RGB in [0, 1]; NaN for points no camera sees.
    """
    out = np.full((len(points_ego), 3), np.nan, dtype=np.float32)
    todo = np.arange(len(points_ego))
    for cam, image in zip(cameras, images, strict=True):
        h, w = image.shape[:2]
        uv, depth = cam.project(points_ego[todo])
        u, v = uv[:, 0] * (w / cam.width), uv[:, 1] * (h / cam.height)
        seen = (depth > MIN_PAINT_DEPTH) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        if hidden is not None and seen.any():
            rows = np.nonzero(seen)[0]
            seen[rows[hidden(np.asarray(cam.trans, np.float64), todo[rows])]] = False
        hit = todo[seen]
        out[hit] = image[v[seen].astype(np.int64), u[seen].astype(np.int64)] / np.float32(255)
        todo = todo[~seen]
        if todo.size == 0:
            break
    return out
