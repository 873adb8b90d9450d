"""LSS training step and inference per sample with each splat, measured in one run.

    python benchmarks/bench_lss.py [--device cpu|cuda] [--batch 2] [--repeat 3] [--config FILE]

The default model config (128 x 352 images, 41 depth bins, 200 x 200 grid, C = 64; or the lss,
grid and data sections of --config, e.g. configs/lss.yaml) on keyframes of a small synthetic
world. Three models share their weights and differ only in ``lss.splat``: ``fused`` (our op, no
frustum tensor), ``bev_pool`` (the outer product, then our op) and ``reference`` (the outer
product, then plain torch). Prints the median time of a training step (forward, dual loss,
backward, Adam step) and of an inference pass, taken in turns (one of each model per round, so
that a machine whose load drifts weighs on all alike), the peak memory a training step and an
inference pass add (as bench_ops.peak_memory measures it), and the ratios against bev_pool.

Then what depth supervision from LiDAR (``train_lss.depth_weight`` > 0) costs: the loader's time
per keyframe with and without the depth targets (projecting the LiDAR points into the six
cameras), and the fused model's training step with and without the depth term.

Then what makes a step fast on a CPU: a keyframe loaded from the Dataset's cache
(``data.cache_keyframes``: images decoded and LiDAR projected once) against read anew, and the
fused model's training step with its convolution weights channels-last (what ``build_model``
makes) against the plain layout, in float32 and under ``train_lss.amp: auto``.

Last what the depth head's 3x3 blocks (``lss.head_blocks``) cost: the fused model's training
step under amp auto with them and with lift-splat-shoot's 1x1 head.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
import typing
from pathlib import Path

import torch
from bench_ops import peak_memory  # the same measure in every benchmark

from bev_reid.config import LSSConfig, SynthConfig, choices_of, load_config
from bev_reid.data.keyframes import NuScenesKeyframes, collate
from bev_reid.lss.losses import dual_loss
from bev_reid.lss.model import build_model, forward, resolve_amp
from bev_reid.synth.generate import generate_world

SPLATS = choices_of(typing.get_type_hints(LSSConfig)["splat"])  # as lss.splat accepts them


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--config", default=None, help="a YAML config (its lss, grid, data)")
    parser.add_argument("--skip-reference", action="store_true", help="time fused and bev_pool")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        world = generate_world(
            SynthConfig(scenes=1, keyframes=max(2, args.batch), seed=0),
            out=Path(tmp),
            progress=False,
        )
        base = {"data.dataroot": str(world), "data.version": "v1.0-mini", "train_lss.amp": "none"}
        cfg = load_config(args.config, overrides=base)
        fresh = dataclasses.replace(cfg.data, cache_keyframes=0)  # each keyframe read anew
        dataset = NuScenesKeyframes(fresh, cfg.grid, is_train=True, seed=0)
        depth = (cfg.lss.downsample, cfg.grid.dbound)
        with_depth = NuScenesKeyframes(fresh, cfg.grid, is_train=True, seed=0, depth=depth)
        load_times = loader_times(dataset, with_depth, args.batch, args.repeat)
        cached = NuScenesKeyframes(
            dataclasses.replace(cfg.data, cache_keyframes=args.batch),
            cfg.grid,
            is_train=True,
            seed=0,
            depth=depth,
        )
        for i in range(args.batch):
            cached[i]  # fills the cache
        cache_times = loader_times(with_depth, cached, args.batch, args.repeat)
        batch = collate([with_depth[i] for i in range(args.batch)])
    batch = {k: v.to(args.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    splats = [s for s in SPLATS if not (args.skip_reference and s == "reference")]
    torch.manual_seed(0)
    models = {
        s: build_model(load_config(args.config, overrides={**base, "lss.splat": s})).to(args.device)
        for s in splats
    }
    for model in models.values():
        model.load_state_dict(models["fused"].state_dict())
    steps, infers = {}, {}
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

        steps[name], infers[name] = train_step, infer
    times = {name: ([], [], []) for name in models}  # step wall, inference wall, step CPU time
    for fn in (*steps.values(), *infers.values()):
        fn()  # warm-up (and Adam's state)
    for _ in range(args.repeat):
        for name in models:
            for fn, out in ((steps[name], times[name][0]), (infers[name], times[name][1])):
                if args.device == "cuda":
                    torch.cuda.synchronize()
                t, cpu = time.perf_counter(), time.process_time()
                fn()
                if args.device == "cuda":
                    torch.cuda.synchronize()
                out.append(time.perf_counter() - t)
                if fn is steps[name]:
                    times[name][2].append(time.process_time() - cpu)
    results = {
        name: (
            statistics.median(times[name][0]),
            statistics.median(times[name][1]),
            peak_memory(steps[name], args.device),
            peak_memory(infers[name], args.device),
            statistics.median(times[name][2]),
        )
        for name in models
    }
    b = args.batch
    print(
        f"LSS training step, batch {b}, {args.device}, {torch.get_num_threads()} threads, "
        f"grid {cfg.grid.shape}, {cfg.grid.depth_bins} depth bins, C = {cfg.lss.channels}, "
        f"trunk {cfg.lss.trunk}; per sample:"
    )
    print(
        f"  {'':10s} {'train step':>11s} {'inference':>11s} {'peak mem: step':>15s}"
        f" {'inference':>10s} {'step vs bev_pool':>17s}"
    )
    t_pool = results["bev_pool"][0]
    for name, (t, i, mem, imem, _) in results.items():
        print(
            f"  {name:10s} {t / b * 1e3:9.0f}ms {i / b * 1e3:9.0f}ms {mem / 2**20:13.0f}MB "
            f"{imem / 2**20:8.0f}MB {t_pool / t:16.2f}x"
        )
    t_fused, i_fused, m_fused, im_fused, cpu_fused = results["fused"]
    _, i_pool, m_pool, im_pool, cpu_pool = results["bev_pool"]
    if args.device == "cpu":
        # CPU time is steadier than wall time on a shared machine (with 1 thread it is the
        # step's own work; with more it also counts the threads' spin-waits).
        print(
            f"  CPU time of a step: fused {cpu_fused / b * 1e3:.0f}ms, bev_pool "
            f"{cpu_pool / b * 1e3:.0f}ms per sample: {cpu_pool / cpu_fused:.2f}x"
        )
    print(
        f"  fused vs bev_pool: training step {t_pool / t_fused:.2f}x faster, inference "
        f"{i_pool / i_fused:.2f}x; peak memory of a step {m_pool / 2**20:.0f} -> "
        f"{m_fused / 2**20:.0f} MB, of an inference pass {im_pool / 2**20:.0f} -> "
        f"{im_fused / 2**20:.0f} MB"
    )
    if "reference" in results:
        print(
            f"  fused vs reference: training step {results['reference'][0] / t_fused:.2f}x faster"
        )
    depth_cost(models["fused"], batch, cfg, args, load_times)
    layout_cost(models["fused"], batch, cfg, args, cache_times)
    head_cost(batch, cfg, args)


def loader_times(plain, with_depth, n: int, repeat: int) -> tuple[float, float]:
    """Median seconds to load a keyframe without and with depth targets, in turns."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for i in range(n):
            for dataset, out in ((plain, times[0]), (with_depth, times[1])):
                t = time.perf_counter()
                dataset[i]
                out.append(time.perf_counter() - t)
    return statistics.median(times[0]), statistics.median(times[1])


def timed_step(model, optimizer, batch, tc, amp: str, device: str) -> float:
    """Seconds of one training step (forward under ``amp``, dual loss of ``tc``, backward, Adam)."""
    model.train()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    loss = dual_loss(forward(model, batch, amp), batch, tc).total
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def depth_cost(model, batch, cfg, args, load_times: tuple[float, float]) -> None:
    """Prints the fused model's training step without and with the depth term, and the loader's
    time per keyframe without and with its targets."""
    terms = {
        "without": dataclasses.replace(cfg.train_lss, depth_weight=0.0),
        "with": dataclasses.replace(cfg.train_lss, depth_weight=1.0),
    }
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for tc in terms.values():
        timed_step(model, optimizer, batch, tc, "none", args.device)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in terms}
    for _ in range(args.repeat):
        for name, tc in terms.items():
            times[name].append(timed_step(model, optimizer, batch, tc, "none", args.device))
    off, on = (statistics.median(times[name]) / args.batch for name in terms)
    load_off, load_on = load_times
    print("Depth supervision (fused splat), per sample:")
    print(
        f"  training step {off * 1e3:.0f}ms without the depth term, {on * 1e3:.0f}ms with it "
        f"({(on / off - 1) * 100:+.1f}%); loading a keyframe {load_off * 1e3:.0f}ms without "
        f"depth targets, {load_on * 1e3:.0f}ms with them ({(load_on / load_off - 1) * 100:+.1f}%)"
    )


def layout_cost(model, batch, cfg, args, cache_times: tuple[float, float]) -> None:
    """Prints the fused model's training step in the plain layout and channels-last, in float32
    and under amp auto, and the loader's time per keyframe read anew and from the cache."""
    device = torch.device(args.device)
    auto = resolve_amp("auto", device)
    plain = build_model(cfg).to(device).to(memory_format=torch.contiguous_format)
    plain.load_state_dict(model.state_dict())
    runs = {"plain float32": (plain, "none"), "channels-last float32": (model, "none")}
    if auto != "none":
        runs[f"channels-last {auto} (amp auto)"] = (model, auto)
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-3) for name, (m, _) in runs.items()}

    def step(name: str) -> float:
        net, amp = runs[name]
        return timed_step(net, optimizers[name], batch, cfg.train_lss, amp, args.device)

    for name in runs:
        step(name)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeat):
        for name in runs:
            times[name].append(step(name))
    base = statistics.median(times["plain float32"])
    print(
        f"Layout and precision (fused splat, amp auto is {auto!r} here), training step per sample:"
    )
    for name in runs:
        t = statistics.median(times[name])
        print(
            f"  {name:32s} {t / args.batch * 1e3:6.0f}ms  {base / t:5.2f}x the plain float32 step"
        )
    fresh, cached = cache_times
    print(
        f"  loading a keyframe with depth targets: {fresh * 1e3:.0f}ms read anew, "
        f"{cached * 1e3:.0f}ms from the cache ({fresh / cached:.1f}x)"
    )


def head_cost(batch, cfg, args) -> None:
    """Prints the fused model's training step (amp auto) with the depth head's 3x3 blocks
    (``lss.head_blocks`` of the config, or 2 of 64 channels where it has none) and without."""
    device = torch.device(args.device)
    amp = resolve_amp("auto", device)
    blocks = cfg.lss.head_blocks or 2
    width = cfg.lss.head_width if cfg.lss.head_blocks else 64
    heads = {
        "no blocks (LSS's 1x1 head)": (0, 0),
        f"{blocks} blocks of width {width or 'trunk'}": (blocks, width),
    }
    runs = {}
    for name, (n, w) in heads.items():
        lss = dataclasses.replace(cfg.lss, splat="fused", head_blocks=n, head_width=w)
        model = build_model(dataclasses.replace(cfg, lss=lss)).to(device)
        runs[name] = (model, torch.optim.Adam(model.parameters(), lr=1e-3))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for rnd in range(args.repeat + 1):
        for name, (model, optimizer) in runs.items():
            t = timed_step(model, optimizer, batch, cfg.train_lss, amp, args.device)
            if rnd:  # the first round warms up
                times[name].append(t)
    print(f"Depth head (fused splat, amp {amp!r}), training step per sample:")
    base = statistics.median(times[next(iter(runs))])
    for name in runs:
        t = statistics.median(times[name])
        print(f"  {name:32s} {t / args.batch * 1e3:6.0f}ms  {t / base:5.2f}x the 1x1 head's step")


if __name__ == "__main__":
    main()
