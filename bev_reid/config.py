"""Configuration: one frozen dataclass per section, loaded from YAML, overridden by dotted keys.

Every default of the project lives here, once. A YAML file names only what it changes; an unknown
key is an error that lists the valid ones; ``section.key=value`` overrides from the command line
are parsed with YAML rules (``3`` is an int, ``[1, 2]`` a list, ``true`` a bool).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


Device = str  # "auto", "cpu", "cuda" or "cuda:K", checked by `_check_device`
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def num(default: Any, lo: float | None = None, hi: float | None = None, *, above: bool = False,
        below: bool = False) -> Any:  # fmt: skip
    """A numeric field (or a tuple of numbers, checked item by item) with its allowed range:
    ``lo <= value <= hi``; ``above`` / ``below`` make the bounds strict. Checked when a section
    is built, so a bad value is refused before any work starts."""
    return field(default=default, metadata={"range": (lo, hi, above, below)})


def _range_text(lo: float | None, hi: float | None, above: bool, below: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if above else '>='} {lo}")
    if hi is not None:
        parts.append(f"{'<' if below else '<='} {hi}")
    return " and ".join(parts)


def _is_choice(value: Any, choices: tuple[Any, ...]) -> bool:
    """``value`` is one of ``choices`` (True is not taken for 1, nor 1 for True)."""
    return any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices)


def _item_type(tp: Any) -> Any:
    """The type of a field's items: ``X`` for ``X``, ``tuple[X, ...]`` and ``X | None``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = inner[0] if len(inner) == 1 else tp
    if typing.get_origin(tp) is tuple and typing.get_args(tp)[-1:] == (Ellipsis,):
        tp = typing.get_args(tp)[0]
    return tp


def _is_integer(value: Any) -> bool:
    """An int (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@functools.cache
def _choice_fields(cls: type) -> dict[str, tuple[Any, ...]]:
    """The fields of a section typed ``Literal[...]`` or ``tuple[Literal[...], ...]``: choices."""
    hints = typing.get_type_hints(cls).items()
    return {name: choices_of(_item_type(tp)) for name, tp in hints if choices_of(_item_type(tp))}


@functools.cache
def _int_fields(cls: type) -> tuple[str, ...]:
    """The fields of a section typed ``int``, ``tuple[int, ...]`` or ``int | None``."""
    return tuple(n for n, tp in typing.get_type_hints(cls).items() if _item_type(tp) is int)


def _check_fields(obj: Any) -> None:
    """Checks the choice, range and device fields of a config section, however it was built
    (from YAML, ``--set`` or Python)."""
    section = getattr(obj, "SECTION", type(obj).__name__)
    for name, choices in _choice_fields(type(obj)).items():
        value = getattr(obj, name)
        items = value if isinstance(value, tuple) else (value,)
        if not all(_is_choice(v, choices) for v in items):
            raise ConfigError(
                f"{section}.{name} must be one of {', '.join(map(str, choices))}"
                f"{' (each item)' if isinstance(value, tuple) else ''}; got {value!r}"
            )
    for name in _int_fields(type(obj)):
        value = getattr(obj, name)
        items = value if isinstance(value, tuple) else (value,)
        if not all(v is None or _is_integer(v) for v in items):
            raise ConfigError(
                f"{section}.{name} must be an integer"
                f"{' (each item)' if isinstance(value, tuple) else ''}; got {value!r}"
            )
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if "range" in f.metadata:
            lo, hi, above, below = f.metadata["range"]
            for v in value if isinstance(value, tuple) else (value,):
                bad = (lo is not None and (v <= lo if above else v < lo)) or (
                    hi is not None and (v >= hi if below else v > hi)
                )
                if bad or (isinstance(v, float) and not math.isfinite(v)):
                    raise ConfigError(
                        f"{section}.{f.name} must be {_range_text(lo, hi, above, below)}"
                        f"{' (each item)' if isinstance(value, tuple) else ''}; got {value!r}"
                    )
        if f.name == "device" and not _DEVICE.match(str(value)):
            raise ConfigError(
                f"{section}.device must be auto, cpu, cuda or cuda:N (a GPU index); got {value!r}"
            )


def parse_shard(text: str) -> tuple[int, int]:
    """``build.shard``: ``"i/n"`` -> (i, n); empty -> (0, 1)."""
    if not text:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"build.shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"build.shard {text!r}: need 0 <= i < n")
    return i, n


class _Section:
    """Base of the config sections: ranges and devices are checked when a section is built."""

    SECTION: typing.ClassVar[str] = ""

    def __post_init__(self) -> None:
        _check_fields(self)


@dataclass(frozen=True)
class GridConfig(_Section):
    """The BEV grid and the depth bins of the camera frustum: (min, max, step) per axis, metres."""

    SECTION = "grid"

    xbound: tuple[float, float, float] = (-50.0, 50.0, 0.5)
    ybound: tuple[float, float, float] = (-50.0, 50.0, 0.5)
    zbound: tuple[float, float, float] = (-10.0, 10.0, 20.0)
    dbound: tuple[float, float, float] = (4.0, 45.0, 1.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("xbound", "ybound", "zbound", "dbound"):
            lo, hi, step = getattr(self, name)
            if not (hi > lo and step > 0):
                raise ConfigError(
                    f"grid.{name} must be (min, max, step) with max > min and step > 0, "
                    f"got {(lo, hi, step)}"
                )

    @property
    def shape(self) -> tuple[int, int, int]:
        """Cells along (x, y, z)."""
        return tuple(
            int(round((b[1] - b[0]) / b[2])) for b in (self.xbound, self.ybound, self.zbound)
        )  # type: ignore[return-value]

    @property
    def depth_bins(self) -> int:
        lo, hi, step = self.dbound
        return int(round((hi - lo) / step))


@dataclass(frozen=True)
class DataConfig(_Section):
    """Reading nuScenes keyframes for the camera model."""

    SECTION = "data"
    dataroot: str = "data/nuscenes"
    version: str = "v1.0-trainval"
    scenes: tuple[str, ...] = ()  # explicit scene names; empty = the split the command needs
    cameras: tuple[str, ...] = (
        "CAM_FRONT_LEFT",
        "CAM_FRONT",
        "CAM_FRONT_RIGHT",
        "CAM_BACK_LEFT",
        "CAM_BACK",
        "CAM_BACK_RIGHT",
    )
    final_dim: tuple[int, int] = num((128, 352), 1)  # (H, W) fed to the network
    # Training-time augmentation (lift-splat-shoot's): scale, bottom crop share, flip, rotation.
    resize_lim: tuple[float, float] = num((0.193, 0.225), 0, above=True)
    bot_pct_lim: tuple[float, float] = num((0.0, 0.22), 0, 1)
    rot_lim: tuple[float, float] = num((-5.4, 5.4), -180, 180)  # degrees
    rand_flip: bool = True
    # Photometric augmentation in training: (brightness, contrast, saturation) factors drawn per
    # camera from [1 - s, 1 + s] (:func:`bev_reid.data.augment.jitter_colours`); 0 turns one off.
    colour_jitter: tuple[float, float, float] = num((0.0, 0.0, 0.0), 0, 1, below=True)
    # BEV augmentation in training (after BEVDet, Huang et al. 2021): the ego frame turned about
    # its z axis by an angle drawn from bev_rot_lim (degrees) and, with bev_flip, mirrored across
    # its x and/or y axis at random; cameras, boxes and LiDAR points move with it, the images do
    # not. It keeps the BEV encoder from learning where vehicles tend to stand in the few
    # training scenes. (0, 0) and False: off (lift-splat-shoot's recipe).
    bev_rot_lim: tuple[float, float] = num((0.0, 0.0), -180, 180)
    bev_flip: bool = False
    categories: tuple[str, ...] = ("vehicle",)  # category name prefixes that make the BEV mask
    # Boxes below this nuScenes visibility level (1: 0-40% of the vehicle visible in the six
    # cameras, 2: 40-60%, 3: 60-80%, 4: 80-100%) are left out of the BEV mask, in training and
    # in val-lss. 0 keeps every box (lift-splat-shoot's protocol); 2 is the "visibility > 40%"
    # protocol of CVT and Simple-BEV: no camera model can place a vehicle hidden behind a house.
    min_visibility: int = num(0, 0, 4)
    num_workers: int = num(2, 0)
    # Keyframes each loading process keeps read (images decoded, LiDAR points projected into the
    # cameras; about 4 MB each in the demo), so later epochs only augment them; 0 reads each anew.
    cache_keyframes: int = num(0, 0)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("resize_lim", "bot_pct_lim", "rot_lim", "bev_rot_lim"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ConfigError(f"data.{name} must be (min, max) with min <= max; got {(lo, hi)}")
        if not self.cameras:
            raise ConfigError("data.cameras must name at least one camera channel")
        if not self.categories:
            raise ConfigError("data.categories must name at least one category prefix")


@dataclass(frozen=True)
class SynthConfig(_Section):
    """The offline synthetic nuScenes-format world (`bev-reid synth`).

    The defaults make 4 scenes x 24 keyframes (96 samples, 576 images, ~3700 boxes, ~250 vehicle
    identities seen in 4 keyframes or more; 140 MB) with ~25 s of CPU time, 30-50 s wall clock on
    two shared CPU cores.
    """

    SECTION = "synth"
    out: str = "data/synth"
    scenes: int = 4
    keyframes: int = 24  # 2 Hz keyframes per scene (nuScenes scenes hold ~40)
    seed: int = 0
    version: str = "v1.0-mini"
    # Scene i takes entry i modulo the length of each of these lists.
    conditions: tuple[str, ...] = ("day", "night", "day", "rain")  # day / night / rain
    layouts: tuple[str, ...] = ("straight", "loop")  # straight street / loop around a block
    locations: tuple[str, ...] = (
        "singapore-onenorth",
        "boston-seaport",
        "singapore-queenstown",
        "singapore-hollandvillage",
    )
    ego_speed: tuple[float, float] = (6.0, 9.0)  # m/s, drawn per scene
    # Vehicle paints: "vivid" (eight saturated colours and five patterns: colour tells vehicles
    # apart) or "street" (white, black and greys mostly, plain or two-tone: as real streets).
    palette: Literal["vivid", "street"] = "vivid"
    moving_vehicles: int = 12  # per scene: cars, trucks and buses in traffic
    pedestrians: int = 6  # per scene
    parking_share: float = 0.6  # share of kerbs with a row of parked vehicles
    lot_share: float = 0.3  # share of blocks that are parking lots
    park_share: float = 0.15  # share of blocks that are grass (the rest hold buildings)
    populate_range_m: float = 90.0  # static things are placed this close to the ego's route
    annotate_range_m: float = 60.0  # objects this close to the ego get a sample_annotation
    render_range_m: float = 110.0  # agents farther than this are not drawn
    render_scale: int = 4  # rasterise at 1600/scale x 900/scale, upscale to 1600 x 900
    jpeg_quality: int = 90
    lidar_azimuth_steps: int = 1080  # x 32 beams, as nuScenes' LIDAR_TOP
    lidar_range_m: float = 70.0
    workers: int = 2  # processes; scenes are rendered in parallel (same bytes for any count)

    def __post_init__(self) -> None:
        super().__post_init__()

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(what)

        need(self.scenes >= 1, f"synth.scenes must be at least 1, got {self.scenes}")
        need(self.keyframes >= 2, f"synth.keyframes must be at least 2, got {self.keyframes}")
        need(
            bool(self.version) and "/" not in self.version,
            f"synth.version must be a folder name such as v1.0-mini, got {self.version!r}",
        )
        for name, valid in (
            ("conditions", ("day", "night", "rain")),
            ("layouts", ("straight", "loop")),
            (
                "locations",
                (
                    "singapore-onenorth",
                    "boston-seaport",
                    "singapore-queenstown",
                    "singapore-hollandvillage",
                ),
            ),
        ):
            values = getattr(self, name)
            bad = [v for v in values if v not in valid]
            need(
                bool(values) and not bad,
                f"synth.{name} must be a non-empty list of {', '.join(valid)}; got {list(values)}",
            )
        lo, hi = self.ego_speed
        need(
            0 < lo <= hi, f"synth.ego_speed must be (min, max) with 0 < min <= max, got {(lo, hi)}"
        )
        for name in ("moving_vehicles", "pedestrians"):
            need(getattr(self, name) >= 0, f"synth.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("parking_share", "lot_share", "park_share"):
            v = getattr(self, name)
            need(0.0 <= v <= 1.0, f"synth.{name} must lie in [0, 1], got {v}")
        need(
            self.lot_share + self.park_share <= 1.0,
            f"synth.lot_share + synth.park_share must be <= 1, got "
            f"{self.lot_share + self.park_share}",
        )
        for name in ("populate_range_m", "annotate_range_m", "render_range_m", "lidar_range_m"):
            need(getattr(self, name) > 0, f"synth.{name} must be > 0, got {getattr(self, name)}")
        need(
            self.render_scale >= 1
            and 1600 % self.render_scale == 0
            and 900 % self.render_scale == 0,
            "synth.render_scale must divide both 1600 and 900 (1, 2, 4, 5, 10, ...), "
            f"got {self.render_scale}",
        )
        need(
            1 <= self.jpeg_quality <= 100,
            f"synth.jpeg_quality must lie in [1, 100], got {self.jpeg_quality}",
        )
        need(self.workers >= 1, f"synth.workers must be >= 1, got {self.workers}")
        need(
            self.lidar_azimuth_steps >= 8,
            f"synth.lidar_azimuth_steps must be >= 8, got {self.lidar_azimuth_steps}",
        )


@dataclass(frozen=True)
class LSSConfig(_Section):
    """The lift-splat-shoot network."""

    SECTION = "lss"
    # A registered image trunk (bev_reid.models.trunks): efficientnet-b0 (the original's),
    # resnet-tiny (learns in minutes on a CPU). Built from scratch: nothing is downloaded.
    trunk: str = "efficientnet-b0"
    trunk_weights: str = ""  # optional local file of ImageNet weights for the trunk
    channels: int = num(64, 1)  # C of the lifted camera features
    downsample: int = num(16, 1)  # stride of the camera features (the trunk says which it has)
    bev_channels: int = num(64, 1)  # channels of the BEV output (the ReID crops' features)
    bev_width: int = num(64, 1)  # BEV encoder stage widths w, 2w, 4w (64: ResNet-18's)
    bev_decoder: int = num(0, 0)  # BEV decoder width d (then d / 2); 0 = 4 bev_width (LSS's)
    # The camera head also predicts a vehicle probability per feature cell, splatted as the last
    # context channel and learned from LiDAR points in vehicle boxes (train_lss.seg_weight).
    image_seg: bool = False
    # The depth head also sees where each pixel's ray meets the ground (from the calibration and
    # the image augmentation): camera-aware depth, as BEVDepth feeds it the camera parameters.
    ray_features: bool = False
    # Residual blocks of 3x3 convolutions between the trunk (and the ray features) and the 1x1
    # depth / context head; 0 is lift-splat-shoot's head. They let a cell's depth see its
    # neighbours' rays: a vehicle's body stands at the depth where the ray under it meets the
    # ground.
    head_blocks: int = num(0, 0)
    head_width: int = num(0, 0)  # channels of those blocks; 0 = the trunk's
    # Three context channels carry the image's own colour (the input pixels of each feature cell,
    # averaged) instead of learned features: splatted where the depth puts them, they give the
    # BEV map, and so the ReID crops, each vehicle's colour from the first step.
    image_colour: bool = False
    # How the lifted features reach the grid: fused (our op, no frustum tensor), bev_pool (the
    # outer product, then our op) or reference (the outer product, then plain torch).
    splat: Literal["fused", "bev_pool", "reference"] = "fused"

    def __post_init__(self) -> None:
        super().__post_init__()
        from bev_reid.models.trunks import list_trunks  # the trunks register themselves there

        if self.trunk not in list_trunks():
            raise ConfigError(
                f"lss.trunk must be a registered trunk: {', '.join(list_trunks())}; "
                f"got {self.trunk!r}"
            )


@dataclass(frozen=True)
class TrainLSSConfig(_Section):
    """Training of the LSS network with the dual loss (`bev-reid train-lss`)."""

    SECTION = "train_lss"
    logdir: str = "runs/lss"
    device: Device = "auto"  # auto, cpu, cuda or cuda:K
    batch_size: int = num(4, 1)
    max_steps: int = num(20000, 1)
    lr: float = num(1e-3, 0)  # 0 freezes the weights
    weight_decay: float = num(1e-7, 0)
    grad_clip: float = num(5.0, 0, above=True)  # max gradient norm
    bce_weight: float = num(0.5, 0)
    mse_weight: float = num(0.5, 0)
    pos_weight: float = num(2.13, 0, above=True)
    # Depth supervision from LiDAR (after BEVDepth): weight of the cross-entropy of each camera
    # feature cell's depth distribution against its nearest LiDAR point's bin; 0 turns it off
    # (the original recipe).
    depth_weight: float = num(0.0, 0)
    # How much more a camera cell whose nearest LiDAR point lies on a vehicle counts in the depth
    # term than one on the ground or a building (a vehicle's depth is what places it in BEV).
    depth_vehicle_weight: float = num(1.0, 0, above=True)
    # With lss.image_seg: weight of the BCE of the image vehicle logits against whether each
    # cell's nearest LiDAR point lies in a vehicle box (cells with no point are left out).
    seg_weight: float = num(1.0, 0)
    # Weight of a soft-Dice term on the BEV vehicle probabilities (1 - 2|P.G| / (|P| + |G|) per
    # sample): it scores overlap as IoU does, so a small positive class is not drowned by the
    # background the way per-cell BCE lets it be; 0 turns it off (the original recipe).
    dice_weight: float = num(0.0, 0)
    lr_schedule: Literal["constant", "onecycle"] = "constant"  # onecycle: warm-up, then cosine
    warmup: float = num(0.1, 0, 1, below=True)  # share of the steps warming up (onecycle)
    # Autocast: bf16 or fp16 (GPU); auto is bf16 where the device computes it fast (a GPU that
    # supports it, a CPU with AMX tiles, where convolutions run about 2x faster), else none.
    amp: Literal["none", "auto", "bf16", "fp16"] = "none"
    seed: int = num(0, 0)
    checkpoint_every: int = num(500, 0)  # steps; 0 = off (the last step is always saved)
    checkpoint_every_s: float = num(0.0, 0)  # seconds; 0 = off
    keep_checkpoints: int = num(5, 0)  # newest kept; 0 keeps all
    log_every: int = num(10, 0)  # steps; 0 = off
    image_every: int = num(100, 0)  # steps; 0 = off
    resume: bool = False
    split: str = "train"  # official split when data.scenes is empty


@dataclass(frozen=True)
class ValLSSConfig(_Section):
    """`bev-reid val-lss`: IoU of a trained LSS checkpoint on validation keyframes."""

    SECTION = "val_lss"
    checkpoint: str = ""  # a checkpoint file, a checkpoints folder or a run folder (its latest)
    nvals: int = num(0, 0)  # keyframes to evaluate; 0 = all of the split
    device: Device = "auto"


@dataclass(frozen=True)
class ShowConfig(_Section):
    """`bev-reid show-sample`: a picture of one keyframe."""

    SECTION = "show"
    sample: str = ""  # sample token; empty = the first keyframe of the first scene
    out: str = "sample.png"


@dataclass(frozen=True)
class BuildConfig(_Section):
    """`bev-reid build-dataset`: every vehicle of every keyframe, cropped from one BEV pass."""

    SECTION = "build"

    out: str = "runs/reid-dataset"
    checkpoint: str = ""  # LSS checkpoint; not needed with modalities = lidar
    categories: tuple[str, ...] = ("vehicle",)  # category name prefixes of the identities
    min_iou: float = num(0.2, 0, 1)  # predicted vehicle mask vs box footprint; 0 = no filter
    min_visibility: int = 1  # nuScenes visibility level 1-4
    min_lidar_points: int = num(0, 0)
    min_views: int = 4  # identities with fewer views are dropped
    crop_size: int = 24  # cells (24 x 0.5 m = 12 m)
    align_heading: bool = True  # rotate crops so the box heading points the same way
    zero_outside: bool = True  # zero the crop outside the box footprint (the original's choice)
    crop_cell: float = 0.0  # metres per crop cell; 0 = the grid's cell (0.5 m)
    modalities: tuple[Literal["camera", "lidar"], ...] = ("camera",)  # camera, lidar, or both
    # Camera channels: "bev" samples the LSS BEV features (needs `checkpoint`); "texture" reads
    # the image colour on each box's cells at `texture_levels` heights (bev_reid/reid/texture.py).
    camera_crops: tuple[Literal["bev", "texture"], ...] = ("bev",)
    texture_levels: int = num(4, 1, 16)  # height levels of the camera texture
    # The texture leaves out what other boxes of the keyframe hide (occluded points stay 0).
    texture_occlusion: bool = True
    # LiDAR channels: "grid" samples the ego BEV raster (occupancy, max height, mean intensity)
    # like the camera features; "box" rasterises the points in each box's frame at the crop
    # cells, with heights from the box bottom and point counts per height band.
    lidar_raster: Literal["grid", "box"] = "grid"
    lidar_bands: tuple[float, ...] = (0.5, 1.0, 1.5)  # box raster: band edges above the bottom, m
    lidar_margin: float = 0.25  # box raster: points this far outside the box still count, m
    # Painted LiDAR: each point takes the colour of the camera pixel it falls in; the LiDAR
    # channels gain the mean red, green and blue of each cell (no LSS model needed).
    lidar_colour: bool = False
    # Training views cut again from this many noisy copies of their box, drawn with the
    # detections' noise model (track.det_noise_m, det_size_noise, det_yaw_noise_deg): an
    # embedding for the tracker learns crops as detections cut them. Validation keeps the
    # annotated boxes only.
    box_noise_copies: int = num(0, 0, 16)
    val_scenes: tuple[str, ...] = ()  # identities of these scenes form the validation split
    val_fraction: float = 0.1  # else this share of identities, drawn with `seed` (1 = all)
    seed: int = num(0, 0)
    shard: str = ""  # "i/n": process the i-th of n parts of the keyframes, then `--merge`
    merge: bool = False  # only merge finished parts (after sharded runs)
    part_size: int = num(32, 1)  # keyframes per resumable part file
    device: Device = "auto"
    split: str = ""  # official split to read; empty = every scene of the version

    @property
    def camera_bev(self) -> bool:
        """Whether the crops hold camera BEV features (the LSS model's BEV pass)."""
        return "camera" in self.modalities and "bev" in self.camera_crops

    @property
    def camera_texture(self) -> bool:
        """Whether the crops hold the camera texture (the images, no LSS)."""
        return "camera" in self.modalities and "texture" in self.camera_crops

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.modalities:
            raise ConfigError(
                f"build.modalities must be camera, lidar or both, got {list(self.modalities)}"
            )
        if not 1 <= self.min_visibility <= 4:
            raise ConfigError(
                f"build.min_visibility must be a nuScenes level 1-4, got {self.min_visibility}"
            )
        if self.crop_size < 2:
            raise ConfigError(f"build.crop_size must be >= 2 cells, got {self.crop_size}")
        if not self.camera_crops or len(set(self.camera_crops)) != len(self.camera_crops):
            raise ConfigError(
                "build.camera_crops must name bev, texture or both, once each; got "
                f"{list(self.camera_crops)}"
            )
        if self.crop_cell < 0:
            raise ConfigError(f"build.crop_cell must be >= 0 metres, got {self.crop_cell}")
        bands = list(self.lidar_bands)
        if sorted(set(bands)) != bands or min(bands, default=1) <= 0:
            raise ConfigError(
                f"build.lidar_bands must be positive and increasing metres, got {bands}"
            )
        if self.lidar_margin < 0:
            raise ConfigError(f"build.lidar_margin must be >= 0 metres, got {self.lidar_margin}")
        if self.lidar_colour and "lidar" not in self.modalities:
            raise ConfigError(
                "build.lidar_colour paints LiDAR points: add lidar to build.modalities "
                f"(now {list(self.modalities)})"
            )
        if not 0.0 <= self.val_fraction <= 1.0:
            raise ConfigError(
                f"build.val_fraction must lie in [0, 1] (1 holds out every identity, to score "
                f"a model trained elsewhere), got {self.val_fraction}"
            )
        parse_shard(self.shard)
        if self.min_views < 1:
            raise ConfigError(f"build.min_views must be >= 1, got {self.min_views}")


@dataclass(frozen=True)
class ReIDRunConfig(_Section):
    """Where a ReID run lives; shared by `bev-reid train-reid` and `bev-reid eval-reid`."""

    SECTION = "reid_run"
    dataset_dir: str = "runs/reid-dataset"
    log_dir: str = "runs/reid"  # checkpoints and tensorboard logs go to log_dir/run_id
    run_id: str = "default"
    # The crop channels the run uses: camera, lidar or both; empty = every channel of the dataset.
    modalities: tuple[Literal["camera", "lidar"], ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.run_id or "/" in self.run_id or self.run_id in (".", ".."):
            raise ConfigError(f"reid_run.run_id must be a folder name; got {self.run_id!r}")


@dataclass(frozen=True)
class ReIDModelConfig(_Section):
    """The ReID embedding network and its head."""

    SECTION = "reid"
    embedding_dim: int = num(128, 1)
    # The original's dropout; batch-hard triplet learns faster with less (e.g. 0.1).
    dropout: float = num(0.6, 0, 1, below=True)
    widths: tuple[int, ...] = num((64, 128), 1)
    pool: int = num(6, 1)  # the last feature map is averaged to pool x pool cells, then flattened
    init_scale: float = num(10.0, 0, above=True)  # starting scale of the cosine softmax
    # Batch-hard triplet margin; a negative value selects the soft margin.
    triplet_margin: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.widths:
            raise ConfigError("reid.widths must list at least one stage width")


@dataclass(frozen=True)
class TrainReIDConfig(_Section):
    """`bev-reid train-reid`: P identities x K views per batch, Adam."""

    SECTION = "train_reid"
    loss_mode: str = "cosine-softmax"  # a registered head: cosine-softmax or triplet
    device: Device = "auto"
    p_identities: int = num(16, 1)
    k_views: int = num(4, 1)
    # Share of a batch's identities (after a random anchor) that are the anchor's nearest
    # neighbours in one keyframe, the vehicles a tracker must tell it from; 0: random batches.
    neighbours: float = num(0.0, 0, 1)
    mirror: bool = True  # flip half the crops across the heading axis (the other side of a vehicle)
    shift: float = num(0.0, 0)  # random shift of each crop, up to this many cells along each axis
    rotate: float = num(0.0, 0, 180)  # random rotation of each crop, up to this many degrees
    # Share of cells whose LiDAR channels are zeroed at random (sparser returns); camera
    # channels are dense BEV features and are never dropped.
    # Each crop draws its share uniformly from cell_dropout +- cell_dropout_spread (clipped to
    # 0..0.95): views from near (dense) to far (sparse) in one batch. 0.6 +- 0.3 lifted the
    # real scene's gap-protocol mAP from 1.14x to 1.21x the floor (docs/results.md).
    cell_dropout: float = num(0.6, 0, 1, below=True)
    cell_dropout_spread: float = num(0.3, 0, 1)
    lr: float = num(1e-3, 0)  # 0 freezes the weights
    # onecycle: a warm-up over the first `warmup` share of the steps, then a cosine down to
    # 0.01 lr by max_steps (bev_reid.engine.loop.lr_factor)
    lr_schedule: Literal["constant", "onecycle"] = "constant"
    warmup: float = num(0.0, 0, 1, below=True)
    # Checkpoints hold an exponential moving average of the weights with this decay per step
    # (bev_reid.engine.loop.WeightAverage), e.g. 0.999; 0: the weights of the last step.
    weight_average: float = num(0.0, 0, 1, below=True)
    weight_decay: float = num(0.0, 0)
    max_steps: int = num(20000, 1)
    checkpoint_every: int = num(500, 0)  # steps; 0 = off (the last step is always saved)
    checkpoint_every_s: float = num(0.0, 0)  # seconds; 0 = off
    keep_checkpoints: int = num(0, 0)  # 0 keeps all (the evaluator watches every one)
    log_every: int = num(20, 0)  # steps; 0 = off
    image_every: int = num(1000, 0)  # steps; 0 = off
    num_workers: int = num(2, 0)
    seed: int = num(0, 0)
    resume: bool = False
    # A ReID checkpoint (e.g. trained on a larger or synthetic dataset) whose embedding net starts
    # this run; its head and input statistics are not taken. Ignored when resuming.
    init_from: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        from bev_reid.models.heads import list_heads  # the heads register themselves there

        if self.loss_mode not in list_heads():
            raise ConfigError(
                f"train_reid.loss_mode must be a registered head: {', '.join(list_heads())}; "
                f"got {self.loss_mode!r}"
            )


@dataclass(frozen=True)
class EvalReIDConfig(_Section):
    """`bev-reid eval-reid`: watch a run's checkpoints and evaluate each new one once."""

    SECTION = "eval_reid"
    eval_log_dir: str = "runs/reid-eval"  # tensorboard and metrics.jsonl under eval_log_dir/run_id
    once: bool = False  # evaluate what is there, then exit
    # Also score the floors a trained model must beat (the raw crops, and the raw crops
    # standardised per channel), once per evaluation folder, as checkpoints "raw-crops" and
    # "raw-crops-standardised" (step null) in metrics.jsonl.
    floors: bool = True
    poll_s: float = num(10.0, 0, above=True)
    split: Literal["train", "val", "all"] = "val"
    trials: int = num(10, 1)  # random single-shot galleries of the CMC protocol
    seed: int = num(0, 0)  # of those galleries
    topk: tuple[int, ...] = num((1, 5, 10, 20), 1)
    batch_size: int = num(256, 1)
    device: Device = "auto"
    # Registered protocols (bev_reid.reid.evaluator, bev_reid.reid.protocols), in record order.
    protocols: tuple[str, ...] = ("cmc", "retrieval", "retrieval_gap", "tracklet",
                                  "cross_condition", "neighbours")  # fmt: skip
    # retrieval_gap and neighbours: gallery views nearer the query in time left out (of the own
    # views, for neighbours)
    min_gap_s: float = num(3.0, 0)
    tracklet_len: int = num(4, 1)  # tracklet: consecutive views of a vehicle per tracklet
    # neighbours: the other vehicles within this distance of a view, in its keyframe, are its
    # negatives (those a tracker could confuse it with)
    neighbour_radius_m: float = num(8.0, 0, above=True)
    rerank: bool = False  # adds retrieval_rerank: k-reciprocal re-ranking (Zhong et al. 2017)
    rerank_k1: int = num(20, 1)  # neighbours of the k-reciprocal sets
    rerank_k2: int = num(6, 1)  # views averaged by the local query expansion (1: none)
    rerank_lambda: float = num(0.3, 0, 1)  # weight of the original distance in the re-ranked one

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.topk:
            raise ConfigError("eval_reid.topk must list at least one rank, e.g. [1, 5]")
        from bev_reid.reid.evaluator import PROTOCOLS  # the protocols register themselves there

        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown:
            raise ConfigError(
                f"eval_reid.protocols must be registered protocols: {', '.join(PROTOCOLS)}; "
                f"got {', '.join(map(repr, unknown))}"
            )


TRACKING_CLASSES = ("bicycle", "bus", "car", "motorcycle", "pedestrian", "trailer", "truck")


@dataclass(frozen=True)
class TrackConfig(_Section):
    """`bev-reid make-detections`, `track`, `eval-track` and `show-tracks` (bev_reid.track).

    Files chain through the keys: make-detections writes ``detections``, track reads it and
    writes ``out``, eval-track scores ``out`` into the folder ``eval_out``, show-tracks draws
    ``out`` into ``picture`` and lists its identity switches in ``switches``.
    """

    SECTION = "track"

    detections: str = "runs/track/detections.json"  # nuScenes detection-results JSON
    out: str = "runs/track/tracks.json"  # nuScenes tracking-results JSON
    eval_out: str = "runs/track/eval"  # the devkit's metrics_summary.json goes here
    # eval-track: "devkit" (the official figures) or "fixed": the devkit's filling of holes in
    # tracks with its time weights the right way round (bev_reid.track.evaluate)
    eval_interpolation: typing.Literal["devkit", "fixed"] = "devkit"
    picture: str = "runs/track/tracks.png"
    switches: str = ""  # CSV list of the identity switches; "": beside picture, NAME-switches.csv
    reid_checkpoint: str = ""  # a ReID checkpoint (file or folder), "none": motion alone, "oracle"
    lss_checkpoint: str = ""  # LSS checkpoint, when the embedding's crops hold camera channels
    device: str = "auto"  # auto, cpu, cuda or cuda:N (the BEV pass and the embedding)
    # make-detections: ground-truth boxes degraded by a seeded model (see bev_reid.track.degrade).
    det_seed: int = num(0, 0)
    det_miss_rate: float = num(0.5, 0, 1)  # share of objects that get occlusion gaps
    det_max_gap: int = num(3, 1)  # each gap hides an object for 1..det_max_gap keyframes
    det_noise_m: float = num(0.2, 0)  # std of the centre's x and y noise, metres (z gets half)
    det_size_noise: float = num(0.05, 0)  # std of the relative noise of width, length and height
    det_yaw_noise_deg: float = num(5.0, 0)  # std of the heading noise, degrees
    det_velocity_noise: float = num(0.5, 0)  # std of the velocity noise, m/s
    # the velocities written: noisy (as above), zero ([0, 0]) or none (null), as detectors that
    # estimate no velocity write them
    det_velocity: typing.Literal["noisy", "zero", "none"] = "noisy"
    # false positives per keyframe, per true box there (Poisson mean)
    det_fp_rate: float = num(0.05, 0)
    # chance that a detector misses an object at visibility 1 (0-40% visible in the cameras), at
    # each such keyframe, besides the gaps: misses that follow occlusion, as real detectors' do
    det_hidden_miss: float = num(0.0, 0, 1)
    # The tracker (see bev_reid.track.tracker).
    classes: tuple[str, ...] = TRACKING_CLASSES  # nuScenes tracking classes that are tracked
    min_score: float = num(0.0, 0)  # detections scored lower are dropped
    # A detection of nms_classes whose footprint overlaps a higher-scored one of its class by
    # more than this intersection over union is dropped (non-maximum suppression); 1: none.
    # Vehicles only: parked bicycles and walking people overlap for real (on the real scene,
    # bicycle AMOTA fell from 1.0 to 0.65 with them in) (docs/results-tracking.md, "Duplicates
    # and the matching's trade").
    nms_iou: float = num(0.1, 0, 1)
    nms_classes: tuple[str, ...] = ("bus", "car", "trailer", "truck")
    # centre distance beyond which a detection never matches a track, m
    gate_m: float = num(2.0, 0, above=True)
    # the gate widens by this much per keyframe a track is lost
    lost_gate_growth_m: float = num(1.0, 0)
    # ... on motion alone (no view on either side) in proportion to the track's speed, fully at
    # this speed or faster, m/s; 0: always fully (docs/results-tracking.md, "A parked car").
    # Stitching's gate follows it too ("A stitched parked car stood still").
    lost_gate_speed_mps: float = num(2.0, 0)
    # ... and where both sides have a view, at least this share of the growth for a parked track
    # (1: always fully, as before; 0: as on motion alone) (docs/results-tracking.md, "A parked
    # car's look")
    lost_gate_look_floor: float = num(0.25, 0, 1)
    # share of the cosine distance in the cost (0: motion alone); 0.45 (was 0.3) since the
    # matching by savings (docs/results-tracking.md, "The appearance settings re-tuned")
    appearance_weight: float = num(0.45, 0, 1)
    # With embeddings, a lost track takes a detection beyond gate_m only below this mixed cost:
    # a farther detection must look alike too (within gate_m, what motion alone would take).
    # 0.5 (was 0.7 at any distance): fewer neighbours re-identified by mistake
    # (docs/results-tracking.md, "The lost track's cap").
    max_lost_cost: float = num(0.5, 0)
    # A track whose box is longer than the embedding's crop (its side in metres, from the
    # checkpoint's recipe: 24 cells of 0.25 m span 6 m, a bus is 11-12 m long) has a look of
    # part of it, which may lower a pair's cost below motion alone's but never raise it: the
    # lesser of the two counts. false: every track's look counts in full
    # (docs/results-tracking.md, "A long vehicle's look").
    partial_look: bool = True
    # A lost track's cost of a detection adds this times how far their box sizes are apart (the
    # sum of |log ratio| of width, length and height), in both modes, scaled to the scene's size
    # noise (bev_reid.track.tracker.SIZE_REFERENCE); 0: off (docs/results-tracking.md,
    # "A lost track keeps its size").
    size_weight: float = num(1.0, 0)
    # Where a track is looked for: its centre predicted at its own velocity, moved by this share
    # of the change to the detection's velocity over the time since the track was last matched
    # (0.5: a constant acceleration between the two velocities; 0: the track's velocity alone).
    # The detection's velocity tells a parked car's lost track from a car driving past its spot
    # (docs/results-tracking.md, "The detection's velocity"). A detection without a velocity
    # (detection_velocity) moves nothing.
    velocity_blend: float = num(0.5, 0, 1)
    # The detector's velocities: auto uses them unless the file has none (every one null, NaN
    # or exactly [0, 0], as detectors without a velocity estimate write); ignore treats them all
    # as unknown; use takes them as written (zeros too). Without one, a new track's filter starts
    # at rest with a velocity std of max_speed_mps / 2, and its second detection may lie up to
    # max_speed_mps x the time away; the filter then has its velocity from the motion
    # (bev_reid.track.lifecycle; docs/results-tracking.md, "Detectors without velocities").
    detection_velocity: typing.Literal["auto", "use", "ignore"] = "auto"
    max_speed_mps: float = num(15.0, 0, above=True)
    walking_speed_mps: float = num(3.0, 0, above=True)  # ... for a pedestrian
    # ... and beyond gate_m only within this angle of its box's heading: a vehicle drives along
    # its length, the parked car beside it stands across (90: any way)
    max_heading_change_deg: float = num(30.0, 0, 90)
    # A lost track slower than this (its filter's speed, m/s) is looked for both where it would
    # have moved and, by a detection as slow, where it was last matched; the nearer of the two
    # counts. A parked car stays where it stood, and at such speeds a track's velocity is mostly
    # the detector's noise, which carries its prediction into the next parked car over a few
    # seconds hidden. A detection without a velocity may be slow. 0: off
    # (docs/results-tracking.md, "A slow track is looked for where it stood"). Stitching looks
    # for a slow track's successor there too.
    lost_still_speed_mps: float = num(1.0, 0)
    # The matching takes the pairs that save the most, counting a track and a detection left
    # apart at this cost (bev_reid.track.association.match): one good pair beats two poor ones
    # that would displace it. A large value (1e6): the most pairs first, then the least cost (as
    # before; every pair costs less than 1 + 2 x appearance_weight + the size term). On motion
    # alone a pair beyond 0.8 of its gate is never taken (docs/results-tracking.md,
    # "Duplicates and the matching's trade").
    max_pair_cost: float = num(0.8, 0, above=True)
    # a dormant track is re-identified only below this
    max_appearance_distance: float = num(0.5, 0, 2)
    max_age: int = num(6, 0)  # keyframes a track coasts unmatched before it dies
    # With embeddings, a lost track that has views sleeps until this many keyframes lost,
    # re-identified by appearance alone (bev_reid.track.lifecycle); 0 = no dormancy.
    reid_max_age: int = num(20, 0)
    # With embeddings, once a scene is tracked: a track that starts after another ended joins
    # it when their views look alike (bev_reid.track.stitch; offline: it needs the whole scene).
    stitch: bool = True
    # the largest cosine distance of joined views (0.4, was 0.3: "The appearance settings re-tuned")
    stitch_max_distance: float = num(0.4, 0, 2)
    # the widest gate between a track's end and the next's start, m (the gate is a lost
    # track's on motion alone: bev_reid.track.stitch)
    stitch_gate_m: float = num(10.0, 0, above=True)
    # the largest change of speed (m/s) from a track's end to the next one's start for them to
    # be joined: a vehicle hidden for a few seconds seldom changes its speed by much, another
    # vehicle that shows up there often does; 1e6: off. A track's speed at its start is the
    # detector's, or, without one, its filter's at its second report (docs/results-tracking.md,
    # "A stitched track keeps its speed")
    stitch_max_speed_change: float = num(3.0, 0)
    # Once a scene is tracked, the keyframes inside a track at which it was not reported get
    # boxes interpolated between those either side (bev_reid.track.gaps), in both modes; else
    # the devkit fills them with its own interpolation, which runs backwards in time. Like stitch
    # it needs the track's future: false (and stitch, merge_interleaved false) keeps it online.
    fill_gaps: bool = True
    # The path of a filled hole (and of merge_interleaved's guess): curve leaves the box before
    # it along its heading and reaches the box after it along its heading (a vehicle that turned
    # a corner while lost is put on the corner); line is the straight chord at a steady pace
    # (bev_reid.track.gaps.hole_centre).
    fill_path: Literal["curve", "line"] = "curve"
    # Once a scene is tracked, two tracks of one class that take turns on one object become one
    # (never reported at one keyframe, each one's box where the other, interpolated across its
    # hole, stands: footprints overlapping by more than nms_iou; bev_reid.track.gaps), in both
    # modes, before the filling; else each track's filled hole holds a box beside the other's.
    # Offline, like stitch.
    merge_interleaved: bool = True
    # ... and a track whose boxes all lie in one hole of another of its class joins it only
    # when each of its boxes overlaps the other's interpolated box by more than this (1: never;
    # a false positive beside a hidden or parked vehicle lands in such a hole a few metres off).
    merge_inside_iou: float = num(0.5, 0, 1)
    # A filled box is written only where the keyframe's LiDAR sweep has this many points in it,
    # grown by fill_margin_m a side (a hidden vehicle: the devkit fills the hole as it fills the
    # ground truth's; bev_reid.track.gaps); 0 fills every keyframe, and needs no LiDAR.
    fill_min_points: int = num(1, 0)
    fill_margin_m: float = num(0.5, 0)
    max_gate_m: float = num(8.0, 0, above=True)  # the widest the gate of a lost track grows, metres
    min_hits: int = num(1, 1)  # matched detections before a track is reported
    memory: int = num(8, 1)  # views in a track's appearance memory
    memory_mode: typing.Literal["mean", "nearest"] = "mean"  # distance to their mean or nearest
    # std of the constant-velocity model's acceleration, m/s^2
    accel_noise: float = num(2.0, 0, above=True)
    measurement_noise_m: float = num(0.3, 0, above=True)  # std of a detection's centre, metres
    # std of the initial velocity (the detection's, or 0), m/s
    velocity_std: float = num(3.0, 0, above=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.classes and set(self.classes) <= set(TRACKING_CLASSES)):
            raise ConfigError(
                f"track.classes must be a non-empty list of {', '.join(TRACKING_CLASSES)}; "
                f"got {list(self.classes)!r}"
            )
        if not set(self.nms_classes) <= set(TRACKING_CLASSES):
            raise ConfigError(
                f"track.nms_classes must be a list of {', '.join(TRACKING_CLASSES)}; "
                f"got {list(self.nms_classes)!r}"
            )


@dataclass(frozen=True)
class PandaSetConfig(_Section):
    """`bev-reid convert-pandaset`: PandaSet sequences to one nuScenes-format folder.

    Reading PandaSet unpickles its files (the dataset's own format): convert only data you trust.
    """

    SECTION = "pandaset"

    src: tuple[str, ...] = ()  # PandaSet sequence folders (holding lidar/, camera/, annotations/)
    out: str = "data/pandaset"  # the dataroot to write (samples/ and the version folder)
    version: str = "v1.0-pandaset"  # the version folder's name
    lidars: typing.Literal["pandar64", "pandargt", "both"] = "pandar64"  # 360 deg, forward, both
    frames: tuple[int, ...] = num((), 0)  # frame indices of every sequence; empty = all listed
    skip_incomplete: bool = False  # leave out (with a warning) frames with missing files
    # warn when a camera moves more than this against the LiDAR, m
    drift_warn_m: float = num(0.05, 0)
    drift_warn_deg: float = num(0.5, 0)  # ... or turns more than this, degrees

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.version or "/" in self.version or self.version.startswith("."):
            raise ConfigError(
                "pandaset.version must be a folder name such as v1.0-pandaset, "
                f"got {self.version!r}"
            )


@dataclass(frozen=True)
class Config:
    grid: GridConfig = field(default_factory=GridConfig)
    data: DataConfig = field(default_factory=DataConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    lss: LSSConfig = field(default_factory=LSSConfig)
    train_lss: TrainLSSConfig = field(default_factory=TrainLSSConfig)
    val_lss: ValLSSConfig = field(default_factory=ValLSSConfig)
    show: ShowConfig = field(default_factory=ShowConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    reid_run: ReIDRunConfig = field(default_factory=ReIDRunConfig)
    reid: ReIDModelConfig = field(default_factory=ReIDModelConfig)
    train_reid: TrainReIDConfig = field(default_factory=TrainReIDConfig)
    eval_reid: EvalReIDConfig = field(default_factory=EvalReIDConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    pandaset: PandaSetConfig = field(default_factory=PandaSetConfig)


# ---------------------------------------------------------------------------------------------
# Loading


def choices_of(tp: Any) -> tuple[Any, ...]:
    """The allowed values of a ``Literal[...]`` field type; () for any other type."""
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else ()


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Turns a YAML value into the annotated type, or raises ConfigError naming ``where``."""
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return _build(tp, value, where)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:  # checked with the section (_check_fields), as from Python
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is tuple:
        if isinstance(value, str) and args and args[-1] is Ellipsis:
            value = [v for v in value.split(",") if v]  # "a,b" on the command line
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if args and args[-1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{where} must have {len(args)} items, got {len(value)}: {value!r}")
        return tuple(
            _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:  # refused if not one with the section (_check_fields), as from Python
        if isinstance(value, str):  # an item of "0,1" on the command line
            try:
                value = int(value.strip())
            except ValueError:
                pass
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type[T], values: dict[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    names = _field_names(cls)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(f'{where}.{k}'.lstrip('.')) for k in unknown)}; "
            f"valid keys{' of ' + where if where else ''}: {', '.join(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}".lstrip(".")) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - schema mismatch is a programming error
        raise ConfigError(f"{where or 'config'}: {e}") from e


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Splits ``section.key=value`` and parses the value as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load_config(
    path: str | os.PathLike | None = None,
    overrides: typing.Iterable[str] | dict[str, Any] = (),
    cls: type[T] = Config,  # type: ignore[assignment]
) -> T:
    """Loads ``cls`` from an optional YAML file, then applies dotted overrides.

    Args:
        path: a YAML file whose top-level keys are sections of ``cls``; None for the defaults.
        overrides: ``["data.version=v1.0-mini", ...]`` or a ``{"data.version": ...}`` mapping;
            values of None are skipped, so unset command-line flags change nothing.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections")
        tree = loaded or {}
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    for key, value in items:
        if value is not None:
            _set_dotted(tree, key, value)
    return _build(cls, tree, "")


def config_from_dict(values: dict[str, Any], cls: type[T] = Config) -> T:  # type: ignore[assignment]
    """Rebuilds a config from :func:`to_dict`'s output (e.g. a checkpoint's sidecar)."""
    return _build(cls, values, "")


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML-safe data (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Writes the resolved config as YAML, atomically."""
    from bev_reid.engine.io import atomic_write_text

    return atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
