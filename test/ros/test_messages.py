"""Messages from arrays: calibration from CameraInfo (ROS 1 and ROS 2 names), the point cloud's layout and bands,
the reuse of large buffers."""
import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from ges_core.geometry import CalibrationError, point_cloud_xyz
from ges_ros.messages import calibration_from_camera_info, pointcloud_msg, rosbags_types, header, unpack_cloud


def info(fx=500.0, cx=100.0, cy=50.0, tx=0.0, w=200, h=100):
    return SimpleNamespace(p=[fx, 0, cx, tx, 0, fx, cy, 0, 0, 0, 1, 0], width=w, height=h)


def calib(doffs=4.0):
    return calibration_from_camera_info(info(), info(cx=100.0 - doffs, tx=-500.0 * 0.2))


@pytest.mark.parametrize("left,right,match", [
    (info(fx=0.0), info(tx=-100.0), "focal"),
    (info(), info(tx=0.0), "baseline"),
    (info(), info(tx=+100.0), "baseline"),
    (info(), info(fx=450.0, tx=-90.0), "differ"),
    (info(w=200), info(w=100, tx=-100.0), "200x100 but right is 100x100"),
])
def test_calibration_exceptions(left, right, match):
    with pytest.raises(CalibrationError, match=match):
        calibration_from_camera_info(left, right)


def test_ros1_camera_info_field_names():
    """A ROS 1 CameraInfo (read from a ROS 1 bag) names its matrices D K R P; the calibration reads either."""
    ros1 = [SimpleNamespace(P=m.p, width=m.width, height=m.height) for m in (info(), info(cx=96.0, tx=-100.0))]
    c = calibration_from_camera_info(*ros1)
    assert c == calib(doffs=4.0)


@pytest.mark.parametrize("avoid_padding,color,step", [(True, True, 16), (False, True, 32), (True, False, 12),
                                                      (False, False, 16)])
def test_cloud_layout_as_stereo_image_proc(avoid_padding, color, step):
    t = rosbags_types()
    c = calib(doffs=0.0)
    d = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    valid = np.ones((2, 3), bool)
    valid[0, 0] = False
    rgb = np.full((2, 3, 3), 7, np.uint8) if color else None
    msg = pointcloud_msg(t, header(t, 0, 0, "f"), d, valid, c, rgb, avoid_padding=avoid_padding)
    assert msg.point_step == step and msg.row_step == 3 * step and not msg.is_dense
    f = unpack_cloud(msg)
    xyz, _ = point_cloud_xyz(d, valid, c)
    np.testing.assert_array_equal(f["z"], xyz[..., 2])
    assert np.isnan(f["x"][0, 0])
    if color:
        assert f["rgb"].view(np.uint32)[0, 0] == 0x070707


@pytest.mark.parametrize("color", [True, False])
@pytest.mark.parametrize("avoid_padding", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_cloud_written_by_one_thread_or_two_matches_the_whole_image(avoid_padding, threads, color, monkeypatch):
    """One thread, or two with a half each (an odd row count), give the points of point_cloud_xyz, the colours and
    zero padding, whatever the buffer held before, in each of the four layouts."""
    from ges_ros import messages
    monkeypatch.setattr(messages, "PARALLEL_BYTES", 0 if threads == 2 else 1 << 40)
    dirty = lambda n: (lambda a: (a, a))(np.full(n, 0xAB, np.uint8))
    t = dataclasses.replace(rosbags_types(), buffer=dirty)
    c = calib(doffs=0.0)
    rng = np.random.default_rng(0)
    h, w = 7, 3000
    d = rng.uniform(0.5, 50, (h, w)).astype(np.float32)
    valid = rng.random((h, w)) > 0.2
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    msg = pointcloud_msg(t, header(t, 0, 0, "f"), d, valid, c, rgb if color else None, avoid_padding=avoid_padding)
    f = unpack_cloud(msg)
    xyz, ok = point_cloud_xyz(d, valid, c)
    for i, name in enumerate("xyz"):
        np.testing.assert_array_equal(f[name].view(np.uint32), xyz[..., i].view(np.uint32))
    words = np.frombuffer(msg.data, np.uint32).reshape(h, w, -1)
    assert words.shape[-1] == {(True, True): 4, (False, True): 8, (True, False): 3, (False, False): 4}[
        (avoid_padding, color)]
    used = [0, 1, 2]
    if color:
        r, g, b = (rgb[..., k].astype(np.uint32) for k in range(3))
        np.testing.assert_array_equal(f["rgb"].view(np.uint32), (r << 16) | (g << 8) | b)
        used.append(3 if avoid_padding else 4)
    assert not words[..., [k for k in range(words.shape[-1]) if k not in used]].any()


def test_large_message_buffers_are_reused_only_when_free():
    """A large field buffer comes back only once no message (or view) holds it: a held one is never overwritten."""
    t = rosbags_types()
    c = calib(doffs=0.0)
    h, w = 300, 300                                   # a 1.4 MB cloud (16 bytes a point): pooled
    d = np.full((h, w), 5.0, np.float32)
    valid = np.ones((h, w), bool)
    first = pointcloud_msg(t, header(t, 0, 0, "f"), d, valid, c, None, avoid_padding=False)
    kept, first_buffer = bytes(first.data), id(first.data)
    second = pointcloud_msg(t, header(t, 0, 0, "f"), 2 * d, valid, c, None, avoid_padding=False)
    assert second.data is not first.data and bytes(first.data) == kept     # the first is still held: untouched
    held = second.data
    del second
    third = pointcloud_msg(t, header(t, 0, 0, "f"), 3 * d, valid, c, None, avoid_padding=False)
    assert third.data is not held                     # a bare reference to the array keeps it too
    del first
    fourth = pointcloud_msg(t, header(t, 0, 0, "f"), 4 * d, valid, c, None, avoid_padding=False)
    assert id(fourth.data) == first_buffer            # free again: reused, not allocated
    assert unpack_cloud(fourth)["z"][0, 0] == pytest.approx(unpack_cloud(third)["z"][0, 0] * 3 / 4)


def test_cloud_depth_limits_and_non_positive_disparities_as_point_cloud_xyz():
    """The compiled writer's NaN rule is point_cloud_xyz's: invalid, d <= 0, nearer than min_depth or farther than
    max_depth; every other point is written, to the bit."""
    t = rosbags_types()
    c = calib(doffs=0.0)
    rng = np.random.default_rng(5)
    d = rng.uniform(-2, 60, (40, 50)).astype(np.float32)
    d[::6, ::7] = 0.0
    valid = rng.random((40, 50)) > 0.1
    for limits in ((0.0, 0.0), (1.5, 20.0), (0.0, 5.0)):
        msg = pointcloud_msg(t, header(t, 0, 0, "f"), d, valid, c, None, avoid_padding=True, min_depth=limits[0],
                             max_depth=limits[1])
        f = unpack_cloud(msg)
        xyz, ok = point_cloud_xyz(d, valid, c, min_depth=limits[0], max_depth=limits[1])
        assert 0 < ok.mean() < 1
        for i, name in enumerate("xyz"):
            np.testing.assert_array_equal(f[name].view(np.uint32), xyz[..., i].view(np.uint32))


def test_disparity_image_marks_invalid_pixels_below_min_disparity():
    from ges_ros.messages import disparity_msg
    t = rosbags_types()
    rng = np.random.default_rng(6)
    d = rng.uniform(1, 30, (20, 30)).astype(np.float32)
    valid = rng.random((20, 30)) > 0.3
    msg = disparity_msg(t, header(t, 0, 0, "f"), d, valid, calib(doffs=0.0), min_disparity=2.0, max_disparity=40.0,
                        delta_d=0.0625)
    img = np.frombuffer(bytes(msg.image.data), "<f4").reshape(20, 30)
    np.testing.assert_array_equal(img[valid], d[valid])
    assert (img[~valid] == 1.0).all()                # min_disparity - 1, stereo_image_proc's rule
