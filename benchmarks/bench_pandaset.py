"""The PandaSet converter: where a frame's time goes, and ``num_lidar_pts`` against references.

    python benchmarks/bench_pandaset.py [--src SEQ_DIR] [--frames 0 1 2] [--repeat 5]

Counting the LiDAR points in every cuboid is the converter's only heavy loop (106k points and
~110 cuboids per frame). Ours: :func:`bev_reid.data.pandaset.geometry.count_points_in_boxes`
(points sorted by x once, each box tests only the slice within its radius). References, measured
in the same run on the same frames: the plain per-box numpy test of every point, and the nuScenes
devkit's ``points_in_box`` per box (boxes in the world frame). All three are checked to agree
before timing. Then one whole frame's conversion (read, transform, write, copy the images) is
timed, split into its parts. Runs on the PandaSet excerpt (``../shared/data/pandaset-excerpt``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from nuscenes.utils.data_classes import Box
from nuscenes.utils.geometry_utils import points_in_box
from pyquaternion import Quaternion

from bev_reid.config import PandaSetConfig
from bev_reid.data.pandaset.conventions import box_yaw
from bev_reid.data.pandaset.convert import convert_pandaset
from bev_reid.data.pandaset.geometry import count_points_in_boxes, to_box_frames
from bev_reid.data.pandaset.read import Sequence

EXCERPT = Path(__file__).resolve().parents[2] / "shared" / "data" / "pandaset-excerpt" / "002"


def timeit(fn, repeat: int) -> float:
    """Median wall time of ``fn()`` in seconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def per_box_numpy(points, center, dims, yaw) -> np.ndarray:
    """Every point against every box, one box at a time."""
    out = np.zeros(len(center), np.int64)
    for b in range(len(center)):
        local = to_box_frames(points, center[b], float(yaw[b]))
        out[b] = int(np.all(np.abs(local) <= dims[b] / 2, axis=1).sum())
    return out


def devkit(points, center, dims, yaw) -> np.ndarray:
    """The devkit's way: a Box per cuboid (size w, l, h; front along +x) and points_in_box."""
    out = np.zeros(len(center), np.int64)
    pts = points.T
    for b in range(len(center)):
        box = Box(center[b], dims[b], Quaternion(axis=[0, 0, 1], angle=box_yaw(yaw[b])))
        out[b] = int(points_in_box(box, pts).sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default=str(EXCERPT), help="a PandaSet sequence folder")
    parser.add_argument("--frames", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    seq = Sequence(args.src)
    print(f"PandaSet sequence {seq.name}, frames {args.frames}")
    ours_t, numpy_t, devkit_t = [], [], []
    for k in args.frames:
        sweep = seq.lidar(k)
        xyz = sweep.xyz[sweep.sensor == 0]
        cub = seq.cuboids(k)
        c = cub[["position.x", "position.y", "position.z"]].to_numpy(float)
        d = cub[["dimensions.x", "dimensions.y", "dimensions.z"]].to_numpy(float)
        y = cub["yaw"].to_numpy(float)
        ours = count_points_in_boxes(xyz, c, d, y)
        assert np.array_equal(ours, per_box_numpy(xyz, c, d, y)), "ours != per-box numpy"
        assert np.abs(ours - devkit(xyz, c, d, y)).sum() <= 0.001 * ours.sum(), "ours != devkit"
        ours_t.append(timeit(lambda: count_points_in_boxes(xyz, c, d, y), args.repeat))  # noqa: B023
        numpy_t.append(timeit(lambda: per_box_numpy(xyz, c, d, y), args.repeat))  # noqa: B023
        devkit_t.append(timeit(lambda: devkit(xyz, c, d, y), args.repeat))  # noqa: B023
        print(f"  frame {k:02d}: {len(xyz)} points, {len(c)} cuboids, {ours.sum()} in boxes")
    o, n, dv = (statistics.mean(t) * 1e3 for t in (ours_t, numpy_t, devkit_t))
    print("num_lidar_pts per frame (ms, mean over frames of the median of runs):")
    print(f"  ours (sorted x, slice per box) {o:8.1f}")
    print(f"  per-box numpy, every point     {n:8.1f}   ours is {n / o:.1f}x faster")
    print(f"  devkit points_in_box per box   {dv:8.1f}   ours is {dv / o:.1f}x faster")

    read_t = statistics.mean(
        timeit(lambda: (seq.lidar(k), seq.cuboids(k)), args.repeat)  # noqa: B023
        for k in args.frames
    )
    with tempfile.TemporaryDirectory() as tmp:
        cfg = PandaSetConfig(src=(args.src,), out=tmp, frames=tuple(args.frames))
        t = time.perf_counter()
        summary = convert_pandaset(cfg, progress=False)
        total = time.perf_counter() - t
    per_frame = total / len(args.frames)
    print(
        f"whole conversion: {total:.2f} s for {len(args.frames)} frames "
        f"({per_frame * 1e3:.0f} ms a frame); reading the two "
        f"pickles {read_t * 1e3:.0f} ms a frame ({read_t / per_frame:.0%}), "
        f"num_lidar_pts {o:.0f} ms ({o / 1e3 / per_frame:.0%})"
    )
    print(f"summary: {summary.lines()[0]}")


if __name__ == "__main__":
    main()
