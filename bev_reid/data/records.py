"""What the nuScenes layer hands out: camera frames, annotated boxes, scene conditions, and the
errors of the data layer (each names the file, table or name at fault)."""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from nuscenes.utils.data_classes import Box
from pyquaternion import Quaternion


class NuScenesError(Exception):
    """Base of the errors of the nuScenes data layer."""


class NuScenesFileError(NuScenesError, FileNotFoundError):
    """A file or folder of the nuScenes layout is missing; the message names it."""


class NuScenesFormatError(NuScenesError, ValueError):
    """A file is there but unreadable, or a name (version, scene, split, channel) is unknown."""


@dataclass(frozen=True)
class CameraFrame:
    """One camera image of a keyframe with its calibration, in the keyframe's ego frame."""

    channel: str
    token: str  # sample_data token
    path: Path
    width: int
    height: int
    intrinsics: np.ndarray  # 3 x 3
    rot: np.ndarray  # 3 x 3, camera -> ego
    trans: np.ndarray  # 3, camera origin in ego

    def project(self, points_ego: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels of ego-frame points in the full-size image.

        Args:
            points_ego: [P, >= 3] x, y, z.
        Returns:
            uv [P, 2] float64 (column, row; continuous, PIL's convention) and depth [P] along
            the optical axis (metres; <= 0 behind the camera, where uv means nothing).
        """
        local = (np.asarray(points_ego, np.float64)[:, :3] - self.trans) @ self.rot  # camera
        depth = local[:, 2]
        uvw = local @ self.intrinsics.T
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = uvw[:, :2] / depth[:, None]
        return uv, depth


@dataclass(frozen=True)
class AnnotatedBox:
    """One sample_annotation in the keyframe's ego frame."""

    token: str
    instance_token: str
    category: str
    center: np.ndarray  # 3, metres
    wlh: np.ndarray  # 3: width (along box y), length (along box x, the heading), height
    rotation: Quaternion  # box -> ego
    visibility: int  # 1..4 (0-40%, 40-60%, 60-80%, 80-100% visible in the six cameras)
    num_lidar_pts: int
    attributes: tuple[str, ...]

    @functools.cached_property
    def yaw(self) -> float:
        """Heading of the box's x axis projected on the ego x-y plane, radians (0 = ego x)."""
        heading = self.rotation.rotate([1.0, 0.0, 0.0])
        return math.atan2(heading[1], heading[0])

    def devkit_box(self) -> Box:
        return Box(
            self.center.copy(), self.wlh.copy(), self.rotation, name=self.category, token=self.token
        )

    def footprint(self) -> np.ndarray:
        """The four ground corners (x, y) of the box from its centre, size and yaw: [4, 2]."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        half_l, half_w = self.wlh[1] / 2, self.wlh[0] / 2
        local = np.array(
            [[half_l, half_w], [half_l, -half_w], [-half_l, -half_w], [-half_l, half_w]]
        )
        return local @ np.array([[c, s], [-s, c]]) + self.center[:2]

    def moved(self, matrix: np.ndarray) -> AnnotatedBox:
        """The box in a frame ``matrix`` [3, 3] away (new = matrix @ old), for a turn about z and
        mirrorings across x or y: centre moved, heading turned (a mirrored box is the box of the
        mirrored heading, its footprint being symmetric); pitch and roll are dropped."""
        heading = matrix @ np.array([math.cos(self.yaw), math.sin(self.yaw), 0.0])
        yaw = math.atan2(heading[1], heading[0])
        return dataclasses.replace(
            self,
            center=matrix @ self.center,
            rotation=Quaternion(axis=[0.0, 0.0, 1.0], angle=yaw),
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain Python values (cheap to pass between DataLoader workers, JSON-ready)."""
        return {
            "token": self.token,
            "instance_token": self.instance_token,
            "category": self.category,
            "center": [float(v) for v in self.center],
            "wlh": [float(v) for v in self.wlh],
            "yaw": self.yaw,
            "rotation": [float(v) for v in self.rotation.elements],  # w, x, y, z
            "visibility": self.visibility,
            "num_lidar_pts": self.num_lidar_pts,
            "attributes": list(self.attributes),
        }


def scene_conditions(description: str) -> list[str]:
    """Conditions of a scene from its free-text description: 'day' or 'night', plus 'rain'.

    Words are matched at their start (``rain``, ``Rainy``, ``raining``; not ``terrain``).
    """
    text = description.lower()
    night = re.search(r"\bnight", text) is not None
    out = ["night" if night else "day"]
    if re.search(r"\brain", text):
        out.append("rain")
    return out


def few(names: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(sorted(names)[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "") if names else "none"
