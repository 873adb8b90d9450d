// CUDA kernels of fused_splat, free of ATen so that they compile with plain nvcc (see
// tests/ops/test_cuda_compile.py). The host wrapper is fused_splat_cuda.cu; the contract is
// fused_splat.h:
//   cells   [P, 3] index_t (x, y, z) of the frustum points, P = B * N * D * H * W
//   depth   [B, N, D, H, W] scalar_t, context [B, N, H, W, C] scalar_t
//   ranks   [P] int64 (num_cells for a dropped point), order / sorted_ranks [P] int64,
//   offsets [num_cells + 1] int64
//   out, grad_out [B, C, Z, X, Y] scalar_t; grad_cl [B * Z * X * Y, C]: grad_out channels-last
// The forward is splat_kernels::chunk_sum_kernel / combine_kernel with FrustumRows.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "splat_kernels.cuh"

namespace bev_reid {
namespace fused_splat_kernels {

using splat_kernels::cuda_cast;
using splat_kernels::kFullMask;
using splat_kernels::mul_rn;

// ranks[p] = ((b * Z + z) * X + x) * Y + y for point p's cell (x, y, z), b = p / per_batch, or
// num_cells when the cell is outside the grid.
// Thread mapping: one thread per point p (grid-stride loop over P).
template <typename index_t>
__global__ void rank_kernel(const index_t* __restrict__ cells,  // [P, 3]
                            int64_t* __restrict__ ranks,        // [P]
                            int64_t P, int64_t per_batch, int64_t X, int64_t Y, int64_t Z,
                            int64_t num_cells) {
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < P;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t x = static_cast<int64_t>(cells[3 * p]);
    const int64_t y = static_cast<int64_t>(cells[3 * p + 1]);
    const int64_t z = static_cast<int64_t>(cells[3 * p + 2]);
    const bool inside = x >= 0 && x < X && y >= 0 && y < Y && z >= 0 && z < Z;
    ranks[p] = inside ? (((p / per_batch) * Z + z) * X + x) * Y + y : num_cells;
  }
}

// offsets[r] = the first sorted position whose rank is >= r (a binary search), r in
// [0, num_cells]: the points of cell r are order[offsets[r] .. offsets[r + 1]).
// Thread mapping: one thread per r (grid-stride loop over num_cells + 1); log2(P) steps each.
template <typename rank_t>
__global__ void offsets_kernel(const rank_t* __restrict__ sorted_ranks,  // [P]
                               int64_t* __restrict__ offsets,            // [num_cells + 1]
                               int64_t P, int64_t num_cells) {
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r <= num_cells;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t lo = 0, hi = P;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (sorted_ranks[mid] < r) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    offsets[r] = lo;
  }
}

// grad_depth[p] = sum over c of grad_cl[rank_p, c] * context[pixel(p), c], 0 for dropped points.
// Thread mapping: one warp per point p (grid-stride loop over P warps); lane l sums channels
// l, l + 32, ... (coalesced row reads), then a butterfly over the lanes; lane 0 writes.
template <typename scalar_t, typename acc_t>
__global__ void grad_depth_kernel(const scalar_t* __restrict__ grad_cl,  // [num_cells, C]
                                  const scalar_t* __restrict__ context,  // [B, N, H, W, C]
                                  const int64_t* __restrict__ ranks,     // [P]
                                  scalar_t* __restrict__ grad_depth,     // [P]
                                  int64_t P, int64_t C, int64_t D, int64_t HW, int64_t num_cells) {
  const int lane = threadIdx.x & 31;
  for (int64_t p = splat_kernels::warp_id(); p < P; p += splat_kernels::warp_count()) {
    const int64_t r = ranks[p];
    acc_t sum = acc_t(0);
    if (r < num_cells) {
      const int64_t bnd = p / HW;
      const scalar_t* g = grad_cl + r * C;
      const scalar_t* x = context + ((bnd / D) * HW + (p - bnd * HW)) * C;
      for (int64_t c = lane; c < C; c += 32) {
        sum += mul_rn(cuda_cast<acc_t>(g[c]), cuda_cast<acc_t>(x[c]));
      }
    }
#pragma unroll
    for (int offset = 16; offset >= 1; offset /= 2) {
      sum = sum + __shfl_xor_sync(kFullMask, sum, offset);
    }
    if (lane == 0) grad_depth[p] = cuda_cast<scalar_t>(sum);
  }
}

// grad_context[pix, c] = sum over d (in order) of depth[p] * grad_cl[rank_p, c], p the point of
// pixel pix at depth bin d; dropped points add nothing.
// Thread mapping: one warp per (pixel, group of 32 channels), w = pix * groups + g (grid-stride
// loop); lanes over channels, so the row reads and the writes are coalesced; D points per warp.
template <typename scalar_t, typename acc_t>
__global__ void grad_context_kernel(const scalar_t* __restrict__ grad_cl,  // [num_cells, C]
                                    const scalar_t* __restrict__ depth,    // [B, N, D, H, W]
                                    const int64_t* __restrict__ ranks,     // [P]
                                    scalar_t* __restrict__ grad_context,   // [B, N, H, W, C]
                                    int64_t pixels, int64_t C, int64_t D, int64_t HW,
                                    int64_t num_cells) {
  const int64_t groups = (C + 31) / 32;
  const int lane = threadIdx.x & 31;
  for (int64_t w = splat_kernels::warp_id(); w < pixels * groups;
       w += splat_kernels::warp_count()) {
    const int64_t pix = w / groups;
    const int64_t c = (w - pix * groups) * 32 + lane;
    if (c >= C) continue;
    const int64_t bn = pix / HW, hw = pix - bn * HW;
    acc_t acc = acc_t(0);
    for (int64_t d = 0; d < D; ++d) {
      const int64_t p = (bn * D + d) * HW + hw;
      const int64_t r = ranks[p];
      if (r < num_cells) {
        acc += mul_rn(cuda_cast<acc_t>(depth[p]), cuda_cast<acc_t>(grad_cl[r * C + c]));
      }
    }
    grad_context[pix * C + c] = cuda_cast<scalar_t>(acc);
  }
}

}  // namespace fused_splat_kernels
}  // namespace bev_reid
