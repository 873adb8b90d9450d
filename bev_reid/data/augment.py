"""Image augmentation of lift-splat-shoot (resize, crop, flip, rotate), with the affine map it
applies to pixel coordinates, so the geometry can undo it.

Image coordinates are continuous in PIL's convention: pixel (row i, column j) covers
[j, j+1) x [i, i+1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from bev_reid.config import DataConfig


@dataclass(frozen=True)
class ImageAug:
    """Resize, crop, flip, rotate of one camera image, and the affine map it applies to pixels."""

    src_size: tuple[int, int]  # (W, H) of the original image
    resize_dims: tuple[int, int]  # (W, H) after resizing
    crop: tuple[int, int, int, int]  # (left, top, right, bottom) in the resized image
    flip: bool  # left-right, after the crop
    rotate: float  # degrees, counter-clockwise as displayed, about the crop's centre

    def matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """(post_rot [3, 3], post_tran [3]): original pixel p -> post_rot @ p + post_tran."""
        rot = np.diag(
            [self.resize_dims[0] / self.src_size[0], self.resize_dims[1] / self.src_size[1]]
        )
        tran = -np.asarray(self.crop[:2], dtype=np.float64)
        width, height = self.crop[2] - self.crop[0], self.crop[3] - self.crop[1]
        if self.flip:
            a = np.array([[-1.0, 0.0], [0.0, 1.0]])
            rot, tran = a @ rot, a @ tran + np.array([width, 0.0])
        h = math.radians(self.rotate)
        a = np.array([[math.cos(h), math.sin(h)], [-math.sin(h), math.cos(h)]])
        centre = np.array([width, height]) / 2
        rot, tran = a @ rot, a @ (tran - centre) + centre
        post_rot, post_tran = np.eye(3), np.zeros(3)
        post_rot[:2, :2], post_tran[:2] = rot, tran
        return post_rot, post_tran

    def apply(self, img: Image.Image) -> Image.Image:
        img = img.resize(self.resize_dims, resample=Image.BILINEAR)
        img = img.crop(self.crop)  # zero-padded where the crop leaves the image
        if self.flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return img.rotate(self.rotate, resample=Image.BILINEAR)


def sample_augmentation(
    cfg: DataConfig, width: int, height: int, rng: np.random.Generator | None
) -> ImageAug:
    """A random training augmentation, or the fixed validation one when ``rng`` is None."""
    final_h, final_w = cfg.final_dim
    if rng is not None:
        resize = rng.uniform(*cfg.resize_lim)
        bot_pct = rng.uniform(*cfg.bot_pct_lim)
    else:
        resize = max(final_h / height, final_w / width)
        bot_pct = float(np.mean(cfg.bot_pct_lim))
    # round, not int(): 1600 * 0.22 must give 352, not 351.99999 -> 351
    new_w, new_h = int(round(width * resize)), int(round(height * resize))
    crop_h = int((1 - bot_pct) * new_h) - final_h
    if rng is not None:
        crop_w = int(rng.uniform(0, max(0, new_w - final_w)))
        flip = bool(cfg.rand_flip and rng.integers(2))
        rotate = float(rng.uniform(*cfg.rot_lim))
    else:
        crop_w, flip, rotate = int(max(0, new_w - final_w) / 2), False, 0.0
    return ImageAug(
        (width, height),
        (new_w, new_h),
        (crop_w, crop_h, crop_w + final_w, crop_h + final_h),
        flip,
        rotate,
    )


def jitter_colours(
    img: np.ndarray, strength: tuple[float, float, float], rng: np.random.Generator
) -> np.ndarray:
    """Photometric augmentation of one image [H, W, 3] in [0, 1]: brightness (a gain), contrast
    (about the image's mean grey) and saturation (about each pixel's grey), each factor drawn
    from [1 - s, 1 + s] for its strength s, then clipped to [0, 1]. The geometry does not move.
    """
    brightness, contrast, saturation = (rng.uniform(1 - s, 1 + s) for s in strength)
    grey = img @ np.asarray([0.299, 0.587, 0.114], dtype=img.dtype)  # H x W
    out = img * brightness
    mean = float(grey.mean()) * brightness
    out = (out - mean) * contrast + mean
    grey = grey[..., None] * brightness
    grey = (grey - mean) * contrast + mean
    out = (out - grey) * saturation + grey
    return np.clip(out, 0.0, 1.0, out=out)
