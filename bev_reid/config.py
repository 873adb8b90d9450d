"""Configuration: one frozen dataclass per section, loaded from YAML, overridden by dotted keys.

Every default of the project lives here, once. A YAML file names only what it changes; an unknown
key is an error that lists the valid ones; ``section.key=value`` overrides from the command line
are parsed with YAML rules (``3`` is an int, ``[1, 2]`` a list, ``true`` a bool).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


@dataclass(frozen=True)
class GridConfig:
    """The BEV grid and the depth bins of the camera frustum: (min, max, step) per axis, metres."""

    xbound: tuple[float, float, float] = (-50.0, 50.0, 0.5)
    ybound: tuple[float, float, float] = (-50.0, 50.0, 0.5)
    zbound: tuple[float, float, float] = (-10.0, 10.0, 20.0)
    dbound: tuple[float, float, float] = (4.0, 45.0, 1.0)

    def __post_init__(self) -> None:
        for name in ("xbound", "ybound", "zbound", "dbound"):
            lo, hi, step = getattr(self, name)
            if not (hi > lo and step > 0):
                raise ConfigError(f"grid.{name} must be (min, max, step) with max > min and step > 0, got {(lo, hi, step)}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Cells along (x, y, z)."""
        return tuple(int(round((b[1] - b[0]) / b[2])) for b in (self.xbound, self.ybound, self.zbound))  # type: ignore[return-value]

    @property
    def depth_bins(self) -> int:
        lo, hi, step = self.dbound
        return int(round((hi - lo) / step))


@dataclass(frozen=True)
class DataConfig:
    """Reading nuScenes keyframes for the camera model."""

    dataroot: str = "data/nuscenes"
    version: str = "v1.0-trainval"
    scenes: tuple[str, ...] = ()  # explicit scene names; empty = the split the command needs
    cameras: tuple[str, ...] = (
        "CAM_FRONT_LEFT",
        "CAM_FRONT",
        "CAM_FRONT_RIGHT",
        "CAM_BACK_LEFT",
        "CAM_BACK",
        "CAM_BACK_RIGHT",
    )
    final_dim: tuple[int, int] = (128, 352)  # (H, W) fed to the network
    # Training-time augmentation (lift-splat-shoot's): scale, bottom crop share, flip, rotation.
    resize_lim: tuple[float, float] = (0.193, 0.225)
    bot_pct_lim: tuple[float, float] = (0.0, 0.22)
    rot_lim: tuple[float, float] = (-5.4, 5.4)  # degrees
    rand_flip: bool = True
    categories: tuple[str, ...] = ("vehicle",)  # category name prefixes that make the BEV mask
    num_workers: int = 2


@dataclass(frozen=True)
class SynthConfig:
    """The offline synthetic nuScenes-format world (`bev-reid synth`)."""

    out: str = "data/synth"
    scenes: int = 4
    keyframes: int = 20
    seed: int = 0
    version: str = "v1.0-mini"


@dataclass(frozen=True)
class Config:
    grid: GridConfig = field(default_factory=GridConfig)
    data: DataConfig = field(default_factory=DataConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)


# ---------------------------------------------------------------------------------------------
# Loading


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Turns a YAML value into the annotated type, or raises ConfigError naming ``where``."""
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return _build(tp, value, where)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is tuple:
        if isinstance(value, str) and args and args[-1] is Ellipsis:
            value = [v for v in value.split(",") if v]  # "a,b" on the command line
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if args and args[-1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{where} must have {len(args)} items, got {len(value)}: {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type[T], values: dict[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    names = _field_names(cls)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(repr(f'{where}.{k}'.lstrip('.')) for k in unknown)}; "
            f"valid keys{' of ' + where if where else ''}: {', '.join(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}".lstrip(".")) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - schema mismatch is a programming error
        raise ConfigError(f"{where or 'config'}: {e}") from e


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Splits ``section.key=value`` and parses the value as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load_config(
    path: str | os.PathLike | None = None,
    overrides: typing.Iterable[str] | dict[str, Any] = (),
    cls: type[T] = Config,  # type: ignore[assignment]
) -> T:
    """Loads ``cls`` from an optional YAML file, then applies dotted overrides.

    Args:
        path: a YAML file whose top-level keys are sections of ``cls``; None for the defaults.
        overrides: ``["data.version=v1.0-mini", ...]`` or a ``{"data.version": ...}`` mapping;
            values of None are skipped, so unset command-line flags change nothing.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections")
        tree = loaded or {}
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    for key, value in items:
        if value is not None:
            _set_dotted(tree, key, value)
    return _build(cls, tree, "")


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML-safe data (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Writes the resolved config as YAML, atomically."""
    from bev_reid.engine.io import atomic_write_text

    return atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
