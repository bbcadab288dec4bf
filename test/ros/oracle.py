"""Predictors with the ges_core predictor API for node tests that must not depend on a network's
accuracy: one returns a known disparity map, one is deliberately slow. (The network itself is
tested with real weights elsewhere.)"""
import time

import numpy as np

from ges_core import GESConfig
from ges_core.predictor import Prediction


class OraclePredictor:
    """Returns a fixed disparity map (e.g. the ground truth) for any pair of its size."""

    def __init__(self, disparity: np.ndarray, valid: np.ndarray, *, delay_s: float = 0.0, max_disp: int = 192):
        self.disparity = disparity.astype(np.float32)
        self.valid = valid
        self.delay_s = delay_s
        self.config = GESConfig(max_disp=max_disp)
        self.solver = "anderson"
        self.calls = 0
        self.fail_next = None
        self.scales = []

    def predict(self, left, right, iters=None, budget_ms=None, init=None, scale=1.0):
        self.calls += 1
        self.scales.append(scale)
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        if self.delay_s:
            time.sleep(self.delay_s)
        if left.shape[:2] != self.disparity.shape:
            raise ValueError(f"oracle has a {self.disparity.shape} map, got a {left.shape[:2]} pair")
        conf = np.where(self.valid, 0.9, 0.1).astype(np.float32)
        return Prediction(self.disparity.copy(), self.valid.copy(), conf, iters or 4, 1e-3, [1e-3],
                          {"total": 1.0}, None, False)
