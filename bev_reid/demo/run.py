"""`bev-reid demo`: the whole pipeline at laptop size, with a report a person can look at.

Stages, each in its own folder under ``--out``: a synthetic world (``world/``), brief LSS
training (``lss/``), the ReID dataset with every modality the build config names
(``dataset/``), then one ReID run per modality set, trained (``reid/RUN/``) and evaluated
(``eval/RUN/``): ``camera`` (the camera channels only), ``lidar`` (the LiDAR channels only)
and ``both``; last, tracking on a second, unseen world with motion alone and with the embedding
(``track/``, see :mod:`bev_reid.demo.tracking`). A finished stage is reused on the next run
(``--force`` starts over); an interrupted one resumes. The report folder holds the pictures,
the resolved config, a summary (JSON and text: each run beside its floors, the two trackers)
and the tensorboard commands.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bev_reid.config import Config, save_config
from bev_reid.demo.tracking import run_tracking_stage, summary_path, tracking_table
from bev_reid.engine.checkpoint import latest_checkpoint, load_checkpoint
from bev_reid.engine.io import atomic_write_text
from bev_reid.reid.evaluator import overall

STAGES = ("synth", "train-lss", "build-dataset", "train-reid", "eval-reid", "track")
# The ReID runs: name -> the crop modalities it trains on (() = all the dataset has).
RUNS: dict[str, tuple[str, ...]] = {"camera": ("camera",), "lidar": ("lidar",), "both": ()}
# The demo's sizes: configs/demo.yaml of the source tree (editable installs), or of the working
# folder (e.g. the docker image's /workspace).
DEMO_CONFIGS = (
    Path(__file__).resolve().parents[2] / "configs" / "demo.yaml",
    Path("configs") / "demo.yaml",
)


def default_config() -> Path:
    for path in DEMO_CONFIGS:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the demo config is not at {' or '.join(map(str, DEMO_CONFIGS))}: "
        "pass --config path/to/demo.yaml"
    )


def demo_config(cfg: Config, out: Path) -> Config:
    """``cfg`` with every folder placed under ``out``."""
    world = out / "world"
    return dataclasses.replace(
        cfg,
        synth=dataclasses.replace(cfg.synth, out=str(world)),
        data=dataclasses.replace(
            cfg.data, dataroot=str(world), version=cfg.synth.version, scenes=()
        ),
        train_lss=dataclasses.replace(cfg.train_lss, logdir=str(out / "lss"), resume=True),
        build=dataclasses.replace(
            cfg.build,
            out=str(out / "dataset"),
            # the LSS features, when the camera crops hold them
            checkpoint=str(out / "lss" / "checkpoints") if cfg.build.camera_bev else "",
        ),
        reid_run=dataclasses.replace(
            cfg.reid_run, dataset_dir=str(out / "dataset"), log_dir=str(out / "reid"), run_id="both"
        ),
        train_reid=dataclasses.replace(cfg.train_reid, resume=True),
        eval_reid=dataclasses.replace(cfg.eval_reid, eval_log_dir=str(out / "eval"), once=True),
    )


def demo_runs(cfg: Config) -> dict[str, Config]:
    """The ReID runs of the demo, by name: one per modality set the dataset can give."""
    built = set(cfg.build.modalities)
    runs = {}
    for name, modalities in RUNS.items():
        if set(modalities or built) <= built and (modalities or len(built) > 1):
            reid_run = dataclasses.replace(cfg.reid_run, run_id=name, modalities=modalities)
            runs[name] = dataclasses.replace(cfg, reid_run=reid_run)
    return runs


def _run_finished(cfg: Config, stage: str) -> bool:
    run = Path(cfg.reid_run.log_dir) / cfg.reid_run.run_id
    last = latest_checkpoint(run / "checkpoints")
    if stage == "train-reid":
        return last is not None and load_checkpoint(last).step >= cfg.train_reid.max_steps
    return last is not None and last.stem in _eval_log(cfg).done


def _track_dir(cfg: Config) -> Path:
    return Path(cfg.synth.out).parent / "track"


def _finished(cfg: Config, stage: str) -> bool:
    if stage == "synth":
        return (Path(cfg.synth.out) / cfg.synth.version / "scene.json").exists()
    if stage == "train-lss":
        last = latest_checkpoint(Path(cfg.train_lss.logdir) / "checkpoints")
        return last is not None and load_checkpoint(last).step >= cfg.train_lss.max_steps
    if stage == "build-dataset":
        return (Path(cfg.build.out) / "object_data.json").exists()
    if stage == "track":
        return summary_path(_track_dir(cfg)).exists()
    return all(_run_finished(run, stage) for run in demo_runs(cfg).values())


def _run_stages(cfg: Config) -> dict[str, Any]:
    from bev_reid.lss.train import train_lss
    from bev_reid.reid.build import build_dataset
    from bev_reid.reid.train import train_reid
    from bev_reid.reid.watch import watch
    from bev_reid.synth.generate import generate_world

    def each_run(job: Callable[[Config], Any], stage: str) -> Callable[[], None]:
        def work() -> None:
            for name, run in demo_runs(cfg).items():
                if not _run_finished(run, stage):
                    print(f"[demo] {stage} {name} ...")
                    job(run)

        return work

    work: dict[str, Callable[[], Any]] = {
        "synth": lambda: generate_world(cfg.synth, progress=True),
        "train-lss": lambda: train_lss(cfg),
        "build-dataset": lambda: build_dataset(cfg),
        "train-reid": each_run(train_reid, "train-reid"),
        "eval-reid": each_run(watch, "eval-reid"),
        "track": lambda: run_tracking_stage(cfg, demo_runs(cfg), _track_dir(cfg)),
    }
    times: dict[str, Any] = {}
    for stage in STAGES:
        if _finished(cfg, stage):
            print(f"[demo] {stage}: reusing the finished stage (--force to redo)")
            times[stage] = None
            continue
        print(f"[demo] {stage} ...")
        start = time.perf_counter()
        work[stage]()
        times[stage] = round(time.perf_counter() - start, 1)
    return times


@torch.no_grad()
def _bev_picture(cfg: Config, report: Path) -> float:
    """The BEV prediction picture of a keyframe; returns the mean IoU over eight of them."""
    from bev_reid.data.keyframes import NuScenesKeyframes, collate
    from bev_reid.demo.report import draw_bev_prediction
    from bev_reid.lss.losses import iou_counts
    from bev_reid.lss.model import forward, load_lss

    model, trained = load_lss(Path(cfg.train_lss.logdir) / "checkpoints")
    dataset = NuScenesKeyframes(trained.data, trained.grid, is_train=False)
    picks = list(range(0, len(dataset), max(1, len(dataset) // 8)))[:8]
    ious, shown = [], None
    for i in picks:
        batch = collate([dataset[i]])
        out = forward(model, batch)
        inter, union = iou_counts(out.logits, batch["bev_mask"])[0].tolist()
        ious.append(inter / max(union, 1))
        if shown is None:
            shown = (batch, out)
    batch, out = shown
    draw_bev_prediction(
        batch["imgs"][0],
        out.logits[0],
        batch["bev_mask"][0],
        report / "bev_prediction.png",
        title=f"LSS after {cfg.train_lss.max_steps} steps: {batch['scene'][0]}, IoU {ious[0]:.2f}",
    )
    return sum(ious) / len(ious)


def _reid_pictures(runs: dict[str, Config], report: Path) -> dict[str, Any]:
    """The CMC curves of every run and of the raw crops; the ranked retrieval of the camera run
    (the product's headline), else of the first run."""
    from bev_reid.demo.report import cmc_curve, draw_cmc, draw_retrieval
    from bev_reid.models.reid import BEVReIDModel
    from bev_reid.reid.dataset import ReIDDataset
    from bev_reid.reid.evaluate import embed_dataset

    embeddings, shown = {}, None
    dataset = ids = views = None
    for name, cfg in runs.items():
        model = BEVReIDModel.from_checkpoint(
            Path(cfg.reid_run.log_dir) / cfg.reid_run.run_id / "checkpoints"
        )
        # One set of views for every curve: those with something in each modality.
        whole = ReIDDataset(cfg.reid_run.dataset_dir, cfg.eval_reid.split)
        whole.views = [v for v in whole.views if not v.get("empty_modalities")]
        dataset = whole.with_channels(model.checkpoint_meta["channels"])
        emb, ids, views = embed_dataset(model, dataset, cfg.eval_reid.batch_size)
        embeddings[f"{name} embedding"] = emb
        if shown is None or name == "camera":
            shown = (dataset, emb)
    raw = torch.stack([dataset.with_channels(dataset.meta["channels"])[i][0].flatten()
                       for i in range(len(dataset))])  # fmt: skip
    embeddings["raw crops, all channels (floor)"] = raw
    curves = cmc_curve(embeddings, ids, views)
    draw_cmc(curves, report / "cmc_curve.png")
    draw_retrieval(*shown, report / "ranked_retrieval.png")
    return {"cmc": curves}


def _eval_log(cfg: Config):
    from bev_reid.reid.watch import EvalLog

    return EvalLog(Path(cfg.eval_reid.eval_log_dir) / cfg.reid_run.run_id, cfg.eval_reid.topk)


def _records(cfg: Config) -> dict[str, list[dict[str, Any]]]:
    """The run's evaluation records: those of the last step evaluated ("trained") and of the
    floors the watcher scored ("raw", "raw_standardised"), read once."""
    records = _eval_log(cfg).records()
    last = max(r["step"] for r in records if r["step"] is not None)
    return {
        "trained": [r for r in records if r["step"] == last],
        "raw": [r for r in records if r["checkpoint"] == "raw-crops"],
        "raw_standardised": [r for r in records if r["checkpoint"] == "raw-crops-standardised"],
    }


def _table(summary: dict[str, Any]) -> str:
    def f(v):
        return "  -  " if v is None else f"{v:.3f}"

    d = summary["dataset"]
    lines = [
        "bev-reid demo summary",
        f"  world:    {summary['keyframes']} keyframes, {summary['scenes']} scenes",
        f"  LSS:      vehicle IoU {f(summary['lss_iou'])} (mean over eight keyframes)",
        f"  dataset:  {d['num_identities']} identities ({d['num_train_identities']} train, "
        f"{d['num_val_identities']} val), {d['num_views']} views, {len(d['channels'])} channels",
        "",
        f"  {'validation, full retrieval':40s} {'rank-1':>7s} {'rank-5':>7s} "
        f"{'mAP':>7s} {'mINP':>7s}",
    ]
    for run, result in summary["runs"].items():
        tables = (
            ("trained", result["trained"], True),
            ("raw crops (floor)", result["raw"], False),
            ("standardised raw crops", result["raw_standardised"], False),
        )
        for name, rows, per_condition in tables:
            for r in rows:
                if r["protocol"] == "retrieval" and (per_condition or r["condition"] == "all"):
                    label = f"{run}: {name}, {r['condition']}"
                    lines.append(
                        f"  {label:40s} {f(r['rank1']):>7s} {f(r['rank5']):>7s} "
                        f"{f(r['mAP']):>7s} {f(r['mINP']):>7s}"
                    )
        cmc = overall(result["trained"], "cmc")
        if cmc:
            lines.append(
                f"  {run}: original CMC protocol (single-shot galleries): "
                f"rank-1 {f(cmc['rank1'])}, rank-5 {f(cmc['rank5'])}"
            )
        near = [
            overall(result[key], "neighbours") for key in ("trained", "raw", "raw_standardised")
        ]
        if all(r is not None and r["auc"] is not None for r in near):
            lines.append(
                f"  {run}: own views {near[0]['min_gap_s']:g} s apart against the vehicles within "
                f"{near[0]['radius_m']:g} m (neighbours AUC, 0.5 = chance): {f(near[0]['auc'])}, "
                f"raw crops {f(near[1]['auc'])}, standardised {f(near[2]['auc'])} "
                f"({near[0]['num_valid']} views with both)"
            )
        lines.append("")
    lines += [*tracking_table(summary["tracking"]), ""]
    lines.append(
        "  stage times (s): "
        + ", ".join(f"{k} {'reused' if v is None else v}" for k, v in summary["times"].items())
    )
    return "\n".join(lines)


def run_demo(cfg: Config, out: str | Path, force: bool = False) -> dict[str, Any]:
    """Runs (or reuses) every stage, writes the report; returns the summary."""
    from bev_reid.data.nuscenes import NuScenesDB
    from bev_reid.reid.dataset import ReIDDataset, read_object_data

    out = Path(out)
    if force and out.exists():
        for name in ("world", "lss", "dataset", "reid", "eval", "track", "report"):
            shutil.rmtree(out / name, ignore_errors=True)
    cfg = demo_config(cfg, out)
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    save_config(cfg, report / "config.yaml")
    start = time.perf_counter()
    times = _run_stages(cfg)
    print("[demo] report ...")
    lss_iou = _bev_picture(cfg, report)
    runs = demo_runs(cfg)
    pictures = _reid_pictures(runs, report)
    meta = read_object_data(cfg.reid_run.dataset_dir)
    results = {}
    for name, run in runs.items():
        val = ReIDDataset.of_modalities(
            run.reid_run.dataset_dir, run.eval_reid.split, run.reid_run.modalities
        )
        results[name] = {
            "modalities": list(run.reid_run.modalities or cfg.build.modalities),
            "channels": len(val.channel_names),
            **_records(run),  # trained, and the floors the watcher scored
        }
    db = NuScenesDB(cfg.synth.out, cfg.synth.version)
    keys = ("num_identities", "num_train_identities", "num_val_identities", "num_views",
            "channels")  # fmt: skip
    summary = {
        "keyframes": sum(len(db.keyframes(s)) for s in db.scene_names),
        "scenes": len(db.scene_names),
        "lss_iou": lss_iou,
        "dataset": {k: meta[k] for k in keys},
        "runs": results,
        "cmc_curves": pictures["cmc"],
        "tracking": json.loads(summary_path(_track_dir(cfg)).read_text(encoding="utf-8")),
        "times": {**times, "total": round(time.perf_counter() - start, 1)},
    }
    atomic_write_text(report / "summary.json", json.dumps(summary, indent=1))
    table = _table(summary)
    atomic_write_text(report / "summary.txt", table + "\n")
    atomic_write_text(
        report / "README.txt",
        "Pictures: bev_prediction.png, cmc_curve.png, ranked_retrieval.png, tracks.png. "
        "Config: config.yaml.\n"
        f"Tensorboard: tensorboard --logdir {out} "
        "(LSS in lss/, ReID training in reid/RUN/, evaluation in eval/RUN/)\n",
    )
    print(table)
    print(f"\nreport: {report}  (tensorboard --logdir {out})")
    return summary
