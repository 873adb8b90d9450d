"""The protocols beyond plain retrieval: after a gap, tracklets, across conditions, each against
a plain per-query loop written here (and hand-computed cases), and the default list end to end
through the watcher."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bev_reid.config import ConfigError, load_config
from bev_reid.reid.evaluator import ReIDEvaluator
from bev_reid.reid.protocols import make_tracklets

TOPK = (1, 5)


def plain_query(sim: np.ndarray, positive: np.ndarray, keep: np.ndarray) -> tuple | None:
    """(first rank, AP, INP) of one query from its similarities [G], positives [G] bool and kept
    items [G] bool, ranking by the key (-similarity, is_positive): ties count against the model.
    None when no kept positive."""
    s, p = sim[keep], positive[keep]
    if not p.any():
        return None
    order = np.lexsort((p, -s))  # last key first: by -sim, then negatives (False) first
    ranks = np.flatnonzero(p[order]) + 1
    ap = np.mean(np.arange(1, len(ranks) + 1) / ranks)
    return ranks[0], ap, len(ranks) / ranks[-1]


def summary(per_query: list) -> dict:
    valid = [r for r in per_query if r is not None]
    out = {f"rank{k}": np.mean([r[0] <= k for r in valid]) for k in TOPK}
    out["mAP"] = np.mean([r[1] for r in valid])
    out["mINP"] = np.mean([r[2] for r in valid])
    out["num_valid"] = len(valid)
    return out


def check(rec: dict, want: dict) -> None:
    for key, value in want.items():
        assert rec[key] == pytest.approx(value, abs=1e-9), (rec["protocol"], key)


def world(num_ids: int, per_id: int, seed: int, conditions=("day", "night")):
    """Views of vehicles over time: identity i's k-th view at t = 0.5 k + offset_i seconds, one
    keyframe per (time slot); embeddings drift with time so near views look alike. Conditions
    alternate by identity, and some identities are seen in two conditions."""
    g = np.random.default_rng(seed)
    ids = np.repeat(np.arange(num_ids), per_id)
    k = np.tile(np.arange(per_id), num_ids)
    slot = k + g.integers(0, 6, num_ids)[ids]  # keyframe index
    t = 0.5 * slot + 1000.0
    centre = g.normal(size=(num_ids, 8))
    drift = g.normal(size=(num_ids, 8))
    emb = centre[ids] + 0.15 * k[:, None] * drift[ids] + 0.6 * g.normal(size=(ids.size, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cond = [conditions[(i + (kk >= per_id // 2) * (i % 3 == 0)) % len(conditions)]
            for i, kk in zip(ids, k, strict=True)]  # fmt: skip
    return emb.astype(np.float32), ids, slot, t, cond


def evaluate(protocols, emb, ids, groups, t, cond, places=None, **settings):
    ev = ReIDEvaluator(protocols, topk=TOPK, device="cpu", **settings)
    for b in np.array_split(np.arange(len(ids)), 3):  # batches of mixed views
        where = None if places is None else torch.from_numpy(places[b])
        ev.process(torch.from_numpy(emb[b]), torch.from_numpy(ids[b]), torch.from_numpy(groups[b]),
                   conditions=[cond[i] for i in b], timestamps=torch.from_numpy(t[b]),
                   places=where)  # fmt: skip
    return {(r["protocol"], r["condition"]): r for r in ev.evaluate()}


def test_gap_protocol_against_a_plain_loop():
    emb, ids, groups, t, cond = world(12, 14, seed=0)
    got = evaluate(("retrieval", "retrieval_gap"), emb, ids, groups, t, cond, min_gap_s=2.0)
    sim = emb.astype(np.float64) @ emb.T.astype(np.float64)
    for name, gap in (("retrieval", None), ("retrieval_gap", 2.0)):
        per_query = []
        for q in range(len(ids)):
            keep = groups != groups[q]
            if gap is not None:
                keep &= np.abs(t - t[q]) >= gap
            per_query.append(plain_query(sim[q], ids == ids[q], keep))
        check(got[(name, "all")], summary(per_query))
        night = [r for r, c in zip(per_query, cond, strict=True) if c == "night"]
        check(got[(name, "night")], summary(night))
    assert got[("retrieval_gap", "all")]["min_gap_s"] == 2.0
    # Near-in-time views are the easy matches: leaving them out costs here.
    assert got[("retrieval_gap", "all")]["mAP"] < got[("retrieval", "all")]["mAP"]


def test_gap_protocol_by_hand():
    # Query q (id 1, t = 0) and five gallery views, similarity = the x coordinate:
    #   a: id 1, t = 1.0, x = 0.75   (within the gap: left out)
    #   b: id 2, t = 4.0, x = 0.5
    #   c: id 1, t = 3.0, x = 0.5    (ties b: the negative ranks first)
    #   d: id 2, t = 0.5, x = 1.0    (within the gap: left out, though the most similar)
    #   e: id 1, t = -3.5, x = 0.25
    # Gap 3 s: ranked b (neg) 1, c (pos) 2, e (pos) 3: first 2; AP = (1/2 + 2/3) / 2 = 7/12;
    # INP = 2/3. Without gap: d 1, a 2, b 3, c 4, e 5: first 2; AP = (1/2 + 2/4 + 3/5) / 3.
    emb = torch.tensor([[1.0, 0], [0.75, 0], [0.5, 0], [0.5, 0], [1.0, 0], [0.25, 0]])
    ids = torch.tensor([1, 1, 2, 1, 2, 1])
    t = torch.tensor([0.0, 1.0, 4.0, 3.0, 0.5, -3.5], dtype=torch.float64)
    ev = ReIDEvaluator(("retrieval", "retrieval_gap"), topk=(1, 2), normalize=False,
                       device="cpu", min_gap_s=3.0)  # fmt: skip
    ev.process(emb[:1], ids[:1], torch.tensor([0]), True, False, timestamps=t[:1])
    ev.process(emb[1:], ids[1:], torch.arange(1, 6), False, True, timestamps=t[1:])
    plain, gap = ev.evaluate()
    assert (gap["rank1"], gap["rank2"]) == (0.0, 1.0)
    assert gap["mAP"] == pytest.approx(7 / 12) and gap["mINP"] == pytest.approx(2 / 3)
    assert plain["mAP"] == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 3)
    # Views without a time take no part in the gap protocol.
    ev.reset()
    ev.process(emb, ids, torch.arange(6))
    gap = ev.evaluate()[1]
    assert gap["num_queries"] == 0 and gap["mAP"] is None


def test_tracklets_by_hand():
    # Identity 7: views at t = 3, 1, 2, 4, 5 (rows 0-4) -> in time order rows 1, 2, 0, 3, 4;
    # length 2 -> tracklets (1, 2) and (0, 3); row 4 is a rest. Identity 9: rows 5, 6 at 1, 1.5.
    emb = F.normalize(torch.randn(7, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    ids = torch.tensor([7, 7, 7, 7, 7, 9, 9])
    t = torch.tensor([3.0, 1.0, 2.0, 4.0, 5.0, 1.0, 1.5], dtype=torch.float64)
    ev = ReIDEvaluator(("tracklet",), device="cpu")
    ev.process(emb, ids, torch.arange(7), conditions=["day"] * 6 + ["rain"], timestamps=t)
    tr = make_tracklets(ev.views(), torch.ones(7, dtype=torch.bool), 2)
    assert tr.members.tolist() == [[1, 2], [0, 3], [5, 6]]
    assert tr.spans.tolist() == [[1.0, 2.0], [3.0, 4.0], [1.0, 1.5]]
    assert tr.conditions == ["day", "day", None]
    assert torch.allclose(tr.emb[1], F.normalize(emb[0] + emb[3], dim=0))


def test_tracklet_protocol_against_a_plain_loop():
    emb, ids, groups, t, cond = world(10, 13, seed=1)
    length = 3
    got = evaluate(("tracklet",), emb, ids, groups, t, cond, tracklet_len=length)
    # Plain tracklets: per identity, views by time, runs of `length`, rest dropped.
    runs = []
    for i in np.unique(ids):
        rows = np.flatnonzero(ids == i)
        rows = rows[np.argsort(t[rows], kind="stable")]
        runs += [rows[s : s + length] for s in range(0, len(rows) - length + 1, length)]
    mean = np.stack([emb[r].astype(np.float64).mean(0) for r in runs])
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    lo, hi = np.array([t[r].min() for r in runs]), np.array([t[r].max() for r in runs])
    tid = np.array([ids[r[0]] for r in runs])
    per_query = []
    for q in range(len(runs)):
        overlap = (lo <= hi[q]) & (lo[q] <= hi)  # spans that overlap or touch
        per_query.append(plain_query(mean @ mean[q], tid == tid[q], ~overlap))
    rec = got[("tracklet", "all")]
    check(rec, summary(per_query))
    assert rec["num_queries"] == len(runs) and rec["tracklet_len"] == length
    # Averaging views makes a better query than a single view here.
    single = evaluate(("retrieval",), emb, ids, groups, t, cond)[("retrieval", "all")]
    assert rec["mAP"] > single["mAP"]


def test_cross_condition_against_a_plain_loop():
    emb, ids, groups, t, cond = world(12, 10, seed=2, conditions=("day", "night", "rain"))
    got = evaluate(("cross_condition",), emb, ids, groups, t, cond)
    cond = np.array(cond)
    sim = emb.astype(np.float64) @ emb.T.astype(np.float64)

    def loop(query_cond, gallery_ok):
        out = []
        for q in np.flatnonzero(query_cond):
            keep = (groups != groups[q]) & gallery_ok(cond[q])
            out.append(plain_query(sim[q], ids == ids[q], keep))
        return summary(out)

    check(got[("cross_condition", "all")], loop(np.ones(len(ids), bool), lambda c: cond != c))
    check(got[("cross_condition", "day->night")], loop(cond == "day", lambda c: cond == "night"))
    pairs = {c for p, c in got if c != "all"}
    assert pairs == {f"{a}->{b}" for a in ("day", "night", "rain") for b in ("day", "night", "rain")
                     if a != b}  # fmt: skip
    # An identity of one condition has no positive across conditions.
    assert 0 < got[("cross_condition", "all")]["num_valid"] < len(ids)


def test_the_config_names_protocols_and_settings():
    cfg = load_config(overrides={"eval_reid.rerank": True, "eval_reid.min_gap_s": 5})
    ev = ReIDEvaluator.from_config(cfg.eval_reid, "cpu")
    assert ev.protocols == ("cmc", "retrieval", "retrieval_rerank", "retrieval_gap", "tracklet",
                            "cross_condition", "neighbours")  # fmt: skip
    assert ev.settings.min_gap_s == 5.0 and ev.settings.rerank_k1 == 20
    assert ev.settings.neighbour_radius_m == 8.0
    with pytest.raises(ConfigError, match="eval_reid.protocols must be registered.*'gap'"):
        load_config(overrides={"eval_reid.protocols": ["retrieval", "gap"]})
    with pytest.raises(ConfigError, match="eval_reid.min_gap_s must be >= 0"):
        load_config(overrides={"eval_reid.min_gap_s": -1})
    with pytest.raises(ConfigError, match="eval_reid.rerank_lambda must be"):
        load_config(overrides={"eval_reid.rerank_lambda": 1.5})
    with pytest.raises(ConfigError, match="eval_reid.neighbour_radius_m must be > 0"):
        load_config(overrides={"eval_reid.neighbour_radius_m": 0})


def test_watcher_logs_every_default_protocol(reid_dataset, tmp_path, capsys):
    from bev_reid.engine.checkpoint import save_checkpoint
    from bev_reid.models.reid import BEVReIDModel
    from bev_reid.reid.watch import watch

    cfg = load_config(overrides={
        "reid_run.dataset_dir": str(reid_dataset), "reid_run.log_dir": str(tmp_path / "runs"),
        "reid_run.run_id": "run", "eval_reid.eval_log_dir": str(tmp_path / "eval"),
        "eval_reid.device": "cpu", "eval_reid.once": True, "eval_reid.trials": 2,
        "eval_reid.rerank": True, "eval_reid.min_gap_s": 1.0,  # its scenes last 2.5 s
    })  # fmt: skip
    torch.manual_seed(0)
    model = BEVReIDModel(3, embedding_dim=16, widths=(8,), num_classes=4)
    save_checkpoint(tmp_path / "runs" / "run" / "checkpoints", 1, model,
                    meta={"kind": "reid", "model": model.config})  # fmt: skip
    assert watch(cfg).evaluated == 1
    lines = (tmp_path / "eval" / "run" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    alls = {r["protocol"] for r in records if r["condition"] == "all"}
    assert alls == {"cmc", "retrieval", "retrieval_rerank", "retrieval_gap", "tracklet",
                    "cross_condition", "neighbours"}  # fmt: skip
    for r in records:
        if r["protocol"] != "cmc" and r["num_valid"]:
            assert 0 <= r["mAP"] <= 1 and not math.isnan(r["mAP"])
    out = capsys.readouterr().out
    assert "retrieval rank1" in out and "| gap 1.0s rank1" in out and "| tracklet rank1" in out
    assert "| neighbours auc " in out
    near = next(r for r in records if r["protocol"] == "neighbours" and r["condition"] == "all")
    assert near["num_valid"] > 0 and 0 <= near["auc"] <= 1 and near["radius_m"] == 8.0


def plain_auc(sim: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> float:
    """The share of (positive, negative) pairs whose positive is more similar; ties half."""
    wins = [1.0 if p > n else 0.5 if p == n else 0.0
            for p in sim[positive] for n in sim[negative]]  # fmt: skip
    return float(np.mean(wins))


def test_neighbour_protocol_against_a_plain_loop():
    emb, ids, groups, t, cond = world(14, 10, seed=3)
    # Each identity drives along x at its own lane y; a view's place is where it is at its slot.
    g = np.random.default_rng(3)
    lane, start = g.uniform(0, 12, 14), g.uniform(-10, 10, 14)
    places = np.stack([start[ids] + 1.5 * groups, lane[ids]], axis=1)
    places[5] = np.nan  # a view without a place takes no part
    got = evaluate(("neighbours",), emb, ids, groups, t, cond, places, neighbour_radius_m=6.0,
                   min_gap_s=1.0)  # fmt: skip
    sim = emb.astype(np.float64) @ emb.T.astype(np.float64)
    placed = np.isfinite(places).all(1)
    per_query, aucs, negatives = [], [], []
    for q in range(len(ids)):
        if not placed[q]:
            continue
        own = (ids == ids[q]) & (groups != groups[q]) & placed & (np.abs(t - t[q]) >= 1.0)
        near = (ids != ids[q]) & (groups == groups[q]) & placed
        near &= np.linalg.norm(np.nan_to_num(places - places[q], nan=1e9), axis=1) <= 6.0
        if not own.any() or not near.any():
            per_query.append((None, cond[q]))
            continue
        per_query.append((plain_query(sim[q], own, own | near), cond[q]))
        aucs.append((plain_auc(sim[q], own, near), cond[q]))
        negatives.append(near.sum())
    for c in ("all", "day", "night"):
        rows = [r for r, rc in per_query if c in ("all", rc)]
        rec = got[("neighbours", c)]
        check(rec, summary(rows))
        assert rec["num_queries"] == len(rows)
        assert rec["auc"] == pytest.approx(np.mean([a for a, ac in aucs if c in ("all", ac)]))
    rec = got[("neighbours", "all")]
    assert rec["mean_neighbours"] == pytest.approx(np.mean(negatives))
    assert 10 < rec["num_valid"] < rec["num_queries"] == len(ids) - 1
    assert rec["radius_m"] == 6.0 and rec["min_gap_s"] == 1.0


def test_neighbour_protocol_by_hand():
    # Query q: id 1 at (0, 0) in keyframe 0, t = 0 s. The gallery, similarity to q = the x
    # coordinate (the default gap: 3 s):
    #   a: id 1, keyframe 1, t = 5,       x = 0.5   (own view: positive)
    #   b: id 1, keyframe 2, t = 10,      x = 0.9   (own view: positive)
    #   c: id 2, keyframe 0, 3 m,         x = 0.75  (neighbour: negative)
    #   d: id 2, keyframe 0, 3 m,         x = 0.5   (neighbour, ties a: ranks before it)
    #   e: id 3, keyframe 0, 20 m,        x = 1.0   (beyond the radius: left out)
    #   f: id 2, keyframe 1, 1 m,         x = 1.0   (not in q's keyframe: left out)
    #   g: id 1, keyframe 3, t = 1,       x = 1.0   (own view within the gap: left out)
    # Ranked: b (0.9), c (0.75), d (0.5), a (0.5): first rank 1, AP (1/1 + 2/4) / 2 = 0.75,
    # INP 2/4; AUC over (a, b) x (c, d): b wins both, a loses to c and ties d: (2 + 0.5) / 4.
    x = np.array([1.0, 0.5, 0.9, 0.75, 0.5, 1.0, 1.0, 1.0])
    emb = np.stack([x, np.sqrt(1 - x**2)], axis=1)
    ids = torch.tensor([1, 1, 1, 2, 2, 3, 2, 1])
    groups = torch.tensor([0, 1, 2, 0, 0, 0, 1, 3])
    t = torch.tensor([0.0, 5, 10, 0, 0, 0, 5, 1])
    places = torch.tensor([[0.0, 0], [5, 5], [9, 9], [3, 0], [0, 3], [20, 0], [1, 0], [0, 0]])
    ev = ReIDEvaluator(("neighbours",), topk=TOPK, device="cpu")
    is_query = torch.tensor([True] + [False] * 7)
    ev.process(torch.from_numpy(emb).float(), ids, groups, is_query, ~is_query, timestamps=t,
               places=places)  # fmt: skip
    (rec,) = ev.evaluate()
    assert (rec["rank1"], rec["num_valid"], rec["num_gallery"]) == (1.0, 1, 7)
    assert rec["mAP"] == pytest.approx(0.75) and rec["mINP"] == pytest.approx(0.5)
    assert rec["auc"] == pytest.approx(0.625) and rec["mean_neighbours"] == 2.0


def test_neighbour_protocol_reads_places_from_view_records():
    ev = ReIDEvaluator(("neighbours",), topk=TOPK, device="cpu")
    views = [{"sample_token": s, "timestamp": t, "center": c} for s, t, c in
             (("k0", 0, [0.0, 0.0, 1.0]), ("k0", 0, [2.0, 0.0, 1.0]), ("k1", 4e6, [9.0, 9.0, 1.0]),
              ("k1", 4e6, [9.0, 11.0, 1.0]), ("k2", 8e6, None))]  # fmt: skip
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9], [1.0, 0.0]])
    ev.process_views(emb, torch.tensor([0, 1, 0, 1, 0]), views)
    (rec,) = ev.evaluate()
    # Four placed queries, each with its own view in the other keyframe and one neighbour 2 m
    # away, nearer in embedding than the own view in none: every AUC and rank-1 is 1.
    assert rec["num_queries"] == 4 and rec["num_valid"] == 4
    assert rec["auc"] == 1.0 and rec["rank1"] == 1.0
