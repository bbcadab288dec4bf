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
from typing import Any, Collection, Dict, Optional, Tuple

import cv2

from ges_core.config import strict_from_dict
from ges_core.geometry import CalibrationError, StereoCalibration, colorize, depth_map, depth_mm
from ges_core.pipeline import PipelineParams, StereoPipeline
from .image_codec import ImageError, to_rgb8
from .inputs import Rectifier
from .messages import (MessageTypes, calibration_from_camera_info, camera_info_msg, disparity_msg, header,
                       image_msg, info_field, pointcloud_msg)


@dataclass(frozen=True)
class Output:
    """One output topic: its name relative to the node's namespace, its message type, and whether it is built only
    on demand (when subscribed; in a replay, when asked for)."""
    name: str
    type: str                   # the ROS type name, "sensor_msgs/msg/Image"
    on_demand: bool
    description: str

    @property
    def class_name(self) -> str:
        """The message class's name, as MessageTypes holds it ("Image")."""
        return self.type.rsplit("/", 1)[-1]


# every output, in the order a pair's messages are published: adding one is a row here and its builder in process
OUTPUTS: Dict[str, Output] = {o.name: o for o in (
    Output("disparity", "stereo_msgs/msg/DisparityImage", False, "32FC1 disparity, f and T (stereo_image_proc's)"),
    Output("confidence", "sensor_msgs/msg/Image", False, "32FC1 confidence in [0, 1]"),
    Output("points2", "sensor_msgs/msg/PointCloud2", True, "organized cloud in the left optical frame, NaN invalid"),
    Output("depth", "sensor_msgs/msg/Image", True, "depth along the left optical axis: 32FC1 metres NaN invalid, "
           "or 16UC1 millimetres 0 invalid (depth_encoding)"),
    Output("depth/camera_info", "sensor_msgs/msg/CameraInfo", True, "the left rectified calibration at the depth "
           "image's size, with its stamp and frame"),
    Output("disparity_color", "sensor_msgs/msg/Image", True, "bgr8 colour map of the disparity"),
)}
DEPTH_ENCODINGS = ("32FC1", "16UC1")



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
    depth_encoding: str = "32FC1"

    def __post_init__(self) -> None:
        if self.depth_encoding not in DEPTH_ENCODINGS:
            raise ValueError(f"depth_encoding must be one of {list(DEPTH_ENCODINGS)}, got {self.depth_encoding!r}")

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
    messages: Dict[str, Any]           # output name (OUTPUTS) -> message, for the outputs built
    iters: int
    residual: float
    fallback: bool
    timings_ms: Dict[str, float] = field(default_factory=dict)
    scale: float = 1.0                 # the input scale the network ran at
    scale_changed: bool = False        # input_scale auto changed it on this pair ...
    scale_reason: str = ""             # ... because of this
    out_of_range: int = 0              # pixels invalid because their match may lie beyond the network's range
    row_alignment: Optional[Any] = None   # ges_core.rectification.RowAlignment, on the pairs checked

    @property
    def disparity(self):
        return self.messages["disparity"]

    @property
    def points(self):
        return self.messages.get("points2")


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
                 calibration: Optional[StereoCalibration] = None, rectify: bool = False) -> None:
        """rectify: the images are raw; they are rectified with their camera_info's D, K, R and P first (which
        a calibration given instead of camera_info cannot describe)."""
        if rectify and calibration is not None:
            raise ValueError("rectify needs the cameras' camera_info (D, K, R, P); a calibration file given "
                             "instead describes only the rectified pair")
        self.pipeline = StereoPipeline(predictor, params.pipeline)
        self.rectifier = Rectifier() if rectify else None
        self._params = params
        self.types = types
        self.names = names
        self.fixed_calibration = calibration      # given instead of camera_info (a file, or f/baseline)
        self._calib_key: Optional[tuple] = None
        self._calib: Optional[StereoCalibration] = None
        self._last_stamp: Optional[float] = None
        self._clock_epoch = 0          # the synchronizer's clock resets seen (ges_ros.sync detects them, once)

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
        if self.rectifier is not None:
            try:
                left, right = self.rectifier(left, right, left_info, right_info)
            except (CalibrationError, cv2.error) as exc:
                raise InputError("bad_camera_info", f"{self.names[2]}/{self.names[3]}: cannot rectify: {exc}") \
                    from None
        return left, right, calib

    def process(self, left_msg, right_msg, left_info=None, right_info=None, *,
                outputs: Collection[str] = ("points2",), clock_epoch: int = 0) -> StereoResult:
        """left_info/right_info: the pair's CameraInfo (None when a fixed calibration was given); outputs: the
        on-demand outputs (OUTPUTS) to build besides disparity and confidence; clock_epoch: the synchronizer's
        clock resets when it formed the pair (StereoInputs.clock_resets): a new one starts over (a looping bag,
        a restarted sim clock), so the reset is detected once, by the synchronizer."""
        if clock_epoch != self._clock_epoch:
            self._clock_epoch = clock_epoch
            self.reset()
        unknown = sorted(set(outputs) - set(OUTPUTS))
        if unknown:
            raise ValueError(f"unknown outputs {unknown}; valid: {list(OUTPUTS)}")
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
        height, width = d_ros.shape

        def depth():
            z = depth_map(d_ros, r.valid, calib, min_depth=r.min_depth, max_depth=r.max_depth)
            return image_msg(t, hdr, z, "32FC1") if out.depth_encoding == "32FC1" else \
                image_msg(t, hdr, depth_mm(z), "16UC1")
        build = {
            "disparity": lambda: disparity_msg(t, hdr, d_ros, r.valid, calib, min_disparity=min_d - calib.doffs,
                                               max_disparity=max_d - calib.doffs, delta_d=out.delta_d),
            "confidence": lambda: image_msg(t, hdr, r.confidence, "32FC1"),
            "points2": lambda: pointcloud_msg(t, hdr, d_ros, r.valid, calib, left if out.use_color else None,
                                              avoid_padding=out.avoid_point_cloud_padding, min_depth=r.min_depth,
                                              max_depth=r.max_depth),
            "depth": depth,
            # the left rectified camera at the depth image's size: what exact-stamp consumers pair with it
            "depth/camera_info": lambda: camera_info_msg(t, hdr, width=width, height=height, fx=calib.fx,
                                                         fy=calib.fy, cx=calib.cx_left, cy=calib.cy),
            "disparity_color": lambda: image_msg(t, hdr, colorize(d_ros, r.valid), "bgr8"),
        }
        messages = {name: build[name]() for name, o in OUTPUTS.items() if not o.on_demand or name in outputs}
        t_end = time.perf_counter()
        timings = dict(r.timings_ms)
        # the openvino backend's one-off compile of a new size is reported as its own, not as inference time
        timings.update(decode=(t_dec - t0) * 1e3, network=(t_net - t_dec) * 1e3 - timings.get("compile", 0.0),
                       messages=(t_end - t_net) * 1e3, pipeline=(t_end - t0) * 1e3)
        return StereoResult(stamp, messages, r.iters, r.residual, r.fallback, timings, r.scale,
                            r.scale_changed, r.scale_reason, r.out_of_range, r.row_alignment)
