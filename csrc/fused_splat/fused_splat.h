// fused_splat: lift-splat's splat of depth x context into the cells of a BEV grid, read where the
// two lie (after BEVPoolv2, Huang & Huang 2022): the [P, C] frustum features are never built.
//
// Frustum points. P = B * N * D * H * W points, p = (((b * N + n) * D + d) * H + h) * W + w: camera
// n of sample b, depth bin d, feature cell (h, w). Point p reads depth[b, n, d, h, w] and the
// context row of its pixel, context[b, n, h, w, :].
//
// Plan (fused_splat_plan; depends only on the geometry, so it can be built once and reused while
// the cameras and the image augmentation stay the same):
//   cells   [B, N, D, H, W, 3] int32/int64: grid cell (x, y, z) of each point; a point with any of
//           x, y, z outside [0, X) x [0, Y) x [0, Z) is dropped (as bev_pool drops it).
//   grid    (X, Y, Z) > 0.
//   ->  ranks        [B, N, D, H, W] int64: rank r = ((b * Z + z) * X + x) * Y + y of each point's
//                    cell, or num_cells = B * Z * X * Y for a dropped point;
//       order        [P] int64: the points sorted by rank, stably (input order within a cell),
//                    dropped points last;
//       sorted_ranks [P] int64: ranks in that order;
//       offsets      [num_cells + 1] int64: the points of cell r are order[offsets[r] ..
//                    offsets[r + 1]); offsets[num_cells] is the number of points kept.
//   The same cells give the same plan on every device.
//
// fused_splat(depth, context, plan, grid) -> out [B, C, Z, X, Y]:
//   depth    [B, N, D, H, W] floating (fp32/fp64/fp16/bf16), contiguous;
//   context  [B, N, H, W, C] same dtype, contiguous (channels last);
//   out[b, c, z, x, y] = sum over the points p of cell (b, z, x, y) of depth[p] * context[pixel(p),
//   c], each product rounded to acc_t (at::opmath_type: float for the 16-bit types) and added in
//   acc_t in sorted order, in pieces cut at multiples of kSplatChunk (splat_chunk.h), so results
//   are deterministic and equal on CPU and CUDA bit for bit.
// fused_splat_backward(grad_out [B, C, Z, X, Y], depth, context, plan, grid)
//   -> grad_depth [B, N, D, H, W]: sum over c of grad_out[b, c, cell(p)] * context[pixel(p), c],
//                  0 for dropped points;
//      grad_context [B, N, H, W, C]: sum over d of depth[p] * grad_out[b, c, cell(p)], in d order.
//   The dot product over c is added as a warp of 32 lanes adds it on CUDA (lane l sums channels
//   l, l + 32, ...; then a butterfly over the lanes), on CPU as well.
//
// The plan tensors are trusted to come from fused_splat_plan for cells of depth's shape and this
// grid: their shapes, dtypes and devices are checked, their values are not (that would cost a pass
// over them and, on CUDA, a host sync).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <tuple>

namespace bev_reid {

// Frustum sizes of a fused_splat call.
struct SplatShape {
  int64_t B, N, D, H, W, C;
  int64_t X, Y, Z;
  int64_t num_points() const { return B * N * D * H * W; }
  int64_t num_cells() const { return B * Z * X * Y; }
  int64_t plane() const { return Z * X * Y; }
};

// Checks the arguments of fused_splat_plan; returns (X, Y, Z).
std::array<int64_t, 3> check_splat_plan_args(const at::Tensor& cells, at::IntArrayRef grid);
// Checks the arguments shared by the forward and the backward; returns the sizes.
SplatShape check_fused_splat_args(const char* op, const at::Tensor& depth,
                                  const at::Tensor& context, const at::Tensor& ranks,
                                  const at::Tensor& order, const at::Tensor& sorted_ranks,
                                  const at::Tensor& offsets, at::IntArrayRef grid);
void check_fused_splat_grad(const at::Tensor& grad_out, const at::Tensor& depth,
                            const SplatShape& s);

using SplatPlan = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

SplatPlan fused_splat_plan_cpu(const at::Tensor& cells, at::IntArrayRef grid);
at::Tensor fused_splat_forward_cpu(const at::Tensor& depth, const at::Tensor& context,
                                   const at::Tensor& ranks, const at::Tensor& order,
                                   const at::Tensor& sorted_ranks, const at::Tensor& offsets,
                                   at::IntArrayRef grid);
std::tuple<at::Tensor, at::Tensor> fused_splat_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& depth, const at::Tensor& context,
    const at::Tensor& ranks, const at::Tensor& order, const at::Tensor& sorted_ranks,
    const at::Tensor& offsets, at::IntArrayRef grid);

#ifdef WITH_CUDA
SplatPlan fused_splat_plan_cuda(const at::Tensor& cells, at::IntArrayRef grid);
at::Tensor fused_splat_forward_cuda(const at::Tensor& depth, const at::Tensor& context,
                                    const at::Tensor& ranks, const at::Tensor& order,
                                    const at::Tensor& sorted_ranks, const at::Tensor& offsets,
                                    at::IntArrayRef grid);
std::tuple<at::Tensor, at::Tensor> fused_splat_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& depth, const at::Tensor& context,
    const at::Tensor& ranks, const at::Tensor& order, const at::Tensor& sorted_ranks,
    const at::Tensor& offsets, at::IntArrayRef grid);
#endif

}  // namespace bev_reid
