// Launch sizes shared by the CUDA host wrappers (free of ATen, like the kernel headers).
#pragma once

#include <algorithm>
#include <cstdint>

namespace bev_reid {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n items (n > 0); the cap only bounds the launch, the loops
// cover the rest.
inline unsigned int num_blocks(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::min<int64_t>(blocks, int64_t{1} << 16));
}

}  // namespace bev_reid
