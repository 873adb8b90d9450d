// CUDA kernels of bev_pool, free of ATen so that they compile with plain nvcc (see
// tests/ops/test_cuda_compile.py). The host wrapper is bev_pool_cuda.cu; the layout contract is
// bev_pool.h:
//   feats    [N, C] scalar_t,  coords [N, 4] index_t (int32/int64; x, y, z, batch)
//   out      [B, C, Z, X, Y] scalar_t
//   grad_out [B, C, Z, X, Y] scalar_t -> grad_feats [N, C] scalar_t
// A point's rank is the linear index of its voxel, ((b * Z + z) * X + x) * Y + y, or num_cells =
// B * Z * X * Y when it is outside the grid (so that dropped points sort last).
//
// Forward: rank_kernel, a stable sort of the ranks (the host wrapper calls at::sort), then the
// chunked sums of splat_kernels.cuh over the sorted feats rows. Backward: grad_out is transposed to
// channels-last (splat_kernels::transpose_kernel), then gather_rows_kernel copies one row per point
// with coalesced reads and writes.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "splat_kernels.cuh"

namespace bev_reid {
namespace bev_pool_kernels {

using splat_kernels::cuda_cast;

// Linear voxel index of one coords row (x, y, z, b), or -1 when outside the grid.
template <typename index_t>
__device__ __forceinline__ int64_t voxel_rank(const index_t* __restrict__ row, int64_t B, int64_t X,
                                              int64_t Y, int64_t Z) {
  const int64_t x = static_cast<int64_t>(row[0]);
  const int64_t y = static_cast<int64_t>(row[1]);
  const int64_t z = static_cast<int64_t>(row[2]);
  const int64_t b = static_cast<int64_t>(row[3]);
  if (x < 0 || x >= X || y < 0 || y >= Y || z < 0 || z >= Z || b < 0 || b >= B) return -1;
  return ((b * Z + z) * X + x) * Y + y;
}

// ranks[N] int64 = voxel rank of each point, num_cells = B * Z * X * Y when outside.
// Thread mapping: one thread per point i (grid-stride loop over N).
template <typename index_t>
__global__ void rank_kernel(const index_t* __restrict__ coords,  // [N, 4]
                            int64_t* __restrict__ ranks,         // [N]
                            int64_t N, int64_t B, int64_t X, int64_t Y, int64_t Z) {
  const int64_t num_cells = B * Z * X * Y;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = voxel_rank(coords + 4 * i, B, X, Y, Z);
    ranks[i] = r < 0 ? num_cells : r;
  }
}

// grad_feats[i, c] = grad_cl[rank_i, c] for the voxel of point i, 0 when i is outside; grad_cl
// [B * Z * X * Y, C] is grad_out in channels-last order, so both the reads and the writes of a warp
// are coalesced (each row [C] is contiguous in both).
// Thread mapping: one thread per (point i, channel c), t = i * C + c (grid-stride loop over N * C);
// the coords row is a broadcast read within a warp.
template <typename scalar_t, typename index_t>
__global__ void gather_rows_kernel(const scalar_t* __restrict__ grad_cl,  // [B*Z*X*Y, C]
                                   const index_t* __restrict__ coords,    // [N, 4]
                                   scalar_t* __restrict__ grad_feats,     // [N, C]
                                   int64_t N, int64_t C, int64_t B, int64_t X, int64_t Y,
                                   int64_t Z) {
  const int64_t total = N * C;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = t / C;
    const int64_t c = t - i * C;
    const int64_t rank = voxel_rank(coords + 4 * i, B, X, Y, Z);
    grad_feats[t] = rank < 0 ? cuda_cast<scalar_t>(0.0f) : grad_cl[rank * C + c];
  }
}

}  // namespace bev_pool_kernels
}  // namespace bev_reid
