"""Shared fixtures: the nuScenes-format data sources the data tests run on.

``dataroot`` is parametrised over DATA_SOURCES; a test that takes it runs once per source.
Adding a source (e.g. the synthetic world) is one entry there. The real scene is looked up at
``$BEV_REID_NUSCENES_MINI`` or ``<repo>/../shared/data/nuscenes-mini``; tests marked ``data`` are
skipped when it is absent.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NUSCENES_MINI_ENV = "BEV_REID_NUSCENES_MINI"


@dataclass(frozen=True)
class DataRoot:
    """A nuScenes-format data source: ``NuScenes(version=version, dataroot=path)`` loads it."""

    name: str
    path: Path
    version: str


def nuscenes_mini_path() -> Path | None:
    """The real scene, or None when it is not on this machine."""
    env = os.environ.get(NUSCENES_MINI_ENV)
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "nuscenes-mini"
    return path if (path / "v1.0-mini" / "sample.json").is_file() else None


def _nuscenes_mini(tmp_path_factory: pytest.TempPathFactory) -> DataRoot:
    path = nuscenes_mini_path()
    if path is None:
        pytest.skip(f"real nuScenes scene not found (set {NUSCENES_MINI_ENV})")
    return DataRoot("nuscenes-mini", path, "v1.0-mini")


# A small synthetic world, made once per test session (both scene layouts, day and night).
SYNTH_TEST_CONFIG = dict(scenes=2, keyframes=6, seed=7)


def _synthetic(tmp_path_factory: pytest.TempPathFactory) -> DataRoot:
    return synth_world_root(tmp_path_factory)


_SYNTH_ROOT: list[DataRoot] = []


def synth_world_root(tmp_path_factory: pytest.TempPathFactory) -> DataRoot:
    """The session's synthetic world (generated on first use)."""
    if not _SYNTH_ROOT:
        from bev_reid.config import SynthConfig
        from bev_reid.synth.generate import generate_world

        cfg = SynthConfig(**SYNTH_TEST_CONFIG)
        path = generate_world(cfg, out=tmp_path_factory.mktemp("synth"), progress=False)
        _SYNTH_ROOT.append(DataRoot("synthetic", Path(path), cfg.version))
    return _SYNTH_ROOT[0]


# name -> (factory, marks). A factory may build its data under tmp_path_factory.
DATA_SOURCES: dict[str, tuple[Callable[[pytest.TempPathFactory], DataRoot], tuple]] = {
    "nuscenes-mini": (_nuscenes_mini, (pytest.mark.data,)),
    "synthetic": (_synthetic, ()),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if nuscenes_mini_path() is not None:
        return
    skip = pytest.mark.skip(reason=f"real nuScenes scene not found (set {NUSCENES_MINI_ENV})")
    for item in items:
        if item.get_closest_marker("data") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def nuscenes_mini() -> Path:
    """Path of the real scene (tests using it should be marked ``data``)."""
    path = nuscenes_mini_path()
    if path is None:
        pytest.skip(f"real nuScenes scene not found (set {NUSCENES_MINI_ENV})")
    return path


@pytest.fixture(
    scope="session",
    params=[pytest.param(name, marks=marks) for name, (_, marks) in DATA_SOURCES.items()],
)
def dataroot(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> DataRoot:
    factory, _ = DATA_SOURCES[request.param]
    return factory(tmp_path_factory)


@pytest.fixture(scope="session")
def synth_world(tmp_path_factory: pytest.TempPathFactory) -> DataRoot:
    """A small synthetic nuScenes-format world shared by the tests of later stages."""
    return synth_world_root(tmp_path_factory)
