"""Builds bev-reid and its one compiled extension, ``bev_reid._C``.

C++ kernels are always built. CUDA kernels are added when torch is a CUDA build and a CUDA
toolkit is found, or when ``FORCE_CUDA=1``. ``TORCH_CUDA_ARCH_LIST`` is honoured as given; its
default covers sm_70 to sm_90 plus PTX, less what the nvcc found cannot build (CUDA 13 dropped
sm_70 and sm_72), so the default build works with CUDA 12.x and 13.x toolkits. Nothing is compiled
at import or run time.
"""

import glob
import os
import re
import shutil
import subprocess

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
# Compute capabilities built by default (the newest also as PTX, for newer GPUs), before the
# filtering by what nvcc supports.
DEFAULT_CUDA_ARCHS = ("7.0", "7.5", "8.0", "8.6", "8.9", "9.0")


def find_nvcc() -> str | None:
    """The nvcc torch's BuildExtension will run: CUDA_HOME's, else the one on PATH."""
    if CUDA_HOME is not None:
        return os.path.join(CUDA_HOME, "bin", "nvcc")
    return shutil.which("nvcc")


def nvcc_arches(nvcc: str | None) -> set[str] | None:
    """Compute capabilities ("7.5", "10.0", ...) that ``nvcc --list-gpu-arch`` lists; None when
    there is no nvcc or it cannot tell (nvcc < 11)."""
    if nvcc is None:
        return None
    try:
        listed = subprocess.run(
            [nvcc, "--list-gpu-arch"], capture_output=True, text=True, timeout=120, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    arches = {f"{int(m) // 10}.{int(m) % 10}" for m in re.findall(r"compute_(\d+)", listed)}
    return arches or None


def default_cuda_arch_list(supported: set[str] | None) -> str:
    """DEFAULT_CUDA_ARCHS less those not in ``supported`` (None: keep all), the newest + PTX."""
    archs = [a for a in DEFAULT_CUDA_ARCHS if supported is None or a in supported]
    if not archs:
        raise RuntimeError(
            f"nvcc supports none of the default CUDA architectures {DEFAULT_CUDA_ARCHS} (it lists "
            f"{sorted(supported, key=float)}): set TORCH_CUDA_ARCH_LIST, e.g. to your GPU's."
        )
    return ";".join([*archs[:-1], archs[-1] + "+PTX"])


def cuda_arch_list(environ=os.environ, nvcc: str | None = None) -> str:
    """TORCH_CUDA_ARCH_LIST if set (it always wins), else the default filtered by nvcc."""
    if environ.get("TORCH_CUDA_ARCH_LIST"):
        return environ["TORCH_CUDA_ARCH_LIST"]
    return default_cuda_arch_list(nvcc_arches(nvcc or find_nvcc()))


def want_cuda() -> bool:
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None and torch.cuda.is_available()


def make_extension():
    csrc = os.path.join(ROOT, "csrc")
    sources = sorted(
        glob.glob(os.path.join(csrc, "*.cpp")) + glob.glob(os.path.join(csrc, "*", "*.cpp"))
    )
    cxx_flags = ["-O3"]  # the C++ standard is torch's default (C++20 for torch 2.13)
    if os.name != "nt":
        cxx_flags.append("-fopenmp")
    define_macros = [("Py_LIMITED_API", "0x03090000")]
    kwargs = dict(
        name="bev_reid._C",
        include_dirs=[csrc],
        define_macros=define_macros,
        extra_link_args=["-fopenmp"] if os.name != "nt" else [],
        py_limited_api=True,
    )
    if want_cuda():
        os.environ["TORCH_CUDA_ARCH_LIST"] = cuda_arch_list()
        sources += sorted(glob.glob(os.path.join(csrc, "*", "*.cu")))
        define_macros.append(("WITH_CUDA", None))
        nvcc_flags = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        return CUDAExtension(
            sources=sources, extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags}, **kwargs
        )
    return CppExtension(sources=sources, extra_compile_args={"cxx": cxx_flags}, **kwargs)


def read(name: str) -> str:
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


# The version is written once, in bev_reid/__init__.py (read as text: importing the package here
# would need its dependencies).
VERSION = re.search(r'^__version__ = "([^"]+)"', read("bev_reid/__init__.py"), re.M).group(1)


setup(
    name="bev-reid",
    version=VERSION,
    description="Vehicle re-identification in bird's-eye-view space from surround cameras",
    long_description=read("README.md"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["bev_reid", "bev_reid.*"]),
    ext_modules=[make_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(no_python_abi_suffix=True)},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
    install_requires=[
        # torch is not listed on purpose: pip must never resolve it (it would pull a multi-GB CUDA
        # build on a CPU machine). Install the torch you want first; see README.
        "numpy>=1.24,<2",  # nuscenes-devkit 1.2.0 needs numpy 1.x
        "nuscenes-devkit==1.2.0",
        "opencv-python<4.12",  # 4.12+ pulls numpy 2
        "efficientnet-pytorch==0.7.1",
        "pyyaml>=6",
        "tqdm>=4.60",
        "tensorboard>=2.14",
        "safetensors>=0.4",
        "matplotlib>=3.7",
        "pillow>=9",
        "shapely>=2",
        "pandas>=2.0,<3",  # convert-pandaset reads PandaSet's pickles; pandas 2 runs on numpy 1
    ],
    extras_require={
        # The test extra holds the track and export extras' pins too, so CI runs their tests.
        "test": [
            "pytest>=7",
            "ruff>=0.5",
            "motmetrics==1.4.0",
            "pandas>=2.0,<2.3",
            "onnx==1.23.2",
            "onnxscript==0.7.2",
            "onnxruntime==1.32.0",
        ],
        # eval-track: nuscenes-devkit 1.2.0's tracking evaluation is written for motmetrics 1.4.0
        # (its own pin); pandas 2.2 runs both on numpy 1.x.
        "track": ["motmetrics==1.4.0", "pandas>=2.0,<2.3"],
        # bev-reid export: torch's ONNX exporter needs onnx and onnxscript; onnxruntime checks
        # the graph and runs it (OnnxEmbedder). These pins work with numpy < 2.
        "export": ["onnx==1.23.2", "onnxscript==0.7.2", "onnxruntime==1.32.0"],
        # OpenMMLab cross-checks. mmcv 2.1.0 has no wheel for recent torch: see README.
        "mm": ["mmcv==2.1.0", "mmengine==0.10.7"],
    },
    entry_points={"console_scripts": ["bev-reid=bev_reid.cli:main"]},
)
