"""Association: the cost's terms by hand, and the Hungarian matches against brute force."""

import itertools
import math

import numpy as np
import pytest

from bev_reid.track.association import (
    association_cost,
    blended_distances,
    cosine_distances,
    duplicates,
    footprints,
    match,
    off_heading,
    size_changes,
)


def matchings(cost: np.ndarray):
    """The pair costs of every matching of at least one pair (finite or not)."""
    t, d = cost.shape
    for k in range(1, min(t, d) + 1):
        for rows in itertools.combinations(range(t), k):
            for cols in itertools.permutations(range(d), k):
                yield [cost[r, c] for r, c in zip(rows, cols, strict=True)]


def brute_force(cost: np.ndarray) -> tuple[int, float]:
    """(most pairs, least total cost among those) over every matching of finite pairs."""
    best = (0, 0.0)
    for costs in matchings(cost):
        k, total = len(costs), sum(costs)
        if math.isfinite(total) and (k > best[0] or (k == best[0] and total < best[1])):
            best = (k, total)
    return best


def brute_force_saving(cost: np.ndarray, limit: float) -> float:
    """The largest sum of ``limit - cost`` over every matching of pairs costing below limit."""
    saved = [sum(limit - c for c in costs) for costs in matchings(cost)
             if all(c < limit for c in costs)]  # fmt: skip
    return max(saved, default=0.0)


def random_cost(seed: int, forbidden: float) -> np.ndarray:
    """A random [1..4, 1..4] cost matrix in [0, 2) with about ``forbidden`` of it infinite."""
    rng = np.random.default_rng(seed)
    t, d = rng.integers(1, 5, size=2)
    cost = rng.uniform(0, 2, (t, d))
    cost[rng.uniform(size=(t, d)) < forbidden] = np.inf
    return cost


def assert_every_track_and_detection_once(cost, pairs, free_t, free_d) -> None:
    t, d = cost.shape
    assert sorted([i for i, _ in pairs] + free_t) == list(range(t))
    assert sorted([j for _, j in pairs] + free_d) == list(range(d))


@pytest.mark.parametrize("seed", range(40))
def test_match_with_a_pair_limit_saves_the_most(seed):
    cost = random_cost(seed, 0.3)
    pairs, free_t, free_d = match(cost, 1.2)
    assert all(cost[i, j] < 1.2 for i, j in pairs)
    assert sum(1.2 - cost[i, j] for i, j in pairs) == pytest.approx(brute_force_saving(cost, 1.2))
    assert_every_track_and_detection_once(cost, pairs, free_t, free_d)


def test_one_good_pair_beats_two_poor_ones_that_displace_it():
    # Track 0 (a lost parked car) and its own returning detection 0 cost 0.1; the track born on
    # a false positive beside it could take detection 0 (0.9) and leave track 0 the false
    # positive, detection 1 (0.95): two pairs, 1.85 in all.
    cost = np.array([[0.1, 0.95], [0.9, np.inf]])
    assert match(cost)[0] == [(0, 1), (1, 0)]  # the most pairs first
    assert match(cost, 1.0)[0] == [(0, 0)]  # saves 0.9 against 0.1 + 0.05
    assert match(cost, 2.0)[0] == [(0, 1), (1, 0)]  # saves 2.15 against 1.9
    assert match(np.array([[1.0, 1.5]]), 1.0) == ([], [0], [0, 1])  # at the limit: none


@pytest.mark.parametrize("seed", range(40))
def test_match_has_the_most_pairs_then_the_least_cost(seed):
    cost = random_cost(seed, 0.4)
    pairs, free_t, free_d = match(cost)
    count, total = brute_force(cost)
    assert len(pairs) == count
    assert sum(cost[i, j] for i, j in pairs) == pytest.approx(total)
    assert_every_track_and_detection_once(cost, pairs, free_t, free_d)


def test_match_prefers_two_pairs_to_one_cheap_pair():
    cost = np.array([[0.1, 1.0], [0.2, np.inf]])  # (0, 0) is cheapest, (0, 1) + (1, 0) pair all
    pairs, _, _ = match(cost)
    assert pairs == [(0, 1), (1, 0)]
    assert match(np.zeros((0, 3))) == ([], [], [0, 1, 2])


def test_cost_terms_by_hand():
    distance = np.array([[1.0, 3.0, 1.0, 1.0]])
    appearance = np.array([[0.2, 0.2, np.nan, 0.9]])
    cost = association_cost(distance, 2.0, appearance, weight=0.5, max_appearance=0.6)
    assert cost[0, 0] == pytest.approx(0.5 * 1.0 / 2.0 + 0.5 * 0.2)
    assert cost[0, 1] == np.inf  # beyond the gate
    assert cost[0, 2] == pytest.approx(0.5)  # no embedding: the distance term alone
    assert cost[0, 3] == np.inf  # beyond the appearance limit
    motion = association_cost(distance, 2.0, appearance, weight=0.0, max_appearance=0.6)
    assert motion[0].tolist() == [0.5, np.inf, 0.5, 0.5]  # motion alone ignores appearance
    dormant = association_cost(distance, 2.0, appearance, 0.5, 0.6, None, np.array([True]))
    assert np.isfinite(dormant[0]).tolist() == [True, False, False, False]  # needs appearance
    assert association_cost(distance, 2.0, needs_appearance=np.array([True]))[0, 0] == np.inf
    same = np.array([[True, True, False, True]])
    assert association_cost(distance, 2.0, same_class=same)[0, 2] == np.inf
    # Own gates: 1.5 m for pairs with appearance (and their scale), 0.8 m for those without.
    own = association_cost(distance, 2.0, appearance, 0.5, 0.6, motion_gate=0.8, look_gate=1.5)
    assert own[0, 0] == pytest.approx(0.5 * 1.0 / 1.5 + 0.5 * 0.2)
    assert own[0, 2] == np.inf  # no embedding, 1 m: beyond the motion gate
    wide = association_cost(distance, 2.0, appearance, 0.5, 0.6, motion_gate=1.0, look_gate=0.9)
    assert wide[0, 0] == np.inf and wide[0, 2] == pytest.approx(1.0 / 2.0)  # full gate's scale


def test_size_changes_by_hand():
    car, van = (1.9, 4.5, 1.6), (2.0, 5.4, 2.2)
    change = size_changes(np.array([car, van]), np.array([car, van, (3.8, 2.25, 1.6)]))
    by_hand = math.log(2.0 / 1.9) + math.log(5.4 / 4.5) + math.log(2.2 / 1.6)
    assert change[:, :2] == pytest.approx(np.array([[0.0, by_hand], [by_hand, 0.0]]))
    assert change[0, 2] == pytest.approx(2 * math.log(2))  # twice as wide, half as long


def test_distances():
    still = np.zeros((2, 2))
    d = blended_distances([[0.0, 0.0], [1.0, 1.0]], still, 1.0, [[3.0, 4.0]], [[9.0, 9.0]], 0.0)
    assert d[:, 0] == pytest.approx([5.0, math.hypot(2, 3)])  # blend 0: the plain distances
    c = cosine_distances(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[1.0, 1.0], [-3.0, 0.0]]))
    assert c == pytest.approx(np.array([[1 - 2**-0.5, 2.0], [1 - 2**-0.5, 1.0]]))


def test_blended_distances_by_hand():
    # A track last matched 2 s ago at x = 0, parked (predicted at 0); a detection at x = 3 going
    # 3 m/s: accelerating evenly from 0 to 3 m/s in 2 s covers 3 m, so half the velocity change
    # puts the track right on it; its own velocity leaves it 3 m short, the detection's 3 m on.
    args = ([[0.0, 0.0]], [[0.0, 0.0]], [2.0], [[3.0, 0.0]], [[3.0, 0.0]])
    assert blended_distances(*args, 0.5)[0, 0] == pytest.approx(0.0)
    assert blended_distances(*args, 0.0)[0, 0] == pytest.approx(3.0)
    assert blended_distances(*args, 1.0)[0, 0] == pytest.approx(3.0)
    # Per pair: centres already moved on per pair [T, D, 2] and times [T, D] (as stitching has);
    # track 1 goes 4 m/s in y, detection 1 stands still: 0.5 x 1 s x (0 - 4) back in y.
    predicted = np.array([[[0.0, 0.0], [0.0, 0.0]], [[1.0, 4.0], [1.0, 4.0]]])
    seconds = np.array([[0.0, 0.0], [0.0, 1.0]])
    d = blended_distances(predicted, [[0.0, 0.0], [0.0, 4.0]], seconds,
                          [[0.0, 0.0], [1.0, 2.0]], [[5.0, 5.0], [0.0, 0.0]], 0.5)  # fmt: skip
    assert d == pytest.approx(np.array([[0.0, math.sqrt(5)], [math.sqrt(17), 0.0]]))


def test_footprints_by_hand():
    # A 2 m wide, 4 m long box turned 90 degrees: its length lies along y.
    poly = footprints(np.array([[10.0, 5.0]]), np.array([[2.0, 4.0, 1.5]]), np.array([math.pi / 2]))
    xs, ys = np.asarray(poly[0].exterior.coords).T
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == pytest.approx((9, 11, 3, 7))
    assert poly[0].area == pytest.approx(8.0)


def test_duplicates_by_hand():
    centres = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.5], [0.3, 0.0], [1.0, 0.0]])
    sizes = np.array([[2.0, 4.0]] * 5)
    yaws = np.zeros(5)
    labels = np.array(["car", "car", "car", "car", "truck"], dtype=object)
    scores = np.array([0.9, 0.5, 0.8, 0.4, 0.3])
    # Box 1 overlaps box 0 by 3 x 2 = 6 of a union of 10 (IoU 0.6); box 2, 2.5 m across (wider
    # than the 2 m boxes), not at all; box 3 by 3.7 x 2 (IoU 7.4 / 8.6); box 4 is a truck.
    out = duplicates(centres, sizes, yaws, labels, scores, 0.5)
    assert out.tolist() == [False, True, False, True, False]
    assert duplicates(centres, sizes, yaws, labels, scores, 0.7).tolist() == [
        False, False, False, True, False
    ]  # fmt: skip
    assert not duplicates(centres, sizes, yaws, labels, scores, 1.0).any()  # 1: none dropped
    # A box turned across another (a cross): overlap 2 x 2 = 4 of 12 (IoU 1/3).
    cross = duplicates(
        np.zeros((2, 2)), sizes[:2], np.array([0.0, math.pi / 2]), labels[:2], scores[:2], 0.3
    )
    assert cross.tolist() == [False, True]
    assert not duplicates(
        np.zeros((2, 2)), sizes[:2], np.array([0.0, math.pi / 2]), labels[:2], scores[:2], 0.34
    ).any()


def test_a_suppressed_box_suppresses_nothing():
    # 0 beats 1, which would have beaten 2; 2 does not overlap 0 and stays.
    centres = np.array([[0.0, 0.0], [1.5, 0.0], [3.0, 0.0]])
    out = duplicates(
        centres, np.array([[2.0, 4.0]] * 3), np.zeros(3), np.array(["car"] * 3, dtype=object),
        np.array([0.9, 0.8, 0.7]), 0.3,
    )  # fmt: skip
    assert out.tolist() == [False, True, False]


def test_off_heading_is_the_angle_to_the_box_axis_either_way():
    origins = np.array([[0.0, 0.0], [1.0, 1.0]])
    yaws = np.array([0.0, math.pi / 2])  # along x; along y
    centres = np.array([[3.0, 0.0], [0.0, 3.0], [-3.0, 0.0], [3.0, 3.0], [1.0, -2.0]])
    want = np.array([[0.0, 90.0, 0.0, 45.0, math.degrees(math.atan(2))],
                     [90.0 - math.degrees(math.atan(0.5)), 90 - math.degrees(math.atan(2)),
                      90 - math.degrees(math.atan(0.25)), 45.0, 0.0]])  # fmt: skip
    np.testing.assert_allclose(off_heading(origins, yaws, centres), want, atol=1e-9)
    # a flipped heading (yaw + pi) is the same axis
    np.testing.assert_allclose(off_heading(origins, yaws + math.pi, centres), want, atol=1e-9)


def test_an_unknown_detection_velocity_changes_nothing():
    got = blended_distances(
        np.array([[0.0, 0.0]]), np.array([[4.0, 0.0]]), np.array([2.0]),
        np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([[math.nan, math.nan], [0.0, 0.0]]), 0.5,
    )  # fmt: skip
    # unknown: the plain distance 1 m; at rest: moved back by 0.5 x 2 s x 4 m/s = 4 m
    np.testing.assert_allclose(got, [[1.0, 5.0]])
