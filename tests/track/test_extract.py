"""Crops at tracking time are cut exactly as the ReID dataset's were: the checkpoint's recipe,
the builder's per-keyframe code, and the global -> ego transform of detections."""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from bev_reid.config import DataConfig
from bev_reid.engine.checkpoint import CheckpointError
from bev_reid.models.reid import BEVReIDModel
from bev_reid.reid.extract import SensorMissingError, cutter_for, recipe_from_meta
from bev_reid.track.detections import Detection
from bev_reid.track.embed import ego_boxes


def data_of(world) -> DataConfig:
    return DataConfig(dataroot=str(world.path), version=world.version, num_workers=0)


def test_crops_of_detections_equal_the_dataset_crops(synth_world, track_dataset, track_checkpoint):
    model = BEVReIDModel.from_checkpoint(track_checkpoint)
    recipe = model.checkpoint_meta["crop_recipe"]
    assert recipe["crop"]["lidar_raster"] == "box" and recipe["crop"]["lidar_margin"] == 0.25
    cutter = cutter_for(model, data=data_of(synth_world))
    assert cutter.recipe.build.crop_cell == 0.25 and cutter.recipe.build.lidar_colour
    # The crop's side, which tells the tracker which vehicles it sees in part: cells x 0.25 m,
    # else the grid's cell (the shorter side where the cells are not square).
    size = cutter.recipe.build.crop_size
    assert cutter.recipe.extent_m == pytest.approx(size * 0.25)
    grid = dataclasses.replace(cutter.recipe.grid, xbound=(-32.0, 32.0, 0.8))
    on_grid = dataclasses.replace(
        cutter.recipe, build=dataclasses.replace(cutter.recipe.build, crop_cell=0.0), grid=grid
    )
    assert on_grid.extent_m == pytest.approx(size * min(0.8, grid.ybound[2]))
    views = [json.loads(line) for line in (track_dataset / "views.jsonl").read_text().splitlines()]
    stored = np.load(track_dataset / "crops.npy")
    dataset = cutter.keyframes()
    db = dataset.db
    checked = 0
    for token in [v["sample_token"] for v in views][:: max(1, len(views) // 3)][:3]:
        mine = [v for v in views if v["sample_token"] == token]
        anns = [db.get("sample_annotation", v["annotation_token"]) for v in mine]
        dets = [Detection(token, tuple(a["translation"]), tuple(a["size"]), tuple(a["rotation"]),
                          (0.0, 0.0), "car", 1.0) for a in anns]  # fmt: skip
        boxes = ego_boxes(db, token, dets)  # global annotations -> the keyframe's ego frame
        keyframe = dataset[dataset.index_of(token)]
        # every annotated box of the keyframe hides camera texture, as when building
        crops = cutter.crops(keyframe, boxes, keyframe["boxes"]).numpy().astype(np.float16)
        expected = stored[[v["index"] for v in mine]]
        assert crops.shape == expected.shape
        assert np.array_equal(crops, expected)
        emb = model.extract_features(keyframe, boxes, occluders=keyframe["boxes"])  # the API
        assert emb.shape == (len(mine), 128)
        reference = model.embed(torch.from_numpy(expected.astype(np.float32)))
        assert torch.allclose(emb, reference, atol=2e-3)
        checked += len(mine)
    assert checked >= 3


def test_missing_recipe_or_sensors_are_named(synth_world, track_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="does not record how its crops were cut"):
        recipe_from_meta({"dataset": str(tmp_path / "gone")}, "old.json")
    # The world without its LiDAR sweeps: tables and camera images only.
    (tmp_path / "samples").mkdir()
    for item in (synth_world.path / "samples").iterdir():
        if item.name != "LIDAR_TOP":
            os.symlink(item, tmp_path / "samples" / item.name)
    os.symlink(synth_world.path / synth_world.version, tmp_path / synth_world.version)
    model = BEVReIDModel.from_checkpoint(track_checkpoint)
    data = DataConfig(dataroot=str(tmp_path), version=synth_world.version, num_workers=0)
    with pytest.raises(SensorMissingError, match="needs LIDAR_TOP data.*LIDAR_TOP.*is missing"):
        cutter_for(model, data=data).keyframes()


def test_the_checkpoint_names_the_categories_it_learnt(track_dataset, track_checkpoint, tmp_path):
    """An embedding covers only the categories of its training identities: a synthetic world's
    cars, trucks and buses, not the bicycles that the `vehicle` prefix would also admit."""
    identities = json.loads((track_dataset / "object_data.json").read_text())["identities"]
    trained = {i["category"] for i in identities if i["split"] == "train"}
    model = BEVReIDModel.from_checkpoint(track_checkpoint)
    meta = model.checkpoint_meta
    assert meta["crop_recipe"]["learnt_categories"] == sorted(trained)
    recipe = recipe_from_meta(meta, "ckpt")
    assert "vehicle.car" in trained and recipe.covers("vehicle.car")
    for category in ("vehicle.bicycle", "vehicle.motorcycle", "human.pedestrian"):
        assert not recipe.covers(category)
    # vehicle.bus covers every bus: a dataset's vehicle.bus.rigid stands for it.
    bus = dataclasses.replace(recipe, learnt_categories=("vehicle.bus.rigid", "vehicle.car"))
    assert bus.covers("vehicle.bus") and not bus.covers("vehicle.truck")
    # A checkpoint from before: its dataset's identities, or the prefixes once it is gone.
    older = {**meta, "crop_recipe": {k: v for k, v in meta["crop_recipe"].items()
                                     if k != "learnt_categories"}}  # fmt: skip
    assert recipe_from_meta(older, "old").learnt_categories == tuple(sorted(trained))
    gone = {**older, "dataset": str(tmp_path / "gone")}
    assert recipe_from_meta(gone, "old").learnt_categories is None
    assert recipe_from_meta(gone, "old").covers("vehicle.bicycle")
    bad = {**meta, "crop_recipe": {**meta["crop_recipe"], "learnt_categories": "vehicle.car"}}
    with pytest.raises(CheckpointError, match="learnt_categories 'vehicle.car' is not a list"):
        recipe_from_meta(bad, "bad")
