// CUDA host wrappers of fused_splat (plan, forward, backward); the kernels are in
// fused_splat_kernels.cuh and splat_kernels.cuh, the contract in fused_splat.h. None of them waits
// on the device: every size is known from the input shapes (dropped points stay in the plan,
// sorted last), so the forward and the backward can be captured in a CUDA graph.
//
// Plan: ranks -> stable sort (at::sort) -> offsets by binary search.
// Forward: out zero-filled, then chunked cell sums of depth[p] * context[pixel(p), :] read in
// sorted order (no warp walks more than kChunk points; coalesced context rows).
// Backward: grad_out -> channels-last copy; then one warp per point for grad_depth (a dot product
// of two contiguous rows) and one warp per (pixel, 32 channels) for grad_context (D rows).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "fused_splat/fused_splat.h"
#include "fused_splat/fused_splat_kernels.cuh"
#include "launch.cuh"
#include "splat_launch.cuh"

namespace bev_reid {

SplatPlan fused_splat_plan_cuda(const at::Tensor& cells, at::IntArrayRef grid) {
  const auto g = check_splat_plan_args(cells, grid);
  TORCH_CHECK(cells.is_cuda(), "fused_splat_plan: cells must be a CUDA tensor, got ",
              cells.device());
  const at::cuda::OptionalCUDAGuard guard(device_of(cells));
  const int64_t B = cells.size(0), P = cells.numel() / 3;
  const int64_t num_cells = B * g[0] * g[1] * g[2];
  const auto long_opts = cells.options().dtype(at::kLong);
  at::Tensor ranks = at::empty(cells.sizes().slice(0, 5), long_opts);  // B x N x D x H x W
  at::Tensor offsets = at::empty({num_cells + 1}, long_opts);          // num_cells + 1
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (P > 0) {
    AT_DISPATCH_INDEX_TYPES(cells.scalar_type(), "fused_splat_plan_cuda", [&] {
      fused_splat_kernels::rank_kernel<index_t><<<num_blocks(P), kThreads, 0, stream>>>(
          cells.const_data_ptr<index_t>(), ranks.mutable_data_ptr<int64_t>(), P, P / B, g[0], g[1],
          g[2], num_cells);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  // Stable: the points of a cell stay in input order (and so do the dropped ones, last), as in
  // the CPU's counting sort, so both devices make the same plan.
  // (std::tie, not a structured binding: C++17 lambdas cannot capture those.)
  at::Tensor sorted_ranks, order;  // P, P
  std::tie(sorted_ranks, order) = at::sort(ranks.view({P}), /*stable=*/true, /*dim=*/0);
  fused_splat_kernels::offsets_kernel<int64_t><<<num_blocks(num_cells + 1), kThreads, 0, stream>>>(
      sorted_ranks.const_data_ptr<int64_t>(), offsets.mutable_data_ptr<int64_t>(), P, num_cells);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {ranks, order, sorted_ranks, offsets};
}

at::Tensor fused_splat_forward_cuda(const at::Tensor& depth, const at::Tensor& context,
                                    const at::Tensor& ranks, const at::Tensor& order,
                                    const at::Tensor& sorted_ranks, const at::Tensor& offsets,
                                    at::IntArrayRef grid) {
  const SplatShape s = check_fused_splat_args("fused_splat", depth, context, ranks, order,
                                              sorted_ranks, offsets, grid);
  TORCH_CHECK(depth.is_cuda(), "fused_splat: depth must be a CUDA tensor, got ", depth.device());
  const at::cuda::OptionalCUDAGuard guard(device_of(depth));
  at::Tensor out = at::zeros({s.B, s.C, s.Z, s.X, s.Y}, depth.options());  // B x C x Z x X x Y
  if (out.numel() == 0 || s.num_points() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, depth.scalar_type(), "fused_splat_forward_cuda", [&] {
        using cuda_t = typename CudaType<scalar_t>::type;
        using acc_t = at::opmath_type<scalar_t>;
        const splat_kernels::FrustumRows<cuda_t, acc_t> rows{
            reinterpret_cast<const cuda_t*>(depth.const_data_ptr<scalar_t>()),
            reinterpret_cast<const cuda_t*>(context.const_data_ptr<scalar_t>()), s.D, s.H * s.W};
        launch_cell_sums<scalar_t>(rows, sorted_ranks, order, out, s.num_points(), s.C,
                                   s.num_cells(), s.plane());
      });
  return out;
}

std::tuple<at::Tensor, at::Tensor> fused_splat_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& depth, const at::Tensor& context,
    const at::Tensor& ranks, const at::Tensor& order, const at::Tensor& sorted_ranks,
    const at::Tensor& offsets, at::IntArrayRef grid) {
  const SplatShape s = check_fused_splat_args("fused_splat_backward", depth, context, ranks, order,
                                              sorted_ranks, offsets, grid);
  check_fused_splat_grad(grad_out, depth, s);
  TORCH_CHECK(depth.is_cuda(), "fused_splat_backward: depth must be a CUDA tensor, got ",
              depth.device());
  const at::cuda::OptionalCUDAGuard guard(device_of(depth));
  at::Tensor grad_depth = at::empty_like(depth);      // B x N x D x H x W, every element written
  at::Tensor grad_context = at::empty_like(context);  // B x N x H x W x C, every element written
  const int64_t P = s.num_points(), pixels = s.B * s.N * s.H * s.W, HW = s.H * s.W;
  if (s.C == 0 || s.D == 0) {
    // No channel: nothing reaches depth; no depth bin: nothing reaches context.
    grad_depth.zero_();
    grad_context.zero_();
    return {grad_depth, grad_context};
  }
  if (P == 0) return {grad_depth, grad_context};
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const at::Tensor grad_cl = to_channels_last(grad_out);  // B x (Z X Y) x C
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, depth.scalar_type(), "fused_splat_backward_cuda", [&] {
        using cuda_t = typename CudaType<scalar_t>::type;
        using acc_t = at::opmath_type<scalar_t>;
        const auto* g = reinterpret_cast<const cuda_t*>(grad_cl.const_data_ptr<scalar_t>());
        fused_splat_kernels::grad_depth_kernel<cuda_t, acc_t>
            <<<num_warp_blocks(P), kThreads, 0, stream>>>(
                g, reinterpret_cast<const cuda_t*>(context.const_data_ptr<scalar_t>()),
                ranks.const_data_ptr<int64_t>(),
                reinterpret_cast<cuda_t*>(grad_depth.mutable_data_ptr<scalar_t>()), P, s.C, s.D, HW,
                s.num_cells());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        fused_splat_kernels::grad_context_kernel<cuda_t, acc_t>
            <<<num_warp_blocks(pixels * ((s.C + 31) / 32)), kThreads, 0, stream>>>(
                g, reinterpret_cast<const cuda_t*>(depth.const_data_ptr<scalar_t>()),
                ranks.const_data_ptr<int64_t>(),
                reinterpret_cast<cuda_t*>(grad_context.mutable_data_ptr<scalar_t>()), pixels, s.C,
                s.D, HW, s.num_cells());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return {grad_depth, grad_context};
}

}  // namespace bev_reid

TORCH_LIBRARY_IMPL(bev_reid, CUDA, m) {
  m.impl("fused_splat_plan", &bev_reid::fused_splat_plan_cuda);
  m.impl("fused_splat", &bev_reid::fused_splat_forward_cuda);
  m.impl("fused_splat_backward", &bev_reid::fused_splat_backward_cuda);
}
