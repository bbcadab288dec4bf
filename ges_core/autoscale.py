"""`input_scale: auto` — the scale the network runs at, chosen from the weights' preferred resolution and the
disparity range that must fit (issue #27).

Two limits, the smaller wins:
- resolution: the weights are most accurate near the pixel count they were trained and validated at
  (`preferred_pixels`, recorded with the weights: docs/ACCURACY.md "Operating point"), so a larger input is run at
  sqrt(preferred_pixels / pixels), never above 1 (an upsampled pair holds no more detail and costs time);
- range: the disparities present must fit the cost volume (max_disp px at the network's resolution). With a
  calibration and `min_depth` (or `max_disparity`) the range is given; otherwise a coarse probe (the network at
  half the resolution scale, two iterations) measures it, on the first pair of a size, every `probe_every` pairs,
  and on every pair while the scene is near the range.

Scales are snapped to a grid of quarter octaves (2^(-k/4)), so an OpenVINO backend compiles few sizes. On a stream
the scale goes down at once when the range needs it (wrong depth is worse than a coarser one) and up only after
`UP_AFTER` probes in a row agree, each with a margin: no flapping between two values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

# the weights' preferred network pixel count when their metadata records none: the v4 study on the validation
# scenes upsampled 2x and 3x (docs/ACCURACY.md "Operating point": 1.0 MP had the best bad-2 of 0.2-1.0 MP)
DEFAULT_PREFERRED_PIXELS = 1_000_000
GRID_STEP = 2 ** 0.25
UP_AFTER = 3               # probes in a row that must allow a larger scale before it is taken
RANGE_TARGET = 0.85        # the probe's high disparity should use at most this share of the network's range
NEAR_SHARE = 0.6           # above this share of the range, the scene is near: probed every pair
OUT_OF_RANGE_SHARE = 0.9   # a probe disparity past this share of the range at the run scale: the pixel is invalid
PROBE_ITERS = 2
HIGH_PERCENTILE = 99.9   # 99.5 let KITTI 2012 000070 at 2x (its nearest road, 0.3 % of the frame) pass the range


def snap_down(scale: float) -> float:
    """The largest grid scale 2^(-k/4) (k >= 0) not above `scale` (1 for anything >= 1)."""
    if scale >= 1.0:
        return 1.0
    k = math.ceil(-4 * math.log2(max(scale, 1e-6)) - 1e-9)
    return 2.0 ** (-k / 4)


def snap_nearest(scale: float) -> float:
    """The grid scale nearest to `scale` in log terms (1 for anything >= 1)."""
    if scale >= 1.0:
        return 1.0
    return 2.0 ** (-round(-4 * math.log2(max(scale, 1e-6))) / 4)


def resolution_scale(height: int, width: int, preferred_pixels: float) -> float:
    """sqrt(preferred / pixels), at most 1, to the nearest grid step (a 1241x376 KITTI frame is not cut to 0.84
    for being 1 % over); the range, where it limits, is snapped down instead."""
    return snap_nearest(min(1.0, math.sqrt(preferred_pixels / float(height * width))))


@dataclass
class Probe:
    disparity: np.ndarray      # (H, W) float32 at the input size, px of the input
    valid: np.ndarray          # (H, W) bool
    scale: float               # the scale the probe ran at
    high: float                # HIGH_PERCENTILE of the valid disparities (input px); 0 when none
    ms: float                  # what it cost (a backend's compile apart)
    compile_ms: float = 0.0

    def out_of_range(self, run_scale: float, network_range: float) -> np.ndarray:
        """Pixels whose match the probe puts beyond the range of a run at `run_scale`: never published valid."""
        return self.valid & (self.disparity * run_scale > OUT_OF_RANGE_SHARE * network_range)


def high_disparity(disparity: np.ndarray, valid: np.ndarray) -> float:
    d = disparity[valid]
    return float(np.percentile(d, HIGH_PERCENTILE)) if d.size else 0.0


class AutoScale:
    """The stream state of `input_scale: auto`: the scale in use, the votes to raise it, when to probe."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.scale: Optional[float] = None
        self.size: Optional[Tuple[int, int]] = None
        self.near = True
        self._since_probe = 0
        self._up_votes = 0
        self.changes = 0
        self.reason = ""

    def needs_probe(self, size: Tuple[int, int], probe_every: int) -> bool:
        return (self.scale is None or size != self.size or self.near
                or (probe_every > 0 and self._since_probe >= probe_every - 1))   # one pair in probe_every

    def skipped_probe(self) -> None:
        self._since_probe += 1

    def decide(self, size: Tuple[int, int], res_scale: float, range_scale: float, *, near: bool, reason: str
               ) -> Tuple[float, bool]:
        """A probe's (or a calibration's) limits -> (scale to run at, whether it changed)."""
        self._since_probe = 0
        proposed = snap_down(min(res_scale, range_scale))
        old = self.scale
        if old is None or size != self.size:
            self.scale, self._up_votes = proposed, 0
        elif proposed < old:
            self.scale, self._up_votes = proposed, 0        # the range needs it now
        elif proposed > old and range_scale >= snap_down(old * GRID_STEP * 1.0001) * 1.05:
            # a vote for one step up, when the range allows it with a margin (no flapping at a step's edge)
            self._up_votes += 1
            if self._up_votes >= UP_AFTER:
                self.scale, self._up_votes = snap_down(old * GRID_STEP * 1.0001), 0   # one step at a time
        else:
            self._up_votes = 0
        self.size = size
        self.near = near or self.scale < proposed      # still climbing back: keep probing every pair
        changed = old is not None and self.scale != old
        if changed or old is None:
            self.changes += int(changed)
            self.reason = reason
        return self.scale, changed
