"""What every training job does around its loop: wrap the model for DDP, open the run folder
(resolved config and tensorboard writer, rank 0 only), and hand back the last checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from bev_reid.engine.checkpoint import CheckpointError, latest_checkpoint
from bev_reid.engine.distributed import DistInfo, barrier
from bev_reid.engine.io import atomic_write_text, sweep_stale_tmp


def wrap_ddp(model: torch.nn.Module, dist: DistInfo) -> torch.nn.Module:
    """The model under DistributedDataParallel when several processes train (DDP broadcasts
    rank 0's initial weights), else the model itself."""
    if not dist.distributed:
        return model
    device_ids = [dist.device.index] if dist.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def open_run(folder: Path, config: dict[str, Any], dist: DistInfo):
    """On rank 0: creates ``folder``, saves the resolved config (plain data, e.g.
    :func:`bev_reid.config.to_dict`) there as ``config.yaml`` and returns a tensorboard writer
    on it; on other ranks returns None."""
    if not dist.is_main:
        return None
    from torch.utils.tensorboard import SummaryWriter

    folder.mkdir(parents=True, exist_ok=True)
    sweep_stale_tmp(folder)
    atomic_write_text(folder / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    return SummaryWriter(str(folder))


def last_checkpoint(ckpt_dir: Path, job: str) -> Path:
    """After the loop, on every rank: the checkpoint rank 0 wrote last."""
    barrier()
    path = latest_checkpoint(ckpt_dir)
    if path is None:
        raise CheckpointError(f"{job} wrote no checkpoint in {ckpt_dir}")
    return path
