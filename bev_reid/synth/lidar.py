"""LiDAR sweeps of the synthetic world by ray casting, in the LIDAR_TOP frame of nuScenes.

32 beams from -30.67 to +10.67 degrees elevation (nuScenes' Velodyne HDL-32E, ring 0 lowest) and
a fixed number of azimuth steps; points come column by column, as in the real files. A return is
the nearest hit of the ground plane and every agent's boxes; rays that hit nothing within range
give no point.
"""

from __future__ import annotations

import math

import numpy as np

from bev_reid.synth.render import shade_agent, slab
from bev_reid.synth.rig import LIDAR, sensor_pose
from bev_reid.synth.texture import ground_albedo
from bev_reid.synth.world import Scene

ELEVATION = (-30.67, 10.67)  # degrees, lowest and highest beam
MIN_RANGE = 1.0


class Lidar:
    def __init__(self, azimuth_steps: int, max_range: float, beams: int = 32) -> None:
        self.steps, self.beams, self.max_range = azimuth_steps, beams, max_range
        el = np.radians(np.linspace(*ELEVATION, beams))
        az = -math.pi + (np.arange(azimuth_steps) + 0.5) * (2 * math.pi / azimuth_steps)
        az_, el_ = np.meshgrid(az, el, indexing="ij")  # steps x beams: column by column
        self.ring = np.tile(np.arange(beams), azimuth_steps)
        self.d_sensor = np.stack(
            [np.cos(el_) * np.cos(az_), np.cos(el_) * np.sin(az_), np.sin(el_)], -1
        ).reshape(-1, 3)  # unit: t is the range in metres
        self.R, self.t = sensor_pose(LIDAR)  # sensor -> ego
        self.d_ego = self.d_sensor @ self.R.T
        with np.errstate(divide="ignore"):
            tg = np.where(self.d_ego[:, 2] < 0, -self.t[2] / self.d_ego[:, 2], np.inf)
        self.ground_t = np.where(tg <= max_range, tg, np.inf)

    def _columns(self, az_lo: float, az_hi: float) -> np.ndarray:
        step = 2 * math.pi / self.steps
        c0 = math.floor((az_lo + math.pi) / step - 0.5)
        c1 = math.ceil((az_hi + math.pi) / step - 0.5)
        return np.mod(np.arange(c0, c1 + 1), self.steps)

    def sweep(self, scene: Scene, k: int, agents: list[int], rng: np.random.Generator):
        """One sweep at keyframe k.

        Returns:
            points [N, 5] float32 (x, y, z, intensity, ring) in the sensor frame, and
            {agent index: number of its returns}.
        """
        ego = scene.ego[k]
        c, s = math.cos(ego[2]), math.sin(ego[2])
        o_w = np.array(
            [
                ego[0] + c * self.t[0] - s * self.t[1],
                ego[1] + s * self.t[0] + c * self.t[1],
                self.t[2],
            ]
        )
        best = self.ground_t.copy()
        owner = np.full(len(best), -1, dtype=np.int64)
        hits: dict[int, tuple] = {}
        for i in agents:
            a = scene.agents[i]
            x, y, yaw = a.poses[k]
            w, length, h = a.size
            if math.dist((x, y), o_w[:2]) > self.max_range + math.hypot(w, length) / 2:
                continue
            # azimuth span of the footprint, seen from the sensor, in the sensor frame
            cx = np.array([1, 1, -1, -1]) * length / 2
            cy = np.array([1, -1, -1, 1]) * w / 2
            corners = np.stack(
                [
                    x + math.cos(yaw) * cx - math.sin(yaw) * cy,
                    y + math.sin(yaw) * cx + math.cos(yaw) * cy,
                    np.zeros(4),
                ],
                -1,
            )
            p_s = ((corners - o_w) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])) @ self.R
            az = np.arctan2(p_s[:, 1], p_s[:, 0])
            mid = math.atan2(p_s[:, 1].mean(), p_s[:, 0].mean())
            rel = np.mod(az - mid + math.pi, 2 * math.pi) - math.pi
            cols = self._columns(mid + rel.min(), mid + rel.max())
            rays = (cols[:, None] * self.beams + np.arange(self.beams)).reshape(-1)
            cr, sr = math.cos(ego[2] - yaw), math.sin(ego[2] - yaw)  # ego -> body rotation
            ex, ey = self.d_ego[rays, 0], self.d_ego[rays, 1]
            d_body = (cr * ex - sr * ey, sr * ex + cr * ey, self.d_ego[rays, 2])
            ca, sa = math.cos(yaw), math.sin(yaw)
            o = np.array(
                [
                    ca * (o_w[0] - x) + sa * (o_w[1] - y),
                    -sa * (o_w[0] - x) + ca * (o_w[1] - y),
                    o_w[2],
                ]
            )
            t, part, axis, sign = slab(o, *d_body, a.parts)
            near = t < best[rays]
            best[rays[near]] = t[near]
            owner[rays[near]] = i
            hits[i] = (rays, t, part, axis, sign, o, d_body)

        keep = np.isfinite(best) & (best >= MIN_RANGE) & (best <= self.max_range)
        intensity = np.zeros(len(best), dtype=np.float32)
        g = keep & (owner < 0)
        p_ego = self.t + best[g, None] * self.d_ego[g]
        gxy = np.stack(
            [
                ego[0] + c * p_ego[:, 0] - s * p_ego[:, 1],
                ego[1] + s * p_ego[:, 0] + c * p_ego[:, 1],
            ],
            -1,
        )
        alb, retro = ground_albedo(gxy[:, 0], gxy[:, 1], scene.blocks)
        intensity[g] = 3.0 + 22.0 * alb.mean(1) + 60.0 * retro
        counts: dict[int, int] = {}
        for i, (rays, t, part, axis, sign, o, d_body) in hits.items():
            mine = (owner[rays] == i) & keep[rays]
            if not mine.any():
                continue
            counts[i] = int(mine.sum())
            _, alb, retro = shade_agent(
                scene,
                k,
                scene.agents[i],
                i,
                t[mine],
                part[mine],
                axis[mine],
                sign[mine],
                o,
                tuple(di[mine] for di in d_body),
            )
            intensity[rays[mine]] = 4.0 + 40.0 * alb.mean(1) + 90.0 * retro
        intensity += rng.normal(0.0, 1.5, len(intensity)).astype(np.float32)
        pts = best[keep, None] * self.d_sensor[keep]
        out = np.concatenate(
            [pts, np.clip(np.round(intensity[keep]), 0, 255)[:, None], self.ring[keep, None]], -1
        )
        return out.astype(np.float32), counts
