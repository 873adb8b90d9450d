"""`bev-reid demo` end to end at a reduced size: the report is written, a re-run reuses it."""

import json

import pytest

from bev_reid.cli import main
from bev_reid.config import load_config
from bev_reid.demo.run import default_config, run_demo

TINY = [
    "synth.scenes=1",
    "synth.keyframes=6",
    "synth.seed=2",
    "data.final_dim=[64, 176]",
    "data.num_workers=0",
    "grid.xbound=[-24, 24, 1.5]",
    "grid.ybound=[-24, 24, 1.5]",
    "grid.dbound=[4, 36, 2]",
    "lss.channels=16",
    "lss.bev_channels=16",
    "train_lss.max_steps=2",
    "train_lss.checkpoint_every=2",
    "build.min_views=3",
    "build.val_fraction=0.3",
    "train_reid.max_steps=12",
    "train_reid.checkpoint_every=12",
    "train_reid.p_identities=6",
    "train_reid.k_views=3",
    "eval_reid.trials=2",
    "eval_reid.min_gap_s=1.0",  # the world lasts 2.5 s
    "eval_reid.neighbour_radius_m=30",  # and has few validation vehicles
]

REPORT = (
    "summary.txt",
    "summary.json",
    "cmc_curve.png",
    "ranked_retrieval.png",
    "bev_prediction.png",
    "tracks.png",
    "config.yaml",
)


def test_demo_end_to_end_and_rerun(tmp_path, capsys):
    cfg = load_config(default_config(), TINY)
    summary = run_demo(cfg, tmp_path)
    report = tmp_path / "report"
    for name in REPORT:
        assert (report / name).stat().st_size > 0, name
    assert (report / "cmc_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((report / "summary.json").read_text())
    assert saved["keyframes"] == 6 and saved["dataset"]["num_val_identities"] >= 1
    # One ReID run per modality set, each beside its own floors.
    assert set(saved["runs"]) == {"camera", "lidar", "both"}
    channels = {name: run["channels"] for name, run in saved["runs"].items()}
    # camera texture at 4 heights: 12; box raster with colour: 10
    assert channels == {"camera": 12, "lidar": 10, "both": 22}
    for run in saved["runs"].values():
        retrieval = [
            r for r in run["trained"] if r["protocol"] == "retrieval" and r["condition"] == "all"
        ]
        assert retrieval and 0.0 <= retrieval[0]["rank1"] <= 1.0 and retrieval[0]["step"] == 12
        assert {r["checkpoint"] for r in run["raw_standardised"]} == {"raw-crops-standardised"}
        assert {r["checkpoint"] for r in run["raw"]} == {"raw-crops"}
    assert len(saved["cmc_curves"]["camera embedding"]) == 20
    assert len(saved["dataset"]["channels"]) == 12 + 10
    assert saved["dataset"]["channels"][0] == "camera_texture_0_red"
    assert all(isinstance(t, float) for k, t in summary["times"].items())
    out = capsys.readouterr().out
    assert "rank-1" in out and "camera: trained, all" in out
    for name, run in saved["runs"].items():  # the tracker's question, beside its floors
        near = [r for r in run["trained"] if r["protocol"] == "neighbours"]
        assert near and near[0]["min_gap_s"] == 1.0 and near[0]["num_valid"] > 0, name
        assert 0.0 <= near[0]["auc"] <= 1.0
        assert f"{name}: own views 1 s apart against the vehicles within 30 m" in out
    # tensorboard logs of each stage and run
    for folder in ("lss", "reid/camera", "reid/lidar", "reid/both", "eval/camera", "eval/both"):
        assert list((tmp_path / folder).glob("events.out.tfevents.*")), folder

    # Tracking: a second world of the next seed, motion alone and with the "both" embedding,
    # each scored by the devkit (its own metrics_summary.json beside the report's figures).
    tracking = saved["tracking"]
    assert tracking["world_seed"] == 3 and tracking["reid_run"] == "both"
    world = json.loads((tmp_path / "track/world/v1.0-mini/scene.json").read_text())
    assert len(world) == 2
    for mode in ("motion", "reid"):
        devkit = json.loads((tmp_path / f"track/eval_{mode}/metrics_summary.json").read_text())
        assert tracking["results"][mode]["ids"] == devkit["ids"]
        assert tracking["results"][mode]["car"]["ids"] == devkit["label_metrics"]["ids"]["car"]
        assert 0.0 <= tracking["results"][mode]["amota"] <= 1.0
        assert tracking["results"][mode]["keyframes_per_s"] > 0
        tracks = json.loads((tmp_path / f"track/tracks_{mode}.json").read_text())
        assert tracks["meta"]["use_camera"] == (mode == "reid")  # "both" holds camera channels
    assert "motion + ReID (both)" in out and "motion alone" in out

    again = run_demo(cfg, tmp_path)  # finished stages are reused
    assert all(
        again["times"][stage] is None
        for stage in ("synth", "train-lss", "build-dataset", "train-reid", "eval-reid", "track")
    )
    assert again["tracking"] == tracking


def test_demo_cli_reports_a_bad_override(capsys):
    assert main(["demo", "--set", "train_lss.max_steps=many"]) == 2
    assert "train_lss.max_steps must be an integer" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["demo.yaml"])
def test_demo_config_is_found(name):
    assert default_config().name == name
