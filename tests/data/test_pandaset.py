"""The PandaSet converter on the excerpt (frames 00-02 of sequence 002, in PandaSet's layout).

Every check compares the converted folder, read through the nuScenes devkit, with PandaSet's own
files read here with PandaSet's own definitions (poses sensor -> world as position + heading
(w, x, y, z); pinhole fx, fy, cx, cy; a cuboid spans +-dimensions/2 turned by yaw about z, its
front along local +y), written out in this file. The excerpt is read from
``$BEV_REID_PANDASET_EXCERPT`` or ``<repo>/../shared/data/pandaset-excerpt/002``; the tests marked
``data`` skip when it is absent. Unit tests of the duplicate rule run on hand-made tables.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud
from nuscenes.utils.geometry_utils import BoxVisibility, points_in_box, view_points
from pyquaternion import Quaternion

from bev_reid.cli import main
from bev_reid.config import PandaSetConfig
from bev_reid.data.nuscenes import TABLES, NuScenesDB
from bev_reid.data.pandaset import convert as convert_module
from bev_reid.data.pandaset.convert import PandaSetOutputError, convert_pandaset
from bev_reid.data.pandaset.cuboids import select_cuboids

EXCERPT_ENV = "BEV_REID_PANDASET_EXCERPT"
_DEFAULT = Path(__file__).resolve().parents[2].parent / "shared/data/pandaset-excerpt/002"
SEQ = Path(os.environ.get(EXCERPT_ENV, _DEFAULT))
HAVE_EXCERPT = (SEQ / "lidar" / "poses.json").is_file()
_skip = pytest.mark.skipif(not HAVE_EXCERPT, reason=f"PandaSet excerpt not found ({EXCERPT_ENV})")


def on_excerpt(test):
    """Marks a test ``data`` and skips it when the excerpt is absent."""
    return pytest.mark.data(_skip(test))


VERSION = "v1.0-pandaset"
FRAMES = (0, 1, 2)
CAMERAS = {  # PandaSet folder -> nuScenes channel (the documented mapping)
    "front_camera": "CAM_FRONT",
    "front_left_camera": "CAM_FRONT_LEFT",
    "front_right_camera": "CAM_FRONT_RIGHT",
    "left_camera": "CAM_BACK_LEFT",
    "right_camera": "CAM_BACK_RIGHT",
    "back_camera": "CAM_BACK",
}


# PandaSet's own geometry ----------------------------------------------------------------------


def ps_table(path: Path) -> pd.DataFrame:
    with gzip.open(path, "rb") as f:
        return pd.read_pickle(f)


def ps_pose(entry: dict) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) sensor -> world of a PandaSet pose entry."""
    h, p = entry["heading"], entry["position"]
    rot = Quaternion(h["w"], h["x"], h["y"], h["z"]).rotation_matrix
    return rot, np.array([p["x"], p["y"], p["z"]])


def ps_corners(row: pd.Series) -> np.ndarray:
    """[8, 3] world corners of a PandaSet cuboid."""
    half = np.array([row["dimensions.x"], row["dimensions.y"], row["dimensions.z"]]) / 2
    c, s = np.cos(row["yaw"]), np.sin(row["yaw"])
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    signs = np.array([[a, b, d] for a in (1, -1) for b in (1, -1) for d in (1, -1)])
    centre = np.array([row["position.x"], row["position.y"], row["position.z"]])
    return (signs * half) @ rot.T + centre


def ps_in_box(points: np.ndarray, row: pd.Series) -> int:
    """World points inside a PandaSet cuboid, faces included."""
    centre = np.array([row["position.x"], row["position.y"], row["position.z"]])
    c, s = np.cos(row["yaw"]), np.sin(row["yaw"])
    d = points - centre
    local = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], 1)
    half = np.array([row["dimensions.x"], row["dimensions.y"], row["dimensions.z"]]) / 2
    return int(np.all(np.abs(local) <= half, axis=1).sum())


def ps_json(*parts: str):
    return json.loads(SEQ.joinpath(*parts).read_text())


# The converted excerpt ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory):
    if not HAVE_EXCERPT:
        pytest.skip(f"PandaSet excerpt not found (set {EXCERPT_ENV})")
    out = tmp_path_factory.mktemp("pandaset")
    cfg = PandaSetConfig(src=(str(SEQ),), out=str(out), frames=FRAMES)
    summary = convert_pandaset(cfg, progress=False, warn=pytest.fail)
    return out, summary


@pytest.fixture(scope="module")
def nusc(converted) -> NuScenes:
    return NuScenes(version=VERSION, dataroot=str(converted[0]), verbose=False)


def samples(nusc: NuScenes) -> list[dict]:
    token, out = nusc.scene[0]["first_sample_token"], []
    while token:
        out.append(nusc.get("sample", token))
        token = out[-1]["next"]
    return out


def world_annotation(nusc: NuScenes, sample: dict, row: pd.Series) -> dict:
    """The sample's annotation whose centre is the cuboid's (centres are copied as they are)."""
    centre = np.array([row["position.x"], row["position.y"], row["position.z"]])
    anns = [nusc.get("sample_annotation", t) for t in sample["anns"]]
    dist = [np.linalg.norm(np.array(a["translation"]) - centre) for a in anns]
    assert min(dist) < 1e-9, f"no annotation at cuboid {row['uuid']}"
    return anns[int(np.argmin(dist))]


@on_excerpt
def test_devkit_loads_the_output(converted, nusc: NuScenes) -> None:
    root, summary = converted
    assert sorted(p.stem for p in (root / VERSION).glob("*.json") if p.stem in TABLES) == sorted(
        TABLES
    )
    assert len(nusc.scene) == 1 and nusc.scene[0]["name"] == "pandaset-002"
    times = ps_json("lidar", "timestamps.json")
    frames = samples(nusc)
    assert [s["timestamp"] for s in frames] == [round(times[k] * 1e6) for k in FRAMES]
    for k, sample in zip(FRAMES, frames, strict=True):
        assert sorted(sample["data"]) == sorted(["LIDAR_TOP", *CAMERAS.values()])
        lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        raw = np.fromfile(root / lidar["filename"], dtype=np.float32)
        kept = (ps_table(SEQ / "lidar" / f"{k:02d}.pkl.gz")["d"] == 0).sum()
        assert raw.size == 5 * kept and lidar["is_key_frame"]
        for folder, channel in CAMERAS.items():
            sd = nusc.get("sample_data", sample["data"][channel])
            src = SEQ / "camera" / folder / f"{k:02d}.jpg"
            assert (root / sd["filename"]).read_bytes() == src.read_bytes()
            assert sd["timestamp"] == round(ps_json("camera", folder, "timestamps.json")[k] * 1e6)
            assert (sd["width"], sd["height"]) == (1920, 1080)
    for channel in ("LIDAR_TOP", *CAMERAS.values()):  # each channel chains through the frames
        token, seen = frames[0]["data"][channel], []
        while token:
            seen.append(token)
            token = nusc.get("sample_data", token)["next"]
        assert seen == [s["data"][channel] for s in frames]
    for inst in nusc.instance:  # each instance chains through its annotations in time order
        token, times = inst["first_annotation_token"], []
        while token:
            ann = nusc.get("sample_annotation", token)
            times.append(nusc.get("sample", ann["sample_token"])["timestamp"])
            token = ann["next"]
        assert len(times) == inst["nbr_annotations"] and times == sorted(times)
    db = NuScenesDB(root, VERSION)  # our table layer reads it too
    assert len(db.keyframes("pandaset-002")) == 3
    assert summary.sequences[0].frames == list(FRAMES)
    drift = summary.sequences[0].drift
    assert max(d["m"] for d in drift.values()) < 0.05
    assert max(d["deg"] for d in drift.values()) < 0.5


@on_excerpt
@pytest.mark.parametrize("folder", list(CAMERAS))
def test_box_corners_project_like_pandaset(nusc: NuScenes, folder: str) -> None:
    intr = ps_json("camera", folder, "intrinsics.json")
    k_mat = np.array([[intr["fx"], 0, intr["cx"]], [0, intr["fy"], intr["cy"]], [0, 0, 1.0]])
    compared = 0
    for k, sample in zip(FRAMES, samples(nusc), strict=True):
        rot, trans = ps_pose(ps_json("camera", folder, "poses.json")[k])
        _, boxes, intrinsic = nusc.get_sample_data(
            sample["data"][CAMERAS[folder]], box_vis_level=BoxVisibility.NONE
        )
        by_token = {b.token: b for b in boxes}
        np.testing.assert_allclose(intrinsic, k_mat)
        for _, row in ps_table(SEQ / "annotations/cuboids" / f"{k:02d}.pkl.gz").iterrows():
            ann = world_annotation(nusc, sample, row) if row["cuboids.sensor_id"] != 1 else None
            if ann is None:
                continue
            ref = (ps_corners(row) - trans) @ rot  # PandaSet: world -> camera
            ours = by_token[ann["token"]].corners().T  # devkit: the box in the camera frame
            order = [int(np.argmin(np.linalg.norm(ref - c, axis=1))) for c in ours]
            assert sorted(order) == list(range(8))
            np.testing.assert_allclose(ours, ref[order], atol=1e-6)
            front = ref[order][:, 2] > 1.0
            if front.all():
                px_ref = view_points(ref[order].T, k_mat, normalize=True)[:2]
                px = view_points(ours.T, np.asarray(intrinsic), normalize=True)[:2]
                np.testing.assert_allclose(px, px_ref, atol=1e-4)
                compared += 1
    assert compared > 0


@on_excerpt
def test_box_front_is_pandaset_front_and_the_motion(nusc: NuScenes) -> None:
    first, last = (ps_table(SEQ / "annotations/cuboids" / f"{k:02d}.pkl.gz") for k in (0, 2))
    last = last.set_index("uuid")
    moving = 0
    for _, row in first.iterrows():
        if row["cuboids.sensor_id"] == 1:
            continue
        ann = world_annotation(nusc, samples(nusc)[0], row)
        heading = Quaternion(ann["rotation"]).rotate([1.0, 0.0, 0.0])
        yaw = row["yaw"]
        np.testing.assert_allclose(heading, [-np.sin(yaw), np.cos(yaw), 0.0], atol=1e-9)
        np.testing.assert_allclose(ann["size"], row[["dimensions.x", "dimensions.y",
                                                     "dimensions.z"]].to_numpy(float))  # fmt: skip
        if row["uuid"] in last.index:
            step = last.loc[row["uuid"], ["position.x", "position.y"]].to_numpy(float) - row[
                ["position.x", "position.y"]
            ].to_numpy(float)
            if np.linalg.norm(step) > 0.5:  # moved over 0.2 s: it drives where its front points
                assert step @ heading[:2] / np.linalg.norm(step) > 0.95
                moving += 1
    assert moving >= 10


@on_excerpt
def test_lidar_points_land_in_their_boxes(converted, nusc: NuScenes) -> None:
    root, _ = converted
    for k, sample in zip(FRAMES, samples(nusc), strict=True):
        world = ps_table(SEQ / "lidar" / f"{k:02d}.pkl.gz")
        world = world[world["d"] == 0][["x", "y", "z"]].to_numpy(float)
        token = sample["data"]["LIDAR_TOP"]
        sd = nusc.get("sample_data", token)
        cloud = LidarPointCloud.from_file(str(root / sd["filename"]))
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        ego = nusc.get("ego_pose", sd["ego_pose_token"])
        to_world = (
            Quaternion(ego["rotation"]).rotation_matrix @ Quaternion(cs["rotation"]).rotation_matrix
        )
        pts_world = cloud.points[:3].T.astype(float) @ to_world.T + (
            Quaternion(ego["rotation"]).rotate(cs["translation"]) + np.array(ego["translation"])
        )
        np.testing.assert_allclose(pts_world, world, atol=2e-3)  # float32 sensor-frame storage
        # The ego frame looks where the LiDAR pose's +y (forward) looks.
        rot, _ = ps_pose(ps_json("lidar", "poses.json")[k])
        np.testing.assert_allclose(
            Quaternion(ego["rotation"]).rotate([1, 0, 0]), rot[:, 1], atol=1e-9
        )

        _, boxes, _ = nusc.get_sample_data(token, box_vis_level=BoxVisibility.NONE)
        by_token = {b.token: b for b in boxes}
        cuboids = ps_table(SEQ / "annotations/cuboids" / f"{k:02d}.pkl.gz")
        total, differ = 0, 0
        for _, row in cuboids[cuboids["cuboids.sensor_id"] != 1].iterrows():
            ann = world_annotation(nusc, sample, row)
            expected = ps_in_box(world, row)
            assert ann["num_lidar_pts"] == expected
            sensor_count = int(points_in_box(by_token[ann["token"]], cloud.points[:3]).sum())
            total += expected
            differ += abs(sensor_count - expected)
        assert total > 1000 and differ <= 0.001 * total  # points on a face may flip in float32


@on_excerpt
def test_overlap_duplicates_counted_once(nusc: NuScenes) -> None:
    for k, sample in zip(FRAMES, samples(nusc), strict=True):
        cuboids = ps_table(SEQ / "annotations/cuboids" / f"{k:02d}.pkl.gz")
        sensor = dict(zip(cuboids["uuid"], cuboids["cuboids.sensor_id"], strict=True))
        partnered = set()
        for u, sib in zip(cuboids["uuid"], cuboids["cuboids.sibling_id"], strict=True):
            # a sibling id names a uuid exactly, or is the start of exactly one (cut short)
            hits = [w for w in sensor if w == sib or (len(sib) >= 8 and w.startswith(sib))]
            for v in hits if len(hits) == 1 else []:
                pair = {u, v}
                if len(pair) == 2 and {sensor[u], sensor[v]} == {0, 1}:
                    partnered |= {w for w in pair if sensor[w] == 1}
        assert len(partnered) >= 15
        assert len(sample["anns"]) == len(cuboids) - len(partnered)
        anns = [nusc.get("sample_annotation", t) for t in sample["anns"]]
        assert len({a["instance_token"] for a in anns}) == len(anns)
        centres = {tuple(np.round(a["translation"], 6)) for a in anns}
        for _, row in cuboids.iterrows():
            here = tuple(
                np.round(row[["position.x", "position.y", "position.z"]].to_numpy(float), 6)
            )
            assert (here in centres) == (row["uuid"] not in partnered)


# Missing files, output safety, the command line ----------------------------------------------


def partial_copy(tmp_path: Path, frames: tuple[int, ...], leave_out: str) -> Path:
    """A sequence folder of symlinks to the excerpt's files of ``frames``, less ``leave_out``."""
    seq = tmp_path / "002"
    for src in SEQ.rglob("*"):
        rel = src.relative_to(SEQ)
        stem = src.name.split(".")[0]
        if src.is_dir() or str(rel) == leave_out or (stem.isdigit() and int(stem) not in frames):
            continue
        (seq / rel).parent.mkdir(parents=True, exist_ok=True)
        (seq / rel).symlink_to(src)
    return seq


@on_excerpt
def test_missing_file_is_named_or_skipped(tmp_path: Path) -> None:
    seq = partial_copy(tmp_path, (0, 1), "camera/left_camera/01.jpg")
    out = tmp_path / "out"
    cfg = PandaSetConfig(src=(str(seq),), out=str(out), frames=(0, 1))
    with pytest.raises(FileNotFoundError, match="left_camera/01.jpg"):
        convert_pandaset(cfg, progress=False)
    assert not (out / VERSION).exists()
    warnings: list[str] = []
    cfg = PandaSetConfig(src=(str(seq),), out=str(out), frames=(0, 1), skip_incomplete=True)
    summary = convert_pandaset(cfg, progress=False, warn=warnings.append)
    assert len(warnings) == 1 and "frame 01" in warnings[0] and "left_camera/01.jpg" in warnings[0]
    assert summary.sequences[0].skipped == {1: ["camera/left_camera/01.jpg"]}
    assert len(NuScenes(version=VERSION, dataroot=str(out), verbose=False).sample) == 1
    with pytest.raises(PandaSetOutputError, match=VERSION):
        convert_pandaset(cfg, progress=False, warn=warnings.append)
    seq = partial_copy(tmp_path / "b", (0,), "camera/front_camera/intrinsics.json")
    cfg = PandaSetConfig(src=(str(seq),), out=str(tmp_path / "b_out"), skip_incomplete=True)
    with pytest.raises(FileNotFoundError, match="front_camera/intrinsics.json"):
        convert_pandaset(cfg, progress=False)  # a file of the whole drive: no frame without it


def relabelled(path: Path) -> None:
    """Rewrites a cuboid file with new uuids (as another drive would have), links kept."""
    table = ps_table(path)
    shift = str.maketrans("0123456789abcdef", "123456789abcdef0")  # keeps prefixes as prefixes
    for column in ("uuid", "cuboids.sibling_id"):
        table[column] = [u.translate(shift) for u in table[column]]
    path.unlink()
    table.to_pickle(path, compression="gzip")


@on_excerpt
def test_one_scene_per_sequence(tmp_path: Path) -> None:
    other = partial_copy(tmp_path / "b", (0,), "")
    other = other.rename(other.parent / "102")
    same_uuids = partial_copy(tmp_path / "c", (0,), "")
    same_uuids = same_uuids.rename(same_uuids.parent / "202")
    cfg = PandaSetConfig(src=(str(SEQ), str(same_uuids)), out=str(tmp_path / "x"), frames=(0,))
    with pytest.raises(ValueError, match="uuid"):  # two drives cannot share track ids
        convert_pandaset(cfg, progress=False)
    relabelled(other / "annotations/cuboids/00.pkl.gz")
    cfg = PandaSetConfig(src=(str(SEQ), str(other)), out=str(tmp_path / "out"), frames=(0,))
    convert_pandaset(cfg, progress=False)
    nusc = NuScenes(version=VERSION, dataroot=str(tmp_path / "out"), verbose=False)
    assert sorted(s["name"] for s in nusc.scene) == ["pandaset-002", "pandaset-102"]
    assert len(nusc.log) == 2 and len(nusc.calibrated_sensor) == 14
    assert sorted(nusc.map[0]["log_tokens"]) == sorted(log["token"] for log in nusc.log)
    for scene in nusc.scene:
        sample = nusc.get("sample", scene["first_sample_token"])
        assert sample["next"] == "" and len(sample["anns"]) == len(nusc.sample_annotation) // 2


@on_excerpt
def test_interrupted_conversion_leaves_no_version_folder(tmp_path, monkeypatch) -> None:
    cfg = PandaSetConfig(src=(str(SEQ),), out=str(tmp_path), frames=(0,), lidars="both")

    def crash(folder, tables):
        (Path(folder) / "category.json").parent.mkdir(parents=True, exist_ok=True)
        (Path(folder) / "category.json").write_text("[]")
        raise KeyboardInterrupt

    monkeypatch.setattr(convert_module, "write_tables", crash)
    with pytest.raises(KeyboardInterrupt):
        convert_pandaset(cfg, progress=False)
    assert not (tmp_path / VERSION).exists()
    monkeypatch.undo()
    convert_pandaset(cfg, progress=False)
    nusc = NuScenes(version=VERSION, dataroot=str(tmp_path), verbose=False)
    points = ps_table(SEQ / "lidar/00.pkl.gz")
    sd = [s for s in nusc.sample_data if s["fileformat"] == "pcd"][0]
    raw = np.fromfile(tmp_path / sd["filename"], dtype=np.float32).reshape(-1, 5)
    assert len(raw) == len(points) and set(np.unique(raw[:, 4])) == {0.0, 1.0}  # both LiDARs


@on_excerpt
def test_command_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["convert-pandaset", "--src", str(SEQ), "--out", str(out), "--frames", "0"]) == 0
    assert "pandaset-002: 1 frames" in capsys.readouterr().out
    shutil.rmtree(out)
    assert main(["convert-pandaset", "--src", str(SEQ), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bev-reid convert-pandaset: error:") and "lidar/03.pkl.gz" in err[-1]


# The duplicate rule on hand-made tables -------------------------------------------------------


def table(rows: list[tuple[str, int, str]], label: str = "Car") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "uuid": [r[0] for r in rows],
            "cuboids.sensor_id": [r[1] for r in rows],
            "cuboids.sibling_id": [r[2] for r in rows],
            "label": label,
            "attributes.pedestrian_age": np.nan,
        }
    )


def test_duplicates_follow_links_either_way_and_cut_short_ids() -> None:
    a, b, c, d = (f"{i}" * 8 + "-0000-0000-0000-000000000000" for i in "abcd")
    frame = table([(a, 0, a), (b, 1, a), (c, 0, d[:-3]), (d, 1, "-"), ("e" * 36, 1, "f" * 36)])
    sel = select_cuboids({0: frame}, "pandar64")
    assert sorted(sel.frames[0]["uuid"]) == sorted([a, c, "e" * 36])  # b and d dropped, e kept
    assert sel.duplicates_dropped == 2
    sel = select_cuboids({0: frame}, "pandargt")  # the forward LiDAR's cuboids kept instead
    assert sorted(sel.frames[0]["uuid"]) == sorted([b, d, "e" * 36])


def test_a_track_keeps_its_instance_when_it_leaves_the_overlap() -> None:
    a, b = "a" * 36, "b" * 36
    frames = {0: table([(a, 0, b), (b, 1, a)]), 1: table([(b, -1, "-")])}
    sel = select_cuboids(frames, "pandar64")
    assert list(sel.frames[0]["instance"]) == [a] and list(sel.frames[1]["instance"]) == [a]
    left = select_cuboids({0: table([("x" * 36, -1, "-")], label="Train")}, "pandar64")
    assert left.left_out == {"Train": 1} and len(left.frames[0]) == 0
