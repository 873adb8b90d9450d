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

:func:`match` then takes, among the matchings of finite-cost pairs, one with the most pairs and,
among those, the least total cost (scipy's ``linear_sum_assignment`` on the cost with infinite
entries replaced by a constant larger than any finite total).

Shapes: T tracks, D detections, E embedding dims.
"""

from __future__ import annotations

import numpy as np
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
    ``predicted``.
    """
    velocity = np.asarray(velocity, dtype=np.float64).reshape(-1, 2)
    detection_velocity = np.asarray(detection_velocity, dtype=np.float64).reshape(-1, 2)
    t, d = len(velocity), len(detection_velocity)
    predicted = np.broadcast_to(
        np.asarray(predicted, dtype=np.float64).reshape(t, -1, 2), (t, d, 2)
    )
    seconds = np.asarray(seconds, dtype=np.float64)
    seconds = np.broadcast_to(seconds.reshape(t, 1) if seconds.ndim == 1 else seconds, (t, d))
    change = detection_velocity[None, :, :] - velocity[:, None, :]  # T x D x 2
    moved = predicted + blend * seconds[..., None] * change
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    return np.linalg.norm(moved - centres[None, :, :], axis=-1)


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


def match(cost: np.ndarray) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Hungarian matching on a cost matrix with ``inf`` for forbidden pairs.

    Args:
        cost: [T, D].
    Returns:
        matches (track, detection) sorted by track, unmatched tracks, unmatched detections.
    """
    cost = np.asarray(cost, dtype=np.float64)
    t, d = cost.shape
    if t == 0 or d == 0:
        return [], list(range(t)), list(range(d))
    finite = np.isfinite(cost)
    # Larger than any total of finite costs: a forbidden pair is taken only when nothing else
    # fills that row, and is then dropped, so the most pairs win first, then the lowest cost.
    big = 1.0 + 2.0 * min(t, d) * (np.abs(cost[finite]).max() if finite.any() else 1.0)
    rows, cols = linear_sum_assignment(np.where(finite, cost, big))
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if finite[r, c]]
    used_t, used_d = {p[0] for p in pairs}, {p[1] for p in pairs}
    return (
        sorted(pairs),
        [i for i in range(t) if i not in used_t],
        [j for j in range(d) if j not in used_d],
    )
