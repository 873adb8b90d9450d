"""Ray-cast rendering of a synthetic scene into the six nuScenes cameras.

Each camera casts one ray per pixel of a grid ``scale`` times coarser than 1600 x 900; ray (i, j)
passes through the full-resolution pixel centre (scale * i + (scale - 1) / 2, ...), which is where
bilinear upscaling (cv2.INTER_LINEAR) puts the coarse pixel, so the upscaled image stays consistent
with the 1600 x 900 intrinsics of the tables. Rays are intersected with the ground plane and with
every agent's boxes (slab test in the agent's body frame); a depth buffer keeps the nearest hit and
an agent-index buffer gives the visible share of each agent.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from bev_reid.synth.rig import CAMERAS, IMAGE_H, IMAGE_W, intrinsic, sensor_pose
from bev_reid.synth.texture import ground_albedo, haze, illumination, sky, surface
from bev_reid.synth.world import Agent, Scene

GROUND_FAR = 800.0  # ground beyond this distance is drawn as haze


def slab(o: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, parts: np.ndarray):
    """Nearest entry of rays into an agent's boxes.

    Args:
        o: [3] ray origin in the body frame (outside every box).
        dx, dy, dz: [n] ray directions in the body frame.
        parts: [P, 6] boxes (x0, x1, y0, y1, z0, z1).

    Returns:
        t [n] (inf where no hit, in units of |d|), part [n], axis [n] and sign [n] of the face hit.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = (1.0 / dx, 1.0 / dy, 1.0 / dz)
        best = np.full(len(dx), np.inf)
        part = np.zeros(len(dx), dtype=np.int64)
        axis = np.zeros(len(dx), dtype=np.int64)
        for k, box in enumerate(parts):
            near = far = None
            tmins = []
            for ax in range(3):
                t0 = (box[2 * ax] - o[ax]) * inv[ax]
                t1 = (box[2 * ax + 1] - o[ax]) * inv[ax]
                tmin, tmax = np.minimum(t0, t1), np.maximum(t0, t1)
                tmins.append(tmin)
                near = tmin if near is None else np.maximum(near, tmin)
                far = tmax if far is None else np.minimum(far, tmax)
            hit = (near <= far) & (near > 0) & (near < best)
            if not hit.any():
                continue
            best[hit] = near[hit]
            part[hit] = k
            nh = near[hit]
            axis[hit] = np.where(nh == tmins[0][hit], 0, np.where(nh == tmins[1][hit], 1, 2))
    d_axis = np.choose(axis, (dx, dy, dz))
    sign = np.where(d_axis > 0, -1, 1)
    return best, part, axis, sign


def shade_agent(
    scene: Scene,
    k: int,
    agent: Agent,
    index: int,
    t: np.ndarray,
    part,
    axis,
    sign,
    o: np.ndarray,
    d: tuple[np.ndarray, np.ndarray, np.ndarray],
):
    """Colour [n, 3], albedo [n, 3] and retro mask [n] of rays (body frame) hitting ``agent``."""
    p = np.stack([o[0] + t * d[0], o[1] + t * d[1], o[2] + t * d[2]], -1)
    alb, emit, retro = surface(agent, part, axis, sign, p, scene.condition == "night", index)
    x, y, yaw = agent.poses[k]
    c, s = math.cos(yaw), math.sin(yaw)
    nl = np.zeros((len(t), 3))
    nl[np.arange(len(t)), axis] = sign
    normal = np.stack([c * nl[:, 0] - s * nl[:, 1], s * nl[:, 0] + c * nl[:, 1], nl[:, 2]], -1)
    xy = np.stack([x + c * p[:, 0] - s * p[:, 1], y + s * p[:, 0] + c * p[:, 1]], -1)
    light = illumination(scene, scene.ego[k], normal, xy)
    return alb * light + emit, alb, retro


def box_corners(agents: list[Agent], k: int) -> np.ndarray:
    """[N, 8, 3] world corners of the agents' bodies at keyframe k."""
    size = np.array([a.size for a in agents]).reshape(-1, 3)
    pose = np.array([a.poses[k] for a in agents]).reshape(-1, 3)
    cx = np.array([1, 1, 1, 1, -1, -1, -1, -1]) * size[:, 1:2] / 2
    cy = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * size[:, 0:1] / 2
    cz = np.array([1, 1, 0, 0, 1, 1, 0, 0]) * size[:, 2:3]
    c, s = np.cos(pose[:, 2:3]), np.sin(pose[:, 2:3])
    return np.stack([pose[:, 0:1] + c * cx - s * cy, pose[:, 1:2] + s * cx + c * cy, cz], -1)


def _rz(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


_EDGES = np.array(
    [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]
)
NEAR = 0.05  # near plane, metres


class Camera:
    """One camera's pixel rays at the render resolution (constant over the dataset)."""

    def __init__(self, channel: str, scale: int) -> None:
        self.channel, self.scale = channel, scale
        self.w, self.h = IMAGE_W // scale, IMAGE_H // scale
        self.K = intrinsic(channel)
        self.R, self.t = sensor_pose(channel)  # camera -> ego
        u = scale * np.arange(self.w) + (scale - 1) / 2
        v = scale * np.arange(self.h) + (scale - 1) / 2
        uu, vv = np.meshgrid(u, v)
        f, cx, cy = self.K[0, 0], self.K[0, 2], self.K[1, 2]
        d_cam = np.stack([(uu - cx) / f, (vv - cy) / f, np.ones_like(uu)], -1)  # H x W x 3, z = 1
        d_ego = d_cam @ self.R.T  # H x W x 3: ray t is the depth along the optical axis
        self.dx, self.dy, self.dz = (np.ascontiguousarray(d_ego[..., i]) for i in range(3))
        self.metres = np.linalg.norm(d_cam, axis=-1)  # H x W: distance per unit of t
        with np.errstate(divide="ignore"):
            tg = np.where(self.dz < 0, -self.t[2] / self.dz, np.inf)
        tg[tg * self.metres > GROUND_FAR] = np.inf
        self.ground_t = tg  # H x W
        self.ground = np.isfinite(tg)
        self.ground_ego = self.t[:2] + tg[self.ground][:, None] * d_ego[self.ground][:, :2]  # G x 2
        self.elevation = self.dz / np.linalg.norm(d_ego, axis=-1)
        self._sky: dict[str, np.ndarray] = {}

    def sky(self, condition: str) -> np.ndarray:
        """[H, W, 3] sky colour of every ray (cached per condition)."""
        if condition not in self._sky:
            self._sky[condition] = sky(condition, self.elevation.ravel()).reshape(self.h, self.w, 3)
        return self._sky[condition]

    def to_grid(self, ego: np.ndarray, pts: np.ndarray) -> np.ndarray:
        """World points [..., 3] -> camera frame [..., 3]."""
        rz = _rz(ego[2])
        p_ego = (pts - np.array([ego[0], ego[1], 0.0])) @ rz  # R^T p as a row op
        return (p_ego - self.t) @ self.R

    def bounds(self, p_cam: np.ndarray) -> tuple[int, int, int, int] | None:
        """Render-grid window (c0, r0, c1, r1) that holds a box with corners p_cam [8, 3]."""
        z = p_cam[:, 2]
        if (z < NEAR).all():
            return None
        pts = p_cam[z >= NEAR]
        if (z < NEAR).any():  # clip the edges that cross the near plane
            a, b = p_cam[_EDGES[:, 0]], p_cam[_EDGES[:, 1]]
            cross = (a[:, 2] < NEAR) != (b[:, 2] < NEAR)
            a, b = a[cross], b[cross]
            f = (NEAR - a[:, 2:3]) / (b[:, 2:3] - a[:, 2:3])
            pts = np.concatenate([pts, a + f * (b - a)])
        uvw = pts @ self.K.T
        uv = (uvw[:, :2] / uvw[:, 2:3] - (self.scale - 1) / 2) / self.scale
        c0, r0 = np.floor(uv.min(0)).astype(int) - 1
        c1, r1 = np.ceil(uv.max(0)).astype(int) + 2
        c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, self.w), min(r1, self.h)
        if c0 >= c1 or r0 >= r1:
            return None
        return int(c0), int(r0), int(c1), int(r1)

    def render(self, scene: Scene, k: int, agents: list[int], corners: np.ndarray):
        """Renders keyframe k.

        Args:
            agents: indices of the agents to draw; corners: [len(agents), 8, 3] their world corners.

        Returns:
            rgb [H, W, 3] float32 in [0, 1] (render grid), ids [H, W] int (agent index or -1),
            unoccluded {agent: pixels its boxes cover in this image ignoring other agents}.
        """
        ego = scene.ego[k]
        ce, se = math.cos(ego[2]), math.sin(ego[2])
        c_w = np.array(
            [
                ego[0] + ce * self.t[0] - se * self.t[1],
                ego[1] + se * self.t[0] + ce * self.t[1],
                self.t[2],
            ]
        )
        depth = self.ground_t.copy()
        ids = np.full((self.h, self.w), -1, dtype=np.int64)
        rgb = self.sky(scene.condition).copy()
        g = self.ground
        gxy = self.ground_ego @ np.array([[ce, se], [-se, ce]]) + ego[:2]
        alb, _ = ground_albedo(gxy[:, 0], gxy[:, 1], scene.blocks)
        up = np.broadcast_to(np.array([0.0, 0.0, 1.0]), (len(gxy), 3))
        rgb[g] = alb * illumination(scene, ego, up, gxy)

        p_cam = self.to_grid(ego, corners)  # N x 8 x 3
        unoccluded: dict[int, int] = {}
        for n in np.argsort(p_cam[:, :, 2].min(1), kind="stable"):
            win = self.bounds(p_cam[n])
            if win is None:
                continue
            c0, r0, c1, r1 = win
            sub_depth = depth[r0:r1, c0:c1]
            if p_cam[n, :, 2].min() >= sub_depth.max():
                continue  # hidden behind what is drawn: no pixel, and a visible share of 0 anyway
            i = agents[n]
            a = scene.agents[i]
            x, y, yaw = a.poses[k]
            cr, sr = math.cos(ego[2] - yaw), math.sin(ego[2] - yaw)  # ego -> body rotation
            ex, ey = self.dx[r0:r1, c0:c1].ravel(), self.dy[r0:r1, c0:c1].ravel()
            d = (cr * ex - sr * ey, sr * ex + cr * ey, self.dz[r0:r1, c0:c1].ravel())
            cs, sn = math.cos(yaw), math.sin(yaw)
            o = np.array(
                [
                    cs * (c_w[0] - x) + sn * (c_w[1] - y),
                    -sn * (c_w[0] - x) + cs * (c_w[1] - y),
                    c_w[2],
                ]
            )
            t, part, axis, sign = slab(o, *d, a.parts)
            hit = np.isfinite(t)
            n_hit = int(hit.sum())
            if not n_hit:
                continue
            unoccluded[i] = n_hit
            vis = hit & (t < sub_depth.ravel())
            if not vis.any():
                continue
            colour, _, _ = shade_agent(
                scene,
                k,
                a,
                i,
                t[vis],
                part[vis],
                axis[vis],
                sign[vis],
                o,
                tuple(di[vis] for di in d),
            )
            rows, cols = np.divmod(np.flatnonzero(vis), c1 - c0)
            depth[r0 + rows, c0 + cols] = t[vis]
            ids[r0 + rows, c0 + cols] = i
            rgb[r0 + rows, c0 + cols] = colour
        return haze(scene.condition, rgb, depth * self.metres), ids, unoccluded


def make_cameras(scale: int) -> dict[str, Camera]:
    return {ch: Camera(ch, scale) for ch in CAMERAS}


def finish(rgb: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
    """Weather and sensor effects on a render-grid image, then upscaling to 1600 x 900.

    Returns:
        [900, 1600, 3] uint8 BGR (OpenCV order, ready for JPEG encoding).
    """
    h, w, _ = rgb.shape
    if condition == "rain":
        rgb = 0.55 * rgb + 0.45 * rgb.mean(-1, keepdims=True)
        n = int(0.012 * h * w)  # streaks: short slanted bright lines
        x0, y0 = rng.integers(0, w, n), rng.integers(0, h, n)
        length = rng.integers(3, 9, n)
        for step in range(8):
            m = step < length
            yy, xx = y0[m] + step, x0[m] + int(step * 0.3)
            ok = (yy < h) & (xx < w)
            rgb[yy[ok], xx[ok]] = 0.6 * rgb[yy[ok], xx[ok]] + 0.4 * 0.85
    grain = {"day": 2, "night": 4, "rain": 8}[condition]  # sensor noise, in 8-bit levels
    noise = rng.integers(-grain, grain + 1, rgb.shape, dtype=np.int8)
    img = np.clip(rgb * 255.0 + 0.5 + noise, 0.0, 255.0).astype(np.uint8)[..., ::-1]
    if (w, h) != (IMAGE_W, IMAGE_H):
        img = cv2.resize(img, (IMAGE_W, IMAGE_H), interpolation=cv2.INTER_LINEAR)
    return img
