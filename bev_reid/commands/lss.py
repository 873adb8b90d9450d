"""Commands of the camera model: ``train-lss``, ``val-lss``."""

from __future__ import annotations

import argparse

from bev_reid.commands import config_option, data_args, register_command
from bev_reid.config import Config


def _train_lss_args(p: argparse.ArgumentParser) -> None:
    data_args(p)
    config_option(
        p,
        "--logdir",
        "train_lss.logdir",
        "run folder: checkpoints, tensorboard logs, resolved config",
    )
    config_option(p, "--max-steps", "train_lss.max_steps", "stop after this many optimizer steps")
    config_option(p, "--device", "train_lss.device", "auto, cpu or cuda")
    config_option(p, "--batch-size", "train_lss.batch_size", "keyframes per step and process")
    config_option(
        p, "--amp", "train_lss.amp", "autocast: none, auto (bf16 where fast), bf16 or fp16"
    )
    config_option(
        p, "--resume", "train_lss.resume", "continue from the latest checkpoint in the run folder"
    )


@register_command(
    "train-lss", "train the lift-splat-shoot network with the dual loss", _train_lss_args
)
def train_lss(args: argparse.Namespace, cfg: Config) -> int:
    from bev_reid.lss.train import train_lss as train

    path = train(cfg)
    print(f"last checkpoint: {path}")
    return 0


def _val_lss_args(p: argparse.ArgumentParser) -> None:
    data_args(p)
    config_option(p, "--checkpoint", "val_lss.checkpoint", "LSS checkpoint (file or run folder)")
    config_option(p, "--nvals", "val_lss.nvals", "number of validation keyframes; 0 = all")
    config_option(p, "--device", "val_lss.device", "auto, cpu or cuda")


@register_command(
    "val-lss", "IoU of an LSS checkpoint's vehicle mask on validation keyframes", _val_lss_args
)
def val_lss(args: argparse.Namespace, cfg: Config) -> int:
    from bev_reid.lss.validate import validate_lss

    if not cfg.val_lss.checkpoint:
        raise ValueError("val-lss needs --checkpoint (or val_lss.checkpoint in the config)")
    r = validate_lss(cfg.val_lss.checkpoint, cfg, cfg.val_lss.nvals or None, cfg.val_lss.device)
    level = cfg.data.min_visibility
    seen = "every vehicle" if level == 0 else f"vehicles of visibility level >= {level}"
    print(f"val-lss: the mask holds {seen} (data.min_visibility)")
    print(
        f"IoU over {int(r['keyframes'])} keyframes: "
        f"min {r['iou_min']:.4f}  max {r['iou_max']:.4f}  "
        f"mean {r['iou_mean']:.4f}  pooled {r['iou_pooled']:.4f}"
    )
    return 0
