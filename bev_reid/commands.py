"""The sub-commands of ``bev-reid``: argument wiring only; the work is done by library code."""

from __future__ import annotations

import argparse

from bev_reid.cli import config_option, register_command
from bev_reid.config import Config


def _synth_args(p: argparse.ArgumentParser) -> None:
    config_option(p, "--out", "synth.out", "folder to write the dataset to")
    config_option(p, "--scenes", "synth.scenes", "number of scenes")
    config_option(p, "--keyframes", "synth.keyframes", "keyframes per scene")
    config_option(p, "--seed", "synth.seed", "random seed (same seed, same bytes)")


@register_command("synth", "write an offline synthetic nuScenes-format world", _synth_args)
def synth(args: argparse.Namespace, cfg: Config) -> int:
    from bev_reid.data.synthetic import generate_world

    out = generate_world(cfg.synth, progress=True)
    print(f"wrote {out} (load it with NuScenes(version={cfg.synth.version!r}, dataroot={str(out)!r}))")
    return 0

