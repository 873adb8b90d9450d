"""One picture of a keyframe: the six cameras with the boxes projected, and the BEV ground truth.

Cameras in nuScenes' layout (front row FRONT_LEFT, FRONT, FRONT_RIGHT; back row BACK_LEFT, BACK,
BACK_RIGHT) with every annotated box drawn as a 3D wireframe, coloured by category; on the right
the BEV panel: GT vehicle mask, LiDAR points (ego frame) and box footprints, ego x up, ego y left.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Polygon  # noqa: E402

from bev_reid.config import Config, DataConfig, GridConfig  # noqa: E402
from bev_reid.data.files import read_image
from bev_reid.data.keyframes import NuScenesKeyframes
from bev_reid.data.nuscenes import NuScenesDB
from bev_reid.data.raster import category_boxes, rasterize_boxes
from bev_reid.data.records import AnnotatedBox, CameraFrame
from bev_reid.engine.io import figure_format, save_figure  # noqa: E402

CAMERA_LAYOUT = (
    ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"),
    ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"),
)
# First matching prefix wins.
CATEGORY_COLOURS = (
    ("vehicle.car", "#ff7f0e"),
    ("vehicle.bus", "#d62728"),
    ("vehicle.truck", "#8c564b"),
    ("vehicle.trailer", "#8c564b"),
    ("vehicle.construction", "#bcbd22"),
    ("vehicle.emergency", "#e377c2"),
    ("vehicle.bicycle", "#9467bd"),
    ("vehicle.motorcycle", "#9467bd"),
    ("human", "#1f77b4"),
    ("movable_object", "#7f7f7f"),
    ("static_object", "#17becf"),
    ("animal", "#2ca02c"),
)
_EDGES = (
    (0, 1),
    (1, 2),
    (2, 3),
    (3, 0),
    (4, 5),
    (5, 6),
    (6, 7),
    (7, 4),
    (0, 4),
    (1, 5),
    (2, 6),
    (3, 7),
)
_NEAR = 0.1  # metres: edges are clipped to this depth in front of the camera


def category_colour(category: str) -> str:
    for prefix, colour in CATEGORY_COLOURS:
        if category.startswith(prefix):
            return colour
    return "#000000"


def _box_edges_in_image(box: AnnotatedBox, cam: CameraFrame) -> list[np.ndarray]:
    """The 12 box edges as [2, 2] pixel segments, clipped to the near plane; [] when behind."""
    corners = cam.rot.T @ (box.devkit_box().corners() - cam.trans[:, None])  # 3 x 8, camera frame
    segments = []
    for a, b in _EDGES:
        p, q = corners[:, a], corners[:, b]
        if p[2] < _NEAR and q[2] < _NEAR:
            continue
        if p[2] < _NEAR or q[2] < _NEAR:  # cut the edge where it crosses the near plane
            t = (_NEAR - p[2]) / (q[2] - p[2])
            cut = p + t * (q - p)
            p, q = (cut, q) if p[2] < _NEAR else (p, cut)
        pix = cam.intrinsics @ np.stack([p, q], 1)  # 3 x 2
        segments.append(pix[:2] / pix[2:3])
    return segments


def _draw_camera(ax: plt.Axes, cam: CameraFrame, boxes: list[AnnotatedBox]) -> None:
    # half resolution is all a panel of the figure shows; the extent keeps full-size pixels
    ax.imshow(np.asarray(read_image(cam.path).reduce(2)), extent=(0, cam.width, cam.height, 0))
    segments, colours = [], []
    for box in boxes:
        edges = _box_edges_in_image(box, cam)
        segments += [seg.T for seg in edges]  # each [2 points, (u, v)]
        colours += [category_colour(box.category)] * len(edges)
    ax.add_collection(LineCollection(segments, colors=colours, linewidths=1.0))
    ax.set_xlim(0, cam.width)
    ax.set_ylim(cam.height, 0)
    ax.set_title(cam.channel, fontsize=9)
    ax.axis("off")


def _draw_bev(
    ax: plt.Axes, mask: np.ndarray, points: np.ndarray, boxes: list[AnnotatedBox], grid: GridConfig
) -> None:
    # plot axes: horizontal = -ego y (left of the car on the left), vertical = ego x (forward up)
    (x0, x1, _), (y0, y1, _) = grid.xbound, grid.ybound
    ax.imshow(
        mask[::-1, ::-1],
        extent=(-y1, -y0, x0, x1),
        cmap="Greens",
        vmin=0,
        vmax=2.5,
        interpolation="nearest",
    )
    keep = (points[:, 0] >= x0) & (points[:, 0] < x1) & (points[:, 1] >= y0) & (points[:, 1] < y1)
    pts = points[keep]
    ax.scatter(
        -pts[:, 1], pts[:, 0], s=0.8, c=np.clip(pts[:, 2], -1.0, 3.0), cmap="plasma", linewidths=0
    )
    for box in boxes:
        xy = box.footprint()  # 4 x 2
        colour = category_colour(box.category)
        ax.add_patch(
            Polygon(
                np.stack([-xy[:, 1], xy[:, 0]], 1),
                closed=True,
                fill=False,
                edgecolor=colour,
                linewidth=0.8,
            )
        )
        front = (xy[0] + xy[1]) / 2  # heading marker: centre -> front edge
        ax.plot([-box.center[1], -front[1]], [box.center[0], front[0]], color=colour, linewidth=0.8)
    # the ego car: the ego frame's origin is the rear axle's centre
    ax.add_patch(
        Polygon([[-0.9, 3.1], [0.9, 3.1], [0.9, -1.0], [-0.9, -1.0]], closed=True, color="red")
    )
    ax.set_xlim(-y1, -y0)
    ax.set_ylim(x0, x1)
    ax.set_aspect("equal")
    ax.set_xlabel("-y (m, left of ego is left)")
    ax.set_ylabel("x (m, forward)")
    ax.set_title("BEV: GT mask (green), LiDAR (by height), boxes", fontsize=9)


def draw_sample(
    source: NuScenesKeyframes | NuScenesDB,
    sample_token: str,
    out_png: str | Path,
    grid: GridConfig | None = None,
    data: DataConfig | None = None,
) -> Path:
    """Writes the picture of one keyframe to ``out_png`` (atomically) and returns its path.

    Args:
        source: a dataset (its grid and categories are used), or an open NuScenesDB.
        sample_token: the keyframe.
        out_png: file to write.
        grid, data: override the dataset's (or the defaults') grid and categories.
    """
    if isinstance(source, NuScenesKeyframes):
        db, grid, data = source.db, grid or source.grid, data or source.cfg
    else:
        db, grid, data = source, grid or GridConfig(), data or DataConfig()
    boxes = db.boxes(sample_token)
    mask = rasterize_boxes(category_boxes(boxes, data.categories), grid)
    points = db.lidar_points(sample_token)

    fig = plt.figure(figsize=(26, 9))
    spec = fig.add_gridspec(2, 5, width_ratios=(1, 1, 1, 0.12, 1.25), wspace=0.03, hspace=0.08)
    for row, channels in enumerate(CAMERA_LAYOUT):
        for col, channel in enumerate(channels):
            _draw_camera(fig.add_subplot(spec[row, col]), db.camera(sample_token, channel), boxes)
    _draw_bev(fig.add_subplot(spec[:, 4]), mask, points, boxes, grid)
    seen = dict.fromkeys(category_colour(b.category) for b in boxes)
    labels = {c: p for p, c in reversed(CATEGORY_COLOURS)}
    fig.legend(
        handles=[Line2D([], [], color=c, label=labels.get(c, "other")) for c in seen],
        loc="lower center", ncol=max(len(seen), 1), fontsize=8, frameon=False,
    )  # fmt: skip
    scene = db.scene_of(sample_token)
    fig.suptitle(
        f"{scene}  sample {sample_token}  ({', '.join(db.conditions(scene))})", fontsize=10
    )
    out = save_figure(fig, out_png, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return out


def show_sample(
    dataroot: str | Path,
    version: str,
    sample_token: str,
    out: str | Path,
    cfg: Config | None = None,
) -> Path:
    """``bev-reid show-sample``: the picture of one keyframe of ``dataroot``/``version``."""
    figure_format(out)  # a bad name fails before the database is read
    cfg = cfg or Config()
    data = dataclasses.replace(cfg.data, dataroot=str(dataroot), version=version)
    return draw_sample(
        NuScenesDB(data.dataroot, data.version), sample_token, out, grid=cfg.grid, data=data
    )
