"""Training of the ReID net on a dataset folder (`bev-reid train-reid`).

Batches of P identities x K views from the ``train`` split (:class:`PKBatchSampler`), the
:class:`~bev_reid.models.reid.BEVReIDModel` with the head named by ``train_reid.loss_mode``, Adam.
Everything goes to ``reid_run.log_dir/reid_run.run_id``: ``config.yaml`` (resolved), tensorboard
scalars, crop pictures and, at the end, the embedding projector; checkpoints in ``checkpoints/``,
which the evaluator (:mod:`bev_reid.reid.evaluate`) watches.

Exact resume: the batch of step ``s`` is a pure function of (seed, s, rank), and the torch RNG
(dropout) is reseeded from (seed, s, rank) before every step, so a run resumed from the checkpoint
of step ``s`` takes the same next step as the uninterrupted run on every rank; the optimizer state
comes from the checkpoint.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from bev_reid.config import Config, to_dict
from bev_reid.engine.checkpoint import CheckpointError, restore_training_state
from bev_reid.engine.distributed import (
    DistInfo,
    all_reduce_mean,
    cleanup_distributed,
    init_distributed,
)
from bev_reid.engine.loop import (
    Every,
    WeightAverage,
    lr_factor,
    resume_or_start,
    save_and_prune,
)
from bev_reid.engine.run import last_checkpoint, open_run, wrap_ddp
from bev_reid.models.heads import HEADS
from bev_reid.models.reid import BEVReIDModel
from bev_reid.reid.dataset import ReIDDataset, learnt_categories
from bev_reid.reid.sampler import PKBatchSampler

PROJECTOR_MAX_VIEWS = 4096  # views in the end-of-run embedding projector (a seeded subset)


# Under this name (extra.train.*) a checkpoint with train_reid.weight_average keeps the weights
# being trained; its model.* tensors are their average.
TRAINED = "train"


def build_reid_model(cfg: Config, in_channels: int, num_classes: int) -> BEVReIDModel:
    """The model of ``cfg.reid`` with the head of ``cfg.train_reid.loss_mode``."""
    mode = cfg.train_reid.loss_mode  # a registered head (checked by the config)
    rc = cfg.reid
    head_kwargs = HEADS[mode].config_kwargs(rc)
    return BEVReIDModel(
        in_channels,
        embedding_dim=rc.embedding_dim,
        dropout=rc.dropout,
        widths=rc.widths,
        pool=rc.pool,
        head=mode,
        num_classes=num_classes,
        head_kwargs=head_kwargs,
    )


def collate_views(
    items: list[tuple[torch.Tensor, int, dict]],
) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """Dataset items -> (crops [B, C, S, S], ids [B] int64, view records)."""
    crops = torch.stack([c for c, _, _ in items])
    ids = torch.tensor([i for _, i, _ in items], dtype=torch.int64)
    return crops, ids, [v for _, _, v in items]


def crop_statistics(
    dataset: ReIDDataset, seed: int, samples: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std [C] over a seeded sample of the training crops."""
    n = len(dataset.views)
    rows = np.random.default_rng(seed).permutation(n)[: min(n, samples)]
    index = np.sort([dataset.views[i]["index"] for i in rows])
    crops = torch.from_numpy(dataset.crop_array(index))  # n x C x S x S
    return crops.mean(dim=(0, 2, 3)), crops.std(dim=(0, 2, 3))


def turn_and_shift(crops: torch.Tensor, angle: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Crops [B, C, S, S] turned about their centre by ``angle`` [B] (radians, from the column
    axis towards the row axis) and then moved by ``shift`` [B, 2] cells (rows, columns);
    bilinear, zeros coming in from outside.

    A quarter turn equals ``torch.rot90(crops, -1, (-2, -1))``; an integer shift moves every cell
    by exactly that many rows and columns.
    """
    b, _, s, _ = crops.shape
    cos, sin = angle.cos(), angle.sin()
    # affine_grid maps output (x = column, y = row, normalised to [-1, 1]) to input coordinates.
    tx = -2 * shift[:, 1] / s
    ty = -2 * shift[:, 0] / s
    theta = torch.stack(
        [
            torch.stack([cos, sin, cos * tx + sin * ty], 1),
            torch.stack([-sin, cos, -sin * tx + cos * ty], 1),
        ],
        1,
    ).to(crops.dtype)  # B x 2 x 3
    grid = F.affine_grid(theta, list(crops.shape), align_corners=False)
    return F.grid_sample(crops, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def init_net_from(model: BEVReIDModel, path: str) -> None:
    """Loads the embedding net (``model.net``) of the ReID checkpoint at ``path`` into ``model``.

    The head (its classes are another dataset's identities) and the input statistics (measured
    on this run's crops) stay as they are.

    Raises:
        CheckpointError: the checkpoint is missing, damaged or not a ReID checkpoint, or its net
            has another shape (channels, widths, pool, embedding size) than this run's.
    """
    source = BEVReIDModel.from_checkpoint(path)  # checks the file and that it is a ReID model
    theirs, mine = source.config, model.config
    shape_keys = ("in_channels", "embedding_dim", "widths", "pool")
    if any(theirs[k] != mine[k] for k in shape_keys):
        raise CheckpointError(
            f"train_reid.init_from {path!r} holds a net of "
            + ", ".join(f"{k}={theirs[k]!r}" for k in shape_keys)
            + "; this run builds "
            + ", ".join(f"{k}={mine[k]!r}" for k in shape_keys)
        )
    model.net.load_state_dict(source.net.state_dict())


def augment_crops(
    crops: torch.Tensor,
    mirror: bool,
    shift: float,
    rotate: float,
    cell_dropout: float | torch.Tensor,
    dropout_channels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Random training views of heading-aligned crops [B, C, S, S] (the torch RNG of the step).

    - ``mirror``: half the crops flipped across the heading axis (the vehicle's other side);
    - ``rotate`` / ``shift``: each crop turned by up to ``rotate`` degrees and moved by up to
      ``shift`` cells along each axis (heading and box errors), see :func:`turn_and_shift`;
    - ``cell_dropout``: that share of cells zeroed (fewer LiDAR returns), one share or one per
      crop ([B]), in the channels ``dropout_channels`` marks (a bool [C]; None: every channel).
    """
    b, _, s, _ = crops.shape
    if mirror:
        flip = torch.rand(b, device=crops.device) < 0.5
        crops = torch.where(flip.view(-1, 1, 1, 1), crops.flip(-1), crops)
    if shift > 0 or rotate > 0:
        angle = (torch.rand(b, device=crops.device) * 2 - 1) * math.radians(rotate)  # B
        move = (torch.rand(b, 2, device=crops.device) * 2 - 1) * shift  # B x 2 cells
        crops = turn_and_shift(crops, angle, move)
    share = torch.as_tensor(cell_dropout, dtype=crops.dtype, device=crops.device)
    if bool((share > 0).any()):
        keep = torch.rand(b, 1, s, s, device=crops.device) >= share.reshape(-1, 1, 1, 1)
        if dropout_channels is not None:
            keep = keep | ~dropout_channels.to(crops.device).view(1, -1, 1, 1)
        crops = crops * keep
    return crops


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed for the torch RNG of (seed, step, rank)."""
    a, b = np.random.SeedSequence([seed, step, rank]).generate_state(2, np.uint32)
    return (int(a) << 31) ^ int(b)


def crops_picture(crops: torch.Tensor, channel_names: list[str], cols: int) -> torch.Tensor:
    """A [3, H, W] grid of crops [B, C, S, S] in [0, 1], ``cols`` per row (one row per identity
    of a P x K batch), 1-pixel white lines between crops.

    LiDAR crops show their three rasters (occupancy, height, intensity) as RGB; other crops their
    first three channels (fewer are repeated). Each channel is scaled to [0, 1] over the batch.
    Rows are flipped so the heading of aligned crops points up.
    """
    lidar = [i for i, n in enumerate(channel_names) if n.startswith("lidar_")]
    chans = lidar[:3] if lidar else list(range(min(3, crops.shape[1])))
    chans = (chans * 3)[:3]
    x = crops[:, chans].detach().float().cpu().flip(-2)  # B x 3 x S x S
    lo = x.amin(dim=(0, 2, 3), keepdim=True)
    hi = x.amax(dim=(0, 2, 3), keepdim=True)
    x = (x - lo) / (hi - lo).clamp(min=1e-6)
    b, _, s, _ = x.shape
    rows = (b + cols - 1) // cols
    grid = torch.ones(3, rows * (s + 1) + 1, cols * (s + 1) + 1)
    for n in range(b):
        r, c = divmod(n, cols)
        grid[:, 1 + r * (s + 1) : 1 + r * (s + 1) + s, 1 + c * (s + 1) : 1 + c * (s + 1) + s] = x[n]
    return grid


def train_reid(cfg: Config) -> Path:
    """Trains until ``train_reid.max_steps``; returns the last checkpoint's sidecar path.

    Under torchrun every process trains on its own P x K batches (DDP averages the gradients);
    rank 0 alone writes logs and checkpoints.
    """
    dist = init_distributed(cfg.train_reid.device)
    try:
        return _train(cfg, dist)
    finally:
        cleanup_distributed()


def view_places(dataset: ReIDDataset) -> list[tuple[str, float, float]]:
    """(keyframe, x, y) of every view of ``dataset``, for batches of neighbours."""
    try:
        return [(v["sample_token"], *v["center"][:2]) for v in dataset.views]
    except KeyError as e:
        raise ValueError(
            f"ReID dataset {str(dataset.root)!r}: its views.jsonl lacks {e}, which "
            "train_reid.neighbours needs; rebuild it with bev-reid build-dataset or set "
            "train_reid.neighbours: 0"
        ) from None


def _train(cfg: Config, dist: DistInfo) -> Path:
    tc = cfg.train_reid
    run_dir = Path(cfg.reid_run.log_dir) / cfg.reid_run.run_id
    ckpt_dir = run_dir / "checkpoints"
    dataset = ReIDDataset.of_modalities(cfg.reid_run.dataset_dir, "train", cfg.reid_run.modalities)
    if len(dataset) == 0:
        raise ValueError(f"ReID dataset {cfg.reid_run.dataset_dir!r} has no training views")
    num_classes = dataset.num_classes
    bad = sorted({i for i in dataset.ids if not 0 <= i < num_classes})
    if bad:
        raise ValueError(
            f"ReID dataset {cfg.reid_run.dataset_dir!r}: training ids {bad[:5]} lie outside "
            f"0..{num_classes - 1} (num_train_identities of object_data.json)"
        )
    in_channels = len(dataset.channel_names)
    # Cell dropout mimics missing LiDAR returns: camera BEV features are dense and keep theirs.
    dropout_channels = torch.zeros(in_channels, dtype=torch.bool, device=dist.device)
    dropout_channels[dataset.lidar_channels] = True  # made on the device once, not per step
    torch.manual_seed(step_seed(tc.seed, 0, dist.rank))  # the model's initial weights
    model = build_reid_model(cfg, in_channels, num_classes)
    model.set_input_statistics(*crop_statistics(dataset, tc.seed))
    model = model.to(dist.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    step, trained = 0, {}
    ckpt = resume_or_start(ckpt_dir, tc.resume, "train-reid", announce=dist.is_main)
    if ckpt is not None:
        if ckpt.meta.get("kind") != "reid" or ckpt.meta.get("model") != model.config:
            raise CheckpointError(
                f"cannot resume from {str(ckpt.path)!r}: it holds model "
                f"{ckpt.meta.get('model')!r}, this run builds {model.config!r}; use another "
                "reid_run.run_id or drop --resume"
            )
        # With train_reid.weight_average the model's tensors are the average; the weights
        # being trained are kept beside them (extra.train).
        trained = ckpt.group(f"extra.{TRAINED}")
        model.load_state_dict(trained or ckpt.model_state())
        restore_training_state(ckpt, optimizer, restore_rng=False)  # reseeded per step
        step = ckpt.step
    elif tc.init_from:
        init_net_from(model, tc.init_from)
    average = None
    if tc.weight_average > 0:
        average = WeightAverage(model, tc.weight_average)
        if trained:  # resumed: the average goes on from the saved one
            average.state = {k: v.to(dist.device) for k, v in ckpt.model_state().items()}
    net = wrap_ddp(model, dist)
    writer = open_run(run_dir, to_dict(cfg), dist)
    log_due = Every(tc.log_every)
    image_due = Every(tc.image_every, first=True)
    save_due = Every(tc.checkpoint_every, tc.checkpoint_every_s)
    sampler = PKBatchSampler(
        dataset.ids, tc.p_identities, tc.k_views, seed=tc.seed, rank=dist.rank,
        world_size=dist.world_size, start_step=step, num_steps=max(0, tc.max_steps - step),
        places=view_places(dataset) if tc.neighbours > 0 else None, neighbours=tc.neighbours,
    )  # fmt: skip
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=tc.num_workers,
        collate_fn=collate_views,
        pin_memory=dist.device.type == "cuda",
        generator=torch.Generator().manual_seed(tc.seed),  # leaves the global RNG alone
    )
    meta_base = {
        "kind": "reid",
        "model": model.config,
        "config": to_dict(cfg),
        "dataset": str(cfg.reid_run.dataset_dir),
        "channels": list(dataset.channel_names),
        # How the crops were cut (object_data.json's settings), so that the checkpoint alone
        # tells a user such as the tracker how to cut new ones: see bev_reid.reid.extract.
        "crop_recipe": {
            **{
                k: dataset.meta.get(k)
                for k in ("grid", "crop", "modalities", "channels", "lss_checkpoint", "filters")
            },
            "learnt_categories": learnt_categories(dataset.meta),
        },
    }
    bar = tqdm(
        total=tc.max_steps, initial=step, desc="train-reid", unit="step", disable=not dist.is_main
    )
    net.train()
    tick = time.perf_counter()
    seen, metrics = 0, {}
    for crops, ids, _ in loader:
        crops = crops.to(dist.device, non_blocking=True)  # B x C x S x S
        ids = ids.to(dist.device, non_blocking=True)  # B
        torch.manual_seed(
            step_seed(tc.seed, step + 1, dist.rank)
        )  # dropout and mirror of this step
        dropout = tc.cell_dropout  # one share, or one per crop around it (spread)
        if tc.cell_dropout_spread > 0:
            offset = (
                torch.rand(crops.shape[0], device=crops.device) * 2 - 1
            ) * tc.cell_dropout_spread
            dropout = (tc.cell_dropout + offset).clamp(0.0, 0.95)
        crops = augment_crops(crops, tc.mirror, tc.shift, tc.rotate, dropout, dropout_channels)
        for group in optimizer.param_groups:
            group["lr"] = tc.lr * lr_factor(step, tc.max_steps, tc.lr_schedule, tc.warmup)
        out = net(crops, ids)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        step += 1
        if average is not None:
            average.update(model, step)
        seen += crops.shape[0] * dist.world_size
        logged = {"loss": out.loss.detach(), "accuracy": out.accuracy, **out.extra}
        values = all_reduce_mean(torch.stack([v.float().reshape(()) for v in logged.values()]))
        metrics = dict(zip(logged, values.tolist(), strict=True))
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['accuracy']:.3f}")
        last = step >= tc.max_steps
        if log_due.due(step, last) and writer is not None:
            now = time.perf_counter()
            for key, value in metrics.items():
                writer.add_scalar(key if key in ("loss", "accuracy", "scale") else f"head/{key}",
                                  value, step)  # fmt: skip
            writer.add_scalar("lr", optimizer.param_groups[0]["lr"], step)
            writer.add_scalar("throughput", seen / max(now - tick, 1e-9), step)  # crops / s
            tick, seen = now, 0
        if image_due.due(step) and writer is not None:
            writer.add_image("crops", crops_picture(crops, dataset.channel_names, sampler.k), step)
        # The last step is always saved: the run's result (and the evaluator's last checkpoint).
        if (save_due.due(step) or last) and dist.is_main:
            meta = {**meta_base, "metrics": metrics}
            if average is None:
                save_and_prune(ckpt_dir, step, model, optimizer, meta, tc.keep_checkpoints)
            else:  # users (the evaluator, the tracker) load the average
                weights = {f"{TRAINED}.{k}": v for k, v in model.state_dict().items()}
                save_and_prune(ckpt_dir, step, average.state, optimizer, meta,
                               tc.keep_checkpoints, weights)  # fmt: skip
    bar.close()
    if writer is not None:
        if step > 0:
            if average is not None:
                model.load_state_dict(average.state)
            add_projector(writer, model, cfg, dist.device, step)
        writer.close()
    return last_checkpoint(ckpt_dir, "train-reid")


@torch.no_grad()
def add_projector(
    writer, model: BEVReIDModel, cfg: Config, device: torch.device, step: int
) -> None:
    """Embeddings of the val split (the train split when val is empty) for tensorboard's
    projector: identity, condition and scene as metadata, the crops as thumbnails. At most
    ``PROJECTOR_MAX_VIEWS`` views, a seeded subset."""
    modalities = cfg.reid_run.modalities
    dataset = ReIDDataset.of_modalities(cfg.reid_run.dataset_dir, "val", modalities)
    tag = "val"
    if len(dataset) == 0:
        dataset = ReIDDataset.of_modalities(cfg.reid_run.dataset_dir, "train", modalities)
        tag = "train"
    positions = np.arange(len(dataset))
    if positions.size > PROJECTOR_MAX_VIEWS:
        rng = np.random.default_rng(cfg.train_reid.seed)
        positions = np.sort(rng.choice(positions, PROJECTOR_MAX_VIEWS, replace=False))
    embs, thumbs = [], []
    for s in range(0, positions.size, 256):
        crops, _, _ = collate_views([dataset[int(i)] for i in positions[s : s + 256]])
        embs.append(model.embed(crops.to(device)).float().cpu())
        pic = crops_picture(crops, dataset.channel_names, 1)  # 3 x (B (S+1) + 1) x (S + 2)
        size = crops.shape[-1]
        for n in range(crops.shape[0]):
            top = 1 + n * (size + 1)
            thumbs.append(pic[:, top : top + size, 1 : 1 + size])
    views = [dataset.views[int(i)] for i in positions]
    writer.add_embedding(
        torch.cat(embs),
        metadata=[[str(v["id"]), v.get("condition", ""), v.get("scene", "")] for v in views],
        metadata_header=["id", "condition", "scene"],
        label_img=torch.stack(thumbs),
        global_step=step,
        tag=tag,
    )
