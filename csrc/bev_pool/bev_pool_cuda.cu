// CUDA host wrappers of bev_pool (forward and backward); the kernels are in bev_pool_kernels.cuh
// and splat_kernels.cuh, the layout contract in bev_pool.h.
//
// Forward, deterministic (no float atomics) and free of host syncs (capturable in a CUDA graph):
//   ranks [N] = voxel rank per point (num_cells outside) -> stable sort -> chunked cell sums
//   (no warp walks more than kChunk points; long runs are added up from per-chunk partials).
// Backward: grad_out -> channels-last copy -> one coalesced row gather per point.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "bev_pool/bev_pool.h"
#include "bev_pool/bev_pool_kernels.cuh"
#include "launch.cuh"
#include "splat_launch.cuh"

namespace bev_reid {

at::Tensor bev_pool_forward_cuda(const at::Tensor& feats, const at::Tensor& coords,
                                 int64_t batch_size, at::IntArrayRef grid) {
  const std::array<int64_t, 3> xyz = check_bev_pool_args(feats, coords, batch_size, grid);
  // check_bev_pool_args has checked that coords is on feats' device.
  TORCH_CHECK(feats.is_cuda(), "bev_pool: feats must be a CUDA tensor, got ", feats.device());
  const at::cuda::OptionalCUDAGuard guard(device_of(feats));

  const int64_t N = feats.size(0);
  const int64_t C = feats.size(1);
  const int64_t B = batch_size;
  const int64_t X = xyz[0], Y = xyz[1], Z = xyz[2];
  at::Tensor out = at::zeros({B, C, Z, X, Y}, feats.options());  // B x C x Z x X x Y
  if (N == 0 || out.numel() == 0) return out;

  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const auto long_opts = feats.options().dtype(at::kLong);

  at::Tensor ranks = at::empty({N}, long_opts);  // N
  AT_DISPATCH_INDEX_TYPES(coords.scalar_type(), "bev_pool_rank_cuda", [&] {
    bev_pool_kernels::rank_kernel<index_t><<<num_blocks(N), kThreads, 0, stream>>>(
        coords.const_data_ptr<index_t>(), ranks.mutable_data_ptr<int64_t>(), N, B, X, Y, Z);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });

  // Stable: points of one voxel stay in input order, so the sums are reproducible; dropped
  // points (rank num_cells) sort last.
  // (std::tie, not a structured binding: C++17 lambdas cannot capture those.)
  at::Tensor sorted_ranks, order;  // N, N
  std::tie(sorted_ranks, order) = at::sort(ranks, /*stable=*/true, /*dim=*/0);

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, feats.scalar_type(), "bev_pool_forward_cuda", [&] {
        using cuda_t = typename CudaType<scalar_t>::type;
        using acc_t = at::opmath_type<scalar_t>;
        const splat_kernels::FeatureRows<cuda_t, acc_t> rows{
            reinterpret_cast<const cuda_t*>(feats.const_data_ptr<scalar_t>())};
        launch_cell_sums<scalar_t>(rows, sorted_ranks, order, out, N, C, B * Z * X * Y, Z * X * Y);
      });
  return out;
}

at::Tensor bev_pool_backward_cuda(const at::Tensor& grad_out, const at::Tensor& coords,
                                  int64_t batch_size, at::IntArrayRef grid) {
  check_bev_pool_backward_args(grad_out, coords, batch_size, grid);
  // check_bev_pool_backward_args has checked that coords is on grad_out's device.
  TORCH_CHECK(grad_out.is_cuda(), "bev_pool_backward: grad_out must be a CUDA tensor, got ",
              grad_out.device());
  const at::cuda::OptionalCUDAGuard guard(device_of(grad_out));

  const int64_t N = coords.size(0);
  const int64_t C = grad_out.size(1);
  const int64_t B = batch_size;
  const int64_t X = grid[0], Y = grid[1], Z = grid[2];
  at::Tensor grad_feats = at::empty({N, C}, grad_out.options());  // N x C, every element written
  if (grad_feats.numel() == 0) return grad_feats;

  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  // [B, Z * X * Y, C]: a point's gradient is one contiguous row of it.
  const at::Tensor grad_cl = to_channels_last(grad_out);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad_out.scalar_type(), "bev_pool_backward_cuda", [&] {
        using cuda_t = typename CudaType<scalar_t>::type;
        AT_DISPATCH_INDEX_TYPES(coords.scalar_type(), "bev_pool_backward_cuda_index", [&] {
          bev_pool_kernels::gather_rows_kernel<cuda_t, index_t>
              <<<num_blocks(N * C), kThreads, 0, stream>>>(
                  reinterpret_cast<const cuda_t*>(grad_cl.const_data_ptr<scalar_t>()),
                  coords.const_data_ptr<index_t>(),
                  reinterpret_cast<cuda_t*>(grad_feats.mutable_data_ptr<scalar_t>()), N, C, B, X, Y,
                  Z);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
  return grad_feats;
}

}  // namespace bev_reid

TORCH_LIBRARY_IMPL(bev_reid, CUDA, m) {
  m.impl("bev_pool", &bev_reid::bev_pool_forward_cuda);
  m.impl("bev_pool_backward", &bev_reid::bev_pool_backward_cuda);
}
