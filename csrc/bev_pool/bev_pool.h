// bev_pool: sum point features into the voxels of a BEV grid.
//
// Layout contract shared by the CPU and CUDA kernels:
//   feats   [N, C]  fp32/fp64/fp16/bf16 (CPU and CUDA; other dtypes are refused), contiguous
//   coords  [N, 4]  int32 or int64, contiguous, each row (x, y, z, batch)
//   grid            (X, Y, Z) > 0, batch_size B >= 0
//   out     [B, C, Z, X, Y] same dtype as feats; out[b, c, z, x, y] = sum of feats[i, c] over the
//           points i whose coords are (x, y, z, b). Points with any coordinate outside
//           [0, X) x [0, Y) x [0, Z) x [0, B) are dropped. Sums accumulate in at::opmath_type
//           (float for half/bf16), in input order within a voxel, in pieces cut at multiples of
//           kSplatChunk of the sorted order (splat_chunk.h), so results are deterministic and
//           equal on CPU and CUDA bit for bit.
//   grad_out [B, C, Z, X, Y] -> grad_feats [N, C]: grad_feats[i] = grad_out[b, :, z, x, y] for
//           points inside the grid, 0 for dropped points.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>

namespace bev_reid {

// Validates arguments shared by every device; returns the grid as (X, Y, Z).
std::array<int64_t, 3> check_bev_pool_args(const at::Tensor& feats, const at::Tensor& coords,
                                           int64_t batch_size, at::IntArrayRef grid);
void check_bev_pool_backward_args(const at::Tensor& grad_out, const at::Tensor& coords,
                                  int64_t batch_size, at::IntArrayRef grid);

at::Tensor bev_pool_forward_cpu(const at::Tensor& feats, const at::Tensor& coords,
                                int64_t batch_size, at::IntArrayRef grid);
at::Tensor bev_pool_backward_cpu(const at::Tensor& grad_out, const at::Tensor& coords,
                                 int64_t batch_size, at::IntArrayRef grid);

#ifdef WITH_CUDA
at::Tensor bev_pool_forward_cuda(const at::Tensor& feats, const at::Tensor& coords,
                                 int64_t batch_size, at::IntArrayRef grid);
at::Tensor bev_pool_backward_cuda(const at::Tensor& grad_out, const at::Tensor& coords,
                                  int64_t batch_size, at::IntArrayRef grid);
#endif

}  // namespace bev_reid
