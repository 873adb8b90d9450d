// Device-agnostic argument checks of fused_splat, shared by the CPU and CUDA kernels.
#include "fused_splat/fused_splat.h"

#include <ATen/ATen.h>

namespace bev_reid {

namespace {

std::array<int64_t, 3> check_grid(const char* op, at::IntArrayRef grid) {
  TORCH_CHECK(grid.size() == 3, op, ": grid must be (X, Y, Z), got ", grid);
  for (const int64_t g : grid) {
    TORCH_CHECK(g > 0 && g <= (int64_t{1} << 24), op,
                ": every grid size must be in [1, 2^24], got ", grid);
  }
  return {grid[0], grid[1], grid[2]};
}

bool is_splat_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

void check_index(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef sizes,
                 const at::Tensor& depth) {
  TORCH_CHECK(t.scalar_type() == at::kLong, op, ": ", name,
              " must be int64 (from fused_splat_plan), got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == sizes, op, ": ", name, " must be ", sizes,
              " (a plan for cells of depth's shape and this grid), got ", t.sizes());
  TORCH_CHECK(t.device() == depth.device(), op, ": ", name, " is on ", t.device(),
              " but depth is on ", depth.device());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

}  // namespace

std::array<int64_t, 3> check_splat_plan_args(const at::Tensor& cells, at::IntArrayRef grid) {
  const char* op = "fused_splat_plan";
  TORCH_CHECK(cells.dim() == 6 && cells.size(5) == 3, op,
              ": cells must be [B, N, D, H, W, 3] (x, y, z), got ", cells.sizes());
  TORCH_CHECK(cells.scalar_type() == at::kInt || cells.scalar_type() == at::kLong, op,
              ": cells must be int32 or int64, got ", cells.scalar_type());
  TORCH_CHECK(cells.is_contiguous(), op, ": cells must be contiguous");
  const auto g = check_grid(op, grid);
  TORCH_CHECK(cells.size(0) * g[0] * g[1] * g[2] < (int64_t{1} << 40), op, ": the grid ", grid,
              " x batch ", cells.size(0), " has too many cells");
  return g;
}

SplatShape check_fused_splat_args(const char* op, const at::Tensor& depth,
                                  const at::Tensor& context, const at::Tensor& ranks,
                                  const at::Tensor& order, const at::Tensor& sorted_ranks,
                                  const at::Tensor& offsets, at::IntArrayRef grid) {
  TORCH_CHECK(depth.dim() == 5, op, ": depth must be [B, N, D, H, W], got ", depth.sizes());
  TORCH_CHECK(is_splat_dtype(depth.scalar_type()), op,
              ": depth must be float32, float64, float16 or bfloat16, got ", depth.scalar_type());
  TORCH_CHECK(depth.is_contiguous(), op, ": depth must be contiguous");
  TORCH_CHECK(context.dim() == 5, op, ": context must be [B, N, H, W, C] (channels last), got ",
              context.sizes());
  TORCH_CHECK(context.size(0) == depth.size(0) && context.size(1) == depth.size(1) &&
                  context.size(2) == depth.size(3) && context.size(3) == depth.size(4),
              op, ": context ", context.sizes(), " must be [B, N, H, W, C] for depth ",
              depth.sizes(), " [B, N, D, H, W]");
  TORCH_CHECK(context.scalar_type() == depth.scalar_type(), op, ": context is ",
              context.scalar_type(), " but depth is ", depth.scalar_type());
  TORCH_CHECK(context.device() == depth.device(), op, ": context is on ", context.device(),
              " but depth is on ", depth.device());
  TORCH_CHECK(context.is_contiguous(), op, ": context must be contiguous (channels last)");
  const auto g = check_grid(op, grid);
  SplatShape s{depth.size(0),   depth.size(1), depth.size(2), depth.size(3), depth.size(4),
               context.size(4), g[0],          g[1],          g[2]};
  TORCH_CHECK(s.num_cells() < (int64_t{1} << 40), op, ": the grid ", grid, " x batch ", s.B,
              " has too many cells");
  check_index(op, "ranks", ranks, depth.sizes(), depth);
  check_index(op, "order", order, {s.num_points()}, depth);
  check_index(op, "sorted_ranks", sorted_ranks, {s.num_points()}, depth);
  check_index(op, "offsets", offsets, {s.num_cells() + 1}, depth);
  return s;
}

void check_fused_splat_grad(const at::Tensor& grad_out, const at::Tensor& depth,
                            const SplatShape& s) {
  const char* op = "fused_splat_backward";
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({s.B, s.C, s.Z, s.X, s.Y}), op,
              ": grad_out must be [B, C, Z, X, Y] = [", s.B, ", ", s.C, ", ", s.Z, ", ", s.X, ", ",
              s.Y, "], got ", grad_out.sizes());
  TORCH_CHECK(grad_out.scalar_type() == depth.scalar_type(), op, ": grad_out is ",
              grad_out.scalar_type(), " but depth is ", depth.scalar_type());
  TORCH_CHECK(grad_out.device() == depth.device(), op, ": grad_out is on ", grad_out.device(),
              " but depth is on ", depth.device());
  TORCH_CHECK(grad_out.is_contiguous(), op, ": grad_out must be contiguous");
}

}  // namespace bev_reid
