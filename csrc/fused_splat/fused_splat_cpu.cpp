// CPU kernels of fused_splat (contract in fused_splat.h).
//
// Plan: the cells' ranks in parallel, then a counting sort (stable) of the points by rank.
// Forward: each thread owns a range of 32-cell tiles, sums their points (depth x context row, read
// where they lie) and writes whole output rows; no two threads touch one cell, so no atomics.
// Backward: (1) the rows of grad_out at the cells that hold points are copied out channels-last
// (a compact [cells hit, C] buffer); (2) each thread owns a range of pixels and, for each of their
// D points in depth order, takes the dot product of its cell's row with the pixel's context row
// (grad_depth) and adds depth x that row to the pixel's context gradient. Every sum runs in a fixed
// order, the same as the CUDA kernels', so results do not depend on the thread count or device.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "fused_splat/fused_splat.h"
#include "splat_chunk.h"

// Products are rounded before they are added, as the CUDA kernels do (__fmul_rn), so that no
// build of this file (e.g. with -march=native) fuses them into FMAs and changes the bits.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace bev_reid {

namespace {

// Cells are handled in tiles of kTile consecutive cells of one (b, z) plane, so that each channel
// of a tile is one contiguous run of the output (and of grad_out): a page is touched once per
// channel and tile, not once per cell.
constexpr int64_t kTile = 512;
// Lanes of a CUDA warp: the grouping of grad_depth's dot product (see fused_splat.h).
constexpr int64_t kLanes = 32;
// The plan's loops are light (a few ns a point): below this many points a parallel region costs
// more than it saves, most of all on a busy machine, where waking the second thread can take a
// scheduler tick.
constexpr int64_t kPlanGrain = int64_t{1} << 18;

// The tiles of the grid: tile i covers cells r0 .. r0 + count of batch b (r0 = b * plane + v0).
struct Tiles {
  int64_t plane, per_plane, count;
  explicit Tiles(const SplatShape& s)
      : plane(s.plane()), per_plane((s.plane() + kTile - 1) / kTile), count(s.B * per_plane) {}
  // (b, v0, number of cells) of tile i.
  std::array<int64_t, 3> operator[](int64_t i) const {
    const int64_t b = i / per_plane, v0 = (i - b * per_plane) * kTile;
    return {b, v0, std::min(kTile, plane - v0)};
  }
};

template <typename index_t>
void rank_points(const at::Tensor& cells, const std::array<int64_t, 3>& g, int64_t* ranks) {
  const int64_t P = cells.numel() / 3, B = cells.size(0);
  const int64_t per_batch = B == 0 ? 1 : P / B;
  const int64_t X = g[0], Y = g[1], Z = g[2], num_cells = B * Z * X * Y;
  const index_t* c = cells.const_data_ptr<index_t>();
  at::parallel_for(0, P, kPlanGrain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t x = c[3 * p], y = c[3 * p + 1], z = c[3 * p + 2], b = p / per_batch;
      const bool inside = x >= 0 && x < X && y >= 0 && y < Y && z >= 0 && z < Z;
      ranks[p] = inside ? ((b * Z + z) * X + x) * Y + y : num_cells;
    }
  });
}

template <typename scalar_t>
void forward_kernel(const scalar_t* depth, const scalar_t* context, const int64_t* order,
                    const int64_t* offsets, const SplatShape& s, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = s.C, HW = s.H * s.W, DHW = s.D * HW;
  const Tiles tiles(s);
  // Adds the products of points order[k], k in [begin, end), into row.
  const auto add_points = [&](int64_t begin, int64_t end, acc_t* row) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t p = order[k];
      const int64_t bn = p / DHW;
      const scalar_t* x = context + (bn * HW + p % HW) * C;
      const acc_t w = static_cast<acc_t>(depth[p]);
      for (int64_t ch = 0; ch < C; ++ch) row[ch] += w * static_cast<acc_t>(x[ch]);
    }
  };
  at::parallel_for(0, tiles.count, 1, [&](int64_t tile_begin, int64_t tile_end) {
    std::vector<acc_t> acc(kTile * C), piece(C);  // acc: [kTile, C], rows of the cells hit
    std::vector<int64_t> hit;                     // the tile's cells that hold points
    hit.reserve(kTile);
    for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
      const auto [b, v0, count] = tiles[tile];
      const int64_t* off = offsets + b * tiles.plane + v0;  // [count + 1]
      hit.clear();
      for (int64_t t = 0; t < count; ++t) {
        if (off[t] != off[t + 1]) hit.push_back(t);
      }
      for (const int64_t t : hit) {
        acc_t* row = acc.data() + t * C;
        std::fill(row, row + C, acc_t(0));
        // Pieces cut at multiples of kSplatChunk: the first sums straight into the row, later
        // ones apart and are then added (the CUDA kernels' order).
        int64_t k = std::min(off[t + 1], (off[t] / kSplatChunk + 1) * kSplatChunk);
        add_points(off[t], k, row);
        for (; k < off[t + 1]; k += kSplatChunk) {
          std::fill(piece.begin(), piece.end(), acc_t(0));
          add_points(k, std::min(off[t + 1], k + kSplatChunk), piece.data());
          for (int64_t ch = 0; ch < C; ++ch) row[ch] += piece[ch];
        }
      }
      // out[b, ch, v0 .. v0 + count): one contiguous run per channel, zeros but for the cells hit.
      for (int64_t ch = 0; ch < C; ++ch) {
        scalar_t* o = out + (b * C + ch) * tiles.plane + v0;
        std::fill(o, o + count, scalar_t(0));
        for (const int64_t t : hit) o[t] = static_cast<scalar_t>(acc[t * C + ch]);
      }
    }
  });
}

// grad_rows[cell_row[r], :] = grad_out[b, :, v] (r = b * plane + v) for every cell r that holds a
// point; cell_row[r] numbers those cells in rank order.
template <typename scalar_t, typename acc_t>
void gather_cell_rows(const scalar_t* grad_out, const int64_t* offsets, const int64_t* cell_row,
                      const SplatShape& s, acc_t* grad_rows) {
  const int64_t C = s.C;
  const Tiles tiles(s);
  at::parallel_for(0, tiles.count, 1, [&](int64_t tile_begin, int64_t tile_end) {
    std::vector<int64_t> hit;  // the tile's cells that hold points
    hit.reserve(kTile);
    for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
      const auto [b, v0, count] = tiles[tile];
      const int64_t r0 = b * tiles.plane + v0;
      const int64_t* off = offsets + r0;  // [count + 1]
      hit.clear();
      for (int64_t t = 0; t < count; ++t) {
        if (off[t] != off[t + 1]) hit.push_back(t);
      }
      for (int64_t ch = 0; ch < C; ++ch) {
        const scalar_t* g = grad_out + (b * C + ch) * tiles.plane + v0;
        for (const int64_t t : hit) grad_rows[cell_row[r0 + t] * C + ch] = static_cast<acc_t>(g[t]);
      }
    }
  });
}

template <typename scalar_t>
void backward_kernel(const scalar_t* grad_out, const scalar_t* depth, const scalar_t* context,
                     const int64_t* ranks, const int64_t* offsets, const SplatShape& s,
                     scalar_t* grad_depth, scalar_t* grad_context) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = s.C, D = s.D, HW = s.H * s.W, total = s.num_cells();
  // Rows only for the cells that hold points: usually a small share of the grid.
  std::vector<int64_t> cell_row(total);
  int64_t rows = 0;
  for (int64_t r = 0; r < total; ++r) cell_row[r] = offsets[r + 1] > offsets[r] ? rows++ : -1;
  std::vector<acc_t> grad_rows(rows * C);  // [cells hit, C]
  gather_cell_rows(grad_out, offsets, cell_row.data(), s, grad_rows.data());

  const int64_t pixels = s.B * s.N * HW;
  at::parallel_for(0, pixels, 16, [&](int64_t pix_begin, int64_t pix_end) {
    std::vector<acc_t> x(C), acc(C);
    std::vector<const acc_t*> row_of(D);  // [D] grad_rows row of each depth bin, null if dropped
    constexpr int64_t kLineFloats = 64 / sizeof(acc_t);
    acc_t lanes[kLanes];
    for (int64_t pix = pix_begin; pix < pix_end; ++pix) {
      const int64_t bn = pix / HW, hw = pix - bn * HW;
      const scalar_t* ctx = context + pix * C;
      for (int64_t ch = 0; ch < C; ++ch) x[ch] = static_cast<acc_t>(ctx[ch]);
      std::fill(acc.begin(), acc.end(), acc_t(0));
      // The pixel's D rows of grad_rows, fetched ahead: they are scattered over a buffer that
      // need not fit in the caches.
      for (int64_t d = 0; d < D; ++d) {
        const int64_t r = ranks[(bn * D + d) * HW + hw];
        row_of[d] = r < total ? grad_rows.data() + cell_row[r] * C : nullptr;
        if (row_of[d] == nullptr) continue;
        for (int64_t ch = 0; ch < C; ch += kLineFloats) __builtin_prefetch(row_of[d] + ch);
      }
      for (int64_t d = 0; d < D; ++d) {
        const int64_t p = (bn * D + d) * HW + hw;
        const acc_t* g = row_of[d];
        if (g == nullptr) {  // dropped
          grad_depth[p] = scalar_t(0);
          continue;
        }
        // Lane l of a warp sums channels l, l + 32, ...; then the butterfly halves the lanes.
        for (int64_t l = 0; l < kLanes; ++l) lanes[l] = acc_t(0);
        for (int64_t c0 = 0; c0 < C; c0 += kLanes) {
          const int64_t n = std::min(kLanes, C - c0);
          for (int64_t l = 0; l < n; ++l) lanes[l] += g[c0 + l] * x[c0 + l];
        }
        for (int64_t half = kLanes / 2; half >= 1; half /= 2) {
          for (int64_t l = 0; l < half; ++l) lanes[l] = lanes[l] + lanes[l + half];
        }
        grad_depth[p] = static_cast<scalar_t>(lanes[0]);
        const acc_t w = static_cast<acc_t>(depth[p]);
        for (int64_t ch = 0; ch < C; ++ch) acc[ch] += w * g[ch];
      }
      scalar_t* out = grad_context + pix * C;
      for (int64_t ch = 0; ch < C; ++ch) out[ch] = static_cast<scalar_t>(acc[ch]);
    }
  });
}

}  // namespace

SplatPlan fused_splat_plan_cpu(const at::Tensor& cells, at::IntArrayRef grid) {
  const auto g = check_splat_plan_args(cells, grid);
  TORCH_CHECK(cells.device().is_cpu(), "fused_splat_plan_cpu: cells must be on the CPU");
  const int64_t B = cells.size(0), P = cells.numel() / 3;
  const int64_t num_cells = B * g[0] * g[1] * g[2];
  const auto long_opts = cells.options().dtype(at::kLong);
  at::Tensor ranks = at::empty(cells.sizes().slice(0, 5), long_opts);  // B x N x D x H x W
  at::Tensor order = at::empty({P}, long_opts);                        // P
  at::Tensor sorted_ranks = at::empty({P}, long_opts);                 // P
  at::Tensor offsets = at::empty({num_cells + 1}, long_opts);          // num_cells + 1
  int64_t* rk = ranks.mutable_data_ptr<int64_t>();
  if (cells.scalar_type() == at::kInt) {
    rank_points<int32_t>(cells, g, rk);
  } else {
    rank_points<int64_t>(cells, g, rk);
  }
  // Counting sort, stable: offsets[r + 1] counts cell r, then becomes the end of its run.
  int64_t* off = offsets.mutable_data_ptr<int64_t>();
  std::fill(off, off + num_cells + 1, int64_t{0});
  for (int64_t p = 0; p < P; ++p) {
    if (rk[p] < num_cells) ++off[rk[p] + 1];
  }
  for (int64_t r = 0; r < num_cells; ++r) off[r + 1] += off[r];
  std::vector<int64_t> fill(off, off + num_cells);
  int64_t dropped = off[num_cells];  // dropped points go after the kept ones, in input order
  int64_t* ord = order.mutable_data_ptr<int64_t>();
  for (int64_t p = 0; p < P; ++p) ord[rk[p] < num_cells ? fill[rk[p]]++ : dropped++] = p;
  int64_t* sr = sorted_ranks.mutable_data_ptr<int64_t>();
  at::parallel_for(0, P, kPlanGrain, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) sr[k] = rk[ord[k]];
  });
  return {ranks, order, sorted_ranks, offsets};
}

at::Tensor fused_splat_forward_cpu(const at::Tensor& depth, const at::Tensor& context,
                                   const at::Tensor& ranks, const at::Tensor& order,
                                   const at::Tensor& sorted_ranks, const at::Tensor& offsets,
                                   at::IntArrayRef grid) {
  const SplatShape s = check_fused_splat_args("fused_splat", depth, context, ranks, order,
                                              sorted_ranks, offsets, grid);
  TORCH_CHECK(depth.device().is_cpu(), "fused_splat_forward_cpu: depth must be on the CPU");
  at::Tensor out = at::empty({s.B, s.C, s.Z, s.X, s.Y}, depth.options());  // B x C x Z x X x Y
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, depth.scalar_type(), "fused_splat_cpu", [&] {
        forward_kernel<scalar_t>(depth.const_data_ptr<scalar_t>(),
                                 context.const_data_ptr<scalar_t>(),
                                 order.const_data_ptr<int64_t>(), offsets.const_data_ptr<int64_t>(),
                                 s, out.mutable_data_ptr<scalar_t>());
      });
  return out;
}

std::tuple<at::Tensor, at::Tensor> fused_splat_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& depth, const at::Tensor& context,
    const at::Tensor& ranks, const at::Tensor& order, const at::Tensor& sorted_ranks,
    const at::Tensor& offsets, at::IntArrayRef grid) {
  const SplatShape s = check_fused_splat_args("fused_splat_backward", depth, context, ranks, order,
                                              sorted_ranks, offsets, grid);
  check_fused_splat_grad(grad_out, depth, s);
  TORCH_CHECK(depth.device().is_cpu(), "fused_splat_backward_cpu: depth must be on the CPU");
  at::Tensor grad_depth = at::empty_like(depth);      // B x N x D x H x W, every element written
  at::Tensor grad_context = at::empty_like(context);  // B x N x H x W x C, every element written
  if (s.C == 0 || s.D == 0) {
    // No channel: nothing reaches depth; no depth bin: nothing reaches context.
    grad_depth.zero_();
    grad_context.zero_();
    return {grad_depth, grad_context};
  }
  if (depth.numel() == 0) return {grad_depth, grad_context};  // no pixel (and no point)
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, depth.scalar_type(), "fused_splat_backward_cpu", [&] {
        backward_kernel<scalar_t>(
            grad_out.const_data_ptr<scalar_t>(), depth.const_data_ptr<scalar_t>(),
            context.const_data_ptr<scalar_t>(), ranks.const_data_ptr<int64_t>(),
            offsets.const_data_ptr<int64_t>(), s, grad_depth.mutable_data_ptr<scalar_t>(),
            grad_context.mutable_data_ptr<scalar_t>());
      });
  return {grad_depth, grad_context};
}

TORCH_LIBRARY_IMPL(bev_reid, CPU, m) {
  m.impl("fused_splat_plan", &fused_splat_plan_cpu);
  m.impl("fused_splat", &fused_splat_forward_cpu);
  m.impl("fused_splat_backward", &fused_splat_backward_cpu);
}

}  // namespace bev_reid
