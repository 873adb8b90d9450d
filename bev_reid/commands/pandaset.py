"""``convert-pandaset``: PandaSet sequences to a nuScenes-format folder (docs/pandaset.md)."""

from __future__ import annotations

import argparse
import sys

from bev_reid.commands import config_option, register_command
from bev_reid.config import Config

HELP = (
    "convert PandaSet sequences into a nuScenes-format folder (reads PandaSet's pickled pandas "
    "files, which can run code: convert only data you trust)"
)


def _convert_args(p: argparse.ArgumentParser) -> None:
    config_option(
        p,
        "--src",
        "pandaset.src",
        "PandaSet sequence folder(s), each holding lidar/, camera/ and annotations/",
        nargs="+",
        metavar="SEQ_DIR",
    )
    config_option(p, "--out", "pandaset.out", "dataroot to write (samples/ and the version folder)")
    config_option(p, "--version", "pandaset.version", "version folder name, e.g. v1.0-pandaset")
    config_option(
        p,
        "--lidars",
        "pandaset.lidars",
        "LiDAR points kept: pandar64 (360 degrees), pandargt (forward) or both",
    )
    config_option(
        p,
        "--frames",
        "pandaset.frames",
        "frame indices to convert in every sequence, e.g. 0 1 2; empty: every frame listed",
        nargs="+",
        type=int,
        metavar="FRAME",
    )
    config_option(
        p,
        "--skip-incomplete",
        "pandaset.skip_incomplete",
        "leave out, with a warning, frames that miss a file (else that is an error)",
    )


@register_command("convert-pandaset", HELP, _convert_args)
def convert_pandaset(args: argparse.Namespace, cfg: Config) -> int:
    from bev_reid.data.pandaset.convert import convert_pandaset as convert

    def warn(message: str) -> None:
        print(f"bev-reid convert-pandaset: warning: {message}", file=sys.stderr)

    summary = convert(cfg.pandaset, progress=True, warn=warn)
    for line in summary.lines():
        print(line)
    print(
        f"wrote {summary.root} in {summary.seconds:.1f} s (load it with "
        f"NuScenes(version={summary.version!r}, dataroot={str(summary.root)!r}))"
    )
    return 0
