"""Depth targets from LiDAR for the camera features (depth supervision after BEVDepth, Li et al.,
AAAI 2023).

Every LIDAR_TOP point of a keyframe is projected into each camera (time-aware: the camera frames
of :class:`~bev_reid.data.records.CameraFrame` already map each camera, at its own timestamp,
into the keyframe's ego frame through the global frame, as painting does), moved with the image
through the same resize, crop, flip and rotation (``post_rots`` / ``post_trans``), and binned to
the feature cell it falls in (``downsample`` pixels a side). The target of a cell is the depth of
its nearest point; cells no point reaches have none. The same nearest point also says whether
the cell sees a vehicle (the point lies in a vehicle box): a label of the image itself, right
where occlusion hides one vehicle behind another.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bev_reid.data.records import AnnotatedBox, CameraFrame

NO_TARGET = -1  # the depth bin of a cell with no LiDAR point


def project_points(
    points_ego: np.ndarray, cameras: Sequence[CameraFrame], min_depth: float = 0.0
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The points in front of each camera, in its full-size image: what :func:`nearest_points`
    needs that does not change with the image augmentation (the keyframe Dataset keeps it).

    Args:
        points_ego: [P, >= 3] LiDAR points in the keyframe's ego frame.
        cameras: N cameras of the keyframe.
        min_depth: points nearer than this (metres along the optical axis) are left out.
    Returns:
        per camera (uv [Q, 2] float64 original pixels, depth [Q] float32 metres, the rows [Q]
        int64 of those points in ``points_ego``).
    """
    rows = np.arange(len(points_ego))
    out = []
    for cam in cameras:
        uv, depth = cam.project(points_ego)  # P x 2 original pixels, P metres
        front = depth > max(min_depth, 1e-3)
        out.append((uv[front], depth[front].astype(np.float32), rows[front]))
    return out


def nearest_in_cells(
    projected: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    post_rots: Sequence[np.ndarray],
    post_trans: Sequence[np.ndarray],
    final_dim: tuple[int, int],
    downsample: int,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`nearest_points` of points already projected by :func:`project_points`."""
    feat_h, feat_w = final_dim[0] // downsample, final_dim[1] // downsample
    depth_out = np.full((len(projected), feat_h, feat_w), np.inf, dtype=np.float32)
    index_out = np.full((len(projected), feat_h, feat_w), -1, dtype=np.int64)
    for n, ((uv, depth, which), rot, tran) in enumerate(
        zip(projected, post_rots, post_trans, strict=True)
    ):
        moved = uv @ np.asarray(rot, np.float64)[:2, :2].T + np.asarray(tran, np.float64)[:2]
        col = np.floor(moved[:, 0] / downsample).astype(np.int64)
        row = np.floor(moved[:, 1] / downsample).astype(np.int64)
        inside = (col >= 0) & (col < feat_w) & (row >= 0) & (row < feat_h)
        cell = (row * feat_w + col)[inside]
        depth_in, which_in = depth[inside], which[inside]
        # Per cell, the nearest point: sort by (cell, depth) and keep each cell's first.
        order = np.lexsort((depth_in, cell))
        first = np.ones(order.size, dtype=bool)
        first[1:] = cell[order][1:] != cell[order][:-1]
        keep = order[first]
        depth_out[n].reshape(-1)[cell[keep]] = depth_in[keep]
        index_out[n].reshape(-1)[cell[keep]] = which_in[keep]
    return depth_out, index_out


def nearest_points(
    points_ego: np.ndarray,
    cameras: Sequence[CameraFrame],
    post_rots: Sequence[np.ndarray],
    post_trans: Sequence[np.ndarray],
    final_dim: tuple[int, int],
    downsample: int,
    min_depth: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The nearest LiDAR point of every feature cell of every camera.

    Args:
        points_ego: [P, >= 3] LiDAR points in the keyframe's ego frame.
        cameras: N cameras of the keyframe.
        post_rots: N [3, 3], post_trans: N [3]: each image's augmentation (original pixel p ->
            post_rot @ p + post_tran), as the keyframe Dataset gives them.
        final_dim: (H, W) of the network's input image.
        downsample: pixels per feature cell side.
        min_depth: points nearer than this (metres along the optical axis) are left out.
    Returns:
        depth [N, H / downsample, W / downsample] float32 metres, inf where no point falls; and
        the row of that point in ``points_ego`` (int64, -1 where none).
    """
    projected = project_points(points_ego, cameras, min_depth)
    return nearest_in_cells(projected, post_rots, post_trans, final_dim, downsample)


def depth_maps(
    points_ego: np.ndarray,
    cameras: Sequence[CameraFrame],
    post_rots: Sequence[np.ndarray],
    post_trans: Sequence[np.ndarray],
    final_dim: tuple[int, int],
    downsample: int,
    min_depth: float = 0.0,
) -> np.ndarray:
    """Nearest LiDAR depth of every feature cell of every camera: [N, H / downsample,
    W / downsample] float32 metres, inf where no point falls (see :func:`nearest_points`)."""
    args = (points_ego, cameras, post_rots, post_trans, final_dim, downsample, min_depth)
    return nearest_points(*args)[0]


def points_in_boxes(points_ego: np.ndarray, boxes: Sequence[AnnotatedBox]) -> np.ndarray:
    """[P] bool: whether each point lies in one of the boxes (footprint and height).

    Args:
        points_ego: [P, >= 3] points in the keyframe's ego frame.
        boxes: boxes in the same frame.
    """
    inside = np.zeros(len(points_ego), dtype=bool)
    xyz = np.asarray(points_ego[:, :3], dtype=np.float64)
    order = np.argsort(xyz[:, 0], kind="stable")  # points by x: each box reads one run
    xs = xyz[order, 0]
    for box in boxes:
        half = np.asarray(box.wlh, np.float64) / 2  # w, l, h
        reach = float(np.linalg.norm(half))
        lo, hi = np.searchsorted(xs, [box.center[0] - reach, box.center[0] + reach])
        near = order[lo:hi]
        d = xyz[near] - box.center
        local = d @ box.rotation.rotation_matrix  # box frame: x along the length
        hit = (np.abs(local) <= half[[1, 0, 2]]).all(1)
        inside[near[hit]] = True
    return inside


def depth_bins(depth: np.ndarray, dbound: Sequence[float]) -> np.ndarray:
    """Depth bin of each cell: the frustum point nearest in depth (bin k sits at min + k step,
    as :func:`~bev_reid.models.geometry.create_frustum` places it); :data:`NO_TARGET` where
    there is no depth or it lies more than half a step outside the bins.

    Args:
        depth: [...] metres, inf where unknown (see :func:`depth_maps`).
        dbound: (min, max, step) of the depth bins.
    Returns:
        [...] int64.
    """
    lo, hi, step = dbound
    bins = int(round((hi - lo) / step))
    with np.errstate(invalid="ignore"):
        k = np.floor((depth - lo) / step + 0.5)
    ok = np.isfinite(k) & (k >= 0) & (k < bins)
    return np.where(ok, k, NO_TARGET).astype(np.int64)
