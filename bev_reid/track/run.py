"""`bev-reid track`: detections in, tracks out, scene by scene.

Reads the detection-results file (checked against the dataroot's keyframes; its velocities
dropped when it has none, see ``track.detection_velocity``), tracks every scene
(``data.scenes``, else all of the version) keyframe by keyframe with :class:`Tracker`, embedding
the detections with the ReID checkpoint (one BEV pass per keyframe) unless it is ``none``, and
writes tracking-results JSON that lists every keyframe of those scenes. At the end of each scene
the tracks that join an earlier one take its id (:mod:`bev_reid.track.stitch`), two tracks that
took turns on one object become one, and the keyframes inside a track at which it was lost get
interpolated boxes (both :mod:`bev_reid.track.gaps`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from bev_reid.config import Config, ConfigError
from bev_reid.data.nuscenes import NuScenesDB, resolve_scenes
from bev_reid.track.detections import (
    DEFAULT_META,
    drop_velocities,
    read_detections,
    without_velocities,
    write_results,
)
from bev_reid.track.gaps import fill_gaps, lidar_seen, merge_interleaved
from bev_reid.track.tracker import Frame, Tracker


@dataclass
class TrackingRun:
    """What a run did: the results file, how many keyframes and tracks, and the time spent."""

    path: Path
    keyframes: int
    tracks: int
    seconds: float  # the whole loop, reading included
    embed_seconds: float  # the BEV pass, cropping and the ReID net
    appearance: bool
    stitched: int = 0  # tracks joined to an earlier one at the end of their scene
    merged: int = 0  # tracks joined to one they took turns with or lay in a hole of (gaps.py)
    filled: int = 0  # boxes interpolated inside tracks (track.fill_gaps)
    hidden: int = 0  # keyframes inside tracks left to the devkit: no LiDAR point in the box
    velocities: bool = True  # the detectors' velocities were used (track.detection_velocity)


def open_embedder(cfg: Config, db: NuScenesDB):
    """The DetectionEmbedder of ``track.reid_checkpoint`` (a checkpoint, or an ``.onnx`` file of
    ``bev-reid export``), the OracleEmbedder for ``oracle``, or None for ``none``."""
    ckpt = cfg.track.reid_checkpoint
    if not ckpt:
        raise ConfigError(
            "track needs --reid-checkpoint: a ReID checkpoint (file or folder), or none for "
            "motion alone (config key track.reid_checkpoint)"
        )
    if ckpt.lower() == "none":
        return None
    if ckpt.lower() == "oracle":  # the annotated identities: the bound of any embedding
        from bev_reid.track.oracle import OracleEmbedder

        return OracleEmbedder(db)
    from bev_reid.engine.distributed import pick_device
    from bev_reid.reid.export import load_embedder
    from bev_reid.reid.extract import cutter_for
    from bev_reid.track.embed import DetectionEmbedder

    device = pick_device(cfg.track.device)
    model = load_embedder(ckpt, device)
    cutter = cutter_for(model, cfg.track.lss_checkpoint, cfg.data)
    return DetectionEmbedder(model, cutter, db, cfg.data.num_workers)


def run_tracking(cfg: Config, progress: bool = True) -> TrackingRun:
    """Tracks the scenes of ``cfg.data`` and writes ``track.out``."""
    db = NuScenesDB(cfg.data.dataroot, cfg.data.version)
    scenes = resolve_scenes(db, None, cfg.data.scenes)
    all_tokens = [t for s in db.scene_names for t in db.keyframes(s)]
    detections = read_detections(cfg.track.detections, all_tokens)
    mode = cfg.track.detection_velocity
    velocities = mode == "use" or (mode == "auto" and not without_velocities(detections))
    if not velocities:  # the tracker estimates them from the motion
        detections = drop_velocities(detections)
    embedder = open_embedder(cfg, db)
    extent = math.inf if embedder is None else embedder.extent_m
    tracker = Tracker(cfg.track, use_appearance=embedder is not None, look_extent_m=extent)
    results: dict[str, list[dict]] = {}
    total = sum(len(db.keyframes(s)) for s in scenes)
    bar = tqdm(total=total, desc="track", unit="keyframe", disable=not progress)
    start = time.perf_counter()
    stitched = merged = filled = hidden = 0
    seen = None
    if cfg.track.fill_gaps and cfg.track.fill_min_points > 0:
        first = db.keyframes(scenes[0])[0] if scenes else None
        seen = lidar_seen(db, cfg.track.fill_min_points, cfg.track.fill_margin_m, first)
    for scene in scenes:
        tracker.reset()
        tokens = db.keyframes(scene)
        stamps = [int(db.sample(t)["timestamp"]) for t in tokens]  # microseconds
        keyframes = embedder.keyframes(tokens) if embedder is not None else iter(tokens)
        for token, stamp, keyframe in zip(tokens, stamps, keyframes, strict=True):
            dets = detections.get(token, [])
            emb = embedder.embed(keyframe, dets) if embedder is not None else None
            frame = Frame(token, stamp, dets, emb)
            results[token] = tracker.step(frame)
            bar.update(1)
        renamed = tracker.stitch()
        stitched += len(renamed)
        for token in tokens:
            for record in results[token]:
                record["tracking_id"] = renamed.get(record["tracking_id"], record["tracking_id"])
        if cfg.track.merge_interleaved:
            merged += len(
                merge_interleaved(
                    results,
                    tokens,
                    stamps,
                    cfg.track.nms_iou,
                    cfg.track.fill_path,
                    cfg.track.merge_inside_iou,
                )
            )
        if cfg.track.fill_gaps:
            added, left = fill_gaps(results, tokens, stamps, seen, cfg.track.fill_path)
            filled, hidden = filled + added, hidden + left
    seconds = time.perf_counter() - start
    bar.close()
    meta = dict(DEFAULT_META)
    if embedder is not None:
        meta["use_camera"] = embedder.uses_cameras
    path = write_results(cfg.track.out, results, meta)
    return TrackingRun(
        path,
        total,
        tracker.next_id,
        seconds,
        0.0 if embedder is None else embedder.seconds,
        embedder is not None,
        stitched,
        merged,
        filled,
        hidden,
        velocities,
    )
