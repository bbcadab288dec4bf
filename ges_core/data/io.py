"""File formats: images, PFM, KITTI-style uint16 PNG disparity, scene-folder disparity, calib.txt.

Every reader raises ValueError/FileNotFoundError naming the file and what is wrong with it.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Tuple

import cv2
import numpy as np


def read_image(path: str) -> np.ndarray:
    """-> (H, W, 3) uint8 RGB (gray is replicated)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"{path}: not a readable image (corrupt or unsupported format)")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.shape[2] == 4:
        img = img[..., :3]
    return np.ascontiguousarray(img[..., ::-1])


def read_pfm(path: str) -> np.ndarray:
    """PFM: 'Pf' (1 channel) or 'PF' (3), rows stored bottom-up, negative scale = little-endian."""
    try:
        with open(path, "rb") as fh:
            header = fh.readline().strip()
            if header not in (b"PF", b"Pf"):
                raise ValueError(f"{path}: not a PFM file (header {header[:10]!r})")
            dims = fh.readline()
            while dims.startswith(b"#"):
                dims = fh.readline()
            m = re.match(rb"^\s*(\d+)\s+(\d+)\s*$", dims)
            if not m:
                raise ValueError(f"{path}: malformed PFM size line {dims[:40]!r}")
            width, height = int(m.group(1)), int(m.group(2))
            try:
                scale = float(fh.readline().strip())
            except ValueError:
                raise ValueError(f"{path}: malformed PFM scale line") from None
            channels = 3 if header == b"PF" else 1
            count = width * height * channels
            payload = fh.read()
            data = np.frombuffer(payload[: len(payload) // 4 * 4], dtype="<f4" if scale < 0 else ">f4")
    except FileNotFoundError:
        raise FileNotFoundError(f"PFM file not found: {path}") from None
    if data.size < count:
        raise ValueError(f"{path}: truncated PFM, {data.size} of {count} values present")
    arr = data[:count].reshape(height, width, channels) if channels == 3 else data[:count].reshape(height, width)
    return np.ascontiguousarray(np.flipud(arr)).astype(np.float32)


def write_pfm(path: str, array: np.ndarray) -> None:
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"write_pfm expects (H, W), got {array.shape}")
    height, width = array.shape
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(b"Pf\n%d %d\n-1\n" % (width, height))
        fh.write(np.flipud(array).astype("<f4").tobytes())
    os.replace(tmp, path)


def read_png_disparity(path: str, *, divisor: float, invalid: float = 0) -> Tuple[np.ndarray, np.ndarray]:
    """uint8/uint16 PNG or PGM disparity: value / divisor, `invalid` marks no ground truth."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"disparity file not found: {path}")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"{path}: not a readable disparity image (corrupt or unsupported format)")
    if raw.ndim == 3:
        raw = raw[..., 0]
    valid = raw != invalid
    return (raw.astype(np.float32) / divisor) * valid, valid


def read_disparity(path: str) -> np.ndarray:
    """PFM or KITTI PNG (uint16 / 256); invalid entries come back as inf (PFM) or 0."""
    if str(path).lower().endswith(".pfm"):
        d = read_pfm(path)
        return d[..., 0] if d.ndim == 3 else d
    disp, valid = read_png_disparity(path, divisor=256.0)
    return np.where(valid, disp, np.inf).astype(np.float32)


def read_scene_disparity(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """disp_left.* of a scene folder, decoded with the folder's meta.json (disparity_divisor, invalid_value:
    a number, "inf" (PFM: inf = no ground truth) or "none" (dense: every finite pixel has ground truth))."""
    meta_path = Path(path).parent / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
        divisor = float(meta.get("disparity_divisor", 1.0))
        invalid = meta.get("invalid_value", 0)
        dense = isinstance(invalid, str) and invalid.lower() == "none"
        no_value = invalid is None or dense or (isinstance(invalid, str) and invalid.lower() == "inf")
        marker = None if no_value else float(invalid)
    except FileNotFoundError:
        raise FileNotFoundError(f"meta.json not found beside {path}") from None
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"{meta_path}: bad meta.json ({exc}); invalid_value is a number, \"inf\" or \"none\"") from None
    if str(path).lower().endswith(".pfm"):
        d = read_pfm(path)
        d = d[..., 0] if d.ndim == 3 else d
        if dense:
            valid = np.isfinite(d)
        elif marker is None:
            valid = np.isfinite(d) & (d > 0)
        else:
            valid = np.isfinite(d) & (d != marker)
        return np.where(valid, d / divisor, 0).astype(np.float32), valid
    # dense: no stored value marks "no ground truth" (NaN equals nothing)
    invalid_png = float("nan") if dense else (0 if marker is None else marker)
    return read_png_disparity(path, divisor=divisor, invalid=invalid_png)


def read_mask(path: str) -> np.ndarray:
    raw = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if raw is None:
        raise ValueError(f"{path}: not a readable mask image")
    return raw > 127


def write_ply(path: str, xyz: np.ndarray, rgb: np.ndarray = None) -> int:
    """Binary little-endian PLY of the finite points; rgb (same leading shape, uint8) optional.
    Written to a temp file and renamed. Returns the number of points."""
    pts = xyz.reshape(-1, 3)
    keep = np.isfinite(pts).all(axis=1)
    pts = pts[keep].astype("<f4")
    props = ["property float x", "property float y", "property float z"]
    if rgb is not None:
        col = rgb.reshape(-1, 3)[keep].astype(np.uint8)
        props += ["property uchar red", "property uchar green", "property uchar blue"]
        rec = np.empty(len(pts), dtype=[("p", "<f4", 3), ("c", "u1", 3)])
        rec["p"], rec["c"] = pts, col
        body = rec.tobytes()
    else:
        body = pts.tobytes()
    head = "\n".join(["ply", "format binary_little_endian 1.0", f"element vertex {len(pts)}", *props, "end_header"]) + "\n"
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(head.encode("ascii"))
        fh.write(body)
    os.replace(tmp, path)
    return len(pts)


def cached_npz(path, compute) -> Tuple[dict, bool]:
    """The arrays kept in the .npz at `path`, or `compute()`'s (a dict of arrays) written there atomically (a run
    stopped mid-write leaves no partial file; an unreadable one is computed anew) -> (arrays, computed here)."""
    import zipfile
    from pathlib import Path
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}, False
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass
    arrays = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return arrays, True
