"""The LSS network and its training on the synthetic world: shapes, splat paths, learning,
exact resume, DDP, and refusal of damaged checkpoints."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bev_reid.config import SynthConfig, load_config
from bev_reid.data.keyframes import NuScenesKeyframes, collate
from bev_reid.engine.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from bev_reid.engine.distributed import DistInfo
from bev_reid.lss.model import CAMERA_KEYS, build_model, forward, load_lss, resolve_amp
from bev_reid.lss.train import RunBatches, train_lss
from bev_reid.lss.validate import validate_lss
from bev_reid.synth.generate import generate_world

REPO = Path(__file__).resolve().parents[2]


def tiny(root, logdir=None, **extra):
    """A small, fast configuration of the whole LSS job on a synthetic world."""
    overrides = {
        "data.dataroot": str(root.path),
        "data.version": root.version,
        "data.final_dim": [64, 176],
        "data.num_workers": 0,
        "data.resize_lim": [0.11, 0.12],
        "data.bot_pct_lim": [0.0, 0.1],
        "grid.xbound": [-24, 24, 1.5],
        "grid.ybound": [-24, 24, 1.5],
        "grid.dbound": [4, 36, 2],
        "lss.channels": 16,
        "lss.bev_channels": 16,
        "train_lss.batch_size": 1,
        "train_lss.log_every": 1,
        "train_lss.keep_checkpoints": 0,
    }
    if logdir is not None:
        overrides["train_lss.logdir"] = str(logdir)
    overrides.update(extra)
    return load_config(overrides=overrides)


def scalars(logdir, tag):
    events = EventAccumulator(str(logdir))
    events.Reload()
    return [e.value for e in events.Scalars(tag)]


def batch_of(cfg, n=2):
    ds = NuScenesKeyframes(cfg.data, cfg.grid, is_train=False)
    return collate([ds[i] for i in range(n)])


def test_forward_shapes_and_finite(synth_world):
    cfg = tiny(synth_world)
    model = build_model(cfg).eval()
    batch = batch_of(cfg)
    with torch.no_grad():
        out = model(*(batch[k] for k in CAMERA_KEYS))
    assert out.bev.shape == (2, 16, 32, 32)
    assert out.logits.shape == (2, 1, 32, 32)
    assert out.splat.shape == (2, 16, 32, 32)
    assert all(torch.isfinite(t).all() for t in (out.bev, out.logits, out.splat))
    assert out.splat.abs().sum() > 0  # the frustum reaches the grid


def test_bev_pool_path_equals_reference_path(synth_world):
    torch.manual_seed(0)
    cfg = tiny(synth_world)
    ours = build_model(cfg).eval()
    ref = build_model(tiny(synth_world, **{"lss.splat": "reference"})).eval()
    ref.load_state_dict(ours.state_dict())
    batch = batch_of(cfg)
    a = ours(*(batch[k] for k in CAMERA_KEYS))
    b = ref(*(batch[k] for k in CAMERA_KEYS))
    torch.testing.assert_close(a.splat, b.splat, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-4, atol=1e-4)
    ga = torch.autograd.grad(a.bev.square().mean(), ours.camencode.depthnet.weight)[0]
    gb = torch.autograd.grad(b.bev.square().mean(), ref.camencode.depthnet.weight)[0]
    torch.testing.assert_close(ga, gb, rtol=1e-3, atol=1e-6)


def test_mixed_precision_keeps_the_geometry_in_float32(synth_world):
    """Under autocast (train_lss.amp) the frustum positions stay exactly the float32 ones: in
    bf16 they would be rounded by up to half a grid cell, in fp16 a 45 m depth times a
    full-size pixel column overflows. The splat then differs from float32 only by the 16-bit
    features, on the compiled and the reference path alike."""
    torch.manual_seed(0)
    cfg = tiny(synth_world, **{"grid.dbound": [4, 45, 1]})
    ours = build_model(cfg).eval()
    ref = build_model(tiny(synth_world, **{"grid.dbound": [4, 45, 1], "lss.splat": "reference"}))
    ref.load_state_dict(ours.state_dict())
    batch = batch_of(cfg)
    mats = [batch[k] for k in CAMERA_KEYS[1:]]
    exact = ours.geometry(*mats)
    assert exact.abs().max() > 40  # far enough out for bf16 steps of 0.25 m
    with torch.no_grad():
        full = ours(*(batch[k] for k in CAMERA_KEYS))
        for dtype in (torch.bfloat16, torch.float16):
            with torch.autocast("cpu", dtype=dtype):
                geom = ours.geometry(*mats)
                a = ours(*(batch[k] for k in CAMERA_KEYS))
                b = ref.eval()(*(batch[k] for k in CAMERA_KEYS))
            assert geom.dtype == torch.float32 and torch.equal(geom, exact), dtype
            assert a.splat.dtype == dtype  # the features did run in 16 bits
            rel = (a.splat.float() - full.splat).norm() / full.splat.norm()
            assert rel < 0.02, (dtype, float(rel))
            torch.testing.assert_close(b.splat.float(), a.splat.float(), rtol=0.02, atol=1e-3)


def test_config_mismatches_are_clear_errors(synth_world):
    with pytest.raises(ValueError, match="lss.splat must be one of"):
        build_model(tiny(synth_world, **{"lss.splat": "fast"}))
    with pytest.raises(ValueError, match="must equal lss.channels x grid z cells"):
        build_model(tiny(synth_world, **{"lss.bev_channels": 64}))
    with pytest.raises(ValueError, match="divisible by lss.downsample"):
        build_model(tiny(synth_world, **{"data.final_dim": [60, 176]}))
    with pytest.raises(FileNotFoundError, match="trunk weights .*nothing.pt"):
        build_model(tiny(synth_world, **{"lss.trunk_weights": "nothing.pt"}))


class PickledNote:
    """An arbitrary object in a pickle: loading it would run the pickle's code path."""


def test_trunk_weights_load_from_a_local_file(synth_world, tmp_path):
    from efficientnet_pytorch import EfficientNet
    from safetensors.torch import save_file

    torch.manual_seed(1)
    trunk = EfficientNet.from_name("efficientnet-b0")
    path = tmp_path / "b0.safetensors"
    save_file({k: v.contiguous() for k, v in trunk.state_dict().items()}, str(path))
    model = build_model(tiny(synth_world, **{"lss.trunk_weights": str(path)}))
    assert torch.equal(model.camencode.trunk.net._conv_stem.weight, trunk._conv_stem.weight)
    # A pickle that holds more than tensors is refused, and torch's hint to unpickle it anyway
    # does not reach the user.
    pickled = tmp_path / "b0.pt"
    torch.save({"state": trunk.state_dict(), "made_by": PickledNote()}, pickled)
    with pytest.raises(ValueError, match="never unpickles") as info:
        build_model(tiny(synth_world, **{"lss.trunk_weights": str(pickled)}))
    assert "weights_only=False" not in str(info.value)


def test_every_registered_trunk_builds_and_says_its_strides():
    """The trunk registry: each trunk gives features at the asked stride, refuses others, and
    the config refuses a name the registry does not hold (listing the ones it does)."""
    from bev_reid.config import ConfigError
    from bev_reid.models.trunks import TRUNKS, build_trunk

    x = torch.randn(2, 3, 64, 176)
    for name in TRUNKS:
        built = 0
        for stride in (4, 8, 16, 32):
            try:
                trunk = build_trunk(name, stride)
            except ValueError as e:
                assert "supports lss.downsample" in str(e)
                continue
            out = trunk.eval()(x)
            assert out.shape == (2, trunk.out_channels, 64 // stride, 176 // stride), name
            built += 1
        assert built >= 1, name
    with pytest.raises(ConfigError, match="registered trunk: efficientnet-b0, resnet-tiny"):
        load_config(overrides=["lss.trunk=resnet-huge"])
    with pytest.raises(KeyError, match="valid trunks"):
        build_trunk("resnet-huge", 16)


def test_depth_loss_is_the_cross_entropy_where_lidar_lands():
    """The depth term against a hand-computed cross-entropy over the cells with a target."""
    import math

    from bev_reid.lss.losses import depth_loss

    logits = torch.zeros(1, 1, 3, 1, 2)  # B N D fH fW
    logits[0, 0, :, 0, 0] = torch.tensor([2.0, 0.0, 0.0])
    target = torch.tensor([[[[0, -1]]]])  # the second cell has no LiDAR point
    want = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert depth_loss(logits, target).item() == pytest.approx(want, rel=1e-6)
    assert depth_loss(logits, torch.full_like(target, -1)).item() == 0.0
    # Weighted: cells weigh by hand; the second cell (no target) is left out whatever its weight.
    both = torch.tensor([[[[0, 2]]]])
    ce = [want, -math.log(1 / 3)]  # the second cell's logits are all 0: uniform over 3 bins
    weight = torch.tensor([[[[3.0, 1.0]]]])
    got = depth_loss(logits, both, weight).item()
    assert got == pytest.approx((3 * ce[0] + ce[1]) / 4, rel=1e-6)
    assert depth_loss(logits, target, weight).item() == pytest.approx(want, rel=1e-6)


def test_dice_loss_against_hand_computed_overlap():
    """Soft Dice per sample, by hand: probabilities 0.5 everywhere on a 2 x 2 map."""
    from bev_reid.lss.losses import dice_loss

    logits = torch.zeros(2, 1, 2, 2)  # sigmoid 0.5 in every cell
    mask = torch.zeros(2, 1, 2, 2)
    mask[0, 0, 0, 0] = 1  # one vehicle cell in the first sample, none in the second
    first = 1 - (2 * 0.5 + 1) / (2.0 + 1 + 1)  # overlap 0.5, |P| 2, |G| 1
    second = 1 - 1 / (2.0 + 0 + 1)
    assert dice_loss(logits, mask).item() == pytest.approx((first + second) / 2, rel=1e-6)
    perfect = torch.where(mask > 0, 50.0, -50.0)
    assert dice_loss(perfect, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_overfitting_two_keyframes_lowers_loss_and_raises_iou(tmp_path_factory, tmp_path):
    world = generate_world(
        SynthConfig(scenes=1, keyframes=2, seed=3),
        out=tmp_path_factory.mktemp("two"),
        progress=False,
    )

    class Root:
        path, version = world, "v1.0-mini"

    cfg = tiny(
        Root,
        tmp_path,
        **{
            "train_lss.batch_size": 2,
            "train_lss.max_steps": 60,
            "data.rot_lim": [0.0, 0.0],
            "data.rand_flip": False,
            "train_lss.checkpoint_every": 1000,
            # With the weighted BCE alone, 60 steps on two keyframes often end predicting no
            # vehicle cell at all (IoU 0 while the loss falls); the dice term trains the overlap.
            "train_lss.dice_weight": 1.0,
        },
    )
    train_lss(cfg)
    loss, iou = scalars(tmp_path, "loss/total"), scalars(tmp_path, "iou/train")
    assert len(loss) == 60
    first, last = sum(loss[:5]) / 5, sum(loss[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    # IoU per step is noisy (batch norm in training mode on two samples): compare ten-step means.
    assert sum(iou[-10:]) / 10 > sum(iou[:10]) / 10 + 0.05, iou


def test_run_batches_cross_epochs_and_resume_mid_run():
    """One sampler serves the whole run: each epoch is the permutation seeded by (seed, epoch)
    cut into full batches (the leftover keyframe waits for the next epoch), every index carries
    its epoch, and starting at step k gives the tail of the run from step 0."""
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    run = list(RunBatches(7, 2, seed=4, dist=dist, start=0, max_steps=8))
    assert len(run) == 8 == len(RunBatches(7, 2, 4, dist, 0, 8))
    expected = []
    for epoch in range(3):
        order = torch.randperm(7, generator=torch.Generator().manual_seed(4 * 100003 + epoch))
        expected += [[(epoch, int(i)) for i in order[b : b + 2]] for b in (0, 2, 4)]
    assert run == expected[:8]
    assert list(RunBatches(7, 2, 4, dist, 5, 8)) == run[5:]
    assert list(RunBatches(7, 2, 4, dist, 8, 8)) == []
    # Two processes share each epoch's permutation, each its own half.
    halves = [
        list(RunBatches(8, 2, 4, DistInfo(r, 2, r, torch.device("cpu")), 0, 4)) for r in (0, 1)
    ]
    seen = [i for half in halves for batch in half[:2] for _, i in batch]
    assert sorted(seen) == list(range(8))


def test_auto_amp_is_bf16_only_where_it_is_fast():
    cpu = torch.device("cpu")
    assert resolve_amp("none", cpu) == "none" and resolve_amp("fp16", cpu) == "fp16"
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    if not flags:
        pytest.skip("no /proc/cpuinfo to tell whether this CPU has AMX tiles")
    assert resolve_amp("auto", cpu) == ("bf16" if "amx_tile" in flags else "none")


def test_channels_last_weights_save_and_load_to_the_same_outputs(synth_world, tmp_path):
    """The network's convolutions are channels-last (build_model); a checkpoint of them loads
    into a fresh network that gives the same outputs."""
    cfg = tiny(synth_world)
    model = build_model(cfg).eval()
    conv = model.bevencode.stem[0].weight  # 7 x 7: the two layouts differ
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    path = save_checkpoint(tmp_path, 1, model, meta={"kind": "lss"})
    loaded = build_model(cfg).eval()
    loaded.load_state_dict(load_checkpoint(path).model_state())
    batch = batch_of(cfg, 1)
    with torch.no_grad():
        torch.testing.assert_close(forward(loaded, batch).logits, forward(model, batch).logits)


def test_resume_takes_the_same_next_step(synth_world, tmp_path):
    common = {"data.scenes": [], "train_lss.checkpoint_every": 2}
    straight = tiny(synth_world, tmp_path / "a", **common, **{"train_lss.max_steps": 5})
    train_lss(straight)
    stopped = tiny(synth_world, tmp_path / "b", **common, **{"train_lss.max_steps": 3})
    train_lss(stopped)  # writes steps 2 and 3; resume from 3 (mid-epoch) to 5
    resumed = tiny(
        synth_world,
        tmp_path / "b",
        **common,
        **{"train_lss.max_steps": 5, "train_lss.resume": True},
    )
    train_lss(resumed)
    a = load_checkpoint(latest_checkpoint(tmp_path / "a" / "checkpoints"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "b" / "checkpoints"))
    assert a.step == b.step == 5
    for name, value in a.model_state().items():
        torch.testing.assert_close(b.model_state()[name], value, rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(
        torch.tensor(scalars(tmp_path / "b", "loss/total")[-2:]),
        torch.tensor(scalars(tmp_path / "a", "loss/total")[-2:]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_ddp_two_processes_on_cpu(synth_world, tmp_path):
    logdir = tmp_path / "ddp"
    cfg_args = [
        f"--dataroot={synth_world.path}",
        f"--version={synth_world.version}",
        f"--logdir={logdir}",
        "--max-steps=1",
        "--device=cpu",
        "--batch-size=1",
        "--set=data.final_dim=[64, 176]",
        "--set=data.num_workers=0",
        "--set=data.resize_lim=[0.11, 0.12]",
        "--set=grid.xbound=[-24, 24, 1.5]",
        "--set=grid.ybound=[-24, 24, 1.5]",
        "--set=grid.dbound=[4, 36, 2]",
        "--set=lss.channels=16",
        "--set=lss.bev_channels=16",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "bev_reid",
            "train-lss",
            *cfg_args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpts = sorted((logdir / "checkpoints").glob("*.json"))
    assert [p.name for p in ckpts] == ["step_00000001.json"]  # one writer: rank 0
    model, _ = load_lss(ckpts[0])
    assert sum(p.numel() for p in model.parameters()) > 0


def test_damaged_checkpoints_are_refused(synth_world, tmp_path):
    cfg = tiny(synth_world, tmp_path, **{"train_lss.max_steps": 1})
    path = train_lss(cfg)
    weights = path.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_lss(path)
    proc = subprocess.run(
        [sys.executable, "-m", "bev_reid", "val-lss", f"--checkpoint={path}"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "truncated" in proc.stderr


def test_val_lss_reports_iou(synth_world, tmp_path):
    cfg = tiny(synth_world, tmp_path, **{"train_lss.max_steps": 1})
    path = train_lss(cfg)
    r = validate_lss(path, cfg, nvals=2, device="cpu")
    assert r["keyframes"] == 2 and 0 <= r["iou_min"] <= r["iou_mean"] <= r["iou_max"] <= 1
    # The mask's protocol is the evaluation's (cfg.data.min_visibility), scored here by hand.
    import dataclasses

    strict = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, min_visibility=4))
    got = validate_lss(path, strict, nvals=2, device="cpu")
    model, trained = load_lss(path)
    data = dataclasses.replace(trained.data, min_visibility=4, num_workers=0)
    views = NuScenesKeyframes(data, trained.grid, is_train=False, split="val")
    ious = []
    with torch.no_grad():
        for i in range(2):
            batch = collate([views[i]])
            pred, gt = forward(model, batch).logits > 0, batch["bev_mask"] > 0.5
            ious.append(float((pred & gt).sum()) / max(1.0, float((pred | gt).sum())))
    assert got["iou_mean"] == pytest.approx(sum(ious) / 2, abs=1e-6)


def test_image_colour_context_is_the_pooled_input_beside_the_vehicle_channel():
    """lss.image_colour: three context channels are the input averaged over each feature cell
    (by hand with a reshape), the vehicle probability stays last, the rest is learned."""
    from bev_reid.models.lss import CamEncoder

    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 176)
    by_hand = x.reshape(2, 3, 8, 8, 22, 8).mean((3, 5))  # 8 x 8 pixels per cell
    enc = CamEncoder(5, 8, "resnet-tiny", 8, image_seg=True, image_colour=True).eval()
    depth, context, seg = enc(x)
    assert depth.shape == (2, 5, 8, 22) and context.shape == (2, 8, 8, 22)
    assert torch.allclose(context[:, 4:7], by_hand, atol=1e-6)
    assert torch.allclose(context[:, 7], torch.sigmoid(seg))
    plain = CamEncoder(5, 8, "resnet-tiny", 8, image_colour=True).eval()
    assert torch.allclose(plain(x)[1][:, 5:8], by_hand, atol=1e-6)
    with pytest.raises(ValueError, match="no learned context channel"):
        CamEncoder(5, 4, "resnet-tiny", 8, image_seg=True, image_colour=True)


def test_head_blocks_let_a_cell_depth_see_the_rays_around_it():
    """lss.head_blocks: with 3x3 blocks before the 1x1 head, moving one cell's ray changes the
    depth of the cells two rows above it (a vehicle's body over its ground contact), and not of
    cells out of the blocks' reach; with none (the original head) only the cell itself moves."""
    from bev_reid.models.lss import CamEncoder

    torch.manual_seed(0)
    x, rays = torch.randn(1, 3, 64, 176), torch.randn(1, 3, 8, 22)
    moved = rays.clone()
    moved[:, :, 5, 10] += 1.0
    for blocks, reaches in ((0, False), (2, True)):
        enc = CamEncoder(5, 8, "resnet-tiny", 8, ray_channels=3, head_blocks=blocks, head_width=16)
        enc = enc.eval()
        changed = (enc(x, rays)[0] - enc(x, moved)[0]).abs().amax(1)[0] > 1e-6  # fH x fW
        assert changed[5, 10]
        assert bool(changed[3, 10]) == reaches and bool(changed[5, 8]) == reaches
        assert not changed[0, 0] and not changed[5, 20]  # 4 convolutions reach 4 cells
        assert int(changed.sum()) == (1 if blocks == 0 else int(changed.sum()))
        heads = [k for k in enc.state_dict() if k.startswith("head.")]
        assert bool(heads) == bool(blocks)  # head_blocks 0 loads the checkpoints made before
        if blocks:
            assert enc.depthnet.in_channels == 16
