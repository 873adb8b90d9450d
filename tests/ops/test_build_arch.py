"""setup.py's default CUDA architecture list: filtered by what the nvcc found can build, so that
``FORCE_CUDA=1`` without ``TORCH_CUDA_ARCH_LIST`` works with CUDA 12 and 13 toolkits (nvcc 13
refuses sm_70), while a ``TORCH_CUDA_ARCH_LIST`` that is set always wins. Runs no real nvcc.
"""

from __future__ import annotations

import os
import runpy
import stat
from pathlib import Path
from unittest import mock

import pytest

SETUP_PY = Path(__file__).resolve().parents[2] / "setup.py"

# What `nvcc --list-gpu-arch` prints (CUDA 12.4 and 13.0).
NVCC_12 = "compute_50 compute_52 compute_53 compute_60 compute_61 compute_62 compute_70 compute_72 compute_75 compute_80 compute_86 compute_87 compute_89 compute_90"  # noqa: E501
NVCC_13 = "compute_75 compute_80 compute_86 compute_87 compute_88 compute_89 compute_90 compute_100 compute_110 compute_103 compute_120 compute_121"  # noqa: E501


@pytest.fixture(scope="module")
def build():
    """setup.py's functions, loaded without running setup()."""
    with mock.patch("setuptools.setup"):
        return runpy.run_path(str(SETUP_PY))


def fake_nvcc(folder: Path, listing: str, rc: int = 0) -> str:
    path = folder / "nvcc"
    lines = "\n".join(listing.split())
    path.write_text(f"#!/bin/sh\nprintf '%s\\n' '{lines}'\nexit {rc}\n".replace("'", '"'))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.parametrize(
    "listing,want",
    [
        (NVCC_13, "7.5;8.0;8.6;8.9;9.0+PTX"),
        (NVCC_12, "7.0;7.5;8.0;8.6;8.9;9.0+PTX"),
        # an older toolkit without sm_89 / sm_90: the newest it has carries the PTX
        (
            "compute_52 compute_60 compute_70 compute_75 compute_80 compute_86",
            "7.0;7.5;8.0;8.6+PTX",
        ),
    ],
    ids=["cuda13", "cuda12", "cuda11.1"],
)
def test_default_list_keeps_what_nvcc_supports(build, tmp_path, listing, want):
    nvcc = fake_nvcc(tmp_path, listing)
    arches = build["nvcc_arches"](nvcc)
    assert {"7.5", "8.0", "8.6"} <= arches
    assert ("10.0" in arches) == ("compute_100" in listing)
    assert build["cuda_arch_list"]({}, nvcc) == want


def test_torch_cuda_arch_list_wins(build, tmp_path):
    nvcc = fake_nvcc(tmp_path, NVCC_13)
    assert build["cuda_arch_list"]({"TORCH_CUDA_ARCH_LIST": "7.0 8.0"}, nvcc) == "7.0 8.0"
    assert build["cuda_arch_list"]({"TORCH_CUDA_ARCH_LIST": ""}, nvcc) == "7.5;8.0;8.6;8.9;9.0+PTX"


def test_unknown_nvcc_keeps_the_whole_default(build, tmp_path):
    full = "7.0;7.5;8.0;8.6;8.9;9.0+PTX"
    assert build["nvcc_arches"](None) is None
    assert build["nvcc_arches"](str(tmp_path / "missing")) is None
    assert build["nvcc_arches"](fake_nvcc(tmp_path, NVCC_13, rc=1)) is None  # nvcc < 11
    assert build["default_cuda_arch_list"](None) == full


def test_no_default_arch_supported_says_what_to_do(build):
    with pytest.raises(RuntimeError, match="set TORCH_CUDA_ARCH_LIST"):
        build["default_cuda_arch_list"]({"12.0", "12.1"})


def test_make_extension_sets_the_filtered_list(build, tmp_path, monkeypatch):
    """With FORCE_CUDA=1 and no TORCH_CUDA_ARCH_LIST, the build exports the filtered list."""
    nvcc = fake_nvcc(tmp_path, NVCC_13)
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "")  # unset for the build; restored afterwards
    monkeypatch.setenv("FORCE_CUDA", "1")
    module = build["make_extension"].__globals__  # setup.py's own namespace
    # CUDAExtension needs a CUDA_HOME; only the environment the build leaves behind matters here.
    with mock.patch.dict(module, {"CUDAExtension": dict, "find_nvcc": lambda: nvcc}):
        extension = module["make_extension"]()
    assert ("WITH_CUDA", None) in extension["define_macros"]
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == "7.5;8.0;8.6;8.9;9.0+PTX"
