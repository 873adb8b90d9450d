// Declares the bev_reid operator library. Each device registers its kernels next to them
// (csrc/<op>/<op>_cpu.cpp, csrc/<op>/<op>_cuda.cu) with TORCH_LIBRARY_IMPL.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing bev_reid._C from Python runs the static registrations below; the module has no
// Python-visible members of its own (the ops live under torch.ops.bev_reid).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(bev_reid, m) {
  m.def("bev_pool(Tensor feats, Tensor coords, int batch_size, int[3] grid) -> Tensor");
  m.def("bev_pool_backward(Tensor grad_out, Tensor coords, int batch_size, int[3] grid) -> Tensor");
  m.def(
      "dynamic_voxelize(Tensor points, float[3] voxel_size, float[6] point_cloud_range) -> Tensor");
  m.def(
      "hard_voxelize(Tensor points, float[3] voxel_size, float[6] point_cloud_range, "
      "int max_points, int max_voxels) -> (Tensor, Tensor, Tensor)");
  m.def(
      "fused_splat_plan(Tensor cells, int[3] grid) -> (Tensor ranks, Tensor order, "
      "Tensor sorted_ranks, Tensor offsets)");
  m.def(
      "fused_splat(Tensor depth, Tensor context, Tensor ranks, Tensor order, Tensor sorted_ranks, "
      "Tensor offsets, int[3] grid) -> Tensor");
  m.def(
      "fused_splat_backward(Tensor grad_out, Tensor depth, Tensor context, Tensor ranks, "
      "Tensor order, Tensor sorted_ranks, Tensor offsets, int[3] grid) -> (Tensor, Tensor)");
}
