"""Commands of the tracking stage: ``make-detections``, ``track``, ``eval-track``,
``show-tracks``."""

from __future__ import annotations

import argparse
from collections import Counter

from bev_reid.commands import config_option, data_args, register_command
from bev_reid.config import Config


def _make_detections_args(p: argparse.ArgumentParser) -> None:
    data_args(p)
    config_option(p, "--out", "track.detections", "detection-results JSON to write")
    config_option(p, "--seed", "track.det_seed", "seed of the degradation (same seed, same bytes)")
    config_option(p, "--miss-rate", "track.det_miss_rate", "share of objects with occlusion gaps")
    config_option(p, "--max-gap", "track.det_max_gap", "longest occlusion gap, keyframes")
    config_option(p, "--noise-m", "track.det_noise_m", "std of the centre noise, metres")
    config_option(p, "--fp-rate", "track.det_fp_rate", "false positives per true box and keyframe")
    config_option(
        p, "--velocity", "track.det_velocity",
        "velocities written: noisy, zero ([0, 0]) or none (null), as detectors without them write",
    )  # fmt: skip
    config_option(
        p, "--hidden-miss", "track.det_hidden_miss",
        "chance of missing an object while it is 0-40%% visible (0: gaps only)",
    )  # fmt: skip


@register_command(
    "make-detections",
    "detections from the ground truth, degraded by a seeded model (gaps, noise, false positives)",
    _make_detections_args,
)
def make_detections(args: argparse.Namespace, cfg: Config) -> int:
    from bev_reid.track.degrade import make_detections as make

    print(f"wrote {make(cfg)}")
    return 0


def _track_args(p: argparse.ArgumentParser) -> None:
    data_args(p)
    config_option(p, "--detections", "track.detections", "detection-results JSON to track")
    config_option(
        p,
        "--reid-checkpoint",
        "track.reid_checkpoint",
        "ReID checkpoint, none: motion alone, or oracle: the annotated identities (an upper bound)",
    )
    config_option(
        p, "--lss-checkpoint", "track.lss_checkpoint", "LSS checkpoint (crops with camera channels)"
    )
    config_option(p, "--out", "track.out", "tracking-results JSON to write")


@register_command(
    "track", "track detections with motion and the ReID embedding (nuScenes JSON)", _track_args
)
def track(args: argparse.Namespace, cfg: Config) -> int:
    from bev_reid.track.run import run_tracking

    run = run_tracking(cfg)
    mode = (
        f"motion + ReID, {run.stitched} joined to an earlier track"
        if run.appearance
        else "motion alone"
    )
    if not run.velocities:
        why = (
            "ignored (track.detection_velocity: ignore)"
            if cfg.track.detection_velocity == "ignore"
            else "none in the file (all null, NaN or [0, 0])"
        )
        print(f"detector velocities: {why}; the tracker estimated them from the motion")
    rate = run.keyframes / max(run.seconds, 1e-9)
    filled = (
        f", {run.merged} joined to one they took turns with or lay in a hole of"
        if run.merged
        else ""
    )
    filled += f", {run.filled} boxes filled in gaps" if run.filled else ""
    if run.hidden:
        filled += f" ({run.hidden} hidden, no LiDAR point: left to the devkit)"
    print(
        f"wrote {run.path}: {run.keyframes} keyframes, {run.tracks} tracks ({mode}){filled}, "
        f"{rate:.1f} keyframes/s"
    )
    return 0


def _eval_track_args(p: argparse.ArgumentParser) -> None:
    data_args(p)
    config_option(p, "--results", "track.out", "tracking-results JSON to evaluate")
    config_option(p, "--out", "track.eval_out", "folder for the devkit's metrics_summary.json")
    config_option(
        p,
        "--interpolation",
        "track.eval_interpolation",
        "devkit (official) or fixed: the devkit's filling of holes in tracks forwards in time",
    )


@register_command(
    "eval-track",
    "score tracking results with the nuScenes devkit (AMOTA, IDS, FRAG, ...)",
    _eval_track_args,
)
def eval_track(args: argparse.Namespace, cfg: Config) -> int:
    from bev_reid.track.evaluate import evaluate_tracking, summary_table

    summary = evaluate_tracking(cfg)
    print(summary_table(summary))
    print(f"wrote {cfg.track.eval_out}/metrics_summary.json")
    return 0


def _show_tracks_args(p: argparse.ArgumentParser) -> None:
    data_args(p)
    config_option(p, "--results", "track.out", "tracking-results JSON to draw")
    config_option(p, "--out", "track.picture", "picture to write (.png, .pdf, .svg, .jpg)")
    config_option(
        p,
        "--switches",
        "track.switches",
        "CSV list of the identity switches (empty: beside the picture, NAME-switches.csv)",
    )


@register_command(
    "show-tracks",
    "draw tracks in BEV, coloured by identity, identity switches marked",
    _show_tracks_args,
)
def show_tracks(args: argparse.Namespace, cfg: Config) -> int:
    from bev_reid.track.visualize import draw_tracks

    drawn = draw_tracks(cfg)
    kinds = Counter(s.kind for s in drawn.switches)
    print(
        f"wrote {drawn.picture} ({drawn.drawn} identity switches marked) and {drawn.switch_list} "
        f"({len(drawn.switches)} switches: {kinds['new']} came back on a new track, "
        f"{kinds['taken']} taken by another track)"
    )
    return 0
