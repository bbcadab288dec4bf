"""The ROS-side benchmarks of `ges bench` (added to the core's modes by ges_ros.cli):

    node   ROS-side cost per frame (message -> array, DisparityImage, PointCloud2, colour map), without the network
    soak   pairs published over DDS into a StereoNode above its throughput: memory, threads, latency, drops
"""
from __future__ import annotations

import os
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from ges_core.bench.common import machine_line, md_table, median_ms, rss_mb


# ------------------------------------------------------------------------------ node
def _node_inputs(h: int, w: int):
    """A frame as the node sees one at (h, w): the motorcycle pair's left view and its true disparity, resized, with
    its validity (unknown where the ground truth is: occlusions, no texture), which is clustered as a network's is.
    The colour and validity masks decide the per-pixel branches numpy and OpenCV take."""
    import cv2
    from ges_core.data.datasets import MotorcycleDataset
    scene = MotorcycleDataset()[0]
    img = cv2.resize(scene["left"], (w, h), interpolation=cv2.INTER_AREA)
    scale = w / scene["disparity"].shape[1]
    disp = cv2.resize(scene["disparity"], (w, h), interpolation=cv2.INTER_NEAREST) * np.float32(scale)
    valid = cv2.resize(scene["valid"].astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    return img, disp.astype(np.float32), valid


def bench_node(args) -> str:
    from ges_core.geometry import StereoCalibration, colorize, to_ros_disparity
    from .image_codec import image_to_rgb8
    from .messages import disparity_msg, header, image_msg, pointcloud_msg, rosbags_types, rclpy_types
    h, w = args.node_size
    img, disp, scene_valid = _node_inputs(h, w)
    # the worst case for branches: 10 % of the pixels invalid, at random
    noise_valid = np.random.default_rng(0).random((h, w)) > 0.1
    calib = StereoCalibration(fx=1000.0, fy=1000.0, cx_left=w / 2, cx_right=w / 2, cy=h / 2, baseline=0.3, width=w,
                              height=h)
    rows = []
    impls = [("rosbags", rosbags_types())]
    try:
        impls.insert(0, ("rclpy", rclpy_types()))
    except ImportError:
        pass
    for name, types in impls:
        hdr = header(types, 1, 0, "cam")
        msg = image_msg(types, hdr, img, "rgb8")
        totals = []
        cells = {}
        for valid in (scene_valid, noise_valid):
            stages = {
                "image message -> array": lambda: image_to_rgb8(msg),
                "DisparityImage": lambda: disparity_msg(types, hdr, to_ros_disparity(disp, calib), valid, calib,
                                                        min_disparity=0.0, max_disparity=192.0, delta_d=0.0625),
                "PointCloud2 (xyz+rgb, padded)": lambda: pointcloud_msg(types, hdr, disp, valid, calib, img,
                                                                        avoid_padding=False),
                "PointCloud2 (xyz+rgb, avoid_point_cloud_padding)": lambda: pointcloud_msg(
                    types, hdr, disp, valid, calib, img, avoid_padding=True),
                "colour map (only when subscribed)": lambda: colorize(disp, valid),
            }
            total = 0.0
            for stage, fn in stages.items():
                ms = median_ms(fn, args.repeats)
                if "avoid_point_cloud_padding" not in stage and "colour" not in stage:
                    total += ms
                cells.setdefault(stage, []).append(f"{ms:.1f}")
            totals.append(f"**{total:.1f}**")
        rows += [[name, stage, *v] for stage, v in cells.items()]
        rows.append([name, "**total (image, disparity, padded cloud)**", *totals])
        print(f"node {name}: {totals[0].strip('*')} ms (scene mask), {totals[1].strip('*')} ms (noise mask)",
              flush=True)
    body = ["## node — ROS-side cost per frame, without the network", "", f"{machine_line()}; {w}x{h}; median of "
            f"{args.repeats}; target under 10 ms in total. Inputs: the motorcycle pair resized, with its ground "
            "truth's validity (clustered, as the network's is) and, as the worst case for per-pixel branches, 10 % "
            "of the pixels invalid at random.", "",
            md_table(["messages", "stage", "ms, scene mask", "ms, 10 % noise mask"], rows), "",
            "`ges bench node`"]
    return "\n".join(body)


# ------------------------------------------------------------------------------ soak
def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _soak_publisher(namespace: str, pairs: int, rate_hz: float, size: Tuple[int, int], events) -> None:
    """The soak's camera, in a process of its own (as a camera driver would be): waits for the node to subscribe,
    publishes `pairs` stereo pairs at `rate_hz` (reliable), and puts ("start", t) and ("done", sent) on `events`."""
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from .messages import rclpy_types
    from .sample import PinholeStereo, stereo_messages
    h, w = size
    rclpy.init()
    node = rclpy.create_node("soak_camera")
    qos = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
    names = ("left/image_rect", "right/image_rect", "left/camera_info", "right/camera_info")
    pubs = [node.create_publisher(t, f"/{namespace}/{n}", qos) for t, n in zip((Image, Image, CameraInfo, CameraInfo), names)]
    types = rclpy_types()
    cam = PinholeStereo(f=100.0, cx=w / 2, cy=h / 2, doffs=0.0, baseline=0.1)
    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    sent = 0
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end and not all(p.get_subscription_count() for p in pubs):
            time.sleep(0.05)
        time.sleep(1.0)     # the node matches our reliability once it sees us
        t0 = time.monotonic()
        events.put(("start", time.time()))
        for k in range(pairs):
            now = time.time()
            for pub, msg in zip(pubs, stereo_messages(types, img, img, cam, sec=int(now), nanosec=int(now % 1 * 1e9))):
                pub.publish(msg)
            sent += 1
            time.sleep(max(0.0, t0 + (k + 1) / rate_hz - time.monotonic()))
        time.sleep(1.0)     # let reliable delivery finish before the publisher goes away
    finally:
        events.put(("done", sent))
        node.destroy_node()
        rclpy.shutdown()


def soak(weights: str, *, pairs: int = 2000, rate_hz: float = 100.0, size: Tuple[int, int] = (64, 96),
         warmup_outputs: int = 2) -> Dict[str, float]:
    """Publish `pairs` stereo pairs at `rate_hz` (above the node's throughput) from a separate process into a
    StereoNode in this one, over DDS; report memory, threads, latency and drops. The memory and thread baseline is
    taken once the node has published `warmup_outputs` results (the allocator has then seen the working set)."""
    import multiprocessing as mp
    import queue
    import threading
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from ges_core import load_predictor
    from .stereo_node import StereoNode
    namespace = f"soak_{os.getpid()}"
    predictor = load_predictor(weights)
    # the size compiled (or loaded from the cache) before the camera starts: a soak measures the steady state, and
    # the first pair's compile stalls the callbacks for seconds, in which a 200 Hz camera overruns every queue
    blank = np.zeros((*size, 3), np.uint8)
    predictor.predict(blank, blank)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = StereoNode(predictor=predictor, namespace=namespace, context=ctx)
    # one thread dispatches the callbacks (they only queue messages; inference has its own thread), as `ros2 run`
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    events = mp.get_context("spawn").Queue()
    camera = mp.get_context("spawn").Process(target=_soak_publisher, args=(namespace, pairs, rate_hz, size, events),
                                             daemon=True)
    camera.start()
    rss: List[float] = []
    try:
        events.get(timeout=60)        # ("start", t): the camera is publishing
        t0 = time.monotonic()
        base: Optional[Tuple[float, int]] = None
        sent = None
        while sent is None:
            try:
                kind, value = events.get(timeout=0.5)
                sent = value if kind == "done" else None
            except queue.Empty:
                pass
            if not camera.is_alive() and sent is None:
                raise RuntimeError(f"the soak's publisher process died (exit code {camera.exitcode})")
            if base is None and node.stats()["pairs_out"] >= warmup_outputs:
                base = (rss_mb(), _threads())
            rss.append(rss_mb())
        # every image sent is paired (2 a pair), pushed out unmatched, reported lost by DDS, or still queued in the
        # synchronizer (at most its queue); camera_info is cached, not paired
        def accounted(st) -> int:
            return 2 * st["pairs_in"] + sum(st["unmatched"][:2]) + sum(st["lost"][:2])
        # ... until all are, or the count has stood still for 5 s: images a reliable writer's history overwrote
        # before the node took them are never reported (they stay unaccounted; waiting on them took the full 60 s)
        end = time.monotonic() + 60
        last, still_since = -1, time.monotonic()
        while time.monotonic() < end and accounted(node.stats()) < 2 * sent - 2 * node.stats()["queue_size"]:
            now, count = time.monotonic(), accounted(node.stats())
            if count != last:
                last, still_since = count, now
            elif now - still_since > 5.0:
                break
            time.sleep(0.1)
        # the pair in flight when publishing stopped: wait for it, then count
        end = time.monotonic() + 60
        st = node.stats()
        while time.monotonic() < end and st["pairs_out"] + sum(st["drops"].values()) < st["pairs_in"]:
            time.sleep(0.1)
            st = node.stats()
        seconds = time.monotonic() - t0
        if base is None:
            raise RuntimeError(f"the node published fewer than {warmup_outputs} results from {sent} pairs in "
                               f"{seconds:.0f} s: no memory baseline")
        lat = st["latency_ms"] or [0.0]
        drops = st["drops"]
        return {"pairs_sent": sent, "seconds": seconds, "pairs_in": st["pairs_in"],
                "pairs_out": st["pairs_out"], "superseded": drops.get("superseded", 0),
                "unmatched": sum(st["unmatched"]), "lost_in_transport": sum(st["lost"]),
                "images_unaccounted": 2 * sent - accounted(st),
                "errors": sum(v for k_, v in drops.items() if k_ != "superseded"),
                "rss_start_mb": base[0], "rss_end_mb": rss_mb(), "rss_max_mb": max(rss),
                "threads_start": base[1], "threads_end": _threads(),
                "latency_p50_ms": lat[len(lat) // 2], "latency_p95_ms": lat[int(len(lat) * 0.95)],
                "latency_max_ms": lat[-1]}
    finally:
        camera.join(timeout=10)
        if camera.is_alive():
            camera.kill()
        ex.shutdown(timeout_sec=2.0)
        th.join(timeout=5.0)          # out of spin_once before the node's handles go
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def bench_soak(args) -> str:
    weights = args.weights
    res = soak(weights, pairs=args.pairs, rate_hz=args.rate, size=args.node_size)
    rows = [[k, f"{v:.1f}" if isinstance(v, float) else v] for k, v in res.items()]
    h, w = args.node_size
    return "\n".join(["## soak — pairs through the node above its throughput", "",
                      f"{machine_line()}; weights {weights}; {w}x{h} rgb8 pairs at {args.rate:g} Hz over DDS "
                      "(reliable), published by a separate process; memory and threads of the node's process, the "
                      "baseline taken after its first 2 results.", "", md_table(["quantity", "value"], rows),
                      "", f"`ges bench soak --pairs {args.pairs} --rate {args.rate:g} --node-size {h}x{w}`"])


MODES = {"node": (bench_node, "BENCHMARKS.md"), "soak": (bench_soak, "RELIABILITY.md")}
