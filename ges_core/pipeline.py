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
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from .autoscale import (DEFAULT_PREFERRED_PIXELS, NEAR_SHARE, PROBE_ITERS, RANGE_TARGET, AutoScale, Probe,
                        high_disparity, resolution_scale, snap_down)
from .config import GESConfig, strict_from_dict
from .geometry import StereoCalibration, depth_map, point_cloud_xyz, to_ros_disparity
from .rectification import RowAlignment, row_alignment

# the network is run at a scale whose search range covers the wanted disparities with this much to spare
RANGE_MARGIN = 0.95
MIN_PROBE_PX = 64          # auto: a pair whose probe would be smaller than this (either side) is not probed


@dataclass
class PipelineParams:
    iters: int = GESConfig.iters           # the weights' inference default
    budget_ms: float = 0.0                 # 0 = run `iters`
    input_scale: Union[str, float] = "auto"   # run the network on a resized pair: a factor, or "auto"
                                           # (ges_core.autoscale: the weights' preferred resolution and the range)
    preferred_pixels: int = 0              # auto: the network pixel count aimed at (0 = the weights' record)
    probe_every: int = 15                  # auto: pairs between range probes while the scene is far from the range
    min_confidence: float = 0.0            # pixels less confident than this are invalid (calibrated confidence)
    retry_input_scale: float = 0.0         # inference failed: retry once at input_scale x this (0 = no retry)
    max_pixels: int = 0                    # larger inputs are downscaled to fit (0 = no limit)
    warm_start: bool = False
    min_disparity: float = 0.0             # pixel shift x_l - x_r accepted as valid, from
    max_disparity: float = 0.0             # to (0 = the network's range); the network is run small enough to reach it
    min_depth: float = 0.0                 # m; > 0 (with a calibration): the network is run small enough to reach
                                           # the disparity of this depth, and nearer points are NaN
    max_depth: float = 0.0                 # m; farther points are NaN (0 = no clip)
    row_check_every: int = 30              # rectification health: one pair in this many is checked (0 = never)

    def __post_init__(self) -> None:
        self.input_scale = parse_input_scale(self.input_scale)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "PipelineParams":
        return strict_from_dict(cls, values, "pipeline parameters")


def parse_input_scale(value: Union[str, float]) -> Union[str, float]:
    """"auto" or a factor in [0.05, 4] (a number or its text); anything else is a ValueError saying so."""
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return "auto"
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"input_scale must be 'auto' or a factor in [0.05, 4], got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.05 <= float(value) <= 4.0:
        raise ValueError(f"input_scale must be 'auto' or a factor in [0.05, 4], got {value!r}")
    return float(value)


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
    scale_changed: bool = False            # auto: this pair's scale differs from the previous pair's
    scale_reason: str = ""                 # auto: what set the scale
    out_of_range: int = 0                  # pixels invalid because their match may lie beyond the range
    row_alignment: Optional[RowAlignment] = None   # the rows' misalignment, on the pairs checked

    def ros_disparity(self) -> np.ndarray:
        """stereo_image_proc's disparity, d = (x_l - x_r) - (cx_l - cx_r)."""
        return to_ros_disparity(self.disparity, self._calib())

    def points(self) -> Tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) float32 points in the left optical frame (NaN where invalid or outside the depth limits) and
        their mask."""
        return point_cloud_xyz(self.ros_disparity(), self.valid, self._calib(), min_depth=self.min_depth,
                               max_depth=self.max_depth)

    def depth(self) -> np.ndarray:
        """(H, W) float32 depth in metres along the left camera's optical axis, NaN where there is no point: the
        cloud's z, pixel for pixel (ges_core.geometry.depth_at)."""
        return depth_map(self.ros_disparity(), self.valid, self._calib(), min_depth=self.min_depth,
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
        self.auto = AutoScale()
        self._pairs = 0                    # pairs run, for the rectification check's cadence

    def reset(self) -> None:
        self._state = None
        self.auto.reset()

    @property
    def preferred_pixels(self) -> float:
        """auto's resolution target: the params', else the weights' recorded one, else the v4 study's."""
        op = getattr(self.predictor, "operating_point", None) or {}
        return float(self.params.preferred_pixels or op.get("preferred_pixels") or DEFAULT_PREFERRED_PIXELS)

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

    def base_scale(self, height: int, width: int) -> float:
        """input_scale (auto: the weights' preferred resolution), lowered so the pair fits max_pixels."""
        p = self.params
        if p.input_scale == "auto":
            scale = resolution_scale(height, width, self.preferred_pixels)
        else:
            scale = float(p.input_scale)
        if p.max_pixels and height * width * scale * scale > p.max_pixels:
            scale = math.sqrt(p.max_pixels / (height * width))
            scale = snap_down(scale) if p.input_scale == "auto" else scale
        return scale

    def network_scale(self, height: int, width: int, calib: Optional[StereoCalibration]) -> float:
        """The base scale, lowered so the network's range covers the wanted one (a shift of d px at the input is
        d * scale at the network). auto on a stream adds the probe (run)."""
        scale = self.base_scale(height, width)
        wanted = self.wanted_range(calib)
        if wanted > 0 and wanted * scale > RANGE_MARGIN * self.network_range:
            scale = RANGE_MARGIN * self.network_range / wanted
            scale = snap_down(scale) if self.params.input_scale == "auto" else scale
        return max(scale, 0.05)

    def network_sizes(self, height: int, width: int, calib: Optional[StereoCalibration]) -> List[float]:
        """The scales a first pair of this size runs the network at, as run chooses them before seeing it: auto's
        probe (when it probes) and its resolution scale, or the fixed scale."""
        if self.params.input_scale != "auto":
            return [self.network_scale(height, width, calib)]
        res = self.base_scale(height, width)
        wanted = self.wanted_range(calib)
        if wanted > 0:
            return [snap_down(min(res, RANGE_MARGIN * self.network_range / wanted))]
        if min(height, width) * res / 2 < MIN_PROBE_PX:
            return [snap_down(res)]
        # the probe's first size, and the pass at the resolution's scale (a scene within the range)
        return [snap_down(res / 2), snap_down(res)]

    def prepare(self, height: int, width: int, calib: Optional[StereoCalibration] = None) -> float:
        """Compile the network for the sizes a first pair of this size needs (network_sizes), before it comes;
        -> the seconds spent compiling (0 when the predictor compiles nothing, or had them)."""
        prepare = getattr(self.predictor, "prepare", None)
        if prepare is None:
            return 0.0
        return sum(prepare(height, width, scale) or 0.0 for scale in self.network_sizes(height, width, calib))

    def probe(self, left: np.ndarray, right: np.ndarray, res_scale: float) -> Probe:
        """The coarse pass of auto: the network at half the resolution scale (twice the range), a quarter again
        when even that saturates."""
        t0 = time.perf_counter()
        scale = snap_down(res_scale / 2)
        compile_ms = 0.0
        for _ in range(2):
            pred = self.predictor.predict(left, right, iters=PROBE_ITERS, scale=scale)
            compile_ms += pred.timings_ms.get("compile", 0.0)
            high = high_disparity(pred.disparity, pred.valid)
            if high * scale <= RANGE_TARGET * self.network_range or scale <= 0.0625:
                break
            scale = snap_down(scale / 2)
        # a backend's one-off compile of the probe's size is not the probe's cost
        return Probe(pred.disparity, pred.valid, scale, high, (time.perf_counter() - t0) * 1e3 - compile_ms,
                     compile_ms)

    def _auto_scale(self, left: np.ndarray, right: np.ndarray, calib: Optional[StereoCalibration]):
        """-> (scale, changed, reason, probe or None)."""
        height, width = left.shape[:2]
        size = (height, width)
        if getattr(self.predictor, "fixed_size", None):      # an export of one size: resized to it anyway
            return 1.0, False, "fixed-size export", None
        res = self.base_scale(height, width)
        wanted = self.wanted_range(calib)
        if wanted > 0:           # the calibration and min_depth (or max_disparity) give the range
            scale, changed = self.auto.decide(size, res, RANGE_MARGIN * self.network_range / wanted, near=False,
                                              reason=f"range {wanted:.0f} px given (min_depth / max_disparity)")
            return scale, changed, self.auto.reason, None
        if min(height, width) * res / 2 < MIN_PROBE_PX:    # too small to probe: the resolution's scale alone
            scale, changed = self.auto.decide(size, res, float("inf"), near=False, reason="input too small to probe")
            return scale, changed, self.auto.reason, None
        if not self.auto.needs_probe(size, self.params.probe_every):
            self.auto.skipped_probe()
            return self.auto.scale, False, self.auto.reason, None
        probe = self.probe(left, right, res)
        ranged = RANGE_TARGET * self.network_range / probe.high if probe.high > 0 else float("inf")
        # near the range, or run below the preferred resolution because of it: probed every pair (so the scale
        # also comes back up promptly once the scene moves away)
        near = probe.high * min(res, ranged) > NEAR_SHARE * self.network_range or ranged < res
        what = "resolution" if res <= ranged else "range"
        scale, changed = self.auto.decide(size, res, ranged, near=near, reason=(
            f"{what}: input {width}x{height}, preferred {self.preferred_pixels / 1e6:.2f} MP, probe's high "
            f"disparity {probe.high:.0f} px"))
        return scale, changed, self.auto.reason, probe

    def run(self, left: np.ndarray, right: np.ndarray, calib: Optional[StereoCalibration] = None) -> PipelineResult:
        t0 = time.perf_counter()
        p = self.params
        height, width = left.shape[:2]
        if calib is not None:
            calib.check_image(height, width)
        probe, changed, reason = None, False, ""
        scale = self.base_scale(height, width)
        init = self._state if p.warm_start else None
        retried = False
        budget = p.budget_ms or None
        try:
            if p.input_scale == "auto":
                scale, changed, reason, probe = self._auto_scale(left, right, calib)
            else:
                scale = self.network_scale(height, width, calib)
            if budget is not None and probe is not None:
                budget = max(1.0, budget - probe.ms)      # the probe spends part of the budget
            pred = self.predictor.predict(left, right, iters=p.iters, budget_ms=budget, init=init, scale=scale)
        except Exception as exc:
            if not 0.0 < p.retry_input_scale < 1.0:
                raise
            try:      # e.g. CUDA out of memory (in the probe or the pass): the pair with fewer pixels, no warm start
                probe = None
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
        out_of_range = 0
        if probe is not None:     # the probe puts these pixels' matches beyond the range: never valid
            beyond = probe.out_of_range(scale, self.network_range) & valid
            out_of_range = int(beyond.sum())
            valid &= ~beyond
        if p.min_confidence > 0:
            valid &= pred.confidence >= p.min_confidence
        alignment = None
        if p.row_check_every > 0 and self._pairs % p.row_check_every == 0:
            t_check = time.perf_counter()
            alignment = row_alignment(left, right, pred.disparity, valid)
            pred.timings_ms["row_check"] = (time.perf_counter() - t_check) * 1e3
        self._pairs += 1
        timings = dict(pred.timings_ms)
        if probe is not None:
            timings["probe"] = probe.ms
            if probe.compile_ms:
                timings["compile"] = timings.get("compile", 0.0) + probe.compile_ms
        timings["pipeline"] = (time.perf_counter() - t0) * 1e3
        return PipelineResult(pred.disparity, valid, pred.confidence, calib, pred.iters, pred.residual,
                              pred.fallback, scale, p.min_depth, p.max_depth, timings, changed, reason, out_of_range,
                              alignment)
