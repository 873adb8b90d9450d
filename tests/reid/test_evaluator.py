"""The one evaluator API: explicit query / gallery marks, registered protocols, conditions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_metrics import clustered_int_views

from bev_reid.reid.evaluator import PROTOCOLS, ReIDEvaluator, register_protocol
from bev_reid.reid.metrics import cmc_single_shot, rank_metrics


def _torch(*arrays):
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)


def _by(records):
    return {(r["protocol"], r["condition"]): r for r in records}


def test_marks_not_positions_decide_query_and_gallery():
    emb, ids, groups = _torch(*clustered_int_views(400, 1200, 400, 8, seed=0))
    is_query = torch.arange(1200) < 200
    expected = rank_metrics(emb[:200], ids[:200], groups[:200], emb[200:], ids[200:],
                            groups[200:], topk=(1, 5))  # fmt: skip

    # The same views, interleaved in batches of mixed membership.
    perm = torch.randperm(1200, generator=torch.Generator().manual_seed(0))
    ev = ReIDEvaluator(("retrieval",), topk=(1, 5), normalize=False, chunk=50, device="cpu")
    for b in perm.split(128):
        ev.process(emb[b], ids[b], groups[b], is_query[b])
    assert len(ev) == 1200
    (rec,) = ev.evaluate()
    assert rec["rank1"] == pytest.approx(expected["Rank-1"])
    assert rec["rank5"] == pytest.approx(expected["Rank-5"])
    assert rec["mAP"] == pytest.approx(expected["mAP"])
    assert rec["mINP"] == pytest.approx(expected["mINP"])
    assert (rec["num_queries"], rec["num_gallery"]) == (200, 1000)

    ev.reset()
    ev.process(emb[:200], ids[:200], groups[:200], True, False)  # one bool per batch
    ev.process(emb[200:], ids[200:], groups[200:], False, True)
    assert ev.evaluate()[0]["mAP"] == pytest.approx(expected["mAP"])


def test_every_view_against_all_and_per_condition():
    emb, ids, groups = _torch(*clustered_int_views(30, 200, 80, 8, seed=5))
    conditions = ["night" if k % 3 == 0 else "day" for k in range(200)]
    ev = ReIDEvaluator(("cmc", "retrieval"), topk=(1, 5), trials=4, seed=3, normalize=False,
                       device="cpu")  # fmt: skip
    ev.process(emb[:120], ids[:120], groups[:120], conditions=conditions[:120])
    ev.process(emb[120:], ids[120:], groups[120:], conditions=conditions[120:])
    got = _by(ev.evaluate())
    assert set(got) == {(p, c) for p in ("cmc", "retrieval") for c in ("all", "day", "night")}

    overall = rank_metrics(emb, ids, groups, emb, ids, groups, (1, 5))
    assert got[("retrieval", "all")]["mAP"] == pytest.approx(overall["mAP"])
    night = torch.tensor([c == "night" for c in conditions])
    want = rank_metrics(emb[night], ids[night], groups[night], emb, ids, groups, (1, 5))
    r = got[("retrieval", "night")]
    assert r["rank1"] == pytest.approx(want["Rank-1"]) and r["mINP"] == pytest.approx(want["mINP"])
    assert r["num_queries"] == int(night.sum()) and r["num_gallery"] == 200

    # cmc per condition: only that condition's views, the same seeded galleries.
    want = cmc_single_shot(emb[night], ids[night], groups[night], trials=4, seed=3, topk=(1, 5))
    assert got[("cmc", "night")]["rank1"] == pytest.approx(want["Rank-1"])
    assert got[("cmc", "night")]["mAP"] is None


def test_groups_from_view_records_and_no_data():
    ev = ReIDEvaluator(topk=(1,), device="cpu")
    assert all(r["rank1"] is None for r in ev.evaluate())  # nothing processed: null metrics
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 0.1], [0.1, 5.0]])  # scale must not matter
    views = [{"sample_token": t, "condition": "day"} for t in ("a", "b", "c", "d")]
    ev.process_views(e[:2], torch.tensor([0, 1]), views[:2])
    ev.process_views(e[2:], torch.tensor([0, 1]), views[2:])
    r = _by(ev.evaluate())[("retrieval", "all")]
    assert r["rank1"] == 1.0 and r["num_queries"] == 4 and r["num_gallery"] == 4
    # One sample token across two batches is one group: the match is excluded.
    ev.reset()
    ev.process_views(e[:1], torch.tensor([0]), [{"sample_token": "x"}])
    ev.process_views(e[2:3], torch.tensor([0]), [{"sample_token": "x"}])
    assert _by(ev.evaluate())[("retrieval", "all")]["num_valid"] == 0


def test_protocol_registry():
    with pytest.raises(KeyError, match="cmc, retrieval"):
        ReIDEvaluator(("bogus",))

    @register_protocol("count-test")
    def count(views, settings):
        return [{"protocol": "count-test", "condition": "all", "n": len(views.conditions)}]

    try:
        ev = ReIDEvaluator(("count-test",), device="cpu")
        ev.process(torch.eye(3), torch.arange(3), torch.arange(3))
        assert ev.evaluate() == [{"protocol": "count-test", "condition": "all", "n": 3}]
        with pytest.raises(KeyError, match="twice"):
            register_protocol("count-test")(count)
    finally:
        PROTOCOLS.pop("count-test")
