"""bev_pool: sum the features of points that fall into the same voxel of a BEV grid.

The compiled op (``torch.ops.bev_reid.bev_pool``) has CPU and CUDA kernels; this module gives it
a fake (meta) implementation and an autograd formula, so it runs under ``torch.compile`` and
trains. ``bev_pool_reference`` computes the same in plain torch, with lift-splat-shoot's
cumulative-sum trick, and is the yardstick of the tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bev_reid.ops._lib import load_library

load_library()

_ops = torch.ops.bev_reid


def _grid3(grid: Sequence[int]) -> list[int]:
    grid = [int(g) for g in grid]
    if len(grid) != 3:
        raise ValueError(f"bev_pool: grid must be (X, Y, Z), got {grid}")
    return grid


def bev_pool(
    feats: torch.Tensor, coords: torch.Tensor, batch_size: int, grid: Sequence[int]
) -> torch.Tensor:
    """Sums point features into voxels.

    Args:
        feats: [N, C] floating point features.
        coords: [N, 4] int32/int64 voxel coordinates (x, y, z, batch) of each point. Points
            with a coordinate outside [0, X) x [0, Y) x [0, Z) x [0, batch_size) are dropped.
        batch_size: B.
        grid: (X, Y, Z).

    Returns:
        [B, C, Z, X, Y]: the sum of the features of the points in each voxel; differentiable in
        ``feats``.
    """
    return _ops.bev_pool(feats.contiguous(), coords.contiguous(), int(batch_size), _grid3(grid))


@torch.library.register_fake("bev_reid::bev_pool")
def _bev_pool_fake(feats, coords, batch_size, grid):
    torch._check(feats.dim() == 2, lambda: f"bev_pool: feats must be [N, C], got {feats.shape}")
    torch._check(
        coords.shape[0] == feats.shape[0], lambda: "bev_pool: coords and feats differ in N"
    )
    # A real meta tensor beside a real one dispatches here: without this check the result would
    # be uninitialised memory on feats' device.
    torch._check(
        coords.device == feats.device,
        lambda: (
            f"bev_pool: feats on {feats.device} and coords on {coords.device}: "
            "put both on one device"
        ),
    )
    x, y, z = grid
    return feats.new_empty((batch_size, feats.shape[1], z, x, y))


@torch.library.register_fake("bev_reid::bev_pool_backward")
def _bev_pool_backward_fake(grad_out, coords, batch_size, grid):
    return grad_out.new_empty((coords.shape[0], grad_out.shape[1]))


def _setup_context(ctx, inputs, output):
    _, coords, batch_size, grid = inputs
    ctx.save_for_backward(coords)
    ctx.batch_size = batch_size
    ctx.grid = grid


def _bev_pool_backward(ctx, grad_out):
    (coords,) = ctx.saved_tensors
    grad = _ops.bev_pool_backward(grad_out.contiguous(), coords, ctx.batch_size, ctx.grid)
    return grad, None, None, None


def _bev_pool_double_backward(ctx, grad_grad_feats):
    # bev_pool_backward is the transpose of bev_pool (a gather), so its transpose is bev_pool.
    (coords,) = ctx.saved_tensors
    grad = _ops.bev_pool(grad_grad_feats.contiguous(), coords, ctx.batch_size, ctx.grid)
    return grad, None, None, None


torch.library.register_autograd(
    "bev_reid::bev_pool", _bev_pool_backward, setup_context=_setup_context
)
torch.library.register_autograd(
    "bev_reid::bev_pool_backward", _bev_pool_double_backward, setup_context=_setup_context
)


def bev_pool_reference(
    feats: torch.Tensor, coords: torch.Tensor, batch_size: int, grid: Sequence[int]
) -> torch.Tensor:
    """``bev_pool`` in plain torch: sort by voxel, cumulative sum, difference at voxel ends.

    Same arguments and result as :func:`bev_pool`; differentiable through autograd.
    """
    x_n, y_n, z_n = _grid3(grid)
    n, c = feats.shape
    coords = coords.long()
    x, y, z, b = coords.unbind(1)  # each [N]
    inside = (x >= 0) & (x < x_n) & (y >= 0) & (y < y_n) & (z >= 0) & (z < z_n)
    inside &= (b >= 0) & (b < batch_size)
    feats, x, y, z, b = feats[inside], x[inside], y[inside], z[inside], b[inside]
    out = feats.new_zeros((batch_size * z_n * x_n * y_n, c))  # voxels x C
    if feats.shape[0] > 0:
        ranks = ((b * z_n + z) * x_n + x) * y_n + y  # [M] flat voxel of each point
        order = ranks.argsort(stable=True)
        feats, ranks = feats[order], ranks[order]
        # running sums in float32 at least, as the compiled kernels carry them: a bf16 cumsum
        # over a million points keeps 8 bits of the total, not of each voxel's share
        csum = feats.to(torch.promote_types(feats.dtype, torch.float32)).cumsum(0)  # M x C
        last = torch.ones_like(ranks, dtype=torch.bool)  # the last point of each voxel
        last[:-1] = ranks[1:] != ranks[:-1]
        csum, ranks = csum[last], ranks[last]
        sums = torch.cat([csum[:1], csum[1:] - csum[:-1]]).to(feats.dtype)  # voxels hit x C
        out = out.index_copy(0, ranks, sums)
    return out.view(batch_size, z_n, x_n, y_n, c).permute(0, 4, 1, 2, 3).contiguous()
