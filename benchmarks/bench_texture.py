"""Camera texture crops (``build.camera_crops: [texture]``) against a plain per-box reference.

    python benchmarks/bench_texture.py [--dataroot DIR] [--keyframes 8] [--levels 4]

Per keyframe, every vehicle box gets a texture crop (24 x 24 cells of 0.25 m, ``levels``
heights). Ours: :func:`bev_reid.reid.texture.texture_crops`, all boxes' points in one
projection per camera, with and without the occlusion test against every box of the keyframe.
Reference: one box at a time, its points projected into each camera with the devkit's
``view_points``, first camera that sees a point wins (no occlusion test). Before timing, the
reference's crops must equal ours without occlusion. Images are decoded once, outside the
timings (both read them at 1 / PAINT_SCALE). Runs on the real scene when present, else on a
synthetic world.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch
from bench_box_raster import REAL, real_or_synthetic  # this folder is on sys.path
from bench_ops import timeit  # the same timing in every benchmark
from nuscenes.utils.geometry_utils import view_points

from bev_reid.config import DataConfig
from bev_reid.data.files import read_image
from bev_reid.data.keyframes import PAINT_SCALE
from bev_reid.data.lidar import MIN_PAINT_DEPTH
from bev_reid.data.nuscenes import NuScenesDB
from bev_reid.reid.build import box_geometry
from bev_reid.reid.texture import texture_crops, texture_points

CAMERAS = DataConfig().cameras
SIZE, CELL = 24, 0.25


def reference(boxes, cams, images, levels: int) -> torch.Tensor:
    """Texture crops one box at a time, projected with the devkit's view_points."""
    out = torch.zeros(boxes["center"].shape[0], 3 * levels, SIZE, SIZE)
    for k in range(boxes["center"].shape[0]):
        one = {key: value[k : k + 1] for key, value in boxes.items()}
        points, flat = texture_points(one, SIZE, CELL, levels)
        points = points.double().numpy()
        colour = np.full((len(points), 3), np.nan)
        for cam, image in zip(cams, images, strict=True):
            local = (points - cam.trans) @ cam.rot  # camera frame
            todo = np.isnan(colour[:, 0]) & (local[:, 2] > MIN_PAINT_DEPTH)
            if not todo.any():
                continue
            uv = view_points(local[todo].T, cam.intrinsics, normalize=True)[:2].T  # P' x 2
            h, w = image.shape[:2]
            u, v = uv[:, 0] * w / cam.width, uv[:, 1] * h / cam.height
            inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
            rows = np.nonzero(todo)[0][inside]
            colour[rows] = image[v[inside].astype(int), u[inside].astype(int)] / 255.0
        seen = ~np.isnan(colour[:, 0])
        crop = torch.zeros(levels * SIZE * SIZE, 3)
        crop[flat[seen]] = torch.from_numpy(colour[seen]).float()
        out[k] = crop.view(levels, SIZE, SIZE, 3).permute(0, 3, 1, 2).reshape(-1, SIZE, SIZE)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataroot", default=str(REAL) if REAL.exists() else "")
    parser.add_argument("--keyframes", type=int, default=8)
    parser.add_argument("--levels", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root, name = real_or_synthetic(args.dataroot, args.keyframes, tmp)
        db = NuScenesDB(root, "v1.0-mini")
        tokens = [t for scene in db.scene_names for t in db.keyframes(scene)]
        tokens = tokens[:: max(1, len(tokens) // args.keyframes)][: args.keyframes]
        frames = []
        for t in tokens:
            cams = [db.camera(t, ch) for ch in CAMERAS]
            size = [(c.width // PAINT_SCALE, c.height // PAINT_SCALE) for c in cams]
            images = [np.asarray(read_image(c.path, s)) for c, s in zip(cams, size, strict=True)]
            every = [b.as_dict() for b in db.boxes(t)]
            vehicles = [b for b in every if b["category"].startswith("vehicle")]
            frames.append(
                (box_geometry(vehicles, torch.device("cpu")), cams, images,
                 box_geometry(every, torch.device("cpu")))
            )  # fmt: skip
        lv = args.levels
        for boxes, cams, images, _ in frames:
            ours = texture_crops(boxes, cams, images, SIZE, CELL, lv)
            assert torch.equal(ours, reference(boxes, cams, images, lv)), "crops differ"
        hidden = sum(
            float(texture_crops(b, c, i, SIZE, CELL, lv).ne(0).any(1).sum()
                   - texture_crops(b, c, i, SIZE, CELL, lv, occluders=o).ne(0).any(1).sum())
            for b, c, i, o in frames
        )  # fmt: skip
        filled = sum(float(texture_crops(b, c, i, SIZE, CELL, lv).ne(0).any(1).sum())
                     for b, c, i, _ in frames)  # fmt: skip
        t_ours = timeit(
            lambda: [texture_crops(b, c, i, SIZE, CELL, lv) for b, c, i, _ in frames], "cpu", 3
        )
        t_occ = timeit(
            lambda: [texture_crops(b, c, i, SIZE, CELL, lv, occluders=o) for b, c, i, o in frames],
            "cpu",
            3,
        )
        t_ref = timeit(lambda: [reference(b, c, i, lv) for b, c, i, _ in frames], "cpu", 3)
        n = len(frames)
        boxes_n = sum(f[0]["center"].shape[0] for f in frames)
        print(
            f"{name}: {n} keyframes, {boxes_n / n:.1f} vehicles each, {lv} levels, "
            f"{SIZE}x{SIZE} cells of {CELL} m; occlusion empties {100 * hidden / filled:.0f}% "
            "of the textured cells"
        )
        print(f"  ours:                       {1e3 * t_ours / n:8.1f} ms per keyframe")
        print(f"  ours, occlusion tested:     {1e3 * t_occ / n:8.1f} ms per keyframe")
        print(f"  reference, box by box:      {1e3 * t_ref / n:8.1f} ms per keyframe")
        print(
            f"  speed-up over the reference: {t_ref / t_ours:.1f}x; the occlusion test costs "
            f"{t_occ / t_ours:.1f}x ours"
        )


if __name__ == "__main__":
    main()
