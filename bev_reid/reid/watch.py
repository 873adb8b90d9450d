"""The evaluator that watches a ReID run (`bev-reid eval-reid`).

:func:`watch` follows ``reid_run.log_dir/run_id/checkpoints`` and evaluates each finished
checkpoint once, in step order (:func:`~bev_reid.reid.evaluate.evaluate_checkpoint`). What was
evaluated is kept by an :class:`EvalLog` under ``eval_reid.eval_log_dir/run_id``:

- ``metrics.jsonl``: one line per checkpoint x protocol x condition; the lines of one checkpoint
  in one write, fsynced;
- ``errors.jsonl``: checkpoints that could not be evaluated, and why;
- with ``eval_reid.floors``, the floors once (before the first checkpoint): the raw crops and the
  standardised raw crops scored by the same protocols, as ``checkpoint`` ``raw-crops`` and
  ``raw-crops-standardised`` with ``step`` null (not in tensorboard, which needs a step);
- tensorboard scalars ``<protocol>/<condition>/<metric>`` at the checkpoint's step.

Both files are the watcher's memory: a restarted watcher skips every checkpoint named in them.
Only a damaged or unfinished checkpoint is skipped (a :class:`CheckpointError`, or its files
vanishing under the watcher): anything else is a bug, stops the watcher, and is never recorded,
so the checkpoint is evaluated once the bug is fixed. The config is checked when it is loaded,
before any checkpoint is judged.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from bev_reid.config import Config
from bev_reid.engine.checkpoint import CheckpointError, list_checkpoints
from bev_reid.reid.dataset import ReIDDataset, modality_channels
from bev_reid.reid.evaluate import FLOORS, evaluate_checkpoint, raw_crop_baseline
from bev_reid.reid.evaluator import overall

METRICS_FILE = "metrics.jsonl"
ERRORS_FILE = "errors.jsonl"
# Failures that mean "this checkpoint cannot be evaluated": damaged (CheckpointError) or its
# files gone between listing and reading (FileNotFoundError).
SKIPPABLE = (CheckpointError, FileNotFoundError)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The whole lines of a JSON-lines file; a partial last line (a crash mid-write) is cut off
    the file, so later appends start on a fresh line."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
        print(f"eval-reid: cut a partial last line off {path}", file=sys.stderr)
    out = []
    for line in data[:end].decode("utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        if isinstance(rec, dict):
            out.append(rec)
        else:
            print(f"eval-reid: ignoring an unreadable line of {path}", file=sys.stderr)
    return out


def append_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Appends the records in one write, then flushes and fsyncs."""
    text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def step_of(sidecar: Path) -> int | None:
    try:
        return int(sidecar.stem.split("_", 1)[1])
    except (IndexError, ValueError):
        return None


def summary_line(records: Sequence[dict[str, Any]]) -> str:
    """One line for the console: retrieval rank-1 and mAP, the same after the gap and re-ranked
    and for tracklets (when evaluated), cmc rank-1, the neighbours' AUC (when evaluated), time."""

    def get(protocol: str, key: str) -> str:
        v = (overall(records, protocol) or {}).get(key)
        return "n/a" if v is None else f"{v:.4f}"

    r0 = records[0]
    present = {r["protocol"]: r for r in records if r["condition"] == "all"}
    more = "".join(
        f" | {name} rank1 {get(protocol, 'rank1')} mAP {get(protocol, 'mAP')}"
        for protocol, name in (
            ("retrieval_gap", f"gap {present.get('retrieval_gap', {}).get('min_gap_s')}s"),
            ("retrieval_rerank", "re-ranked"),
            ("tracklet", "tracklet"),
        )
        if protocol in present
    )
    what = "floor" if r0["step"] is None else f"step {r0['step']}"
    return (
        f"eval-reid: {what} ({r0['checkpoint']}): retrieval rank1 "
        f"{get('retrieval', 'rank1')} mAP {get('retrieval', 'mAP')}{more} | cmc rank1 "
        f"{get('cmc', 'rank1')}"
        + (f" | neighbours auc {get('neighbours', 'auc')}" if "neighbours" in present else "")
        + (f" [{r0['seconds']:.1f} s]" if "seconds" in r0 else "")
    )


class EvalLog:
    """The watcher's bookkeeping in ``folder``: what was evaluated or skipped, the JSON lines and
    the tensorboard scalars (module doc)."""

    def __init__(self, folder: Path, topk: Sequence[int]):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.metrics_path, self.errors_path = folder / METRICS_FILE, folder / ERRORS_FILE
        self.keys = [f"rank{k}" for k in topk] + ["mAP", "mINP", "auc"]
        self.done = {r.get("checkpoint") for r in self.records() + read_jsonl(self.errors_path)}
        self._writer = None

    def records(self) -> list[dict[str, Any]]:
        """Every metrics record logged so far."""
        return read_jsonl(self.metrics_path)

    def evaluated(self, records: Sequence[dict[str, Any]]) -> None:
        """Logs the records of one checkpoint."""
        append_jsonl(self.metrics_path, records)
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.folder))
        for r in records:
            if r["step"] is None:  # a floor: no step to plot it at
                continue
            for key in self.keys:
                if r.get(key) is not None:
                    self._writer.add_scalar(
                        f"{r['protocol']}/{r['condition']}/{key}", r[key], r["step"]
                    )
        self._writer.flush()
        self.done.add(records[0]["checkpoint"])

    def skipped(self, sidecar: Path, error: BaseException) -> None:
        """Logs a checkpoint that cannot be evaluated; it is never retried."""
        append_jsonl(self.errors_path, [{
            "checkpoint": sidecar.stem, "step": step_of(sidecar),
            "error": f"{type(error).__name__}: {error}", "time": time.time(),
        }])  # fmt: skip
        self.done.add(sidecar.stem)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def log_floors(log: EvalLog, dataset: ReIDDataset, cfg: Config) -> None:
    """Scores and logs the floors not logged yet (module doc), on the channels of the run's
    modalities (``reid_run.modalities``), which its checkpoints are trained on."""
    views = dataset.with_channels(
        modality_channels(dataset.meta["channels"], cfg.reid_run.modalities)
    )
    for name, standardise in FLOORS.items():
        if name not in log.done:
            records = raw_crop_baseline(views, cfg, standardise=standardise)
            log.evaluated(records)
            print(summary_line(records), flush=True)


class WatchResult(NamedTuple):
    """What one :func:`watch` call did."""

    evaluated: int  # checkpoints evaluated and logged
    skipped: int  # checkpoints that could not be evaluated (see errors.jsonl)


def watch(
    cfg: Config,
    stop: Callable[[], bool] | None = None,
    max_checkpoints: int | None = None,
    timeout_s: float | None = None,
) -> WatchResult:
    """Evaluates each finished checkpoint of the run once, in step order, and logs the results.

    Blocks and polls every ``eval_reid.poll_s`` seconds, unless ``eval_reid.once`` is set (then it
    evaluates what is there and returns). A checkpoint whose sidecar is not written yet is not
    listed, so it is picked up once finished.

    Args:
        cfg: ``reid_run`` (where the run and the dataset are) and ``eval_reid``.
        stop: polled between checkpoints and while waiting; True ends the watch.
        max_checkpoints: return after evaluating this many checkpoints.
        timeout_s: return after this many seconds (checked between checkpoints).

    Returns:
        how many checkpoints this call evaluated and how many it skipped.

    Raises:
        FileNotFoundError: with ``eval_reid.once``, the run has no checkpoints folder (a watcher
            that blocks waits for it instead), or the dataset folder is not a finished dataset.
    """
    ec = cfg.eval_reid
    ckpt_dir = Path(cfg.reid_run.log_dir) / cfg.reid_run.run_id / "checkpoints"
    if ec.once and not ckpt_dir.is_dir():
        raise FileNotFoundError(
            f"no checkpoints folder {ckpt_dir}: check reid_run.log_dir (--log-dir) and "
            "reid_run.run_id (--run-id)"
        )
    log = EvalLog(Path(ec.eval_log_dir) / cfg.reid_run.run_id, ec.topk)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    dataset: ReIDDataset | None = None
    evaluated = skipped = 0

    def finished() -> bool:
        return (
            (stop is not None and stop())
            or (max_checkpoints is not None and evaluated >= max_checkpoints)
            or (deadline is not None and time.monotonic() >= deadline)
        )

    try:
        while True:
            for sidecar in list_checkpoints(ckpt_dir):
                if sidecar.stem in log.done:
                    continue
                if finished():
                    return WatchResult(evaluated, skipped)
                if dataset is None:  # opened once a checkpoint needs it
                    dataset = ReIDDataset(cfg.reid_run.dataset_dir, ec.split)
                    if ec.floors:
                        log_floors(log, dataset, cfg)
                try:
                    records = evaluate_checkpoint(sidecar, dataset, cfg)
                except SKIPPABLE as e:
                    print(f"eval-reid: skipping checkpoint {sidecar}: {e}", file=sys.stderr)
                    log.skipped(sidecar, e)
                    skipped += 1
                    continue
                log.evaluated(records)
                print(summary_line(records), flush=True)
                evaluated += 1
            if ec.once or finished():
                return WatchResult(evaluated, skipped)
            wake = time.monotonic() + ec.poll_s
            while time.monotonic() < wake and not finished():
                time.sleep(max(0.0, min(0.1, wake - time.monotonic())))
    finally:
        log.close()
