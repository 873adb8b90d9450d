"""The commands end to end on the synthetic world, and their one-line errors."""

import json

import pytest

from bev_reid.cli import main


def data_flags(world) -> list[str]:
    return ["--dataroot", str(world.path), "--version", world.version, "--set",
            "data.num_workers=0"]  # fmt: skip


def test_make_detections_track_eval_and_show(synth_world, track_checkpoint, tmp_path, capsys):
    flags = data_flags(synth_world)
    det, motion, reid = tmp_path / "det.json", tmp_path / "motion.json", tmp_path / "reid.json"
    assert main(["make-detections", *flags, "--out", str(det), "--seed", "1", "--max-gap", "2",
                 "--miss-rate", "0.5", "--noise-m", "0.1", "--fp-rate", "0.05"]) == 0  # fmt: skip
    assert main(["track", *flags, "--detections", str(det), "--reid-checkpoint", "none",
                 "--out", str(motion)]) == 0  # fmt: skip
    assert "motion alone" in capsys.readouterr().out
    ckpt = str(track_checkpoint)
    assert main(["track", *flags, "--detections", str(det), "--reid-checkpoint", ckpt,
                 "--out", str(reid), "--set", "track.device=cpu"]) == 0  # fmt: skip
    assert "motion + ReID" in capsys.readouterr().out
    for path in (motion, reid):
        results = json.loads(path.read_text())["results"]
        assert set(results) == set(json.loads(det.read_text())["results"])  # every keyframe
    assert main(["eval-track", *flags, "--results", str(reid), "--out", str(tmp_path / "ev")]) == 0
    table = capsys.readouterr().out
    assert "amota" in table and "car" in table
    summary = json.loads((tmp_path / "ev" / "metrics_summary.json").read_text())
    assert {"amota", "amotp", "mota", "ids", "frag"} <= set(summary)
    picture = tmp_path / "tracks.png"
    listed = tmp_path / "switches.csv"
    assert main(["show-tracks", *flags, "--results", str(reid), "--out", str(picture),
                 "--switches", str(listed)]) == 0  # fmt: skip
    assert picture.stat().st_size > 10_000
    lines = listed.read_text().splitlines()
    assert lines[0].startswith("scene,keyframe,sample_token,tracking_name,instance_token,from_id")
    assert f"and {listed} ({len(lines) - 1} switches:" in capsys.readouterr().out


def test_track_estimates_the_velocities_a_detector_does_not_write(synth_world, tmp_path, capsys):
    flags = data_flags(synth_world)
    det, zeros, nulls = (tmp_path / f"{n}.json" for n in ("det", "zeros", "nulls"))
    assert main(["make-detections", *flags, "--out", str(det), "--seed", "2"]) == 0
    for path, mode in ((zeros, "zero"), (nulls, "none")):  # as detectors without them write
        assert main(["make-detections", *flags, "--out", str(path), "--seed", "2",
                     "--velocity", mode]) == 0  # fmt: skip

    def tracks(detections, *extra) -> list:
        out = tmp_path / "t.json"
        assert main(["track", *flags, "--detections", str(detections), "--reid-checkpoint",
                     "none", "--out", str(out), *extra]) == 0  # fmt: skip
        results = json.loads(out.read_text())["results"]
        return sorted(
            (k, r["tracking_id"], r["translation"]) for k, v in results.items() for r in v
        )

    capsys.readouterr()
    auto = tracks(zeros)
    assert "detector velocities: none in the file" in capsys.readouterr().out
    assert auto == tracks(det, "--set", "track.detection_velocity=ignore") == tracks(nulls)
    assert "ignored (track.detection_velocity: ignore)" in capsys.readouterr().out
    taken = tracks(zeros, "--set", "track.detection_velocity=use")
    assert "detector velocities" not in capsys.readouterr().out
    assert taken != auto
    with_velocities = tracks(det)
    assert "detector velocities" not in capsys.readouterr().out
    assert with_velocities != auto


@pytest.mark.parametrize(
    "args, message",
    [
        (["track", "--detections", "{det}", "--out", "{tmp}/t.json"], "needs --reid-checkpoint"),
        (["track", "--detections", "{bad}", "--reid-checkpoint", "none"],
         "results['{token}'][0]: unknown detection_name 'vehicle.car'"),
        (["make-detections", "--miss-rate", "1.5"], "track.det_miss_rate must be >= 0 and <= 1"),
        (["track", "--detections", "{det}", "--reid-checkpoint", "{tmp}/nothing"],
         "does not exist"),
    ],
)  # fmt: skip
def test_errors_are_one_line(synth_world, tmp_path, capsys, args, message):
    det = tmp_path / "det.json"
    assert main(["make-detections", *data_flags(synth_world), "--out", str(det)]) == 0
    results = json.loads(det.read_text())["results"]
    token = next(t for t, ds in results.items() if ds)
    results[token][0]["detection_name"] = "vehicle.car"
    (tmp_path / "bad.json").write_text(json.dumps({"meta": {}, "results": results}))
    capsys.readouterr()
    fill = {"det": str(det), "bad": str(tmp_path / "bad.json"), "tmp": str(tmp_path)}
    argv = [a.format(**fill) for a in args]
    assert main([argv[0], *data_flags(synth_world), *argv[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert message.format(token=token) in err and len(err.splitlines()) == 1
