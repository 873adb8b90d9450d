"""k-reciprocal re-ranking against a plain dense implementation written here from the paper's
formulas (sets and loops), a case worked by hand, and the protocol's records."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_protocols import plain_query, summary

from bev_reid.reid.evaluator import ReIDEvaluator
from bev_reid.reid.rerank import KReciprocal


def plain_rerank(emb: np.ndarray, k1: int, k2: int, lam: float) -> np.ndarray:
    """[N, N] re-ranked distances d*, one view at a time (Zhong et al. 2017, Eqs. 3-11)."""
    emb = emb.astype(np.float64)
    n = len(emb)
    sim = emb @ emb.T
    key = sim.copy()
    np.fill_diagonal(key, np.inf)  # each view its own first neighbour
    order = [list(np.argsort(-key[p], kind="stable")) for p in range(n)]
    k1, k2 = min(k1, n - 1), min(k2, n)
    half = round(k1 / 2)

    def recip(p, k):
        return {g for g in order[p][: k + 1] if p in order[g][: k + 1]}

    v = np.zeros((n, n))
    for p in range(n):
        rp = recip(p, k1)
        star = set(rp)
        for q in rp:
            rq = recip(q, half)
            if 3 * len(rp & rq) >= 2 * len(rq):
                star |= rq
        for g in star:
            v[p, g] = math.exp(-(1.0 - sim[p, g]))
    v = np.stack([v[order[p][:k2]].mean(0) for p in range(n)])
    jac = np.array([[1 - np.minimum(v[p], v[g]).sum() / np.maximum(v[p], v[g]).sum()
                     for g in range(n)] for p in range(n)])  # fmt: skip
    return (1 - lam) * jac + lam * (1 - sim)


def clustered(n: int, seed: int, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    ids = g.integers(0, 8, n)
    emb = g.normal(size=(8, dim))[ids] + 0.7 * g.normal(size=(n, dim))
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32), ids


def rerank_block(kr: KReciprocal, query, gallery, chunks=(0,)) -> np.ndarray:
    scores = kr.scorer(torch.as_tensor(query), torch.as_tensor(gallery))
    out = torch.empty(len(query), len(gallery))
    bounds = [*chunks, len(query)]
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        scores(s, e, out[s:e])
    return -out.numpy()  # the distances d*


@pytest.mark.parametrize("n,k1,k2,lam", [(40, 5, 3, 0.3), (60, 20, 6, 0.3), (30, 3, 1, 0.0),
                                         (25, 30, 8, 1.0), (50, 7, 12, 0.5)])  # fmt: skip
def test_matches_the_plain_implementation(n, k1, k2, lam):
    emb, _ = clustered(n, seed=n + k1)
    want = plain_rerank(emb, k1, k2, lam)
    query, gallery = np.arange(0, n, 2), np.arange(n)[::-1].copy()
    # A tiny pair budget forces one query per expansion step: the same distances.
    for budget in (1, 10**9):
        kr = KReciprocal(torch.from_numpy(emb), k1, k2, lam, pair_budget=budget)
        got = rerank_block(kr, query, gallery, chunks=(0, 3, 4))
        np.testing.assert_allclose(got, want[np.ix_(query, gallery)], atol=2e-6)


def test_a_case_by_hand():
    # Unit vectors at 0, 10, 25 and 90 degrees (a, b, c, d). Nearest others: a -> b, b -> a,
    # c -> b, d -> c. With k1 = 1, R(p, 1) = p and its nearest when that nearest's nearest is
    # p: R(a) = {a, b}, R(b) = {b, a}, R(c) = {c}, R(d) = {d}; round(1/2) = 0 adds nothing, and
    # k2 = 1 expands nothing. V_a = (1, w, 0, 0), V_b = (w, 1, 0, 0) with w = exp(-(1 - cos 10)),
    # V_c = (0, 0, 1, 0): d_J(a, b) = 1 - 2w / 2 = 1 - w; d_J(a, c) = d_J(c, d) = 1.
    deg = torch.tensor([0.0, 10.0, 25.0, 90.0]) * math.pi / 180
    emb = torch.stack([deg.cos(), deg.sin()], 1)
    w = math.exp(-(1 - math.cos(math.radians(10))))
    for lam in (0.0, 0.4):
        d = rerank_block(KReciprocal(emb, k1=1, k2=1, lam=lam), [0, 2], [0, 1, 2, 3])

        def mix(jac, angle, lam=lam):
            return (1 - lam) * jac + lam * (1 - math.cos(math.radians(angle)))

        want = [[mix(0, 0), mix(1 - w, 10), mix(1, 25), mix(1, 90)],
                [mix(1, 25), mix(1, 15), mix(0, 0), mix(1, 65)]]  # fmt: skip
        np.testing.assert_allclose(d, want, atol=1e-6)


def test_protocol_records_against_a_plain_loop():
    emb, ids = clustered(70, seed=3)
    groups = np.arange(70) // 2  # two views per keyframe
    ev = ReIDEvaluator(("retrieval", "retrieval_rerank"), topk=(1, 5), device="cpu",
                       rerank_k1=6, rerank_k2=3, rerank_lambda=0.3)  # fmt: skip
    ev.process(torch.from_numpy(emb), torch.from_numpy(ids), torch.from_numpy(groups))
    plain, reranked = ev.evaluate()
    dist = plain_rerank(emb, 6, 3, 0.3)
    want = summary([plain_query(-dist[q], ids == ids[q], groups != groups[q]) for q in range(70)])
    for key, value in want.items():
        assert reranked[key] == pytest.approx(value, abs=1e-9), key
    assert reranked["protocol"] == "retrieval_rerank"
    assert (reranked["k1"], reranked["k2"], reranked["lambda"]) == (6, 3, 0.3)
    assert plain["mAP"] != reranked["mAP"]


def test_bad_settings_and_no_views():
    with pytest.raises(ValueError, match="k1, k2 >= 1"):
        KReciprocal(torch.eye(3), k1=0)
    ev = ReIDEvaluator(("retrieval_rerank",), device="cpu")
    ev.process(torch.eye(3), torch.tensor([0, 0, 1]), torch.tensor([0, 1, 2]), True, False)
    (rec,) = ev.evaluate()  # queries but no gallery
    assert rec["num_queries"] == 3 and rec["mAP"] is None
