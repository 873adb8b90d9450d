"""Loss heads of the ReID net, chosen by name from a small registry (timm style).

Every head takes the embeddings ``emb [N, E]`` and integer identity ``labels [N]`` of a batch of
P identities x K views and returns a :class:`HeadOutput`. Every head is built by the same call,
``build_head(name, embedding_dim=E, num_classes=K, **head_kwargs)``, so a head that has no
per-class parameters (the triplet loss) accepts and ignores ``embedding_dim`` and ``num_classes``.
Each head also says how it builds from the config (``config_kwargs(reid_model_config)``), so a new
head is one registered class: ``train_reid.loss_mode`` accepts every registered name.

- ``cosine-softmax``: Wojke & Bewley, "Deep cosine metric learning for person re-identification"
  (WACV 2018): softmax over scaled cosine similarities to learned class directions, with the
  scale learned through a softplus.
- ``triplet``: Hermans, Beyer & Leibe, "In defense of the triplet loss for person
  re-identification" (2017): batch-hard triplet loss, hard or soft margin.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

HEADS: dict[str, type[nn.Module]] = {}


def register_head(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: makes the head buildable as ``build_head(name, ...)``."""

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in HEADS:
            raise ValueError(
                f"head {name!r} is registered twice ({HEADS[name].__name__}, {cls.__name__})"
            )
        HEADS[name] = cls
        return cls

    return deco


def list_heads() -> list[str]:
    """Names of the registered heads, sorted."""
    return sorted(HEADS)


def build_head(name: str, **kwargs) -> nn.Module:
    """The head registered as ``name``, built with ``kwargs``.

    Raises:
        KeyError: ``name`` is not registered; the message lists the valid names.
    """
    if name not in HEADS:
        raise KeyError(f"unknown ReID head {name!r}; valid heads: {', '.join(list_heads())}")
    return HEADS[name](**kwargs)


@dataclass
class HeadOutput:
    """What a head returns for one batch.

    Attributes:
        loss: scalar to minimise (keeps the graph).
        logits: [N, num_classes] for classification heads, None for metric heads.
        accuracy: scalar in [0, 1], detached: top-1 accuracy for classification heads; for the
            triplet head the share of anchors whose hardest positive is closer than their hardest
            negative.
        extra: detached scalars worth logging (e.g. the learned scale).
    """

    loss: torch.Tensor
    logits: torch.Tensor | None
    accuracy: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


def _check_batch(emb: torch.Tensor, labels: torch.Tensor, embedding_dim: int | None) -> None:
    if emb.dim() != 2:
        raise ValueError(f"embeddings must be [N, E], got shape {tuple(emb.shape)}")
    if embedding_dim is not None and emb.shape[1] != embedding_dim:
        raise ValueError(
            f"embeddings have {emb.shape[1]} dims, the head was built for {embedding_dim}"
        )
    if labels.shape != emb.shape[:1]:
        raise ValueError(f"labels must be [N] = [{emb.shape[0]}], got shape {tuple(labels.shape)}")


def _inverse_softplus(y: float) -> float:
    # softplus(x) = log(1 + e^x)  =>  x = log(e^y - 1), written stably for large y.
    return y + math.log(-math.expm1(-y))


@register_head("cosine-softmax")
class CosineSoftmaxHead(nn.Module):
    """Cosine softmax classifier (Wojke & Bewley 2018).

    ``logits[n, k] = scale * <emb_n / |emb_n|, w_k / |w_k|>`` and the loss is cross-entropy with
    the identity labels. The scale is ``softplus(scale_param)``, learned with the net: it keeps the
    scale positive and lets the optimiser sharpen the softmax as the classes separate.

    Args:
        embedding_dim: E, the dimension of the embeddings.
        num_classes: number of training identities (from the dataset's ``object_data.json``).
        init_scale: the scale at the start (must be > 0). Wojke & Bewley start the free parameter
            at 0, i.e. a scale of softplus(0) = log 2, and train for 100k+ steps; a larger start
            (the default) makes the softmax able to reach a low loss from the first steps.
        num_classes and embedding_dim fix the shape of ``weight`` [num_classes, E].
    """

    @staticmethod
    def config_kwargs(rc: Any) -> dict[str, Any]:
        """The head's arguments from a :class:`~bev_reid.config.ReIDModelConfig`."""
        return {"init_scale": rc.init_scale}

    def __init__(self, embedding_dim: int, num_classes: int, init_scale: float = 10.0):
        super().__init__()
        if num_classes < 2:
            raise ValueError(
                f"cosine-softmax needs at least 2 classes, got num_classes={num_classes}"
            )
        if init_scale <= 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}")
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        # Rows of about unit norm: the direction is what counts; the norm sets the effective
        # step size of the directions under Adam, so it should not be tiny.
        self.weight = nn.Parameter(
            torch.randn(num_classes, embedding_dim) / math.sqrt(embedding_dim)
        )
        self.scale_param = nn.Parameter(torch.tensor(_inverse_softplus(init_scale)))

    @property
    def scale(self) -> torch.Tensor:
        """softplus(scale_param): a positive 0-d tensor that carries the gradient."""
        return F.softplus(self.scale_param)

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        """emb [N, E] -> scaled cosine similarities [N, num_classes]."""
        cos = F.normalize(emb, dim=1) @ F.normalize(self.weight, dim=1).t()  # N x K
        return self.scale * cos

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        """emb [N, E] float, labels [N] int64 in [0, num_classes) -> HeadOutput."""
        _check_batch(emb, labels, self.embedding_dim)
        logits = self.logits(emb)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.detach().argmax(1) == labels).float().mean()
        return HeadOutput(loss, logits, accuracy, {"scale": self.scale.detach()})


def pairwise_distances(emb: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [N, N] between the rows of emb [N, E].

    The square root is taken of a clamped square, so equal rows give a finite (zero) gradient.
    """
    sq = emb.pow(2).sum(1)  # N
    d2 = sq[:, None] + sq[None, :] - 2.0 * emb @ emb.t()  # N x N
    return d2.clamp(min=1e-12).sqrt()


def batch_hard_triplet(
    emb: torch.Tensor, labels: torch.Tensor, margin: float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch-hard triplet terms (Hermans et al. 2017).

    For each anchor i: the hardest positive is the farthest other view of its identity, the
    hardest negative the closest view of another identity; the term is
    ``max(0, d_pos - d_neg + margin)`` or, with ``margin=None``, the soft margin
    ``softplus(d_pos - d_neg)``.

    Args:
        emb: [N, E] embeddings (used as given; normalise them first if wanted).
        labels: [N] identity labels.
        margin: the hinge margin, or None for the soft margin.

    Returns:
        per-anchor loss [N], hardest-positive distance [N], hardest-negative distance [N], and a
        [N] bool mask of the anchors that have both a positive and a negative (only those count).
    """
    n = emb.shape[0]
    d = pairwise_distances(emb)  # N x N
    same = labels[:, None] == labels[None, :]  # N x N
    pos = same & ~torch.eye(n, dtype=torch.bool, device=emb.device)
    neg = ~same
    # Distances are >= 0, so zeroing non-positives leaves the max over positives (0 when none);
    # non-negatives are pushed above every distance so they never win the min.
    d_pos = (d * pos).amax(1)  # N
    far = d.detach().max() + 1.0
    d_neg = d.masked_fill(~neg, far).amin(1)  # N
    valid = pos.any(1) & neg.any(1)  # N
    gap = d_pos - d_neg
    per_anchor = F.softplus(gap) if margin is None else F.relu(gap + margin)
    return per_anchor, d_pos, d_neg, valid


@register_head("triplet")
class BatchHardTripletHead(nn.Module):
    """Batch-hard triplet loss on L2-normalised embeddings (Hermans et al. 2017).

    Needs batches of P identities x K >= 2 views; anchors with no other view of their identity, or
    no other identity in the batch, are left out of the mean.

    Args:
        margin: hinge margin, on distances between unit vectors (in [0, 2]); None selects the soft
            margin ``softplus(d_pos - d_neg)`` that Hermans et al. found as good or better.
        embedding_dim, num_classes: accepted so that every head builds from the same call; the
            triplet loss has no per-class parameters, so they are not used.
    """

    @staticmethod
    def config_kwargs(rc: Any) -> dict[str, Any]:
        """The head's arguments from a :class:`~bev_reid.config.ReIDModelConfig` (a negative
        ``triplet_margin`` selects the soft margin)."""
        return {"margin": None if rc.triplet_margin < 0 else rc.triplet_margin}

    def __init__(
        self,
        margin: float | None = 0.3,
        embedding_dim: int | None = None,
        num_classes: int | None = None,
    ):
        super().__init__()
        if margin is not None and margin < 0:
            raise ValueError(f"triplet margin must be >= 0 or None (soft margin), got {margin}")
        self.margin = margin
        self.embedding_dim = embedding_dim

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        """emb [N, E] float, labels [N] int -> HeadOutput (logits None)."""
        _check_batch(emb, labels, self.embedding_dim)
        emb = F.normalize(emb, dim=1)  # the net already normalises; this keeps the head general
        per_anchor, d_pos, d_neg, valid = batch_hard_triplet(emb, labels, self.margin)
        count = valid.sum()
        # A batch with no valid anchor gives loss 0 that still reaches every parameter.
        loss = (per_anchor * valid).sum() / count.clamp(min=1)
        with torch.no_grad():
            denom = count.clamp(min=1)
            accuracy = ((d_pos < d_neg) & valid).sum() / denom
            extra = {
                "d_pos": (d_pos * valid).sum() / denom,
                "d_neg": (d_neg * valid).sum() / denom,
            }
            if self.margin is not None:  # share of anchors still inside the margin
                extra["active"] = ((per_anchor > 0) & valid).sum() / denom
        return HeadOutput(loss, None, accuracy.float(), extra)


@register_head("cosine-margin")
class CosineMarginHead(CosineSoftmaxHead):
    """Cosine softmax with an additive margin on the true class (CosFace / AM-softmax: Wang et
    al., CVPR 2018): ``logits[n, k] = scale * (cos_nk - margin [k = y_n])``, cross-entropy.

    The margin asks each view to lie closer to its own class direction than to any other by
    ``margin`` in cosine: with few identities the plain softmax is satisfied by a thin boundary,
    which unseen identities then fall across. The accuracy is that of the plain logits.

    Args:
        embedding_dim, num_classes, init_scale: as :class:`CosineSoftmaxHead`.
        margin: the cosine margin (>= 0).
    """

    def __init__(
        self, embedding_dim: int, num_classes: int, init_scale: float = 10.0, margin: float = 0.2
    ):
        super().__init__(embedding_dim, num_classes, init_scale)
        if margin < 0:
            raise ValueError(f"cosine-margin needs margin >= 0, got {margin}")
        self.margin = margin

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        """emb [N, E] float, labels [N] int64 in [0, num_classes) -> HeadOutput."""
        _check_batch(emb, labels, self.embedding_dim)
        logits = self.logits(emb)  # N x K
        target = F.one_hot(labels, self.num_classes).to(logits.dtype)  # N x K
        loss = F.cross_entropy(logits - self.scale * self.margin * target, labels)
        accuracy = (logits.detach().argmax(1) == labels).float().mean()
        return HeadOutput(loss, logits, accuracy, {"scale": self.scale.detach()})


def supervised_contrastive(
    emb: torch.Tensor, labels: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Supervised contrastive terms (Khosla et al., NeurIPS 2020, L_out).

    For anchor i with the other views P(i) of its identity in the batch and all other views A(i):
    ``-1/|P(i)| sum_{p in P(i)} log(exp(z_i.z_p / t) / sum_{a in A(i)} exp(z_i.z_a / t))``.

    Args:
        emb: [N, E] L2-normalised embeddings.
        labels: [N] identities.
        temperature: t.

    Returns:
        per-anchor loss [N] and a [N] bool mask of anchors with at least one positive.
    """
    n = emb.shape[0]
    logits = emb @ emb.t() / temperature  # N x N
    self_mask = torch.eye(n, dtype=torch.bool, device=emb.device)
    logits = logits.masked_fill(self_mask, -math.inf)  # an anchor is not its own contrast
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # N x N
    pos = (labels[:, None] == labels[None, :]) & ~self_mask  # N x N
    count = pos.sum(1)  # N
    per_anchor = -torch.where(pos, log_prob, 0.0).sum(1) / count.clamp(min=1)
    return per_anchor, count > 0


@register_head("cosine-supcon")
class CosineSupConHead(CosineSoftmaxHead):
    """The cosine softmax plus a supervised contrastive term over the P x K batch (Khosla et al.
    2020): ``loss = CE + weight * SupCon``.

    The classifier pulls every view towards one direction per training identity; the contrastive
    term asks views of one vehicle to be nearer each other than any other view in the batch,
    which needs no class weights and so carries over to identities never seen.

    Args:
        embedding_dim, num_classes, init_scale: as :class:`CosineSoftmaxHead`.
        temperature: of the contrastive term.
        weight: of the contrastive term.
    """

    def __init__(
        self, embedding_dim: int, num_classes: int, init_scale: float = 10.0,
        temperature: float = 0.1, weight: float = 1.0,
    ):  # fmt: skip
        super().__init__(embedding_dim, num_classes, init_scale)
        if temperature <= 0 or weight < 0:
            raise ValueError(
                f"cosine-supcon needs temperature > 0 and weight >= 0, got {temperature}, {weight}"
            )
        self.temperature, self.contrast_weight = temperature, weight

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        """emb [N, E] float, labels [N] int64 in [0, num_classes) -> HeadOutput."""
        out = super().forward(emb, labels)
        per_anchor, valid = supervised_contrastive(F.normalize(emb, dim=1), labels,
                                                   self.temperature)  # fmt: skip
        contrast = (per_anchor * valid).sum() / valid.sum().clamp(min=1)
        out.extra["supcon"] = contrast.detach()
        out.loss = out.loss + self.contrast_weight * contrast
        return out
