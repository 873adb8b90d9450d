"""nuScenes constants the synthetic world copies: sensor rig, categories, attributes, visibility.

The camera and LiDAR calibrations are the `calibrated_sensor` records of log n015-2018-10-08
(scene-0916 of nuScenes, the real sample in ``shared/data/nuscenes-mini``), copied verbatim so a
network trained on the synthetic world sees the real rig. Sensor, category and attribute tokens are
the real nuScenes ones, so code that keys on them works on both.
"""

from __future__ import annotations

import numpy as np
from pyquaternion import Quaternion

# nuScenes' sensor and attribute tokens and visibility bins, shared with the dataset converters
from bev_reid.data.nuscenes_format import (  # noqa: F401 (re-exported to the synth modules)
    ATTRIBUTES,
    SENSORS,
    VISIBILITY,
    visibility_token,
)

IMAGE_W, IMAGE_H = 1600, 900

CAMERAS = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)
LIDAR = "LIDAR_TOP"

# channel -> (calibrated_sensor token, translation, rotation (w, x, y, z), fx, cx, cy)
_CALIB: dict[str, tuple[str, list[float], list[float], float, float, float]] = {
    "LIDAR_TOP": (
        "00e93a09857648a8b723b48db4236602",
        [0.943713, 0.0, 1.84023],
        [0.7077955119163518, -0.006492242056004365, 0.010646214713995808, -0.7063073142877817],
        0.0,
        0.0,
        0.0,
    ),
    "CAM_FRONT": (
        "1b10ebeec99e4608977957c3f04c996d",
        [1.70079118954, 0.0159456324149, 1.51095763913],
        [0.4998015430569128, -0.5030316162024876, 0.4997798114386805, -0.49737083824542755],
        1266.417203046554,
        816.2670197447984,
        491.50706579294757,
    ),
    "CAM_FRONT_RIGHT": (
        "9e0e1f9abcff4f02b602a96ba68cc115",
        [1.5508477543, -0.493404796419, 1.49574800619],
        [0.2060347966337182, -0.2026940577919598, 0.6824507824531167, -0.6713610884174485],
        1260.8474446004698,
        807.968244525554,
        495.3344268742088,
    ),
    "CAM_BACK_RIGHT": (
        "e42949afbacd46239ea8e5e0f9275d50",
        [1.0148780988, -0.480568219723, 1.56239545128],
        [0.12280980120078765, -0.132400842670559, -0.7004305821388234, 0.690496031265798],
        1259.5137405846733,
        807.2529053838625,
        501.19579884916527,
    ),
    "CAM_BACK": (
        "f0d212bd31e24fc098bb72b6d7607e0e",
        [0.0283260309358, 0.00345136761476, 1.57910346144],
        [0.5037872666382278, -0.49740249788611096, -0.4941850223835201, 0.5045496097725578],
        809.2209905677063,
        829.2196003259838,
        481.77842384512485,
    ),
    "CAM_BACK_LEFT": (
        "a798b617c1c4432c863b11d860430a3d",
        [1.03569100218, 0.484795032713, 1.59097014818],
        [0.6924185592174665, -0.7031619420114925, -0.11648342771943819, 0.11203317912370753],
        1256.7414812095406,
        792.1125740759628,
        492.7757465151356,
    ),
    "CAM_FRONT_LEFT": (
        "669ba58e0d2f48728f1ab3bac6dec82e",
        [1.52387798135, 0.494631336551, 1.50932822144],
        [0.6757265034669446, -0.6736266522251881, 0.21214015046209478, -0.21122827103904068],
        1272.5979470598488,
        826.6154927353808,
        479.75165386361925,
    ),
}


def calibrated_sensor_record(channel: str) -> dict:
    """The `calibrated_sensor` record of ``channel``, exactly as nuScenes writes it."""
    token, trans, rot, f, cx, cy = _CALIB[channel]
    intrinsic = [[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]] if f else []
    return {
        "token": token,
        "sensor_token": SENSORS[channel][0],
        "translation": list(trans),
        "rotation": list(rot),
        "camera_intrinsic": intrinsic,
    }


def sensor_pose(channel: str) -> tuple[np.ndarray, np.ndarray]:
    """(R 3 x 3 sensor -> ego, t 3) of ``channel``, from the same numbers as the record."""
    _, trans, rot, *_ = _CALIB[channel]
    return Quaternion(rot).rotation_matrix, np.asarray(trans, dtype=np.float64)


def intrinsic(channel: str) -> np.ndarray:
    """3 x 3 camera matrix of ``channel`` at 1600 x 900."""
    return np.asarray(calibrated_sensor_record(channel)["camera_intrinsic"], dtype=np.float64)


# (token, name, description, lidarseg index): the real nuScenes records of the classes we use.
CATEGORIES: dict[str, tuple[str, str, int]] = {
    "human.pedestrian.adult": ("1fa93b757fc74fb197cdd60001ad8abf", "Adult subcategory.", 2),
    "vehicle.bus.rigid": ("fedb11688db84088883945752e480c2c", "Rigid bus subcategory.", 16),
    "vehicle.car": (
        "fd69059b62a3469fbaef25340c0eab7f",
        "Vehicle designed primarily for personal use, e.g. sedans, hatch-backs, wagons, vans, "
        "mini-vans, SUVs and jeeps. If the vehicle is designed to carry more than 10 people use "
        "vehicle.bus. If it is primarily designed to haul cargo use vehicle.truck. ",
        17,
    ),
    "vehicle.truck": (
        "6021b5187b924d64be64a702e5570edf",
        "Vehicles primarily designed to haul cargo including pick-ups, lorrys, trucks and "
        "semi-tractors. Trailers hauled after a semi-tractor should be labeled as vehicle.trailer",
        23,
    ),
}

# kind of agent -> nuScenes category name
CATEGORY_OF = {
    "car": "vehicle.car",
    "truck": "vehicle.truck",
    "bus": "vehicle.bus.rigid",
    "pedestrian": "human.pedestrian.adult",
}

# location -> (vehicle name as in nuScenes log files, UTC offset in hours, drives on the left)
LOCATIONS: dict[str, tuple[str, int, bool]] = {
    "singapore-onenorth": ("n015", 8, True),
    "boston-seaport": ("n008", -4, False),
    "singapore-queenstown": ("n015", 8, True),
    "singapore-hollandvillage": ("n015", 8, True),
}
