"""Training and validation of the LSS network (`bev-reid train-lss`, `bev-reid val-lss`).

The dual loss: ``bce_weight`` x BCE-with-logits (``pos_weight``) of the vehicle logits against the
GT BEV mask, plus ``mse_weight`` x MSE between the BEV encoder's feature output and the splatted
camera features. The MSE keeps appearance in the BEV features the ReID crops are cut from. Its
gradient reaches both maps: with the splat detached, nothing bounds the camera features' scale
(the BEV encoder's batch norm hides it from the BCE) and the MSE runs away chasing it.

Exact resume: batches are a function of (seed, epoch, step within the epoch), augmentation of
(seed, epoch, sample index), and the checkpoint holds the optimizer and RNG states, so a resumed
run takes the same next step as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from bev_reid.config import Config, config_from_dict, to_dict
from bev_reid.data.nuscenes import NuScenesKeyframes, collate
from bev_reid.engine.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    restore_training_state,
    save_checkpoint,
)
from bev_reid.engine.distributed import (
    DistInfo,
    all_reduce_mean,
    cleanup_distributed,
    init_distributed,
)
from bev_reid.engine.run import last_checkpoint, open_run, wrap_ddp
from bev_reid.models.lss import LiftSplatShoot, LSSOutput

CAMERA_KEYS = ("imgs", "rots", "trans", "intrins", "post_rots", "post_trans")
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class LossTerms:
    total: torch.Tensor
    bce: torch.Tensor
    mse: torch.Tensor


def dual_loss(out: LSSOutput, mask: torch.Tensor, cfg) -> LossTerms:
    """The dual loss (see the module doc). mask [B, 1, X, Y] in {0, 1}."""
    pos_weight = torch.tensor(cfg.pos_weight, device=mask.device)
    bce = F.binary_cross_entropy_with_logits(out.logits.float(), mask, pos_weight=pos_weight)
    mse = F.mse_loss(out.bev.float(), out.splat.float())
    return LossTerms(cfg.bce_weight * bce + cfg.mse_weight * mse, bce, mse)


def iou_counts(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, 2] (intersection, union) of the predicted (logit > 0) and GT masks, per sample."""
    pred = logits.detach() > 0
    gt = mask > 0.5
    inter = (pred & gt).flatten(1).sum(1)
    union = (pred | gt).flatten(1).sum(1)
    return torch.stack([inter, union], 1).float()


class EpochBatches(Sampler[list[int]]):
    """Batches of one epoch: a permutation seeded by (seed, epoch), this rank's share of it,
    cut into full batches, starting at batch ``start``."""

    def __init__(
        self, size: int, batch_size: int, seed: int, epoch: int, dist: DistInfo, start: int = 0
    ):
        self.size, self.batch_size, self.seed, self.epoch, self.dist, self.start = (
            size,
            batch_size,
            seed,
            epoch,
            dist,
            start,
        )

    @staticmethod
    def per_epoch(size: int, batch_size: int, world_size: int) -> int:
        return (size // world_size) // batch_size

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.size, generator=g)[
            self.dist.rank :: self.dist.world_size
        ].tolist()
        n = self.per_epoch(self.size, self.batch_size, self.dist.world_size)
        for b in range(self.start, n):
            yield order[b * self.batch_size : (b + 1) * self.batch_size]

    def __len__(self) -> int:
        return self.per_epoch(self.size, self.batch_size, self.dist.world_size) - self.start


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def forward(
    model: torch.nn.Module, batch: dict[str, Any], amp: str, device: torch.device
) -> LSSOutput:
    dtype = AMP_DTYPES[amp]
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        return model(*(batch[k] for k in CAMERA_KEYS))


def bev_image(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[3, X, 2Y + 2] picture: predicted probability (left) and GT mask (right), x up."""
    pred = torch.sigmoid(logits[0, 0].float()).flip(0)  # X x Y, ego forward at the top
    gt = mask[0, 0].float().flip(0)
    sep = torch.ones(pred.shape[0], 2)
    img = torch.cat([pred.cpu(), sep, gt.cpu()], 1)
    return img.unsqueeze(0).expand(3, -1, -1)


def build_model(cfg: Config) -> LiftSplatShoot:
    return LiftSplatShoot(cfg.lss, cfg.grid, cfg.data)


def train_lss(cfg: Config) -> Path:
    """Trains until ``train_lss.max_steps``; returns the last checkpoint's path."""
    tc = cfg.train_lss
    if tc.amp not in AMP_DTYPES:
        raise ValueError(f"train_lss.amp must be one of {sorted(AMP_DTYPES)}, got {tc.amp!r}")
    dist = init_distributed(tc.device)
    try:
        return _train(cfg, dist)
    finally:
        cleanup_distributed()


def _train(cfg: Config, dist: DistInfo) -> Path:
    tc = cfg.train_lss
    logdir = Path(tc.logdir)
    ckpt_dir = logdir / "checkpoints"
    torch.manual_seed(tc.seed + dist.rank)
    dataset = NuScenesKeyframes(cfg.data, cfg.grid, is_train=True, split=tc.split, seed=tc.seed)
    per_epoch = EpochBatches.per_epoch(len(dataset), tc.batch_size, dist.world_size)
    if per_epoch == 0:
        raise ValueError(
            f"{len(dataset)} training keyframes are fewer than "
            f"batch_size {tc.batch_size} x {dist.world_size} process(es)"
        )
    model = build_model(cfg).to(dist.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scaler = torch.amp.GradScaler(dist.device.type, enabled=tc.amp == "fp16")
    step = 0
    latest = latest_checkpoint(ckpt_dir) if tc.resume else None
    if latest is not None:
        ckpt = load_checkpoint(latest)
        model.load_state_dict(ckpt.model_state())
        # Rank 0's RNG state is the one saved; the other ranks reseed from the step.
        restore_training_state(ckpt, optimizer, restore_rng=dist.is_main)
        step = ckpt.step
        if not dist.is_main:
            torch.manual_seed(tc.seed + dist.rank + 7919 * step)
    elif tc.resume and dist.is_main:
        print(f"train-lss: no checkpoint in {ckpt_dir} to resume from; starting at step 0")
    net = wrap_ddp(model, dist)
    writer = open_run(logdir, cfg, dist)
    bar = tqdm(
        total=tc.max_steps, initial=step, desc="train-lss", unit="step", disable=not dist.is_main
    )
    net.train()
    tick, seen = time.perf_counter(), 0
    while step < tc.max_steps:
        epoch, start = divmod(step, per_epoch)
        dataset.set_epoch(epoch)
        loader = DataLoader(
            dataset,
            batch_sampler=EpochBatches(len(dataset), tc.batch_size, tc.seed, epoch, dist, start),
            num_workers=cfg.data.num_workers,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(tc.seed),  # leaves the global RNG alone
        )
        for batch in loader:
            batch = to_device(batch, dist.device)
            out = forward(net, batch, tc.amp, dist.device)
            terms = dual_loss(out, batch["bev_mask"], tc)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms.total).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            seen += batch["imgs"].shape[0] * dist.world_size
            counts = all_reduce_mean(iou_counts(out.logits, batch["bev_mask"]).sum(0))
            iou = float(counts[0] / counts[1].clamp(min=1))
            bar.update(1)
            bar.set_postfix(loss=f"{terms.total.item():.4f}", iou=f"{iou:.3f}")
            if writer is not None and (step % tc.log_every == 0 or step == tc.max_steps):
                now = time.perf_counter()
                writer.add_scalar("loss/total", terms.total.item(), step)
                writer.add_scalar("loss/bce", terms.bce.item(), step)
                writer.add_scalar("loss/mse", terms.mse.item(), step)
                writer.add_scalar("iou/train", iou, step)
                writer.add_scalar("lr", optimizer.param_groups[0]["lr"], step)
                writer.add_scalar("throughput/samples_per_s", seen / max(now - tick, 1e-9), step)
                tick, seen = now, 0
            if writer is not None and (step % tc.image_every == 0 or step == 1):
                writer.add_image("bev/pred_vs_gt", bev_image(out.logits, batch["bev_mask"]), step)
            if step % tc.checkpoint_every == 0 or step == tc.max_steps:
                if dist.is_main:
                    meta = {
                        "kind": "lss",
                        "config": to_dict(cfg),
                        "metrics": {"loss": terms.total.item(), "iou": iou},
                    }
                    save_checkpoint(ckpt_dir, step, model, optimizer, meta=meta)
                    prune_checkpoints(ckpt_dir, tc.keep_checkpoints)
            if step >= tc.max_steps:
                break
    bar.close()
    if writer is not None:
        writer.close()
    return last_checkpoint(ckpt_dir, "train-lss")


def load_lss(path: str | Path, device: str | torch.device = "cpu") -> tuple[LiftSplatShoot, Config]:
    """The model of an LSS checkpoint, with the config it was trained with, in eval mode."""
    ckpt = load_checkpoint(path)
    if ckpt.meta.get("kind") != "lss":
        raise CheckpointError(
            f"checkpoint {str(ckpt.path)!r} is not an LSS checkpoint "
            f"(kind {ckpt.meta.get('kind')!r})"
        )
    cfg = config_from_dict(ckpt.meta["config"])
    model = build_model(cfg)
    model.load_state_dict(ckpt.model_state())
    return model.to(device).eval(), cfg


@torch.no_grad()
def validate_lss(
    checkpoint: str | Path, cfg: Config, nvals: int | None = None, device: str = "auto"
) -> dict[str, float]:
    """IoU of the vehicle mask on up to ``nvals`` validation keyframes.

    Data comes from ``cfg.data`` (its dataroot, version, scenes) with the model's own grid and
    image size. Returns min / max / mean of the per-keyframe IoU and the IoU of all keyframes
    pooled (intersections over unions summed).
    """
    from bev_reid.engine.distributed import pick_device

    dev = pick_device(device)
    model, trained = load_lss(checkpoint, dev)
    data = dataclasses.replace(
        trained.data, dataroot=cfg.data.dataroot, version=cfg.data.version, scenes=cfg.data.scenes
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
        out = model(*(batch[k] for k in CAMERA_KEYS))
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
