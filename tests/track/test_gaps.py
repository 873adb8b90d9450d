"""Filling a track's gaps: boxes interpolated forwards in time, on hand-made results."""

import math

import numpy as np
import pytest
from pyquaternion import Quaternion

from bev_reid.track.detections import tracking_record
from bev_reid.track.gaps import fill_gaps, heading, merge_interleaved

TOKENS = [f"kf{k}" for k in range(6)]
STAMPS = [0, 500_000, 1_000_000, 1_500_000, 2_500_000, 3_000_000]  # one keyframe is 1 s late


def box(k, x, track="7", yaw=0.0, score=0.9, size=(2.0, 4.0, 1.5), name="car", y=1.0):
    rotation = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
    return tracking_record(TOKENS[k], (x, y, 0.5), size, rotation, (x, 0.0), track, name, score)


def test_a_gap_is_filled_forwards_in_time_with_the_tracks_mean_score():
    results = {t: [] for t in TOKENS}
    results["kf0"].append(box(0, 0.0, score=0.9))
    results["kf4"].append(box(4, 10.0, yaw=math.pi / 2, score=0.5, size=(2.0, 6.0, 1.5)))
    results["kf5"].append(box(5, 12.0, score=0.4))
    assert fill_gaps(results, TOKENS, STAMPS) == (3, 0)
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
    assert fill_gaps(results, TOKENS, STAMPS) == (1, 0)  # b's kf2; nothing before a track or after
    assert [r["tracking_id"] for r in results["kf2"]] == ["a", "b"]
    assert results["kf2"][1]["translation"][0] == pytest.approx(51.0)
    assert results["kf0"] == [] and results["kf4"] == [] and results["kf5"] == []
    assert fill_gaps(results, TOKENS, STAMPS) == (0, 0)  # filled results have no holes left


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


def corner(path=None, yaw_end=math.pi, flip=0.0):
    """A car on a quarter circle of radius 10 m about the origin, at constant speed, reported
    at kf0 ((10, 0), heading +y) and kf5 ((0, 10), heading ``yaw_end``), filled between."""
    results = {t: [] for t in TOKENS}
    results["kf0"].append(
        tracking_record("kf0", (10.0, 0.0, 0.5), (2.0, 4.0, 1.5),
                        Quaternion(axis=[0, 0, 1], angle=math.pi / 2 + flip).elements,
                        (0.0, 5.0), "7", "car", 0.9)
    )  # fmt: skip
    results["kf5"].append(
        tracking_record("kf5", (0.0, 10.0, 0.5), (2.0, 4.0, 1.5),
                        Quaternion(axis=[0, 0, 1], angle=yaw_end).elements,
                        (-5.0, 0.0), "7", "car", 0.9)
    )  # fmt: skip
    fill_gaps(results, TOKENS, STAMPS, **({} if path is None else {"path": path}))
    return [np.array(results[TOKENS[k]][0]["translation"][:2]) for k in range(1, 5)]


def on_arc(k):
    angle = math.pi / 2 * STAMPS[k] / STAMPS[5]  # constant speed: the angle in step with time
    return 10.0 * np.array([math.cos(angle), math.sin(angle)])


def test_a_car_that_turned_a_corner_while_lost_is_filled_on_the_corner():
    """The filled centres lie within 0.2 m of the circular arc at every keyframe (the cubic
    Hermite path's error for a quarter turn, worked out by hand: 0.15 m at the middle); the
    straight chord passes 2.9 m inside the arc at the middle."""
    curve, line = corner(), corner(path="line")
    for k, (c, s) in enumerate(zip(curve, line, strict=True), start=1):
        assert np.linalg.norm(c - on_arc(k)) < 0.2
        assert s == pytest.approx(
            np.array([10.0, 0.0]) + STAMPS[k] / STAMPS[5] * np.array([-10.0, 10.0])
        )
    middle = 10.0 * np.array([math.cos(math.pi / 4), math.sin(math.pi / 4)])
    assert np.linalg.norm(np.array([5.0, 5.0]) - middle) == pytest.approx(2.93, abs=0.01)
    # kf3 lies 1.5 s into the 3 s hole: the middle, (5, 5) + (m0 - m1) / 8, m = pi/2 * 10 m
    assert curve[2] == pytest.approx(5.0 + math.pi / 2 * 10.0 / 8, abs=1e-9)


def test_the_curve_reads_a_box_turned_backwards_and_not_a_heading_across_the_chord():
    """A yaw off by 180 deg (a detector's flip) gives the same path; a heading more than 78 deg
    off the chord (here the end box's, square across it) gives the straight chord."""
    for a, b in zip(corner(), corner(flip=math.pi), strict=True):
        assert a == pytest.approx(b, abs=1e-9)
    for a, b in zip(corner(yaw_end=math.pi / 4), corner(path="line"), strict=True):
        assert a == pytest.approx(b, abs=1e-9)


def test_a_straight_drive_is_filled_on_the_straight_line():
    """Headings along the chord: exactly the line. Headings 0.1 rad either side of it (a
    detector's yaw noise): a bow of (m0 - m1) / 8 at the middle, m = 30 m * sin(0.1) across the
    chord, 0.75 m."""
    for yaws, bow in (((0.0, 0.0), 0.0), ((0.1, -0.1), 0.75)):
        results = {t: [] for t in TOKENS}
        results["kf0"].append(box(0, 0.0, yaw=yaws[0]))
        results["kf5"].append(box(5, 30.0, yaw=yaws[1]))
        fill_gaps(results, TOKENS, STAMPS)
        for k in range(1, 5):
            x, y, _ = results[TOKENS[k]][0]["translation"]
            assert x == pytest.approx(30.0 * STAMPS[k] / STAMPS[5], abs=0.05)
            assert 1.0 <= y <= 1.0 + bow + 1e-9
        assert results["kf3"][0]["translation"][1] == pytest.approx(1.0 + bow, abs=0.01)


def test_heading_is_the_yaw_pyquaternion_reads():
    rng = np.random.default_rng(0)
    for yaw in rng.uniform(-math.pi, math.pi, size=50):
        q = Quaternion(axis=[0, 0, 1], angle=yaw).elements * rng.uniform(0.9, 1.1)  # unnormalised
        assert heading({"rotation": list(q)}) == pytest.approx(Quaternion(q).yaw_pitch_roll[0])
        assert heading({"rotation": list(q)}) == pytest.approx(yaw)


def test_lidar_seen_counts_the_points_the_annotations_record(dataroot):
    """Boxes at the annotations of a few keyframes: seen exactly where the annotation has a LiDAR
    point (its ``num_lidar_pts``, an independent count); the margin only adds points; a box far
    from everything is not seen."""
    from bev_reid.data.nuscenes import NuScenesDB
    from bev_reid.track.gaps import lidar_seen

    db = NuScenesDB(dataroot.path, dataroot.version)
    seen, loose = lidar_seen(db, 1, 0.0), lidar_seen(db, 1, 0.5)
    checked = hidden = 0
    for token in db.keyframes(db.scene_names[0])[:4]:
        anns = [db.get("sample_annotation", a) for a in db.sample(token)["anns"]]
        records = [
            tracking_record(
                token, a["translation"], a["size"], a["rotation"], (0.0, 0.0), "1", "car", 0.5
            )  # fmt: skip
            for a in anns
        ]
        got = seen(token, records)
        want = np.array([a["num_lidar_pts"] > 0 for a in anns])
        assert (got == want).all()
        assert (loose(token, records) >= got).all()
        checked, hidden = checked + len(anns), hidden + int((~want).sum())
        far = dict(records[0], translation=[1e4, 1e4, 0.0])
        assert not seen(token, [far])[0]
    assert checked >= 20 and hidden >= 1  # both kinds were there to tell apart


def test_boxes_the_lidar_does_not_see_are_left_out():
    results = {t: [] for t in TOKENS}
    results["kf0"].append(box(0, 0.0))
    results["kf4"].append(box(4, 8.0))
    asked = []

    def seen(token, records):  # the box at x = 1.6 m is hidden (kf1: 0.5 s of 2.5 s)
        asked.append(token)
        return np.array([abs(r["translation"][0] - 1.6) > 1e-6 for r in records])

    assert fill_gaps(results, TOKENS, STAMPS, seen) == (2, 1)
    assert results["kf1"] == [] and len(results["kf2"]) == len(results["kf3"]) == 1
    assert sorted(asked) == ["kf1", "kf2", "kf3"]  # once per keyframe with new boxes


def test_without_the_lidar_the_error_names_the_file_and_the_key(synth_world, tmp_path):
    """A dataroot of tables alone (no sensor files)."""
    import os

    from bev_reid.data.nuscenes import TABLES, NuScenesDB
    from bev_reid.data.records import NuScenesFileError
    from bev_reid.track.gaps import lidar_seen

    (tmp_path / synth_world.version).mkdir()
    for name in TABLES:
        table = f"{synth_world.version}/{name}.json"
        os.symlink(synth_world.path / table, tmp_path / table)
    db = NuScenesDB(tmp_path, synth_world.version)
    token = db.keyframes(db.scene_names[0])[1]
    with pytest.raises(NuScenesFileError, match=r"LiDAR point cloud .*fill_min_points.* 0"):
        lidar_seen(db, 1, 0.5)(token, [box(1, 0.0)])
    with pytest.raises(NuScenesFileError, match="fill_min_points"):  # before any tracking
        lidar_seen(db, 1, 0.5, first=token)


# A car driving along x at 4 m/s, where each keyframe has it (STAMPS: kf4 comes 1 s after kf3).
X = [4.0 * t / 1e6 for t in STAMPS]


def turns(reports, **kw):
    """Results with track ``t``'s box on the car at each of its keyframes ({t: [k]})."""
    results = {t: [] for t in TOKENS}
    for track, ks in reports.items():
        for k in ks:
            extra = dict(kw.get(track, {}))
            x = X[k] + extra.pop("x_shift", 0.0)
            results[TOKENS[k]].append(box(k, x, track=track, **extra))
    return results


def ids(results):
    return [[r["tracking_id"] for r in results[t]] for t in TOKENS]


def test_two_tracks_taking_turns_on_one_car_become_one():
    """An old track lost at kf1 takes the car back at kf4 while a newer one had followed it
    at kf2-kf3 and comes back at kf5: filled, each hole would hold a box beside the other's."""
    results = turns({"old": [0, 1, 4], "new": [2, 3, 5]})
    assert merge_interleaved(results, TOKENS, STAMPS, 0.1) == {"new": "old"}
    assert ids(results) == [["old"]] * 6
    assert fill_gaps(results, TOKENS, STAMPS) == (0, 0)  # one track, no hole
    unmerged = turns({"old": [0, 1, 4], "new": [2, 3, 5]})
    assert fill_gaps(unmerged, TOKENS, STAMPS) == (3, 0)  # old's kf2, kf3 beside new's; new's kf4
    assert sorted(ids(unmerged)[3]) == ["new", "old"]


def test_a_chain_of_three_becomes_one_and_the_renames_compose():
    results = turns({"a": [0, 2], "b": [1, 4], "c": [3, 5]})
    assert merge_interleaved(results, TOKENS, STAMPS, 0.1) == {"b": "a", "c": "a"}
    assert ids(results) == [["a"]] * 6


def test_tracks_that_do_not_take_turns_are_left_apart():
    # the later track's only boxes lie in one hole of the other: clutter beside a hidden car
    results = turns({"a": [0, 1, 5], "b": [2, 3]})
    assert merge_interleaved(results, TOKENS, STAMPS, 0.1) == {}
    # two parked cars side by side, 3 m apart, seen in turns (2 m wide boxes: no overlap)
    results = turns({"a": [0, 2, 4], "b": [1, 3, 5]}, b={"y": 4.0})
    assert merge_interleaved(results, TOKENS, STAMPS, 0.1) == {}
    # both reported at kf2: two objects
    results = turns({"a": [0, 2, 4], "b": [1, 2, 5]})
    assert merge_interleaved(results, TOKENS, STAMPS, 0.1) == {}
    # a car and a truck
    results = turns({"a": [0, 2, 4], "b": [1, 3, 5]}, b={"name": "truck"})
    assert merge_interleaved(results, TOKENS, STAMPS, 0.1) == {}
    # one after the other (stitching's business)
    results = turns({"a": [0, 1, 2], "b": [3, 4, 5]})
    assert merge_interleaved(results, TOKENS, STAMPS, 0.1) == {}


def test_a_track_inside_one_hole_joins_only_when_it_stands_on_the_interpolated_car():
    """a loses the car after kf0 and takes it back at kf5; b, born and ended inside that hole,
    followed it at kf2-kf3. Filled, a's hole would put a second box beside each of b's."""
    results = turns({"a": [0, 5], "b": [2, 3]})
    assert merge_interleaved(results, TOKENS, STAMPS, 0.1) == {}  # inside_iou 1: never
    assert merge_interleaved(results, TOKENS, STAMPS, 0.1, inside_iou=0.5) == {"b": "a"}
    assert ids(results) == [["a"], [], ["a"], ["a"], [], ["a"]]
    assert fill_gaps(results, TOKENS, STAMPS) == (2, 0)  # kf1, kf4: one box a keyframe
    # one box is enough
    results = turns({"a": [0, 5], "b": [3]})
    assert merge_interleaved(results, TOKENS, STAMPS, 0.1, inside_iou=0.5) == {"b": "a"}
    # 2 m ahead of the car along its path (a false positive beside it, or another car): the
    # 2 x 4 m boxes overlap by 2 x 2 = 4 m2 of a union of 12, 1/3
    results = turns({"a": [0, 5], "b": [2, 3]}, b={"x_shift": 2.0})
    assert merge_interleaved(results, TOKENS, STAMPS, 0.1, inside_iou=0.4) == {}
    assert merge_interleaved(results, TOKENS, STAMPS, 0.1, inside_iou=0.3) == {"b": "a"}
    # the limit on a pair taking turns stays max_iou (1/3 against 0.1 and 0.4)
    results = turns({"a": [0, 2, 4], "b": [1, 3, 5]}, b={"x_shift": 2.0})
    assert merge_interleaved(results, TOKENS, STAMPS, 0.4, inside_iou=0.0) == {}
    assert merge_interleaved(results, TOKENS, STAMPS, 0.1, inside_iou=1.0) == {"b": "a"}


def test_the_overlap_is_measured_against_the_interpolated_box():
    """b stands 1.2 m across the car's path at kf1 and kf3, where a's interpolated box is: a
    2 x 4 m box 1.2 m aside overlaps it by 0.8 x 4 = 3.2 m2 of a union of 12.8: 0.25."""
    results = turns({"a": [0, 2, 4], "b": [1, 3, 5]}, b={"y": 2.2})
    assert merge_interleaved(results, TOKENS, STAMPS, 0.3) == {}
    assert merge_interleaved(results, TOKENS, STAMPS, 0.2) == {"b": "a"}
