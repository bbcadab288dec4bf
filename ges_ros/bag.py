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


def _mcap_file(path: Path) -> Optional[Path]:
    if path.is_file() and path.suffix == ".mcap":
        return path
    hits = sorted(path.glob("*.mcap")) if path.is_dir() else []
    return hits[0] if len(hits) == 1 else None


def salvage_mcap(path: Path) -> Iterator[Tuple[str, str, int, bytes]]:
    """Stream the complete records of an MCAP file whose end is missing (a recording cut short):
    schemas, channels and messages, top level or inside uncompressed chunks. -> (topic, msgtype, log time, cdr)."""
    import struct
    data = path.read_bytes()
    if not data.startswith(b"\x89MCAP0\r\n"):
        raise BagError(f"{path}: not an MCAP file")
    schemas: Dict[int, str] = {}
    channels: Dict[int, Tuple[str, str]] = {}

    def string(buf, p):
        n = struct.unpack_from("<I", buf, p)[0]
        return buf[p + 4: p + 4 + n].decode(), p + 4 + n

    def records(buf, pos, end):
        while pos + 9 <= end:
            op, length = buf[pos], struct.unpack_from("<Q", buf, pos + 1)[0]
            if pos + 9 + length > end:
                if op == 0x06:  # a chunk cut off: its complete inner records are still good
                    yield op, pos + 9, end
                return
            yield op, pos + 9, pos + 9 + length
            pos += 9 + length

    def handle(buf, op, a, b):
        if op == 0x03:                                  # Schema: id, name, encoding, data
            sid = struct.unpack_from("<H", buf, a)[0]
            schemas[sid], _ = string(buf, a + 2)
        elif op == 0x04:                                # Channel: id, schema id, topic, ...
            cid, sid = struct.unpack_from("<HH", buf, a)
            topic, _ = string(buf, a + 4)
            channels[cid] = (topic, schemas.get(sid, ""))
        elif op == 0x05:                                # Message: channel, sequence, log time, publish time, data
            cid, _seq, log_time = struct.unpack_from("<HIQ", buf, a)
            if cid in channels:
                topic, msgtype = channels[cid]
                return topic, msgtype, log_time, bytes(buf[a + 22: b])
        return None

    for op, a, b in records(data, 8, len(data)):
        if op == 0x06:                                  # Chunk: times, size, crc, compression, records
            p = a + 28
            compression, p = string(data, p)
            if compression:
                raise BagError(f"{path}: cannot salvage {compression}-compressed chunks")
            rec_len = struct.unpack_from("<Q", data, p)[0]
            for op2, a2, b2 in records(data, p + 8, min(p + 8 + rec_len, b)):
                msg = handle(data, op2, a2, b2)
                if msg:
                    yield msg
        else:
            msg = handle(data, op, a, b)
            if msg:
                yield msg


class BagReader:
    """Deserialized messages of selected topics in log-time order; raises BagError (with how far it got)
    when the bag is unreadable or breaks off. An MCAP recording cut short (no summary) is read record
    by record up to the cut, and then reported as broken off."""

    def __init__(self, path: str) -> None:
        from rosbags.highlevel import AnyReader
        self.path = Path(path)
        self.read = 0
        self._salvage: Optional[Path] = None
        if not self.path.exists():
            raise BagError(f"bag not found: {self.path}")
        try:
            self._reader = AnyReader([self.path], default_typestore=typestore())
            self._reader.open()
        except Exception as exc:  # rosbags raises several error types for damaged bags
            mcap = _mcap_file(self.path)
            if mcap is None:
                raise BagError(f"{self.path}: cannot open bag ({type(exc).__name__}: {exc})") from None
            self._reader = None
            self._salvage = mcap
            self._open_error = f"{type(exc).__name__}: {exc}"
            found = list(salvage_mcap(mcap))
            if not found:
                raise BagError(f"{self.path}: cannot open bag ({self._open_error}); no complete message in it")
            self.topic_types = {t: ty for t, ty, _, _ in found}
            self.count = {t: sum(1 for x in found if x[0] == t) for t in self.topic_types}
            return
        self.topic_types = {c.topic: c.msgtype for c in self._reader.connections}
        self.count = {c.topic: c.msgcount for c in self._reader.connections}

    @property
    def is_ros2(self) -> bool:
        return self._reader is None or getattr(self._reader, "is2", True)

    def messages(self, topics: Sequence[str]) -> Iterator[Tuple[str, str, int, object, bytes]]:
        """-> (topic, msgtype, log time ns, message, raw bytes)."""
        if self._salvage is not None:
            ts = typestore()
            try:
                for topic, msgtype, t, raw in salvage_mcap(self._salvage):
                    if topic in topics:
                        msg = ts.deserialize_cdr(raw, msgtype)
                        self.read += 1
                        yield topic, msgtype, t, msg, raw
            except (KeyboardInterrupt, GeneratorExit):
                raise
            except Exception as exc:
                raise BagError(f"{self.path}: bag breaks off after {self.read} messages ({exc})") from None
            raise BagError(f"{self.path}: bag breaks off after {self.read} messages (truncated MCAP: "
                           f"{self._open_error}); the complete records before the cut were read")
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
            if self._reader is not None:
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
