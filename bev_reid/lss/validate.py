"""`bev-reid val-lss`: IoU of a trained LSS checkpoint's vehicle mask on validation keyframes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from bev_reid.config import Config
from bev_reid.data.keyframes import NuScenesKeyframes, collate
from bev_reid.engine.distributed import pick_device
from bev_reid.lss.losses import iou_counts
from bev_reid.lss.model import forward, load_lss, to_device


@torch.no_grad()
def validate_lss(
    checkpoint: str | Path, cfg: Config, nvals: int | None = None, device: str = "auto"
) -> dict[str, float]:
    """IoU of the vehicle mask on up to ``nvals`` validation keyframes.

    Data comes from ``cfg.data`` (its dataroot, version, scenes, and ``min_visibility``: which
    vehicles the mask holds is the evaluation's protocol, not the model's) with the model's own
    grid and image size. Returns min / max / mean of the per-keyframe IoU and the IoU of all
    keyframes pooled (intersections over unions summed).
    """
    dev = pick_device(device)
    model, trained = load_lss(checkpoint, dev)
    data = dataclasses.replace(
        trained.data,
        dataroot=cfg.data.dataroot,
        version=cfg.data.version,
        scenes=cfg.data.scenes,
        min_visibility=cfg.data.min_visibility,
    )
    dataset = NuScenesKeyframes(data, trained.grid, is_train=False, split="val")
    n = len(dataset) if nvals is None else min(nvals, len(dataset))
    loader = DataLoader(
        torch.utils.data.Subset(dataset, range(n)),
        batch_size=1,
        collate_fn=collate,
        num_workers=data.num_workers,
    )
    per_sample = []
    for batch in tqdm(loader, desc="val-lss", unit="keyframe"):
        batch = to_device(batch, dev)
        out = forward(model, batch)
        per_sample.append(iou_counts(out.logits, batch["bev_mask"])[0].cpu())
    counts = torch.stack(per_sample)  # n x 2
    ious = counts[:, 0] / counts[:, 1].clamp(min=1)
    return {
        "keyframes": float(n),
        "iou_min": float(ious.min()),
        "iou_max": float(ious.max()),
        "iou_mean": float(ious.mean()),
        "iou_pooled": float(counts[:, 0].sum() / counts[:, 1].sum().clamp(min=1)),
    }
