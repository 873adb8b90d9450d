"""make-detections: the seeded degrader, checked against the devkit's ground truth."""

import json

import numpy as np
import pytest
from conftest import world_config
from nuscenes.nuscenes import NuScenes

from bev_reid.track.degrade import VISIBLE_RUN, gap_mask, make_detections, rng_for

EXACT = {
    "track.det_noise_m": 0.0, "track.det_size_noise": 0.0, "track.det_yaw_noise_deg": 0.0,
    "track.det_velocity_noise": 0.0, "track.det_fp_rate": 0.0,
}  # fmt: skip


def runs(mask: np.ndarray) -> list[tuple[bool, int]]:
    out: list[tuple[bool, int]] = []
    for v in mask:
        if out and out[-1][0] == v:
            out[-1] = (bool(v), out[-1][1] + 1)
        else:
            out.append((bool(v), 1))
    return out


@pytest.mark.parametrize("max_gap", [1, 3, 6])
def test_gaps_are_runs_of_one_to_max_gap_between_visible_runs(max_gap):
    for seed in range(50):
        mask = gap_mask(40, max_gap, rng_for(seed, "x"))
        parts = runs(mask)
        assert parts[0][0] is False and parts[0][1] >= VISIBLE_RUN[0]
        assert all(1 <= n <= max_gap for missed, n in parts[:-1] if missed)
        assert all(VISIBLE_RUN[0] <= n <= VISIBLE_RUN[1] for missed, n in parts[1:-1] if not missed)


def gt_by_translation(world):
    nusc = NuScenes(version=world.version, dataroot=str(world.path), verbose=False)
    return nusc, {key(a): a for a in nusc.sample_annotation}


def key(box: dict) -> tuple:
    """Parked vehicles keep their centre from keyframe to keyframe: the sample tells them apart."""
    return box["sample_token"], *(round(v, 4) for v in box["translation"])


def test_same_seed_same_bytes_and_exact_boxes_without_noise(synth_world, tmp_path):
    paths = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        cfg = world_config(synth_world, **{"track.detections": str(tmp_path / f"{name}.json"),
                                           "track.det_seed": seed})  # fmt: skip
        paths.append(make_detections(cfg, progress=False))
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b and a != c
    cfg = world_config(synth_world, **{"track.detections": str(tmp_path / "exact.json"),
                                       "track.det_miss_rate": 0.0, **EXACT})  # fmt: skip
    results = json.loads(make_detections(cfg, progress=False).read_text())["results"]
    nusc, gt = gt_by_translation(synth_world)
    seen = [a for a in nusc.sample_annotation if a["num_lidar_pts"] + a["num_radar_pts"] > 0]
    dets = [d for ds in results.values() for d in ds]
    from nuscenes.eval.detection.utils import category_to_detection_name

    expected = [a for a in seen if category_to_detection_name(a["category_name"])]
    assert len(dets) == len(expected) > 0
    for d in dets:
        ann = gt[key(d)]
        assert d["sample_token"] == ann["sample_token"]
        assert d["detection_name"] == category_to_detection_name(ann["category_name"])
        assert d["size"] == pytest.approx(ann["size"], abs=1e-4)
        assert d["rotation"] == pytest.approx(ann["rotation"], abs=1e-4)
        velocity = nusc.box_velocity(ann["token"])[:2]  # the devkit's, as the reference
        assert d["velocity"] == pytest.approx(np.nan_to_num(velocity, nan=0.0), abs=1e-3)
        assert 0.4 <= d["detection_score"] <= 1.0


def test_gaps_hide_runs_of_keyframes_and_false_positives_add_clutter(synth_world, tmp_path):
    cfg = world_config(synth_world, **{"track.detections": str(tmp_path / "gaps.json"),
                                       **EXACT, "track.det_miss_rate": 1.0,
                                       "track.det_max_gap": 2})  # fmt: skip
    results = json.loads(make_detections(cfg, progress=False).read_text())["results"]
    nusc, gt = gt_by_translation(synth_world)
    found = {gt[key(d)]["token"] for ds in results.values() for d in ds}
    checked = 0
    for inst in nusc.instance:
        chain, pointless, token = [], False, inst["first_annotation_token"]
        while token:
            ann = nusc.get("sample_annotation", token)
            chain.append(ann["token"] in found)
            pointless |= ann["num_lidar_pts"] + ann["num_radar_pts"] == 0
            token = ann["next"]
        if any(chain) and len(chain) > VISIBLE_RUN[1] and not pointless:  # only gaps hide it
            missed = [n for hit, n in runs(~np.array(chain)) if hit]
            assert chain[:2] == [True, True] and missed and max(missed) <= 2
            checked += 1
    assert checked > 5
    cfg = world_config(synth_world, **{"track.detections": str(tmp_path / "fp.json"),
                                       **EXACT, "track.det_fp_rate": 1.0})  # fmt: skip
    results = json.loads(make_detections(cfg, progress=False).read_text())["results"]
    fps = [d for ds in results.values() for d in ds if key(d) not in gt]
    true = sum(len(ds) for ds in results.values()) - len(fps)
    assert 0.5 * true < len(fps) < 1.5 * true  # Poisson(1 x true boxes) per keyframe
    assert all(d["detection_name"] == "car" and d["detection_score"] < 0.5 for d in fps)


def test_hidden_objects_are_missed_at_the_chance_asked_and_nothing_else_moves(
    synth_world, tmp_path
):
    """track.det_hidden_miss: detections of annotations at visibility 1 (0-40%, the devkit's
    table) are missed with that chance; every other detection keeps its bytes."""

    def detections(name: str, **keys) -> dict[tuple, dict]:
        cfg = world_config(synth_world, **{"track.detections": str(tmp_path / name),
                                           "track.det_fp_rate": 0.0, **keys})  # fmt: skip
        results = json.loads(make_detections(cfg, progress=False).read_text())["results"]
        return {(d["sample_token"], *d["translation"]): d for ds in results.values() for d in ds}

    nusc = NuScenes(version=synth_world.version, dataroot=str(synth_world.path), verbose=False)
    base = detections("base.json")
    assert detections("zero.json", **{"track.det_hidden_miss": 0.0}) == base

    def hidden(det: dict) -> bool:  # the annotation it was made from: the nearest, same sample
        anns = [nusc.get("sample_annotation", t)
                for t in nusc.get("sample", det["sample_token"])["anns"]]  # fmt: skip
        near = min(anns, key=lambda a: np.hypot(*np.subtract(a["translation"][:2],
                                                             det["translation"][:2])))  # fmt: skip
        return nusc.get("visibility", near["visibility_token"])["level"] == "v0-40"

    low = {k for k, d in base.items() if hidden(d)}
    assert len(low) > 40 and len(low) < len(base) / 2
    for chance, lo, hi in ((1.0, 1.0, 1.0), (0.5, 0.35, 0.65)):
        some = detections(f"h{chance}.json", **{"track.det_hidden_miss": chance})
        assert set(some) <= set(base)
        assert all(some[k] == base[k] for k in some)  # the others keep their bytes
        assert set(base) - set(some) <= low  # only hidden ones go
        assert lo <= len(low - set(some)) / len(low) <= hi


def test_velocities_written_as_detectors_without_them_write_and_nothing_else_moves(
    synth_world, tmp_path
):
    def results(name: str, **keys) -> list[dict]:
        cfg = world_config(synth_world, **{"track.detections": str(tmp_path / name), **keys})
        body = json.loads(make_detections(cfg, progress=False).read_text())["results"]
        return [d for ds in body.values() for d in ds]

    noisy = results("noisy.json")
    assert any(d["velocity"] != [0.0, 0.0] for d in noisy)
    for mode, written in (("zero", [0.0, 0.0]), ("none", None)):
        some = results(f"{mode}.json", **{"track.det_velocity": mode})
        assert [d["velocity"] for d in some] == [written] * len(noisy)  # clutter too
        strip = [{k: v for k, v in d.items() if k != "velocity"} for d in some]
        assert strip == [{k: v for k, v in d.items() if k != "velocity"} for d in noisy]
