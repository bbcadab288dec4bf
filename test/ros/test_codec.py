"""Image message <-> array: every encoding, step padding, endianness, and fuzzing (hypothesis)."""
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ges_ros.image_codec import ImageError, image_to_array, image_to_rgb8

ENC = {"mono8": (1, np.uint8), "mono16": (1, np.uint16), "rgb8": (3, np.uint8), "bgr8": (3, np.uint8),
       "rgba8": (4, np.uint8), "bgra8": (4, np.uint8), "rgb16": (3, np.uint16), "bgr16": (3, np.uint16),
       "8UC1": (1, np.uint8), "8UC3": (3, np.uint8), "32FC1": (1, np.float32)}


def msg(arr, encoding, *, pad=0, bigendian=False):
    a = np.ascontiguousarray(arr)
    h, w = a.shape[:2]
    a = a.astype(a.dtype.newbyteorder(">" if bigendian else "<"))
    rows = a.reshape(h, -1).view(np.uint8).reshape(h, -1)
    rows = np.concatenate([rows, np.zeros((h, pad), np.uint8)], axis=1)
    return SimpleNamespace(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian), step=rows.shape[1],
                           data=rows.tobytes())


@pytest.mark.parametrize("encoding", sorted(ENC))
@pytest.mark.parametrize("pad,bigendian", [(0, False), (5, False), (3, True)])
def test_roundtrip_every_encoding(encoding, pad, bigendian):
    ch, dt = ENC[encoding]
    rng = np.random.default_rng(0)
    shape = (5, 7) if ch == 1 else (5, 7, ch)
    arr = rng.random(shape).astype(dt) if dt == np.float32 else rng.integers(0, np.iinfo(dt).max, shape, dtype=dt)
    out = image_to_array(msg(arr, encoding, pad=pad, bigendian=bigendian))
    np.testing.assert_array_equal(out, arr)
    rgb = image_to_rgb8(msg(arr, encoding, pad=pad, bigendian=bigendian))
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8


def test_channel_order_to_rgb():
    px = np.array([[[10, 20, 30]]], np.uint8)
    assert image_to_rgb8(msg(px, "rgb8"))[0, 0].tolist() == [10, 20, 30]
    assert image_to_rgb8(msg(px, "bgr8"))[0, 0].tolist() == [30, 20, 10]
    assert image_to_rgb8(msg(np.array([[[1, 2, 3, 4]]], np.uint8), "bgra8"))[0, 0].tolist() == [3, 2, 1]
    assert image_to_rgb8(msg(np.array([[0x1234]], np.uint16), "mono16"))[0, 0].tolist() == [0x12] * 3


@pytest.mark.parametrize("mutate,match", [
    (lambda m: setattr(m, "encoding", "nv21"), "unsupported encoding"),
    (lambda m: setattr(m, "data", m.data[:-10]), "needs"),
    (lambda m: setattr(m, "step", 3), "step 3 is smaller"),
    (lambda m: setattr(m, "width", 0), "bad image size"),
])
def test_exception_messages(mutate, match):
    m = msg(np.zeros((4, 4, 3), np.uint8), "rgb8")
    mutate(m)
    with pytest.raises(ImageError, match=match):
        image_to_array(m)


def test_nan_float_image_is_an_error():
    with pytest.raises(ImageError, match="no finite pixel"):
        image_to_rgb8(msg(np.full((3, 3), np.nan, np.float32), "32FC1"))


@settings(max_examples=300, deadline=None)
@given(encoding=st.sampled_from(sorted(ENC) + ["bogus", "RGB8", "", "bayer_rggb8", "bayer_gbrg16", "uyvy",
                                                "yuv422_yuy2"]), h=st.integers(-1, 9), w=st.integers(-1, 9),
       step=st.integers(-4, 80), big=st.booleans(), data=st.binary(max_size=400))
def test_fuzz_never_crashes(encoding, h, w, step, big, data):
    m = SimpleNamespace(height=h, width=w, encoding=encoding, is_bigendian=big, step=step, data=data)
    try:
        out = image_to_rgb8(m)
    except ImageError:
        return
    assert out.shape == (h, w, 3) and out.dtype == np.uint8


@settings(max_examples=100, deadline=None)
@given(encoding=st.sampled_from(sorted(ENC)), h=st.integers(1, 6), w=st.integers(1, 6), pad=st.integers(0, 7),
       big=st.booleans(), cut=st.integers(0, 30), seed=st.integers(0, 100))
def test_fuzz_valid_or_truncated(encoding, h, w, pad, big, cut, seed):
    ch, dt = ENC[encoding]
    rng = np.random.default_rng(seed)
    shape = (h, w) if ch == 1 else (h, w, ch)
    arr = rng.random(shape).astype(dt) if dt == np.float32 else rng.integers(0, 200, shape).astype(dt)
    m = msg(arr, encoding, pad=pad, bigendian=big)
    m.data = m.data[: max(0, len(m.data) - cut)]
    need = m.step * (h - 1) + w * ch * np.dtype(dt).itemsize
    if len(m.data) < need:
        with pytest.raises(ImageError, match="needs"):
            image_to_array(m)
    else:
        np.testing.assert_array_equal(image_to_array(m), arr)


def _smooth_rgb(h=64, w=96):
    import cv2
    rng = np.random.default_rng(1)
    return cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 4).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_mosaics_decode_to_their_colours(pattern, bits):
    """A raw camera's mosaic, each ROS pattern name (the colour at (0,0), (0,1), (1,0), (1,1)), demosaiced back to
    the image it was sampled from; the wrong pattern would swap red and blue."""
    rgb = _smooth_rgb()
    mosaic = np.zeros(rgb.shape[:2], np.uint16 if bits == 16 else np.uint8)
    for (dy, dx), colour in zip(((0, 0), (0, 1), (1, 0), (1, 1)), pattern):
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, "rgb".index(colour)].astype(mosaic.dtype) * (257 if bits == 16 else 1)
    out = image_to_rgb8(msg(mosaic, f"bayer_{pattern}{bits}"))
    err = np.abs(out.astype(int) - rgb).mean(axis=(0, 1))
    assert out.shape == rgb.shape and err.max() < 6, err
    with pytest.raises(ImageError, match="even"):
        image_to_rgb8(msg(mosaic[:-1], f"bayer_{pattern}{bits}"))


@pytest.mark.parametrize("encoding,order", [("uyvy", "UYVY"), ("yuv422", "UYVY"), ("yuv422_yuy2", "YUYV")])
def test_yuv422_decodes_to_rgb(encoding, order):
    """Packed 4:2:2 YUV (BT.601, video range as OpenCV reads it), two bytes a pixel, in either byte order."""
    rgb = _smooth_rgb().astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    u2, v2 = (c.reshape(c.shape[0], -1, 2).mean(axis=2) for c in (u, v))   # one U and V per two pixels
    packed = np.zeros((rgb.shape[0], rgb.shape[1] // 2, 4))
    planes = {"Y0": y[:, 0::2], "Y1": y[:, 1::2], "U": u2, "V": v2}
    names = ["U", "Y0", "V", "Y1"] if order == "UYVY" else ["Y0", "U", "Y1", "V"]
    for k, name in enumerate(names):
        packed[..., k] = planes[name]
    data = np.round(packed).clip(0, 255).astype(np.uint8).reshape(rgb.shape[0], rgb.shape[1], 2)
    out = image_to_rgb8(msg(data, encoding))
    assert out.shape == rgb.shape
    assert np.abs(out.astype(float) - rgb).mean() < 4
