"""The ReID embedding net for BEV crops and the model that pairs it with a loss head.

After Wojke & Bewley, "Deep cosine metric learning for person re-identification" (WACV 2018),
adapted to BEV crops: a small residual net maps a crop [C, S, S] (camera BEV features and/or
LiDAR rasters, S = 24 cells by default) to a unit-norm embedding; a head from
:mod:`bev_reid.models.heads` turns a batch of embeddings into a loss.

Shapes: N crops, C input channels, S x S cells, E embedding dims.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bev_reid.engine.checkpoint import CheckpointError, load_checkpoint
from bev_reid.models.blocks import BasicBlock
from bev_reid.models.heads import HeadOutput, build_head

CHECKPOINT_KIND = "reid"


class ReIDNet(nn.Module):
    """Residual net: crops [N, C, S, S] -> unit-norm embeddings [N, E].

    Layers (with the default ``widths=(64, 128)``)::

        stem    3x3 conv C -> 64, BN, ReLU          N x 64 x S x S
        block   64 -> 64                            N x 64 x S x S
        block   64 -> 128, stride 2                 N x 128 x ceil(S/2) x ceil(S/2)
        block   128 -> 128                          N x 128 x ceil(S/2) x ceil(S/2)
        average pool to pool x pool cells          N x 128 x pool x pool  (any S >= 1)
        flatten, dropout, FC -> E (no bias), BN1d  N x E
        L2 normalisation                            N x E, |row| = 1

    Each further width adds a stride-2 block and a block at that width. ReLU (not the paper's
    ELU) to match :class:`~bev_reid.models.blocks.BasicBlock`. Like the paper's dense layer on
    the flattened map (and unlike a global average), the pooled grid keeps where things are in
    the heading-aligned crop: that layout is the vehicle's shape. ``pool=1`` is a global average.

    Args:
        in_channels: C, channels of a crop.
        embedding_dim: E.
        dropout: drop probability before the FC layer.
        widths: channels of the stem and of each stage; a stage after the first halves S.
        pool: side of the grid the last feature map is averaged to before the FC layer.
    """

    def __init__(
        self,
        in_channels: int,
        embedding_dim: int = 128,
        dropout: float = 0.6,
        widths: Sequence[int] = (64, 128),
        pool: int = 6,
    ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if in_channels < 1 or embedding_dim < 1 or not widths or min(widths) < 1:
            raise ValueError(
                f"ReIDNet needs positive sizes, got in_channels={in_channels}, "
                f"embedding_dim={embedding_dim}, widths={widths}"
            )
        self.in_channels = in_channels
        self.embedding_dim = embedding_dim
        self.pool = int(pool)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = [BasicBlock(widths[0], widths[0])]
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            blocks += [BasicBlock(cin, cout, stride=2), BasicBlock(cout, cout)]
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        # No bias: the BatchNorm right after would cancel it.
        self.fc = nn.Linear(widths[-1] * self.pool**2, embedding_dim, bias=False)
        self.bn = nn.BatchNorm1d(embedding_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, S, S] -> pooled features [N, widths[-1] * pool * pool]."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ReIDNet expects crops [N, {self.in_channels}, S, S], got shape {tuple(x.shape)}"
            )
        y = self.blocks(self.stem(x))  # N x W x S' x S'
        return F.adaptive_avg_pool2d(y, self.pool).flatten(1)  # N x (W pool pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Crops [N, C, S, S] -> embeddings [N, E] of unit L2 norm.

        In training mode the BatchNorm layers need N >= 2.
        """
        f = self.dropout(self.features(x))  # N x W
        e = self.bn(self.fc(f))  # N x E
        return F.normalize(e, dim=1)


class BEVReIDModel(nn.Module):
    """A :class:`ReIDNet` (``net``) and a loss head (``head``), saved and loaded as one.

    Args:
        in_channels, embedding_dim, dropout, widths: of the :class:`ReIDNet`.
        head: a registered head name (see :func:`bev_reid.models.heads.list_heads`).
        num_classes: training identities; required by heads with per-class weights.
        head_kwargs: further arguments of the head (e.g. ``{"margin": 0.2}``).

    ``config`` holds these arguments, JSON-safe: the trainer stores it as ``meta["model"]`` of the
    checkpoint (with ``meta["kind"] = "reid"``); :meth:`from_checkpoint` rebuilds from it.
    """

    def __init__(
        self,
        in_channels: int,
        embedding_dim: int = 128,
        dropout: float = 0.6,
        widths: Sequence[int] = (64, 128),
        pool: int = 6,
        head: str = "cosine-softmax",
        num_classes: int | None = None,
        head_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.config: dict[str, Any] = {
            "in_channels": int(in_channels),
            "embedding_dim": int(embedding_dim),
            "dropout": float(dropout),
            "widths": [int(w) for w in widths],
            "pool": int(pool),
            "head": head,
            "num_classes": None if num_classes is None else int(num_classes),
            "head_kwargs": dict(head_kwargs or {}),
        }
        self.net = ReIDNet(in_channels, embedding_dim, dropout, widths, pool)
        # Per-channel standardisation of the crops (camera features and LiDAR rasters differ in
        # scale by orders of magnitude); set from the training crops, saved with the weights.
        self.register_buffer("input_mean", torch.zeros(in_channels))
        self.register_buffer("input_std", torch.ones(in_channels))
        self.head = build_head(
            head, embedding_dim=embedding_dim, num_classes=num_classes, **(head_kwargs or {})
        )
        self.checkpoint_path: Path | None = None  # set by from_checkpoint
        self.checkpoint_step: int | None = None
        self.checkpoint_meta: dict[str, Any] = {}

    def set_input_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-channel mean and std [C] of the training crops; channels with no spread keep 1."""
        self.input_mean.copy_(mean)
        self.input_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def standardise(self, crops: torch.Tensor) -> torch.Tensor:
        """[N, C, S, S] crops in the scale the net was trained on."""
        return (crops - self.input_mean.view(1, -1, 1, 1)) / self.input_std.view(1, -1, 1, 1)

    def forward(self, crops: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
        """Crops [N, C, S, S] and identity labels [N] -> the head's loss, logits and accuracy."""
        return self.head(self.net(self.standardise(crops)), labels)

    @torch.no_grad()
    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        """Crops [N, C, S, S] -> embeddings [N, E], unit norm, without gradient.

        Runs in eval mode (dropout off, BatchNorm running statistics, so N = 1 works) and puts
        the model back in the mode it was in.
        """
        was_training = self.training
        self.eval()
        try:
            return self.net(self.standardise(crops))
        finally:
            self.train(was_training)

    def extract_features(
        self,
        keyframe: dict[str, Any],
        boxes: Sequence[dict[str, Any]],
        lss_checkpoint: str | os.PathLike = "",
        occluders: Sequence[dict[str, Any]] | None = None,
    ) -> torch.Tensor:
        """Embeddings [K, E] of ``boxes`` in one keyframe, cut exactly as this checkpoint's
        training crops were (the recipe its sidecar records; see :mod:`bev_reid.reid.extract`).

        Args:
            keyframe: an item of ``bev_reid.reid.extract.CropCutter.keyframes()`` (the keyframe
                Dataset reading what the recipe needs), or a collated batch of one.
            boxes: K ego-frame box dicts with ``center`` (3), ``wlh`` (3) and ``yaw`` (as
                ``AnnotatedBox.as_dict`` gives them).
            lss_checkpoint: the LSS checkpoint, when the crops hold camera BEV features.
            occluders: every box of the keyframe (same dicts), which hide the camera texture
                behind them; None: ``boxes``.
        """
        from bev_reid.reid.extract import cutter_for  # lazily: models/ does not import reid/

        key = str(lss_checkpoint)
        if getattr(self, "_cutter", None) is None or self._cutter[0] != key:
            self._cutter = (key, cutter_for(self, lss_checkpoint))
        crops = self._cutter[1].crops(keyframe, boxes, occluders)  # K x C x S x S
        return self.embed(crops.to(self.input_mean.device))

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, map_location: str | torch.device = "cpu"
    ) -> BEVReIDModel:
        """The model saved in a ReID checkpoint, in eval mode.

        Args:
            path: a checkpoint sidecar, its weights file, or a folder (its latest checkpoint).
            map_location: device for the weights.

        Raises:
            CheckpointError: the checkpoint is missing or damaged, is not a ReID checkpoint, or
                its weights do not fit the model its metadata describes.
        """
        ckpt = load_checkpoint(path, map_location=map_location)
        kind = ckpt.meta.get("kind")
        if kind != CHECKPOINT_KIND:
            raise CheckpointError(
                f"checkpoint {str(ckpt.path)!r} is not a ReID checkpoint (kind {kind!r}, "
                f"expected {CHECKPOINT_KIND!r}); pass a checkpoint written by train-reid"
            )
        kwargs = ckpt.meta.get("model")
        if not isinstance(kwargs, dict):
            raise CheckpointError(
                f"ReID checkpoint {str(ckpt.path)!r} has no model description (meta['model'])"
            )
        try:
            model = cls(**kwargs)
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"ReID checkpoint {str(ckpt.path)!r}: cannot build the model from "
                f"meta['model'] = {kwargs!r}: {e}"
            ) from e
        state = ckpt.model_state()
        bad = [
            k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())
        ]
        if bad:
            raise CheckpointError(
                f"ReID checkpoint {str(ckpt.path)!r} holds NaN or inf weights ({', '.join(bad[:3])}"
                f"{', ...' if len(bad) > 3 else ''}): the run diverged before this step"
            )
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(
                f"ReID checkpoint {str(ckpt.path)!r}: weights do not fit the model: {e}"
            ) from e
        # Where the weights came from: the evaluator logs the step, the tracker reads the crop
        # recipe of the sidecar's metadata.
        model.checkpoint_path, model.checkpoint_step = ckpt.path, ckpt.step
        model.checkpoint_meta = ckpt.meta
        return model.to(map_location).eval()
