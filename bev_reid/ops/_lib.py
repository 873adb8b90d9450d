"""Loads the compiled extension ``bev_reid._C`` (built by ``pip install``, never at run time)."""

from __future__ import annotations

import functools


@functools.cache
def load_library() -> None:
    """Imports ``bev_reid._C``, which registers the ``torch.ops.bev_reid`` operators."""
    try:
        from bev_reid import _C  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "bev_reid's compiled ops (bev_reid._C) are not built or do not match this torch "
            f"({e}). Build them with `pip install --no-build-isolation -e .` in the repository "
            "(see README.md)."
        ) from e


def cuda_built() -> bool:
    """Whether the extension was built with CUDA kernels."""
    import torch

    load_library()
    return torch._C._dispatch_has_kernel_for_dispatch_key("bev_reid::bev_pool", "CUDA")
