"""The one processing path shared by the live node and bag replay:

    (left image, right image, left info, right info) messages
        -> arrays + calibration (image_codec, messages)
        -> ges_core.pipeline (the same pipeline `ges predict` runs): disparity, validity, confidence
        -> output messages (messages)

It knows nothing of rclpy (messages are duck-typed, outputs built through `MessageTypes`) and
nothing of the network's internals.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ges_core.config import strict_from_dict
from ges_core.geometry import CalibrationError, StereoCalibration, colorize
from ges_core.pipeline import PipelineParams, StereoPipeline
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
class OutputParams:
    """How results become messages (the pipeline's own params are ges_core.pipeline.PipelineParams)."""
    delta_d: float = 1.0 / 16.0
    use_color: bool = True
    avoid_point_cloud_padding: bool = False

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "OutputParams":
        return strict_from_dict(cls, values, "output parameters")


@dataclass
class ProcessingParams:
    """Everything the processing path reads, split by who reads it."""
    pipeline: PipelineParams = field(default_factory=PipelineParams)
    output: OutputParams = field(default_factory=OutputParams)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "ProcessingParams":
        """From node parameter values (name -> value): each goes where the parameter table says it is used; a name
        the table does not know is an error listing the valid ones."""
        from .params import split_by_scope
        parts = split_by_scope(values)
        return cls(PipelineParams.from_dict(parts["pipeline"]), OutputParams.from_dict(parts["output"]))


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
    scale: float = 1.0                 # the input scale the network ran at
    scale_changed: bool = False        # input_scale auto changed it on this pair ...
    scale_reason: str = ""             # ... because of this
    out_of_range: int = 0              # pixels invalid because their match may lie beyond the network's range


def stamp_of(msg) -> Tuple[int, int]:
    s = msg.header.stamp
    return int(s.sec), int(s.nanosec)


def stamp_seconds(stamp: Tuple[int, int]) -> float:
    return stamp[0] + stamp[1] * 1e-9


class StereoProcessor:
    """Messages -> arrays (image_codec, messages) -> the pipeline (ges_core.pipeline) -> messages."""

    def __init__(self, predictor, params: ProcessingParams, types: MessageTypes, *,
                 names: Tuple[str, str, str, str] = ("left/image_rect", "right/image_rect",
                                                     "left/camera_info", "right/camera_info"),
                 calibration: Optional[StereoCalibration] = None) -> None:
        self.pipeline = StereoPipeline(predictor, params.pipeline)
        self._params = params
        self.types = types
        self.names = names
        self.fixed_calibration = calibration      # given instead of camera_info (a file, or f/baseline)
        self._calib_key: Optional[tuple] = None
        self._calib: Optional[StereoCalibration] = None
        self._last_stamp: Optional[float] = None
        self.clock_resets = 0

    @property
    def predictor(self):
        return self.pipeline.predictor

    @property
    def params(self) -> ProcessingParams:
        return self._params

    @params.setter
    def params(self, value: ProcessingParams) -> None:
        self._params = value
        self.pipeline.params = value.pipeline

    @property
    def retries(self) -> int:
        return self.pipeline.retries

    def reset(self) -> None:
        self.pipeline.reset()
        self._last_stamp = None

    def calibration(self, left_info, right_info) -> StereoCalibration:
        if self.fixed_calibration is not None:
            return self.fixed_calibration
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
            source = "the calibration given" if self.fixed_calibration is not None else self.names[2]
            raise InputError("info_mismatch", f"{source} vs {self.names[0]}: {exc}") from None
        return left, right, calib

    def process(self, left_msg, right_msg, left_info=None, right_info=None, *, want_points: bool = True,
                want_color: bool = False) -> StereoResult:
        """left_info/right_info: the pair's CameraInfo (None when a fixed calibration was given)."""
        t0 = time.perf_counter()
        out = self.params.output
        stamp = stamp_of(left_msg)
        self.check_stamp(stamp)
        left, right, calib = self.decode(left_msg, right_msg, left_info, right_info)
        t_dec = time.perf_counter()
        r = self.pipeline.run(left, right, calib)
        t_net = time.perf_counter()
        self._last_stamp = stamp_seconds(stamp)

        network_range = self.pipeline.network_range / r.scale
        max_d = self.params.pipeline.max_disparity or network_range
        min_d = self.params.pipeline.min_disparity
        d_ros = r.ros_disparity()
        t = self.types
        hdr = header(t, stamp[0], stamp[1], left_msg.header.frame_id)
        disp = disparity_msg(t, hdr, d_ros, r.valid, calib, min_disparity=min_d - calib.doffs,
                             max_disparity=max_d - calib.doffs, delta_d=out.delta_d)
        conf = image_msg(t, hdr, r.confidence, "32FC1")
        points = None
        if want_points:
            points = pointcloud_msg(t, hdr, d_ros, r.valid, calib, left if out.use_color else None,
                                    avoid_padding=out.avoid_point_cloud_padding, min_depth=r.min_depth,
                                    max_depth=r.max_depth)
        color = image_msg(t, hdr, colorize(d_ros, r.valid), "bgr8") if want_color else None
        t_end = time.perf_counter()
        timings = dict(r.timings_ms)
        # the openvino backend's one-off compile of a new size is reported as its own, not as inference time
        timings.update(decode=(t_dec - t0) * 1e3, network=(t_net - t_dec) * 1e3 - timings.get("compile", 0.0),
                       messages=(t_end - t_net) * 1e3, pipeline=(t_end - t0) * 1e3)
        return StereoResult(stamp, disp, conf, points, color, r.iters, r.residual, r.fallback, timings, r.scale,
                            r.scale_changed, r.scale_reason, r.out_of_range)
