"""The one processing path shared by the live node and bag replay:

    (left image, right image, left info, right info) messages
        -> arrays + calibration -> predictor -> disparity, confidence, points -> output messages

It knows nothing of rclpy (messages are duck-typed, outputs built through `MessageTypes`) and
nothing of the network's internals (only the predictor API).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ges_core.geometry import CalibrationError, StereoCalibration, colorize, to_ros_disparity
from .image_codec import ImageError, to_rgb8
from .messages import (MessageTypes, calibration_from_camera_info, disparity_msg, header, image_msg, info_field,
                       pointcloud_msg)

# a stamp this far behind the previous one is a clock reset (bag loop), not a stray old message
CLOCK_RESET_S = 1.0


class InputError(ValueError):
    """An input pair that cannot be processed; `reason` is a short key for counting drops."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class ProcessingParams:
    iters: int = 4
    budget_ms: float = 0.0                 # 0 = run `iters`
    input_scale: float = 1.0               # run the network on a resized pair
    retry_input_scale: float = 0.0         # inference failed: retry once at input_scale x this (0 = no retry)
    max_pixels: int = 0                    # larger inputs are downscaled to fit (0 = no limit)
    warm_start: bool = False
    min_disparity: float = 0.0             # search range, pixel shift x_l - x_r
    max_disparity: float = 0.0             # 0 = the network's range
    delta_d: float = 1.0 / 16.0
    use_color: bool = True
    avoid_point_cloud_padding: bool = False
    min_depth: float = 0.0
    max_depth: float = 0.0                 # 0 = no clip

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ProcessingParams":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class StereoResult:
    stamp: Tuple[int, int]
    disparity: Any
    confidence: Any
    points: Optional[Any]
    color: Optional[Any]
    iters: int
    residual: float
    fallback: bool
    timings_ms: Dict[str, float] = field(default_factory=dict)


def stamp_of(msg) -> Tuple[int, int]:
    s = msg.header.stamp
    return int(s.sec), int(s.nanosec)


def stamp_seconds(stamp: Tuple[int, int]) -> float:
    return stamp[0] + stamp[1] * 1e-9


class StereoProcessor:
    def __init__(self, predictor, params: ProcessingParams, types: MessageTypes, *,
                 names: Tuple[str, str, str, str] = ("left/image_rect", "right/image_rect",
                                                     "left/camera_info", "right/camera_info")) -> None:
        self.predictor = predictor
        self.params = params
        self.types = types
        self.names = names
        self._calib_key: Optional[tuple] = None
        self._calib: Optional[StereoCalibration] = None
        self._state = None
        self._last_stamp: Optional[float] = None
        self.clock_resets = 0
        self.retries = 0                   # pairs whose inference failed and succeeded at a lower scale

    @property
    def network_max_disparity(self) -> float:
        return float(self.predictor.config.max_disp)

    def reset(self) -> None:
        self._state = None
        self._last_stamp = None

    def calibration(self, left_info, right_info) -> StereoCalibration:
        try:
                key = (tuple(info_field(left_info, "p")), tuple(info_field(right_info, "p")), left_info.width,
                   left_info.height, right_info.width, right_info.height)
        except (AttributeError, TypeError) as exc:
            raise InputError("bad_camera_info", f"{self.names[2]}/{self.names[3]}: not a CameraInfo ({exc})") from None
        if key != self._calib_key:
            try:
                calib = calibration_from_camera_info(left_info, right_info)
            except CalibrationError as exc:
                raise InputError("bad_camera_info", f"{self.names[2]}/{self.names[3]}: {exc}") from None
            self._calib_key, self._calib = key, calib
        return self._calib

    def check_stamp(self, stamp: Tuple[int, int]) -> None:
        t = stamp_seconds(stamp)
        if self._last_stamp is not None and t <= self._last_stamp:
            if self._last_stamp - t > CLOCK_RESET_S:
                # the clock jumped back (a looping bag, sim time restarted): start over
                self.clock_resets += 1
                self.reset()
            else:
                raise InputError("stamp_order", f"stamp {t:.9f} is not newer than the previous pair's "
                                 f"{self._last_stamp:.9f} (duplicate or out-of-order message)")

    def decode(self, left_msg, right_msg, left_info, right_info):
        arrays = []
        for msg, name in ((left_msg, self.names[0]), (right_msg, self.names[1])):
            try:
                arrays.append(to_rgb8(msg))
            except ImageError as exc:
                raise InputError("bad_image", f"{name}: {exc}") from None
        left, right = arrays
        if left.shape != right.shape:
            raise InputError("size_mismatch", f"{self.names[0]} is {left.shape[1]}x{left.shape[0]} but "
                             f"{self.names[1]} is {right.shape[1]}x{right.shape[0]}")
        calib = self.calibration(left_info, right_info)
        try:
            calib.check_image(*left.shape[:2])
        except CalibrationError as exc:
            raise InputError("info_mismatch", f"{self.names[2]} vs {self.names[0]}: {exc}") from None
        return left, right, calib

    def process(self, left_msg, right_msg, left_info, right_info, *, want_points: bool = True,
                want_color: bool = False) -> StereoResult:
        t0 = time.perf_counter()
        p = self.params
        stamp = stamp_of(left_info)
        self.check_stamp(stamp)
        left, right, calib = self.decode(left_msg, right_msg, left_info, right_info)
        height, width = left.shape[:2]
        scale = p.input_scale
        if p.max_pixels and height * width * scale * scale > p.max_pixels:
            scale = math.sqrt(p.max_pixels / (height * width))
        t_dec = time.perf_counter()
        init = self._state if p.warm_start else None
        retried = False
        try:
            pred = self.predictor.predict(left, right, iters=p.iters, budget_ms=p.budget_ms or None, init=init,
                                          scale=scale)
        except Exception as exc:
            if not 0.0 < p.retry_input_scale < 1.0:
                raise
            try:      # e.g. CUDA out of memory: the same pair with fewer pixels (and no warm start)
                pred = self.predictor.predict(left, right, iters=p.iters, budget_ms=p.budget_ms or None,
                                              scale=scale * p.retry_input_scale)
            except Exception as again:
                raise RuntimeError(f"{type(exc).__name__}: {exc}; retried at input scale "
                                   f"{scale * p.retry_input_scale:g}: {type(again).__name__}: {again}") from again
            self.retries += 1
            retried = True
        t_net = time.perf_counter()
        # a retried pair's state has the smaller scale's shape: the next pair starts cold
        self._state = pred.state if p.warm_start and not retried else None
        self._last_stamp = stamp_seconds(stamp)

        max_d = p.max_disparity if p.max_disparity > 0 else self.network_max_disparity
        valid = pred.valid & (pred.disparity >= p.min_disparity) & (pred.disparity <= max_d)
        d_ros = to_ros_disparity(pred.disparity, calib)
        t = self.types
        hdr = header(t, stamp[0], stamp[1], left_info.header.frame_id)
        disp = disparity_msg(t, hdr, d_ros, valid, calib, min_disparity=p.min_disparity - calib.doffs,
                             max_disparity=max_d - calib.doffs, delta_d=p.delta_d)
        conf = image_msg(t, hdr, pred.confidence, "32FC1")
        points = None
        if want_points:
            points = pointcloud_msg(t, hdr, d_ros, valid, calib, left if p.use_color else None,
                                    avoid_padding=p.avoid_point_cloud_padding, min_depth=p.min_depth,
                                    max_depth=p.max_depth)
        color = image_msg(t, hdr, colorize(d_ros, valid), "bgr8") if want_color else None
        t_end = time.perf_counter()
        timings = dict(pred.timings_ms)
        timings.update(decode=(t_dec - t0) * 1e3, network=(t_net - t_dec) * 1e3,
                       messages=(t_end - t_net) * 1e3, pipeline=(t_end - t0) * 1e3)
        return StereoResult(stamp, disp, conf, points, color, pred.iters, pred.residual, pred.fallback, timings)
