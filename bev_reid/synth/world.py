"""What the synthetic world is made of: a street grid, routes, agents and their looks.

Plain geometry in a flat global frame (x east, y north, z up, metres, yaw about z); nothing here
draws a pixel. Streets run along x = i * BLOCK and y = j * BLOCK with two lanes each way; blocks
between them hold buildings, a parking lot or grass. Every agent is a union of boxes in its body
frame (x forward, y left, z up from the ground). `bev_reid.synth.populate` fills a scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BLOCK = 90.0  # distance between parallel street centres
ROAD_HALF = 7.0  # street centre to kerb: two 3.5 m lanes each way
LANE = 1.75  # centre of the inner lane from the street centre
WALK = 3.0  # sidewalk width
INTERIOR = ROAD_HALF + WALK + 1.0  # a block's interior starts this far from a street centre
KERB_GAP = 6.0  # parked rows stop this far from a crossing street's kerb
LOT_PERIOD, LOT_BAND, STALL = 18.0, 11.0, 2.7  # parking lot: double rows of perpendicular stalls
MARGIN = 0.002  # an annotation box exceeds the body by this much (see `Agent.annotation_box`)
GAP = 2 * MARGIN  # bodies float this high above the ground
DT = 0.5  # keyframe period, s (nuScenes keyframes are 2 Hz)

BLOCK_TYPES = ("buildings", "lot", "park")

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.82, 0.12, 0.12),
    "blue": (0.12, 0.30, 0.82),
    "yellow": (0.93, 0.80, 0.12),
    "green": (0.12, 0.62, 0.25),
    "orange": (0.96, 0.48, 0.08),
    "cyan": (0.10, 0.72, 0.80),
    "purple": (0.55, 0.20, 0.70),
    "pink": (0.93, 0.42, 0.66),
}
SECONDARY: dict[str, tuple[float, float, float]] = {
    **COLOURS,
    "white": (0.94, 0.94, 0.94),
    "black": (0.06, 0.06, 0.07),
}
PATTERNS = ("plain", "stripe", "two_tone", "checker", "band")
# The ``street`` palette (``synth.palette``): vehicle paints as streets show them, with roughly
# the shares of world car-colour surveys (white, black and greys make most of it). Many
# vehicles share a paint, so colour tells them apart far less than the vivid palette does.
STREET_PAINTS: dict[str, tuple[tuple[float, float, float], float]] = {
    "white": ((0.94, 0.94, 0.94), 0.33),
    "black": ((0.06, 0.06, 0.07), 0.19),
    "grey": ((0.42, 0.43, 0.45), 0.10),
    "graphite": ((0.22, 0.23, 0.25), 0.09),
    "silver": ((0.68, 0.69, 0.71), 0.10),
    "navy": ((0.10, 0.16, 0.36), 0.07),
    "maroon": ((0.52, 0.08, 0.09), 0.07),
    "beige": ((0.70, 0.62, 0.48), 0.03),
    "forest": ((0.12, 0.28, 0.18), 0.02),
}
STREET_PATTERNS = {"plain": 0.8, "two_tone": 0.2}  # two-tone: a roof and cab of black or white
FACADES = ((0.76, 0.70, 0.60), (0.62, 0.62, 0.64), (0.70, 0.58, 0.48), (0.60, 0.66, 0.72))

# kind -> ((w lo, w hi), (l lo, l hi), (h lo, h hi)), metres
SIZES = {
    "car": ((1.70, 2.00), (3.90, 5.00), (1.42, 1.85)),
    "truck": ((2.20, 2.55), (5.50, 8.50), (2.60, 3.40)),
    "bus": ((2.50, 2.60), (10.0, 12.5), (3.00, 3.40)),
    "pedestrian": ((0.55, 0.70), (0.50, 0.70), (1.55, 1.90)),
}
VEHICLES = ("car", "truck", "bus")


@dataclass(frozen=True)
class Appearance:
    """What identifies an agent besides its size: colour, pattern, secondary colour."""

    colour: str
    pattern: str
    secondary: str

    @property
    def rgb(self) -> np.ndarray:
        if self.colour in SECONDARY:
            return np.asarray(SECONDARY[self.colour])
        if self.colour in STREET_PAINTS:
            return np.asarray(STREET_PAINTS[self.colour][0])
        return np.asarray(FACADES[int(self.colour[-1])])

    @property
    def rgb2(self) -> np.ndarray:
        return np.asarray(SECONDARY[self.secondary])


@dataclass
class Agent:
    """One thing in the world. ``poses`` is K x 3 (x, y, yaw) at the keyframes."""

    kind: str  # car / truck / bus / pedestrian / building
    size: tuple[float, float, float]  # (w, l, h) of the body, metres
    parts: np.ndarray  # P x 6 boxes (x0, x1, y0, y1, z0, z1) in the body frame
    poses: np.ndarray
    motion: str  # parked / moving / stopped / standing / static
    app: Appearance

    @property
    def annotated(self) -> bool:
        return self.kind != "building"

    def annotation_box(self, k: int) -> tuple[list[float], list[float], float]:
        """(centre xyz, size wlh, yaw) at keyframe k.

        The box is the body (which spans z in [GAP, h]) grown by MARGIN on every side, so it spans
        z in [MARGIN, h + MARGIN]: every LiDAR return on the body lies strictly inside it and no
        ground return (z = 0) does, so the devkit's points_in_box counts exactly the rays that hit
        this agent.
        """
        w, length, h = self.size
        x, y, yaw = self.poses[k]
        centre = [round(float(x), 3), round(float(y), 3), round(h / 2 + MARGIN, 3)]
        return centre, [round(w + 2 * MARGIN, 3), round(length + 2 * MARGIN, 3), h], float(yaw)


@dataclass
class Scene:
    index: int
    layout: str
    condition: str  # day / night / rain
    location: str
    description: str
    ego: np.ndarray  # K x 3 (x, y, yaw) at the keyframes
    agents: list[Agent]
    blocks: BlockMap
    sun: np.ndarray  # unit vector towards the sun
    hand: int  # +1 drives on the right, -1 on the left


@dataclass
class BlockMap:
    """Block type per block index (bx, by) over a window; outside the window: buildings."""

    origin: tuple[int, int]
    types: np.ndarray  # NX x NY int (index into BLOCK_TYPES)

    def lookup(self, bx: np.ndarray, by: np.ndarray) -> np.ndarray:
        i, j = bx - self.origin[0], by - self.origin[1]
        nx, ny = self.types.shape
        inside = (i >= 0) & (i < nx) & (j >= 0) & (j < ny)
        out = np.zeros(np.shape(bx), dtype=np.int64)
        out[inside] = self.types[i[inside], j[inside]]
        return out


def parts_of(kind: str, w: float, length: float, h: float) -> np.ndarray:
    """The boxes an agent is made of; their union spans [-l/2, l/2] x [-w/2, w/2] x [GAP, h].

    Bodies float GAP above the ground, so no LiDAR return on a body lies at ground height.
    """
    g = GAP
    if kind == "car":
        hb = round(0.55 * h, 3)
        return np.array(
            [
                [-length / 2, length / 2, -w / 2, w / 2, g, hb],
                [-0.30 * length, 0.18 * length, -w / 2 + 0.1, w / 2 - 0.1, hb, h],
            ]
        )
    if kind == "truck":
        return np.array(
            [
                [length / 2 - 2.2, length / 2, -w / 2, w / 2, g, 0.8 * h],
                [-length / 2, length / 2 - 2.4, -w / 2, w / 2, g, h],
            ]
        )
    return np.array([[-length / 2, length / 2, -w / 2, w / 2, g, h]])


class Path:
    """A route of lines and circular arcs, evaluated by arc length; closed routes wrap."""

    def __init__(self, pieces: list[tuple], closed: bool, reverse: bool = False) -> None:
        self.pieces = pieces  # ("line", x0, y0, yaw, L) | ("arc", cx, cy, r, a0, turn, L)
        self.starts = np.cumsum([0.0] + [p[-1] for p in pieces])
        self.length = float(self.starts[-1])
        self.closed, self.reverse = closed, reverse

    def pose(self, s: np.ndarray) -> np.ndarray:
        """[..., 3] (x, y, yaw) at arc lengths ``s`` [...]."""
        s = np.asarray(s, dtype=np.float64)
        if self.reverse:
            s = self.length - s
        if self.closed:
            s = np.mod(s, self.length)
        idx = np.clip(np.searchsorted(self.starts, s, side="right") - 1, 0, len(self.pieces) - 1)
        out = np.zeros(s.shape + (3,))
        for i, p in enumerate(self.pieces):
            m = idx == i
            ds = s[m] - self.starts[i]
            if p[0] == "line":
                _, x0, y0, yaw, _ = p
                out[m] = np.stack(
                    [x0 + ds * math.cos(yaw), y0 + ds * math.sin(yaw), np.full_like(ds, yaw)], -1
                )
            else:
                _, cx, cy, r, a0, turn, _ = p
                a = a0 + turn * ds / r
                out[m] = np.stack(
                    [cx + r * np.cos(a), cy + r * np.sin(a), a + turn * math.pi / 2], -1
                )
        if self.reverse:
            out[..., 2] += math.pi
        out[..., 2] = np.mod(out[..., 2] + math.pi, 2 * math.pi) - math.pi
        return out


def loop_path(cx: float, cy: float, half: float, radius: float, ccw: bool) -> Path:
    """A rounded square around (cx, cy): four straights joined by quarter turns."""
    pieces: list[tuple] = []
    for k in range(4):
        yaw = k * math.pi / 2
        c, s = math.cos(yaw), math.sin(yaw)
        sx, sy = -half + radius, -half  # start of the straight, in the side's own frame
        ax, ay = half - radius, -half + radius  # centre of the following arc
        pieces.append(
            ("line", cx + c * sx - s * sy, cy + s * sx + c * sy, yaw, 2 * (half - radius))
        )
        pieces.append(
            (
                "arc",
                cx + c * ax - s * ay,
                cy + s * ax + c * ay,
                radius,
                yaw - math.pi / 2,
                1,
                math.pi * radius / 2,
            )
        )
    return Path(pieces, closed=True, reverse=not ccw)
