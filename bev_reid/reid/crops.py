"""Cutting vehicles out of a BEV map: heading-aligned crops, box masks and per-box IoU.

A crop is S x S cells of the grid's cell size around a box centre. Crop row a runs along the
box heading (forward, row 0 at the back) and column b across it (right to left), so with
``align`` on, the same vehicle seen from another side or while turning looks alike; with it off,
rows follow ego x and columns ego y. All crops of a keyframe come from one ``grid_sample`` call.

Shapes: K boxes, C channels, X x Y grid, S crop size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bev_reid.config import GridConfig


def crop_offsets(size: int, cell: tuple[float, float], device=None) -> torch.Tensor:
    """[S, S, 2] (u, v) metres of each crop cell centre from the crop centre: u along rows
    (forward), v along columns (left)."""
    steps = torch.arange(size, dtype=torch.float32, device=device) + 0.5 - size / 2  # S
    u = (steps * cell[0]).view(size, 1).expand(size, size)  # S x S
    v = (steps * cell[1]).view(1, size).expand(size, size)  # S x S
    return torch.stack([u, v], -1)  # S x S x 2


def crop_points(
    centers: torch.Tensor, yaws: torch.Tensor, size: int, grid: GridConfig, align: bool
) -> torch.Tensor:
    """Ego (x, y) of every crop cell centre.

    Args:
        centers: [K, 2] box centres (ego x, y), metres.
        yaws: [K] box headings, radians.
    Returns:
        [K, S, S, 2] ego (x, y), metres.
    """
    offsets = crop_offsets(size, (grid.xbound[2], grid.ybound[2]), centers.device)  # S x S x 2
    if not align:
        return centers.view(-1, 1, 1, 2) + offsets
    c, s = torch.cos(yaws).view(-1, 1, 1), torch.sin(yaws).view(-1, 1, 1)  # K x 1 x 1
    u, v = offsets[..., 0], offsets[..., 1]  # S x S
    x = c * u - s * v  # K x S x S
    y = s * u + c * v
    return centers.view(-1, 1, 1, 2) + torch.stack([x, y], -1)  # K x S x S x 2


def box_frame(points: torch.Tensor, centers: torch.Tensor, yaws: torch.Tensor) -> torch.Tensor:
    """[K, S, S, 2] ego points -> the same points in each box's frame (forward, left)."""
    d = points - centers.view(-1, 1, 1, 2)  # K x S x S x 2
    c, s = torch.cos(yaws).view(-1, 1, 1), torch.sin(yaws).view(-1, 1, 1)
    return torch.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], -1)


def inside_box(
    points: torch.Tensor,
    centers: torch.Tensor,
    yaws: torch.Tensor,
    lengths: torch.Tensor,
    widths: torch.Tensor,
    margin: float = 0.0,
) -> torch.Tensor:
    """[K, S, S] bool: whether each point lies in its box's footprint grown by ``margin`` metres."""
    local = box_frame(points, centers, yaws)  # K x S x S x 2
    half_l = (lengths / 2 + margin).view(-1, 1, 1)
    half_w = (widths / 2 + margin).view(-1, 1, 1)
    return (local[..., 0].abs() <= half_l) & (local[..., 1].abs() <= half_w)


def sample_map(feature_map: torch.Tensor, points: torch.Tensor, grid: GridConfig) -> torch.Tensor:
    """Bilinear samples of a BEV map at ego points.

    Args:
        feature_map: [C, X, Y] (index i along ego x, j along ego y).
        points: [K, S, S, 2] ego (x, y), metres.
    Returns:
        [K, C, S, S]; zero off the map.
    """
    x_n, y_n, _ = grid.shape
    # grid_sample wants (w, h) = (y, x) in [-1, 1] with align_corners=False: cell edges at +-1.
    gx = 2 * (points[..., 1] - grid.ybound[0]) / (y_n * grid.ybound[2]) - 1  # K x S x S
    gy = 2 * (points[..., 0] - grid.xbound[0]) / (x_n * grid.xbound[2]) - 1
    sample_grid = torch.stack([gx, gy], -1).to(feature_map.dtype)  # K x S x S x 2
    source = feature_map.unsqueeze(0).expand(points.shape[0], -1, -1, -1)  # K x C x X x Y
    return F.grid_sample(
        source, sample_grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )


def crop_boxes(
    feature_map: torch.Tensor,
    boxes: dict[str, torch.Tensor],
    grid: GridConfig,
    size: int,
    align: bool = True,
    zero_outside: bool = True,
) -> torch.Tensor:
    """Cuts every box out of one BEV map.

    Args:
        feature_map: [C, X, Y].
        boxes: ``center`` [K, 2] (ego x, y), ``yaw`` [K], ``length`` [K], ``width`` [K], metres.
        size: S, crop cells per side.
        align: rotate each crop to its box heading.
        zero_outside: zero the crop cells whose centres lie outside the box footprint.
    Returns:
        [K, C, S, S].
    """
    k = boxes["center"].shape[0]
    if k == 0:
        return feature_map.new_zeros((0, feature_map.shape[0], size, size))
    points = crop_points(boxes["center"], boxes["yaw"], size, grid, align)  # K x S x S x 2
    crops = sample_map(feature_map, points, grid)  # K x C x S x S
    if zero_outside:
        keep = inside_box(
            points, boxes["center"], boxes["yaw"], boxes["length"], boxes["width"]
        )  # K x S x S
        crops = crops * keep.unsqueeze(1).to(crops.dtype)
    return crops


def box_ious(
    pred_mask: torch.Tensor,
    boxes: dict[str, torch.Tensor],
    grid: GridConfig,
    margin: float = 1.0,
) -> torch.Tensor:
    """IoU of the predicted vehicle mask with each box footprint, on the grid's cells.

    A cell belongs to a box when its centre lies in the footprint (as the GT mask is drawn).
    The prediction counts only within the footprint grown by ``margin`` metres, so neighbouring
    vehicles do not lower a box's score: IoU = |P & B| / |(P & D) | B| with B the box's cells,
    D the grown footprint's cells and P the predicted mask.

    Args:
        pred_mask: [X, Y] bool or {0, 1}.
    Returns:
        [K] IoU in [0, 1].
    """
    k = boxes["center"].shape[0]
    if k == 0:
        return torch.zeros(0, device=pred_mask.device)
    x_n, y_n, _ = grid.shape
    step = torch.tensor([grid.xbound[2], grid.ybound[2]], device=pred_mask.device)
    lo = torch.tensor([grid.xbound[0], grid.ybound[0]], device=pred_mask.device)
    extent = max(boxes["length"].max().item(), boxes["width"].max().item()) + 2 * margin
    n = int(math.ceil(extent / min(grid.xbound[2], grid.ybound[2]))) + 2  # window cells per side
    first = torch.floor((boxes["center"] - lo) / step).long() - n // 2  # K x 2
    offsets = torch.arange(n, device=pred_mask.device)
    ii = first[:, 0].view(-1, 1, 1) + offsets.view(1, n, 1)  # K x n x 1: cell index along x
    jj = first[:, 1].view(-1, 1, 1) + offsets.view(1, 1, n)  # K x 1 x n: along y
    ii, jj = ii.expand(k, n, n), jj.expand(k, n, n)
    on_map = (ii >= 0) & (ii < x_n) & (jj >= 0) & (jj < y_n)
    pred = pred_mask.bool()[ii.clamp(0, x_n - 1), jj.clamp(0, y_n - 1)] & on_map  # K x n x n
    centres = torch.stack([ii, jj], -1).float() * step + lo + step / 2  # K x n x n x 2
    args = (centres, boxes["center"], boxes["yaw"], boxes["length"], boxes["width"])
    box, near = inside_box(*args), inside_box(*args, margin=margin)
    inter = (pred & box).flatten(1).sum(1).float()
    union = ((pred & near) | box).flatten(1).sum(1).float()
    return inter / union.clamp(min=1)
