"""The synthetic nuScenes-format world: the devkit loads it, and its labels match its sensors.

One small world (2 scenes x 6 keyframes: a day scene on a straight street, a night scene looping
around a block) is generated once per module; tiny extra worlds check determinism and bad input.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud
from nuscenes.utils.geometry_utils import points_in_box, view_points
from PIL import Image
from pyquaternion import Quaternion

from bev_reid.config import SynthConfig, load_config
from bev_reid.synth.generate import META_FILE, TABLE_NAMES, generate_world
from bev_reid.synth.populate import _Builder, build_scene
from bev_reid.synth.render import Camera, box_corners
from bev_reid.synth.rig import CAMERAS
from bev_reid.synth.world import COLOURS, MARGIN, SECONDARY, STREET_PAINTS

CAMS = CAMERAS
CFG = SynthConfig(
    scenes=2, keyframes=6, conditions=("day", "night"), layouts=("straight", "loop"), workers=1
)
TINY = SynthConfig(scenes=1, keyframes=2, conditions=("rain",), workers=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_world(CFG, tmp_path_factory.mktemp("synth"), progress=False)


@pytest.fixture(scope="module")
def nusc(world: Path) -> NuScenes:
    return NuScenes(CFG.version, dataroot=str(world), verbose=False)


@pytest.fixture(scope="module")
def meta(world: Path) -> dict:
    return json.loads((world / CFG.version / META_FILE).read_text())


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _scene_of(nusc: NuScenes, condition: str, meta: dict) -> dict:
    token = next(s["token"] for s in meta["scenes"] if s["condition"] == condition)
    return nusc.get("scene", token)


def _samples(nusc: NuScenes, scene: dict) -> list[dict]:
    out, token = [], scene["first_sample_token"]
    while token:
        out.append(nusc.get("sample", token))
        token = out[-1]["next"]
    return out


def test_devkit_loads_all_tables_and_files(world: Path, nusc: NuScenes) -> None:
    for name in TABLE_NAMES:
        assert (world / CFG.version / f"{name}.json").is_file()
        assert len(getattr(nusc, name)) > 0, name
    assert len(nusc.scene) == CFG.scenes and len(nusc.sample) == CFG.scenes * CFG.keyframes
    for sample in nusc.sample:
        assert set(sample["data"]) == {*CAMS, "LIDAR_TOP"}
        for ch, token in sample["data"].items():
            sd = nusc.get("sample_data", token)
            path = Path(nusc.get_sample_data_path(token))
            assert sd["is_key_frame"] and sd["timestamp"] == sample["timestamp"]
            assert nusc.get("ego_pose", sd["ego_pose_token"])["timestamp"] == sd["timestamp"]
            if ch == "LIDAR_TOP":
                size = path.stat().st_size
                assert size > 0 and size % (5 * 4) == 0, path
                assert path.name.endswith(".pcd.bin")
            else:
                with Image.open(path) as im:
                    assert im.size == (1600, 900) and im.format == "JPEG"
    names = {c["name"] for c in nusc.category}
    assert {"vehicle.car", "vehicle.truck", "vehicle.bus.rigid", "human.pedestrian.adult"} <= names
    assert {"vehicle.parked", "vehicle.moving", "pedestrian.moving"} <= {
        a["name"] for a in nusc.attribute
    }
    assert {a["category_name"] for a in nusc.sample_annotation} <= names
    assert {a["visibility_token"] for a in nusc.sample_annotation} <= {"1", "2", "3", "4"}
    assert all(a["num_radar_pts"] == 0 for a in nusc.sample_annotation)
    assert nusc.log[0]["location"] in (
        "singapore-onenorth",
        "boston-seaport",
        "singapore-queenstown",
        "singapore-hollandvillage",
    )
    assert {m["token"] for m in nusc.map} == {lg["map_token"] for lg in nusc.log}


def test_chains_counts_and_timestamps(nusc: NuScenes) -> None:
    for scene in nusc.scene:
        samples = _samples(nusc, scene)
        assert len(samples) == scene["nbr_samples"] == CFG.keyframes
        assert samples[-1]["token"] == scene["last_sample_token"]
        assert all(
            b["timestamp"] - a["timestamp"] == 500_000
            for a, b in zip(samples, samples[1:], strict=False)
        )
        for ch in (*CAMS, "LIDAR_TOP"):  # sample_data chains follow the samples, per channel
            sds = [nusc.get("sample_data", s["data"][ch]) for s in samples]
            assert sds[0]["prev"] == "" and sds[-1]["next"] == ""
            assert all(
                a["next"] == b["token"] and b["prev"] == a["token"]
                for a, b in zip(sds, sds[1:], strict=False)
            )
    for inst in nusc.instance:
        anns, token = [], inst["first_annotation_token"]
        while token:
            anns.append(nusc.get("sample_annotation", token))
            token = anns[-1]["next"]
        assert (
            len(anns) == inst["nbr_annotations"]
            and anns[-1]["token"] == inst["last_annotation_token"]
        )
        assert all(a["instance_token"] == inst["token"] for a in anns)
        times = [nusc.get("sample", a["sample_token"])["timestamp"] for a in anns]
        assert times == sorted(times) and len(set(times)) == len(times)
        assert len({tuple(a["size"]) for a in anns}) == 1  # an identity keeps its size


def test_identities_persist_and_share_colours(nusc: NuScenes, meta: dict) -> None:
    vehicles = [
        i
        for i in nusc.instance
        if nusc.get("category", i["category_token"])["name"].startswith("vehicle.")
    ]
    seen4 = [i for i in vehicles if i["nbr_annotations"] >= 4]
    assert len(seen4) >= 20, "a ReID dataset needs identities seen in 4 keyframes or more"
    assert max(i["nbr_annotations"] for i in vehicles) == CFG.keyframes
    assert set(meta["instances"]) == {i["token"] for i in nusc.instance}
    looks = [meta["instances"][i["token"]] for i in vehicles]
    for look in looks:
        assert (
            look["colour"] and look["pattern"] and len(look["size"]) == 3 and len(look["rgb"]) == 3
        )
    by_colour: dict[str, list[dict]] = {}
    for look in looks:
        by_colour.setdefault(look["colour"], []).append(look)
    shared = [group for group in by_colour.values() if len(group) >= 3]
    assert shared, "several identities must share a body colour"
    # ... and then differ in pattern, secondary colour or size
    for group in shared:
        keys = {(g["pattern"], g["secondary"], tuple(g["size"])) for g in group}
        assert len(keys) == len(group)
    assert len({look["pattern"] for look in looks}) >= 4


def test_num_lidar_pts_equals_devkit_points_in_box(nusc: NuScenes) -> None:
    checked = nonzero = 0
    for sample in nusc.sample:
        sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        pc = LidarPointCloud.from_file(nusc.get_sample_data_path(sd["token"]))
        ring = np.fromfile(nusc.get_sample_data_path(sd["token"]), dtype=np.float32).reshape(-1, 5)[
            :, 4
        ]
        assert set(np.unique(ring)) <= set(range(32)) and len(np.unique(ring)) > 20
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        pc.rotate(Quaternion(cs["rotation"]).rotation_matrix)
        pc.translate(np.array(cs["translation"]))
        pc.rotate(Quaternion(pose["rotation"]).rotation_matrix)
        pc.translate(np.array(pose["translation"]))
        for token in sample["anns"]:
            ann = nusc.get("sample_annotation", token)
            n = int(points_in_box(nusc.get_box(token), pc.points[:3]).sum())
            assert n == ann["num_lidar_pts"], (token, n, ann["num_lidar_pts"])
            checked += 1
            nonzero += n > 0
    assert checked > 100 and nonzero > 0.8 * checked


def _near_unoccluded(nusc: NuScenes, scene: dict, max_dist: float):
    """(sample, annotation, camera, projected corners [2, 8] and centre [2] at 1600 x 900, nearest
    corner's depth) of vehicles with visibility 4, closer than max_dist, whose box lies in front of
    a camera and inside its image."""
    for sample in _samples(nusc, scene):
        for ch in CAMS:
            _, boxes, K = nusc.get_sample_data(sample["data"][ch])
            for box in boxes:
                ann = nusc.get("sample_annotation", box.token)
                if (
                    not ann["category_name"].startswith("vehicle.")
                    or ann["visibility_token"] != "4"
                ):
                    continue
                corners = box.corners()
                if corners[2].min() < 1.0 or np.linalg.norm(box.center) > max_dist:
                    continue
                uv = view_points(corners, K, normalize=True)[:2]
                if uv[0].min() < 0 or uv[0].max() > 1599 or uv[1].min() < 0 or uv[1].max() > 899:
                    continue
                centre = view_points(box.center[:, None], K, normalize=True)[:2, 0]
                yield sample, ann, ch, uv, centre, float(corners[2].min())


def _vehicle_like(rgb: np.ndarray, look: dict) -> np.ndarray:
    """[n] whether pixels [n, 3] (0..1) show a vehicle's paint, glass or tyres rather than ground:
    the hue of its body or secondary colour, or very dark, or (a white secondary) very bright."""
    road = np.array([0.34, 0.34, 0.36])

    def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b) + 1e-6)

    out = rgb.max(-1) < 0.22
    for colour in (look["rgb"], look["secondary_rgb"]):
        c = np.asarray(colour)
        if np.ptp(c) > 0.2:  # a chromatic colour: compare hues
            out |= (cos(rgb, c) > 0.97) & (cos(rgb, c) > cos(rgb, road))
        elif c.min() > 0.8:
            out |= rgb.min(-1) > 0.7
    return out


def test_projected_box_centre_shows_the_vehicle(nusc: NuScenes, meta: dict) -> None:
    """The devkit's projection of a near, fully visible vehicle's centre lands on the vehicle in
    the JPEG: a 9 x 9 patch there holds its paint, glass or tyres (upscaling blurs pattern edges, so
    a patch rather than one pixel); the same patch on the ground just below the vehicle does not."""

    def vehicle_pixels(im: Image.Image, u: int, v: int, look: dict) -> int:
        patch = np.asarray(im.crop((u - 4, v - 4, u + 5, v + 5)), dtype=np.float64) / 255
        return int(_vehicle_like(patch.reshape(-1, 3), look).sum())

    on, below = [], []
    for sample, ann, ch, uv, centre, _ in _near_unoccluded(nusc, _scene_of(nusc, "day", meta), 30):
        look = meta["instances"][ann["instance_token"]]
        with Image.open(nusc.get_sample_data_path(sample["data"][ch])) as im:
            u, v = int(round(centre[0])), int(round(centre[1]))
            on.append(vehicle_pixels(im, u, v, look) >= 10)
            if uv[1].max() + 25 < 895:
                below.append(vehicle_pixels(im, u, int(round(uv[1].max())) + 25, look) >= 10)
    assert len(on) >= 5 and len(below) >= 5
    assert np.mean(on) >= 0.9, f"{sum(on)} of {len(on)} projected centres on the vehicle"
    assert np.mean(below) <= 0.2, f"{sum(below)} of {len(below)} ground patches look like it"


def test_rendered_silhouettes_match_devkit_projection(nusc: NuScenes, meta: dict) -> None:
    """Rendered at full resolution, an unoccluded vehicle's pixels span what view_points gives for
    its box corners. The leftmost, rightmost and lowest pixels never stick out of the projected box
    and reach its bottom corners (a car's cabin does not fill the box's top corners, and the tilted
    cameras slant vertical edges) to within a pixel (pixel centres lie inside the outline) plus
    what the body-to-box margin (2 * MARGIN) subtends at its distance."""
    scene_rec = _scene_of(nusc, "day", meta)
    index = next(i for i, s in enumerate(meta["scenes"]) if s["token"] == scene_rec["token"])
    scene = build_scene(CFG, index)
    by_view: dict[tuple[int, str], list] = {}
    keys = [s["token"] for s in _samples(nusc, scene_rec)]
    for sample, ann, ch, uv, _, depth in _near_unoccluded(nusc, scene_rec, 40.0):
        by_view.setdefault((keys.index(sample["token"]), ch), []).append((ann, uv, depth))
    checked = 0
    for (k, ch), items in sorted(by_view.items(), key=lambda kv: -len(kv[1]))[:3]:
        near = [
            i
            for i, a in enumerate(scene.agents)
            if math.dist(a.poses[k, :2], scene.ego[k, :2]) < 80.0
        ]
        cam = Camera(ch, 1)
        _, ids, unoccluded = cam.render(
            scene, k, near, box_corners([scene.agents[i] for i in near], k)
        )
        for ann, uv, depth in items:
            agent = meta["instances"][ann["instance_token"]]["agent"]
            rows, cols = np.nonzero(ids == agent)
            assert len(rows) > 0.8 * unoccluded[agent], "visibility 4 means 80% or more is visible"
            if len(rows) < unoccluded[agent]:
                continue  # partly hidden: an extreme may be the occluder's
            tol = 1.0 + cam.K[0, 0] * 2 * MARGIN / depth + 0.25
            bottom = uv[:, [2, 3, 6, 7]]
            assert cols.min() >= uv[0].min() - 0.25 and cols.max() <= uv[0].max() + 0.25
            assert rows.max() <= uv[1].max() + 0.25
            err = (
                cols.min() - bottom[0].min(),
                bottom[0].max() - cols.max(),
                uv[1].max() - rows.max(),
            )
            assert max(err) <= tol, (ann["token"], ch, err, tol)
            checked += 1
    assert checked >= 5


def test_street_palette_paints_vehicles_as_streets_do() -> None:
    def looks(palette: str, n: int = 20000) -> list:
        b = _Builder(np.random.default_rng(3), np.zeros((3, 3)), 50.0, 50.0, 1, palette)
        return [b.appearance("car") for _ in range(n)]

    street = looks("street")
    shares = {c: sum(a.colour == c for a in street) / len(street) for c in STREET_PAINTS}
    for name, (rgb, share) in STREET_PAINTS.items():  # within 4 standard errors of the share
        assert abs(shares[name] - share) < 4 * (share * (1 - share) / len(street)) ** 0.5, name
        assert tuple(next(a for a in street if a.colour == name).rgb) == rgb
    assert {a.pattern for a in street} == {"plain", "two_tone"}
    assert all(a.secondary in ("black", "white") and a.secondary != a.colour for a in street)
    assert np.mean([a.pattern == "plain" for a in street]) == pytest.approx(0.8, abs=0.02)
    vivid = looks("vivid", 2000)
    assert {a.colour for a in vivid} == set(COLOURS)  # the default keeps its eight colours
    assert {a.secondary for a in vivid} <= set(SECONDARY)
    with pytest.raises(ValueError, match="synth.palette"):
        load_config(overrides=["synth.palette=pastel"])


def test_night_is_dark_and_named(nusc: NuScenes, meta: dict) -> None:
    def brightness(scene: dict) -> float:
        values = []
        for sample in _samples(nusc, scene)[::2]:
            for ch in CAMS:
                with Image.open(nusc.get_sample_data_path(sample["data"][ch])) as im:
                    values.append(np.asarray(im.reduce(8), dtype=np.float64).mean())
        return float(np.mean(values))

    day, night = _scene_of(nusc, "day", meta), _scene_of(nusc, "night", meta)
    assert "night" in night["description"].lower() and "night" not in day["description"].lower()
    assert brightness(night) < 0.6 * brightness(day)


def test_same_seed_same_bytes(world: Path, tmp_path: Path) -> None:
    # two worker processes instead of one: the bytes must not depend on it either
    again = generate_world(dataclasses.replace(CFG, workers=2), tmp_path / "again", progress=False)
    assert _digest(again) == _digest(world)


def test_other_seed_differs_and_rain(tmp_path: Path, world: Path) -> None:
    a = generate_world(TINY, tmp_path / "a", progress=False)
    b = generate_world(dataclasses.replace(TINY, seed=1), tmp_path / "b", progress=False)
    da, db = _digest(a), _digest(b)
    assert set(da) == set(db)  # same layout of files ...
    differ = [name for name in da if da[name] != db[name]]
    assert len(differ) > 0.8 * len(da)  # ... with other content
    nusc = NuScenes(TINY.version, dataroot=str(a), verbose=False)
    assert "rain" in nusc.scene[0]["description"].lower()

    def saturation(root: Path) -> float:
        jpgs = sorted((root / "samples" / "CAM_FRONT").glob("*.jpg"))[:2]
        return float(
            np.mean(
                [np.asarray(Image.open(p).convert("HSV").reduce(8))[..., 1].mean() for p in jpgs]
            )
        )

    assert saturation(a) < saturation(world)  # rain is greyer than the (day + night) world
    # rewriting the same dataset in place is allowed, and gives the same bytes
    generate_world(TINY, a, progress=False)
    assert _digest(a) == da


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synth.scenes"):
        SynthConfig(scenes=0)
    with pytest.raises(ValueError, match="synth.keyframes"):
        dataclasses.replace(TINY, keyframes=1)
    with pytest.raises(ValueError, match="synth.render_scale"):
        SynthConfig(render_scale=3)
    with pytest.raises(ValueError, match="synth.conditions"):
        SynthConfig(conditions=("fog",))
    foreign = tmp_path / "foreign"
    (foreign / "v1.0-mini").mkdir(parents=True)
    (foreign / "v1.0-mini" / "sample.json").write_text("[]")
    with pytest.raises(ValueError, match="foreign"):
        generate_world(TINY, foreign, progress=False)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        generate_world(TINY, a_file, progress=False)
    ours = generate_world(dataclasses.replace(TINY, keyframes=2), tmp_path / "ours", progress=False)
    with pytest.raises(ValueError, match="different dataset"):
        generate_world(dataclasses.replace(TINY, seed=5), ours, progress=False)
