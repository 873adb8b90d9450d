"""The embedding of every detection of a keyframe: one BEV pass, the boxes cut as the ReID
dataset was (:mod:`bev_reid.reid.extract`), the ReID net on the crops.

Detections are global; the crops are cut in the keyframe's ego frame (that of its LIDAR_TOP
sweep, as :meth:`bev_reid.data.nuscenes.NuScenesDB.boxes` puts the annotations). Only
detections of the classes the embedding learnt (the categories of its training identities, e.g.
cars, trucks and buses; :meth:`bev_reid.reid.extract.CropRecipe.covers`) get an embedding, when
their crop holds anything; the others get a NaN row and are tracked on motion alone.

Shapes: K detections, E embedding dims.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from pyquaternion import Quaternion
from torch.utils.data import DataLoader, Subset

from bev_reid.data.keyframes import collate
from bev_reid.data.nuscenes import NuScenesDB
from bev_reid.data.records import AnnotatedBox
from bev_reid.track.detections import CATEGORY_OF, Detection


def ego_boxes(db: NuScenesDB, sample_token: str, detections: Sequence[Detection]) -> list[dict]:
    """The detections as box dicts in the keyframe's ego frame (AnnotatedBox.as_dict)."""
    rot, trans = db.ego_pose(sample_token)  # ego -> global
    to_ego = Quaternion(matrix=rot).inverse
    out = []
    for d in detections:
        centre = rot.T @ (np.asarray(d.translation, dtype=np.float64) - trans)
        box = AnnotatedBox(
            token="", instance_token="", category=CATEGORY_OF[d.name], center=centre,
            wlh=np.asarray(d.size, dtype=np.float64), rotation=to_ego * Quaternion(d.rotation),
            visibility=0, num_lidar_pts=0, attributes=(),
        )  # fmt: skip
        out.append(box.as_dict())
    return out


class DetectionEmbedder:
    """Embeds the detections of keyframes with a ReID model loaded from a checkpoint.

    Args:
        model: a :class:`~bev_reid.models.reid.BEVReIDModel` from ``from_checkpoint``.
        cutter: its :class:`~bev_reid.reid.extract.CropCutter`.
        db: the open tables.
        num_workers: DataLoader workers that read the keyframes.
    """

    def __init__(self, model: Any, cutter: Any, db: NuScenesDB, num_workers: int = 0):
        self.model, self.cutter, self.db = model, cutter, db
        self.dataset = cutter.keyframes(db)
        self.num_workers = num_workers
        self.seconds = 0.0  # spent in the BEV pass, the cropping and the net

    @property
    def uses_cameras(self) -> bool:
        """Whether the crops read the camera images (the results' ``meta.use_camera``)."""
        return self.cutter.recipe.needs_cameras

    @property
    def extent_m(self) -> float:
        """The side of a crop, metres: a vehicle longer than this is seen in part."""
        return self.cutter.recipe.extent_m

    def covered(self, detection: Detection) -> bool:
        return self.cutter.recipe.covers(CATEGORY_OF[detection.name])

    def embed(self, keyframe: dict, detections: Sequence[Detection]) -> np.ndarray:
        """[K, E] float32 embeddings of one keyframe's detections; NaN rows for classes the
        embedding did not learn and for empty crops."""
        start = time.perf_counter()
        dim = self.model.config["embedding_dim"]
        out = np.full((len(detections), dim), np.nan, dtype=np.float32)
        rows = [i for i, d in enumerate(detections) if self.covered(d)]
        if rows:
            token = keyframe["sample_token"][0]
            every = ego_boxes(self.db, token, detections)  # all classes hide what is behind
            boxes = [every[i] for i in rows]
            crops = self.cutter.crops(keyframe, boxes, every)  # K' x C x S x S
            # An empty crop (no LiDAR return in the box) says nothing of the vehicle: all empty
            # crops share one embedding, which would make strangers look alike.
            full = crops.flatten(1).ne(0).any(1)  # K'
            rows = [r for r, f in zip(rows, full.tolist(), strict=True) if f]
            if rows:
                device = next(self.model.parameters()).device
                emb = self.model.embed(crops[full].to(device)).float().cpu().numpy()  # K'' x E
                out[rows] = emb
        self.seconds += time.perf_counter() - start
        return out

    def keyframes(self, tokens: Sequence[str]) -> Iterator[dict]:
        """The collated keyframes (batches of one) of ``tokens``, in that order."""
        indices = [self.dataset.index_of(t) for t in tokens]
        loader = DataLoader(
            Subset(self.dataset, indices),
            batch_size=1,
            collate_fn=collate,
            num_workers=self.num_workers,
        )
        with torch.no_grad():
            yield from loader
