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
    (lambda m: setattr(m, "encoding", "yuv422"), "unsupported encoding"),
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
@given(encoding=st.sampled_from(sorted(ENC) + ["bogus", "RGB8", ""]), h=st.integers(-1, 9), w=st.integers(-1, 9),
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
