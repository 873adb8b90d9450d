"""The nuScenes table layer: one access layer over the devkit, and the split resolution.

All table access of the project goes through :class:`NuScenesDB`; nothing else touches the
devkit's tables. The records it returns are in :mod:`bev_reid.data.records`, the sensor file
readers in :mod:`bev_reid.data.files`, the keyframe Dataset in :mod:`bev_reid.data.keyframes`.

Frames. "ego" is the ego frame of the keyframe's LIDAR_TOP sweep (lift-splat-shoot's reference
frame): boxes, LiDAR points and camera extrinsics are all expressed in it. A camera's ``rots`` /
``trans`` map its camera frame into that ego frame *through the global frame* (camera -> ego at the
camera's timestamp -> global -> ego at the LiDAR's timestamp), so the ego motion between the two
timestamps (tens of ms) is accounted for; lift-splat-shoot ignored it. With a still ego they are
the plain calibrated extrinsics.

Image coordinates are continuous in PIL's convention: pixel (row i, column j) covers
[j, j+1) x [i, i+1). A point p = (u, v, 1) of the original image lands at
``post_rots @ p + post_trans`` in the network's input.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.splits import create_splits_scenes
from pyquaternion import Quaternion

from bev_reid.data.files import read_lidar_file
from bev_reid.data.nuscenes_format import TABLE_NAMES
from bev_reid.data.records import (
    AnnotatedBox,
    CameraFrame,
    NuScenesFileError,
    NuScenesFormatError,
    few,
    scene_conditions,
)

REF_CHANNEL = "LIDAR_TOP"  # the sensor whose ego pose defines a keyframe's ego frame
TABLES = TABLE_NAMES  # the 13 tables a version folder must hold
# Official splits per version, for the generic names the commands use.
_VERSION_SPLITS = {
    "v1.0-trainval": {"train": "train", "val": "val"},
    "v1.0-mini": {"train": "mini_train", "val": "mini_val"},
    "v1.0-test": {"test": "test"},
}


def _check_layout(dataroot: Path, version: str) -> None:
    if not dataroot.is_dir():
        raise NuScenesFileError(
            f"nuScenes dataroot {str(dataroot)!r} does not exist or is not a folder"
        )
    table_root = dataroot / version
    if not table_root.is_dir():
        folders = sorted(p.name for p in dataroot.iterdir() if p.is_dir())
        versions = [f for f in folders if (dataroot / f / "sample.json").is_file()]
        raise NuScenesFileError(
            f"version {version!r} not found: no folder {str(table_root)!r}. "
            f"Versions in {str(dataroot)!r}: {', '.join(versions) or 'none'}"
            + ("" if versions else f" (folders there: {', '.join(folders) or 'none'})")
        )
    for name in TABLES:
        path = table_root / f"{name}.json"
        if not path.is_file():
            raise NuScenesFileError(
                f"nuScenes table {str(path)!r} is missing "
                f"({version} needs all of {', '.join(TABLES)})"
            )


def _pose(record: dict) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) of a calibrated_sensor or ego_pose record: child frame -> parent frame."""
    return Quaternion(record["rotation"]).rotation_matrix, np.asarray(
        record["translation"], dtype=np.float64
    )


class NuScenesDB:
    """The tables of one nuScenes version, read with the devkit, and the queries the project needs.

    Args:
        dataroot: folder that holds ``<version>/`` (the tables) and ``samples/``.
        version: e.g. ``v1.0-trainval``, ``v1.0-mini``.
    Raises:
        NuScenesFileError: missing dataroot, version folder or table (the message names it).
        NuScenesFormatError: a table that is not valid JSON, or that the devkit rejects.
    """

    def __init__(self, dataroot: str | Path, version: str, verbose: bool = False):
        self.dataroot = Path(dataroot)
        self.version = version
        _check_layout(self.dataroot, version)
        try:
            self.nusc = NuScenes(version=version, dataroot=str(self.dataroot), verbose=verbose)
        except json.JSONDecodeError as e:
            raise NuScenesFormatError(
                f"{self._bad_table() or self.dataroot / version}: not valid JSON ({e})"
            ) from e
        except (AssertionError, KeyError) as e:  # the devkit asserts on inconsistent tables
            raise NuScenesFormatError(
                f"the nuScenes devkit rejected {str(self.dataroot / version)!r}: {e!r}"
            ) from e
        self._scenes = {s["name"]: s for s in self.nusc.scene}

    def _bad_table(self) -> Path | None:
        for name in TABLES:  # only on the error path: find which table does not parse
            path = self.dataroot / self.version / f"{name}.json"
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                return path
        return None

    def get(self, table: str, token: str) -> dict:
        try:
            return self.nusc.get(table, token)
        except KeyError as e:
            raise NuScenesFormatError(
                f"no {table} record with token {token!r} in {self.dataroot / self.version}"
            ) from e

    # Scenes and keyframes -----------------------------------------------------------------------

    @property
    def scene_names(self) -> list[str]:
        return list(self._scenes)

    def scene(self, name: str) -> dict:
        if name not in self._scenes:
            raise NuScenesFormatError(
                f"unknown scene {name!r}; scenes here: {few(self.scene_names)}"
            )
        return self._scenes[name]

    def conditions(self, scene_name: str) -> list[str]:
        return scene_conditions(self.scene(scene_name)["description"])

    def keyframes(self, scene_name: str) -> list[str]:
        """Sample tokens of a scene in time order."""
        tokens, token = [], self.scene(scene_name)["first_sample_token"]
        while token:
            tokens.append(token)
            token = self.get("sample", token)["next"]
        return tokens

    def sample(self, token: str) -> dict:
        return self.get("sample", token)

    def scene_of(self, sample_token: str) -> str:
        return self.get("scene", self.sample(sample_token)["scene_token"])["name"]

    def _sample_data(self, sample_token: str, channel: str) -> dict:
        data = self.sample(sample_token)["data"]
        if channel not in data:
            raise NuScenesFormatError(
                f"sample {sample_token} has no {channel} data; it has {', '.join(sorted(data))}"
            )
        return self.get("sample_data", data[channel])

    # Poses -------------------------------------------------------------------------------------

    def _ref_pose_record(self, sample_token: str) -> dict:
        sd = self._sample_data(sample_token, REF_CHANNEL)
        return self.get("ego_pose", sd["ego_pose_token"])

    def ego_pose(self, sample_token: str) -> tuple[np.ndarray, np.ndarray]:
        """(R, t): the keyframe's ego frame (at the LIDAR_TOP timestamp) -> global."""
        return _pose(self._ref_pose_record(sample_token))

    def camera(self, sample_token: str, channel: str) -> CameraFrame:
        sd = self._sample_data(sample_token, channel)
        cs = self.get("calibrated_sensor", sd["calibrated_sensor_token"])
        r_cs, t_cs = _pose(cs)  # camera -> ego at the camera's timestamp
        r_ec, t_ec = _pose(self.get("ego_pose", sd["ego_pose_token"]))  # that ego -> global
        r_er, t_er = self.ego_pose(sample_token)  # reference ego -> global
        rot = r_er.T @ r_ec @ r_cs
        trans = r_er.T @ (r_ec @ t_cs + t_ec - t_er)
        return CameraFrame(
            channel=channel,
            token=sd["token"],
            path=self.dataroot / sd["filename"],
            width=int(sd["width"]),
            height=int(sd["height"]),
            intrinsics=np.asarray(cs["camera_intrinsic"], dtype=np.float64),
            rot=rot,
            trans=trans,
        )

    # LiDAR and boxes -----------------------------------------------------------------------------

    def lidar_path(self, sample_token: str) -> Path:
        return self.dataroot / self._sample_data(sample_token, REF_CHANNEL)["filename"]

    def lidar_points(self, sample_token: str) -> np.ndarray:
        """LIDAR_TOP points in the ego frame: [P, 5] float32 (x, y, z, intensity 0-255, ring)."""
        sd = self._sample_data(sample_token, REF_CHANNEL)
        points = read_lidar_file(self.dataroot / sd["filename"])
        rot, trans = _pose(self.get("calibrated_sensor", sd["calibrated_sensor_token"]))
        points[:, :3] = (points[:, :3].astype(np.float64) @ rot.T + trans).astype(np.float32)
        return points

    def boxes(self, sample_token: str) -> list[AnnotatedBox]:
        """All annotations of a keyframe, in its ego frame."""
        pose = self._ref_pose_record(sample_token)
        r_er, t_er = _pose(pose)
        q_er_inv = Quaternion(pose["rotation"]).inverse
        out = []
        for ann_token in self.sample(sample_token)["anns"]:
            ann = self.get("sample_annotation", ann_token)
            center = r_er.T @ (np.asarray(ann["translation"], dtype=np.float64) - t_er)
            out.append(
                AnnotatedBox(
                    token=ann["token"],
                    instance_token=ann["instance_token"],
                    category=ann["category_name"],
                    center=center,
                    wlh=np.asarray(ann["size"], dtype=np.float64),
                    rotation=q_er_inv * Quaternion(ann["rotation"]),
                    visibility=int(ann["visibility_token"]) if ann["visibility_token"] else 0,
                    num_lidar_pts=int(ann["num_lidar_pts"]),
                    attributes=tuple(
                        self.get("attribute", t)["name"] for t in ann["attribute_tokens"]
                    ),
                )
            )
        return out


def resolve_scenes(
    nusc: NuScenesDB | NuScenes, split: str | None, scenes: Sequence[str]
) -> list[str]:
    """The scenes a job reads.

    An explicit ``scenes`` list wins. Else the official split of the version (``train``/``val``
    mean ``mini_train``/``mini_val`` for v1.0-mini; a devkit split name such as ``mini_val`` is
    taken as is) restricted to the scenes present. When the version has no official split, or
    none of the version's official scenes is present (a synthetic world), or ``split`` is None:
    every scene present, in table order.

    Raises:
        NuScenesFormatError: unknown scene names (a few valid ones are listed), an unknown split,
            or an empty result (e.g. the official split has no scene in a partial copy).
    """
    table = nusc.nusc if isinstance(nusc, NuScenesDB) else nusc
    version = table.version
    present = [s["name"] for s in table.scene]
    where = f"{table.dataroot}/{version}"
    if scenes:
        unknown = [s for s in scenes if s not in set(present)]
        if unknown:
            raise NuScenesFormatError(
                f"unknown scene(s) {', '.join(unknown)} in {where}; valid: {few(present)}"
            )
        return list(dict.fromkeys(scenes))  # keeps order, drops repeats
    if not present:
        raise NuScenesFormatError(f"{where} has no scenes")
    if split is None:
        return present
    official = create_splits_scenes()
    names = _VERSION_SPLITS.get(version, {})
    split_name = names.get(split, split if split in official else None)
    if split_name is None:
        if version in _VERSION_SPLITS:
            valid = sorted(set(names) | set(official))
            raise NuScenesFormatError(
                f"unknown split {split!r} for {version}; valid: {', '.join(valid)}"
            )
        return present  # a version without official splits
    version_scenes = (
        {s for n in names.values() for s in official[n]} if names else set(official[split_name])
    )
    if not version_scenes & set(present):
        return present  # none of the version's official scenes here: a synthetic world
    chosen = [s for s in present if s in set(official[split_name])]
    if not chosen:
        raise NuScenesFormatError(
            f"split {split_name!r} of {version} has no scene in {where} "
            f"(present: {few(present)}); name the scenes explicitly (data.scenes)"
        )
    return chosen
