"""Stereo geometry of a rectified pair, in stereo_image_proc's conventions; pure numpy (ROS messages are read
into it by ges_ros.messages.calibration_from_camera_info).

    network disparity   d_net = x_l - x_r                       (pixel shift, >= 0)
    published disparity d = d_net - (cx_l - cx_r)               (stereo_image_proc)
    depth               Z = f * T / d,   T = -P_right[3] / P_right[0]  (baseline, metres; depth_at, the one formula)
    point               X = (u - cx_l) Z / fx,  Y = (v - cy) Z / fy
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from numba import njit


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
    return np.subtract(d_net, np.float32(calib.doffs), dtype=np.float32)     # one pass (astype copied again)


@njit(inline="always", cache=True)
def depth_at(d, ok, focal_baseline, min_depth, far):  # pragma: no cover (compiled; its callers are tested)
    """The one depth formula, Z = f T / d, for one pixel: NaN where there is no point (not ok, d <= 0, nearer than
    min_depth or farther than far). The depth image (depth_map) and the cloud (ges_ros.messages) both compile it,
    so a pixel's depth is the cloud's z to the bit."""
    z = focal_baseline / d
    return z if ok and d > 0 and z >= min_depth and z <= far else np.float32(np.nan)


@njit(nogil=True, cache=True, error_model="numpy")
def _depth_rows(d, valid, focal_baseline, min_depth, far, out):  # pragma: no cover (compiled; callers tested)
    height, width = d.shape
    for r in range(height):
        for c in range(width):
            out[r, c] = depth_at(d[r, c], valid[r, c], focal_baseline, min_depth, far)


def depth_map(d_ros: np.ndarray, valid: np.ndarray, calib: StereoCalibration, *, min_depth: float = 0.0,
              max_depth: float = 0.0, out: Optional[np.ndarray] = None) -> np.ndarray:
    """(H, W) float32 depth Z = f T / d in metres, NaN where there is no point (invalid, d <= 0, or outside the
    depth limits; max_depth <= 0: no upper limit), REP 117's rule. `out`: an (H, W) float32 array to write it into."""
    z = np.empty(d_ros.shape, np.float32) if out is None else out
    _depth_rows(np.ascontiguousarray(d_ros, dtype=np.float32), np.ascontiguousarray(valid, dtype=np.bool_),
                np.float32(calib.fx * calib.baseline), np.float32(min_depth),
                np.float32(max_depth) if max_depth > 0 else np.float32(np.inf), z)
    return z


def depth_mm(depth: np.ndarray) -> np.ndarray:
    """Metric depth (NaN invalid) -> 16-bit millimetres, the 16UC1 convention (depthai, OpenNI, rtabmap): 0 where
    invalid or beyond 65.535 m, which 16 bits cannot hold."""
    with np.errstate(invalid="ignore"):
        mm = np.rint(depth * np.float32(1000.0))
        ok = np.isfinite(mm) & (mm > 0) & (mm <= 65535)
    return np.where(ok, mm, 0).astype(np.uint16)


def point_cloud_planes(d_ros: np.ndarray, valid: np.ndarray, calib: StereoCalibration, *, min_depth: float = 0.0,
                       max_depth: float = 0.0, out: Optional[np.ndarray] = None, row0: int = 0) -> np.ndarray:
    """-> (3, H, W) float32 planes x, y, z of the points in the left optical frame (NaN where there is none; the
    depth limits as depth_map's). row0: the image row of d_ros's first row, when it is a band of a larger image;
    out: a (3, H, W) float32 array to write into."""
    height, width = d_ros.shape
    planes = np.empty((3, height, width), np.float32) if out is None else out
    z = depth_map(d_ros, valid, calib, min_depth=min_depth, max_depth=max_depth, out=planes[2])
    u = (np.arange(width, dtype=np.float32) - np.float32(calib.cx_left)) / np.float32(calib.fx)
    v = (np.arange(row0, row0 + height, dtype=np.float32) - np.float32(calib.cy)) / np.float32(calib.fy)
    np.multiply(z, u[None, :], out=planes[0])
    np.multiply(z, v[:, None], out=planes[1])
    return planes


def point_cloud_xyz(d_ros: np.ndarray, valid: np.ndarray, calib: StereoCalibration, *,
                    min_depth: float = 0.0, max_depth: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
    """-> (H, W, 3) float32 points in the left optical frame (NaN where invalid) and the final mask.
    max_depth <= 0 means no upper clip."""
    planes = point_cloud_planes(d_ros, valid, calib, min_depth=min_depth, max_depth=max_depth)
    return np.ascontiguousarray(np.moveaxis(planes, 0, -1)), np.isfinite(planes[2])


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


# ----------------------------------------------------------------------------- calibration without camera_info
def calibration_from_values(*, f: float, baseline: float, width: int = 0, height: int = 0, cx: Optional[float] = None,
                            cy: Optional[float] = None, cx_right: Optional[float] = None) -> StereoCalibration:
    """A rectified pair from numbers: focal length (px), baseline (m), principal points (default: the image
    centre; the right one: the left one). width/height 0 = accept any image size."""
    if not f > 0:
        raise CalibrationError(f"focal length must be > 0 px, got {f}")
    if not baseline > 0:
        raise CalibrationError(f"baseline must be > 0 m, got {baseline}")
    cx = width / 2 if cx is None else cx
    cy = height / 2 if cy is None else cy
    return StereoCalibration(fx=float(f), fy=float(f), cx_left=float(cx), cx_right=float(cx if cx_right is None
                                                                                          else cx_right),
                             cy=float(cy), baseline=float(baseline), width=int(width), height=int(height))


def _numbers(text: str) -> list:
    return [float(v) for v in text.replace("[", " ").replace("]", " ").replace(";", " ").replace(",", " ").split()]


def _middlebury(text: str, path: str) -> StereoCalibration:
    """Middlebury / ETH3D calib.txt: cam0=[f 0 cx; 0 f cy; 0 0 1], cam1=..., doffs (cx_right - cx_left, px),
    baseline (mm), width, height."""
    values = {k.strip(): v.strip() for k, v in (line.split("=", 1) for line in text.splitlines() if "=" in line)}
    try:
        cam0 = _numbers(values["cam0"])
        cam1 = _numbers(values.get("cam1", values["cam0"]))
        doffs = float(values["doffs"]) if "doffs" in values else cam1[2] - cam0[2]
        return calibration_from_values(f=cam0[0], baseline=float(values["baseline"]) / 1000.0,
                                       width=int(float(values.get("width", 0))), height=int(float(values.get("height", 0))),
                                       cx=cam0[2], cy=cam0[5], cx_right=cam0[2] + doffs)
    except (KeyError, IndexError, ValueError) as exc:
        raise CalibrationError(f"{path}: malformed Middlebury calib.txt, need cam0=[f 0 cx; 0 f cy; 0 0 1] and "
                               f"baseline= in mm ({exc!r})") from None


def _kitti(text: str, path: str) -> StereoCalibration:
    """KITTI calib: P0..P3 (stereo benchmark, odometry) or P_rect_00..03 (raw calib_cam_to_cam). The colour pair
    (cameras 2 and 3) when present, else the grey pair (0 and 1); baseline from the two P's fourth entries."""
    rows = {}
    for line in text.splitlines():
        if ":" in line:
            key, rest = line.split(":", 1)
            try:
                rows[key.strip().replace("P_rect_0", "P")] = _numbers(rest)
            except ValueError:
                continue
    pair = next(((a, b) for a, b in (("P2", "P3"), ("P0", "P1")) if a in rows and b in rows), None)
    if pair is None or any(len(rows[k]) != 12 for k in pair):
        raise CalibrationError(f"{path}: a KITTI calib file needs P2/P3 (or P0/P1) with 12 numbers each")
    pl, pr = rows[pair[0]], rows[pair[1]]
    # P = K [I | t]: P[3] = fx * tx; the right camera sits +baseline along x from the left one
    baseline = (pl[3] - pr[3]) / pr[0]
    return calibration_from_values(f=pl[0], baseline=baseline, cx=pl[2], cy=pl[6], cx_right=pr[2])


def _ros_yaml(path: str) -> Tuple[list, Tuple[int, int]]:
    """A camera_calibration YAML (what camera_info_manager reads): projection_matrix and image size."""
    import yaml
    try:
        raw = yaml.safe_load(open(path).read())
        p = [float(v) for v in raw["projection_matrix"]["data"]]
        return p, (int(raw.get("image_width", 0)), int(raw.get("image_height", 0)))
    except FileNotFoundError:
        raise FileNotFoundError(f"calibration file not found: {path}") from None
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise CalibrationError(f"{path}: not a ROS camera_info YAML with projection_matrix: data: [12 numbers] "
                               f"({type(exc).__name__}: {exc})") from None


def load_calibration(path: str, right: Optional[str] = None) -> StereoCalibration:
    """A rectified pair's geometry from files instead of camera_info: one Middlebury/ETH3D calib.txt or KITTI calib
    file, or two ROS camera_info YAMLs (left `path`, `right`)."""
    if right is not None:
        (pl, size_l), (pr, size_r) = _ros_yaml(path), _ros_yaml(right)
        return StereoCalibration.from_projections(pl, pr, size_left=size_l, size_right=size_r)
    try:
        text = open(path).read()
    except FileNotFoundError:
        raise FileNotFoundError(f"calibration file not found: {path}") from None
    except UnicodeDecodeError:
        raise CalibrationError(f"{path}: not a text calibration file") from None
    if "cam0" in text and "=" in text:
        return _middlebury(text, path)
    if any(k in text for k in ("P0:", "P2:", "P_rect_02:", "P_rect_00:")):
        return _kitti(text, path)
    if "projection_matrix" in text:
        raise CalibrationError(f"{path}: a ROS camera_info YAML describes one camera; give the right camera's too")
    raise CalibrationError(f"{path}: neither a Middlebury/ETH3D calib.txt (cam0=, baseline=) nor a KITTI calib file "
                           "(P2:/P3:)")
