"""Bags the way real cameras and drivers record them, written by rosbags inside each test: ROS 1 bags, camera_info
published once or stamped off its image, free-running cameras, bags without camera_info, driver topic names, and
the replay's answers (frames, or a non-zero exit that says what to do)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ges_ros.bag import BagReader, BagWriter, guess_topics
from ges_ros.messages import rosbags_types
from ges_ros.sample import stereo_messages

IMG, INFO = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo"


@pytest.fixture(scope="module")
def pair(motorcycle_small):
    left, right, gt, valid, cam = motorcycle_small
    return left[:96, :160].copy(), right[:96, :160].copy(), cam


def frames(pair, n, *, right_offset_ns=0, info_offset_ns=0, info_every=True, t0=100):
    """(topic suffix, msgtype, log time ns, message) of n frames at 10 Hz; the right image `right_offset_ns` after
    the left (free-running cameras), camera_info stamped `info_offset_ns` off, once only unless info_every."""
    left, right, cam = pair
    types = rosbags_types()
    out = []
    for k in range(n):
        t = (t0 * 10 + k) * 10 ** 8
        sec, ns = divmod(t, 10 ** 9)
        l_img, _, l_info, r_info = stereo_messages(types, left, right, cam, sec=sec, nanosec=ns)
        rsec, rns = divmod(t + right_offset_ns, 10 ** 9)
        r_img = stereo_messages(types, left, right, cam, sec=rsec, nanosec=rns)[1]
        isec, ins = divmod(t + info_offset_ns, 10 ** 9)
        infos = stereo_messages(types, left, right, cam, sec=isec, nanosec=ins)[2:]
        out += [("left/image_rect", IMG, t, l_img), ("right/image_rect", IMG, t + right_offset_ns, r_img)]
        if info_every or k == 0:
            out += [("left/camera_info", INFO, t, infos[0]), ("right/camera_info", INFO, t, infos[1])]
    return out


def write_ros2(path, msgs, ns="/cam"):
    w = BagWriter(str(path), overwrite=True)
    try:
        for topic, ty, t, m in sorted(msgs, key=lambda x: x[2]):
            w.write(topic if topic.startswith("/") else f"{ns}/{topic}", ty, t, m)
    finally:
        w.close()


def write_ros1(path, msgs, ns="/cam"):
    """A ROS 1 bag (rosbag1 format, ROS 1 message definitions: header seq, CameraInfo D K R P)."""
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore
    ts1 = get_typestore(Stores.ROS1_NOETIC)
    T = ts1.types
    w = Writer(Path(path))
    w.open()
    conns = {}
    try:
        for topic, ty, t, m in sorted(msgs, key=lambda x: x[2]):
            topic = topic if topic.startswith("/") else f"{ns}/{topic}"
            if topic not in conns:
                conns[topic] = w.add_connection(topic, ty, typestore=ts1)
            hdr = T["std_msgs/msg/Header"](seq=0, stamp=T["builtin_interfaces/msg/Time"](
                sec=m.header.stamp.sec, nanosec=m.header.stamp.nanosec), frame_id=m.header.frame_id)
            if ty == IMG:
                msg = T[IMG](header=hdr, height=m.height, width=m.width, encoding=m.encoding,
                             is_bigendian=m.is_bigendian, step=m.step, data=np.asarray(m.data, np.uint8))
            else:
                roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                           do_rectify=False)
                msg = T[INFO](header=hdr, height=m.height, width=m.width, distortion_model=m.distortion_model,
                              D=np.asarray(m.d), K=np.asarray(m.k), R=np.asarray(m.r), P=np.asarray(m.p),
                              binning_x=0, binning_y=0, roi=roi)
            w.write(conns[topic], t, ts1.serialize_ros1(msg, ty))
    finally:
        w.close()


def ges(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "ges_ros.cli", *map(str, args), "--no-progress"],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ})


def test_ros1_bag_replays_like_a_ros2_one_and_copies_converted_inputs(tmp_path, tiny_weights, pair):
    write_ros1(tmp_path / "in.bag", frames(pair, 3))
    r = ges("replay", tmp_path / "in.bag", "-o", tmp_path / "out", "--weights", tiny_weights, "--iters", "1",
            "--copy-inputs")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "frames processed: 3" in r.stdout
    out = BagReader(str(tmp_path / "out"))
    try:
        assert out.count["/stereo/disparity"] == 3 and out.count["/cam/left/camera_info"] == 3
        info = next(m for _, _, _, m, _ in out.messages(["/cam/right/camera_info"]))
        assert len(info.p) == 12 and info.p[3] < 0        # ROS 2 field names, readable as CDR
        img = next(m for _, _, _, m, _ in out.messages(["/cam/left/image_rect"]))
        assert (img.height, img.width) == pair[0].shape[:2]
    finally:
        out.close()


@pytest.mark.parametrize("case", ["latched_info", "info_1ms_off"])
def test_cached_camera_info_serves_every_frame(tmp_path, tiny_weights, pair, case):
    kw = {"info_every": False} if case == "latched_info" else {"info_offset_ns": 1_000_000}
    write_ros2(tmp_path / "in", frames(pair, 4, **kw))
    r = ges("replay", tmp_path / "in", "-o", tmp_path / "out", "--weights", tiny_weights, "--iters", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "frames processed: 4" in r.stdout


def test_free_running_cameras_need_approximate_sync_and_are_told_so(tmp_path, tiny_weights, pair):
    write_ros2(tmp_path / "in", frames(pair, 4, right_offset_ns=3_000_000))   # right 3 ms after left
    r = ges("replay", tmp_path / "in", "-o", tmp_path / "o1", "--weights", tiny_weights, "--iters", "1")
    assert r.returncode == 1 and "frames processed: 0" in r.stdout
    assert "exact sync paired none" in r.stderr and "3.0 ms" in r.stderr and "--approximate-sync" in r.stderr
    assert "unmatched" in r.stdout
    r = ges("replay", tmp_path / "in", "-o", tmp_path / "o2", "--weights", tiny_weights, "--iters", "1",
            "--slop", "0.01")
    assert r.returncode == 0 and "frames processed: 4" in r.stdout, r.stdout + r.stderr


def test_unmatched_images_at_the_end_are_counted(tmp_path, tiny_weights, pair):
    msgs = frames(pair, 3)
    msgs += [m for m in frames(pair, 1, t0=200) if m[0] == "right/image_rect"]    # a right image without a left
    write_ros2(tmp_path / "in", msgs)
    r = ges("replay", tmp_path / "in", "-o", tmp_path / "out", "--weights", tiny_weights, "--iters", "1")
    assert r.returncode == 0 and "frames processed: 3" in r.stdout
    assert "unmatched at the end: 1 {'/cam/right/image_rect': 1}" in r.stdout


def test_bag_without_camera_info_with_a_calibration_instead(tmp_path, tiny_weights, pair):
    """EuRoC/Kalibr-style: cam0/cam1 images, no camera_info. The error says what to pass; a calibration file or
    f/baseline makes frames, with the depth that calibration gives."""
    msgs = [(f"/{ 'cam0' if t.startswith('left') else 'cam1'}/image_raw", ty, ts, m)
            for t, ty, ts, m in frames(pair, 2) if ty == IMG]
    write_ros2(tmp_path / "in", msgs)
    r = ges("replay", tmp_path / "in", "-o", tmp_path / "o1", "--weights", tiny_weights, "--iters", "1")
    assert r.returncode == 2 and "no camera_info topic for /cam0/image_raw" in r.stderr and "--calib" in r.stderr
    r = ges("replay", tmp_path / "in", "-o", tmp_path / "o2", "--weights", tiny_weights, "--iters", "1",
            "--f", "400", "--baseline", "0.11")
    assert r.returncode == 0 and "frames processed: 2" in r.stdout, r.stdout + r.stderr
    out = BagReader(str(tmp_path / "o2"))
    d = next(m for _, _, _, m, _ in out.messages(["/stereo/disparity"]))
    out.close()
    assert d.f == pytest.approx(400) and d.t == pytest.approx(0.11)
    kitti = tmp_path / "calib.txt"
    kitti.write_text("P0: 400 0 80 0 0 400 48 0 0 0 1 0\nP1: 400 0 80 -44 0 400 48 0 0 0 1 0\n")
    r = ges("replay", tmp_path / "in", "-o", tmp_path / "o3", "--weights", tiny_weights, "--iters", "1",
            "--calib", kitti, "--namespace", "/depth")
    assert r.returncode == 0, r.stdout + r.stderr
    out = BagReader(str(tmp_path / "o3"))
    d = next(m for _, _, _, m, _ in out.messages(["/depth/disparity"]))
    out.close()
    assert d.t == pytest.approx(0.11)


def test_ros2_folder_named_like_a_ros1_bag(tmp_path, tiny_weights, pair):
    """`ros2 bag record -o output.bag` makes a folder named output.bag; it is a ROS 2 bag."""
    write_ros2(tmp_path / "output.bag", frames(pair, 2))
    r = ges("replay", tmp_path / "output.bag", "-o", tmp_path / "out", "--weights", tiny_weights, "--iters", "1")
    assert r.returncode == 0 and "frames processed: 2" in r.stdout, r.stdout + r.stderr


def test_misspelt_parameter_file_key_is_an_error(tmp_path, tiny_weights, pair):
    write_ros2(tmp_path / "in", frames(pair, 1))
    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    itres: 2\n")
    r = ges("replay", tmp_path / "in", "-o", tmp_path / "out", "--weights", tiny_weights, "--params", params)
    assert r.returncode == 2 and "itres" in r.stderr and "'iters'" in r.stderr


def test_guess_topics_by_counts_namespaces_and_driver_names():
    types = {"/a/left/image_rect": IMG, "/a/right/image_rect": IMG, "/a/left/camera_info": INFO,
             "/a/right/camera_info": INFO, "/b/left/image_rect": IMG, "/b/right/image_rect": IMG,
             "/b/left/camera_info": INFO, "/b/right/camera_info": INFO}
    # an empty pair is passed over for one that has messages
    t = guess_topics(types, counts={**{k: 5 for k in types}, "/a/left/image_rect": 0})
    assert (t.left, t.left_info, t.right_info) == ("/b/left/image_rect", "/b/left/camera_info", "/b/right/camera_info")
    # PR2: narrow and wide stereo side by side; each image takes its own namespace's camera_info
    pr2 = {f"/{s}_stereo/{side}/{kind}": ty for s in ("wide", "narrow") for side in ("left", "right")
           for kind, ty in (("image_rect", IMG), ("camera_info", INFO))}
    t = guess_topics(pr2, {"left": "/narrow_stereo/left/image_rect"})
    assert t.right == "/narrow_stereo/right/image_rect" and t.right_info == "/narrow_stereo/right/camera_info"
    realsense = {"/camera/infra1/image_rect_raw": IMG, "/camera/infra2/image_rect_raw": IMG,
                 "/camera/infra1/camera_info": INFO, "/camera/infra2/camera_info": INFO,
                 "/camera/color/image_raw": IMG}
    t = guess_topics(realsense)
    assert (t.left, t.right, t.right_info) == ("/camera/infra1/image_rect_raw", "/camera/infra2/image_rect_raw",
                                              "/camera/infra2/camera_info")
    zed = {"/zed/zed_node/left/image_rect_color": IMG, "/zed/zed_node/right/image_rect_color": IMG,
           "/zed/zed_node/left/camera_info": INFO, "/zed/zed_node/right/camera_info": INFO}
    assert guess_topics(zed).left_info == "/zed/zed_node/left/camera_info"
    euroc = {"/cam0/image_raw": IMG, "/cam1/image_raw": IMG, "/imu0": "sensor_msgs/msg/Imu"}
    t = guess_topics(euroc, need_info=False)
    assert (t.left, t.right, t.left_info) == ("/cam0/image_raw", "/cam1/image_raw", None)
