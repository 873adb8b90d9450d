"""Filling one synthetic scene: the ego's route, then parked, moving and walking agents.

The ego drives a straight street or loops around a block (turning at the corners). Agents are
placed one by one by rejection, so that no two footprints overlap at any keyframe or half-way
between keyframes; the same config and scene index give the same scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bev_reid.synth.rig import LOCATIONS
from bev_reid.synth.world import (
    BLOCK,
    BLOCK_TYPES,
    COLOURS,
    DT,
    FACADES,
    INTERIOR,
    KERB_GAP,
    LANE,
    LOT_BAND,
    LOT_PERIOD,
    PATTERNS,
    ROAD_HALF,
    SECONDARY,
    SIZES,
    STALL,
    STREET_PAINTS,
    STREET_PATTERNS,
    VEHICLES,
    WALK,
    Agent,
    Appearance,
    BlockMap,
    Path,
    Scene,
    loop_path,
    parts_of,
)


class Occupancy:
    """Footprints already placed; `free` tells whether a new one overlaps none of them."""

    def __init__(self) -> None:
        self.static: list[np.ndarray] = []  # (x, y, yaw, half l, half w)
        self.moving: list[tuple[np.ndarray, float, float]] = []  # (T x 3 poses, half l, half w)

    @staticmethod
    def _overlap(p: np.ndarray, a: tuple, q: np.ndarray, b: tuple) -> np.ndarray:
        """Separating-axis test of rectangles p (.. x 3) with half sizes a and q with b."""
        d = q[..., :2] - p[..., :2]
        (a1, a2), (b1, b2) = (
            ((np.cos(y), np.sin(y)), (-np.sin(y), np.cos(y))) for y in (p[..., 2], q[..., 2])
        )
        sep = np.zeros(np.broadcast_shapes(p.shape[:-1], q.shape[:-1]), dtype=bool)
        for n in (a1, a2, b1, b2):
            ra = a[0] * np.abs(a1[0] * n[0] + a1[1] * n[1]) + a[1] * np.abs(
                a2[0] * n[0] + a2[1] * n[1]
            )
            rb = b[0] * np.abs(b1[0] * n[0] + b1[1] * n[1]) + b[1] * np.abs(
                b2[0] * n[0] + b2[1] * n[1]
            )
            sep |= np.abs(d[..., 0] * n[0] + d[..., 1] * n[1]) > ra + rb
        return ~sep

    def free(self, poses: np.ndarray, hl: float, hw: float) -> bool:
        """``poses`` T x 3 (or 1 x 3 for a static agent)."""
        r = math.hypot(hl, hw)
        if self.static:
            st = np.array(self.static)
            near = np.hypot(st[:, 0, None] - poses[None, :, 0], st[:, 1, None] - poses[None, :, 1])
            near = near.min(1) < r + np.hypot(st[:, 3], st[:, 4])
            for row in st[near]:
                if self._overlap(row[None, :3], (row[3], row[4]), poses, (hl, hw)).any():
                    return False
        for q, ql, qw in self.moving:
            if np.hypot(*(q[:, :2] - poses[:, :2]).T).min() > r + math.hypot(ql, qw):
                continue
            if self._overlap(q, (ql, qw), poses, (hl, hw)).any():
                return False
        return True

    def add(self, poses: np.ndarray, hl: float, hw: float) -> None:
        if len(poses) == 1:
            self.static.append(np.array([*poses[0], hl, hw]))
        else:
            self.moving.append((poses, hl, hw))


@dataclass
class _Builder:
    """Places agents around the ego's route, one kind after another, by rejection."""

    rng: np.random.Generator
    ego_fine: np.ndarray  # T x 3 at DT / 2 steps
    reach: float  # place static things no farther than this from the route
    near: float  # moving things must come at least this close to the ego
    hand: int
    palette: str = "vivid"  # vehicle paints: vivid (COLOURS) or street (STREET_PAINTS)
    occ: Occupancy = field(default_factory=Occupancy)
    agents: list[Agent] = field(default_factory=list)

    def appearance(self, kind: str) -> Appearance:
        if kind == "pedestrian":
            return Appearance(
                str(self.rng.choice(list(COLOURS))),
                "plain",
                str(self.rng.choice(["black", "blue"])),
            )
        if self.palette == "street":
            paints = list(STREET_PAINTS)
            colour = str(self.rng.choice(paints, p=[STREET_PAINTS[c][1] for c in paints]))
            pattern = str(self.rng.choice(list(STREET_PATTERNS), p=list(STREET_PATTERNS.values())))
            return Appearance(colour, pattern, "white" if colour == "black" else "black")
        colour = str(self.rng.choice(list(COLOURS)))
        pattern = str(self.rng.choice(PATTERNS, p=[0.12, 0.22, 0.22, 0.22, 0.22]))
        second = str(self.rng.choice([c for c in SECONDARY if c != colour]))
        return Appearance(colour, pattern, second)

    def size(self, kind: str) -> tuple[float, float, float]:
        return tuple(round(float(self.rng.uniform(*lim)), 2) for lim in SIZES[kind])  # type: ignore[return-value]

    def distance_to_route(self, x: float, y: float) -> float:
        return float(np.hypot(self.ego_fine[:, 0] - x, self.ego_fine[:, 1] - y).min())

    def place(
        self, kind: str, poses: np.ndarray, motion: str, size=None, app=None, pad: float = 0.25
    ) -> bool:
        """Adds the agent if its footprint (grown by ``pad``) is free over all times."""
        w, length, h = size or self.size(kind)
        poses = poses.copy()
        poses[:, :2] = np.round(poses[:, :2], 3)  # what the annotation will say, to the mm
        if not self.occ.free(poses, length / 2 + pad, w / 2 + pad):
            return False
        self.occ.add(poses, length / 2 + pad, w / 2 + pad)
        self.agents.append(
            Agent(
                kind,
                (w, length, h),
                parts_of(kind, w, length, h),
                poses[::2].copy()
                if len(poses) > 1
                else np.repeat(poses, len(self.ego_fine[::2]), 0),
                motion,
                app or self.appearance(kind),
            )
        )
        return True


def _road_point(axis: int, c: float, along: np.ndarray, off: float) -> np.ndarray:
    """World xy of a point ``along`` a street (axis 0: y = c, along x; axis 1: x = c, along y)."""
    along = np.asarray(along, dtype=np.float64)
    other = np.full_like(along, c + off)
    return np.stack([along, other], -1) if axis == 0 else np.stack([other, along], -1)


def _rsign(axis: int) -> int:
    """Side (sign of the offset) that lies to the right of a car driving towards +along."""
    return -1 if axis == 0 else 1


def build_scene(cfg, index: int) -> Scene:
    """The world of scene ``index`` of ``cfg`` (a SynthConfig); same inputs, same world."""
    rng = np.random.default_rng([cfg.seed, index, 20240])
    layout = cfg.layouts[index % len(cfg.layouts)]
    condition = cfg.conditions[index % len(cfg.conditions)]
    location = cfg.locations[index % len(cfg.locations)]
    hand = -1 if LOCATIONS[location][2] else 1
    n_fine = 2 * cfg.keyframes - 1
    times = np.arange(n_fine) * DT / 2
    speed = float(rng.uniform(*cfg.ego_speed))

    if layout == "loop":
        ccw = bool(rng.integers(2))
        half = BLOCK / 2 + LANE * hand * (1 if ccw else -1)
        path = loop_path(BLOCK / 2, BLOCK / 2, half, 9.0, ccw)
        s0 = float(rng.uniform(0, path.length))
    else:
        d = 1 if rng.integers(2) else -1
        y_lane = LANE * hand * d * _rsign(0)
        path = Path([("line", 0.0, y_lane, 0.0 if d > 0 else math.pi, 1e4)], closed=False)
        s0 = float(rng.uniform(0.1, 0.9) * BLOCK)
    ego_fine = path.pose(s0 + speed * times)
    b = _Builder(rng, ego_fine, cfg.populate_range_m, cfg.annotate_range_m, hand, cfg.palette)
    # The ego: rear axle at the pose, body reaching 1.3 m behind it and 3.4 m ahead.
    fwd = np.stack([np.cos(ego_fine[:, 2]), np.sin(ego_fine[:, 2])], -1)
    ego_box = np.concatenate([ego_fine[:, :2] + 1.05 * fwd, ego_fine[:, 2:]], -1)
    b.occ.add(ego_box, 2.35 + 0.4, 1.0 + 0.3)

    lo = ego_fine[:, :2].min(0) - cfg.populate_range_m
    hi = ego_fine[:, :2].max(0) + cfg.populate_range_m
    bmin, bmax = np.floor(lo / BLOCK).astype(int), np.floor(hi / BLOCK).astype(int)
    shares = (1 - cfg.lot_share - cfg.park_share, cfg.lot_share, cfg.park_share)
    types = rng.choice(len(BLOCK_TYPES), size=tuple(bmax - bmin + 1), p=shares)
    blocks = BlockMap((int(bmin[0]), int(bmin[1])), types)

    _place_static(b, blocks, cfg.parking_share)
    _place_moving(b, path, s0, speed, times, cfg.moving_vehicles, bmin, bmax)
    _place_pedestrians(b, times, cfg.pedestrians, bmin, bmax)

    kinds = {a.kind for a in b.agents}
    words = [w for w, on in (("Night", condition == "night"), ("Rain", condition == "rain")) if on]
    words += ["loop with turns" if layout == "loop" else "straight road", "parked cars"]
    words += [
        w
        for w, on in (
            ("parking lot", (types == 1).any()),
            ("truck", "truck" in kinds),
            ("bus", "bus" in kinds),
            ("peds", "pedestrian" in kinds),
        )
        if on
    ]
    az, el = rng.uniform(0, 2 * math.pi), math.radians(rng.uniform(35, 60))
    sun = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    return Scene(
        index,
        layout,
        condition,
        location,
        ", ".join(words),
        ego_fine[::2].copy(),
        b.agents,
        blocks,
        sun,
        hand,
    )


def _place_static(b: _Builder, blocks: BlockMap, parking_share: float) -> None:
    """Buildings and parking lots inside blocks, rows of parked cars along kerbs."""
    rng = b.rng
    nx, ny = blocks.types.shape
    for i in range(nx):
        for j in range(ny):
            x0, y0 = (blocks.origin[0] + i) * BLOCK, (blocks.origin[1] + j) * BLOCK
            kind = BLOCK_TYPES[blocks.types[i, j]]
            if kind == "buildings":
                cell = (BLOCK - 2 * INTERIOR) / 3
                for ci in range(3):
                    for cj in range(3):
                        bw, bl = rng.uniform(12, cell - 2, size=2).round(2)
                        cx = x0 + INTERIOR + (ci + 0.5) * cell + rng.uniform(-1, 1)
                        cy = y0 + INTERIOR + (cj + 0.5) * cell + rng.uniform(-1, 1)
                        if b.distance_to_route(cx, cy) > b.reach + 20:
                            continue
                        h = round(float(rng.uniform(8, 30)), 2)
                        app = Appearance(f"facade{rng.integers(len(FACADES))}", "windows", "black")
                        b.place(
                            "building",
                            np.array([[cx, cy, 0.0]]),
                            "static",
                            (float(bw), float(bl), h),
                            app,
                            pad=0.0,
                        )
            elif kind == "lot":
                v = INTERIOR
                while v + LOT_BAND <= BLOCK - INTERIOR:
                    for dv, yaw in ((2.75, -math.pi / 2), (8.25, math.pi / 2)):
                        u = INTERIOR + STALL / 2
                        while u + STALL / 2 <= BLOCK - INTERIOR:
                            x, y = x0 + u + rng.uniform(-0.15, 0.15), y0 + v + dv
                            if rng.random() < 0.4 and b.distance_to_route(x, y) < b.reach:
                                yaw_ = yaw + math.radians(rng.uniform(-3, 3))
                                b.place("car", np.array([[x, y, yaw_]]), "parked", pad=0.05)
                            u += STALL
                    v += LOT_PERIOD
    # Kerbside rows: along every street segment within reach, each side with some probability.
    for axis in (0, 1):
        lo_c, hi_c = (
            blocks.origin[1 - axis],
            blocks.origin[1 - axis] + blocks.types.shape[1 - axis],
        )
        lo_a, hi_a = (blocks.origin[axis], blocks.origin[axis] + blocks.types.shape[axis])
        for c in range(lo_c, hi_c + 1):
            for seg in range(lo_a, hi_a):
                for side in (-1, 1):
                    if rng.random() >= parking_share:
                        continue
                    direction = side * b.hand * _rsign(axis)
                    yaw0 = (0.0 if axis == 0 else math.pi / 2) + (0.0 if direction > 0 else math.pi)
                    pos = seg * BLOCK + ROAD_HALF + KERB_GAP
                    end = (seg + 1) * BLOCK - ROAD_HALF - KERB_GAP
                    while True:
                        kind = "truck" if rng.random() < 0.1 else "car"
                        w, length, h = b.size(kind)
                        if pos + length > end:
                            break
                        along = pos + length / 2
                        pos += length + rng.uniform(0.8, 2.5)
                        if rng.random() < 0.25:  # an empty slot
                            continue
                        off = side * (ROAD_HALF - 0.25 - w / 2)
                        xy = _road_point(axis, c * BLOCK, np.array([along]), off)[0]
                        if b.distance_to_route(*xy) > b.reach:
                            continue
                        yaw = yaw0 + math.radians(rng.uniform(-1.5, 1.5))
                        b.place(
                            kind, np.array([[xy[0], xy[1], yaw]]), "parked", (w, length, h), pad=0.1
                        )


def _place_moving(
    b: _Builder,
    path: Path,
    s0: float,
    speed: float,
    times: np.ndarray,
    count: int,
    bmin: np.ndarray,
    bmax: np.ndarray,
) -> None:
    """Vehicles ahead of and behind the ego on its route, and straight traffic on other lanes."""
    rng = b.rng
    placed, tries = 0, 0
    while placed < count and tries < 40 * count:
        tries += 1
        kind = str(rng.choice(VEHICLES, p=[0.65, 0.2, 0.15]))
        if tries <= 3 * count and rng.random() < 0.3:  # on the ego's route, keeping its distance
            ahead = rng.random() < 0.5
            gap = rng.uniform(12, 40) * (1 if ahead else -1)
            v = speed + rng.uniform(0.0, 1.0) * (1 if ahead else -1)
            poses = path.pose(s0 + gap + v * times)
        else:
            axis = int(rng.integers(2))
            c = int(rng.integers(bmin[1 - axis], bmax[1 - axis] + 2)) * BLOCK
            direction = 1 if rng.random() < 0.5 else -1
            v = 0.0 if rng.random() < 0.08 else float(rng.uniform(5, 11))
            mid = b.ego_fine[len(times) // 2, axis] + rng.uniform(-70, 70)
            along = mid + direction * v * (times - times[len(times) // 2])
            xy = _road_point(axis, c, along, LANE * b.hand * direction * _rsign(axis))
            yaw = (0.0 if axis == 0 else math.pi / 2) + (0.0 if direction > 0 else math.pi)
            poses = np.concatenate([xy, np.full((len(times), 1), yaw)], -1)
        if np.hypot(*(poses[:, :2] - b.ego_fine[:, :2]).T).min() > b.near:
            continue
        moving = bool(np.abs(np.diff(poses[:, :2], axis=0)).sum() > 0)
        placed += b.place(kind, poses, "moving" if moving else "stopped", pad=0.4)


def _place_pedestrians(
    b: _Builder, times: np.ndarray, count: int, bmin: np.ndarray, bmax: np.ndarray
) -> None:
    """People walking (or standing) on the sidewalks near the ego."""
    rng = b.rng
    placed, tries = 0, 0
    while placed < count and tries < 40 * count:
        tries += 1
        axis = int(rng.integers(2))
        c = int(rng.integers(bmin[1 - axis], bmax[1 - axis] + 2)) * BLOCK
        side = 1 if rng.random() < 0.5 else -1
        v = (
            0.0
            if rng.random() < 0.25
            else float(rng.uniform(0.8, 1.6)) * (1 if rng.random() < 0.5 else -1)
        )
        mid = b.ego_fine[len(times) // 2, axis] + rng.uniform(-40, 40)
        along = mid + v * (times - times[len(times) // 2])
        xy = _road_point(axis, c, along, side * (ROAD_HALF + WALK / 2))
        yaw = (0.0 if axis == 0 else math.pi / 2) + (math.pi if v < 0 else 0.0)
        if v == 0:
            yaw = float(rng.uniform(-math.pi, math.pi))
        poses = np.concatenate([xy, np.full((len(times), 1), yaw)], -1)
        if np.hypot(*(poses[:, :2] - b.ego_fine[:, :2]).T).min() > b.near:
            continue
        placed += b.place("pedestrian", poses, "moving" if v else "standing", pad=0.1)
