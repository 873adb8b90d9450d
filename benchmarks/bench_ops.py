"""Speed of the compiled ops against their references, measured in one run.

    python benchmarks/bench_ops.py [--device cpu|cuda] [--repeat 5]

bev_pool: forward and forward+backward of our op against ``bev_pool_reference`` (plain torch,
lift-splat-shoot's cumsum trick) at (a) the default LSS config (6 cameras, 41 depth bins, 8 x 22
feature map, C = 64, batch 4, 200 x 200 x 1 grid) and (b) a large one (118 bins, 32 x 88, C = 80,
batch 1, 256 x 256 x 1). Points come from a camera-frustum layout like LSS's, so many share a
voxel. voxelize: a real LiDAR sweep of ../shared/data/nuscenes-mini against the numpy reference
and mmcv (when installed). On CUDA the achieved bandwidth is printed next to the card's.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bev_reid.ops import (
    bev_pool,
    bev_pool_reference,
    dynamic_voxelize,
    voxelize,
    voxelize_reference,
)

REPO = Path(__file__).resolve().parents[1]


def timeit(fn, device: str, repeat: int) -> float:
    """Median wall time of ``fn()`` in seconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def frustum_points(batch, cams, depth_bins, fh, fw, channels, grid, dbound=(4.0, 45.0)):
    """Features and voxel coords of an LSS-like frustum: each camera a 70-degree sector."""
    x_n, y_n, _ = grid
    cell = 100.0 / x_n
    depth = torch.linspace(dbound[0], dbound[1], depth_bins)  # D
    yaw = torch.arange(cams) * (2 * math.pi / cams)  # N
    azim = torch.linspace(-0.61, 0.61, fw)  # fW
    ang = yaw[:, None] + azim[None, :]  # N x fW
    px = depth[None, :, None] * torch.cos(ang)[:, None, :]  # N x D x fW (metres)
    py = depth[None, :, None] * torch.sin(ang)[:, None, :]
    ix = (
        ((px + 50.0) / cell).floor().long()[:, :, None, :].expand(cams, depth_bins, fh, fw)
    )  # N x D x fH x fW
    iy = ((py + 50.0) / cell).floor().long()[:, :, None, :].expand(cams, depth_bins, fh, fw)
    xyz = torch.stack([ix, iy, torch.zeros_like(ix)], -1).reshape(-1, 3)
    coords = torch.cat(
        [xyz.repeat(batch, 1), torch.arange(batch).repeat_interleave(xyz.shape[0])[:, None]], 1
    )  # (B*N*D*fH*fW) x 4
    feats = torch.randn(coords.shape[0], channels)
    return feats, coords


def bench_bev_pool(name, device, repeat, batch, cams, depth_bins, fh, fw, channels, grid):
    feats, coords = frustum_points(batch, cams, depth_bins, fh, fw, channels, grid)
    feats, coords = feats.to(device), coords.to(device)
    n = feats.shape[0]
    out_shape = (batch, channels, grid[2], grid[0], grid[1])
    grad = torch.randn(out_shape, device=device)
    rows = []
    for label, op in (("ours", bev_pool), ("reference", bev_pool_reference)):

        def fwd(op=op):
            with torch.no_grad():
                op(feats, coords, batch, grid)

        def fwd_bwd(op=op):
            f = feats.detach().requires_grad_()
            op(f, coords, batch, grid).backward(grad)

        rows.append((label, timeit(fwd, device, repeat), timeit(fwd_bwd, device, repeat)))
    (_, f_ours, fb_ours), (_, f_ref, fb_ref) = rows
    print(f"\nbev_pool {name}: {n:,} points x C={channels} -> {list(out_shape)} on {device}")
    print(f"  {'':10s} {'forward':>12s} {'fwd+bwd':>12s}")
    for label, f, fb in rows:
        print(f"  {label:10s} {f * 1e3:10.2f}ms {fb * 1e3:10.2f}ms")
    print(f"  speed-up   {f_ref / f_ours:11.1f}x {fb_ref / fb_ours:11.1f}x")
    if device == "cuda":
        # Fewest bytes: read feats and coords once, write the output once.
        moved = feats.numel() * feats.element_size() + coords.numel() * coords.element_size()
        moved += math.prod(out_shape) * feats.element_size()
        print(
            f"  forward bandwidth {moved / f_ours / 1e9:.0f} GB/s "
            f"(card: {card_bandwidth():.0f} GB/s copy)"
        )
    return f_ref / f_ours, fb_ref / fb_ours


def card_bandwidth() -> float:
    """Device-to-device copy bandwidth, bytes read + written, in GB/s."""
    a = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    t = timeit(lambda: b.copy_(a), "cuda", 10)
    return 2 * a.numel() / t / 1e9


def bench_voxelize(device, repeat):
    root = REPO.parent / "shared" / "data" / "nuscenes-mini" / "samples" / "LIDAR_TOP"
    files = sorted(root.glob("*.pcd.bin"))
    if files:
        pts = torch.from_numpy(np.fromfile(files[0], dtype=np.float32).reshape(-1, 5).copy())
        source = f"real sweep {files[0].name}"
    else:  # a stand-in of the same size when the real scene is absent
        g = torch.Generator().manual_seed(0)
        pts = torch.cat(
            [
                torch.randn(34000, 3, generator=g) * torch.tensor([15.0, 15.0, 1.0]),
                torch.rand(34000, 2, generator=g),
            ],
            1,
        )
        source = "random cloud (real scene not found)"
    args = ((0.1, 0.1, 0.2), (-54.0, -54.0, -5.0, 54.0, 54.0, 3.0), 10, 120000)
    pts_d = pts.to(device)
    print(
        f"\nvoxelize: {source}, {pts.shape[0]:,} points, voxel 0.1 x 0.1 x 0.2 m, "
        f"max 10 points, 120k voxels, {device}"
    )
    t_ours = timeit(lambda: voxelize(pts_d, *args), device, repeat)
    t_dyn = timeit(lambda: dynamic_voxelize(pts_d, *args[:2]), device, repeat)
    t_ref = timeit(lambda: voxelize_reference(pts, *args), "cpu", max(1, repeat // 2))
    print(f"  ours (hard)     {t_ours * 1e3:9.2f}ms")
    print(f"  ours (dynamic)  {t_dyn * 1e3:9.2f}ms")
    print(f"  reference       {t_ref * 1e3:9.2f}ms   ours is {t_ref / t_ours:.1f}x faster")
    try:
        from mmcv.ops import voxelization
    except ImportError:
        print("  mmcv            not installed (pip install bev-reid[mm]; see README)")
        return
    t_mm = timeit(lambda: voxelization(pts_d, *args), device, repeat)
    t_mm_dyn = timeit(lambda: voxelization(pts_d, *args[:2], -1, -1), device, repeat)
    print(f"  mmcv (hard)     {t_mm * 1e3:9.2f}ms   ours is {t_mm / t_ours:.1f}x faster")
    print(f"  mmcv (dynamic)  {t_mm_dyn * 1e3:9.2f}ms   ours is {t_mm_dyn / t_dyn:.1f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-large", action="store_true", help="skip config (b)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    bench_bev_pool("(a) default", args.device, args.repeat, 4, 6, 41, 8, 22, 64, (200, 200, 1))
    if not args.skip_large:
        bench_bev_pool(
            "(b) large", args.device, max(1, args.repeat // 2), 1, 6, 118, 32, 88, 80, (256, 256, 1)
        )
    bench_voxelize(args.device, args.repeat)


if __name__ == "__main__":
    main()
