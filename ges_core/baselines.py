"""The classical baseline every table shows beside GES: OpenCV StereoSGBM, set up as
stereo_image_proc does (its default block size and P1/P2 rule), with an optional oracle range
and hole filling for a fair accuracy comparison."""
from __future__ import annotations

import cv2
import numpy as np


def sgbm_disparity(left: np.ndarray, right: np.ndarray, *, max_disp: int = 128, block_size: int = 5,
                   fill_holes: bool = True) -> np.ndarray:
    """RGB uint8 (H, W, 3) pair -> (H, W) float32 disparity (x_l - x_r), NaN where SGBM gives none
    (unless fill_holes: then each hole takes the nearest valid value to its left/right, the smaller
    of the two, i.e. the background, as the Middlebury/KITTI evaluations do for sparse methods)."""
    num = max(16, int(np.ceil(max_disp / 16.0)) * 16)
    channels = 1
    matcher = cv2.StereoSGBM_create(minDisparity=0, numDisparities=num, blockSize=block_size,
                                    P1=8 * channels * block_size ** 2, P2=32 * channels * block_size ** 2,
                                    disp12MaxDiff=1, uniquenessRatio=10, speckleWindowSize=100, speckleRange=2,
                                    mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
    gl = cv2.cvtColor(left, cv2.COLOR_RGB2GRAY)
    gr = cv2.cvtColor(right, cv2.COLOR_RGB2GRAY)
    raw = matcher.compute(gl, gr).astype(np.float32) / 16.0
    disp = np.where(raw > 0, raw, np.nan).astype(np.float32)
    return fill_disparity_holes(disp) if fill_holes else disp


def fill_disparity_holes(disp: np.ndarray) -> np.ndarray:
    """Fill NaN runs per row with min(nearest valid on the left, nearest valid on the right)."""
    h, w = disp.shape
    valid = np.isfinite(disp)
    idx = np.where(valid, np.arange(w)[None, :], 0)
    left_idx = np.maximum.accumulate(idx, axis=1)
    idx_r = np.where(valid, np.arange(w)[None, :], w - 1)
    right_idx = np.minimum.accumulate(idx_r[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(h)[:, None]
    big = np.float32(1e9)
    lv = np.where(valid[rows, left_idx], disp[rows, left_idx], big)
    rv = np.where(valid[rows, right_idx], disp[rows, right_idx], big)
    filled = np.where(valid, disp, np.minimum(lv, rv))
    return np.where(filled >= big, 0, filled).astype(np.float32)


def sgbm_stereo_image_proc(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """OpenCV SGBM with stereo_image_proc's default parameters (disparity_range 64, correlation_window_size 15,
    P1 200, P2 400, uniqueness 15, speckle 100/4, prefilter cap 31, full_dp false: the 5-path mode): what a ROS user
    gets from `stereo_algorithm:=1` without tuning. The latency reference, not the accuracy one."""
    matcher = cv2.StereoSGBM_create(minDisparity=0, numDisparities=64, blockSize=15, P1=200, P2=400,
                                    disp12MaxDiff=0, preFilterCap=31, uniquenessRatio=15, speckleWindowSize=100,
                                    speckleRange=4, mode=cv2.STEREO_SGBM_MODE_SGBM)
    gl = cv2.cvtColor(left, cv2.COLOR_RGB2GRAY)
    gr = cv2.cvtColor(right, cv2.COLOR_RGB2GRAY)
    return matcher.compute(gl, gr).astype(np.float32) / 16.0
