"""`--reid-checkpoint oracle`: each vehicle detection embedded with its annotated identity."""

import json
from collections import defaultdict

import numpy as np

from bev_reid.cli import main
from bev_reid.data.nuscenes import NuScenesDB
from bev_reid.track.detections import read_detections
from bev_reid.track.oracle import OracleEmbedder
from tests.track.test_commands import data_flags


def exact_detections(world, path, *extra):
    """Detections at the annotated boxes (no noise), every object with gaps of 2..3 keyframes."""
    flags = ["--noise-m", "0", "--set", "track.det_size_noise=0", "--set",
             "track.det_yaw_noise_deg=0", "--miss-rate", "1", "--max-gap", "3", *extra]  # fmt: skip
    assert main(["make-detections", *data_flags(world), "--out", str(path), *flags]) == 0


def annotation_at(db, token, xy):
    """The annotation whose centre is at ``xy`` (exact detections), or None."""
    for a in db.sample(token)["anns"]:
        ann = db.get("sample_annotation", a)
        if np.allclose(ann["translation"][:2], xy, atol=1e-6):
            return ann
    return None


def test_vehicles_share_one_vector_per_instance_others_get_none(synth_world, tmp_path):
    exact_detections(synth_world, tmp_path / "det.json", "--fp-rate", "0.3")
    db = NuScenesDB(synth_world.path, synth_world.version)
    dets = read_detections(tmp_path / "det.json")
    oracle = OracleEmbedder(db)
    vectors = defaultdict(list)
    none = fps = 0
    for token, ds in dets.items():
        emb = oracle.embed(token, ds)
        assert emb.shape == (len(ds), 128)
        for d, e in zip(ds, emb, strict=True):
            ann = annotation_at(db, token, d.translation[:2])
            if ann is None:  # a false positive: nowhere near a car of its own
                fps += 1
            elif ann["category_name"].startswith("vehicle"):
                assert np.isclose(np.linalg.norm(e), 1, atol=1e-5)
                vectors[ann["instance_token"]].append(e)
                continue
            none += int(np.isnan(e).all())
    assert fps >= 5 and len(vectors) >= 10
    assert none >= fps  # pedestrians and false positives far from cars have none
    means = []
    for views in vectors.values():
        assert np.ptp(np.stack(views), axis=0).max() == 0  # one vector per instance
        means.append(views[0])
    cos = np.stack(means) @ np.stack(means).T
    off = cos[~np.eye(len(means), dtype=bool)]
    assert np.abs(off).max() < 0.45  # strangers: cosine distance 1 +- 0.45 in 128 dims


def test_the_oracle_keeps_identities_motion_loses_over_gaps(synth_world, tmp_path, capsys):
    """With tracks dropped after one missed keyframe, motion alone gives an object a new id
    after each gap of 2-3 keyframes; the oracle's dormant tracks take it back."""
    det = tmp_path / "det.json"
    exact_detections(synth_world, det, "--fp-rate", "0")
    db = NuScenesDB(synth_world.path, synth_world.version)
    ids = {}
    for name in ("none", "oracle"):
        out = tmp_path / f"{name}.json"
        assert main(["track", *data_flags(synth_world), "--detections", str(det),
                     "--reid-checkpoint", name, "--out", str(out), "--set",
                     "track.max_age=1"]) == 0  # fmt: skip
        results = json.loads(out.read_text())["results"]
        per_instance = defaultdict(set)
        for token, records in results.items():
            for r in records:
                dist = [
                    (np.linalg.norm(np.subtract(ann["translation"][:2], r["translation"][:2])), ann)
                    for ann in (db.get("sample_annotation", a) for a in db.sample(token)["anns"])
                ]
                d, ann = min(dist, key=lambda x: x[0])
                if d < 0.5 and ann["category_name"].startswith("vehicle"):
                    per_instance[ann["instance_token"]].add(r["tracking_id"])
        ids[name] = per_instance
    assert "motion + ReID" in capsys.readouterr().out
    split = lambda per: sum(len(v) > 1 for v in per.values())  # noqa: E731
    assert split(ids["none"]) >= 5, "gaps past max_age should break motion's tracks"
    assert split(ids["oracle"]) <= split(ids["none"]) // 4
