"""One small function per nuScenes table the PandaSet converter writes.

Each takes what PandaSet says (already read) and returns nuScenes records; the conventions they
apply are in :mod:`bev_reid.data.pandaset.conventions`. Tokens come from a
:class:`~bev_reid.data.nuscenes_format.Tokens` of the namespace ``bev-reid-pandaset`` and names
built from the sequence, frame and channel, so a re-run writes the same bytes. The vocabulary
tables (sensor, attribute, visibility) are nuScenes' own: see :mod:`bev_reid.data.nuscenes_format`.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence

import numpy as np

from bev_reid.data.nuscenes_format import ATTRIBUTES, Tokens, visibility_token, yaw_quaternion
from bev_reid.data.pandaset.conventions import (
    CATEGORIES,
    LOCATION,
    VEHICLE,
    attribute_of,
    box_yaw,
    category_token,
)
from bev_reid.data.pandaset.cuboids import instance_token
from bev_reid.data.pandaset.read import Pose

TOKENS = Tokens("bev-reid-pandaset")


def scene_name(sequence: str) -> str:
    return f"pandaset-{sequence}"


def category_table() -> list[dict]:
    """Every nuScenes category a PandaSet label maps to (used or not)."""
    return [
        {"token": category_token(name), "name": name, "description": desc, "index": index}
        for name, (_, index, desc) in CATEGORIES.items()
    ]


def log_record(sequence: str, first_time_s: float) -> dict:
    """One log per sequence; its date is the UTC date of the first LiDAR frame."""
    date = dt.datetime.fromtimestamp(first_time_s, tz=dt.UTC)
    return {
        "token": TOKENS("log", sequence),
        "logfile": scene_name(sequence),
        "vehicle": VEHICLE,
        "date_captured": f"{date:%Y-%m-%d}",
        "location": LOCATION,
    }


def map_table(log_tokens: Sequence[str]) -> list[dict]:
    """One map record (without a mask image, like the synthetic world's) for every log."""
    return [
        {
            "token": TOKENS("map", LOCATION),
            "category": "semantic_prior",
            "filename": "",
            "log_tokens": list(log_tokens),
        }
    ]


def scene_record(sequence: str, samples: Sequence[dict]) -> dict:
    """One scene per sequence. Time of day and weather are not known: the description names
    neither, so per-condition evaluation counts every PandaSet scene as day."""
    return {
        "token": TOKENS("scene", sequence),
        "log_token": TOKENS("log", sequence),
        "nbr_samples": len(samples),
        "first_sample_token": samples[0]["token"],
        "last_sample_token": samples[-1]["token"],
        "name": scene_name(sequence),
        "description": f"PandaSet sequence {sequence}",
    }


def sample_record(sequence: str, frame: int, timestamp: int) -> dict:
    """Every PandaSet frame is a keyframe; its time is the LiDAR's."""
    return {
        "token": TOKENS("sample", sequence, frame),
        "timestamp": timestamp,
        "prev": "",
        "next": "",
        "scene_token": TOKENS("scene", sequence),
    }


def calibrated_sensor_record(
    sequence: str, channel: str, sensor_token: str, pose: Pose, intrinsics: np.ndarray | None
) -> dict:
    """The sensor -> ego calibration of ``channel``, one per sequence (derived per drive)."""
    return {
        "token": TOKENS("calibrated_sensor", sequence, channel),
        "sensor_token": sensor_token,
        **pose.record(),
        "camera_intrinsic": [] if intrinsics is None else np.asarray(intrinsics).tolist(),
    }


def sample_data_record(
    sequence: str,
    frame: int,
    channel: str,
    timestamp: int,
    filename: str,
    size: tuple[int, int] | None,
) -> dict:
    """One file of a keyframe; its ego pose record has the same token. ``size``: (W, H) or None."""
    token = TOKENS("sample_data", sequence, frame, channel)
    width, height = size if size is not None else (0, 0)
    return {
        "token": token,
        "sample_token": TOKENS("sample", sequence, frame),
        "ego_pose_token": token,
        "calibrated_sensor_token": TOKENS("calibrated_sensor", sequence, channel),
        "timestamp": timestamp,
        "fileformat": "jpg" if size is not None else "pcd",
        "is_key_frame": True,
        "height": int(height),
        "width": int(width),
        "filename": filename,
        "prev": "",
        "next": "",
    }


def ego_pose_record(sample_data_token: str, timestamp: int, pose: Pose) -> dict:
    """The ego -> world pose at a sample_data's time."""
    return {"token": sample_data_token, "timestamp": timestamp, **pose.record()}


def annotation_records(
    sequence: str, frame: int, cuboids, num_points: np.ndarray, visible: np.ndarray
) -> list[dict]:
    """A frame's cuboids (as :func:`~bev_reid.data.pandaset.cuboids.select_cuboids` keeps them)
    as sample_annotation records, in the world frame.

    Args:
        cuboids: DataFrame with PandaSet's columns plus ``category`` and ``instance``.
        num_points: [B] LiDAR points in each box; visible: [B] share of the box in the images.
    """
    records = []
    rows = cuboids.to_dict("records")
    for row, points, share in zip(rows, num_points, visible, strict=True):
        attributes = attribute_of(
            row["category"],
            row["attributes.object_motion"],
            row["attributes.rider_status"],
            row["attributes.pedestrian_behavior"],
        )
        records.append(
            {
                "token": TOKENS("sample_annotation", sequence, frame, row["uuid"]),
                "sample_token": TOKENS("sample", sequence, frame),
                "instance_token": instance_token(row["instance"]),
                "visibility_token": visibility_token(float(share)),
                "attribute_tokens": [ATTRIBUTES[a] for a in attributes],
                "translation": [float(row[f"position.{k}"]) for k in "xyz"],
                "size": [float(row[f"dimensions.{k}"]) for k in "xyz"],  # w, l, h
                "rotation": yaw_quaternion(box_yaw(row["yaw"])),
                "prev": "",
                "next": "",
                "num_lidar_pts": int(points),
                "num_radar_pts": 0,
            }
        )
    return records


def instance_records(annotations: Sequence[dict], categories: dict[str, list[str]]) -> list[dict]:
    """One instance per token, its annotations in time order (already chained).

    Args:
        annotations: all sample_annotation records of a sequence, in time order.
        categories: instance token -> the category of each of its cuboids; the most frequent one
            (the first seen on a tie) is the instance's.
    """
    by_instance: dict[str, list[dict]] = {}
    for ann in annotations:
        by_instance.setdefault(ann["instance_token"], []).append(ann)
    records = []
    for token, anns in by_instance.items():
        category = Counter(categories[token]).most_common(1)[0][0]
        records.append(
            {
                "token": token,
                "category_token": category_token(category),
                "nbr_annotations": len(anns),
                "first_annotation_token": anns[0]["token"],
                "last_annotation_token": anns[-1]["token"],
            }
        )
    return records
