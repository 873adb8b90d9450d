"""Devices for the op tests: CPU always, CUDA twins marked `gpu` and skipped without a GPU."""

import pytest
import torch

import bev_reid.ops as ops


def _cuda_ready() -> bool:
    return torch.cuda.is_available() and ops.cuda_built()


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not _cuda_ready(), reason="needs a GPU and a FORCE_CUDA=1 build"),
        ],
    ),
]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param
