"""`ges play BAG` (publish a bag over rclpy with its timing, for machines without `ros2 bag`) and a
small recorder of serialized messages into a bag. Both need rclpy."""
from __future__ import annotations

import importlib
import threading
import time
from typing import Dict, Iterable, Optional, Sequence

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy

from .bag import BagReader, BagWriter


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> sensor_msgs.msg.Image."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def qos(reliable: bool, depth: int = 10) -> QoSProfile:
    return QoSProfile(depth=depth, reliability=QoSReliabilityPolicy.RELIABLE if reliable
                      else QoSReliabilityPolicy.BEST_EFFORT)


def play(node: Node, bag: str, *, rate: float = 1.0, reliable: bool = True, topics: Optional[Iterable[str]] = None,
         wait_for_subscribers: float = 0.0, loop: bool = False, stop: Optional[threading.Event] = None,
         ack_timeout: float = 5.0, namespace: Optional[str] = None) -> int:
    """Publish the bag's messages (serialized, as recorded) with their log-time spacing / rate; reliable, it waits
    (up to ack_timeout s) for every subscriber to acknowledge the last ones before returning. namespace: the
    topics' common leading namespace replaced by this one (renamed).
    Returns the number of messages published."""
    reader = BagReader(bag)
    try:
        if not reader.is_ros2:
            raise ValueError(f"{bag} is a ROS 1 bag: `ges play` publishes ROS 2 bags (use `ges replay`, which reads "
                             "both, or convert it with rosbags-convert)")
        wanted = [t for t in reader.topic_types if topics is None or t in set(topics)]
        names = renamed(wanted, namespace)
        pubs = {t: node.create_publisher(message_class(reader.topic_types[t]), names[t], qos(reliable))
                for t in wanted}
        if wait_for_subscribers > 0:
            end = time.monotonic() + wait_for_subscribers
            while time.monotonic() < end and not all(p.get_subscription_count() for p in pubs.values()):
                time.sleep(0.05)
            if any(p.get_subscription_count() for p in pubs.values()):
                # the writer sees the match before the reader's side is ready: a first message sent at once was
                # lost by a reliable subscriber in another process
                time.sleep(1.0)
        sent = 0
        while True:
            wall0, bag0 = time.monotonic(), None
            for topic, msgtype, t, msg, raw in reader.messages(wanted):
                if stop is not None and stop.is_set():
                    return sent
                bag0 = t if bag0 is None else bag0
                if rate > 0:
                    wait = (t - bag0) * 1e-9 / rate - (time.monotonic() - wall0)
                    if wait > 0:
                        time.sleep(wait)
                pubs[topic].publish(bytes(raw))
                sent += 1
            if not loop:
                if reliable:
                    unacked = wait_acked(pubs, ack_timeout)
                    if unacked:
                        node.get_logger().warning(f"not every reliable subscriber acknowledged the last messages "
                                                  f"within {ack_timeout:g} s on {', '.join(unacked)}")
                return sent
    finally:
        reader.close()


def wait_acked(pubs: Dict[str, object], timeout_s: float):
    """Wait until every reliable subscriber has acknowledged what each publisher sent (shutting down right after
    the last publish lost the last frame for them); -> the topics still unacknowledged after timeout_s in all."""
    from rclpy.duration import Duration
    end = time.monotonic() + timeout_s
    unacked = []
    for topic, pub in pubs.items():
        left = max(0.0, end - time.monotonic())
        if not pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9))):
            unacked.append(topic)
    return unacked


class Recorder:
    """Subscribes to topics (serialized) and writes every message into a bag with its header stamp."""

    def __init__(self, node: Node, out: str, topics: Dict[str, str], *, reliable: bool = True,
                 storage: str = "mcap") -> None:
        self.writer = BagWriter(out, storage=storage, overwrite=True)
        self.counts: Dict[str, int] = {t: 0 for t in topics}
        self.last: Dict[str, object] = {}
        self.last_time = time.monotonic()     # when the last message arrived (or the recorder was made)
        self._lock = threading.Lock()
        self._subs = [node.create_subscription(message_class(ty), t, self._cb(t, ty), qos(reliable), raw=True)
                      for t, ty in topics.items()]

    def _cb(self, topic: str, msgtype: str):
        from rclpy.serialization import deserialize_message
        cls = message_class(msgtype)

        def cb(raw: bytes) -> None:
            msg = deserialize_message(raw, cls)
            stamp = msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec
            with self._lock:
                self.writer.write(topic, msgtype, stamp, raw=raw)
                self.counts[topic] += 1
                self.last[topic] = msg
                self.last_time = time.monotonic()
        return cb

    def close(self) -> None:
        with self._lock:
            self.writer.close()


def renamed(topics: Sequence[str], namespace: Optional[str]) -> Dict[str, str]:
    """topic -> the name it is published under: as recorded, or with the topics' common leading namespace (every
    name's first components that all share, e.g. /stereo) replaced by `namespace` ("" or "/": none)."""
    if namespace is None:
        return {t: t for t in topics}
    parts = [t.strip("/").split("/") for t in topics]
    common = 0
    while parts and all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    ns = namespace.strip("/")
    return {t: "/" + "/".join(([ns] if ns else []) + p[common:]) for t, p in zip(topics, parts)}


def main_play(bag: str, *, rate: float = 1.0, reliable: bool = True, loop: bool = False,
              namespace: Optional[str] = None, ros_args: Sequence[str] = ()) -> int:
    """namespace: publish under it instead of the bag's own leading namespace; ros_args: `--ros-args ...`, ROS's
    own arguments (remappings apply to the bag's topic names)."""
    rclpy.init(args=["ges_play", *ros_args])
    node = rclpy.create_node("ges_play")
    try:
        n = play(node, bag, rate=rate, reliable=reliable, loop=loop, wait_for_subscribers=5.0, namespace=namespace)
        print(f"published {n} messages from {bag}")
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.shutdown()
    return 0
