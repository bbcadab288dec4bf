"""Real rectified pairs without ground truth, labelled by the classical matcher (proxy supervision).

Each pair (`<root>/**/NNNN_left.png` beside `NNNN_right.png`) gets a disparity from OpenCV SGBM (the baseline of
`ges_core.baselines`), kept only where it is left-right consistent: the right view's own SGBM disparity (computed on
the mirrored pair) at x - d must agree with d within `lr_tolerance` px. Holes stay holes (no filling): the loss sees
only the kept pixels. What the network learns here is the real cameras' noise, blur and rectification, on the
textured surfaces where the classical matcher is reliable; the synthetic sources keep teaching the rest.

A sample is a random crop of a random pair, a pure function of (seed, index); labels are computed once per pair and
process.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Tuple

import numpy as np

from ..baselines import sgbm_disparity
from .io import cached_npz, read_image


@dataclass
class ProxyStereoConfig:
    root: str = "../shared/data/stereo_unlabeled"   # searched recursively for *_left.png with a *_right.png beside
    height: int = 192
    width: int = 384
    max_disp: float = 128.0          # the matcher's range (rounded up to 16)
    lr_tolerance: float = 1.0        # px between the left and the right view's disparity
    min_labelled: float = 0.15       # a crop keeps at least this fraction of labelled pixels (best of 8 tries)
    supervise_out_of_view: bool = True   # accepted for a mix's shared keys; the matcher never labels out of view
    label_cache: str = ""            # folder where each pair's labels are kept for later processes and runs ("": in
                                     # this process's memory only); training sets it to the render cache


@lru_cache(maxsize=8)
def proxy_pairs(root: str) -> Tuple[Tuple[str, str], ...]:
    """Every (left, right) file pair under `root`, sorted."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"unlabeled stereo folder not found: {root} (the proxy pairs read "
                                f"../shared/data/stereo_unlabeled)")
    pairs = []
    for left in sorted(base.rglob("*_left.png")):
        right = left.with_name(left.name[: -len("_left.png")] + "_right.png")
        if right.is_file():
            pairs.append((str(left), str(right)))
    if not pairs:
        raise FileNotFoundError(f"no NNNN_left.png / NNNN_right.png pairs under {root}")
    return tuple(pairs)


def proxy_disparity(left: np.ndarray, right: np.ndarray, *, max_disp: float, lr_tolerance: float = 1.0
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """RGB uint8 pair -> (disparity float32, labelled bool): SGBM where it is left-right consistent."""
    d_left = sgbm_disparity(left, right, max_disp=int(max_disp), fill_holes=False)
    # the right view's disparity: the mirrored pair (right, left) is an ordinary left/right pair
    d_right = sgbm_disparity(np.ascontiguousarray(right[:, ::-1]), np.ascontiguousarray(left[:, ::-1]),
                             max_disp=int(max_disp), fill_holes=False)[:, ::-1]
    h, w = d_left.shape
    have = np.isfinite(d_left)
    xs = np.arange(w, dtype=np.float32)[None, :]
    xr = np.rint(xs - np.where(have, d_left, 0)).astype(np.int64)
    inside = have & (xr >= 0) & (xr < w)
    back = d_right[np.arange(h)[:, None], np.clip(xr, 0, w - 1)]
    labelled = inside & np.isfinite(back) & (np.abs(np.where(inside, d_left, 0) - np.where(inside, back, 0))
                                             <= lr_tolerance)
    return np.where(labelled, d_left, 0).astype(np.float32), labelled


_LABELS: dict = {}


def _labelled_pair(path: Tuple[str, str], cfg: ProxyStereoConfig):
    key = (path, cfg.max_disp, cfg.lr_tolerance)
    if key not in _LABELS:
        left, right = read_image(path[0]), read_image(path[1])
        if left.shape != right.shape:
            raise ValueError(f"{path[0]} is {left.shape[:2]} but {path[1]} is {right.shape[:2]}")
        _LABELS[key] = (left, right, *_labels(left, right, key, cfg)[:2])
    return _LABELS[key]


def _labels(left: np.ndarray, right: np.ndarray, key, cfg: ProxyStereoConfig):
    """The pair's (disparity, labelled, computed here): from the label cache, or computed (and written there,
    atomically)."""
    if not cfg.label_cache:
        return (*proxy_disparity(left, right, max_disp=cfg.max_disp, lr_tolerance=cfg.lr_tolerance), True)
    import hashlib
    import inspect
    import os
    from .. import baselines
    # keyed by the pair's files, the matcher's settings and the code of the matcher and of this labelling
    h = hashlib.sha1(repr((key, os.path.getsize(key[0][0]), os.path.getsize(key[0][1]))).encode())
    h.update(inspect.getsource(baselines).encode() + inspect.getsource(proxy_disparity).encode())
    path = Path(cfg.label_cache) / "proxy-labels" / f"{h.hexdigest()[:16]}.npz"
    arrays, computed = cached_npz(path, lambda: dict(zip(("disparity", "labelled"), proxy_disparity(
        left, right, max_disp=cfg.max_disp, lr_tolerance=cfg.lr_tolerance))))
    return arrays["disparity"], arrays["labelled"], computed


def label_cached(cfg: ProxyStereoConfig) -> Tuple[int, float]:
    """Label every pair under cfg.root into cfg.label_cache (what a run's workers would do once each, on first
    use); -> (pairs labelled here, seconds taken). Pairs already in the cache cost a read."""
    import time
    if not cfg.label_cache:
        raise ValueError("label_cached needs a label_cache folder")
    done, t = 0, time.perf_counter()
    for pair in proxy_pairs(cfg.root):
        left, right = read_image(pair[0]), read_image(pair[1])
        done += _labels(left, right, (pair, cfg.max_disp, cfg.lr_tolerance), cfg)[2]
    return done, time.perf_counter() - t


def render_proxy_pair(rng: np.random.Generator, cfg: ProxyStereoConfig
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """-> left, right (H, W, 3) uint8, proxy disparity (H, W) float32, labelled pixels (H, W) bool: a crop of
    cfg.height x cfg.width (the pair scaled up first where it is smaller)."""
    pairs = proxy_pairs(cfg.root)
    left, right, disp, valid = _labelled_pair(pairs[int(rng.integers(len(pairs)))], cfg)
    return labelled_crop(left, right, disp, valid, cfg.height, cfg.width, cfg.min_labelled, rng, where=cfg.root)


def labelled_crop(left: np.ndarray, right: np.ndarray, disp: np.ndarray, valid: np.ndarray, height: int, width: int,
                  min_labelled: float, rng: np.random.Generator, *, where: str):
    """A height x width crop of a partly labelled pair: the first of up to 8 random ones with at least
    `min_labelled` of its pixels labelled, else the best of them."""
    h, w = disp.shape
    if h < height or w < width:
        raise ValueError(f"{where}: a pair of {w}x{h} is smaller than the crop {width}x{height}")
    best = None
    for _ in range(8):
        y0, x0 = int(rng.integers(0, h - height + 1)), int(rng.integers(0, w - width + 1))
        share = float(valid[y0:y0 + height, x0:x0 + width].mean())
        if best is None or share > best[0]:
            best = (share, y0, x0)
        if share >= min_labelled:
            break
    _, y0, x0 = best
    sl = (slice(y0, y0 + height), slice(x0, x0 + width))
    return (np.ascontiguousarray(left[sl]), np.ascontiguousarray(right[sl]), np.ascontiguousarray(disp[sl]),
            np.ascontiguousarray(valid[sl]))
