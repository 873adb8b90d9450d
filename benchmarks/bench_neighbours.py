"""Speed of the ``neighbours`` protocol against a plain per-query evaluation, in one run.

    python benchmarks/bench_neighbours.py [--keyframes 400] [--vehicles 30] [--ref-queries 500]

Data: a street of vehicles seen at ``--keyframes`` keyframes, ``--vehicles`` of them at each
(positions uniform in a 64 m square, so a view has a few neighbours within 8 m), 0.5 s apart; an
identity lives for ten keyframes (its views 3 s or more away are the positives);
embeddings are noisy copies of the identity's centre (D = 128). Ours is the registered protocol
through :class:`~bev_reid.reid.evaluator.ReIDEvaluator` (all views queries and gallery). The
reference does what a user would write: per query, the similarity to every view, masks for the
own views 3 s away and the neighbours, and the AUC over every (positive, negative) pair
as a dense comparison matrix. It is timed on the first ``--ref-queries`` queries, extrapolated
linearly, and its AUC on them is compared with ours.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bev_reid.reid.evaluator import ReIDEvaluator  # noqa: E402
from bev_reid.reid.protocols import neighbour_results  # noqa: E402

RADIUS = 8.0
MIN_GAP = 3.0  # seconds; keyframes are 0.5 s apart


def make_views(keyframes: int, vehicles: int, life: int = 10, dim: int = 128, seed: int = 0):
    """(emb [N, D] float32 unit rows, ids [N], groups [N], places [N, 2])."""
    g = np.random.default_rng(seed)
    slots = np.arange(keyframes * vehicles)
    groups = slots // vehicles
    ids = (slots % vehicles) + vehicles * (groups // life)  # a vehicle lives ``life`` keyframes
    num_ids = int(ids.max()) + 1
    centres = g.normal(size=(num_ids, dim))
    emb = centres[ids] + 3.0 * g.normal(size=(ids.size, dim))  # AUC about 0.8
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    places = g.uniform(-32, 32, size=(ids.size, 2))
    return emb.astype(np.float32), ids, groups, places


def reference(emb, ids, groups, places, times, queries: int) -> np.ndarray:
    """[queries] AUC per query (NaN without a positive or a negative), the plain way."""
    emb = emb.astype(np.float64)
    out = np.full(queries, np.nan)
    for q in range(queries):
        sim = emb @ emb[q]
        own = (ids == ids[q]) & (groups != groups[q]) & (np.abs(times - times[q]) >= MIN_GAP)
        near = (ids != ids[q]) & (groups == groups[q])
        near &= np.linalg.norm(places - places[q], axis=1) <= RADIUS
        if own.any() and near.any():
            p, n = sim[own][:, None], sim[near][None, :]
            out[q] = np.mean((p > n) + 0.5 * (p == n))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keyframes", type=int, default=400)
    ap.add_argument("--vehicles", type=int, default=30)
    ap.add_argument("--ref-queries", type=int, default=500)
    args = ap.parse_args()
    torch.set_num_threads(1)
    emb, ids, groups, places = make_views(args.keyframes, args.vehicles)
    n = len(ids)
    times = 0.5 * groups
    ev = ReIDEvaluator(("neighbours",), device="cpu", neighbour_radius_m=RADIUS, min_gap_s=MIN_GAP)
    ev.process(torch.from_numpy(emb), torch.from_numpy(ids), torch.from_numpy(groups),
               timestamps=torch.from_numpy(times), places=torch.from_numpy(places))  # fmt: skip
    start = time.perf_counter()
    (rec,) = ev.evaluate()
    ours = time.perf_counter() - start
    views = ev.views()
    res = neighbour_results(views, views.is_query, views.in_gallery, RADIUS, MIN_GAP)
    k = min(args.ref_queries, n)
    start = time.perf_counter()
    ref = reference(emb, ids, groups, places, times, k)
    ref_s = (time.perf_counter() - start) * n / k
    diff = np.nanmax(np.abs(ref - res.auc[:k].numpy()))
    same_valid = np.array_equal(np.isnan(ref), np.isnan(res.auc[:k].numpy()))
    print(
        f"{n} views ({args.keyframes} keyframes x {args.vehicles} vehicles), radius {RADIUS} m,"
        f" {rec['num_valid']} valid queries, {rec['mean_neighbours']:.1f} neighbours each"
    )
    print(f"neighbours protocol (rank-k, mAP, mINP, AUC): {ours:.2f} s, auc {rec['auc']:.4f}")
    print(f"plain per-query AUC alone ({k} queries timed, extrapolated): {ref_s:.2f} s")
    print(f"ratio reference / ours: {ref_s / ours:.1f}x; largest AUC difference on the timed "
          f"queries {diff:.1e}, same valid queries: {same_valid}")  # fmt: skip


if __name__ == "__main__":
    main()
