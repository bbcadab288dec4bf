"""The Middlebury 2014 motorcycle pair that ships with scikit-image, with its real calibration,
as arrays and as the four stereo messages. Used by `make demo` and the tests (never for training)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from .messages import MessageTypes, camera_info_msg, header, image_msg


@dataclass(frozen=True)
class PinholeStereo:
    f: float          # px
    cx: float         # left principal point x
    cy: float
    doffs: float      # cx_right - cx_left (Middlebury's doffs), px
    baseline: float   # metres

    @property
    def cx_right(self) -> float:
        return self.cx + self.doffs


# Middlebury 2014 Motorcycle, quarter size as in scikit-image: calib.txt f 3979.911 / 4, doffs 124.343 / 4
MOTORCYCLE = PinholeStereo(f=994.978, cx=311.193, cy=254.877, doffs=31.086, baseline=0.193001)


def motorcycle() -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """-> left, right (500, 741, 3) uint8 RGB, ground-truth disparity (pixel shift, 0 where unknown), valid."""
    from ges_core.data.datasets import MotorcycleDataset
    s = MotorcycleDataset()[0]
    return s["left"], s["right"], s["disparity"], s["valid"]


def stereo_messages(types: MessageTypes, left: np.ndarray, right: np.ndarray, cam: PinholeStereo, *,
                    sec: int, nanosec: int = 0, frame_left: str = "stereo_left_optical",
                    frame_right: str = "stereo_right_optical", encoding: str = "rgb8"):
    """-> (left image, right image, left info, right info) with one stamp."""
    height, width = left.shape[:2]
    hl, hr = header(types, sec, nanosec, frame_left), header(types, sec, nanosec, frame_right)
    if encoding == "bgr8":
        left, right = left[..., ::-1], right[..., ::-1]
    elif encoding == "mono8":
        left, right = left.mean(axis=2).astype(np.uint8), right.mean(axis=2).astype(np.uint8)
    info_l = camera_info_msg(types, hl, width=width, height=height, fx=cam.f, fy=cam.f, cx=cam.cx, cy=cam.cy)
    info_r = camera_info_msg(types, hr, width=width, height=height, fx=cam.f, fy=cam.f, cx=cam.cx_right, cy=cam.cy,
                             tx=-cam.f * cam.baseline)
    return image_msg(types, hl, left, encoding), image_msg(types, hr, right, encoding), info_l, info_r
