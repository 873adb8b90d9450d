"""`bev-reid show-tracks`: a BEV picture of a scene's tracks, coloured by identity, with the
identity switches marked, and a CSV list of the switches (where, which object, which tracks,
whether it came back on a new track or a track took it, how visible it was).

Switches are found by py-motmetrics' CLEAR-MOT accumulator (the library the devkit's evaluation
is built on), per scene and class, matching ground-truth centres to tracked ones within the
devkit's 2 m, at every score (the devkit's IDS is counted at the score threshold of best MOTA,
over interpolated tracks, so its number can differ). A switch is marked where the ground-truth
object stood when it took another track id.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from bev_reid.config import Config
from bev_reid.data.nuscenes import NuScenesDB, resolve_scenes
from bev_reid.engine.io import atomic_write_text, save_figure

MATCH_DISTANCE_M = 2.0  # the devkit's dist_th_tp
MAX_PANELS = 4


@dataclass(frozen=True)
class Switch:
    """One identity switch: a ground-truth object that takes another track id than at its last
    match.

    Attributes:
        scene, keyframe, sample_token: where (``keyframe``: its index in the scene, from 0).
        tracking_name: the devkit's class.
        instance_token: the object.
        from_id, to_id: the track it had at its last match and the one it has now.
        gap: keyframes since that last match (1: the keyframe before).
        kind: ``new`` when ``to_id`` started after that last match (the object came back on a
            new track: nothing re-identified it), ``taken`` when ``to_id`` already followed
            something else (a track took this object).
        from_alive: whether ``from_id`` is reported at this keyframe too (it goes on with
            another object or a false positive: a swap) or not.
        visibility: the annotation's visibility bin (1: 0-40 %, 2: 40-60 %, 3: 60-80 %,
            4: 80-100 %; 0 when absent).
        lidar_pts: LiDAR points in the annotated box.
        xy: the object's global centre [2].
    """

    scene: str
    keyframe: int
    sample_token: str
    tracking_name: str
    instance_token: str
    from_id: str
    to_id: str
    gap: int
    kind: str
    from_alive: bool
    visibility: int
    lidar_pts: int
    xy: np.ndarray


SWITCH_COLUMNS = tuple(f.name for f in fields(Switch) if f.name != "xy") + ("x", "y")


def scene_switches(
    db: NuScenesDB, scene: str, results: dict[str, list[dict]], classes: tuple[str, ...]
) -> tuple[dict[str, list[np.ndarray]], list[Switch]]:
    """Ground-truth trajectories and identity switches of one scene.

    Returns:
        gt: instance token -> its global centres [2] in keyframe order; the switches, in
        keyframe order.
    """
    import motmetrics
    from nuscenes.eval.tracking.utils import category_to_tracking_name

    gt: dict[str, list[np.ndarray]] = defaultdict(list)
    accs = {c: motmetrics.MOTAccumulator() for c in classes}
    anns: dict[tuple[int, int], dict] = {}  # (object number, frame) -> its annotation
    numbers: dict[tuple[str, str], int] = {}
    tokens = db.keyframes(scene)
    first_seen: dict[str, int] = {}  # track id -> the first keyframe it is reported at
    reported: list[set[str]] = []  # per keyframe, the track ids reported
    for frame, token in enumerate(tokens):
        objs: dict[str, list[tuple[str, np.ndarray]]] = defaultdict(list)
        for ann_token in db.sample(token)["anns"]:
            ann = db.get("sample_annotation", ann_token)
            name = category_to_tracking_name(ann["category_name"])
            if name in classes and ann["num_lidar_pts"] + ann["num_radar_pts"] > 0:
                xy = np.asarray(ann["translation"][:2], dtype=np.float64)
                objs[name].append((ann["instance_token"], xy))
                gt[ann["instance_token"]].append(xy)
                anns[(numbers.setdefault(("gt", ann["instance_token"]), len(numbers)), frame)] = ann
        hyps: dict[str, list[tuple[str, np.ndarray]]] = defaultdict(list)
        for r in results.get(token, []):
            hyps[r["tracking_name"]].append((r["tracking_id"], np.asarray(r["translation"][:2])))
            first_seen.setdefault(r["tracking_id"], frame)
        reported.append({r["tracking_id"] for r in results.get(token, [])})
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
    name_of = {n: key for key, n in numbers.items()}
    switches = []
    for cls, acc in accs.items():
        last: dict[int, tuple[str, int]] = {}  # object number -> (track id, keyframe), last match
        events = acc.mot_events
        for (frame, _), row in events[events["Type"].isin(["MATCH", "SWITCH"])].iterrows():
            oid, frame = int(row["OId"]), int(frame)
            track = name_of[int(row["HId"])][1]
            if row["Type"] == "SWITCH":
                before, then = last[oid]
                ann = anns[(oid, frame)]
                switches.append(Switch(
                    scene, frame, tokens[frame], cls, ann["instance_token"], before, track,
                    frame - then, "new" if first_seen[track] > then else "taken",
                    before in reported[frame],
                    int(ann["visibility_token"]) if ann.get("visibility_token") else 0,
                    int(ann["num_lidar_pts"]), np.asarray(ann["translation"][:2], dtype=np.float64),
                ))  # fmt: skip
            last[oid] = (track, frame)
    switches.sort(key=lambda s: (s.keyframe, s.tracking_name, s.instance_token))
    return gt, switches


def write_switches(path: str | os.PathLike, switches: list[Switch]) -> Path:
    """The switches as CSV, one row each (columns: SWITCH_COLUMNS), written atomically."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SWITCH_COLUMNS)
    for s in switches:
        values = [getattr(s, f) for f in SWITCH_COLUMNS[:-2]]
        writer.writerow([*values, f"{s.xy[0]:.2f}", f"{s.xy[1]:.2f}"])
    return atomic_write_text(path, out.getvalue())


def switches_path(cfg: Config) -> Path:
    """``track.switches``, or beside ``track.picture`` when it is empty."""
    if cfg.track.switches:
        return Path(cfg.track.switches)
    picture = Path(cfg.track.picture)
    return picture.with_name(picture.stem + "-switches.csv")


@dataclass
class TrackPicture:
    """What :func:`draw_tracks` wrote: the picture, the switch list, and the switches found in
    all the scenes (the picture shows those of its first MAX_PANELS scenes)."""

    picture: Path
    switch_list: Path
    switches: list[Switch]
    drawn: int  # switches marked in the picture


def draw_tracks(cfg: Config) -> TrackPicture:
    """Draws ``track.out`` for the scenes of ``cfg.data`` (the first MAX_PANELS) into
    ``track.picture`` and lists the identity switches of every scene in a CSV file
    (:func:`switches_path`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(cfg.track.out)
    if not path.is_file():
        raise FileNotFoundError(f"tracking results {str(path)!r} do not exist (run bev-reid track)")
    results = json.loads(path.read_text(encoding="utf-8"))["results"]
    db = NuScenesDB(cfg.data.dataroot, cfg.data.version)
    scenes = resolve_scenes(db, None, cfg.data.scenes)
    found = {scene: scene_switches(db, scene, results, cfg.track.classes) for scene in scenes}
    drawn = scenes[:MAX_PANELS]
    fig, axes = plt.subplots(1, len(drawn), figsize=(7 * len(drawn), 7), squeeze=False)
    cmap = plt.get_cmap("tab20")
    total = 0
    for ax, scene in zip(axes[0], drawn, strict=True):
        tokens = db.keyframes(scene)
        origin = db.ego_pose(tokens[0])[1][:2]
        gt, switches = found[scene]
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
            s = np.stack([w.xy for w in switches]) - origin
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
    every = [w for scene in scenes for w in found[scene][1]]
    listed = write_switches(switches_path(cfg), every)
    return TrackPicture(out, listed, every, total)


def _id_key(tracking_id: str) -> tuple[int, str]:
    return (int(tracking_id), "") if tracking_id.isdigit() else (0, tracking_id)
