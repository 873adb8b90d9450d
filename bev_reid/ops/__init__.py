"""The compiled ops of bev-reid (``torch.ops.bev_reid``) and their plain references.

Importing this package loads ``bev_reid._C``; it compiles nothing.
"""

from bev_reid.ops._lib import cuda_built, load_library
from bev_reid.ops.bev_pool import bev_pool, bev_pool_reference
from bev_reid.ops.fused_splat import SplatPlan, fused_splat, fused_splat_reference, splat_plan
from bev_reid.ops.voxelize import (
    dynamic_voxelize,
    dynamic_voxelize_reference,
    voxelize,
    voxelize_reference,
)

__all__ = [
    "SplatPlan",
    "bev_pool",
    "bev_pool_reference",
    "cuda_built",
    "dynamic_voxelize",
    "dynamic_voxelize_reference",
    "fused_splat",
    "fused_splat_reference",
    "load_library",
    "splat_plan",
    "voxelize",
    "voxelize_reference",
]
