"""Camera texture crops against hand-computed cases: one pinhole camera looking along ego x at a
box, an image whose quarters have known colours."""

from pathlib import Path

import numpy as np
import pytest
import torch

from bev_reid.config import ConfigError, load_config
from bev_reid.data.records import CameraFrame
from bev_reid.reid.texture import texture_channel_names, texture_crops, texture_points

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def camera(trans=(0.0, 0.0, 0.0), forward=1.0) -> CameraFrame:
    """A 100 x 100 pixel camera at ``trans`` looking along ego +x (``forward`` 1) or -x (-1):
    focal 50 px, principal point at the centre."""
    # camera axes in ego: x right = -y (looking +x), y down = -z, z forward = +x
    rot = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    if forward < 0:
        rot = np.diag([-1.0, -1.0, 1.0]) @ rot
    intrinsics = np.array([[50.0, 0, 50], [0, 50.0, 50], [0, 0, 1]])
    return CameraFrame("CAM", "tok", Path("none.jpg"), 100, 100, intrinsics, rot, np.array(trans))


def quarters(scale: int = 1) -> np.ndarray:
    """Upper half green; lower half red on the left (u < 50), blue on the right."""
    img = np.zeros((100 // scale, 100 // scale, 3), np.uint8)
    half = 50 // scale
    img[:half] = GREEN
    img[half:, :half] = RED
    img[half:, half:] = BLUE
    return img


def box(x=10.0, y=0.0, yaw=0.0, length=2.0, width=1.0, bottom=-1.0, height=2.0):
    def t(v):
        return torch.tensor([v], dtype=torch.float32)

    return {"center": torch.tensor([[x, y]]), "yaw": t(yaw), "length": t(length),
            "width": t(width), "bottom": t(bottom), "height": t(height)}  # fmt: skip


def test_points_fill_the_footprint_at_each_level():
    points, flat = texture_points(box(), size=8, cell=0.5, levels=2)
    # 2 m x 1 m at 0.5 m: 4 rows x 2 columns inside, two levels each
    assert points.shape == (16, 3) and flat.shape == (16,)
    assert sorted(set(points[:, 2].tolist())) == [-0.5, 0.5]  # 1/4 and 3/4 of the height
    assert sorted(set(points[:, 0].tolist())) == [9.25, 9.75, 10.25, 10.75]
    assert sorted(set(points[:, 1].tolist())) == [-0.25, 0.25]
    level, rest = flat // 64, flat % 64
    row, col = rest // 8, rest % 8
    assert set(row.tolist()) == {2, 3, 4, 5} and set(col.tolist()) == {3, 4}
    assert torch.equal(points[:, 2] > 0, level == 1)
    # rows run forward, columns to the left: row 5 is the front, column 4 the left
    assert torch.equal(points[:, 0] > 10.5, row == 5) and torch.equal(points[:, 1] > 0, col == 4)
    # without zeroing, every cell of the square holds a point at each level
    every, _ = texture_points(box(), size=8, cell=0.5, levels=2, zero_outside=False)
    assert every.shape == (128, 3)


@pytest.mark.parametrize("scale", [1, 2])
def test_colours_come_from_the_pixels_the_points_project_to(scale):
    crops = texture_crops(box(), [camera()], [quarters(scale)], size=8, cell=0.5, levels=2)
    assert crops.shape == (1, 6, 8, 8)
    names = texture_channel_names(2)
    assert names[:3] == ["camera_texture_0_red", "camera_texture_0_green", "camera_texture_0_blue"]
    rgb = {lv: crops[0, 3 * lv : 3 * lv + 3] for lv in (0, 1)}  # 3 x 8 x 8 each
    # level 1 (z = +0.5, above the lens): green everywhere on the footprint
    assert torch.equal(rgb[1][:, 2:6, 3:5], torch.tensor([0.0, 1, 0]).view(3, 1, 1).expand(3, 4, 2))
    # level 0 (below the lens): the left column (+y, image left) red, the right one blue
    assert torch.equal(rgb[0][:, 2:6, 4], torch.tensor([1.0, 0, 0]).view(3, 1).expand(3, 4))
    assert torch.equal(rgb[0][:, 2:6, 3], torch.tensor([0.0, 0, 1]).view(3, 1).expand(3, 4))
    # off the footprint: zero
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:6, 3:5] = False
    assert crops[0][:, outside].abs().sum() == 0


def test_heading_turns_the_crop_and_unseen_points_stay_zero():
    # Heading +y: crop rows run along ego y, columns towards -x. The left column (b = 4) is
    # nearer the camera (x < 10): at level 0 and |y| < 1 every cell lies on the image centre
    # line's side given by y: rows with y > 0 (front half) project left of it, red.
    crops = texture_crops(box(yaw=np.pi / 2), [camera()], [quarters()], 8, 0.5, 2)
    level0 = crops[0, :3]  # 3 x 8 x 8
    assert torch.equal(level0[:, 4:6, 3:5], torch.tensor([1.0, 0, 0]).view(3, 1, 1).expand(3, 2, 2))
    assert torch.equal(level0[:, 2:4, 3:5], torch.tensor([0.0, 0, 1]).view(3, 1, 1).expand(3, 2, 2))
    # a camera looking away sees nothing: all zero; a second camera behind fills it
    away = texture_crops(box(), [camera(forward=-1.0)], [quarters()], 8, 0.5, 2)
    assert away.abs().sum() == 0
    both = texture_crops(
        box(), [camera(forward=-1.0), camera()], [quarters(), quarters()], 8, 0.5, 2
    )
    assert torch.equal(both, texture_crops(box(), [camera()], [quarters()], 8, 0.5, 2))
    # no boxes: an empty batch of crops
    none = {k: v[:0] for k, v in box().items()}
    assert texture_crops(none, [camera()], [quarters()], 8, 0.5, 2).shape == (0, 6, 8, 8)


def test_config_names_bad_camera_crops():
    with pytest.raises(ConfigError, match="camera_crops"):
        load_config(overrides={"build.camera_crops": []})
    with pytest.raises(ConfigError, match="camera_crops"):
        load_config(overrides={"build.camera_crops": ["texture", "texture"]})
    with pytest.raises(ConfigError, match="camera_crops"):
        load_config(overrides={"build.camera_crops": ["pixels"]})
    with pytest.raises(ConfigError, match="texture_levels"):
        load_config(overrides={"build.texture_levels": 0})


def test_pictures_show_the_texture_colour_averaged_over_heights():
    from bev_reid.reid.visualize import crops_to_rgb

    crops = texture_crops(box(), [camera()], [quarters()], 8, 0.5, 2)  # level 0 red|blue, 1 green
    rgb = crops_to_rgb(crops, texture_channel_names(2))  # 1 x 8 x 8 x 3
    assert np.allclose(rgb[0, 3, 4], [0.5, 0.5, 0.0]) and np.allclose(rgb[0, 3, 3], [0, 0.5, 0.5])
    assert np.allclose(rgb[0, 0, 0], 0.0)


def test_segments_through_other_boxes_are_blocked():
    from bev_reid.reid.texture import segments_blocked

    wall = {"center": np.array([[5.0, 0, 0]]), "half": np.array([[0.5, 1, 1]]), "yaw": np.zeros(1)}
    origin = np.zeros(3)
    points = np.array([[10.0, 0, 0], [10, 5, 0], [3, 0, 0], [5.2, 0.5, 0.5], [10, 0, 3]])
    # behind the wall: blocked; beside it, before it, inside it, over it: not
    assert segments_blocked(origin, points, wall).tolist() == [True, False, False, False, False]
    # turned by 90 degrees the wall is 2 m deep and 1 m wide: the line to (10, 1.6) crosses
    # x = 4.5..5.5 at y = 0.72..0.88 (inside the wall's +-1), but x = 4..6 at y = 0.64..0.96
    # (outside the turned wall's +-0.5)
    turned = dict(wall, yaw=np.array([np.pi / 2]))
    beside = np.array([[10.0, 1.6, 0], [10.0, 2.4, 0]])
    assert segments_blocked(origin, beside, wall).tolist() == [True, False]
    assert segments_blocked(origin, beside, turned).tolist() == [False, False]


def test_occluded_texture_stays_zero():
    target = box()
    clear = texture_crops(target, [camera()], [quarters()], 8, 0.5, 2)
    # a box of its own holds every point: nothing is hidden
    assert torch.equal(
        texture_crops(target, [camera()], [quarters()], 8, 0.5, 2, occluders=target), clear
    )
    # a car between the lens and the target hides it all; one beside the line of sight nothing
    front = box(x=5.0, length=1.0, width=4.0, height=4.0)
    hidden = texture_crops(target, [camera()], [quarters()], 8, 0.5, 2, occluders=front)
    assert hidden.abs().sum() == 0
    aside = box(x=5.0, y=6.0, length=1.0, width=4.0, height=4.0)
    assert torch.equal(
        texture_crops(target, [camera()], [quarters()], 8, 0.5, 2, occluders=aside), clear
    )
    # a low wall hides the bottom level only
    low = box(x=5.0, length=1.0, width=4.0, bottom=-2.0, height=2.0)  # top at the lens height
    half = texture_crops(target, [camera()], [quarters()], 8, 0.5, 2, occluders=low)
    assert half[0, :3].abs().sum() == 0 and torch.equal(half[0, 3:], clear[0, 3:])
