"""The keyframe Dataset of the camera model: six images with their calibration and augmentation,
the GT vehicle mask, boxes and LiDAR points of each nuScenes keyframe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bev_reid.config import DataConfig, GridConfig
from bev_reid.data.augment import ImageAug, sample_augmentation
from bev_reid.data.depth import NO_TARGET, depth_bins, nearest_points, points_in_boxes
from bev_reid.data.files import read_image
from bev_reid.data.lidar import paint_points
from bev_reid.data.nuscenes import NuScenesDB, resolve_scenes
from bev_reid.data.raster import box_in_grid, category_boxes, rasterize_boxes
from bev_reid.data.records import CameraFrame, NuScenesFormatError, few

# Statistics of the ImageNet-pretrained trunk's inputs (a fact of the weights, not a setting).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Keys of a sample that collate() keeps as lists although they are tensors (their sizes vary).
VARIABLE_SIZE_KEYS = ("lidar", "lidar_rgb")
# Painted LiDAR reads the images at this fraction of their size (JPEG DCT scaling: fast).
PAINT_SCALE = 4


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
        texture: add ``cameras`` (the :class:`CameraFrame` of each camera, true ego frame) and
            ``paint_images`` (each camera's image read at 1 / PAINT_SCALE, [H, W, 3] uint8), what
            :func:`bev_reid.reid.texture.texture_crops` reads; not with training augmentation.
        depth: ``(downsample, dbound)``: add ``depth_target``, the LiDAR depth bin of each camera
            feature cell (see :mod:`bev_reid.data.depth`); None leaves it out.
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
        depth: tuple[int, Sequence[float]] | None = None,
        texture: bool = False,
    ):
        self.cfg, self.grid, self.is_train, self.seed, self.epoch = data, grid, is_train, seed, 0
        self.images, self.paint, self.depth, self.texture = images, paint, depth, texture
        if texture and is_train:
            raise ValueError("texture images are read in the true ego frame: not for training")
        if depth is not None and not images:
            raise ValueError("depth targets belong to the camera images: images=False has none")
        self.db = db if db is not None else NuScenesDB(data.dataroot, data.version)
        self.scenes = resolve_scenes(self.db, split, data.scenes)
        self.samples = [
            (scene, token) for scene in self.scenes for token in self.db.keyframes(scene)
        ]
        if not self.samples:
            raise NuScenesFormatError(f"scenes {few(self.scenes)} hold no keyframes")
        self._index = {token: i for i, (_, token) in enumerate(self.samples)}

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def index_of(self, sample_token: str) -> int:
        if sample_token not in self._index:
            raise NuScenesFormatError(
                f"sample {sample_token!r} is not a keyframe of scenes {few(self.scenes)}"
            )
        return self._index[sample_token]

    def image_augmentations(self, index: int, cameras: Sequence[CameraFrame]) -> list[ImageAug]:
        """One augmentation per camera: random (reproducible when seeded) in training."""
        if not self.is_train:
            return [sample_augmentation(self.cfg, c.width, c.height, None) for c in cameras]
        rng = np.random.default_rng(None if self.seed is None else (self.seed, self.epoch, index))
        return [sample_augmentation(self.cfg, c.width, c.height, rng) for c in cameras]

    def bev_augmentation(self, index: int) -> np.ndarray | None:
        """The BEV augmentation of a training keyframe: [3, 3], new ego = matrix @ old (a turn
        about z drawn from ``data.bev_rot_lim``, then with ``data.bev_flip`` a mirroring across
        x and / or y, each with probability 1/2); None when off or not training."""
        lo, hi = self.cfg.bev_rot_lim
        if not self.is_train or (lo == hi == 0 and not self.cfg.bev_flip):
            return None
        key = None if self.seed is None else (self.seed, self.epoch, index, 1)
        rng = np.random.default_rng(key)  # its own stream: the image draws stay as they were
        angle = np.deg2rad(rng.uniform(lo, hi))
        c, s = np.cos(angle), np.sin(angle)
        matrix = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        if self.cfg.bev_flip:
            mirror = np.where(rng.random(2) < 0.5, -1.0, 1.0)  # across y (x -> -x), across x
            matrix = np.diag([mirror[0], mirror[1], 1.0]) @ matrix
        return matrix

    def __getitem__(self, index: int) -> dict[str, Any]:
        """A keyframe. N cameras, H x W = final_dim, X x Y = the grid:

        imgs [N, 3, H, W] float32 (ImageNet-normalised), rots [N, 3, 3], trans [N, 3],
        intrins [N, 3, 3], post_rots [N, 3, 3], post_trans [N, 3], bev_mask [1, X, Y] float32,
        lidar [P, 5] float32 (ego x, y, z, intensity, ring), with ``paint`` lidar_rgb [P, 3]
        float32 (RGB in [0, 1], NaN where no camera sees the point), boxes (list of dicts, see
        AnnotatedBox.as_dict; those with centres on the grid), sample_token, scene,
        timestamp (us), conditions (list of 'day'/'night' and 'rain'); with ``depth``
        depth_target [N, H / downsample, W / downsample] int64 (-1 where no LiDAR point falls)
        and vehicle_target (same shape: 1 where the cell's nearest point lies in a box of
        ``data.categories``, 0 where it does not, -1 where no point falls); with ``texture``
        cameras (N CameraFrame) and paint_images (N uint8 [H', W', 3]).
        With BEV augmentation (:meth:`bev_augmentation`) rots, trans, the mask, boxes and lidar
        are in the augmented ego frame; depth targets, being in the images, do not change.
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
        boxes = self.db.boxes(token)  # in the true ego frame, as the LiDAR points
        bda = self.bev_augmentation(index)
        shown = boxes if bda is None else [b.moved(bda) for b in boxes]  # in the augmented one
        visible = [b for b in shown if b.visibility >= self.cfg.min_visibility]
        mask = rasterize_boxes(category_boxes(visible, self.cfg.categories), self.grid)

        def f32(arrays: list[np.ndarray]) -> torch.Tensor:
            return torch.from_numpy(np.stack(arrays).astype(np.float32))

        camera_items = {}
        if self.images:
            camera_items = {
                "imgs": torch.stack(imgs),  # N x 3 x H x W
                "rots": f32([c.rot if bda is None else bda @ c.rot for c in cameras]),  # N x 3 x 3
                "trans": f32([c.trans if bda is None else bda @ c.trans for c in cameras]),  # N x 3
                "intrins": f32([c.intrinsics for c in cameras]),  # N x 3 x 3
                "post_rots": f32(post_rots),  # N x 3 x 3
                "post_trans": f32(post_trans),  # N x 3
            }
        lidar = self.db.lidar_points(token)  # P x 5
        if self.depth is not None:
            downsample, dbound = self.depth
            metres, nearest = nearest_points(
                lidar, cameras, post_rots, post_trans, self.cfg.final_dim, downsample
            )  # N x fH x fW each
            camera_items["depth_target"] = torch.from_numpy(depth_bins(metres, dbound))
            on_vehicle = points_in_boxes(lidar, category_boxes(boxes, self.cfg.categories))
            seen = np.where(nearest >= 0, on_vehicle[np.maximum(nearest, 0)], NO_TARGET)
            camera_items["vehicle_target"] = torch.from_numpy(seen.astype(np.int64))
        if self.paint or self.texture:
            small = [
                np.asarray(read_image(c.path, (c.width // PAINT_SCALE, c.height // PAINT_SCALE)))
                for c in cameras
            ]
            if self.paint:
                camera_items["lidar_rgb"] = torch.from_numpy(paint_points(lidar, cameras, small))
            if self.texture:
                camera_items["cameras"], camera_items["paint_images"] = cameras, small
        if bda is not None:  # after the depth targets and painting, which need the true frame
            lidar = lidar.copy()
            lidar[:, :3] = lidar[:, :3] @ bda.T.astype(np.float32)
        return {
            **camera_items,
            "bev_mask": torch.from_numpy(mask)[None],  # 1 x X x Y
            "boxes": [b.as_dict() for b in shown if box_in_grid(b, self.grid)],
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
