"""fused_splat: lift-splat's splat of depth x context into a BEV grid, without the frustum tensor.

Lift-splat-shoot places each camera pixel's context vector along its ray, weighted by the
predicted depth distribution, and sums the frustum points of each BEV cell. Built naively (the
outer product, then :func:`bev_reid.ops.bev_pool`) that makes a [P, C] frustum tensor, P = B N D H W
points (44 MB per batch of 4 at the default config) and copies it. ``fused_splat`` reads depth and
context where they lie (after BEVPoolv2, Huang & Huang 2022):

    out[b, c, z, x, y] = sum over the points p in cell (b, z, x, y)
                         of depth[p] * context[pixel(p), c]

The cell bookkeeping (which point falls in which cell, the points sorted by cell) depends only on
the geometry: :func:`splat_plan` computes it once, and the plan can be reused for as long as the
calibration and the image augmentation stay the same (inference, dataset building).

The compiled ops (``torch.ops.bev_reid.fused_splat_plan / fused_splat / fused_splat_backward``) have
CPU and CUDA kernels; this module gives them fake (meta) implementations and autograd formulas (to
second order), so they run under ``torch.compile`` and train. Results are deterministic and equal
on CPU and CUDA bit for bit. ``fused_splat_reference`` is the plain torch splat (outer product, then
``bev_pool_reference``), the yardstick of the tests and benchmarks.

Shapes: B batch, N cameras, D depth bins, H x W feature cells, C channels, grid (X, Y, Z).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from bev_reid.ops._lib import load_library
from bev_reid.ops.bev_pool import bev_pool_reference

load_library()

_ops = torch.ops.bev_reid


class SplatPlan(NamedTuple):
    """Which frustum point falls in which cell, from :func:`splat_plan`.

    A point is dropped when its cell is outside the grid; dropped points sort last.
    """

    ranks: torch.Tensor  # [B, N, D, H, W] int64: cell ((b * Z + z) * X + x) * Y + y, or B*Z*X*Y
    order: torch.Tensor  # [P] int64: the points sorted by cell, input order within a cell
    sorted_ranks: torch.Tensor  # [P] int64: ranks[order]
    offsets: torch.Tensor  # [B*Z*X*Y + 1] int64: cell r holds order[offsets[r]:offsets[r + 1]]
    grid: tuple[int, int, int]  # (X, Y, Z)

    @property
    def shape(self) -> tuple[int, ...]:
        """(B, N, D, H, W): the frustum the plan was made for."""
        return tuple(self.ranks.shape)

    def to(self, device: torch.device | str) -> SplatPlan:
        """The same plan on another device."""
        moved = (t.to(device) for t in (self.ranks, self.order, self.sorted_ranks, self.offsets))
        return SplatPlan(*moved, self.grid)


def _grid3(grid: Sequence[int]) -> list[int]:
    grid = [int(g) for g in grid]
    if len(grid) != 3:
        raise ValueError(f"fused_splat: grid must be (X, Y, Z), got {grid}")
    return grid


def splat_plan(cells: torch.Tensor, grid: Sequence[int]) -> SplatPlan:
    """The cell bookkeeping of :func:`fused_splat` for one frustum geometry.

    Args:
        cells: [B, N, D, H, W, 3] int32/int64 grid cell (x, y, z) of every frustum point, e.g.
            :func:`bev_reid.models.geometry.points_to_voxel_coords` of the ego positions. Points
            with a coordinate outside [0, X) x [0, Y) x [0, Z) are dropped.
        grid: (X, Y, Z).

    Returns:
        The plan, on ``cells``' device. Not differentiable (nothing in it is).
    """
    grid = _grid3(grid)
    ranks, order, sorted_ranks, offsets = _ops.fused_splat_plan(cells.contiguous(), grid)
    return SplatPlan(ranks, order, sorted_ranks, offsets, tuple(grid))


def fused_splat(depth: torch.Tensor, context: torch.Tensor, plan: SplatPlan) -> torch.Tensor:
    """Sums depth x context of the frustum points into the grid cells.

    Args:
        depth: [B, N, D, H, W] float32/float64/float16/bfloat16 depth weights (e.g. a softmax
            over D).
        context: [B, N, H, W, C] same dtype: the context vector of each feature cell, channels last.
        plan: :func:`splat_plan` of the frustum's cells, on the same device.

    Returns:
        [B, C, Z, X, Y], depth's dtype (sums carried in float32 for the 16-bit types);
        differentiable in ``depth`` and ``context``.
    """
    return _ops.fused_splat(
        depth.contiguous(),
        context.contiguous(),
        plan.ranks,
        plan.order,
        plan.sorted_ranks,
        plan.offsets,
        list(plan.grid),
    )


def fused_splat_reference(
    depth: torch.Tensor, context: torch.Tensor, cells: torch.Tensor, grid: Sequence[int]
) -> torch.Tensor:
    """The plain torch splat: the [P, C] outer product, then ``bev_pool_reference``.

    Same arguments as :func:`fused_splat`, with the cells [B, N, D, H, W, 3] in place of the plan;
    same result; differentiable through autograd.
    """
    batch, cams, bins, h, w = depth.shape
    channels = context.shape[-1]
    feats = depth.unsqueeze(-1) * context.unsqueeze(2)  # B x N x D x H x W x C
    b = (
        torch.arange(batch, device=cells.device)
        .view(batch, 1, 1, 1, 1, 1)
        .expand(batch, cams, bins, h, w, 1)
    )  # B x N x D x H x W x 1
    coords = torch.cat([cells.long(), b], -1).reshape(-1, 4)  # P x 4 (x, y, z, batch)
    return bev_pool_reference(feats.reshape(-1, channels), coords, batch, _grid3(grid))


@torch.library.register_fake("bev_reid::fused_splat_plan")
def _plan_fake(cells, grid):
    torch._check(
        cells.dim() == 6 and cells.shape[5] == 3,
        lambda: f"fused_splat_plan: cells must be [B, N, D, H, W, 3], got {cells.shape}",
    )
    x, y, z = grid
    p = cells.shape[0] * cells.shape[1] * cells.shape[2] * cells.shape[3] * cells.shape[4]
    return (
        cells.new_empty(cells.shape[:5], dtype=torch.int64),
        cells.new_empty((p,), dtype=torch.int64),
        cells.new_empty((p,), dtype=torch.int64),
        cells.new_empty((cells.shape[0] * z * x * y + 1,), dtype=torch.int64),
    )


@torch.library.register_fake("bev_reid::fused_splat")
def _fused_splat_fake(depth, context, ranks, order, sorted_ranks, offsets, grid):
    torch._check(depth.dim() == 5, lambda: f"fused_splat: depth must be 5-D, got {depth.shape}")
    torch._check(
        context.dim() == 5, lambda: f"fused_splat: context must be 5-D, got {context.shape}"
    )
    x, y, z = grid
    return depth.new_empty((depth.shape[0], context.shape[4], z, x, y))


@torch.library.register_fake("bev_reid::fused_splat_backward")
def _fused_splat_backward_fake(grad_out, depth, context, ranks, order, sorted_ranks, offsets, grid):
    return torch.empty_like(depth), torch.empty_like(context)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:-1])
    ctx.grid = inputs[-1]


def _fused_splat_backward(ctx, grad_out):
    depth, context, *plan = ctx.saved_tensors
    grad_depth, grad_context = _ops.fused_splat_backward(
        grad_out.contiguous(), depth, context, *plan, ctx.grid
    )
    return grad_depth, grad_context, None, None, None, None, None


def _fused_splat_double_backward(ctx, gg_depth, gg_context):
    # fused_splat is bilinear in (depth, context), so its backward is linear in each of grad_out,
    # depth and context, and every term of the second derivative is the op or its backward with
    # one argument replaced (gg: the gradients arriving at grad_depth and grad_context).
    grad_out, depth, context, *plan = ctx.saved_tensors
    grid = ctx.grid
    g_grad_out = g_depth = g_context = None
    if gg_depth is not None:
        gg_depth = gg_depth.contiguous()
        g_grad_out = _ops.fused_splat(gg_depth, context, *plan, grid)
        g_context = _ops.fused_splat_backward(grad_out, gg_depth, context, *plan, grid)[1]
    if gg_context is not None:
        gg_context = gg_context.contiguous()
        term = _ops.fused_splat(depth, gg_context, *plan, grid)
        g_grad_out = term if g_grad_out is None else g_grad_out + term
        g_depth = _ops.fused_splat_backward(grad_out, depth, gg_context, *plan, grid)[0]
    return g_grad_out, g_depth, g_context, None, None, None, None, None


torch.library.register_autograd(
    "bev_reid::fused_splat", _fused_splat_backward, setup_context=_setup_context
)
torch.library.register_autograd(
    "bev_reid::fused_splat_backward", _fused_splat_double_backward, setup_context=_setup_context
)
