"""The life cycle of a track: birth, update, coasting, re-identification and death.

Rules (``track.*`` config keys):

- Birth: every detection (of a tracked class, scored at least ``min_score``) that matches no
  track starts a track, with the next integer id, its centre, the detector's velocity and its
  embedding as the first view of the appearance memory.
- Without the detector's velocity (a detection whose velocity is unknown: see
  ``detection_velocity``): the new track's filter starts at rest with a velocity std of
  ``max_speed_mps`` / 2 (a pedestrian's: ``walking_speed_mps``, for these and below), and until
  its second match it is looked for up to ``max_speed_mps`` times the time since its birth away
  (``gate_m`` more), after the other tracks (the lost ones too) have taken their detections
  (:class:`bev_reid.track.tracker.Tracker`), so that its wide gate takes nothing they would. Its
  second match gives the filter a velocity from the motion. Lost before that, it is looked for
  as a parked track.
- Update: a matched track corrects its Kalman filter with the detection's centre, takes the
  detection's height, size, heading and score, and adds the detection's embedding to its memory.
- Report: a track is written out at a keyframe where it was matched, once it has been matched
  ``min_hits`` times.
- Coasting: an unmatched track keeps predicting; ``misses`` counts its keyframes without a match.
  While ``misses >= 1`` it is *lost*: its distance gate widens by ``lost_gate_growth_m`` per
  keyframe lost (the vehicle may have turned or braked out of sight). On motion alone (a
  detection or a track without a view) the widening scales with the track's speed, full at
  ``lost_gate_speed_mps``: a parked car does not wander off, its neighbour a few metres away is
  someone else. With embeddings it takes a detection within ``gate_m`` as motion alone would,
  and one farther out only when their mixed cost (distance and appearance) is at most
  ``max_lost_cost``: a far detection must look alike.
- A long vehicle (with embeddings): a track whose box is longer than the embedding's crop (a
  bus in a 6 m crop) has a look of part of it, so each of its pairs costs the lesser of the
  mixed cost and motion alone's (``partial_look``): its look may help it, never hinder it.
- Standing still (both modes): a lost track slower than ``lost_still_speed_mps`` (its filter's
  speed) is looked for both where its motion carries it and, by a detection whose velocity is
  as slow, where it was last matched; that detection's distance is the smaller of the two (a
  car driving past the spot is no parked car coming back). A parked car does not move while
  hidden, and its filter's speed is then the detector's noise: over seconds hidden, that noise
  alone carries the prediction a car's width or more, towards the next car in the row.
- Size (both modes): a lost track's cost of a detection adds ``size_weight`` times how far
  their boxes' sizes are apart (:func:`bev_reid.track.association.size_changes`; the track's
  size is the geometric mean of its last ``memory`` matched boxes), the weight scaled to how
  much the detector's sizes vary in the scene (:meth:`bev_reid.track.tracker.Tracker.size_weight`).
  A vehicle's box keeps its size while it is hidden; the car beside it often has another.
  Tracks matched at the last keyframe go by distance (and appearance) alone.
- Dormancy (with embeddings only): a track lost for more than ``max_age`` keyframes whose
  memory holds a view sleeps until ``reid_max_age`` keyframes lost: it then matches only a
  detection whose embedding lies within ``max_appearance_distance`` of its memory (and within its
  widened gate). Motion alone cannot tell a returning vehicle from a stranger that far in time,
  so without embeddings there is no dormancy.
- Death: a track lost for more than ``max_age`` keyframes (``reid_max_age`` when dormant) is
  dropped.

The appearance memory holds the embeddings of a track's last ``memory`` matched detections;
its distance to a detection is the cosine distance to their normalised mean (``memory_mode =
mean``), or to the nearest of them (``nearest``, as DeepSORT's gallery).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from bev_reid.config import TrackConfig
from bev_reid.track.association import mean_view
from bev_reid.track.detections import Detection
from bev_reid.track.motion import ConstantVelocityKF


@dataclass
class Track:
    """One tracked object."""

    id: int
    label: str  # tracking class
    kf: ConstantVelocityKF
    detection: Detection  # the latest matched detection
    hits: int = 1
    velocity_known: bool = True  # False from a birth without the detector's velocity to a match
    misses: int = 0  # keyframes since the last match (0: matched at the current keyframe)
    since: float = 0.0  # seconds from the last match to the latest prediction
    memory: deque = field(default_factory=deque)  # embeddings [E] of the last matched views
    sizes: deque = field(default_factory=deque)  # log sizes [3] of the last matched boxes

    def remember(self, embedding: np.ndarray | None, keep: int) -> None:
        if embedding is not None and np.all(np.isfinite(embedding)):
            _keep_last(self.memory, np.asarray(embedding, dtype=np.float64), keep)

    def remember_size(self, size, keep: int) -> None:
        _keep_last(self.sizes, np.log(np.asarray(size, dtype=np.float64)), keep)

    def size(self) -> np.ndarray:
        """[3] the geometric mean of the remembered box sizes (width, length, height), metres."""
        return np.exp(np.mean(self.sizes, axis=0))

    def mean_view(self, dim: int) -> np.ndarray:
        """[E] the normalised mean of the memory; NaN when it is empty."""
        return mean_view(self.memory) if self.memory else np.full(dim, np.nan)

    def appearance_distance(self, embeddings: np.ndarray, mode: str) -> np.ndarray:
        """[D] cosine distances of detection embeddings [D, E] (NaN rows: none) to this track's
        memory; NaN where either side has no embedding."""
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if not self.memory or embeddings.size == 0:
            return np.full(len(embeddings), np.nan)
        dets = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(min=1e-12)
        if mode == "mean":
            dist = 1.0 - dets @ self.mean_view(dets.shape[1])
        else:
            views = np.stack(self.memory)  # M x E
            views = views / np.linalg.norm(views, axis=1, keepdims=True).clip(min=1e-12)
            dist = (1.0 - dets @ views.T).min(1)
        return dist  # NaN rows of ``embeddings`` stay NaN


def _keep_last(items: deque, item: np.ndarray, keep: int) -> None:
    """Appends ``item``, dropping the oldest beyond ``keep``."""
    items.append(item)
    while len(items) > keep:
        items.popleft()


def same_class(track: Track, detection: Detection) -> bool:
    return track.label == detection.name


def birth(
    track_id: int, detection: Detection, embedding: np.ndarray | None, cfg: TrackConfig
) -> Track:
    """A new track on an unmatched detection."""
    velocity = np.asarray(detection.velocity, dtype=np.float64)
    known = bool(np.all(np.isfinite(velocity)))
    kf = ConstantVelocityKF(
        np.asarray(detection.translation[:2]),
        velocity if known else np.zeros(2),
        cfg.measurement_noise_m,
        cfg.velocity_std if known else top_speed(detection.name, cfg) / 2,
        cfg.accel_noise,
    )
    track = Track(track_id, detection.name, kf, detection, velocity_known=known)
    track.remember(embedding, cfg.memory)
    track.remember_size(detection.size, cfg.memory)
    return track


def update(
    track: Track, detection: Detection, embedding: np.ndarray | None, cfg: TrackConfig
) -> None:
    """A matched track takes its detection."""
    track.kf.update(np.asarray(detection.translation[:2]))
    track.detection = detection
    track.hits += 1
    track.velocity_known = True  # two centres give the filter a velocity
    track.misses = 0
    track.since = 0.0
    track.remember(embedding, cfg.memory)
    track.remember_size(detection.size, cfg.memory)


def coast(track: Track) -> None:
    """An unmatched track goes on predicting, one more keyframe lost."""
    track.misses += 1


def is_lost(track: Track) -> bool:
    return track.misses >= 1


def top_speed(label: str, cfg: TrackConfig) -> float:
    """The fastest a track of class ``label`` is taken to move while its velocity is unknown,
    m/s: ``walking_speed_mps`` for a pedestrian, ``max_speed_mps`` for the rest."""
    return cfg.walking_speed_mps if label == "pedestrian" else cfg.max_speed_mps


def needs_velocity(track: Track) -> bool:
    """Born at the last keyframe without the detector's velocity: its motion is unknown."""
    return not track.velocity_known and not is_lost(track)


def is_still(track: Track, cfg: TrackConfig) -> bool:
    """Lost and slower than ``lost_still_speed_mps``: it may stand where it was last matched."""
    speed = float(np.linalg.norm(track.kf.velocity))
    return is_lost(track) and speed < cfg.lost_still_speed_mps


def is_dormant(track: Track, cfg: TrackConfig) -> bool:
    """Lost longer than ``max_age``: re-identifiable by appearance alone."""
    return track.misses > cfg.max_age


def is_dead(track: Track, cfg: TrackConfig, appearance: bool) -> bool:
    """Lost for good: past ``max_age``, or with embeddings and a memory past ``reid_max_age``."""
    limit = max(cfg.max_age, cfg.reid_max_age) if appearance and track.memory else cfg.max_age
    return track.misses > limit


def is_reported(track: Track, cfg: TrackConfig) -> bool:
    return track.misses == 0 and track.hits >= cfg.min_hits


def gate_of(track: Track, cfg: TrackConfig, floor: float = 1.0) -> float:
    """The track's distance gate, metres: :func:`lost_gate` at its filter's speed and keyframes
    lost, at most ``max_gate_m``; for a track whose motion is unknown (:func:`needs_velocity`)
    ``gate_m`` more than :func:`top_speed` times the seconds since its birth."""
    if needs_velocity(track):
        return cfg.gate_m + top_speed(track.label, cfg) * track.since
    speed = float(np.linalg.norm(track.kf.velocity))
    return float(lost_gate(speed, track.misses, cfg, floor, max(cfg.gate_m, cfg.max_gate_m)))


def lost_gate(
    speed: np.ndarray | float, lost: np.ndarray | float, cfg: TrackConfig, floor: float,
    widest: float,
) -> np.ndarray:  # fmt: skip
    """The distance gate of a track lost for ``lost`` keyframes at ``speed`` m/s (arrays
    broadcast), metres: ``gate_m`` widened by a share of ``lost_gate_growth_m`` per keyframe
    lost, at most ``widest``. The share scales with the speed (full at ``lost_gate_speed_mps``
    and faster; 0 turns the scaling off) from ``floor`` for a parked track: 1 gives the full
    growth at any speed (the gate that scales the cost), 0 the gate of motion alone,
    ``lost_gate_look_floor`` that of a pair with a view on both sides."""
    share = 1.0
    if cfg.lost_gate_speed_mps > 0:
        fast = np.minimum(1.0, np.asarray(speed, dtype=np.float64) / cfg.lost_gate_speed_mps)
        share = floor + (1.0 - floor) * fast
    growth = share * cfg.lost_gate_growth_m * np.asarray(lost, dtype=np.float64)
    return np.minimum(cfg.gate_m + growth, widest)
