"""Keyframes per second of our ReID dataset builder against the original scheme, in one run.

    python benchmarks/bench_build.py [--keyframes 4] [--device cpu|cuda]

Ours: one LSS pass per keyframe over all six cameras, every vehicle cropped from that BEV map
(`bev_reid.reid.build.process_part`). The original: one LSS pass per annotation and per camera
(the network sees one camera at a time), the annotation cropped from each pass. Both use the
same model (default config, 128 x 352 images, 200 x 200 grid, random weights: speed does not
depend on them) on the same synthetic keyframes. The original is timed on a few annotations and
extrapolated to the keyframes' real annotation counts; the output says so.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bev_reid.config import SynthConfig, load_config, to_dict
from bev_reid.engine.checkpoint import save_checkpoint
from bev_reid.lss.model import CAMERA_KEYS, build_model
from bev_reid.reid.build import open_source, process_part
from bev_reid.reid.crops import crop_boxes
from bev_reid.synth.generate import generate_world


def original_scheme_seconds_per_annotation(
    source, cfg, index: int, annotations: int
) -> tuple[float, int]:
    """Seconds per annotation of the original scheme (6 single-camera passes each)."""
    item = source.dataset[index]
    boxes = [b for b in item["boxes"] if b["category"].startswith(tuple(cfg.build.categories))]
    boxes = boxes[:annotations]
    cams = item["imgs"].shape[0]
    start = time.perf_counter()
    with torch.no_grad():
        for b in boxes:
            geometry = {
                "center": torch.tensor([b["center"][:2]]),
                "yaw": torch.tensor([b["yaw"]]),
                "length": torch.tensor([b["wlh"][1]]),
                "width": torch.tensor([b["wlh"][0]]),
            }
            for c in range(cams):
                one = [
                    item[k][c : c + 1].unsqueeze(0).to(source.device) for k in CAMERA_KEYS
                ]  # B=1, N=1
                out = source.model(*one)
                crop_boxes(out.bev[0], geometry, source.grid, cfg.build.crop_size)
    return (time.perf_counter() - start) / max(1, len(boxes)), len(boxes)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keyframes", type=int, default=4)
    parser.add_argument(
        "--annotations", type=int, default=3, help="annotations timed for the original scheme"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        world = generate_world(
            SynthConfig(scenes=1, keyframes=args.keyframes, seed=0),
            out=Path(tmp) / "world",
            progress=False,
        )
        lss_cfg = load_config()
        torch.manual_seed(0)
        ckpt = save_checkpoint(
            Path(tmp) / "lss",
            0,
            build_model(lss_cfg),
            meta={"kind": "lss", "config": to_dict(lss_cfg)},
        )
        cfg = load_config(
            overrides={
                "data.dataroot": str(world),
                "data.version": "v1.0-mini",
                "data.num_workers": 0,
                "build.checkpoint": str(ckpt),
                "build.out": str(Path(tmp) / "ds"),
                "build.device": args.device,
                "build.min_iou": 0.0,
            }
        )
        source = open_source(cfg)
        n = len(source.dataset)
        process_part(source, cfg, [0])  # warm-up
        start = time.perf_counter()
        _, views, _ = process_part(source, cfg, list(range(n)))
        ours = time.perf_counter() - start
        per_keyframe = [
            sum(b["category"].startswith("vehicle") for b in source.dataset[i]["boxes"])
            for i in range(n)
        ]
        per_annotation, timed = original_scheme_seconds_per_annotation(
            source, cfg, 0, args.annotations
        )
        original = per_annotation * sum(per_keyframe)
    print(
        f"device {args.device}, {torch.get_num_threads()} threads; {n} synthetic keyframes, "
        f"{sum(per_keyframe)} vehicle annotations in the grid "
        f"({sum(per_keyframe) / n:.1f} per keyframe), "
        f"{len(views)} crops kept"
    )
    print(
        f"  ours (one pass per keyframe):             {n / ours:8.3f} keyframes/s "
        f"({ours / n:.2f} s per keyframe)"
    )
    print(
        f"  original (one pass per annotation x cam): {n / original:8.3f} keyframes/s "
        f"({per_annotation:.2f} s per annotation, timed on {timed} annotations, extrapolated)"
    )
    print(f"  speed-up: {original / ours:.1f}x")


if __name__ == "__main__":
    main()
