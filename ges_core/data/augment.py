"""Augmentation, the design report's recipe.

Photometric changes touch the RIGHT image only (noise, blur, colour jitter), so the network learns to
match across camera differences. Spatial changes (zoom, x/y stretch, crop) are applied to both views
and keep the disparity exact: a horizontal scale sx multiplies disparity by sx. Occlusion patches
(filled with the patch's mean colour) go into the right image, where they hide the match.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np


@dataclass
class AugmentConfig:
    crop: Optional[Tuple[int, int]] = None        # (H, W); None = no crop
    noise_std: float = 0.02                       # of the 0-255 range, right image
    blur_sigma: Tuple[float, float] = (0.0, 1.0)
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.01                             # fraction of a full turn
    photometric_prob: float = 0.8
    zoom: Tuple[float, float] = (1.0, 1.0)        # log-uniform scale of both views
    stretch: Tuple[float, float] = (1.0, 1.0)     # extra x-only scale
    occlusion_prob: float = 0.3
    occlusion_size: Tuple[int, int] = (10, 60)


def color_jitter(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    x = img.astype(np.float32)
    x = x * rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + mean
    gray = x.mean(axis=2, keepdims=True)
    x = (x - gray) * rng.uniform(1 - cfg.saturation, 1 + cfg.saturation) + gray
    if cfg.hue > 0:
        hsv = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-cfg.hue, cfg.hue) * 180) % 180   # OpenCV hue is 0..180
        x = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    return x


def photometric_right(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    x = color_jitter(img, rng, cfg)
    sigma = rng.uniform(*cfg.blur_sigma)
    if sigma > 0.05:
        x = cv2.GaussianBlur(x, (0, 0), sigma)
    x = x + rng.normal(0, cfg.noise_std * 255, x.shape).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def spatial(left: np.ndarray, right: np.ndarray, disp: np.ndarray, valid: np.ndarray,
            rng: np.random.Generator, cfg: AugmentConfig):
    """Zoom/stretch both views, then crop. Disparity scales with x; validity follows nearest."""
    scale = float(np.exp(rng.uniform(np.log(cfg.zoom[0]), np.log(cfg.zoom[1]))))
    sx = scale * float(np.exp(rng.uniform(np.log(cfg.stretch[0]), np.log(cfg.stretch[1]))))
    sy = scale
    if cfg.crop is not None:   # never shrink below the crop
        sx = max(sx, cfg.crop[1] / left.shape[1])
        sy = max(sy, cfg.crop[0] / left.shape[0])
    if abs(sx - 1) > 1e-3 or abs(sy - 1) > 1e-3:
        size = (int(round(left.shape[1] * sx)), int(round(left.shape[0] * sy)))
        left = cv2.resize(left, size, interpolation=cv2.INTER_LINEAR)
        right = cv2.resize(right, size, interpolation=cv2.INTER_LINEAR)
        disp = cv2.resize(disp, size, interpolation=cv2.INTER_NEAREST) * (size[0] / disp.shape[1])
        valid = cv2.resize(valid.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    if cfg.crop is not None:
        ch, cw = cfg.crop
        h, w = disp.shape
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        sl = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        left, right, disp, valid = left[sl], right[sl], disp[sl], valid[sl]
    return left, right, disp, valid


def occlude_right(right: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    right = right.copy()
    h, w = right.shape[:2]
    for _ in range(int(rng.integers(1, 3))):
        ph, pw = (int(rng.integers(*cfg.occlusion_size)) for _ in range(2))
        y0, x0 = int(rng.integers(0, max(1, h - ph))), int(rng.integers(0, max(1, w - pw)))
        right[y0:y0 + ph, x0:x0 + pw] = right.reshape(-1, right.shape[2]).mean(axis=0)
    return right


def augment(left, right, disp, valid, rng: np.random.Generator, cfg: AugmentConfig):
    left, right, disp, valid = spatial(left, right, disp, valid, rng, cfg)
    if rng.random() < cfg.photometric_prob:
        right = photometric_right(right, rng, cfg)
    if rng.random() < cfg.occlusion_prob:
        right = occlude_right(right, rng, cfg)
    return np.ascontiguousarray(left), np.ascontiguousarray(right), np.ascontiguousarray(disp), np.ascontiguousarray(valid)
