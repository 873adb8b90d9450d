"""`bev-reid show-tracks`: a BEV picture of a scene's tracks, coloured by identity, with the
identity switches marked.

Switches are found by py-motmetrics' CLEAR-MOT accumulator (the library the devkit's evaluation
is built on), per scene and class, matching ground-truth centres to tracked ones within the
devkit's 2 m, at every score (the devkit's IDS is counted at the score threshold of best MOTA,
over interpolated tracks, so its number can differ). A switch is marked where the ground-truth
object stood when it took another track id.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from bev_reid.config import Config
from bev_reid.data.nuscenes import NuScenesDB, resolve_scenes
from bev_reid.engine.io import save_figure

MATCH_DISTANCE_M = 2.0  # the devkit's dist_th_tp
MAX_PANELS = 4


def scene_switches(
    db: NuScenesDB, scene: str, results: dict[str, list[dict]], classes: tuple[str, ...]
) -> tuple[dict[str, list[np.ndarray]], list[np.ndarray]]:
    """Ground-truth trajectories and identity switches of one scene.

    Returns:
        gt: instance token -> its global centres [2] in keyframe order; switches: the global
        centres [2] of the ground-truth objects at each switch.
    """
    import motmetrics
    from nuscenes.eval.tracking.utils import category_to_tracking_name

    gt: dict[str, list[np.ndarray]] = defaultdict(list)
    accs = {c: motmetrics.MOTAccumulator() for c in classes}
    where: dict[tuple[int, int], np.ndarray] = {}  # (object number, frame) -> centre
    numbers: dict[tuple[str, str], int] = {}
    for frame, token in enumerate(db.keyframes(scene)):
        objs: dict[str, list[tuple[str, np.ndarray]]] = defaultdict(list)
        for ann_token in db.sample(token)["anns"]:
            ann = db.get("sample_annotation", ann_token)
            name = category_to_tracking_name(ann["category_name"])
            if name in classes and ann["num_lidar_pts"] + ann["num_radar_pts"] > 0:
                xy = np.asarray(ann["translation"][:2], dtype=np.float64)
                objs[name].append((ann["instance_token"], xy))
                gt[ann["instance_token"]].append(xy)
                where[(numbers.setdefault(("gt", ann["instance_token"]), len(numbers)), frame)] = xy
        hyps: dict[str, list[tuple[str, np.ndarray]]] = defaultdict(list)
        for r in results.get(token, []):
            hyps[r["tracking_name"]].append((r["tracking_id"], np.asarray(r["translation"][:2])))
        for cls, acc in accs.items():
            o, h = objs.get(cls, []), hyps.get(cls, [])
            d2 = motmetrics.distances.norm2squared_matrix(
                np.array([x for _, x in o]).reshape(-1, 2),
                np.array([x for _, x in h]).reshape(-1, 2),
                max_d2=MATCH_DISTANCE_M**2,
            )
            # motmetrics 1.4 stores ids as floats: number them.
            oids = [numbers.setdefault(("gt", i), len(numbers)) for i, _ in o]
            hids = [numbers.setdefault(("track", i), len(numbers)) for i, _ in h]
            acc.update(oids, hids, d2, frameid=frame)
    switches = []
    for acc in accs.values():
        events = acc.mot_events
        for (frame, _), row in events[events["Type"] == "SWITCH"].iterrows():
            switches.append(where[(int(row["OId"]), int(frame))])
    return gt, switches


def draw_tracks(cfg: Config) -> tuple[Path, int]:
    """Draws ``track.out`` for the scenes of ``cfg.data`` (the first MAX_PANELS) into
    ``track.picture``; returns its path and the number of switches marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(cfg.track.out)
    if not path.is_file():
        raise FileNotFoundError(f"tracking results {str(path)!r} do not exist (run bev-reid track)")
    results = json.loads(path.read_text(encoding="utf-8"))["results"]
    db = NuScenesDB(cfg.data.dataroot, cfg.data.version)
    scenes = resolve_scenes(db, None, cfg.data.scenes)[:MAX_PANELS]
    fig, axes = plt.subplots(1, len(scenes), figsize=(7 * len(scenes), 7), squeeze=False)
    cmap = plt.get_cmap("tab20")
    total = 0
    for ax, scene in zip(axes[0], scenes, strict=True):
        tokens = db.keyframes(scene)
        origin = db.ego_pose(tokens[0])[1][:2]
        gt, switches = scene_switches(db, scene, results, cfg.track.classes)
        for xy in gt.values():
            xy = np.stack(xy) - origin
            ax.plot(xy[:, 0], xy[:, 1], color="0.8", lw=4, zorder=1, solid_capstyle="round")
        tracks: dict[str, list[np.ndarray]] = defaultdict(list)
        for token in tokens:
            for r in results.get(token, []):
                tracks[r["tracking_id"]].append(np.asarray(r["translation"][:2]) - origin)
        for k, (_, xy) in enumerate(sorted(tracks.items(), key=lambda kv: _id_key(kv[0]))):
            xy = np.stack(xy)
            ax.plot(xy[:, 0], xy[:, 1], "-o", ms=2.5, lw=1.2, color=cmap(k % 20), zorder=2)
        ego = np.stack([db.ego_pose(t)[1][:2] for t in tokens]) - origin
        ax.plot(ego[:, 0], ego[:, 1], "k--", lw=1, zorder=3, label="ego")
        if switches:
            s = np.stack(switches) - origin
            ax.scatter(s[:, 0], s[:, 1], marker="x", s=90, c="red", lw=2.5, zorder=4,
                       label="identity switch")  # fmt: skip
        total += len(switches)
        plural = "" if len(switches) == 1 else "es"
        ax.set_title(f"{scene}: {len(tracks)} tracks, {len(switches)} identity switch{plural}")
        ax.set_xlabel("x (m, from the first ego pose)")
        ax.set_ylabel("y (m)")
        ax.set_aspect("equal")
        ax.legend(loc="upper right")
    fig.suptitle(f"{path.name}: tracks by identity (grey: ground truth)")
    fig.tight_layout()
    out = save_figure(fig, cfg.track.picture, dpi=110)
    plt.close(fig)
    return out, total


def _id_key(tracking_id: str) -> tuple[int, str]:
    return (int(tracking_id), "") if tracking_id.isdigit() else (0, tracking_id)
