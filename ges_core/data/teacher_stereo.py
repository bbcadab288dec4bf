"""Real rectified pairs without ground truth, labelled by GES itself (self-training, issue #26).

The teacher is a trained GES run at many iterations on the clean pair. A pixel keeps its label only where every
check passes; everything else is unsupervised:

- left-right consistency: the mirrored pair's disparity (the right view's own) at x - d agrees within `lr_tolerance`;
  pixels whose match lies left of the right image (x - d < 0, the border band) cannot be checked this way and are
  kept when the other checks pass, so the border band gets real labels too;
- two scales: the teacher run at half the resolution agrees within `scale_tolerance` px (+ `scale_rel` of d);
- edge mask: no label where the disparity jumps (gradient > `edge_disp_grad` px/px) without an image edge nearby;
- a heuristic sky / void mask: no label on flat, texture-free areas whose disparity is under `sky_max_disp` px;
- a confidence floor, `min_confidence`.

Labels are made once, offline, by `ges pseudo-label` (a folder of .npz, one per pair, no pickles), because the
teacher is far too slow to run in a data worker. A pair whose disparities pass what the network can represent is
stored downscaled (`max_label_disp`): the close-range sets then train at the scales the network searches.

The training source (`dataset: teacher`) draws a set first (weight ~ sqrt(pairs in it), so the 84-frame driving
sequence does not rule a batch), then a pair, then a crop. Self-distillation under camera changes: the teacher saw
the clean pair; the student sees both views with independent gain, gamma, colour, blur and noise (left/right
exposure differences).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

from .io import read_image
from .proxy_stereo import labelled_crop

LABEL_VERSION = 1


@dataclass(frozen=True)
class TeacherLabelConfig:
    """How `ges pseudo-label` labels a pair."""
    iters: int = 24                  # teacher solver iterations
    lr_tolerance: float = 1.0        # px
    scale_tolerance: float = 1.5     # px between the full and the half-resolution answers ...
    scale_rel: float = 0.03          # ... plus this share of d
    edge_disp_grad: float = 1.0      # px of disparity per px: above it, a jump
    edge_image_grad: float = 12.0    # grey levels per px (Sobel / 8) within 2 px: an image edge
    sky_max_disp: float = 1.5        # px: flat areas nearer than this are kept
    sky_texture: float = 2.0         # grey-level std (7x7) below which an area is flat
    min_confidence: float = 0.5
    max_label_disp: float = 100.0    # a pair whose 98th percentile passes this is stored downscaled: v4 was
                                     # trained on scene disparities up to 160 px, and is least sure near that edge
    min_size: Tuple[int, int] = (224, 448)   # stored pairs stay at least this large (H, W)


def find_pairs(root: str) -> Tuple[Tuple[str, str], ...]:
    """Every (left, right) pair under `root` (`NNNN_left.png|jpg` beside `NNNN_right.png|jpg`), sorted."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"unlabeled stereo folder not found: {root}")
    pairs = []
    for left in sorted([*base.rglob("*_left.png"), *base.rglob("*_left.jpg")]):
        stem = left.name.split("_left.")[0]
        right = next((r for r in (left.with_name(f"{stem}_right{left.suffix}"), left.with_name(f"{stem}_right.png"),
                                  left.with_name(f"{stem}_right.jpg")) if r.is_file()), None)
        if right is not None:
            pairs.append((str(left), str(right)))
    if not pairs:
        raise FileNotFoundError(f"no NNNN_left / NNNN_right pairs (png or jpg) under {root}")
    return tuple(pairs)


def _gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)


def consistency_masks(left: np.ndarray, d_left: np.ndarray, d_right: np.ndarray, d_half: np.ndarray,
                      confidence: np.ndarray, cfg: TeacherLabelConfig) -> Dict[str, np.ndarray]:
    """Each check as a bool (H, W) map of the pixels it keeps; `labelled` is their conjunction."""
    h, w = d_left.shape
    xs = np.arange(w, dtype=np.float32)[None, :]
    xr = np.rint(xs - d_left).astype(np.int64)
    out_of_view = xr < 0
    back = d_right[np.arange(h)[:, None], np.clip(xr, 0, w - 1)]
    lr = out_of_view | (np.abs(d_left - back) <= cfg.lr_tolerance)
    scales = np.abs(d_left - d_half) <= cfg.scale_tolerance + cfg.scale_rel * d_left
    gray = _gray(left)
    gx = cv2.Sobel(d_left, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(d_left, cv2.CV_32F, 0, 1, ksize=3) / 8
    jump = np.hypot(gx, gy) > cfg.edge_disp_grad
    ix = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3) / 8
    iy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3) / 8
    image_edge = cv2.dilate((np.hypot(ix, iy) > cfg.edge_image_grad).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    edges = ~(jump & ~image_edge)
    mean = cv2.blur(gray, (7, 7))
    std = np.sqrt(np.maximum(cv2.blur(gray * gray, (7, 7)) - mean * mean, 0))
    sky = ~((std < cfg.sky_texture) & (d_left < cfg.sky_max_disp))
    conf = confidence >= cfg.min_confidence
    finite = np.isfinite(d_left) & (d_left > 0)
    masks = {"lr": lr, "scales": scales, "edges": edges, "sky": sky, "confidence": conf}
    labelled = finite.copy()
    for m in masks.values():
        labelled &= m
    masks["labelled"] = labelled
    return masks


def label_scale(coarse_disp: np.ndarray, shape: Tuple[int, int], cfg: TeacherLabelConfig) -> float:
    """The scale a pair is stored and labelled at: 1, or less where its disparities pass max_label_disp."""
    finite = coarse_disp[np.isfinite(coarse_disp)]
    p98 = float(np.percentile(finite, 98)) if finite.size else 0.0
    scale = 1.0 if p98 <= cfg.max_label_disp else cfg.max_label_disp / p98
    h, w = shape
    return float(max(scale, cfg.min_size[0] / h, cfg.min_size[1] / w, 0.05))


def label_pair(predictor, left: np.ndarray, right: np.ndarray, cfg: TeacherLabelConfig
               ) -> Dict[str, np.ndarray]:
    """RGB uint8 pair at its stored size -> the teacher's labels and what each check kept.
    `predictor`: a ges_core Predictor (the teacher)."""
    coarse = predictor.predict(left, right, iters=cfg.iters, scale=0.5).disparity
    scale = label_scale(coarse, left.shape[:2], cfg)
    if scale < 0.999:
        size = (int(round(left.shape[1] * scale)), int(round(left.shape[0] * scale)))
        left = cv2.resize(left, size, interpolation=cv2.INTER_AREA)
        right = cv2.resize(right, size, interpolation=cv2.INTER_AREA)
    full = predictor.predict(left, right, iters=cfg.iters)
    mirrored = predictor.predict(np.ascontiguousarray(right[:, ::-1]), np.ascontiguousarray(left[:, ::-1]),
                                 iters=cfg.iters)
    half = predictor.predict(left, right, iters=cfg.iters, scale=0.5)
    d_right = np.ascontiguousarray(mirrored.disparity[:, ::-1])
    masks = consistency_masks(left, full.disparity, d_right, half.disparity, full.confidence, cfg)
    return {"left": left, "right": right, "disparity": full.disparity.astype(np.float32),
            "labelled": masks["labelled"], "scale": np.float32(scale),
            "kept": np.array([float(masks[k].mean()) for k in ("lr", "scales", "edges", "sky", "confidence",
                                                                "labelled")], np.float32)}


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def make_labels(predictor, root: str, out: str, cfg: TeacherLabelConfig, *, teacher: str,
                progress: bool = True) -> Dict[str, object]:
    """Label every pair under `root` into `out/<set>/<name>.npz`; pairs already labelled by the same teacher and
    settings are kept (an interrupted run resumes). Writes out/labels.json with the settings and per-pair shares."""
    from tqdm import tqdm
    pairs = find_pairs(root)
    out_p = Path(out)
    out_p.mkdir(parents=True, exist_ok=True)
    meta_path = out_p / "labels.json"
    settings = {"version": LABEL_VERSION, "teacher": teacher, "config": {
        k: list(v) if isinstance(v, tuple) else v for k, v in cfg.__dict__.items()}}
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta.get("settings") != settings:
        meta = {"settings": settings, "pairs": {}}
    base = Path(root)
    for left_path, right_path in tqdm(pairs, desc="pseudo-labels", disable=not progress):
        rel = Path(left_path).relative_to(base)
        name = str(rel.with_name(rel.name.split("_left.")[0]))
        target = out_p / (name + ".npz")
        if name in meta["pairs"] and target.is_file():
            continue
        left, right = read_image(left_path), read_image(right_path)
        if left.shape != right.shape:
            raise ValueError(f"{left_path} is {left.shape[:2]} but {right_path} is {right.shape[:2]}")
        lab = label_pair(predictor, left, right, cfg)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **{k: v for k, v in lab.items() if k != "kept"})
        tmp.replace(target)
        meta["pairs"][name] = {"scale": float(lab["scale"]), "size": list(lab["disparity"].shape),
                               **{k: round(float(v), 4) for k, v in zip(
                                   ("lr", "scales", "edges", "sky", "confidence", "labelled"), lab["kept"])}}
        meta_path.write_text(json.dumps(meta, indent=1))
    return meta


# ----------------------------------------------------------------------------- the training source
@dataclass
class TeacherStereoConfig:
    root: str = "runs/labels"        # made by `ges pseudo-label` (its default --out)
    height: int = 192
    width: int = 384
    max_disp: float = 160.0          # accepted for a mix's shared keys; labels past it are masked by the loss
    min_labelled: float = 0.15       # a crop keeps at least this share of labelled pixels (best of 8 tries)
    set_weighting: str = "sqrt"      # sets drawn ~ sqrt(pairs) ("sqrt"), uniformly ("uniform"), or by pairs ("pairs")
    camera_prob: float = 0.8         # both views photometrically changed apart (the teacher saw them clean)
    max_error: float = 10.0          # px: the loss is clamped here on these labels (a teacher's gross errors)
    supervise_out_of_view: bool = True   # accepted for a mix's shared keys


@lru_cache(maxsize=4)
def _label_index(root: str) -> Tuple[Tuple[str, Tuple[str, ...]], ...]:
    base = Path(root)
    if not (base / "labels.json").is_file():
        raise FileNotFoundError(f"no pseudo-labels at {root}: make them first with `ges pseudo-label "
                                f"--out {root}` (docs/TRAINING.md)")
    sets: Dict[str, List[str]] = {}
    for f in sorted(base.rglob("*.npz")):
        if f.name.endswith(".tmp.npz"):
            continue
        sets.setdefault(str(f.parent.relative_to(base)), []).append(str(f))
    if not sets:
        raise FileNotFoundError(f"{root}: labels.json but no .npz labels")
    return tuple((k, tuple(v)) for k, v in sorted(sets.items()))


def set_probabilities(counts: Sequence[int], weighting: str) -> np.ndarray:
    counts_a = np.asarray(counts, np.float64)
    if weighting == "sqrt":
        w = np.sqrt(counts_a)
    elif weighting == "uniform":
        w = np.ones_like(counts_a)
    elif weighting == "pairs":
        w = counts_a
    else:
        raise ValueError(f"set_weighting must be sqrt, uniform or pairs, got {weighting!r}")
    return w / w.sum()


@lru_cache(maxsize=256)
def _load(path: str):
    with np.load(path, allow_pickle=False) as z:
        return z["left"], z["right"], z["disparity"], z["labelled"]


def camera_change(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One camera's photometric change: gain, gamma, per-channel colour, blur, noise."""
    x = img.astype(np.float32) / 255.0
    x = np.clip(x * rng.uniform(0.7, 1.3) * rng.uniform(0.92, 1.08, size=3)[None, None, :], 0, 1)
    x = x ** rng.uniform(0.75, 1.35)
    sigma = rng.uniform(0.0, 1.2)
    if sigma > 0.25:
        x = cv2.GaussianBlur(x, (0, 0), sigma)
    x = x + rng.normal(0, rng.uniform(0, 0.02), x.shape).astype(np.float32)
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_teacher_pair(rng: np.random.Generator, cfg: TeacherStereoConfig
                        ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """-> left, right (H, W, 3) uint8, teacher disparity (H, W) float32, labelled (H, W) bool."""
    index = _label_index(cfg.root)
    p = set_probabilities([len(files) for _, files in index], cfg.set_weighting)
    _, files = index[int(rng.choice(len(index), p=p))]
    left, right, disp, valid = _load(files[int(rng.integers(len(files)))])
    left_c, right_c, disp_c, valid_c = labelled_crop(left, right, disp, valid, cfg.height, cfg.width,
                                                     cfg.min_labelled, rng, where=cfg.root)
    if rng.random() < cfg.camera_prob:
        left_c, right_c = camera_change(left_c, rng), camera_change(right_c, rng)
    return left_c, right_c, disp_c, valid_c

