"""Readers of the sensor files of a nuScenes-format folder: LiDAR ``.pcd.bin`` and camera JPEGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bev_reid.data.records import NuScenesFileError, NuScenesFormatError


def read_lidar_file(path: Path) -> np.ndarray:
    """A nuScenes ``.pcd.bin``: [P, 5] float32 (x, y, z, intensity, ring) in the sensor frame.

    A file cut inside a point is refused. A file cut at a point boundary cannot be told from a
    whole one: nuScenes' tables record no file sizes or point counts per sweep (the
    ``num_lidar_pts`` of an annotation counts points in one box, not in the file).
    """
    if not path.is_file():
        raise NuScenesFileError(f"LiDAR point cloud {str(path)!r} is missing")
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % 5:
        raise NuScenesFormatError(
            f"{path}: {raw.size} floats is not a whole number of 5-float points"
        )
    return raw.reshape(-1, 5).copy()


def read_image(path: Path, at_least: tuple[int, int] | None = None) -> Image.Image:
    """Reads a camera image as RGB.

    Args:
        at_least: (W, H) the caller will resize to; a JPEG is then decoded at the smallest
            1/2, 1/4 or 1/8 scale still at least that large (DCT scaling: several times faster,
            and the image still spans the same continuous coordinates, so the geometry holds).
    """
    if not path.is_file():
        raise NuScenesFileError(f"camera image {str(path)!r} is missing")
    try:
        with Image.open(path) as img:
            if at_least is not None:
                img.draft("RGB", at_least)
            return img.convert("RGB")
    except OSError as e:
        raise NuScenesFormatError(f"camera image {str(path)!r} cannot be read: {e}") from e
