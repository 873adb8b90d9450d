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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from bev_reid.config import ConfigError, PandaSetConfig, to_dict
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
from bev_reid.data.pandaset.geometry import View, count_points_in_boxes, fov_share, static_extrinsic
from bev_reid.data.pandaset.read import PandaSetFileError, Pose, Sequence
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


def convert_sequence(
    seq: Sequence,
    root: Path,
    cfg: PandaSetConfig,
    report: SequenceReport,
    tick: Callable[[], object],
    warn: Callable[[str], None],
) -> dict[str, list[dict]]:
    """Writes the sample files of ``report.frames``; returns the sequence's table records."""
    frames = report.frames
    name = seq.name
    records: dict[str, list[dict]] = {t: [] for t in ("calibrated_sensor", "sample", "ego_pose")}
    records["log"] = [T.log_record(name, float(seq.lidar_times[frames[0]]))]

    # Calibrations: LiDAR -> ego fixed; camera -> ego from the drive's poses (static_extrinsic).
    cam_to_ego: dict[str, Pose] = {}
    for folder, cam in seq.cameras.items():
        ext = static_extrinsic(seq.lidar_poses, seq.lidar_times, cam.poses, cam.times)
        channel = CAMERAS[folder]
        cam_to_ego[channel] = EGO_FROM_SENSOR * ext.pose
        report.drift[channel] = {"m": ext.drift_m, "deg": ext.drift_deg}
        if ext.drift_m > cfg.drift_warn_m or ext.drift_deg > cfg.drift_warn_deg:
            warn(
                f"{T.scene_name(name)}: {folder} moves {ext.drift_m * 100:.1f} cm / "
                f"{ext.drift_deg:.2f} deg against the LiDAR over the drive (more than "
                "pandaset.drift_warn_m / drift_warn_deg); its calibration is the mean"
            )
    records["calibrated_sensor"].append(
        T.calibrated_sensor_record(
            name, LIDAR_CHANNEL, SENSORS[LIDAR_CHANNEL][0], EGO_FROM_SENSOR, None
        )
    )
    for folder, cam in seq.cameras.items():
        channel = CAMERAS[folder]
        records["calibrated_sensor"].append(
            T.calibrated_sensor_record(
                name, channel, SENSORS[channel][0], cam_to_ego[channel], cam.intrinsics
            )
        )

    selection = select_cuboids({k: seq.cuboids(k) for k in frames}, cfg.lidars)
    report.duplicates_dropped = selection.duplicates_dropped
    report.left_out = dict(sorted(selection.left_out.items()))
    report.unknown_labels = sorted(selection.unknown_labels)
    for label in report.unknown_labels:
        warn(f"{T.scene_name(name)}: label {label!r} is not in the category table; left out")

    per_channel: dict[str, list[dict]] = {ch: [] for ch in (LIDAR_CHANNEL, *cam_to_ego)}
    annotations: dict[str, list[dict]] = {}
    categories: dict[str, list[str]] = {}
    for k in frames:
        ts = micros(seq.lidar_times[k])
        records["sample"].append(T.sample_record(name, k, ts))
        lidar_pose = seq.lidar_poses[k]
        sweep = seq.lidar(k)
        keep = np.isin(sweep.sensor, LIDARS[cfg.lidars])
        xyz = sweep.xyz[keep]
        local = lidar_pose.inverse.apply(xyz)  # world -> LiDAR pose frame
        points = np.column_stack([local, sweep.intensity[keep], sweep.sensor[keep]])
        filename = f"samples/{LIDAR_CHANNEL}/{T.scene_name(name)}__{LIDAR_CHANNEL}__{ts}.pcd.bin"
        atomic_write_bytes(root / filename, points.astype(np.float32).tobytes())
        sd = T.sample_data_record(name, k, LIDAR_CHANNEL, ts, filename, None)
        per_channel[LIDAR_CHANNEL].append(sd)
        records["ego_pose"].append(
            T.ego_pose_record(sd["token"], ts, lidar_pose * EGO_FROM_SENSOR.inverse)
        )

        views = []
        for folder, cam in seq.cameras.items():
            channel = CAMERAS[folder]
            cts = micros(cam.times[k])
            src = seq.image_path(folder, k)
            with Image.open(src) as img:
                size = img.size
            filename = f"samples/{channel}/{T.scene_name(name)}__{channel}__{cts}.jpg"
            copy_file(src, root / filename)
            sd = T.sample_data_record(name, k, channel, cts, filename, size)
            per_channel[channel].append(sd)
            # The ego pose at the camera's time that, with the static calibration, gives back
            # PandaSet's own camera pose exactly.
            ego = cam.poses[k] * cam_to_ego[channel].inverse
            records["ego_pose"].append(T.ego_pose_record(sd["token"], cts, ego))
            views.append(View(cam.poses[k], cam.intrinsics, *size))

        cuboids = selection.frames[k]
        center = cuboids[["position.x", "position.y", "position.z"]].to_numpy(np.float64)
        dims = cuboids[["dimensions.x", "dimensions.y", "dimensions.z"]].to_numpy(np.float64)
        yaw = cuboids["yaw"].to_numpy(np.float64)
        counts = count_points_in_boxes(xyz, center, dims, yaw)
        share = fov_share(center, dims, yaw, views)
        for ann, category in zip(
            T.annotation_records(name, k, cuboids, counts, share), cuboids["category"], strict=True
        ):
            annotations.setdefault(ann["instance_token"], []).append(ann)
            categories.setdefault(ann["instance_token"], []).append(category)
        tick()

    chain(records["sample"])
    records["sample_data"] = []
    for sds in per_channel.values():
        chain(sds)
        records["sample_data"] += sds
    records["sample_annotation"] = []
    for anns in annotations.values():
        chain(anns)
        records["sample_annotation"] += anns
    records["instance"] = T.instance_records(records["sample_annotation"], categories)
    records["scene"] = [T.scene_record(name, records["sample"])]
    report.annotations = len(records["sample_annotation"])
    report.instances = len(records["instance"])
    return records


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
        PandaSetFormatError: a file that does not parse or lacks a column, named.
        PandaSetOutputError: ``<out>/<version>`` exists already.
    """
    import sys
    import time

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
