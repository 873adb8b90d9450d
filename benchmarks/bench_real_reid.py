"""The trained ReID embedding against the raw-crop floors on the real nuScenes scene.

    python benchmarks/bench_real_reid.py [--steps 600] [--seeds 1] [--set KEY=VALUE ...]

LiDAR crops of ../shared/data/nuscenes-mini (scene-0916), a seeded half of the identities held
out; the embedding is trained on the other half and both it and the raw crops (flattened,
cosine similarity) are evaluated on the held-out vehicles with every protocol of
``eval_reid.protocols`` (plain retrieval, after a gap of ``eval_reid.min_gap_s`` seconds,
tracklets; re-ranked too with ``--set eval_reid.rerank=true``). Prints rank-1 and mAP of each,
measured in one run; with ``--seeds N`` the embedding is trained N times (train_reid.seed
0..N-1) and each run and the mean are printed. Two floors: the raw crops as stored, and
standardised per channel (as the model sees them); ratios are taken to the standardised one.
The goal of issue 18, on the gap protocol: mAP >= 1.2x the standardised floor and rank-1 above
it, for every seed. ``--set build.lidar_raster=box --set build.crop_cell=0.25`` compares on the
box raster (add ``--set build.lidar_colour=true`` to paint it).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bev_reid.config import load_config, parse_override
from bev_reid.reid.build import build_dataset
from bev_reid.reid.dataset import ReIDDataset
from bev_reid.reid.evaluate import evaluate_checkpoint, raw_crop_baseline
from bev_reid.reid.train import train_reid

SCENE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nuscenes-mini"


def by_protocol(records) -> dict[str, dict]:
    """The ``all``-condition record of each protocol."""
    return {r["protocol"]: r for r in records if r["condition"] == "all"}


def line(name: str, rec: dict) -> str:
    if rec.get("mAP") is None:
        return f"    {name:26} rank-1 {rec['rank1']:.3f}"
    return f"    {name:26} rank-1 {rec['rank1']:.3f}   mAP {rec['mAP']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataroot", default=str(SCENE))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, default=1, help="training runs with seeds 0..N-1")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    overrides = {
        "data.dataroot": args.dataroot,
        "data.version": "v1.0-mini",
        "data.num_workers": 0,
        "build.out": str(tmp / "ds"),
        "build.modalities": ["lidar"],
        "build.min_lidar_points": 1,
        "build.val_fraction": 0.5,
        "reid_run.dataset_dir": str(tmp / "ds"),
        "reid_run.log_dir": str(tmp / "runs"),
        "train_reid.max_steps": args.steps,
        "train_reid.checkpoint_every": args.steps,
        "train_reid.num_workers": 0,
        "train_reid.device": "cpu",
        "eval_reid.device": "cpu",
    }
    overrides.update(dict(map(parse_override, args.set)))
    cfg = load_config(overrides=overrides)
    build_dataset(cfg)
    val = ReIDDataset(tmp / "ds", "val")
    floors = {
        "raw crops (floor)": by_protocol(raw_crop_baseline(val, cfg)),
        "raw, standardised": by_protocol(raw_crop_baseline(val, cfg, standardise=True)),
    }
    trained = []
    for seed in range(args.seeds):
        run = load_config(
            overrides={**overrides, "train_reid.seed": seed, "reid_run.run_id": f"seed{seed}"}
        )
        trained.append(by_protocol(evaluate_checkpoint(train_reid(run), val, run)))
    print(
        f"\nreal scene, LiDAR crops, {val.meta['num_val_identities']} held-out identities "
        f"({len(val)} views), {args.steps} training steps:"
    )
    standard = floors["raw, standardised"]
    for protocol in (p for p in trained[0] if p not in ("cmc", "cross_condition")):
        extra = {
            "retrieval_gap": f", gallery views >= {cfg.eval_reid.min_gap_s} s from the query",
            "tracklet": f", {cfg.eval_reid.tracklet_len} views per tracklet",
        }.get(protocol, "")
        print(f"  {protocol}{extra}:")
        runs = [t[protocol] for t in trained]
        for seed, r in enumerate(runs):
            print(line(f"trained, seed {seed}", r))
        rank1 = sum(r["rank1"] for r in runs) / len(runs)
        m_ap = sum(r["mAP"] for r in runs) / len(runs)
        if len(runs) > 1:
            print(line("trained, mean", {"rank1": rank1, "mAP": m_ap}))
        for name, f in floors.items():
            print(line(name, f[protocol]))
        floor = standard[protocol]
        print(
            f"    ratio to the standardised floor  rank-1 {rank1 / floor['rank1']:.2f}x   "
            f"mAP {m_ap / floor['mAP']:.2f}x"
        )
    if "retrieval_gap" in standard:
        floor = standard["retrieval_gap"]
        met = all(
            t["retrieval_gap"]["mAP"] >= 1.2 * floor["mAP"]
            and t["retrieval_gap"]["rank1"] > floor["rank1"]
            for t in trained
        )
        print(
            "  goal (gap protocol, every seed: mAP >= 1.2x the standardised floor, rank-1 above "
            f"it): {'met' if met else 'not met'}"
        )


if __name__ == "__main__":
    main()
