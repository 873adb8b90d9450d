"""The demo's tracking stage: motion alone against motion + ReID, on a world nobody trained on.

A second synthetic world (seed ``synth.seed + 1``, ``TRACK_SCENES`` scenes: identities neither
the LSS nor the embedding saw) gets detections from ``make-detections`` (the ``track`` section's
degradation: occlusion gaps of 1..``track.det_max_gap`` keyframes, noise, false positives); the
same tracker then runs on motion alone and with the embedding of one demo ReID run (``both`` when
there is one); the nuScenes devkit scores both (``eval-track``); ``show-tracks`` draws the run
with the embedding into ``OUT/report/tracks.png``. The rest lives under ``OUT/track``; each
step whose output exists is reused, so an interrupted stage resumes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from bev_reid.config import Config
from bev_reid.engine.io import atomic_write_text

TRACK_SCENES = 2
MODES = ("motion", "reid")  # --reid-checkpoint none, then the demo run's checkpoint
PREFERRED_RUNS = ("both", "camera", "lidar")


def tracking_run_name(runs: dict[str, Config]) -> str:
    """The ReID run whose embedding the demo tracks with."""
    return next(name for name in PREFERRED_RUNS if name in runs)


def tracking_config(cfg: Config, runs: dict[str, Config], out: Path, mode: str) -> Config:
    """The config of one tracking mode: its world, files and checkpoints under ``out``."""
    run = runs[tracking_run_name(runs)]
    reid = Path(run.reid_run.log_dir) / run.reid_run.run_id / "checkpoints"
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, dataroot=str(out / "world"), scenes=()),
        track=dataclasses.replace(
            cfg.track,
            detections=str(out / "detections.json"),
            out=str(out / f"tracks_{mode}.json"),
            eval_out=str(out / f"eval_{mode}"),
            picture=str(out.parent / "report" / "tracks.png"),
            reid_checkpoint="none" if mode == "motion" else str(reid),
            lss_checkpoint=str(Path(cfg.train_lss.logdir) / "checkpoints"),
        ),
    )


def summary_path(out: Path) -> Path:
    return out / "summary.json"


def run_tracking_stage(cfg: Config, runs: dict[str, Config], out: Path) -> dict[str, Any]:
    """Makes the world and detections, tracks both ways, scores them; writes and returns the
    stage summary (``out/summary.json``)."""
    from bev_reid.synth.generate import generate_world
    from bev_reid.track.degrade import make_detections
    from bev_reid.track.evaluate import evaluate_tracking
    from bev_reid.track.run import run_tracking
    from bev_reid.track.visualize import draw_tracks

    world = dataclasses.replace(
        cfg.synth, out=str(out / "world"), seed=cfg.synth.seed + 1, scenes=TRACK_SCENES
    )
    if not (out / "world" / world.version / "scene.json").exists():
        generate_world(world, progress=True)
    configs = {mode: tracking_config(cfg, runs, out, mode) for mode in MODES}
    if not Path(configs["motion"].track.detections).exists():
        make_detections(configs["motion"])
    results: dict[str, Any] = {}
    for mode, mode_cfg in configs.items():
        seconds_file = Path(mode_cfg.track.out).with_suffix(".seconds.json")
        if not seconds_file.exists():  # written after the tracks: both there = finished
            run = run_tracking(mode_cfg)
            timing = {"keyframes": run.keyframes, "seconds": run.seconds,
                      "embed_seconds": run.embed_seconds}  # fmt: skip
            atomic_write_text(seconds_file, json.dumps(timing))
        timing = json.loads(seconds_file.read_text(encoding="utf-8"))
        metrics = Path(mode_cfg.track.eval_out) / "metrics_summary.json"
        summary = (
            json.loads(metrics.read_text(encoding="utf-8"))
            if metrics.exists()
            else evaluate_tracking(mode_cfg)
        )
        labels = summary.get("label_metrics", {})
        results[mode] = {
            **{k: summary.get(k) for k in ("amota", "amotp", "mota", "recall", "ids", "frag")},
            "car": {k: labels.get(k, {}).get("car") for k in ("amota", "ids", "frag")},
            "keyframes_per_s": timing["keyframes"] / max(timing["seconds"], 1e-9),
        }
    drawn = draw_tracks(configs["reid"])
    stage = {
        "world_seed": world.seed,
        "scenes": TRACK_SCENES,
        "reid_run": tracking_run_name(runs),
        "max_gap": cfg.track.det_max_gap,
        "miss_rate": cfg.track.det_miss_rate,
        "results": results,
        "picture": drawn.picture.name,
        "switches_drawn": drawn.drawn,
        "switch_list": drawn.switch_list.name,
    }
    atomic_write_text(summary_path(out), json.dumps(stage, indent=1))
    return stage


def tracking_table(stage: dict[str, Any]) -> list[str]:
    """The report's lines for the tracking stage."""

    def f(v, digits=3):
        if v is None or v != v:
            return "-"
        return f"{v:.{digits}f}"

    lines = [
        f"  tracking: unseen world seed {stage['world_seed']} ({stage['scenes']} scenes), "
        f"detections with gaps of 1..{stage['max_gap']} keyframes for "
        f"{stage['miss_rate']:.0%} of objects (nuScenes devkit)",
        f"  {'tracker':40s} {'AMOTA':>7s} {'IDS':>7s} {'FRAG':>7s} {'car IDS':>8s} {'kf/s':>7s}",
    ]
    names = {"motion": "motion alone", "reid": f"motion + ReID ({stage['reid_run']})"}
    for mode, r in stage["results"].items():
        lines.append(
            f"  {names[mode]:40s} {f(r['amota']):>7s} {f(r['ids'], 0):>7s} "
            f"{f(r['frag'], 0):>7s} {f(r['car']['ids'], 0):>8s} {f(r['keyframes_per_s'], 1):>7s}"
        )
    return lines
