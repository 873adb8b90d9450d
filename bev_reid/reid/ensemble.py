"""Several ReID embeddings of one crop recipe used as one (``track.reid_checkpoint: A,B,C``).

Trainings of one recipe that differ only in their seed save different identity switches: each
learns some vehicles better than the others (docs/results-tracking.md). Used together, each
crop's embedding is the members' unit embeddings side by side, scaled by 1/sqrt(n), so it is
again of unit norm and its cosine similarity to another crop's is the mean of the members' own
cosine similarities. The cosine distance keeps the scale a single member's has, and the
tracker's appearance limits (``max_appearance_distance``, ``max_lost_cost``,
``stitch_max_distance``) mean what they meant for one.

The members must cut their crops alike (one crop recipe: modalities, raster, cell, size,
channels, categories): the crops are cut once per keyframe, for all of them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bev_reid.engine.checkpoint import CheckpointError


def checkpoint_list(spec: str | os.PathLike) -> list[str]:
    """The checkpoints named by a ``track.reid_checkpoint`` value: one path, or several
    separated by commas."""
    paths = [p.strip() for p in str(spec).split(",")]
    if any(not p for p in paths):
        raise CheckpointError(
            f"ReID checkpoint list {str(spec)!r} has an empty entry: separate paths by single "
            "commas"
        )
    seen: set[str] = set()
    for p in paths:
        if p in seen:
            raise CheckpointError(f"ReID checkpoint list {str(spec)!r} names {p!r} twice")
        seen.add(p)
    return paths


class EmbeddingEnsemble(nn.Module):
    """Members with the ``embed`` interface of :class:`~bev_reid.models.reid.BEVReIDModel`
    (checkpoints or ONNX exports) as one embedder with that interface.

    Args:
        members: two or more loaded embedders, each with its ``checkpoint_meta``.

    Raises:
        CheckpointError: fewer than two members, or members whose crop recipes differ (the error
            names the setting and both checkpoints).
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        from bev_reid.reid.extract import recipe_from_meta

        if len(members) < 2:
            raise CheckpointError("an ensemble of ReID embeddings needs two or more checkpoints")
        self.members = nn.ModuleList(members)
        where = [str(getattr(m, "checkpoint_path", None) or f"member {i}")
                 for i, m in enumerate(members)]  # fmt: skip
        recipes = [recipe_from_meta(m.checkpoint_meta or {}, w)
                   for m, w in zip(members, where, strict=True)]  # fmt: skip
        first = recipes[0]
        for recipe, name in zip(recipes[1:], where[1:], strict=True):
            if recipe != first:
                raise CheckpointError(
                    f"ReID checkpoints {where[0]!r} and {name!r} cut their crops differently "
                    f"({_first_difference(first, recipe)}): an ensemble needs one crop recipe"
                )
        self.config: dict[str, Any] = {
            "in_channels": int(members[0].config["in_channels"]),
            "embedding_dim": sum(int(m.config["embedding_dim"]) for m in members),
            "members": len(members),
        }
        self.checkpoint_meta: dict[str, Any] = dict(members[0].checkpoint_meta)
        self.checkpoint_path = ", ".join(where)  # for messages
        self.checkpoint_step = [getattr(m, "checkpoint_step", None) for m in members]

    @torch.no_grad()
    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        """Crops [N, C, S, S] -> unit-norm embeddings [N, sum of the members' E]."""
        parts = [m.embed(crops) for m in self.members]
        return torch.cat(parts, dim=1) / math.sqrt(len(parts))


def _first_difference(a: Any, b: Any) -> str:
    """The first field in which two crop recipes differ, as ``name: A vs B``."""
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if x == y:
            continue
        if dataclasses.is_dataclass(x) and dataclasses.is_dataclass(y):
            return f"{field.name}.{_first_difference(x, y)}"
        return f"{field.name}: {x!r} vs {y!r}"
    return "no field differs"
