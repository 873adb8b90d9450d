"""Detections in, tracks out: the nuScenes detection-results and tracking-results JSON formats.

Detection results (what CenterPoint, BEVFusion and the others write)::

    {"meta": {"use_camera": bool, "use_lidar": bool, ...},
     "results": {sample_token: [{"sample_token", "translation": [x, y, z], "size": [w, l, h],
                                 "rotation": [w, x, y, z], "velocity": [vx, vy],
                                 "detection_name", "detection_score", "attribute_name"}, ...]}}

in the global frame (metres, m/s; the quaternion rotates the box frame into the global one). A
detector that estimates no velocity may write ``null`` or ``NaN`` for it (``[null, null]``
too): the detection's velocity is then unknown, NaN here, and the tracker estimates it from the
track's motion (:func:`without_velocities`, ``track.detection_velocity``).
Tracking results hold the same boxes with ``tracking_id``, ``tracking_name`` and
``tracking_score`` instead of the ``detection_*`` fields, and must list every keyframe of the
scenes evaluated (an empty list where nothing is tracked).

:func:`read_detections` checks every record and names the one at fault (its sample token and
position) in a :class:`DetectionFormatError`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bev_reid.config import TRACKING_CLASSES
from bev_reid.engine.io import atomic_write_text

# The devkit's detection classes (nuscenes.eval.detection); the tracking classes are a subset.
DETECTION_CLASSES = (
    "car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian", "motorcycle",
    "bicycle", "traffic_cone", "barrier",
)  # fmt: skip
# The nuScenes category (a prefix) of each detection class: what a ReID recipe's categories match.
CATEGORY_OF = {
    "car": "vehicle.car", "truck": "vehicle.truck", "bus": "vehicle.bus",
    "trailer": "vehicle.trailer", "construction_vehicle": "vehicle.construction",
    "pedestrian": "human.pedestrian", "motorcycle": "vehicle.motorcycle",
    "bicycle": "vehicle.bicycle", "traffic_cone": "movable_object.trafficcone",
    "barrier": "movable_object.barrier",
}  # fmt: skip
FIELDS = ("translation", "size", "rotation", "velocity", "detection_name", "detection_score")
DEFAULT_META = {
    "use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False,
    "use_external": False,
}  # fmt: skip


class DetectionFormatError(ValueError):
    """A detection or tracking results file that does not fit the nuScenes format."""


@dataclass(frozen=True)
class Detection:
    """One detected box, global frame (see the module doc)."""

    sample_token: str
    translation: tuple[float, float, float]
    size: tuple[float, float, float]  # w, l, h
    rotation: tuple[float, float, float, float]  # w, x, y, z
    velocity: tuple[float, float]  # (NaN, NaN): the detector gave none
    name: str  # detection class
    score: float

    @property
    def yaw(self) -> float:
        """Heading of the box's x axis in the global x-y plane, radians."""
        w, x, y, z = self.rotation
        return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))

    def record(self) -> dict[str, Any]:
        """The detection-results record."""
        return {
            "sample_token": self.sample_token,
            "translation": list(self.translation),
            "size": list(self.size),
            "rotation": list(self.rotation),
            "velocity": list(self.velocity) if all(map(math.isfinite, self.velocity)) else None,
            "detection_name": self.name,
            "detection_score": self.score,
            "attribute_name": "",
        }


def _numbers(record: dict, key: str, count: int, where: str) -> tuple[float, ...]:
    value = record[key]
    ok = isinstance(value, (list, tuple)) and len(value) == count
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not ok or not all(math.isfinite(v) for v in value):
        raise DetectionFormatError(f"{where}: {key} must be {count} finite numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _velocity(record: dict, where: str) -> tuple[float, float]:
    """The record's velocity; (NaN, NaN) where the detector gives none (null or NaN)."""
    value = record["velocity"]
    if value is None:
        return (math.nan, math.nan)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        unknown = [v is None or (isinstance(v, float) and math.isnan(v)) for v in value]
        if all(unknown):
            return (math.nan, math.nan)
        if any(unknown):
            raise DetectionFormatError(
                f"{where}: velocity must be 2 finite numbers, or null (unknown); got {value!r}"
            )
    return _numbers(record, "velocity", 2, where)  # type: ignore[return-value]


def has_velocity(detection: Detection) -> bool:
    """The detector estimated this box's velocity, and it is not exactly (0, 0)."""
    vx, vy = detection.velocity
    return math.isfinite(vx) and math.isfinite(vy) and (vx, vy) != (0.0, 0.0)


def without_velocities(detections: dict[str, list[Detection]]) -> bool:
    """No detection of the file has a velocity (all unknown, or all exactly (0, 0)): the
    detector estimates none. A velocity estimator's outputs are never all exactly zero."""
    return not any(has_velocity(d) for dets in detections.values() for d in dets)


def drop_velocities(detections: dict[str, list[Detection]]) -> dict[str, list[Detection]]:
    """The same detections with their velocities unknown (NaN)."""
    unknown = (math.nan, math.nan)
    return {
        key: [dataclasses.replace(d, velocity=unknown) for d in dets]
        for key, dets in detections.items()
    }


def parse_detection(record: Any, key: str, where: str) -> Detection:
    """Checks one record of ``results[key]``; ``where`` names it in errors."""
    if not isinstance(record, dict):
        raise DetectionFormatError(f"{where}: a detection must be an object, got {record!r}")
    missing = [f for f in FIELDS if f not in record]
    if missing:
        raise DetectionFormatError(f"{where}: missing field(s) {', '.join(missing)}")
    token = record.get("sample_token", key)
    if token != key:
        raise DetectionFormatError(
            f"{where}: sample_token {token!r} differs from the results key it is listed under"
        )
    name = record["detection_name"]
    if name not in DETECTION_CLASSES:
        raise DetectionFormatError(
            f"{where}: unknown detection_name {name!r}; valid: {', '.join(DETECTION_CLASSES)}"
        )
    score = _numbers({"detection_score": [record["detection_score"]]}, "detection_score", 1, where)
    size = _numbers(record, "size", 3, where)
    if min(size) <= 0:
        raise DetectionFormatError(f"{where}: size must be positive (w, l, h), got {list(size)}")
    rotation = _numbers(record, "rotation", 4, where)
    norm = math.sqrt(sum(v * v for v in rotation))
    if norm < 1e-6:
        raise DetectionFormatError(f"{where}: rotation must be a quaternion (w, x, y, z) != 0")
    return Detection(
        sample_token=key,
        translation=_numbers(record, "translation", 3, where),  # type: ignore[arg-type]
        size=size,  # type: ignore[arg-type]
        rotation=tuple(v / norm for v in rotation),  # type: ignore[arg-type]
        velocity=_velocity(record, where),
        name=name,
        score=score[0],
    )


def read_detections(
    path: str | Path, known_samples: Iterable[str] | None = None
) -> dict[str, list[Detection]]:
    """Reads and checks a detection-results file.

    Args:
        path: the JSON file.
        known_samples: sample tokens of the dataroot; a results key outside them is an error.
    Returns:
        sample token -> its detections, in file order.
    Raises:
        FileNotFoundError: no such file.
        DetectionFormatError: not JSON, no ``results`` object, an unknown sample token, or a bad
            record (the message names the sample token and the record's position).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detections file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DetectionFormatError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise DetectionFormatError(
            f"{path}: expected the nuScenes detection-results format, an object with "
            '"results": {sample_token: [detections]} (and "meta")'
        )
    known = None if known_samples is None else set(known_samples)
    out: dict[str, list[Detection]] = {}
    for key, records in data["results"].items():
        if known is not None and key not in known:
            raise DetectionFormatError(
                f"{path}: results[{key!r}]: unknown sample token (not a keyframe of this "
                "dataroot and version)"
            )
        if not isinstance(records, list):
            raise DetectionFormatError(f"{path}: results[{key!r}] must be a list of detections")
        out[key] = [
            parse_detection(r, key, f"{path}: results[{key!r}][{i}]") for i, r in enumerate(records)
        ]
    return out


def write_results(
    path: str | Path, results: dict[str, list[dict[str, Any]]], meta: dict[str, Any] | None = None
) -> Path:
    """Writes a results file (detection or tracking records), atomically, with 4-decimal
    numbers, so the same results give the same bytes."""

    def rounded(v: Any) -> Any:
        if isinstance(v, float):
            return round(v, 4)
        if isinstance(v, list):
            return [rounded(x) for x in v]
        if isinstance(v, dict):
            return {k: rounded(x) for k, x in v.items()}
        return v

    body = {"meta": dict(meta or DEFAULT_META), "results": rounded(results)}
    return atomic_write_text(path, json.dumps(body, separators=(",", ":")) + "\n")


def tracking_record(
    sample_token: str,
    translation: Iterable[float],
    size: Iterable[float],
    rotation: Iterable[float],
    velocity: Iterable[float],
    tracking_id: int | str,
    tracking_name: str,
    score: float,
) -> dict[str, Any]:
    """One tracking-results record."""
    if tracking_name not in TRACKING_CLASSES:
        raise ValueError(f"tracking_name must be one of {TRACKING_CLASSES}, got {tracking_name!r}")
    return {
        "sample_token": sample_token,
        "translation": [float(v) for v in translation],
        "size": [float(v) for v in size],
        "rotation": [float(v) for v in rotation],
        "velocity": [float(v) for v in velocity],
        "tracking_id": str(tracking_id),
        "tracking_name": tracking_name,
        "tracking_score": float(score),
    }
