"""Fixtures of the tracker tests: one torch thread, and the session's synthetic world with its
detections, a box-raster ReID dataset and a briefly trained checkpoint (built once)."""

from pathlib import Path

import pytest
import torch

from bev_reid.config import load_config


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tests share two cores
    yield
    torch.set_num_threads(threads)


def world_config(world, **overrides):
    """The config of a job on the synthetic world ``world`` (a conftest DataRoot)."""
    values = {
        "data.dataroot": str(world.path),
        "data.version": world.version,
        "data.num_workers": 0,
        "track.device": "cpu",
        **overrides,
    }
    return load_config(overrides=values)


@pytest.fixture(scope="session")
def track_dataset(synth_world, tmp_path_factory) -> Path:
    """Camera texture beside a painted LiDAR box raster, of the synthetic world (the demo's
    recipe)."""
    from bev_reid.reid.build import build_dataset

    out = tmp_path_factory.mktemp("track-dataset")
    cfg = world_config(
        synth_world,
        **{
            "build.out": str(out),
            "build.modalities": ["camera", "lidar"],
            "build.camera_crops": ["texture"],
            "build.lidar_raster": "box",
            "build.crop_cell": 0.25,
            "build.lidar_colour": True,
            "build.min_views": 2,
            "build.val_fraction": 0.0,
        },
    )
    build_dataset(cfg)
    return out


@pytest.fixture(scope="session")
def track_checkpoint(track_dataset, tmp_path_factory) -> Path:
    """A ReID checkpoint trained 2 steps on ``track_dataset``."""
    from bev_reid.reid.train import train_reid

    logs = tmp_path_factory.mktemp("track-reid")
    cfg = load_config(
        overrides={
            "reid_run.dataset_dir": str(track_dataset),
            "reid_run.log_dir": str(logs),
            "train_reid.device": "cpu",
            "train_reid.num_workers": 0,
            "train_reid.max_steps": 2,
            "train_reid.checkpoint_every": 2,
            "train_reid.image_every": 1000,
            "train_reid.p_identities": 4,
            "train_reid.k_views": 2,
        }
    )
    return train_reid(cfg)
