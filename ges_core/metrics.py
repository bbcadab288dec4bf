"""Stereo metrics: EPE, bad-x, KITTI D1 and Argoverse's bad-x with a relative rule."""
from __future__ import annotations

from typing import Dict

import numpy as np


def disparity_metrics(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, *, prefix: str = "") -> Dict[str, float]:
    """pred, gt: (H, W) px; valid: (H, W) bool. Non-finite predictions count as errors of |gt|."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction is {pred.shape}, ground truth is {gt.shape}")
    v = valid & np.isfinite(gt)
    if not v.any():
        return {}
    p = np.where(np.isfinite(pred), pred, 0.0)[v].astype(np.float64)
    g = gt[v].astype(np.float64)
    err = np.abs(p - g)
    out = {"epe": err.mean(), "bad1": (err > 1).mean() * 100, "bad2": (err > 2).mean() * 100,
           "bad3": (err > 3).mean() * 100,
           # KITTI D1: > 3 px and > 5 % of the true disparity
           "d1": ((err > 3) & (err > 0.05 * np.abs(g))).mean() * 100}
    for t in (3, 5, 10):
        # Argoverse: an error counts when over t px and over 10 % of the true disparity
        out[f"argo_bad{t}"] = ((err > t) & (err > 0.1 * np.abs(g))).mean() * 100
    return {prefix + k: float(v_) for k, v_ in out.items()}


def summarize(rows, keys) -> Dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys if any(k in r for r in rows)}
