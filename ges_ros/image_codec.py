"""sensor_msgs/Image and CompressedImage <-> numpy, for rclpy messages and rosbags messages alike
(both expose height, width, encoding, is_bigendian, step, data). The one place that converts.

Supported encodings: mono8, mono16, rgb8, bgr8, rgba8, bgra8, rgb16, bgr16, rgba16, bgra16,
8UC1, 8UC3, 8UC4, 16UC1, 32FC1, bayer_rggb8/bggr8/gbrg8/grbg8 (and 16), uyvy, yuv422, yuv422_yuy2. Every malformed message raises ImageError saying what is wrong.
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

# encoding -> (channels, bytes per channel, channel order for RGB output, numpy kind)
_ENCODINGS = {
    "mono8": (1, 1, None, "u"), "8uc1": (1, 1, None, "u"),
    "mono16": (1, 2, None, "u"), "16uc1": (1, 2, None, "u"),
    "rgb8": (3, 1, (0, 1, 2), "u"), "bgr8": (3, 1, (2, 1, 0), "u"), "8uc3": (3, 1, (2, 1, 0), "u"),
    "rgba8": (4, 1, (0, 1, 2), "u"), "bgra8": (4, 1, (2, 1, 0), "u"), "8uc4": (4, 1, (2, 1, 0), "u"),
    "rgb16": (3, 2, (0, 1, 2), "u"), "bgr16": (3, 2, (2, 1, 0), "u"),
    "rgba16": (4, 2, (0, 1, 2), "u"), "bgra16": (4, 2, (2, 1, 0), "u"),
    "32fc1": (1, 4, None, "f"),
    # raw colour cameras: a Bayer mosaic (one channel) and packed 4:2:2 YUV (two bytes a pixel), as cv_bridge reads them
    **{f"bayer_{p}{bits}": (1, bits // 8, None, "u") for p in ("rggb", "bggr", "gbrg", "grbg") for bits in (8, 16)},
    "uyvy": (2, 1, None, "u"), "yuv422": (2, 1, None, "u"), "yuv422_yuy2": (2, 1, None, "u"),
}
# OpenCV names a Bayer pattern by its second row's first two pixels: ROS's rggb is OpenCV's BG (checked by a test)
_TO_RGB = {**{f"bayer_{p}{bits}": code for p, code in (("rggb", cv2.COLOR_BayerBG2RGB), ("bggr", cv2.COLOR_BayerRG2RGB),
                                                      ("gbrg", cv2.COLOR_BayerGR2RGB), ("grbg", cv2.COLOR_BayerGB2RGB))
              for bits in (8, 16)},
           "uyvy": cv2.COLOR_YUV2RGB_UYVY, "yuv422": cv2.COLOR_YUV2RGB_UYVY, "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2}
SUPPORTED_ENCODINGS = tuple(sorted(e for e in _ENCODINGS if not e[0].isdigit() and e != "32fc1")) + (
    "8UC1", "8UC3", "8UC4", "16UC1", "32FC1")
MAX_SIDE = 1 << 15


class ImageError(ValueError):
    """A message that cannot be turned into an image; the text says why."""


def _raw_bytes(data) -> memoryview:
    """bytes, bytearray, array.array('B') (rclpy) or a numpy array (rosbags) -> a byte view, no copy."""
    if isinstance(data, np.ndarray):
        return memoryview(np.ascontiguousarray(data).view(np.uint8).reshape(-1))
    try:
        return memoryview(data).cast("B")
    except TypeError:
        try:
            return memoryview(bytes(data))
        except (TypeError, ValueError) as exc:
            raise ImageError(f"image data is not a byte buffer ({type(data).__name__}: {exc})") from None


def image_to_array(msg) -> np.ndarray:
    """Image message -> (H, W) or (H, W, C) array in the message's own dtype and channel order."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    encoding = str(msg.encoding)
    spec = _ENCODINGS.get(encoding.lower())
    if spec is None:
        raise ImageError(f"unsupported encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    channels, depth, _order, kind = spec
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise ImageError(f"bad image size {width}x{height}")
    row = width * channels * depth
    if step < row:
        raise ImageError(f"step {step} is smaller than width*channels*bytes = {row} for {encoding} {width}x{height}")
    buf = _raw_bytes(msg.data)
    need = step * (height - 1) + row
    if len(buf) < need:
        raise ImageError(f"data is {len(buf)} bytes, {encoding} {width}x{height} with step {step} needs {need}")
    flat = np.frombuffer(buf, dtype=np.uint8, count=min(len(buf), step * height))
    if flat.size < step * height:            # last row may omit its padding
        flat = np.concatenate([flat, np.zeros(step * height - flat.size, np.uint8)])
    rows = flat.reshape(height, step)[:, :row]
    dtype = np.dtype(f"{'>' if msg.is_bigendian else '<'}{kind}{depth}")
    if step != row or depth > 1:
        rows = np.ascontiguousarray(rows)     # views need contiguous rows; 8-bit dense data is used as is
    arr = rows.view(dtype).reshape(height, width, channels)
    arr = arr.astype(dtype.newbyteorder("="), copy=False)
    return arr[..., 0] if channels == 1 else arr


def image_to_rgb8(msg) -> np.ndarray:
    """Any supported Image message -> (H, W, 3) uint8 RGB for the network."""
    arr = image_to_array(msg)
    encoding = str(msg.encoding).lower()
    channels, depth, order, kind = _ENCODINGS[encoding]
    if encoding in _TO_RGB:
        if encoding.startswith("bayer") and (msg.height % 2 or msg.width % 2):
            raise ImageError(f"{msg.encoding} image is {msg.width}x{msg.height}: a Bayer mosaic needs even sides")
        if encoding.startswith("yuv") or encoding == "uyvy":
            if msg.width % 2:
                raise ImageError(f"{msg.encoding} image is {msg.width} wide: 4:2:2 YUV needs an even width")
        rgb = cv2.cvtColor(np.ascontiguousarray(arr), _TO_RGB[encoding])
        return (rgb >> 8).astype(np.uint8) if rgb.dtype == np.uint16 else rgb
    if kind == "f":
        if not np.isfinite(arr).any():
            raise ImageError(f"{msg.encoding} image has no finite pixel")
        finite = np.isfinite(arr)
        lo, hi = float(arr[finite].min()), float(arr[finite].max())
        arr = np.where(finite, (arr - lo) / max(hi - lo, 1e-12) * 255, 0)
    elif depth == 2:
        arr = arr >> 8
    if arr.dtype != np.uint8:
        arr = arr.astype(np.uint8)
    if channels == 1:
        return np.repeat(arr[..., None], 3, axis=2)
    if tuple(order) == (0, 1, 2):
        return np.ascontiguousarray(arr[..., :3])
    return np.ascontiguousarray(arr[..., 2::-1])


def compressed_to_rgb8(msg) -> np.ndarray:
    """CompressedImage (jpeg/png) -> (H, W, 3) uint8 RGB."""
    buf = np.frombuffer(_raw_bytes(msg.data), np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None:
        raise ImageError(f"cannot decode CompressedImage (format {getattr(msg, 'format', '?')!r}, {buf.size} bytes)")
    return np.ascontiguousarray(img[..., ::-1])


def to_rgb8(msg) -> np.ndarray:
    return compressed_to_rgb8(msg) if hasattr(msg, "format") and not hasattr(msg, "encoding") else image_to_rgb8(msg)


def image_size(msg) -> Tuple[int, int]:
    """(height, width) of an Image or CompressedImage (decoding the latter)."""
    if hasattr(msg, "encoding"):
        return int(msg.height), int(msg.width)
    return compressed_to_rgb8(msg).shape[:2]
