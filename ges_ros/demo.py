"""`make demo`: a real stereo pair through the real node, over DDS, on the shipped weights.

1. Writes a bag of the Middlebury motorcycle pair (from scikit-image) with its real calibration.
2. Starts `stereo_node` in its own process and plays the bag into it; records its outputs.
3. Writes demo_out/: disparity_color.png, confidence.png, points.ply, output bag, report.md with
   EPE/bad-2 against ground truth beside OpenCV SGBM on the same pair, and latency.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np

from .bag import BagWriter
from ges_core.geometry import colorize, depth_mm
from .messages import rosbags_types, unpack_cloud
from .processing import OUTPUTS
from .sample import MOTORCYCLE, motorcycle, stereo_messages

NS = "/stereo"
QUIET_S = 10.0            # once outputs have come, how long the demo waits for another before it ends
INPUT_TOPICS = [f"{NS}/left/image_rect", f"{NS}/right/image_rect", f"{NS}/left/camera_info", f"{NS}/right/camera_info"]
INPUT_TYPES = ["sensor_msgs/msg/Image", "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo", "sensor_msgs/msg/CameraInfo"]
# the node's outputs the demo records (by subscribing to them, it asks for the on-demand ones)
RECORDED = {f"{NS}/{name}": OUTPUTS[name].type for name in ("disparity", "points2", "confidence", "depth",
                                                             "depth/camera_info")}


def write_sample_bag(path: Path, *, frames: int, period_s: float, start_s: int = 1_700_000_000) -> None:
    """The motorcycle pair repeated `frames` times, `period_s` apart, as a ROS 2 MCAP bag."""
    left, right, _, _ = motorcycle()
    types = rosbags_types()
    writer = BagWriter(str(path), overwrite=True)
    try:
        for k in range(frames):
            t_ns = start_s * 10 ** 9 + int(k * period_s * 1e9)
            msgs = stereo_messages(types, left, right, MOTORCYCLE, sec=t_ns // 10 ** 9, nanosec=t_ns % 10 ** 9)
            for topic, ty, msg in zip(INPUT_TOPICS, INPUT_TYPES, msgs):
                writer.write(topic, ty, t_ns, msg)
    finally:
        writer.close()


def demo_env() -> dict:
    env = dict(os.environ)
    # large images over DDS: Fast DDS's LARGE_DATA transport in every process, and a private domain
    env.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 200))
    return env


class NodeProcess:
    """stereo_node in a subprocess; its log lines are kept and echoed with a prefix."""

    def __init__(self, args: List[str], env: dict, echo: bool = True) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "ges_ros.stereo_node", "--ros-args", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: List[str] = []
        self.echo = echo
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if self.echo:
                print(f"  [stereo_node] {line.rstrip()}", flush=True)

    def wait_ready(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any("ready:" in ln for ln in self.lines):
                return
            if self.proc.poll() is not None:
                raise RuntimeError("stereo_node exited: " + "\n".join(self.lines[-10:]))
            time.sleep(0.1)
        raise RuntimeError(f"stereo_node not ready after {timeout} s")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def run(out_dir: str = "demo_out", *, frames: int = 3, period_s: float = 4.0, weights: str = "default",
        iters: int = 4, timeout_s: float = 240.0) -> int:
    import rclpy
    from ges_core.baselines import sgbm_disparity
    from ges_core.data.io import write_ply
    from ges_core.metrics import disparity_metrics
    from .play import Recorder, play

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    in_bag, out_bag = out / "motorcycle_input", out / "stereo_output"
    print(f"[1/4] writing {frames}-frame bag of the Middlebury motorcycle pair (f {MOTORCYCLE.f} px, baseline "
          f"{MOTORCYCLE.baseline * 1000:.3f} mm, doffs {MOTORCYCLE.doffs} px) -> {in_bag}", flush=True)
    write_sample_bag(in_bag, frames=frames, period_s=period_s)

    env = demo_env()
    os.environ.update({k: env[k] for k in ("FASTDDS_BUILTIN_TRANSPORTS", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")})
    print(f"[2/4] starting stereo_node (weights={weights}, device=cpu, iters={iters})", flush=True)
    node_proc = NodeProcess(["-r", f"__ns:={NS}", "-p", f"weights:={weights}", "-p", "device:=cpu",
                             "-p", f"iters:={iters}", "-p", "qos_reliability:=reliable"], env)
    rclpy.init()
    peer = rclpy.create_node("ges_demo")
    recorder = Recorder(peer, str(out_bag), RECORDED)
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(peer)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        node_proc.wait_ready(120)
        # the on-demand outputs (points2, depth) are built only for a matched subscriber: play once the recorder's
        # subscriptions have discovered the node's publishers (with five outputs the first frame's depth was missed)
        matched_by = time.monotonic() + 30
        while time.monotonic() < matched_by and not all(peer.count_publishers(t) for t in RECORDED):
            time.sleep(0.1)
        print(f"[3/4] playing the bag into the node over DDS ({frames} frames, {period_s} s apart) and recording "
              f"{', '.join(RECORDED)}", flush=True)
        play(peer, str(in_bag), rate=1.0, reliable=True, wait_for_subscribers=20.0)
        # every output of every frame, or, once outputs have come, QUIET_S without another: a pair the node
        # dropped (a newer one came while it was busy) has no outputs to wait for
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and min(recorder.counts.values()) < frames:
            if recorder.counts[f"{NS}/disparity"] and time.monotonic() - recorder.last_time > QUIET_S:
                break
            time.sleep(0.1)
    finally:
        node_rc = node_proc.stop()
        executor.shutdown(timeout_sec=2.0)
        spin.join(timeout=5.0)        # out of spin_once before the peer's handles go
        recorder.close()
        peer.destroy_node()
        rclpy.shutdown()
    n_disp = recorder.counts[f"{NS}/disparity"]
    if n_disp == 0:
        print("no disparity arrived from the node; its log:\n" + "\n".join(node_proc.lines[-20:]), file=sys.stderr)
        return 1

    print("[4/4] evaluating against ground truth and writing outputs", flush=True)
    left, right, gt, valid = motorcycle()
    dmsg = recorder.last[f"{NS}/disparity"]
    img = dmsg.image
    d_ros = np.frombuffer(bytes(img.data), "<f4").reshape(img.height, img.width)
    pub_valid = d_ros >= dmsg.min_disparity
    d_net = d_ros - MOTORCYCLE.doffs          # published d = (x_l - x_r) + doffs for this camera
    ges = disparity_metrics(np.where(pub_valid, d_net, 0), gt, valid)
    t = time.perf_counter()
    sgbm = sgbm_disparity(left, right, max_disp=int(np.ceil(gt[valid].max())))
    sgbm_ms = (time.perf_counter() - t) * 1e3
    sg = disparity_metrics(sgbm, gt, valid)
    cv2.imwrite(str(out / "disparity_color.png"), colorize(d_net, pub_valid, vmin=0, vmax=float(gt[valid].max())))
    cmsg = recorder.last[f"{NS}/confidence"]
    conf = np.frombuffer(bytes(cmsg.data), "<f4").reshape(cmsg.height, cmsg.width)
    cv2.imwrite(str(out / "confidence.png"), (np.clip(conf, 0, 1) * 255).astype(np.uint8))
    n_pts = 0
    if f"{NS}/points2" in recorder.last:
        cloud = unpack_cloud(recorder.last[f"{NS}/points2"])
        xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1)
        n_pts = write_ply(str(out / "points.ply"), xyz, left)
    depth_note = "no depth image arrived"
    if f"{NS}/depth" in recorder.last:
        # the depth image is f T / d of the published disparity wherever both are valid, and in metres
        dimg = recorder.last[f"{NS}/depth"]
        z = np.frombuffer(bytes(dimg.data), "<f4").reshape(dimg.height, dimg.width)
        both = pub_valid & np.isfinite(z)
        rel = np.abs(z[both] * d_ros[both] / (dmsg.f * dmsg.t) - 1) if both.any() else np.zeros(1)
        cv2.imwrite(str(out / "depth_mm.png"), depth_mm(z))
        depth_note = (f"depth (32FC1, m): {both.mean() * 100:.1f}% of pixels, median {np.median(z[both]):.2f} m, "
                      f"largest deviation from f*T/d {rel.max() * 100:.4f}%")
    infer = _node_value(node_proc.lines, "inference_ms")
    pairs_out = _node_value(node_proc.lines, "pairs_out", int)   # from its shutdown line
    report = [
        "# GES demo: Middlebury motorcycle through stereo_node",
        "",
        f"- frames played: {frames} ({period_s} s apart); pairs the node processed: "
        f"{pairs_out if pairs_out is not None else 'unknown'}; disparity messages received: {n_disp}; "
        f"points2: {recorder.counts[f'{NS}/points2']}; confidence: {recorder.counts[f'{NS}/confidence']}; "
        f"depth: {recorder.counts[f'{NS}/depth']}; depth/camera_info: {recorder.counts[f'{NS}/depth/camera_info']}",
        f"- {depth_note}",
        f"- weights: {weights}; device: cpu; runtime: {_node_runtime(node_proc.lines)}; solver iterations: {iters}",
        f"- node exit code after SIGINT: {node_rc}",
        "",
        "| method | EPE (px) | bad-2 (%) | bad-3 (%) | runtime (ms) |",
        "|---|---|---|---|---|",
        f"| GES (stereo_node) | {ges['epe']:.2f} | {ges['bad2']:.1f} | {ges['bad3']:.1f} | "
        f"{infer if infer is not None else float('nan'):.0f} (network, in the node) |",
        f"| OpenCV SGBM (oracle range, holes filled) | {sg['epe']:.2f} | {sg['bad2']:.1f} | {sg['bad3']:.1f} | "
        f"{sgbm_ms:.0f} |",
        "",
        f"Ground truth: scikit-image's Middlebury 2014 motorcycle (quarter size), {valid.mean() * 100:.1f}% of pixels.",
        f"Outputs: disparity_color.png, confidence.png, depth_mm.png (16-bit millimetres), points.ply ({n_pts} points), "
        f"{out_bag.name}/ (MCAP), "
        f"input bag {in_bag.name}/.",
    ]
    (out / "report.md").write_text("\n".join(report) + "\n")
    print("\n".join(report[2:]))
    print(f"\nwritten to {out.resolve()}: report.md, disparity_color.png, confidence.png, depth_mm.png, points.ply, "
          f"{out_bag.name}/, {in_bag.name}/")
    return 0


def _node_runtime(lines: List[str]) -> str:
    """The runtime the node reported ("openvino bf16", "torch fp32"; see the backend parameter)."""
    for ln in lines:
        if "runtime=" in ln:
            return ln.split("runtime=")[1].split()[0].rstrip(")").replace("_", " ")
    return "unknown"


def _node_value(lines: List[str], key: str, kind=float):
    """The last value the node logged as `key=VALUE` (pairs_out=, inference_ms=), or None."""
    for ln in reversed(lines):
        if f"{key}=" in ln:
            try:
                return kind(ln.split(f"{key}=")[1].split()[0])
            except ValueError:
                return None
    return None


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ges_ros.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo_out")
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--period", type=float, default=4.0, help="seconds between frames in the bag")
    p.add_argument("--weights", default="default")
    p.add_argument("--iters", type=int, default=4)
    a = p.parse_args(argv)
    return run(a.out, frames=a.frames, period_s=a.period, weights=a.weights, iters=a.iters)


if __name__ == "__main__":
    sys.exit(main())
