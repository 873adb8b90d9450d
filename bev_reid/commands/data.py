"""Commands that make or show nuScenes-format data: ``synth``, ``show-sample``."""

from __future__ import annotations

import argparse

from bev_reid.commands import config_option, data_args, register_command
from bev_reid.config import Config


def _synth_args(p: argparse.ArgumentParser) -> None:
    config_option(p, "--out", "synth.out", "folder to write the dataset to")
    config_option(p, "--scenes", "synth.scenes", "number of scenes")
    config_option(p, "--keyframes", "synth.keyframes", "keyframes per scene")
    config_option(p, "--seed", "synth.seed", "random seed (same seed, same bytes)")


@register_command("synth", "write an offline synthetic nuScenes-format world", _synth_args)
def synth(args: argparse.Namespace, cfg: Config) -> int:
    from bev_reid.synth.generate import generate_world

    out = generate_world(cfg.synth, progress=True)
    print(
        f"wrote {out} (load it with NuScenes(version={cfg.synth.version!r}, dataroot={str(out)!r}))"
    )
    return 0


def _show_args(p: argparse.ArgumentParser) -> None:
    data_args(p)
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
