"""The life cycle through the tracking loop: birth, reports, coasting, death, class and
re-identification of a lost track by appearance, on hand-made keyframes."""

import dataclasses
import math

import numpy as np
import pytest

from bev_reid.config import TrackConfig
from bev_reid.track.detections import Detection
from bev_reid.track.lifecycle import Track, birth, gate_of, update
from bev_reid.track.tracker import SIZE_REFERENCE, SIZE_SAMPLES, Frame, Tracker

# lost_gate_speed_mps 0: a lost track's gate grows at full rate at any speed (the speed's share
# has its own test below). nms_iou 1: the hand-made boxes lie on a line, closer than real cars
# could stand; max_pair_cost 1e6: the gates are tested to their edges (both rules have their own
# tests below).
CFG = TrackConfig(gate_m=2.0, lost_gate_growth_m=1.0, max_age=6, appearance_weight=0.5,
                  max_lost_cost=0.7, max_appearance_distance=0.6, reid_max_age=20,
                  lost_gate_speed_mps=0.0, nms_iou=1.0, max_pair_cost=1e6)  # fmt: skip
EA, EC = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])  # two unlike vehicles


def det(
    x: float, y: float = 0.0, name: str = "car", score: float = 0.9, size=(1.9, 4.5, 1.6)
) -> Detection:
    return Detection("s", (x, y, 1.0), size, (1.0, 0.0, 0.0, 0.0), (0.0, 0.0), name, score)


def run(
    frames: list[list[tuple[Detection, np.ndarray]]], cfg=CFG, appearance=True,
    extent: float = 6.0,
):  # fmt: skip
    """Tracks keyframes 0.5 s apart; returns per keyframe the reported {x: tracking id}.
    ``extent``: the side of the embedding's crop, metres."""
    tracker, out = Tracker(cfg, use_appearance=appearance, look_extent_m=extent), []
    for k, items in enumerate(frames):
        dets = [d for d, _ in items]
        emb = np.stack([e for _, e in items]) if items else np.zeros((0, 3))
        records = tracker.step(Frame(f"s{k}", k * 500_000, dets, emb))
        out.append({round(r["translation"][0], 1): r["tracking_id"] for r in records})
    return out


def test_births_get_new_ids_and_matched_tracks_keep_theirs():
    out = run([[(det(0), EA), (det(10), EC)]] * 3)
    assert out[0] == {0.0: "0", 10.0: "1"}
    assert out[1] == out[2] == out[0]


def test_a_lost_track_coasts_for_max_age_keyframes_then_dies():
    seen = [(det(0), EA)]
    gap = [[]] * CFG.max_age
    for appearance in (False, True):
        assert run([seen, seen, *gap, seen], appearance=appearance)[-1] == {0.0: "0"}
        assert run([seen, [], seen], appearance=appearance)[1] == {}  # coasting: not reported
    assert run([seen, seen, *gap, [], seen], appearance=False)[-1] == {0.0: "1"}  # dead


def test_a_dormant_track_is_reidentified_by_appearance_alone():
    seen, gap = [(det(0), EA)], [[]] * (CFG.max_age + 3)  # lost past max_age: dormant
    assert run([seen, seen, *gap, seen])[-1] == {0.0: "0"}  # the same vehicle: re-identified
    assert run([seen, seen, *gap, [(det(0), EC)]])[-1] == {0.0: "1"}  # a stranger: a new track
    unknown = [(det(0), np.full(3, np.nan))]  # no embedding (e.g. an empty crop)
    assert run([seen, seen, *gap, unknown])[-1] == {0.0: "1"}
    late = [[]] * (CFG.reid_max_age + 1)
    assert run([seen, seen, *late, seen])[-1] == {0.0: "1"}  # past reid_max_age: dead


def test_min_hits_delays_the_report_and_classes_never_mix():
    cfg = dataclasses.replace(CFG, min_hits=2)
    out = run([[(det(0), EA)], [(det(0), EA)]], cfg)
    assert out == [{}, {0.0: "0"}]
    out = run([[(det(0), EA)], [(det(0.1, name="truck"), EA)]])
    assert out[1] == {0.1: "1"}


def test_a_lost_vehicle_is_reidentified_by_appearance_not_taken_by_a_stranger():
    # A is seen, hidden 3 keyframes (its gate grows to 5 m); a stranger C appears 2.5 m away
    # while A is hidden; A returns. Mixed cost of A's track and C: 0.5 * 2.5 / 5 + 0.5 * 1 > 0.7.
    a, c = (det(0.0), EA), (det(2.5), EC)
    frames = [[a], [a], [a], [], [], [], [c], [a, c], [a, c]]
    motion = run(frames, appearance=False)
    assert motion[6] == {2.5: "0"}  # motion alone hands A's identity to C...
    assert motion[7][0.0] != "0"  # ...and A comes back as someone else: a switch
    reid = run(frames)
    assert reid[6] == {2.5: "1"}  # C is too unlike A's memory for that distance: a new track
    assert reid[7] == reid[8] == {0.0: "0", 2.5: "1"}  # A re-identified with its own id
    near = run([[a], [a], [], [(det(0.5), EC)]])  # a lost track takes a near unlike detection
    assert near[3] == {0.5: "0"}
    # Within the matched gate (gate_m) the cap never applies: what motion alone would take, a
    # lost track takes. 0.5 * 1.5 / 3 + 0.5 * 1 = 0.75 is over a cap of 0.5, 1.5 m is within 2 m.
    strict = dataclasses.replace(CFG, max_lost_cost=0.5)

    def ids(x: float, cfg=strict, appearance=True) -> list[str]:  # ids after a keyframe lost
        return list(run([[a], [a], [], [(det(x), EC)]], cfg, appearance)[3].values())

    assert ids(1.5) == ["0"]
    assert ids(1.5, CFG) == ids(1.5, strict, False) == ["0"]
    assert ids(2.5) == ["1"]  # beyond gate_m: capped, a new track
    assert ids(2.5, strict, False) == ["0"]  # which motion alone would have taken


def test_a_look_of_part_of_a_long_vehicle_may_help_but_never_hinder():
    # A bus (12 m) is lost a keyframe and comes back 2.5 m on looking unlike its memory (its crop
    # sees another part of it). The cap (0.5 beyond gate_m: 0.5 * 2.5 / 3 + 0.5 * 1 = 0.92) gives
    # it a new track; with partial_look and a crop of 6 m, shorter than the bus, the pair
    # costs what motion alone says (2.5 / 3 = 0.83 < 1e6), so it keeps its id, as on motion
    # alone. A car, or a bus in a crop of 13 m, is not affected.
    bus = (2.5, 12.0, 3.5)  # width, length, height
    strict = dataclasses.replace(CFG, max_lost_cost=0.5, partial_look=False)
    partial = dataclasses.replace(strict, partial_look=True)  # the default; the crop's side 6 m

    def ids(cfg, size, appearance=True, extent=6.0) -> list[str]:
        frames = [[(det(0.0, size=size), EA)]] * 2 + [[], [(det(2.5, size=size), EC)]]
        return list(run(frames, cfg, appearance, extent)[3].values())

    assert ids(strict, bus) == ["1"]
    assert ids(strict, bus, appearance=False) == ["0"]
    assert ids(partial, bus) == ["0"]
    assert ids(partial, (1.9, 4.5, 1.6)) == ["1"]  # a car's crop holds all of it: capped
    assert ids(partial, bus, extent=13.0) == ["1"]
    # The look still helps a long vehicle: asleep past max_age, it is re-identified by its look
    # alone (motion alone has no such track), and a stranger is not taken.
    gap = [[]] * (CFG.max_age + 3)
    seen = [(det(0.0, size=bus), EA)]
    assert run([seen, seen, *gap, seen], partial)[-1] == {0.0: "0"}
    assert run([seen, seen, *gap, [(det(0.0, size=bus), EC)]], partial)[-1] == {0.0: "1"}


def test_on_motion_alone_a_lost_track_reaches_as_far_as_its_speed_allows():
    cfg = dataclasses.replace(CFG, lost_gate_speed_mps=2.0)
    # The gate by hand: 3 keyframes lost at 1 m/s, half of the full speed: 2 + 0.5 * 1 * 3.
    track = birth(0, det(0.0), None, cfg)
    track.kf.x[2:] = (0.6, 0.8)  # velocity, 1 m/s
    track.misses = 3
    assert gate_of(track, cfg, 0.0) == pytest.approx(3.5)
    # With views on both sides the share is at least lost_gate_look_floor: 0.25 + 0.75 * 0.5.
    assert gate_of(track, cfg, 0.25) == pytest.approx(2 + 0.625 * 3)
    # The full growth at any speed: 2 + 1 * 3 (it scales the cost's distance term).
    assert gate_of(track, cfg) == gate_of(track, CFG, 0.0) == pytest.approx(5.0)
    full = dataclasses.replace(cfg, lost_gate_look_floor=1.0)
    track.kf.x[2:] = (3.0, 4.0)  # 5 m/s: the full growth, up to max_gate_m
    track.misses = 9
    assert gate_of(track, cfg, 0.0) == gate_of(track, cfg, 0.25) == cfg.max_gate_m

    def moving(x: float, v: float) -> Detection:
        return Detection("s", (x, 0.0, 1.0), (1.9, 4.5, 1.6), (1.0, 0.0, 0.0, 0.0), (v, 0.0),
                         "car", 0.9)  # fmt: skip

    def ids(frames, cfg, appearance=True) -> list[str]:  # ids reported at the last keyframe
        return list(run(frames, cfg, appearance)[-1].values())

    nan = np.full(3, np.nan)
    # A parked car lost one keyframe; 2.5 m away (its full gate 3 m) a detection: its neighbour.
    parked = [[(det(0.0), EA)], [(det(0.0), EA)], [], [(det(2.5), nan)]]
    assert ids(parked, CFG, False) == ["0"]  # a gate growing at any speed takes it
    assert ids(parked, cfg, False) == ["1"]  # parked: the gate stays at gate_m
    assert ids(parked, cfg) == ["1"]  # with embeddings too when the detection has none
    parked[3] = [(det(2.5), EA)]  # one that looks like the car reaches the full gate with a
    assert ids(parked, full) == ["0"]  # floor of 1, with 0.25 only 2 + 0.25 x 1 m
    assert ids(parked, cfg) == ["1"]
    parked[3] = [(det(2.2), EA)]
    assert ids(parked, cfg) == ["0"]
    # At 5 m/s, predicted at 7.5 m after the keyframe lost, seen 2.5 m further: taken.
    driving = [[(moving(0.0, 5.0), EA)], [(moving(2.5, 5.0), EA)], [], [(moving(10.0, 5.0), nan)]]
    assert ids(driving, cfg, False) == ["0"]


def test_the_look_floor_narrows_pairs_with_views_and_leaves_motion_alone():
    """lost_gate_look_floor narrows a parked lost track's gate for the pairs with a view on both
    sides, and scales their distance term by it; a pair without views keeps the full gate's
    scale, so motion alone is as it was."""

    def parked_lost_twice(floor: float, appearance: bool) -> Tracker:
        cfg = dataclasses.replace(CFG, lost_gate_speed_mps=2.0, lost_gate_look_floor=floor)
        tracker = Tracker(cfg, use_appearance=appearance)
        for k, dets in enumerate([[det(0.0)], [det(0.0)], [], []]):
            emb = np.stack([EA] * len(dets)) if dets and appearance else None
            tracker.step(Frame(f"s{k}", k * 500_000, dets, emb))
        (track,) = tracker.tracks
        assert track.misses == 2 and np.linalg.norm(track.kf.velocity) < 0.2
        return tracker

    def cost(tracker: Tracker, xs: list[float]) -> np.ndarray:
        views = np.stack([EA] * len(xs)) if tracker.use_appearance else None
        return tracker._cost(tracker.tracks, [det(x) for x in xs], views, 0.0)[0]

    full = 2.0 + 1.0 * 2  # the full gate after two keyframes lost
    for floor, look in ((0.25, 2.0 + 0.25 * 2), (1.0, full)):
        # Motion alone: scaled by the full gate; a parked track's gate stays at gate_m.
        assert cost(parked_lost_twice(floor, False), [1.5, 2.2]) == pytest.approx(
            [1.5 / full, np.inf]
        )
        w = CFG.appearance_weight  # with views: scaled by the look gate, 2.2 m inside it
        assert cost(parked_lost_twice(floor, True), [1.5, 2.2]) == pytest.approx(
            [(1 - w) * 1.5 / look, (1 - w) * 2.2 / look]
        )
    # 2.8 m: beyond the look gate of the floor (2 + 0.25 x 2 m), inside the full one.
    assert cost(parked_lost_twice(0.25, True), [2.8])[0] == np.inf
    assert np.isfinite(cost(parked_lost_twice(1.0, True), [2.8])[0])


def test_appearance_memory_mean_and_nearest():
    track = birth(0, det(0), np.array([1.0, 0.0]), dataclasses.replace(CFG, memory=2))
    for e in ([0.0, 1.0], [0.0, 1.0]):
        track.remember(np.array(e), 2)
    assert len(track.memory) == 2  # the oldest view left
    probe = np.array([[1.0, 0.0], [0.0, 1.0], [np.nan, np.nan]])
    assert track.appearance_distance(probe, "nearest")[:2] == pytest.approx([1.0, 0.0])
    assert np.isnan(track.appearance_distance(probe, "mean")[2])
    mixed = Track(1, "car", track.kf, track.detection)
    for e in ([1.0, 0.0], [0.0, 1.0]):
        mixed.remember(np.array(e), 4)
    assert mixed.appearance_distance(probe[:2], "mean") == pytest.approx([1 - 2**-0.5] * 2)


def parked(k: int, jitter: float) -> list[tuple[Detection, np.ndarray]]:
    """Twelve parked cars far from the rest, their sizes off by a factor (1 + jitter) up and
    down in turn at keyframe k: matches of running tracks that show the detector's size noise."""
    out = []
    for i in range(12):
        f = (1 + jitter) ** (1 if (i + k) % 2 else -1)
        out.append((det(100.0 + 10 * i, 50.0, size=(1.9 * f, 4.5 * f, 1.6 * f)), EC))
    return out


def test_a_lost_track_prefers_a_box_of_its_own_size_as_far_as_sizes_are_steady():
    # A car lost one keyframe (gate 3 m); a van's detection 0.6 m from it, the car's own 1.0 m.
    van = det(0.6, size=(2.0, 5.4, 2.2))
    change = math.log(2.0 / 1.9) + math.log(5.4 / 4.5) + math.log(2.2 / 1.6)  # 0.55

    def last(jitter: float, cfg=CFG, appearance=True) -> dict:
        car = [(det(0.0), EA)]
        frames = [car, car, [], [(van, EA), (det(1.0), EA)]]
        return run([f + parked(k, jitter) for k, f in enumerate(frames)], cfg, appearance)[-1]

    # The running matches before keyframe 3: the car's at keyframe 1 (no change), the parked
    # cars' 12 at keyframe 1 by 6 log(1 + jitter) (from one box to the other way) and 12 at
    # keyframe 2 by 3 log(1 + jitter) (from the mean of both, 1): median 3 log(1 + jitter).
    assert SIZE_SAMPLES <= 25
    steady = math.exp(SIZE_REFERENCE / 3) - 1  # median SIZE_REFERENCE: the weight as set
    for appearance in (False, True):  # same look: distance and size decide, in both modes
        # Distance alone: 0.6 / 3 < 1.0 / 3, the van. With size: 0.2 + 1 x 0.55 > 0.33, the car
        # (and with the mixed cost, 0.5 x 0.2 + 0.55 > 0.5 x 0.33).
        out = last(steady, appearance=appearance)
        assert out[1.0] == "0" and out[0.6] != "0"
        out = last(steady, dataclasses.replace(CFG, size_weight=0.0), appearance)
        assert out[0.6] == "0" and out[1.0] != "0"
    # Sizes four times as noisy: the weight falls 16-fold, 0.5 (0.2 + 0) + 0.55 / 16 < 0.5 x 0.33
    # (the mixed cost, appearance alike): the van.
    out = last(math.exp(4 * SIZE_REFERENCE / 3) - 1)
    assert out[0.6] == "0" and out[1.0] != "0"
    assert change == pytest.approx(0.55, abs=0.01)
    # A track matched at the last keyframe goes by distance alone: it takes the van.
    car = [(det(0.0), EA)]
    frames = [car, car, car, [(van, EA), (det(1.0), EA)]]
    out = run([f + parked(k, steady) for k, f in enumerate(frames)])[-1]
    assert out[1.0] != "0" and "0" in out.values()


def test_a_track_remembers_the_geometric_mean_of_its_last_sizes():
    cfg = dataclasses.replace(CFG, memory=2)
    track = birth(0, det(0.0, size=(1.0, 4.0, 1.0)), None, cfg)
    assert track.size() == pytest.approx([1.0, 4.0, 1.0])
    update(track, det(0.0, size=(4.0, 4.0, 2.0)), None, cfg)
    assert track.size() == pytest.approx([2.0, 4.0, 2**0.5])
    update(track, det(0.0, size=(4.0, 1.0, 2.0)), None, cfg)  # the first box left the memory
    assert track.size() == pytest.approx([4.0, 2.0, 2.0])


def test_the_detection_velocity_tells_a_parked_car_from_one_driving_past_its_spot():
    def car(x: float, v: float) -> Detection:
        return Detection("s", (x, 0.0, 1.0), (1.9, 4.5, 1.6), (1.0, 0.0, 0.0, 0.0), (v, 0.0),
                         "car", 0.9)  # fmt: skip

    nan = np.full(3, np.nan)
    own = dataclasses.replace(CFG, velocity_blend=0.0)
    # Parked at x = 0, lost for 3 keyframes; then a car 1 m from its spot going 7 m/s. Speeding
    # up evenly from 0 to 7 m/s in the 2 s since the track was seen covers 7 m: not the parked
    # car (6 m off, beyond its 5 m gate). Its own velocity alone puts it 1 m off: taken.
    passing = [[(car(0.0, 0.0), nan)]] * 2 + [[]] * 3 + [[(car(1.0, 7.0), nan)]]
    for appearance in (False, True):
        assert list(run(passing, CFG, appearance)[-1].values()) == ["1"]
        assert list(run(passing, own, appearance)[-1].values()) == ["0"]
    # Seen at 8 m/s twice, hidden for 3 keyframes, then standing 8 m on from its last sighting:
    # braking evenly to a stop in those 2 s covers 8 m; at its own 8 m/s it would be 16 m on
    # (8 m off, beyond the 5 m gate).
    braking = [[(car(-4.0, 8.0), nan)], [(car(0.0, 8.0), nan)], [], [], [], [(car(8.0, 0.0), nan)]]
    assert list(run(braking, CFG, False)[-1].values()) == ["0"]
    assert list(run(braking, own, False)[-1].values()) == ["1"]


def test_a_slow_lost_track_is_also_looked_for_where_it_stood():
    # A parked car seen twice 0.4 m apart (the detector's noise): its filter believes it creeps
    # along x at about 0.8 m/s. Hidden for 4 keyframes, it is predicted 2 m from its spot; a
    # stranger then stands 1.4 m from the spot, nearer that prediction, and the car reappears
    # at its spot. Looked for at its spot too, the track keeps its car; looked for only where
    # its creeping would have taken it, it takes the stranger.
    nan = np.full(3, np.nan)
    cfg = dataclasses.replace(CFG, velocity_blend=0.0)
    seen = [[(det(-0.4), nan)], [(det(0.0), nan)]]
    tracker = Tracker(cfg, use_appearance=False)
    for k, items in enumerate([*seen, [], [], [], []]):
        tracker.step(Frame(f"s{k}", k * 500_000, [d for d, _ in items], np.zeros((len(items), 3))))
    (track,) = tracker.tracks
    assert 0.5 < track.kf.velocity[0] < cfg.lost_still_speed_mps  # slow: may stand
    assert track.kf.centre[0] + 0.5 * track.kf.velocity[0] > 1.8  # where it is looked for
    back = [(det(0.0), nan), (det(1.4), nan)]
    frames = [*seen, [], [], [], [], back]
    off = dataclasses.replace(cfg, lost_still_speed_mps=0.0)
    for appearance in (False, True):
        assert run(frames, cfg, appearance)[-1] == {0.0: "0", 1.4: "1"}
        assert run(frames, off, appearance)[-1] == {0.0: "1", 1.4: "0"}  # a switch
    # With the gate kept at 2 m, a car 1 m behind the spot is out of reach of the prediction:
    # standing, it may be the parked car; driving past at 7 m/s, it is not looked for there.
    narrow = dataclasses.replace(cfg, lost_gate_growth_m=0.0)
    for speed, expected in ((0.0, "0"), (7.0, "1")):
        car = Detection("s", (-1.0, 0.0, 1.0), (1.9, 4.5, 1.6), (1.0, 0.0, 0.0, 0.0),
                        (speed, 0.0), "car", 0.9)  # fmt: skip
        assert run([*seen, [], [], [], [], [(car, nan)]], narrow, False)[-1] == {-1.0: expected}


def at(x: float, y: float, score: float = 0.9) -> Detection:
    return Detection("s", (x, y, 1.0), (1.9, 4.5, 1.6), (1.0, 0.0, 0.0, 0.0), (0.0, 0.0), "car",
                     score)  # fmt: skip


def ids_at(frames, cfg, appearance) -> dict[tuple[float, float], str]:
    """The last keyframe's {(x, y) of a detection: the tracking id reported nearest it}."""
    tracker = Tracker(cfg, use_appearance=appearance)
    for k, items in enumerate(frames):
        emb = np.stack([e for _, e in items]) if items else np.zeros((0, 3))
        records = tracker.step(Frame(f"s{k}", k * 500_000, [d for d, _ in items], emb))
    out = {}
    for r in records:  # a track reports its filtered centre, near its detection
        centre = r["translation"][:2]
        near = min(frames[-1], key=lambda item: math.dist(item[0].translation[:2], centre))
        out[tuple(np.round(near[0].translation[:2], 1))] = r["tracking_id"]
    return out


def test_a_lost_parked_car_keeps_its_own_detection_from_a_false_positive_track():
    # A parked car (track 0) at the origin; a false positive (no embedding) 1.4 m to its side
    # starts track 1; both are missed once; the car returns with another false positive 1.4 m
    # to its other side. Track 1 could take the car (1.4 m: cost 0.7) and track 0 the new false
    # positive (0.7): two pairs. Leaving a track and a detection apart at 0.8 (max_pair_cost),
    # the car's own pair (cost 0) saves 0.8 against 2 x 0.1.
    cfg = dataclasses.replace(CFG, lost_gate_growth_m=0.0)  # the gate stays at 2 m
    nan = np.full(3, np.nan)
    car = (at(0.0, 0.0), EA)
    frames = [[car], [car, (at(0.0, 1.4, 0.3), nan)], [], [car, (at(0.0, -1.4, 0.3), nan)]]
    for appearance in (False, True):
        most_pairs = ids_at(frames, cfg, appearance)
        assert most_pairs[(0.0, 0.0)] == "1" and most_pairs[(0.0, -1.4)] == "0"  # a switch
        saving = ids_at(frames, dataclasses.replace(cfg, max_pair_cost=0.8), appearance)
        assert saving == {(0.0, 0.0): "0", (0.0, -1.4): "2"}


def test_non_maximum_suppression_drops_a_lower_scored_overlapping_box():
    # Two boxes of one car 1 m apart along its length (IoU 3.5 x 1.9 / 5.5 x 1.9 = 0.64) and a
    # car 3 m to the side: with nms_iou 0.5 the 0.4-scored duplicate goes; with 1, it starts a
    # track of its own.
    frames = [[(at(0.0, 0.0), EA), (at(1.0, 0.0, 0.4), EA), (at(0.0, 3.0), EC)]]
    cfg = dataclasses.replace(CFG, nms_iou=0.5)
    assert ids_at(frames, cfg, True) == {(0.0, 0.0): "0", (0.0, 3.0): "1"}
    assert ids_at(frames, dataclasses.replace(cfg, nms_iou=0.7), True) == {
        (0.0, 0.0): "0", (1.0, 0.0): "1", (0.0, 3.0): "2"
    }  # fmt: skip
    assert len(ids_at(frames, CFG, False)) == 3  # 1 (the default): none dropped
    # Pedestrians are not in nms_classes: two close together (IoU 0.6 x 0.7 / 0.8 x 0.7) stay.
    people = [[(dataclasses.replace(d, name="pedestrian", size=(0.7, 0.7, 1.8)), e)
               for d, e in [(at(0.0, 0.0), EA), (at(0.1, 0.0, 0.4), EC)]]]  # fmt: skip
    assert len(ids_at(people, cfg, True)) == 2
    assert len(ids_at(people, dataclasses.replace(cfg, nms_classes=("pedestrian",)), True)) == 1


def unknown(x: float, y: float = 0.0, yaw: float = 0.0, name: str = "car") -> Detection:
    """A box whose detector gives no velocity (NaN), heading ``yaw`` radians."""
    rotation = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
    return Detection("s", (x, y, 1.0), (1.9, 4.5, 1.6), rotation, (math.nan, math.nan), name,
                     0.9)  # fmt: skip


def test_without_the_detector_velocity_a_moving_car_keeps_its_track():
    nan = np.full(3, np.nan)
    # Driving along x at 8 m/s (4 m a keyframe), no velocity given: the new track may find its
    # second box up to gate_m + max_speed_mps x 0.5 s (9.5 m) away, and then has its speed.
    frames = [[(unknown(4.0 * k), nan)] for k in range(6)]
    for appearance in (False, True):
        assert {i for out in run(frames, CFG, appearance) for i in out.values()} == {"0"}
    tracker = Tracker(CFG, use_appearance=False)
    for k, items in enumerate(frames[:2]):
        tracker.step(Frame(f"s{k}", k * 500_000, [d for d, _ in items], np.zeros((1, 3))))
    assert tracker.tracks[0].kf.velocity[0] == pytest.approx(8.0, abs=0.5)
    # Taken at its word, a detector's (0, 0) says the car stands: every box starts a track.
    zeros = [[(det(4.0 * k), nan)] for k in range(6)]
    assert [list(out.values()) for out in run(zeros, CFG, False)] == [[str(k)] for k in range(6)]
    # Slower than 4 m/s the limit stops it: 3 m a keyframe is beyond 2 + 2 x 0.5 m.
    slow = dataclasses.replace(CFG, max_speed_mps=2.0)
    assert run(frames, slow, False)[1] == {4.0: "1"}


def test_without_the_detector_velocity_a_far_second_box_lies_along_the_heading():
    nan = np.full(3, np.nan)
    # A car seen once at the origin, heading along x, then missed; a car 5 m away appears:
    # ahead of it (0 deg off its heading), it may be the same one driving on; beside it (90
    # deg), or 40 deg off, it is another (a parked neighbour), past max_heading_change_deg.
    first = [(unknown(0.0), nan)]
    assert run([first, [(unknown(5.0), nan)]], CFG, False)[1] == {5.0: "0"}
    assert run([first, [(unknown(-5.0), nan)]], CFG, False)[1] == {-5.0: "0"}  # reversing
    assert run([first, [(unknown(0.0, 5.0), nan)]], CFG, False)[1] == {0.0: "1"}
    off = unknown(5 * math.cos(math.radians(40)), 5 * math.sin(math.radians(40)))
    assert list(run([first, [(off, nan)]], CFG, False)[1].values()) == ["1"]
    wide = dataclasses.replace(CFG, max_heading_change_deg=45.0)
    assert list(run([first, [(off, nan)]], wide, False)[1].values()) == ["0"]
    # Heading along y, the same box beside it is ahead of it.
    along_y = [(unknown(0.0, yaw=math.pi / 2), nan)]
    assert run([along_y, [(unknown(0.0, 5.0), nan)]], CFG, False)[1] == {0.0: "0"}


def test_tracks_of_known_motion_take_their_detections_before_a_new_track_without_one():
    # Track 0 stands at the origin (the detector's velocity 0); track 1 is born 6 m ahead
    # without one. The next box lies 1.5 m from track 0 (cost 0.75 of its 2 m gate) and 4.5 m
    # from track 1, whose wide gate (9.5 m) would make it cheaper (0.47): track 0 goes first.
    nan = np.full(3, np.nan)
    frames = [[(det(0.0), nan)], [(det(0.0), nan), (unknown(6.0), nan)], [(det(1.5), nan)]]
    assert list(run(frames, CFG, False)[2].values()) == ["0"]


def test_without_the_detector_velocity_a_pedestrian_is_not_looked_for_as_far_as_a_car():
    # 4 m a keyframe ahead: within a car's 2 + 15 x 0.5 m, beyond a pedestrian's 2 + 3 x 0.5 m.
    nan = np.full(3, np.nan)
    for name, second in (("car", "0"), ("pedestrian", "1")):
        frames = [[(unknown(0.0, name=name), nan)], [(unknown(4.0, name=name), nan)]]
        assert run(frames, CFG, False)[1] == {4.0: second}, name
    slow = [[(unknown(0.0, name="pedestrian"), nan)], [(unknown(3.0, name="pedestrian"), nan)]]
    assert list(run(slow, CFG, False)[1].values()) == ["0"]
