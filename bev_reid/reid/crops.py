"""Cutting vehicles out of a BEV map: heading-aligned crops, box masks and per-box IoU.

A crop is S x S cells around a box centre, of the grid's cell size or of its own. Crop row a
runs along the box heading (forward, row 0 at the back) and column b across it (right to left),
so with ``align`` on, the same vehicle seen from another side or while turning looks alike; with
it off, rows follow ego x and columns ego y. All crops of a keyframe come from one
``grid_sample`` call.

:func:`lidar_box_crops` rasterises LiDAR points straight into the same crop cells, in each box's
own frame, instead of sampling a BEV raster: no resampling blur, any cell size, and heights
measured from the box's bottom.

Shapes: K boxes, C channels, X x Y grid, S crop size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from bev_reid.config import GridConfig
from bev_reid.data.lidar import COLOUR_CHANNELS, cell_mean_colour
from bev_reid.ops import dynamic_voxelize


def cell_side(cell: float, grid: GridConfig) -> float:
    """The side of a crop cell, metres: ``cell``, or for 0 (the grid's cells) the grid's
    shorter cell side."""
    return cell if cell > 0 else min(grid.xbound[2], grid.ybound[2])


def crop_offsets(size: int, cell: tuple[float, float], device=None) -> torch.Tensor:
    """[S, S, 2] (u, v) metres of each crop cell centre from the crop centre: u along rows
    (forward), v along columns (left)."""
    steps = torch.arange(size, dtype=torch.float32, device=device) + 0.5 - size / 2  # S
    u = (steps * cell[0]).view(size, 1).expand(size, size)  # S x S
    v = (steps * cell[1]).view(1, size).expand(size, size)  # S x S
    return torch.stack([u, v], -1)  # S x S x 2


def crop_points(
    centers: torch.Tensor,
    yaws: torch.Tensor,
    size: int,
    grid: GridConfig,
    align: bool,
    cell: float = 0.0,
) -> torch.Tensor:
    """Ego (x, y) of every crop cell centre.

    Args:
        centers: [K, 2] box centres (ego x, y), metres.
        yaws: [K] box headings, radians.
        cell: crop cell side in metres; 0 takes the grid's cells.
    Returns:
        [K, S, S, 2] ego (x, y), metres.
    """
    cells = (cell, cell) if cell > 0 else (grid.xbound[2], grid.ybound[2])
    offsets = crop_offsets(size, cells, centers.device)  # S x S x 2
    if not align:
        return centers.view(-1, 1, 1, 2) + offsets
    c, s = torch.cos(yaws).view(-1, 1, 1), torch.sin(yaws).view(-1, 1, 1)  # K x 1 x 1
    u, v = offsets[..., 0], offsets[..., 1]  # S x S
    x = c * u - s * v  # K x S x S
    y = s * u + c * v
    return centers.view(-1, 1, 1, 2) + torch.stack([x, y], -1)  # K x S x S x 2


def box_frame(points: torch.Tensor, centers: torch.Tensor, yaws: torch.Tensor) -> torch.Tensor:
    """[K, ..., 2] ego (x, y) -> the same points in each box's frame (forward, left)."""
    lead = (-1,) + (1,) * (points.dim() - 2)
    d = points - centers.view(*lead, 2)  # K x ... x 2
    c, s = torch.cos(yaws).view(lead), torch.sin(yaws).view(lead)
    return torch.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], -1)


def inside_box(
    points: torch.Tensor,
    centers: torch.Tensor,
    yaws: torch.Tensor,
    lengths: torch.Tensor,
    widths: torch.Tensor,
    margin: float = 0.0,
    min_half: float = 0.0,
) -> torch.Tensor:
    """[K, S, S] bool: whether each point lies in its box's footprint grown by ``margin`` metres,
    each half side at least ``min_half`` metres."""
    local = box_frame(points, centers, yaws)  # K x S x S x 2
    half_l = (lengths / 2 + margin).clamp(min=min_half).view(-1, 1, 1)
    half_w = (widths / 2 + margin).clamp(min=min_half).view(-1, 1, 1)
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
    cell: float = 0.0,
) -> torch.Tensor:
    """Cuts every box out of one BEV map.

    Args:
        feature_map: [C, X, Y].
        boxes: ``center`` [K, 2] (ego x, y), ``yaw`` [K], ``length`` [K], ``width`` [K], metres.
        size: S, crop cells per side.
        align: rotate each crop to its box heading.
        zero_outside: zero the crop cells whose centres lie outside the box footprint; the
            footprint is at least one crop cell wide and long, so a box narrower than a cell
            (a bicycle) keeps the cells around its centre.
        cell: crop cell side in metres (the map is sampled bilinearly); 0 takes the grid's cells.
    Returns:
        [K, C, S, S].
    """
    k = boxes["center"].shape[0]
    if k == 0:
        return feature_map.new_zeros((0, feature_map.shape[0], size, size))
    points = crop_points(boxes["center"], boxes["yaw"], size, grid, align, cell)  # K x S x S x 2
    crops = sample_map(feature_map, points, grid)  # K x C x S x S
    if zero_outside:
        step = cell_side(cell, grid)
        keep = inside_box(
            points, boxes["center"], boxes["yaw"], boxes["length"], boxes["width"], 0.0, step / 2
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


def lidar_box_channel_names(bands: Sequence[float], colour: bool = False) -> list[str]:
    """Channel names of :func:`lidar_box_crops` for height band edges ``bands`` (metres), and
    with painted colours (``colour``)."""
    edges = [f"{b:g}" for b in bands]
    names = [f"lidar_log_points_below_{edges[0]}m"] if edges else ["lidar_log_points"]
    names += [f"lidar_log_points_{a}-{b}m" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    names += [f"lidar_log_points_above_{edges[-1]}m"] if edges else []
    paint = [f"lidar_{c}" for c in COLOUR_CHANNELS] if colour else []
    return ["lidar_occupancy", "lidar_max_height", "lidar_mean_intensity", *names, *paint]


def lidar_box_crops(
    points: torch.Tensor,
    boxes: dict[str, torch.Tensor],
    size: int,
    cell: float,
    bands: Sequence[float] = (0.5, 1.0, 1.5),
    margin: float = 0.25,
    align: bool = True,
    zero_outside: bool = True,
    colours: torch.Tensor | None = None,
) -> torch.Tensor:
    """LiDAR points rasterised into each box's crop cells, in the box's frame.

    A point counts for a box when it lies within ``margin`` metres of the box's bottom and top
    (always) and of its footprint (with ``zero_outside``; else anywhere in the crop square).
    Cells come from :func:`bev_reid.ops.dynamic_voxelize` on the box-frame coordinates.

    Args:
        points: [P, F >= 4] ego-frame (x, y, z, intensity, ...).
        boxes: ``center`` [K, 2] ego (x, y), ``yaw``, ``length``, ``width``, ``bottom`` (ego z of
            the box's underside) and ``height``, each [K], metres.
        size: S, crop cells per side; cell: their side in metres.
        bands: increasing height edges above the box bottom, metres; B = len(bands) + 1 bands.
        align: crop rows along the box heading (else along ego x).
        colours: [P, 3] painted colours of the points (NaN where unpainted), or None.
    Returns:
        [K, 3 + B (+ 3), S, S] float32 on the points' device, named by
        :func:`lidar_box_channel_names`: occupancy (1 where a point falls), max height above the
        box bottom (>= 0, 0 where empty), mean intensity (0 where empty), log(1 + points) in each
        height band, then with ``colours`` the mean red, green, blue of the painted points.
    """
    if points.dim() != 2 or points.shape[1] < 4:
        raise ValueError(
            f"points must be [P, >=4] (x, y, z, intensity, ...), got {tuple(points.shape)}"
        )
    edges = torch.tensor(list(bands), dtype=torch.float32, device=points.device)
    if edges.numel() and not bool((edges[1:] > edges[:-1]).all()):
        raise ValueError(f"bands must increase, got {list(bands)}")
    if colours is not None and colours.shape != (points.shape[0], 3):
        raise ValueError(
            f"colours must be [P, 3] for {points.shape[0]} points, got {tuple(colours.shape)}"
        )
    boxes = {key: value.to(points.device, torch.float32) for key, value in boxes.items()}
    k, s = boxes["center"].shape[0], size
    nb, nc = len(bands) + 1, 0 if colours is None else 3
    finite = torch.isfinite(points[:, :4]).all(1)  # NaN / inf rows count nowhere
    points = points[finite].float()
    if colours is not None:
        colours = colours.to(points.device)[finite]
    if k == 0 or points.shape[0] == 0:
        return points.new_zeros((k, 3 + nb + nc, s, s))
    xy, z, intensity = points[:, :2], points[:, 2], points[:, 3]
    half = size * cell / 2
    frame_yaw = boxes["yaw"] if align else torch.zeros_like(boxes["yaw"])
    cells = k * s * s  # flat index: box, row, column
    # Candidates first: points are sorted by a coarse 1 m cell (x-major), so the points near a
    # box are one run per cell row; exact tests then run on those box-point pairs only.
    reach = torch.full_like(boxes["length"], half * math.sqrt(2))  # K
    if zero_outside:
        foot = torch.hypot(boxes["length"] / 2 + margin, boxes["width"] / 2 + margin)
        reach = torch.minimum(reach, foot)
    box_i, point_i = _pairs_near(xy, boxes["center"], reach)  # M, M
    rel_z = z[point_i] - boxes["bottom"][box_i]  # M
    centre = boxes["center"][box_i]  # M x 2
    local = box_frame(xy[point_i], centre, frame_yaw[box_i])  # M x 2 (forward, left)
    keep = (rel_z >= -margin) & (rel_z <= boxes["height"][box_i] + margin)
    keep &= (local.abs() < half).all(-1)
    if zero_outside:
        fp = local if align else box_frame(xy[point_i], centre, boxes["yaw"][box_i])
        keep &= fp[:, 0].abs() <= boxes["length"][box_i] / 2 + margin
        keep &= fp[:, 1].abs() <= boxes["width"][box_i] / 2 + margin
    keep = keep.nonzero().squeeze(1)
    box_i, point_i, rel_z, local = box_i[keep], point_i[keep], rel_z[keep], local[keep]
    coords = dynamic_voxelize(
        torch.cat([local, torch.zeros_like(local[:, :1])], 1),
        (cell, cell, 2.0),
        (-half, -half, -1.0, half, half, 1.0),
    )  # M x 3 (z, y, x): x = crop row (along the heading), y = column (to the left)
    on = coords[:, 0] >= 0
    box_i, point_i, coords, height = box_i[on], point_i[on], coords[on], rel_z[on]  # M'
    flat = box_i * (s * s) + coords[:, 2].long() * s + coords[:, 1].long()  # M'
    count = torch.zeros(cells, device=points.device).index_add_(0, flat, torch.ones_like(height))
    top = torch.zeros(cells, device=points.device).scatter_reduce_(
        0, flat, height.clamp(min=0), reduce="amax"
    )  # empty cells stay 0
    shine = torch.zeros(cells, device=points.device).index_add_(0, flat, intensity[point_i])
    band = torch.bucketize(height, edges, right=True)  # M' in [0, B)
    per_band = torch.zeros(nb * cells, device=points.device).index_add_(
        0, band * cells + flat, torch.ones_like(height)
    )  # B K S S, flat
    out = [
        (count > 0).float().view(1, cells),
        top.view(1, cells),
        (shine / count.clamp(min=1)).view(1, cells),
        torch.log1p(per_band).view(nb, cells),
    ]
    if colours is not None:
        out.append(cell_mean_colour(flat, colours[point_i], cells))
    return torch.cat(out).view(3 + nb + nc, k, s, s).transpose(0, 1).contiguous()


def _pairs_near(
    xy: torch.Tensor, centers: torch.Tensor, reach: torch.Tensor, bucket: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(box, point) index pairs with |x - cx| <= reach and |y - cy| <= reach.

    Points are sorted once by a ``bucket``-metre cell, x-major, so the points of one cell row
    across a box's square are one run of the sorted order (found by ``searchsorted``).

    Args:
        xy: [P, 2] points; centers: [K, 2] box centres; reach: [K] half-side of each square.
    Returns:
        box index [M] and point index [M], int64.
    """
    device = xy.device
    cell = torch.floor(xy / bucket).long()  # P x 2
    low = cell.min(0).values  # 2
    cols = int(cell[:, 1].max() - low[1]) + 1
    rows_total = int(cell[:, 0].max() - low[0]) + 1
    key = (cell[:, 0] - low[0]) * cols + (cell[:, 1] - low[1])  # P, x-major
    key, order = torch.sort(key)
    first = torch.floor((centers - reach[:, None]) / bucket).long() - low  # K x 2
    last = torch.floor((centers + reach[:, None]) / bucket).long() - low  # K x 2
    span = int((last[:, 0] - first[:, 0]).max().clamp(min=0)) + 1
    rows = first[:, :1] + torch.arange(span, device=device)  # K x span
    valid = (rows <= last[:, :1]) & (rows >= 0) & (rows < rows_total)
    y0 = first[:, 1:].clamp(0, cols - 1)  # K x 1
    y1 = last[:, 1:].clamp(0, cols - 1)
    valid &= (last[:, 1:] >= 0) & (first[:, 1:] < cols)
    lo = torch.searchsorted(key, rows * cols + y0)  # K x span
    hi = torch.searchsorted(key, rows * cols + y1, right=True)
    runs = torch.where(valid, hi - lo, 0).flatten()  # K span
    lo = lo.flatten()
    box_i = torch.repeat_interleave(torch.arange(rows.numel(), device=device) // span, runs)
    offset = torch.arange(int(runs.sum()), device=device)
    offset -= torch.repeat_interleave(torch.cumsum(runs, 0) - runs, runs)
    point_i = order[torch.repeat_interleave(lo, runs) + offset]  # M
    d = (xy[point_i] - centers[box_i]).abs()  # M x 2
    near = ((d[:, 0] <= reach[box_i]) & (d[:, 1] <= reach[box_i])).nonzero().squeeze(1)
    return box_i[near], point_i[near]
