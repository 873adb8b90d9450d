"""Tracker speed in keyframes per second, with and without the BEV pass of the embedding.

    python benchmarks/bench_track.py --reid-checkpoint CKPT [--dataroot DIR --version V]
        [--repeats 3]

On one data source (the real scene when present, else a small synthetic world), with the
detections of ``make-detections`` (seed 0, gaps of up to 3 keyframes):

- reference: the tracking loop on motion alone (association, Kalman filter, life cycle), the
  detections in memory;
- the same loop without the non-maximum suppression of overlapping vehicle boxes
  (``track.nms_iou`` 1): what the suppression costs;
- the same loop on the detections with their velocities dropped (a detector that writes none:
  the tracker estimates them, with a third association stage for the tracks born without one);
- reading: the keyframes the embedding needs (LiDAR, and the images when painted), alone;
- BEV pass: reading, cutting every detection's crop from one pass and the ReID net;
- ``track`` with ReID and with ``none``: the whole command (reading the tables and the
  detections, tracking, filling the holes inside tracks where the LiDAR sees the vehicle,
  writing the results); with ``none`` also filling every hole (``track.fill_min_points`` 0),
  which reads no LiDAR, not joining the tracks that take turns on one object
  (``track.merge_interleaved`` false): what the join costs, and filling the holes on straight
  lines (``track.fill_path`` line): what the curve costs; with ReID also taking every look in
  full (``track.partial_look`` false): what weighing a long vehicle's look against motion costs.

Each time is the median of ``--repeats`` runs; ratios are against the reference measured in the
same run. Without ``--reid-checkpoint``, a checkpoint is trained for 2 steps on a LiDAR box
raster dataset of the data (speed does not depend on training).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bev_reid.config import SynthConfig, load_config
from bev_reid.data.nuscenes import NuScenesDB
from bev_reid.track.degrade import make_detections
from bev_reid.track.detections import drop_velocities, read_detections
from bev_reid.track.run import open_embedder, run_tracking
from bev_reid.track.tracker import Frame, Tracker

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "nuscenes-mini"


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tiny_checkpoint(overrides: dict, tmp: Path) -> str:
    from bev_reid.reid.build import build_dataset
    from bev_reid.reid.train import train_reid

    build = {"build.out": str(tmp / "ds"), "build.modalities": ["lidar"],
             "build.lidar_raster": "box", "build.crop_cell": 0.25, "build.lidar_colour": True,
             "build.min_views": 2, "build.val_fraction": 0.0}  # fmt: skip
    build_dataset(load_config(overrides={**overrides, **build}))
    train = {"reid_run.dataset_dir": str(tmp / "ds"), "reid_run.log_dir": str(tmp / "reid"),
             "train_reid.device": "cpu", "train_reid.num_workers": 0, "train_reid.max_steps": 2,
             "train_reid.p_identities": 4, "train_reid.k_views": 2}  # fmt: skip
    return str(train_reid(load_config(overrides=train)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataroot", default=None)
    parser.add_argument("--version", default="v1.0-mini")
    parser.add_argument("--reid-checkpoint", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        dataroot = args.dataroot
        if dataroot is None and (REAL / args.version / "sample.json").is_file():
            dataroot = str(REAL)
        if dataroot is None:
            from bev_reid.synth.generate import generate_world

            cfg = SynthConfig(scenes=1, keyframes=24, seed=3)
            dataroot = str(generate_world(cfg, out=tmp / "world", progress=False))
        base = {"data.dataroot": dataroot, "data.version": args.version,
                "data.num_workers": 0, "track.device": "cpu"}  # fmt: skip
        ckpt = args.reid_checkpoint or tiny_checkpoint(base, tmp)
        det = tmp / "det.json"
        make_detections(load_config(overrides={**base, "track.detections": str(det)}), False)
        cfg = load_config(overrides={**base, "track.detections": str(det),
                                     "track.reid_checkpoint": ckpt})  # fmt: skip
        db = NuScenesDB(dataroot, args.version)
        tokens = [t for s in db.scene_names for t in db.keyframes(s)]
        stamps = {t: int(db.sample(t)["timestamp"]) for t in tokens}
        dets = read_detections(det)
        n = len(tokens)

        def motion_loop(track_cfg=cfg.track, source=dets) -> None:
            tracker = Tracker(track_cfg, use_appearance=False)
            for t in tokens:
                tracker.step(Frame(t, stamps[t], source.get(t, [])))

        no_velocities = drop_velocities(dets)

        no_nms = dataclasses.replace(cfg.track, nms_iou=1.0)

        embedder = open_embedder(cfg, db)

        def reading() -> None:
            for _ in embedder.keyframes(tokens):
                pass

        def bev_pass() -> None:
            for t, kf in zip(tokens, embedder.keyframes(tokens), strict=True):
                embedder.embed(kf, dets.get(t, []))

        def command(ckpt_name: str, **extra):
            run_cfg = load_config(overrides={**base, "track.detections": str(det),
                                             "track.reid_checkpoint": ckpt_name,
                                             "track.out": str(tmp / "tracks.json"),
                                             **extra})  # fmt: skip
            return lambda: run_tracking(run_cfg, progress=False)

        rows = [
            ("tracking loop, motion alone (reference)", median_time(motion_loop, args.repeats)),
            ("loop, no suppression", median_time(lambda: motion_loop(no_nms), args.repeats)),
            (
                "loop, detections without velocities",
                median_time(lambda: motion_loop(source=no_velocities), args.repeats),
            ),
            ("reading the keyframes", median_time(reading, args.repeats)),
            ("reading + BEV pass + crops + ReID net", median_time(bev_pass, args.repeats)),
            ("track --reid-checkpoint none", median_time(command("none"), args.repeats)),
            (
                "  the same, filling without LiDAR",
                median_time(command("none", **{"track.fill_min_points": 0}), args.repeats),
            ),
            (
                "  the same, not joining tracks in turns",
                median_time(command("none", **{"track.merge_interleaved": False}), args.repeats),
            ),
            (
                "  the same, holes filled straight",
                median_time(command("none", **{"track.fill_path": "line"}), args.repeats),
            ),
            ("track --reid-checkpoint CKPT", median_time(command(ckpt), args.repeats)),
            (
                "  the same, every look in full",
                median_time(command(ckpt, **{"track.partial_look": False}), args.repeats),
            ),
        ]
    boxes = sum(len(v) for v in dets.values()) / max(n, 1)
    print(f"{dataroot}: {n} keyframes, {boxes:.1f} detections per keyframe, recipe "
          f"{embedder.cutter.recipe.build.modalities} {embedder.cutter.recipe.build.lidar_raster}"
          f" raster, colour {embedder.cutter.recipe.build.lidar_colour}")  # fmt: skip
    reference = rows[0][1]
    for name, seconds in rows:
        print(f"{name:<42} {n / seconds:8.1f} keyframes/s   {seconds / reference:7.1f}x the time")


if __name__ == "__main__":
    main()
