"""Depth targets from LiDAR for the camera features (depth supervision after BEVDepth, Li et al.,
AAAI 2023).

Every LIDAR_TOP point of a keyframe is projected into each camera (time-aware: the camera frames
of :class:`~bev_reid.data.records.CameraFrame` already map each camera, at its own timestamp,
into the keyframe's ego frame through the global frame, as painting does), moved with the image
through the same resize, crop, flip and rotation (``post_rots`` / ``post_trans``), and binned to
the feature cell it falls in (``downsample`` pixels a side). The target of a cell is the depth of
its nearest point; cells no point reaches have none.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bev_reid.data.records import CameraFrame

NO_TARGET = -1  # the depth bin of a cell with no LiDAR point


def depth_maps(
    points_ego: np.ndarray,
    cameras: Sequence[CameraFrame],
    post_rots: Sequence[np.ndarray],
    post_trans: Sequence[np.ndarray],
    final_dim: tuple[int, int],
    downsample: int,
    min_depth: float = 0.0,
) -> np.ndarray:
    """Nearest LiDAR depth of every feature cell of every camera.

    Args:
        points_ego: [P, >= 3] LiDAR points in the keyframe's ego frame.
        cameras: N cameras of the keyframe.
        post_rots: N [3, 3], post_trans: N [3]: each image's augmentation (original pixel p ->
            post_rot @ p + post_tran), as the keyframe Dataset gives them.
        final_dim: (H, W) of the network's input image.
        downsample: pixels per feature cell side.
        min_depth: points nearer than this (metres along the optical axis) are left out.
    Returns:
        [N, H / downsample, W / downsample] float32 depth in metres; inf where no point falls.
    """
    feat_h, feat_w = final_dim[0] // downsample, final_dim[1] // downsample
    out = np.full((len(cameras), feat_h, feat_w), np.inf, dtype=np.float32)
    for n, (cam, rot, tran) in enumerate(zip(cameras, post_rots, post_trans, strict=True)):
        uv, depth = cam.project(points_ego)  # P x 2 original pixels, P metres
        front = depth > max(min_depth, 1e-3)
        uv, depth = uv[front], depth[front]
        moved = uv @ np.asarray(rot, np.float64)[:2, :2].T + np.asarray(tran, np.float64)[:2]
        col = np.floor(moved[:, 0] / downsample).astype(np.int64)
        row = np.floor(moved[:, 1] / downsample).astype(np.int64)
        inside = (col >= 0) & (col < feat_w) & (row >= 0) & (row < feat_h)
        np.minimum.at(out[n], (row[inside], col[inside]), depth[inside].astype(np.float32))
    return out


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
