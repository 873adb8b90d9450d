// CUDA kernels of dynamic and hard voxelization, free of ATen so that they compile with plain
// nvcc (see tests/ops/test_cuda_compile.py). The host wrappers are voxelize_cuda.cu; the layout
// contract is voxelize.h:
//   points [P, F] scalar_t (float or double), columns 0..2 are x, y, z
//   dynamic: coords [P, 3] int32 (z, y, x), the whole row -1 for points outside the grid
//   hard:    voxels [V, max_points, F] scalar_t, coords [V, 3] int32 (z, y, x),
//            num_points [V] int32
// A point's cell is floor((p - lo) / size) per axis, computed in scalar_t as mmcv does; lo and
// size arrive already rounded to scalar_t. The cell's key is (z * Y + y) * X + x, -1 outside.
//
// Hard voxelization, sort-based and deterministic (the host wrapper runs the at:: steps):
//   1. key_kernel                  keys[P]
//   2. at::sort(keys, stable)      sorted_keys[P], order[P]: points of one voxel are contiguous
//                                  and, the sort being stable, in input order
//   3. first_point_kernel          is_first[p] = 1 for the first point (in input order) of a voxel
//   4. at::cumsum(is_first)        voxel_ids[p]: 1 + id of p's voxel at its first point, so voxels
//                                  are numbered in order of their first point; V = min(last, max)
//   5. voxel_start_kernel          voxel_start[v] = sorted position where voxel v's run begins
//   6. voxel_meta_kernel           coords[v], num_points[v] = min(run length, max_points)
//   7. fill_voxels_kernel          voxels[v, s, :] = the point at sorted position start + s, if
//                                  it is still in the run (slot s = its rank in the voxel), else 0
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace bev_reid {
namespace voxelize_kernels {

__device__ __forceinline__ float floor_of(float v) { return floorf(v); }
__device__ __forceinline__ double floor_of(double v) { return ::floor(v); }

// Cell of point row p along x, y, z; returns false when any axis is outside [0, dims).
// The comparisons are done in scalar_t (not after a cast to int) so that NaN and huge values
// are reliably outside.
template <typename scalar_t>
__device__ __forceinline__ bool point_cell(const scalar_t* __restrict__ p, scalar_t lo_x,
                                           scalar_t lo_y, scalar_t lo_z, scalar_t size_x,
                                           scalar_t size_y, scalar_t size_z, int64_t dim_x,
                                           int64_t dim_y, int64_t dim_z, int32_t* cell_xyz) {
  const scalar_t lo[3] = {lo_x, lo_y, lo_z};
  const scalar_t size[3] = {size_x, size_y, size_z};
  const int64_t dims[3] = {dim_x, dim_y, dim_z};
#pragma unroll
  for (int a = 0; a < 3; ++a) {
    const scalar_t c = floor_of((p[a] - lo[a]) / size[a]);
    if (!(c >= scalar_t(0) && c < static_cast<scalar_t>(dims[a]))) return false;
    cell_xyz[a] = static_cast<int32_t>(c);
  }
  return true;
}

// coords[i] = (z, y, x) cell of point i, or (-1, -1, -1) when outside.
// Thread mapping: one thread per point i (grid-stride loop over P).
template <typename scalar_t>
__global__ void dynamic_voxelize_kernel(const scalar_t* __restrict__ points,  // [P, F]
                                        int32_t* __restrict__ coords,         // [P, 3]
                                        int64_t P, int64_t F, scalar_t lo_x, scalar_t lo_y,
                                        scalar_t lo_z, scalar_t size_x, scalar_t size_y,
                                        scalar_t size_z, int64_t dim_x, int64_t dim_y,
                                        int64_t dim_z) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < P;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int32_t cell[3];
    const bool inside = point_cell(points + i * F, lo_x, lo_y, lo_z, size_x, size_y, size_z, dim_x,
                                   dim_y, dim_z, cell);
    int32_t* row = coords + 3 * i;
    row[0] = inside ? cell[2] : -1;
    row[1] = inside ? cell[1] : -1;
    row[2] = inside ? cell[0] : -1;
  }
}

// keys[i] = (z * Y + y) * X + x for the cell of point i, -1 when outside.
// Thread mapping: one thread per point i (grid-stride loop over P).
template <typename scalar_t>
__global__ void key_kernel(const scalar_t* __restrict__ points,  // [P, F]
                           int64_t* __restrict__ keys,           // [P]
                           int64_t P, int64_t F, scalar_t lo_x, scalar_t lo_y, scalar_t lo_z,
                           scalar_t size_x, scalar_t size_y, scalar_t size_z, int64_t dim_x,
                           int64_t dim_y, int64_t dim_z) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < P;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int32_t cell[3];
    const bool inside = point_cell(points + i * F, lo_x, lo_y, lo_z, size_x, size_y, size_z, dim_x,
                                   dim_y, dim_z, cell);
    keys[i] = inside ? (static_cast<int64_t>(cell[2]) * dim_y + cell[1]) * dim_x + cell[0] : -1;
  }
}

// True where sorted position i begins a run of equal, valid keys (-1 keys sort first).
template <typename key_t>
__device__ __forceinline__ bool run_begins(const key_t* __restrict__ sorted_keys, int64_t i) {
  const key_t k = sorted_keys[i];
  return k >= 0 && (i == 0 || sorted_keys[i - 1] != k);
}

// is_first[order[i]] = 1 where sorted position i begins a run; is_first must be zero-filled.
// Thread mapping: one thread per sorted position i (grid-stride loop over P).
// (key_t is int64_t; the non-float kernels are templates too, so that this header can be
// included by several translation units without duplicate symbols.)
template <typename key_t>
__global__ void first_point_kernel(const key_t* __restrict__ sorted_keys,  // [P]
                                   const int64_t* __restrict__ order,      // [P]
                                   int64_t* __restrict__ is_first,         // [P]
                                   int64_t P) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < P;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (run_begins(sorted_keys, i)) is_first[order[i]] = 1;
  }
}

// voxel_start[v] = i for the run beginning at sorted position i, whose voxel id is
// v = voxel_ids[order[i]] - 1, when v < V (runs of dropped voxels are skipped).
// Thread mapping: one thread per sorted position i (grid-stride loop over P).
template <typename key_t>
__global__ void voxel_start_kernel(const key_t* __restrict__ sorted_keys,  // [P]
                                   const int64_t* __restrict__ order,      // [P]
                                   const int64_t* __restrict__ voxel_ids,  // [P]
                                   int64_t* __restrict__ voxel_start,      // [V]
                                   int64_t P, int64_t V) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < P;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (!run_begins(sorted_keys, i)) continue;
    const int64_t v = voxel_ids[order[i]] - 1;
    if (v < V) voxel_start[v] = i;
  }
}

// coords[v] = (z, y, x) decoded from the run's key; num_points[v] = min(run length, max_points).
// Thread mapping: one thread per voxel v (grid-stride loop over V); each scans at most
// max_points sorted keys.
template <typename key_t>
__global__ void voxel_meta_kernel(const key_t* __restrict__ sorted_keys,    // [P]
                                  const int64_t* __restrict__ voxel_start,  // [V]
                                  int32_t* __restrict__ coords,             // [V, 3]
                                  int32_t* __restrict__ num_points,         // [V]
                                  int64_t P, int64_t V, int64_t max_points, int64_t dim_x,
                                  int64_t dim_y) {
  for (int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; v < V;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t start = voxel_start[v];
    const key_t key = sorted_keys[start];
    int64_t count = 1;
    while (count < max_points && start + count < P && sorted_keys[start + count] == key) ++count;
    num_points[v] = static_cast<int32_t>(count);
    coords[3 * v + 0] = static_cast<int32_t>(key / (dim_x * dim_y));  // z
    coords[3 * v + 1] = static_cast<int32_t>((key / dim_x) % dim_y);  // y
    coords[3 * v + 2] = static_cast<int32_t>(key % dim_x);            // x
  }
}

// voxels[v, s, f] = points[order[start + s], f] when sorted position start + s is still in voxel
// v's run (start = voxel_start[v]), else 0. Writes every element, so voxels may be uninitialised.
// Thread mapping: one thread per output element t = (v * max_points + s) * F + f (grid-stride loop
// over V * max_points * F): writes are coalesced, reads walk along one point row.
template <typename scalar_t>
__global__ void fill_voxels_kernel(const scalar_t* __restrict__ points,      // [P, F]
                                   const int64_t* __restrict__ sorted_keys,  // [P]
                                   const int64_t* __restrict__ order,        // [P]
                                   const int64_t* __restrict__ voxel_start,  // [V]
                                   scalar_t* __restrict__ voxels,            // [V, max_points, F]
                                   int64_t P, int64_t F, int64_t V, int64_t max_points) {
  const int64_t total = V * max_points * F;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t f = t % F;
    const int64_t vs = t / F;
    const int64_t s = vs % max_points;
    const int64_t v = vs / max_points;
    const int64_t start = voxel_start[v];
    const int64_t pos = start + s;
    const bool in_run = pos < P && sorted_keys[pos] == sorted_keys[start];
    voxels[t] = in_run ? points[order[pos] * F + f] : scalar_t(0);
  }
}

}  // namespace voxelize_kernels
}  // namespace bev_reid
