"""nuScenes keyframes for the camera model: one access layer over the devkit, and the Dataset.

All table access of the project goes through :class:`NuScenesDB`; nothing else touches the
devkit's tables.

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
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import Box
from nuscenes.utils.splits import create_splits_scenes
from PIL import Image
from pyquaternion import Quaternion
from torch.utils.data import Dataset

from bev_reid.config import DataConfig, GridConfig
from bev_reid.data.augment import ImageAug, sample_augmentation
from bev_reid.data.lidar import paint_points

REF_CHANNEL = "LIDAR_TOP"  # the sensor whose ego pose defines a keyframe's ego frame
TABLES = (
    "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
    "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map",
)  # fmt: skip
# Statistics of the ImageNet-pretrained trunk's inputs (a fact of the weights, not a setting).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Official splits per version, for the generic names the commands use.
_VERSION_SPLITS = {
    "v1.0-trainval": {"train": "train", "val": "val"},
    "v1.0-mini": {"train": "mini_train", "val": "mini_val"},
    "v1.0-test": {"test": "test"},
}
# Keys of a sample that collate() keeps as lists although they are tensors (their sizes vary).
VARIABLE_SIZE_KEYS = ("lidar", "lidar_rgb")
# Painted LiDAR reads the images at this fraction of their size (JPEG DCT scaling: fast).
PAINT_SCALE = 4


class NuScenesError(Exception):
    """Base of the errors of the nuScenes data layer."""


class NuScenesFileError(NuScenesError, FileNotFoundError):
    """A file or folder of the nuScenes layout is missing; the message names it."""


class NuScenesFormatError(NuScenesError, ValueError):
    """A file is there but unreadable, or a name (version, scene, split, channel) is unknown."""


# ---------------------------------------------------------------------------------------------
# Records


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

    @property
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


# ---------------------------------------------------------------------------------------------
# The access layer


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
                f"unknown scene {name!r}; scenes here: {_few(self.scene_names)}"
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


def _few(names: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(sorted(names)[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "") if names else "none"


def read_lidar_file(path: Path) -> np.ndarray:
    """A nuScenes ``.pcd.bin``: [P, 5] float32 (x, y, z, intensity, ring) in the sensor frame."""
    if not path.is_file():
        raise NuScenesFileError(f"LiDAR point cloud {str(path)!r} is missing")
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % 5:
        raise NuScenesFormatError(
            f"{path}: {raw.size} floats is not a whole number of 5-float points"
        )
    return raw.reshape(-1, 5).copy()


def read_image(path: Path, at_least: tuple[int, int] | None = None) -> Image.Image:
    """Reads a camera image as RGB.

    Args:
        at_least: (W, H) the caller will resize to; a JPEG is then decoded at the smallest
            1/2, 1/4 or 1/8 scale still at least that large (DCT scaling: several times faster,
            and the image still spans the same continuous coordinates, so the geometry holds).
    """
    if not path.is_file():
        raise NuScenesFileError(f"camera image {str(path)!r} is missing")
    try:
        with Image.open(path) as img:
            if at_least is not None:
                img.draft("RGB", at_least)
            return img.convert("RGB")
    except OSError as e:
        raise NuScenesFormatError(f"camera image {str(path)!r} cannot be read: {e}") from e


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
                f"unknown scene(s) {', '.join(unknown)} in {where}; valid: {_few(present)}"
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
            f"(present: {_few(present)}); name the scenes explicitly (data.scenes)"
        )
    return chosen


def box_in_grid(box: AnnotatedBox, grid: GridConfig) -> bool:
    """Whether the box centre lies on the BEV grid (x, y; z is not checked)."""
    (x0, x1, _), (y0, y1, _) = grid.xbound, grid.ybound
    return x0 <= box.center[0] < x1 and y0 <= box.center[1] < y1


def rasterize_boxes(boxes: Sequence[AnnotatedBox], grid: GridConfig) -> np.ndarray:
    """[X, Y] float32: 1 where the cell centre lies inside (or on) a box footprint.

    Index x runs along ego x, y along ego y; cell (i, j) has its centre at
    (xmin + (i + 0.5) dx, ymin + (j + 0.5) dy). Exact per cell, unlike rounding the corners
    and filling the polygon.
    """
    nx, ny, _ = grid.shape
    (x0, _, dx), (y0, _, dy) = grid.xbound, grid.ybound
    mask = np.zeros((nx, ny), dtype=np.float32)
    for box in boxes:
        corners = box.footprint()  # 4 x 2
        i0, j0 = np.floor((corners.min(0) - (x0, y0)) / (dx, dy) - 0.5).astype(int)
        i1, j1 = np.ceil((corners.max(0) - (x0, y0)) / (dx, dy) - 0.5).astype(int)
        i0, j0, i1, j1 = max(i0, 0), max(j0, 0), min(i1, nx - 1), min(j1, ny - 1)
        if i0 > i1 or j0 > j1:
            continue
        cx = x0 + (np.arange(i0, i1 + 1) + 0.5) * dx - box.center[0]  # ni
        cy = y0 + (np.arange(j0, j1 + 1) + 0.5) * dy - box.center[1]  # nj
        c, s = math.cos(box.yaw), math.sin(box.yaw)
        along = cx[:, None] * c + cy[None, :] * s  # ni x nj, in the box frame
        across = -cx[:, None] * s + cy[None, :] * c  # ni x nj
        inside = (np.abs(along) <= box.wlh[1] / 2) & (np.abs(across) <= box.wlh[0] / 2)
        mask[i0 : i1 + 1, j0 : j1 + 1][inside] = 1.0
    return mask


def category_boxes(boxes: Sequence[AnnotatedBox], categories: Sequence[str]) -> list[AnnotatedBox]:
    """The boxes whose category name starts with one of ``categories``."""
    return [b for b in boxes if b.category.startswith(tuple(categories))]


# ---------------------------------------------------------------------------------------------
# The Dataset


class NuScenesKeyframes(Dataset):
    """Keyframes of the resolved scenes, one dict per keyframe (see ``__getitem__``).

    Args:
        data: where the data is, which scenes and cameras, the image size and augmentation.
        grid: the BEV grid of the GT mask and of the box filter.
        is_train: random augmentation (else the deterministic centre resize/crop).
        split: official split for :func:`resolve_scenes` (``train``/``val``); None: every scene.
            ``data.scenes``, when set, wins.
        db: an open :class:`NuScenesDB` to share; opened from ``data`` when None.
        seed: makes training augmentation a function of (seed, epoch, index); None draws fresh
            OS entropy per item, so DataLoader workers never repeat each other.
        images: read the camera images; False leaves out the camera keys (imgs, rots, trans,
            intrins, post_rots, post_trans), for LiDAR-only users.
        paint: add ``lidar_rgb``, the camera colour under each LiDAR point (see
            :func:`bev_reid.data.lidar.paint_points`), from the images read at 1 / PAINT_SCALE.
    """

    def __init__(
        self,
        data: DataConfig,
        grid: GridConfig,
        is_train: bool = False,
        split: str | None = None,
        db: NuScenesDB | None = None,
        seed: int | None = None,
        images: bool = True,
        paint: bool = False,
    ):
        self.cfg, self.grid, self.is_train, self.seed, self.epoch = data, grid, is_train, seed, 0
        self.images, self.paint = images, paint
        self.db = db if db is not None else NuScenesDB(data.dataroot, data.version)
        self.scenes = resolve_scenes(self.db, split, data.scenes)
        self.samples = [
            (scene, token) for scene in self.scenes for token in self.db.keyframes(scene)
        ]
        if not self.samples:
            raise NuScenesFormatError(f"scenes {_few(self.scenes)} hold no keyframes")
        self._index = {token: i for i, (_, token) in enumerate(self.samples)}

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def index_of(self, sample_token: str) -> int:
        if sample_token not in self._index:
            raise NuScenesFormatError(
                f"sample {sample_token!r} is not a keyframe of scenes {_few(self.scenes)}"
            )
        return self._index[sample_token]

    def image_augmentations(self, index: int, cameras: Sequence[CameraFrame]) -> list[ImageAug]:
        """One augmentation per camera: random (reproducible when seeded) in training."""
        if not self.is_train:
            return [sample_augmentation(self.cfg, c.width, c.height, None) for c in cameras]
        rng = np.random.default_rng(None if self.seed is None else (self.seed, self.epoch, index))
        return [sample_augmentation(self.cfg, c.width, c.height, rng) for c in cameras]

    def __getitem__(self, index: int) -> dict[str, Any]:
        """A keyframe. N cameras, H x W = final_dim, X x Y = the grid:

        imgs [N, 3, H, W] float32 (ImageNet-normalised), rots [N, 3, 3], trans [N, 3],
        intrins [N, 3, 3], post_rots [N, 3, 3], post_trans [N, 3], bev_mask [1, X, Y] float32,
        lidar [P, 5] float32 (ego x, y, z, intensity, ring), with ``paint`` lidar_rgb [P, 3]
        float32 (RGB in [0, 1], NaN where no camera sees the point), boxes (list of dicts, see
        AnnotatedBox.as_dict; those with centres on the grid), sample_token, scene,
        timestamp (us), conditions (list of 'day'/'night' and 'rain').
        """
        scene, token = self.samples[index]
        cameras = [self.db.camera(token, ch) for ch in self.cfg.cameras]
        augs = self.image_augmentations(index, cameras)
        mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
        imgs, post_rots, post_trans = [], [], []
        for cam, aug in zip(cameras if self.images else [], augs, strict=False):
            img = read_image(cam.path, at_least=aug.resize_dims)
            img = np.asarray(aug.apply(img), dtype=np.float32) / 255.0  # H x W x 3
            imgs.append(
                torch.from_numpy(((img - mean) / std).transpose(2, 0, 1).copy())
            )  # 3 x H x W
            post_rot, post_tran = aug.matrices()
            post_rots.append(post_rot)
            post_trans.append(post_tran)
        boxes = self.db.boxes(token)
        mask = rasterize_boxes(category_boxes(boxes, self.cfg.categories), self.grid)

        def f32(arrays: list[np.ndarray]) -> torch.Tensor:
            return torch.from_numpy(np.stack(arrays).astype(np.float32))

        camera_items = {}
        if self.images:
            camera_items = {
                "imgs": torch.stack(imgs),  # N x 3 x H x W
                "rots": f32([c.rot for c in cameras]),  # N x 3 x 3
                "trans": f32([c.trans for c in cameras]),  # N x 3
                "intrins": f32([c.intrinsics for c in cameras]),  # N x 3 x 3
                "post_rots": f32(post_rots),  # N x 3 x 3
                "post_trans": f32(post_trans),  # N x 3
            }
        lidar = self.db.lidar_points(token)  # P x 5
        if self.paint:
            small = [
                np.asarray(read_image(c.path, (c.width // PAINT_SCALE, c.height // PAINT_SCALE)))
                for c in cameras
            ]
            camera_items["lidar_rgb"] = torch.from_numpy(paint_points(lidar, cameras, small))
        return {
            **camera_items,
            "bev_mask": torch.from_numpy(mask)[None],  # 1 x X x Y
            "boxes": [b.as_dict() for b in boxes if box_in_grid(b, self.grid)],
            "lidar": torch.from_numpy(lidar),
            "sample_token": token,
            "scene": scene,
            "timestamp": int(self.db.sample(token)["timestamp"]),
            "conditions": self.db.conditions(scene),
        }


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batches samples: tensors stacked on a new first axis, everything else (and the
    variable-size ``lidar``) kept as a list of length B."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        stack = isinstance(values[0], torch.Tensor) and key not in VARIABLE_SIZE_KEYS
        out[key] = torch.stack(values) if stack else values
    return out
