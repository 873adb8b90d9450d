"""Painted LiDAR (``build.lidar_colour``) against the devkit's way of colouring points.

    python benchmarks/bench_paint.py [--dataroot DIR] [--keyframes 8]

Per keyframe, every LiDAR point takes the colour of the camera pixel it falls in. Ours: the six
JPEGs decoded at 1 / ``PAINT_SCALE`` size (DCT scaling) and :func:`bev_reid.data.lidar.paint_points`
(one vectorised projection per camera, each point painted once). Reference: the devkit's
``map_pointcloud_to_image`` for each camera (it reads the cloud and the full-size image and
projects every point), then the pixel look-up. Before timing, the points each camera paints are
counted both ways: they must agree (up to the devkit's 1-pixel border and 1 m minimum depth).
Runs on the real scene when present, else on a synthetic world.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
from bench_box_raster import REAL, real_or_synthetic  # this folder is on sys.path
from bench_ops import timeit  # the same timing in every benchmark
from nuscenes.nuscenes import NuScenes

from bev_reid.config import DataConfig
from bev_reid.data.files import read_image
from bev_reid.data.keyframes import PAINT_SCALE
from bev_reid.data.lidar import paint_points
from bev_reid.data.nuscenes import NuScenesDB

CAMERAS = DataConfig().cameras


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataroot", default=str(REAL) if REAL.exists() else "")
    parser.add_argument("--keyframes", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, name = real_or_synthetic(args.dataroot, args.keyframes, tmp)
        db = NuScenesDB(root, "v1.0-mini")
        nusc = NuScenes("v1.0-mini", str(root), verbose=False)
        samples = nusc.sample[:: max(1, len(nusc.sample) // args.keyframes)][: args.keyframes]
        tokens = [s["token"] for s in samples]
        clouds = {t: db.lidar_points(t) for t in tokens}
        cameras = {t: [db.camera(t, ch) for ch in CAMERAS] for t in tokens}

        def ours(token: str, scale: int = PAINT_SCALE) -> np.ndarray:
            cams = cameras[token]
            images = [
                np.asarray(read_image(c.path, (c.width // scale, c.height // scale))) for c in cams
            ]
            return paint_points(clouds[token], cams, images)

        def reference(token: str) -> list[np.ndarray]:
            data = nusc.get("sample", token)["data"]
            out = []
            for ch in CAMERAS:
                uv, _, image = nusc.explorer.map_pointcloud_to_image(
                    data["LIDAR_TOP"], data[ch], min_dist=1.0
                )
                pixels = np.asarray(image)
                out.append(pixels[uv[1].astype(np.int64), uv[0].astype(np.int64)] / 255.0)
            return out

        # Per camera (the devkit paints a point once per camera that sees it, ours once in all)
        per_camera_ours, per_camera_ref = 0, 0
        for t in tokens:
            for cam in cameras[t]:
                image = np.asarray(read_image(cam.path))
                per_camera_ours += int(
                    np.isfinite(paint_points(clouds[t], [cam], [image])).all(1).sum()
                )
            per_camera_ref += sum(len(c) for c in reference(t))
        assert abs(per_camera_ours - per_camera_ref) < 0.01 * per_camera_ref, (
            per_camera_ours,
            per_camera_ref,
        )
        painted = sum(int(np.isfinite(ours(t)).all(1).sum()) for t in tokens)
        t_ours = timeit(lambda: [ours(t) for t in tokens], "cpu", 3)
        t_full = timeit(lambda: [ours(t, 1) for t in tokens], "cpu", 3)
        t_ref = timeit(lambda: [reference(t) for t in tokens], "cpu", 3)
        n, points = len(tokens), sum(len(p) for p in clouds.values())
        print(
            f"{name}: {n} keyframes, {points / n:.0f} points each, 6 cameras; "
            f"{painted / n:.0f} points painted per keyframe; per camera "
            f"{per_camera_ours / n:.0f} (devkit: {per_camera_ref / n:.0f})"
        )
        print(
            f"  ours, images at 1/{PAINT_SCALE}:            {1e3 * t_ours / n:8.1f} ms per keyframe"
        )
        print(f"  ours, full-size images:         {1e3 * t_full / n:8.1f} ms per keyframe")
        print(f"  devkit map_pointcloud_to_image: {1e3 * t_ref / n:8.1f} ms per keyframe")
        print(
            f"  speed-up over the devkit: {t_ref / t_ours:.1f}x (full-size: {t_ref / t_full:.1f}x)"
        )


if __name__ == "__main__":
    main()
