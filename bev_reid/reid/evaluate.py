"""Evaluation of ReID checkpoints, and the evaluator that watches a run (`bev-reid eval-reid`).

Two protocols, each for all views (condition ``all``) and per condition (day / night / rain):

- ``cmc``: the original method's single-shot CMC (:func:`~bev_reid.reid.metrics.cmc_single_shot`):
  ``eval_reid.trials`` random galleries of one view per identity, seeded, so every checkpoint is
  ranked on the same galleries. Per condition, only the views of that condition take part. It
  has no mAP / mINP: those keys hold None (JSON null; NaN is kept out of the JSON).
- ``retrieval``: every view is a query against all views of the other keyframes (the group of a
  view is its sample token, so the query itself and its own keyframe are excluded): CMC rank-k,
  mAP and mINP. Per condition, the queries of that condition against the whole gallery.

Records are flat dicts: ``checkpoint`` (sidecar name without suffix), ``step``, ``protocol``,
``condition``, ``rank1`` ... ``rank20`` (the k of ``eval_reid.topk``), ``mAP``, ``mINP``,
``num_queries``, ``num_valid``, ``num_gallery``, ``split``, and ``trials`` for cmc. Metrics over no
valid query are None.

:func:`watch` follows ``reid_run.log_dir/run_id/checkpoints``; it writes under
``eval_reid.eval_log_dir/run_id``: ``metrics.jsonl`` (one line per checkpoint x protocol x
condition; the lines of one checkpoint in one write, fsynced), ``errors.jsonl`` (checkpoints that
could not be evaluated) and tensorboard scalars ``<protocol>/<condition>/<metric>`` at the
checkpoint's step. Both files are its memory: a restarted watcher skips every checkpoint named in
them.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from bev_reid.config import Config
from bev_reid.engine.checkpoint import CheckpointError, list_checkpoints, resolve_checkpoint
from bev_reid.engine.distributed import pick_device
from bev_reid.models.reid import BEVReIDModel
from bev_reid.reid.dataset import ReIDDataset
from bev_reid.reid.metrics import cmc_single_shot, query_results, summarize
from bev_reid.reid.train import collate_views, crop_statistics

PROTOCOLS = ("cmc", "retrieval")
METRICS_FILE = "metrics.jsonl"
ERRORS_FILE = "errors.jsonl"
# Failures that mean "this checkpoint cannot be evaluated" (damaged, vanished, not a ReID model,
# NaN weights); the watcher logs and skips them. Anything else is a bug and stops it.
SKIPPABLE = (CheckpointError, OSError, KeyError, ValueError)


@torch.no_grad()
def embed_dataset(
    model: torch.nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]:
    """Embeds every view of ``dataset`` in order with ``model.embed``.

    Args:
        model: anything with ``embed(crops [B, C, S, S]) -> [B, D]`` (e.g. BEVReIDModel); moved
            to ``device``.
        dataset: items ``(crop [C, S, S], id, view dict)`` (a ReIDDataset).

    Returns:
        embeddings [N, D] float32 on CPU, ids [N] int64, and the N view records.
    """
    device = torch.device(device)
    model = model.to(device)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_views,
        num_workers=num_workers,
    )  # fmt: skip
    embs, ids, views = [], [], []
    for crops, batch_ids, batch_views in loader:
        embs.append(model.embed(crops.to(device)).float().cpu())  # B x D
        ids.append(batch_ids)
        views.extend(batch_views)
    if not embs:
        return torch.zeros(0, 1), torch.zeros(0, dtype=torch.int64), []
    return torch.cat(embs), torch.cat(ids), views


def view_groups(views: Sequence[dict[str, Any]]) -> torch.Tensor:
    """[N] int64 group of each view: its keyframe (sample token), numbered by first appearance."""
    codes: dict[str, int] = {}
    return torch.tensor([codes.setdefault(v["sample_token"], len(codes)) for v in views],
                        dtype=torch.int64)  # fmt: skip


def _number(value: Any) -> float | int | None:
    """A JSON-safe number: NaN and inf become None."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


def _record(protocol: str, condition: str, summary: dict, topk: Sequence[int]) -> dict[str, Any]:
    rec: dict[str, Any] = {"protocol": protocol, "condition": condition}
    for k in topk:
        rec[f"rank{k}"] = _number(summary.get(f"Rank-{k}"))
    rec["mAP"] = _number(summary.get("mAP"))
    rec["mINP"] = _number(summary.get("mINP"))
    for key in ("num_queries", "num_valid", "num_gallery", "trials"):
        if key in summary:
            rec[key] = int(summary[key])
    return rec


def protocol_records(
    emb: torch.Tensor,
    ids: torch.Tensor,
    views: Sequence[dict[str, Any]],
    cfg: Config,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """The records of both protocols (module doc) for embeddings of the views, without the
    ``checkpoint`` / ``step`` keys.

    Args:
        emb: [N, D] L2-normalised embeddings.
        ids: [N] identities.
        views: the N view records (``sample_token`` and ``condition`` are used).
        cfg: ``eval_reid.trials``, ``eval_reid.topk`` and ``eval_reid.seed`` (of the CMC galleries).
        device: where the ranking runs.
    """
    ec = cfg.eval_reid
    topk = tuple(ec.topk)
    seed = ec.seed
    emb = emb.to(device)
    ids = ids.to(torch.int64)
    groups = view_groups(views)
    conditions = [v.get("condition") for v in views]
    present = sorted({c for c in conditions if c is not None})
    subsets = [("all", torch.ones(len(views), dtype=torch.bool))] + [
        (c, torch.tensor([x == c for x in conditions], dtype=torch.bool)) for c in present
    ]
    records = []
    for cond, mask in subsets:  # cmc: the views of the condition only
        idx = mask.nonzero()[:, 0]
        res = cmc_single_shot(
            emb[idx.to(emb.device)], ids[idx], groups[idx], trials=ec.trials, seed=seed, topk=topk
        )
        n = int(res["num_identities"])
        summary = {**res, "mAP": None, "mINP": None, "num_queries": n, "num_valid": n,
                   "num_gallery": n}  # fmt: skip
        records.append(_record("cmc", cond, summary, topk))
    results = query_results(emb, ids, groups, emb, ids, groups)  # every view against all
    for cond, mask in subsets:  # retrieval: the queries of the condition, the whole gallery
        records.append(_record("retrieval", cond, summarize(results.subset(mask), topk), topk))
    return records


def evaluate_model(
    model: torch.nn.Module, dataset: Dataset, cfg: Config, device: str | torch.device | None = None
) -> list[dict[str, Any]]:
    """Both protocols for a model (anything with ``embed``) on ``dataset``; records as
    :func:`protocol_records`."""
    dev = pick_device(cfg.eval_reid.device) if device is None else torch.device(device)
    emb, ids, views = embed_dataset(model, dataset, cfg.eval_reid.batch_size, dev)
    return protocol_records(emb, ids, views, cfg, dev)


def evaluate_checkpoint(
    path: str | os.PathLike, dataset: Dataset, cfg: Config
) -> list[dict[str, Any]]:
    """The records of both protocols for one ReID checkpoint (module doc).

    Args:
        path: the checkpoint's sidecar, its weights file, or a run's checkpoint folder (latest).
        dataset: the views to evaluate (a ReIDDataset of ``eval_reid.split``).
        cfg: ``eval_reid`` settings (device, batch size, trials, topk).

    Raises:
        CheckpointError: the checkpoint is damaged, not a ReID checkpoint, or its crops have
            another channel count than the dataset's.
    """
    start = time.perf_counter()
    sidecar = resolve_checkpoint(path)
    device = pick_device(cfg.eval_reid.device)
    model = BEVReIDModel.from_checkpoint(sidecar, map_location=device)
    step = int(json.loads(sidecar.read_text(encoding="utf-8"))["step"])
    channels = getattr(dataset, "channel_names", None)
    if channels is not None and model.config["in_channels"] != len(channels):
        raise CheckpointError(
            f"checkpoint {str(sidecar)!r} takes crops of {model.config['in_channels']} channels, "
            f"the dataset {str(getattr(dataset, 'root', ''))!r} has {len(channels)} "
            f"({', '.join(channels)}); evaluate on the dataset it was trained on"
        )
    records = evaluate_model(model, dataset, cfg, device)
    seconds = round(time.perf_counter() - start, 3)
    split = getattr(dataset, "split", None)
    return [
        {"checkpoint": sidecar.stem, "step": step, **r, "split": split, "seconds": seconds}
        for r in records
    ]


def raw_crop_baseline(
    dataset: ReIDDataset, cfg: Config, standardise: bool = False
) -> list[dict[str, Any]]:
    """The floor a trained model must beat: both protocols with the flattened raw crops,
    L2-normalised, as embeddings. Records have ``checkpoint = "raw-crops"`` and ``step = None``.

    With ``standardise``, each channel is first standardised with its mean and std over the
    dataset's crops (no labels used), as the model standardises its input: channels of large
    range (LiDAR intensity, 0-255) then no longer decide the cosine alone. Those records have
    ``checkpoint = "raw-crops-standardised"``.
    """
    mean, std = crop_statistics(dataset, 0) if standardise else (0.0, 1.0)
    if standardise:
        mean, std = mean.view(1, -1, 1, 1), std.clamp(min=1e-6).view(1, -1, 1, 1)

    class RawCrops(torch.nn.Module):
        def embed(self, crops: torch.Tensor) -> torch.Tensor:
            return F.normalize(((crops - mean) / std).flatten(1).float(), dim=1)  # B x (C S S)

    records = evaluate_model(RawCrops(), dataset, cfg)
    split = getattr(dataset, "split", None)
    name = "raw-crops-standardised" if standardise else "raw-crops"
    return [{"checkpoint": name, "step": None, **r, "split": split} for r in records]


# ---------------------------------------------------------------------------------------------
# The watcher


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
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
    for line in data[:end].decode("utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            print(f"eval-reid: ignoring an unreadable line of {path}", file=sys.stderr)
    return out


def _append_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Appends the records in one write, then flushes and fsyncs."""
    text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _step_of(sidecar: Path) -> int | None:
    try:
        return int(sidecar.stem.split("_", 1)[1])
    except (IndexError, ValueError):
        return None


def _summary_line(records: Sequence[dict[str, Any]]) -> str:
    def get(protocol: str, key: str) -> str:
        for r in records:
            if r["protocol"] == protocol and r["condition"] == "all":
                v = r.get(key)
                return "n/a" if v is None else f"{v:.4f}"
        return "n/a"

    r0 = records[0]
    return (
        f"eval-reid: step {r0['step']} ({r0['checkpoint']}): retrieval rank1 "
        f"{get('retrieval', 'rank1')} mAP {get('retrieval', 'mAP')} | cmc rank1 "
        f"{get('cmc', 'rank1')} [{r0.get('seconds', 0):.1f} s]"
    )


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
    """Evaluates each finished checkpoint of ``reid_run.log_dir/run_id/checkpoints`` once, in
    step order, and logs the results (module doc).

    Blocks and polls every ``eval_reid.poll_s`` seconds, unless ``eval_reid.once`` is set (then it
    evaluates what is there and returns). A checkpoint whose sidecar is not written yet is not
    listed, so it is picked up once finished. A checkpoint that cannot be evaluated is reported on
    stderr and in ``errors.jsonl`` and never retried.

    Args:
        cfg: ``reid_run`` (where the run and the dataset are) and ``eval_reid``.
        stop: polled between checkpoints and while waiting; True ends the watch.
        max_checkpoints: return after evaluating this many checkpoints.
        timeout_s: return after this many seconds (checked between checkpoints).

    Returns:
        how many checkpoints this call evaluated and how many it skipped.

    Raises:
        FileNotFoundError: with ``eval_reid.once``, the run has no checkpoints folder (a watcher
            that blocks waits for it instead).
    """
    ec = cfg.eval_reid
    ckpt_dir = Path(cfg.reid_run.log_dir) / cfg.reid_run.run_id / "checkpoints"
    if ec.once and not ckpt_dir.is_dir():
        raise FileNotFoundError(
            f"no checkpoints folder {ckpt_dir}: check reid_run.log_dir (--log-dir) and "
            "reid_run.run_id (--run-id)"
        )
    out_dir = Path(ec.eval_log_dir) / cfg.reid_run.run_id
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path, errors_path = out_dir / METRICS_FILE, out_dir / ERRORS_FILE
    done = {r.get("checkpoint") for r in _read_jsonl(metrics_path) + _read_jsonl(errors_path)}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    dataset: ReIDDataset | None = None
    writer = None
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
                if sidecar.stem in done:
                    continue
                if finished():
                    return WatchResult(evaluated, skipped)
                if dataset is None:  # opened once a checkpoint needs it
                    dataset = ReIDDataset(cfg.reid_run.dataset_dir, ec.split)
                try:
                    records = evaluate_checkpoint(sidecar, dataset, cfg)
                except SKIPPABLE as e:
                    print(f"eval-reid: skipping checkpoint {sidecar}: {e}", file=sys.stderr)
                    error = {"checkpoint": sidecar.stem, "step": _step_of(sidecar),
                             "error": f"{type(e).__name__}: {e}", "time": time.time()}  # fmt: skip
                    _append_jsonl(errors_path, [error])
                    done.add(sidecar.stem)
                    skipped += 1
                    continue
                _append_jsonl(metrics_path, records)
                if writer is None:
                    from torch.utils.tensorboard import SummaryWriter

                    writer = SummaryWriter(str(out_dir))
                for r in records:
                    for key in [f"rank{k}" for k in ec.topk] + ["mAP", "mINP"]:
                        if r.get(key) is not None:
                            writer.add_scalar(
                                f"{r['protocol']}/{r['condition']}/{key}", r[key], r["step"]
                            )
                writer.flush()
                print(_summary_line(records), flush=True)
                done.add(sidecar.stem)
                evaluated += 1
            if ec.once or finished():
                return WatchResult(evaluated, skipped)
            wake = time.monotonic() + ec.poll_s
            while time.monotonic() < wake and not finished():
                time.sleep(max(0.0, min(0.1, wake - time.monotonic())))
    finally:
        if writer is not None:
            writer.close()
