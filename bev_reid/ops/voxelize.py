"""Voxelization of point clouds (hard and dynamic), with mmcv's conventions.

``voxelize`` and ``dynamic_voxelize`` run the compiled kernels (CPU and CUDA);
``voxelize_reference`` and ``dynamic_voxelize_reference`` are the same in plain numpy and are the
yardstick of the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bev_reid.ops._lib import load_library

load_library()

_ops = torch.ops.bev_reid


def _floats(values: Sequence[float] | torch.Tensor | np.ndarray, n: int, name: str) -> list[float]:
    if isinstance(values, (torch.Tensor, np.ndarray)):
        values = values.tolist()
    values = [float(v) for v in values]
    if len(values) != n:
        raise ValueError(f"voxelize: {name} must have {n} values, got {len(values)}")
    return values


def dynamic_voxelize(
    points: torch.Tensor,
    voxel_size: Sequence[float],
    point_cloud_range: Sequence[float],
) -> torch.Tensor:
    """Voxel coordinates of every point.

    Args:
        points: [P, F] float32/float64, F >= 3, columns (x, y, z, ...); other dtypes are refused.
        voxel_size: (vx, vy, vz) > 0.
        point_cloud_range: (x_min, y_min, z_min, x_max, y_max, z_max) with min < max.

    As mmcv, ``voxel_size`` and ``point_cloud_range`` are rounded to float32 whatever the points'
    dtype, and the grid, round((max - min) / size), is computed in float32; a point's cell,
    floor((p - min) / size), is computed in the points' dtype (for float64: as mmcv's CPU kernel).

    Returns:
        [P, 3] int32 (z, y, x); the row is -1 for points outside the range.
    """
    return _ops.dynamic_voxelize(
        points.contiguous(),
        _floats(voxel_size, 3, "voxel_size"),
        _floats(point_cloud_range, 6, "point_cloud_range"),
    )


def voxelize(
    points: torch.Tensor,
    voxel_size: Sequence[float],
    point_cloud_range: Sequence[float],
    max_points: int,
    max_voxels: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hard voxelization: at most ``max_points`` points per voxel and ``max_voxels`` voxels.

    Voxels are numbered in the order of their first point; a voxel keeps its first points in
    input order; once ``max_voxels`` voxels exist, points of new voxels are dropped. Arguments and
    dtypes as :func:`dynamic_voxelize`; at most 2^31 - 1 points. Any ``max_voxels`` >= 1 is taken
    (no more voxels than points can exist). The number of voxels depends on the data, so on CUDA
    it is read back once to size the outputs (a host sync; ``dynamic_voxelize`` has none).

    Returns:
        voxels [V, max_points, F] zero-padded, coords [V, 3] int32 (z, y, x), num_points [V] int32.
    """
    return _ops.hard_voxelize(
        points.contiguous(),
        _floats(voxel_size, 3, "voxel_size"),
        _floats(point_cloud_range, 6, "point_cloud_range"),
        int(max_points),
        int(max_voxels),
    )


@torch.library.register_fake("bev_reid::dynamic_voxelize")
def _dynamic_voxelize_fake(points, voxel_size, point_cloud_range):
    return points.new_empty((points.shape[0], 3), dtype=torch.int32)


@torch.library.register_fake("bev_reid::hard_voxelize")
def _hard_voxelize_fake(points, voxel_size, point_cloud_range, max_points, max_voxels):
    v = torch.library.get_ctx().new_dynamic_size(max=max_voxels)
    return (
        points.new_empty((v, max_points, points.shape[1])),
        points.new_empty((v, 3), dtype=torch.int32),
        points.new_empty((v,), dtype=torch.int32),
    )


def _grid_numpy(voxel_size, point_cloud_range, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # mmcv's convention: the sizes and the range in float32, the grid derived from them in float32,
    # then the points' arithmetic in their own dtype.
    size = np.asarray(_floats(voxel_size, 3, "voxel_size"), dtype=np.float32)
    rng = np.asarray(_floats(point_cloud_range, 6, "point_cloud_range"), dtype=np.float32)
    if np.any(~(size > 0)) or np.any(~(rng[:3] < rng[3:])):
        raise ValueError(f"voxelize: bad voxel_size {size} or point_cloud_range {rng}")
    dims = np.round((rng[3:] - rng[:3]) / size).astype(np.int64)
    return size.astype(dtype), rng[:3].astype(dtype), dims


def dynamic_voxelize_reference(
    points: torch.Tensor, voxel_size: Sequence[float], point_cloud_range: Sequence[float]
) -> torch.Tensor:
    """``dynamic_voxelize`` in numpy, in the points' precision."""
    p = points.detach().cpu().numpy()
    size, lo, dims = _grid_numpy(voxel_size, point_cloud_range, p.dtype)
    with np.errstate(invalid="ignore"):
        cell = np.floor((p[:, :3] - lo) / size)  # P x 3 (x, y, z)
        inside = np.all((cell >= 0) & (cell < dims), axis=1)
    out = np.full((p.shape[0], 3), -1, dtype=np.int32)
    out[inside] = cell[inside][:, ::-1].astype(np.int32)
    return torch.from_numpy(out)


def voxelize_reference(
    points: torch.Tensor,
    voxel_size: Sequence[float],
    point_cloud_range: Sequence[float],
    max_points: int,
    max_voxels: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``voxelize`` as a plain loop over the points, first come first kept."""
    p = points.detach().cpu().numpy()
    coords = dynamic_voxelize_reference(points, voxel_size, point_cloud_range).numpy()
    ids: dict[tuple[int, int, int], int] = {}
    members: list[list[int]] = []
    for i, c in enumerate(map(tuple, coords)):
        if c[0] < 0:
            continue
        if c not in ids:
            if len(ids) >= max_voxels:
                continue
            ids[c] = len(ids)
            members.append([])
        if len(members[ids[c]]) < max_points:
            members[ids[c]].append(i)
    voxels = np.zeros((len(ids), max_points, p.shape[1]), dtype=p.dtype)
    for v, rows in enumerate(members):
        voxels[v, : len(rows)] = p[rows]
    out_coords = np.array(list(ids), dtype=np.int32).reshape(-1, 3)
    num = np.array([len(m) for m in members], dtype=np.int32)
    return torch.from_numpy(voxels), torch.from_numpy(out_coords), torch.from_numpy(num)
