"""The config system: YAML + dotted overrides, strict keys, and the CLI's flag mapping."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from bev_reid.cli import build_parser, main, resolve_config
from bev_reid.config import (
    BuildConfig,
    Config,
    ConfigError,
    PandaSetConfig,
    TrackConfig,
    config_from_dict,
    load_config,
    to_dict,
)


def test_yaml_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(
        "data:\n  version: v1.0-mini\n  final_dim: [64, 176]\ngrid:\n  xbound: [-20, 20, 0.5]\n"
    )
    cfg = load_config(f, ["data.version=v1.0-trainval", "train_lss.max_steps=7", "data.scenes=a,b"])
    assert cfg.data.version == "v1.0-trainval"  # the override wins over the file
    assert cfg.data.final_dim == (64, 176)
    assert cfg.grid.xbound == (-20.0, 20.0, 0.5) and cfg.grid.shape == (80, 200, 1)
    assert cfg.train_lss.max_steps == 7 and cfg.data.scenes == ("a", "b")
    assert cfg.train_lss.lr == Config().train_lss.lr  # untouched defaults stay


def test_unknown_key_names_the_valid_ones(tmp_path):
    with pytest.raises(
        ConfigError, match=r"unknown key 'data.verison'; valid keys of data: dataroot, version"
    ):
        load_config(overrides=["data.verison=x"])
    with pytest.raises(ConfigError, match="unknown key 'nosuch'"):
        load_config(overrides=["nosuch.a=1"])


def test_type_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="train_lss.max_steps must be an integer"):
        load_config(overrides=["train_lss.max_steps=many"])
    with pytest.raises(ConfigError, match=r"data.final_dim must have 2 items"):
        load_config(overrides=["data.final_dim=[1, 2, 3]"])
    with pytest.raises(ConfigError, match="grid.xbound must be"):
        load_config(overrides=["grid.xbound=[1, 0, 0.5]"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="train_reid.lr must be a number, got 'fast'"):
        load_config(overrides=["train_reid.lr=fast"])
    with pytest.raises(ConfigError, match="lidar_raster must be one of grid, box; got 'fine'"):
        load_config(overrides=["build.lidar_raster=fine"])
    with pytest.raises(ConfigError, match=r"build.lidar_bands must be positive and increasing"):
        load_config(overrides=["build.lidar_bands=[1.0, 0.5]"])
    with pytest.raises(ConfigError, match="build.crop_cell must be >= 0 metres, got -0.25"):
        load_config(overrides=["build.crop_cell=-0.25"])
    with pytest.raises(ConfigError, match=r"build.lidar_colour paints LiDAR points: add lidar"):
        load_config(overrides=["build.lidar_colour=true", "build.modalities=[camera]"])


def test_sections_built_in_python_are_checked_as_loaded_ones():
    # The API builds sections directly; the same choices and ranges hold as for YAML and --set.
    with pytest.raises(
        ConfigError, match=r"track.memory_mode must be one of mean, nearest; got 'median'"
    ):
        TrackConfig(memory_mode="median")  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError, match=r"build.modalities must be one of camera, lidar \(each item\)"
    ):
        BuildConfig(modalities=("camera", "radar"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="track.gate_m must be > 0; got 0.0"):
        TrackConfig(gate_m=0.0)
    with pytest.raises(ConfigError, match="track.max_appearance_distance must be >= 0 and <= 2"):
        TrackConfig(max_appearance_distance=2.5)
    with pytest.raises(ConfigError, match="track.device must be auto, cpu, cuda or cuda:N"):
        TrackConfig(device="cuda:first")
    with pytest.raises(ConfigError, match="track.classes must be a non-empty list"):
        TrackConfig(classes=("car", "tank"))
    with pytest.raises(ConfigError, match="track.nms_classes must be a list of .*'van'"):
        TrackConfig(nms_classes=("car", "van"))
    with pytest.raises(ConfigError, match="track.nms_iou must be >= 0 and <= 1"):
        TrackConfig(nms_iou=1.5)
    with pytest.raises(ConfigError, match=r"pandaset.frames must be >= 0 \(each item\)"):
        PandaSetConfig(frames=(0, -1))
    with pytest.raises(ConfigError, match="pandaset.drift_warn_m must be >= 0; got nan"):
        PandaSetConfig(drift_warn_m=float("nan"))
    # A YAML true is not taken for a choice, nor is a choice refused for its spelling.
    with pytest.raises(ConfigError, match="build.lidar_raster must be one of grid, box; got True"):
        load_config(overrides=["build.lidar_raster=true"])
    assert TrackConfig(memory_mode="nearest", device="cuda:1").memory_mode == "nearest"
    # An integer key is refused a fraction (a step count of 2.5 would be truncated somewhere);
    # numpy's integers are integers.
    with pytest.raises(ConfigError, match="track.max_age must be an integer; got 2.5"):
        TrackConfig(max_age=2.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"pandaset.frames must be an integer \(each item\)"):
        PandaSetConfig(frames=(0, 1.0))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="track.min_hits must be an integer; got True"):
        TrackConfig(min_hits=True)
    assert TrackConfig(max_age=np.int64(4)).max_age == 4


def test_exponent_without_a_dot_is_a_number(tmp_path):
    # YAML 1.1 reads 5e-4 as a string; a float key takes it as the number it plainly is.
    f = tmp_path / "c.yaml"
    f.write_text("train_reid:\n  weight_decay: 5e-4\n")
    assert load_config(f).train_reid.weight_decay == 5e-4
    assert load_config(overrides=["train_reid.lr=2e-3"]).train_reid.lr == 2e-3


def test_round_trip_through_dict():
    cfg = load_config(overrides=["data.scenes=[s1]", "grid.dbound=[1, 10, 0.5]"])
    assert config_from_dict(to_dict(cfg)) == cfg


def test_cli_flags_map_to_config_keys(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train_lss:\n  max_steps: 3\n  batch_size: 2\n")
    args = build_parser().parse_args(
        [
            "train-lss",
            "--config",
            str(f),
            "--max-steps",
            "9",
            "--set",
            "train_lss.batch_size=5",
            "--no-resume",
            "--scenes",
            "x,y",
        ]
    )
    cfg = resolve_config(args)
    assert cfg.train_lss.max_steps == 9  # flag beats file
    assert cfg.train_lss.batch_size == 5  # --set beats file
    assert cfg.train_lss.resume is False and cfg.data.scenes == ("x", "y")


def test_cli_reports_config_errors(capsys):
    assert main(["val-lss", "--set", "val_lss.nvals=lots"]) == 2
    assert "val_lss.nvals must be an integer" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("bev-reid 0.1.0")


def test_tools_mirror_every_sub_command():
    import subprocess
    import sys
    from pathlib import Path

    from bev_reid.cli import COMMANDS

    build_parser()  # registers the sub-commands
    tools = Path(__file__).resolve().parents[1] / "tools"
    for name in COMMANDS:
        script = tools / f"{name.replace('-', '_')}.py"
        assert script.is_file(), f"tools/{script.name} is missing for `bev-reid {name}`"
        assert f'main(["{name}", *sys.argv[1:]])' in script.read_text()
    out = subprocess.run(
        [sys.executable, str(tools / "build_dataset.py"), "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "--min-iou" in out.stdout


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_config_loads_and_sets_only_real_keys(path):
    # A mistyped key in a shipped config would stop the command it documents with an error.
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg = to_dict(load_config(path))
    for section, values in raw.items():
        for key, value in values.items():
            got = cfg[section][key]
            want = list(value) if isinstance(value, list) else value
            assert (list(got) if isinstance(got, (list, tuple)) else got) == want, (section, key)
