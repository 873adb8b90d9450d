"""Filling a track's gaps: boxes interpolated forwards in time, on hand-made results."""

import math

import numpy as np
import pytest
from pyquaternion import Quaternion

from bev_reid.track.detections import tracking_record
from bev_reid.track.gaps import fill_gaps

TOKENS = [f"kf{k}" for k in range(6)]
STAMPS = [0, 500_000, 1_000_000, 1_500_000, 2_500_000, 3_000_000]  # one keyframe is 1 s late


def box(k, x, track="7", yaw=0.0, score=0.9, size=(2.0, 4.0, 1.5), name="car"):
    rotation = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
    return tracking_record(TOKENS[k], (x, 1.0, 0.5), size, rotation, (x, 0.0), track, name, score)


def test_a_gap_is_filled_forwards_in_time_with_the_tracks_mean_score():
    results = {t: [] for t in TOKENS}
    results["kf0"].append(box(0, 0.0, score=0.9))
    results["kf4"].append(box(4, 10.0, yaw=math.pi / 2, score=0.5, size=(2.0, 6.0, 1.5)))
    results["kf5"].append(box(5, 12.0, score=0.4))
    assert fill_gaps(results, TOKENS, STAMPS) == 3
    # kf1..kf3 lie 0.5, 1.0 and 1.5 s into the 2.5 s from kf0 to kf4: 1/5, 2/5 and 3/5 of the way
    for k, r in zip((1, 2, 3), (0.2, 0.4, 0.6), strict=True):
        (filled,) = results[TOKENS[k]]
        assert filled["sample_token"] == TOKENS[k] and filled["tracking_id"] == "7"
        assert filled["translation"] == pytest.approx([10.0 * r, 1.0, 0.5])
        assert filled["size"] == pytest.approx([2.0, 4.0 + 2.0 * r, 1.5])
        assert filled["velocity"] == pytest.approx([10.0 * r, 0.0])
        yaw = Quaternion(filled["rotation"]).yaw_pitch_roll[0]
        assert yaw == pytest.approx(math.pi / 2 * r)  # slerp about the vertical: yaw in step
        assert filled["tracking_score"] == pytest.approx(0.6)  # (0.9 + 0.5 + 0.4) / 3
        assert filled["tracking_name"] == "car"
    assert results["kf5"] == [box(5, 12.0, score=0.4)]  # no gap there: nothing added


def test_only_holes_inside_a_track_are_filled_per_id():
    results = {t: [] for t in TOKENS}
    results["kf1"] += [box(1, 0.0, track="a"), box(1, 50.0, track="b")]
    results["kf2"].append(box(2, 1.0, track="a"))
    results["kf3"].append(box(3, 52.0, track="b", name="truck"))
    assert fill_gaps(results, TOKENS, STAMPS) == 1  # b's kf2; nothing before a track or after
    assert [r["tracking_id"] for r in results["kf2"]] == ["a", "b"]
    assert results["kf2"][1]["translation"][0] == pytest.approx(51.0)
    assert results["kf0"] == [] and results["kf4"] == [] and results["kf5"] == []
    assert fill_gaps(results, TOKENS, STAMPS) == 0  # filled results have no holes left


def test_filled_boxes_are_what_a_plain_interpolation_gives():
    rng = np.random.default_rng(3)
    xs = rng.uniform(-20, 20, size=2)
    results = {t: [] for t in TOKENS}
    results["kf0"].append(box(0, xs[0]))
    results["kf5"].append(box(5, xs[1]))
    fill_gaps(results, TOKENS, STAMPS)
    for k in range(1, 5):
        expected = np.interp(STAMPS[k], [STAMPS[0], STAMPS[5]], xs)
        assert results[TOKENS[k]][0]["translation"][0] == pytest.approx(expected)
