"""The one stereo pipeline: a rectified pair (arrays) + calibration + params -> disparity, validity, confidence,
points. The live node and bag replay (through ges_ros.processing) and `ges predict` all run it, so a pixel is
valid, and a point is where it is, by the same rules everywhere.

    pipe = StereoPipeline(predictor, PipelineParams(iters=4))
    r = pipe.run(left_rgb, right_rgb, calibration)      # calibration may be None (no points, no depth rules)
    r.disparity, r.valid, r.confidence, r.ros_disparity(), r.points()
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .config import GESConfig, strict_from_dict
from .geometry import StereoCalibration, point_cloud_xyz, to_ros_disparity

# the network is run at a scale whose search range covers the wanted disparities with this much to spare
RANGE_MARGIN = 0.95


@dataclass
class PipelineParams:
    iters: int = GESConfig.iters           # the weights' inference default
    budget_ms: float = 0.0                 # 0 = run `iters`
    input_scale: float = 1.0               # run the network on a resized pair
    retry_input_scale: float = 0.0         # inference failed: retry once at input_scale x this (0 = no retry)
    max_pixels: int = 0                    # larger inputs are downscaled to fit (0 = no limit)
    warm_start: bool = False
    min_disparity: float = 0.0             # pixel shift x_l - x_r accepted as valid, from
    max_disparity: float = 0.0             # to (0 = the network's range); the network is run small enough to reach it
    min_depth: float = 0.0                 # m; > 0 (with a calibration): the network is run small enough to reach
                                           # the disparity of this depth, and nearer points are NaN
    max_depth: float = 0.0                 # m; farther points are NaN (0 = no clip)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "PipelineParams":
        return strict_from_dict(cls, values, "pipeline parameters")


@dataclass
class PipelineResult:
    disparity: np.ndarray                  # (H, W) float32 pixel shift x_l - x_r at the input size
    valid: np.ndarray                      # (H, W) bool: inside the network's range at the scale run and the params'
    confidence: np.ndarray                 # (H, W) float32 in [0, 1]
    calibration: Optional[StereoCalibration]
    iters: int
    residual: float
    fallback: bool                         # the solver diverged: the volumetric disparity was used
    scale: float                           # the input scale the network ran at
    min_depth: float = 0.0
    max_depth: float = 0.0
    timings_ms: Dict[str, float] = field(default_factory=dict)

    def ros_disparity(self) -> np.ndarray:
        """stereo_image_proc's disparity, d = (x_l - x_r) - (cx_l - cx_r)."""
        return to_ros_disparity(self.disparity, self._calib())

    def points(self) -> Tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) float32 points in the left optical frame (NaN where invalid or outside the depth limits) and
        their mask."""
        return point_cloud_xyz(self.ros_disparity(), self.valid, self._calib(), min_depth=self.min_depth,
                               max_depth=self.max_depth)

    def _calib(self) -> StereoCalibration:
        if self.calibration is None:
            raise ValueError("points and ROS disparity need a calibration (focal length, baseline, principal points)")
        return self.calibration


class StereoPipeline:
    """Holds what carries from pair to pair: the warm-start state and the retry count."""

    def __init__(self, predictor, params: Optional[PipelineParams] = None) -> None:
        self.predictor = predictor
        self.params = params or PipelineParams()
        self._state = None
        self.retries = 0                   # pairs whose inference failed and succeeded at a lower scale

    def reset(self) -> None:
        self._state = None

    @property
    def network_range(self) -> float:
        """The largest pixel shift the network's cost volume represents at its own resolution."""
        return float(self.predictor.config.max_disp)

    def wanted_range(self, calib: Optional[StereoCalibration]) -> float:
        """The largest pixel shift the params ask to resolve: max_disparity, and the shift of min_depth."""
        p = self.params
        wanted = p.max_disparity
        if p.min_depth > 0 and calib is not None:
            wanted = max(wanted, calib.fx * calib.baseline / p.min_depth + calib.doffs)
        return wanted

    def network_scale(self, height: int, width: int, calib: Optional[StereoCalibration]) -> float:
        """input_scale, lowered so the pair fits max_pixels and so the network's range covers the wanted one (a
        shift of d px at the input is d * scale at the network)."""
        p = self.params
        scale = p.input_scale
        if p.max_pixels and height * width * scale * scale > p.max_pixels:
            scale = math.sqrt(p.max_pixels / (height * width))
        wanted = self.wanted_range(calib)
        if wanted > 0 and wanted * scale > RANGE_MARGIN * self.network_range:
            scale = RANGE_MARGIN * self.network_range / wanted
        return max(scale, 0.05)

    def run(self, left: np.ndarray, right: np.ndarray, calib: Optional[StereoCalibration] = None) -> PipelineResult:
        t0 = time.perf_counter()
        p = self.params
        height, width = left.shape[:2]
        if calib is not None:
            calib.check_image(height, width)
        scale = self.network_scale(height, width, calib)
        init = self._state if p.warm_start else None
        retried = False
        budget = p.budget_ms or None
        try:
            pred = self.predictor.predict(left, right, iters=p.iters, budget_ms=budget, init=init, scale=scale)
        except Exception as exc:
            if not 0.0 < p.retry_input_scale < 1.0:
                raise
            try:      # e.g. CUDA out of memory: the same pair with fewer pixels (and no warm start)
                scale = scale * p.retry_input_scale
                pred = self.predictor.predict(left, right, iters=p.iters, budget_ms=budget, scale=scale)
            except Exception as again:
                raise RuntimeError(f"{type(exc).__name__}: {exc}; retried at input scale {scale:g}: "
                                   f"{type(again).__name__}: {again}") from again
            self.retries += 1
            retried = True
        # a retried pair's state has the smaller scale's shape: the next pair starts cold
        self._state = pred.state if p.warm_start and not retried else None
        valid = pred.valid & (pred.disparity >= p.min_disparity)
        if p.max_disparity > 0:
            valid &= pred.disparity <= p.max_disparity
        timings = dict(pred.timings_ms)
        timings["pipeline"] = (time.perf_counter() - t0) * 1e3
        return PipelineResult(pred.disparity, valid, pred.confidence, calib, pred.iters, pred.residual,
                              pred.fallback, scale, p.min_depth, p.max_depth, timings)
