// Voxelization of point clouds, with mmcv's conventions.
//
//   points            [P, F] fp32 or fp64 (CPU and CUDA), contiguous, F >= 3; columns 0..2 are
//                     x, y, z. Other dtypes (fp16, bf16, float8, integers) are refused before any
//                     work.
//   voxel_size        [3] (vx, vy, vz) > 0
//   point_cloud_range [6] (x_min, y_min, z_min, x_max, y_max, z_max), min < max
//   Both are rounded to float32 first, whatever the points' dtype, as mmcv does. The grid size per
//   axis is round((max - min) / size) in float32, as mmcv; a point's cell is
//   floor((p - min) / size) computed in the points' dtype (for fp64 points: in double, from the
//   float32 min and size, as mmcv's CPU kernel; mmcv's CUDA kernel rounds the quotient to float32
//   before the floor, so it can differ from both at cell borders). A point is outside when any
//   cell index is < 0 or >= the grid size.
//
// dynamic_voxelize -> coords [P, 3] int32 (z, y, x); the whole row is -1 for points outside.
// hard_voxelize    -> voxels [V, max_points, F] (zero padded), coords [V, 3] int32 (z, y, x),
//                     num_points [V] int32. Voxels are numbered in the order of their first point;
//                     a voxel keeps its first max_points points in input order; once max_voxels
//                     voxels exist, points of new voxels are dropped. Deterministic. max_points and
//                     max_voxels may be any value >= 1 (at most P voxels can exist, so larger
//                     limits act as P); V * max_points * F must fit the memory.
//                     V depends on the data: the CUDA kernel reads it back to size its outputs,
//                     the one host sync of the voxelize ops (dynamic_voxelize has none).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <tuple>
#include <vector>

namespace bev_reid {

struct VoxelGrid {
  std::array<double, 3> size;
  std::array<double, 3> lo;
  std::array<int64_t, 3> dims;  // cells along x, y, z
};

// Checks the arguments and derives the grid; names what is wrong in the error.
VoxelGrid check_voxelize_args(const at::Tensor& points, at::ArrayRef<double> voxel_size,
                              at::ArrayRef<double> point_cloud_range);

// The limits of hard_voxelize: max_points, max_voxels >= 1 and fewer than 2^31 points (num_points
// is int32, as mmcv's).
void check_hard_voxelize_args(const at::Tensor& points, int64_t max_points, int64_t max_voxels);
// Refuses outputs whose size, num_voxels x max_points x f, overflows int64.
void check_voxels_size(int64_t num_voxels, int64_t max_points, int64_t f);

at::Tensor dynamic_voxelize_cpu(const at::Tensor& points, at::ArrayRef<double> voxel_size,
                                at::ArrayRef<double> point_cloud_range);
std::tuple<at::Tensor, at::Tensor, at::Tensor> hard_voxelize_cpu(
    const at::Tensor& points, at::ArrayRef<double> voxel_size,
    at::ArrayRef<double> point_cloud_range, int64_t max_points, int64_t max_voxels);

#ifdef WITH_CUDA
at::Tensor dynamic_voxelize_cuda(const at::Tensor& points, at::ArrayRef<double> voxel_size,
                                 at::ArrayRef<double> point_cloud_range);
std::tuple<at::Tensor, at::Tensor, at::Tensor> hard_voxelize_cuda(
    const at::Tensor& points, at::ArrayRef<double> voxel_size,
    at::ArrayRef<double> point_cloud_range, int64_t max_points, int64_t max_voxels);
#endif

}  // namespace bev_reid
