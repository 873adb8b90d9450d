"""The sub-commands of ``bev-reid``: argument wiring only; the work is done by library code."""

from __future__ import annotations

import argparse
from pathlib import Path

from bev_reid.cli import config_option, register_command
from bev_reid.config import Config


def _data_args(p: argparse.ArgumentParser) -> None:
    config_option(
        p,
        "--dataroot",
        "data.dataroot",
        "nuScenes folder (holding samples/ and the version folder)",
    )
    config_option(
        p, "--version", "data.version", "nuScenes version folder, e.g. v1.0-trainval, v1.0-mini"
    )
    config_option(
        p,
        "--scenes",
        "data.scenes",
        "comma-separated scene names; empty: the command's official split, or all scenes",
    )


def _synth_args(p: argparse.ArgumentParser) -> None:
    config_option(p, "--out", "synth.out", "folder to write the dataset to")
    config_option(p, "--scenes", "synth.scenes", "number of scenes")
    config_option(p, "--keyframes", "synth.keyframes", "keyframes per scene")
    config_option(p, "--seed", "synth.seed", "random seed (same seed, same bytes)")


@register_command("synth", "write an offline synthetic nuScenes-format world", _synth_args)
def synth(args: argparse.Namespace, cfg: Config) -> int:
    from bev_reid.data.synthetic import generate_world

    out = generate_world(cfg.synth, progress=True)
    print(
        f"wrote {out} (load it with NuScenes(version={cfg.synth.version!r}, dataroot={str(out)!r}))"
    )
    return 0


def _show_args(p: argparse.ArgumentParser) -> None:
    _data_args(p)
    config_option(p, "--sample", "show.sample", "sample token of the keyframe")
    config_option(p, "--out", "show.out", "picture to write: .png, .pdf, .svg or .jpg")


@register_command(
    "show-sample",
    "draw one keyframe: six images with boxes, and the BEV mask with LiDAR",
    _show_args,
)
def show_sample(args: argparse.Namespace, cfg: Config) -> int:
    from bev_reid.data.nuscenes import NuScenesDB, resolve_scenes
    from bev_reid.data.visualize import show_sample as draw

    token = cfg.show.sample
    if not token:
        db = NuScenesDB(cfg.data.dataroot, cfg.data.version)
        token = db.keyframes(resolve_scenes(db, None, cfg.data.scenes)[0])[0]
    out = draw(cfg.data.dataroot, cfg.data.version, token, cfg.show.out, cfg)
    print(f"wrote {out} (sample {token})")
    return 0


def _train_lss_args(p: argparse.ArgumentParser) -> None:
    _data_args(p)
    config_option(
        p,
        "--logdir",
        "train_lss.logdir",
        "run folder: checkpoints, tensorboard logs, resolved config",
    )
    config_option(p, "--max-steps", "train_lss.max_steps", "stop after this many optimizer steps")
    config_option(p, "--device", "train_lss.device", "auto, cpu or cuda")
    config_option(p, "--batch-size", "train_lss.batch_size", "keyframes per step and process")
    config_option(p, "--amp", "train_lss.amp", "mixed precision on GPU: none, bf16 or fp16")
    config_option(
        p, "--resume", "train_lss.resume", "continue from the latest checkpoint in the run folder"
    )


@register_command(
    "train-lss", "train the lift-splat-shoot network with the dual loss", _train_lss_args
)
def train_lss(args: argparse.Namespace, cfg: Config) -> int:
    from bev_reid.engine.train_lss import train_lss as train

    path = train(cfg)
    print(f"last checkpoint: {path}")
    return 0


def _val_lss_args(p: argparse.ArgumentParser) -> None:
    _data_args(p)
    config_option(p, "--checkpoint", "val_lss.checkpoint", "LSS checkpoint (file or run folder)")
    config_option(p, "--nvals", "val_lss.nvals", "number of validation keyframes; 0 = all")
    config_option(p, "--device", "val_lss.device", "auto, cpu or cuda")


@register_command(
    "val-lss", "IoU of an LSS checkpoint's vehicle mask on validation keyframes", _val_lss_args
)
def val_lss(args: argparse.Namespace, cfg: Config) -> int:
    from bev_reid.engine.train_lss import validate_lss

    if not cfg.val_lss.checkpoint:
        raise ValueError("val-lss needs --checkpoint (or val_lss.checkpoint in the config)")
    r = validate_lss(cfg.val_lss.checkpoint, cfg, cfg.val_lss.nvals or None, cfg.val_lss.device)
    print(
        f"IoU over {int(r['keyframes'])} keyframes: "
        f"min {r['iou_min']:.4f}  max {r['iou_max']:.4f}  "
        f"mean {r['iou_mean']:.4f}  pooled {r['iou_pooled']:.4f}"
    )
    return 0


def _build_args(p: argparse.ArgumentParser) -> None:
    _data_args(p)
    config_option(
        p, "--checkpoint", "build.checkpoint", "LSS checkpoint (not needed with --modalities lidar)"
    )
    config_option(p, "--out", "build.out", "dataset folder to write")
    config_option(p, "--categories", "build.categories", "comma-separated category name prefixes")
    config_option(
        p, "--min-iou", "build.min_iou", "IoU of predicted vehicle mask and box; 0 = no filter"
    )
    config_option(p, "--min-visibility", "build.min_visibility", "nuScenes visibility level 1-4")
    config_option(p, "--min-lidar-points", "build.min_lidar_points", "LiDAR points in the box")
    config_option(p, "--min-views", "build.min_views", "identities with fewer views are dropped")
    config_option(p, "--crop-size", "build.crop_size", "crop side in cells")
    config_option(p, "--crop-cell", "build.crop_cell", "metres per crop cell; 0 = the grid's")
    config_option(
        p, "--lidar-raster", "build.lidar_raster", "grid (ego BEV raster) or box (points per box)"
    )
    config_option(
        p, "--lidar-colour", "build.lidar_colour", "paint LiDAR points with camera colour"
    )
    config_option(p, "--align-heading", "build.align_heading", "rotate crops to the box heading")
    config_option(p, "--zero-outside", "build.zero_outside", "zero crop cells outside the box")
    config_option(p, "--modalities", "build.modalities", "camera, lidar or camera,lidar")
    config_option(
        p, "--val-scenes", "build.val_scenes", "scenes whose identities form the validation split"
    )
    config_option(
        p,
        "--val-fraction",
        "build.val_fraction",
        "share of identities held out (seeded) without --val-scenes",
    )
    config_option(
        p, "--shard", "build.shard", "i/n: build every n-th part of the keyframes (then --merge)"
    )
    config_option(
        p, "--merge", "build.merge", "merge the parts of finished shards into the dataset"
    )
    config_option(p, "--device", "build.device", "auto, cpu or cuda")


@register_command(
    "build-dataset", "crop every vehicle of every keyframe from one BEV pass", _build_args
)
def build_dataset(args: argparse.Namespace, cfg: Config) -> int:
    from bev_reid.reid.build import build_dataset as build

    path = build(cfg, merge_only=cfg.build.merge)
    if path is None:
        print(
            f"shard {cfg.build.shard} done; when every shard is, run: "
            f"bev-reid build-dataset --merge --out {cfg.build.out} ..."
        )
    else:
        import json

        meta = json.loads(path.read_text())
        print(
            f"wrote {path.parent}: {meta['num_identities']} identities "
            f"({meta['num_train_identities']} train, {meta['num_val_identities']} val), "
            f"{meta['num_views']} views, channels {len(meta['channels'])}"
        )
    return 0


def _show_dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="ReID dataset folder")
    p.add_argument(
        "--out",
        default="dataset.png",
        help="picture to write, .png, .pdf, .svg or .jpg (default: dataset.png)",
    )
    p.add_argument("--identities", type=int, default=8, help="rows (default: 8)")
    p.add_argument("--views", type=int, default=8, help="views per row (default: 8)")
    p.add_argument("--split", default="all", choices=("train", "val", "all"))


@register_command(
    "show-dataset",
    "draw a few identities of a ReID dataset, views side by side",
    _show_dataset_args,
)
def show_dataset(args: argparse.Namespace, cfg: Config) -> int:
    from bev_reid.reid.visualize import draw_dataset

    out = draw_dataset(args.dataset, args.out, args.identities, args.views, args.split)
    print(f"wrote {out}")
    return 0


def _reid_run_args(p: argparse.ArgumentParser) -> None:
    config_option(
        p, "--dataset-dir", "reid_run.dataset_dir", "ReID dataset folder (from build-dataset)"
    )
    config_option(
        p, "--log-dir", "reid_run.log_dir", "runs folder; this run lives in LOG_DIR/RUN_ID"
    )
    config_option(p, "--run-id", "reid_run.run_id", "name of the run")


def _train_reid_args(p: argparse.ArgumentParser) -> None:
    _reid_run_args(p)
    config_option(p, "--loss-mode", "train_reid.loss_mode", "cosine-softmax or triplet")
    config_option(p, "--max-steps", "train_reid.max_steps", "stop after this many optimizer steps")
    config_option(p, "--device", "train_reid.device", "auto, cpu or cuda")
    config_option(p, "--resume", "train_reid.resume", "continue from the run's latest checkpoint")
    config_option(
        p, "--init-from", "train_reid.init_from",
        "start the embedding net from this ReID checkpoint (fine-tuning)",
    )  # fmt: skip


@register_command("train-reid", "train the ReID embedding on a dataset folder", _train_reid_args)
def train_reid(args: argparse.Namespace, cfg: Config) -> int:
    from bev_reid.reid.train import train_reid as train

    print(f"last checkpoint: {train(cfg)}")
    return 0


def _eval_reid_args(p: argparse.ArgumentParser) -> None:
    _reid_run_args(p)
    config_option(
        p, "--eval-log-dir", "eval_reid.eval_log_dir", "where metrics.jsonl and tensorboard logs go"
    )
    config_option(p, "--once", "eval_reid.once", "evaluate the checkpoints there now, then exit")
    config_option(p, "--device", "eval_reid.device", "auto, cpu or cuda")


@register_command(
    "eval-reid",
    "watch a ReID run and evaluate each new checkpoint (CMC, mAP, mINP)",
    _eval_reid_args,
)
def eval_reid(args: argparse.Namespace, cfg: Config) -> int:
    from bev_reid.reid.evaluate import watch

    result = watch(cfg)
    if not result.skipped:
        print(f"evaluated {result.evaluated} checkpoint(s)")
        return 0
    errors = Path(cfg.eval_reid.eval_log_dir) / cfg.reid_run.run_id / "errors.jsonl"
    print(f"evaluated {result.evaluated} checkpoint(s), skipped {result.skipped} (see {errors})")
    return 1


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        default="runs/demo",
        help="folder of the demo's stages and report (default: runs/demo)",
    )
    p.add_argument(
        "--force", action="store_true", help="redo every stage instead of reusing finished ones"
    )


@register_command(
    "demo",
    "the whole pipeline on a synthetic world, in minutes on a CPU, with a report",
    _demo_args,
)
def demo(args: argparse.Namespace, cfg: Config) -> int:
    from bev_reid.config import load_config
    from bev_reid.demo import default_config, run_demo

    if args.config is None:  # the demo's own sizes, unless the user gives a config
        cfg = load_config(default_config(), args.set or ())
    run_demo(cfg, args.out, force=args.force)
    return 0
