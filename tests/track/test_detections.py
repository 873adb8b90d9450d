"""Detection-results files: records are checked and a bad one is named; results round-trip."""

import dataclasses
import json
import math

import pytest

from bev_reid.track.detections import (
    Detection,
    DetectionFormatError,
    drop_velocities,
    read_detections,
    tracking_record,
    without_velocities,
    write_results,
)

GOOD = {
    "sample_token": "tok1",
    "translation": [1.0, 2.0, 0.5],
    "size": [1.9, 4.5, 1.6],
    "rotation": [0.0, 0.0, 0.0, 2.0],  # normalised on reading
    "velocity": [0.5, 0.0],
    "detection_name": "car",
    "detection_score": 0.8,
    "attribute_name": "",
}


def write(tmp_path, results):
    path = tmp_path / "det.json"
    path.write_text(json.dumps({"meta": {}, "results": results}))
    return path


def test_a_good_file_reads_back(tmp_path):
    dets = read_detections(write(tmp_path, {"tok1": [GOOD], "tok2": []}), ["tok1", "tok2"])
    d = dets["tok1"][0]
    assert d.rotation == (0.0, 0.0, 0.0, 1.0) and d.name == "car" and d.score == 0.8
    assert d.yaw == pytest.approx(3.14159265, abs=1e-6)  # 180 deg about z
    assert dets["tok2"] == []
    out = write_results(tmp_path / "again.json", {"tok1": [d.record()]})
    assert read_detections(out)["tok1"][0] == d


@pytest.mark.parametrize(
    "change, message",
    [
        ({"detection_name": "vehicle.car"}, "unknown detection_name 'vehicle.car'"),
        ({"size": [1.0, -2.0, 1.0]}, "size must be positive"),
        ({"translation": [1.0, float("nan"), 0.0]}, "translation must be 3 finite numbers"),
        ({"velocity": [1.0]}, "velocity must be 2 finite numbers"),
        ({"velocity": [1.0, None]}, "velocity must be 2 finite numbers, or null"),
        ({"velocity": [float("nan"), 0.0]}, "velocity must be 2 finite numbers, or null"),
        ({"velocity": "fast"}, "velocity must be 2 finite numbers"),
        ({"rotation": [0, 0, 0, 0]}, "rotation must be a quaternion"),
        ({"sample_token": "other"}, "differs from the results key"),
    ],
)
def test_a_bad_record_is_named(tmp_path, change, message):
    path = write(tmp_path, {"tok1": [GOOD, {**GOOD, **change}]})
    with pytest.raises(DetectionFormatError, match=message) as err:
        read_detections(path)
    assert "results['tok1'][1]" in str(err.value)


def test_missing_fields_unknown_tokens_and_wrong_files(tmp_path):
    record = {k: v for k, v in GOOD.items() if k not in ("size", "detection_score")}
    with pytest.raises(DetectionFormatError, match=r"\[0\]: missing field\(s\) size, detection_sc"):
        read_detections(write(tmp_path, {"tok1": [record]}))
    with pytest.raises(DetectionFormatError, match="results\\['tok1'\\]: unknown sample token"):
        read_detections(write(tmp_path, {"tok1": [GOOD]}), ["tok2"])
    (tmp_path / "bad.json").write_text('{"results": [1, 2]}')
    with pytest.raises(DetectionFormatError, match="detection-results format"):
        read_detections(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_detections(tmp_path / "none.json")


def test_tracking_records_and_same_bytes(tmp_path):
    d = Detection("t", (1.123456, 2.0, 3.0), (1.0, 2.0, 3.0), (1, 0, 0, 0), (0, 0), "car", 0.5)
    rec = tracking_record("t", d.translation, d.size, d.rotation, (0.1, 0.2), 7, "car", 0.5)
    assert rec["tracking_id"] == "7" and rec["tracking_name"] == "car"
    with pytest.raises(ValueError, match="tracking_name"):
        tracking_record("t", d.translation, d.size, d.rotation, (0, 0), 7, "barrier", 0.5)
    a = write_results(tmp_path / "a.json", {"t": [rec]}).read_bytes()
    assert a == write_results(tmp_path / "b.json", {"t": [rec]}).read_bytes()
    assert json.loads(a)["results"]["t"][0]["translation"][0] == 1.1235


@pytest.mark.parametrize("unknown", [None, [None, None], [float("nan"), float("nan")]])
def test_a_detector_without_velocities_reads_as_unknown(tmp_path, unknown):
    path = tmp_path / "det.json"
    records = [{**GOOD, "velocity": unknown}, {**GOOD, "velocity": [0.0, 0.0]}]
    path.write_text(json.dumps({"meta": {}, "results": {"tok1": records}}))  # NaN: as Python
    dets = read_detections(path)
    assert all(math.isnan(v) for v in dets["tok1"][0].velocity)
    assert dets["tok1"][1].velocity == (0.0, 0.0)
    assert without_velocities(dets)  # unknown or exactly zero: the detector has none
    assert dets["tok1"][0].record()["velocity"] is None  # written back as null
    moving = {**dets, "tok2": [dataclasses.replace(dets["tok1"][1], velocity=(0.0, 0.1))]}
    assert not without_velocities(moving)
    dropped = drop_velocities(moving)
    assert all(math.isnan(v) for ds in dropped.values() for d in ds for v in d.velocity)
    assert dropped["tok2"][0].translation == moving["tok2"][0].translation
