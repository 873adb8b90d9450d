"""The losses and the score of LSS training.

With ``depth_weight`` > 0 a depth term joins (after BEVDepth, Li et al. 2023): the cross-entropy
of the predicted depth distribution of each camera feature cell against the depth bin of its
nearest LiDAR point (:mod:`bev_reid.data.depth`), over the cells that have one. It tells the
lift where surfaces are from the first step, which the BEV losses alone learn only slowly.
``dice_weight`` adds a soft-Dice term on the BEV vehicle map, which scores overlap the way the
IoU does. With ``lss.image_seg`` the same nearest points label each cell vehicle or not, and a
BCE term (``seg_weight``) teaches the camera head to see vehicles in the image.

The dual loss: ``bce_weight`` x BCE-with-logits (``pos_weight``) of the vehicle logits against the
GT BEV mask, plus ``mse_weight`` x MSE between the BEV encoder's feature output and the splatted
camera features. The MSE keeps appearance in the BEV features the ReID crops are cut from. Its
gradient reaches both maps: with the splat detached, nothing bounds the camera features' scale
(the BEV encoder's batch norm hides it from the BCE) and the MSE runs away chasing it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bev_reid.models.lss import LSSOutput


@dataclass
class LossTerms:
    total: torch.Tensor
    bce: torch.Tensor
    mse: torch.Tensor
    depth: torch.Tensor  # 0 when the depth term is off
    seg: torch.Tensor  # 0 without lss.image_seg
    dice: torch.Tensor  # 0 when the dice term is off


def depth_loss(
    depth_logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of the depth distributions against the LiDAR bins.

    Args:
        depth_logits: [B, N, D, fH, fW].
        target: [B, N, fH, fW] int64 bin, -1 where no LiDAR point falls (left out).
        weight: [B, N, fH, fW] weight of each cell (None: all 1).
    Returns:
        the (weighted) mean over the cells with a target (0 when none has one).
    """
    logits = depth_logits.float().movedim(2, -1).reshape(-1, depth_logits.shape[2])  # P x D
    target = target.reshape(-1)
    known = target >= 0
    if not bool(known.any()):
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits[known], target[known], reduction="none")
    if weight is None:
        return ce.mean()
    w = weight.reshape(-1)[known].float()
    return (ce * w).sum() / w.sum().clamp(min=1e-12)


def seg_loss(seg_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE of the image vehicle logits [B, N, fH, fW] against targets of the same shape (1
    vehicle, 0 not, -1 unknown: left out); 0 when no cell has a target."""
    known = target >= 0
    if not bool(known.any()):
        return seg_logits.float().sum() * 0.0
    return F.binary_cross_entropy_with_logits(seg_logits.float()[known], target[known].float())


def dice_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Soft Dice of the vehicle probabilities [B, 1, X, Y] against the mask, averaged over the
    batch; a sample with no vehicle and no predicted one scores 0 (the +1 smoothing)."""
    prob = torch.sigmoid(logits.float()).flatten(1)
    gt = mask.float().flatten(1)
    overlap = (prob * gt).sum(1)
    return (1 - (2 * overlap + 1) / (prob.sum(1) + gt.sum(1) + 1)).mean()


def dual_loss(out: LSSOutput, batch: dict, cfg) -> LossTerms:
    """The dual loss and, with ``cfg.depth_weight`` > 0, the depth term (see the module doc).

    Args:
        out: the network's output.
        batch: ``bev_mask`` [B, 1, X, Y] in {0, 1}, and ``depth_target`` when the depth term is on.
        cfg: a :class:`~bev_reid.config.TrainLSSConfig`.
    """
    mask = batch["bev_mask"]
    pos_weight = torch.tensor(cfg.pos_weight, device=mask.device)
    bce = F.binary_cross_entropy_with_logits(out.logits.float(), mask, pos_weight=pos_weight)
    mse = F.mse_loss(out.bev.float(), out.splat.float())
    total = cfg.bce_weight * bce + cfg.mse_weight * mse
    depth = seg = dice = torch.zeros((), device=mask.device)
    if cfg.dice_weight > 0:
        dice = dice_loss(out.logits, mask)
        total = total + cfg.dice_weight * dice
    if cfg.depth_weight > 0:
        weight = None
        if cfg.depth_vehicle_weight != 1.0:  # cells whose nearest point is on a vehicle
            on_vehicle = batch["vehicle_target"] == 1
            weight = torch.where(on_vehicle, cfg.depth_vehicle_weight, 1.0)
        depth = depth_loss(out.depth_logits, batch["depth_target"], weight)
        total = total + cfg.depth_weight * depth
    if out.seg_logits is not None and cfg.seg_weight > 0:
        seg = seg_loss(out.seg_logits, batch["vehicle_target"])
        total = total + cfg.seg_weight * seg
    return LossTerms(total, bce, mse, depth, seg, dice)


def iou_counts(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, 2] (intersection, union) of the predicted (logit > 0) and GT masks, per sample."""
    pred = logits.detach() > 0
    gt = mask > 0.5
    inter = (pred & gt).flatten(1).sum(1)
    union = (pred | gt).flatten(1).sum(1)
    return torch.stack([inter, union], 1).float()
