"""`bev-reid make-detections`: detections made from the ground-truth boxes by a seeded model.

Lets anyone study tracking without a detector. Every annotation of a detection class (the
devkit's mapping of categories) with at least one LiDAR or radar point (a detector sees
nothing else, and the devkit's evaluation drops such boxes too) becomes a detection, degraded
so (``track.det_*`` keys):

- Occlusion gaps: a share ``det_miss_rate`` of the objects get gaps. Along such an object's
  keyframes, visible runs of 2..5 keyframes (uniform) alternate with missed runs of
  1..``det_max_gap`` keyframes (uniform), starting with a visible run.
- Hidden objects (``det_hidden_miss``, off by default): at each keyframe where an object's
  annotation has visibility 1 (0-40% visible in the six cameras), it is also missed with that
  chance, as a real detector misses what it cannot see. Drawn from a generator of its own,
  seeded by (``det_seed``, annotation token), so the other draws do not move.
- Noise: the centre moves by N(0, ``det_noise_m``) in x and y and by half that in z; width,
  length and height are scaled by 1 + N(0, ``det_size_noise``) each (at least 0.2 m); the
  heading turns by N(0, ``det_yaw_noise_deg``) degrees; the velocity (the annotation's, from its
  neighbours as the devkit computes it, 0 where unknown) gets N(0, ``det_velocity_noise``) per axis.
  ``det_velocity`` ``zero`` writes ``[0, 0]`` and ``none`` writes ``null`` for every box instead,
  as detectors that estimate no velocity do (the draws are the same).
- Scores: a true detection scores U(0.4, 1.0).
- False positives: each keyframe gets Poisson(``det_fp_rate`` x its true detections) boxes of
  class car, placed uniformly in a 40 m disc around the ego with a random heading, a car's size
  (1.9 x 4.6 x 1.7 m, with the size noise), no velocity, scoring U(0.05, 0.5).

Random numbers come from generators seeded by (``det_seed``, instance token) and
(``det_seed``, sample token), so an object's degradation does not depend on which scenes are
made, and the same seed gives the same bytes.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
from pyquaternion import Quaternion
from tqdm import tqdm

from bev_reid.config import Config, TrackConfig
from bev_reid.data.nuscenes import NuScenesDB, resolve_scenes
from bev_reid.track.detections import DEFAULT_META, Detection, write_results

VISIBLE_RUN = (2, 5)  # keyframes seen between two gaps (inclusive)
MAX_VELOCITY_GAP_S = 1.5  # the devkit's box_velocity: neighbours further apart give no velocity
FP_RADIUS_M = 40.0
MIN_SIZE_M = 0.2  # the noisy size's floor
FP_SIZE = (1.9, 4.6, 1.7)  # w, l, h of a false positive


def rng_for(seed: int, key: str) -> np.random.Generator:
    """A generator seeded by (seed, key), stable across runs and platforms."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def gap_mask(length: int, max_gap: int, rng: np.random.Generator) -> np.ndarray:
    """[length] bool, True where the object is missed: visible runs of VISIBLE_RUN keyframes
    alternating with gaps of 1..max_gap, starting visible."""
    missed = np.zeros(length, dtype=bool)
    i = int(rng.integers(VISIBLE_RUN[0], VISIBLE_RUN[1] + 1))
    while i < length:
        gap = int(rng.integers(1, max_gap + 1))
        missed[i : i + gap] = True
        i += gap + int(rng.integers(VISIBLE_RUN[0], VISIBLE_RUN[1] + 1))
    return missed


def annotation_velocity(db: NuScenesDB, ann: dict) -> tuple[float, float]:
    """The annotation's global (vx, vy), m/s, from its previous and next annotations (the
    devkit's ``box_velocity``: both when present, one otherwise); (0, 0) when unknown."""
    prev = db.get("sample_annotation", ann["prev"]) if ann["prev"] else ann
    nxt = db.get("sample_annotation", ann["next"]) if ann["next"] else ann
    if prev is nxt:
        return 0.0, 0.0
    t0, t1 = (db.sample(a["sample_token"])["timestamp"] for a in (prev, nxt))
    dt = (t1 - t0) / 1e6
    limit = MAX_VELOCITY_GAP_S * (2 if ann["prev"] and ann["next"] else 1)
    if not 0 < dt <= limit:
        return 0.0, 0.0
    d = np.asarray(nxt["translation"]) - np.asarray(prev["translation"])
    return float(d[0] / dt), float(d[1] / dt)


def box_noise(tc: TrackConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """One draw of a box's noise (see the module doc): the centre's offset [3] (x, y, z metres),
    the factors [3] of width, length and height, and the heading's turn in radians. The ReID
    builder draws it too (``build.box_noise_copies``: crops cut as from detections)."""
    n = tc.det_noise_m
    offset = np.array([rng.normal(0, n), rng.normal(0, n), rng.normal(0, n / 2)])
    factors = np.array([1 + rng.normal(0, tc.det_size_noise) for _ in range(3)])
    return offset, factors, math.radians(rng.normal(0, tc.det_yaw_noise_deg))


def degrade(
    ann: dict, name: str, velocity: tuple[float, float], tc: TrackConfig, rng: np.random.Generator
) -> Detection:
    """A noisy detection of one annotation (see the module doc)."""
    offset, factors, yaw = box_noise(tc, rng)
    centre = tuple(float(c + o) for c, o in zip(ann["translation"], offset, strict=True))
    size = tuple(max(MIN_SIZE_M, float(s * f)) for s, f in zip(ann["size"], factors, strict=True))
    turn = Quaternion(axis=(0, 0, 1), angle=yaw)
    rotation = tuple((turn * Quaternion(ann["rotation"])).elements)
    vel = written_velocity(tuple(v + rng.normal(0, tc.det_velocity_noise) for v in velocity), tc)
    score = float(rng.uniform(0.4, 1.0))
    return Detection(ann["sample_token"], centre, size, rotation, vel, name, score)  # type: ignore[arg-type]


def written_velocity(velocity: tuple[float, float], tc: TrackConfig) -> tuple[float, float]:
    """The velocity a detection is written with (``det_velocity``): NaN is written as null."""
    return {"zero": (0.0, 0.0), "none": (math.nan, math.nan)}.get(tc.det_velocity, velocity)


def false_positives(
    db: NuScenesDB, token: str, count_true: int, tc: TrackConfig
) -> list[Detection]:
    """The clutter of one keyframe (see the module doc)."""
    rng = rng_for(tc.det_seed, f"fp:{token}")
    count = int(rng.poisson(tc.det_fp_rate * count_true))
    _, ego = db.ego_pose(token)
    out = []
    for _ in range(count):
        r, a = FP_RADIUS_M * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
        centre = (ego[0] + r * math.cos(a), ego[1] + r * math.sin(a), ego[2] + FP_SIZE[2] / 2)
        size = tuple(s * (1 + rng.normal(0, tc.det_size_noise)) for s in FP_SIZE)
        rotation = tuple(Quaternion(axis=(0, 0, 1), angle=rng.uniform(-math.pi, math.pi)).elements)
        score = float(rng.uniform(0.05, 0.5))
        velocity = written_velocity((0.0, 0.0), tc)
        out.append(Detection(token, centre, size, rotation, velocity, "car", score))  # type: ignore[arg-type]
    return out


def hidden_miss(ann: dict, tc: TrackConfig) -> bool:
    """Whether a detector misses the annotation ``ann`` for being barely visible (visibility
    token 1; no visibility: never): with chance ``det_hidden_miss``, seeded by the annotation."""
    if tc.det_hidden_miss <= 0 or ann.get("visibility_token") != "1":
        return False
    return bool(rng_for(tc.det_seed, f"hidden:{ann['token']}").uniform() < tc.det_hidden_miss)


def make_detections(cfg: Config, progress: bool = True) -> Path:
    """Writes ``track.detections`` for the scenes of ``cfg.data`` (all when none are named)."""
    from nuscenes.eval.detection.utils import category_to_detection_name

    tc = cfg.track
    db = NuScenesDB(cfg.data.dataroot, cfg.data.version)
    scenes = resolve_scenes(db, None, cfg.data.scenes)
    results: dict[str, list[dict]] = {}
    for scene in tqdm(scenes, desc="make-detections", unit="scene", disable=not progress):
        tokens = db.keyframes(scene)
        # Each object's annotations in keyframe order, to lay its gaps along them.
        per_object: dict[str, list[dict]] = {}
        for token in tokens:
            for ann_token in db.sample(token)["anns"]:
                ann = db.get("sample_annotation", ann_token)
                per_object.setdefault(ann["instance_token"], []).append(ann)
        kept: dict[str, list[Detection]] = {t: [] for t in tokens}
        for instance, anns in per_object.items():
            category = db.get("instance", instance)["category_token"]
            name = category_to_detection_name(db.get("category", category)["name"])
            if name is None:
                continue
            rng = rng_for(tc.det_seed, instance)
            gapped = rng.uniform() < tc.det_miss_rate
            missed = (
                gap_mask(len(anns), tc.det_max_gap, rng) if gapped else np.zeros(len(anns), bool)
            )
            for ann, miss in zip(anns, missed, strict=True):
                det = degrade(
                    ann, name, annotation_velocity(db, ann), tc, rng
                )  # draws even if missed
                seen = ann["num_lidar_pts"] + ann["num_radar_pts"] > 0
                if seen and not miss and not hidden_miss(ann, tc):
                    kept[ann["sample_token"]].append(det)
        for token in tokens:
            dets = kept[token] + false_positives(db, token, len(kept[token]), tc)
            results[token] = [d.record() for d in dets]
    return write_results(tc.detections, results, DEFAULT_META)
