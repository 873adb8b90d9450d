"""Crops and embeddings of new boxes, cut exactly as a ReID checkpoint's training crops were.

A ReID checkpoint records its crop recipe (``meta["crop_recipe"]``: the dataset's grid, crop
settings, modalities, channel names, LSS checkpoint and filters, as object_data.json holds them),
so the checkpoint alone tells a user such as the tracker how to cut crops. The cutting itself is
the dataset builder's per-keyframe code (:func:`bev_reid.reid.build.bev_maps`,
:func:`~bev_reid.reid.build.box_geometry`, :func:`~bev_reid.reid.build.cut_crops`): one BEV pass
per keyframe, every box cropped from it.

Shapes: K boxes, C channels, S x S crop cells, E embedding dims.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bev_reid.config import BuildConfig, Config, ConfigError, DataConfig, GridConfig
from bev_reid.data.keyframes import collate
from bev_reid.data.nuscenes import REF_CHANNEL, NuScenesDB
from bev_reid.data.records import NuScenesFileError
from bev_reid.engine.checkpoint import CheckpointError
from bev_reid.reid import build
from bev_reid.reid.crops import cell_side


class SensorMissingError(NuScenesFileError):
    """The crop recipe needs LiDAR or camera data the dataroot lacks; the message says which."""


@dataclasses.dataclass(frozen=True)
class CropRecipe:
    """How a ReID checkpoint's crops were cut.

    Attributes:
        build: the builder's settings that shape a crop (modalities, crop size and cell, heading
            alignment, zeroing, LiDAR raster, bands, margin and colour, categories).
        grid: the BEV grid the crops were sampled from.
        channels: the channel names of a crop, in order.
        lss_checkpoint: path, step and SHA-256 of the LSS checkpoint (camera channels), or None.
        learnt_categories: the nuScenes categories of the identities the net was trained on
            (e.g. ``vehicle.car``, ``vehicle.bus.rigid``), or None where the checkpoint does not
            say (then the dataset's category prefixes alone decide what it covers).
    """

    build: BuildConfig
    grid: GridConfig
    channels: tuple[str, ...]
    lss_checkpoint: dict[str, Any] | None
    learnt_categories: tuple[str, ...] | None = None

    @property
    def needs_lidar(self) -> bool:
        return "lidar" in self.build.modalities

    @property
    def needs_cameras(self) -> bool:
        """Camera BEV features or texture, or painted LiDAR (the colour of the images)."""
        return "camera" in self.build.modalities or self.build.lidar_colour

    @property
    def extent_m(self) -> float:
        """The side of a crop in metres (its cells times their size: ``build.crop_cell``, else
        the grid's cell, the shorter side where the grid's cells are not square)."""
        return self.build.crop_size * cell_side(self.build.crop_cell, self.grid)

    @property
    def needs_lss(self) -> bool:
        """Camera BEV features: the LSS model's BEV pass."""
        return self.build.camera_bev

    @property
    def needs_texture(self) -> bool:
        return self.build.camera_texture

    def covers(self, category: str) -> bool:
        """Whether boxes of this nuScenes category (e.g. ``vehicle.car``, or ``vehicle.bus`` for
        all buses) are what the embedding learnt: of the dataset's category prefixes and, where
        the checkpoint records them, of a category it was trained on (an embedding trained on
        cars, trucks and buses has never seen a bicycle)."""
        if not category.startswith(tuple(self.build.categories)):
            return False
        if self.learnt_categories is None:
            return True
        return any(
            seen.startswith(category) or category.startswith(seen)
            for seen in self.learnt_categories
        )


def recipe_from_meta(meta: dict[str, Any], where: str) -> CropRecipe:
    """The crop recipe of a ReID checkpoint's metadata.

    Checkpoints written before the recipe was recorded fall back to the object_data.json of the
    dataset folder they name (``meta["dataset"]``), when it is still there.

    Args:
        meta: the checkpoint sidecar's ``meta``.
        where: the checkpoint's path, for error messages.
    Raises:
        CheckpointError: no recipe, or one whose channels do not follow from its settings.
    """
    from bev_reid.reid.dataset import learnt_categories, read_object_data

    def dataset_meta() -> dict[str, Any] | None:  # the object_data.json it was trained on
        folder = meta.get("dataset")
        try:
            return read_object_data(folder) if folder else None
        except (FileNotFoundError, ValueError):
            return None

    recipe = meta.get("crop_recipe")
    if not isinstance(recipe, dict):
        recipe = dataset_meta()
        if recipe is None:
            raise CheckpointError(
                f"ReID checkpoint {where!r} does not record how its crops were cut (no "
                f"meta['crop_recipe'], and its dataset {meta.get('dataset')!r} is gone): "
                "retrain it with this bev-reid, or track with --reid-checkpoint none"
            )
    try:
        crop, grid = recipe["crop"], GridConfig(**{k: tuple(v) for k, v in recipe["grid"].items()})
        modalities = tuple(recipe["modalities"])
        cell = crop["cell_m"]
        defaults = BuildConfig()
        settings = BuildConfig(
            modalities=modalities,
            crop_size=int(crop["size"]),
            # 0 means "the grid's cells" to the builder; an explicit cell equal to them cuts alike.
            crop_cell=0.0 if list(cell) == [grid.xbound[2], grid.ybound[2]] else float(cell[0]),
            align_heading=bool(crop["align_heading"]),
            zero_outside=bool(crop["zero_outside"]),
            lidar_raster=crop.get("lidar_raster") or defaults.lidar_raster,
            lidar_colour=bool(crop.get("lidar_colour", False)),
            lidar_bands=tuple(crop.get("lidar_bands", defaults.lidar_bands)),
            lidar_margin=float(crop.get("lidar_margin", defaults.lidar_margin)),
            camera_crops=tuple(crop.get("camera_crops") or defaults.camera_crops),
            texture_levels=int(crop.get("texture_levels", defaults.texture_levels)),
            texture_occlusion=bool(crop.get("texture_occlusion", defaults.texture_occlusion)),
            categories=tuple((recipe.get("filters") or {}).get("categories", defaults.categories)),
            min_iou=0.0,
        )
        channels = tuple(recipe["channels"])
        # A run trained on some modalities of the dataset (reid_run.modalities) cuts only those.
        used = meta.get("channels")
        if isinstance(used, list) and used and list(used) != list(channels):
            kept = tuple(m for m in modalities if any(c.startswith(f"{m}_") for c in used))
            settings = dataclasses.replace(
                settings, modalities=kept, lidar_colour=settings.lidar_colour and "lidar" in kept
            )
            channels = tuple(c for c in channels if c.split("_", 1)[0] in kept)
            if list(channels) != list(used):
                raise ValueError(f"the model's channels {used} are not whole modalities")
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise CheckpointError(f"ReID checkpoint {where!r}: unreadable crop recipe: {e!r}") from e
    expected = _lidar_channels(settings)
    lidar = tuple(c for c in channels if c.startswith("lidar_"))
    if settings.modalities and "lidar" in settings.modalities and lidar != expected:
        raise CheckpointError(
            f"ReID checkpoint {where!r}: its crop recipe gives LiDAR channels {list(expected)}, "
            f"but it records {list(lidar)}"
        )
    learnt = recipe.get("learnt_categories")
    if learnt is None:  # written before it was recorded: its dataset's identities, if at hand
        learnt = learnt_categories(recipe) or learnt_categories(dataset_meta() or {})
    if learnt is not None and not (
        isinstance(learnt, list) and all(isinstance(c, str) for c in learnt)
    ):
        raise CheckpointError(
            f"ReID checkpoint {where!r}: learnt_categories {learnt!r} is not a list of names"
        )
    learnt = None if learnt is None else tuple(learnt)
    return CropRecipe(settings, grid, channels, recipe.get("lss_checkpoint"), learnt)


def _lidar_channels(bc: BuildConfig) -> tuple[str, ...]:
    from bev_reid.data.lidar import COLOUR_CHANNELS
    from bev_reid.reid.crops import lidar_box_channel_names
    from bev_reid.reid.dataset import LIDAR_CHANNELS

    if bc.lidar_raster == "box":
        return tuple(lidar_box_channel_names(bc.lidar_bands, bc.lidar_colour))
    return (*LIDAR_CHANNELS, *(f"lidar_{c}" for c in COLOUR_CHANNELS if bc.lidar_colour))


def check_sensors(
    db: NuScenesDB, sample_tokens: Sequence[str], recipe: CropRecipe, cameras: Sequence[str]
) -> None:
    """Raises SensorMissingError when a keyframe lacks the LiDAR sweep or a camera image the
    recipe needs (a table entry, or its file on disk)."""
    needed = ([REF_CHANNEL] if recipe.needs_lidar else []) + (
        list(cameras) if recipe.needs_cameras else []
    )
    why = {
        REF_CHANNEL: f"its crops hold LiDAR channels ({recipe.build.lidar_raster} raster)",
        "camera": "its crops hold camera channels"
        if "camera" in recipe.build.modalities
        else "its LiDAR is painted with the camera colour (build.lidar_colour)",
    }
    for token in sample_tokens:
        data = db.sample(token)["data"]
        for channel in needed:
            reason = why.get(channel, why["camera"])
            if channel not in data:
                raise SensorMissingError(
                    f"the ReID checkpoint needs {channel} data ({reason}), but sample {token} "
                    f"of {db.dataroot / db.version} has none; use --reid-checkpoint none (motion "
                    "alone) or an embedding trained without it"
                )
            path = db.dataroot / db.get("sample_data", data[channel])["filename"]
            if not path.is_file():
                raise SensorMissingError(
                    f"the ReID checkpoint needs {channel} data ({reason}), but {str(path)!r} "
                    f"(sample {token}) is missing; use --reid-checkpoint none (motion alone) or "
                    "an embedding trained without it"
                )


class CropCutter:
    """Cuts crops of any boxes of a keyframe the way a recipe says, from one BEV pass.

    Args:
        recipe: the checkpoint's :class:`CropRecipe`.
        lss_checkpoint: the LSS checkpoint, needed when the crops hold camera channels; it must
            be the one the dataset was built with (same SHA-256).
        device: where the BEV pass runs.
        data: the data to read (dataroot, version, scenes); only :meth:`keyframes` needs it.
    Raises:
        CheckpointError: a missing or different LSS checkpoint, or channels that do not match.
    """

    def __init__(
        self,
        recipe: CropRecipe,
        lss_checkpoint: str | Path = "",
        device: str | torch.device = "cpu",
        data: DataConfig | None = None,
    ):
        self.recipe = recipe
        if recipe.needs_lss and not lss_checkpoint:
            recorded = recipe.lss_checkpoint or {}
            raise CheckpointError(
                "the ReID checkpoint's crops hold camera BEV features: pass --lss-checkpoint (its "
                f"dataset was built with {recorded.get('path')!r}, step {recorded.get('step')})"
            )
        build_cfg = dataclasses.replace(
            recipe.build, checkpoint=str(lss_checkpoint), device=str(device), split=""
        )
        cfg = Config(data=data or DataConfig(), grid=recipe.grid, build=build_cfg)
        self.cfg = cfg
        self.model, self.grid, self.device = None, recipe.grid, torch.device(str(device))
        if recipe.needs_lss:
            self._load_lss(str(lss_checkpoint))

    def _load_lss(self, path: str) -> None:
        import json

        from bev_reid.engine.checkpoint import load_checkpoint
        from bev_reid.lss.model import load_lss

        model, trained = load_lss(path, self.device)
        sha = json.loads(load_checkpoint(path).path.read_text())["sha256"]
        recorded = (self.recipe.lss_checkpoint or {}).get("sha256")
        if recorded and sha != recorded:
            raise CheckpointError(
                f"LSS checkpoint {path!r} (SHA-256 {sha[:12]}...) is not the one the ReID "
                f"dataset was built with ({self.recipe.lss_checkpoint}): its BEV features differ"
            )
        if trained.grid != self.recipe.grid:
            raise CheckpointError(
                f"LSS checkpoint {path!r} has grid {trained.grid}, the crops were cut on "
                f"{self.recipe.grid}"
            )
        self.model = model
        # The LSS model's image size and cameras; the data location of this run.
        data = self.cfg.data
        self.cfg = dataclasses.replace(
            self.cfg,
            data=dataclasses.replace(
                trained.data,
                dataroot=data.dataroot,
                version=data.version,
                scenes=data.scenes,
                num_workers=data.num_workers,
            ),
        )

    def keyframes(self, db: NuScenesDB | None = None):
        """The keyframes of ``data`` as :class:`~bev_reid.data.keyframes.NuScenesKeyframes`,
        reading what the recipe needs (images for camera features or paint); sensors checked."""
        from bev_reid.data.keyframes import NuScenesKeyframes

        dataset = NuScenesKeyframes(
            self.cfg.data,
            self.grid,
            is_train=False,
            db=db,
            images=self.model is not None,
            paint=self.recipe.needs_lidar and self.recipe.build.lidar_colour,
            texture=self.recipe.needs_texture,
        )
        tokens = [t for _, t in dataset.samples]
        check_sensors(dataset.db, tokens, self.recipe, self.cfg.data.cameras)
        return dataset

    @torch.no_grad()
    def crops(
        self,
        keyframe: dict[str, Any],
        boxes: Sequence[dict[str, Any]],
        occluders: Sequence[dict[str, Any]] | None = None,
    ) -> torch.Tensor:
        """Crops [K, C, S, S] float32 of ``boxes`` in one keyframe.

        Args:
            keyframe: an item of :meth:`keyframes` (or a collated batch of one).
            boxes: ego-frame box dicts with ``center`` (3), ``wlh`` (3) and ``yaw`` (see
                :meth:`bev_reid.data.records.AnnotatedBox.as_dict`).
            occluders: every box of the keyframe (same dicts), which hide the camera texture
                behind them; None: ``boxes``.
        """
        batch = keyframe if isinstance(keyframe.get("sample_token"), list) else collate([keyframe])
        bc, size = self.cfg.build, self.recipe.build.crop_size
        if not boxes:
            return torch.zeros(0, len(self.recipe.channels), size, size)
        maps, _ = build.bev_maps(self.model, batch, bc, self.grid, self.device)
        geometry = build.box_geometry(list(boxes), self.device)
        walls = None if occluders is None else build.box_geometry(list(occluders), self.device)
        crops = build.cut_crops(maps, batch, geometry, bc, self.grid, self.device, walls)
        if crops.shape[1] != len(self.recipe.channels):
            raise CheckpointError(
                f"crops have {crops.shape[1]} channels, the ReID checkpoint's recipe "
                f"{len(self.recipe.channels)}: the LSS checkpoint does not fit it"
            )
        return crops.float()


def cutter_for(
    model: Any, lss_checkpoint: str | Path = "", data: DataConfig | None = None
) -> CropCutter:
    """A :class:`CropCutter` for a :class:`~bev_reid.models.reid.BEVReIDModel` loaded with
    ``from_checkpoint`` (its sidecar's metadata holds the recipe), on the model's device."""
    meta = getattr(model, "checkpoint_meta", None) or {}
    where = str(getattr(model, "checkpoint_path", None) or "<model>")
    device = next(model.parameters()).device
    return CropCutter(recipe_from_meta(meta, where), lss_checkpoint, device, data)
