"""The losses and the score of LSS training.

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


def dual_loss(out: LSSOutput, mask: torch.Tensor, cfg) -> LossTerms:
    """The dual loss (see the module doc). mask [B, 1, X, Y] in {0, 1}; ``cfg`` a
    :class:`~bev_reid.config.TrainLSSConfig`."""
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
