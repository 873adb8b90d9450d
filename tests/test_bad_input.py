"""Bad input never kills or poisons a run: ranges checked before work starts, one-line errors,
files others can read, nothing half-written left behind or read as whole."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from bev_reid.cli import main
from bev_reid.config import Config, ConfigError, load_config
from bev_reid.engine.io import atomic_write_text, sweep_stale_tmp


def _range_fields():
    """(section, field, a value outside its range) for every range-checked option."""
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        for f in dataclasses.fields(cls):
            if "range" not in f.metadata:
                continue
            lo, hi, above, _ = f.metadata["range"]
            bad = (lo - 1 if not above else lo) if lo is not None else hi + 1
            if isinstance(f.default, tuple):
                bad = [bad] * max(1, len(f.default))  # an empty default: one item
            elif isinstance(f.default, int):
                bad = int(bad)
            yield section.name, f.name, bad


RANGE_FIELDS = list(_range_fields())


def test_every_numeric_option_is_range_checked_by_name():
    assert len(RANGE_FIELDS) > 40
    names = {f"{s}.{k}" for s, k, _ in RANGE_FIELDS}
    wanted = {"train_lss.batch_size", "train_reid.cell_dropout", "eval_reid.trials",
              "eval_reid.topk", "eval_reid.poll_s", "train_lss.max_steps", "train_reid.max_steps",
              "train_lss.log_every", "eval_reid.batch_size"}  # fmt: skip
    assert wanted <= names, wanted - names
    for section, key, bad in RANGE_FIELDS:
        with pytest.raises(ConfigError, match=rf"^{section}\.{key} must be [<>]"):
            load_config(overrides={f"{section}.{key}": bad})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train_reid.cell_dropout=1.5", "train_reid.cell_dropout must be >= 0 and < 1; got 1.5"),
        ("eval_reid.trials=0", "eval_reid.trials must be >= 1; got 0"),
        ("eval_reid.topk=[0]", "eval_reid.topk must be >= 1 (each item); got (0,)"),
        ("eval_reid.poll_s=0", "eval_reid.poll_s must be > 0; got 0.0"),
        ("train_lss.max_steps=0", "train_lss.max_steps must be >= 1; got 0"),
        ("train_reid.max_steps=-3", "train_reid.max_steps must be >= 1; got -3"),
        ("eval_reid.topk=[]", "eval_reid.topk must list at least one rank"),
        ("train_lss.checkpoint_every=-1", "train_lss.checkpoint_every must be >= 0"),
    ],
)
def test_out_of_range_values_name_the_key_and_the_range(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train-lss", "--batch-size", "-2"], "train_lss.batch_size must be >= 1; got -2"),
        (["train-lss", "--batch-size", "0"], "train_lss.batch_size must be >= 1; got 0"),
        (["train-lss", "--device", "gpu"], "train_lss.device must be auto, cpu, cuda or cuda:N"),
        (["val-lss", "--checkpoint", "model.pt"], "pickled .pt/.pth files are never loaded"),
        (["train-lss", "--set", "train_lss.log_every=x"], "train_lss.log_every must be an integer"),
    ],
)
def test_one_line_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bev-reid {argv[0]}: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_zero_period_is_off_not_a_division_by_zero():
    from bev_reid.engine.loop import Every

    off = Every(0)
    assert not any(off.due(s) for s in range(1, 50)) and not off.due(50, final=True)
    every = Every(3, first=True)
    assert [s for s in range(1, 10) if every.due(s)] == [1, 3, 6, 9]
    with pytest.raises(ValueError, match=">= 0"):
        Every(-1)


def test_a_missing_lidar_file_in_a_loader_worker_is_one_line(synth_world, tmp_path, capsys):
    """The worker's traceback is not the user's: the message names the file."""
    import shutil

    world = tmp_path / "world"
    shutil.copytree(synth_world.path, world)
    victim = sorted((world / "samples" / "LIDAR_TOP").iterdir())[0]
    victim.unlink()
    argv = ["build-dataset", "--dataroot", str(world), "--version", synth_world.version,
            "--modalities", "lidar", "--out", str(tmp_path / "ds"),
            "--set", "data.num_workers=1"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    # the progress bar it stopped, then the error on a line of its own
    (line,) = [line for line in err.splitlines() if "error" in line]
    assert line.startswith("bev-reid build-dataset: error: ") and "Traceback" not in err
    assert f"LiDAR point cloud {str(victim)!r} is missing" in line and "data loader worker" in line


def test_finished_files_are_readable_by_others_and_stale_tmp_files_are_swept(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        assert stat.S_IMODE(atomic_write_text(tmp_path / "b", "x").stat().st_mode) == 0o600
    finally:
        os.umask(old)
    # A temporary file of a process that is gone (pid 2**22 + 1 is beyond any live pid here),
    # one of this process, and a file of another program.
    dead = tmp_path / f".step_00000001.json.{2**22 + 1}.abc123.tmp"
    mine = tmp_path / f".config.yaml.{os.getpid()}.abc123.tmp"
    other = tmp_path / ".someone-else.tmp"
    for p in (dead, mine, other):
        p.write_text("half")
    assert sweep_stale_tmp(tmp_path) == [dead]
    assert not dead.exists() and mine.exists() and other.exists()


def test_run_files_get_the_umask_permissions(reid_run_files):
    for path in reid_run_files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


@pytest.fixture
def reid_run_files(synth_world, tmp_path):
    """A small LiDAR dataset and a two-step ReID run, built under umask 022."""
    from bev_reid.reid.build import build_dataset
    from bev_reid.reid.train import train_reid

    old = os.umask(0o022)
    try:
        cfg = load_config(overrides={
            "data.dataroot": str(synth_world.path), "data.version": synth_world.version,
            "data.num_workers": 0, "build.out": str(tmp_path / "ds"),
            "build.modalities": ["lidar"], "build.min_views": 3, "build.val_fraction": 0.3,
            "reid_run.dataset_dir": str(tmp_path / "ds"),
            "reid_run.log_dir": str(tmp_path / "runs"),
            "train_reid.max_steps": 2, "train_reid.num_workers": 0, "train_reid.p_identities": 4,
            "train_reid.k_views": 2, "train_reid.device": "cpu",
        })  # fmt: skip
        build_dataset(cfg)
        sidecar = train_reid(cfg)
    finally:
        os.umask(old)
    ds, run = tmp_path / "ds", tmp_path / "runs" / "default"
    return [ds / "object_data.json", ds / "views.jsonl", ds / "crops.npy", run / "config.yaml",
            sidecar, sidecar.with_suffix(".safetensors")]  # fmt: skip


def test_a_rebuild_with_other_settings_keeps_the_finished_dataset(synth_world, tmp_path):
    from bev_reid.reid.build import build_dataset

    base = {"data.dataroot": str(synth_world.path), "data.version": synth_world.version,
            "data.num_workers": 0, "build.out": str(tmp_path / "ds"),
            "build.modalities": ["lidar"], "build.min_views": 3}  # fmt: skip
    meta = build_dataset(load_config(overrides=base))
    before = meta.read_bytes()
    with pytest.raises(ValueError, match="other settings"):
        build_dataset(load_config(overrides={**base, "build.crop_size": 16}))
    assert meta.read_bytes() == before  # still published, untouched
    json.loads(before)


def test_bev_pool_refuses_coords_on_the_meta_device():
    """A meta tensor beside a real one used to return uninitialised memory."""
    import torch

    from bev_reid.ops import bev_pool

    feats = torch.randn(5, 3)
    with pytest.raises(RuntimeError, match="feats on cpu and coords on meta"):
        bev_pool(feats, torch.zeros(5, 4, dtype=torch.int32, device="meta"), 1, (2, 2, 1))
    out = bev_pool(feats.to("meta"), torch.zeros(5, 4, dtype=torch.int32, device="meta"), 1,
                   (2, 2, 1))  # fmt: skip
    assert out.device.type == "meta" and out.shape == (1, 3, 1, 2, 2)  # shape inference works


def test_reserved_space_is_allocated_on_disk(tmp_path):
    from bev_reid.engine.io import reserve_space

    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(1 << 20)  # 1 MiB of holes
    assert path.stat().st_blocks * 512 < 1 << 20
    reserve_space(path, 1 << 20)
    assert path.stat().st_blocks * 512 >= 1 << 20
    assert path.stat().st_size == 1 << 20


def in_small_filesystem(mount: Path, size_kib: int, script: str) -> subprocess.CompletedProcess:
    """Runs the shell ``script`` with a ``size_kib`` tmpfs mounted at ``mount`` (private to it:
    a user and mount namespace); the filesystem goes when the script ends."""
    return subprocess.run(
        ["unshare", "--map-root-user", "--mount", "sh", "-c",
         f"mount -t tmpfs -o size={size_kib}k tmpfs {mount} && {script}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def namespaces(tmp_path_factory):
    probe = tmp_path_factory.mktemp("probe")
    try:
        ok = in_small_filesystem(probe, 64, "true").returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        pytest.skip("needs unshare with user and mount namespaces, to mount a small tmpfs")


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(synth_world, tmp_path, namespaces):
    """build-dataset on a real small filesystem: full while writing a part, then while merging
    the parts into crops.npy (a memory map, which on a full disk used to die of SIGBUS). Each time
    one line names the file and the folder, nothing half-written is left, and once there is room
    a rerun finishes from what was kept."""
    argv = [sys.executable, "-m", "bev_reid.cli", "build-dataset", "--dataroot",
            str(synth_world.path), "--version", synth_world.version, "--modalities", "lidar",
            "--set", "data.num_workers=0", "--set", "build.part_size=4"]  # fmt: skip
    # The sizes of a whole build: its parts, and crops.npy which the merge writes beside them.
    probe = tmp_path / "probe"
    subprocess.run([*argv, "--out", str(probe)], check=True, capture_output=True)
    crops = (probe / "crops.npy").stat().st_size // 1024
    parts = sum(p.stat().st_size for p in (probe / "parts").iterdir()) // 1024
    assert crops > 16  # room to fall between

    mount = tmp_path / "small"
    mount.mkdir()
    out = mount / "ds"
    run = " ".join([*argv, "--out", str(out)])
    listing = f"; echo rc=$?; ls -a {out} {out}/parts"
    # 1. full while writing the parts
    tiny = in_small_filesystem(mount, 16, run + listing)
    assert "rc=2" in tiny.stdout, tiny.stderr
    # one error line, of its own (below the progress bar it ended)
    err = [line for line in tiny.stderr.splitlines() if "error:" in line]
    assert len(err) == 1 and "Traceback" not in tiny.stderr and "Bus error" not in tiny.stderr
    assert err[0].startswith("bev-reid build-dataset: error: no space left on the device of ")
    assert str(out / "parts") in err[0] and ".npy" in err[0]
    assert ".tmp" not in tiny.stdout  # no temporary file of a part left behind
    # 2. full at the merge; then, remounted larger, a rerun finishes from the kept parts
    merge = in_small_filesystem(
        mount,
        parts + crops // 2 + 64,
        run
        + listing
        + f"; mount -o remount,size={2 * (parts + crops) + 256}k {mount}; "
        + run
        + f"; echo rerun=$?; ls -a {out}",
    )
    first, _, second = merge.stdout.partition("rerun=")
    assert "rc=2" in first, merge.stderr
    assert f"error: no space left on the device of {out} for crops.npy (" in merge.stderr
    assert "crops.npy" not in first and ".tmp" not in first  # none, not half of one
    assert "Bus error" not in merge.stderr
    assert second.startswith("0") and "crops.npy" in second, merge.stderr
