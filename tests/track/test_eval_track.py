"""eval-track runs the devkit's own evaluation; show-tracks marks the switches it would count
and lists them."""

import csv
import json

import numpy as np
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
    drawn = draw_tracks(cfg)
    assert drawn.drawn == 1 and drawn.picture.stat().st_size > 10_000
    assert drawn.switch_list == tmp_path / "swap-switches.csv"  # beside the picture

    # The switch list, against the swap as it was written: the car's third sighting.
    nusc = NuScenes(version=synth_world.version, dataroot=str(synth_world.path), verbose=False)
    (row,) = list(csv.DictReader(drawn.switch_list.open()))
    car = row["instance_token"]
    sightings = sorted(
        (nusc.get("sample", a["sample_token"])["timestamp"], a)
        for a in nusc.sample_annotation
        if a["instance_token"] == car and a["num_lidar_pts"] + a["num_radar_pts"] > 0
    )
    second, third = sightings[1][1], sightings[2][1]
    scene = nusc.get("scene", nusc.get("sample", third["sample_token"])["scene_token"])
    order = [s["token"] for s in sorted(nusc.sample, key=lambda s: s["timestamp"])
             if s["scene_token"] == scene["token"]]  # fmt: skip
    assert row["scene"] == scene["name"] and row["sample_token"] == third["sample_token"]
    assert int(row["keyframe"]) == order.index(third["sample_token"])
    assert int(row["gap"]) == order.index(third["sample_token"]) - order.index(
        second["sample_token"]
    )
    assert (row["from_id"], row["to_id"]) == (car, car + "-other")
    assert row["kind"] == "new" and row["from_alive"] == "False"
    assert row["tracking_name"] == "car"
    assert int(row["lidar_pts"]) == third["num_lidar_pts"]
    assert int(row["visibility"]) == int(third["visibility_token"])
    assert float(row["x"]) == pytest.approx(third["translation"][0], abs=0.01)


def test_two_tracks_that_trade_cars_are_listed_as_taken(synth_world, tmp_path):
    """Two cars seen at the same keyframes trade track ids from one keyframe on: two switches,
    each to a track that already followed the other car, whose old track goes on."""
    results = ground_truth_tracks(synth_world)
    nusc = NuScenes(version=synth_world.version, dataroot=str(synth_world.path), verbose=False)
    scene = nusc.scene[0]
    order = [s["token"] for s in sorted(nusc.sample, key=lambda s: s["timestamp"])
             if s["scene_token"] == scene["token"]]  # fmt: skip
    cars = [{r["tracking_id"] for r in results[t] if r["tracking_name"] == "car"} for t in order]
    # Two cars at keyframes k - 1 and k; from k on they trade ids.
    k, a, b = next(
        (k, *sorted(cars[k - 1] & cars[k])[:2])
        for k in range(1, len(order))
        if len(cars[k - 1] & cars[k]) >= 2
    )
    trade = {a: b, b: a}
    for token in order[k:]:
        for r in results[token]:
            r["tracking_id"] = trade.get(r["tracking_id"], r["tracking_id"])
    write_results(tmp_path / "trade.json", results)
    cfg = world_config(synth_world, **{"track.out": str(tmp_path / "trade.json"),
                                       "track.picture": str(tmp_path / "trade.png"),
                                       "track.switches": str(tmp_path / "list.csv"),
                                       "data.scenes": scene["name"]})  # fmt: skip
    drawn = draw_tracks(cfg)
    assert drawn.switch_list == tmp_path / "list.csv"
    rows = list(csv.DictReader(drawn.switch_list.open()))
    assert sorted((r["instance_token"], r["from_id"], r["to_id"]) for r in rows) == [
        (a, a, b), (b, b, a)
    ]  # fmt: skip
    for r in rows:
        assert int(r["keyframe"]) == k and r["sample_token"] == order[k] and r["gap"] == "1"
        assert r["kind"] == "taken" and r["from_alive"] == "True"
    assert [s.kind for s in drawn.switches] == ["taken", "taken"]


def test_results_that_miss_keyframes_are_refused(synth_world, tmp_path):
    results = ground_truth_tracks(synth_world)
    dropped = sorted(results)[0]
    del results[dropped]
    write_results(tmp_path / "part.json", results)
    cfg = world_config(synth_world, **{"track.out": str(tmp_path / "part.json"),
                                       "track.eval_out": str(tmp_path / "eval")})  # fmt: skip
    with pytest.raises(TrackingEvalError, match="lacks 1 keyframe"):
        evaluate_tracking(cfg)


def test_forward_interpolation_fills_a_hole_forwards_in_time_and_the_devkit_backwards():
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.tracking.data_classes import TrackingBox
    from nuscenes.eval.tracking.loaders import interpolate_tracks

    from bev_reid.track.evaluate import CONFIG_NAME, forward_interpolation

    config_factory(CONFIG_NAME)  # the devkit's boxes accept the class names its config sets

    def tracks():
        def box(x):
            return TrackingBox(sample_token="s", translation=(x, 0.0, 0.0), size=(2, 4, 1.5),
                               rotation=(1, 0, 0, 0), velocity=(3.0, 0.0), tracking_id="a",
                               tracking_name="car", tracking_score=0.5)  # fmt: skip

        return {0: [box(0.0)], 1: [], 2: [], 3: [box(9.0)], 4: []}  # seconds; 3 m/s

    fixed = forward_interpolation(tracks())
    assert [b.translation[0] for t in (1, 2) for b in fixed[t]] == pytest.approx([3.0, 6.0])
    assert fixed[4] == [] and len(fixed[0]) == len(fixed[3]) == 1
    devkit = interpolate_tracks(tracks())  # nuscenes-devkit 1.2.0, issue #1141
    assert [b.translation[0] for t in (1, 2) for b in devkit[t]] == pytest.approx([6.0, 3.0])


def test_a_hole_in_a_moving_cars_track_costs_nothing_with_the_fixed_interpolation(
    synth_world, tmp_path
):
    """The ground truth as results, with three keyframes of a moving car left out: the devkit
    fills them backwards in time (false positives beside misses); fixed, they match again."""
    results = ground_truth_tracks(synth_world)
    nusc = NuScenes(version=synth_world.version, dataroot=str(synth_world.path), verbose=False)
    order = [s["token"] for s in sorted(nusc.sample, key=lambda s: (s["scene_token"],
                                                                      s["timestamp"]))]  # fmt: skip

    def centre(k, car):
        (r,) = [r for r in results[order[k]] if r["tracking_id"] == car]
        return np.array(r["translation"][:2])

    def seen(k, car):
        same_scene = nusc.get("sample", order[k])["scene_token"] == nusc.get(
            "sample", order[k - 4])["scene_token"]  # fmt: skip
        return same_scene and all(
            any(r["tracking_id"] == car for r in results[order[j]]) for j in range(k - 4, k + 1)
        )

    def hole(k, car):  # keyframes k-3..k-1 left out of a car seen at k-4..k: how far off are
        ends = centre(k - 4, car), centre(k, car)  # the boxes filled forwards and backwards
        forward = [np.linalg.norm(ends[0] + (ends[1] - ends[0]) * i / 4 - centre(k - 4 + i, car))
                   for i in (1, 2, 3)]  # fmt: skip
        backward = np.linalg.norm(ends[0] + (ends[1] - ends[0]) * 3 / 4 - centre(k - 3, car))
        return max(forward), backward

    k, car = next(
        (k, car)
        for k in range(4, len(order))
        for car in sorted(
            {r["tracking_id"] for r in results[order[k]] if r["tracking_name"] == "car"}
        )
        if seen(k, car) and hole(k, car)[0] < 0.5 and hole(k, car)[1] > 3.0
    )
    for j in (k - 3, k - 2, k - 1):
        results[order[j]] = [r for r in results[order[j]] if r["tracking_id"] != car]
    write_results(tmp_path / "hole.json", results)
    summaries = {
        mode: evaluate_tracking(
            world_config(
                synth_world,
                **{
                    "track.out": str(tmp_path / "hole.json"),
                    "track.eval_out": str(tmp_path / mode),
                    "track.eval_interpolation": mode,
                },
            )
        )
        for mode in ("devkit", "fixed")
    }
    assert summaries["devkit"]["fp"] >= 2 and summaries["devkit"]["amota"] < 1.0
    assert summaries["fixed"]["fp"] == 0 and summaries["fixed"]["amota"] == pytest.approx(1.0)
    written = json.loads((tmp_path / "fixed" / "metrics_summary.json").read_text())
    assert written["interpolation"] == "fixed"
    official = json.loads((tmp_path / "devkit" / "metrics_summary.json").read_text())
    assert "interpolation" not in official
    assert "not the official figures" in summary_table(summaries["fixed"])
    assert "not the official" not in summary_table(summaries["devkit"])
