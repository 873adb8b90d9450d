"""ReID evaluation: both protocols' plumbing, the raw-crop floor, and the checkpoint watcher."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import Dataset

from bev_reid.config import Config, load_config
from bev_reid.engine.checkpoint import CheckpointError, save_checkpoint
from bev_reid.models.reid import BEVReIDModel
from bev_reid.reid.dataset import ReIDDataset
from bev_reid.reid.evaluate import (
    evaluate_checkpoint,
    evaluate_model,
    protocol_records,
    raw_crop_baseline,
)
from bev_reid.reid.watch import watch

REQUIRED = {"checkpoint", "step", "protocol", "condition", "rank1", "rank5", "rank10", "rank20",
            "mAP", "mINP", "num_queries"}  # fmt: skip


def eval_config(dataset: Path, tmp_path: Path, **overrides) -> Config:
    values = {
        "reid_run.dataset_dir": str(dataset),
        "reid_run.log_dir": str(tmp_path / "runs"),
        "reid_run.run_id": "run",
        "eval_reid.eval_log_dir": str(tmp_path / "eval"),
        "eval_reid.poll_s": 0.05,
        "eval_reid.device": "cpu",
        "eval_reid.trials": 3,
        # The two protocols this file checks; test_protocols.py runs the default list.
        "eval_reid.protocols": ["cmc", "retrieval"],
    }
    values.update(overrides)
    return load_config(overrides=values)


def no_nan_json(line: str) -> dict:
    def refuse(name):
        raise ValueError(f"{name} in JSON")

    return json.loads(line, parse_constant=refuse)


# ---------------------------------------------------------------------------------------------
# Protocol plumbing with embeddings whose answer is known


class CodedCrops(Dataset):
    """The views of a ReIDDataset with crops replaced by [2, 1, 1] = (identity, keyframe code)."""

    def __init__(self, base: ReIDDataset):
        self.views, self.split = base.views, base.split
        codes: dict[str, int] = {}  # keyframes numbered here, independently of the evaluator
        self.groups = torch.tensor([codes.setdefault(v["sample_token"], len(codes))
                                    for v in self.views])  # fmt: skip

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, i: int):
        v = self.views[i]
        return torch.tensor([v["id"], float(self.groups[i])]).view(2, 1, 1), v["id"], v


class CodeModel(torch.nn.Module):
    """Embeds the code: ``a`` x one-hot(identity) + ``b`` x one-hot(keyframe), unit norm."""

    def __init__(self, num_ids: int, num_groups: int, a: float, b: float):
        super().__init__()
        self.num_ids, self.num_groups, self.a, self.b = num_ids, num_groups, a, b

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        ids, groups = crops[:, 0, 0, 0].long(), crops[:, 1, 0, 0].long()
        e = torch.cat([self.a * F.one_hot(ids, self.num_ids),
                       self.b * F.one_hot(groups, self.num_groups)], 1).float()  # fmt: skip
        return F.normalize(e, dim=1)


def by_key(records: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["protocol"], r["condition"]): r for r in records}


def test_an_identity_code_scores_perfectly_through_the_whole_plumbing(reid_dataset, tmp_path):
    cfg = eval_config(reid_dataset, tmp_path)
    data = CodedCrops(ReIDDataset(reid_dataset, "all"))
    n_ids, n_groups = max(v["id"] for v in data.views) + 1, int(data.groups.max()) + 1
    conditions = Counter(v["condition"] for v in data.views)
    assert len(conditions) >= 2  # the synthetic world has day and night scenes

    # Identity code plus a stronger keyframe code: views of one keyframe look more alike than
    # views of one identity. Only if the query's own keyframe (sample token) is excluded from its
    # gallery do the right matches come first.
    records = evaluate_model(CodeModel(n_ids, n_groups, a=0.6, b=0.8), data, cfg, "cpu")
    got = by_key(records)
    assert set(got) == {(p, c) for p in ("cmc", "retrieval") for c in ["all", *conditions]}
    for (protocol, cond), r in got.items():
        assert r["rank1"] == r["rank20"] == 1.0, (protocol, cond, r)
        if protocol == "retrieval":
            assert r["mAP"] == r["mINP"] == 1.0
            expected = len(data) if cond == "all" else conditions[cond]
            assert r["num_queries"] == r["num_valid"] == expected
            assert r["num_gallery"] == len(data)
        else:
            assert r["mAP"] is None and r["mINP"] is None  # cmc has no mAP: null, not NaN
            assert r["trials"] == cfg.eval_reid.trials

    # The keyframe code alone ranks the query's own keyframe first: excluded, so chance level.
    blind = by_key(evaluate_model(CodeModel(n_ids, n_groups, a=0.0, b=1.0), data, cfg, "cpu"))
    assert blind[("retrieval", "all")]["rank1"] < 0.2
    assert blind[("retrieval", "all")]["mAP"] < 0.5


def test_raw_crop_baseline_and_a_checkpoint_that_does_not_fit(reid_dataset, tmp_path):
    cfg = eval_config(reid_dataset, tmp_path)
    val = ReIDDataset(reid_dataset, "val")
    records = raw_crop_baseline(val, cfg)
    assert len(records) == 2 * (1 + len({v["condition"] for v in val.views}))
    for r in records:
        assert REQUIRED <= set(r) and r["checkpoint"] == "raw-crops" and r["step"] is None
        assert 0.0 <= r["rank1"] <= r["rank5"] <= r["rank10"] <= r["rank20"] <= 1.0
        no_nan_json(json.dumps(r))
    assert 0.0 < by_key(records)[("retrieval", "all")]["mAP"] < 1.0
    # Standardised: the same as embedding crops standardised by hand with numpy statistics.
    crops = np.stack([np.asarray(val.crops[v["index"]], np.float64) for v in val.views])
    scaled = (crops - crops.mean((0, 2, 3), keepdims=True)) / crops.std((0, 2, 3), keepdims=True)
    emb = F.normalize(torch.from_numpy(scaled).flatten(1), dim=1)
    want = by_key(protocol_records(emb, torch.tensor(val.ids), val.views, cfg))
    got = by_key(raw_crop_baseline(val, cfg, standardise=True))
    assert got[("retrieval", "all")]["checkpoint"] == "raw-crops-standardised"
    plain = by_key(records)[("retrieval", "all")]["mAP"]
    assert abs(plain - want[("retrieval", "all")]["mAP"]) > 0.01  # the scaling matters here
    for key in (("retrieval", "all"), ("cmc", "all")):
        assert got[key]["rank1"] == pytest.approx(want[key]["rank1"], abs=0.02)
    assert got[("retrieval", "all")]["mAP"] == pytest.approx(
        want[("retrieval", "all")]["mAP"], abs=0.01
    )

    model = BEVReIDModel(5, embedding_dim=8, widths=(8,), num_classes=4)
    path = save_checkpoint(tmp_path / "ck", 1, model, meta={"kind": "reid", "model": model.config})
    with pytest.raises(CheckpointError, match="5 channels"):
        evaluate_checkpoint(path, val, cfg)


# ---------------------------------------------------------------------------------------------
# The watcher


def tiny_model(num_classes: int, seed: int) -> BEVReIDModel:
    torch.manual_seed(seed)
    return BEVReIDModel(3, embedding_dim=16, widths=(8, 16), num_classes=num_classes)


def save(folder: Path, step: int, model: BEVReIDModel) -> Path:
    return save_checkpoint(folder, step, model, meta={"kind": "reid", "model": model.config})


def lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [no_nan_json(s) for s in path.read_text().splitlines()]


def steps(path: Path) -> list[int]:
    """The checkpoint steps logged, in order (the floors, step null, left out)."""
    return list(dict.fromkeys(r["step"] for r in lines(path) if r["step"] is not None))


def test_watcher_evaluates_each_finished_checkpoint_once(reid_dataset, tmp_path, capsys):
    cfg = eval_config(reid_dataset, tmp_path)
    num_classes = ReIDDataset(reid_dataset, "train").num_classes
    ckpts = tmp_path / "runs" / "run" / "checkpoints"
    staging = tmp_path / "staging"
    out = tmp_path / "eval" / "run"
    metrics, errors = out / "metrics.jsonl", out / "errors.jsonl"

    stop = threading.Event()
    result: dict = {}

    def run() -> None:
        try:
            result["watch"] = watch(cfg, stop=stop.is_set)
        except BaseException as e:  # surfaced by wait_for
            result["error"] = e

    def wait_for(condition, what: str, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while not condition():
            assert "error" not in result, result["error"]
            assert time.monotonic() < end, f"timed out waiting for {what}"
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        time.sleep(0.2)  # it polls a run folder that does not exist yet
        # Step 5 is being written: its weights are there, its sidecar not yet.
        s5 = save(staging, 5, tiny_model(num_classes, 5))
        ckpts.mkdir(parents=True)
        shutil.copy(s5.with_suffix(".safetensors"), ckpts)
        save(ckpts, 1, tiny_model(num_classes, 1))
        wait_for(lambda: steps(metrics) == [1], "step 1")
        time.sleep(0.1)
        save(ckpts, 2, tiny_model(num_classes, 2))
        # Step 3 is damaged: sidecar present, weights truncated (copied in sidecar last).
        s3 = save(staging, 3, tiny_model(num_classes, 3))
        w3 = s3.with_suffix(".safetensors")
        w3.write_bytes(w3.read_bytes()[: w3.stat().st_size // 2])
        shutil.copy(w3, ckpts)
        shutil.copy(s3, ckpts)
        wait_for(lambda: steps(errors) == [3] and steps(metrics) == [1, 2], "steps 2 and 3")
        time.sleep(0.3)
        assert steps(metrics) == [1, 2]  # no sidecar, no evaluation of step 5
        shutil.copy(s5, ckpts)  # its sidecar appears
        wait_for(lambda: steps(metrics) == [1, 2, 5], "step 5")
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive() and "error" not in result
    assert result["watch"] == (3, 1)  # evaluated, skipped

    records = [r for r in lines(metrics) if r["step"] is not None]  # the floors have their test
    conditions = {v["condition"] for v in ReIDDataset(reid_dataset, "val").views}
    keys = Counter((r["checkpoint"], r["protocol"], r["condition"]) for r in records)
    assert set(keys) == {(f"step_0000000{s}", p, c) for s in (1, 2, 5)
                         for p in ("cmc", "retrieval") for c in ["all", *conditions]}  # fmt: skip
    assert set(keys.values()) == {1}
    for r in records:
        assert REQUIRED <= set(r), set(r) ^ REQUIRED
    (err,) = lines(errors)
    assert err["checkpoint"] == "step_00000003" and "truncated" in err["error"]
    assert "skipping checkpoint" in capsys.readouterr().err

    # The same numbers as a direct evaluation.
    direct = evaluate_checkpoint(
        ckpts / "step_00000002.json", ReIDDataset(reid_dataset, "val"), cfg
    )
    logged = [r for r in records if r["step"] == 2]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in direct] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in logged
    ]

    acc = EventAccumulator(str(out), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("retrieval/all/mAP")] == [1, 2, 5]
    assert [e.step for e in acc.Scalars("cmc/all/rank1")] == [1, 2, 5]
    assert "cmc/all/mAP" not in acc.Tags()["scalars"]

    # A restarted watcher remembers: nothing is evaluated again, the damaged one is not retried.
    before = (metrics.read_text(), errors.read_text())
    once = dataclasses.replace(cfg, eval_reid=dataclasses.replace(cfg.eval_reid, once=True))
    assert watch(once) == (0, 0)
    assert (metrics.read_text(), errors.read_text()) == before
    # ... and picks up a new one.
    save(ckpts, 7, tiny_model(num_classes, 7))
    assert watch(once) == (1, 0)
    assert steps(metrics) == [1, 2, 5, 7]


def test_eval_reid_once_exit_status(reid_dataset, tmp_path, capsys):
    """For scripts: --once exits 1 when a checkpoint could not be evaluated, and 2 with the path
    when the run has no checkpoints folder (a mistyped --run-id), instead of a quiet 0."""
    from bev_reid.cli import main

    num_classes = ReIDDataset(reid_dataset, "train").num_classes
    ckpts = tmp_path / "runs" / "run" / "checkpoints"
    save(ckpts, 1, tiny_model(num_classes, 1))
    args = ["eval-reid", "--dataset-dir", str(reid_dataset), "--log-dir", str(tmp_path / "runs"),
            "--eval-log-dir", str(tmp_path / "eval"), "--once", "--device", "cpu"]  # fmt: skip
    assert main([*args, "--run-id", "run"]) == 0
    assert "evaluated 1 checkpoint(s)\n" in capsys.readouterr().out

    weights = save(ckpts, 2, tiny_model(num_classes, 2)).with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:100])  # damaged
    assert main([*args, "--run-id", "run"]) == 1
    out = capsys.readouterr().out
    assert "evaluated 0 checkpoint(s), skipped 1" in out and "errors.jsonl" in out
    assert main([*args, "--run-id", "run"]) == 0  # already reported: not retried

    assert main([*args, "--run-id", "rnu"]) == 2
    assert f"no checkpoints folder {tmp_path / 'runs' / 'rnu' / 'checkpoints'}" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "damage",
    [{"meta": []}, {"meta": None}, {"weights": 5}, {"step": "7"}, {"optimizer": [1]}, []],
    ids=["meta-list", "meta-null", "weights-int", "step-str", "optimizer-list", "not-a-dict"],
)
def test_a_sidecar_of_the_wrong_shape_is_damage_not_a_crash(reid_dataset, tmp_path, damage):
    """Valid JSON of the wrong shape is logged as a damaged checkpoint; the healthy checkpoints
    after it are evaluated, and a restarted watcher neither dies on it nor retries it."""
    cfg = eval_config(reid_dataset, tmp_path, **{"eval_reid.once": True})
    num_classes = ReIDDataset(reid_dataset, "train").num_classes
    ckpts = tmp_path / "runs" / "run" / "checkpoints"
    bad = save(ckpts, 1, tiny_model(num_classes, 1))
    record = json.loads(bad.read_text())
    bad.write_text(json.dumps({**record, **damage} if isinstance(damage, dict) else damage))
    save(ckpts, 2, tiny_model(num_classes, 2))
    assert watch(cfg) == (1, 1)
    out = tmp_path / "eval" / "run"
    assert steps(out / "metrics.jsonl") == [2]
    (err,) = lines(out / "errors.jsonl")
    assert err["checkpoint"] == "step_00000001" and "CheckpointError" in err["error"]
    assert watch(cfg) == (0, 0)  # remembered, not retried, no crash


def test_a_config_error_is_refused_before_any_checkpoint_is_judged(reid_dataset, tmp_path, capsys):
    """eval_reid.batch_size=0 is a config error, said in one line; nothing is recorded, so a
    later run with a good config evaluates every checkpoint."""
    from bev_reid.cli import main

    num_classes = ReIDDataset(reid_dataset, "train").num_classes
    save(tmp_path / "runs" / "run" / "checkpoints", 1, tiny_model(num_classes, 1))
    args = ["eval-reid", "--dataset-dir", str(reid_dataset), "--log-dir", str(tmp_path / "runs"),
            "--eval-log-dir", str(tmp_path / "eval"), "--run-id", "run", "--once",
            "--device", "cpu"]  # fmt: skip
    assert main([*args, "--set", "eval_reid.batch_size=0"]) == 2
    err = capsys.readouterr().err
    assert err == "bev-reid eval-reid: error: eval_reid.batch_size must be >= 1; got 0\n"
    assert not (tmp_path / "eval").exists()
    assert main(args) == 0
    assert steps(tmp_path / "eval" / "run" / "metrics.jsonl") == [1]


def test_ctrl_c_stops_the_watcher_cleanly(reid_dataset, tmp_path, capsys, monkeypatch):
    """Ctrl-C while the watcher waits: one line, exit 130, the log left whole."""
    from bev_reid.cli import main
    from bev_reid.reid import watch as watch_module

    def interrupted(_seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(watch_module.time, "sleep", interrupted)
    args = [
        "eval-reid",
        "--dataset-dir",
        str(reid_dataset),
        "--log-dir",
        str(tmp_path / "runs"),
        "--eval-log-dir",
        str(tmp_path / "eval"),
        "--run-id",
        "run",
        "--device",
        "cpu",
    ]
    assert main(args) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err and "Traceback" not in err


def test_the_watcher_logs_the_floors_once_beside_the_checkpoints(reid_dataset, tmp_path, capsys):
    """eval_reid.floors: the raw-crop floors are scored once, before the first checkpoint, with
    the records raw_crop_baseline gives; a restarted watcher does not score them again."""
    cfg = eval_config(reid_dataset, tmp_path, **{"eval_reid.once": True})
    num_classes = ReIDDataset(reid_dataset, "train").num_classes
    save(tmp_path / "runs" / "run" / "checkpoints", 1, tiny_model(num_classes, 1))
    assert watch(cfg) == (1, 0)
    logged = lines(tmp_path / "eval" / "run" / "metrics.jsonl")
    assert [r["checkpoint"] for r in logged][:: len(logged) // 3] == [
        "raw-crops", "raw-crops-standardised", "step_00000001",
    ]  # fmt: skip
    val = ReIDDataset(reid_dataset, "val")
    for standardise, name in ((False, "raw-crops"), (True, "raw-crops-standardised")):
        want = raw_crop_baseline(val, cfg, standardise=standardise)
        got = [r for r in logged if r["checkpoint"] == name]
        assert [(r["protocol"], r["condition"], r["mAP"]) for r in got] == [
            (r["protocol"], r["condition"], r["mAP"]) for r in want
        ]
    assert "floor (raw-crops-standardised)" in capsys.readouterr().out
    save(tmp_path / "runs" / "run" / "checkpoints", 2, tiny_model(num_classes, 2))
    assert watch(cfg) == (1, 0)
    again = lines(tmp_path / "eval" / "run" / "metrics.jsonl")
    assert sum(r["checkpoint"] == "raw-crops" for r in again) == len(want)  # not scored twice
    off = eval_config(reid_dataset, tmp_path / "off", **{"eval_reid.once": True,
                                                          "eval_reid.floors": False})  # fmt: skip
    save(tmp_path / "off" / "runs" / "run" / "checkpoints", 1, tiny_model(num_classes, 1))
    assert watch(off) == (1, 0)
    assert {
        r["checkpoint"] for r in lines(tmp_path / "off" / "eval" / "run" / "metrics.jsonl")
    } == {"step_00000001"}
