"""Points in upright cuboids (yaw only, no pitch or roll): PandaSet's cuboids, and nuScenes
boxes, which are upright too."""

from __future__ import annotations

import numpy as np


def to_box_frames(points: np.ndarray, center: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """[P, 3] world points -> [P, 3] in the frame of one cuboid (centre [3], yaw scalar)."""
    d = points - center
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], 1)


def count_points_in_boxes(
    points: np.ndarray, center: np.ndarray, dims: np.ndarray, yaw: np.ndarray
) -> np.ndarray:
    """Points inside each cuboid (faces included, as the nuScenes devkit's ``points_in_box``).

    The points are sorted by x once; each cuboid then tests only the slice within its
    circumscribed radius along x, so the cost is about P log P plus the points near the boxes.

    Args:
        points: [P, 3] world frame; center: [B, 3]; dims: [B, 3] the extents along the cuboid's
            own x, y and z (PandaSet: width, length, height; a nuScenes box, whose x is its
            heading: length, width, height); yaw: [B] radians, of the cuboid's x about +z.
    Returns:
        [B] int64 counts.
    """
    points = np.asarray(points, np.float64)
    order = np.argsort(points[:, 0], kind="stable")
    xs = points[order, 0]
    counts = np.zeros(len(center), np.int64)
    for b in range(len(center)):
        radius = 0.5 * float(np.hypot(dims[b, 0], dims[b, 1]))
        lo = np.searchsorted(xs, center[b, 0] - radius, side="left")
        hi = np.searchsorted(xs, center[b, 0] + radius, side="right")
        if hi <= lo:
            continue
        local = to_box_frames(points[order[lo:hi]], center[b], float(yaw[b]))
        inside = np.all(np.abs(local) <= dims[b] / 2, axis=1)
        counts[b] = int(inside.sum())
    return counts
