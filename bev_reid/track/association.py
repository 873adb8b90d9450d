"""Association: a cost matrix of tracks x detections, and the Hungarian matches on it.

The cost of track i and detection j mixes their gated centre distance with the cosine distance of
their embeddings:

    cost = (1 - w) d_ij / g_ij + w a_ij,        a_ij = 1 - <e_i, e_j>  (unit vectors, in [0, 2])

where g_ij is the track's gate for a pair whose appearance is known (its look gate, at most its
gate) and its gate otherwise. A pair with no appearance (a track or a detection without an
embedding) costs its distance term alone, d_ij / gate_i. The cost is infinite (never matched)
when d_ij is beyond the pair's own gate (the look gate for a pair with appearance, the motion
gate for one without; both at most gate_i), when the classes differ, when a_ij exceeds the
track's appearance limit, or when a track that needs appearance (a dormant one) meets a
detection without it. ``w`` = 0 is motion alone.

:func:`match` then takes the matching that saves the most against leaving tracks and detections
apart at ``max_pair_cost`` a pair (scipy's ``linear_sum_assignment``): one good pair beats two
poor ones that would displace it. With an infinite ``max_pair_cost`` it takes, among the
matchings of finite-cost pairs, one with the most pairs and, among those, the least total cost.

Before that, :func:`duplicates` finds the boxes a higher-scored box of the same class overlaps
(non-maximum suppression on the ground-plane footprints, with shapely): the tracker drops them.

Shapes: T tracks, D detections, E embedding dims.
"""

from __future__ import annotations

import numpy as np
import shapely
from scipy.optimize import linear_sum_assignment


def blended_distances(
    predicted: np.ndarray, velocity: np.ndarray, seconds: np.ndarray | float,
    centres: np.ndarray, detection_velocity: np.ndarray, blend: float,
) -> np.ndarray:  # fmt: skip
    """[T, D] distances from detection centres [D, 2] to where each track should be if it had
    changed its velocity [T, 2] part way to the detection's [D, 2] over ``seconds`` ([T] or
    [T, D]) since it was last matched.

    ``predicted`` ([T, 2], or [T, D, 2]) is the track's centre moved on at its own velocity; a
    share ``blend`` of the velocity change moves it by ``blend * seconds * (v_det - v_track)``.
    With ``blend`` 0.5 that is a constant acceleration from one velocity to the other (the
    distance covered is the mean velocity times the time); with 0, the plain distances from
    ``predicted``. A detection velocity of NaN (unknown) changes nothing.
    """
    velocity = np.asarray(velocity, dtype=np.float64).reshape(-1, 2)
    detection_velocity = np.asarray(detection_velocity, dtype=np.float64).reshape(-1, 2)
    t, d = len(velocity), len(detection_velocity)
    predicted = np.broadcast_to(
        np.asarray(predicted, dtype=np.float64).reshape(t, -1, 2), (t, d, 2)
    )
    seconds = np.asarray(seconds, dtype=np.float64)
    seconds = np.broadcast_to(seconds.reshape(t, 1) if seconds.ndim == 1 else seconds, (t, d))
    change = np.nan_to_num(detection_velocity[None, :, :] - velocity[:, None, :])  # T x D x 2
    moved = predicted + blend * seconds[..., None] * change
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    return np.linalg.norm(moved - centres[None, :, :], axis=-1)


def stood_distances(
    distance: np.ndarray, still: np.ndarray, stood: np.ndarray, centres: np.ndarray
) -> np.ndarray:  # fmt: skip
    """[T, D] ``distance``, but where ``still`` [T, D] holds, the smaller of it and the
    distance from where the track stood [T, 2] to the detection centre [D, 2]: a parked car
    comes back where it stood, whatever its filter's (noisy) velocity predicts."""
    distance = np.asarray(distance, dtype=np.float64)
    if not np.any(still):
        return distance
    stood = np.asarray(stood, dtype=np.float64).reshape(-1, 2)
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    there = np.linalg.norm(stood[:, None, :] - centres[None, :, :], axis=-1)
    return np.where(still, np.minimum(distance, there), distance)


def off_heading(
    origins: np.ndarray, yaws: np.ndarray, centres: np.ndarray
) -> np.ndarray:  # fmt: skip
    """[T, D] the angle, in degrees from 0 to 90, between the line from each origin [T, 2] to
    each centre [D, 2] and the origin's heading yaws [T] (radians; either way along it: a box's
    heading may be flipped)."""
    origins = np.asarray(origins, dtype=np.float64).reshape(-1, 2)
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    step = centres[None, :, :] - origins[:, None, :]  # T x D x 2
    bearing = np.arctan2(step[..., 1], step[..., 0])
    turn = bearing - np.asarray(yaws, dtype=np.float64).reshape(-1, 1)
    return np.degrees(np.abs((turn + np.pi / 2) % np.pi - np.pi / 2))


def footprints(centres: np.ndarray, sizes: np.ndarray, yaws: np.ndarray) -> np.ndarray:
    """[N] shapely polygons of boxes' ground-plane footprints: centres [N, 2], sizes [N, 2+]
    (width, length, ...; the length lies along the heading), yaws [N] radians."""
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    sizes = np.asarray(sizes, dtype=np.float64).reshape(len(centres), -1)
    yaws = np.asarray(yaws, dtype=np.float64).reshape(-1)
    along = np.array([1, 1, -1, -1])[None, :] * sizes[:, 1:2] / 2  # N x 4, box frame x
    across = np.array([1, -1, -1, 1])[None, :] * sizes[:, 0:1] / 2  # N x 4, box frame y
    c, s = np.cos(yaws)[:, None], np.sin(yaws)[:, None]
    x = centres[:, 0:1] + c * along - s * across
    y = centres[:, 1:2] + s * along + c * across
    return shapely.polygons(np.stack([x, y], axis=-1))


def footprint_ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N] intersection over union of the footprints ``a[n]`` and ``b[n]`` ([N] shapely polygons,
    :func:`footprints`), pair by pair."""
    inter = shapely.area(shapely.intersection(a, b))
    union = shapely.area(a) + shapely.area(b) - inter
    return inter / np.maximum(union, 1e-12)


def duplicates(
    centres: np.ndarray, sizes: np.ndarray, yaws: np.ndarray, labels: np.ndarray,
    scores: np.ndarray, max_iou: float,
) -> np.ndarray:  # fmt: skip
    """[N] bool: the boxes a higher-scored box of the same label overlaps by more than
    ``max_iou`` (intersection over union of their footprints), taken greedily from the highest
    score down (non-maximum suppression; a suppressed box suppresses nothing). Arguments as
    :func:`footprints`, with labels [N] and scores [N]."""
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    n = len(centres)
    out = np.zeros(n, dtype=bool)
    if n < 2 or max_iou >= 1.0:
        return out
    sizes = np.asarray(sizes, dtype=np.float64).reshape(n, -1)
    labels = np.asarray(labels, dtype=object)
    # Only boxes whose circumscribed circles meet can overlap: the few pairs worth a polygon.
    radius = np.hypot(sizes[:, 0], sizes[:, 1]) / 2
    gap = np.linalg.norm(centres[:, None] - centres[None, :], axis=-1)
    near = (gap < radius[:, None] + radius[None, :]) & (labels[:, None] == labels[None, :])
    np.fill_diagonal(near, False)
    if not near.any():
        return out
    i, j = np.nonzero(np.triu(near))
    polys = footprints(centres, sizes, yaws)
    over = np.zeros((n, n), dtype=bool)
    over[i, j] = over[j, i] = footprint_ious(polys[i], polys[j]) > max_iou
    for k in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        if not out[k]:
            out |= over[k]  # k is kept; what it overlaps goes (a box never overlaps itself)
    return out


def cosine_distances(tracks: np.ndarray, detections: np.ndarray) -> np.ndarray:
    """[T, D] cosine distances 1 - cos between embeddings [T, E] and [D, E]; NaN where a row
    holds NaN (no embedding)."""
    a = np.asarray(tracks, dtype=np.float64)
    b = np.asarray(detections, dtype=np.float64)
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(min=1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(min=1e-12)
    return 1.0 - a @ b.T


def size_changes(tracks: np.ndarray, detections: np.ndarray) -> np.ndarray:
    """[T, D] how far box sizes [T, 3] and [D, 3] (width, length, height, metres) are apart:
    the sum over the three of |log(track / detection)|, so a change by a factor counts the same
    for a bus as for a car, larger or smaller."""
    a = np.log(np.asarray(tracks, dtype=np.float64).reshape(-1, 3))
    b = np.log(np.asarray(detections, dtype=np.float64).reshape(-1, 3))
    return np.abs(a[:, None, :] - b[None, :, :]).sum(-1)


def mean_view(views) -> np.ndarray:
    """[E] the normalised mean of views [M, E] (or a list of [E]; at least one), each normalised
    first."""
    stack = np.array(views, dtype=np.float64).reshape(len(views), -1)
    stack /= np.linalg.norm(stack, axis=1, keepdims=True).clip(min=1e-12)
    mean = stack.mean(0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def association_cost(
    distance: np.ndarray,
    gate: np.ndarray | float,
    appearance: np.ndarray | None = None,
    weight: float = 0.0,
    max_appearance: np.ndarray | float = np.inf,
    same_class: np.ndarray | None = None,
    needs_appearance: np.ndarray | None = None,
    motion_gate: np.ndarray | float | None = None,
    look_gate: np.ndarray | float | None = None,
) -> np.ndarray:
    """The cost matrix [T, D] (see the module doc); ``inf`` marks pairs that may not match.

    Args:
        distance: [T, D] centre distances, metres.
        gate: [T] (or one) distance gate per track, metres.
        appearance: [T, D] cosine distances (NaN where a side has no embedding), or None.
        weight: w, the share of the appearance term.
        max_appearance: [T] (or one) largest cosine distance a track may match at.
        same_class: [T, D] bool, whether the classes agree; None: all agree.
        needs_appearance: [T] bool: tracks that may match only a detection whose appearance is
            known (dormant tracks, re-identified by appearance alone); None: none.
        motion_gate: [T] (or one) gate for the pairs whose appearance is not known, metres (at
            most ``gate``); None: ``gate``.
        look_gate: [T] (or one) gate for the pairs whose appearance is known, metres (at most
            ``gate``); it also scales their distance term. None: ``gate``.
    """
    distance = np.asarray(distance, dtype=np.float64)
    t = distance.shape[0]
    full = np.broadcast_to(np.asarray(gate, dtype=np.float64), (t,))[:, None]  # T x 1

    def per_track(value: np.ndarray | float | None) -> np.ndarray:  # T x 1, at most gate
        if value is None:
            return full
        value = np.broadcast_to(np.asarray(value, dtype=np.float64), (t,))[:, None]
        return np.minimum(value, full)

    looks = appearance is not None and weight > 0
    has = np.zeros(distance.shape, dtype=bool)  # pairs whose appearance is known
    if looks:
        appearance = np.asarray(appearance, dtype=np.float64)
        has = np.isfinite(appearance)
    look = per_track(look_gate)
    cost = distance / np.where(has, look, full)
    allowed = distance <= np.where(has, look, per_track(motion_gate))
    if looks:
        limit = np.broadcast_to(np.asarray(max_appearance, dtype=np.float64), (t,))[:, None]
        cost = np.where(has, (1.0 - weight) * cost + weight * np.where(has, appearance, 0.0), cost)
        allowed &= ~has | (appearance <= limit)
    if needs_appearance is not None:
        allowed &= has | ~np.asarray(needs_appearance, dtype=bool)[:, None]
    if same_class is not None:
        allowed &= np.asarray(same_class, dtype=bool)
    return np.where(allowed, cost, np.inf)


def match(
    cost: np.ndarray, max_pair_cost: float = np.inf
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Hungarian matching on a cost matrix with ``inf`` for forbidden pairs.

    With a finite ``max_pair_cost`` the matching takes the pairs that save the most in all:
    the largest sum of ``max_pair_cost - cost`` over the pairs taken (leaving a track and a
    detection apart costs ``max_pair_cost``; a pair costing that much or more is never taken).
    One good pair then beats two poor ones that would displace it: a lost parked car's track
    keeps its own returning detection even when it could otherwise take a false positive beside
    it and leave the real one to the false positive's track. With ``inf``: the matchings with
    the most pairs first, then the least total cost.

    Args:
        cost: [T, D].
        max_pair_cost: the cost of leaving a track and a detection apart.
    Returns:
        matches (track, detection) sorted by track, unmatched tracks, unmatched detections.
    """
    cost = np.asarray(cost, dtype=np.float64)
    t, d = cost.shape
    if t == 0 or d == 0:
        return [], list(range(t)), list(range(d))
    finite = np.isfinite(cost)
    if np.isfinite(max_pair_cost):
        # Savings (negative: minimised); a pair that saves nothing is dropped afterwards.
        saving = np.where(finite, np.minimum(cost - max_pair_cost, 0.0), 0.0)
        rows, cols = linear_sum_assignment(saving)
        keep = saving[rows, cols] < 0
    else:
        # Larger than any total of finite costs: a forbidden pair is taken only when nothing
        # else fills that row, and is then dropped, so the most pairs win first, then the
        # lowest cost.
        big = 1.0 + 2.0 * min(t, d) * (np.abs(cost[finite]).max() if finite.any() else 1.0)
        rows, cols = linear_sum_assignment(np.where(finite, cost, big))
        keep = finite[rows, cols]
    pairs = [(int(r), int(c)) for r, c, k in zip(rows, cols, keep, strict=True) if k]
    used_t, used_d = {p[0] for p in pairs}, {p[1] for p in pairs}
    return (
        sorted(pairs),
        [i for i in range(t) if i not in used_t],
        [j for j in range(d) if j not in used_d],
    )
