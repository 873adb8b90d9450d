"""A track's gaps filled: boxes for the keyframes inside a track at which it was not reported.

A track lost for a few keyframes and found again (or joined to an earlier one by stitching) has
no box at the keyframes between. The nuScenes tracking evaluation fills such holes itself: before
matching, it interpolates every predicted track (and the ground truth) linearly between the boxes
either side. But its weights run backwards in time (nuscenes-devkit issue #1141, still so in
1.2.0): the box it puts ``s`` seconds after the gap opens is where the track would be ``s``
seconds before it closes. For a vehicle that moves, every keyframe of a bridged gap then holds a
box metres from the vehicle: a false positive beside a miss, and the longer the gap a tracker
bridges (the point of re-identification), the more of them.

So the tracker writes those boxes itself, interpolated the right way round in time, and the
devkit finds no holes to fill. Per gap of a tracking id, between its boxes L at time t0 and R at
t1, the box at time t takes r = (t - t0) / (t1 - t0) of the way:

- centre: the cubic Hermite path that leaves L along its heading and reaches R along its
  heading (``track.fill_path: curve``; :func:`hole_centre`), so a vehicle that turned a corner
  while lost is put on the corner rather than on the chord across it; ``line``: (1 - r) L + r R;
- size and velocity: (1 - r) L + r R;
- rotation: the spherical interpolation (slerp) of the two quaternions, by r (pyquaternion);
- score: the mean score of the track's own boxes, so the track's score, which the devkit takes
  as the mean over its boxes, is what it was.

Both modes (motion alone and with ReID) are filled alike (``track.fill_gaps``).

A hidden vehicle is left to the devkit (``track.fill_min_points``, 1): a box is written only
where the keyframe's LiDAR sweep has at least that many points inside it, its length and width
grown by ``track.fill_margin_m`` on every side (0.5 m: the filled centre is an estimate). The
nuScenes ground truth holds no box of an object without a LiDAR or radar point; the devkit
drops such boxes and fills them back, backwards in time as above, between the object's boxes
with points. A track's box at such a keyframe, put where the vehicle truly is, then lies
metres from that ground truth when the vehicle moves: a false positive beside a miss, the
price of every hidden stretch that re-identification bridges. Left as a hole, the track's box
there is filled by the devkit the same way as the ground truth's, from boxes either side that
stand where the ground truth's do. ``fill_min_points: 0`` fills every keyframe. The count is
LiDAR's alone: a vehicle that only radar sees keeps its ground-truth box but gets the devkit's
filling.

Before the filling, two tracks that take turns on one object become one
(:func:`merge_interleaved`, ``track.merge_interleaved``). A lost track that re-identifies its
vehicle while a newer track, born while it was lost, follows the same vehicle leaves the two
tracks taking the vehicle's boxes in turn. Each track's holes then lie where the other has
boxes; filled (by us or the devkit) they put a second box on the vehicle at the track's own
score, a false positive at the scores that count most. Joined, they are one track without those
holes. A newer track born and ended inside one hole of a lost track, on its vehicle, makes the
same second box there; it joins the lost track when each of its boxes overlaps the lost track's
interpolated box by more than ``track.merge_inside_iou`` (0.5: a false positive a few metres
from a hidden or parked vehicle stays apart).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from itertools import pairwise
from typing import Any

import numpy as np
from pyquaternion import Quaternion

from bev_reid.data.cuboids import count_points_in_boxes
from bev_reid.data.nuscenes import NuScenesDB
from bev_reid.data.records import NuScenesFileError
from bev_reid.track.association import footprint_ious, footprints
from bev_reid.track.detections import tracking_record


def holes(
    track: list[tuple[int, Any]], times: Sequence[float]
) -> Iterator[tuple[Any, Any, int, float]]:
    """For one track's boxes ``[(k, box)]`` in time order, ``k`` indexing ``times`` (keyframe
    times, in order): ``(left, right, k, r)`` for every keyframe ``k`` strictly between two
    consecutive boxes, ``r`` = (times[k] - t_left) / (t_right - t_left) the share of the way from
    left to right."""
    for (k0, left), (k1, right) in pairwise(track):
        for k in range(k0 + 1, k1):
            yield left, right, k, (times[k] - times[k0]) / (times[k1] - times[k0])


MAX_OFF_CHORD_COS = 0.2  # a heading up to 78 deg off the chord (a turn late in a hole puts it far)


def heading(record: dict) -> float:
    """A record's yaw (nuScenes boxes are upright: the yaw is all of the rotation), from its
    quaternion (w, x, y, z) without normalising it (the form is unchanged by its scale) or
    building a pyquaternion Quaternion (with one, the curve doubled the time of a fill)."""
    w, x, y, z = record["rotation"]
    return math.atan2(2 * (w * z + x * y), w * w + x * x - y * y - z * z)


def hole_tangents(
    left: dict, right: dict
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The cubic Hermite tangents (x, y) (metres per hole) of the path from ``left``'s centre to
    ``right``'s in the ground plane, or None for a straight line (see :func:`hole_centre`).
    Plain floats: it runs once per filled box (5 us a box with :func:`hole_centre`)."""
    cx = right["translation"][0] - left["translation"][0]
    cy = right["translation"][1] - left["translation"][1]
    length = math.hypot(cx, cy)
    if length < 1e-6:
        return None
    ends = []
    for record in (left, right):
        yaw = heading(record)
        ux, uy = math.cos(yaw), math.sin(yaw)
        cos_off = (ux * cx + uy * cy) / length
        if abs(cos_off) < MAX_OFF_CHORD_COS:
            return None  # a heading across the chord: a U-turn, or a yaw not to be trusted
        sign = math.copysign(1.0, cos_off)  # a box's yaw may point backwards
        ends.append((sign * ux, sign * uy))
    (ax, ay), (bx, by) = ends
    turn = math.acos(max(-1.0, min(1.0, ax * bx + ay * by)))
    arc = length * (turn / 2) / math.sin(turn / 2) if turn > 1e-6 else length
    return (arc * ax, arc * ay), (arc * bx, arc * by)


def hole_centre(left: dict, right: dict, r: float, path: str = "curve") -> np.ndarray:
    """The centre [3] ``r`` of the way through a hole from ``left`` to ``right`` (records of one
    track). ``line``: straight, at a steady pace. ``curve``: the cubic Hermite path that leaves
    ``left`` along its heading and arrives at ``right`` along its heading, each tangent as long
    as the circular arc between them (the chord times (a/2) / sin(a/2) for a turn of a), so a
    vehicle that turned a corner while it was lost is put on the corner, not on the chord
    across it; with both headings along the chord it is the straight line. Headings are the
    boxes' yaws, turned to point along the chord; one more than 78 deg off it (a U-turn, a yaw
    gone wrong) gives the straight line. Height: linear."""
    p0 = np.asarray(left["translation"], np.float64)
    p1 = np.asarray(right["translation"], np.float64)
    centre = (1 - r) * p0 + r * p1
    tangents = hole_tangents(left, right) if path == "curve" else None
    if tangents is not None:
        m0, m1 = tangents
        h00, h01 = 2 * r**3 - 3 * r**2 + 1, -2 * r**3 + 3 * r**2
        h10, h11 = r**3 - 2 * r**2 + r, r**3 - r**2
        for i in (0, 1):
            centre[i] = h00 * p0[i] + h01 * p1[i] + h10 * m0[i] + h11 * m1[i]
    return centre


def interpolated(
    left: dict, right: dict, r: float, token: str, score: float, path: str = "curve",
    centre: np.ndarray | None = None,
) -> dict:  # fmt: skip
    """The tracking-results record ``r`` of the way from ``left`` to ``right`` (records of one
    track) at keyframe ``token``, scored ``score``: the centre by :func:`hole_centre` (or
    ``centre``, where the caller has it already), size and velocity linearly, the rotation by
    slerp."""
    mix = {
        key: (1 - r) * np.asarray(left[key]) + r * np.asarray(right[key])
        for key in ("size", "velocity")
    }
    rotation = Quaternion.slerp(
        Quaternion(left["rotation"]), Quaternion(right["rotation"]), amount=r
    )
    return tracking_record(
        token,
        hole_centre(left, right, r, path) if centre is None else centre,
        mix["size"],
        rotation.elements,
        mix["velocity"],
        left["tracking_id"],
        left["tracking_name"],
        score,
    )


def by_track(
    results: dict[str, list[dict]], tokens: list[str]
) -> dict[str, list[tuple[int, dict]]]:
    """{tracking id: [(keyframe index, record)]} in keyframe order, for the keyframes ``tokens``."""
    tracks: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for k, token in enumerate(tokens):
        for record in results.get(token, []):
            tracks[record["tracking_id"]].append((k, record))
    return tracks


Seen = Callable[[str, list[dict]], np.ndarray]  # (sample token, records) -> [R] bool


def fill_gaps(
    results: dict[str, list[dict]],
    tokens: list[str],
    timestamps: list[int],
    seen: Seen | None = None,
    path: str = "curve",
) -> tuple[int, int]:
    """Adds to ``results`` ({sample token: tracking-results records}) a box for every keyframe
    inside a track (by ``tracking_id``) at which it has none, for one scene's keyframes
    ``tokens`` in order, taken at ``timestamps`` (microseconds), along ``path``
    (:func:`hole_centre`); with ``seen``, only the boxes it passes (:func:`lidar_seen`; called
    once per keyframe with that keyframe's new boxes).
    Returns how many boxes it added and how many ``seen`` left out."""
    tracks = by_track(results, tokens)
    new: dict[str, list[dict]] = defaultdict(list)
    for track in tracks.values():
        score = float(np.mean([r["tracking_score"] for _, r in track]))
        for left, right, k, r in holes(track, timestamps):
            new[tokens[k]].append(interpolated(left, right, r, tokens[k], score, path))
    added = hidden = 0
    for token, records in new.items():
        keep = np.ones(len(records), bool) if seen is None else np.asarray(seen(token, records))
        results.setdefault(token, []).extend(r for r, k in zip(records, keep, strict=True) if k)
        added += int(keep.sum())
        hidden += int((~keep).sum())
    return added, hidden


def lidar_seen(db: NuScenesDB, min_points: int, margin_m: float, first: str | None = None) -> Seen:
    """Whether each box holds at least ``min_points`` points of its keyframe's LIDAR_TOP sweep,
    its length and width grown by ``margin_m`` on every side (nuScenes boxes are upright: the
    yaw of the box's heading is all of its rotation). With ``first`` (a keyframe), its sweep is
    read now, so a dataroot without LiDAR fails before the tracking rather than after."""

    def sweep(token: str) -> np.ndarray:
        try:
            return db.lidar_points(token)
        except NuScenesFileError as e:
            raise NuScenesFileError(
                f"{e}: track.fill_min_points looks for the LiDAR points in each box it fills "
                "(set it to 0 to fill every keyframe without LiDAR)"
            ) from e

    if first is not None:
        sweep(first)

    def seen(token: str, records: list[dict]) -> np.ndarray:
        if not records:
            return np.zeros(0, bool)
        rot, trans = db.ego_pose(token)
        points = sweep(token)[:, :3].astype(np.float64) @ rot.T + trans  # global
        centres = np.array([r["translation"] for r in records], dtype=np.float64)
        width, length, height = np.array([r["size"] for r in records], dtype=np.float64).T
        grown = 2 * margin_m  # x along the heading: length first
        dims = np.stack([length + grown, width + grown, height], axis=1)
        yaws = np.array([heading(r) for r in records])
        return count_points_in_boxes(points, centres, dims, yaws) >= min_points

    return seen


def merge_interleaved(
    results: dict[str, list[dict]],
    tokens: list[str],
    timestamps: Sequence[float],
    max_iou: float,
    path: str = "curve",
    inside_iou: float = 1.0,
) -> dict[str, str]:
    """Joins the tracks that take turns on one object, for one scene's keyframes ``tokens`` in
    order, taken at ``timestamps``: two tracks of one class, never reported at the same keyframe,
    each reported inside the other's life, and where each one's box stands where the other,
    interpolated across its hole as :func:`fill_gaps` would fill it (along ``path``), stands at
    that keyframe (their footprints overlapping by more than ``max_iou``, every such keyframe).
    A lost track that took its object back while a newer one followed it makes such a pair;
    filled, each track's hole would hold a box beside the other's, a false positive at the
    track's score.

    A track whose boxes all lie in one hole of the other (born after the other was lost, ended
    before it took its object back) joins it only when each of its boxes overlaps the other's
    interpolated box by more than ``inside_iou`` (1: never): such a track is as often a false
    positive that happened to land beside a hidden or parked vehicle, a few metres off; filled,
    the other's hole would put a second box on the vehicle beside each of its boxes.

    The track that starts later takes the earlier one's id, in ``results``, until no pair is
    left. Returns {old id: new id}."""
    renamed: dict[str, str] = {}
    while (
        pair := _interleaved_pair(results, tokens, timestamps, max_iou, path, inside_iou)
    ) is not None:
        keep, gone = pair
        for records in results.values():
            for record in records:
                if record["tracking_id"] == gone:
                    record["tracking_id"] = keep
        renamed = {old: keep if new == gone else new for old, new in renamed.items()}
        renamed[gone] = keep
    return renamed


def _interleaved_pair(
    results: dict[str, list[dict]],
    tokens: list[str],
    timestamps: Sequence[float],
    max_iou: float,
    path: str,
    inside_iou: float,
) -> tuple[str, str] | None:
    """The first pair (earlier track's id, later one's) that :func:`merge_interleaved` joins."""
    tracks = by_track(results, tokens)
    order = sorted(tracks, key=lambda t: tracks[t][0][0])  # by first keyframe
    keyframes = {t: [k for k, _ in tracks[t]] for t in order}

    def inside(x: str, y: str) -> bool:  # x reported strictly inside y's life
        kx, ky = keyframes[x], keyframes[y]
        i = bisect_right(kx, ky[0])  # x's first keyframe after y's first
        return i < len(kx) and kx[i] < ky[-1]

    for i, a in enumerate(order):
        ta = tracks[a]
        if len(ta) < 2:
            continue  # no hole
        for b in order[i + 1 :]:
            tb = tracks[b]
            if tb[0][0] >= ta[-1][0]:
                break  # b starts after a ends (later ones too): stitching's business
            if tb[0][1]["tracking_name"] != ta[0][1]["tracking_name"]:
                continue
            if not inside(b, a):
                continue  # b reports nothing strictly inside a's life: no pair
            # a reported inside b's life: taking turns; else b lies within one hole of a
            limit = max_iou if inside(a, b) else inside_iou
            if limit >= 1.0:
                continue
            if not set(keyframes[a]).isdisjoint(keyframes[b]):
                continue  # two objects at once
            if _take_turns(ta, tb, tokens, timestamps, limit, path):
                return a, b
    return None


def _take_turns(
    ta: list[tuple[int, dict]],
    tb: list[tuple[int, dict]],
    tokens: list[str],
    timestamps: Sequence[float],
    max_iou: float,
    path: str,
) -> bool:
    """Whether each of two tracks ([(keyframe, record)], never at one keyframe, each reported
    inside the other's life) stands where the other, interpolated, stands at each such
    keyframe."""
    pairs = []
    for x, y in ((ta, tb), (tb, ta)):
        at = dict(y)
        for left, right, k, r in holes(x, timestamps):
            if k not in at:
                continue
            guess = hole_centre(left, right, r, path)
            centre = guess[:2]
            sizes = (left["size"][:2], right["size"][:2], at[k]["size"][:2])
            diagonals = [float(np.hypot(*size)) for size in sizes]
            reach = (max(diagonals[:2]) + diagonals[2]) / 2  # the interpolated size lies between
            if np.hypot(*(centre - at[k]["translation"][:2])) >= reach:
                return False  # their circumscribed circles do not meet: no overlap
            pairs.append((interpolated(left, right, r, tokens[k], 0.0, path, guess), at[k]))

    def boxes(records):
        centres = np.array([r["translation"][:2] for r in records], dtype=np.float64)
        sizes = np.array([r["size"][:2] for r in records], dtype=np.float64)
        yaws = np.array([heading(r) for r in records])
        return footprints(centres, sizes, yaws)

    if not pairs:
        return False
    guessed, seen = zip(*pairs, strict=True)
    return bool((footprint_ious(boxes(guessed), boxes(seen)) > max_iou).all())
