"""Tracklet stitching: which tracks join an earlier one, on hand-made tracklets and through the
tracking loop (a vehicle that returns without an embedding, then shows itself)."""

import dataclasses

import numpy as np

from bev_reid.config import TrackConfig
from bev_reid.track.detections import Detection
from bev_reid.track.stitch import start_tracklet, stitch, stitch_cost
from bev_reid.track.tracker import Frame, Tracker

CFG = TrackConfig(gate_m=2.0, lost_gate_growth_m=1.0, max_age=2, reid_max_age=10,
                  stitch_gate_m=6.0, stitch_max_distance=0.3, memory=3)  # fmt: skip
EA, EB, EC = np.eye(3)  # three unlike vehicles
NAN = np.full(3, np.nan)


def tracklet(i, first, last, x0, x1=None, view=EA, label="car", vx=0.0, views=None):
    """A track reported from keyframe ``first`` to ``last`` (0.5 s apart), moving from x0 to x1
    at vx m/s, with ``view`` at every report (or the given ``views``)."""
    x1 = x0 if x1 is None else x1
    views = [view] * (last - first + 1) if views is None else views
    t = start_tracklet(i, label, first, first * 0.5, (x0, 0.0), (vx, 0.0), views[0], CFG.memory)
    for k, v in zip(range(first + 1, last + 1), views[1:], strict=True):
        t.report(k, k * 0.5, (x1, 0.0), (vx, 0.0), v, CFG.memory)
    return t


def test_a_later_track_that_looks_alike_and_starts_near_takes_the_earlier_id():
    assert stitch([tracklet(0, 0, 3, 0.0), tracklet(1, 8, 9, 0.5)], CFG) == {1: 0}


def test_no_join_across_looks_classes_overlaps_gaps_or_distance():
    a = tracklet(0, 0, 3, 0.0)
    assert stitch([a, tracklet(1, 8, 9, 0.5, view=EB)], CFG) == {}  # looks unlike
    assert stitch([a, tracklet(1, 8, 9, 0.5, label="truck")], CFG) == {}
    assert stitch([a, tracklet(1, 3, 9, 0.5)], CFG) == {}  # starts before the other ended
    assert stitch([a, tracklet(1, 3 + CFG.reid_max_age + 1, 20, 0.5)], CFG) == {}  # too late
    assert stitch([a, tracklet(1, 3 + CFG.reid_max_age, 20, 0.5)], CFG) == {1: 0}  # just in time
    assert stitch([a, tracklet(1, 8, 9, CFG.stitch_gate_m + 0.1)], CFG) == {}  # too far
    wide = dataclasses.replace(CFG, lost_gate_speed_mps=0.0)  # the growth at any speed
    assert stitch([a, tracklet(1, 4, 5, 3.1)], wide) == {}  # one keyframe: gate 2 + 1 m
    assert stitch([a, tracklet(1, 4, 5, 2.9)], wide) == {1: 0}
    assert stitch([a, tracklet(1, 8, 9, 0.5, views=[NAN, NAN])], CFG) == {}  # no views


def test_the_gate_follows_the_velocities_of_both_tracks():
    # A goes 4 m/s; B starts 5 keyframes (2.5 s) after A's end, also at 4 m/s: 10 m on, joined
    # (the gate is 6 m wide); where A ended, yet moving as fast, it is 10 m off.
    moving = tracklet(0, 0, 3, -6.0, 0.0, vx=4.0)
    assert stitch([moving, tracklet(1, 8, 9, 10.0, vx=4.0)], CFG) == {1: 0}
    assert stitch([moving, tracklet(1, 8, 9, 0.0, vx=4.0)], CFG) == {}
    # A ends at 8 m/s; B stands 8 m on, 2 s later (gate 6 m): braking evenly from 8 m/s to 0
    # covers 8 m (velocity_blend 0.5), at A's own velocity the car would be 16 m on.
    # (The speed rule, tested below, is off here.)
    fast, stopped = tracklet(0, 0, 3, -12.0, 0.0, vx=8.0), tracklet(1, 7, 8, 8.0)
    braking = dataclasses.replace(CFG, stitch_max_speed_change=1e6)
    assert stitch([fast, stopped], braking) == {1: 0}
    assert stitch([fast, stopped], dataclasses.replace(braking, velocity_blend=0.0)) == {}


def test_no_join_when_the_speed_changed_more_than_the_limit():
    # A ends at 4 m/s; B starts where A's blended motion puts it (2 s later: 4 keyframes), at
    # 1.1 or 6.9 m/s (a change of 2.9 m/s) or at 0.9 or 7.1 m/s (3.1 m/s): the default limit is
    # 3 m/s. The direction does not count, only the speed: B going the other way at 4 m/s is
    # joined.
    assert CFG.stitch_max_speed_change == 3.0
    a = tracklet(0, 0, 3, -6.0, 0.0, vx=4.0)
    for vb, joined in ((1.1, True), (0.9, False), (6.9, True), (7.1, False)):
        b = tracklet(1, 7, 8, 2.0 * (4.0 + vb) / 2, vx=vb)  # constant acceleration over 2 s
        assert (stitch([a, b], CFG) == {1: 0}) is joined, vb
    back = tracklet(1, 7, 8, 4.0, vx=-4.0)  # 4 m/s, the other way: velocities blend to 0
    assert stitch([a, back], CFG) == {1: 0}
    assert stitch([a, tracklet(1, 7, 8, 2.0 * (4.0 + 0.9) / 2, vx=0.9)],
                  dataclasses.replace(CFG, stitch_max_speed_change=1e6)) == {1: 0}  # fmt: skip


def test_a_parked_track_is_joined_only_near_where_it_stood():
    # A parked car's gate does not widen with the keyframes it was hidden (as a lost track's on
    # motion alone): 5 keyframes after A, 2.9 m from its end, too far; 1.9 m, joined. A car
    # driving at lost_gate_speed_mps (2 m/s) and more gets the full growth, up to
    # stitch_gate_m (6 m here).
    parked = tracklet(0, 0, 3, 0.0)
    assert stitch([parked, tracklet(1, 8, 9, 2.9)], CFG) == {}
    assert stitch([parked, tracklet(1, 8, 9, 1.9)], CFG) == {1: 0}
    wide = dataclasses.replace(CFG, lost_gate_speed_mps=0.0)  # the growth at any speed
    assert stitch([parked, tracklet(1, 8, 9, 2.9)], wide) == {1: 0}
    moving = tracklet(0, 0, 3, -6.0, 0.0, vx=2.0)  # 5 keyframes on: predicted at 5 m
    assert stitch([moving, tracklet(1, 8, 9, 5.0 + 5.9, vx=2.0)], CFG) == {1: 0}
    assert stitch([moving, tracklet(1, 8, 9, 5.0 + 6.1, vx=2.0)], CFG) == {}


def test_a_slow_track_is_looked_for_where_it_stood_as_well():
    # A stands at 0 with a noisy 0.9 m/s; 10 keyframes (5 s) later B stands 1.5 m behind it,
    # moving back at 0.5 m/s. Carried on by the velocities blended, A would be at +1.0 m,
    # 2.5 m from B: beyond gate_m (the growth is off here to keep the numbers plain). From
    # where A stood B is 1.5 m: joined, unless lost_still_speed_mps is 0.
    cfg = dataclasses.replace(CFG, lost_gate_growth_m=0.0)
    a = tracklet(0, 0, 3, 0.0, vx=0.9)
    b = tracklet(1, 13, 14, -1.5, vx=-0.5)
    assert stitch([a, b], cfg) == {1: 0}
    assert stitch([a, b], dataclasses.replace(cfg, lost_still_speed_mps=0.0)) == {}
    # B at the same place driving on at 1.2 m/s is no parked car: only where A's motion
    # carries it counts (+5.25 m, 6.75 m from B).
    fast = tracklet(1, 13, 14, -1.5, vx=1.2)
    assert stitch([a, fast], cfg) == {}
    assert stitch([a, fast], dataclasses.replace(cfg, lost_still_speed_mps=1.5)) == {1: 0}


def test_the_view_means_are_compared_and_the_first_and_last_views_count():
    # B's first views look like A's last ones; its later views (e.g. of a neighbour it swapped
    # to) do not count, as the head holds only the first `memory` views.
    a = tracklet(0, 0, 4, 0.0, views=[EB, EB, EA, EA, EA])
    b = tracklet(1, 7, 12, 0.0, views=[EA, EA, EA, EC, EC, EC])
    cost = stitch_cost([a, b], CFG)
    assert np.isclose(cost[0, 1], 0.0) and np.isinf(cost[1, 0]) and np.isinf(np.diag(cost)).all()
    half = np.array([1.0, 1.0, 0.0]) / np.sqrt(2)  # cosine distance to EA: 1 - 0.707
    c = tracklet(1, 7, 8, 0.0, views=[EA, EB])  # mean of EA and EB: the same as ``half``
    assert np.isclose(stitch_cost([a, c], CFG)[0, 1], 1 - half @ EA)


def test_each_track_joins_one_predecessor_the_likest_and_chains_follow():
    near = np.array([0.95, 0.312, 0.0])  # cosine distance to EA about 0.05
    a = tracklet(0, 0, 2, 0.0)
    b = tracklet(1, 5, 6, 0.0, view=near)
    c = tracklet(2, 5, 6, 0.4)  # level with b in time, looks exactly like a
    assert stitch([a, b, c], CFG) == {2: 0}
    d = tracklet(3, 9, 11, 0.0)  # after c: chains to c, hence to a
    e = tracklet(4, 14, 15, 0.0)
    assert stitch([a, c, d, e], CFG) == {2: 0, 3: 0, 4: 0}


def det(x: float) -> Detection:
    return Detection("s", (x, 0.0, 1.0), (1.9, 4.5, 1.6), (1.0, 0.0, 0.0, 0.0), (0.0, 0.0), "car",
                     0.9)  # fmt: skip


def track(frames, cfg=CFG, appearance=True):
    """The tracking loop over keyframes 0.5 s apart, then stitching: the ids per keyframe."""
    tracker, out = Tracker(cfg, use_appearance=appearance), []
    for k, items in enumerate(frames):
        emb = np.stack([e for _, e in items]) if items else np.zeros((0, 3))
        records = tracker.step(Frame(f"s{k}", k * 500_000, [d for d, _ in items], emb))
        out.append([r["tracking_id"] for r in records])
    renamed = tracker.stitch()
    return [[renamed.get(i, i) for i in ids] for ids in out]


def test_a_vehicle_that_returns_unseen_keeps_its_id_once_it_shows_itself():
    seen, unseen = [(det(0.0), EA)], [(det(0.3), NAN)]  # returns with an empty crop
    frames = [seen] * 3 + [[]] * (CFG.max_age + 3) + [unseen] * 2 + [seen] * 2
    ids = track(frames)
    assert [i for k in ids for i in k] == ["0"] * 7
    assert track(frames, dataclasses.replace(CFG, stitch=False))[-1] == ["1"]  # online
    assert track(frames, appearance=False)[-1] == ["1"]  # motion alone: no stitching
    stranger = [seen] * 3 + [[]] * (CFG.max_age + 3) + [unseen] * 2 + [[(det(0.0), EB)]] * 2
    assert track(stranger)[-1] == ["1"]


def test_a_track_born_without_a_velocity_is_compared_at_its_second_report():
    # A ends at 4 m/s at x = 0; B starts 4 keyframes (2 s) later 8 m on, born without the
    # detector's velocity (NaN at its first report). Its speed comes from its second report:
    # 4 m/s joins; 0 m/s (a change of 4 > 3 m/s) does not; reported once, it has no speed to
    # compare, and its start is looked for at A's speed alone.
    a = tracklet(0, 0, 3, -6.0, 0.0, vx=4.0)
    unknown = (np.nan, np.nan)

    def b(second_vx):
        t = start_tracklet(1, "car", 7, 3.5, (8.0, 0.0), unknown, EA, CFG.memory)
        assert np.all(np.isnan(t.first_velocity)) and np.all(t.last_velocity == 0)
        if second_vx is not None:
            t.report(8, 4.0, (10.0, 0.0), (second_vx, 0.0), EA, CFG.memory)
            assert t.first_velocity[0] == second_vx
        return t

    assert stitch([a, b(4.0)], CFG) == {1: 0}
    assert stitch([a, b(0.0)], CFG) == {}
    assert stitch([a, b(None)], CFG) == {1: 0}
    # A later report does not change the speed at the start.
    later = b(4.0)
    later.report(9, 4.5, (12.0, 0.0), (0.0, 0.0), EA, CFG.memory)
    assert stitch([a, later], CFG) == {1: 0}
