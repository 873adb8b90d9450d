// CUDA host wrappers of dynamic and hard voxelization; the kernels (and the steps of the
// sort-based hard voxelization) are in voxelize_kernels.cuh, the contract in voxelize.h.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "launch.cuh"
#include "voxelize/voxelize.h"
#include "voxelize/voxelize_kernels.cuh"

namespace bev_reid {

at::Tensor dynamic_voxelize_cuda(const at::Tensor& points, at::ArrayRef<double> voxel_size,
                                 at::ArrayRef<double> point_cloud_range) {
  const VoxelGrid g = check_voxelize_args(points, voxel_size, point_cloud_range);
  TORCH_CHECK(points.is_cuda(), "dynamic_voxelize: points must be a CUDA tensor, got ",
              points.device());
  const at::cuda::OptionalCUDAGuard guard(device_of(points));

  const int64_t P = points.size(0);
  const int64_t F = points.size(1);
  at::Tensor coords = at::empty({P, 3}, points.options().dtype(at::kInt));  // P x 3 (z, y, x)
  if (P == 0) return coords;

  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "dynamic_voxelize_cuda", [&] {
    voxelize_kernels::dynamic_voxelize_kernel<scalar_t><<<num_blocks(P), kThreads, 0, stream>>>(
        points.const_data_ptr<scalar_t>(), coords.mutable_data_ptr<int32_t>(), P, F,
        static_cast<scalar_t>(g.lo[0]), static_cast<scalar_t>(g.lo[1]),
        static_cast<scalar_t>(g.lo[2]), static_cast<scalar_t>(g.size[0]),
        static_cast<scalar_t>(g.size[1]), static_cast<scalar_t>(g.size[2]), g.dims[0], g.dims[1],
        g.dims[2]);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return coords;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> hard_voxelize_cuda(
    const at::Tensor& points, at::ArrayRef<double> voxel_size,
    at::ArrayRef<double> point_cloud_range, int64_t max_points, int64_t max_voxels) {
  const VoxelGrid g = check_voxelize_args(points, voxel_size, point_cloud_range);
  check_hard_voxelize_args(points, max_points, max_voxels);  // as hard_voxelize_cpu
  TORCH_CHECK(points.is_cuda(), "hard_voxelize: points must be a CUDA tensor, got ",
              points.device());
  const at::cuda::OptionalCUDAGuard guard(device_of(points));

  const int64_t P = points.size(0);
  const int64_t F = points.size(1);
  const auto long_opts = points.options().dtype(at::kLong);
  const auto int_opts = points.options().dtype(at::kInt);
  const auto empty_result = [&]() {
    return std::make_tuple(at::empty({0, max_points, F}, points.options()),
                           at::empty({0, 3}, int_opts), at::empty({0}, int_opts));
  };
  if (P == 0) return empty_result();

  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  at::Tensor keys = at::empty({P}, long_opts);  // P, cell key or -1
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "hard_voxelize_keys_cuda", [&] {
    voxelize_kernels::key_kernel<scalar_t><<<num_blocks(P), kThreads, 0, stream>>>(
        points.const_data_ptr<scalar_t>(), keys.mutable_data_ptr<int64_t>(), P, F,
        static_cast<scalar_t>(g.lo[0]), static_cast<scalar_t>(g.lo[1]),
        static_cast<scalar_t>(g.lo[2]), static_cast<scalar_t>(g.size[0]),
        static_cast<scalar_t>(g.size[1]), static_cast<scalar_t>(g.size[2]), g.dims[0], g.dims[1],
        g.dims[2]);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });

  // Stable: within a voxel, sorted order is input order, so slot = position - run start.
  // (std::tie, not a structured binding: C++17 lambdas cannot capture those.)
  at::Tensor sorted_keys, order;  // P, P
  std::tie(sorted_keys, order) = at::sort(keys, /*stable=*/true, /*dim=*/0);

  at::Tensor is_first = at::zeros({P}, long_opts);  // P
  voxelize_kernels::first_point_kernel<int64_t><<<num_blocks(P), kThreads, 0, stream>>>(
      sorted_keys.const_data_ptr<int64_t>(), order.const_data_ptr<int64_t>(),
      is_first.mutable_data_ptr<int64_t>(), P);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  // voxel_ids[p] - 1 is the id of p's voxel at p's first point: voxels numbered by first point.
  const at::Tensor voxel_ids = at::cumsum(is_first, /*dim=*/0);  // P
  // The number of voxels depends on the data and sizes the outputs: it is read back here, the one
  // host sync of the voxelize ops (see voxelize.h). Everything before it is queued already.
  const int64_t V = std::min(voxel_ids[P - 1].item<int64_t>(), max_voxels);
  if (V == 0) return empty_result();
  check_voxels_size(V, max_points, F);

  at::Tensor voxels = at::empty({V, max_points, F}, points.options());  // V x max_points x F
  at::Tensor coords = at::empty({V, 3}, int_opts);                      // V x 3 (z, y, x)
  at::Tensor num_points = at::empty({V}, int_opts);                     // V
  at::Tensor voxel_start = at::empty({V}, long_opts);                   // V, sorted positions

  voxelize_kernels::voxel_start_kernel<int64_t><<<num_blocks(P), kThreads, 0, stream>>>(
      sorted_keys.const_data_ptr<int64_t>(), order.const_data_ptr<int64_t>(),
      voxel_ids.const_data_ptr<int64_t>(), voxel_start.mutable_data_ptr<int64_t>(), P, V);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  voxelize_kernels::voxel_meta_kernel<int64_t><<<num_blocks(V), kThreads, 0, stream>>>(
      sorted_keys.const_data_ptr<int64_t>(), voxel_start.const_data_ptr<int64_t>(),
      coords.mutable_data_ptr<int32_t>(), num_points.mutable_data_ptr<int32_t>(), P, V, max_points,
      g.dims[0], g.dims[1]);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "hard_voxelize_fill_cuda", [&] {
    voxelize_kernels::fill_voxels_kernel<scalar_t>
        <<<num_blocks(V * max_points * F), kThreads, 0, stream>>>(
            points.const_data_ptr<scalar_t>(), sorted_keys.const_data_ptr<int64_t>(),
            order.const_data_ptr<int64_t>(), voxel_start.const_data_ptr<int64_t>(),
            voxels.mutable_data_ptr<scalar_t>(), P, F, V, max_points);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return std::make_tuple(voxels, coords, num_points);
}

}  // namespace bev_reid

TORCH_LIBRARY_IMPL(bev_reid, CUDA, m) {
  m.impl("dynamic_voxelize", &bev_reid::dynamic_voxelize_cuda);
  m.impl("hard_voxelize", &bev_reid::hard_voxelize_cuda);
}
