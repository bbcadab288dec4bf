"""Stereo geometry of a rectified pair, in stereo_image_proc's conventions; pure numpy (ROS messages are read
into it by ges_ros.messages.calibration_from_camera_info).

    network disparity   d_net = x_l - x_r                       (pixel shift, >= 0)
    published disparity d = d_net - (cx_l - cx_r)               (stereo_image_proc)
    depth               Z = f * T / d,   T = -P_right[3] / P_right[0]  (baseline, metres)
    point               X = (u - cx_l) Z / fx,  Y = (v - cy) Z / fy
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np


class CalibrationError(ValueError):
    """CameraInfo that cannot describe a rectified stereo pair; the text says why."""


@dataclass(frozen=True)
class StereoCalibration:
    fx: float
    fy: float
    cx_left: float
    cx_right: float
    cy: float
    baseline: float          # T, metres
    width: int
    height: int

    @property
    def doffs(self) -> float:
        """cx_l - cx_r: what the published disparity subtracts from the pixel shift."""
        return self.cx_left - self.cx_right

    @classmethod
    def from_projections(cls, p_left, p_right, *, size_left: Tuple[int, int], size_right: Tuple[int, int]
                         ) -> "StereoCalibration":
        """From the two rectified 3x4 projection matrices (12 numbers each, row-major, as CameraInfo's P) and the
        (width, height) each belongs to; T = -P_right[3] / P_right[0]."""
        pl = [float(v) for v in p_left]
        pr = [float(v) for v in p_right]
        if len(pl) != 12 or len(pr) != 12:
            raise CalibrationError(f"camera_info P must have 12 entries (left {len(pl)}, right {len(pr)})")
        if not all(np.isfinite(pl + pr)):
            raise CalibrationError("camera_info P contains NaN/inf")
        fx, fy = pr[0], pl[5]
        if fx <= 0 or fy <= 0 or pl[0] <= 0:
            raise CalibrationError(f"zero or negative focal length in camera_info P (left fx {pl[0]}, right fx {fx}, fy {fy}); "
                                   "is the camera calibrated?")
        baseline = -pr[3] / pr[0]
        if not baseline > 0:
            raise CalibrationError(f"right camera_info P[3] = {pr[3]} gives baseline {baseline:.4g} m; "
                                   "expected P[3] = -fx * baseline < 0 (zero baseline or swapped cameras?)")
        if abs(pl[0] - pr[0]) > 1e-3 * pl[0]:
            raise CalibrationError(f"left fx {pl[0]} and right fx {pr[0]} differ: the pair is not rectified together")
        (lw, lh), (rw, rh) = (tuple(int(v) for v in s) for s in (size_left, size_right))
        if (lw, lh) != (rw, rh):
            raise CalibrationError(f"left camera_info is {lw}x{lh} but right is {rw}x{rh}")
        return cls(fx=fx, fy=fy, cx_left=pl[2], cx_right=pr[2], cy=pl[6], baseline=baseline, width=lw, height=lh)

    def check_image(self, height: int, width: int) -> None:
        # width/height 0 in CameraInfo means "not set": accept any image then
        if self.width and self.height and (self.width, self.height) != (width, height):
            raise CalibrationError(f"camera_info is {self.width}x{self.height} but the image is {width}x{height}")


def to_ros_disparity(d_net: np.ndarray, calib: StereoCalibration) -> np.ndarray:
    return (d_net - calib.doffs).astype(np.float32)


def depth_from_disparity(d_ros: np.ndarray, calib: StereoCalibration) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (calib.fx * calib.baseline / d_ros).astype(np.float32)


def point_cloud_xyz(d_ros: np.ndarray, valid: np.ndarray, calib: StereoCalibration, *,
                    min_depth: float = 0.0, max_depth: float = 0.0,
                    out: Optional[np.ndarray] = None, row0: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """-> (H, W, 3) float32 points in the left optical frame (NaN where invalid) and the final mask.
    max_depth <= 0 means no upper clip. `out` (H, W, >=3) float32 receives x, y, z in its first channels.
    row0: the image row of d_ros's first row, when it is a band of a larger image."""
    height, width = d_ros.shape
    ok = valid & (d_ros > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.divide(np.float32(calib.fx * calib.baseline), d_ros, dtype=np.float32)
    ok &= z >= min_depth
    if max_depth > 0:
        ok &= z <= max_depth
    z[~ok] = np.nan
    xyz = np.empty((height, width, 3), np.float32) if out is None else out
    u = (np.arange(width, dtype=np.float32) - np.float32(calib.cx_left)) / np.float32(calib.fx)
    v = (np.arange(row0, row0 + height, dtype=np.float32) - np.float32(calib.cy)) / np.float32(calib.fy)
    np.multiply(z, u[None, :], out=xyz[..., 0])
    np.multiply(z, v[:, None], out=xyz[..., 1])
    xyz[..., 2] = z
    return (xyz if out is None else out[..., :3]), ok


def valid_window(valid: np.ndarray) -> Tuple[int, int, int, int]:
    """Bounding box (x, y, width, height) of the valid pixels; zeros when none (never underflows)."""
    rows = np.flatnonzero(valid.any(axis=1))
    cols = np.flatnonzero(valid.any(axis=0))
    if rows.size == 0:
        return 0, 0, 0, 0
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def colorize(disparity: np.ndarray, valid: np.ndarray, *, vmin: Optional[float] = None,
             vmax: Optional[float] = None) -> np.ndarray:
    """Disparity -> (H, W, 3) bgr8 colour map (near = warm), black where invalid."""
    import cv2
    v = disparity[valid]
    lo = float(v.min()) if vmin is None and v.size else (vmin or 0.0)
    hi = float(v.max()) if vmax is None and v.size else (vmax or 1.0)
    norm = np.clip((disparity - lo) / max(hi - lo, 1e-6), 0, 1)
    color = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    color[~valid] = 0
    return color
