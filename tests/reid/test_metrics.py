"""ReID metrics: a hand-computed case, a plain per-query numpy reference, edge cases, protocols."""

import math

import numpy as np
import pytest
import torch

from bev_reid.reid.metrics import (
    cmc_single_shot,
    query_results,
    rank_metrics,
)

# ---------------------------------------------------------------------------------------------
# A case small enough to rank by hand.
#
# Embeddings are 2-d and dyadic, so every similarity is exact; the queries are unit axes, so a
# query's similarity to a gallery item is one of the item's coordinates (the metrics only use dot
# products; normalisation is the caller's business).
#
#   gallery  id  group  emb (x, y)
#   g0        1   10    (0.75, 0.00)
#   g1        2   11    (0.50, 0.50)
#   g2        1   12    (0.50, 0.25)
#   g3        3   13    (0.25, 0.75)
#   g4        1   14    (0.00, 0.50)
#   g5        2   10    (1.00, 0.25)
#
# qA: id 1, group 10, emb (1, 0): similarity = x. g0 (its own keyframe, same id) and g5 (another
#     vehicle of the same keyframe, the most similar item) are excluded. Ranked: g1 0.5 (neg) ties
#     g2 0.5 (pos): pessimistic, the negative first -> g1 r1, g2 r2; g3 0.25 r3; g4 0.0 (pos) r4.
#     Positives at ranks 2, 4: first = 2; AP = (1/2 + 2/4) / 2 = 1/2; INP = 2/4 = 1/2.
# qB: id 2, group 30, emb (0, 1): similarity = y; nothing excluded. Ranked: g3 0.75 (neg) r1;
#     g1 0.5 (pos) ties g4 0.5 (neg) -> g4 r2, g1 r3; g2 0.25 (neg) ties g5 0.25 (pos) -> g2 r4,
#     g5 r5; g0 0.0 r6. Positives at 3, 5: first = 3; AP = (1/3 + 2/5) / 2 = 11/30; INP = 2/5.
#     (Ties by gallery index would put g1 at rank 2: the case tells the two rules apart.)
# qC: id 3, group 13: identity 3's only view g3 is in the query's own group -> no positive,
#     skipped (counted in num_queries only).
# qD: id 2, group 12, emb (1, 0): similarity = x; g2 (id 1, same keyframe) excluded. Ranked:
#     g5 1.0 (pos) r1; g0 0.75 r2; g1 0.5 (pos) r3; g3 r4; g4 r5.
#     Positives at 1, 3: first = 1; AP = (1/1 + 2/3) / 2 = 5/6; INP = 2/3.
#
# Over the 3 valid queries: Rank-1 = 1/3 (qD), Rank-2 = 2/3 (qA, qD), Rank-3 = Rank-5 = 1;
# mAP = (1/2 + 11/30 + 5/6) / 3 = 17/30; mINP = (1/2 + 2/5 + 2/3) / 3 = 47/90.
# ---------------------------------------------------------------------------------------------

HAND_GALLERY = dict(
    emb=[[0.75, 0.0], [0.5, 0.5], [0.5, 0.25], [0.25, 0.75], [0.0, 0.5], [1.0, 0.25]],
    ids=[1, 2, 1, 3, 1, 2],
    groups=[10, 11, 12, 13, 14, 10],
)
HAND_QUERIES = dict(
    emb=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]],
    ids=[1, 2, 3, 2],
    groups=[10, 30, 13, 12],
)
HAND_EXPECTED = {
    "Rank-1": 1 / 3,
    "Rank-2": 2 / 3,
    "Rank-3": 1.0,
    "Rank-5": 1.0,
    "mAP": 17 / 30,
    "mINP": 47 / 90,
    "num_queries": 4,
    "num_valid": 3,
    "num_gallery": 6,
}


def _tensors(d, perm=None):
    emb, ids, groups = torch.tensor(d["emb"]), torch.tensor(d["ids"]), torch.tensor(d["groups"])
    if perm is not None:
        emb, ids, groups = emb[perm], ids[perm], groups[perm]
    return emb, ids, groups


def test_hand_computed_case():
    q, g = _tensors(HAND_QUERIES), _tensors(HAND_GALLERY)
    out = rank_metrics(*q, *g, topk=(1, 2, 3, 5))
    assert out == pytest.approx(HAND_EXPECTED, rel=1e-12)

    res = query_results(*q, *g)
    assert res.first_rank.tolist() == [2, 3, 0, 1]
    assert res.num_pos.tolist() == [2, 2, 0, 2]
    assert res.ap.tolist() == pytest.approx([1 / 2, 11 / 30, 0.0, 5 / 6])
    assert res.inp.tolist() == pytest.approx([1 / 2, 2 / 5, 0.0, 2 / 3])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tie_rule_does_not_depend_on_gallery_order(seed):
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(seed))
    out = rank_metrics(*_tensors(HAND_QUERIES), *_tensors(HAND_GALLERY, perm), topk=(1, 2, 3, 5))
    assert out == pytest.approx(HAND_EXPECTED, rel=1e-12)


def test_collapsed_embeddings_score_worst_case():
    # All similarities tie: pessimistically every negative ranks before every positive.
    g_ids = torch.tensor([0, 1, 2, 3, 0, 4])  # one positive for query id 0, at gallery index 0
    g_groups = torch.arange(6)
    q_emb, g_emb = torch.ones(1, 4) / 2, torch.ones(6, 4) / 2
    out = rank_metrics(q_emb, torch.tensor([0]), torch.tensor([4]), g_emb, g_ids, g_groups, (1, 5))
    # Group 4 (the query's own view) is excluded: 4 negatives, then the positive at rank 5.
    assert out["Rank-1"] == 0.0 and out["Rank-5"] == 1.0
    assert out["mAP"] == pytest.approx(1 / 5) and out["mINP"] == pytest.approx(1 / 5)


# ---------------------------------------------------------------------------------------------
# A plain per-query reference: full sort per query, Python loop over queries.
# ---------------------------------------------------------------------------------------------


def reference_per_query(q_emb, q_ids, q_groups, g_emb, g_ids, g_groups):
    """(first_rank, ap, inp, num_pos) per query, by sorting each query's gallery in full."""
    q_emb, g_emb = np.asarray(q_emb, np.float64), np.asarray(g_emb, np.float64)
    n = len(q_ids)
    first, ap, inp, npos = np.zeros(n, int), np.zeros(n), np.zeros(n), np.zeros(n, int)
    for k in range(n):
        keep = g_groups != q_groups[k]
        sim = g_emb[keep] @ q_emb[k]
        pos = g_ids[keep] == q_ids[k]
        if not pos.any():
            continue
        # Sort by similarity descending, then negatives (False) before positives (True).
        order = np.lexsort((pos, -sim))
        ranks = np.flatnonzero(pos[order]) + 1  # 1-based ranks of the positives
        first[k] = ranks[0]
        ap[k] = np.mean(np.arange(1, len(ranks) + 1) / ranks)
        inp[k] = len(ranks) / ranks[-1]
        npos[k] = len(ranks)
    return first, ap, inp, npos


def clustered_int_views(num_ids, num_views, num_groups, dim, seed):
    """Integer-valued clustered embeddings: every dot product is exact in float32 whatever the
    summation order (so chunked and per-query sums agree bit for bit), and ties are common."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(-3, 4, size=(num_ids, dim))
    ids = rng.integers(0, num_ids, size=num_views)
    emb = centres[ids] + rng.integers(-2, 3, size=(num_views, dim))
    groups = rng.integers(0, num_groups, size=num_views) * 7 + 100  # arbitrary integer labels
    return emb.astype(np.float32), ids, groups


@pytest.fixture(scope="module")
def random_split():
    emb, ids, groups = clustered_int_views(400, 1200, 400, 8, seed=0)
    q, g = slice(0, 200), slice(200, 1200)
    return (emb[q], ids[q], groups[q]), (emb[g], ids[g], groups[g])


def _torch(split):
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in split)


@pytest.mark.parametrize("chunk", [1, 7, 64, 250, None])
def test_matches_reference_on_random_data(random_split, chunk):
    query, gallery = random_split
    ref_first, ref_ap, ref_inp, ref_npos = reference_per_query(*query, *gallery)
    assert (ref_npos == 0).any() and (ref_npos > 1).any()  # skipped and multi-positive queries
    assert 0.05 < (ref_first == 1).sum() / (ref_npos > 0).sum() < 0.95  # not trivial

    res = query_results(*_torch(query), *_torch(gallery), chunk=chunk)
    np.testing.assert_array_equal(res.first_rank.numpy(), ref_first)
    np.testing.assert_array_equal(res.num_pos.numpy(), ref_npos)
    np.testing.assert_allclose(res.ap.numpy(), ref_ap, rtol=1e-12)
    np.testing.assert_allclose(res.inp.numpy(), ref_inp, rtol=1e-12)

    out = rank_metrics(*_torch(query), *_torch(gallery), topk=(1, 5, 10, 20), chunk=chunk)
    valid = ref_npos > 0
    assert out["num_queries"] == 200 and out["num_valid"] == valid.sum()
    assert out["num_gallery"] == 1000
    for k in (1, 5, 10, 20):
        assert out[f"Rank-{k}"] == pytest.approx(np.mean(ref_first[valid] <= k))
    assert out["mAP"] == pytest.approx(ref_ap[valid].mean())
    assert out["mINP"] == pytest.approx(ref_inp[valid].mean())


def test_memory_budget_sizes_the_chunk(random_split):
    query, gallery = random_split
    small = query_results(*_torch(query), *_torch(gallery), memory_budget=1)  # chunk = 1
    big = query_results(*_torch(query), *_torch(gallery))
    assert torch.equal(small.first_rank, big.first_rank)
    assert torch.equal(small.num_pos, big.num_pos)
    # Sums over differently padded rows may differ in the last bit.
    torch.testing.assert_close(small.ap, big.ap, rtol=1e-12, atol=0)
    torch.testing.assert_close(small.inp, big.inp, rtol=1e-12, atol=0)


def test_query_set_equal_to_gallery_excludes_itself():
    emb, ids, groups = clustered_int_views(40, 300, 120, 8, seed=3)
    ref = reference_per_query(emb, ids, groups, emb, ids, groups)
    t = _torch((emb, ids, groups))
    res = query_results(*t, *t, chunk=32)
    np.testing.assert_array_equal(res.first_rank.numpy(), ref[0])
    np.testing.assert_allclose(res.ap.numpy(), ref[1], rtol=1e-12)
    np.testing.assert_allclose(res.inp.numpy(), ref[2], rtol=1e-12)


def test_self_is_not_a_match():
    # Each identity has one view: with the query set as gallery nothing is left to match.
    emb = torch.eye(4)
    ids, groups = torch.arange(4), torch.arange(4)
    out = rank_metrics(emb, ids, groups, emb, ids, groups)
    assert out["num_valid"] == 0 and math.isnan(out["mAP"])


def test_empty_gallery():
    q = (torch.randn(3, 8), torch.arange(3), torch.arange(3))
    g = (torch.zeros(0, 8), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    out = rank_metrics(*q, *g, topk=(1, 5))
    assert out["num_queries"] == 3 and out["num_valid"] == 0 and out["num_gallery"] == 0
    assert all(math.isnan(out[k]) for k in ("Rank-1", "Rank-5", "mAP", "mINP"))


def test_empty_queries():
    g = (torch.randn(5, 8), torch.arange(5), torch.arange(5))
    q = (torch.zeros(0, 8), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    out = rank_metrics(*q, *g)
    assert out["num_queries"] == 0 and out["num_gallery"] == 5 and math.isnan(out["Rank-1"])


def test_all_queries_invalid():
    q = (torch.randn(3, 8), torch.tensor([7, 8, 9]), torch.arange(3))
    g = (torch.randn(5, 8), torch.arange(5), torch.arange(10, 15))
    out = rank_metrics(*q, *g)
    assert out["num_queries"] == 3 and out["num_valid"] == 0 and out["num_gallery"] == 5
    assert math.isnan(out["mAP"]) and math.isnan(out["mINP"]) and math.isnan(out["Rank-1"])


def test_rejects_bad_inputs():
    e, i = torch.randn(3, 4), torch.arange(3)
    with pytest.raises(ValueError, match="NaN"):
        rank_metrics(e, i, i, torch.full((3, 4), math.nan), i, i)
    with pytest.raises(ValueError, match="gallery_ids"):
        rank_metrics(e, i, i, e, torch.arange(4), i)
    with pytest.raises(ValueError, match="integers"):
        rank_metrics(e, i.float(), i, e, i, i)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(random_split):
    query, gallery = _torch(random_split[0]), _torch(random_split[1])
    cpu = query_results(*query, *gallery, chunk=37)
    cuda_q = (query[0].cuda(), query[1].cuda(), query[2].cuda())
    cuda = query_results(*cuda_q, *gallery, chunk=37)  # gallery moved to the query's device
    assert torch.equal(cpu.first_rank, cuda.first_rank)
    torch.testing.assert_close(cpu.ap, cuda.ap, rtol=1e-12, atol=0)
    torch.testing.assert_close(cpu.inp, cuda.inp, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------------------
# Single-shot CMC of the original protocol.
# ---------------------------------------------------------------------------------------------


def _views(num_ids, per_id, dim=None, seed=0):
    ids = torch.arange(num_ids).repeat_interleave(per_id)
    groups = torch.arange(num_ids * per_id)  # one view per keyframe
    g = torch.Generator().manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(ids.numel(), dim or 32, generator=g), dim=1)
    return emb, ids, groups


def test_single_shot_is_deterministic_for_a_seed():
    emb, ids, groups = _views(30, 4)
    a = cmc_single_shot(emb, ids, groups, trials=5, seed=3, topk=(1, 5))
    b = cmc_single_shot(emb, ids, groups, trials=5, seed=3, topk=(1, 5))
    c = cmc_single_shot(emb, ids, groups, trials=5, seed=4, topk=(1, 5))
    assert a == b and a["num_identities"] == 30 and a["trials"] == 5
    assert a != c


def test_single_shot_perfect_embeddings():
    _, ids, groups = _views(25, 3)
    emb = torch.nn.functional.one_hot(ids, 25).float()
    out = cmc_single_shot(emb, ids, groups, trials=3, seed=0, topk=(1, 5))
    assert out["Rank-1"] == 1.0 and out["Rank-5"] == 1.0


def test_single_shot_random_embeddings_are_at_chance():
    emb, ids, groups = _views(50, 4, seed=1)
    out = cmc_single_shot(emb, ids, groups, trials=100, seed=0, topk=(1, 10))
    assert out["Rank-1"] == pytest.approx(1 / 50, abs=0.01)
    assert out["Rank-10"] == pytest.approx(10 / 50, abs=0.04)


def test_single_shot_eligibility_and_time_gap():
    # Identity 0: views in two groups; identity 1: both views in one group (not drawn);
    # identity 2: a single view (not drawn).
    emb = torch.eye(5)
    ids = torch.tensor([0, 0, 1, 1, 2])
    groups = torch.tensor([0, 1, 2, 2, 3])
    out = cmc_single_shot(emb, ids, groups, trials=2, topk=(1,))
    assert out["num_identities"] == 1

    t = torch.tensor([0.0, 0.5, 0.0, 9.0, 0.0])
    assert cmc_single_shot(emb, ids, groups, t, min_gap=0.5, topk=(1,))["num_identities"] == 1
    out = cmc_single_shot(emb, ids, groups, t, min_gap=1.0, topk=(1,))
    assert out["num_identities"] == 0 and math.isnan(out["Rank-1"])
