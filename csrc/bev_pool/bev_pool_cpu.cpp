// CPU kernels of bev_pool: a counting sort of the points by voxel, then each thread owns a range
// of voxels, sums their points in sorted (input) order and writes whole output rows. No two threads
// touch one voxel, so the result is deterministic and needs no atomics. A voxel's points are
// summed in pieces cut at the sorted positions that are multiples of kSplatChunk, then the pieces
// are added in order: the order of the CUDA kernels, so both give the same bits.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "bev_pool/bev_pool.h"
#include "splat_chunk.h"

namespace bev_reid {

namespace {

// Points grouped by voxel: the points of flat voxel r = (b * Z + z) * X * Y + x * Y + y are
// order[offsets[r] .. offsets[r + 1]) in input order. Points outside the grid are left out.
struct VoxelIndex {
  std::vector<int64_t> offsets;  // [B * Z * X * Y + 1]
  std::vector<int64_t> order;    // [points inside]
};

template <typename index_t>
VoxelIndex index_points(const at::Tensor& coords, int64_t B, int64_t X, int64_t Y, int64_t Z) {
  const int64_t n = coords.size(0);
  const index_t* c = coords.data_ptr<index_t>();
  const int64_t total = B * Z * X * Y;
  std::vector<int64_t> rank(n);
  at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t x = c[4 * i], y = c[4 * i + 1], z = c[4 * i + 2], b = c[4 * i + 3];
      const bool inside = x >= 0 && x < X && y >= 0 && y < Y && z >= 0 && z < Z && b >= 0 && b < B;
      rank[i] = inside ? ((b * Z + z) * X + x) * Y + y : -1;
    }
  });
  VoxelIndex index;
  index.offsets.assign(total + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    if (rank[i] >= 0) ++index.offsets[rank[i] + 1];
  }
  for (int64_t r = 0; r < total; ++r) index.offsets[r + 1] += index.offsets[r];
  index.order.resize(index.offsets[total]);
  std::vector<int64_t> fill(index.offsets.begin(), index.offsets.end() - 1);
  for (int64_t i = 0; i < n; ++i) {
    if (rank[i] >= 0) index.order[fill[rank[i]]++] = i;
  }
  return index;
}

VoxelIndex index_points(const at::Tensor& coords, int64_t B, const std::array<int64_t, 3>& g) {
  return coords.scalar_type() == at::kInt ? index_points<int32_t>(coords, B, g[0], g[1], g[2])
                                          : index_points<int64_t>(coords, B, g[0], g[1], g[2]);
}

// Voxels are handled in tiles so that each channel's outputs are written as a contiguous run.
constexpr int64_t kTile = 32;

template <typename scalar_t>
void forward_kernel(const scalar_t* feats, const VoxelIndex& index, int64_t C, int64_t plane,
                    int64_t total, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t tiles = (total + kTile - 1) / kTile;
  at::parallel_for(0, tiles, 16, [&](int64_t tile_begin, int64_t tile_end) {
    std::vector<acc_t> acc(kTile * C), piece(C);
    for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
      const int64_t r0 = tile * kTile;
      const int64_t count = std::min(kTile, total - r0);
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t t = 0; t < count; ++t) {
        acc_t* row = acc.data() + t * C;
        const int64_t begin = index.offsets[r0 + t], end = index.offsets[r0 + t + 1];
        // The first piece (up to the next multiple of kSplatChunk) sums straight into the row.
        int64_t k = begin;
        for (const int64_t stop = std::min(end, (k / kSplatChunk + 1) * kSplatChunk); k < stop;
             ++k) {
          const scalar_t* f = feats + index.order[k] * C;
          for (int64_t ch = 0; ch < C; ++ch) row[ch] += static_cast<acc_t>(f[ch]);
        }
        while (k < end) {  // later pieces are summed apart, then added
          std::fill(piece.begin(), piece.end(), acc_t(0));
          for (const int64_t stop = std::min(end, k + kSplatChunk); k < stop; ++k) {
            const scalar_t* f = feats + index.order[k] * C;
            for (int64_t ch = 0; ch < C; ++ch) piece[ch] += static_cast<acc_t>(f[ch]);
          }
          for (int64_t ch = 0; ch < C; ++ch) row[ch] += piece[ch];
        }
      }
      // out[b, ch, v] with r = b * plane + v.
      for (int64_t t = 0; t < count; ++t) {
        const int64_t r = r0 + t;
        const int64_t b = r / plane, v = r - b * plane;
        scalar_t* o = out + b * C * plane + v;
        const acc_t* row = acc.data() + t * C;
        for (int64_t ch = 0; ch < C; ++ch) o[ch * plane] = static_cast<scalar_t>(row[ch]);
      }
    }
  });
}

template <typename scalar_t>
void backward_kernel(const scalar_t* grad_out, const VoxelIndex& index, int64_t C, int64_t plane,
                     int64_t total, scalar_t* grad_feats) {
  const int64_t tiles = (total + kTile - 1) / kTile;
  at::parallel_for(0, tiles, 16, [&](int64_t tile_begin, int64_t tile_end) {
    std::vector<scalar_t> rows(kTile * C);
    for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
      const int64_t r0 = tile * kTile;
      const int64_t count = std::min(kTile, total - r0);
      if (index.offsets[r0] == index.offsets[r0 + count]) continue;  // no point in this tile
      for (int64_t t = 0; t < count; ++t) {
        const int64_t r = r0 + t;
        const int64_t b = r / plane, v = r - b * plane;
        const scalar_t* g = grad_out + b * C * plane + v;
        for (int64_t ch = 0; ch < C; ++ch) rows[t * C + ch] = g[ch * plane];
      }
      for (int64_t t = 0; t < count; ++t) {
        const scalar_t* row = rows.data() + t * C;
        for (int64_t k = index.offsets[r0 + t]; k < index.offsets[r0 + t + 1]; ++k) {
          std::copy(row, row + C, grad_feats + index.order[k] * C);
        }
      }
    }
  });
}

}  // namespace

at::Tensor bev_pool_forward_cpu(const at::Tensor& feats, const at::Tensor& coords,
                                int64_t batch_size, at::IntArrayRef grid) {
  const auto g = check_bev_pool_args(feats, coords, batch_size, grid);
  TORCH_CHECK(feats.device().is_cpu(), "bev_pool_forward_cpu: feats must be on the CPU");
  const int64_t C = feats.size(1), plane = g[2] * g[0] * g[1], total = batch_size * plane;
  at::Tensor out = at::empty({batch_size, C, g[2], g[0], g[1]}, feats.options());
  if (out.numel() == 0) return out;
  const VoxelIndex index = index_points(coords, batch_size, g);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, feats.scalar_type(), "bev_pool_forward_cpu", [&] {
        forward_kernel<scalar_t>(feats.data_ptr<scalar_t>(), index, C, plane, total,
                                 out.data_ptr<scalar_t>());
      });
  return out;
}

at::Tensor bev_pool_backward_cpu(const at::Tensor& grad_out, const at::Tensor& coords,
                                 int64_t batch_size, at::IntArrayRef grid) {
  check_bev_pool_backward_args(grad_out, coords, batch_size, grid);
  TORCH_CHECK(grad_out.device().is_cpu(), "bev_pool_backward_cpu: grad_out must be on the CPU");
  const auto g = std::array<int64_t, 3>{grid[0], grid[1], grid[2]};
  const int64_t C = grad_out.size(1), plane = g[2] * g[0] * g[1], total = batch_size * plane;
  at::Tensor grad_feats = at::zeros({coords.size(0), C}, grad_out.options());
  if (grad_feats.numel() == 0 || total == 0) return grad_feats;
  const VoxelIndex index = index_points(coords, batch_size, g);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad_out.scalar_type(), "bev_pool_backward_cpu", [&] {
        backward_kernel<scalar_t>(grad_out.data_ptr<scalar_t>(), index, C, plane, total,
                                  grad_feats.data_ptr<scalar_t>());
      });
  return grad_feats;
}

TORCH_LIBRARY_IMPL(bev_reid, CPU, m) {
  m.impl("bev_pool", &bev_pool_forward_cpu);
  m.impl("bev_pool_backward", &bev_pool_backward_cpu);
}

}  // namespace bev_reid
