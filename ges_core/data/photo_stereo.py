"""Stereo pairs from single photographs, after "Learning stereo from single images" (Watson et al., ECCV 2020).

The left view is a real photograph; its disparity is synthetic but follows the photograph's own edges:
- the photo (cropped from a canvas widened to the right, where the right view looks: x_r = x_l - d) is cut into
  segments (scikit-image's felzenszwalb), so depth discontinuities fall on the image's edges;
- a smooth scene layout (a ground plane receding to a horizon, a slanted plane, or a smooth random field) gives
  every segment a plane d = c + a x + b y fitted to the layout over the segment, so neighbours nearly meet;
- some segments pop out towards the camera as objects, with a plane of their own;
- the right view is rendered exactly, as the procedural generator does (`procedural._render`): per-surface inverse
  mapping x_l = x_r + d(x_l, y) and a z-buffer (the nearest surface wins). A popped-out segment leaves behind it the
  layout's plane, textured from another photograph, which the right view sees where the object has moved away
  (disocclusion filled from the background's geometry); whatever is left is a far plane from another photograph.
The left view is the photograph pixel for pixel; the disparity is exact for every left pixel.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np

from .procedural import Surface, _noise, _render, camera_effects, supervised

_PHOTO_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff"}


@dataclass
class PhotoStereoConfig:
    root: str = "../shared/data/photos"      # folder of photographs, searched recursively
    height: int = 192
    width: int = 384
    max_disp: float = 128.0                  # scene maximum disparity, drawn log-uniformly up to this
    min_scene_disp: float = 4.0
    segment_scale: Tuple[float, float] = (60.0, 600.0)   # felzenszwalb scale, log-uniform: larger = fewer segments
    popout_prob: float = 0.3                 # a segment becomes an object in front of the layout
    min_popout_area: float = 0.003           # of the image; smaller segments follow the layout
    misalign_prob: float = 0.2
    jpeg_prob: float = 0.2
    supervise_out_of_view: bool = True


@lru_cache(maxsize=8)
def photo_paths(root: str) -> Tuple[str, ...]:
    """Every image file under `root` (sorted, so a sample is a pure function of its index)."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"photo folder not found: {root} (the photo pairs read ../shared/data/photos)")
    paths = tuple(sorted(str(p) for p in base.rglob("*") if p.suffix.lower() in _PHOTO_EXTS and p.is_file()))
    if not paths:
        raise FileNotFoundError(f"no images ({sorted(_PHOTO_EXTS)}) under {root}")
    return paths


def _read_rgb(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path}: not a readable image")
    return np.ascontiguousarray(img[..., ::-1])


def _photo_crop(rng: np.random.Generator, paths: Tuple[str, ...], h: int, w: int) -> np.ndarray:
    """A random (h, w, 3) uint8 view of a random photograph: scaled so it covers (h, w), at a random zoom."""
    img = _read_rgb(paths[int(rng.integers(len(paths)))])
    ih, iw = img.shape[:2]
    cover = max(h / ih, w / iw)
    scale = cover * float(np.exp(rng.uniform(0.0, np.log(1.6))))
    size = (max(w, int(np.ceil(iw * scale))), max(h, int(np.ceil(ih * scale))))
    img = cv2.resize(img, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    y0, x0 = int(rng.integers(0, size[1] - h + 1)), int(rng.integers(0, size[0] - w + 1))
    img = img[y0:y0 + h, x0:x0 + w]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


def _layout(rng: np.random.Generator, h: int, w: int, dmax: float) -> np.ndarray:
    """A smooth scene disparity (h, w) float32 in [0, dmax]: what the segments' planes are fitted to.
    Mostly what cameras see: a ground plane below a horizon with walls or a far plane above it (walls recede in x,
    not in y), or a gently slanted plane; often with smooth bulges in front (things standing in the scene)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    far = float(rng.uniform(0.0, 0.25)) * dmax
    if rng.random() < 0.6:
        horizon = float(rng.uniform(0.1, 0.6)) * h
        bottom = float(rng.uniform(0.5, 1.0)) * dmax
        wall = float(np.clip(rng.normal(0, 0.3), -0.6, 0.6)) * dmax / w     # receding to one side, in x only
        above = far + np.abs(wall) * w / 2 + wall * (xx - w / 2)
        ground = far + np.clip(yy - horizon, 0, None) * (bottom - far) / max(1.0, h - horizon)
        d = np.maximum(above, ground)
    else:
        lo = far
        span = float(rng.uniform(0.1, 0.8)) * dmax
        theta = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(theta) + yy * np.sin(theta)
        d = lo + (t - t.min()) / max(1e-6, float(t.max() - t.min())) * span
    if rng.random() < 0.6:
        bumps = _noise(rng, h, w)
        bumps = cv2.GaussianBlur(bumps, (0, 0), max(h, w) / 24)
        bumps = (bumps - bumps.min()) / max(1e-6, float(bumps.max() - bumps.min()))
        d = np.maximum(d, far + bumps * float(rng.uniform(0.3, 1.0)) * (dmax - far))
    return np.clip(d, 0, dmax).astype(np.float32)


def _segments(rng: np.random.Generator, image: np.ndarray, cfg: PhotoStereoConfig) -> np.ndarray:
    try:
        from skimage.segmentation import felzenszwalb
    except ImportError:
        raise ImportError("the photo stereo pairs segment with scikit-image: pip install scikit-image") from None
    scale = float(np.exp(rng.uniform(*np.log(cfg.segment_scale))))
    labels = felzenszwalb(image, scale=scale, sigma=float(rng.uniform(0.5, 1.0)), min_size=int(scale / 4) + 10)
    return labels.astype(np.int32)


def _plane_fits(labels: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Least-squares planes d = c + a x + b y of `field` over each label -> (n, 3) rows (c, a, b), in canvas
    coordinates. Normal equations from per-label moments (one bincount each), so every segment costs the same."""
    n = int(labels.max()) + 1
    h, w = labels.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    lab = labels.ravel()
    def moment(v):
        return np.bincount(lab, weights=v.ravel(), minlength=n)
    x, y, f = xx, yy, field.astype(np.float64)
    ones = np.bincount(lab, minlength=n).astype(np.float64)
    sx, sy, sxx, sxy, syy = moment(x), moment(y), moment(x * x), moment(x * y), moment(y * y)
    sf, sxf, syf = moment(f), moment(x * f), moment(y * f)
    A = np.stack([np.stack([ones, sx, sy], -1), np.stack([sx, sxx, sxy], -1), np.stack([sy, sxy, syy], -1)], 1)
    rhs = np.stack([sf, sxf, syf], -1)[..., None]
    A = A + np.eye(3)[None] * 1e-3 * (ones[:, None, None] + 1)     # thin or one-pixel segments: near-constant
    return np.linalg.solve(A, rhs)[..., 0]


def render_photo_pair(rng: np.random.Generator, cfg: PhotoStereoConfig
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """-> left, right (H, W, 3) uint8, disparity (H, W) float32, supervised pixels (H, W) bool."""
    paths = photo_paths(cfg.root)
    h, w = cfg.height, cfg.width
    dmax = float(np.exp(rng.uniform(np.log(cfg.min_scene_disp), np.log(cfg.max_disp))))
    pad = int(np.ceil(dmax * 1.25)) + 4          # the right view looks up to d to the right of the left view
    cw = w + pad
    canvas = _photo_crop(rng, paths, h, cw)
    labels = _segments(rng, canvas, cfg)
    planes = _plane_fits(labels, _layout(rng, h, cw, dmax))
    behind = _photo_crop(rng, paths, h, cw).astype(np.float32) / 255   # what disocclusions reveal
    tex = canvas.astype(np.float32) / 255
    # the far plane, just behind disparity 0 so that every segment (d >= 0) wins over it in the left view
    surfaces: List[Surface] = [Surface(-0.5, 0.0, 0.0, 0.0, 0.0, 0.0, (0, h, 0, cw), np.ones((h, cw), np.uint8),
                                       behind, 1.0)]
    for lab, (y0, y1, x0, x1) in enumerate(_label_boxes(labels)):
        if y1 <= y0:
            continue
        mask = (labels[y0:y1, x0:x1] == lab).astype(np.uint8)
        c, a, b = (float(v) for v in planes[lab])
        area = int(mask.sum())
        gain = float(rng.uniform(0.95, 1.05))
        layout = _bounded(Surface(c, a, b, 0.0, 0.0, 0.0, (y0, y1, x0, x1), mask, tex[y0:y1, x0:x1], gain), dmax)
        if area >= cfg.min_popout_area * h * w and rng.random() < cfg.popout_prob:
            obj = _popout(rng, layout, dmax)
            if obj is not None:
                # the layout's plane stays behind the object (same pixels: hidden in the left view), with another
                # photograph's texture, seen in the right view where the object has moved away
                layout.texture = behind[y0:y1, x0:x1]
                surfaces.append(layout)
                layout = obj
        surfaces.append(layout)
    left, disp = _render(surfaces, h, w, right=False)
    right, _ = _render(surfaces, h, w, right=True)
    left, right = camera_effects(rng, left, right, misalign_prob=cfg.misalign_prob, jpeg_prob=cfg.jpeg_prob)
    return left, right, np.maximum(disp, 0).astype(np.float32), supervised(disp >= 0, disp, cfg)


def _label_boxes(labels: np.ndarray) -> List[Tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of every label 0..max, half-open; an absent label gets an empty box."""
    n = int(labels.max()) + 1
    h, w = labels.shape
    ys = np.repeat(np.arange(h), w)
    xs = np.tile(np.arange(w), h)
    lab = labels.ravel()
    y0 = np.full(n, h)
    y1 = np.zeros(n, int)
    x0 = np.full(n, w)
    x1 = np.zeros(n, int)
    np.minimum.at(y0, lab, ys)
    np.maximum.at(y1, lab, ys + 1)
    np.minimum.at(x0, lab, xs)
    np.maximum.at(x1, lab, xs + 1)
    return list(zip(y0.tolist(), y1.tolist(), x0.tolist(), x1.tolist()))


def _popout(rng: np.random.Generator, under: Surface, dmax: float) -> Optional[Surface]:
    """An object plane in front of `under` over its whole box (by at least 1 px), within 1.25 dmax; None when the
    layout leaves no room in front."""
    by0, by1, bx0, bx1 = under.box
    cx, cy, half_w, half_h = (bx0 + bx1) / 2, (by0 + by1) / 2, (bx1 - bx0) / 2, (by1 - by0) / 2
    top = max(under.c + under.a * x + under.b * y for x in (bx0, bx1) for y in (by0, by1))
    room = 1.25 * dmax - top
    if room < 2.0:
        return None
    offset = 1.0 + float(rng.uniform(0.05, 0.6)) * (room - 1.0)
    da, db = (float(rng.normal(0, 0.05)) for _ in range(2))
    tilt = abs(da) * half_w + abs(db) * half_h            # the most the tilt moves the plane over the box
    if tilt > 0.5 * (offset - 1.0):                         # keep it in front of the layout and under the ceiling
        da, db = (v * 0.5 * (offset - 1.0) / tilt for v in (da, db))
    a, b = under.a + da, under.b + db
    if abs(a) >= 0.6 or abs(b) >= 0.6:
        return None
    c = under.c + offset - da * cx - db * cy
    return Surface(c, a, b, 0.0, 0.0, 0.0, under.box, under.mask, under.texture, under.gain_right)


def _bounded(s: Surface, dmax: float) -> Surface:
    """Keep a plane's slope a contraction (|a| < 0.9, for the exact right-view solve) and its disparity within
    [0, 1.25 dmax] over its box (the canvas is widened by that much)."""
    s.a = float(np.clip(s.a, -0.6, 0.6))
    s.b = float(np.clip(s.b, -0.6, 0.6))
    by0, by1, bx0, bx1 = s.box
    corners = [s.c + s.a * x + s.b * y for x in (bx0, bx1) for y in (by0, by1)]
    lo, hi = min(corners), max(corners)
    if lo < 0:
        s.c -= lo
    elif hi > 1.25 * dmax:
        s.c -= hi - 1.25 * dmax
    if min(s.c + s.a * x + s.b * y for x in (bx0, bx1) for y in (by0, by1)) < 0:   # too steep for its box
        mid = s.c + s.a * (bx0 + bx1) / 2 + s.b * (by0 + by1) / 2
        s.a, s.b, s.c = 0.0, 0.0, float(np.clip(mid, 0, 1.25 * dmax))
    return s
