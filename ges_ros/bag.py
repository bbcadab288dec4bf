"""Bags without a ROS install, through the `rosbags` library: reading inputs (ROS 2 sqlite3/MCAP,
ROS 1), picking the stereo topics, and writing outputs that `ros2 bag play`, Foxglove and rosbags read."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
INFO_TYPE = "sensor_msgs/msg/CameraInfo"


class BagError(OSError):
    """A bag that cannot be read (completely); the text names the bag and the problem."""


def typestore():
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.ROS2_KILTED)


@dataclass(frozen=True)
class StereoTopics:
    left: str
    right: str
    left_info: str
    right_info: str

    def as_tuple(self) -> Tuple[str, str, str, str]:
        return self.left, self.right, self.left_info, self.right_info


def _pick(candidates: Sequence[str], side: str, kind: str) -> str:
    hits = [t for t in candidates if side in t.lower()]
    if not hits:
        raise BagError(f"no {kind} topic with '{side}' in its name among {sorted(candidates)}; pass it explicitly")
    # prefer rectified images, then the shortest name
    hits.sort(key=lambda t: ("rect" not in t, "color" in t, len(t)))
    return hits[0]


def guess_topics(topic_types: Dict[str, str], given: Optional[Dict[str, Optional[str]]] = None) -> StereoTopics:
    given = given or {}
    images = [t for t, ty in topic_types.items() if ty in IMAGE_TYPES]
    infos = [t for t, ty in topic_types.items() if ty == INFO_TYPE]
    chosen = {
        "left": given.get("left") or _pick(images, "left", "image"),
        "right": given.get("right") or _pick(images, "right", "image"),
        "left_info": given.get("left_info") or _pick(infos, "left", "camera_info"),
        "right_info": given.get("right_info") or _pick(infos, "right", "camera_info"),
    }
    for key, topic in chosen.items():
        if topic not in topic_types:
            raise BagError(f"topic {topic} ({key}) is not in the bag; it has {sorted(topic_types)}")
    return StereoTopics(**chosen)


class BagReader:
    """Deserialized messages of selected topics in log-time order; raises BagError (with how far it got)
    when the bag is unreadable or breaks off."""

    def __init__(self, path: str) -> None:
        from rosbags.highlevel import AnyReader
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag not found: {self.path}")
        try:
            self._reader = AnyReader([self.path], default_typestore=typestore())
            self._reader.open()
        except Exception as exc:  # rosbags raises several error types for damaged bags
            raise BagError(f"{self.path}: cannot open bag ({type(exc).__name__}: {exc})") from None
        self.topic_types = {c.topic: c.msgtype for c in self._reader.connections}
        self.count = {c.topic: c.msgcount for c in self._reader.connections}
        self.read = 0

    def messages(self, topics: Sequence[str]) -> Iterator[Tuple[str, str, int, object, bytes]]:
        """-> (topic, msgtype, log time ns, message, raw bytes)."""
        conns = [c for c in self._reader.connections if c.topic in topics]
        try:
            for conn, t, raw in self._reader.messages(connections=conns):
                msg = self._reader.deserialize(raw, conn.msgtype)
                self.read += 1
                yield conn.topic, conn.msgtype, t, msg, raw
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:
            raise BagError(f"{self.path}: bag breaks off after {self.read} messages ({type(exc).__name__}: {exc})") from None

    def close(self) -> None:
        try:
            self._reader.close()
        except Exception:
            pass


class BagWriter:
    """ROS 2 bag writer (MCAP by default) that always leaves a readable bag: `close()` in a finally."""

    def __init__(self, path: str, *, storage: str = "mcap", overwrite: bool = False) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        self.path = Path(path)
        if self.path.exists():
            if not overwrite:
                raise BagError(f"output bag exists: {self.path} (use --overwrite)")
            shutil.rmtree(self.path) if self.path.is_dir() else os.remove(self.path)
        plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}.get(storage)
        if plugin is None:
            raise ValueError(f"storage must be mcap or sqlite3, got {storage!r}")
        self.typestore = typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        self._writer.open()
        self._conns: Dict[str, object] = {}
        self.written = 0

    def write(self, topic: str, msgtype: str, stamp_ns: int, msg=None, raw: Optional[bytes] = None) -> None:
        conn = self._conns.get(topic)
        if conn is None:
            conn = self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self.typestore)
        data = raw if raw is not None else self.typestore.serialize_cdr(msg, msgtype)
        self._writer.write(conn, int(stamp_ns), data)
        self.written += 1

    def close(self) -> None:
        self._writer.close()
