"""Reading a ReID dataset folder written by `bev-reid build-dataset`.

Layout:
- ``object_data.json``: format version, grid and crop settings, modalities and channel names,
  the LSS checkpoint used, filters, and one record per identity (integer id, nuScenes instance
  token, category, scene, number of views, split). Written last: its presence means the folder
  is whole. Training identities have ids 0..T-1, validation ones T..N-1.
- ``views.jsonl``: one record per view (row ``index`` of crops.npy, identity ``id``, split,
  instance and sample tokens, scene, timestamp, cameras that see it, IoU, LiDAR points,
  visibility, condition, the modalities whose channels are all zero).
- ``crops.npy``: [V, C, S, S] float16, memory-mapped, so datasets larger than RAM train fine.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

FORMAT_VERSION = 1
OBJECT_DATA = "object_data.json"
LIDAR_CHANNELS = ("lidar_occupancy", "lidar_max_height", "lidar_mean_intensity")
SPLITS = ("train", "val", "all")


def modality_channels(names: Sequence[str], modalities: Sequence[str]) -> list[str]:
    """The channel names of the given modalities (``camera`` -> ``camera_*``, ``lidar`` ->
    ``lidar_*``), in dataset order; all names when ``modalities`` is empty."""
    if not modalities:
        return list(names)
    return [n for n in names if n.split("_", 1)[0] in set(modalities)]


def camera_channel_names(count: int) -> list[str]:
    return [f"camera_{i:02d}" for i in range(count)]


def learnt_categories(object_data: dict[str, Any]) -> list[str] | None:
    """The sorted categories of a dataset's training identities (object_data.json), or None
    when it does not list them."""
    identities = object_data.get("identities")
    if not isinstance(identities, list):
        return None
    return sorted({i["category"] for i in identities if i.get("split", "train") == "train"})


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
        channels: the channels the crops keep, by name, in this order (e.g. a trained model's);
            None keeps all. See :func:`modality_channels` to pick them by modality.
    Items: ``(crop [C, S, S] float32 tensor, identity id, view record dict)``. Views with
    nothing in the chosen channels (their modalities are all among the view's
    ``empty_modalities``: e.g. a camera texture hidden behind other vehicles) are left out, as
    the builder leaves out empty crops.
    """

    def __init__(
        self, path: str | Path, split: str = "train", channels: Sequence[str] | None = None
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.root = Path(path)
        self.meta = read_object_data(self.root)
        self.split = split
        with open(self.root / "views.jsonl", encoding="utf-8") as f:
            views = [json.loads(line) for line in f if line.strip()]
        views = [v for v in views if split == "all" or v["split"] == split]
        self._crops: np.ndarray | None = None  # opened lazily, once per DataLoader worker
        stored = list(self.meta["channels"])
        names = stored if channels is None else list(channels)
        missing = [n for n in names if n not in stored]
        if missing or not names:
            raise ValueError(
                f"ReID dataset {str(self.root)!r} has no channel(s) "
                f"{', '.join(missing) or '(none asked)'}; it has {', '.join(stored)}"
            )
        # Rows of crops.npy's channel axis to read (a slice of all of them reads fastest).
        self._channel_index: list[int] | slice = (
            slice(None) if names == stored else [stored.index(n) for n in names]
        )
        self._use(names, views)

    def _use(self, names: Sequence[str], views: list[dict[str, Any]]) -> None:
        """Keeps the channels ``names``, and those of ``views`` with something in them."""
        self.channel_names: list[str] = list(names)
        self.camera_channels = [i for i, n in enumerate(names) if n.startswith("camera_")]
        self.lidar_channels = [i for i, n in enumerate(names) if n.startswith("lidar_")]
        used = {n.split("_", 1)[0] for n in names}
        self.views = [v for v in views if not used <= set(v.get("empty_modalities", ()))]

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
        crop = torch.from_numpy(self.crop_array(view["index"]))  # C x S x S
        return crop, view["id"], view

    @classmethod
    def of_modalities(
        cls, path: str | Path, split: str = "train", modalities: Sequence[str] = ()
    ) -> ReIDDataset:
        """The views with the channels of ``modalities`` only (camera, lidar; () = all)."""
        names = modality_channels(read_object_data(path)["channels"], modalities)
        if not names:
            raise ValueError(
                f"ReID dataset {str(path)!r} has no {' or '.join(modalities)} channels "
                f"(reid_run.modalities); it was built with build.modalities "
                f"{read_object_data(path)['modalities']}"
            )
        return cls(path, split, names)

    def with_channels(self, names: Sequence[str]) -> ReIDDataset:
        """The same views with other channels of the same folder (nothing is re-read), less
        those with nothing in the new channels."""
        if list(names) == self.channel_names:
            return self
        other = copy.copy(self)
        stored = list(self.meta["channels"])
        missing = [n for n in names if n not in stored]
        if missing:
            raise ValueError(
                f"ReID dataset {str(self.root)!r} has no channel(s) {', '.join(missing)}; "
                f"it has {', '.join(stored)}"
            )
        other._channel_index = [stored.index(n) for n in names]
        other._use(names, self.views)
        return other

    def crop_array(self, rows: int | Sequence[int] | np.ndarray) -> np.ndarray:
        """Crops of crops.npy rows (a view's ``index``), the chosen channels, float32:
        [C, S, S] for one row, [n, C, S, S] for several."""
        crops = np.asarray(self.crops[rows], dtype=np.float32)
        return crops[..., self._channel_index, :, :]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_crops"] = None  # each worker maps the file itself
        return state
