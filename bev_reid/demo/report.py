"""Pictures of the demo's report: CMC curves, ranked retrievals, and the BEV prediction.

Each function writes one PNG atomically and returns its path. matplotlib runs headless (Agg).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bev_reid.engine.io import save_figure
from bev_reid.reid.dataset import ReIDDataset
from bev_reid.reid.evaluator import view_groups
from bev_reid.reid.metrics import rank_metrics
from bev_reid.reid.visualize import crops_to_rgb


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path) -> Path:
    save_figure(fig, out, dpi=110)
    _pyplot().close(fig)
    return Path(out)


def cmc_curve(
    embeddings: dict[str, torch.Tensor],
    ids: torch.Tensor,
    views: Sequence[dict],
    max_rank: int = 20,
) -> dict[str, list[float]]:
    """CMC@1..max_rank of the full-retrieval protocol for each named embedding [N, D]."""
    groups = view_groups(views)
    curves = {}
    for name, emb in embeddings.items():
        emb = torch.nn.functional.normalize(emb.float(), dim=1)
        r = rank_metrics(emb, ids, groups, emb, ids, groups, topk=range(1, max_rank + 1))
        curves[name] = [r[f"Rank-{k}"] for k in range(1, max_rank + 1)]
    return curves


def draw_cmc(curves: dict[str, list[float]], out: str | Path, title: str = "") -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, values in curves.items():
        ks = np.arange(1, len(values) + 1)
        ax.plot(ks, values, marker="o", markersize=3, label=f"{name} (rank-1 {values[0]:.2f})")
    ax.set_xlabel("rank k")
    ax.set_ylabel("CMC: share of queries matched within the top k")
    ax.set_ylim(0, 1.02)
    ax.set_xticks([1, 5, 10, 15, 20])
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title or "full retrieval on validation identities", fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def draw_retrieval(
    dataset: ReIDDataset,
    emb: torch.Tensor,
    out: str | Path,
    queries: int = 6,
    top: int = 6,
    seed: int = 0,
) -> Path:
    """Queries (left) and their top matches from other keyframes.

    A match is drawn green when the identity is right.
    """
    plt = _pyplot()
    ids = torch.tensor(dataset.ids)
    groups = view_groups(dataset.views)
    emb = torch.nn.functional.normalize(emb.float(), dim=1)
    sim = emb @ emb.T  # N x N
    sim[groups.view(-1, 1) == groups.view(1, -1)] = -float("inf")  # not its own keyframe
    has_match = (
        (ids.view(-1, 1) == ids.view(1, -1)) & (groups.view(-1, 1) != groups.view(1, -1))
    ).any(1)
    candidates = torch.nonzero(has_match).flatten().tolist()
    rng = np.random.default_rng(seed)
    chosen = sorted(
        rng.choice(candidates, size=min(queries, len(candidates)), replace=False).tolist()
    )
    ranked = [sim[q].topk(min(top, len(ids) - 1)).indices.tolist() for q in chosen]
    shown = [i for q, r in zip(chosen, ranked, strict=True) for i in [q, *r]]
    rgb = crops_to_rgb(torch.stack([dataset[i][0] for i in shown]), dataset.channel_names)
    fig, axes = plt.subplots(
        len(chosen), top + 1, figsize=(1.5 * (top + 1), 1.7 * len(chosen)), squeeze=False
    )
    n = 0
    for row, (q, r) in enumerate(zip(chosen, ranked, strict=True)):
        for col, i in enumerate([q, *r]):
            ax = axes[row][col]
            ax.imshow(rgb[n][::-1], interpolation="nearest")
            n += 1
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_title(f"query id {ids[q].item()}", fontsize=7)
                colour = "black"
            else:
                right = ids[i] == ids[q]
                colour = "limegreen" if right else "red"
                ax.set_title(
                    f"{'right' if right else 'wrong'} {sim[q, i].item():.2f}",
                    fontsize=7,
                    color=colour,
                )
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
    fig.suptitle(
        "ranked retrieval on validation identities (cosine similarity; own keyframe excluded)",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, out)


def draw_bev_prediction(
    imgs: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor, out: str | Path, title: str = ""
) -> Path:
    """The front camera, the predicted vehicle probability and the GT mask of one keyframe.

    Args:
        imgs: [N, 3, H, W] ImageNet-normalised images (index 1 is CAM_FRONT).
        logits: [1, X, Y]; mask: [1, X, Y].
    """
    from bev_reid.data.keyframes import IMAGENET_MEAN, IMAGENET_STD

    plt = _pyplot()
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    front = (
        (imgs[min(1, imgs.shape[0] - 1)].cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
    )
    prob = torch.sigmoid(logits[0].float()).cpu().numpy()
    gt = mask[0].float().cpu().numpy()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), gridspec_kw={"width_ratios": [2.75, 1, 1]})
    axes[0].imshow(front)
    axes[0].set_title("CAM_FRONT (network input)", fontsize=9)
    # x (forward) up, y (left) to the left: rows flipped, columns flipped
    axes[1].imshow(prob[::-1, ::-1], vmin=0, vmax=1, cmap="magma")
    axes[1].set_title("predicted vehicle probability", fontsize=9)
    axes[2].imshow(gt[::-1, ::-1], vmin=0, vmax=1, cmap="magma")
    axes[2].set_title("ground-truth vehicle mask", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[1:]:
        h, w = prob.shape
        ax.plot([w / 2], [h / 2], marker="^", color="cyan", markersize=6)  # the ego, facing up
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out)
