// Device-agnostic argument checks of the voxelization ops, shared by the CPU and CUDA kernels.
#include "voxelize/voxelize.h"

#include <ATen/ATen.h>
#include <c10/util/safe_numerics.h>

#include <cmath>
#include <limits>

namespace bev_reid {

VoxelGrid check_voxelize_args(const at::Tensor& points, at::ArrayRef<double> voxel_size,
                              at::ArrayRef<double> point_cloud_range) {
  TORCH_CHECK(points.dim() == 2 && points.size(1) >= 3,
              "voxelize: points must be [P, F] with F >= 3 (x, y, z, ...), got ", points.sizes());
  // Checked first, before any work: other floating types (fp16, bf16, float8) are refused here.
  TORCH_CHECK(points.scalar_type() == at::kFloat || points.scalar_type() == at::kDouble,
              "voxelize: points must be float32 or float64 (convert them with .float()), got ",
              points.scalar_type());
  TORCH_CHECK(points.is_contiguous(), "voxelize: points must be contiguous");
  TORCH_CHECK(voxel_size.size() == 3, "voxelize: voxel_size must have 3 values, got ",
              voxel_size.size());
  TORCH_CHECK(
      point_cloud_range.size() == 6,
      "voxelize: point_cloud_range must be (x_min, y_min, z_min, x_max, y_max, z_max), got ",
      point_cloud_range.size(), " values");
  VoxelGrid g;
  const char* axes = "xyz";
  for (int i = 0; i < 3; ++i) {
    // mmcv hands voxel_size and point_cloud_range to its kernels as float32 whatever the points'
    // dtype and derives the grid from them in float32; so do we (fp64 points are then compared
    // with these float32 values in double, as in mmcv's CPU kernel).
    const float size = static_cast<float>(voxel_size[i]);
    const float lo = static_cast<float>(point_cloud_range[i]);
    const float hi = static_cast<float>(point_cloud_range[i + 3]);
    TORCH_CHECK(std::isfinite(size) && size > 0, "voxelize: voxel_size[", i, "] (", axes[i],
                ") must be a positive number (in float32), got ", voxel_size[i]);
    TORCH_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo < hi, "voxelize: point_cloud_range ",
                axes[i], " must have min < max (as float32), got min ", point_cloud_range[i],
                " and max ", point_cloud_range[i + 3]);
    const float n = std::round((hi - lo) / size);
    TORCH_CHECK(n >= 1, "voxelize: the range along ", axes[i], " (", hi - lo,
                ") is smaller than half a voxel (", size, ")");
    TORCH_CHECK(n <= static_cast<float>(int64_t{1} << 20), "voxelize: the grid has ", n,
                " cells along ", axes[i], ", too many (at most 2^20 per axis)");
    g.size[i] = size;
    g.lo[i] = lo;
    g.dims[i] = static_cast<int64_t>(n);
  }
  return g;
}

void check_hard_voxelize_args(const at::Tensor& points, int64_t max_points, int64_t max_voxels) {
  TORCH_CHECK(max_points >= 1, "voxelize: max_points must be >= 1, got ", max_points);
  TORCH_CHECK(max_voxels >= 1, "voxelize: max_voxels must be >= 1, got ", max_voxels);
  TORCH_CHECK(
      points.size(0) <= std::numeric_limits<int32_t>::max(),
      "voxelize: hard voxelization counts points in int32 (num_points, as mmcv), so it takes "
      "at most 2^31 - 1 points; got ",
      points.size(0), " (split the cloud)");
}

void check_voxels_size(int64_t num_voxels, int64_t max_points, int64_t f) {
  uint64_t cells = 0, total = 0;
  const bool overflow = c10::mul_overflows(static_cast<uint64_t>(num_voxels),
                                           static_cast<uint64_t>(max_points), &cells) ||
                        c10::mul_overflows(cells, static_cast<uint64_t>(f), &total) ||
                        total > static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  TORCH_CHECK(!overflow, "voxelize: the voxels tensor [", num_voxels, ", ", max_points, ", ", f,
              "] is too large; lower max_points");
}

}  // namespace bev_reid
