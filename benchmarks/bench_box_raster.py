"""LiDAR box raster (``build.lidar_raster = box``) against a per-box numpy implementation.

    python benchmarks/bench_box_raster.py [--dataroot DIR] [--keyframes 8] [--cell 0.25]

Per keyframe, every vehicle box is rasterised from the keyframe's LiDAR points into S x S crop
cells in its own frame. Ours: :func:`bev_reid.reid.crops.lidar_box_crops` (all boxes at once,
cells from the compiled ``dynamic_voxelize``). Reference: the plain way, one box at a time in
numpy (transform every point, mask, ``bincount`` per channel). The grid raster path
(:func:`bev_reid.data.lidar.lidar_bev_rasters` + ``crop_boxes``) is timed too, for scale. Both
box rasters are checked to agree before timing. Runs on the real scene when present, else on a
synthetic world.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bev_reid.config import GridConfig, SynthConfig
from bev_reid.data.lidar import lidar_bev_rasters
from bev_reid.data.nuscenes import NuScenesDB
from bev_reid.reid.crops import crop_boxes, lidar_box_crops
from bev_reid.synth.generate import generate_world

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "nuscenes-mini"
BANDS = (0.5, 1.0, 1.5)
MARGIN = 0.25


def numpy_box_raster(points: np.ndarray, boxes: dict, size: int, cell: float) -> np.ndarray:
    """One box at a time: the straightforward numpy version of lidar_box_crops."""
    k, nb = len(boxes["yaw"]), len(BANDS) + 1
    out = np.zeros((k, 3 + nb, size * size), np.float32)
    half = size * cell / 2
    for i in range(k):
        c, s = np.cos(boxes["yaw"][i]), np.sin(boxes["yaw"][i])
        d = points[:, :2] - boxes["center"][i]
        u, v = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
        rz = points[:, 2] - boxes["bottom"][i]
        m = (rz >= -MARGIN) & (rz <= boxes["height"][i] + MARGIN)
        m &= (np.abs(u) < half) & (np.abs(v) < half)
        m &= np.abs(u) <= boxes["length"][i] / 2 + MARGIN
        m &= np.abs(v) <= boxes["width"][i] / 2 + MARGIN
        a = np.floor((u[m] + half) / cell).astype(np.int64)
        b = np.floor((v[m] + half) / cell).astype(np.int64)
        flat, rz_m = a * size + b, rz[m]
        count = np.bincount(flat, minlength=size * size)
        out[i, 0] = count > 0
        np.maximum.at(out[i, 1], flat, np.maximum(rz_m, 0))
        out[i, 2] = np.bincount(flat, points[m, 3], size * size) / np.maximum(count, 1)
        band = np.searchsorted(BANDS, rz_m, side="right")
        for j in range(nb):
            out[i, 3 + j] = np.log1p(np.bincount(flat[band == j], minlength=size * size))
    return out.reshape(k, 3 + nb, size, size)


def keyframes(db: NuScenesDB, count: int) -> list[tuple[np.ndarray, dict]]:
    grid = GridConfig()
    out = []
    samples = db.nusc.sample[:: max(1, len(db.nusc.sample) // count)][:count]
    for sample in samples:
        cars = [
            b
            for b in db.boxes(sample["token"])
            if b.category.startswith("vehicle")
            and grid.xbound[0] <= b.center[0] < grid.xbound[1]
            and grid.ybound[0] <= b.center[1] < grid.ybound[1]
        ]
        boxes = {
            "center": np.array([b.center[:2] for b in cars], np.float32).reshape(-1, 2),
            "yaw": np.array([b.yaw for b in cars], np.float32),
            "length": np.array([b.wlh[1] for b in cars], np.float32),
            "width": np.array([b.wlh[0] for b in cars], np.float32),
            "bottom": np.array([b.center[2] - b.wlh[2] / 2 for b in cars], np.float32),
            "height": np.array([b.wlh[2] for b in cars], np.float32),
        }
        out.append((db.lidar_points(sample["token"]), boxes))
    return out


def real_or_synthetic(dataroot: str, keyframes: int, tmp: str) -> tuple[str | Path, str]:
    """(root, name): ``dataroot`` when given, else a one-scene synthetic world under ``tmp``."""
    if dataroot:
        return dataroot, "real scene"
    synth = SynthConfig(scenes=1, keyframes=keyframes, seed=0)
    return generate_world(synth, out=Path(tmp) / "world", progress=False), "synthetic"


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataroot", default=str(REAL) if REAL.exists() else "")
    parser.add_argument("--keyframes", type=int, default=8)
    parser.add_argument("--size", type=int, default=24)
    parser.add_argument("--cell", type=float, default=0.25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, name = real_or_synthetic(args.dataroot, args.keyframes, tmp)
        frames = keyframes(NuScenesDB(root, "v1.0-mini"), args.keyframes)
    torch_frames = [
        (torch.from_numpy(p), {k: torch.from_numpy(v) for k, v in b.items()}) for p, b in frames
    ]
    grid = GridConfig()

    def ours():
        for p, b in torch_frames:
            lidar_box_crops(p, b, args.size, args.cell, BANDS, MARGIN)

    def reference():
        for p, b in frames:
            numpy_box_raster(p, b, args.size, args.cell)

    def grid_path():
        for p, b in torch_frames:
            crop_boxes(lidar_bev_rasters(p, grid), b, grid, args.size)

    for (p, b), (tp, tb) in zip(frames, torch_frames, strict=True):
        want = numpy_box_raster(p, b, args.size, args.cell)
        got = lidar_box_crops(tp, tb, args.size, args.cell, BANDS, MARGIN).numpy()
        cells = np.abs(got - want).max(1) > 1e-3  # K x S x S
        assert cells.mean() < 1e-3, f"ours and the numpy raster disagree on {cells.mean():.4f}"
    boxes = sum(len(b["yaw"]) for _, b in frames)
    points = sum(len(p) for p, _ in frames)
    t_ours, t_ref, t_grid = best_of(ours), best_of(reference), best_of(grid_path)
    n = len(frames)
    print(
        f"{name}: {n} keyframes, {points / n:.0f} points and {boxes / n:.1f} vehicle boxes each; "
        f"{args.size} x {args.size} cells of {args.cell} m; {torch.get_num_threads()} threads"
    )
    print(f"  ours (lidar_box_crops):          {1e3 * t_ours / n:8.2f} ms per keyframe")
    print(f"  numpy, one box at a time:        {1e3 * t_ref / n:8.2f} ms per keyframe")
    print(f"  grid raster + crop_boxes (0.5 m): {1e3 * t_grid / n:7.2f} ms per keyframe")
    print(f"  speed-up over numpy: {t_ref / t_ours:.1f}x; cost against the grid path: "
          f"{t_ours / t_grid:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
