"""Checkpoints: exact round trip, atomic listing, and clear refusals of damaged files."""

import json

import pytest
import torch

from bev_reid.engine.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    restore_training_state,
    save_checkpoint,
)


def trained_pair(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(16, 4)).pow(2).mean().backward()
        opt.step()
    return model, opt


def test_round_trip_restores_model_optimizer_and_rng(tmp_path):
    model, opt = trained_pair()
    path = save_checkpoint(tmp_path, 3, model, opt, meta={"kind": "test", "metrics": {"loss": 0.5}})
    expected_next = torch.rand(5)  # what the RNG gives right after saving

    ckpt = load_checkpoint(path)
    assert ckpt.step == 3 and ckpt.meta == {"kind": "test", "metrics": {"loss": 0.5}}
    model2 = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2)
    )
    model2.load_state_dict(ckpt.model_state())
    opt2 = torch.optim.Adam(model2.parameters(), lr=1.0)
    torch.manual_seed(123)
    restore_training_state(ckpt, opt2)
    assert torch.equal(torch.rand(5), expected_next)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert (
        json.loads(json.dumps(s1["param_groups"])) == s2["param_groups"]
    )  # tuples come back as lists
    for k in s1["state"]:
        for name, value in s1["state"][k].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(s2["state"][k][name])), name


def test_folder_and_weights_paths_resolve(tmp_path):
    model, opt = trained_pair()
    for step in (5, 10, 2):
        save_checkpoint(tmp_path, step, model)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step_00000002.json",
        "step_00000005.json",
        "step_00000010.json",
    ]
    assert load_checkpoint(tmp_path).step == 10
    assert load_checkpoint(tmp_path / "step_00000005.safetensors").step == 5
    prune_checkpoints(tmp_path, keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000010.json"]
    assert not (tmp_path / "step_00000005.safetensors").exists()


def test_truncated_checkpoint_is_refused(tmp_path):
    path = save_checkpoint(tmp_path, 1, trained_pair()[0])
    weights = path.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"step_00000001.safetensors.*truncated"):
        load_checkpoint(path)


def test_corrupt_checkpoint_is_refused(tmp_path):
    path = save_checkpoint(tmp_path, 1, trained_pair()[0])
    weights = path.with_suffix(".safetensors")
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_unfinished_missing_and_bad_sidecars(tmp_path):
    path = save_checkpoint(tmp_path, 1, trained_pair()[0])
    path.unlink()  # as if the writer died between the weights and the sidecar
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(CheckpointError, match="unfinished"):
        load_checkpoint(path.with_suffix(".safetensors"))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.json")
    with pytest.raises(CheckpointError, match="no finished checkpoint"):
        load_checkpoint(tmp_path)
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)
    path.write_text(json.dumps({"format_version": 99}))
    with pytest.raises(CheckpointError, match="format 99"):
        load_checkpoint(path)


def test_no_temporary_files_left(tmp_path):
    save_checkpoint(tmp_path, 7, trained_pair()[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step_00000007.json",
        "step_00000007.safetensors",
    ]
