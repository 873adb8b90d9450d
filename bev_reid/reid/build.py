"""`bev-reid build-dataset`: one LSS pass per keyframe, every vehicle cropped from it.

The keyframes are cut into parts of ``build.part_size``. Each part is written atomically as
``parts/part_NNNNN.npy`` (its crops) then ``parts/part_NNNNN.json`` (its views; the marker
that the part is whole), so an interrupted run resumes by skipping finished parts, and
``--shard i/n`` runs take every n-th part. The merge keeps identities with enough views, numbers
them (training identities 0..T-1, then validation ones), and writes the dataset folder:
``crops.npy`` (memory-mappable [V, C, S, S] float16), ``views.jsonl`` and, last,
``object_data.json``. The merge reads parts in keyframe order, so sharded and single runs give
the same bytes.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nuscenes.utils.data_classes import Box
from pyquaternion import Quaternion
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from bev_reid import __version__
from bev_reid.config import BuildConfig, Config, DataConfig, GridConfig, parse_shard, to_dict
from bev_reid.data.keyframes import NuScenesKeyframes, collate
from bev_reid.data.lidar import COLOUR_CHANNELS, lidar_bev_rasters
from bev_reid.engine.distributed import pick_device
from bev_reid.engine.io import (
    DiskFullError,
    atomic_open,
    atomic_write_text,
    disk_full_message,
    is_disk_full,
    reserve_space,
    sweep_stale_tmp,
)
from bev_reid.reid.crops import box_ious, crop_boxes, lidar_box_channel_names, lidar_box_crops
from bev_reid.reid.dataset import (
    FORMAT_VERSION,
    LIDAR_CHANNELS,
    OBJECT_DATA,
    camera_channel_names,
)
from bev_reid.reid.texture import texture_channel_names, texture_crops
from bev_reid.track.degrade import MIN_SIZE_M, box_noise, rng_for

PARTS = "parts"


@dataclasses.dataclass
class Source:
    """What the builder reads: the keyframes, the grid, and the LSS model when cameras are used."""

    dataset: NuScenesKeyframes
    grid: GridConfig
    model: torch.nn.Module | None
    device: torch.device
    checkpoint: dict[str, Any] | None  # path, step and SHA-256 of the LSS checkpoint
    channels: list[str]


def open_source(cfg: Config) -> Source:
    bc = cfg.build
    device = pick_device(bc.device)
    data: DataConfig = cfg.data
    grid, model, ckpt_info, channels = cfg.grid, None, None, []
    if bc.checkpoint and not bc.camera_bev:
        print(
            f"build-dataset: the LSS checkpoint {bc.checkpoint!r} is not read: no crop holds "
            f"camera BEV features (modalities {list(bc.modalities)}, camera_crops "
            f"{list(bc.camera_crops)})",
            file=sys.stderr,
        )
    if bc.camera_bev:
        from bev_reid.engine.checkpoint import load_checkpoint
        from bev_reid.lss.model import lss_from_checkpoint

        if not bc.checkpoint:
            raise ValueError(
                "build-dataset with camera BEV features (build.camera_crops: bev) needs "
                "--checkpoint (an LSS checkpoint)"
            )
        ckpt = load_checkpoint(bc.checkpoint)  # read and verified once
        model, trained = lss_from_checkpoint(ckpt, device)
        ckpt_info = {"path": str(ckpt.path), "step": ckpt.step, "sha256": ckpt.sha256}
        grid = trained.grid
        # The model's image size and cameras; the data location of this command.
        data = dataclasses.replace(
            trained.data,
            dataroot=data.dataroot,
            version=data.version,
            scenes=data.scenes,
            num_workers=data.num_workers,
        )
        channels += camera_channel_names(trained.lss.bev_channels)
    if bc.camera_texture:
        channels += texture_channel_names(bc.texture_levels)
    if "lidar" in bc.modalities:
        channels += (
            lidar_box_channel_names(bc.lidar_bands, bc.lidar_colour)
            if bc.lidar_raster == "box"
            else [*LIDAR_CHANNELS, *(f"lidar_{c}" for c in COLOUR_CHANNELS if bc.lidar_colour)]
        )
    dataset = NuScenesKeyframes(
        data,
        grid,
        is_train=False,
        split=bc.split or None,
        images=model is not None,
        paint="lidar" in bc.modalities and bc.lidar_colour,
        texture=bc.camera_texture,
    )
    return Source(dataset, grid, model, device, ckpt_info, channels)


def box_cell(bc: BuildConfig, grid: GridConfig) -> float:
    """Metres per crop cell of the rasters cut in each box's frame (LiDAR box raster, camera
    texture): ``build.crop_cell``, else the grid's (square) cell."""
    if bc.crop_cell > 0:
        return bc.crop_cell
    if grid.xbound[2] != grid.ybound[2]:
        raise ValueError(
            f"the grid's cells are not square ({grid.xbound[2]} x {grid.ybound[2]} m): "
            "set build.crop_cell for the LiDAR box raster and the camera texture"
        )
    return grid.xbound[2]


def settings_fingerprint(cfg: Config, source: Source) -> str:
    """Everything that shapes the parts; a resumed run must match it."""
    keep = {
        k: v
        for k, v in to_dict(cfg.build).items()
        if k not in ("out", "shard", "device", "val_scenes", "val_fraction", "seed", "min_views")
    }
    if cfg.build.box_noise_copies:  # the noise model the copies are drawn from
        keep["noise"] = [getattr(cfg.track, k) for k in NOISE_KEYS]
    blob = json.dumps(
        {
            "build": keep,
            "grid": to_dict(source.grid),
            "checkpoint": source.checkpoint,
            "samples": [t for _, t in source.dataset.samples],
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


DROP_REASONS = ("visibility", "lidar_points", "iou", "empty")
NOISE_KEYS = ("det_noise_m", "det_size_noise", "det_yaw_noise_deg")  # track keys of the copies
DROPPED = "dropped.jsonl"  # the views dropped for an empty crop, one line each


def drop_summary(dropped: dict[str, int]) -> str:
    """'the visibility filter dropped 3, ...' for the counts of :func:`process_part`."""
    names = {"visibility": "the visibility filter", "lidar_points": "the LiDAR-points filter",
             "iou": "the IoU filter", "empty": "empty crops", "min_views": "min_views"}  # fmt: skip
    return ", ".join(f"{names[k]} dropped {dropped[k]}" for k in names if k in dropped)


def condition_of(conditions: list[str]) -> str:
    """One tag per view: rain wins over night, night over day."""
    return "rain" if "rain" in conditions else "night" if "night" in conditions else "day"


def cameras_seeing(box: dict, cams: list[Any], corners: np.ndarray) -> list[str]:
    """Channels whose image holds at least one of the box's corners (in front of the camera)."""
    seen = []
    for cam in cams:
        uv, depth = cam.project(corners)  # 8 x 2, 8
        uv = uv[depth > 0.1]
        if (
            (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
        ).any():
            seen.append(cam.channel)
    return seen


def box_corners(box: dict) -> np.ndarray:
    """[8, 3] ego-frame corners of a box dict (see AnnotatedBox.as_dict)."""
    return Box(box["center"], box["wlh"], Quaternion(box["rotation"])).corners().T


def bev_maps(
    model: torch.nn.Module | None,
    batch: dict[str, Any],
    bc: BuildConfig,
    grid: GridConfig,
    device: torch.device,
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """The one BEV pass of a keyframe: the maps crops are sampled from, and the predicted mask.

    Args:
        model: the LSS model (camera modality), or None.
        batch: a collated batch of one keyframe (:func:`bev_reid.data.keyframes.collate`).
    Returns:
        maps: [C_i, X, Y] each: the LSS BEV features, then (grid LiDAR raster) the LiDAR
        rasters; empty when no channel is sampled from a map. pred_mask: [X, Y] bool, the LSS
        vehicle mask, or None without a model.
    """
    maps, pred_mask = [], None
    if model is not None:
        keys = ("imgs", "rots", "trans", "intrins", "post_rots", "post_trans")
        out = model(*(batch[k].to(device) for k in keys))
        maps.append(out.bev[0].float())  # C x X x Y
        pred_mask = out.logits[0, 0] > 0
    colours = batch["lidar_rgb"][0] if "lidar_rgb" in batch else None  # P x 3, or None
    if "lidar" in bc.modalities and bc.lidar_raster != "box":
        maps.append(lidar_bev_rasters(batch["lidar"][0], grid, colours).to(device))  # C' x X x Y
    return maps, pred_mask


def noisy_boxes(boxes: list[dict], cfg: Config, copy: int) -> list[dict]:
    """The boxes moved, resized and turned by one draw each of the detections' noise
    (:func:`bev_reid.track.degrade.box_noise`), seeded by the annotation and the copy number."""
    out = []
    for b in boxes:
        offset, factors, turn = box_noise(cfg.track, rng_for(copy, f"box-noise:{b['token']}"))
        size = (max(MIN_SIZE_M, float(s * f)) for s, f in zip(b["wlh"], factors, strict=True))
        out.append(
            {
                **b,
                "center": [float(c + o) for c, o in zip(b["center"], offset, strict=True)],
                "wlh": list(size),
                "yaw": float(b["yaw"] + turn),
            }
        )
    return out


def box_geometry(boxes: list[dict], device: torch.device) -> dict[str, torch.Tensor]:
    """Box dicts (see AnnotatedBox.as_dict; ego frame) -> the tensors the crop functions take:
    ``center`` [K, 2], ``yaw``, ``length``, ``width``, ``bottom``, ``height`` [K], metres."""

    def tensor(values: list) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device)

    return {
        "center": tensor([b["center"][:2] for b in boxes]).reshape(-1, 2),
        "yaw": tensor([b["yaw"] for b in boxes]),
        "length": tensor([b["wlh"][1] for b in boxes]),
        "width": tensor([b["wlh"][0] for b in boxes]),
        "bottom": tensor([b["center"][2] - b["wlh"][2] / 2 for b in boxes]),
        "height": tensor([b["wlh"][2] for b in boxes]),
    }


def cut_crops(
    maps: list[torch.Tensor],
    batch: dict[str, Any],
    geometry: dict[str, torch.Tensor],
    bc: BuildConfig,
    grid: GridConfig,
    device: torch.device,
    occluders: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The crops [K, C, S, S] of the boxes ``geometry`` (:func:`box_geometry`) of one keyframe,
    channels in the order of the dataset's names: camera BEV features (sampled from the first
    of ``maps``, :func:`bev_maps`), camera texture, LiDAR (the grid raster, sampled from the
    last map, or the box raster), as ``bc`` says. ``occluders`` (:func:`box_geometry` of every
    box of the keyframe; None: the boxes ``geometry``) hide texture behind them when
    ``bc.texture_occlusion``."""
    size, align = bc.crop_size, bc.align_heading
    parts = []

    def sample(chosen: list[torch.Tensor]) -> None:
        if chosen:
            feature_map = torch.cat(chosen, 0)  # C x X x Y
            parts.append(
                crop_boxes(feature_map, geometry, grid, size, align, bc.zero_outside, bc.crop_cell)
            )

    bev = 1 if bc.camera_bev else 0
    sample(maps[:bev])
    if bc.camera_texture:
        parts.append(
            texture_crops(
                geometry,
                batch["cameras"][0],
                batch["paint_images"][0],
                size,
                box_cell(bc, grid),
                bc.texture_levels,
                align,
                bc.zero_outside,
                (geometry if occluders is None else occluders) if bc.texture_occlusion else None,
            )
        )
    sample(maps[bev:])
    if "lidar" in bc.modalities and bc.lidar_raster == "box":
        colours = batch["lidar_rgb"][0] if "lidar_rgb" in batch else None  # P x 3, or None
        points = batch["lidar"][0].to(device)
        cell, bands, margin = box_cell(bc, grid), bc.lidar_bands, bc.lidar_margin
        parts.append(
            lidar_box_crops(
                points, geometry, size, cell, bands, margin, align, bc.zero_outside, colours
            )
        )
    return torch.cat(parts, 1)  # K x C x S x S


@torch.no_grad()
def process_part(
    source: Source, cfg: Config, indices: list[int]
) -> tuple[np.ndarray, list[dict], dict[str, Any]]:
    """Crops [V, C, S, S] float16, view records, and filter counts of the keyframes ``indices``
    (``dropped``; its ``empty_views`` lists the annotation tokens of the empty crops)."""
    bc = cfg.build
    loader = DataLoader(
        Subset(source.dataset, indices),
        batch_size=1,
        collate_fn=collate,
        num_workers=source.dataset.cfg.num_workers,
    )
    crops, views = [], []
    # "boxes": boxes of the categories on the grid; then how many each filter dropped, in order.
    dropped: dict[str, Any] = dict.fromkeys(("boxes", *DROP_REASONS), 0)
    dropped["empty_views"] = []
    modality_of = [name.split("_", 1)[0] for name in source.channels]
    by_modality = [
        (m, [i for i, n in enumerate(modality_of) if n == m]) for m in sorted(set(modality_of))
    ]
    for batch in loader:
        maps, pred_mask = bev_maps(source.model, batch, bc, source.grid, source.device)
        token = batch["sample_token"][0]
        boxes = [b for b in batch["boxes"][0] if b["category"].startswith(tuple(bc.categories))]
        dropped["boxes"] += len(boxes)
        visible = [b for b in boxes if b["visibility"] >= bc.min_visibility]
        dropped["visibility"] += len(boxes) - len(visible)
        boxes = [b for b in visible if b["num_lidar_pts"] >= bc.min_lidar_points]
        dropped["lidar_points"] += len(visible) - len(boxes)
        if not boxes:
            continue
        geometry = box_geometry(boxes, source.device)
        ious = (
            box_ious(pred_mask, geometry, source.grid).tolist()
            if pred_mask is not None
            else [None] * len(boxes)
        )
        keep = [
            i for i, iou in enumerate(ious) if iou is None or bc.min_iou <= 0 or iou >= bc.min_iou
        ]
        dropped["iou"] += len(boxes) - len(keep)
        if not keep:
            continue
        cams = [source.dataset.db.camera(token, ch) for ch in source.dataset.cfg.cameras]
        conditions = list(batch["conditions"][0])
        seen = {i: cameras_seeing(boxes[i], cams, box_corners(boxes[i])) for i in keep}
        every = list(batch["boxes"][0])  # every box of the keyframe
        for copy in range(bc.box_noise_copies + 1):  # 0: the annotated boxes
            # A copy noises every box of the keyframe, as the detections the tracker reads.
            chosen, every_box = [boxes[i] for i in keep], None
            if copy:
                chosen = noisy_boxes(chosen, cfg, copy)
            if bc.camera_texture and bc.texture_occlusion:  # what hides camera texture
                every_box = box_geometry(
                    noisy_boxes(every, cfg, copy) if copy else every, source.device
                )
            geometry = box_geometry(chosen, source.device)
            crop = cut_crops(maps, batch, geometry, bc, source.grid, source.device, every_box)
            # A crop with nothing in it (a box past the raster, a box whose points all fell
            # outside it) teaches and tests nothing.
            full = crop.flatten(1).ne(0).any(1).tolist()
            if not copy:
                dropped["empty"] += len(keep) - sum(full)
                dropped["empty_views"] += [
                    boxes[i]["token"] for i, f in zip(keep, full, strict=True) if not f
                ]
            crop = crop[torch.tensor(full, dtype=torch.bool, device=crop.device)]
            if not crop.shape[0]:
                continue
            crops.append(crop.cpu().numpy().astype(np.float16))  # K x C x S x S
            # Per view, the modalities with nothing in them (a camera texture hidden behind a
            # parked row, a box no LiDAR return fell in): a run on that modality alone skips it.
            blank = {m: (~crop[:, idx].flatten(1).ne(0).any(1)).tolist() for m, idx in by_modality}
            for n, i in enumerate(i for i, f in zip(keep, full, strict=True) if f):
                b = boxes[i]
                views.append(
                    {
                        "instance_token": b["instance_token"],
                        "annotation_token": b["token"],
                        "sample_token": token,
                        "scene": batch["scene"][0],
                        "timestamp": int(batch["timestamp"][0]),
                        "category": b["category"],
                        "cameras": seen[i],
                        "iou": None if ious[i] is None else round(float(ious[i]), 4),
                        "lidar_points": int(b["num_lidar_pts"]),
                        "visibility": int(b["visibility"]),
                        "condition": condition_of(conditions),
                        "conditions": conditions,
                        "center": [round(float(v), 3) for v in b["center"]],
                        "wlh": [round(float(v), 3) for v in b["wlh"]],
                        "yaw": round(float(b["yaw"]), 4),
                        "empty_modalities": [m for m, empty in blank.items() if empty[n]],
                        "box_noise": copy,
                    }
                )
    channels = len(source.channels)
    array = (
        np.concatenate(crops)
        if crops
        else np.zeros((0, channels, bc.crop_size, bc.crop_size), np.float16)
    )
    return array, views, dropped


def part_paths(out: Path, k: int) -> tuple[Path, Path]:
    return out / PARTS / f"part_{k:05d}.npy", out / PARTS / f"part_{k:05d}.json"


def part_done(out: Path, k: int, fingerprint: str) -> bool:
    npy, meta = part_paths(out, k)
    if not (meta.exists() and npy.exists()):
        return False
    record = json.loads(meta.read_text())
    if record.get("fingerprint") != fingerprint:
        raise ValueError(
            f"{meta} was built with other settings (data, checkpoint, grid or filters); "
            f"use another --out, or delete {out / PARTS} to rebuild"
        )
    return True


def check_settings(out: Path, fingerprint: str) -> None:
    """Records the settings of the first run in ``parts/settings.json``; a later run or shard
    with other settings is refused, so parts of two configurations never mix."""
    record = out / PARTS / "settings.json"
    if record.exists():
        if json.loads(record.read_text()).get("fingerprint") != fingerprint:
            raise ValueError(
                f"{out} holds parts built with other settings (data, checkpoint, grid or filters); "
                f"use another --out, or delete {out / PARTS} to rebuild"
            )
    else:
        atomic_write_text(record, json.dumps({"fingerprint": fingerprint}))


def build_parts(cfg: Config, source: Source) -> list[int]:
    """Processes this shard's unfinished parts; returns the numbers of all parts."""
    out = Path(cfg.build.out)
    shard, shards = parse_shard(cfg.build.shard)
    n = len(source.dataset)
    size = max(1, cfg.build.part_size)
    parts = list(range((n + size - 1) // size))
    fingerprint = settings_fingerprint(cfg, source)
    check_settings(out, fingerprint)
    todo = [k for k in parts if k % shards == shard and not part_done(out, k, fingerprint)]
    total = sum(len(range(k * size, min(n, (k + 1) * size))) for k in todo)
    bar = tqdm(total=total, desc=f"build-dataset shard {shard}/{shards}", unit="keyframe")
    start = time.perf_counter()
    for k in todo:
        indices = list(range(k * size, min(n, (k + 1) * size)))
        crops, views, dropped = process_part(source, cfg, indices)
        npy, meta = part_paths(out, k)
        with atomic_open(npy, "wb") as f:
            np.save(f, crops)
        record = {
            "fingerprint": fingerprint,
            "keyframes": len(indices),
            "dropped": dropped,
            "views": views,
        }
        atomic_write_text(meta, json.dumps(record))
        bar.update(len(indices))
        bar.set_postfix(keyframes_per_s=f"{bar.n / max(time.perf_counter() - start, 1e-9):.2f}")
    bar.close()
    return parts


def split_identities(tokens: list[str], scene_of: dict[str, str], bc: BuildConfig) -> set[str]:
    """The validation identities: those of ``val_scenes``, else a seeded ``val_fraction``."""
    if bc.val_scenes:
        return {t for t in tokens if scene_of[t] in set(bc.val_scenes)}
    count = int(round(bc.val_fraction * len(tokens)))
    if bc.val_fraction > 0 and len(tokens) >= 2:
        count = max(1, count)
    order = np.random.default_rng(bc.seed).permutation(len(tokens))
    return {tokens[i] for i in order[:count]}


def merge_parts(cfg: Config, source: Source, parts: list[int]) -> Path:
    """Writes the dataset folder from all parts (see the module doc)."""
    bc = cfg.build
    out = Path(bc.out)
    fingerprint = settings_fingerprint(cfg, source)
    missing = [k for k in parts if not part_done(out, k, fingerprint)]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(parts)} parts are not built yet ({missing[:8]}...): "
            "run the missing shards first"
        )
    views, offsets, empty_views = [], [], []
    dropped = dict.fromkeys(("boxes", *DROP_REASONS), 0)
    for k in parts:
        record = json.loads(part_paths(out, k)[1].read_text())
        offsets.append(len(views))
        views.extend(record["views"])
        for key in dropped:
            dropped[key] += record["dropped"].get(key, 0)
        empty_views += record["dropped"].get("empty_views", [])
    # Identities: order of first appearance (keyframe order), kept when seen often enough.
    counts: dict[str, int] = {}
    for v in views:
        if not v.get("box_noise", 0):  # views of the annotated boxes; noisy copies follow them
            counts[v["instance_token"]] = counts.get(v["instance_token"], 0) + 1
    tokens = [t for t in counts if counts[t] >= bc.min_views]
    dropped["min_views"] = sum(n for t, n in counts.items() if n < bc.min_views)
    if not tokens:
        raise ValueError(
            f"no identity has {bc.min_views} views or more: of {dropped['boxes']} boxes of "
            f"{list(bc.categories)} in the grid, {drop_summary(dropped)}, leaving "
            f"{len(views)} views of {len(counts)} instances. A weak LSS checkpoint predicts few "
            "vehicles: train it longer or lower --min-iou (0 turns the filter off)"
        )
    scene_of = {v["instance_token"]: v["scene"] for v in views}
    category_of = {v["instance_token"]: v["category"] for v in views}
    val = split_identities(tokens, scene_of, bc)
    ordered = [t for t in tokens if t not in val] + [t for t in tokens if t in val]
    ids = {t: i for i, t in enumerate(ordered)}
    # Validation is measured on the annotated boxes: its noisy copies are left out.
    kept = [
        i
        for i, v in enumerate(views)
        if v["instance_token"] in ids and not (v["instance_token"] in val and v.get("box_noise"))
    ]

    crops_path = out / "crops.npy"
    shape = (len(kept), len(source.channels), bc.crop_size, bc.crop_size)
    tmp = out / f".crops.npy.{os.getpid()}.merge.tmp"  # swept if this process is killed
    try:
        target = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
        # a full disk: an error now, not a SIGBUS at the first write into the map
        reserve_space(tmp, tmp.stat().st_size, target=crops_path)
    except OSError as e:
        full = not isinstance(e, DiskFullError) and is_disk_full(e, out)
        tmp.unlink(missing_ok=True)
        if full:  # numpy's header or last byte did not fit: name the file it was for
            raise DiskFullError(errno.ENOSPC, disk_full_message(crops_path)) from e
        raise
    row = 0
    for k, offset in zip(parts, offsets, strict=True):
        part = np.load(part_paths(out, k)[0], mmap_mode="r")
        local = [i - offset for i in kept if offset <= i < offset + part.shape[0]]
        if local:
            target[row : row + len(local)] = part[local]
            row += len(local)
    target.flush()
    del target
    tmp.replace(crops_path)

    lines = []
    for index, i in enumerate(kept):
        v = dict(views[i])
        v = {
            "index": index,
            "id": ids[v["instance_token"]],
            "split": "val" if v["instance_token"] in val else "train",
            **v,
        }
        lines.append(json.dumps(v, sort_keys=False))
    atomic_write_text(out / "views.jsonl", "\n".join(lines) + ("\n" if lines else ""))
    atomic_write_text(out / DROPPED, "".join(json.dumps({"annotation_token": t, "reason": "empty"})
                                             + "\n" for t in empty_views))  # fmt: skip
    identities = [
        {
            "id": ids[t],
            "instance_token": t,
            "category": category_of[t],
            "scene": scene_of[t],
            "num_views": counts[t],
            "split": "val" if t in val else "train",
        }
        for t in ordered
    ]
    object_data = {
        "format_version": FORMAT_VERSION,
        "created_by": f"bev-reid {__version__}",
        "grid": to_dict(source.grid),
        "crop": {
            "size": bc.crop_size,
            "cell_m": [bc.crop_cell] * 2
            if bc.crop_cell > 0
            else [source.grid.xbound[2], source.grid.ybound[2]],
            "lidar_raster": bc.lidar_raster if "lidar" in bc.modalities else None,
            "lidar_colour": bc.lidar_colour and "lidar" in bc.modalities,
            "lidar_bands": list(bc.lidar_bands),
            "lidar_margin": bc.lidar_margin,
            "camera_crops": list(bc.camera_crops) if "camera" in bc.modalities else None,
            "texture_levels": bc.texture_levels,
            "texture_occlusion": bc.texture_occlusion,
            "align_heading": bc.align_heading,
            "zero_outside": bc.zero_outside,
        },
        "modalities": list(bc.modalities),
        "channels": source.channels,
        "lss_checkpoint": source.checkpoint,
        "filters": {
            "categories": list(bc.categories),
            "min_iou": bc.min_iou,
            "min_visibility": bc.min_visibility,
            "min_lidar_points": bc.min_lidar_points,
            "min_views": bc.min_views,
        },
        "split": {
            "val_scenes": list(bc.val_scenes),
            "val_fraction": bc.val_fraction,
            "seed": bc.seed,
        },
        # Noisy copies of the training views (build.box_noise_copies) and the noise drawn.
        "box_noise": {
            "copies": bc.box_noise_copies,
            **({k: getattr(cfg.track, k) for k in NOISE_KEYS} if bc.box_noise_copies else {}),
        },
        "num_identities": len(ordered),
        "num_train_identities": len(ordered) - len(val),
        "num_val_identities": len(val),
        "num_views": len(kept),
        # Boxes of the categories on the grid, and the views each filter dropped.
        "dropped": dropped,
        "identities": identities,
    }
    return atomic_write_text(out / OBJECT_DATA, json.dumps(object_data, indent=1))


def build_dataset(cfg: Config, merge_only: bool = False) -> Path | None:
    """Builds (this shard of) the dataset; merges when the run covers every part.

    Returns the path of object_data.json, or None for a shard run (merge with ``--merge``).
    """
    source = open_source(cfg)
    out = Path(cfg.build.out)
    out.mkdir(parents=True, exist_ok=True)
    size = max(1, cfg.build.part_size)
    parts = list(range((len(source.dataset) + size - 1) // size))
    if not merge_only:
        # Refuse other settings before unpublishing the finished dataset (if any).
        check_settings(out, settings_fingerprint(cfg, source))
        for folder in (out, out / PARTS):
            sweep_stale_tmp(folder)
        (out / OBJECT_DATA).unlink(missing_ok=True)  # the dataset is being rebuilt
        parts = build_parts(cfg, source)
        if cfg.build.shard and parse_shard(cfg.build.shard)[1] > 1:
            return None
    return merge_parts(cfg, source, parts)
