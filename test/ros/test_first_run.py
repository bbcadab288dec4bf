"""A new user's first run (issue #29), with real processes and messages: the node started first and `ges play`
second in their own processes on Fast DDS's default transports, a subscriber in a third; start-up errors; --help;
a backend that cannot run; and the runtime install without the test extra."""
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ges_ros.bag import BagWriter
from ges_ros.messages import rosbags_types
from ges_ros.sample import MOTORCYCLE, motorcycle, stereo_messages

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
TOPICS = ["/stereo/left/image_rect", "/stereo/right/image_rect", "/stereo/left/camera_info",
          "/stereo/right/camera_info"]
TYPES = ["sensor_msgs/msg/Image"] * 2 + ["sensor_msgs/msg/CameraInfo"] * 2


def user_env(**extra):
    """The environment of a user's shell: Fast DDS's default transports (the suite's LARGE_DATA removed)."""
    env = dict(os.environ)
    env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    env.update(extra)
    return env


class Process:
    """A child process whose output lines are collected as they come."""

    def __init__(self, args, env, cwd=ROOT):
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     cwd=str(cwd))
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                time.sleep(0.2)
                break
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} within {timeout} s; output:\n" + "\n".join(self.lines))

    def stop(self, sig=None):
        import signal
        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        return "\n".join(self.lines)


def write_bag(path, frames: int, period_s: float):
    left, right, _, _ = motorcycle()          # 741x500 rgb8: 1.1 MB a frame, a real camera's size class
    types = rosbags_types()
    w = BagWriter(str(path), storage="mcap", overwrite=True)
    try:
        for k in range(frames):
            t = int((100 + k * period_s) * 1e9)
            for topic, ty, msg in zip(TOPICS, TYPES, stereo_messages(types, left, right, MOTORCYCLE,
                                                                      sec=100 + k * int(period_s))):
                w.write(topic, ty, t, msg)
    finally:
        w.close()


def play_bag(bag, env):
    """`ges play BAG` in its own process, as a user runs it; -> its output."""
    play = subprocess.run([sys.executable, "-m", "ges_ros.cli", "play", str(bag)], env=env, cwd=str(ROOT),
                          capture_output=True, text=True, timeout=120)
    assert play.returncode == 0, play.stdout + play.stderr
    return play.stdout + play.stderr


def frames_through(node, bag, env, frames: int, *, idle_s: float = 0.0):
    """Once the node says it is ready: a listener in a third process, then `ges play` of `bag` -> (the stamps the
    listener got, sorted; its output; the node's log; `ges play`'s output). The node is stopped at the end."""
    listener, played = None, ""
    try:
        node.wait_for("ready", 120)
        listener = Process([sys.executable, str(HERE / "listener.py"), str(frames), "60"], env)
        listener.wait_for("listening", 30)
        time.sleep(idle_s)
        played = play_bag(bag, env)
        listener.wait_for("done", 60)
        out = listener.stop()
    finally:
        if listener is not None:
            listener.stop()
        log = node.stop()
    return sorted(int(x) for x in out.splitlines() if x.isdigit()), out, log, played


def test_node_first_then_ges_play_every_frame_arrives(tmp_path, tiny_weights):
    """The README's way: the node started first, `ges play` of a bag second, frames two seconds apart, a user's
    subscriber in a third process, Fast DDS's default transports. Every frame reaches the subscriber, the first
    (once lost to the best-effort -> reliable switch) and the last (once lost when `ges play` shut down before
    reliable subscribers had it), and no false "nothing on ..." warning is logged."""
    frames = 4
    bag = tmp_path / "six"
    write_bag(bag, frames, 2.0)
    env = user_env(ROS_DOMAIN_ID=str(150 + os.getpid() % 50))
    node = Process([sys.executable, "-m", "ges_ros.stereo_node", "--ros-args", "-r", "__ns:=/stereo",
                    "-p", f"weights:={tiny_weights}", "-p", "backend:=torch", "-p", "no_input_warning_seconds:=3.0"],
                   env)
    # the node idles with no publisher for a while, as it does before a driver starts
    got, out, log, played = frames_through(node, bag, env, frames, idle_s=4.0)
    assert f"published {frames * 4} messages" in played
    context = out + "\n--- node:\n" + log + "\n--- play:\n" + played
    # every frame reached the node and formed its pair; the first and the last reach the subscriber (the first's
    # left image, repaired by the transport seconds late, can arrive right behind the second's: both are kept,
    # nothing was computing); one between may be superseded by design (a pair formed while the worker is busy
    # with an earlier one replaces the one waiting)
    assert f"pairs_in={frames}" in log, context
    superseded = int(log.split("'superseded': ")[1].split("}")[0].split(",")[0]) if "'superseded'" in log else 0
    assert got[0] == 100 and got[-1] == 100 + 2 * (frames - 1) and len(got) == frames - superseded, context
    assert superseded <= 1, context
    assert "check the topic remapping" not in log, log


def test_first_start_with_a_calibration_file_compiles_before_ready_and_loses_no_frame(tmp_path, tiny_weights):
    """An empty compile cache, the openvino backend and calibration:=FILE: the network is compiled for the file's
    image size before the ready line, which says so; every frame `ges play` sends after it is answered."""
    from ges_core.ov_backend import openvino_missing
    if openvino_missing():
        pytest.skip(f"the openvino backend is not installed here ({openvino_missing()})")
    frames = 4
    bag = tmp_path / "four"
    # 2 s apart: a pair the node drops because the next came while an inference was stalled (seen at 1 s apart with
    # training beside the suite) is overload, not the first compile this test is about
    write_bag(bag, frames, 2.0)
    m = MOTORCYCLE
    calib = tmp_path / "calib.txt"
    calib.write_text(f"cam0=[{m.f} 0 {m.cx}; 0 {m.f} {m.cy}; 0 0 1]\ncam1=[{m.f} 0 {m.cx + m.doffs}; 0 {m.f} {m.cy}; "
                     f"0 0 1]\ndoffs={m.doffs}\nbaseline={m.baseline * 1000}\nwidth=741\nheight=500\n")
    env = user_env(ROS_DOMAIN_ID=str(150 + (os.getpid() + 3) % 50), GES_CACHE_DIR=str(tmp_path / "empty_cache"))
    node = Process([sys.executable, "-m", "ges_ros.stereo_node", "--ros-args", "-r", "__ns:=/stereo",
                    "-p", f"weights:={tiny_weights}", "-p", "backend:=openvino", "-p", "precision:=fp32",
                    "-p", f"calibration:={calib}", "-p", "min_depth:=2.0"], env)
    got, out, log, _ = frames_through(node, bag, env, frames)
    ready = next(line for line in log.splitlines() if "ready:" in line)
    assert "network compiled for 741x500" in ready, log
    assert got == [100 + 2 * k for k in range(frames)], out + "\n--- node:\n" + log
    assert "superseded" not in log and "compiled the network" not in log, log


def test_a_compressed_recording_played_into_the_node_gives_every_pair(tmp_path, tiny_weights):
    """A recording of JPEG CompressedImage (what users record and stream), `ges play`-ed into a node started with
    image_transport:=compressed: every pair's disparity arrives."""
    import cv2
    from ges_ros.messages import header
    frames = 3
    left, right, _, _ = motorcycle()
    types = rosbags_types()
    bag = tmp_path / "jpeg"
    w = BagWriter(str(bag), storage="mcap", overwrite=True)
    try:
        compressed = w.typestore.types["sensor_msgs/msg/CompressedImage"]
        for k in range(frames):
            sec = 100 + 2 * k
            t = int(sec * 1e9)
            msgs = stereo_messages(types, left, right, MOTORCYCLE, sec=sec)
            for topic, image, msg in ((TOPICS[0], left, msgs[0]), (TOPICS[1], right, msgs[1])):
                ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
                w.write(topic + "/compressed", "sensor_msgs/msg/CompressedImage", t,
                        compressed(header=header(types, sec, 0, msg.header.frame_id), format="jpeg",
                                   data=buf.reshape(-1)))
            for topic, ty, msg in zip(TOPICS[2:], TYPES[2:], msgs[2:]):
                w.write(topic, ty, t, msg)
    finally:
        w.close()
    env = user_env(ROS_DOMAIN_ID=str(150 + (os.getpid() + 9) % 50))
    node = Process([sys.executable, "-m", "ges_ros.stereo_node", "--ros-args", "-r", "__ns:=/stereo",
                    "-p", f"weights:={tiny_weights}", "-p", "backend:=torch", "-p", "image_transport:=compressed"], env)
    got, out, log, _ = frames_through(node, bag, env, frames)
    assert got == [100 + 2 * k for k in range(frames)], out + "\n--- node:\n" + log
    assert "left/image_rect/compressed" in log


def test_ges_play_waits_until_a_reliable_subscriber_has_the_last_frame(tmp_path):
    """`ges play` of a short bag straight to a subscriber in another process: the last message arrives."""
    frames = 3
    bag = tmp_path / "three"
    write_bag(bag, frames, 1.0)
    env = user_env(ROS_DOMAIN_ID=str(150 + (os.getpid() + 7) % 50))
    script = ("import sys, time, rclpy\nfrom rclpy.qos import QoSProfile, QoSReliabilityPolicy\n"
              "from sensor_msgs.msg import Image\nrclpy.init()\nn = rclpy.create_node('sink')\ngot = []\n"
              "n.create_subscription(Image, '/stereo/left/image_rect', lambda m: got.append(m.header.stamp.sec), "
              "QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE))\nprint('listening', flush=True)\n"
              "end = time.monotonic() + 40\nwhile len(got) < 3 and time.monotonic() < end:\n"
              "    rclpy.spin_once(n, timeout_sec=0.1)\nprint('done', got, flush=True)\n")
    sink = Process([sys.executable, "-c", script], env)
    try:
        sink.wait_for("listening", 30)
        play_bag(bag, env)
        sink.wait_for("done", 60)
    finally:
        out = sink.stop()
    assert "done [100, 101, 102]" in out, out


@pytest.mark.parametrize("param, value, says", [
    ("device", "cuda", "use device 'cpu' or 'auto'"),
    ("device", "gpu0", "is not a device"),
    ("weights", "/nonexistent/w.safetensors", "not found"),
    ("backend", "tensorrt", "backend:='tensorrt' is not one of auto, torch, openvino"),
    ("precision", "int4", "precision:='int4' is not one of"),
    ("solver", "newton", "solver:='newton' is not one of"),
    ("calibration", "/nonexistent/calib.txt", "/nonexistent/calib.txt"),
    ("input_scale", "big", "input_scale must be 'auto' or a factor"),
])
def test_a_bad_start_parameter_gets_one_line_and_exit_1(param, value, says):
    if param == "device" and value == "cuda":
        import torch
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA: device:=cuda is a good setting here")
    r = subprocess.run([sys.executable, "-m", "ges_ros.stereo_node", "--ros-args", "-p", f"{param}:={value}"],
                       env=user_env(ROS_DOMAIN_ID=str(150 + os.getpid() % 50)), capture_output=True, text=True,
                       timeout=120, cwd=str(ROOT))
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    fatal = [line for line in out.splitlines() if "cannot start" in line]
    assert len(fatal) == 1 and says in fatal[0], out
    assert "Traceback" not in out, out


def test_help_prints_usage_and_exits():
    r = subprocess.run([sys.executable, "-m", "ges_ros.stereo_node", "--help"], capture_output=True, text=True,
                       timeout=60, cwd=str(ROOT))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("usage: stereo_node") and "input_scale" in r.stdout and "config/stereo.yaml" in r.stdout


def test_openvino_missing_onnx_is_not_chosen_and_a_failing_backend_falls_back(tmp_path, tiny_weights, monkeypatch):
    """auto never picks a backend that cannot run (onnx is what the openvino backend's export needs); and a
    backend that fails on the first pair anyway is reported once while the node runs on torch: a node in its own
    process, an `onnx` that cannot be imported, real messages in and out."""
    import importlib.util
    from ges_core import ov_backend
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    assert ov_backend.openvino_missing() == ["onnx"] and ov_backend.resolve_backend("auto", "cpu") == "torch"
    with pytest.raises(ValueError, match="needs onnx.*ges_ros\\[openvino\\]"):
        ov_backend.check_backend("openvino", "auto", "cpu")
    monkeypatch.undo()
    if ov_backend.openvino_missing():
        pytest.skip(f"the openvino backend is not installed here ({ov_backend.openvino_missing()})")
    broken = tmp_path / "site"
    (broken / "onnx").mkdir(parents=True)
    (broken / "onnx" / "__init__.py").write_text("raise ImportError('onnx is broken in this environment')\n")
    frames = 2
    bag = tmp_path / "two"
    write_bag(bag, frames, 2.0)
    env = user_env(ROS_DOMAIN_ID=str(150 + (os.getpid() + 13) % 50), GES_CACHE_DIR=str(tmp_path / "cache"),
                   PYTHONPATH=os.pathsep.join([str(broken), os.environ.get("PYTHONPATH", "")]))
    node = Process([sys.executable, "-m", "ges_ros.stereo_node", "--ros-args", "-r", "__ns:=/stereo",
                    "-p", f"weights:={tiny_weights}", "-p", "backend:=openvino", "-p", "input_scale:=0.5"], env)
    listener = None
    try:
        node.wait_for("ready", 60)
        listener = Process([sys.executable, str(HERE / "listener.py"), str(frames), "90"], env)
        listener.wait_for("listening", 30)
        play_bag(bag, user_env(ROS_DOMAIN_ID=env["ROS_DOMAIN_ID"]))
        listener.wait_for("done", 90)
        out = listener.stop()
    finally:
        if listener is not None:
            listener.stop()
        log = node.stop()
    # the failed compile and torch's first pair take seconds: the first pair may be superseded by the second,
    # by design (the newest pair wins); every pair formed, and the newest was published
    assert f"pairs_in={frames}" in log and "done 0" not in out and str(100 + 2 * (frames - 1)) in out, \
        out + "\n--- node:\n" + log
    warnings = [line for line in log.splitlines() if "failed to compile the network" in line]
    assert len(warnings) == 1 and "running on torch instead" in warnings[0], log
    assert "runtime=torch_fp32" in log and "inference_error" not in log, log
    # the tiny weights carry no int8 check, so auto ran float and the ready line says which int8 variant it left
    ready = next(line for line in log.splitlines() if "ready:" in line)
    left_out = ov_backend.resolve_precision("auto", ov_backend.INT8)
    assert (f"{left_out} not taken" in ready) == (left_out in ov_backend.INT8), ready


def test_runtime_install_without_the_test_extra_predicts(tmp_path):
    """The README's runtime install into a fresh venv, `pip install '.[ros,openvino]'` (torch first, pinned),
    then `ges predict` on a real pair with backend auto: it runs OpenVINO and writes a disparity."""
    import cv2
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "-q"]
    r = subprocess.run(pip + ["torch==2.13.0"], capture_output=True, text=True, timeout=900)
    if r.returncode != 0 and ("Could not find a version" in r.stderr or "connection" in r.stderr.lower()):
        pytest.skip(f"the package registry cannot be reached: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run(pip + [f"{ROOT}[ros,openvino]"], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-2000:]
    left, right, _, _ = motorcycle()
    cv2.imwrite(str(tmp_path / "left.png"), left[::2, ::2, ::-1])
    cv2.imwrite(str(tmp_path / "right.png"), right[::2, ::2, ::-1])
    r = subprocess.run([str(venv / "bin" / "ges"), "predict", str(tmp_path / "left.png"), str(tmp_path / "right.png"),
                        "-o", str(tmp_path / "out"), "--backend", "auto"], capture_output=True, text=True,
                       timeout=600, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "runtime openvino" in r.stdout, r.stdout
    from ges_core.data.io import read_pfm
    disp = read_pfm(str(tmp_path / "out" / "disparity.pfm"))
    assert disp.shape == (250, 371) and np.isfinite(disp).all() and (disp > 0).mean() > 0.9


def test_a_restarted_node_loads_its_compiled_network_from_the_cache(tmp_path, tiny_weights):
    """The openvino backend compiles a size once, when the first camera_info tells it (seconds); a restarted node
    with the same weights finds it in the cache (GES_CACHE_DIR, ~/.cache/ges_ros by default) and says so."""
    from ges_core import ov_backend
    if ov_backend.openvino_missing():
        pytest.skip(f"the openvino backend is not installed here ({ov_backend.openvino_missing()})")
    bag = tmp_path / "one"
    write_bag(bag, 1, 1.0)
    env = user_env(ROS_DOMAIN_ID=str(150 + (os.getpid() + 21) % 50), GES_CACHE_DIR=str(tmp_path / "cache"))
    logs = []
    for _ in range(2):
        node = Process([sys.executable, "-m", "ges_ros.stereo_node", "--ros-args", "-r", "__ns:=/stereo",
                        "-p", f"weights:={tiny_weights}", "-p", "backend:=openvino", "-p", "input_scale:=0.5"], env)
        try:
            node.wait_for("ready", 60)
            play_bag(bag, env)
            node.wait_for("network compiled for 741x500", 120)
        finally:
            logs.append(node.stop())
    assert "from the cache" not in logs[0], logs[0]
    assert "from the cache" in logs[1], logs[1]


def test_a_misspelt_parameter_is_warned_about_with_the_closest_names(tmp_path, tiny_weights):
    """`-p devcie:=cpu` and a misspelt key in a params file: rclpy ignores both without a word; the node says so
    once each, naming the closest valid parameters, and starts."""
    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    itres: 3\n    approximate_sync: true\n")
    node = Process([sys.executable, "-m", "ges_ros.stereo_node", "--ros-args", "-p", f"weights:={tiny_weights}",
                    "-p", "backend:=torch", "-p", "devcie:=cpu", "--params-file", str(params)],
                   user_env(ROS_DOMAIN_ID=str(150 + (os.getpid() + 5) % 50)))
    try:
        node.wait_for("ready", 60)
    finally:
        log = node.stop()
    warned = [line for line in log.splitlines() if "is not a stereo_node parameter" in line]
    assert len(warned) == 2, log
    assert any("'devcie'" in w and "device" in w for w in warned) and any("'itres'" in w and "iters" in w
                                                                        for w in warned), log
    assert "sync=approximate" in log, log             # the file's valid values still apply
