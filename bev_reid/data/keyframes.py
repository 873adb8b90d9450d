"""The keyframe Dataset of the camera model: six images with their calibration and augmentation,
the GT vehicle mask, boxes and LiDAR points of each nuScenes keyframe."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bev_reid.config import DataConfig, GridConfig
from bev_reid.data.augment import ImageAug, jitter_colours, sample_augmentation
from bev_reid.data.depth import (
    NO_TARGET,
    depth_bins,
    nearest_in_cells,
    points_in_boxes,
    project_points,
)
from bev_reid.data.files import read_image
from bev_reid.data.lidar import paint_points
from bev_reid.data.nuscenes import NuScenesDB, resolve_scenes
from bev_reid.data.raster import box_in_grid, category_boxes, rasterize_boxes
from bev_reid.data.records import AnnotatedBox, CameraFrame, NuScenesFormatError, few

# Statistics of the ImageNet-pretrained trunk's inputs (a fact of the weights, not a setting).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Keys of a sample that collate() keeps as lists although they are tensors (their sizes vary).
VARIABLE_SIZE_KEYS = ("lidar", "lidar_rgb")
# Painted LiDAR reads the images at this fraction of their size (JPEG DCT scaling: fast).
PAINT_SCALE = 4


@dataclass
class _Keyframe:
    """What a keyframe gives whatever the augmentation: read once, kept by the Dataset's cache
    (``data.cache_keyframes``) and augmented anew each time it is asked for."""

    cameras: list[CameraFrame]
    boxes: list[AnnotatedBox]
    lidar: np.ndarray  # P x 5
    images: list  # PIL images, decoded at the size the largest augmentation needs
    projected: list | None = None  # the LiDAR points in each camera (depth targets)
    on_vehicle: np.ndarray | None = None  # P bool: the point lies in a vehicle box
    mask: np.ndarray | None = None  # the GT mask without BEV augmentation


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

    What does not change with the augmentation (calibration, boxes, LiDAR points and their
    projections, the images decoded at the size the largest augmentation needs) is kept for the
    last ``data.cache_keyframes`` keyframes of each process, so a training run that comes back
    to the same keyframes every epoch reads and projects each once. An index may be a pair
    ``(epoch, index)``: that epoch's augmentation, whatever :meth:`set_epoch` said (what a
    DataLoader whose workers live through every epoch passes).
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
        self._cache: OrderedDict[int, _Keyframe] = OrderedDict()

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

    def image_augmentations(
        self, index: int, cameras: Sequence[CameraFrame], epoch: int | None = None
    ) -> list[ImageAug]:
        """One augmentation per camera: random (reproducible when seeded) in training."""
        if not self.is_train:
            return [sample_augmentation(self.cfg, c.width, c.height, None) for c in cameras]
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng(None if self.seed is None else (self.seed, epoch, index))
        return [sample_augmentation(self.cfg, c.width, c.height, rng) for c in cameras]

    def colour_rng(self, index: int, epoch: int | None = None) -> np.random.Generator | None:
        """The random stream of a training keyframe's photometric augmentation (its own, so the
        geometric draws stay as they were); None when ``data.colour_jitter`` is off or not
        training."""
        if not self.is_train or not any(self.cfg.colour_jitter):
            return None
        epoch = self.epoch if epoch is None else epoch
        return np.random.default_rng(None if self.seed is None else (self.seed, epoch, index, 2))

    def _decode_size(self, cam: CameraFrame) -> tuple[int, int]:
        """(W, H) the largest resize of this camera's image can ask for: the images are
        decoded once at the smallest JPEG scale at least this large."""
        final_h, final_w = self.cfg.final_dim
        scale = max(final_h / cam.height, final_w / cam.width)  # validation's resize
        if self.is_train:
            scale = max(scale, self.cfg.resize_lim[1])
        return math.ceil(cam.width * scale), math.ceil(cam.height * scale)

    def _keyframe(self, index: int) -> _Keyframe:
        """The augmentation-free part of a keyframe, from the cache when it holds it."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        token = self.samples[index][1]
        cameras = [self.db.camera(token, ch) for ch in self.cfg.cameras]
        images = [read_image(c.path, self._decode_size(c)) for c in cameras] if self.images else []
        frame = _Keyframe(cameras, self.db.boxes(token), self.db.lidar_points(token), images)
        if self.depth is not None:
            frame.projected = project_points(frame.lidar, cameras)
            vehicles = category_boxes(frame.boxes, self.cfg.categories)
            frame.on_vehicle = points_in_boxes(frame.lidar, vehicles)
        if self.cfg.cache_keyframes > 0:
            self._cache[index] = frame
            while len(self._cache) > self.cfg.cache_keyframes:
                self._cache.popitem(last=False)
        return frame

    def bev_augmentation(self, index: int, epoch: int | None = None) -> np.ndarray | None:
        """The BEV augmentation of a training keyframe: [3, 3], new ego = matrix @ old (a turn
        about z drawn from ``data.bev_rot_lim``, then with ``data.bev_flip`` a mirroring across
        x and / or y, each with probability 1/2); None when off or not training."""
        lo, hi = self.cfg.bev_rot_lim
        if not self.is_train or (lo == hi == 0 and not self.cfg.bev_flip):
            return None
        epoch = self.epoch if epoch is None else epoch
        key = None if self.seed is None else (self.seed, epoch, index, 1)
        rng = np.random.default_rng(key)  # its own stream: the image draws stay as they were
        angle = np.deg2rad(rng.uniform(lo, hi))
        c, s = np.cos(angle), np.sin(angle)
        matrix = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        if self.cfg.bev_flip:
            mirror = np.where(rng.random(2) < 0.5, -1.0, 1.0)  # across y (x -> -x), across x
            matrix = np.diag([mirror[0], mirror[1], 1.0]) @ matrix
        return matrix

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        """A keyframe (``index``, or ``(epoch, index)``: see the class doc). N cameras,
        H x W = final_dim, X x Y = the grid:

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
        epoch, index = index if isinstance(index, tuple) else (self.epoch, index)
        scene, token = self.samples[index]
        frame = self._keyframe(index)
        cameras, boxes, lidar = frame.cameras, frame.boxes, frame.lidar
        augs = self.image_augmentations(index, cameras, epoch)
        mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
        imgs, post_rots, post_trans = [], [], []
        jitter = self.colour_rng(index, epoch)
        for img, aug in zip(frame.images, augs, strict=False):
            img = np.asarray(aug.apply(img), dtype=np.float32) / 255.0  # H x W x 3
            if jitter is not None:
                img = jitter_colours(img, self.cfg.colour_jitter, jitter)
            imgs.append(
                torch.from_numpy(((img - mean) / std).transpose(2, 0, 1).copy())
            )  # 3 x H x W
            post_rot, post_tran = aug.matrices()
            post_rots.append(post_rot)
            post_trans.append(post_tran)
        bda = self.bev_augmentation(index, epoch)  # boxes and LiDAR are in the true ego frame
        shown = boxes if bda is None else [b.moved(bda) for b in boxes]  # in the augmented one
        mask = frame.mask if bda is None else None
        if mask is None:
            visible = [b for b in shown if b.visibility >= self.cfg.min_visibility]
            mask = rasterize_boxes(category_boxes(visible, self.cfg.categories), self.grid)
            if bda is None:
                frame.mask = mask

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
        if self.depth is not None:
            downsample, dbound = self.depth
            metres, nearest = nearest_in_cells(
                frame.projected, post_rots, post_trans, self.cfg.final_dim, downsample
            )  # N x fH x fW each
            camera_items["depth_target"] = torch.from_numpy(depth_bins(metres, dbound))
            on_vehicle = frame.on_vehicle
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
                camera_items["cameras"], camera_items["paint_images"] = list(cameras), small
        if bda is not None:  # after the depth targets and painting, which need the true frame
            lidar = lidar.copy()
            lidar[:, :3] = lidar[:, :3] @ bda.T.astype(np.float32)
        elif self.cfg.cache_keyframes > 0:
            lidar = lidar.copy()  # the cache's own stays as it is whatever the caller does
        return {
            **camera_items,
            "bev_mask": torch.from_numpy(mask.copy())[None],  # 1 x X x Y
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
