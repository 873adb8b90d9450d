"""The learning-rate schedule and the weight average the trainers share, against values worked
out by hand."""

from __future__ import annotations

import pytest
import torch

from bev_reid.engine.loop import WeightAverage, lr_factor


def test_constant_is_one_at_every_step():
    assert [lr_factor(s, 100, "constant", 0.1) for s in (0, 50, 99, 100)] == [1.0] * 4


def test_onecycle_warms_up_linearly_then_falls_along_a_cosine_to_a_hundredth():
    # 100 steps, 10 of them warming up: from 0.1 at step 0 to 1 at step 10 (0.55 half-way);
    # then 0.01 + 0.99 (1 + cos(pi r)) / 2 with r the share of the other 90 steps gone by:
    # r = 1/2 at step 55 gives 0.505, r = 1/3 at step 40 gives 0.01 + 0.99 * 0.75 = 0.7525.
    got = [lr_factor(s, 100, "onecycle", 0.1) for s in (0, 5, 10, 40, 55, 100, 120)]
    assert got == pytest.approx([0.1, 0.55, 1.0, 0.7525, 0.505, 0.01, 0.01])


def test_onecycle_without_warm_up_starts_at_the_full_rate():
    got = [lr_factor(s, 40, "onecycle", 0.0) for s in (0, 20, 40)]
    assert got == pytest.approx([1.0, 0.505, 0.01])


def test_weight_average_moves_by_the_decay_it_may_have_at_that_step():
    net = torch.nn.BatchNorm1d(1)  # a weight and bias, float running statistics, an int count
    average = WeightAverage(net, decay=0.2)
    with torch.no_grad():
        net.weight.fill_(4.0)  # from 1
        net.running_mean.fill_(2.0)
        net.num_batches_tracked.fill_(7)
    average.update(net, 1)  # d = min(0.2, 2 / 11) = 2 / 11: 9 / 11 of the way to the weights
    assert average.state["weight"].item() == pytest.approx(1 + 9 / 11 * (4 - 1))
    assert average.state["running_mean"].item() == pytest.approx(9 / 11 * 2)
    assert average.state["num_batches_tracked"].item() == 7
    with torch.no_grad():
        net.running_mean.fill_(5.0)
    average.update(net, 2)  # d = min(0.2, 3 / 12) = 0.2
    assert average.state["running_mean"].item() == pytest.approx(18 / 11 + 0.8 * (5 - 18 / 11))
    # The average is its own copy: the module's tensors are untouched.
    assert net.running_mean.item() == 5.0 and average.state["running_mean"] is not net.running_mean
