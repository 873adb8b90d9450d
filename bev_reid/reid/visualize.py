"""Pictures of a ReID dataset: a few identities, their views side by side.

Drawn by `bev-reid show-dataset`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bev_reid.engine.io import figure_format, save_figure
from bev_reid.reid.dataset import ReIDDataset

UNPAINTED_GREY = 0.35  # occupied cells that no camera coloured


def crops_to_rgb(crops: torch.Tensor, channel_names: list[str]) -> np.ndarray:
    """[K, C, S, S] crops -> [K, S, S, 3] RGB in [0, 1].

    Painted LiDAR (``lidar_mean_red`` / ``green`` / ``blue``), when present, shows as the camera
    colour itself, with occupied cells that no camera painted in grey; else LiDAR channels show
    as (occupancy, height, intensity), stretched to [0, 1] over these crops; camera texture
    (``camera_texture_*``) as its colour averaged over the height levels; camera BEV features as
    their first three principal components, so like features get like colours.
    """
    lidar = [i for i, n in enumerate(channel_names) if n.startswith("lidar_")]
    paint = [f"lidar_mean_{c}" for c in ("red", "green", "blue")]
    x = crops.float()
    if all(name in channel_names for name in paint):
        colour = x[:, [channel_names.index(name) for name in paint]]  # K x 3 x S x S
        occupied = x[:, channel_names.index("lidar_occupancy")] > 0  # K x S x S
        unpainted = (occupied & (colour.sum(1) == 0)).unsqueeze(1)
        colour = torch.where(unpainted, torch.full_like(colour, UNPAINTED_GREY), colour)
        return colour.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    texture = [i for i, n in enumerate(channel_names) if n.startswith("camera_texture_")]
    if texture:  # the mean over the height levels: the vehicle's colour
        rgb = x[:, texture].view(x.shape[0], -1, 3, x.shape[2], x.shape[3]).mean(1)
        return rgb.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    if lidar:
        rgb = x[:, lidar[:3]]  # K x 3 x S x S
    else:
        flat = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # (K S S) x C
        flat = flat - flat.mean(0)
        _, _, v = torch.linalg.svd(flat[:: max(1, flat.shape[0] // 20000)], full_matrices=False)
        rgb = (flat @ v[:3].T).reshape(x.shape[0], x.shape[2], x.shape[3], 3).permute(0, 3, 1, 2)
    lo = rgb.amin(dim=(0, 2, 3), keepdim=True)
    hi = rgb.amax(dim=(0, 2, 3), keepdim=True)
    rgb = (rgb - lo) / (hi - lo).clamp(min=1e-6)
    return rgb.permute(0, 2, 3, 1).numpy()


def draw_dataset(
    path: str | Path,
    out_png: str | Path,
    identities: int = 8,
    views: int = 8,
    split: str = "all",
    seed: int = 0,
) -> Path:
    """Writes a grid: one row per identity (chosen with ``seed`` among those with most views),
    its views in time order; the heading points up in aligned crops. The suffix of ``out_png``
    picks the format (.png, .pdf, .svg or .jpg)."""
    figure_format(out_png)  # a bad name fails before the dataset is read
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = ReIDDataset(path, split)
    by_id: dict[int, list[int]] = {}
    for i, v in enumerate(ds.views):
        by_id.setdefault(v["id"], []).append(i)
    if not by_id:
        raise ValueError(f"dataset {path} has no views in split {split!r}")
    rng = np.random.default_rng(seed)
    ranked = sorted(by_id, key=lambda k: -len(by_id[k]))[: max(identities * 3, identities)]
    chosen = sorted(rng.choice(ranked, size=min(identities, len(ranked)), replace=False).tolist())
    rows = [sorted(by_id[k], key=lambda i: ds.views[i]["timestamp"])[:views] for k in chosen]
    flat = [i for row in rows for i in row]
    rgb = crops_to_rgb(torch.stack([ds[i][0] for i in flat]), ds.channel_names)
    cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(1.6 * cols + 1.5, 1.75 * len(rows)), squeeze=False
    )
    n = 0
    for r, row in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.axis("off")
                continue
            v = ds.views[row[c]]
            # crop rows run backwards -> forwards: flip so the heading points up
            ax.imshow(rgb[n][::-1], interpolation="nearest")
            n += 1
            t0 = ds.views[row[0]]["timestamp"]
            ax.set_title(f"+{(v['timestamp'] - t0) / 1e6:.1f}s {v['condition']}", fontsize=7)
            if c == 0:
                ax.set_ylabel(
                    f"id {v['id']} ({v['split']})\n{v['category'].split('.')[-1]}", fontsize=7
                )
    names = ds.channel_names
    channels = (
        "painted LiDAR (camera colour)"
        if "lidar_mean_red" in names
        else "camera texture (colour, mean over heights)"
        if any(n.startswith("camera_texture_") for n in names)
        else "LiDAR (occupancy, height, intensity)"
        if ds.lidar_channels
        else "camera BEV features (first 3 PCs)"
    )
    fig.suptitle(f"{Path(path).name}: {len(rows)} identities, channels: {channels}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)
