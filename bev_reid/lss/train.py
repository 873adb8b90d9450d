"""Training of the LSS network (`bev-reid train-lss`) with the loss of :mod:`.losses`.

Exact resume: batches are a function of (seed, epoch, step within the epoch), augmentation of
(seed, epoch, sample index), and the checkpoint holds the optimizer and RNG states, so a resumed
run takes the same next step as an uninterrupted one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from bev_reid.config import Config, to_dict
from bev_reid.data.keyframes import NuScenesKeyframes, collate
from bev_reid.engine.checkpoint import restore_training_state
from bev_reid.engine.distributed import (
    DistInfo,
    all_reduce_mean,
    cleanup_distributed,
    init_distributed,
)
from bev_reid.engine.loop import Every, lr_factor, resume_or_start, save_and_prune
from bev_reid.engine.run import last_checkpoint, open_run, wrap_ddp
from bev_reid.lss.losses import dual_loss, iou_counts
from bev_reid.lss.model import build_model, forward, resolve_amp, to_device


class RunBatches(Sampler[list[tuple[int, int]]]):
    """The batches of a run from step ``start`` to ``max_steps``, as lists of (epoch, keyframe
    index) pairs: each epoch a permutation seeded by (seed, epoch), this rank's share of it, cut
    into full batches. One DataLoader serves the whole run, so its workers (and the keyframes
    they keep read, ``data.cache_keyframes``) live through every epoch; the epoch in each pair
    draws that epoch's augmentation."""

    def __init__(
        self, size: int, batch_size: int, seed: int, dist: DistInfo, start: int, max_steps: int
    ):
        self.size, self.batch_size, self.seed, self.dist = size, batch_size, seed, dist
        self.start, self.max_steps = start, max_steps

    @staticmethod
    def per_epoch(size: int, batch_size: int, world_size: int) -> int:
        return (size // world_size) // batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        n = self.per_epoch(self.size, self.batch_size, self.dist.world_size)
        step = self.start
        while step < self.max_steps:
            epoch, first = divmod(step, n)
            g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            order = torch.randperm(self.size, generator=g)[
                self.dist.rank :: self.dist.world_size
            ].tolist()
            for b in range(first, n):
                if step >= self.max_steps:
                    return
                yield [(epoch, i) for i in order[b * self.batch_size : (b + 1) * self.batch_size]]
                step += 1

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start)


def bev_image(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[3, X, 2Y + 2] picture: predicted probability (left) and GT mask (right), x up."""
    pred = torch.sigmoid(logits[0, 0].float()).flip(0)  # X x Y, ego forward at the top
    gt = mask[0, 0].float().flip(0)
    sep = torch.ones(pred.shape[0], 2)
    img = torch.cat([pred.cpu(), sep, gt.cpu()], 1)
    return img.unsqueeze(0).expand(3, -1, -1)


def depth_image(depth_logits: torch.Tensor, target: torch.Tensor, dbound) -> torch.Tensor:
    """[3, 2 fH + 1, fW] picture of the first camera of the first keyframe: the predicted
    expected depth (top) over the LiDAR depth (bottom, black where no point), near = bright."""
    lo, hi, step = dbound
    probs = depth_logits[0, 0].float().softmax(0)  # D x fH x fW
    centres = lo + step * torch.arange(probs.shape[0], device=probs.device, dtype=probs.dtype)
    pred = (probs * centres.view(-1, 1, 1)).sum(0)  # fH x fW, metres
    lidar = lo + step * target[0, 0].float()  # fH x fW

    def shade(d: torch.Tensor) -> torch.Tensor:
        return (1 - (d - lo) / (hi - lo)).clamp(0, 1)

    bottom = torch.where(target[0, 0] >= 0, shade(lidar), torch.zeros_like(lidar))
    img = torch.cat([shade(pred), torch.ones_like(pred[:1]), bottom], 0).cpu()
    return img.unsqueeze(0).expand(3, -1, -1)


def train_lss(cfg: Config) -> Path:
    """Trains until ``train_lss.max_steps``; returns the last checkpoint's path."""
    dist = init_distributed(cfg.train_lss.device)
    try:
        return _train(cfg, dist)
    finally:
        cleanup_distributed()


def _train(cfg: Config, dist: DistInfo) -> Path:
    tc = cfg.train_lss
    logdir = Path(tc.logdir)
    ckpt_dir = logdir / "checkpoints"
    torch.manual_seed(tc.seed + dist.rank)
    targets = tc.depth_weight > 0 or (cfg.lss.image_seg and tc.seg_weight > 0)
    depth = (cfg.lss.downsample, cfg.grid.dbound) if targets else None
    dataset = NuScenesKeyframes(
        cfg.data, cfg.grid, is_train=True, split=tc.split, seed=tc.seed, depth=depth
    )
    per_epoch = RunBatches.per_epoch(len(dataset), tc.batch_size, dist.world_size)
    if per_epoch == 0:
        raise ValueError(
            f"{len(dataset)} training keyframes are fewer than "
            f"batch_size {tc.batch_size} x {dist.world_size} process(es)"
        )
    model = build_model(cfg).to(dist.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    amp = resolve_amp(tc.amp, dist.device)
    if tc.amp == "auto" and dist.is_main:
        print(f"train-lss: train_lss.amp auto: {amp} on {dist.device.type}", file=sys.stderr)
    scaler = torch.amp.GradScaler(dist.device.type, enabled=amp == "fp16")
    step = 0
    ckpt = resume_or_start(ckpt_dir, tc.resume, "train-lss", announce=dist.is_main)
    if ckpt is not None:
        model.load_state_dict(ckpt.model_state())
        # Rank 0's RNG state is the one saved; the other ranks reseed from the step.
        restore_training_state(ckpt, optimizer, restore_rng=dist.is_main)
        step = ckpt.step
        if not dist.is_main:
            torch.manual_seed(tc.seed + dist.rank + 7919 * step)
    net = wrap_ddp(model, dist)
    writer = open_run(logdir, to_dict(cfg), dist)
    log_due = Every(tc.log_every)
    image_due = Every(tc.image_every, first=True)
    save_due = Every(tc.checkpoint_every, tc.checkpoint_every_s)
    bar = tqdm(
        total=tc.max_steps, initial=step, desc="train-lss", unit="step", disable=not dist.is_main
    )
    net.train()
    tick, seen = time.perf_counter(), 0
    loader = DataLoader(
        dataset,
        batch_sampler=RunBatches(len(dataset), tc.batch_size, tc.seed, dist, step, tc.max_steps),
        num_workers=cfg.data.num_workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(tc.seed),  # leaves the global RNG alone
    )
    for batch in loader:
        batch = to_device(batch, dist.device)
        for group in optimizer.param_groups:
            group["lr"] = tc.lr * lr_factor(step, tc.max_steps, tc.lr_schedule, tc.warmup)
        out = forward(net, batch, amp, dist.device)
        terms = dual_loss(out, batch, tc)
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
        last = step >= tc.max_steps
        if log_due.due(step, last) and writer is not None:
            now = time.perf_counter()
            writer.add_scalar("loss/total", terms.total.item(), step)
            writer.add_scalar("loss/bce", terms.bce.item(), step)
            writer.add_scalar("loss/mse", terms.mse.item(), step)
            if tc.depth_weight > 0:
                writer.add_scalar("loss/depth", terms.depth.item(), step)
            if cfg.lss.image_seg and tc.seg_weight > 0:
                writer.add_scalar("loss/image_seg", terms.seg.item(), step)
            if tc.dice_weight > 0:
                writer.add_scalar("loss/dice", terms.dice.item(), step)
            writer.add_scalar("iou/train", iou, step)
            writer.add_scalar("lr", optimizer.param_groups[0]["lr"], step)
            writer.add_scalar("throughput/samples_per_s", seen / max(now - tick, 1e-9), step)
            tick, seen = now, 0
        if image_due.due(step) and writer is not None:
            writer.add_image("bev/pred_vs_gt", bev_image(out.logits, batch["bev_mask"]), step)
            if tc.depth_weight > 0:
                picture = depth_image(out.depth_logits, batch["depth_target"], cfg.grid.dbound)
                writer.add_image("depth/pred_vs_lidar", picture, step)
        # The last step is always saved: the run's result (and the demo's resume point).
        if (save_due.due(step) or last) and dist.is_main:
            meta = {
                "kind": "lss",
                "config": to_dict(cfg),
                "metrics": {"loss": terms.total.item(), "iou": iou},
            }
            save_and_prune(ckpt_dir, step, model, optimizer, meta, tc.keep_checkpoints)
    bar.close()
    if writer is not None:
        writer.close()
    return last_checkpoint(ckpt_dir, "train-lss")
