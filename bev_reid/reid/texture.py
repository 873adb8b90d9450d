"""Camera texture crops: the camera colour of a vehicle laid out on its BEV crop cells.

The LSS features of a 64 x 176 image and a 0.5 m grid hold a vehicle's mean colour at best;
the stripes, two-tone roofs and bands that tell one car from the next are finer than a camera
feature cell. Texture crops read the colour from the images themselves, at 1 / PAINT_SCALE of
their full size, with the box as the only geometry:

- every crop cell inside the box footprint holds ``levels`` virtual points, one per height
  level, at ``(l + 0.5) / levels`` of the box height above its bottom;
- each point takes the colour of the pixel it projects to in the first camera that sees it
  (:func:`bev_reid.data.lidar.paint_points`, as painted LiDAR).

A ray towards a point inside a box enters it through the face turned to the camera, so each
point shows the colour of that face at about its own height and position along the box: the
channels of level l are the vehicle's visible surface at that height, spread across the
footprint. Vertical patterns (a band, a two-tone cab) become differences between levels,
patterns along the body (stripes, checks) differences between crop rows.

Occlusion: with ``occluders`` (every box of the keyframe: annotations when building, detections
when tracking), a point is hidden from a camera when the segment from the lens to it crosses a
box that does not hold the point; the next camera may still see it. Hidden points stay 0, so a
vehicle behind a parked row gets an empty crop (the builder drops it; the tracker gives it no
appearance) instead of the colours of the cars in front. Walls and trees are not boxes and are
not tested.

This needs no LSS model and no LiDAR: camera images, calibrations and the boxes.

Shapes: K boxes, L levels, S crop size, P points.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from bev_reid.data.lidar import paint_points
from bev_reid.reid.crops import crop_points, inside_box

if TYPE_CHECKING:
    from bev_reid.data.records import CameraFrame

TEXTURE_COLOURS = ("red", "green", "blue")


def texture_channel_names(levels: int) -> list[str]:
    """``camera_texture_<level>_<colour>``, level 0 at the bottom, three colours a level."""
    return [f"camera_texture_{lv}_{c}" for lv in range(levels) for c in TEXTURE_COLOURS]


def texture_points(
    boxes: dict[str, torch.Tensor],
    size: int,
    cell: float,
    levels: int,
    align: bool = True,
    zero_outside: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The virtual points of every crop cell and level.

    Args:
        boxes: ``center`` [K, 2] ego (x, y), ``yaw``, ``length``, ``width``, ``bottom`` (ego z of
            the underside), ``height``, each [K], metres.
        size: S; cell: crop cell side, metres; levels: L height levels.
        align: crop rows along the box heading (else along ego x).
        zero_outside: only cells whose centres lie in the footprint (at least one cell wide and
            long, as :func:`bev_reid.reid.crops.crop_boxes` keeps them); else every cell.
    Returns:
        points [P, 3] ego (x, y, z) and their flat index [P] into a [K, L, S, S] crop.
    """
    k, s = boxes["center"].shape[0], size
    xy = crop_points(boxes["center"], boxes["yaw"], s, None, align, cell)  # K x S x S x 2
    if zero_outside:
        args = (boxes["center"], boxes["yaw"], boxes["length"], boxes["width"])
        keep = inside_box(xy, *args, 0.0, cell / 2)  # K x S x S
    else:
        keep = torch.ones(k, s, s, dtype=torch.bool, device=xy.device)
    box_i, row, col = keep.nonzero(as_tuple=True)  # Q each
    fraction = (torch.arange(levels, dtype=torch.float32, device=xy.device) + 0.5) / levels  # L
    z = boxes["bottom"][box_i, None] + fraction * boxes["height"][box_i, None]  # Q x L
    q = box_i.numel()
    points = torch.cat(
        [xy[box_i, row, col].unsqueeze(1).expand(q, levels, 2), z.unsqueeze(-1)], -1
    )  # Q x L x 3
    level = torch.arange(levels, device=xy.device).expand(q, levels)  # Q x L
    flat = ((box_i[:, None] * levels + level) * s + row[:, None]) * s + col[:, None]  # Q x L
    return points.reshape(-1, 3), flat.reshape(-1)


def segments_blocked(
    origin: np.ndarray, points: np.ndarray, occluders: dict[str, np.ndarray]
) -> np.ndarray:
    """Whether the segment from ``origin`` to each point crosses a box that does not hold it.

    Args:
        origin: [3] ego (x, y, z); points: [P, 3] ego.
        occluders: ``center`` [B, 3], ``half`` [B, 3] (half length, width, height) and ``yaw``
            [B], ego frame, metres and radians.
    Returns:
        [P] bool.
    """
    blocked = np.zeros(len(points), dtype=bool)
    if not len(points) or not len(occluders["yaw"]):
        return blocked
    # Candidates: the box's circle on the ground comes within reach of the segment (P x B).
    ray = points[:, :2] - origin[:2]  # P x 2
    to_centre = occluders["center"][:, :2] - origin[:2]  # B x 2
    along = np.clip((ray @ to_centre.T) / np.maximum((ray**2).sum(1), 1e-12)[:, None], 0, 1)
    gap_x = to_centre[None, :, 0] - along * ray[:, None, 0]  # P x B
    gap_y = to_centre[None, :, 1] - along * ray[:, None, 1]
    reach = (occluders["half"][:, :2] ** 2).sum(1)  # B: squared radius of the footprint
    p_i, b_i = np.nonzero(gap_x**2 + gap_y**2 <= reach[None, :])  # M pairs
    # Exact test on the pairs: the segment against the box's slabs, in the box frame.
    c, s = np.cos(occluders["yaw"][b_i]), np.sin(occluders["yaw"][b_i])  # M

    def box_frame(v: np.ndarray) -> np.ndarray:  # M x 3 ego offsets -> box frame
        return np.stack([c * v[:, 0] + s * v[:, 1], -s * v[:, 0] + c * v[:, 1], v[:, 2]], 1)

    centre, half = occluders["center"][b_i], occluders["half"][b_i]  # M x 3
    start = box_frame(origin[None, :] - centre)
    end = box_frame(points[p_i] - centre)
    step = end - start
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-half - start) / step, (half - start) / step  # slab crossings, M x 3
    t_in = np.nan_to_num(np.minimum(t1, t2), nan=np.inf, posinf=np.inf, neginf=-np.inf).max(1)
    t_out = np.nan_to_num(np.maximum(t1, t2), nan=-np.inf, posinf=np.inf, neginf=-np.inf).min(1)
    crosses = (t_out >= np.maximum(t_in, 0.0)) & (t_in <= 1.0)
    holds = (np.abs(end) <= half).all(1)
    blocked[p_i[crosses & ~holds]] = True
    return blocked


def occluder_boxes(boxes: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Box tensors (as :func:`texture_points` takes) -> the arrays :func:`segments_blocked`
    takes."""
    b = {k: v.detach().cpu().double().numpy() for k, v in boxes.items()}
    return {
        "center": np.stack(
            [b["center"][:, 0], b["center"][:, 1], b["bottom"] + b["height"] / 2], 1
        ),
        "half": np.stack([b["length"], b["width"], b["height"]], 1) / 2,
        "yaw": b["yaw"],
    }


def texture_crops(
    boxes: dict[str, torch.Tensor],
    cameras: Sequence[CameraFrame],
    images: Sequence[np.ndarray],
    size: int,
    cell: float,
    levels: int,
    align: bool = True,
    zero_outside: bool = True,
    occluders: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Camera texture crops of the boxes of one keyframe.

    Args:
        boxes, size, cell, levels, align, zero_outside: as :func:`texture_points`.
        cameras: the keyframe's calibrations; images: per camera an [H, W, 3] uint8 RGB image at
            any scale of the full-size one (as :func:`bev_reid.data.lidar.paint_points` takes).
        occluders: boxes (same keys as ``boxes``) that hide what lies behind them; None tests
            no occlusion.
    Returns:
        [K, 3 L, S, S] float32 RGB in [0, 1] on the boxes' device, channels named by
        :func:`texture_channel_names`; 0 where no camera sees the point (and off the footprint).
    """
    device = boxes["center"].device
    k = boxes["center"].shape[0]
    points, flat = texture_points(boxes, size, cell, levels, align, zero_outside)
    out = torch.zeros(k * levels * size * size, 3, dtype=torch.float32)
    if points.shape[0]:
        ego = points.cpu().double().numpy()
        hidden = None
        if occluders is not None and occluders["center"].shape[0]:
            walls = occluder_boxes(occluders)

            def hidden(origin: np.ndarray, rows: np.ndarray) -> np.ndarray:
                return segments_blocked(origin, ego[rows], walls)

        rgb = torch.from_numpy(paint_points(ego, cameras, images, hidden))
        seen = torch.isfinite(rgb).all(1)
        out[flat.cpu()[seen]] = rgb[seen]
    # K L S S 3 -> K L 3 S S -> K 3L S S
    out = out.view(k, levels, size, size, 3).permute(0, 1, 4, 2, 3)
    return out.reshape(k, 3 * levels, size, size).contiguous().to(device)
