// Device-agnostic argument checks of the voxelization ops, shared by the CPU and CUDA kernels.
#include "voxelize/voxelize.h"

#include <ATen/ATen.h>

#include <cmath>

namespace bev_reid {

namespace {

// mmcv derives the grid in the points' precision: round((max - min) / size).
template <typename T>
int64_t cells(double lo, double hi, double size) {
  return static_cast<int64_t>(std::round((static_cast<T>(hi) - static_cast<T>(lo)) / static_cast<T>(size)));
}

}  // namespace

VoxelGrid check_voxelize_args(const at::Tensor& points, at::ArrayRef<double> voxel_size,
                              at::ArrayRef<double> point_cloud_range) {
  TORCH_CHECK(points.dim() == 2 && points.size(1) >= 3,
              "voxelize: points must be [P, F] with F >= 3 (x, y, z, ...), got ", points.sizes());
  TORCH_CHECK(points.scalar_type() == at::kFloat || points.scalar_type() == at::kDouble,
              "voxelize: points must be float32 or float64, got ", points.scalar_type());
  TORCH_CHECK(points.is_contiguous(), "voxelize: points must be contiguous");
  TORCH_CHECK(voxel_size.size() == 3, "voxelize: voxel_size must have 3 values, got ", voxel_size.size());
  TORCH_CHECK(point_cloud_range.size() == 6,
              "voxelize: point_cloud_range must be (x_min, y_min, z_min, x_max, y_max, z_max), got ",
              point_cloud_range.size(), " values");
  VoxelGrid g;
  const char* axes = "xyz";
  for (int i = 0; i < 3; ++i) {
    const double size = voxel_size[i], lo = point_cloud_range[i], hi = point_cloud_range[i + 3];
    TORCH_CHECK(std::isfinite(size) && size > 0, "voxelize: voxel_size[", i, "] (", axes[i],
                ") must be a positive number, got ", size);
    TORCH_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo < hi, "voxelize: point_cloud_range ",
                axes[i], " must have min < max, got min ", lo, " and max ", hi);
    const int64_t n = points.scalar_type() == at::kFloat ? cells<float>(lo, hi, size) : cells<double>(lo, hi, size);
    TORCH_CHECK(n >= 1, "voxelize: the range along ", axes[i], " (", hi - lo,
                ") is smaller than half a voxel (", size, ")");
    g.size[i] = size;
    g.lo[i] = lo;
    g.dims[i] = n;
  }
  TORCH_CHECK(g.dims[0] <= (int64_t{1} << 20) && g.dims[1] <= (int64_t{1} << 20) && g.dims[2] <= (int64_t{1} << 20),
              "voxelize: the grid ", g.dims[0], " x ", g.dims[1], " x ", g.dims[2],
              " is too large (at most 2^20 cells per axis)");
  return g;
}

}  // namespace bev_reid
