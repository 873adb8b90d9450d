// The chunk length of the cell sums of bev_pool and fused_splat, shared by the CPU and CUDA
// kernels so that both add in the same order (see splat_kernels.cuh): a cell's points, in sorted
// order, are summed in pieces cut at the sorted positions that are multiples of kSplatChunk, and
// the pieces are then added in order.
#pragma once

#include <cstdint>

namespace bev_reid {

constexpr int64_t kSplatChunk = 32;

}  // namespace bev_reid
