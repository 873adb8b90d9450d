"""voxelize / dynamic_voxelize against the plain references and, where installed, mmcv."""

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from bev_reid.ops import dynamic_voxelize, dynamic_voxelize_reference, voxelize, voxelize_reference

VOXEL = (0.5, 0.5, 1.0)
RANGE = (-4.0, -3.0, -2.0, 4.0, 3.0, 2.0)  # 16 x 12 x 4 voxels


def make_cloud(n, f=4, *, dtype=torch.float32, seed=0):
    """Points clustered so voxels fill up, some outside the range, some duplicated."""
    g = torch.Generator().manual_seed(seed)
    centres = (torch.rand(max(1, n // 20), 3, generator=g) - 0.5) * torch.tensor([9.0, 7.0, 5.0])
    pick = torch.randint(0, centres.shape[0], (n,), generator=g)
    xyz = centres[pick] + 0.3 * torch.randn(n, 3, generator=g)
    pts = torch.cat([xyz, torch.rand(n, f - 3, generator=g)], 1).to(dtype)
    if n > 10:
        pts[n // 2 : n // 2 + 5] = pts[:5]  # duplicate points
    return pts


def assert_same(out, ref):
    for name, a, b in zip(("voxels", "coords", "num_points"), out, ref, strict=True):
        assert a.dtype == b.dtype, name
        assert torch.equal(a.cpu(), b), f"{name} differ"


@pytest.mark.parametrize(
    "n,f,max_points,max_voxels,dtype",
    list(
        itertools.product(
            [0, 1, 300, 4000], [3, 5], [1, 5, 32], [1, 40, 20000], [torch.float32, torch.float64]
        )
    ),
)
def test_hard_matches_reference(device, n, f, max_points, max_voxels, dtype):
    pts = make_cloud(n, f, dtype=dtype, seed=n + f)
    out = voxelize(pts.to(device), VOXEL, RANGE, max_points, max_voxels)
    ref = voxelize_reference(pts, VOXEL, RANGE, max_points, max_voxels)
    assert_same(out, ref)
    assert out[0].shape[1:] == (max_points, f) and out[0].shape[0] <= max_voxels


@pytest.mark.parametrize(
    "n,dtype", list(itertools.product([0, 7, 5000], [torch.float32, torch.float64]))
)
def test_dynamic_matches_reference(device, n, dtype):
    pts = make_cloud(n, dtype=dtype, seed=n)
    out = dynamic_voxelize(pts.to(device), VOXEL, RANGE)
    assert out.dtype == torch.int32 and out.shape == (n, 3)
    assert torch.equal(out.cpu(), dynamic_voxelize_reference(pts, VOXEL, RANGE))


def test_hand_computed_cells(device):
    pts = torch.tensor(
        [
            [-4.0, -3.0, -2.0],  # the lowest corner: cell (0, 0, 0)
            [3.99, 2.99, 1.99],  # the highest cell: x 15, y 11, z 3
            [4.0, 0.0, 0.0],  # x == max is outside
            [0.25, -0.25, 0.5],  # x 8, y 5, z 2
            [float("nan"), 0.0, 0.0],
            [0.0, float("inf"), 0.0],
        ]
    )
    out = dynamic_voxelize(pts.to(device), VOXEL, RANGE).cpu()
    expected = torch.tensor(
        [[0, 0, 0], [3, 11, 15], [-1, -1, -1], [2, 5, 8], [-1, -1, -1], [-1, -1, -1]],
        dtype=torch.int32,
    )
    assert torch.equal(out, expected)


def test_all_points_outside(device):
    pts = torch.tensor(
        [[10.0, 0.0, 0.0, 1.0], [0.0, -9.0, 0.0, 1.0], [0.0, 0.0, 5.0, 1.0]], device=device
    )
    voxels, coords, num = voxelize(pts, VOXEL, RANGE, 4, 10)
    assert voxels.shape == (0, 4, 4) and coords.shape == (0, 3) and num.shape == (0,)
    assert (dynamic_voxelize(pts, VOXEL, RANGE) == -1).all()


def test_many_points_in_one_voxel_keeps_the_first(device):
    pts = torch.stack(
        [torch.full((100,), 0.1), torch.full((100,), 0.1), torch.zeros(100), torch.arange(100.0)], 1
    )
    voxels, coords, num = voxelize(pts.to(device), VOXEL, RANGE, 7, 10)
    assert num.tolist() == [7] and coords.tolist() == [[2, 6, 8]]
    assert voxels[0, :, 3].tolist() == list(range(7))  # first come, first kept, in input order


def test_max_voxels_drops_later_voxels(device):
    pts = torch.tensor([[-3.9, 0.1, 0.0], [-2.9, 0.1, 0.0], [-3.8, 0.1, 0.0], [-1.9, 0.1, 0.0]])
    voxels, coords, num = voxelize(pts.to(device), VOXEL, RANGE, 4, 2)
    assert coords.tolist() == [[2, 6, 0], [2, 6, 2]]  # the third voxel (x 4) came too late
    assert num.tolist() == [2, 1]
    assert torch.equal(voxels[0, :2].cpu(), pts[[0, 2]])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(points=torch.zeros(5, 3, dtype=torch.int32)), "points must be float32 or float64"),
        (dict(points=torch.zeros(5, 2)), r"points must be \[P, F\] with F >= 3"),
        (dict(voxel_size=(0.5, 0.0, 1.0)), r"voxel_size\[1\] \(y\) must be a positive number"),
        (
            dict(voxel_size=(0.5, float("nan"), 1.0)),
            r"voxel_size\[1\] \(y\) must be a positive number",
        ),
        (dict(point_cloud_range=(-4, 3, -2, 4, -3, 2)), "point_cloud_range y must have min < max"),
        (dict(point_cloud_range=(-4, -3, -2, 4, 3, -2)), "point_cloud_range z must have min < max"),
        (dict(max_points=0), "max_points must be >= 1"),
        (dict(max_voxels=0), "max_voxels must be >= 1"),
    ],
)
def test_bad_input(kwargs, match):
    args = dict(
        points=torch.zeros(5, 4),
        voxel_size=VOXEL,
        point_cloud_range=RANGE,
        max_points=4,
        max_voxels=10,
    )
    args.update(kwargs)
    with pytest.raises(RuntimeError, match=match):
        voxelize(**args)
    if "max_" not in match:
        with pytest.raises(RuntimeError, match=match):
            dynamic_voxelize(args["points"], args["voxel_size"], args["point_cloud_range"])


def test_huge_max_voxels_returns(device):
    """max_voxels past the number of points acts as that number (it once overflowed a table size
    on the CPU, whose probes then never ended)."""
    pts = make_cloud(3000, 4, seed=5).to(device)
    for max_voxels in (2**31, 2**61, 2**62, 2**63 - 1):
        out = voxelize(pts, VOXEL, RANGE, 5, max_voxels)
        assert_same(out, voxelize_reference(pts.cpu(), VOXEL, RANGE, 5, 3000))


def test_too_large_voxels_tensor_is_refused(device):
    with pytest.raises(RuntimeError, match="is too large; lower max_points"):
        voxelize(make_cloud(100, 4).to(device), VOXEL, RANGE, 2**62, 10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn])
def test_other_float_dtypes_are_refused_up_front(device, dtype):
    pts = make_cloud(100, 4).to(dtype).to(device)
    with pytest.raises(RuntimeError, match="points must be float32 or float64"):
        voxelize(pts, VOXEL, RANGE, 5, 10)
    with pytest.raises(RuntimeError, match="points must be float32 or float64"):
        dynamic_voxelize(pts, VOXEL, RANGE)


def test_float64_uses_float32_sizes_as_mmcv(device):
    """voxel_size and the range are rounded to float32 (as mmcv), then fp64 points are compared
    with them in double: 0.1000000005 lies below float32(0.1) = 0.10000000149, so in cell 0."""
    pts = torch.tensor(
        [[0.1000000005, 0.25, 0.05], [0.1000000025, 0.25, 0.05]], dtype=torch.float64
    )
    coords = dynamic_voxelize(pts.to(device), (0.1, 0.1, 0.1), (0.0, 0.0, 0.0, 1.0, 1.0, 1.0))
    assert coords.cpu().tolist() == [[0, 2, 0], [0, 2, 1]]
    assert torch.equal(
        coords.cpu(), dynamic_voxelize_reference(pts, (0.1, 0.1, 0.1), (0, 0, 0, 1, 1, 1))
    )


def test_bad_lengths():
    with pytest.raises(ValueError, match="voxel_size must have 3 values"):
        voxelize(torch.zeros(5, 4), (0.5, 0.5), RANGE, 4, 10)
    with pytest.raises(ValueError, match="point_cloud_range must have 6 values"):
        dynamic_voxelize(torch.zeros(5, 4), VOXEL, RANGE[:4])


def test_opcheck(device):
    pts = make_cloud(500, 5, seed=3).to(device)
    torch.library.opcheck(
        torch.ops.bev_reid.dynamic_voxelize.default, (pts, list(VOXEL), list(RANGE))
    )
    torch.library.opcheck(
        torch.ops.bev_reid.hard_voxelize.default,
        (pts, list(VOXEL), list(RANGE), 5, 100),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )


# ---------------------------------------------------------------------------------------------
# Cross-checks with mmcv (optional extra `bev-reid[mm]`) on a real nuScenes sweep.

NUSCENES_VOXEL = (0.1, 0.1, 0.2)
NUSCENES_RANGE = (-54.0, -54.0, -5.0, 54.0, 54.0, 3.0)


def real_sweep(root: Path) -> torch.Tensor:
    files = sorted((root / "samples" / "LIDAR_TOP").glob("*.pcd.bin"))
    if not files:
        pytest.skip(f"no LiDAR sweep under {root}")
    return torch.from_numpy(np.fromfile(files[0], dtype=np.float32).reshape(-1, 5).copy())


@pytest.mark.data
@pytest.mark.parametrize("max_points,max_voxels", [(10, 120000), (3, 5000), (64, 30000)])
def test_matches_mmcv_on_real_sweep(nuscenes_mini, max_points, max_voxels):
    mmcv_ops = pytest.importorskip("mmcv.ops")
    pts = real_sweep(nuscenes_mini)
    ours = voxelize(pts, NUSCENES_VOXEL, NUSCENES_RANGE, max_points, max_voxels)
    theirs = mmcv_ops.voxelization(pts, NUSCENES_VOXEL, NUSCENES_RANGE, max_points, max_voxels)
    assert ours[0].shape[0] > 1000
    assert_same(ours, tuple(t.cpu() for t in theirs))
    dyn = mmcv_ops.voxelization(pts, NUSCENES_VOXEL, NUSCENES_RANGE, -1, -1)
    assert torch.equal(dynamic_voxelize(pts, NUSCENES_VOXEL, NUSCENES_RANGE), dyn)


def test_matches_mmcv_on_random_points():
    mmcv_ops = pytest.importorskip("mmcv.ops")
    pts = make_cloud(20000, 4, seed=21)
    assert_same(
        voxelize(pts, VOXEL, RANGE, 5, 300), tuple(mmcv_ops.voxelization(pts, VOXEL, RANGE, 5, 300))
    )
    assert torch.equal(
        dynamic_voxelize(pts, VOXEL, RANGE), mmcv_ops.voxelization(pts, VOXEL, RANGE, -1, -1)
    )
