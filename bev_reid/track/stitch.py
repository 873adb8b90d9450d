"""Tracklet stitching: once a scene is tracked, a track that begins after another one ended takes
the earlier one's identity when their views look alike (re-identification over the whole scene).

Why: a vehicle hidden for longer than the detections' gaps (behind a truck, in a parked row)
usually comes back barely visible; its first detections then have no embedding (nothing of it
in the crop) and it starts a new track, because a dormant track matches only by appearance. A few
keyframes later that new track has views of its own. Joining the two afterwards removes the
identity switch; an online tracker could only rename the new track from then on, which counts
as a second switch.

The rule (``track.*`` keys), for a track A last reported at keyframe i and a track B first
reported at keyframe j of the same scene:

- candidates: same class; 0 < j - i <= ``reid_max_age``; both have views; B's first centre lies
  within A's gate of A's last centre moved on over the gap by A's velocity blended with B's
  first (``velocity_blend``, as the online tracker looks for a lost track:
  :func:`bev_reid.track.association.blended_distances`); and their speeds there (A's
  filter's at its last report, B's at its first, or at its second when B was born without the
  detector's velocity; a B reported once without one has no speed to compare) differ by at
  most ``stitch_max_speed_change``;
- A's gate is a lost track's on motion alone (:func:`bev_reid.track.lifecycle.lost_gate`),
  capped at ``stitch_gate_m`` rather than ``max_gate_m``: ``gate_m`` widened by
  ``lost_gate_growth_m`` per keyframe of the gap, the widening scaled by A's speed (full from
  ``lost_gate_speed_mps``). When both are slower than ``lost_still_speed_mps``, B may also
  stand within the gate of where A stood, as the online tracker looks for a slow lost track.
  So a parked car is joined only near its spot: a parked track's filter speed is the
  detector's noise, which over seconds carries the prediction a car's width or more, and a
  gate widened by the keyframes hidden reached the next cars of its row and the false
  positives about;
- cost: the cosine distance between the normalised mean of A's last ``memory`` views and that
  of B's first ``memory`` views; pairs above ``stitch_max_distance`` are never joined;
- each track is joined to at most one predecessor and one successor, the pairs taken by the
  Hungarian assignment on the cost (:func:`bev_reid.track.association.match`); chains follow
  (C joined to B joined to A: all of them are A).

This looks at the future of a track, so it works on finished scenes (``bev-reid track`` writes
its file at the end); ``track.stitch: false`` keeps the tracker online. Without embeddings
(motion alone) nothing is stitched, as there is no dormancy: motion cannot tell a vehicle that
returns after seconds from a stranger.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bev_reid.config import TrackConfig
from bev_reid.track.association import (
    blended_distances,
    cosine_distances,
    match,
    mean_view,
    stood_distances,
)
from bev_reid.track.lifecycle import lost_gate


@dataclass
class Tracklet:
    """What stitching needs to know of one track in a scene: where and when it was first and
    last reported, its velocity then, and its first and last views."""

    id: int
    label: str
    first: int  # keyframe number in the scene of the first report
    last: int  # ... and of the latest
    first_time: float  # seconds
    last_time: float
    first_centre: np.ndarray  # [2] global, metres
    last_centre: np.ndarray
    last_velocity: np.ndarray  # [2] m/s (0 while unknown)
    first_velocity: np.ndarray  # [2] m/s, at the first report where it was known (NaN: never)
    head: list[np.ndarray] = field(default_factory=list)  # the first views (embeddings [E])
    tail: list[np.ndarray] = field(default_factory=list)  # the latest views

    def report(
        self, frame: int, seconds: float, centre: np.ndarray, velocity: np.ndarray,
        embedding: np.ndarray | None, memory: int,
    ) -> None:  # fmt: skip
        """The track was reported at keyframe ``frame`` (after the first); ``velocity`` NaN:
        still unknown (born without the detector's velocity)."""
        self.last, self.last_time = frame, seconds
        self.last_centre = np.asarray(centre, dtype=np.float64)
        velocity = np.asarray(velocity, dtype=np.float64)
        if not np.all(np.isfinite(self.first_velocity)):
            self.first_velocity = velocity
        self.last_velocity = np.nan_to_num(velocity)
        self.add_view(embedding, memory)

    def add_view(self, embedding: np.ndarray | None, memory: int) -> None:
        if embedding is None or not np.all(np.isfinite(embedding)):
            return
        if len(self.head) < memory:
            self.head.append(np.asarray(embedding, dtype=np.float64))
        self.tail = [*self.tail, np.asarray(embedding, dtype=np.float64)][-memory:]


def start_tracklet(
    track_id: int, label: str, frame: int, seconds: float, centre: np.ndarray,
    velocity: np.ndarray, embedding: np.ndarray | None, memory: int,
) -> Tracklet:  # fmt: skip
    """The tracklet of a track first reported at keyframe ``frame``; ``velocity`` NaN: unknown
    (stitching then takes its speed at a later report, and at rest as its end)."""
    centre = np.asarray(centre, dtype=np.float64)
    velocity = np.asarray(velocity, dtype=np.float64)
    tracklet = Tracklet(
        track_id, label, frame, frame, seconds, seconds, centre, centre,
        np.nan_to_num(velocity), velocity,
    )  # fmt: skip
    tracklet.add_view(embedding, memory)
    return tracklet


def stitch_cost(tracklets: list[Tracklet], cfg: TrackConfig) -> np.ndarray:
    """[N, N] cost of joining tracklet b (column) after tracklet a (row); inf where they may not
    be joined (see the module doc)."""
    n = len(tracklets)
    cost = np.full((n, n), np.inf)
    if n == 0:
        return cost
    with_views = [t for t in tracklets if t.tail]
    if not with_views:
        return cost
    dim = with_views[0].tail[0].shape[0]
    nan = np.full(dim, np.nan)
    tails = np.stack([mean_view(t.tail) if t.tail else nan for t in tracklets])
    heads = np.stack([mean_view(t.head) if t.head else nan for t in tracklets])
    appearance = cosine_distances(tails, heads)  # N x N, NaN where a side has no views
    first = np.array([t.first for t in tracklets])
    last = np.array([t.last for t in tracklets])
    gap = first[None, :] - last[:, None]  # keyframes from a's last report to b's first
    first_time = np.array([t.first_time for t in tracklets])
    last_time = np.array([t.last_time for t in tracklets])
    seconds = first_time[None, :] - last_time[:, None]  # N x N
    last_centre = np.stack([t.last_centre for t in tracklets])  # N x 2
    velocity = np.stack([t.last_velocity for t in tracklets])
    first_velocity = np.stack([t.first_velocity for t in tracklets])
    predicted = last_centre[:, None, :] + seconds[..., None] * velocity[:, None, :]  # N x N x 2
    first_centres = np.stack([t.first_centre for t in tracklets])
    distance = blended_distances(
        predicted, velocity, seconds, first_centres, first_velocity, cfg.velocity_blend
    )
    speed_at_end = np.linalg.norm(velocity, axis=1)
    speed_at_start = np.linalg.norm(first_velocity, axis=1)
    # A parked car comes back where it stood, within the gate of motion alone (a lost track's
    # on motion alone: floor 0): its filter's noisy velocity carries the prediction off, and a
    # gate widened by the keyframes hidden reaches the other cars of its row.
    # (B's speed at its start may be unknown: it may stand, and its change is not counted.)
    still = (speed_at_end[:, None] < cfg.lost_still_speed_mps) & ~(
        speed_at_start[None, :] >= cfg.lost_still_speed_mps
    )
    distance = stood_distances(distance, still, last_centre, first_centres)
    gate = lost_gate(speed_at_end[:, None], gap, cfg, 0.0, cfg.stitch_gate_m)
    labels = np.array([t.label for t in tracklets], dtype=object)
    speed_change = np.abs(speed_at_start[None, :] - speed_at_end[:, None])
    allowed = (
        (gap > 0)
        & (gap <= cfg.reid_max_age)
        & (labels[:, None] == labels[None, :])
        & (distance <= gate)
        & ~(speed_change > cfg.stitch_max_speed_change)
        & np.isfinite(appearance)
        & (np.nan_to_num(appearance, nan=np.inf) <= cfg.stitch_max_distance)
    )
    cost[allowed] = appearance[allowed]
    return cost


def stitch(tracklets: list[Tracklet], cfg: TrackConfig) -> dict[int, int]:
    """{track id: the id it takes} for the tracklets joined to an earlier one (chains resolved
    to the earliest); ids not in it keep their own."""
    pairs, _, _ = match(stitch_cost(tracklets, cfg))
    successor_of = {tracklets[a].id: tracklets[b].id for a, b in pairs}
    predecessor = {b: a for a, b in successor_of.items()}
    renamed = {}
    for b in predecessor:
        root = b
        while root in predecessor:
            root = predecessor[root]
        renamed[b] = root
    return renamed
