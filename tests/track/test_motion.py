"""The constant-velocity Kalman filter against steps computed by hand."""

import numpy as np
import pytest

from bev_reid.track.motion import ConstantVelocityKF, process_noise, transition


def test_one_predict_and_update_by_hand():
    # x0 = (0, 0, 1, 0), P0 = diag(1, 1, 4, 4), accel std 1, dt 1. Per axis:
    # F P F^T = [[1 + 4, 4], [4, 4]]; Q = [[1/4, 1/2], [1/2, 1]]; P- = [[5.25, 4.5], [4.5, 5]].
    kf = ConstantVelocityKF(np.zeros(2), np.array([1.0, 0.0]), 1.0, 2.0, 1.0)
    assert kf.predict(1.0) == pytest.approx([1.0, 0.0])
    assert kf.P[0, 0] == pytest.approx(5.25) and kf.P[0, 2] == pytest.approx(4.5)
    assert kf.P[2, 2] == pytest.approx(5.0) and kf.P[0, 1] == pytest.approx(0.0)
    # z = (2, 1): S = 6.25, K = (5.25, 4.5) / 6.25 = (0.84, 0.72) per axis; innovations (1, 1).
    kf.update(np.array([2.0, 1.0]))
    assert kf.centre == pytest.approx([1.84, 0.84])
    assert kf.velocity == pytest.approx([1.72, 0.72])
    # P+ = (I - K H) P-: position 0.16 * 5.25, cross 0.16 * 4.5, velocity 5 - 0.72 * 4.5.
    assert kf.P[0, 0] == pytest.approx(0.84)
    assert kf.P[0, 2] == pytest.approx(0.72)
    assert kf.P[2, 2] == pytest.approx(1.76)
    assert np.allclose(kf.P, kf.P.T)


def test_transition_and_noise_matrices():
    f = transition(0.5)
    assert f @ np.array([1.0, 2.0, 3.0, -4.0]) == pytest.approx([2.5, 0.0, 3.0, -4.0])
    q = process_noise(0.5, 2.0)  # 4 [[dt^4/4, dt^3/2], [dt^3/2, dt^2]] per axis
    assert q[0, 0] == pytest.approx(4 * 0.5**4 / 4) and q[1, 3] == pytest.approx(4 * 0.5**3 / 2)
    assert q[3, 3] == pytest.approx(4 * 0.25) and q[0, 1] == 0.0


def test_a_constant_velocity_track_is_followed_and_its_speed_learnt():
    rng = np.random.default_rng(0)
    kf = ConstantVelocityKF(np.zeros(2), np.zeros(2), 0.3, 5.0, 0.5)
    truth = np.array([0.0, 0.0])
    for _ in range(30):
        truth = truth + np.array([4.0, -2.0]) * 0.5  # 8 m/s, -4 m/s... over 0.5 s
        kf.predict(0.5)
        kf.update(truth + rng.normal(0, 0.3, 2))
    assert kf.velocity == pytest.approx([4.0, -2.0], abs=0.5)
    assert np.linalg.norm(kf.centre - truth) < 0.5
