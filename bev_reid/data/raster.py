"""Boxes on the BEV grid: which boxes a grid holds, and the vehicle mask LSS learns."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bev_reid.config import GridConfig
from bev_reid.data.records import AnnotatedBox


def box_in_grid(box: AnnotatedBox, grid: GridConfig) -> bool:
    """Whether the box centre lies on the BEV grid (x, y; z is not checked)."""
    (x0, x1, _), (y0, y1, _) = grid.xbound, grid.ybound
    return x0 <= box.center[0] < x1 and y0 <= box.center[1] < y1


def rasterize_boxes(boxes: Sequence[AnnotatedBox], grid: GridConfig) -> np.ndarray:
    """[X, Y] float32: 1 where the cell centre lies inside (or on) a box footprint.

    Index x runs along ego x, y along ego y; cell (i, j) has its centre at
    (xmin + (i + 0.5) dx, ymin + (j + 0.5) dy). Exact per cell, unlike rounding the corners
    and filling the polygon.
    """
    nx, ny, _ = grid.shape
    (x0, _, dx), (y0, _, dy) = grid.xbound, grid.ybound
    mask = np.zeros((nx, ny), dtype=np.float32)
    for box in boxes:
        corners = box.footprint()  # 4 x 2
        i0, j0 = np.floor((corners.min(0) - (x0, y0)) / (dx, dy) - 0.5).astype(int)
        i1, j1 = np.ceil((corners.max(0) - (x0, y0)) / (dx, dy) - 0.5).astype(int)
        i0, j0, i1, j1 = max(i0, 0), max(j0, 0), min(i1, nx - 1), min(j1, ny - 1)
        if i0 > i1 or j0 > j1:
            continue
        cx = x0 + (np.arange(i0, i1 + 1) + 0.5) * dx - box.center[0]  # ni
        cy = y0 + (np.arange(j0, j1 + 1) + 0.5) * dy - box.center[1]  # nj
        c, s = math.cos(box.yaw), math.sin(box.yaw)
        along = cx[:, None] * c + cy[None, :] * s  # ni x nj, in the box frame
        across = -cx[:, None] * s + cy[None, :] * c  # ni x nj
        inside = (np.abs(along) <= box.wlh[1] / 2) & (np.abs(across) <= box.wlh[0] / 2)
        mask[i0 : i1 + 1, j0 : j1 + 1][inside] = 1.0
    return mask


def category_boxes(boxes: Sequence[AnnotatedBox], categories: Sequence[str]) -> list[AnnotatedBox]:
    """The boxes whose category name starts with one of ``categories``."""
    return [b for b in boxes if b.category.startswith(tuple(categories))]
