"""Calibrated confidence (issue #27): the network's confidence (the cost volume's probability mass near the final
disparity) mapped monotonically to the chance that the pixel is within 2 px of the truth, so that `min_confidence`
means what it says.

The map is fitted by isotonic regression on training pairs (the training mix's generated pairs with exact labels,
a seed no training run draws), never on validation, and stored with the weights (metadata "operating_point").
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

CORRECT_PX = 2.0            # "right" means within this many px of the truth (the bad-2 threshold)
CALIBRATION_SEED = 20_000_000


def isotonic(x: np.ndarray, y: np.ndarray, *, bins: int = 64) -> Tuple[np.ndarray, np.ndarray]:
    """Non-decreasing y(x) by pool-adjacent-violators over `bins` quantile bins of x -> (knots x, values y)."""
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    if x.size == 0:
        raise ValueError("isotonic: no samples")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, max(len(edges) - 2, 0))
    counts = np.bincount(idx).astype(np.float64)
    keep = counts > 0
    xs = (np.bincount(idx, weights=x)[keep] / counts[keep])
    ys = (np.bincount(idx, weights=y)[keep] / counts[keep])
    ws = counts[keep]
    # pool adjacent violators on the bin means
    blocks: List[List[float]] = []          # [value, weight, count of bins]
    for v, w in zip(ys, ws):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    fitted = np.concatenate([[b[0]] * b[2] for b in blocks])
    return xs.astype(np.float32), fitted.astype(np.float32)


def calibration_samples(predictor, samples: Iterable[Dict[str, object]], *, iters: int,
                        per_pair: int = 20000, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(raw confidence, is-correct) over labelled pixels of `samples`, subsampled to per_pair a pair."""
    rng = np.random.default_rng(seed)
    raw, ok = [], []
    conf_map = getattr(predictor, "_conf_map", None)
    predictor._conf_map = None                 # the raw confidence, whatever the weights carry
    try:
        for s in samples:
            r = predictor.predict(s["left"], s["right"], iters=iters)
            mask = s["valid"] & np.isfinite(s["disparity"])
            err = np.abs(np.where(r.valid, r.disparity, 0) - s["disparity"])[mask]
            c = r.confidence[mask]
            if c.size > per_pair:
                pick = rng.choice(c.size, per_pair, replace=False)
                c, err = c[pick], err[pick]
            raw.append(c)
            ok.append(err <= CORRECT_PX)
    finally:
        predictor._conf_map = conf_map
    return np.concatenate(raw), np.concatenate(ok).astype(np.float64)


def fit_calibration(raw: np.ndarray, correct: np.ndarray) -> Dict[str, object]:
    xs, ys = isotonic(raw, correct)
    # anchor the ends so that np.interp covers [0, 1]
    xs = np.concatenate([[0.0], xs, [1.0]]).astype(np.float32)
    ys = np.concatenate([[ys[0]], ys, [ys[-1]]]).astype(np.float32)
    return {"x": [round(float(v), 5) for v in xs], "y": [round(float(v), 5) for v in ys],
            "target": f"P(|error| <= {CORRECT_PX:g} px)", "pixels": int(raw.size),
            "accuracy": round(float(correct.mean()), 4)}


def sparsification(confidence: np.ndarray, error: np.ndarray, thresholds: Sequence[float]
                   ) -> List[Dict[str, float]]:
    """Per threshold: coverage (share of pixels kept, confidence >= t), bad-2 among them, and the oracle's bad-2 at
    the same coverage (keeping the pixels with the smallest errors)."""
    order = np.sort(error)
    rows = []
    for t in thresholds:
        keep = confidence >= t
        n = int(keep.sum())
        bad = float((error[keep] > CORRECT_PX).mean() * 100) if n else float("nan")
        oracle = float((order[:n] > CORRECT_PX).mean() * 100) if n else float("nan")
        rows.append({"threshold": float(t), "coverage": n / max(1, error.size) * 100, "bad2": bad,
                     "oracle_bad2": oracle})
    return rows
