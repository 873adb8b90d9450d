"""Fixtures of the ReID tests: one LiDAR-only dataset of the synthetic world, one torch thread."""

from pathlib import Path

import pytest
import torch

from bev_reid.config import load_config
from bev_reid.reid.build import build_dataset


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tests share two cores
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def reid_dataset(synth_world, tmp_path_factory) -> Path:
    """A LiDAR-only ReID dataset of the synthetic world (day and night scenes)."""
    out = tmp_path_factory.mktemp("reid-dataset")
    cfg = load_config(
        overrides={
            "data.dataroot": str(synth_world.path),
            "data.version": synth_world.version,
            "data.num_workers": 0,
            "build.out": str(out),
            "build.modalities": ["lidar"],
            "build.min_views": 3,
            "build.val_fraction": 0.3,
        }
    )
    build_dataset(cfg)
    return out
