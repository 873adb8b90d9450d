"""The identity oracle: ``--reid-checkpoint oracle`` embeds each detection with the identity of
the annotation it was made from, to measure what a perfect embedding would save with this
tracker (an upper bound, not a model: it reads the ground truth).

A detection of a vehicle class takes the instance of the nearest annotation of its keyframe of
the same tracking class whose centre lies within ``ORACLE_RADIUS_M`` of it in the ground plane;
its embedding is that instance's vector, a unit vector in ``ORACLE_DIM`` dimensions drawn from a
generator seeded by the instance token (two instances are nearly orthogonal: cosine distance
1 +- 0.1). Detections with no annotation that near (false positives) and of the other classes
get none (NaN), as the embedding leaves pedestrians to motion alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from nuscenes.eval.tracking.utils import category_to_tracking_name

from bev_reid.data.nuscenes import NuScenesDB
from bev_reid.track.degrade import rng_for
from bev_reid.track.detections import CATEGORY_OF, Detection

ORACLE_RADIUS_M = 1.0
ORACLE_DIM = 128


def identity_vector(instance_token: str) -> np.ndarray:
    """[ORACLE_DIM] float32 unit vector of one instance, the same in every run."""
    v = rng_for(0, f"oracle:{instance_token}").normal(size=ORACLE_DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


class OracleEmbedder:
    """The embedder interface of :class:`bev_reid.track.embed.DetectionEmbedder`, from the
    annotations of ``db``."""

    uses_cameras = False
    extent_m = np.inf  # it knows the whole vehicle

    def __init__(self, db: NuScenesDB):
        self.db = db
        self.seconds = 0.0

    def keyframes(self, tokens: Sequence[str]) -> Iterator[str]:
        return iter(tokens)  # nothing to read but the tables

    def embed(self, sample_token: str, detections: Sequence[Detection]) -> np.ndarray:
        """[K, ORACLE_DIM] the identity vectors of the detections (NaN rows: none)."""
        out = np.full((len(detections), ORACLE_DIM), np.nan, dtype=np.float32)
        anns = [self.db.get("sample_annotation", t) for t in self.db.sample(sample_token)["anns"]]
        names = np.array([category_to_tracking_name(a["category_name"]) for a in anns], object)
        centres = np.array([a["translation"][:2] for a in anns], dtype=np.float64).reshape(-1, 2)
        for i, d in enumerate(detections):
            if not CATEGORY_OF[d.name].startswith("vehicle"):
                continue
            dist = np.linalg.norm(centres - np.asarray(d.translation[:2]), axis=1)
            dist[names != d.name] = np.inf
            if len(dist) and dist.min() <= ORACLE_RADIUS_M:
                out[i] = identity_vector(anns[int(dist.argmin())]["instance_token"])
        return out
