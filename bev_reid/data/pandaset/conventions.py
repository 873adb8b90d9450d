"""Every convention the PandaSet converter changes, written down once (docs/pandaset.md explains).

Frames. PandaSet gives every pose (LiDAR and cameras) as sensor -> world: a position (metres) and
a heading quaternion in (w, x, y, z) order, the order nuScenes and pyquaternion use, so the
quaternions are copied as they are. The LiDAR pose frame has x right, y forward, z up, as nuScenes'
LIDAR_TOP frame; nuScenes' ego frame has x forward, y left, z up, so the ego frame is the LiDAR
pose frame turned by -90 degrees about z (:data:`SENSOR_TO_EGO`), with the same origin. Camera
frames are OpenCV's (x right, y down, z along the optical axis) in both datasets.

Boxes. A PandaSet cuboid's ``yaw`` turns its local +y axis (the vehicle's front) away from world
+y; ``dimensions.x`` is the width, ``dimensions.y`` the length (front to back), ``dimensions.z``
the height. A nuScenes box's front is its local +x, so its yaw is PandaSet's plus pi/2
(:data:`YAW_OFFSET`) and its size (w, l, h) is (dimensions.x, dimensions.y, dimensions.z).

Units: metres and radians in both; timestamps are seconds (float) in PandaSet and integer
microseconds in nuScenes (:func:`micros`).
"""

from __future__ import annotations

import math

from pyquaternion import Quaternion

from bev_reid.data.nuscenes_format import Tokens

# PandaSet camera folder -> nuScenes channel. PandaSet's left and right cameras look sideways
# (about 90 degrees off the front); nuScenes' back-left and back-right look about 110 degrees
# off it. They take those channel names so that the six nuScenes channels are all there.
CAMERAS: dict[str, str] = {
    "front_camera": "CAM_FRONT",
    "front_left_camera": "CAM_FRONT_LEFT",
    "front_right_camera": "CAM_FRONT_RIGHT",
    "left_camera": "CAM_BACK_LEFT",
    "right_camera": "CAM_BACK_RIGHT",
    "back_camera": "CAM_BACK",
}
# cuboids.camera_used index -> camera folder. PandaSet does not document the order; this one is
# measured: on the excerpt, every cuboid projects into the image of the camera its index names.
CAMERA_USED = (
    "front_left_camera",
    "front_camera",
    "front_right_camera",
    "right_camera",
    "back_camera",
    "left_camera",
)

LIDAR_CHANNEL = "LIDAR_TOP"
# pandaset.lidars -> the values of PandaSet's point column ``d`` that are kept
LIDARS: dict[str, tuple[int, ...]] = {"pandar64": (0,), "pandargt": (1,), "both": (0, 1)}
# Of two cuboids of one object in the LiDARs' overlap (cuboids.sensor_id 0 and 1), the one kept:
# that of the first LiDAR kept.
SENSOR_ID = {"pandar64": 0, "pandargt": 1, "both": 0}

# LiDAR pose frame (x right, y forward) -> ego frame (x forward, y left): -90 degrees about z.
SENSOR_TO_EGO = Quaternion(axis=[0.0, 0.0, 1.0], angle=-math.pi / 2)
YAW_OFFSET = math.pi / 2

# PandaSet label -> nuScenes category; None: no nuScenes class, the cuboid is left out (counted).
CATEGORY_OF: dict[str, str | None] = {
    "Car": "vehicle.car",
    "Pickup Truck": "vehicle.truck",  # nuScenes: "trucks ... including pick-ups"
    "Medium-sized Truck": "vehicle.truck",
    "Semi-truck": "vehicle.truck",
    "Towed Object": "vehicle.trailer",
    "Motorcycle": "vehicle.motorcycle",
    "Motorized Scooter": "vehicle.motorcycle",  # nuScenes counts scooters as motorcycles
    "Other Vehicle - Construction Vehicle": "vehicle.construction",
    "Other Vehicle - Uncommon": "vehicle.car",  # no nuScenes class for odd vehicles
    "Other Vehicle - Pedicab": "vehicle.bicycle",
    "Emergency Vehicle": "vehicle.emergency.police",  # PandaSet does not say which service
    "Bus": "vehicle.bus.rigid",  # PandaSet does not tell bendy from rigid
    "Bicycle": "vehicle.bicycle",
    "Personal Mobility Device": "human.pedestrian.personal_mobility",
    "Pedestrian": "human.pedestrian.adult",  # .child when attributes.pedestrian_age says so
    "Pedestrian with Object": "human.pedestrian.adult",
    "Animals - Bird": "animal",
    "Animals - Other": "animal",
    "Cones": "movable_object.trafficcone",
    "Pylons": "movable_object.trafficcone",
    "Road Barriers": "movable_object.barrier",
    "Temporary Construction Barriers": "movable_object.barrier",
    "Rolling Containers": "movable_object.pushable_pullable",
    "Train": None,
    "Trolley": None,
    "Tram / Subway": None,
    "Signs": None,
    "Construction Signs": None,
}

# nuScenes category -> (token, lidarseg index, description). Tokens are nuScenes' own where the
# mini split holds the class; the others are hashes of the name (category_token).
CATEGORIES: dict[str, tuple[str, int, str]] = {
    "animal": ("", 1, "All animals, e.g. cats, rats, dogs, deer, birds."),
    "human.pedestrian.adult": ("1fa93b757fc74fb197cdd60001ad8abf", 2, "Adult subcategory."),
    "human.pedestrian.child": ("", 3, "Child subcategory."),
    "human.pedestrian.personal_mobility": ("", 5, "A small electric or self-propelled vehicle."),
    "movable_object.barrier": ("653f7efbb9514ce7b81d44070d6208c1", 9, "Temporary road barrier."),
    "movable_object.pushable_pullable": ("", 11, "Objects that a pedestrian may push or pull."),
    "movable_object.trafficcone": ("85abebdccd4d46c7be428af5a6173947", 12, "Traffic cones."),
    "vehicle.bicycle": ("fc95c87b806f48f8a1faea2dcc2222a4", 14, "Human or electric powered."),
    "vehicle.bus.rigid": ("fedb11688db84088883945752e480c2c", 16, "Rigid bus subcategory."),
    "vehicle.car": ("fd69059b62a3469fbaef25340c0eab7f", 17, "Vehicle for personal use."),
    "vehicle.construction": ("5b3cd6f2bca64b83aa3d0008df87d0e4", 18, "Construction vehicles."),
    "vehicle.emergency.police": ("7b2ff083a64e4d53809ae5d9be563504", 20, "Emergency vehicles."),
    "vehicle.motorcycle": ("dfd26f200ade4d24b540184e16050022", 21, "Motorcycles and scooters."),
    "vehicle.trailer": ("90d0f6f8e7c749149b1b6c3a029841a8", 22, "Any vehicle trailer."),
    "vehicle.truck": ("6021b5187b924d64be64a702e5570edf", 23, "Vehicles that haul cargo."),
}

# attributes.object_motion -> nuScenes attribute, for vehicle.* categories but cycles
MOTION = {"Moving": "vehicle.moving", "Parked": "vehicle.parked", "Stopped": "vehicle.stopped"}
# attributes.rider_status -> nuScenes attribute, for vehicle.bicycle and vehicle.motorcycle
RIDER = {"With Rider": "cycle.with_rider", "Without Rider": "cycle.without_rider"}
# attributes.pedestrian_behavior -> nuScenes attribute, for human.pedestrian.*
BEHAVIOUR = {
    "Walking": "pedestrian.moving",
    "Running": "pedestrian.moving",
    "Standing": "pedestrian.standing",
    "Sitting": "pedestrian.sitting_lying_down",
    "Lying": "pedestrian.sitting_lying_down",
}
CYCLES = ("vehicle.bicycle", "vehicle.motorcycle")

LOCATION = "pandaset-bay-area"  # PandaSet drove in San Francisco and on El Camino Real
VEHICLE = "pandaset"


def category_token(name: str) -> str:
    """The category token of ``name``: nuScenes' own, or a hash of the name."""
    token = CATEGORIES[name][0]
    return token or Tokens("nuscenes-category")(name)


def category_of(label: str, pedestrian_age: object = None) -> str | None:
    """The nuScenes category of a PandaSet label; None when nuScenes has none.

    Raises:
        KeyError: a label this table does not know (the caller names the file).
    """
    category = CATEGORY_OF[label]
    if category == "human.pedestrian.adult" and str(pedestrian_age).lower().startswith("child"):
        return "human.pedestrian.child"
    return category


def attribute_of(category: str, motion: object, rider: object, behaviour: object) -> list[str]:
    """nuScenes attribute names of one cuboid from its PandaSet attributes (NaN: none)."""
    if category in CYCLES:
        found = RIDER.get(rider) if isinstance(rider, str) else None
    elif category.startswith("vehicle."):
        found = MOTION.get(motion) if isinstance(motion, str) else None
    elif category.startswith("human.pedestrian."):
        found = BEHAVIOUR.get(behaviour) if isinstance(behaviour, str) else None
    else:
        found = None
    return [found] if found else []


def micros(seconds: float) -> int:
    """PandaSet's float seconds -> nuScenes' integer microseconds."""
    return int(round(float(seconds) * 1e6))


def box_yaw(pandaset_yaw: float) -> float:
    """nuScenes yaw (front along local +x) of a PandaSet cuboid yaw (front along local +y)."""
    return float(pandaset_yaw) + YAW_OFFSET
