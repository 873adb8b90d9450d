"""The trained ReID embedding against the raw-crop floor on the real nuScenes scene.

    python benchmarks/bench_real_reid.py [--steps 400] [--set KEY=VALUE ...]

LiDAR crops of ../shared/data/nuscenes-mini (scene-0916), a seeded half of the identities held
out; the embedding is trained on the other half and both it and the raw crops (flattened,
cosine similarity) are evaluated on the held-out vehicles with the full-retrieval protocol.
Prints rank-1 and mAP of each and their ratio, measured in one run.
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
    parser.add_argument("--steps", type=int, default=400)
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
    trained = retrieval(evaluate_checkpoint(train_reid(cfg), val, cfg))
    floor = retrieval(raw_crop_baseline(val, cfg))
    print(
        f"\nreal scene, LiDAR crops, {val.meta['num_val_identities']} held-out identities "
        f"({len(val)} views), full retrieval:"
    )
    print(f"  trained embedding   rank-1 {trained['rank1']:.3f}   mAP {trained['mAP']:.3f}")
    print(f"  raw crops (floor)   rank-1 {floor['rank1']:.3f}   mAP {floor['mAP']:.3f}")
    print(
        f"  ratio               rank-1 {trained['rank1'] / floor['rank1']:.2f}x   mAP {trained['mAP'] / floor['mAP']:.2f}x"
    )


if __name__ == "__main__":
    main()
