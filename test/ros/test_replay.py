"""Bag replay without ROS: topics, counts, stamps, identity with the node's processing, broken bags, demo pieces."""
import os
import time

import numpy as np
import pytest

from ges_core import load_predictor
from ges_ros.bag import BagError, BagReader, BagWriter, guess_topics
from ges_ros.messages import rosbags_types, unpack_cloud
from ges_ros.processing import ProcessingParams, StereoProcessor
from ges_ros.replay import replay
from ges_ros.sample import stereo_messages

NS = "/cam"
TOPICS = [f"{NS}/left/image_rect", f"{NS}/right/image_rect", f"{NS}/left/camera_info", f"{NS}/right/camera_info"]
TYPES = ["sensor_msgs/msg/Image"] * 2 + ["sensor_msgs/msg/CameraInfo"] * 2


def write_bag(path, pair, cam, frames=3, storage="mcap", extra_right_only=0):
    left, right = pair
    types = rosbags_types()
    w = BagWriter(str(path), storage=storage, overwrite=True)
    try:
        for k in range(frames):
            t = (100 + k) * 10 ** 9
            for topic, ty, msg in zip(TOPICS, TYPES, stereo_messages(types, left, right, cam, sec=100 + k)):
                w.write(topic, ty, t, msg)
        for k in range(extra_right_only):
            t = (200 + k) * 10 ** 9
            msgs = stereo_messages(types, left, right, cam, sec=200 + k)
            w.write(TOPICS[1], TYPES[1], t, msgs[1])
    finally:
        w.close()


@pytest.fixture(scope="module")
def small_pair(motorcycle_small):
    left, right, gt, valid, cam = motorcycle_small
    return left[:96, :160].copy(), right[:96, :160].copy(), cam


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_replay_outputs_match_the_node_processing(tmp_path, tiny_weights, small_pair, storage):
    left, right, cam = small_pair
    write_bag(tmp_path / "in", (left, right), cam, frames=3, storage=storage, extra_right_only=1)
    pred = load_predictor(str(tiny_weights))
    params = ProcessingParams.from_dict({"iters": 2})
    s = replay(str(tmp_path / "in"), str(tmp_path / "out"), pred, params=params, progress=False, log=lambda *_: None)
    assert s.frames == 3 and s.error is None
    assert s.topics == tuple(TOPICS)
    assert s.dropped == {f"unmatched {TOPICS[1]}": 0} or sum(s.dropped.values()) <= 1
    r = BagReader(str(tmp_path / "out"))
    assert r.count == {"/stereo/disparity": 3, "/stereo/points2": 3, "/stereo/confidence": 3, "/stereo/depth": 3,
                       "/stereo/depth/camera_info": 3}
    msgs = [(t, m) for t, _, _, m, _ in r.messages(list(r.count))]
    r.close()
    stamps = sorted({m.header.stamp.sec for t, m in msgs})
    assert stamps == [100, 101, 102]
    # the same processing path as the node: identical messages for the same input
    proc = StereoProcessor(load_predictor(str(tiny_weights)), params, rosbags_types())
    ref = proc.process(*stereo_messages(rosbags_types(), left, right, cam, sec=100))
    got = next(m for t, m in msgs if t == "/stereo/disparity" and m.header.stamp.sec == 100)
    assert np.array_equal(np.asarray(got.image.data), np.asarray(ref.disparity.image.data))
    for field in ("f", "t", "min_disparity", "max_disparity"):       # float32 on the wire
        assert np.float32(getattr(got, field)) == np.float32(getattr(ref.disparity, field))
    cloud = next(m for t, m in msgs if t == "/stereo/points2" and m.header.stamp.sec == 100)
    np.testing.assert_array_equal(unpack_cloud(cloud)["z"], unpack_cloud(ref.points)["z"])
    # depth: f T / d of the written disparity where it is valid, NaN elsewhere, its camera_info at the same stamp
    depth = next(m for t, m in msgs if t == "/stereo/depth" and m.header.stamp.sec == 100)
    info = next(m for t, m in msgs if t == "/stereo/depth/camera_info" and m.header.stamp.sec == 100)
    d = np.frombuffer(bytes(got.image.data), "<f4").reshape(got.image.height, got.image.width)
    z = np.frombuffer(bytes(depth.data), "<f4").reshape(d.shape)
    shown = d >= got.min_disparity
    np.testing.assert_allclose(z[shown], got.f * got.t / d[shown], rtol=1e-3)
    assert np.isnan(z[~shown]).all() and depth.encoding == "32FC1"
    assert (info.header.stamp.sec, info.header.stamp.nanosec, info.header.frame_id, info.width, info.height) == \
        (depth.header.stamp.sec, depth.header.stamp.nanosec, depth.header.frame_id, depth.width, depth.height)


def test_guess_topics_and_errors():
    types = {"/a/left/image_raw": "sensor_msgs/msg/Image", "/a/left/image_rect": "sensor_msgs/msg/Image",
             "/a/right/image_rect": "sensor_msgs/msg/Image", "/a/left/camera_info": "sensor_msgs/msg/CameraInfo",
             "/a/right/camera_info": "sensor_msgs/msg/CameraInfo"}
    t = guess_topics(types)
    assert t.left == "/a/left/image_rect" and t.right_info == "/a/right/camera_info"
    with pytest.raises(BagError, match="camera_info"):
        guess_topics({k: v for k, v in types.items() if "info" not in k})
    with pytest.raises(BagError, match="/nope"):
        guess_topics(types, {"left": "/nope"})


def test_truncated_mcap_keeps_what_was_processed(tmp_path, tiny_weights, small_pair):
    left, right, cam = small_pair
    write_bag(tmp_path / "in", (left, right), cam, frames=6, storage="mcap")
    f = next((tmp_path / "in").glob("*.mcap"))
    data = f.read_bytes()
    f.write_bytes(data[: int(len(data) * 0.6)])             # a recording cut short
    pred = load_predictor(str(tiny_weights))
    s = replay(str(tmp_path / "in"), str(tmp_path / "out"), pred, params=ProcessingParams.from_dict({"iters": 1}),
               progress=False, log=lambda *_: None)
    assert s.error is not None and "breaks off" in s.error
    assert 1 <= s.frames < 6
    r = BagReader(str(tmp_path / "out"))                      # the output bag is complete and readable
    assert r.count["/stereo/disparity"] == s.frames
    r.close()


def test_truncated_sqlite_is_a_clear_error(tmp_path, small_pair):
    left, right, cam = small_pair
    write_bag(tmp_path / "in", (left, right), cam, frames=2, storage="sqlite3")
    db = next((tmp_path / "in").glob("*.db3"))
    db.write_bytes(db.read_bytes()[:5000])
    with pytest.raises(BagError, match="cannot open bag"):
        BagReader(str(tmp_path / "in"))


def test_corrupt_bag_is_a_clear_error(tmp_path):
    (tmp_path / "junk.mcap").write_bytes(b"\x89MCAP0\r\n garbage")
    with pytest.raises(BagError, match="junk.mcap"):
        BagReader(str(tmp_path / "junk.mcap"))
    with pytest.raises(BagError, match="not found"):
        BagReader(str(tmp_path / "missing"))


def test_interrupt_closes_the_output_bag(tmp_path, tiny_weights, small_pair, monkeypatch):
    left, right, cam = small_pair
    write_bag(tmp_path / "in", (left, right), cam, frames=3)
    pred = load_predictor(str(tiny_weights))
    real = pred.predict
    calls = {"n": 0}

    def interrupting(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(pred, "predict", interrupting)
    s = replay(str(tmp_path / "in"), str(tmp_path / "out"), pred, params=ProcessingParams.from_dict(
        {"iters": 1, "input_scale": 1.0}), progress=False, log=lambda *_: None)      # one predict a pair
    assert s.interrupted and s.frames == 1
    r = BagReader(str(tmp_path / "out"))
    assert r.count["/stereo/disparity"] == 1
    r.close()


def test_replay_cli_exit_codes(tmp_path, tiny_weights, small_pair):
    import subprocess
    import sys
    left, right, cam = small_pair
    write_bag(tmp_path / "in", (left, right), cam, frames=2)
    env = {**os.environ}
    r = subprocess.run([sys.executable, "-m", "ges_ros.cli", "replay", str(tmp_path / "in"), "-o", str(tmp_path / "o"),
                        "--weights", str(tiny_weights), "--iters", "1", "--no-progress"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "frames processed: 2" in r.stdout and "stereo topics" in r.stdout
    r = subprocess.run([sys.executable, "-m", "ges_ros.cli", "replay", str(tmp_path / "nothing"), "-o",
                        str(tmp_path / "o2"), "--weights", str(tiny_weights)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "nothing" in r.stderr


def test_demo_sample_bag(tmp_path):
    from ges_ros.demo import INPUT_TOPICS, write_sample_bag
    write_sample_bag(tmp_path / "bag", frames=2, period_s=1.0)
    r = BagReader(str(tmp_path / "bag"))
    assert r.count == {t: 2 for t in INPUT_TOPICS}
    info = next(m for t, _, _, m, _ in r.messages([INPUT_TOPICS[3]]))
    r.close()
    # the real motorcycle calibration: f, cx_right = cx + doffs, P[3] = -f * baseline
    assert info.p[0] == pytest.approx(994.978) and info.p[2] == pytest.approx(311.193 + 31.086)
    assert info.p[3] == pytest.approx(-994.978 * 0.193001)


def test_play_publishes_the_bag_over_dds(tmp_path, small_pair):
    import threading
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CameraInfo, Image
    from ges_ros.play import play, qos
    left, right, cam = small_pair
    write_bag(tmp_path / "in", (left, right), cam, frames=3)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("play_test", context=ctx)
    got = {t: [] for t in TOPICS}
    for t, ty in zip(TOPICS, (Image, Image, CameraInfo, CameraInfo)):
        node.create_subscription(ty, t, lambda m, t=t: got[t].append(m), qos(True))
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    try:
        sent = play(node, str(tmp_path / "in"), rate=0, wait_for_subscribers=10.0)
        assert sent == 12
        end = time.monotonic() + 20
        while time.monotonic() < end and sum(map(len, got.values())) < 12:
            time.sleep(0.05)
        assert {t: len(v) for t, v in got.items()} == {t: 3 for t in TOPICS}
        img = got[TOPICS[0]][0]
        assert (img.height, img.width, img.encoding) == (96, 160, "rgb8") and img.header.stamp.sec == 100
    finally:
        ex.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def test_ges_play_takes_a_namespace_and_ros_arguments(tmp_path, small_pair):
    """`ges play BAG --namespace /cam1 --ros-args -r FROM:=TO`: the bag's /stereo/... topics go out as /cam1/...,
    and ROS's remapping applies on top (a second camera's bag played beside the first)."""
    import subprocess
    import sys
    import threading
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CameraInfo, Image
    from ges_ros.play import qos, renamed
    assert renamed(TOPICS, "/cam1") == {t: "/cam1/" + t.split("/", 2)[2] for t in TOPICS}
    assert renamed(["/a/b/x", "/a/c/y"], "") == {"/a/b/x": "/b/x", "/a/c/y": "/c/y"}
    assert renamed(TOPICS, None) == {t: t for t in TOPICS}
    left, right, cam = small_pair
    write_bag(tmp_path / "in", (left, right), cam, frames=2)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("play_ns_test", context=ctx)
    got = {"/cam1/left/image_rect": [], "/elsewhere/info": []}
    node.create_subscription(Image, "/cam1/left/image_rect", lambda m: got["/cam1/left/image_rect"].append(m),
                             qos(True))
    node.create_subscription(CameraInfo, "/elsewhere/info", lambda m: got["/elsewhere/info"].append(m), qos(True))
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    try:
        r = subprocess.run([sys.executable, "-m", "ges_ros.cli", "play", str(tmp_path / "in"), "--rate", "0",
                            "--namespace", "/cam1", "--ros-args", "-r", "/cam1/left/camera_info:=/elsewhere/info"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        end = time.monotonic() + 20
        while time.monotonic() < end and min(map(len, got.values())) < 2:
            time.sleep(0.05)
        assert {t: len(v) for t, v in got.items()} == {t: 2 for t in got}
    finally:
        ex.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    bad = subprocess.run([sys.executable, "-m", "ges_ros.cli", "replay", "x", "-o", "y", "--ros-args", "-r", "a:=b"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--ros-args is taken by `ges play` only" in bad.stderr
