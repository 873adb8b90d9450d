// Device code shared by bev_pool and fused_splat, free of ATen so that it compiles with plain nvcc
// (see tests/ops/test_cuda_compile.py): sums of point rows into the cells of a BEV grid, read in
// cell order, and a tiled transpose to channels-last.
//
// Cells and ranks. A cell of the grid is (b, z, x, y); its rank is r = ((b * Z + z) * X + x) * Y +
// y in [0, num_cells), num_cells = B * Z * X * Y. A point outside the grid gets the rank num_cells.
// out[B, C, Z, X, Y] holds cell r, channel c at (b * C + c) * plane + v, with plane = Z * X * Y and
// r = b * plane + v.
//
// Sorted order. order[P] lists the points by rank, stably (input order within a cell), dropped
// points last; sorted_ranks[k] is the rank of the point at sorted position k. The points of a cell
// are one run of consecutive positions.
//
// Chunked sums (deterministic, no atomics, no host sync, no thread walks more than kChunk points):
// positions are cut into chunks of kChunk, chunk q = [q * kChunk, (q + 1) * kChunk), so a cell's
// run is cut into pieces at multiples of kChunk.
//   chunk_sum_kernel: one warp per (chunk, group of 32 channels), lanes over channels, so the row
//     reads are coalesced. It walks its chunk in order and sums each run of one rank in it (a
//     segment). A segment that is a whole cell goes to out. A segment that a chunk boundary cuts
//     is a partial sum: the one holding the chunk's first position goes to head[q], the one holding
//     its last position to tail[q] (both, when the whole chunk is one cell).
//   combine_kernel: one warp per (chunk boundary j * kChunk, group of channels) for the cells whose
//     run crosses boundary j first: out = ((tail[j - 1] + head[j]) + head[j + 1]) + ... over the
//     chunks the run spans.
// So a cell's sum is its pieces, each summed in sorted order from 0, added in order. The CPU
// kernels (bev_pool_cpu.cpp, fused_splat_cpu.cpp) add in the same order, products are rounded
// before they are added (no fused multiply-add), and the results are equal bit for bit.
//
// scalar_t is float, double, __half or __nv_bfloat16; acc_t is float for the 16-bit types, else
// scalar_t. Conversions go through cuda_cast because torch compiles CUDA with
// __CUDA_NO_HALF_CONVERSIONS__ / __CUDA_NO_BFLOAT16_CONVERSIONS__.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "splat_chunk.h"

namespace bev_reid {
namespace splat_kernels {

// Points per chunk: the most points one warp sums before its partial is combined.
constexpr int kChunk = static_cast<int>(kSplatChunk);
static_assert(kChunk == 32, "chunk_sum_kernel maps one chunk position to each lane of a warp");
constexpr unsigned int kFullMask = 0xffffffffu;

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

// a * b rounded, never contracted with a following add into an FMA (the CPU kernels round the
// product too, so both devices give the same bits).
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

// Offset in out[B, C, Z, X, Y] of channel c of the cell of rank r.
__device__ __forceinline__ int64_t out_offset(int64_t r, int64_t c, int64_t C, int64_t plane) {
  const int64_t b = r / plane;
  return (b * C + c) * plane + (r - b * plane);
}

// Global warp index and warp count of a 1-D launch whose block size is a multiple of 32.
__device__ __forceinline__ int64_t warp_id() {
  return (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
}
__device__ __forceinline__ int64_t warp_count() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x / 32;
}

// Rows of bev_pool: point i is feats[i, :], weight 1.
template <typename scalar_t, typename acc_t>
struct FeatureRows {
  const scalar_t* __restrict__ feats;  // [N, C]
  __device__ __forceinline__ int64_t row(int64_t point) const { return point; }
  __device__ __forceinline__ acc_t weight(int64_t) const { return acc_t(1); }
  __device__ __forceinline__ acc_t value(int64_t row, acc_t, int64_t c, int64_t C) const {
    return cuda_cast<acc_t>(feats[row * C + c]);
  }
};

// Rows of fused_splat: frustum point p = ((b * N + n) * D + d) * HW + hw is pixel
// (b * N + n) * HW + hw of the context [B, N, H, W, C], weighted by depth[p].
template <typename scalar_t, typename acc_t>
struct FrustumRows {
  const scalar_t* __restrict__ depth;    // [B, N, D, H, W]
  const scalar_t* __restrict__ context;  // [B, N, H, W, C]
  int64_t D;
  int64_t HW;
  __device__ __forceinline__ int64_t row(int64_t point) const {
    const int64_t bnd = point / HW;
    return (bnd / D) * HW + (point - bnd * HW);
  }
  __device__ __forceinline__ acc_t weight(int64_t point) const {
    return cuda_cast<acc_t>(depth[point]);
  }
  __device__ __forceinline__ acc_t value(int64_t row, acc_t w, int64_t c, int64_t C) const {
    return mul_rn(w, cuda_cast<acc_t>(context[row * C + c]));
  }
};

// See the file comment. out [B, C, Z, X, Y] must be zero-filled beforehand (empty cells are not
// written); head, tail [num_chunks, C] need no initialisation (only written entries are read).
// Thread mapping: one warp per (chunk q, channel group g), w = q * groups + g (grid-stride loop
// over num_chunks * groups warps); lane l holds sorted position q * kChunk + l and channel g * 32 +
// l.
template <typename scalar_t, typename acc_t, typename Rows>
__global__ void chunk_sum_kernel(Rows rows,
                                 const int64_t* __restrict__ sorted_ranks,  // [P]
                                 const int64_t* __restrict__ order,         // [P]
                                 acc_t* __restrict__ head,                  // [num_chunks, C]
                                 acc_t* __restrict__ tail,                  // [num_chunks, C]
                                 scalar_t* __restrict__ out,                // [B, C, Z, X, Y]
                                 int64_t P, int64_t C, int64_t num_cells, int64_t plane) {
  const int64_t groups = (C + 31) / 32;
  const int64_t num_chunks = (P + kChunk - 1) / kChunk;
  const int lane = threadIdx.x & 31;
  for (int64_t w = warp_id(); w < num_chunks * groups; w += warp_count()) {
    const int64_t q = w / groups;
    const int64_t c = (w - q * groups) * 32 + lane;
    const bool active = c < C;
    const int64_t base = q * kChunk;
    const int n = static_cast<int>(P - base < kChunk ? P - base : kChunk);
    // Lane l loads position base + l; the loop below broadcasts it with shuffles.
    long long my_rank = num_cells;
    long long my_row = 0;
    acc_t my_weight = acc_t(0);
    if (lane < n) {
      my_rank = sorted_ranks[base + lane];
      if (my_rank < num_cells) {
        const int64_t point = order[base + lane];
        my_row = rows.row(point);
        my_weight = rows.weight(point);
      }
    }
    const int64_t prev = base > 0 ? sorted_ranks[base - 1] : -1;      // rank before the chunk
    const int64_t next = base + n < P ? sorted_ranks[base + n] : -1;  // rank after the chunk
    acc_t acc = acc_t(0);
    int seg_begin = 0;
    for (int j = 0; j < n; ++j) {
      const int64_t r = __shfl_sync(kFullMask, my_rank, j);
      const int64_t row = __shfl_sync(kFullMask, my_row, j);
      const acc_t weight = __shfl_sync(kFullMask, my_weight, j);
      const int64_t r_next_in = __shfl_sync(kFullMask, my_rank, (j + 1) & 31);
      if (r >= num_cells) break;  // dropped points sort last: nothing left to sum
      if (active) acc += rows.value(row, weight, c, C);
      const int64_t r_next = j + 1 < n ? r_next_in : next;
      if (r_next == r) continue;
      // The segment [seg_begin, j] of rank r ends here.
      const bool cut_before = seg_begin == 0 && prev == r;
      const bool cut_after = j == n - 1 && next == r;
      if (active) {
        if (!cut_before && !cut_after) {
          out[out_offset(r, c, C, plane)] = cuda_cast<scalar_t>(acc);
        } else {
          if (cut_before) head[q * C + c] = acc;
          if (cut_after) tail[q * C + c] = acc;
        }
      }
      acc = acc_t(0);
      seg_begin = j + 1;
    }
  }
}

// See the file comment; runs after chunk_sum_kernel on the same stream.
// Thread mapping: one warp per (chunk boundary j in [1, num_chunks), channel group g),
// w = (j - 1) * groups + g (grid-stride loop); lanes over channels. Only the warp of the first
// boundary a cell's run crosses writes that cell; it adds one partial per chunk of the run.
template <typename scalar_t, typename acc_t>
__global__ void combine_kernel(const int64_t* __restrict__ sorted_ranks,  // [P]
                               const acc_t* __restrict__ head,            // [num_chunks, C]
                               const acc_t* __restrict__ tail,            // [num_chunks, C]
                               scalar_t* __restrict__ out,                // [B, C, Z, X, Y]
                               int64_t P, int64_t C, int64_t num_cells, int64_t plane) {
  const int64_t groups = (C + 31) / 32;
  const int64_t num_chunks = (P + kChunk - 1) / kChunk;
  const int lane = threadIdx.x & 31;
  for (int64_t w = warp_id(); w < (num_chunks - 1) * groups; w += warp_count()) {
    const int64_t j = w / groups + 1;
    const int64_t c = (w - (j - 1) * groups) * 32 + lane;
    const int64_t pos = j * kChunk;
    const int64_t r = sorted_ranks[pos];
    if (r >= num_cells || sorted_ranks[pos - 1] != r) continue;   // no cell crosses boundary j
    if (j >= 2 && sorted_ranks[pos - kChunk - 1] == r) continue;  // it crossed boundary j - 1
    if (c >= C) continue;
    acc_t acc = tail[(j - 1) * C + c];
    for (int64_t q = j;; ++q) {
      acc += head[q * C + c];
      const int64_t next = (q + 1) * kChunk;
      if (next >= P || sorted_ranks[next] != r) break;
    }
    out[out_offset(r, c, C, plane)] = cuda_cast<scalar_t>(acc);
  }
}

// dst[b, s, c] = src[b, c, s]: [B, C, S] -> [B, S, C], through a 32 x 33 tile in shared memory so
// that both the reads and the writes are coalesced. T is an unsigned integer of the element's size
// (the values are only moved).
// Thread mapping: blocks of 32 x 8 threads; block (sx, cy, b) moves the tile s in
// [32 sx, 32 sx + 32), c in [32 cy, 32 cy + 32) of batch b (gridDim.z may be smaller than B: the
// blocks loop over b).
template <typename T>
__global__ void transpose_kernel(const T* __restrict__ src,  // [B, C, S]
                                 T* __restrict__ dst,        // [B, S, C]
                                 int64_t B, int64_t C, int64_t S) {
  __shared__ T tile[32][33];
  const int64_t s0 = static_cast<int64_t>(blockIdx.x) * 32;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * 32;
  for (int64_t b = blockIdx.z; b < B; b += gridDim.z) {
    const T* in = src + b * C * S;
    T* outp = dst + b * S * C;
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
      const int64_t c = c0 + i, s = s0 + threadIdx.x;
      if (c < C && s < S) tile[i][threadIdx.x] = in[c * S + s];
    }
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
      const int64_t s = s0 + i, c = c0 + threadIdx.x;
      if (c < C && s < S) outp[s * C + c] = tile[threadIdx.x][i];
    }
    __syncthreads();
  }
}

}  // namespace splat_kernels
}  // namespace bev_reid
