"""``bev-reid demo``: the whole pipeline on a synthetic world, with a report."""

from __future__ import annotations

import argparse

from bev_reid.commands import register_command
from bev_reid.config import Config


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
    from bev_reid.demo.run import default_config, run_demo

    if args.config is None:  # the demo's own sizes, unless the user gives a config
        cfg = load_config(default_config(), args.set or ())
    run_demo(cfg, args.out, force=args.force)
    return 0
