"""`bev-reid export`: onnxruntime gives BEVReIDModel.embed's embeddings (within 1e-4) on held-out
crops at any batch size; the crop recipe goes beside the graph; the ONNX embedder stands in for
the checkpoint in the evaluator and the tracker; bad input gets one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bev_reid.cli import main
from bev_reid.config import load_config
from bev_reid.models.reid import BEVReIDModel
from bev_reid.reid.dataset import ReIDDataset

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def trained(reid_dataset, tmp_path_factory) -> Path:
    """A checkpoint trained a few steps on the training identities (its BatchNorm statistics
    and input standardisation are the run's, not the defaults)."""
    from bev_reid.reid.train import train_reid

    logs = tmp_path_factory.mktemp("export-run")
    cfg = load_config(overrides={
        "reid_run.dataset_dir": str(reid_dataset), "reid_run.log_dir": str(logs),
        "train_reid.device": "cpu", "train_reid.num_workers": 0, "train_reid.max_steps": 3,
        "train_reid.checkpoint_every": 3, "train_reid.p_identities": 4, "train_reid.k_views": 2,
        "reid.widths": [16, 32], "reid.embedding_dim": 32,
    })  # fmt: skip
    return train_reid(cfg)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    assert main(["export", "--checkpoint", str(trained), "--out", str(out)]) == 0
    return out


def test_onnxruntime_equals_embed_on_held_out_crops(trained, exported, reid_dataset):
    model = BEVReIDModel.from_checkpoint(trained)
    val = ReIDDataset(reid_dataset, "val")
    crops = torch.from_numpy(val.crop_array([v["index"] for v in val.views]))  # N x C x S x S
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.shape[1:] == list(crops.shape[1:]) and isinstance(inp.shape[0], str)  # dynamic B
    for rows in (slice(0, 1), slice(0, 7), slice(None)):
        got = session.run([out.name], {inp.name: crops[rows].numpy()})[0]
        want = model.embed(crops[rows]).numpy()
        assert got.shape == want.shape
        assert np.abs(got - want).max() < 1e-4
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_the_recipe_is_written_beside_the_graph(trained, exported, reid_dataset):
    meta = json.loads(Path(trained).read_text())["meta"]
    side = json.loads(exported.with_suffix(".json").read_text())
    assert side["format"] == "bev-reid-onnx"
    assert side["crop_recipe"] == meta["crop_recipe"] and side["channels"] == meta["channels"]
    assert side["input"]["shape"] == ["B", 3, 24, 24] and side["embedding_dim"] == 32
    assert side["checkpoint"]["step"] == 3
    assert side["checkpoint"]["sha256"] == json.loads(Path(trained).read_text())["sha256"]
    assert not list(exported.parent.glob(".*.tmp"))  # nothing half-written left behind


def test_the_onnx_embedder_stands_in_for_the_checkpoint(trained, exported, reid_dataset):
    from bev_reid.reid.evaluate import evaluate_model
    from bev_reid.reid.export import OnnxEmbedder, load_embedder

    cfg = load_config(overrides={"eval_reid.device": "cpu", "eval_reid.trials": 2})
    val = ReIDDataset(reid_dataset, "val")
    onnx = load_embedder(exported)
    assert isinstance(onnx, OnnxEmbedder)
    by_torch = evaluate_model(BEVReIDModel.from_checkpoint(trained), val, cfg, "cpu")
    by_onnx = evaluate_model(onnx, val, cfg, "cpu")
    for a, b in zip(by_torch, by_onnx, strict=True):
        assert (a["protocol"], a["condition"]) == (b["protocol"], b["condition"])
        assert a["mAP"] == pytest.approx(b["mAP"], abs=1e-3)


def test_the_tracker_embeds_detections_with_the_export(trained, exported, synth_world):
    from bev_reid.data.nuscenes import NuScenesDB
    from bev_reid.track.detections import Detection
    from bev_reid.track.run import open_embedder

    cfg = load_config(overrides={
        "data.dataroot": str(synth_world.path), "data.version": synth_world.version,
        "data.num_workers": 0, "track.device": "cpu",
    })  # fmt: skip
    db = NuScenesDB(cfg.data.dataroot, cfg.data.version)
    token = db.keyframes(db.scene_names[0])[3]
    anns = [db.get("sample_annotation", a) for a in db.sample(token)["anns"]]
    dets = [Detection(token, tuple(a["translation"]), tuple(a["size"]), tuple(a["rotation"]),
                      (0.0, 0.0), "car", 1.0) for a in anns]  # fmt: skip
    embs = []
    for ckpt in (str(trained), str(exported)):
        cfg = load_config(overrides={**{"data.dataroot": str(synth_world.path),
                                        "data.version": synth_world.version,
                                        "data.num_workers": 0, "track.device": "cpu"},
                                     "track.reid_checkpoint": ckpt})  # fmt: skip
        embedder = open_embedder(cfg, db)
        (keyframe,) = embedder.keyframes([token])
        embs.append(embedder.embed(keyframe, dets))
    torch_emb, onnx_emb = embs
    assert np.isfinite(torch_emb).any(axis=1).sum() >= 2
    np.testing.assert_array_equal(np.isnan(torch_emb), np.isnan(onnx_emb))
    assert np.nanmax(np.abs(torch_emb - onnx_emb)) < 1e-4


def test_bad_input_gets_one_line(trained, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(trained), "--out", str(tmp_path / "m.bin")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bev-reid export: error: --out must name an .onnx file, got "
                   f"'{tmp_path / 'm.bin'}'"]  # fmt: skip
    missing = tmp_path / "nothing"
    assert main(["export", "--checkpoint", str(missing), "--out", str(tmp_path / "m.onnx")]) != 0
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("bev-reid export: error:") and "nothing" in line
    assert not (tmp_path / "m.onnx").exists()
    from bev_reid.reid.export import OnnxEmbedder

    (tmp_path / "lone.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="lone.json"):
        OnnxEmbedder(tmp_path / "lone.onnx")
