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

- translation, size and velocity: (1 - r) L + r R;
- rotation: the spherical interpolation (slerp) of the two quaternions, by r (pyquaternion);
- score: the mean score of the track's own boxes, so the track's score, which the devkit takes
  as the mean over its boxes, is what it was.

Both modes (motion alone and with ReID) are filled alike (``track.fill_gaps``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import Any

import numpy as np
from pyquaternion import Quaternion

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


def fill_gaps(results: dict[str, list[dict]], tokens: list[str], timestamps: list[int]) -> int:
    """Adds to ``results`` ({sample token: tracking-results records}) a box for every keyframe
    inside a track (by ``tracking_id``) at which it has none, for one scene's keyframes
    ``tokens`` in order, taken at ``timestamps`` (microseconds). Returns how many it added."""
    tracks: dict[str, list[tuple[int, dict]]] = defaultdict(list)  # id -> (keyframe, record)
    for k, token in enumerate(tokens):
        for record in results.get(token, []):
            tracks[record["tracking_id"]].append((k, record))
    added = 0
    for track in tracks.values():
        score = float(np.mean([r["tracking_score"] for _, r in track]))
        for left, right, k, r in holes(track, timestamps):
            mix = {
                key: (1 - r) * np.asarray(left[key]) + r * np.asarray(right[key])
                for key in ("translation", "size", "velocity")
            }
            rotation = Quaternion.slerp(
                Quaternion(left["rotation"]), Quaternion(right["rotation"]), amount=r
            )
            results.setdefault(tokens[k], []).append(
                tracking_record(
                    tokens[k],
                    mix["translation"],
                    mix["size"],
                    rotation.elements,
                    mix["velocity"],
                    left["tracking_id"],
                    left["tracking_name"],
                    score,
                )
            )
            added += 1
    return added
