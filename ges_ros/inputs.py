"""The node's inputs: their table (names, kinds, the image transport) and rectification of raw images.

Pure numpy / OpenCV on duck-typed messages (rclpy's or rosbags'): the live node and `ges replay` share it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

from ges_core.geometry import CalibrationError
from .messages import info_field


@dataclass(frozen=True)
class Input:
    """One input, relative to the node's namespace (remappable, as stereo_image_proc's)."""
    name: str
    kind: str                   # "image" or "info"

    @property
    def is_image(self) -> bool:
        return self.kind == "image"


TRANSPORTS = ("raw", "compressed")
DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")


def inputs(*, rectify: bool = False) -> Tuple[Input, Input, Input, Input]:
    """(left image, right image, left camera_info, right camera_info): image_rect, or image_raw to be rectified
    here (rectify) from its camera_info's D, K, R and P."""
    image = "image_raw" if rectify else "image_rect"
    return (Input(f"left/{image}", "image"), Input(f"right/{image}", "image"), Input("left/camera_info", "info"),
            Input("right/camera_info", "info"))


def topic(inp: Input, transport: str) -> str:
    """The topic an input is read from: an image's `compressed` transport is its topic + /compressed
    (sensor_msgs/CompressedImage, image_transport's naming)."""
    if transport not in TRANSPORTS:
        raise ValueError(f"image_transport must be one of {list(TRANSPORTS)}, got {transport!r}")
    return f"{inp.name}/compressed" if inp.is_image and transport == "compressed" else inp.name


class Rectifier:
    """Raw (distorted, unrectified) images -> the rectified pair their camera_info's P describes, as image_proc's
    rectify does: undistortion and rectification maps built from D, K, R and P once per calibration and rebuilt
    when it changes (`builds` counts them). The pipeline then runs on the rectified pair with the calibration of P.
    """

    def __init__(self) -> None:
        self._key: Optional[tuple] = None
        self._maps: Optional[list] = None
        self.builds = 0

    def __call__(self, left: np.ndarray, right: np.ndarray, left_info, right_info) -> Tuple[np.ndarray, np.ndarray]:
        key = tuple(_calibration_key(info) for info in (left_info, right_info))
        if key != self._key:
            self._maps = [rectification_maps(info, side) for info, side in ((left_info, "left"),
                                                                             (right_info, "right"))]
            self._key = key
            self.builds += 1
        out = []
        for image, (map1, map2), side in zip((left, right), self._maps, ("left", "right")):
            if image.shape[:2] != map1.shape[:2]:
                raise CalibrationError(f"{side} camera_info is {map1.shape[1]}x{map1.shape[0]} but the raw image "
                                       f"is {image.shape[1]}x{image.shape[0]}")
            out.append(cv2.remap(image, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT))
        return out[0], out[1]


def _calibration_key(info) -> tuple:
    return (str(info.distortion_model), tuple(info_field(info, "d")), tuple(info_field(info, "k")),
            tuple(info_field(info, "r")), tuple(info_field(info, "p")), int(info.width), int(info.height))


def rectification_maps(info, side: str = "") -> Tuple[np.ndarray, np.ndarray]:
    """A CameraInfo's (map1, map2) for cv2.remap: raw image -> rectified image of P, at the camera_info's size."""
    where = f"{side} camera_info" if side else "camera_info"
    model = str(info.distortion_model)
    d = np.asarray(info_field(info, "d"), np.float64)
    k = np.asarray(info_field(info, "k"), np.float64).reshape(3, 3)
    r = np.asarray(info_field(info, "r"), np.float64).reshape(3, 3)
    p = np.asarray(info_field(info, "p"), np.float64).reshape(3, 4)
    size = (int(info.width), int(info.height))
    if size[0] <= 0 or size[1] <= 0:
        raise CalibrationError(f"{where} has no image size ({size[0]}x{size[1]}); rectify needs it")
    if not (np.isfinite(d).all() and np.isfinite(k).all() and np.isfinite(r).all() and np.isfinite(p).all()):
        raise CalibrationError(f"{where} contains NaN/inf in D, K, R or P")
    if k[0, 0] <= 0 or k[1, 1] <= 0 or p[0, 0] <= 0:
        raise CalibrationError(f"{where} K or P has no focal length (fx {k[0, 0]}, P fx {p[0, 0]}): is the camera "
                               "calibrated?")
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-4):
        raise CalibrationError(f"{where} R is not a rotation")
    if model in ("plumb_bob", "rational_polynomial"):
        wanted = (4, 5, 8, 12, 14) if model == "plumb_bob" else (8, 12, 14)
        if d.size and d.size not in wanted:
            raise CalibrationError(f"{where} {model} D has {d.size} coefficients; expected one of {wanted}")
        return cv2.initUndistortRectifyMap(k, d if d.size else np.zeros(5), r, p, size, cv2.CV_16SC2)
    if model == "equidistant":
        if d.size != 4:
            raise CalibrationError(f"{where} equidistant D has {d.size} coefficients; expected 4 (k1..k4)")
        return cv2.fisheye.initUndistortRectifyMap(k, d, r, p, size, cv2.CV_16SC2)
    raise CalibrationError(f"{where} distortion_model {model!r} is not supported for rectify; supported: "
                           f"{', '.join(DISTORTION_MODELS)}")
