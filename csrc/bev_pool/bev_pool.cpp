// Device-agnostic argument checks of bev_pool, shared by the CPU and CUDA kernels.
#include "bev_pool/bev_pool.h"

#include <ATen/ATen.h>

namespace bev_reid {

namespace {

// The dtypes the kernels are built for; the other floating types (float8, ...) are refused here,
// before any work.
bool is_pool_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

std::array<int64_t, 3> check_grid(int64_t batch_size, at::IntArrayRef grid) {
  TORCH_CHECK(batch_size >= 0, "bev_pool: batch_size must be >= 0, got ", batch_size);
  TORCH_CHECK(grid.size() == 3, "bev_pool: grid must be (X, Y, Z), got ", grid);
  for (const int64_t g : grid) {
    TORCH_CHECK(g > 0, "bev_pool: every grid size must be > 0, got ", grid);
  }
  return {grid[0], grid[1], grid[2]};
}

void check_coords(const at::Tensor& coords, int64_t n, const at::Tensor& other,
                  const char* other_name) {
  TORCH_CHECK(coords.dim() == 2 && coords.size(1) == 4,
              "bev_pool: coords must be [N, 4] (x, y, z, batch), got ", coords.sizes());
  TORCH_CHECK(n < 0 || coords.size(0) == n, "bev_pool: coords has ", coords.size(0),
              " rows but feats has ", n);
  TORCH_CHECK(coords.scalar_type() == at::kInt || coords.scalar_type() == at::kLong,
              "bev_pool: coords must be int32 or int64, got ", coords.scalar_type());
  TORCH_CHECK(coords.device() == other.device(), "bev_pool: coords is on ", coords.device(),
              " but ", other_name, " is on ", other.device());
  TORCH_CHECK(coords.is_contiguous(), "bev_pool: coords must be contiguous");
}

}  // namespace

std::array<int64_t, 3> check_bev_pool_args(const at::Tensor& feats, const at::Tensor& coords,
                                           int64_t batch_size, at::IntArrayRef grid) {
  TORCH_CHECK(feats.dim() == 2, "bev_pool: feats must be [N, C], got ", feats.sizes());
  TORCH_CHECK(is_pool_dtype(feats.scalar_type()),
              "bev_pool: feats must be a floating tensor (float32, float64, float16 or bfloat16), "
              "got ",
              feats.scalar_type());
  TORCH_CHECK(feats.is_contiguous(), "bev_pool: feats must be contiguous");
  check_coords(coords, feats.size(0), feats, "feats");
  return check_grid(batch_size, grid);
}

void check_bev_pool_backward_args(const at::Tensor& grad_out, const at::Tensor& coords,
                                  int64_t batch_size, at::IntArrayRef grid) {
  const auto g = check_grid(batch_size, grid);
  TORCH_CHECK(grad_out.dim() == 5 && grad_out.size(0) == batch_size && grad_out.size(2) == g[2] &&
                  grad_out.size(3) == g[0] && grad_out.size(4) == g[1],
              "bev_pool_backward: grad_out must be [B, C, Z, X, Y] = [", batch_size, ", C, ", g[2],
              ", ", g[0], ", ", g[1], "], got ", grad_out.sizes());
  TORCH_CHECK(is_pool_dtype(grad_out.scalar_type()),
              "bev_pool_backward: grad_out must be a floating tensor (float32, float64, float16 or "
              "bfloat16), got ",
              grad_out.scalar_type());
  TORCH_CHECK(grad_out.is_contiguous(), "bev_pool_backward: grad_out must be contiguous");
  check_coords(coords, -1, grad_out, "grad_out");
}

}  // namespace bev_reid
