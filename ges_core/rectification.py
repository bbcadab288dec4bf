"""Rectification health: how far the right image's rows are from the left's, measured on a pair the network has
already matched. A decalibrated rig (a knock, heat, a loose mount) shifts the rows by a pixel or more; every 1-D
stereo matcher then searches the wrong row and returns wrong depth without a sign of it.

Sparse: corners of the left image, each followed into the right image by Lucas-Kanade from the network's own
disparity as the starting point (so one pyramid level does), and back again (a track that does not return to its
corner is dropped). The vertical component of what is left is the rows' misalignment.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

MAX_POINTS = 400
MIN_MATCHES = 30          # fewer (a blank wall, the dark): no estimate
ROUND_TRIP_PX = 0.5       # a track whose way back misses its corner by more is dropped
MISALIGNED_PX = 1.0       # a match this far off its row is one a 1-D search along the row cannot find


@dataclass(frozen=True)
class RowAlignment:
    offset_px: float          # median vertical offset, right minus left (px; + = the right image's content lower)
    abs_p90_px: float         # 90th percentile of the offsets' magnitude
    misaligned_share: float   # share of the matches more than MISALIGNED_PX off their row
    matches: int


def row_alignment(left: np.ndarray, right: np.ndarray, disparity: np.ndarray, valid: np.ndarray, *,
                  max_points: int = MAX_POINTS) -> Optional[RowAlignment]:
    """left, right: (H, W, 3) uint8 RGB (or (H, W) gray) of the pair as matched; disparity, valid: the network's
    pixel shift x_l - x_r and its validity at that size. None when too few corners match."""
    if left.shape[:2] != disparity.shape or right.shape[:2] != disparity.shape:
        raise ValueError(f"images {left.shape[:2]} / {right.shape[:2]} and disparity {disparity.shape} differ")
    gl, gr = (cv2.cvtColor(a, cv2.COLOR_RGB2GRAY) if a.ndim == 3 else a for a in (left, right))
    mask = (valid & np.isfinite(disparity)).astype(np.uint8)
    corners = cv2.goodFeaturesToTrack(gl, max_points, 0.01, 9, mask=mask, blockSize=7)
    if corners is None or len(corners) < MIN_MATCHES:
        return None
    xy = corners[:, 0]
    d = disparity[xy[:, 1].astype(int), xy[:, 0].astype(int)]
    start = np.stack([xy[:, 0] - d, xy[:, 1]], axis=1).astype(np.float32)[:, None]
    lk = dict(winSize=(15, 15), maxLevel=1, flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
              criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01))
    there, ok_there, _ = cv2.calcOpticalFlowPyrLK(gl, gr, corners, start.copy(), **lk)
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(gr, gl, there, corners.copy(), **lk)
    good = (ok_there[:, 0] == 1) & (ok_back[:, 0] == 1) & (np.linalg.norm(back - corners, axis=2)[:, 0] < ROUND_TRIP_PX)
    if good.sum() < MIN_MATCHES:
        return None
    dy = (there - corners)[good, 0, 1]
    return RowAlignment(float(np.median(dy)), float(np.percentile(np.abs(dy), 90)),
                        float(np.mean(np.abs(dy) > MISALIGNED_PX)), int(good.sum()))
