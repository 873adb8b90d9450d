"""Protocols of re-identification as ReID users expect it, registered with the evaluator.

Each is a function of the processed :class:`~bev_reid.reid.evaluator.Views` and the
:class:`~bev_reid.reid.evaluator.Settings`, ranked by :func:`~bev_reid.reid.metrics.query_results`
(pessimistic ties, chunked), and gives one record per condition, as ``retrieval`` does:

- ``retrieval_gap``: re-identification after a gap. Every query view against the gallery views at
  least ``min_gap_s`` seconds away from it in time (and of other keyframes); views without a
  timestamp take no part. Records add ``min_gap_s``. Near-in-time views of a vehicle are
  near-duplicates that any raw crop matches; this protocol asks what ReID is for.
- ``tracklet``: tracklet queries. Each vehicle's views (query or gallery alike), in time order,
  are cut into runs of ``tracklet_len`` consecutive views (a shorter rest is left out); a tracklet
  is matched by its mean embedding, L2-normalised, against the gallery tracklets whose time span
  neither overlaps nor touches its own (so its own tracklet, and every vehicle seen at the same
  time, is left out, as a view's own keyframe is). A tracklet's condition is that of its views
  (None when they differ). Records add ``tracklet_len``, and count tracklets, not views.
- ``cross_condition`` (after AT-ReID's anytime protocol): the query in one condition, the gallery
  in another. Condition ``all``: every query against the gallery views of the other conditions;
  ``A->B`` (e.g. ``day->night``): queries of condition A against the gallery views of B, for
  every ordered pair present. Identities seen in one condition only have no positive there
  (``num_valid`` says how many queries had one; on nuScenes-format data an identity lives in one
  scene, so one condition).
- ``retrieval_rerank``: the ``retrieval`` protocol ranked by the k-reciprocal distance of
  :mod:`bev_reid.reid.rerank` (``rerank_k1``, ``rerank_k2``, ``rerank_lambda``; records add
  ``k1``, ``k2``, ``lambda``).
- ``neighbours``: what a tracker asks of an embedding when a vehicle comes back. A query's
  gallery holds its own vehicle's views at least ``min_gap_s`` away in time (the positives, as
  in ``retrieval_gap``) and the views of the other vehicles within ``neighbour_radius_m`` of it
  at its own keyframe (the negatives: those a tracker could take for it); views without a place
  (``center``) take no part. A full gallery is mostly vehicles from elsewhere, told apart by the
  street they stand in; this one holds only the hard ones. CMC rank-k, mAP and mINP over that
  gallery (ties ranked pessimistically, negatives first), and ``auc``: the share of (positive,
  negative) pairs whose positive is the nearer (a tie counts half; 0.5 is chance), averaged over
  the valid queries (those with a positive and a negative). Records add ``auc``, ``radius_m``,
  ``min_gap_s`` and ``mean_neighbours`` (negatives per valid query).

Shapes: N views, D embedding dims, T tracklets, L views per tracklet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bev_reid.reid.evaluator import Settings, Views, number, record, register_protocol
from bev_reid.reid.metrics import DEFAULT_MEMORY_BUDGET, QueryResults, query_results, summarize
from bev_reid.reid.rerank import KReciprocal

# Bytes per (query, gallery) pair of a re-ranked chunk: the ranking's work (5), the re-ranking's
# [q, G] block (4), and slack for its pair expansion.
RERANK_BYTES_PER_PAIR = 24


def per_condition(
    protocol: str,
    conditions: list[str | None],
    results: QueryResults,
    s: Settings,
    extra: dict[str, Any] | None = None,
    more: Callable[[torch.Tensor], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Records ``all`` and one per condition present among the queries (conditions [Q]);
    ``more(mask [Q] bool)`` gives further keys of the record of the queries ``mask``."""
    out = []
    for cond in ["all", *sorted({c for c in conditions if c is not None})]:
        mask = torch.tensor([cond == "all" or c == cond for c in conditions], dtype=torch.bool)
        rec = record(protocol, cond, summarize(results.subset(mask), s.topk), s.topk)
        out.append({**rec, **(extra or {}), **(more(mask) if more else {})})
    return out


def _rank(v: Views, q: torch.Tensor, g: torch.Tensor, s: Settings, **kwargs) -> QueryResults:
    """The queries ``q`` [N] bool against the gallery ``g`` [N] bool, keyframes excluded."""
    dev = v.emb.device
    return query_results(
        v.emb[q.to(dev)], v.ids[q], v.groups[q], v.emb[g.to(dev)], v.ids[g], v.groups[g],
        chunk=s.chunk, **kwargs,
    )  # fmt: skip


@register_protocol("retrieval_gap")
def gap_protocol(v: Views, s: Settings) -> list[dict[str, Any]]:
    """Queries against the gallery views ``min_gap_s`` or more away in time (module doc)."""
    timed = torch.isfinite(v.timestamps)
    q, g = v.is_query & timed, v.in_gallery & timed
    results = _rank(
        v, q, g, s, query_spans=v.timestamps[q], gallery_spans=v.timestamps[g],
        min_gap=s.min_gap_s,
    )  # fmt: skip
    conditions = [v.conditions[i] for i in q.nonzero()[:, 0].tolist()]
    return per_condition("retrieval_gap", conditions, results, s, {"min_gap_s": s.min_gap_s})


@dataclass(frozen=True)
class Tracklets:
    """Runs of consecutive views of one identity.

    Attributes:
        members: [T, L] int64 rows (of the views) of each tracklet's views, in time order.
        emb: [T, D] mean embedding of the members, L2-normalised.
        ids: [T] int64 identities.
        spans: [T, 2] float64 first and last timestamp, seconds.
        conditions: T conditions (None where the members differ or are unknown).
    """

    members: torch.Tensor
    emb: torch.Tensor
    ids: torch.Tensor
    spans: torch.Tensor
    conditions: list[str | None]


def make_tracklets(v: Views, among: torch.Tensor, length: int) -> Tracklets:
    """The tracklets of the views ``among`` [N] bool that have a timestamp: each identity's views
    sorted by time (then by row), cut into consecutive runs of ``length``; a rest shorter than
    ``length`` is left out."""
    rows = (among & torch.isfinite(v.timestamps)).nonzero()[:, 0].numpy()
    ids, times = v.ids.numpy()[rows], v.timestamps.numpy()[rows]
    rows = rows[np.lexsort((rows, times, ids))]  # by identity, then time, then row
    runs: list[np.ndarray] = []
    if rows.size:
        cuts = np.flatnonzero(np.diff(v.ids.numpy()[rows])) + 1
        for own in np.split(rows, cuts):
            whole = own.size // length * length
            runs.extend(own[:whole].reshape(-1, length))
    members = torch.from_numpy(np.array(runs, dtype=np.int64).reshape(-1, length))  # T x L
    dim = v.emb.shape[1]
    emb = v.emb[members.reshape(-1).to(v.emb.device)].reshape(-1, length, dim).mean(1)  # T x D
    conds = []
    for m in members.tolist():
        seen = {v.conditions[i] for i in m}
        conds.append(seen.pop() if len(seen) == 1 else None)
    t = v.timestamps[members]  # T x L
    spans = torch.stack([t.amin(1), t.amax(1)], 1) if len(runs) else torch.zeros(0, 2).double()
    return Tracklets(members, F.normalize(emb, dim=1), v.ids[members[:, 0]], spans, conds)


@register_protocol("tracklet")
def tracklet_protocol(v: Views, s: Settings) -> list[dict[str, Any]]:
    """Query tracklets against gallery tracklets of other time spans (module doc)."""
    qt = make_tracklets(v, v.is_query, s.tracklet_len)
    same = bool((v.is_query == v.in_gallery).all())
    gt = qt if same else make_tracklets(v, v.in_gallery, s.tracklet_len)
    num_q, num_g = qt.ids.numel(), gt.ids.numel()
    # Groups are unused (each tracklet its own); the spans do the exclusion.
    results = query_results(
        qt.emb, qt.ids, torch.arange(num_q), gt.emb, gt.ids, torch.arange(num_q, num_q + num_g),
        chunk=s.chunk, query_spans=qt.spans, gallery_spans=gt.spans,
    )  # fmt: skip
    return per_condition("tracklet", qt.conditions, results, s, {"tracklet_len": s.tracklet_len})


def _cat(parts: list[QueryResults], num_gallery: int) -> QueryResults:
    if not parts:
        empty = torch.zeros(0, dtype=torch.int64)
        return QueryResults(empty, empty.double(), empty.double(), empty, num_gallery)
    keys = ("first_rank", "ap", "inp", "num_pos")
    return QueryResults(*(torch.cat([getattr(p, k) for p in parts]) for k in keys), num_gallery)


@register_protocol("cross_condition")
def cross_condition_protocol(v: Views, s: Settings) -> list[dict[str, Any]]:
    """Queries of one condition against gallery views of another (module doc)."""
    present = sorted({c for c in v.conditions if c is not None})
    mask = {c: torch.tensor([x == c for x in v.conditions], dtype=torch.bool) for c in present}
    known = torch.tensor([c is not None for c in v.conditions], dtype=torch.bool)
    parts = []
    for a in present:  # "all": each query condition against the other conditions' gallery
        q, g = v.is_query & mask[a], v.in_gallery & known & ~mask[a]
        if q.any():
            parts.append(_rank(v, q, g, s))
    results = _cat(parts, int((v.in_gallery & known).sum()))
    records = [record("cross_condition", "all", summarize(results, s.topk), s.topk)]
    for a in present:
        for b in present:
            q, g = v.is_query & mask[a], v.in_gallery & mask[b]
            if a != b and q.any() and g.any():
                res = summarize(_rank(v, q, g, s), s.topk)
                records.append(record("cross_condition", f"{a}->{b}", res, s.topk))
    return records


@register_protocol("retrieval_rerank")
def rerank_protocol(v: Views, s: Settings) -> list[dict[str, Any]]:
    """The ``retrieval`` protocol ranked by the k-reciprocal distance (module doc)."""
    q, g = v.is_query, v.in_gallery
    extra = {"k1": s.rerank_k1, "k2": s.rerank_k2, "lambda": s.rerank_lambda}
    union = (q | g).nonzero()[:, 0]  # the views re-ranking encodes, each once
    conditions = [v.conditions[i] for i in q.nonzero()[:, 0].tolist()]
    if union.numel() == 0:
        return per_condition("retrieval_rerank", conditions, _cat([], 0), s, extra)
    dev = v.emb.device
    rows = torch.full((q.numel(),), -1, dtype=torch.int64)
    rows[union] = torch.arange(union.numel())
    kr = KReciprocal(v.emb[union.to(dev)], s.rerank_k1, s.rerank_k2, s.rerank_lambda)
    scores = kr.scorer(rows[q].to(dev), rows[g].to(dev))
    per_query = max(int(g.sum()), 1) * RERANK_BYTES_PER_PAIR
    chunk = s.chunk or max(1, DEFAULT_MEMORY_BUDGET // per_query)
    results = query_results(
        v.emb[q.to(dev)], v.ids[q], v.groups[q], v.emb[g.to(dev)], v.ids[g], v.groups[g],
        chunk=chunk, scores=scores,
    )  # fmt: skip
    return per_condition("retrieval_rerank", conditions, results, s, extra)


@dataclass(frozen=True)
class NeighbourResults:
    """Per-query outcome of the ``neighbours`` protocol (Q queries, the placed ones): their rows
    among the views, the ranking's results over each query's own gallery, its AUC (NaN when
    invalid) and its negatives (0 when invalid)."""

    rows: list[int]
    ranking: QueryResults
    auc: torch.Tensor  # [Q] float64
    negatives: torch.Tensor  # [Q] int64


def _ranked_gallery(pos: np.ndarray, neg: np.ndarray) -> tuple[int, float, float, float]:
    """First rank (1-based), AP, INP and AUC of positive distances ``pos`` [P] and negative
    distances ``neg`` [M] (both non-empty); ties rank the negatives first."""
    dist = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
    order = np.lexsort((is_pos, dist))  # by distance, then negatives (False) first
    ranks = np.flatnonzero(is_pos[order]) + 1  # 1-based ranks of the positives
    ap = float(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    inp = len(ranks) / float(ranks[-1])
    neg_sorted = np.sort(neg)
    below = np.searchsorted(neg_sorted, pos, side="left")  # negatives nearer than each positive
    ties = np.searchsorted(neg_sorted, pos, side="right") - below
    auc = float(np.sum(len(neg) - below - ties + 0.5 * ties)) / (len(pos) * len(neg))
    return int(ranks[0]), ap, inp, auc


def _rows_by(keys: np.ndarray, rows: np.ndarray) -> dict[int, np.ndarray]:
    """{key: the rows among ``rows`` whose ``keys`` [N] is key}."""
    if rows.size == 0:
        return {}
    order = rows[np.argsort(keys[rows], kind="stable")]
    values, starts = np.unique(keys[order], return_index=True)
    return dict(zip(values.tolist(), np.split(order, starts[1:]), strict=True))


def neighbour_results(v: Views, q: torch.Tensor, g: torch.Tensor, radius: float,
                      min_gap: float = 0.0) -> NeighbourResults:  # fmt: skip
    """The ``neighbours`` protocol's per-query results for queries ``q`` [N] bool against the
    gallery views ``g`` [N] bool: negatives within ``radius`` metres, positives ``min_gap``
    seconds or more away (0: any other keyframe, timestamps or not) (module doc)."""
    emb = v.emb.detach().cpu().double().numpy()
    ids, groups, times = v.ids.numpy(), v.groups.numpy(), v.timestamps.numpy()
    places = v.places.numpy()
    placed = np.isfinite(places).all(1)
    gallery = g.numpy() & placed
    queries = np.flatnonzero(q.numpy() & placed)
    n = len(queries)
    first, num_pos, negatives = (np.zeros(n, np.int64) for _ in range(3))
    ap, inp, auc = np.zeros(n), np.zeros(n), np.full(n, np.nan)
    gallery_rows = np.flatnonzero(gallery)
    by_id, by_group = _rows_by(ids, gallery_rows), _rows_by(groups, gallery_rows)
    none = np.zeros(0, np.int64)
    for row, i in enumerate(queries):
        own = by_id.get(int(ids[i]), none)
        own = own[groups[own] != groups[i]]
        if min_gap > 0:
            own = own[np.abs(times[own] - times[i]) >= min_gap]  # NaN: never far enough
        near = by_group.get(int(groups[i]), none)
        near = near[ids[near] != ids[i]]
        near = near[np.hypot(*(places[near] - places[i]).T) <= radius]
        if len(own) == 0 or len(near) == 0:
            continue
        dist = 1.0 - emb[np.concatenate([own, near])] @ emb[i]
        pos, neg = dist[: len(own)], dist[len(own) :]
        first[row], ap[row], inp[row], auc[row] = _ranked_gallery(pos, neg)
        num_pos[row], negatives[row] = len(own), len(near)
    ranking = QueryResults(torch.from_numpy(first), torch.from_numpy(ap), torch.from_numpy(inp),
                           torch.from_numpy(num_pos), int(gallery.sum()))  # fmt: skip
    return NeighbourResults(
        queries.tolist(), ranking, torch.from_numpy(auc), torch.from_numpy(negatives)
    )


@register_protocol("neighbours")
def neighbour_protocol(v: Views, s: Settings) -> list[dict[str, Any]]:
    """Queries against their own vehicle's other views and their neighbours (module doc)."""
    res = neighbour_results(v, v.is_query, v.in_gallery, s.neighbour_radius_m, s.min_gap_s)
    conditions = [v.conditions[i] for i in res.rows]
    extra = {"radius_m": s.neighbour_radius_m, "min_gap_s": s.min_gap_s}

    def means(mask: torch.Tensor) -> dict[str, Any]:
        valid = mask & res.ranking.valid
        if not valid.any():
            return {"auc": None, "mean_neighbours": None}
        return {"auc": number(res.auc[valid].mean()),
                "mean_neighbours": number(res.negatives[valid].double().mean())}  # fmt: skip

    return per_condition("neighbours", conditions, res.ranking, s, extra, means)
