"""The sub-commands of ``bev-reid`` and their registry.

Each module of this package registers the commands of one stage with :func:`register_command`;
:mod:`bev_reid.cli` imports them (through :func:`load_commands`) and only parses and dispatches.
A command's flags are shortcuts for config keys (:func:`config_option`), so every default lives
in :mod:`bev_reid.config`. A few flags are not config keys and say so in their help: the
positional folder and picture options of ``show-dataset``, and ``demo``'s ``--out`` / ``--force``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import pkgutil
import typing
from collections.abc import Callable
from typing import Any

from bev_reid.config import Config, choices_of


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Config], int | None]


COMMANDS: dict[str, Command] = {}
# Modules listed first, in pipeline order (`bev-reid --help` follows it); any other module of
# this package is loaded after them, by name.
_ORDER = ("data", "pandaset", "lss", "reid", "track", "demo")


def _no_arguments(_parser: argparse.ArgumentParser) -> None:
    return None


def register_command(
    name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
):
    """Registers ``run(args, cfg)`` as sub-command ``name``; ``arguments`` adds its flags."""

    def wrap(fn):
        if name in COMMANDS and COMMANDS[name].run is not fn:
            raise KeyError(f"command {name!r} is registered twice")
        COMMANDS[name] = Command(name, help, arguments, fn)
        return fn

    return wrap


def load_commands() -> dict[str, Command]:
    """Imports every module of this package (each registers its commands); returns the
    registry. Modules are light: they import their library code inside the commands."""
    names = [i.name for i in pkgutil.iter_modules(__path__) if not i.name.startswith("_")]
    for name in sorted(names, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n)):
        importlib.import_module(f"{__name__}.{name}")
    return COMMANDS


def config_option(
    parser: argparse.ArgumentParser, flag: str, key: str, help: str, **kwargs: Any
) -> None:
    """Adds ``flag`` as a shortcut for the config key ``key`` (``section.field``).

    The help text shows the default from the config dataclass, and the allowed values of a
    choice field (a ``Literal``).
    """
    section, name = key.split(".")
    cls = typing.get_type_hints(Config)[section]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise KeyError(f"{key} is not a config key")  # a programming error, caught by the tests
    default = getattr(cls(), name)
    hint = typing.get_type_hints(cls)[name]
    choices = choices_of(hint)
    if hint is bool:
        kwargs.setdefault("action", argparse.BooleanOptionalAction)
    elif typing.get_origin(hint) is tuple:
        kwargs.setdefault("type", str)  # "a,b,c": parsed by the config loader
        default = ",".join(map(str, default))
    elif hint in (int, float):
        kwargs.setdefault("type", hint)
    elif choices:
        kwargs.setdefault("choices", choices)
    if hint is not bool and not choices:
        kwargs.setdefault("metavar", name.upper())
    parser.add_argument(
        flag,
        dest=f"cfg:{key}",
        default=None,
        help=f"{help} (default: {default}; config key {key})",
        **kwargs,
    )


def data_args(p: argparse.ArgumentParser) -> None:
    """The flags that say which nuScenes-format data a command reads."""
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
