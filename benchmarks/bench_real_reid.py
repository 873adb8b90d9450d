"""The trained ReID embedding against the raw-crop floor on the real nuScenes scene.

    python benchmarks/bench_real_reid.py [--steps 600] [--seeds 1] [--set KEY=VALUE ...]

LiDAR crops of ../shared/data/nuscenes-mini (scene-0916), a seeded half of the identities held
out; the embedding is trained on the other half and both it and the raw crops (flattened,
cosine similarity) are evaluated on the held-out vehicles with the full-retrieval protocol.
Prints rank-1 and mAP of each and their ratio, measured in one run; with ``--seeds N`` the
embedding is trained N times (train_reid.seed 0..N-1) and each run and the mean are printed.
Two floors: the raw crops as stored, and standardised per channel (as the model sees them); the
ratio is taken to the stronger of the two. ``--set build.lidar_raster=box --set
build.crop_cell=0.25`` compares on the box raster.
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


def retrieval(records):
    return next(r for r in records if r["protocol"] == "retrieval" and r["condition"] == "all")


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
        "raw crops (floor)": retrieval(raw_crop_baseline(val, cfg)),
        "raw, standardised": retrieval(raw_crop_baseline(val, cfg, standardise=True)),
    }
    floor = max(floors.values(), key=lambda r: r["rank1"])  # the stronger floor
    trained = []
    for seed in range(args.seeds):
        run = load_config(
            overrides={**overrides, "train_reid.seed": seed, "reid_run.run_id": f"seed{seed}"}
        )
        trained.append(retrieval(evaluate_checkpoint(train_reid(run), val, run)))
    print(
        f"\nreal scene, LiDAR crops, {val.meta['num_val_identities']} held-out identities "
        f"({len(val)} views), full retrieval, {args.steps} training steps:"
    )
    for seed, r in enumerate(trained):
        print(f"  trained, seed {seed}     rank-1 {r['rank1']:.3f}   mAP {r['mAP']:.3f}")
    rank1 = sum(r["rank1"] for r in trained) / len(trained)
    m_ap = sum(r["mAP"] for r in trained) / len(trained)
    if len(trained) > 1:
        print(f"  trained, mean        rank-1 {rank1:.3f}   mAP {m_ap:.3f}")
    for name, r in floors.items():
        print(f"  {name:20} rank-1 {r['rank1']:.3f}   mAP {r['mAP']:.3f}")
    print(
        f"  ratio to the stronger floor  rank-1 {rank1 / floor['rank1']:.2f}x   "
        f"mAP {m_ap / floor['mAP']:.2f}x"
    )


if __name__ == "__main__":
    main()
