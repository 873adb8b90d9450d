// CPU kernels of voxelization. The cell of each point is computed in parallel; hard
// voxelization then assigns voxel ids and slots in one serial pass over the points (first come,
// first kept: this is what makes the result deterministic and equal to mmcv's), using an
// open-addressing hash of the occupied cells instead of a dense grid, and copies the points into
// their slots in parallel.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "voxelize/voxelize.h"

namespace bev_reid {

namespace {

// Flat cell index x + dx * (y + dy * z) of every point, or -1 outside the grid.
template <typename scalar_t>
std::vector<int64_t> point_cells(const at::Tensor& points, const VoxelGrid& g) {
  const int64_t n = points.size(0), f = points.size(1);
  const scalar_t* p = points.data_ptr<scalar_t>();
  const scalar_t lo[3] = {static_cast<scalar_t>(g.lo[0]), static_cast<scalar_t>(g.lo[1]),
                          static_cast<scalar_t>(g.lo[2])};
  const scalar_t size[3] = {static_cast<scalar_t>(g.size[0]), static_cast<scalar_t>(g.size[1]),
                            static_cast<scalar_t>(g.size[2])};
  std::vector<int64_t> cell(n);
  at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      int64_t c[3];
      bool inside = true;
      for (int j = 0; j < 3; ++j) {
        // floor in the points' dtype, as mmcv; NaN fails the range test below.
        const scalar_t q = std::floor((p[i * f + j] - lo[j]) / size[j]);
        inside = inside && q >= 0 && q < static_cast<scalar_t>(g.dims[j]);
        c[j] = inside ? static_cast<int64_t>(q) : 0;
      }
      cell[i] = inside ? c[0] + g.dims[0] * (c[1] + g.dims[1] * c[2]) : -1;
    }
  });
  return cell;
}

std::vector<int64_t> point_cells(const at::Tensor& points, const VoxelGrid& g) {
  return points.scalar_type() == at::kFloat ? point_cells<float>(points, g)
                                            : point_cells<double>(points, g);
}

// (z, y, x) of a flat cell index.
void cell_zyx(int64_t cell, const VoxelGrid& g, int32_t* out) {
  out[2] = static_cast<int32_t>(cell % g.dims[0]);
  cell /= g.dims[0];
  out[1] = static_cast<int32_t>(cell % g.dims[1]);
  out[0] = static_cast<int32_t>(cell / g.dims[1]);
}

// Maps occupied cells to voxel ids; open addressing with linear probing.
class CellTable {
 public:
  explicit CellTable(int64_t expected) {
    int64_t cap = 16;
    while (cap < 2 * expected) cap <<= 1;
    keys_.assign(cap, -1);
    values_.resize(cap);
    mask_ = cap - 1;
  }
  // Returns the slot of `key`; `found` says whether it held the key already.
  int64_t find(int64_t key, bool& found) const {
    uint64_t h = static_cast<uint64_t>(key) * 0x9E3779B97F4A7C15ull;
    int64_t s = static_cast<int64_t>(h >> 17) & mask_;
    while (keys_[s] != -1 && keys_[s] != key) s = (s + 1) & mask_;
    found = keys_[s] == key;
    return s;
  }
  void insert_at(int64_t slot, int64_t key, int64_t value) {
    keys_[slot] = key;
    values_[slot] = value;
  }
  int64_t value_at(int64_t slot) const { return values_[slot]; }

 private:
  std::vector<int64_t> keys_;
  std::vector<int64_t> values_;
  int64_t mask_;
};

}  // namespace

at::Tensor dynamic_voxelize_cpu(const at::Tensor& points, at::ArrayRef<double> voxel_size,
                                at::ArrayRef<double> point_cloud_range) {
  const VoxelGrid g = check_voxelize_args(points, voxel_size, point_cloud_range);
  TORCH_CHECK(points.device().is_cpu(), "dynamic_voxelize_cpu: points must be on the CPU");
  const int64_t n = points.size(0);
  at::Tensor coords = at::empty({n, 3}, points.options().dtype(at::kInt));
  const std::vector<int64_t> cell = point_cells(points, g);
  int32_t* out = coords.data_ptr<int32_t>();
  at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (cell[i] < 0) {
        out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = -1;
      } else {
        cell_zyx(cell[i], g, out + 3 * i);
      }
    }
  });
  return coords;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> hard_voxelize_cpu(
    const at::Tensor& points, at::ArrayRef<double> voxel_size,
    at::ArrayRef<double> point_cloud_range, int64_t max_points, int64_t max_voxels) {
  const VoxelGrid g = check_voxelize_args(points, voxel_size, point_cloud_range);
  TORCH_CHECK(points.device().is_cpu(), "hard_voxelize_cpu: points must be on the CPU");
  check_hard_voxelize_args(points, max_points, max_voxels);
  const int64_t n = points.size(0), f = points.size(1);
  const std::vector<int64_t> cell = point_cells(points, g);

  // At most n voxels can exist: a larger max_voxels acts as n (and 4 * max_voxels would overflow
  // for max_voxels >= 2^61, leaving a table too small for the probes to end).
  const int64_t voxel_limit = std::min(max_voxels, n);
  // Serial pass: voxel id and slot of every point (slot -1: dropped).
  std::vector<int64_t> voxel_of(n, -1), slot_of(n, -1), first_cell;
  std::vector<int32_t> count;
  CellTable table(voxel_limit);  // holds at most voxel_limit cells
  for (int64_t i = 0; i < n; ++i) {
    if (cell[i] < 0) continue;
    bool found;
    const int64_t s = table.find(cell[i], found);
    int64_t v;
    if (found) {
      v = table.value_at(s);
    } else {
      if (static_cast<int64_t>(first_cell.size()) >= voxel_limit) continue;
      v = static_cast<int64_t>(first_cell.size());
      table.insert_at(s, cell[i], v);
      first_cell.push_back(cell[i]);
      count.push_back(0);
    }
    if (count[v] < max_points) {  // no overflow: count <= n < 2^31 (check_hard_voxelize_args)
      voxel_of[i] = v;
      slot_of[i] = count[v]++;
    }
  }

  const int64_t num_voxels = static_cast<int64_t>(first_cell.size());
  check_voxels_size(num_voxels, max_points, f);
  at::Tensor voxels = at::zeros({num_voxels, max_points, f}, points.options());
  at::Tensor coords = at::empty({num_voxels, 3}, points.options().dtype(at::kInt));
  at::Tensor num_points = at::from_blob(count.data(), {num_voxels}, at::kInt).clone();
  int32_t* c = coords.data_ptr<int32_t>();
  for (int64_t v = 0; v < num_voxels; ++v) cell_zyx(first_cell[v], g, c + 3 * v);
  AT_DISPATCH_FLOATING_TYPES(points.scalar_type(), "hard_voxelize_cpu", [&] {
    const scalar_t* src = points.data_ptr<scalar_t>();
    scalar_t* dst = voxels.data_ptr<scalar_t>();
    at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        if (slot_of[i] < 0) continue;
        std::copy(src + i * f, src + (i + 1) * f,
                  dst + (voxel_of[i] * max_points + slot_of[i]) * f);
      }
    });
  });
  return {voxels, coords, num_points};
}

TORCH_LIBRARY_IMPL(bev_reid, CPU, m) {
  m.impl("dynamic_voxelize", &dynamic_voxelize_cpu);
  m.impl("hard_voxelize", &hard_voxelize_cpu);
}

}  // namespace bev_reid
