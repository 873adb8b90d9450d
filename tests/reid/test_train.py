"""ReID training: the P x K sampler, loss that falls, logs, checkpoints, exact resume, DDP."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bev_reid.config import Config, ConfigError, load_config, to_dict
from bev_reid.engine.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from bev_reid.models.reid import BEVReIDModel
from bev_reid.reid.sampler import PKBatchSampler
from bev_reid.reid.train import augment_crops, train_reid, turn_and_shift, view_places

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_config(dataset: Path, log_dir: Path, **overrides) -> Config:
    values = {
        "reid_run.dataset_dir": str(dataset),
        "reid_run.log_dir": str(log_dir),
        "reid_run.run_id": "test",
        "train_reid.device": "cpu",
        "train_reid.num_workers": 0,
        "train_reid.p_identities": 16,
        "train_reid.k_views": 4,
        "train_reid.lr": 3e-3,
        "train_reid.log_every": 1,
        "train_reid.image_every": 1000,
        "train_reid.checkpoint_every": 0,
        "reid.widths": [16, 32],
        "reid.dropout": 0.1,
    }
    values.update(overrides)
    return load_config(overrides=values)


def events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def losses(run_dir: Path) -> np.ndarray:
    return np.array([e.value for e in events(run_dir).Scalars("loss")])


def killed_after(sidecar: Path, log_dir: Path) -> Path:
    """A run of ``run_config(..., log_dir)`` as if killed right after ``sidecar``'s step: that
    checkpoint alone in its checkpoint folder. Returns ``log_dir``."""
    folder = log_dir / "test" / "checkpoints"
    folder.mkdir(parents=True)
    for f in sidecar.parent.glob(sidecar.stem + ".*"):
        shutil.copy(f, folder / f.name)
    return log_dir


# ---------------------------------------------------------------------------------------------
# Augmentation


def test_turn_and_shift_against_rot90_and_slicing():
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    quarter = turn_and_shift(x, torch.full((3,), math.pi / 2, dtype=torch.float64),
                             torch.zeros(3, 2, dtype=torch.float64))  # fmt: skip
    torch.testing.assert_close(quarter, torch.rot90(x, -1, (-2, -1)))
    shifts = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]], dtype=torch.float64)
    moved = turn_and_shift(x, torch.zeros(3, dtype=torch.float64), shifts)
    expect = torch.zeros_like(x)
    expect[0, :, 1:, :] = x[0, :, :-1, :]  # one row down
    expect[1, :, :, 2:] = x[1, :, :, :-2]  # two columns right
    expect[2, :, :-1, :-1] = x[2, :, 1:, 1:]  # one up and one left
    torch.testing.assert_close(moved, expect)
    # Turned first, then moved.
    both = turn_and_shift(x[:1], torch.tensor([math.pi / 2], dtype=torch.float64),
                          torch.tensor([[1.0, 0.0]], dtype=torch.float64))  # fmt: skip
    turned = torch.rot90(x[:1], -1, (-2, -1))
    expect = torch.zeros_like(turned)
    expect[:, :, 1:, :] = turned[:, :, :-1, :]
    torch.testing.assert_close(both, expect)


def test_augment_crops_mirrors_some_and_drops_whole_cells():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 6, 6) + 0.5  # no zero cells to start with
    m = augment_crops(x, mirror=True, shift=0.0, rotate=0.0, cell_dropout=0.0)
    same = (m == x).flatten(1).all(1)
    flipped = (m == x.flip(-1)).flatten(1).all(1)
    assert bool((same | flipped).all()) and 10 < int(flipped.sum()) < 54
    assert torch.equal(augment_crops(x, False, 0.0, 0.0, 0.0), x)
    d = augment_crops(x, mirror=False, shift=0.0, rotate=0.0, cell_dropout=0.3)
    zero = d == 0  # 64 x 3 x 6 x 6
    assert torch.equal(zero.all(1), zero.any(1))  # a cell is dropped in every channel or none
    assert torch.equal(d[~zero], x[~zero])
    assert 0.25 < zero[:, 0].float().mean().item() < 0.35
    # Only the marked (LiDAR) channels lose cells; the others (camera features) keep all.
    lidar = torch.tensor([False, True, True])
    torch.manual_seed(1)
    d = augment_crops(x, False, 0.0, 0.0, 0.3, dropout_channels=lidar)
    assert torch.equal(d[:, 0], x[:, 0])
    zero = d[:, 1:] == 0
    assert torch.equal(zero[:, 0], zero[:, 1]) and 0.25 < zero.float().mean().item() < 0.35
    # One share per crop: crops 0-31 lose none of their cells, crops 32-63 lose about 80 %.
    share = torch.tensor([0.0] * 32 + [0.8] * 32)
    d = augment_crops(torch.rand(64, 1, 30, 30) + 0.5, False, 0.0, 0.0, share)
    lost = (d == 0).flatten(1).float().mean(1)
    assert lost[:32].max().item() == 0.0 and 0.75 < lost[32:].mean().item() < 0.85


# ---------------------------------------------------------------------------------------------
# Sampler

IDS = [7] * 6 + [3] * 2 + [9] * 4 + [1] * 1 + [5] * 5 + [4] * 3  # counts 6, 2, 4, 1, 5, 3


def test_pk_batches_hold_p_identities_of_k_views():
    ids = np.array(IDS)
    sampler = PKBatchSampler(ids, p=4, k=3, seed=1, num_steps=50)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 50
    seen = Counter()
    for batch in batches:
        assert len(batch) == 12
        assert all(0 <= i < len(ids) for i in batch)
        groups = [batch[j : j + 3] for j in range(0, 12, 3)]
        owners = [set(ids[g].tolist()) for g in groups]
        assert all(len(o) == 1 for o in owners)  # K views of one identity
        assert len({o.pop() for o in owners}) == 4  # P different identities
        for g in groups:
            if (ids == ids[g[0]]).sum() >= 3:
                assert len(set(g)) == 3  # enough views: no view twice
        seen.update(ids[batch].tolist())
    assert set(seen) == set(IDS)  # every identity, even the one with a single view, comes up


def test_pk_sampler_caps_p_and_is_a_function_of_seed_step_rank():
    assert len(next(iter(PKBatchSampler([0, 0, 1, 1, 2], p=8, k=2, seed=0)))) == 6  # P = 3
    a = PKBatchSampler(IDS, p=2, k=2, seed=3, num_steps=20)
    assert list(a) == list(PKBatchSampler(IDS, p=2, k=2, seed=3, num_steps=20))
    resumed = PKBatchSampler(IDS, p=2, k=2, seed=3, start_step=12, num_steps=8)
    assert list(resumed) == list(a)[12:]  # exact resume: no hidden sampler state
    assert list(a) != list(PKBatchSampler(IDS, p=2, k=2, seed=4, num_steps=20))
    for step in range(10):  # P x world_size <= identities: the ranks share no identity
        r0 = PKBatchSampler(IDS, p=3, k=2, seed=3, rank=0, world_size=2).batch(step)
        r1 = PKBatchSampler(IDS, p=3, k=2, seed=3, rank=1, world_size=2).batch(step)
        assert not {IDS[i] for i in r0} & {IDS[i] for i in r1}
    with pytest.raises(TypeError):
        len(PKBatchSampler(IDS, p=2, k=2))
    with pytest.raises(ValueError, match="rank"):
        PKBatchSampler(IDS, p=2, k=2, rank=2, world_size=2)


def test_neighbour_batches_take_the_anchors_nearest_vehicles_of_one_keyframe():
    # Keyframe "a": identity 0 at the origin, 1 at 3 m, 2 at 1 m, 3 at 10 m, 4 at 2 m.
    # Keyframe "b": identity 0 at the origin and 5 at 0.5 m (nearer than all of "a").
    # Identities 6 and 7 are seen only elsewhere.
    places = [("a", 0, 0), ("a", 3, 0), ("a", 0, 1), ("a", 10, 0), ("a", 0, -2),
              ("b", 0, 0), ("b", 0.5, 0), ("c", 0, 0), ("c", 50, 0)]  # fmt: skip
    ids = [0, 1, 2, 3, 4, 0, 5, 6, 7]
    near = {"a": [2, 4, 1, 3], "b": [5]}  # by hand: the neighbours of 0, nearest first
    anchors = Counter()
    for step in range(40):
        batch = PKBatchSampler(ids, p=3, k=1, seed=2, places=places, neighbours=1.0).batch(step)
        chosen = [ids[i] for i in batch]
        assert len(set(chosen)) == 3
        anchors[chosen[0]] += 1
        if chosen[0] == 0:  # anchor 0: its two nearest of "a", or 5 and one more from "b"
            assert chosen[1:] == near["a"][:2] or chosen[1] == 5
        # Half of P - 1 = 2: one neighbour, one from the permutation.
        half = PKBatchSampler(ids, p=3, k=1, seed=2, places=places, neighbours=0.5).batch(step)
        if ids[half[0]] == 3:
            assert ids[half[1]] == 1  # 3 was seen in "a" only; its nearest there is 1, 7 m off
            anchors["half 3"] += 1
    assert anchors[0] and anchors["half 3"]  # both cases came up
    plain = PKBatchSampler(ids, p=3, k=1, seed=2, places=places, neighbours=0.0)
    assert plain.batch(5) == PKBatchSampler(ids, p=3, k=1, seed=2).batch(5)
    with pytest.raises(ValueError, match="keyframe and place"):
        PKBatchSampler(ids, p=3, k=1, neighbours=0.5)
    with pytest.raises(ValueError, match="share"):
        PKBatchSampler(ids, p=3, k=1, places=places, neighbours=1.5)
    old = SimpleNamespace(root="DS", views=[{"sample_token": "a"}])  # a dataset without places
    with pytest.raises(ValueError, match="lacks 'center'.*train_reid.neighbours: 0"):
        view_places(old)


# ---------------------------------------------------------------------------------------------
# Training


def test_cosine_softmax_loss_falls_and_the_run_is_logged(reid_dataset, tmp_path):
    cfg = run_config(
        reid_dataset, tmp_path, **{"train_reid.max_steps": 80, "train_reid.checkpoint_every": 40,
                                   "train_reid.image_every": 40}
    )  # fmt: skip
    last = train_reid(cfg)
    run_dir = tmp_path / "test"
    loss = losses(run_dir)
    assert loss.shape == (80,) and np.isfinite(loss).all()
    assert loss[-10:].mean() < 0.8 * loss[:10].mean(), loss

    acc = events(run_dir)
    assert {"loss", "accuracy", "scale", "lr", "throughput"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Images("crops")] == [1, 40, 80]
    assert (run_dir / "projector_config.pbtxt").is_file()
    assert (run_dir / "00080" / "val" / "metadata.tsv").is_file()  # the projector's embeddings
    assert to_dict(load_config(run_dir / "config.yaml")) == to_dict(cfg)

    sidecars = list_checkpoints(run_dir / "checkpoints")
    assert [p.name for p in sidecars] == ["step_00000040.json", "step_00000080.json"]
    assert last == sidecars[-1]
    meta = load_checkpoint(last).meta
    assert meta["kind"] == "reid" and meta["dataset"] == str(reid_dataset)
    assert meta["config"] == to_dict(cfg)
    assert meta["metrics"]["loss"] == pytest.approx(float(loss[-1]), rel=1e-5)
    model = BEVReIDModel.from_checkpoint(last)
    assert (
        model.config["num_classes"]
        == json.loads((reid_dataset / "object_data.json").read_text())["num_train_identities"]
    )
    emb = model.embed(torch.rand(5, 3, 24, 24))
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(5))


def test_the_readme_python_example(reid_dataset, tmp_path, monkeypatch):
    """The README's Python snippet, run as written from a folder laid out as its Full nuScenes
    example, gives the embeddings of the validation rows of crops.npy (read here by hand)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    snippet = readme.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "reid-dataset").symlink_to(reid_dataset)
    train_reid(run_config(reid_dataset, tmp_path / "runs" / "reid", **{
        "reid_run.run_id": "cosine", "train_reid.max_steps": 2, "train_reid.checkpoint_every": 2,
    }))  # fmt: skip
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)

    with open(reid_dataset / "views.jsonl", encoding="utf-8") as f:
        rows = [v["index"] for v in map(json.loads, f) if v["split"] == "val"]
    crops = torch.from_numpy(np.load(reid_dataset / "crops.npy")[rows].astype(np.float32))
    last = tmp_path / "runs" / "reid" / "cosine" / "checkpoints" / "step_00000002.json"
    model = BEVReIDModel.from_checkpoint(last)
    torch.testing.assert_close(scope["emb"], model.embed(crops))
    assert scope["emb"].shape == (len(rows), 128)
    torch.testing.assert_close(scope["similarity"].diagonal(), torch.ones(len(rows)))


def test_resume_takes_the_same_steps_as_an_uninterrupted_run(reid_dataset, tmp_path):
    common = {
        "train_reid.max_steps": 6, "train_reid.checkpoint_every": 3, "reid.dropout": 0.5,
        "train_reid.shift": 1.0, "train_reid.rotate": 10.0, "train_reid.cell_dropout": 0.2,
        "train_reid.cell_dropout_spread": 0.15,
    }  # fmt: skip
    whole = train_reid(run_config(reid_dataset, tmp_path / "whole", **common))
    half = {**common, "train_reid.max_steps": 3}
    train_reid(run_config(reid_dataset, tmp_path / "split", **half))
    # Resumed with data-loading workers: they must not change the batches.
    resumed = train_reid(
        run_config(reid_dataset, tmp_path / "split", **common,
                   **{"train_reid.resume": True, "train_reid.num_workers": 2})
    )  # fmt: skip
    assert resumed.name == whole.name == "step_00000006.json"
    a, b = load_checkpoint(whole).tensors, load_checkpoint(resumed).tensors
    keys = sorted(k for k in a if not k.startswith("rng."))
    assert any(k.startswith("optim.") for k in keys)
    assert keys == sorted(k for k in b if not k.startswith("rng."))
    for k in keys:
        assert torch.equal(a[k], b[k]), k
    # ... while the weights did move between steps 3 and 6, so the comparison can fail.
    third = load_checkpoint(whole.with_name("step_00000003.json")).tensors
    assert not torch.equal(third["model.net.fc.weight"], a["model.net.fc.weight"])

    # A one-cycle run killed after step 3 (its step-3 checkpoint alone in a fresh run folder)
    # resumes on the same learning rates: the schedule is a function of the step.
    constant = a
    cycle = {**common, "train_reid.lr_schedule": "onecycle", "train_reid.warmup": 0.2}
    whole = train_reid(run_config(reid_dataset, tmp_path / "cycle", **cycle))
    killed = killed_after(whole.with_name("step_00000003.json"), tmp_path / "killed")
    resumed = train_reid(run_config(reid_dataset, killed, **cycle, **{"train_reid.resume": True}))
    a, b = load_checkpoint(whole).tensors, load_checkpoint(resumed).tensors
    for k in keys:
        assert torch.equal(a[k], b[k]), k
    # ... and the schedule did change the steps: the same seed with a constant rate ends elsewhere.
    assert not torch.equal(a["model.net.fc.weight"], constant["model.net.fc.weight"])


def test_weight_average_is_saved_as_the_model_and_resumes(reid_dataset, tmp_path):
    common = {"train_reid.max_steps": 6, "train_reid.checkpoint_every": 1,
              "train_reid.weight_average": 0.5, "reid.dropout": 0.5}  # fmt: skip
    last = train_reid(run_config(reid_dataset, tmp_path / "avg", **common))
    steps = [load_checkpoint(p) for p in list_checkpoints(last.parent)]
    assert [c.step for c in steps] == [1, 2, 3, 4, 5, 6]
    # The weights trained are those of a run without the average, step for step ...
    plain = train_reid(
        run_config(reid_dataset, tmp_path / "plain", **{**common, "train_reid.weight_average": 0})
    )
    assert not any(k.startswith("extra.") for k in load_checkpoint(plain).tensors)
    for c, p in zip(steps, list_checkpoints(plain.parent), strict=True):
        for k, v in load_checkpoint(p).model_state().items():
            assert torch.equal(c.group("extra.train")[k], v), (c.step, k)
    # ... and the model's tensors are their average, worked out here step by step (from the
    # initial weights, which a zero learning rate keeps).
    init = load_checkpoint(
        train_reid(run_config(reid_dataset, tmp_path / "init", **{**common, "train_reid.lr": 0,
                                                                    "train_reid.max_steps": 1}))
    ).model_state()  # fmt: skip
    key = "net.fc.weight"
    a = init[key].clone()
    for c in steps:
        d = min(0.5, (1 + c.step) / (10 + c.step))
        a = d * a + (1 - d) * c.group("extra.train")[key]
        torch.testing.assert_close(c.model_state()[key], a)
    assert not torch.allclose(a, steps[-1].group("extra.train")[key])
    # The users of a checkpoint load the average.
    model = BEVReIDModel.from_checkpoint(last)
    torch.testing.assert_close(model.state_dict()[key], a)

    # Killed after step 3, the run resumes on the weights it trained and the average it kept.
    killed = killed_after(last.with_name("step_00000003.json"), tmp_path / "killed")
    resumed = load_checkpoint(
        train_reid(run_config(reid_dataset, killed, **common,
                              **{"train_reid.resume": True}))
    ).tensors  # fmt: skip
    for k, v in steps[-1].tensors.items():
        if not k.startswith("rng."):
            assert torch.equal(resumed[k], v), k


def test_triplet_mode_trains_and_an_unknown_mode_is_a_clear_error(reid_dataset, tmp_path):
    # With batches of neighbours, as configs/track-reid.yaml trains it.
    # And with the one-cycle learning rate: the rate logged at each step is the one it took.
    cfg = run_config(reid_dataset, tmp_path, **{"train_reid.loss_mode": "triplet",
                                                "train_reid.max_steps": 60,
                                                "train_reid.neighbours": 1.0,
                                                "train_reid.lr_schedule": "onecycle"})  # fmt: skip
    train_reid(cfg)
    loss = losses(tmp_path / "test")
    assert np.isfinite(loss).all()
    assert loss[-10:].mean() < 0.95 * loss[:10].mean(), loss
    lrs = {e.step: e.value for e in events(tmp_path / "test").Scalars("lr")}
    lr = cfg.train_reid.lr  # no warm-up (the default): the full rate, then a cosine down
    expected = {s: lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (s - 1) / 60))) for s in lrs}
    assert sorted(lrs) == list(range(1, 61)) and lrs == pytest.approx(expected, rel=1e-5)
    tags = set(events(tmp_path / "test").Tags()["scalars"])
    assert "head/d_neg" in tags and "scale" not in tags
    assert (
        BEVReIDModel.from_checkpoint(tmp_path / "test" / "checkpoints").config["head"] == "triplet"
    )

    # Refused when the config is read, before any work: the valid names are the registered heads.
    from bev_reid.models.heads import HEADS

    assert {"cosine-softmax", "triplet", "cosine-margin", "cosine-supcon"} <= set(HEADS)
    names = ", ".join(sorted(HEADS))
    with pytest.raises(ConfigError, match=f"registered head: {names}; got 'arcface'"):
        run_config(reid_dataset, tmp_path / "bad", **{"train_reid.loss_mode": "arcface"})
    assert not (tmp_path / "bad").exists()


def test_init_from_takes_the_net_and_leaves_the_head(reid_dataset, tmp_path):
    source = train_reid(run_config(reid_dataset, tmp_path / "a", **{"train_reid.max_steps": 3}))
    # lr 0: Adam leaves every weight where it started, so the run's checkpoint shows the start.
    tuned = train_reid(
        run_config(reid_dataset, tmp_path / "b", **{
            "train_reid.max_steps": 1, "train_reid.lr": 0.0, "train_reid.init_from": str(source),
            "train_reid.seed": 5,
        })
    )  # fmt: skip
    a, b = load_checkpoint(source).model_state(), load_checkpoint(tuned).model_state()
    # (BatchNorm running statistics move in a training step even at lr 0: compare parameters.)
    net = [k for k in a if k.startswith("net.") and "running_" not in k and "batches" not in k]
    assert net and all(torch.equal(a[k], b[k]) for k in net)
    assert not torch.equal(a["head.weight"], b["head.weight"])  # a fresh head (seed 5)
    # A net of another shape is refused by name, a missing checkpoint clearly.
    wide = run_config(reid_dataset, tmp_path / "c", **{
        "train_reid.max_steps": 1, "train_reid.init_from": str(source), "reid.widths": [16, 48],
    })  # fmt: skip
    with pytest.raises(
        CheckpointError, match=r"widths=\[16, 32\].*this run builds.*widths=\[16, 48\]"
    ):
        train_reid(wide)
    with pytest.raises(CheckpointError, match="missing|does not exist|no checkpoint"):
        train_reid(run_config(reid_dataset, tmp_path / "d", **{
            "train_reid.max_steps": 1, "train_reid.init_from": str(tmp_path / "nothing.json"),
        }))  # fmt: skip


def test_time_based_checkpoints_and_pruning(reid_dataset, tmp_path):
    cfg = run_config(
        reid_dataset, tmp_path, **{"train_reid.max_steps": 4, "train_reid.checkpoint_every_s": 1e-9,
                                   "train_reid.keep_checkpoints": 2}
    )  # fmt: skip
    train_reid(cfg)
    names = [p.name for p in list_checkpoints(tmp_path / "test" / "checkpoints")]
    assert names == ["step_00000003.json", "step_00000004.json"]  # one per step, two kept


DDP_SCRIPT = """
import json, os, sys
from bev_reid.config import load_config
import math

from bev_reid.reid.train import augment_crops, train_reid, turn_and_shift, view_places

if __name__ == "__main__":
    path = train_reid(load_config(overrides=json.loads(sys.argv[1])))
    print(f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']} returned {path}", flush=True)
"""


def test_two_process_gloo_ddp_run_writes_one_checkpoint(reid_dataset, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    overrides = to_dict(
        run_config(
            reid_dataset, tmp_path, **{"train_reid.max_steps": 4, "train_reid.p_identities": 8}
        )
    )
    overrides = {f"{s}.{k}": v for s, sec in overrides.items() for k, v in sec.items()
                 if s in ("reid_run", "train_reid", "reid")}  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script), json.dumps(overrides)],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sidecar = tmp_path / "test" / "checkpoints" / "step_00000004.json"
    for rank in (0, 1):
        assert f"rank {rank} of 2 returned {sidecar}" in proc.stdout
    assert list_checkpoints(sidecar.parent) == [sidecar]
    assert len(list((tmp_path / "test").glob("events.out.tfevents.*"))) == 1  # rank 0 only
    assert len(losses(tmp_path / "test")) == 4
    BEVReIDModel.from_checkpoint(sidecar)
