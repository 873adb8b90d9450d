"""The motion model: a constant-velocity Kalman filter on a track's centre in the global frame.

State x = (px, py, vx, vy) (metres, m/s), covariance P (4 x 4). Between keyframes dt seconds
apart the centre moves by v dt; the unknown acceleration is white noise of std ``accel_noise``
held over each interval (the "discrete white-noise acceleration" model), so per axis

    F = [[1, dt], [0, 1]],  Q = accel_noise^2 [[dt^4 / 4, dt^3 / 2], [dt^3 / 2, dt^2]].

A detection measures the centre z = (px, py) with noise std ``measurement_noise``:
H = [I2 0], R = measurement_noise^2 I2, and the update is the textbook one

    S = H P H^T + R,  K = P H^T S^-1,  x += K (z - H x),  P = (I - K H) P (I - K H)^T + K R K^T

(the Joseph form, which keeps P symmetric and positive definite). Height, size and heading are
not filtered: a track reports those of its latest detection.
"""

from __future__ import annotations

import numpy as np

_H = np.hstack([np.eye(2), np.zeros((2, 2))])  # 2 x 4: measures the centre


def transition(dt: float) -> np.ndarray:
    """F [4, 4] of a constant-velocity step of ``dt`` seconds."""
    f = np.eye(4)
    f[0, 2] = f[1, 3] = dt
    return f


def process_noise(dt: float, accel_noise: float) -> np.ndarray:
    """Q [4, 4] of white-noise acceleration of std ``accel_noise`` held over ``dt`` seconds."""
    q = np.zeros((4, 4))
    for p, v in ((0, 2), (1, 3)):
        q[p, p] = dt**4 / 4
        q[p, v] = q[v, p] = dt**3 / 2
        q[v, v] = dt**2
    return accel_noise**2 * q


class ConstantVelocityKF:
    """A track's centre and velocity in the global frame.

    Args:
        centre: [2] first measured centre (x, y), metres.
        velocity: [2] first velocity estimate (e.g. the detector's), m/s; zeros when unknown.
        measurement_noise: std of a measured centre, metres (also the initial position std).
        velocity_std: std of the initial velocity, m/s.
        accel_noise: std of the acceleration, m/s^2.
    """

    def __init__(
        self,
        centre: np.ndarray,
        velocity: np.ndarray,
        measurement_noise: float,
        velocity_std: float,
        accel_noise: float,
    ):
        self.x = np.array([centre[0], centre[1], velocity[0], velocity[1]], dtype=np.float64)
        self.P = np.diag([measurement_noise**2] * 2 + [velocity_std**2] * 2).astype(np.float64)
        self.R = np.eye(2) * measurement_noise**2
        self.accel_noise = float(accel_noise)

    @property
    def centre(self) -> np.ndarray:
        """[2] the estimated centre (x, y)."""
        return self.x[:2].copy()

    @property
    def velocity(self) -> np.ndarray:
        """[2] the estimated velocity (vx, vy)."""
        return self.x[2:].copy()

    def predict(self, dt: float) -> np.ndarray:
        """Moves the state ``dt`` seconds ahead; returns the predicted centre [2]."""
        f = transition(dt)
        self.x = f @ self.x
        self.P = f @ self.P @ f.T + process_noise(dt, self.accel_noise)
        return self.centre

    def update(self, z: np.ndarray) -> np.ndarray:
        """Corrects the state with a measured centre ``z`` [2]; returns the new centre [2]."""
        s = _H @ self.P @ _H.T + self.R  # 2 x 2
        k = self.P @ _H.T @ np.linalg.inv(s)  # 4 x 2
        self.x = self.x + k @ (np.asarray(z, dtype=np.float64)[:2] - _H @ self.x)
        a = np.eye(4) - k @ _H
        self.P = a @ self.P @ a.T + k @ self.R @ k.T
        return self.centre
