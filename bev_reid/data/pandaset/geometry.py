"""Geometry of the PandaSet converter: pose interpolation, static camera extrinsics, and the share
of a cuboid inside the cameras' fields of view (points in cuboids: :mod:`bev_reid.data.cuboids`).

Cuboids here are PandaSet's: centre ``position``, ``dimensions`` (x width, y length, z height) and
``yaw`` about +z, the box axis-aligned in its own frame (PandaSet cuboids have no pitch or roll).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyquaternion import Quaternion

from bev_reid.data.pandaset.read import Pose


def interpolate_pose(poses: list[Pose], times: np.ndarray, t: float) -> Pose:
    """The pose at time ``t`` between the two nearest of ``poses`` (taken at ``times``, sorted).

    Translation is linear and rotation spherical (constant rate) between the two; before the first
    or after the last time the two end poses are extrapolated at the same rates.
    """
    i = int(np.clip(np.searchsorted(times, t) - 1, 0, len(times) - 2))
    a = (t - times[i]) / (times[i + 1] - times[i])
    p0, p1 = poses[i], poses[i + 1]
    q1 = p1.rotation if np.dot(p0.rotation.elements, p1.rotation.elements) >= 0 else -p1.rotation
    rotation = p0.rotation * (p0.rotation.inverse * q1) ** a
    return Pose(rotation.normalised, p0.translation + a * (p1.translation - p0.translation))


def mean_rotation(rotations: list[Quaternion]) -> Quaternion:
    """The normalised sum of sign-aligned quaternions: the mean of nearby rotations."""
    ref = rotations[0].elements
    total = sum(q.elements if np.dot(q.elements, ref) >= 0 else -q.elements for q in rotations)
    return Quaternion(total).normalised


@dataclass(frozen=True)
class Extrinsic:
    """A camera's pose in the LiDAR pose frame, averaged over a drive, and how far it strays."""

    pose: Pose  # camera -> LiDAR pose frame
    drift_m: float  # largest distance of a frame's camera position from the mean one
    drift_deg: float  # largest angle of a frame's camera rotation from the mean one
    frames: int


def static_extrinsic(
    lidar_poses: list[Pose],
    lidar_times: np.ndarray,
    camera_poses: list[Pose],
    camera_times: np.ndarray,
) -> Extrinsic:
    """Camera -> LiDAR transform from per-frame world poses of both, assumed rigidly mounted.

    The camera fires up to 100 ms away from the LiDAR's frame time, while the car moves; the
    LiDAR pose is therefore interpolated to each camera time before the two are compared.
    """
    per_frame = [
        interpolate_pose(lidar_poses, lidar_times, float(t)).inverse * cam
        for cam, t in zip(camera_poses, camera_times, strict=True)
    ]
    trans = np.stack([p.translation for p in per_frame])  # N x 3
    mean_t = trans.mean(0)
    mean_q = mean_rotation([p.rotation for p in per_frame])
    drift_m = float(np.linalg.norm(trans - mean_t, axis=1).max())
    drift_deg = max(abs(Quaternion.absolute_distance(p.rotation, mean_q)) for p in per_frame)
    return Extrinsic(Pose(mean_q, mean_t), drift_m, float(np.degrees(drift_deg)), len(per_frame))


def box_lattice(center: np.ndarray, dims: np.ndarray, yaw: np.ndarray, n: int = 3) -> np.ndarray:
    """[B, n**3, 3] world points on an n x n x n lattice spanning each cuboid, corners included."""
    steps = np.linspace(-0.5, 0.5, n)
    grid = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)  # L x 3
    local = grid[None] * dims[:, None, :]  # B x L x 3
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    x = c * local[..., 0] - s * local[..., 1]
    y = s * local[..., 0] + c * local[..., 1]
    return np.stack([x, y, local[..., 2]], -1) + center[:, None, :]


@dataclass(frozen=True)
class View:
    """One camera image of a frame: its world pose, intrinsics and size."""

    pose: Pose  # camera -> world
    intrinsics: np.ndarray  # 3 x 3
    width: int
    height: int


def fov_share(
    center: np.ndarray, dims: np.ndarray, yaw: np.ndarray, views: list[View]
) -> np.ndarray:
    """Share of each cuboid's 27 lattice points that fall inside at least one image.

    Occlusion is not known, so this is an upper bound of the visible share nuScenes annotates.

    Returns:
        [B] float in [0, 1].
    """
    if len(center) == 0:
        return np.zeros(0)
    lattice = box_lattice(center, dims, yaw)  # B x L x 3
    flat = lattice.reshape(-1, 3)
    seen = np.zeros(len(flat), bool)
    for view in views:
        cam = view.pose.inverse.apply(flat)  # camera frame: x right, y down, z forward
        depth = cam[:, 2]
        front = depth > 1e-6
        uvw = cam[front] @ view.intrinsics.T
        u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
        inside = np.zeros(len(flat), bool)
        inside[front] = (u >= 0) & (u < view.width) & (v >= 0) & (v < view.height)
        seen |= inside
    return seen.reshape(lattice.shape[:2]).mean(1)
