"""The pieces of a training loop both trainers share: the "every N steps or seconds" schedule,
resume-or-start, the periodic save-and-prune of checkpoints, the learning-rate schedule and a
moving average of the weights.

A period of 0 means off, for steps and for seconds alike; the config refuses negative periods.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from bev_reid.engine.checkpoint import (
    Checkpoint,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from bev_reid.engine.io import sweep_stale_tmp


class Every:
    """A schedule that is due every ``steps`` steps or every ``seconds`` seconds, whichever
    comes first (0 turns either off); ``first`` also makes step 1 due (a first picture).

    Seconds count from construction and from the last time the schedule was due.
    """

    def __init__(self, steps: int = 0, seconds: float = 0.0, first: bool = False):
        if steps < 0 or seconds < 0:
            raise ValueError(f"periods must be >= 0 (0 = off), got steps={steps}, s={seconds}")
        self.steps, self.seconds, self.first = int(steps), float(seconds), first
        self._last = time.monotonic()

    def due(self, step: int, final: bool = False) -> bool:
        """Whether the work is due after optimizer step ``step``; ``final`` (the last step of
        the run) is always due when either period is on."""
        now = time.monotonic()
        on = self.steps > 0 or self.seconds > 0
        hit = on and (
            final
            or (self.steps > 0 and step % self.steps == 0)
            or (self.seconds > 0 and now - self._last >= self.seconds)
            or (self.first and step == 1)
        )
        if hit:
            self._last = now
        return hit


def resume_or_start(
    ckpt_dir: Path, resume: bool, job: str, announce: bool = True
) -> Checkpoint | None:
    """The latest checkpoint of ``ckpt_dir`` when ``resume`` is set, else None.

    Asking to resume a run that has no checkpoint yet starts it (a job restarted before its first
    save), with a note on stdout when ``announce``.
    """
    sweep_stale_tmp(ckpt_dir)  # what a killed save left behind
    if not resume:
        return None
    latest = latest_checkpoint(ckpt_dir)
    if latest is None:
        if announce:
            print(f"{job}: no checkpoint in {ckpt_dir} to resume from; starting at step 0")
        return None
    return load_checkpoint(latest)


def save_and_prune(
    ckpt_dir: Path,
    step: int,
    model: torch.nn.Module | dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    keep: int,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Writes the checkpoint of ``step`` (atomically, sidecar last), then keeps the ``keep``
    newest (0 keeps all). Returns the sidecar's path."""
    path = save_checkpoint(ckpt_dir, step, model, optimizer, meta=meta, extra_tensors=extra_tensors)
    prune_checkpoints(ckpt_dir, keep)
    return path


def lr_factor(step: int, max_steps: int, schedule: str, warmup: float) -> float:
    """The learning rate of optimizer step ``step + 1`` over the configured ``lr``: 1 (constant),
    or one cycle: a linear warm-up from 0.1 over the first ``warmup`` share of the steps, then a
    cosine down to 0.01. A function of the step alone, so a resumed run takes the same steps."""
    if schedule == "constant":
        return 1.0
    t = step / max(1, max_steps)
    if t < warmup:
        return 0.1 + 0.9 * t / warmup
    rest = (t - warmup) / max(1e-9, 1 - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, rest)))


class WeightAverage:
    """An exponential moving average of a model's weights and floating-point buffers (integer
    buffers, such as BatchNorm's batch count, are copied): after optimizer step ``t`` (1, 2, ...)
    each average moves to ``a + (1 - d) (w - a)`` with ``d = min(decay, (1 + t) / (10 + t))``: a
    short memory at first, so the random start is soon forgotten. The average starts at the
    weights it is made from.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Takes in the weights after optimizer step ``step`` (counted from 1)."""
        d = min(self.decay, (1 + step) / (10 + step))
        for k, w in model.state_dict().items():
            a = self.state[k]
            if a.is_floating_point():
                a.lerp_(w.detach(), 1 - d)
            else:
                a.copy_(w)
