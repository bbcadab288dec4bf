"""Procedural stereo: layered synthetic scenes with exact disparity, rendered on the fly.

What FlyingThings3D teaches a network is matching under occlusion across many textured, slanted,
overlapping objects; this generator imitates that cheaply:
- every surface is a smooth disparity field over left-image coordinates, d(x, y) = c + a x + b y
  (+ a gentle curvature term), so the right view is rendered exactly by inverse mapping
  x_l = x_r + d(x_l, y) (a contraction because |dd/dx| < 1) and a per-pixel z-buffer
  (the largest disparity, the nearest surface, wins) in both views;
- a far background plane, often a ground plane whose disparity grows down the image and a sky,
  receding walls, many objects (polygons, ellipses, blobs, thin bars and fences);
- textures from natural images shipped inside installed packages plus procedural patterns
  (multi-octave noise, stripes, checkers, dots, flat colour: textureless and repetitive regions);
- view-dependent gain per surface, occasional sub-pixel vertical misalignment and JPEG artefacts.
The left-view disparity is exact; pixels whose match falls outside the right image are flagged.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Tuple

import cv2
import numpy as np

# evaluation data must never become a training texture
_EXCLUDE = ("motorcycle", "lfw_subset", "lbpcascade", "multipage", "no_time_for_that")


@lru_cache(maxsize=1)
def texture_pool() -> Tuple[np.ndarray, ...]:
    """Natural images (uint8 HxWx3) that ship with scikit-image and matplotlib, if installed."""
    dirs = []
    for mod in ("skimage.data", "matplotlib"):
        try:
            m = __import__(mod, fromlist=["__file__"])
            base = os.path.dirname(m.__file__)
            dirs.append(base if mod == "skimage.data" else os.path.join(base, "mpl-data", "sample_data"))
        except ImportError:
            pass
    images = []
    for d in dirs:
        for path in sorted(glob.glob(os.path.join(d, "*.png")) + glob.glob(os.path.join(d, "*.jpg"))):
            if any(x in os.path.basename(path) for x in _EXCLUDE):
                continue
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None or min(img.shape[:2]) < 64:
                continue
            images.append(np.ascontiguousarray(img[..., ::-1]))
    return tuple(images)


# ----------------------------------------------------------------------------- textures
def _noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Multi-octave value noise in [0, 1], (h, w)."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    scale = rng.uniform(2, 6)
    while scale < max(h, w):
        gh, gw = int(h / max(h, w) * scale) + 2, int(w / max(h, w) * scale) + 2
        grid = rng.random((gh, gw)).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= rng.uniform(0.45, 0.75)
        scale *= 2
    if total == 0:          # a patch smaller than the coarsest octave: plain noise
        return rng.random((h, w)).astype(np.float32)
    return np.clip(out / total, 0, 1)


def _pattern(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = rng.choice(["stripes", "checker", "dots", "noise", "flat", "gradient"], p=[.15, .12, .1, .33, .15, .15])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "stripes":
        period, theta = rng.uniform(3, 24), rng.uniform(0, np.pi)
        g = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    elif kind == "checker":
        p = rng.uniform(3, 20)
        g = ((np.floor(xx / p) + np.floor(yy / p)) % 2).astype(np.float32)
    elif kind == "dots":
        g = (rng.random((h, w)) < rng.uniform(0.01, 0.1)).astype(np.float32)
        g = cv2.GaussianBlur(g, (0, 0), rng.uniform(0.5, 2.0)) * 4
    elif kind == "noise":
        g = _noise(rng, h, w)
    elif kind == "flat":
        g = np.full((h, w), 0.5, np.float32) + rng.normal(0, 0.01, (h, w)).astype(np.float32)
    else:
        theta = rng.uniform(0, 2 * np.pi)
        g = (xx * np.cos(theta) + yy * np.sin(theta)) / max(h, w) + 0.5
    g = np.clip(g, 0, 1)
    c0, c1 = rng.random(3), rng.random(3)
    return (c0 + (c1 - c0) * g[..., None]).astype(np.float32)


def random_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float32 in [0, 1]."""
    pool = texture_pool()
    if pool and rng.random() < 0.6:
        src = pool[rng.integers(len(pool))]
        zoom = rng.uniform(0.3, 2.0)
        sh, sw = src.shape[:2]
        ch, cw = min(sh, max(8, int(h / zoom))), min(sw, max(8, int(w / zoom)))
        y0, x0 = rng.integers(0, sh - ch + 1), rng.integers(0, sw - cw + 1)
        tex = cv2.resize(src[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
        if rng.random() < 0.5:
            tex = tex[:, ::-1]
        if rng.random() < 0.3:
            tex = tex[..., rng.permutation(3)]
        # contrast: some surfaces nearly textureless
        contrast = rng.choice([rng.uniform(0.05, 0.3), rng.uniform(0.5, 1.3)], p=[0.2, 0.8])
        tex = (tex - tex.mean()) * contrast + rng.uniform(0.2, 0.8)
    else:
        tex = _pattern(rng, h, w)
    # smooth shading across the surface
    if rng.random() < 0.6:
        shade = cv2.resize(rng.uniform(0.6, 1.3, (2, 2)).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        tex = tex * shade[..., None]
    return np.clip(tex, 0, 1).astype(np.float32)


def _shape_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w) uint8 mask of one object's silhouette, filling most of its box."""
    kind = rng.choice(["polygon", "ellipse", "blob", "rect", "bar", "fence"], p=[.25, .2, .2, .15, .12, .08])
    m = np.zeros((h, w), np.uint8)
    if kind == "polygon":
        n = rng.integers(3, 9)
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(0.5, 1.0, n)
        pts = np.stack([w / 2 + rad * w / 2 * np.cos(ang), h / 2 + rad * h / 2 * np.sin(ang)], 1)
        cv2.fillPoly(m, [pts.astype(np.int32)], 1)
    elif kind == "ellipse":
        cv2.ellipse(m, (w // 2, h // 2), (max(1, w // 2 - 1), max(1, h // 2 - 1)), 0, 0, 360, 1, -1)
    elif kind == "blob":
        m = (_noise(rng, h, w) > 0.5).astype(np.uint8)
        yy, xx = np.mgrid[0:h, 0:w]
        m &= (((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2 < 1).astype(np.uint8)
    elif kind == "rect":
        m[:] = 1
    elif kind == "bar":
        t = int(rng.integers(1, 5))
        if rng.random() < 0.5:
            m[:, w // 2 - t // 2: w // 2 - t // 2 + t] = 1
        else:
            m[h // 2 - t // 2: h // 2 - t // 2 + t, :] = 1
    else:  # fence: repeated thin bars
        t, gap = int(rng.integers(1, 5)), int(rng.integers(4, 16))
        for x in range(0, w, t + gap):
            m[:, x:x + t] = 1
        m[: max(1, t), :] = 1
        m[-max(1, t):, :] = 1
    return m


# ----------------------------------------------------------------------------- surfaces
@dataclass
class Surface:
    """A textured layer over left-image coordinates; disparity d = c + a (x - x0) + b (y - y0) + k (x - x0)^2."""
    c: float
    a: float
    b: float
    k: float
    x0: float
    y0: float
    box: Tuple[int, int, int, int]        # y0, y1, x0, x1 on the canvas (left coordinates)
    mask: np.ndarray                      # (y1-y0, x1-x0) uint8
    texture: np.ndarray                   # (y1-y0, x1-x0, 3) float32
    gain_right: float                     # view-dependent brightness in the right view

    def disparity(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        dx = x - self.x0
        return self.c + self.a * dx + self.b * (y - self.y0) + self.k * dx * dx


def _render(surfaces: List[Surface], h: int, w: int, right: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Z-buffer the surfaces into one view -> (image (h, w, 3), disparity (h, w), -1 where empty)."""
    image = np.zeros((h, w, 3), np.float32)
    zbuf = np.full((h, w), -1.0, np.float32)
    for s in surfaces:
        by0, by1, bx0, bx1 = s.box
        ys, ye = max(by0, 0), min(by1, h)
        if ys >= ye:
            continue
        if right:
            # the right-view columns this surface can reach: x_r = x_l - d
            dmin, dmax = _disparity_bounds(s)
            xs, xe = int(np.floor(max(bx0 - dmax - 1, 0))), int(np.ceil(min(bx1 - dmin + 1, w)))
        else:
            xs, xe = max(bx0, 0), min(bx1, w)
        if xs >= xe:
            continue
        yy, xx = np.mgrid[ys:ye, xs:xe].astype(np.float32)
        if right:
            # x_l = x_r + d(x_l, y): a contraction on the box, where |dd/dx| < 0.9, so iterated until it moves
            # less than 1e-3 px (a slope near 0.9 needs dozens of steps). Off the box a curved surface's slope
            # grows without bound and the iterate can run to inf (cv2.remap then never returns at
            # BORDER_REFLECT), so it is kept within a margin of the box: solutions inside are unchanged,
            # pixels whose solution lies outside stay outside the mask.
            lo, hi = bx0 - 2.0, bx1 + 2.0
            xl = np.clip(xx + s.disparity(xx, yy), lo, hi)
            for _ in range(100):
                prev, xl = xl, np.clip(xx + s.disparity(xl, yy), lo, hi)
                if float(np.abs(xl - prev).max()) < 1e-3:
                    break
        else:
            xl = xx
        d = s.disparity(xl, yy).astype(np.float32)
        mx, my = (xl - bx0).astype(np.float32), (yy - by0).astype(np.float32)
        inside = cv2.remap(s.mask, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
        win = inside & (d > zbuf[ys:ye, xs:xe])
        if not win.any():
            continue
        tex = cv2.remap(s.texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if right:
            tex = tex * s.gain_right
        zbuf[ys:ye, xs:xe][win] = d[win]
        image[ys:ye, xs:xe][win] = tex[win]
    return image, zbuf


def _disparity_bounds(s: Surface) -> Tuple[float, float]:
    by0, by1, bx0, bx1 = s.box
    xs = np.array([bx0, bx1, bx0, bx1, np.clip(s.x0, bx0, bx1)], np.float32)
    ys = np.array([by0, by0, by1, by1, by0], np.float32)
    d = s.disparity(xs, ys)
    return float(d.min()), float(d.max())


@dataclass
class ProceduralConfig:
    height: int = 192
    width: int = 384
    max_disp: float = 128.0          # scene maximum disparity drawn log-uniformly up to this
    min_scene_disp: float = 4.0
    objects: Tuple[int, int] = (6, 30)
    ground_prob: float = 0.5
    misalign_prob: float = 0.2       # sub-pixel vertical misalignment of the right view
    jpeg_prob: float = 0.2
    # supervise left pixels whose match falls outside the right image (the left border band, width = disparity):
    # their disparity is known here, and a node publishes (and benchmarks score) every pixel with ground truth
    supervise_out_of_view: bool = False


def render_pair(rng: np.random.Generator, cfg: ProceduralConfig) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """-> left, right (H, W, 3) uint8, disparity (H, W) float32, valid (H, W) bool."""
    h, w = cfg.height, cfg.width
    dmax = float(np.exp(rng.uniform(np.log(cfg.min_scene_disp), np.log(cfg.max_disp))))
    pad = int(np.ceil(dmax * 1.6)) + 4            # canvas widened to the right: x_l = x_r + d
    cw = w + pad
    surfaces: List[Surface] = []

    def full_surface(c, a, b, k=0.0, y0=0):
        tex = random_texture(rng, h - y0, cw)
        return Surface(c, a, b, k, 0.0, float(y0), (y0, h, 0, cw), np.ones((h - y0, cw), np.uint8), tex,
                       float(rng.uniform(0.95, 1.05)))

    # background: a far plane, sometimes a ground plane below a horizon
    far = rng.uniform(0.0, 0.15) * dmax
    surfaces.append(full_surface(far, abs(rng.normal(0, 0.002)), abs(rng.normal(0, 0.002))))
    if rng.random() < cfg.ground_prob:
        horizon = int(rng.uniform(0.15, 0.6) * h)
        bottom = rng.uniform(0.4, 1.0) * dmax
        slope = (bottom - far) / max(1, h - horizon)
        s = full_surface(far, abs(rng.normal(0, 0.01)), slope, y0=horizon)
        surfaces.append(s)
    n = int(rng.integers(cfg.objects[0], cfg.objects[1] + 1))
    for _ in range(n):
        oh = int(np.clip(rng.lognormal(np.log(h * 0.3), 0.6), 4, h * 1.2))
        ow = int(np.clip(rng.lognormal(np.log(w * 0.2), 0.6), 4, cw))
        by0 = int(rng.integers(-oh // 2, h - oh // 2))
        bx0 = int(rng.integers(-ow // 2, cw - ow // 2))
        c = float(rng.uniform(far + 0.05 * dmax, dmax)) if rng.random() < 0.85 else float(rng.uniform(far, dmax))
        a = float(np.clip(rng.normal(0, 0.08), -0.45, 0.45))
        if rng.random() < 0.1:                         # receding wall
            a = float(rng.choice([-1, 1]) * rng.uniform(0.2, 0.45))
        b = float(np.clip(rng.normal(0, 0.08), -0.45, 0.45))
        k = float(rng.normal(0, 0.002)) if rng.random() < 0.25 else 0.0
        x0, y0 = bx0 + ow / 2, by0 + oh / 2
        mask = _shape_mask(rng, oh, ow)
        tex = random_texture(rng, oh, ow)
        s = Surface(c, a, b, k, x0, y0, (by0, by0 + oh, bx0, bx0 + ow), mask, tex, float(rng.uniform(0.9, 1.1)))
        # keep d in [0, 1.5 dmax] over the box so the inverse map stays within the canvas
        lo, hi = _disparity_bounds(s)
        if lo < 0 or hi > 1.5 * dmax or abs(a) + 2 * abs(k) * ow >= 0.9:
            s.a, s.b, s.k = 0.0, 0.0, 0.0
        surfaces.append(s)

    left, disp = _render(surfaces, h, w, right=False)
    right, _ = _render(surfaces, h, w, right=True)
    left, right = camera_effects(rng, left, right, misalign_prob=cfg.misalign_prob, jpeg_prob=cfg.jpeg_prob)
    return left, right, np.maximum(disp, 0).astype(np.float32), supervised(disp >= 0, disp, cfg)


def camera_effects(rng: np.random.Generator, left: np.ndarray, right: np.ndarray, *, misalign_prob: float,
                   jpeg_prob: float) -> Tuple[np.ndarray, np.ndarray]:
    """Rendered float views -> uint8, with what real rigs add: a sub-pixel vertical misalignment of the right view
    and JPEG artefacts in both."""
    h, w = left.shape[:2]
    if rng.random() < misalign_prob:
        m = np.float32([[1, 0, 0], [0, 1, rng.uniform(-0.5, 0.5)]])
        right = cv2.warpAffine(right, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    left, right = _to_uint8(left), _to_uint8(right)
    if rng.random() < jpeg_prob:
        q = int(rng.integers(40, 95))
        left, right = (_jpeg(im, q) for im in (left, right))
    return left, right


def supervised(valid: np.ndarray, disp: np.ndarray, cfg: ProceduralConfig) -> np.ndarray:
    """The pixels the loss sees: `valid`, less those whose match lies outside the right image unless
    cfg.supervise_out_of_view (again after a crop, which can cut a match out of view)."""
    if cfg.supervise_out_of_view:
        return valid
    xs = np.arange(disp.shape[1], dtype=np.float32)[None, :]
    return valid & (xs - disp >= 0)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy() if ok else img
