"""Commands of the ReID stage: ``build-dataset``, ``show-dataset``, ``train-reid``,
``eval-reid``, ``export``."""

from __future__ import annotations

import argparse
from pathlib import Path

from bev_reid.commands import config_option, data_args, register_command
from bev_reid.config import Config


def _build_args(p: argparse.ArgumentParser) -> None:
    data_args(p)
    config_option(p, "--checkpoint", "build.checkpoint", "LSS checkpoint (for camera BEV features)")
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
        p,
        "--camera-crops",
        "build.camera_crops",
        "camera channels: bev (LSS features), texture (image colour on the box) or bev,texture",
    )
    config_option(p, "--texture-levels", "build.texture_levels", "height levels of the texture")
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
            + (
                f" ({meta['box_noise']['copies']} noisy copies of each training view)"
                if meta.get("box_noise", {}).get("copies")
                else ""
            )
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
    from bev_reid.reid.watch import watch

    result = watch(cfg)
    if not result.skipped:
        print(f"evaluated {result.evaluated} checkpoint(s)")
        return 0
    errors = Path(cfg.eval_reid.eval_log_dir) / cfg.reid_run.run_id / "errors.jsonl"
    print(f"evaluated {result.evaluated} checkpoint(s), skipped {result.skipped} (see {errors})")
    return 1


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", required=True,
        help="ReID checkpoint: a sidecar, its weights file, or a run's checkpoints folder (latest)"
        " (not a config key)",
    )  # fmt: skip
    p.add_argument(
        "--out", required=True,
        help="the .onnx file to write; its crop recipe goes beside it as .json (not a config key)",
    )  # fmt: skip


@register_command(
    "export", "write a ReID checkpoint's embedding as ONNX, with its crop recipe", _export_args
)
def export(args: argparse.Namespace, cfg: Config) -> int:
    from bev_reid.reid.export import export_onnx

    done = export_onnx(args.checkpoint, args.out)
    check = (
        "onnxruntime not installed: not checked"
        if done.max_abs_diff is None
        else f"onnxruntime agrees with the checkpoint within {done.max_abs_diff:.1e}"
    )
    print(f"wrote {done.onnx} and {done.sidecar} ({check})")
    return 0
