"""Real rclpy over DDS: the stereo node and a peer node (publishers of the inputs, subscribers of the
outputs) in one isolated context, spun by a background executor."""
from __future__ import annotations

import threading
import time
from typing import Callable, Dict, List, Optional

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from stereo_msgs.msg import DisparityImage

from ges_ros.messages import rclpy_types
from ges_ros.stereo_node import StereoNode

RELIABLE = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
TYPES = rclpy_types()


class Harness:
    def __init__(self, params: Optional[Dict] = None, *, predictor=None, namespace: str = "stereo",
                 qos: QoSProfile = RELIABLE, subscribe_points: bool = True, subscribe_depth: bool = False,
                 published=(0, 1, 2, 3)) -> None:
        """`published`: the inputs the peer publishes (left, right image, left, right camera_info); the others'
        publishers are None, for a test that publishes them from elsewhere. The images go out as the node's
        image_transport and rectify parameters say (raw or compressed; image_rect or image_raw)."""
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        overrides = [Parameter(k, value=v) for k, v in (params or {}).items()]
        self.node = StereoNode(predictor=predictor, namespace=namespace, parameter_overrides=overrides,
                               context=self.context)
        self.peer = rclpy.create_node("peer", context=self.context)
        ns = f"/{namespace}"
        compressed = (params or {}).get("image_transport") == "compressed"
        image = CompressedImage if compressed else Image
        self.pubs = [self.peer.create_publisher(t, f"{ns}/{n}", qos) if k in published else None
                     for k, (t, n) in enumerate(zip((image, image, CameraInfo, CameraInfo), self.node._topics))]
        self.received: Dict[str, List] = {"disparity": [], "points2": [], "confidence": [], "diagnostics": [],
                                          "depth": [], "depth/camera_info": []}
        self.times: Dict[str, List[float]] = {k: [] for k in self.received}
        outs = [("disparity", DisparityImage), ("confidence", Image)]
        if subscribe_points:
            outs.append(("points2", PointCloud2))
        if subscribe_depth:
            outs += [("depth", Image), ("depth/camera_info", CameraInfo)]
        for name, t in outs:
            self.peer.create_subscription(t, f"{ns}/{name}", self._store(name), RELIABLE)
        self.peer.create_subscription(DiagnosticArray, "/diagnostics", self._store("diagnostics"), 10)
        # as `ros2 run` spins the node: one thread for callbacks (inference has its own); the multi-threaded
        # executor's futures cost more than these callbacks and starved the node under bursts
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        # camera_info only without a calibration given
        inputs = [self.pubs[i] for i in self.node.inputs if self.pubs[i] is not None]
        self.wait(lambda: all(p.get_subscription_count() > 0 for p in inputs), 10, "node subscriptions")
        if qos.reliability == QoSReliabilityPolicy.RELIABLE:
            # the node (qos_reliability auto) switches to the publishers' reliable QoS within a second
            self.wait(lambda: self.node.reliability == QoSReliabilityPolicy.RELIABLE and not self.node.input_subscriptions.retiring, 10,
                      "reliable subscriptions")

    def _spin(self) -> None:
        try:
            while not self._stop.is_set():
                self.executor.spin_once(timeout_sec=0.05)
        except ExternalShutdownException:
            pass

    def _store(self, name: str) -> Callable:
        def cb(msg):
            self.received[name].append(msg)
            self.times[name].append(time.monotonic())
        return cb

    def publish(self, msgs) -> None:
        for pub, msg in zip(self.pubs, msgs):
            if msg is not None and pub is not None:
                pub.publish(msg)

    def wait(self, predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def count(self, name: str) -> int:
        return len(self.received[name])

    def close(self) -> None:
        # Under `ros2 run` callbacks and shutdown share the main thread, so no callback runs while the node is
        # destroyed. Here the spin thread finishes its callback and leaves first. (rclpy.shutdown() destroys every
        # node of the context before anything else: called while the thread ran a timer callback, it raised
        # InvalidHandle "destruction was requested" in that callback.)
        self._stop.set()
        self._thread.join(timeout=60.0)
        if self._thread.is_alive():
            raise AssertionError("the spin thread is still in a callback 60 s after close()")
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.peer.destroy_node()
        rclpy.shutdown(context=self.context)

    def __enter__(self) -> "Harness":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
