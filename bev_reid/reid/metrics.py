"""Re-identification metrics: CMC rank-k, mAP and mINP over a gallery, chunked over the queries.

Conventions (fast-reid's, with two deliberate differences stated here):

- Similarity: dot product of L2-normalised embeddings (distance = 1 - cos); higher ranks first.
- Exclusion by *group*: a group is the keyframe (sample) a view comes from. For each query, every
  gallery item of the query's group is removed, whatever its identity (fast-reid removes items of
  the same identity *and* camera). This also removes the query itself when query and gallery are
  the same set.
- Exclusion by *time* (optional): with time spans ``[start, end]`` (seconds; a single time is a span
  of length 0), a gallery item is also removed when its span overlaps or touches the query's, or
  lies closer to it than ``min_gap``: ``gap = max(g_start - q_end, q_start - g_end)``, removed when
  ``gap <= 0`` or ``gap < min_gap``. A NaN time removes nothing. This gives re-identification
  after a gap (views) and tracklets of other time spans.
- Ties are broken pessimistically: among items of equal similarity, negatives rank before
  positives. The ranking is thus the sort by the key (-similarity, is_positive); the order inside
  a run of tied positives (or tied negatives) changes no metric. fast-reid ranks with
  ``np.argsort`` (quicksort: ties in no defined order) and Market-1501's MATLAB code with a stable
  sort (ties by gallery index); both agree with ours whenever no negative ties a positive. We chose
  the pessimistic rule because it is deterministic and cannot flatter a model: collapsed or
  duplicated embeddings score as badly as they are, not by the luck of the gallery order.
- CMC@k: share of valid queries whose first correct match ranks within the top k.
  AP: mean over the query's positives of (positives ranked at or before it) / (its rank).
  INP: (number of positives) / (rank of the last positive). mAP and mINP average over valid queries.
- A query is valid when at least one positive remains in its gallery; the others are skipped
  (counted in ``num_queries`` but not in ``num_valid`` nor in any mean). Metrics over no valid
  query (an empty gallery, say) are NaN. Values are fractions in [0, 1] (fast-reid prints percent).

How it is computed without a per-query loop: for a chunk of queries the similarity block
[q, G] is formed, same-group items are set to -inf, and each row is sorted (values only). The
positives of a query are looked up through a per-identity table of the gallery, so for a positive
of similarity p its rank follows from two binary searches:
``rank = 1 + #negatives >= p + #positives ranked before it``, with
``#negatives >= p = #items >= p - #positives >= p`` (counting ``>=`` is the pessimistic tie rule).
On CPU the rows are sorted in place by numpy, whose SIMD sort is about ten times faster than
``torch.sort`` there; on CUDA ``torch.sort`` is used. Memory per chunk is about 5 bytes per
(query, gallery) pair (22 with time spans), and the chunk is sized to ``memory_budget``. The
similarity block may come from the caller (``scores``), e.g. re-ranked distances
(:mod:`bev_reid.reid.rerank`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "DEFAULT_TOPK",
    "QueryResults",
    "cmc_single_shot",
    "query_results",
    "rank_metrics",
    "summarize",
]

DEFAULT_TOPK = (1, 5, 10, 20)
DEFAULT_MEMORY_BUDGET = 256 * 2**20  # bytes for one chunk's work tensors
# Work bytes per (query, gallery) pair of a chunk: the similarity (4) and the same-group mask (1);
# on CUDA torch.sort also returns new values (4) and int64 indices (8).
_BYTES_PER_PAIR = {"cpu": 5, "cuda": 17}
_SPAN_BYTES_PER_PAIR = 17  # with time spans: two float64 gap temporaries and a bool mask
_PARALLEL_SORT_MIN = 1 << 21  # elements; below, handing rows to threads costs more than it saves


@dataclass(frozen=True)
class QueryResults:
    """Per-query outcome of a ranking; invalid queries (no positive) hold 0 everywhere.

    Attributes:
        first_rank: [Q] int64, 1-based rank of the first correct match (0 when invalid).
        ap: [Q] float64 average precision.
        inp: [Q] float64 inverse negative penalty.
        num_pos: [Q] int64 positives in the query's gallery (after group exclusion).
        num_gallery: G, the gallery size before exclusion.
    """

    first_rank: torch.Tensor
    ap: torch.Tensor
    inp: torch.Tensor
    num_pos: torch.Tensor
    num_gallery: int

    @property
    def valid(self) -> torch.Tensor:
        """[Q] bool: queries with at least one positive."""
        return self.num_pos > 0

    def subset(self, mask: torch.Tensor) -> QueryResults:
        """The results of the queries selected by ``mask`` ([Q] bool or index tensor)."""
        return QueryResults(
            self.first_rank[mask], self.ap[mask], self.inp[mask], self.num_pos[mask],
            self.num_gallery,
        )  # fmt: skip


def _codes(query: torch.Tensor, gallery: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Maps the labels of both sets to 0..U-1 (int64), so any integer labels work as table keys."""
    uniq, inv = torch.unique(
        torch.cat([query.reshape(-1), gallery.reshape(-1)]), return_inverse=True
    )
    return inv[: query.numel()], inv[query.numel() :], uniq.numel()


def _check_inputs(q_emb, q_ids, q_groups, g_emb, g_ids, g_groups) -> None:
    if q_emb.dim() != 2 or g_emb.dim() != 2 or q_emb.shape[1] != g_emb.shape[1]:
        raise ValueError(
            f"embeddings must be [Q, D] and [G, D], got {tuple(q_emb.shape)} and "
            f"{tuple(g_emb.shape)}"
        )
    for name, t, n in (
        ("query_ids", q_ids, q_emb.shape[0]), ("query_groups", q_groups, q_emb.shape[0]),
        ("gallery_ids", g_ids, g_emb.shape[0]), ("gallery_groups", g_groups, g_emb.shape[0]),
    ):  # fmt: skip
        if t.shape != (n,):
            raise ValueError(f"{name} must be [{n}], got {tuple(t.shape)}")
        if t.is_floating_point() or t.is_complex():
            raise ValueError(f"{name} must hold integers, got {t.dtype}")
    if not (torch.isfinite(q_emb).all() and torch.isfinite(g_emb).all()):
        raise ValueError("embeddings hold NaN or inf; ranks would be undefined")


def auto_chunk(
    num_gallery: int,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    device: str = "cpu",
    spans: bool = False,
) -> int:
    """Queries per chunk so that one chunk's [q, G] work tensors fit in ``memory_budget`` bytes
    (``spans``: with time exclusion)."""
    per_pair = _BYTES_PER_PAIR.get(torch.device(device).type, max(_BYTES_PER_PAIR.values()))
    per_pair += _SPAN_BYTES_PER_PAIR if spans else 0
    return max(1, memory_budget // (max(num_gallery, 1) * per_pair))


def _spans(t: torch.Tensor | None, n: int, name: str, device: torch.device) -> torch.Tensor | None:
    """[n, 2] float64 (start, end) from [n] times or [n, 2] spans; None stays None."""
    if t is None:
        return None
    t = torch.as_tensor(t).to(device=device, dtype=torch.float64)
    if t.dim() == 1:
        t = t[:, None].expand(-1, 2)
    if t.shape != (n, 2):
        raise ValueError(f"{name} must be [{n}] times or [{n}, 2] spans, got {tuple(t.shape)}")
    return t


def _sort_rows_(block: np.ndarray, pool: ThreadPoolExecutor | None, workers: int) -> None:
    """Sorts each row of a [q, G] float32 array in place, row blocks spread over the pool (numpy
    releases the GIL while sorting; its SIMD sort is ~10x faster than torch.sort on CPU)."""
    if pool is None or block.shape[0] < workers or block.size < _PARALLEL_SORT_MIN:
        block.sort(axis=1)
        return
    parts = np.array_split(np.arange(block.shape[0]), workers)
    list(pool.map(lambda r: block[r[0] : r[-1] + 1].sort(axis=1), [r for r in parts if r.size]))


@torch.no_grad()
def query_results(
    query_emb: torch.Tensor,
    query_ids: torch.Tensor,
    query_groups: torch.Tensor,
    gallery_emb: torch.Tensor,
    gallery_ids: torch.Tensor,
    gallery_groups: torch.Tensor,
    chunk: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    query_spans: torch.Tensor | None = None,
    gallery_spans: torch.Tensor | None = None,
    min_gap: float = 0.0,
    scores: Callable[[int, int, torch.Tensor], None] | None = None,
) -> QueryResults:
    """Ranks every query against the gallery and returns per-query first rank, AP and INP.

    Args: as ``rank_metrics``, and:
        query_spans: [Q] times or [Q, 2] (start, end) spans in seconds (NaN: unknown); with
            ``gallery_spans``, gallery items near the query in time are excluded (module doc).
        gallery_spans: [G] times or [G, 2] spans.
        min_gap: seconds a gallery span must lie away from the query's.
        scores: ``scores(s, e, out)`` writes the [e - s, G] float32 similarities of queries
            s..e-1 (higher ranks first, finite) into ``out``, instead of the dot products of the
            embeddings; ``chunk`` should then be sized for its work too.

    Computation runs on ``query_emb``'s device; results are on CPU.
    """
    _check_inputs(query_emb, query_ids, query_groups, gallery_emb, gallery_ids, gallery_groups)
    if (query_spans is None) != (gallery_spans is None):
        raise ValueError("query_spans and gallery_spans go together: give both or neither")
    device = query_emb.device
    num_q, num_g = query_emb.shape[0], gallery_emb.shape[0]
    q_emb = query_emb.detach().float()
    g_emb = gallery_emb.detach().to(device=device, dtype=torch.float32)
    q_id, g_id, num_ids = _codes(query_ids.to(device), gallery_ids.to(device))
    q_grp, g_grp, _ = _codes(query_groups.to(device), gallery_groups.to(device))
    q_grp, g_grp = q_grp.to(torch.int32), g_grp.to(torch.int32)  # half the bytes in the [q, G] mask
    q_span = _spans(query_spans, num_q, "query_spans", device)  # Q x 2 or None
    g_span = _spans(gallery_spans, num_g, "gallery_spans", device)  # G x 2 or None

    # Gallery items of identity c are g_order[id_start[c] : id_start[c] + id_count[c]].
    g_order = torch.argsort(g_id, stable=True)  # G
    id_count = torch.bincount(g_id, minlength=num_ids)  # U
    id_start = torch.cumsum(id_count, 0) - id_count  # U

    first_rank = torch.zeros(num_q, dtype=torch.int64, device=device)
    ap = torch.zeros(num_q, dtype=torch.float64, device=device)
    inp = torch.zeros(num_q, dtype=torch.float64, device=device)
    num_pos = torch.zeros(num_q, dtype=torch.int64, device=device)
    if num_g == 0 or num_q == 0:
        return _to_cpu(first_rank, ap, inp, num_pos, num_g)
    spans = q_span is not None
    if chunk is None:
        chunk = auto_chunk(num_g, memory_budget, device, spans)
    chunk = max(1, int(chunk))
    chunk = min(chunk, num_q)
    # Work buffers reused by every chunk: fresh ones would cost a page fault per 4 kB each time.
    sim_buf = torch.empty(chunk, num_g, device=device)  # chunk x G
    mask_buf = torch.empty(chunk, num_g, dtype=torch.bool, device=device)  # chunk x G
    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(threads) if device.type == "cpu" and threads > 1 else None
    try:
        for s in range(0, num_q, chunk):
            e = min(s + chunk, num_q)
            sim = sim_buf[: e - s]
            if scores is None:
                torch.mm(q_emb[s:e], g_emb.T, out=sim)  # q x G
            else:
                scores(s, e, sim)
            excluded = mask_buf[: e - s]
            torch.eq(g_grp[None, :], q_grp[s:e, None], out=excluded)  # q x G
            if spans:
                excluded |= _near_in_time(q_span[s:e], g_span, min_gap)
            _rank_chunk(
                q_id[s:e], g_order, id_start, id_count, sim, excluded, pool,
                first_rank[s:e], ap[s:e], inp[s:e], num_pos[s:e],
            )  # fmt: skip
    finally:
        if pool is not None:
            pool.shutdown()
    return _to_cpu(first_rank, ap, inp, num_pos, num_g)


def _near_in_time(q_span: torch.Tensor, g_span: torch.Tensor, min_gap: float) -> torch.Tensor:
    """[q, G] bool: gallery spans [G, 2] that overlap, touch or lie closer than ``min_gap`` to
    the query spans [q, 2] (module doc); False where a time is NaN."""
    gap = g_span[None, :, 0] - q_span[:, None, 1]  # q x G, gallery after the query
    torch.maximum(gap, q_span[:, None, 0] - g_span[None, :, 1], out=gap)  # or before it
    return (gap <= 0) | (gap < min_gap)


def _rank_chunk(
    q_id, g_order, id_start, id_count, sim, excluded, pool, first_rank, ap, inp, num_pos,
) -> None:  # fmt: skip
    """Ranks q queries against the gallery from their similarities ``sim`` [q, G] (overwritten)
    and the excluded items ``excluded`` [q, G] bool; writes into the q-long output views."""
    num_g = sim.shape[1]
    device = sim.device
    # Candidate positives: all gallery views of the query's identity.
    c = q_id  # q
    cnt = id_count[c]  # q
    cmax = int(cnt.max())
    if cmax == 0:
        return
    slot = torch.arange(cmax, device=device)  # C
    in_id = slot[None, :] < cnt[:, None]  # q x C
    cand = g_order[torch.where(in_id, id_start[c][:, None] + slot[None, :], 0)]  # q x C
    is_pos = in_id & ~excluded.gather(1, cand)  # q x C

    pos_sim = torch.where(is_pos, sim.gather(1, cand), math.inf)  # q x C, padding +inf
    pos_sim = pos_sim.sort(dim=1).values  # q x C ascending; real positives first
    npos = is_pos.sum(1)  # q
    sim.masked_fill_(excluded, -math.inf)  # excluded items rank below all
    if device.type == "cpu":
        _sort_rows_(sim.numpy(), pool, torch.get_num_threads())  # in place, q x G ascending
    else:
        sim = sim.sort(dim=1).values  # q x G ascending

    # For the positive at ascending slot j (0-based) of a query with P positives:
    #   items_ge[j] = #gallery items (positives included) with similarity >= p_j,
    #   pos_ge[j]   = #positives with similarity >= p_j,
    #   neg_ge[j]   = items_ge - pos_ge: negatives that rank before it (ties: pessimistic),
    #   i = P - j   = its 1-based place among the positives (best positive: i = 1),
    #   rank        = neg_ge + i.
    items_ge = num_g - torch.searchsorted(sim, pos_sim, right=False)  # q x C
    pos_ge = npos[:, None] - torch.searchsorted(pos_sim, pos_sim, right=False)  # q x C
    neg_ge = items_ge - pos_ge  # q x C
    i = npos[:, None] - slot[None, :]  # q x C (<= 0 on padding)
    real = i > 0  # q x C
    rank = (neg_ge + i).clamp(min=1).double()  # q x C
    prec = torch.where(real, i.double() / rank, 0.0)  # q x C
    valid = npos > 0  # q
    p = npos.clamp(min=1)
    best = (npos - 1).clamp(min=0)[:, None]  # slot of the best positive
    first_rank.copy_(torch.where(valid, (neg_ge.gather(1, best)[:, 0] + 1), 0))
    ap.copy_(prec.sum(1) / p)
    inp.copy_(torch.where(valid, npos.double() / rank[:, 0], 0.0))  # slot 0: last positive
    num_pos.copy_(npos)


def _to_cpu(first_rank, ap, inp, num_pos, num_g) -> QueryResults:
    return QueryResults(first_rank.cpu(), ap.cpu(), inp.cpu(), num_pos.cpu(), num_g)


def summarize(results: QueryResults, topk: Sequence[int] = DEFAULT_TOPK) -> dict[str, float]:
    """CMC ``Rank-k`` for each k, ``mAP``, ``mINP`` and the counts, from per-query results."""
    valid = results.valid
    num_valid = int(valid.sum())
    out: dict[str, float] = {}
    for k in topk:
        hit = (results.first_rank[valid] <= k).double()
        out[f"Rank-{k}"] = float(hit.mean()) if num_valid else math.nan
    out["mAP"] = float(results.ap[valid].mean()) if num_valid else math.nan
    out["mINP"] = float(results.inp[valid].mean()) if num_valid else math.nan
    out["num_queries"] = int(valid.numel())
    out["num_valid"] = num_valid
    out["num_gallery"] = results.num_gallery
    return out


def rank_metrics(
    query_emb: torch.Tensor,
    query_ids: torch.Tensor,
    query_groups: torch.Tensor,
    gallery_emb: torch.Tensor,
    gallery_ids: torch.Tensor,
    gallery_groups: torch.Tensor,
    topk: Sequence[int] = DEFAULT_TOPK,
    chunk: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> dict[str, float]:
    """CMC, mAP and mINP of queries ranked against a gallery (conventions: module docstring).

    Args:
        query_emb: [Q, D] L2-normalised embeddings (CPU or CUDA; the work runs on this device).
        query_ids: [Q] integer identity of each query.
        query_groups: [Q] integer group (keyframe) of each query.
        gallery_emb: [G, D] L2-normalised embeddings.
        gallery_ids: [G] integer identities.
        gallery_groups: [G] integer groups; items of the query's group are excluded for it.
        topk: the k of the CMC values reported.
        chunk: queries per chunk; None sizes it to ``memory_budget``.
        memory_budget: bytes allowed for one chunk's [chunk, G] work tensors.

    Returns:
        ``{"Rank-k": ..., "mAP": ..., "mINP": ..., "num_queries", "num_valid", "num_gallery"}``;
        the metrics are fractions, NaN when no query is valid.
    """
    res = query_results(
        query_emb, query_ids, query_groups, gallery_emb, gallery_ids, gallery_groups,
        chunk=chunk, memory_budget=memory_budget,
    )  # fmt: skip
    return summarize(res, topk)


def cmc_single_shot(
    emb: torch.Tensor,
    ids: torch.Tensor,
    groups: torch.Tensor,
    timestamps: torch.Tensor | None = None,
    trials: int = 10,
    seed: int = 0,
    topk: Sequence[int] = DEFAULT_TOPK,
    min_gap: float = 0.0,
) -> dict[str, float]:
    """Single-shot CMC of the original method, averaged over random trials.

    In each trial, every identity with views in at least two groups contributes one probe view
    and one gallery view from another group (and, with ``timestamps``, at least ``min_gap`` away
    in time), drawn at random; each probe is ranked against the gallery of one view per identity
    (same-group items excluded and ties pessimistic, as in ``rank_metrics``). Draws come from
    ``numpy.random.default_rng(seed)`` over the identities in increasing order: a seed gives the
    same result on any device.

    Args:
        emb: [N, D] L2-normalised embeddings of all views.
        ids: [N] integer identities.
        groups: [N] integer groups (keyframes).
        timestamps: optional [N] times (any unit); with ``min_gap`` > 0 a gallery view must be at
            least that far in time from its probe.
        trials: number of random draws averaged.
        seed: seed of the draws.
        topk: the k of the CMC values.
        min_gap: minimum |t_probe - t_gallery| when ``timestamps`` is given.

    Returns:
        ``{"Rank-k": mean over trials, ..., "num_identities": identities drawn per trial,
        "trials": trials}``; NaN metrics when fewer than one identity qualifies.
    """
    ids, groups = ids.to(emb.device), groups.to(emb.device)
    ids_np = ids.detach().cpu().numpy()
    grp_np = groups.detach().cpu().numpy()
    t_np = None if timestamps is None else timestamps.detach().cpu().double().numpy()
    order = np.argsort(ids_np, kind="stable")
    _, start, count = np.unique(ids_np[order], return_index=True, return_counts=True)

    # Per identity: its views, and those views that have at least one admissible partner.
    pools: list[tuple[np.ndarray, np.ndarray]] = []
    for s, n in zip(start, count, strict=True):
        views = order[s : s + n]
        if np.unique(grp_np[views]).size < 2:
            continue
        ok = grp_np[views][:, None] != grp_np[views][None, :]  # n x n admissible pairs
        if t_np is not None and min_gap > 0:
            ok &= np.abs(t_np[views][:, None] - t_np[views][None, :]) >= min_gap
        probes = views[ok.any(1)]
        if probes.size:
            pools.append((views, probes))
    out = {f"Rank-{k}": math.nan for k in topk}
    out.update(num_identities=len(pools), trials=int(trials))
    if not pools or trials < 1:
        return out

    rng = np.random.default_rng(seed)
    sums = dict.fromkeys(topk, 0.0)
    for _ in range(trials):
        probe_idx = np.empty(len(pools), dtype=np.int64)
        gal_idx = np.empty(len(pools), dtype=np.int64)
        for n, (views, probes) in enumerate(pools):
            p = probes[rng.integers(probes.size)]
            ok = grp_np[views] != grp_np[p]
            if t_np is not None and min_gap > 0:
                ok &= np.abs(t_np[views] - t_np[p]) >= min_gap
            partners = views[ok]
            probe_idx[n], gal_idx[n] = p, partners[rng.integers(partners.size)]
        pi = torch.from_numpy(probe_idx).to(emb.device)
        gi = torch.from_numpy(gal_idx).to(emb.device)
        res = rank_metrics(emb[pi], ids[pi], groups[pi], emb[gi], ids[gi], groups[gi], topk=topk)
        for k in topk:
            sums[k] += res[f"Rank-{k}"]
    out.update({f"Rank-{k}": sums[k] / trials for k in topk})
    return out
