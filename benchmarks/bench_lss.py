"""LSS training step and inference per sample with each splat, measured in one run.

    python benchmarks/bench_lss.py [--device cpu|cuda] [--batch 2] [--repeat 3] [--config FILE]

The default model config (128 x 352 images, 41 depth bins, 200 x 200 grid, C = 64; or the lss,
grid and data sections of --config, e.g. configs/lss.yaml) on keyframes of a small synthetic
world. Three models share their weights and differ only in ``lss.splat``: ``fused`` (our op, no
frustum tensor), ``bev_pool`` (the outer product, then our op) and ``reference`` (the outer
product, then plain torch). Prints the median time of a training step (forward, dual loss,
backward, Adam step) and of an inference pass, the peak memory a training step adds (as
bench_ops.peak_memory measures it), and the ratios against bev_pool and the reference.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from bench_ops import peak_memory, timeit  # the same measures in every benchmark

from bev_reid.config import SynthConfig, load_config
from bev_reid.data.keyframes import NuScenesKeyframes, collate
from bev_reid.lss.losses import dual_loss
from bev_reid.lss.model import build_model, forward
from bev_reid.synth.generate import generate_world

SPLATS = ("fused", "bev_pool", "reference")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--config", default=None, help="a YAML config (its lss, grid, data)")
    parser.add_argument("--skip-reference", action="store_true", help="time fused and bev_pool")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        world = generate_world(
            SynthConfig(scenes=1, keyframes=max(2, args.batch), seed=0),
            out=Path(tmp),
            progress=False,
        )
        base = {"data.dataroot": str(world), "data.version": "v1.0-mini", "train_lss.amp": "none"}
        cfg = load_config(args.config, overrides=base)
        dataset = NuScenesKeyframes(cfg.data, cfg.grid, is_train=True, seed=0)
        batch = collate([dataset[i] for i in range(args.batch)])
    batch = {k: v.to(args.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    splats = SPLATS[:2] if args.skip_reference else SPLATS
    torch.manual_seed(0)
    models = {
        s: build_model(load_config(args.config, overrides={**base, "lss.splat": s})).to(args.device)
        for s in splats
    }
    for model in models.values():
        model.load_state_dict(models["fused"].state_dict())
    results = {}
    for name, model in models.items():
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def train_step(model=model, optimizer=optimizer):
            model.train()
            loss = dual_loss(forward(model, batch), batch, cfg.train_lss).total
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        @torch.no_grad()
        def infer(model=model):
            model.eval()
            forward(model, batch)

        results[name] = (
            timeit(train_step, args.device, args.repeat),
            timeit(infer, args.device, args.repeat),
            peak_memory(train_step, args.device),
        )
    b = args.batch
    print(
        f"LSS training step, batch {b}, {args.device}, {torch.get_num_threads()} threads, "
        f"grid {cfg.grid.shape}, {cfg.grid.depth_bins} depth bins, C = {cfg.lss.channels}, "
        f"trunk {cfg.lss.trunk}; per sample:"
    )
    print(f"  {'':10s} {'train step':>11s} {'inference':>11s} {'peak mem':>10s} {'step vs':>16s}")
    t_pool = results["bev_pool"][0]
    for name, (t, i, mem) in results.items():
        print(
            f"  {name:10s} {t / b * 1e3:9.0f}ms {i / b * 1e3:9.0f}ms {mem / 2**20:8.0f}MB "
            f"{t_pool / t:7.2f}x bev_pool"
        )
    t_fused, _, m_fused = results["fused"]
    _, _, m_pool = results["bev_pool"]
    print(
        f"  fused vs bev_pool: training step {t_pool / t_fused:.2f}x faster, "
        f"peak memory {m_pool / 2**20:.0f} -> {m_fused / 2**20:.0f} MB"
    )
    if "reference" in results:
        print(
            f"  fused vs reference: training step {results['reference'][0] / t_fused:.2f}x faster"
        )


if __name__ == "__main__":
    main()
