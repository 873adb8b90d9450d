"""An offline synthetic world in the nuScenes format (`bev-reid synth`).

``generate_world`` writes ``<out>/<version>/`` with the 13 nuScenes tables, the camera JPEGs under
``<out>/samples/CAM_*`` and the LiDAR sweeps under ``<out>/samples/LIDAR_TOP`` (keyframes only, as
the real sample: no sweeps, no radar); the devkit's ``NuScenes(version, dataroot=out)`` loads it
unchanged. The map records have no mask image, like the real sample's, so the devkit's map
underlays (``render_sample_data`` of LIDAR_TOP with its default ``underlay_map=True``) do not work.

Next to the tables, ``synth_meta.json`` holds what the tables cannot (nuScenes ignores it):
``config`` (the settings that made the dataset), ``scenes`` (token, name, condition day / night /
rain, layout, location) and ``instances``: per instance token its ``scene``, ``agent`` (index in
`build_scene`'s agent list), ``category``, ``colour`` / ``rgb``, ``pattern``, ``secondary`` /
``secondary_rgb``, ``size`` (w, l, h as annotated) and ``motion``.

Same config and seed, same bytes, for any number of worker processes: every token is a hash of
the seed and a name, tables are written with a fixed key order, images and sweeps depend only on
generators seeded per scene and keyframe. Scenes render in ``cfg.workers`` spawned processes, so a
script that calls `generate_world` needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import functools
import json
import math
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from bev_reid.config import SynthConfig, to_dict
from bev_reid.data.nuscenes_format import (  # noqa: F401 (TABLE_NAMES: re-exported)
    TABLE_NAMES,
    Tokens,
    attribute_table,
    chain,
    sensor_table,
    visibility_table,
    write_tables,
    yaw_quaternion,
)
from bev_reid.engine.io import atomic_write_bytes, atomic_write_text
from bev_reid.synth.lidar import Lidar
from bev_reid.synth.populate import build_scene
from bev_reid.synth.render import box_corners, finish, make_cameras
from bev_reid.synth.rig import (
    ATTRIBUTES,
    CAMERAS,
    CATEGORIES,
    CATEGORY_OF,
    IMAGE_H,
    IMAGE_W,
    LIDAR,
    LOCATIONS,
    SENSORS,
    calibrated_sensor_record,
    visibility_token,
)
from bev_reid.synth.world import DT

META_FILE = "synth_meta.json"
META_FORMAT = "bev-reid-synth/1"
ATTRIBUTE_OF = {  # (kind class, motion) -> nuScenes attribute
    ("vehicle", "parked"): "vehicle.parked",
    ("vehicle", "moving"): "vehicle.moving",
    ("vehicle", "stopped"): "vehicle.stopped",
    ("pedestrian", "moving"): "pedestrian.moving",
    ("pedestrian", "standing"): "pedestrian.standing",
}


def _meta_config(cfg: SynthConfig) -> dict:
    """The settings that decide the dataset's content (the folder and process count do not)."""
    d = to_dict(cfg)
    d.pop("out")
    d.pop("workers")
    return d


def check_out_folder(root: Path, cfg: SynthConfig) -> None:
    """Refuses an output folder that holds anything but an earlier run of this same config."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"synth.out {str(root)!r} exists and is not a folder")
    if not root.exists() or not any(root.iterdir()):
        return
    meta = root / cfg.version / META_FILE
    other = sorted(p.name for p in root.iterdir() if p.name not in (cfg.version, "samples"))
    try:
        old = json.loads(meta.read_text(encoding="utf-8")).get("config") if meta.is_file() else None
    except (json.JSONDecodeError, AttributeError):
        old = None
    new = _meta_config(cfg)
    if old == new and not other:
        return
    if isinstance(old, dict):
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        why = f"a synthetic dataset made with other settings ({', '.join(keys) or 'extra files'})"
    else:
        why = f"files that are not a synthetic {cfg.version} dataset (no {cfg.version}/{META_FILE})"
    raise ValueError(
        f"synth.out {str(root)!r} already holds a different dataset: {why}"
        f"{'; it also has ' + ', '.join(other) if other else ''}. "
        "Choose an empty or new folder, or delete this one."
    )


def _tokens(seed: int) -> Tokens:
    """32-hex tokens derived from the seed and a name: no uuid, no clock."""
    return Tokens(f"bev-reid-synth/{seed}")


def _start_time(index: int, condition: str, location: str) -> tuple[int, str, str]:
    """(first timestamp in microseconds, logfile name, capture date) of scene ``index``."""
    vehicle, utc_offset, _ = LOCATIONS[location]
    hour = {"day": 10, "rain": 15, "night": 20}[condition]
    local = dt.datetime(2018, 7, 23, hour, 7, 11) + dt.timedelta(days=index, minutes=13 * index)
    utc = local - dt.timedelta(hours=utc_offset)
    micros = calendar.timegm(utc.timetuple()) * 1_000_000 + 31_337 * (index + 1)
    tz = f"{'+' if utc_offset >= 0 else '-'}{abs(utc_offset):02d}00"
    return micros, f"{vehicle}-{local:%Y-%m-%d-%H-%M-%S}{tz}", f"{local:%Y-%m-%d}"


def generate_world(cfg: SynthConfig, out: str | Path | None = None, progress: bool = True) -> Path:
    """Writes a synthetic nuScenes-format dataset and returns its dataroot.

    Args:
        cfg: what to generate (scenes, keyframes, seed, ...); see SynthConfig.
        out: the dataroot; defaults to ``cfg.out``. It must be absent, empty, or hold an earlier
            run of the same config (which is then rewritten, to the same bytes).
        progress: show a tqdm bar over keyframes.

    Raises:
        ValueError: bad settings (e.g. scenes < 1, keyframes < 2) or an ``out`` folder that holds
            another dataset.
    """
    cfg = dataclasses.replace(cfg)  # re-runs SynthConfig's checks on a hand-made instance
    root = Path(out if out is not None else cfg.out)
    check_out_folder(root, cfg)
    bar = tqdm(
        total=cfg.scenes * cfg.keyframes, desc="synth", unit="keyframe", disable=not progress
    )
    workers = min(cfg.workers, cfg.scenes)
    if workers <= 1:
        parts = [write_scene(cfg, root, si, bar.update) for si in range(cfg.scenes)]
    else:  # scenes are independent: one process each, results merged in scene order
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = [pool.submit(write_scene, cfg, root, si) for si in range(cfg.scenes)]
            for _ in as_completed(futures):
                bar.update(cfg.keyframes)
            parts = [f.result() for f in futures]
    bar.close()

    tok = _tokens(cfg.seed)
    tables: dict[str, list[dict]] = {
        "category": [
            {"token": t, "name": name, "description": desc, "index": idx}
            for name, (t, desc, idx) in CATEGORIES.items()
        ],
        "attribute": attribute_table(),
        "visibility": visibility_table(),
        "sensor": sensor_table(tuple(SENSORS)),
        "calibrated_sensor": [calibrated_sensor_record(ch) for ch in (LIDAR, *CAMERAS)],
    }
    meta: dict = {"format": META_FORMAT, "config": _meta_config(cfg), "scenes": [], "instances": {}}
    maps: dict[str, list[str]] = {}
    for part in parts:
        for name, records in part["tables"].items():
            tables.setdefault(name, []).extend(records)
        meta["scenes"].append(part["scene"])
        meta["instances"].update(part["instances"])
        maps.setdefault(part["scene"]["location"], []).append(part["tables"]["log"][0]["token"])
    tables["map"] = [
        {"token": tok("map", loc), "category": "semantic_prior", "filename": "", "log_tokens": logs}
        for loc, logs in maps.items()
    ]
    table_root = root / cfg.version
    write_tables(table_root, tables)
    atomic_write_text(table_root / META_FILE, json.dumps(meta, indent=1))
    return root


@functools.lru_cache(maxsize=2)
def _sensors(scale: int, azimuth_steps: int, lidar_range: float) -> tuple[dict, Lidar]:
    return make_cameras(scale), Lidar(azimuth_steps, lidar_range)


def write_scene(
    cfg: SynthConfig, root: Path, si: int, tick: Callable[[int], object] | None = None
) -> dict:
    """Renders scene ``si``, writes its images and sweeps, returns its table records.

    Returns:
        {"tables": {table: records of this scene}, "scene": its synth_meta entry,
         "instances": {instance token: appearance}}.
    """
    cams, lidar = _sensors(cfg.render_scale, cfg.lidar_azimuth_steps, cfg.lidar_range_m)
    scene = build_scene(cfg, si)
    tok = _tokens(cfg.seed)
    t0, logfile, date = _start_time(si, scene.condition, scene.location)
    log_token, scene_token = tok("log", si), tok("scene", si)
    cs_token = {ch: calibrated_sensor_record(ch)["token"] for ch in (LIDAR, *CAMERAS)}
    samples: list[dict] = []
    ego_poses: list[dict] = []
    per_channel: dict[str, list[dict]] = {ch: [] for ch in (*CAMERAS, LIDAR)}
    candidates: dict[int, list[tuple[int, float, int]]] = {}  # agent -> (k, share, points)
    for k in range(cfg.keyframes):
        ts = t0 + int(round(k * DT * 1e6))
        sample_token = tok("sample", si, k)
        samples.append(
            {
                "token": sample_token,
                "timestamp": ts,
                "prev": "",
                "next": "",
                "scene_token": scene_token,
            }
        )
        ego = scene.ego[k]
        near = [
            i
            for i, a in enumerate(scene.agents)
            if math.dist(a.poses[k, :2], ego[:2]) <= cfg.render_range_m + max(a.size[:2])
        ]
        corners = box_corners([scene.agents[i] for i in near], k)
        visible: dict[int, int] = {}
        unoccluded: dict[int, int] = {}
        rng = np.random.default_rng([cfg.seed, si, k, 1])
        for ch in (*CAMERAS, LIDAR):
            sd_token = tok("sample_data", si, k, ch)
            if ch == LIDAR:
                points, lidar_counts = lidar.sweep(scene, k, near, rng)
                filename = f"samples/{ch}/{logfile}__{ch}__{ts}.pcd.bin"
                atomic_write_bytes(root / filename, points.tobytes())
                fmt, w, h = "pcd", 0, 0
            else:
                rgb, ids, unocc = cams[ch].render(scene, k, near, corners)
                for i, n in unocc.items():
                    unoccluded[i] = unoccluded.get(i, 0) + n
                seen = np.bincount(ids[ids >= 0])
                for i in np.flatnonzero(seen):
                    visible[int(i)] = visible.get(int(i), 0) + int(seen[i])
                bgr = finish(rgb, scene.condition, rng)
                ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
                if not ok:
                    raise RuntimeError(f"OpenCV could not encode {ch} of scene {si}, keyframe {k}")
                filename = f"samples/{ch}/{logfile}__{ch}__{ts}.jpg"
                atomic_write_bytes(root / filename, jpg.tobytes())
                fmt, w, h = "jpg", IMAGE_W, IMAGE_H
            per_channel[ch].append(
                {
                    "token": sd_token,
                    "sample_token": sample_token,
                    "ego_pose_token": sd_token,
                    "calibrated_sensor_token": cs_token[ch],
                    "timestamp": ts,
                    "fileformat": fmt,
                    "is_key_frame": True,
                    "height": h,
                    "width": w,
                    "filename": filename,
                    "prev": "",
                    "next": "",
                }
            )
            ego_poses.append(
                {
                    "token": sd_token,
                    "timestamp": ts,
                    "rotation": yaw_quaternion(float(ego[2])),
                    "translation": [float(ego[0]), float(ego[1]), 0.0],
                }
            )
        for i in near:
            a = scene.agents[i]
            if a.annotated and math.dist(a.poses[k, :2], ego[:2]) <= cfg.annotate_range_m:
                share = visible.get(i, 0) / unoccluded[i] if unoccluded.get(i) else 0.0
                candidates.setdefault(i, []).append((k, share, lidar_counts.get(i, 0)))
        if tick is not None:
            tick(1)

    # Like nuScenes, annotate what the sensors see: an agent in range is annotated from the first
    # keyframe a camera or the LiDAR sees it to the last, hidden keyframes in between included.
    per_agent: dict[int, list[dict]] = {}
    for i, seen in candidates.items():
        shown = [k for k, share, points in seen if share > 0 or points > 0]
        if not shown:
            continue
        a = scene.agents[i]
        group = "pedestrian" if a.kind == "pedestrian" else "vehicle"
        for k, share, points in seen:
            if not shown[0] <= k <= shown[-1]:
                continue
            centre, size, yaw = a.annotation_box(k)
            per_agent.setdefault(i, []).append(
                {
                    "token": tok("sample_annotation", si, i, k),
                    "sample_token": samples[k]["token"],
                    "instance_token": tok("instance", si, i),
                    "visibility_token": visibility_token(share),
                    "attribute_tokens": [ATTRIBUTES[ATTRIBUTE_OF[(group, a.motion)]]],
                    "translation": centre,
                    "size": size,
                    "rotation": yaw_quaternion(yaw),
                    "prev": "",
                    "next": "",
                    "num_lidar_pts": points,
                    "num_radar_pts": 0,
                }
            )
    chain(samples)
    sample_data: list[dict] = []
    for ch in (*CAMERAS, LIDAR):
        chain(per_channel[ch])
        sample_data += per_channel[ch]
    annotations: list[dict] = []
    instances: list[dict] = []
    appearance: dict[str, dict] = {}
    for i, anns in sorted(per_agent.items()):
        chain(anns)
        annotations += anns
        a = scene.agents[i]
        token = anns[0]["instance_token"]
        instances.append(
            {
                "token": token,
                "category_token": CATEGORIES[CATEGORY_OF[a.kind]][0],
                "nbr_annotations": len(anns),
                "first_annotation_token": anns[0]["token"],
                "last_annotation_token": anns[-1]["token"],
            }
        )
        appearance[token] = {
            "scene": scene_token,
            "agent": i,
            "category": CATEGORY_OF[a.kind],
            "colour": a.app.colour,
            "rgb": [round(float(c), 3) for c in a.app.rgb],
            "pattern": a.app.pattern,
            "secondary": a.app.secondary,
            "secondary_rgb": [round(float(c), 3) for c in a.app.rgb2],
            "size": anns[0]["size"],
            "motion": a.motion,
        }
    name = f"scene-{si + 1:04d}"
    tables = {
        "log": [
            {
                "token": log_token,
                "logfile": logfile,
                "vehicle": logfile[:4],
                "date_captured": date,
                "location": scene.location,
            }
        ],
        "scene": [
            {
                "token": scene_token,
                "log_token": log_token,
                "nbr_samples": len(samples),
                "first_sample_token": samples[0]["token"],
                "last_sample_token": samples[-1]["token"],
                "name": name,
                "description": scene.description,
            }
        ],
        "sample": samples,
        "sample_data": sample_data,
        "ego_pose": ego_poses,
        "sample_annotation": annotations,
        "instance": instances,
    }
    return {
        "tables": tables,
        "instances": appearance,
        "scene": {
            "token": scene_token,
            "name": name,
            "condition": scene.condition,
            "layout": scene.layout,
            "location": scene.location,
        },
    }
