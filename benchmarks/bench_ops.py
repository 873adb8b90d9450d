"""Speed of the compiled ops against their references, measured in one run.

    python benchmarks/bench_ops.py [--device cpu|cuda] [--repeat 5] [--skip-large]

splat: the LSS splat from depth [B, N, D, fH, fW] and context [B, N, C, fH, fW] to the BEV grid,
forward and forward+backward, at the default LSS config (6 cameras, 41 depth bins, 8 x 22 feature
map, C = 64, batch 4, 200 x 200 x 1 grid): ``fused_splat`` (plan built in the call, and a cached
plan), the outer product then ``bev_pool``, and the outer product then ``bev_pool_reference``
(plain torch). Prints times, the peak memory each adds (CPU: peak resident set, reset per run
through /proc/self/clear_refs; CUDA: the allocator's peak) and ratios against the reference.
bev_pool: forward and forward+backward of our op against ``bev_pool_reference`` at (a) the default
LSS config and (b) a large one (118 bins, 32 x 88, C = 80, batch 1, 256 x 256 x 1). Points come
from a camera-frustum layout like LSS's, so many share a voxel. voxelize: a real LiDAR sweep of
../shared/data/nuscenes-mini against the numpy reference and mmcv (when installed). On CUDA the
achieved bandwidth is printed next to the card's.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import re
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bev_reid.ops import (
    bev_pool,
    bev_pool_reference,
    dynamic_voxelize,
    fused_splat,
    splat_plan,
    voxelize,
    voxelize_reference,
)

REPO = Path(__file__).resolve().parents[1]
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


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


def frustum_cells(batch, cams, depth_bins, fh, fw, grid, dbound=(4.0, 45.0)):
    """Grid cells [B, N, D, fH, fW, 3] (x, y, z) of an LSS-like frustum: each camera a 70-degree
    sector around the ego car; the rows of a feature column share their cells."""
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
    xyz = torch.stack([ix, iy, torch.zeros_like(ix)], -1)  # N x D x fH x fW x 3
    return xyz.unsqueeze(0).expand(batch, *xyz.shape).contiguous()  # B x N x D x fH x fW x 3


def frustum_points(batch, cams, depth_bins, fh, fw, channels, grid, dbound=(4.0, 45.0)):
    """Features [P, C] and voxel coords [P, 4] (x, y, z, batch) of frustum_cells' points."""
    cells = frustum_cells(batch, cams, depth_bins, fh, fw, grid, dbound)
    b = torch.arange(batch).view(batch, 1, 1, 1, 1, 1).expand(*cells.shape[:-1], 1)
    coords = torch.cat([cells, b], -1).reshape(-1, 4)  # (B*N*D*fH*fW) x 4
    feats = torch.randn(coords.shape[0], channels)
    return feats, coords


def _memory_status() -> dict[str, int] | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = {k: re.search(rf"^{k}:\s+(\d+) kB", text, re.M) for k in ("VmRSS", "VmHWM")}
    return (
        {k: int(m.group(1)) * 1024 for k, m in found.items() if m} if all(found.values()) else None
    )


def _glibc():
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def peak_memory(fn, device: str) -> float:
    """Bytes ``fn()`` adds at its peak over what was in use before it (nan when unknown).

    CPU (Linux): the peak resident set during ``fn()`` (reset through /proc/self/clear_refs) less
    the resident set before it. So that this follows what is allocated, free heap memory is
    first handed back (malloc_trim) and, during ``fn()``, every block of 128 kB or more is mapped
    on its own (mallopt), so freeing it unmaps it; afterwards blocks below 32 MB come from the
    heap again (glibc's default ceiling).
    """
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated() - base)
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    try:
        try:  # Linux: writing 5 resets the peak resident set (VmHWM) to the current one
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            return math.nan
        before = _memory_status()
        fn()
        after = _memory_status()
    finally:
        if libc is not None:
            libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)
    if before is None or after is None:
        return math.nan
    return float(after["VmHWM"] - before["VmRSS"])


def bench_splat(name, device, repeat, batch, cams, depth_bins, fh, fw, channels, grid):
    """The LSS splat four ways; see the module doc. Returns fused's fwd+bwd speed-up over
    bev_pool (with the plan built in the call)."""
    g = torch.Generator().manual_seed(0)
    cells = frustum_cells(batch, cams, depth_bins, fh, fw, grid).to(device)
    depth = torch.randn(batch, cams, depth_bins, fh, fw, generator=g).softmax(2).to(device)
    context = torch.randn(batch, cams, channels, fh, fw, generator=g).to(device)  # as LSS's head
    b = torch.arange(batch, device=device).view(batch, 1, 1, 1, 1, 1).expand(*cells.shape[:-1], 1)
    coords = torch.cat([cells, b], -1).reshape(-1, 4)  # P x 4
    out_shape = (batch, channels, grid[2], grid[0], grid[1])
    grad = torch.randn(out_shape, generator=g).to(device)
    cached = splat_plan(cells, grid)

    def fused(d, x, plan=None):
        plan = splat_plan(cells, grid) if plan is None else plan
        return fused_splat(d, x.permute(0, 1, 3, 4, 2), plan)  # context channels last

    def outer(pool):
        def run(d, x):
            feats = d.unsqueeze(2) * x.unsqueeze(3)  # B x N x C x D x fH x fW
            feats = feats.permute(0, 1, 3, 4, 5, 2).reshape(-1, channels)  # P x C
            return pool(feats, coords, batch, grid)

        return run

    variants = {
        "fused": fused,
        "fused, plan cached": lambda d, x: fused(d, x, cached),
        "bev_pool": outer(bev_pool),
        "reference": outer(bev_pool_reference),
    }
    rows = {}
    for label, op in variants.items():

        def fwd(op=op):
            with torch.no_grad():
                op(depth, context)

        def fwd_bwd(op=op):
            d = depth.detach().requires_grad_()
            x = context.detach().requires_grad_()
            op(d, x).backward(grad)

        times = timeit(fwd, device, repeat), timeit(fwd_bwd, device, repeat)
        rows[label] = (*times, peak_memory(fwd_bwd, device))
    print(
        f"\nsplat {name}: depth {[batch, cams, depth_bins, fh, fw]} x context C={channels} -> "
        f"{list(out_shape)} on {device} ({cells[..., 0].numel():,} frustum points)"
    )
    print(
        f"  {'':19s} {'forward':>10s} {'fwd+bwd':>10s} {'peak mem':>10s}"
        f" {'fwd+bwd vs reference':>21s}"
    )
    f_ref, fb_ref, _ = rows["reference"]
    for label, (f, fb, mem) in rows.items():
        print(
            f"  {label:19s} {f * 1e3:8.2f}ms {fb * 1e3:8.2f}ms {mem / 2**20:8.1f}MB "
            f"{fb_ref / fb:20.1f}x"
        )
    ratio = rows["bev_pool"][1] / rows["fused"][1]
    print(
        f"  fused vs bev_pool + outer product: {ratio:.1f}x fwd+bwd "
        f"({rows['bev_pool'][1] / rows['fused, plan cached'][1]:.1f}x with the plan cached), "
        f"{rows['bev_pool'][2] / max(rows['fused'][2], 1):.1f}x less peak memory"
    )
    if device == "cuda":
        # Fewest bytes of the forward: read depth and context once, write the output once.
        moved = (depth.numel() + context.numel() + math.prod(out_shape)) * depth.element_size()
        print(
            f"  fused forward bandwidth {moved / rows['fused, plan cached'][0] / 1e9:.0f} GB/s "
            f"(card: {card_bandwidth():.0f} GB/s copy)"
        )
    return ratio


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
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    bench_splat("(a) default", args.device, args.repeat, 4, 6, 41, 8, 22, 64, (200, 200, 1))
    if not args.skip_large:
        bench_splat(
            "(b) large", args.device, max(1, args.repeat // 2), 1, 6, 118, 32, 88, 80, (256, 256, 1)
        )
    bench_bev_pool("(a) default", args.device, args.repeat, 4, 6, 41, 8, 22, 64, (200, 200, 1))
    if not args.skip_large:
        bench_bev_pool(
            "(b) large", args.device, max(1, args.repeat // 2), 1, 6, 118, 32, 88, 80, (256, 256, 1)
        )
    bench_voxelize(args.device, args.repeat)


if __name__ == "__main__":
    main()
