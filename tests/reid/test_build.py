"""The ReID dataset builder on the synthetic world: identities against the devkit, heading
alignment, resume after a kill, shards, the camera path, and clear errors."""

import hashlib
import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from nuscenes.nuscenes import NuScenes

from bev_reid.config import GridConfig, SynthConfig, load_config, to_dict
from bev_reid.engine.checkpoint import CheckpointError, save_checkpoint
from bev_reid.lss.model import build_model
from bev_reid.reid import build as build_module
from bev_reid.reid.build import build_dataset
from bev_reid.reid.crops import lidar_box_channel_names
from bev_reid.reid.dataset import ReIDDataset
from bev_reid.synth.generate import generate_world

FILES = ("crops.npy", "views.jsonl", "object_data.json")


def cfg_for(root, out, **extra):
    overrides = {
        "data.dataroot": str(root.path),
        "data.version": root.version,
        "data.num_workers": 0,
        "build.out": str(out),
        "build.modalities": ["lidar"],
        "build.min_views": 3,
        "build.part_size": 4,
        "build.val_fraction": 0.25,
    }
    overrides.update(extra)
    return load_config(overrides=overrides)


def empty_views(folder: Path) -> set[str]:
    lines = (folder / "dropped.jsonl").read_text().splitlines()
    return {json.loads(line)["annotation_token"] for line in lines}


def digest(folder: Path) -> dict[str, str]:
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in FILES}


def boxes_as_tensors(boxes: list[dict]) -> dict[str, torch.Tensor]:
    """Box dicts (``center`` x, y, z; ``wlh``; ``yaw``) as the crop functions take them."""
    return {
        "center": torch.tensor(
            [[float(b["center"][0]), float(b["center"][1])] for b in boxes]
        ).reshape(-1, 2),
        "yaw": torch.tensor([float(b["yaw"]) for b in boxes]),
        "length": torch.tensor([float(b["wlh"][1]) for b in boxes]),
        "width": torch.tensor([float(b["wlh"][0]) for b in boxes]),
        "bottom": torch.tensor([float(b["center"][2] - b["wlh"][2] / 2) for b in boxes]),
        "height": torch.tensor([float(b["wlh"][2]) for b in boxes]),
    }


def painting_images(db, token: str, channels) -> tuple[list, list[np.ndarray]]:
    """A keyframe's cameras and their images read at 1 / PAINT_SCALE, as the builder reads them."""
    from bev_reid.data.files import read_image
    from bev_reid.data.keyframes import PAINT_SCALE

    cams = [db.camera(token, ch) for ch in channels]
    size = [(c.width // PAINT_SCALE, c.height // PAINT_SCALE) for c in cams]
    return cams, [np.asarray(read_image(c.path, s)) for c, s in zip(cams, size, strict=True)]


@pytest.fixture(scope="module")
def clean_run(synth_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    build_dataset(cfg_for(synth_world, out))
    return out


def test_identities_match_the_devkit(synth_world, clean_run):
    """Every vehicle seen in the grid in at least min_views keyframes is there, no other."""
    nusc = NuScenes(synth_world.version, str(synth_world.path), verbose=False)
    grid = GridConfig()
    views: dict[str, int] = {}
    empty = empty_views(clean_run)  # views whose crop held nothing, dropped (tested below)
    for sample in nusc.sample:
        lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        pose = nusc.get("ego_pose", lidar["ego_pose_token"])
        for token in sample["anns"]:
            ann = nusc.get("sample_annotation", token)
            if not ann["category_name"].startswith("vehicle"):
                continue
            box = nusc.get_box(token)
            box.translate(-np.array(pose["translation"]))
            box.rotate(__import__("pyquaternion").Quaternion(pose["rotation"]).inverse)
            x, y = box.center[:2]
            on_grid = grid.xbound[0] <= x < grid.xbound[1] and grid.ybound[0] <= y < grid.ybound[1]
            if on_grid and token not in empty:
                views[ann["instance_token"]] = views.get(ann["instance_token"], 0) + 1
    expected = {t: n for t, n in views.items() if n >= 3}
    meta = json.loads((clean_run / "object_data.json").read_text())
    assert meta["dropped"]["empty"] == len(empty)
    got = {r["instance_token"]: r["num_views"] for r in meta["identities"]}
    assert got == expected and len(got) >= 10
    ids = [r["id"] for r in meta["identities"]]
    assert ids == list(range(len(ids)))  # contiguous
    train = [r["id"] for r in meta["identities"] if r["split"] == "train"]
    assert train == list(range(meta["num_train_identities"])) and meta["num_val_identities"] >= 1
    ds = ReIDDataset(clean_run, "all")
    assert len(ds) == meta["num_views"] == sum(expected.values())
    crop, ident, view = ds[0]
    assert crop.shape == (3, 24, 24) and crop.dtype == torch.float32 and ident == view["id"]
    assert ds.channel_names == ["lidar_occupancy", "lidar_max_height", "lidar_mean_intensity"]
    assert len(ReIDDataset(clean_run, "train")) + len(ReIDDataset(clean_run, "val")) == len(ds)


def test_heading_alignment_makes_views_alike(tmp_path_factory):
    """A vehicle seen while the ego turns: aligned crops agree, unaligned ones do not."""
    world = generate_world(
        SynthConfig(scenes=1, keyframes=16, seed=5, layouts=("loop",), conditions=("day",)),
        out=tmp_path_factory.mktemp("loop"),
        progress=False,
    )

    class Root:
        path, version = world, "v1.0-mini"

    sets = {}
    for align in (True, False):
        out = tmp_path_factory.mktemp(f"align{align}")
        build_dataset(
            cfg_for(
                Root,
                out,
                **{
                    "build.align_heading": align,
                    "build.min_lidar_points": 20,
                    "build.val_fraction": 0.0,
                },
            )
        )
        sets[align] = ReIDDataset(out, "all")
    aligned, unaligned = sets[True], sets[False]

    def cos(a, b):
        a, b = a.flatten(), b.flatten()
        return float(a @ b / (a.norm() * b.norm() + 1e-9))

    by_id: dict[int, list[int]] = {}
    for i, v in enumerate(aligned.views):
        by_id.setdefault(v["id"], []).append(i)
    scores = []
    for idx in by_id.values():
        for i, j in itertools.combinations(idx, 2):
            vi, vj = aligned.views[i], aligned.views[j]
            turn = abs((vi["yaw"] - vj["yaw"] + np.pi) % (2 * np.pi) - np.pi)
            if turn > 0.5 and abs(vi["timestamp"] - vj["timestamp"]) <= 1.5e6:
                occupancy = (
                    cos(aligned[i][0][0], aligned[j][0][0]),
                    cos(unaligned[i][0][0], unaligned[j][0][0]),
                )
                scores.append(occupancy)
    assert len(scores) >= 5, "the ego should turn in a loop scene"
    a, u = np.mean(scores, 0)
    assert a > 0.55 and a > u + 0.25, (a, u)


@pytest.mark.parametrize("colour", [False, True])
def test_box_raster_crops_come_from_the_points_in_each_box(
    synth_world, clean_run, tmp_path, colour
):
    """build.lidar_raster = box: the same views as the grid raster, and each crop is the view's
    box rasterised from the keyframe's LiDAR points read back through the devkit; with
    build.lidar_colour, painted from the keyframe's six images read at 1 / PAINT_SCALE."""
    from nuscenes.utils.data_classes import LidarPointCloud

    from bev_reid.data.lidar import paint_points
    from bev_reid.data.nuscenes import NuScenesDB
    from bev_reid.reid.crops import lidar_box_crops

    cfg = cfg_for(synth_world, tmp_path / "box", **{
        "build.lidar_raster": "box", "build.crop_cell": 0.25, "build.lidar_bands": [0.4, 1.2],
        "build.lidar_colour": colour,
    })  # fmt: skip
    meta = json.loads(build_dataset(cfg).read_text())
    assert meta["channels"] == lidar_box_channel_names((0.4, 1.2), colour)
    assert len(meta["channels"]) == 6 + 3 * colour and meta["crop"]["lidar_colour"] == colour
    assert meta["crop"]["cell_m"] == [0.25, 0.25] and meta["crop"]["lidar_raster"] == "box"
    ds, grid_ds = ReIDDataset(tmp_path / "box", "all"), ReIDDataset(clean_run, "all")
    # The same boxes pass the filters; the two rasters differ only in which crops are empty.
    empty = empty_views(tmp_path / "box")
    tokens = {v["annotation_token"] for v in ds.views}
    assert not tokens & empty
    missing = [v for v in grid_ds.views if v["annotation_token"] not in tokens | empty]
    kept = Counter(v["instance_token"] for v in ds.views)
    # A grid view missing from the box dataset lost its identity to min_views (3).
    assert all(kept[v["instance_token"]] == 0 for v in missing), missing[:3]
    assert len(ds) >= 0.9 * len(grid_ds)
    nusc = NuScenes(synth_world.version, str(synth_world.path), verbose=False)
    db = NuScenesDB(synth_world.path, synth_world.version)
    for view in ds.views[:: max(1, len(ds) // 12)]:
        sample = nusc.get("sample", view["sample_token"])
        lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        cloud = LidarPointCloud.from_file(str(synth_world.path / lidar["filename"]))
        sensor = nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"])
        cloud.rotate(__import__("pyquaternion").Quaternion(sensor["rotation"]).rotation_matrix)
        cloud.translate(np.array(sensor["translation"]))  # sensor -> ego frame
        box = boxes_as_tensors([view])
        points, colours = cloud.points.T.copy(), None
        if colour:
            cams, images = painting_images(db, view["sample_token"], cfg.data.cameras)
            colours = torch.from_numpy(paint_points(points, cams, images))
        want = lidar_box_crops(torch.from_numpy(points), box, 24, 0.25, (0.4, 1.2), colours=colours)
        got = ds[ds.views.index(view)][0]
        # float16 storage, and view records rounded to the millimetre (yaw to 1e-4 rad): a point
        # within a millimetre of a cell edge may land in the next cell (two cells differ)
        assert want[0, 0].sum() > 0 and (not colour or want[0, 6:].sum() > 0)
        far = (got - want[0]).abs() > 1e-3 + 2e-3 * want[0].abs()  # C x S x S
        moved = far.any(0).float().mean()
        assert moved < 0.02, f"{view['annotation_token']}: {moved:.3f} of the cells differ"


def test_texture_crops_need_no_lss_and_come_from_the_images(
    synth_world, clean_run, tmp_path, capsys
):
    """build.camera_crops = texture: camera channels without an LSS checkpoint, each crop the
    view's box textured from the keyframe's six images read back at 1 / PAINT_SCALE; beside
    painted LiDAR, camera channels come first."""
    from bev_reid.data.nuscenes import NuScenesDB
    from bev_reid.data.raster import box_in_grid
    from bev_reid.reid.texture import texture_channel_names, texture_crops

    cfg = cfg_for(synth_world, tmp_path / "tex", **{
        "build.modalities": ["camera", "lidar"], "build.camera_crops": ["texture"],
        "build.texture_levels": 3, "build.lidar_raster": "box", "build.crop_cell": 0.25,
        "build.checkpoint": str(tmp_path / "never-read.json"),
    })  # fmt: skip
    meta = json.loads(build_dataset(cfg).read_text())
    # a checkpoint given but not needed is not read, and the user is told
    assert "never-read.json' is not read: no crop holds camera BEV features" in (
        capsys.readouterr().err
    )
    assert meta["channels"] == texture_channel_names(3) + lidar_box_channel_names((0.5, 1.0, 1.5))
    assert meta["lss_checkpoint"] is None and meta["crop"]["camera_crops"] == ["texture"]
    ds = ReIDDataset(tmp_path / "tex", "all")
    assert ds.camera_channels == list(range(9))
    db = NuScenesDB(synth_world.path, synth_world.version)
    lit = 0
    for view in ds.views[:: max(1, len(ds) // 10)]:
        cams, images = painting_images(db, view["sample_token"], cfg.data.cameras)
        box = boxes_as_tensors([view])
        walls = [b for b in db.boxes(view["sample_token"]) if box_in_grid(b, cfg.grid)]
        occluders = boxes_as_tensors(
            [{"center": b.center, "wlh": b.wlh, "yaw": b.yaw} for b in walls]
        )
        want = texture_crops(box, cams, images, 24, 0.25, 3, occluders=occluders)[0]
        got = ds[ds.views.index(view)][0][:9]
        lit += int(want.abs().sum() > 0)
        # float16 storage, and boxes rounded to the millimetre: a point on a pixel edge may
        # take the neighbouring pixel
        far = (got - want).abs() > 1e-3 + 2e-3 * want.abs()  # C x S x S
        moved = far.any(0).float().mean()
        assert moved < 0.03, f"{view['annotation_token']}: {moved:.3f} of the cells differ"
    assert lit >= 5
    # Views hidden from every camera keep their LiDAR; a camera-only run leaves them out.
    for i, view in enumerate(ds.views):
        crop = ds[i][0]
        assert ("camera" in view["empty_modalities"]) == (crop[:9].abs().sum() == 0)
        assert ("lidar" in view["empty_modalities"]) == (crop[9:].abs().sum() == 0)
    hidden = [v for v in ds.views if "camera" in v["empty_modalities"]]
    camera_only = ReIDDataset.of_modalities(tmp_path / "tex", "all", ["camera"])
    assert len(camera_only) == len(ds) - len(hidden) and hidden
    assert ds.with_channels(camera_only.channel_names).views == camera_only.views
    # camera BEV features beside the texture: the LSS checkpoint is needed again
    with pytest.raises(ValueError, match="needs --checkpoint"):
        build_dataset(cfg_for(synth_world, tmp_path / "c", **{
            "build.modalities": ["camera"], "build.camera_crops": ["bev", "texture"]}))  # fmt: skip


def hand_noised(box: dict, copy: int, noise_m: float, size_noise: float, yaw_deg: float) -> dict:
    """A box dict (center, wlh, yaw, token) moved by the detections' noise model drawn by hand:
    x, y ~ N(0, noise_m), z ~ N(0, noise_m / 2), each of w, l, h times 1 + N(0, size_noise),
    heading + N(0, yaw_deg) degrees; the stream seeded by the copy and the annotation."""
    from bev_reid.track.degrade import rng_for

    rng = rng_for(copy, f"box-noise:{box['token']}")
    dx, dy, dz = rng.normal(0, noise_m), rng.normal(0, noise_m), rng.normal(0, noise_m / 2)
    factors = [1 + rng.normal(0, size_noise) for _ in range(3)]
    turn = np.radians(rng.normal(0, yaw_deg))
    (x, y, z), wlh = box["center"], box["wlh"]
    return {
        "center": (x + dx, y + dy, z + dz),
        "wlh": [max(0.2, a * f) for a, f in zip(wlh, factors, strict=True)],
        "yaw": box["yaw"] + turn,
    }


def test_noisy_copies_are_training_views_cut_from_detection_like_boxes(synth_world, tmp_path):
    """build.box_noise_copies: each training view is cut again from copies of its box moved,
    resized and turned by the detections' noise model (the module doc of
    bev_reid.track.degrade), the noise drawn here by hand from the same seeded stream; the
    annotated views and the identities are the clean build's, and validation has no copies."""
    from nuscenes.utils.data_classes import LidarPointCloud

    from bev_reid.reid.crops import lidar_box_crops

    box = {"build.lidar_raster": "box", "build.crop_cell": 0.25, "build.lidar_bands": [0.4, 1.2]}
    clean = build_dataset(cfg_for(synth_world, tmp_path / "clean", **box))
    noise = {"track.det_noise_m": 0.3, "track.det_size_noise": 0.1, "track.det_yaw_noise_deg": 8}
    cfg = cfg_for(synth_world, tmp_path / "noisy", **box, **noise, **{"build.box_noise_copies": 2})
    noisy = json.loads(build_dataset(cfg).read_text())
    assert noisy["identities"] == json.loads(clean.read_text())["identities"]
    assert noisy["box_noise"] == {
        "copies": 2, "det_noise_m": 0.3, "det_size_noise": 0.1, "det_yaw_noise_deg": 8
    }  # fmt: skip
    ds, base = ReIDDataset(tmp_path / "noisy", "all"), ReIDDataset(tmp_path / "clean", "all")
    annotated = [i for i, v in enumerate(ds.views) if v["box_noise"] == 0]
    assert [ds.views[i]["annotation_token"] for i in annotated] == [
        v["annotation_token"] for v in base.views
    ]
    assert np.array_equal(ds.crop_array(annotated), base.crop_array(range(len(base))))
    copies = Counter((v["annotation_token"], v["split"]) for v in ds.views if v["box_noise"])
    assert {split for _, split in copies} == {"train"}  # validation: annotated boxes only
    train = [v for v in base.views if v["split"] == "train"]
    assert sum(copies.values()) >= 1.8 * len(train)  # a copy may come out empty and go
    assert len(ReIDDataset(tmp_path / "noisy", "val")) == len(ReIDDataset(clean.parent, "val"))
    nusc = NuScenes(synth_world.version, str(synth_world.path), verbose=False)
    moved = 0
    copy_views = [i for i, v in enumerate(ds.views) if v["box_noise"]]
    for i in copy_views[:: max(1, len(copy_views) // 10)]:
        view = ds.views[i]
        mine = {"token": view["annotation_token"], "center": view["center"], "wlh": view["wlh"]}
        noisy = hand_noised({**mine, "yaw": view["yaw"]}, view["box_noise"], 0.3, 0.1, 8.0)
        noisy_box = boxes_as_tensors([noisy])
        sample = nusc.get("sample", view["sample_token"])
        lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        cloud = LidarPointCloud.from_file(str(synth_world.path / lidar["filename"]))
        sensor = nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"])
        cloud.rotate(__import__("pyquaternion").Quaternion(sensor["rotation"]).rotation_matrix)
        cloud.translate(np.array(sensor["translation"]))
        points = torch.from_numpy(cloud.points.T.copy())
        want = lidar_box_crops(points, noisy_box, 24, 0.25, (0.4, 1.2))[0]
        got = ds[i][0]
        far = (got - want).abs() > 1e-3 + 2e-3 * want.abs()
        assert far.any(0).float().mean() < 0.03, view["annotation_token"]
        original = ds[
            ds.views.index(
                next(
                    v
                    for v in ds.views
                    if v["box_noise"] == 0 and v["annotation_token"] == view["annotation_token"]
                )
            )
        ][0]
        moved += int(not torch.allclose(got, original))
    assert moved >= 8  # the noise moves the crops


def test_noisy_copies_of_texture_crops_are_hidden_by_noisy_neighbours(synth_world, tmp_path):
    """build.box_noise_copies with camera texture and its occlusion test: a copy's texture is
    cut from its noisy box and hidden by every box of the keyframe noised alike (the noise drawn
    here by hand), as the tracker's detections hide each other."""
    from bev_reid.data.nuscenes import NuScenesDB
    from bev_reid.data.raster import box_in_grid
    from bev_reid.reid.texture import texture_crops

    noise = (0.3, 0.1, 8.0)
    cfg = cfg_for(synth_world, tmp_path / "tex", **{
        "build.modalities": ["camera"], "build.camera_crops": ["texture"],
        "build.texture_levels": 2, "build.crop_cell": 0.25, "build.box_noise_copies": 1,
        "track.det_noise_m": noise[0], "track.det_size_noise": noise[1],
        "track.det_yaw_noise_deg": noise[2],
    })  # fmt: skip
    build_dataset(cfg)
    ds = ReIDDataset(tmp_path / "tex", "all")
    db = NuScenesDB(synth_world.path, synth_world.version)

    copies = [i for i, v in enumerate(ds.views) if v["box_noise"]]
    assert copies
    checked = hidden_by_noise = 0
    for i in copies[:: max(1, len(copies) // 12)]:
        view = ds.views[i]
        walls = [
            {"token": b.token, "center": tuple(b.center), "wlh": list(b.wlh), "yaw": b.yaw}
            for b in db.boxes(view["sample_token"])
            if box_in_grid(b, cfg.grid)
        ]
        mine = {"token": view["annotation_token"], "center": view["center"], "wlh": view["wlh"]}
        box = boxes_as_tensors([hand_noised({**mine, "yaw": view["yaw"]}, 1, *noise)])
        cams, images = painting_images(db, view["sample_token"], cfg.data.cameras)
        noisy_walls = boxes_as_tensors([hand_noised(w, 1, *noise) for w in walls])
        want = texture_crops(box, cams, images, 24, 0.25, 2, occluders=noisy_walls)[0]
        got = ds[i][0]
        far = (got - want).abs() > 1e-3 + 2e-3 * want.abs()
        assert far.any(0).float().mean() < 0.03, view["annotation_token"]
        # the same box behind the annotated neighbours: the noisy ones hide other cells
        clean = texture_crops(box, cams, images, 24, 0.25, 2, occluders=boxes_as_tensors(walls))[0]
        hidden_by_noise += int(not torch.allclose(clean, want))
        checked += 1
    assert checked >= 8
    assert hidden_by_noise >= 1


def test_kill_and_rerun_equals_one_clean_run(synth_world, clean_run, tmp_path, monkeypatch):
    real = build_module.process_part
    calls = []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while building the second part
        return real(*args, **kwargs)

    monkeypatch.setattr(build_module, "process_part", dying)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(cfg_for(synth_world, tmp_path))
    assert not (tmp_path / "object_data.json").exists()  # never mistaken for a finished dataset
    assert not list((tmp_path / "parts").glob("*.tmp"))
    # A crash between a part's two files: crops written, views not: that part is redone.
    (tmp_path / "parts" / "part_00001.npy").write_bytes(b"half")
    monkeypatch.setattr(build_module, "process_part", real)
    build_dataset(cfg_for(synth_world, tmp_path))
    assert digest(tmp_path) == digest(clean_run)


def test_shards_then_merge_equal_one_run(synth_world, clean_run, tmp_path):
    assert build_dataset(cfg_for(synth_world, tmp_path, **{"build.shard": "1/2"})) is None
    with pytest.raises(ValueError, match="not built yet"):
        build_dataset(cfg_for(synth_world, tmp_path), merge_only=True)
    assert build_dataset(cfg_for(synth_world, tmp_path, **{"build.shard": "0/2"})) is None
    build_dataset(cfg_for(synth_world, tmp_path), merge_only=True)
    assert digest(tmp_path) == digest(clean_run)


def test_other_settings_are_not_mixed_in(synth_world, clean_run, tmp_path):
    build_dataset(cfg_for(synth_world, tmp_path, **{"build.shard": "0/2"}))
    with pytest.raises(ValueError, match="built with other settings"):
        build_dataset(
            cfg_for(synth_world, tmp_path, **{"build.shard": "1/2", "build.crop_size": 16})
        )


def lss_checkpoint(folder: Path) -> Path:
    cfg = load_config(
        overrides={
            "data.final_dim": [64, 176],
            "data.resize_lim": [0.11, 0.12],
            "grid.xbound": [-24, 24, 1.5],
            "grid.ybound": [-24, 24, 1.5],
            "grid.dbound": [4, 36, 2],
            "lss.channels": 16,
            "lss.bev_channels": 16,
        }
    )
    torch.manual_seed(0)
    return save_checkpoint(
        folder, 1, build_model(cfg), meta={"kind": "lss", "config": to_dict(cfg)}
    )


def test_camera_modality_with_an_lss_checkpoint(synth_world, tmp_path):
    ckpt = lss_checkpoint(tmp_path / "lss")
    cfg = cfg_for(
        synth_world,
        tmp_path / "ds",
        **{
            "build.modalities": ["camera", "lidar"],
            "build.checkpoint": str(ckpt),
            "build.min_iou": 0.0,
            "build.min_views": 1,
        },
    )
    meta = json.loads(build_dataset(cfg).read_text())
    assert (
        meta["channels"][:16] == [f"camera_{i:02d}" for i in range(16)]
        and meta["channels"][16:][0] == "lidar_occupancy"
    )
    assert meta["lss_checkpoint"]["step"] == 1 and meta["grid"]["xbound"] == [-24.0, 24.0, 1.5]
    ds = ReIDDataset(tmp_path / "ds", "all")
    assert ds[0][0].shape == (19, 24, 24) and ds.camera_channels == list(range(16))
    assert all(0.0 <= v["iou"] <= 1.0 for v in ds.views) and all(v["cameras"] for v in ds.views)
    # The box raster beside camera features: both on the same finer 0.75 m crop cells.
    fine = cfg_for(synth_world, tmp_path / "fine", **{
        "build.modalities": ["camera", "lidar"], "build.checkpoint": str(ckpt),
        "build.min_iou": 0.0, "build.min_views": 1, "build.lidar_raster": "box",
        "build.crop_cell": 0.75,
    })  # fmt: skip
    meta = json.loads(build_dataset(fine).read_text())
    assert meta["channels"][16:] == lidar_box_channel_names((0.5, 1.0, 1.5))
    fine_ds = ReIDDataset(tmp_path / "fine", "all")
    assert fine_ds[0][0].shape == (23, 24, 24) and meta["crop"]["cell_m"] == [0.75, 0.75]
    # The IoU filter drops the views a random model does not see: here all, and the error says so.
    strict = cfg_for(
        synth_world,
        tmp_path / "strict",
        **{
            "build.modalities": ["camera"],
            "build.checkpoint": str(ckpt),
            "build.min_iou": 0.5,
            "build.min_views": 1,
        },
    )
    with pytest.raises(ValueError, match=r"the IoU filter dropped [1-9]\d*, .* leaving 0 views"):
        build_dataset(strict)


def test_missing_or_corrupt_checkpoint(synth_world, tmp_path):
    cfg = cfg_for(
        synth_world,
        tmp_path / "a",
        **{"build.modalities": ["camera"], "build.checkpoint": str(tmp_path / "no.json")},
    )
    with pytest.raises(CheckpointError, match="does not exist"):
        build_dataset(cfg)
    ckpt = lss_checkpoint(tmp_path / "lss")
    weights = ckpt.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:1000])
    cfg = cfg_for(
        synth_world,
        tmp_path / "b",
        **{"build.modalities": ["camera"], "build.checkpoint": str(ckpt)},
    )
    with pytest.raises(CheckpointError, match="truncated"):
        build_dataset(cfg)
    with pytest.raises(ValueError, match="needs --checkpoint"):
        build_dataset(cfg_for(synth_world, tmp_path / "c", **{"build.modalities": ["camera"]}))


def test_reading_an_unfinished_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a finished ReID dataset"):
        ReIDDataset(tmp_path, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        ReIDDataset(tmp_path, "test")


def test_show_dataset_draws_in_the_format_asked(reid_dataset, tmp_path, capsys):
    from bev_reid.cli import main

    assert main(["show-dataset", str(reid_dataset), "--out", str(tmp_path / "ids.svg")]) == 0
    assert b"<svg" in (tmp_path / "ids.svg").read_bytes()[:1000]
    assert main(["show-dataset", str(reid_dataset), "--out", str(tmp_path / "ids.png")]) == 0
    assert (tmp_path / "ids.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["show-dataset", str(reid_dataset), "--out", str(tmp_path / "ids")]) == 2
    assert "name it .png, .pdf, .svg or .jpg" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.png", "ids.svg"]
