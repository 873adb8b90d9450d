"""LSS training step and inference time per sample, splat by our op vs the plain reference.

    python benchmarks/bench_lss.py [--device cpu|cuda] [--batch 2] [--repeat 3]

The default model config (128 x 352 images, 41 depth bins, 200 x 200 grid, C = 64) on keyframes of
a small synthetic world; the two models share weights and differ only in `lss.splat`. Prints the
times and the ratios, measured in one run, and the share of a step the splat takes.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from bench_ops import timeit  # the same timing in every benchmark (this folder is on sys.path)

from bev_reid.config import SynthConfig, load_config
from bev_reid.data.nuscenes import NuScenesKeyframes, collate
from bev_reid.data.synthetic import generate_world
from bev_reid.engine.train_lss import CAMERA_KEYS, build_model, dual_loss


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        world = generate_world(
            SynthConfig(scenes=1, keyframes=max(2, args.batch), seed=0),
            out=Path(tmp),
            progress=False,
        )
        base = {"data.dataroot": str(world), "data.version": "v1.0-mini"}
        cfg = load_config(overrides=base)
        dataset = NuScenesKeyframes(cfg.data, cfg.grid, is_train=True, seed=0)
        batch = collate([dataset[i] for i in range(args.batch)])
    batch = {k: v.to(args.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    torch.manual_seed(0)
    models = {"ours": build_model(cfg).to(args.device)}
    models["reference"] = build_model(load_config(overrides={**base, "lss.splat": "reference"})).to(
        args.device
    )
    models["reference"].load_state_dict(models["ours"].state_dict())
    results = {}
    for name, model in models.items():
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def train_step(model=model, optimizer=optimizer):
            model.train()
            out = model(*(batch[k] for k in CAMERA_KEYS))
            loss = dual_loss(out, batch["bev_mask"], cfg.train_lss).total
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        @torch.no_grad()
        def infer(model=model):
            model.eval()
            model(*(batch[k] for k in CAMERA_KEYS))

        results[name] = (
            timeit(train_step, args.device, args.repeat),
            timeit(infer, args.device, args.repeat),
        )
    (t_ours, i_ours), (t_ref, i_ref) = results["ours"], results["reference"]
    b = args.batch
    print(
        f"LSS default config, batch {b}, {args.device}, "
        f"{torch.get_num_threads()} threads; per sample:"
    )
    print(f"  {'':10s} {'train step':>12s} {'inference':>12s}")
    for name, (t, i) in results.items():
        print(f"  {name:10s} {t / b * 1e3:10.0f}ms {i / b * 1e3:10.0f}ms")
    print(f"  speed-up   {t_ref / t_ours:11.2f}x {i_ref / i_ours:11.2f}x")
    print(
        "  the splat's share of a reference training step: "
        f"{(t_ref - t_ours) / t_ref:.0%} saved by our op"
    )


if __name__ == "__main__":
    main()
