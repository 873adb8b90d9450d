"""What every writer of a nuScenes-format folder shares: table names, vocabulary records, tokens.

Two writers use it: the synthetic world (:mod:`bev_reid.synth.generate`) and the dataset
converters (:mod:`bev_reid.data.pandaset`). The sensor and attribute tokens are the real nuScenes
ones, so code that keys on them works on every folder; the visibility levels are nuScenes' four
bins. Tokens of everything else are hashes of a namespace and a name (no uuid, no clock), so the
same input gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from bev_reid.engine.io import atomic_write_text

TABLE_NAMES = (
    "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
    "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map",
)  # fmt: skip

# channel -> (sensor token, modality), as in nuScenes' sensor.json
SENSORS: dict[str, tuple[str, str]] = {
    "CAM_FRONT": ("725903f5b62f56118f4094b46a4470d8", "camera"),
    "CAM_BACK": ("ce89d4f3050b5892b33b3d328c5e82a3", "camera"),
    "CAM_BACK_LEFT": ("a89643a5de885c6486df2232dc954da2", "camera"),
    "CAM_FRONT_LEFT": ("ec4b5d41840a509984f7ec36419d4c09", "camera"),
    "CAM_FRONT_RIGHT": ("2f7ad058f1ac5557bf321c7543758f43", "camera"),
    "CAM_BACK_RIGHT": ("ca7dba2ec9f95951bbe67246f7f2c3f7", "camera"),
    "LIDAR_TOP": ("dc8b396651c05aedbb9cdaae573bb567", "lidar"),
}

# attribute name -> token, as in nuScenes' attribute.json
ATTRIBUTES: dict[str, str] = {
    "vehicle.moving": "cb5118da1ab342aa947717dc53544259",
    "vehicle.stopped": "c3246a1e22a14fcb878aa61e69ae3329",
    "vehicle.parked": "58aa28b1c2a54dc88e169808c07331e3",
    "cycle.with_rider": "a14936d865eb4216b396adae8cb3939c",
    "cycle.without_rider": "5a655f9751944309a277276b8f473452",
    "pedestrian.sitting_lying_down": "03aa62109bf043afafdea7d875dd4f43",
    "pedestrian.standing": "4d8821270b4a47e3a8a300cbec48188e",
    "pedestrian.moving": "ab83627ff28b465b85c427162dec722f",
}

VISIBILITY = (("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100"))
VISIBILITY_TEXT = {
    "1": "visibility of whole object is between 0 and 40%",
    "2": "visibility of whole object is between 40 and 60%",
    "3": "visibility of whole object is between 60 and 80%",
    "4": "visibility of whole object is between 80 and 100%",
}


def visibility_token(fraction: float) -> str:
    """nuScenes visibility bin of the visible share of an object over the six images."""
    if fraction <= 0.4:
        return "1"
    if fraction <= 0.6:
        return "2"
    if fraction <= 0.8:
        return "3"
    return "4"


class Tokens:
    """32-hex tokens derived from a namespace and a name: ``Tokens("ns")("sample", 3)``.

    The token is the MD5 of ``"<namespace>/<name parts joined by />"``.
    """

    def __init__(self, namespace: str) -> None:
        self.prefix = f"{namespace}/"

    def __call__(self, *name: object) -> str:
        return hashlib.md5((self.prefix + "/".join(map(str, name))).encode()).hexdigest()


def yaw_quaternion(yaw: float) -> list[float]:
    """(w, x, y, z) of a rotation by ``yaw`` radians about +z (counter-clockwise from above)."""
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def chain(records: Sequence[dict]) -> None:
    """Links records in order through their ``prev`` / ``next`` tokens (ends stay "")."""
    for a, b in zip(records, records[1:], strict=False):
        a["next"], b["prev"] = b["token"], a["token"]


def table_json(records: object) -> str:
    """A table as nuScenes writes it (one value per line, ASCII)."""
    return json.dumps(records, indent=0, ensure_ascii=True)


def sensor_table(channels: Sequence[str]) -> list[dict]:
    """The ``sensor`` records of ``channels`` (names from :data:`SENSORS`)."""
    return [{"token": SENSORS[ch][0], "channel": ch, "modality": SENSORS[ch][1]} for ch in channels]


def attribute_table() -> list[dict]:
    return [{"token": t, "name": n, "description": n} for n, t in ATTRIBUTES.items()]


def visibility_table() -> list[dict]:
    return [
        {"token": t, "level": level, "description": VISIBILITY_TEXT[t]} for t, level in VISIBILITY
    ]


def write_tables(table_root: str | os.PathLike, tables: Mapping[str, list[dict]]) -> Path:
    """Writes the 13 tables into ``table_root``, each atomically; a missing one is a KeyError."""
    root = Path(table_root)
    missing = [name for name in TABLE_NAMES if name not in tables]
    if missing:
        raise KeyError(f"tables {', '.join(missing)} were not built")  # a programming error
    for name in TABLE_NAMES:
        atomic_write_text(root / f"{name}.json", table_json(tables[name]))
    return root
