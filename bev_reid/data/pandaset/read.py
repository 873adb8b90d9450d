"""Readers of one PandaSet sequence folder, in PandaSet's own layout and terms.

A sequence folder holds ``lidar/NN.pkl.gz`` (points in the world frame), ``lidar/poses.json`` and
``lidar/timestamps.json``; ``camera/<name>/NN.jpg`` with ``intrinsics.json``, ``poses.json`` and
``timestamps.json`` for six cameras; ``annotations/cuboids/NN.pkl.gz``; ``meta/``. The JSON files
list every frame of the drive, even where a copy lacks the frame's data files.

Unpickling: PandaSet ships its LiDAR sweeps and cuboids as gzipped, pickled pandas DataFrames, and
reading them runs :mod:`pickle`, which can run code hidden in the file. That is the dataset's own
format; only convert copies you trust (e.g. downloaded from PandaSet's authors).
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pyquaternion import Quaternion

from bev_reid.data.pandaset.conventions import CAMERAS

LIDAR_COLUMNS = ("x", "y", "z", "i", "d")
CUBOID_COLUMNS = (
    "uuid", "label", "yaw", "camera_used", "position.x", "position.y", "position.z",
    "dimensions.x", "dimensions.y", "dimensions.z", "attributes.object_motion",
    "cuboids.sibling_id", "cuboids.sensor_id",
)  # fmt: skip
OPTIONAL_CUBOID_COLUMNS = (
    "attributes.rider_status", "attributes.pedestrian_behavior", "attributes.pedestrian_age",
)  # fmt: skip


class PandaSetError(Exception):
    """Base of the errors of the PandaSet reader and converter."""


class PandaSetFileError(PandaSetError, FileNotFoundError):
    """A file or folder of a PandaSet sequence is missing; the message names it."""


class PandaSetFormatError(PandaSetError, ValueError):
    """A PandaSet file is there but not what the layout says; the message names it and why."""


@dataclass(frozen=True)
class Pose:
    """A rigid transform child -> parent: ``p_parent = rotation.rotate(p_child) + translation``."""

    rotation: Quaternion
    translation: np.ndarray  # 3, metres

    def __mul__(self, other: Pose) -> Pose:
        """The composition: first ``other``, then ``self``."""
        translation = self.rotation.rotate(other.translation) + self.translation
        return Pose(self.rotation * other.rotation, np.asarray(translation))

    @property
    def inverse(self) -> Pose:
        inv = self.rotation.inverse
        return Pose(inv, -np.asarray(inv.rotate(self.translation)))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """[P, 3] child-frame points -> [P, 3] parent-frame points (float64)."""
        return np.asarray(points, np.float64) @ self.rotation.rotation_matrix.T + self.translation

    def record(self) -> dict[str, list[float]]:
        """nuScenes' ``rotation`` (w, x, y, z) and ``translation`` fields."""
        return {
            "translation": [float(v) for v in self.translation],
            "rotation": [float(v) for v in self.rotation.elements],
        }


def pose_from_json(entry: dict[str, Any]) -> Pose:
    """A PandaSet pose entry: ``position`` {x, y, z} and ``heading`` {w, x, y, z}."""
    h, p = entry["heading"], entry["position"]
    q = Quaternion(float(h["w"]), float(h["x"]), float(h["y"]), float(h["z"]))
    return Pose(q.normalised, np.array([float(p["x"]), float(p["y"]), float(p["z"])]))


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise PandaSetFileError(f"PandaSet file {str(path)!r} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PandaSetFormatError(f"PandaSet file {str(path)!r} is not valid JSON: {e}") from e


def read_poses(path: Path) -> list[Pose]:
    entries = read_json(path)
    try:
        return [pose_from_json(e) for e in entries]
    except (KeyError, TypeError, ValueError) as e:
        raise PandaSetFormatError(
            f"{str(path)!r}: expected a list of {{position: {{x, y, z}}, heading: {{w, x, y, z}}}}"
            f" entries ({type(e).__name__}: {e})"
        ) from e


def read_times(path: Path) -> np.ndarray:
    """[N] float64 seconds, checked to increase."""
    try:
        times = np.asarray(read_json(path), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise PandaSetFormatError(f"{str(path)!r}: expected a list of seconds ({e})") from e
    if len(times) < 2 or not np.all(np.diff(times) > 0):
        raise PandaSetFormatError(f"{str(path)!r}: expected two or more increasing times")
    return times


def read_frame_table(path: Path, columns: tuple[str, ...]):
    """A gzipped pickled DataFrame (see the module note on unpickling) with ``columns``."""
    import pandas as pd  # only the converter needs pandas

    if not path.is_file():
        raise PandaSetFileError(f"PandaSet file {str(path)!r} is missing")
    try:
        with gzip.open(path, "rb") as f:
            table = pd.read_pickle(f)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError) as e:
        raise PandaSetFormatError(f"PandaSet file {str(path)!r} cannot be read: {e}") from e
    if not isinstance(table, pd.DataFrame):
        raise PandaSetFormatError(f"{str(path)!r} holds a {type(table).__name__}, not a DataFrame")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise PandaSetFormatError(
            f"{str(path)!r} lacks column(s) {', '.join(missing)} (has {', '.join(table.columns)})"
        )
    return table


@dataclass(frozen=True)
class Camera:
    """One camera of a sequence: intrinsics and, per frame of the drive, pose and time."""

    name: str  # PandaSet folder name, e.g. front_camera
    intrinsics: np.ndarray  # 3 x 3
    poses: list[Pose]  # camera -> world
    times: np.ndarray  # [N] seconds


@dataclass(frozen=True)
class LidarSweep:
    """The points of one frame: world frame, as PandaSet stores them."""

    xyz: np.ndarray  # P x 3 float64, metres, world frame
    intensity: np.ndarray  # P float32, 0-255
    sensor: np.ndarray  # P int, PandaSet's d: 0 Pandar64 (360 degrees), 1 PandarGT (forward)


class Sequence:
    """One PandaSet sequence folder; per-drive files are read at once, frame files on demand.

    Raises:
        PandaSetFileError: the folder or a per-drive JSON file (poses, timestamps, intrinsics) is
            missing; the message names it.
        PandaSetFormatError: such a file does not parse, or the files disagree on the frame count.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise PandaSetFileError(f"PandaSet sequence folder {str(self.path)!r} does not exist")
        self.name = Path(os.path.abspath(self.path)).name  # a symlink keeps its own name
        lidar = self.path / "lidar"
        self.lidar_poses = read_poses(lidar / "poses.json")
        self.lidar_times = read_times(lidar / "timestamps.json")
        self._same_length(lidar / "timestamps.json", len(self.lidar_times))
        self.cameras = {name: self._camera(name) for name in CAMERAS}

    @property
    def num_frames(self) -> int:
        return len(self.lidar_poses)

    def _same_length(self, path: Path, n: int) -> None:
        if n != len(self.lidar_poses):
            raise PandaSetFormatError(
                f"{str(path)!r} lists {n} frames but {self.path / 'lidar/poses.json'} lists "
                f"{len(self.lidar_poses)}"
            )

    def _camera(self, name: str) -> Camera:
        folder = self.path / "camera" / name
        k = read_json(folder / "intrinsics.json")
        try:
            fx, fy, cx, cy = (float(k[key]) for key in ("fx", "fy", "cx", "cy"))
        except (KeyError, TypeError, ValueError) as e:
            raise PandaSetFormatError(
                f"{str(folder / 'intrinsics.json')!r}: expected {{fx, fy, cx, cy}} ({e!r})"
            ) from e
        poses = read_poses(folder / "poses.json")
        times = read_times(folder / "timestamps.json")
        self._same_length(folder / "poses.json", len(poses))
        self._same_length(folder / "timestamps.json", len(times))
        intrinsics = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        return Camera(name, intrinsics, poses, times)

    # Frame files -------------------------------------------------------------------------------

    def lidar_path(self, frame: int) -> Path:
        return self.path / "lidar" / f"{frame:02d}.pkl.gz"

    def cuboids_path(self, frame: int) -> Path:
        return self.path / "annotations" / "cuboids" / f"{frame:02d}.pkl.gz"

    def image_path(self, camera: str, frame: int) -> Path:
        return self.path / "camera" / camera / f"{frame:02d}.jpg"

    def frame_files(self, frame: int) -> list[Path]:
        """Every file frame ``frame`` needs."""
        images = [self.image_path(name, frame) for name in self.cameras]
        return [self.lidar_path(frame), self.cuboids_path(frame), *images]

    def missing_files(self, frame: int) -> list[Path]:
        return [p for p in self.frame_files(frame) if not p.is_file()]

    def lidar(self, frame: int) -> LidarSweep:
        path = self.lidar_path(frame)
        table = read_frame_table(path, LIDAR_COLUMNS)
        return LidarSweep(
            xyz=table[["x", "y", "z"]].to_numpy(np.float64),
            intensity=table["i"].to_numpy(np.float32),
            sensor=table["d"].to_numpy().astype(np.int64),
        )

    def cuboids(self, frame: int):
        """The frame's cuboids as PandaSet's DataFrame; absent optional columns are added as NaN."""
        table = read_frame_table(self.cuboids_path(frame), CUBOID_COLUMNS)
        for column in OPTIONAL_CUBOID_COLUMNS:
            if column not in table.columns:
                table[column] = np.nan
        return table.reset_index(drop=True)
