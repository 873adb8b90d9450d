"""The tracking loop: it only wires the motion model, the association and the life cycle.

Per keyframe (one :class:`Frame`):

1. every track predicts its centre ``dt`` seconds ahead (:mod:`bev_reid.track.motion`); each
   detection is looked for from there, moved by a share of the change from the track's velocity
   to the detection's over the time since the track was last matched (``velocity_blend``:
   :func:`bev_reid.track.association.blended_distances`), and a slow lost track also where it
   was last matched, by a slow detection (``lost_still_speed_mps``; the nearer place counts);
2. the detections of tracked classes, scored at least ``min_score`` and (vehicles,
   ``nms_classes``) not overlapping a higher-scored one of their class by more than ``nms_iou``,
   are associated in stages (:mod:`bev_reid.track.association`): first the tracks matched
   at the previous keyframe (the distance gate ``gate_m``), then the lost tracks with the
   remaining detections (a wider gate, and an appearance limit: re-identification; dormant
   tracks by appearance alone), then the tracks born at the previous keyframe without the
   detector's velocity (a gate as wide as ``max_speed_mps`` allows: they take what the others
   leave), each by the matching that saves the most (``max_pair_cost``);
3. matched tracks update, unmatched ones coast, unmatched detections start tracks, and tracks
   lost too long die (:mod:`bev_reid.track.lifecycle`);
4. the tracks matched at this keyframe are reported as tracking-results records.

At the end of a scene, :meth:`Tracker.stitch` says which tracks join an earlier one (with
embeddings and ``track.stitch``; :mod:`bev_reid.track.stitch`).

With ``use_appearance`` off (``--reid-checkpoint none``) the same loop runs on motion alone.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from bev_reid.config import TrackConfig
from bev_reid.track import lifecycle, stitch
from bev_reid.track.association import (
    association_cost,
    blended_distances,
    cosine_distances,
    duplicates,
    match,
    off_heading,
    size_changes,
    stood_distances,
)
from bev_reid.track.detections import Detection, tracking_record

# The size term's scale: ``track.size_weight`` holds where the median size change of a running
# track's matches is SIZE_REFERENCE (make-detections' 5 % size noise gives 0.135 on world 7);
# with noisier sizes the weight falls with the square of that median (1/variance), with steadier
# ones it rises, at most 100-fold. It starts once a scene has SIZE_SAMPLES such matches.
SIZE_REFERENCE = 0.135
SIZE_SAMPLES = 20


@dataclass(frozen=True)
class Frame:
    """One keyframe's input.

    Attributes:
        sample_token: the keyframe.
        timestamp: microseconds.
        detections: its detections (any class; the tracker keeps those it tracks).
        embeddings: [K, E] one row per detection (NaN rows: no embedding), or None.
    """

    sample_token: str
    timestamp: int
    detections: list[Detection]
    embeddings: np.ndarray | None = None


class Tracker:
    """Tracks one scene at a time; :meth:`reset` between scenes.

    Args:
        cfg: the ``track`` config section.
        use_appearance: mix the embeddings' cosine distance into the cost.
        look_extent_m: the side of the embedding's crop, metres (``extent_m`` of the
            embedder): a longer vehicle's look is of part of it (``track.partial_look``).
    """

    def __init__(self, cfg: TrackConfig, use_appearance: bool, look_extent_m: float = math.inf):
        self.cfg = cfg
        self.use_appearance = use_appearance
        self.look_extent_m = look_extent_m
        self.stitching = use_appearance and cfg.stitch
        self.next_id = 0  # ids stay unique across scenes
        self.reset()

    def reset(self) -> None:
        """Forgets the tracks (a new scene starts)."""
        self.tracks: list[lifecycle.Track] = []
        self.last_timestamp: int | None = None
        self.frame = -1  # keyframe number in the scene
        self.tracklets: dict[int, stitch.Tracklet] = {}  # track id -> what stitching needs
        self.size_noise: list[float] = []  # size changes of running tracks' matches

    def size_weight(self) -> float:
        """``size_weight`` in units of this scene's size noise (see SIZE_REFERENCE); 0 until the
        scene has SIZE_SAMPLES matches of running tracks."""
        if self.cfg.size_weight <= 0 or len(self.size_noise) < SIZE_SAMPLES:
            return 0.0
        median = max(float(np.median(self.size_noise)), SIZE_REFERENCE / 10)
        return self.cfg.size_weight * (SIZE_REFERENCE / median) ** 2

    def _cost(
        self, tracks: list[lifecycle.Track], dets: list[Detection], emb: np.ndarray | None,
        size_weight: float,
    ) -> np.ndarray:  # fmt: skip
        cfg = self.cfg
        centres = np.array([d.translation[:2] for d in dets]).reshape(-1, 2)
        velocities = np.array([d.velocity for d in dets], dtype=np.float64).reshape(-1, 2)
        distance = blended_distances(
            np.array([t.kf.centre for t in tracks]).reshape(-1, 2),
            np.array([t.kf.velocity for t in tracks]).reshape(-1, 2),
            np.array([t.since for t in tracks]),
            centres,
            velocities,
            cfg.velocity_blend,
        )
        # A slow lost track may stand where it was last matched, for a detection that stands too
        # (not a car driving past its spot), or may (its velocity unknown: not NaN >= limit).
        still = (
            np.array([lifecycle.is_still(t, cfg) for t in tracks], dtype=bool)[:, None]
            & ~(np.linalg.norm(velocities, axis=1) >= cfg.lost_still_speed_mps)[None, :]
        )
        if still.any():  # most keyframes have no slow lost track: no places to gather
            stood = np.array([t.detection.translation[:2] for t in tracks]).reshape(-1, 2)
            distance = stood_distances(distance, still, stood, centres)
        labels = np.array([t.label for t in tracks], dtype=object)
        same = labels[:, None] == np.array([d.name for d in dets], dtype=object)[None, :]
        appearance, weight = None, 0.0
        if self.use_appearance and emb is not None:
            if cfg.memory_mode == "mean":  # one matrix product for all tracks
                means = np.stack([t.mean_view(emb.shape[1]) for t in tracks])  # T x E
                appearance = cosine_distances(means, emb)  # NaN where a side has none
            else:
                appearance = np.stack([t.appearance_distance(emb, "nearest") for t in tracks])
            weight = cfg.appearance_weight
        limit = np.array(
            [
                cfg.max_appearance_distance if lifecycle.is_dormant(t, cfg) else np.inf
                for t in tracks
            ]
        )
        # A lost track's gate widens with the keyframes lost; the full growth scales the
        # distance term of the cost. Which pairs it may take depends on its speed too (a parked
        # car stays near where it was): without a view on either side only motion speaks, and a
        # parked track's gate stays at gate_m; a known look may reach a little farther
        # (lost_gate_look_floor).
        gate = np.array([lifecycle.gate_of(t, cfg) for t in tracks])
        looks = np.array([lifecycle.gate_of(t, cfg, cfg.lost_gate_look_floor) for t in tracks])
        moving = np.array([lifecycle.gate_of(t, cfg, 0.0) for t in tracks])
        dormant = np.array([lifecycle.is_dormant(t, cfg) for t in tracks], dtype=bool)
        same = same.reshape(distance.shape).astype(bool)
        cost = association_cost(
            distance, gate, appearance, weight, limit, same, dormant, moving, looks
        )
        lost = np.array([lifecycle.is_lost(t) for t in tracks], dtype=bool)[:, None]
        # [T, 3] the tracks' remembered box sizes, worked out once for the rules below that ask
        sizes = functools.cache(lambda: np.stack([t.size() for t in tracks]).reshape(-1, 3))
        if appearance is not None and weight > 0:
            # A lost track weighs both kinds of evidence: a near detection may look unlike its
            # memory, a farther one must look alike (the mixed cost is capped). Within the
            # matched gate it takes what motion alone would: a weak embedding costs nothing there.
            far = distance > cfg.gate_m
            cost[lost & far & np.isfinite(appearance) & (cost > cfg.max_lost_cost)] = np.inf
            if cfg.partial_look and math.isfinite(self.look_extent_m):
                # A vehicle longer than the crop is seen in part: its look may help, never
                # hinder (the lesser of the mixed cost and motion alone's; dormant tracks keep
                # theirs, motion alone has none).
                long = sizes()[:, 1] > self.look_extent_m
                if long.any():
                    alone = association_cost(
                        distance, gate, same_class=same, needs_appearance=dormant,
                        motion_gate=moving, look_gate=looks,
                    )  # fmt: skip
                    cost[long] = np.minimum(cost[long], alone[long])
        newborn = np.array([lifecycle.needs_velocity(t) for t in tracks], dtype=bool)
        if newborn.any():  # a vehicle drives along its length (lifecycle: without a velocity)
            turn = off_heading(
                np.array([t.detection.translation[:2] for t in tracks]).reshape(-1, 2),
                np.array([t.detection.yaw for t in tracks]),
                centres,
            )
            sideways = (distance > cfg.gate_m) & (turn > cfg.max_heading_change_deg)
            cost[newborn[:, None] & sideways] = np.inf
        if size_weight > 0:  # a lost track prefers a box of its own size (lifecycle: Size)
            change = size_changes(sizes(), np.array([d.size for d in dets]))
            cost = np.where(lost, cost + size_weight * change, cost)
        return cost

    def _associate(
        self, tracks: list[lifecycle.Track], dets: list[Detection], emb: np.ndarray | None,
        free: list[int], size_weight: float,
    ) -> list[tuple[int, int]]:  # fmt: skip
        """Matches (track index into ``tracks``, detection index into ``dets``) among the
        detections ``free``; ``size_weight``: this keyframe's :meth:`size_weight`."""
        if not tracks or not free:
            return []
        sub_emb = None if emb is None else emb[free]
        cost = self._cost(tracks, [dets[j] for j in free], sub_emb, size_weight)
        pairs, _, _ = match(cost, self.cfg.max_pair_cost)
        return [(i, free[j]) for i, j in pairs]

    def step(self, frame: Frame) -> list[dict]:
        """Advances to ``frame``; returns the tracking-results records of its keyframe."""
        cfg = self.cfg
        dt = 0.0 if self.last_timestamp is None else (frame.timestamp - self.last_timestamp) / 1e6
        self.last_timestamp = frame.timestamp
        self.frame += 1
        for track in self.tracks:
            track.kf.predict(dt)
            track.since += dt
        keep = [
            i
            for i, d in enumerate(frame.detections)
            if d.name in cfg.classes and d.score >= cfg.min_score
        ]
        nms = [i for i in keep if frame.detections[i].name in cfg.nms_classes]
        if cfg.nms_iou < 1.0 and len(nms) > 1:
            boxes = [frame.detections[i] for i in nms]
            gone = duplicates(
                np.array([d.translation[:2] for d in boxes]),
                np.array([d.size for d in boxes]),
                np.array([d.yaw for d in boxes]),
                np.array([d.name for d in boxes], dtype=object),
                np.array([d.score for d in boxes]),
                cfg.nms_iou,
            )
            dropped = {i for i, g in zip(nms, gone, strict=True) if g}
            keep = [i for i in keep if i not in dropped]
        dets = [frame.detections[i] for i in keep]
        emb = None if frame.embeddings is None else np.asarray(frame.embeddings)[keep]
        # Three stages: the tracks matched at the last keyframe, the lost ones, then those born
        # at the last keyframe without a velocity (a wide gate: they take what the others leave).
        newborn = [t for t in self.tracks if lifecycle.needs_velocity(t)]
        active = [
            t for t in self.tracks if not lifecycle.is_lost(t) and not lifecycle.needs_velocity(t)
        ]
        lost = [t for t in self.tracks if lifecycle.is_lost(t)]
        free = list(range(len(dets)))
        views: dict[int, np.ndarray | None] = {}  # track id -> its embedding at this keyframe
        matched: dict[int, int] = {}  # id(track) -> detection index
        size_weight = self.size_weight()  # one median per keyframe, for both stages
        for group in (active, lost, newborn):
            for i, j in self._associate(group, dets, emb, free, size_weight):
                matched[id(group[i])] = j
            free = [j for j in free if j not in set(matched.values())]
        for track in self.tracks:
            if id(track) in matched:
                j = matched[id(track)]
                if not lifecycle.is_lost(track):  # how much a box's size varies: the noise
                    change = size_changes(track.size(), dets[j].size)
                    self.size_noise.append(float(change[0, 0]))
                views[track.id] = None if emb is None else emb[j]
                lifecycle.update(track, dets[j], views[track.id], cfg)
            else:
                lifecycle.coast(track)
        for j in free:
            embedding = views[self.next_id] = None if emb is None else emb[j]
            self.tracks.append(lifecycle.birth(self.next_id, dets[j], embedding, cfg))
            self.next_id += 1
        appearance = self.use_appearance
        self.tracks = [t for t in self.tracks if not lifecycle.is_dead(t, cfg, appearance)]
        reported = [t for t in self.tracks if lifecycle.is_reported(t, cfg)]
        seconds = frame.timestamp / 1e6
        for t in reported if self.stitching else ():  # what stitching will need of them
            view = views.get(t.id)
            velocity = t.kf.velocity if t.velocity_known else np.full(2, np.nan)
            if t.id in self.tracklets:
                self.tracklets[t.id].report(
                    self.frame, seconds, t.kf.centre, velocity, view, cfg.memory
                )
            else:
                self.tracklets[t.id] = stitch.start_tracklet(
                    t.id, t.label, self.frame, seconds, t.kf.centre, velocity, view, cfg.memory
                )
        return [self._record(frame.sample_token, t) for t in reported]

    def stitch(self) -> dict[str, str]:
        """{tracking id: the tracking id it takes} for the tracks of the scene so far that join
        an earlier one; empty on motion alone or with ``track.stitch`` off."""
        if not self.stitching:
            return {}
        renamed = stitch.stitch(list(self.tracklets.values()), self.cfg)
        return {str(k): str(v) for k, v in renamed.items()}

    @staticmethod
    def _record(sample_token: str, track: lifecycle.Track) -> dict:
        det = track.detection
        x, y = track.kf.centre
        return tracking_record(
            sample_token,
            (x, y, det.translation[2]),
            det.size,
            det.rotation,
            track.kf.velocity,
            track.id,
            track.label,
            det.score,
        )
