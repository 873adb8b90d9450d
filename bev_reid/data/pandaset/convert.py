"""PandaSet sequences -> one nuScenes-format folder (`bev-reid convert-pandaset`).

``convert_pandaset`` writes ``<out>/samples/LIDAR_TOP/*.pcd.bin`` (points in the LiDAR frame, five
float32 per point: x, y, z, intensity 0-255, and PandaSet's LiDAR id ``d`` where nuScenes has the
ring index), ``<out>/samples/CAM_*/*.jpg`` (PandaSet's JPEGs, copied byte for byte, 1920 x 1080)
and ``<out>/<version>/`` with the 13 tables and ``pandaset_meta.json`` (what the tables cannot
say: sources, frames left out, extrinsic drift, duplicates dropped, labels left out).

One scene per sequence, one sample (keyframe) per frame. The tables are written into a hidden
``.<version>.partial`` folder that is renamed to ``<version>`` last: an interrupted conversion
leaves no version folder, so nothing takes it for a whole dataset; the sample files are each
written atomically and a re-run rewrites them to the same bytes.

Reading PandaSet unpickles its files (its own format): only convert data you trust.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from bev_reid.config import ConfigError, PandaSetConfig, to_dict
from bev_reid.data.cuboids import count_points_in_boxes
from bev_reid.data.nuscenes_format import (
    SENSORS,
    attribute_table,
    chain,
    sensor_table,
    visibility_table,
    write_tables,
)
from bev_reid.data.pandaset import tables as T
from bev_reid.data.pandaset.conventions import CAMERAS, LIDAR_CHANNEL, LIDARS, SENSOR_TO_EGO, micros
from bev_reid.data.pandaset.cuboids import select_cuboids
from bev_reid.data.pandaset.geometry import View, fov_share, static_extrinsic
from bev_reid.data.pandaset.read import PandaSetFileError, PandaSetFormatError, Pose, Sequence
from bev_reid.engine.io import atomic_open, atomic_write_bytes, atomic_write_text

META_FILE = "pandaset_meta.json"
META_FORMAT = "bev-reid-pandaset/1"
EGO_FROM_SENSOR = Pose(SENSOR_TO_EGO, np.zeros(3))  # LiDAR pose frame -> ego frame


class PandaSetOutputError(ValueError):
    """The output folder already holds the version folder this conversion would write."""


@dataclass
class SequenceReport:
    """What one sequence gave (and the JSON-safe form written to pandaset_meta.json)."""

    name: str
    source: str
    frames: list[int] = field(default_factory=list)
    skipped: dict[int, list[str]] = field(default_factory=dict)  # frame -> missing files
    annotations: int = 0
    instances: int = 0
    duplicates_dropped: int = 0
    left_out: dict[str, int] = field(default_factory=dict)  # label -> cuboids
    unknown_labels: list[str] = field(default_factory=list)
    drift: dict[str, dict[str, float]] = field(default_factory=dict)  # channel -> m, deg


@dataclass
class ConversionSummary:
    root: Path
    version: str
    sequences: list[SequenceReport]
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """The summary the command prints."""
        out = []
        for r in self.sequences:
            worst = max(r.drift.items(), key=lambda kv: kv[1]["m"])
            out.append(
                f"{T.scene_name(r.name)}: {len(r.frames)} frames, {r.annotations} annotations of "
                f"{r.instances} instances; {len(r.skipped)} frames left out (missing files); "
                f"{r.duplicates_dropped} overlap duplicates dropped; "
                f"{sum(r.left_out.values())} cuboids without a nuScenes class left out; camera "
                f"extrinsics move at most {worst[1]['m'] * 100:.1f} cm / "
                f"{max(d['deg'] for d in r.drift.values()):.2f} deg ({worst[0]})"
            )
        return out


def check_output(root: Path, version: str) -> Path:
    """The partial folder to write the tables into; refuses an existing version folder."""
    if root.exists() and not root.is_dir():
        raise PandaSetOutputError(f"pandaset.out {str(root)!r} exists and is not a folder")
    if (root / version).exists():
        raise PandaSetOutputError(
            f"{str(root / version)!r} already exists: delete it, or choose another pandaset.out "
            "or pandaset.version"
        )
    partial = root / f".{version}.partial"
    if partial.exists():  # left by an interrupted run
        shutil.rmtree(partial)
    return partial


def copy_file(src: Path, dst: Path) -> None:
    """Copies ``src`` to ``dst`` atomically (a temporary sibling renamed into place)."""
    with open(src, "rb") as fin, atomic_open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def _frames(seq: Sequence, cfg: PandaSetConfig) -> list[int]:
    frames = list(cfg.frames) if cfg.frames else list(range(seq.num_frames))
    bad = [k for k in frames if not 0 <= k < seq.num_frames]
    if bad:
        raise ConfigError(
            f"pandaset.frames {bad} are not frames of {seq.path} (it lists 0-{seq.num_frames - 1})"
        )
    return sorted(set(frames))


def _complete_frames(
    seq: Sequence, cfg: PandaSetConfig, report: SequenceReport, warn: Callable[[str], None]
) -> list[int]:
    frames = []
    for k in _frames(seq, cfg):
        missing = seq.missing_files(k)
        if not missing:
            frames.append(k)
            continue
        names = [str(p.relative_to(seq.path)) for p in missing]
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        if not cfg.skip_incomplete:
            raise PandaSetFileError(
                f"frame {k:02d} of PandaSet sequence {str(seq.path)!r} misses {missing[0]}{more} "
                "(pass --skip-incomplete to leave such frames out)"
            )
        report.skipped[k] = names
        warn(f"{T.scene_name(seq.name)}: frame {k:02d} left out: {names[0]} is missing{more}")
    if not frames:
        raise PandaSetFileError(f"PandaSet sequence {str(seq.path)!r} has no complete frame")
    return frames


def calibrate(
    seq: Sequence, report: SequenceReport, cfg: PandaSetConfig, warn: Callable[[str], None]
) -> dict[str, Pose]:
    """channel -> sensor -> ego calibration: LiDAR fixed, cameras from the drive's poses."""
    calibration = {LIDAR_CHANNEL: EGO_FROM_SENSOR}
    for folder, cam in seq.cameras.items():
        ext = static_extrinsic(seq.lidar_poses, seq.lidar_times, cam.poses, cam.times)
        channel = CAMERAS[folder]
        calibration[channel] = EGO_FROM_SENSOR * ext.pose
        report.drift[channel] = {"m": ext.drift_m, "deg": ext.drift_deg}
        if ext.drift_m > cfg.drift_warn_m or ext.drift_deg > cfg.drift_warn_deg:
            warn(
                f"{T.scene_name(seq.name)}: {folder} moves {ext.drift_m * 100:.1f} cm / "
                f"{ext.drift_deg:.2f} deg against the LiDAR over the drive (more than "
                "pandaset.drift_warn_m / drift_warn_deg); its calibration is the mean"
            )
    return calibration


def write_lidar(
    seq: Sequence, frame: int, root: Path, lidars: str
) -> tuple[dict, dict, np.ndarray]:
    """Writes a frame's sweep in the LiDAR frame; returns (sample_data, ego_pose, world xyz)."""
    ts = micros(seq.lidar_times[frame])
    pose = seq.lidar_poses[frame]
    sweep = seq.lidar(frame)
    keep = np.isin(sweep.sensor, LIDARS[lidars])
    xyz = sweep.xyz[keep]  # P x 3, world
    points = np.column_stack([pose.inverse.apply(xyz), sweep.intensity[keep], sweep.sensor[keep]])
    name = f"samples/{LIDAR_CHANNEL}/{T.scene_name(seq.name)}__{LIDAR_CHANNEL}__{ts}.pcd.bin"
    atomic_write_bytes(root / name, points.astype(np.float32).tobytes())
    sd = T.sample_data_record(seq.name, frame, LIDAR_CHANNEL, ts, name, None)
    return sd, T.ego_pose_record(sd["token"], ts, pose * EGO_FROM_SENSOR.inverse), xyz


def write_images(
    seq: Sequence, frame: int, root: Path, calibration: dict[str, Pose]
) -> tuple[list[dict], list[dict], list[View]]:
    """Copies a frame's six JPEGs; returns their sample_data, ego poses and views."""
    sds, poses, views = [], [], []
    for folder, cam in seq.cameras.items():
        channel = CAMERAS[folder]
        ts = micros(cam.times[frame])
        src = seq.image_path(folder, frame)
        with Image.open(src) as img:
            size = img.size
        name = f"samples/{channel}/{T.scene_name(seq.name)}__{channel}__{ts}.jpg"
        copy_file(src, root / name)
        sds.append(T.sample_data_record(seq.name, frame, channel, ts, name, size))
        # The ego pose at the camera's time that, with the static calibration, gives back
        # PandaSet's own camera pose exactly.
        ego = cam.poses[frame] * calibration[channel].inverse
        poses.append(T.ego_pose_record(sds[-1]["token"], ts, ego))
        views.append(View(cam.poses[frame], cam.intrinsics, *size))
    return sds, poses, views


def convert_sequence(
    seq: Sequence,
    root: Path,
    cfg: PandaSetConfig,
    report: SequenceReport,
    tick: Callable[[], object],
    warn: Callable[[str], None],
) -> dict[str, list[dict]]:
    """Writes the sample files of ``report.frames``; returns the sequence's table records."""
    name = seq.name
    calibration = calibrate(seq, report, cfg, warn)
    intrinsics = {CAMERAS[folder]: cam.intrinsics for folder, cam in seq.cameras.items()}
    records: dict[str, list[dict]] = {
        "log": [T.log_record(name, float(seq.lidar_times[report.frames[0]]))],
        "calibrated_sensor": [
            T.calibrated_sensor_record(name, ch, SENSORS[ch][0], pose, intrinsics.get(ch))
            for ch, pose in calibration.items()
        ],
        "sample": [],
        "ego_pose": [],
    }
    selection = select_cuboids({k: seq.cuboids(k) for k in report.frames}, cfg.lidars)
    report.duplicates_dropped = selection.duplicates_dropped
    report.left_out = dict(sorted(selection.left_out.items()))
    report.unknown_labels = sorted(selection.unknown_labels)
    for label in report.unknown_labels:
        warn(f"{T.scene_name(name)}: label {label!r} is not in the category table; left out")

    per_channel: dict[str, list[dict]] = {ch: [] for ch in calibration}
    annotations: dict[str, list[dict]] = {}  # instance token -> its annotations in time order
    categories: dict[str, list[str]] = {}
    for k in report.frames:
        sd, ego, xyz = write_lidar(seq, k, root, cfg.lidars)
        records["sample"].append(T.sample_record(name, k, sd["timestamp"]))
        sds, egos, views = write_images(seq, k, root, calibration)
        per_channel[LIDAR_CHANNEL].append(sd)
        for folder, record in zip(seq.cameras, sds, strict=True):
            per_channel[CAMERAS[folder]].append(record)
        records["ego_pose"] += [ego, *egos]
        cuboids = selection.frames[k]
        center = cuboids[["position.x", "position.y", "position.z"]].to_numpy(np.float64)
        dims = cuboids[["dimensions.x", "dimensions.y", "dimensions.z"]].to_numpy(np.float64)
        yaw = cuboids["yaw"].to_numpy(np.float64)
        counts = count_points_in_boxes(xyz, center, dims, yaw)
        share = fov_share(center, dims, yaw, views)
        anns = T.annotation_records(name, k, cuboids, counts, share)
        for ann, category in zip(anns, cuboids["category"], strict=True):
            annotations.setdefault(ann["instance_token"], []).append(ann)
            categories.setdefault(ann["instance_token"], []).append(category)
        tick()

    chain(records["sample"])
    for sds in [*per_channel.values(), *annotations.values()]:
        chain(sds)
    records["sample_data"] = [sd for sds in per_channel.values() for sd in sds]
    records["sample_annotation"] = [a for anns in annotations.values() for a in anns]
    records["instance"] = T.instance_records(records["sample_annotation"], categories)
    records["scene"] = [T.scene_record(name, records["sample"])]
    report.annotations = len(records["sample_annotation"])
    report.instances = len(records["instance"])
    return records


def check_instances(tables: dict[str, list[dict]], records: dict[str, list[dict]], name: str):
    """Refuses a sequence whose instance tokens (uuids) another sequence already used."""
    seen = {i["token"] for i in tables.get("instance", [])}
    clash = [i["token"] for i in records["instance"] if i["token"] in seen]
    if clash:
        raise PandaSetFormatError(
            f"sequence {name} reuses {len(clash)} cuboid uuid(s) of an earlier sequence (e.g. "
            f"{clash[0]}): uuids must be unique across the sequences of one output folder"
        )


def convert_pandaset(
    cfg: PandaSetConfig, progress: bool = True, warn: Callable[[str], None] | None = None
) -> ConversionSummary:
    """Converts ``cfg.src`` (PandaSet sequence folders) into ``cfg.out`` (see the module doc).

    Args:
        cfg: sources, output, version folder name, LiDARs kept, frames, ``skip_incomplete``.
        progress: a tqdm bar over frames.
        warn: called with each warning (a frame left out, a moving camera, an unknown label);
            by default they are printed to stderr.

    Raises:
        ConfigError: no sources, two sources with the same folder name, frames out of range.
        PandaSetFileError: a missing file (a frame's, unless ``skip_incomplete``), named.
        PandaSetFormatError: a file that does not parse or lacks a column, named; a cuboid
            uuid found in two sequences.
        PandaSetOutputError: ``<out>/<version>`` exists already.
    """
    start = time.perf_counter()
    if warn is None:

        def warn(message: str) -> None:
            print(f"warning: {message}", file=sys.stderr)

    if not cfg.src:
        raise ConfigError("pandaset.src is empty: give one or more PandaSet sequence folders")
    sequences = [Sequence(p) for p in cfg.src]
    names = [s.name for s in sequences]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"pandaset.src names sequence(s) {', '.join(twice)} more than once")
    root = Path(cfg.out)
    partial = check_output(root, cfg.version)
    reports = []
    for seq in sequences:  # every missing file is found before anything is written
        reports.append(SequenceReport(seq.name, str(seq.path)))
        reports[-1].frames = _complete_frames(seq, cfg, reports[-1], warn)
    total = sum(len(r.frames) for r in reports)
    bar = tqdm(total=total, desc="convert-pandaset", unit="frame", disable=not progress)
    tables: dict[str, list[dict]] = {
        "category": T.category_table(),
        "attribute": attribute_table(),
        "visibility": visibility_table(),
        "sensor": sensor_table((LIDAR_CHANNEL, *CAMERAS.values())),
    }
    for seq, report in zip(sequences, reports, strict=True):
        records = convert_sequence(seq, root, cfg, report, lambda: bar.update(1), warn)
        check_instances(tables, records, seq.name)
        for table, rows in records.items():
            tables.setdefault(table, []).extend(rows)
    bar.close()
    tables["map"] = T.map_table([log["token"] for log in tables["log"]])
    write_tables(partial, tables)
    meta = {
        "format": META_FORMAT,
        "config": {k: v for k, v in to_dict(cfg).items() if k != "out"},
        "sequences": [
            vars(r) | {"skipped": {f"{k:02d}": v for k, v in r.skipped.items()}} for r in reports
        ],
    }
    atomic_write_text(partial / META_FILE, json.dumps(meta, indent=1))
    os.replace(partial, root / cfg.version)  # last: the version folder appears whole
    return ConversionSummary(root, cfg.version, reports, time.perf_counter() - start)
