"""Camera frustum geometry of lift-splat-shoot: image pixels x depth bins -> ego-frame points.

Image coordinates are continuous (PIL's convention, as in :mod:`bev_reid.data.nuscenes`): pixel
(row i, column j) covers [j, j+1) x [i, i+1). A feature cell of a trunk with stride
``downsample`` covers ``downsample`` pixels, so its frustum points sit at the cell's centre,
``(j + 0.5) * downsample``; lift-splat-shoot spread them with ``linspace(0, W - 1, fW)`` instead,
which puts the last column's points on the image's last pixel rather than its cell's centre.

Shapes: B batch, N cameras, D depth bins, fH x fW feature cells.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bev_reid.config import GridConfig


def create_frustum(
    final_dim: Sequence[int], downsample: int, dbound: Sequence[float]
) -> torch.Tensor:
    """Points of the camera frustum in augmented-image coordinates.

    Args:
        final_dim: (H, W) of the network's input image.
        downsample: stride of the image features.
        dbound: (min, max, step) of the depth bins, metres; D = round((max - min) / step), bin k
            at depth min + k * step (lift-splat-shoot's ``arange(min, max, step)``).
    Returns:
        [D, fH, fW, 3] float32: (u, v, depth) with fH = H // downsample, fW = W // downsample.
    """
    image_h, image_w = final_dim
    feat_h, feat_w = image_h // downsample, image_w // downsample
    d_lo, d_hi, d_step = dbound
    num_d = int(round((d_hi - d_lo) / d_step))
    ds = (
        (d_lo + d_step * torch.arange(num_d, dtype=torch.float32))
        .view(-1, 1, 1)
        .expand(-1, feat_h, feat_w)
    )  # D x fH x fW
    xs = (
        ((torch.arange(feat_w, dtype=torch.float32) + 0.5) * downsample)
        .view(1, 1, -1)
        .expand(num_d, feat_h, -1)
    )  # D x fH x fW
    ys = (
        ((torch.arange(feat_h, dtype=torch.float32) + 0.5) * downsample)
        .view(1, -1, 1)
        .expand(num_d, -1, feat_w)
    )  # D x fH x fW
    return torch.stack((xs, ys, ds), -1)  # D x fH x fW x 3


def frustum_to_ego(
    frustum: torch.Tensor,
    rots: torch.Tensor,
    trans: torch.Tensor,
    intrins: torch.Tensor,
    post_rots: torch.Tensor,
    post_trans: torch.Tensor,
) -> torch.Tensor:
    """Ego-frame position of every frustum point of every camera (lift-splat-shoot's get_geometry).

    Args:
        frustum: [D, fH, fW, 3] (u, v, depth) in the augmented image (see create_frustum).
        rots: [B, N, 3, 3] camera -> ego rotation.
        trans: [B, N, 3] camera origin in ego.
        intrins: [B, N, 3, 3] camera intrinsics of the original image.
        post_rots: [B, N, 3, 3], post_trans: [B, N, 3]: the image augmentation, original pixel
            p -> post_rots @ p + post_trans.
    Returns:
        [B, N, D, fH, fW, 3] ego-frame (x, y, z), metres.
    """
    batch, cams = trans.shape[:2]
    # undo the image augmentation: p = post_rots^-1 (p' - post_trans); depth passes through
    points = frustum - post_trans.view(batch, cams, 1, 1, 1, 3)  # B x N x D x fH x fW x 3
    points = (
        torch.linalg.inv(post_rots).view(batch, cams, 1, 1, 1, 3, 3).matmul(points.unsqueeze(-1))
    )  # B x N x D x fH x fW x 3 x 1
    # camera ray scaled by depth: (u d, v d, d) = K x_cam
    points = torch.cat(
        (points[..., :2, :] * points[..., 2:3, :], points[..., 2:3, :]), -2
    )  # B x N x D x fH x fW x 3 x 1
    # x_ego = R K^-1 (u d, v d, d) + t
    combine = rots.matmul(torch.linalg.inv(intrins))  # B x N x 3 x 3
    points = (
        combine.view(batch, cams, 1, 1, 1, 3, 3).matmul(points).squeeze(-1)
    )  # B x N x D x fH x fW x 3
    return points + trans.view(batch, cams, 1, 1, 1, 3)  # B x N x D x fH x fW x 3


def points_to_voxel_coords(points_ego: torch.Tensor, grid: GridConfig) -> torch.Tensor:
    """Grid cell of each point: floor((p - min) / step) per axis, as dynamic_voxelize (mmcv).

    Args:
        points_ego: [..., 3] ego-frame (x, y, z).
        grid: the BEV grid.
    Returns:
        [..., 3] int64 (x, y, z) cell indices; points outside the grid get indices < 0 or
        >= grid.shape (see :func:`inside_grid`); the splat drops them.
    """
    lo = torch.tensor(
        [b[0] for b in (grid.xbound, grid.ybound, grid.zbound)],
        dtype=points_ego.dtype,
        device=points_ego.device,
    )  # 3
    step = torch.tensor(
        [b[2] for b in (grid.xbound, grid.ybound, grid.zbound)],
        dtype=points_ego.dtype,
        device=points_ego.device,
    )  # 3
    return torch.floor((points_ego - lo) / step).long()  # ... x 3


def inside_grid(coords: torch.Tensor, grid: GridConfig) -> torch.Tensor:
    """[...] bool: whether the (x, y, z) cell indices [..., 3] lie on the grid."""
    dims = torch.tensor(grid.shape, device=coords.device)  # 3
    return ((coords >= 0) & (coords < dims)).all(-1)
