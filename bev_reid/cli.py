"""The ``bev-reid`` command line: one console script, one sub-command per job.

The sub-commands live in :mod:`bev_reid.commands`; this module parses, resolves the config and
dispatches. A command's flags are shortcuts for config keys: ``--scenes 3`` on ``synth`` is the
same as ``synth.scenes: 3`` in the YAML file given with ``--config`` and as
``--set synth.scenes=3`` (the few flags that are not config keys say so in ``--help``).
Precedence: flags, then ``--set`` overrides, then the YAML file, then the dataclass defaults in
:mod:`bev_reid.config` (the only place defaults are written).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from bev_reid import __version__
from bev_reid.commands import COMMANDS, load_commands
from bev_reid.config import Config, ConfigError, load_config, parse_override
from bev_reid.engine.checkpoint import CheckpointError
from bev_reid.engine.io import DISK_FULL, DiskFullError, disk_full_message


def resolve_config(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {}
    for text in args.set or ():
        k, v = parse_override(text)
        overrides[k] = v
    for dest, value in vars(args).items():
        if dest.startswith("cfg:") and value is not None:
            overrides[dest[4:]] = value
    return load_config(args.config, overrides)


def build_parser() -> argparse.ArgumentParser:
    load_commands()
    parser = argparse.ArgumentParser(
        prog="bev-reid",
        description="Vehicle re-identification in bird's-eye-view space from surround cameras.",
    )
    parser.add_argument("--version", action="version", version=f"bev-reid {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error (also BEV_REID_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        p.add_argument("--config", default=None, help="YAML config file (sections as in configs/)")
        p.add_argument(
            "--set",
            action="append",
            metavar="KEY=VALUE",
            help="config override, e.g. data.version=v1.0-mini (repeatable)",
        )
        cmd.add_arguments(p)
    return parser


# Failures the user can act on: printed as one line naming the file, key or value at fault.
USER_ERRORS = (ConfigError, CheckpointError, FileNotFoundError, PermissionError, ValueError)


def error_line(error: BaseException) -> str:
    """One line for a user-facing failure. An error re-raised by a DataLoader worker carries the
    worker's traceback in its message: its last line is the error itself."""
    text = str(error).strip() or type(error).__name__
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = f"in a data loader worker: {last.split(': ', 1)[-1]}"
    return " ".join(text.split())


def last_word(command: str, text: str) -> None:
    """Prints why ``command`` stopped on stderr, on a line of its own: the progress bars the
    failure left open are closed first."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
    print(f"bev-reid {command}: {text}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    debug = args.debug or os.environ.get("BEV_REID_DEBUG", "") not in ("", "0")
    try:
        cfg = resolve_config(args)
        return int(COMMANDS[args.command].run(args, cfg) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        last_word(args.command, "interrupted; finished work is kept and a rerun resumes")
        return 130
    except USER_ERRORS as e:
        if debug:
            raise
        last_word(args.command, f"error: {error_line(e)}")
        return 2
    except OSError as e:  # a full disk: what could not be written, and where
        if debug or e.errno not in DISK_FULL:
            raise
        if isinstance(e, DiskFullError):
            text = e.strerror
        else:
            text = disk_full_message(e.filename) if e.filename else str(e)
        text += "; finished work is kept and a rerun resumes"
        last_word(args.command, f"error: {text}")
        return 2


if __name__ == "__main__":
    # Run through the imported module so the sub-commands register in the same registry.
    from bev_reid.cli import main as _main

    sys.exit(_main())
