"""The ``bev-reid`` command line: one console script, one sub-command per job.

Every option of a sub-command is also a config key: ``--scenes 3`` on ``synth`` is the same as
``synth.scenes: 3`` in the YAML file given with ``--config`` and as ``--set synth.scenes=3``.
Precedence: flags, then ``--set`` overrides, then the YAML file, then the dataclass defaults in
:mod:`bev_reid.config` (the only place defaults are written).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

from bev_reid import __version__
from bev_reid.config import Config, ConfigError, load_config
from bev_reid.engine.checkpoint import CheckpointError


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Config], int | None]


COMMANDS: dict[str, Command] = {}


def _no_arguments(_parser: argparse.ArgumentParser) -> None:
    return None


def register_command(
    name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
):
    """Registers ``run(args, cfg)`` as sub-command ``name``; ``arguments`` adds its flags."""

    def wrap(fn):
        COMMANDS[name] = Command(name, help, arguments, fn)
        return fn

    return wrap


def config_option(
    parser: argparse.ArgumentParser, flag: str, key: str, help: str, **kwargs: Any
) -> None:
    """Adds ``flag`` as a shortcut for the config key ``key`` (``section.field``).

    The help text shows the default from the config dataclass.
    """
    section, name = key.split(".")
    cls = typing.get_type_hints(Config)[section]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise KeyError(f"{key} is not a config key")  # a programming error, caught by the tests
    default = getattr(cls(), name)
    hint = typing.get_type_hints(cls)[name]
    if hint is bool:
        kwargs.setdefault("action", argparse.BooleanOptionalAction)
    elif typing.get_origin(hint) is tuple:
        kwargs.setdefault("type", str)  # "a,b,c": parsed by the config loader
        default = ",".join(map(str, default))
    elif hint in (int, float):
        kwargs.setdefault("type", hint)
    if hint is not bool:
        kwargs.setdefault("metavar", name.upper())
    parser.add_argument(
        flag,
        dest=f"cfg:{key}",
        default=None,
        help=f"{help} (default: {default}; config key {key})",
        **kwargs,
    )


def resolve_config(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {}
    for text in args.set or ():
        from bev_reid.config import parse_override

        k, v = parse_override(text)
        overrides[k] = v
    for dest, value in vars(args).items():
        if dest.startswith("cfg:") and value is not None:
            overrides[dest[4:]] = value
    return load_config(args.config, overrides)


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    parser = argparse.ArgumentParser(
        prog="bev-reid",
        description="Vehicle re-identification in bird's-eye-view space from surround cameras.",
    )
    parser.add_argument("--version", action="version", version=f"bev-reid {__version__}")
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


def _load_commands() -> None:
    """Imports the modules that register sub-commands (kept lazy so --help stays fast)."""
    import bev_reid.commands  # noqa: F401


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        cfg = resolve_config(args)
        return int(COMMANDS[args.command].run(args, cfg) or 0)
    except (ConfigError, FileNotFoundError, ValueError, CheckpointError) as e:
        print(f"bev-reid {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Run through the imported module so the sub-commands register in the same registry.
    from bev_reid.cli import main as _main

    sys.exit(_main())
