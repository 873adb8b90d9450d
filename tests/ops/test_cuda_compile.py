"""Compile checks of the CUDA sources with nvcc; they need no GPU (skipped when nvcc is absent).

- The kernels (``csrc/*/*_kernels.cuh``) are free of ATen: one translation unit instantiates every
  kernel for every dtype the host wrappers dispatch to, and nvcc compiles it alone.
- The host wrappers (``csrc/*/*_cuda.cu``) are compiled (not linked) against torch's headers, with
  the flags setup.py and torch's BuildExtension use. This works with a CPU build of torch too, once
  the one generated CUDA header that CPU wheels leave out is supplied (see ``_cpu_wheel_shim``).

Nothing here runs a kernel: values are checked by the CUDA twins of the op tests on a GPU.
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

NVCC = shutil.which("nvcc")
CSRC = Path(__file__).resolve().parents[2] / "csrc"
ARCH = "-arch=sm_80"

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")

# torch.utils.cpp_extension.COMMON_NVCC_FLAGS: they remove the implicit __half / __nv_bfloat16
# conversions and operators, which the kernels therefore must not rely on.
TORCH_NVCC_DEFINES = [
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
    "--expt-relaxed-constexpr",
]

# Every kernel, instantiated for every type it is launched with by the host wrappers.
KERNELS_TU = r"""
#include "bev_pool/bev_pool_kernels.cuh"
#include "fused_splat/fused_splat_kernels.cuh"
#include "splat_kernels.cuh"
#include "voxelize/voxelize_kernels.cuh"

namespace bp = bev_reid::bev_pool_kernels;
namespace fs = bev_reid::fused_splat_kernels;
namespace sk = bev_reid::splat_kernels;
namespace vx = bev_reid::voxelize_kernels;

#define CHUNK_SUM(T, A, ROWS)                                                                     \
  template __global__ void sk::chunk_sum_kernel<T, A, ROWS>(ROWS, const int64_t*, const int64_t*, \
                                                            A*, A*, T*, int64_t, int64_t,        \
                                                            int64_t, int64_t);
#define FEATURE_ROWS(T, A) sk::FeatureRows<T, A>
#define FRUSTUM_ROWS(T, A) sk::FrustumRows<T, A>
#define SPLAT_DTYPE(T, A)                                                                         \
  CHUNK_SUM(T, A, FEATURE_ROWS(T, A))                                                             \
  CHUNK_SUM(T, A, FRUSTUM_ROWS(T, A))                                                             \
  template __global__ void sk::combine_kernel<T, A>(const int64_t*, const A*, const A*, T*,        \
                                                    int64_t, int64_t, int64_t, int64_t);          \
  template __global__ void bp::gather_rows_kernel<T, int32_t>(const T*, const int32_t*, T*,       \
                                                              int64_t, int64_t, int64_t, int64_t, \
                                                              int64_t, int64_t);                  \
  template __global__ void bp::gather_rows_kernel<T, int64_t>(const T*, const int64_t*, T*,       \
                                                              int64_t, int64_t, int64_t, int64_t, \
                                                              int64_t, int64_t);                  \
  template __global__ void fs::grad_depth_kernel<T, A>(const T*, const T*, const int64_t*, T*,    \
                                                       int64_t, int64_t, int64_t, int64_t,        \
                                                       int64_t);                                  \
  template __global__ void fs::grad_context_kernel<T, A>(const T*, const T*, const int64_t*, T*,  \
                                                         int64_t, int64_t, int64_t, int64_t,      \
                                                         int64_t);
#define INDEX_KERNELS(I)                                                                          \
  template __global__ void bp::rank_kernel<I>(const I*, int64_t*, int64_t, int64_t, int64_t,      \
                                              int64_t, int64_t);                                  \
  template __global__ void fs::rank_kernel<I>(const I*, int64_t*, int64_t, int64_t, int64_t,      \
                                              int64_t, int64_t, int64_t);

SPLAT_DTYPE(float, float) SPLAT_DTYPE(double, double)
SPLAT_DTYPE(__half, float) SPLAT_DTYPE(__nv_bfloat16, float)
INDEX_KERNELS(int32_t) INDEX_KERNELS(int64_t)
template __global__ void fs::offsets_kernel<int64_t>(const int64_t*, int64_t*, int64_t, int64_t);
template __global__ void sk::transpose_kernel<uint16_t>(const uint16_t*, uint16_t*, int64_t,
                                                        int64_t, int64_t);
template __global__ void sk::transpose_kernel<uint32_t>(const uint32_t*, uint32_t*, int64_t,
                                                        int64_t, int64_t);
template __global__ void sk::transpose_kernel<uint64_t>(const uint64_t*, uint64_t*, int64_t,
                                                        int64_t, int64_t);

#define POINT_KERNELS(T)                                                                       \
  template __global__ void vx::dynamic_voxelize_kernel<T>(const T*, int32_t*, int64_t, int64_t, \
                                                          T, T, T, T, T, T, int64_t, int64_t,   \
                                                          int64_t);                             \
  template __global__ void vx::key_kernel<T>(const T*, int64_t*, int64_t, int64_t, T, T, T, T, T, \
                                             T, int64_t, int64_t, int64_t);                     \
  template __global__ void vx::fill_voxels_kernel<T>(const T*, const int64_t*, const int64_t*,  \
                                                     const int64_t*, T*, int64_t, int64_t,      \
                                                     int64_t, int64_t);

POINT_KERNELS(float) POINT_KERNELS(double)
template __global__ void vx::first_point_kernel<int64_t>(const int64_t*, const int64_t*, int64_t*,
                                                         int64_t);
template __global__ void vx::voxel_start_kernel<int64_t>(const int64_t*, const int64_t*,
                                                         const int64_t*, int64_t*, int64_t,
                                                         int64_t);
template __global__ void vx::voxel_meta_kernel<int64_t>(const int64_t*, const int64_t*, int32_t*,
                                                        int32_t*, int64_t, int64_t, int64_t,
                                                        int64_t, int64_t);
"""


def _nvcc(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [NVCC, *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


def _assert_compiled(proc: subprocess.CompletedProcess, what: str) -> None:
    assert proc.returncode == 0, (
        f"nvcc failed on {what} (exit {proc.returncode})\n"
        f"command: {' '.join(proc.args)}\n{proc.stderr[-20000:]}{proc.stdout[-5000:]}"
    )


@pytest.mark.parametrize("torch_defines", [True, False], ids=["torch-flags", "plain"])
def test_kernels_compile_for_every_dtype(tmp_path: Path, torch_defines: bool) -> None:
    source = tmp_path / "kernels_instantiated.cu"
    source.write_text(KERNELS_TU)
    args = [ARCH, "-std=c++17", "-Werror", "all-warnings", f"-I{CSRC}"]
    args += TORCH_NVCC_DEFINES if torch_defines else []
    proc = _nvcc([*args, "-c", str(source), "-o", str(tmp_path / "kernels.o")], tmp_path)
    _assert_compiled(proc, source.name)


def _cpu_wheel_shim(root: Path, torch_include: Path) -> list[str]:
    """Include flags that stand in for what CPU wheels of torch leave out.

    c10/cuda/CUDAMacros.h includes c10/cuda/impl/cuda_cmake_macros.h, generated by CMake only in
    CUDA builds; it defines C10_CUDA_BUILD_SHARED_LIBS (which only matters on Windows). Where
    torch ships the file, nothing is added.
    """
    relative = Path("c10", "cuda", "impl", "cuda_cmake_macros.h")
    if (torch_include / relative).exists():
        return []
    (root / relative).parent.mkdir(parents=True)
    (root / relative).write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    return [f"-I{root}"]


def test_host_wrappers_compile_against_torch(tmp_path: Path) -> None:
    cpp_extension = pytest.importorskip("torch.utils.cpp_extension")
    torch_includes = [Path(p) for p in cpp_extension.include_paths()]
    # nvcc finds the CUDA headers itself; torch's CUDA_HOME may be unset on a CPU-only machine.
    includes = [f"-I{CSRC}", *(f"-I{p}" for p in torch_includes)]
    includes += _cpu_wheel_shim(tmp_path / "shim", torch_includes[0])
    # setup.py's nvcc flags, plus what torch's BuildExtension adds to every .cu it compiles.
    flags = [ARCH, "-O3", "-std=c++20", "--expt-relaxed-constexpr", "-lineinfo"]
    flags += [*TORCH_NVCC_DEFINES, "-DWITH_CUDA", "-DPy_LIMITED_API=0x03090000"]
    flags += ["-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C"]
    flags += ["--compiler-options", "-fPIC"]

    sources = sorted(CSRC.glob("*/*_cuda.cu"))
    assert {s.name for s in sources} >= {
        "bev_pool_cuda.cu",
        "fused_splat_cuda.cu",
        "voxelize_cuda.cu",
    }

    def compile_one(source: Path) -> subprocess.CompletedProcess:
        out = tmp_path / f"{source.stem}.o"
        return _nvcc([*flags, *includes, "-c", str(source), "-o", str(out)], tmp_path)

    # Each takes ~20-30 s of one core, mostly in torch's headers; run them side by side.
    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        results = list(pool.map(compile_one, sources))
    for source, proc in zip(sources, results, strict=True):
        _assert_compiled(proc, source.name)
