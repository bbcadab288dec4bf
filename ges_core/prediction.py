"""What a predictor returns, and the input/output conversions every predictor shares (the PyTorch / OpenVINO
Predictor and the ONNX Runtime one): its own module, so that neither predictor imports the other's."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import cv2
import numpy as np
import torch


@dataclass
class Prediction:
    disparity: np.ndarray            # (H, W) float32 px at the input size, left view
    valid: np.ndarray                # (H, W) bool: finite, > 0 and inside the search range at the scale run
    confidence: np.ndarray           # (H, W) float32 in [0, 1]
    iters: int                       # solver iterations run
    residual: float                  # final relative residual |f(z)-z| / |f(z)|
    residuals: List[float] = field(default_factory=list)
    timings_ms: Dict[str, float] = field(default_factory=dict)
    state: Optional[torch.Tensor] = None   # fixed point, pass as `init` for the next frame
    fallback: bool = False           # the solver diverged: the volumetric disparity was used


def as_rgb(img: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"{name} image must be (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    arr = arr[..., :3]
    return arr if arr.flags.writeable else arr.copy()   # torch wants writable memory (message buffers are not)


# the cost volume's top bin (4 px at 1/4 resolution): an estimate there is saturated, not measured
TOP_BIN_PX = 4.0


def to_input_size(disp: np.ndarray, conf: np.ndarray, width: int, height: int, max_disp: float):
    """Network-resolution disparity and confidence -> (disparity, valid, confidence) at the input size. Validity is
    decided where the network ran: inside its range and below the top bin (in network pixels), then carried to the
    input size; a shift of d px at the network is d * width / network width px at the input."""
    valid = np.isfinite(disp) & (disp > 0) & (disp < max_disp - TOP_BIN_PX)
    if disp.shape != (height, width):
        factor = width / disp.shape[1]
        disp = cv2.resize(disp, (width, height), interpolation=cv2.INTER_LINEAR) * factor
        conf = cv2.resize(conf, (width, height), interpolation=cv2.INTER_LINEAR)
        valid = cv2.resize(valid.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
        valid &= np.isfinite(disp)
    disp = np.where(np.isfinite(disp), disp, 0).astype(np.float32)
    return disp, valid, np.clip(np.nan_to_num(conf), 0, 1).astype(np.float32)
