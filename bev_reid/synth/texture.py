"""What surfaces of the synthetic world look like: ground and agent textures, light, sky, haze.

Colours are display RGB in [0, 1]. Every function takes flat arrays of surface points and returns
per-point values, so the camera renderer and the LiDAR share them (the LiDAR turns albedo into
intensity, and ``retro`` marks retro-reflective paint, lamps and plates that return strongly).
"""

from __future__ import annotations

import numpy as np

from bev_reid.synth.world import (
    BLOCK,
    INTERIOR,
    LOT_BAND,
    LOT_PERIOD,
    ROAD_HALF,
    STALL,
    WALK,
    Agent,
    BlockMap,
    Scene,
)

_NOISE = np.random.default_rng(12345).uniform(-1.0, 1.0, size=(256, 256)).astype(np.float32)
LAMP_SPACING = 30.0  # street lamps along both kerbs of every street
GLASS = np.array([0.10, 0.12, 0.16], dtype=np.float32)
TYRE = np.array([0.05, 0.05, 0.05], dtype=np.float32)
DARK = np.array([0.13, 0.13, 0.14], dtype=np.float32)
WHITE = np.array([0.92, 0.92, 0.88], dtype=np.float32)
RED = np.array([0.75, 0.06, 0.05], dtype=np.float32)
HEADLIGHT = np.array([1.6, 1.5, 1.2], dtype=np.float32)
TAILLIGHT = np.array([1.3, 0.12, 0.08], dtype=np.float32)

SKY = {  # condition -> (horizon, zenith)
    "day": ((0.80, 0.85, 0.92), (0.36, 0.55, 0.86)),
    "rain": ((0.62, 0.64, 0.66), (0.48, 0.50, 0.54)),
    "night": ((0.07, 0.07, 0.10), (0.01, 0.01, 0.03)),
}
HAZE = {"day": 260.0, "rain": 70.0, "night": 140.0}  # metres to fade by 1/e into the horizon colour


def _noise(x: np.ndarray, y: np.ndarray, per_metre: float) -> np.ndarray:
    return _NOISE[(x * per_metre).astype(np.int64) & 255, (y * per_metre).astype(np.int64) & 255]


def ground_albedo(x: np.ndarray, y: np.ndarray, blocks: BlockMap) -> tuple[np.ndarray, np.ndarray]:
    """Albedo [n, 3] and retro-reflective mask [n] of the ground at world points (x, y) [n]."""
    col = np.empty((len(x), 3), dtype=np.float32)
    dy = y - np.round(y / BLOCK) * BLOCK  # offset from the nearest street along x
    dx = x - np.round(x / BLOCK) * BLOCK
    ady, adx = np.abs(dy), np.abs(dx)
    road = (ady < ROAD_HALF) | (adx < ROAD_HALF)
    walk = ~road & ((ady < ROAD_HALF + WALK) | (adx < ROAD_HALF + WALK))
    grain = 1.0 + 0.07 * _noise(x, y, 4.0) + 0.05 * _noise(x, y, 0.4)
    col[:] = np.array([0.34, 0.34, 0.36], dtype=np.float32)
    retro = np.zeros(len(x), dtype=bool)
    for along, off, cross in ((x, ady, adx), (y, adx, ady)):
        seg = (off < ROAD_HALF) & (cross > ROAD_HALF + 0.5)  # on this street, not in a crossing
        yellow = seg & (np.abs(off - 0.15) < 0.07)
        white = (
            seg & (np.abs(off - 3.5) < 0.07) & (np.mod(along, 9.0) < 4.5) & (cross > ROAD_HALF + 4)
        )
        white |= seg & (np.abs(off - (ROAD_HALF - 0.3)) < 0.08)
        zebra = (off < ROAD_HALF - 0.6) & (cross > ROAD_HALF + 0.8) & (cross < ROAD_HALF + 3.8)
        white |= zebra & (np.mod(off, 1.1) < 0.55)
        col[yellow] = (0.85, 0.70, 0.15)
        col[white] = (0.88, 0.88, 0.86)
        retro |= yellow | white
    kerb = walk & (np.minimum(ady, adx) < ROAD_HALF + 0.25)
    col[walk] = (0.62, 0.60, 0.56)
    seam = walk & ((np.mod(x, 1.5) < 0.06) | (np.mod(y, 1.5) < 0.06))
    col[seam] = (0.50, 0.49, 0.46)
    col[kerb] = (0.74, 0.74, 0.72)

    inner = ~road & ~walk
    bx, by = (
        np.floor(x[inner] / BLOCK).astype(np.int64),
        np.floor(y[inner] / BLOCK).astype(np.int64),
    )
    kind = blocks.lookup(bx, by)
    u, v = x[inner] - bx * BLOCK, y[inner] - by * BLOCK
    c = np.empty((len(u), 3), dtype=np.float32)
    c[:] = (0.56, 0.54, 0.50)  # pavement around buildings
    c[kind == 2] = (0.24, 0.42, 0.17)  # grass
    lot = kind == 1
    c[lot] = (0.29, 0.29, 0.31)
    q = np.mod(v - INTERIOR, LOT_PERIOD)
    in_lot = (u > INTERIOR) & (u < BLOCK - INTERIOR) & (v > INTERIOR) & (v < BLOCK - INTERIOR)
    line = (
        lot
        & in_lot
        & (q < LOT_BAND)
        & ((np.mod(u - INTERIOR, STALL) < 0.1) | (np.abs(q - LOT_BAND / 2) < 0.06))
    )
    c[line] = (0.85, 0.85, 0.82)
    col[inner] = c
    retro[np.flatnonzero(inner)[line]] = True
    return col * grain[:, None].astype(np.float32), retro


def surface(
    agent: Agent,
    part: np.ndarray,
    axis: np.ndarray,
    sign: np.ndarray,
    p: np.ndarray,
    night: bool,
    salt: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Albedo [n, 3], emission [n, 3] and retro mask [n] of an agent's surface.

    Args:
        part, axis, sign: [n] which box of the agent, and which face (axis 0/1/2 = x/y/z of the
            body frame, sign of its outward normal).
        p: [n, 3] hit points in the body frame (x forward, y left, z up from the ground).
        night: lights on (moving vehicles) and lit windows.
        salt: a per-agent integer for window lighting.
    """
    n = len(part)
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    w, length, h = agent.size
    col = np.empty((n, 3), dtype=np.float32)
    col[:] = agent.app.rgb.astype(np.float32)
    emit = np.zeros((n, 3), dtype=np.float32)
    retro = np.zeros(n, dtype=bool)
    side, top = axis == 1, (axis == 2) & (sign > 0)
    front, back = (axis == 0) & (sign > 0), (axis == 0) & (sign < 0)
    if agent.kind == "building":
        u = np.where(axis == 0, y, x)
        win = (axis < 2) & (z > 3.0) & (np.mod(z, 3.3) > 1.0) & (np.mod(z, 3.3) < 2.5)
        win &= (np.mod(u, 2.8) > 0.6) & (np.mod(u, 2.8) < 2.2)
        col[win] = (0.26, 0.31, 0.37)
        col[top] = (0.45, 0.45, 0.46)
        if night:
            key = (
                (np.floor(z / 3.3).astype(np.int64) * 73856093)
                ^ (np.floor(u / 2.8).astype(np.int64) * 19349663)
                ^ (salt * 83492791)
            )
            lit = win & (np.mod(key, 100) < 35)
            emit[lit] = (0.80, 0.66, 0.36)
        return col, emit, retro
    if agent.kind == "pedestrian":
        col[z < 0.47 * h] = agent.app.rgb2
        head = z > 0.86 * h
        col[head] = (0.78, 0.60, 0.48)
        col[head & top] = (0.12, 0.09, 0.07)
        return col, emit, retro

    c2 = agent.app.rgb2.astype(np.float32)
    pattern = agent.app.pattern
    lights = night and agent.motion in ("moving", "stopped")
    parts = agent.parts
    if agent.kind == "car":
        hb = parts[0, 5]
        body, cab = part == 0, part == 1
        low, hl_lo, hl_hi, wheels, r = (
            hb,
            0.6 * hb,
            0.85 * hb,
            (0.33 * length, -0.33 * length),
            min(0.34, 0.6 * hb),
        )
    elif agent.kind == "truck":
        body, cab = part == 1, part == 0
        low, hl_lo, hl_hi = 0.45 * h, 0.18 * h, 0.26 * h
        wheels, r = (length / 2 - 1.1, -length / 2 + 1.2, -length / 2 + 2.5), 0.48
    else:  # bus: one box; "cab" is its window band
        body, cab = part == 0, np.zeros(n, dtype=bool)
        low, hl_lo, hl_hi, wheels, r = (
            0.45 * h,
            0.14 * h,
            0.22 * h,
            (length / 2 - 2.2, -length / 2 + 2.4),
            0.5,
        )
    u_side = np.where(side | top, x, y)  # along the face
    v_face = np.where(top, y, z)
    if pattern == "stripe":
        col[(top | front | back) & (np.abs(y) < 0.22)] = c2
        col[body & side & (np.abs(z - 0.8 * low) < 0.06 * low)] = c2
    elif pattern == "two_tone":
        col[cab | (top & (z > 0.9 * h))] = c2
    elif pattern == "checker":
        sq = 0.5 if agent.kind == "car" else 0.8
        chk = (np.floor(u_side / sq) + np.floor(v_face / sq)) % 2 == 0
        col[(body | top) & (side | top) & chk] = c2
    elif pattern == "band":
        col[body & (side | front | back) & (z > 0.45 * low) & (z < 0.72 * low)] = c2
    if agent.kind == "car":
        x0, x1 = parts[1, 0], parts[1, 1]
        col[cab & side & (z > hb + 0.06) & (z < h - 0.07) & (x > x0 + 0.12) & (x < x1 - 0.12)] = (
            GLASS
        )
        col[
            cab & (front | back) & (np.abs(y) < w / 2 - 0.25) & (z > hb + 0.05) & (z < h - 0.08)
        ] = GLASS
        col[body & front & (np.abs(y) < w / 2 - 0.5) & (z > 0.3 * hb) & (z < 0.55 * hb)] = DARK
    elif agent.kind == "truck":
        hc = parts[0, 5]
        col[cab & front & (z > 0.5 * hc) & (z < hc - 0.1) & (np.abs(y) < w / 2 - 0.15)] = GLASS
        col[cab & side & (z > 0.5 * hc) & (z < hc - 0.1) & (x > length / 2 - 1.4)] = GLASS
    else:
        band = side & (z > 0.5 * h) & (z < 0.85 * h) & (np.mod(x, 1.6) > 0.15)
        col[band | (front & (z > 0.4 * h) & (z < 0.9 * h) & (np.abs(y) < w / 2 - 0.1))] = GLASS
        col[back & (z > 0.6 * h) & (z < 0.85 * h) & (np.abs(y) < w / 2 - 0.2)] = GLASS
    on_side = side & (z < 2 * r + 0.05)
    for xc in wheels:
        d2 = (x - xc) ** 2 + (z - r) ** 2
        col[on_side & (d2 < r * r)] = TYRE
        col[on_side & (d2 < (0.45 * r) ** 2)] = (0.55, 0.55, 0.56)
    col[side & (z < 0.09) & ((x - wheels[0]) ** 2 > r * r)] = DARK
    lamp = (np.abs(y) > w / 2 - 0.42) & (np.abs(y) < w / 2 - 0.07) & (z > hl_lo) & (z < hl_hi)
    head, tail = front & lamp & ~cab, back & lamp & ~cab
    col[head], col[tail] = WHITE, RED
    plate = back & (np.abs(y) < 0.26) & (z > 0.3 * low) & (z < 0.45 * low)
    col[plate] = WHITE
    retro |= head | tail | plate
    if lights:
        emit[head], emit[tail] = HEADLIGHT, TAILLIGHT
    return col, emit, retro


def illumination(scene: Scene, ego: np.ndarray, normal: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Light [n, 1] falling on surfaces with world normals [n, 3] at world points xy [n, 2]."""
    if scene.condition != "night":
        direct, ambient = (0.55, 0.50) if scene.condition == "day" else (0.15, 0.66)
        return (ambient + direct * np.clip(normal @ scene.sun, 0.0, None))[:, None].astype(
            np.float32
        )
    x, y = xy[:, 0], xy[:, 1]
    light = np.full(len(x), 0.05)
    for along, off in ((x, y), (y, x)):  # lamps on both kerbs of every street
        d_off = np.abs(off - np.round(off / BLOCK) * BLOCK) - (ROAD_HALF + 0.5)
        d_along = along - np.round(along / LAMP_SPACING) * LAMP_SPACING
        light += 0.75 / (1.0 + (d_off**2 + d_along**2) / 30.0)
    c, s = np.cos(ego[2]), np.sin(ego[2])
    fx = c * (x - ego[0]) + s * (y - ego[1]) - 3.5  # ahead of the ego's bumper
    fy = -s * (x - ego[0]) + c * (y - ego[1])
    beam = np.exp(-((fy / (1.0 + 0.32 * np.clip(fx, 0, None))) ** 2)) / (1.0 + (fx / 22.0) ** 2)
    light += 1.4 * beam * np.clip(fx / 2.0 + 0.5, 0.0, 1.0)
    return light[:, None].astype(np.float32)


def sky(condition: str, elevation: np.ndarray) -> np.ndarray:
    """Sky colour [n, 3] for view rays at sines of elevation [n]."""
    lo, hi = (np.asarray(c, dtype=np.float32) for c in SKY[condition])
    t = np.clip(elevation / 0.35, 0.0, 1.0)[:, None].astype(np.float32)
    return lo + (hi - lo) * np.sqrt(t)


def haze(condition: str, colour: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Fades colours [..., 3] seen at distances [...] (metres; inf: the sky) into the horizon."""
    f = np.exp(-distance / HAZE[condition])[..., None].astype(np.float32)
    f[~np.isfinite(distance)] = 1.0
    return colour * f + np.asarray(SKY[condition][0], dtype=np.float32) * (1 - f)
