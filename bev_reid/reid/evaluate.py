"""Evaluation of ReID models and checkpoints on a dataset's views (``eval-reid`` runs it through
the watcher of :mod:`bev_reid.reid.watch`).

The protocols and the records they give are those of :mod:`bev_reid.reid.evaluator`; the records
of a checkpoint add ``checkpoint`` (sidecar name without suffix), ``step``, ``split`` and
``seconds``. :func:`raw_crop_baseline` scores the floor a trained model must beat.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from bev_reid.config import Config
from bev_reid.engine.checkpoint import CheckpointError, resolve_checkpoint
from bev_reid.engine.distributed import pick_device
from bev_reid.models.reid import BEVReIDModel
from bev_reid.reid.dataset import ReIDDataset
from bev_reid.reid.evaluator import ReIDEvaluator
from bev_reid.reid.train import collate_views, crop_statistics


@torch.no_grad()
def embed_dataset(
    model: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
    """Embeds every view of ``dataset`` in order with ``model.embed``.

    Args:
        model: anything with ``embed(crops [B, C, S, S]) -> [B, D]`` (e.g. BEVReIDModel); moved
            to ``device``.
        dataset: items ``(crop [C, S, S], id, view dict)`` (a ReIDDataset).

    Returns:
        embeddings [N, D] float32 on CPU, ids [N] int64, and the N view records.
    """
    device = torch.device(device)
    model = model.to(device)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_views,
        num_workers=num_workers,
    )  # fmt: skip
    embs, ids, views = [], [], []
    for crops, batch_ids, batch_views in loader:
        embs.append(model.embed(crops.to(device)).float().cpu())  # B x D
        ids.append(batch_ids)
        views.extend(batch_views)
    if not embs:
        return torch.zeros(0, 1), torch.zeros(0, dtype=torch.int64), []
    return torch.cat(embs), torch.cat(ids), views


def protocol_records(
    emb: torch.Tensor,
    ids: torch.Tensor,
    views: Sequence[dict[str, Any]],
    cfg: Config,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """The records of the protocols (see :mod:`bev_reid.reid.evaluator`) for embeddings of the
    views, without the ``checkpoint`` / ``step`` keys.

    Args:
        emb: [N, D] L2-normalised embeddings.
        ids: [N] identities.
        views: the N view records (``sample_token``, ``condition`` and ``timestamp`` are used).
        cfg: ``eval_reid`` (trials, topk, seed of the CMC galleries).
        device: where the ranking runs.
    """
    evaluator = ReIDEvaluator.from_config(cfg.eval_reid, device)
    evaluator.process_views(emb, ids.to(torch.int64), views)
    return evaluator.evaluate()


def evaluate_model(
    model: torch.nn.Module, dataset: Dataset, cfg: Config, device: str | torch.device | None = None
) -> list[dict[str, Any]]:
    """Both protocols for a model (anything with ``embed``) on ``dataset``; records as
    :func:`protocol_records`."""
    dev = pick_device(cfg.eval_reid.device) if device is None else torch.device(device)
    emb, ids, views = embed_dataset(model, dataset, cfg.eval_reid.batch_size, dev)
    return protocol_records(emb, ids, views, cfg, dev)


def evaluate_checkpoint(
    path: str | os.PathLike, dataset: Dataset, cfg: Config
) -> list[dict[str, Any]]:
    """The records of both protocols for one ReID checkpoint (module doc).

    Args:
        path: the checkpoint's sidecar, its weights file, or a run's checkpoint folder (latest).
        dataset: the views to evaluate (a ReIDDataset of ``eval_reid.split``).
        cfg: ``eval_reid`` settings (device, batch size, trials, topk).

    Raises:
        CheckpointError: the checkpoint is damaged, not a ReID checkpoint, or its crops have
            another channel count than the dataset's.
    """
    start = time.perf_counter()
    sidecar = resolve_checkpoint(path)
    device = pick_device(cfg.eval_reid.device)
    model = BEVReIDModel.from_checkpoint(sidecar, map_location=device)
    step = model.checkpoint_step
    wanted = model.checkpoint_meta.get("channels")  # the channels the model was trained on
    if isinstance(dataset, ReIDDataset) and isinstance(wanted, list):
        try:
            dataset = dataset.with_channels(wanted)
        except ValueError as e:
            raise CheckpointError(
                f"checkpoint {str(sidecar)!r} does not fit the dataset: {e}"
            ) from e
    channels = getattr(dataset, "channel_names", None)
    if channels is not None and model.config["in_channels"] != len(channels):
        raise CheckpointError(
            f"checkpoint {str(sidecar)!r} takes crops of {model.config['in_channels']} channels, "
            f"the dataset {str(getattr(dataset, 'root', ''))!r} has {len(channels)} "
            f"({', '.join(channels)}); evaluate on the dataset it was trained on"
        )
    records = evaluate_model(model, dataset, cfg, device)
    seconds = round(time.perf_counter() - start, 3)
    split = getattr(dataset, "split", None)
    return [
        {"checkpoint": sidecar.stem, "step": step, **r, "split": split, "seconds": seconds}
        for r in records
    ]


FLOORS = {"raw-crops": False, "raw-crops-standardised": True}  # name: standardised


def raw_crop_baseline(
    dataset: ReIDDataset, cfg: Config, standardise: bool = False
) -> list[dict[str, Any]]:
    """The floor a trained model must beat: both protocols with the flattened raw crops,
    L2-normalised, as embeddings. Records have ``checkpoint = "raw-crops"`` and ``step = None``.

    With ``standardise``, each channel is first standardised with its mean and std over the
    dataset's crops (no labels used), as the model standardises its input: channels of large
    range (LiDAR intensity, 0-255) then no longer decide the cosine alone. Those records have
    ``checkpoint = "raw-crops-standardised"``.
    """
    mean, std = crop_statistics(dataset, 0) if standardise else (0.0, 1.0)
    if standardise:
        mean, std = mean.view(1, -1, 1, 1), std.clamp(min=1e-6).view(1, -1, 1, 1)

    class RawCrops(torch.nn.Module):
        def embed(self, crops: torch.Tensor) -> torch.Tensor:
            return F.normalize(((crops - mean) / std).flatten(1).float(), dim=1)  # B x (C S S)

    records = evaluate_model(RawCrops(), dataset, cfg)
    split = getattr(dataset, "split", None)
    name = next(n for n, st in FLOORS.items() if st == standardise)
    return [{"checkpoint": name, "step": None, **r, "split": split} for r in records]
