"""Reading a ReID dataset folder written by `bev-reid build-dataset`.

Layout:
- ``object_data.json``: format version, grid and crop settings, modalities and channel names,
  the LSS checkpoint used, filters, and one record per identity (integer id, nuScenes instance
  token, category, scene, number of views, split). Written last: its presence means the folder
  is whole. Training identities have ids 0..T-1, validation ones T..N-1.
- ``views.jsonl``: one record per view (row ``index`` of crops.npy, identity ``id``, split,
  instance and sample tokens, scene, timestamp, cameras that see it, IoU, LiDAR points,
  visibility, condition).
- ``crops.npy``: [V, C, S, S] float16, memory-mapped, so datasets larger than RAM train fine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

FORMAT_VERSION = 1
OBJECT_DATA = "object_data.json"
LIDAR_CHANNELS = ("lidar_occupancy", "lidar_max_height", "lidar_mean_intensity")
SPLITS = ("train", "val", "all")


def camera_channel_names(count: int) -> list[str]:
    return [f"camera_{i:02d}" for i in range(count)]


def read_object_data(path: str | Path) -> dict[str, Any]:
    """object_data.json of a dataset folder, checked; a clear error when the folder is not a
    finished dataset."""
    root = Path(path)
    meta = root / OBJECT_DATA
    if not root.is_dir():
        raise FileNotFoundError(f"ReID dataset folder {str(root)!r} does not exist")
    if not meta.is_file():
        raise FileNotFoundError(
            f"{str(meta)!r} is missing: {str(root)!r} is not a finished ReID dataset "
            "(run `bev-reid build-dataset`, or its --merge step after sharded runs)"
        )
    data = json.loads(meta.read_text(encoding="utf-8"))
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{str(meta)!r} has format {data.get('format_version')!r}; "
            f"this bev-reid reads {FORMAT_VERSION}"
        )
    return data


class ReIDDataset(Dataset):
    """Views of a ReID dataset folder.

    Args:
        path: the dataset folder.
        split: ``train``, ``val`` or ``all``.
    Items: ``(crop [C, S, S] float32 tensor, identity id, view record dict)``.
    """

    def __init__(self, path: str | Path, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.root = Path(path)
        self.meta = read_object_data(self.root)
        self.split = split
        with open(self.root / "views.jsonl", encoding="utf-8") as f:
            views = [json.loads(line) for line in f if line.strip()]
        self.views = [v for v in views if split == "all" or v["split"] == split]
        self._crops: np.ndarray | None = None  # opened lazily, once per DataLoader worker
        self.channel_names: list[str] = list(self.meta["channels"])
        self.camera_channels = [
            i for i, n in enumerate(self.channel_names) if n.startswith("camera_")
        ]
        self.lidar_channels = [
            i for i, n in enumerate(self.channel_names) if n.startswith("lidar_")
        ]

    @property
    def crops(self) -> np.ndarray:
        if self._crops is None:
            self._crops = np.load(self.root / "crops.npy", mmap_mode="r")
            if self._crops.shape[0] != self.meta["num_views"]:
                raise ValueError(
                    f"{self.root / 'crops.npy'} holds {self._crops.shape[0]} crops, "
                    f"object_data.json says {self.meta['num_views']}"
                )
        return self._crops

    @property
    def num_classes(self) -> int:
        """Identities the classifier learns: the training ones (ids 0..T-1)."""
        return int(self.meta["num_train_identities"])

    @property
    def ids(self) -> list[int]:
        return [v["id"] for v in self.views]

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, dict[str, Any]]:
        view = self.views[index]
        crop = torch.from_numpy(np.asarray(self.crops[view["index"]], dtype=np.float32))
        return crop, view["id"], view

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_crops"] = None  # each worker maps the file itself
        return state
