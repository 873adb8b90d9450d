"""`bev-reid eval-track`: the nuScenes devkit's own tracking evaluation on the scenes tracked.

Nothing is re-implemented: :class:`nuscenes.eval.tracking.evaluate.TrackingEval` runs with the
devkit's ``tracking_nips_2019`` configuration (all seven tracking classes, 2 m centre distance,
AMOTA over 40 recall thresholds). The devkit evaluates a split by name; to evaluate exactly the
scenes named (or all scenes of the version, e.g. a synthetic world that no official split
holds), it reads the tables through a temporary folder of links to them, beside which a
``splits.json`` (the devkit's custom splits) names those scenes. The dataroot is never written.

The devkit's ``metrics_summary.json`` and ``metrics_details.json`` are copied into the output
folder as the devkit writes them (keys ``amota``, ``amotp``, ``mota``, ``ids``, ``frag``, ...).

One known fault of the devkit can be set right (``track.eval_interpolation: fixed``; default
``devkit``, the official figures). Before matching, the devkit fills every hole inside a track,
predicted and ground truth (a vehicle with no LiDAR or radar point in the middle of its track is
dropped from the ground truth, then filled back), by linear interpolation between the boxes
either side; but its weights run backwards in time (nuscenes-devkit issue #1141, PR #1192, open
in 1.2.0): the box ``s`` seconds after a hole opens is put where the track is ``s`` seconds
before it closes. A moving vehicle's filled boxes then miss it by metres; the longer the hole,
the more, so a tracker that bridges long gaps (re-identification) is charged most. ``fixed``
runs the devkit with :func:`forward_interpolation` in place of its ``interpolate_tracks`` for
that evaluation (everything else is the devkit's) and adds ``"interpolation": "fixed"`` to the
summary it writes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bev_reid.config import Config
from bev_reid.data.nuscenes import TABLES, NuScenesDB, resolve_scenes
from bev_reid.engine.io import atomic_write_text
from bev_reid.track.gaps import holes

SPLIT_NAME = "bev_reid_eval"
CONFIG_NAME = "tracking_nips_2019"
TABLE_COLUMNS = ("amota", "amotp", "mota", "recall", "ids", "frag", "fp", "fn")


class TrackingEvalError(ValueError):
    """Results the devkit cannot evaluate; the message says why."""


def forward_interpolation(tracks_by_timestamp: dict) -> dict:
    """The devkit's ``interpolate_tracks`` with its weights forwards in time:
    ``tracks_by_timestamp`` ({timestamp: [TrackingBox]}) gains, for every tracking id and every
    timestamp strictly between two of its boxes at which it has none, the devkit's own
    ``interpolate_tracking_boxes`` of those two boxes, weighted (t - t0) / (t1 - t0) towards the
    later one. Returns the same dict."""
    from nuscenes.eval.tracking.loaders import interpolate_tracking_boxes

    stamps = sorted(tracks_by_timestamp)
    tracks: dict[str, list] = {}  # tracking id -> [(index into stamps, box)] in time order
    for k, timestamp in enumerate(stamps):
        for box in tracks_by_timestamp[timestamp]:
            tracks.setdefault(box.tracking_id, []).append((k, box))
    for track in tracks.values():
        for left, right, k, ratio in holes(track, stamps):
            tracks_by_timestamp[stamps[k]].append(interpolate_tracking_boxes(left, right, ratio))
    return tracks_by_timestamp


@contextlib.contextmanager
def interpolation(mode: str):
    """Within it, the devkit's tracking evaluation fills holes in tracks its own way
    (``devkit``) or with :func:`forward_interpolation` (``fixed``)."""
    from nuscenes.eval.tracking import loaders

    if mode == "devkit":
        yield
        return
    own = loaders.interpolate_tracks
    loaders.interpolate_tracks = forward_interpolation  # create_tracks looks it up per call
    try:
        yield
    finally:
        loaders.interpolate_tracks = own


def check_results(path: Path, db: NuScenesDB, scenes: list[str]) -> None:
    """Every keyframe of ``scenes`` must be listed in the results (the devkit demands it)."""
    if not path.is_file():
        raise FileNotFoundError(f"tracking results {str(path)!r} do not exist (run bev-reid track)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))["results"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise TrackingEvalError(f"{path}: not nuScenes tracking-results JSON ({e!r})") from e
    for scene in scenes:
        missing = [t for t in db.keyframes(scene) if t not in results]
        if missing:
            raise TrackingEvalError(
                f"{path} lacks {len(missing)} keyframe(s) of scene {scene} (e.g. {missing[0]}): "
                "evaluate the scenes that were tracked (--scenes)"
            )


@contextlib.contextmanager
def scene_split_view(dataroot: Path, version: str, scenes: list[str]):
    """A temporary dataroot whose version folder links to the real tables and adds a
    ``splits.json`` holding the split ``SPLIT_NAME`` = ``scenes``; yields its path."""
    with tempfile.TemporaryDirectory(prefix="bev-reid-eval-") as tmp:
        view = Path(tmp) / version
        view.mkdir()
        for name in TABLES:
            os.symlink((dataroot / version / f"{name}.json").resolve(), view / f"{name}.json")
        (view / "splits.json").write_text(json.dumps({SPLIT_NAME: scenes}))
        yield Path(tmp)


def evaluate_tracking(cfg: Config, verbose: bool = False) -> dict[str, Any]:
    """Runs the devkit on ``track.out`` for the scenes of ``cfg.data``; writes its metrics into
    ``track.eval_out`` and returns the summary (the devkit's ``metrics_summary.json``)."""
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.tracking.evaluate import TrackingEval

    dataroot, version = Path(cfg.data.dataroot), cfg.data.version
    db = NuScenesDB(dataroot, version)
    scenes = resolve_scenes(db, None, cfg.data.scenes)
    results = Path(cfg.track.out)
    check_results(results, db, scenes)
    out = Path(cfg.track.eval_out)
    with scene_split_view(dataroot, version, scenes) as view, tempfile.TemporaryDirectory() as tmp:
        quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
        try:
            with quiet, interpolation(cfg.track.eval_interpolation):
                evaluation = TrackingEval(
                    config=config_factory(CONFIG_NAME),
                    result_path=str(results),
                    eval_set=SPLIT_NAME,
                    output_dir=tmp,
                    nusc_version=version,
                    nusc_dataroot=str(view),
                    verbose=verbose,
                )
                summary = evaluation.main(render_curves=False)
        except AssertionError as e:  # the devkit checks its input with asserts
            raise TrackingEvalError(f"the nuScenes devkit rejected {results}: {e}") from e
        if cfg.track.eval_interpolation != "devkit":
            summary["interpolation"] = cfg.track.eval_interpolation
            (Path(tmp) / "metrics_summary.json").write_text(json.dumps(summary, indent=2))
        for name in ("metrics_summary.json", "metrics_details.json"):
            atomic_write_text(out / name, (Path(tmp) / name).read_text(encoding="utf-8"))
    return summary


def summary_table(summary: dict[str, Any]) -> str:
    """A short text table: the overall metrics, then each class with ground truth."""

    def fmt(key: str, value: Any) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return "-"
        return f"{value:.3f}" if key in ("amota", "amotp", "mota", "recall") else f"{value:.0f}"

    head = f"{'class':<12}" + "".join(f"{c:>8}" for c in TABLE_COLUMNS)
    lines = [head, f"{'all':<12}" + "".join(f"{fmt(c, summary.get(c)):>8}" for c in TABLE_COLUMNS)]
    labels = summary.get("label_metrics", {})
    for cls in sorted(labels.get("amota", {})):
        gt = labels.get("gt", {}).get(cls)
        if gt is None or gt != gt or gt == 0:
            continue
        row = "".join(f"{fmt(c, labels.get(c, {}).get(cls)):>8}" for c in TABLE_COLUMNS)
        lines.append(f"{cls:<12}{row}")
    if summary.get("interpolation", "devkit") != "devkit":
        lines.append(
            f"holes in tracks filled {summary['interpolation']} (track.eval_interpolation): "
            "not the official figures"
        )
    return "\n".join(lines)
