// CUDA kernels of bev_pool, free of ATen so that they compile with plain nvcc (see
// tests/ops/test_cuda_compile.py). The host wrapper is bev_pool_cuda.cu; the layout contract is
// bev_pool.h:
//   feats    [N, C] scalar_t,  coords [N, 4] index_t (int32/int64; x, y, z, batch)
//   out      [B, C, Z, X, Y] scalar_t
//   grad_out [B, C, Z, X, Y] scalar_t -> grad_feats [N, C] scalar_t
// A point's rank is the linear index of its voxel, ((b * Z + z) * X + x) * Y + y, or -1 when it is
// outside the grid. The forward pass stable-sorts the ranks (the host wrapper calls at::sort) and
// sums each run of equal ranks in input order, with no atomics, so results are deterministic.
//
// scalar_t is float, double, __half or __nv_bfloat16; acc_t is the type sums are carried in
// (at::opmath_type: float for the 16-bit types). Conversions go through cuda_cast because torch
// compiles CUDA with __CUDA_NO_HALF_CONVERSIONS__ / __CUDA_NO_BFLOAT16_CONVERSIONS__, which remove
// the implicit __half <-> float conversions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace bev_reid {
namespace bev_pool_kernels {

// cuda_cast<To>(v): value conversion that also works for __half / __nv_bfloat16 under torch's
// no-implicit-conversion flags.
template <typename To, typename From>
struct CudaCast {
  __host__ __device__ __forceinline__ static To apply(From v) { return static_cast<To>(v); }
};
template <>
struct CudaCast<float, __half> {
  __host__ __device__ __forceinline__ static float apply(__half v) { return __half2float(v); }
};
template <>
struct CudaCast<__half, float> {
  __host__ __device__ __forceinline__ static __half apply(float v) { return __float2half_rn(v); }
};
template <>
struct CudaCast<float, __nv_bfloat16> {
  __host__ __device__ __forceinline__ static float apply(__nv_bfloat16 v) {
    return __bfloat162float(v);
  }
};
template <>
struct CudaCast<__nv_bfloat16, float> {
  __host__ __device__ __forceinline__ static __nv_bfloat16 apply(float v) {
    return __float2bfloat16_rn(v);
  }
};
template <typename To, typename From>
__host__ __device__ __forceinline__ To cuda_cast(From v) {
  return CudaCast<To, From>::apply(v);
}

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

// ranks[N] int64 = voxel rank of each point, -1 when outside.
// Thread mapping: one thread per point i (grid-stride loop over N).
template <typename index_t>
__global__ void rank_kernel(const index_t* __restrict__ coords,  // [N, 4]
                            int64_t* __restrict__ ranks,         // [N]
                            int64_t N, int64_t B, int64_t X, int64_t Y, int64_t Z) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    ranks[i] = voxel_rank(coords + 4 * i, B, X, Y, Z);
  }
}

// starts[N] uint8 = 1 where sorted position i opens an interval of equal, valid ranks.
// Dropped points (-1) sort first and never open an interval.
// Thread mapping: one thread per sorted position i (grid-stride loop over N).
// (A template, like every kernel here, so that the header can be included by several TUs.)
template <typename rank_t>
__global__ void interval_start_kernel(const rank_t* __restrict__ sorted_ranks,  // [N]
                                      uint8_t* __restrict__ starts,             // [N]
                                      int64_t N) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const rank_t r = sorted_ranks[i];
    starts[i] = (r >= 0 && (i == 0 || sorted_ranks[i - 1] != r)) ? 1 : 0;
  }
}

// out[b, c, z, x, y] = sum over the points of interval k of feats[point, c], in input order.
// Interval k covers sorted positions [interval_starts[k], interval_starts[k + 1]) (the last one
// ends at N); order maps a sorted position to its point. out must be zero-filled: voxels that
// no point falls in are not written.
// Thread mapping: one thread per (interval k, channel c), t = k * C + c (grid-stride loop over
// K * C): threads of a warp run over channels, so each read of a feats row [C] is coalesced.
template <typename scalar_t, typename acc_t>
__global__ void pool_intervals_kernel(const scalar_t* __restrict__ feats,           // [N, C]
                                      const int64_t* __restrict__ sorted_ranks,     // [N]
                                      const int64_t* __restrict__ order,            // [N]
                                      const int64_t* __restrict__ interval_starts,  // [K]
                                      scalar_t* __restrict__ out,  // [B, C, Z, X, Y]
                                      int64_t N, int64_t C, int64_t K, int64_t X, int64_t Y,
                                      int64_t Z) {
  const int64_t total = K * C;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = t / C;
    const int64_t c = t - k * C;
    const int64_t begin = interval_starts[k];
    const int64_t end = (k + 1 < K) ? interval_starts[k + 1] : N;
    acc_t sum = acc_t(0);
    for (int64_t j = begin; j < end; ++j) {
      sum += cuda_cast<acc_t>(feats[order[j] * C + c]);
    }
    // rank = ((b * Z + z) * X + x) * Y + y -> offset ((b * C + c) * Z + z) * (X * Y) + x * Y + y
    const int64_t rank = sorted_ranks[begin];
    const int64_t xy = rank % (X * Y);
    const int64_t bz = rank / (X * Y);
    const int64_t z = bz % Z;
    const int64_t b = bz / Z;
    out[((b * C + c) * Z + z) * (X * Y) + xy] = cuda_cast<scalar_t>(sum);
  }
}

// grad_feats[i, c] = grad_out[b, c, z, x, y] for the voxel of point i, 0 when i is outside.
// Thread mapping: one thread per (point i, channel c), t = i * C + c (grid-stride loop over
// N * C): writes of grad_feats are coalesced; the coords row is a broadcast read within a warp.
template <typename scalar_t, typename index_t>
__global__ void backward_kernel(const scalar_t* __restrict__ grad_out,  // [B, C, Z, X, Y]
                                const index_t* __restrict__ coords,     // [N, 4]
                                scalar_t* __restrict__ grad_feats,      // [N, C]
                                int64_t N, int64_t C, int64_t B, int64_t X, int64_t Y,
                                int64_t Z) {
  const int64_t total = N * C;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = t / C;
    const int64_t c = t - i * C;
    const int64_t rank = voxel_rank(coords + 4 * i, B, X, Y, Z);
    if (rank < 0) {
      grad_feats[t] = cuda_cast<scalar_t>(0.0f);
    } else {
      const int64_t xy = rank % (X * Y);
      const int64_t bz = rank / (X * Y);
      const int64_t z = bz % Z;
      const int64_t b = bz / Z;
      grad_feats[t] = grad_out[((b * C + c) * Z + z) * (X * Y) + xy];
    }
  }
}

}  // namespace bev_pool_kernels
}  // namespace bev_reid
