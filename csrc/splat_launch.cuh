// Host-side launchers of splat_kernels.cuh, shared by the CUDA wrappers of bev_pool and
// fused_splat. Every launch is on the current stream and checked; nothing here waits on the
// device, so the callers' forwards can be captured in a CUDA graph.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <type_traits>

#include "launch.cuh"
#include "splat_kernels.cuh"

namespace bev_reid {

// ATen's 16-bit types and CUDA's share their bit layout; the kernels use CUDA's.
template <typename T>
struct CudaType {
  using type = T;
};
template <>
struct CudaType<at::Half> {
  using type = __half;
};
template <>
struct CudaType<at::BFloat16> {
  using type = __nv_bfloat16;
};
static_assert(sizeof(at::Half) == sizeof(__half) && alignof(at::Half) == alignof(__half));
static_assert(sizeof(at::BFloat16) == sizeof(__nv_bfloat16) &&
              alignof(at::BFloat16) == alignof(__nv_bfloat16));

// Blocks for a grid-stride loop over `warps` warps of kThreads / 32 per block.
inline unsigned int num_warp_blocks(int64_t warps) { return num_blocks(warps * 32); }

// Sums the sorted rows into out (see splat_kernels.cuh): out [B, C, Z, X, Y] (cuda_t) must be
// zero-filled; sorted_ranks, order [P] int64 on out's device; plane = Z * X * Y.
// scalar_t is ATen's element type of out, cuda_t CUDA's, acc_t the type sums are carried in.
template <typename scalar_t, typename Rows>
void launch_cell_sums(const Rows& rows, const at::Tensor& sorted_ranks, const at::Tensor& order,
                      at::Tensor& out, int64_t P, int64_t C, int64_t num_cells, int64_t plane) {
  using cuda_t = typename CudaType<scalar_t>::type;
  using acc_t = at::opmath_type<scalar_t>;
  if (P == 0 || C == 0) return;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t chunks = (P + splat_kernels::kChunk - 1) / splat_kernels::kChunk;
  const int64_t groups = (C + 31) / 32;
  // head [chunks, C], tail [chunks, C]: partial sums of the runs that chunk boundaries cut.
  const at::Tensor partials =
      at::empty({2, chunks, C}, out.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  acc_t* head = partials.mutable_data_ptr<acc_t>();
  acc_t* tail = head + chunks * C;
  cuda_t* out_ptr = reinterpret_cast<cuda_t*>(out.mutable_data_ptr<scalar_t>());
  splat_kernels::chunk_sum_kernel<cuda_t, acc_t, Rows>
      <<<num_warp_blocks(chunks * groups), kThreads, 0, stream>>>(
          rows, sorted_ranks.const_data_ptr<int64_t>(), order.const_data_ptr<int64_t>(), head, tail,
          out_ptr, P, C, num_cells, plane);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (chunks < 2) return;
  splat_kernels::combine_kernel<cuda_t, acc_t>
      <<<num_warp_blocks((chunks - 1) * groups), kThreads, 0, stream>>>(
          sorted_ranks.const_data_ptr<int64_t>(), head, tail, out_ptr, P, C, num_cells, plane);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// grad [B, C, S...] (contiguous, floating) -> [B, prod(S), C] contiguous: the channels-last copy
// the backward kernels gather rows from.
inline at::Tensor to_channels_last(const at::Tensor& grad) {
  const int64_t B = grad.size(0), C = grad.size(1);
  const int64_t S = B * C == 0 ? 0 : grad.numel() / (B * C);
  at::Tensor out = at::empty({B, S, C}, grad.options());
  if (out.numel() == 0) return out;
  TORCH_CHECK((S + 31) / 32 <= 0x7fffffff && (C + 31) / 32 <= 65535,
              "to_channels_last: ", grad.sizes(), " is too large for one launch");
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const dim3 block(32, 8);
  const dim3 grid(static_cast<unsigned int>((S + 31) / 32),
                  static_cast<unsigned int>((C + 31) / 32),
                  static_cast<unsigned int>(std::min<int64_t>(B, 65535)));
  const auto launch = [&](auto* src, auto* dst) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(src)>>;
    splat_kernels::transpose_kernel<T><<<grid, block, 0, stream>>>(src, dst, B, C, S);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  switch (grad.element_size()) {
    case 2:
      launch(static_cast<const uint16_t*>(grad.const_data_ptr()),
             static_cast<uint16_t*>(out.mutable_data_ptr()));
      break;
    case 4:
      launch(static_cast<const uint32_t*>(grad.const_data_ptr()),
             static_cast<uint32_t*>(out.mutable_data_ptr()));
      break;
    case 8:
      launch(static_cast<const uint64_t*>(grad.const_data_ptr()),
             static_cast<uint64_t*>(out.mutable_data_ptr()));
      break;
    default:
      TORCH_CHECK(false, "to_channels_last: unsupported element size ", grad.element_size());
  }
  return out;
}

}  // namespace bev_reid
