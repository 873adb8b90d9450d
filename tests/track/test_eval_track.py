"""eval-track runs the devkit's own evaluation; show-tracks marks the switches it would count."""

import json

import pytest
from conftest import world_config
from nuscenes.eval.tracking.utils import category_to_tracking_name
from nuscenes.nuscenes import NuScenes

from bev_reid.track.detections import tracking_record, write_results
from bev_reid.track.evaluate import TrackingEvalError, evaluate_tracking, summary_table
from bev_reid.track.visualize import draw_tracks


def ground_truth_tracks(world, swap_after: int | None = None):
    """The ground truth written as tracking results (instance tokens as ids). With
    ``swap_after``, the car seen most often takes a new id after that many keyframes."""
    nusc = NuScenes(version=world.version, dataroot=str(world.path), verbose=False)
    anns = [a for a in nusc.sample_annotation if a["num_lidar_pts"] + a["num_radar_pts"] > 0]
    counts = {}
    for a in anns:
        if category_to_tracking_name(a["category_name"]) == "car":
            counts[a["instance_token"]] = counts.get(a["instance_token"], 0) + 1
    swapped = max(counts, key=counts.get)
    results = {s["token"]: [] for s in nusc.sample}
    seen = 0
    for s in sorted(nusc.sample, key=lambda s: s["timestamp"]):
        for a in (a for a in anns if a["sample_token"] == s["token"]):
            name = category_to_tracking_name(a["category_name"])
            if name is None:
                continue
            track_id = a["instance_token"]
            if track_id == swapped:
                seen += 1
                if swap_after is not None and seen > swap_after:
                    track_id += "-other"
            results[s["token"]].append(tracking_record(
                s["token"], a["translation"], a["size"], a["rotation"], (0.0, 0.0), track_id,
                name, 1.0))  # fmt: skip
    return results


def test_ground_truth_scores_perfectly_and_a_swap_is_one_switch(synth_world, tmp_path):
    write_results(tmp_path / "gt.json", ground_truth_tracks(synth_world))
    cfg = world_config(synth_world, **{"track.out": str(tmp_path / "gt.json"),
                                       "track.eval_out": str(tmp_path / "eval")})  # fmt: skip
    summary = evaluate_tracking(cfg)
    written = json.loads((tmp_path / "eval" / "metrics_summary.json").read_text())
    assert written["amota"] == pytest.approx(summary["amota"])
    assert summary["amota"] == pytest.approx(1.0) and summary["ids"] == 0
    assert summary["frag"] == 0 and summary["fp"] == 0
    assert "car" in summary_table(summary)

    write_results(tmp_path / "swap.json", ground_truth_tracks(synth_world, swap_after=2))
    cfg = world_config(synth_world, **{"track.out": str(tmp_path / "swap.json"),
                                       "track.eval_out": str(tmp_path / "eval2"),
                                       "track.picture": str(tmp_path / "swap.png")})  # fmt: skip
    assert evaluate_tracking(cfg)["ids"] == 1  # the devkit's count
    path, switches = draw_tracks(cfg)
    assert switches == 1 and path.stat().st_size > 10_000


def test_results_that_miss_keyframes_are_refused(synth_world, tmp_path):
    results = ground_truth_tracks(synth_world)
    dropped = sorted(results)[0]
    del results[dropped]
    write_results(tmp_path / "part.json", results)
    cfg = world_config(synth_world, **{"track.out": str(tmp_path / "part.json"),
                                       "track.eval_out": str(tmp_path / "eval")})  # fmt: skip
    with pytest.raises(TrackingEvalError, match="lacks 1 keyframe"):
        evaluate_tracking(cfg)
