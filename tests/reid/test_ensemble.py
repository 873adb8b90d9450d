"""Several ReID checkpoints as one embedding (`track.reid_checkpoint: A,B`): the similarity of
two crops is the mean of the members' own cosine similarities, the tracker embeds detections
with it, and lists that cannot work (recipes that differ, an empty or repeated entry) are
refused with the reason."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from bev_reid.config import load_config
from bev_reid.engine.checkpoint import CheckpointError
from bev_reid.models.reid import BEVReIDModel
from bev_reid.reid.dataset import ReIDDataset
from bev_reid.reid.ensemble import EmbeddingEnsemble, checkpoint_list
from bev_reid.reid.export import load_embedder


def _train(reid_dataset: Path, logs: Path, seed: int) -> Path:
    from bev_reid.reid.train import train_reid

    cfg = load_config(overrides={
        "reid_run.dataset_dir": str(reid_dataset), "reid_run.log_dir": str(logs),
        "train_reid.device": "cpu", "train_reid.num_workers": 0, "train_reid.max_steps": 3,
        "train_reid.checkpoint_every": 3, "train_reid.p_identities": 4, "train_reid.k_views": 2,
        "train_reid.seed": seed, "reid.widths": [16, 32], "reid.embedding_dim": 32,
    })  # fmt: skip
    return train_reid(cfg)


@pytest.fixture(scope="module")
def members(reid_dataset, tmp_path_factory) -> list[Path]:
    """Two checkpoints of one recipe that differ in their training seed."""
    return [_train(reid_dataset, tmp_path_factory.mktemp(f"member{s}"), s) for s in (0, 1)]


def test_similarity_is_the_mean_of_the_members(members, reid_dataset):
    val = ReIDDataset(reid_dataset, "val")
    crops = torch.from_numpy(val.crop_array([v["index"] for v in val.views]))  # N x C x S x S
    spec = ",".join(str(m) for m in members)
    ensemble = load_embedder(spec)
    assert isinstance(ensemble, EmbeddingEnsemble) and ensemble.config["embedding_dim"] == 64
    got = ensemble.embed(crops).numpy()  # N x 64
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # The reference: each member on its own, loaded independently.
    sims = []
    for m in members:
        e = BEVReIDModel.from_checkpoint(m).embed(crops).numpy()
        sims.append(e @ e.T)
    assert not np.allclose(sims[0], sims[1], atol=1e-2)  # the seeds did learn differently
    np.testing.assert_allclose(got @ got.T, (sims[0] + sims[1]) / 2, atol=1e-5)
    # Spaces around the comma are allowed.
    again = load_embedder(f"{members[0]} , {members[1]}").embed(crops[:5]).numpy()
    np.testing.assert_allclose(again, got[:5], atol=1e-6)


def test_the_tracker_embeds_detections_with_the_ensemble(members, synth_world):
    from bev_reid.data.nuscenes import NuScenesDB
    from bev_reid.track.detections import Detection
    from bev_reid.track.run import open_embedder

    base = {"data.dataroot": str(synth_world.path), "data.version": synth_world.version,
            "data.num_workers": 0, "track.device": "cpu"}  # fmt: skip
    db = NuScenesDB(str(synth_world.path), synth_world.version)
    token = db.keyframes(db.scene_names[0])[3]
    anns = [db.get("sample_annotation", a) for a in db.sample(token)["anns"]]
    dets = [Detection(token, tuple(a["translation"]), tuple(a["size"]), tuple(a["rotation"]),
                      (0.0, 0.0), "car", 1.0) for a in anns]  # fmt: skip
    embs = []
    for spec in (str(members[0]), str(members[1]), ",".join(str(m) for m in members)):
        embedder = open_embedder(load_config(overrides={**base, "track.reid_checkpoint": spec}), db)
        (keyframe,) = embedder.keyframes([token])
        embs.append(embedder.embed(keyframe, dets))
    one, two, both = embs
    assert both.shape == (len(dets), 64) and np.isfinite(both).all(axis=1).sum() >= 2
    np.testing.assert_array_equal(np.isnan(both).any(axis=1), np.isnan(one).any(axis=1))
    want = np.concatenate([one, two], axis=1) / np.sqrt(2)
    np.testing.assert_allclose(both, want, atol=1e-6)


def test_members_must_cut_their_crops_alike(members):
    a = BEVReIDModel.from_checkpoint(members[0])
    b = BEVReIDModel.from_checkpoint(members[1])
    b.checkpoint_meta = copy.deepcopy(b.checkpoint_meta)
    b.checkpoint_meta["crop_recipe"]["crop"]["size"] = 32
    differ = r"cut their crops differently \(build.crop_size: 24 vs 32\)"
    with pytest.raises(CheckpointError, match=differ):
        EmbeddingEnsemble([a, b])
    with pytest.raises(CheckpointError, match="two or more"):
        EmbeddingEnsemble([a])


def test_bad_lists_name_what_is_wrong(members, tmp_path):
    assert checkpoint_list("runs/a") == ["runs/a"]
    assert checkpoint_list(" a ,b") == ["a", "b"]
    with pytest.raises(CheckpointError, match="empty entry"):
        checkpoint_list("a,,b")
    with pytest.raises(CheckpointError, match="names 'a' twice"):
        checkpoint_list("a,b,a")
    missing = tmp_path / "nothing"
    with pytest.raises(CheckpointError, match="nothing.*does not exist"):
        load_embedder(f"{members[0]},{missing}")


def test_the_track_command_names_a_bad_list(members, synth_world, tmp_path, capsys):
    from bev_reid.cli import main

    data = ["--dataroot", str(synth_world.path), "--version", synth_world.version]
    det = tmp_path / "det.json"
    assert main(["make-detections", *data, "--out", str(det)]) == 0
    capsys.readouterr()
    twice = f"{members[0]},{members[0]}"
    args = ["track", *data, "--detections", str(det), "--out", str(tmp_path / "t.json")]
    assert main([*args, "--reid-checkpoint", twice]) != 0
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("bev-reid track: error:") and "twice" in line
    assert not (tmp_path / "t.json").exists()
