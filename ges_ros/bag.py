"""Bags without a ROS install, through the `rosbags` library: reading inputs (ROS 2 sqlite3/MCAP,
ROS 1), picking the stereo topics (by name pattern, namespace and message count), and writing outputs that `ros2 bag play`, Foxglove and rosbags read."""
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
    left_info: Optional[str]          # None when a calibration is given instead
    right_info: Optional[str]

    def as_tuple(self) -> Tuple[str, str, Optional[str], Optional[str]]:
        return self.left, self.right, self.left_info, self.right_info


# how stereo drivers and datasets name the two cameras: (left token, right token) in a topic's path
SIDE_TOKENS = (("left", "right"),            # stereo_image_proc, ZED (zed/zed_node/left/...), OAK-D, PR2
               ("infra1", "infra2"),         # RealSense
               ("cam0", "cam1"),             # EuRoC, Kalibr
               ("image_0", "image_1"))       # KITTI-style exports


def _namespace(topic: str) -> str:
    return topic.rsplit("/", 1)[0]


def _image_pairs(images: Sequence[str], counts: Dict[str, int]) -> List[Tuple[str, str]]:
    """(left, right) topics that differ only in the side token, best first: rectified, grey before colour (the
    network reads either; colour topics are often debayered copies), most messages, shortest name."""
    pairs = []
    for left in images:
        for a, b in SIDE_TOKENS:
            for i in range(len(left)):
                if left.lower().startswith(a, i):
                    right = left[:i] + b + left[i + len(a):]
                    if right in images:
                        pairs.append((left, right))
    pairs = list(dict.fromkeys(pairs))
    pairs.sort(key=lambda lr: ("rect" not in lr[0], "color" in lr[0], -min(counts.get(t, 1) for t in lr),
                               len(lr[0])))
    return pairs


def _info_for(image: str, infos: Sequence[str]) -> Optional[str]:
    """The camera_info of an image topic: in its own namespace, or the nearest one above it (never a sibling's:
    PR2's narrow and wide stereo both have left/camera_info)."""
    ns = _namespace(image)
    best = None
    for info in infos:
        ins = _namespace(info)
        if ns == ins or ns.startswith(ins + "/"):
            if best is None or len(ins) > len(_namespace(best)):
                best = info
    return best


def guess_topics(topic_types: Dict[str, str], given: Optional[Dict[str, Optional[str]]] = None, *,
                 counts: Optional[Dict[str, int]] = None, need_info: bool = True) -> StereoTopics:
    """Pick the stereo topics: explicit ones win; otherwise image topics with messages that pair by a side token
    (left/right, infra1/infra2, cam0/cam1, image_0/image_1), and the camera_info in each image's namespace."""
    given = {k: v for k, v in (given or {}).items() if v}
    counts = counts or {}
    for key, topic in given.items():
        if topic not in topic_types:
            raise BagError(f"topic {topic} ({key}) is not in the bag; it has {sorted(topic_types)}")
    images = [t for t, ty in topic_types.items() if ty in IMAGE_TYPES and counts.get(t, 1) > 0]
    infos = [t for t, ty in topic_types.items() if ty == INFO_TYPE and counts.get(t, 1) > 0]
    left, right = given.get("left"), given.get("right")
    if not (left and right):
        pairs = [(lt, rt) for lt, rt in _image_pairs(images, counts)
                 if (left is None or lt == left) and (right is None or rt == right)]
        if not pairs:
            raise BagError(f"no left/right image topic pair with messages among {sorted(images)} (names paired by "
                           f"{', '.join('/'.join(p) for p in SIDE_TOKENS)}); pass --left and --right")
        left, right = pairs[0]
    chosen = {"left": left, "right": right, "left_info": None, "right_info": None}
    if need_info:
        for side, image in (("left", left), ("right", right)):
            info = given.get(f"{side}_info") or _info_for(image, infos)
            if info is None:
                raise BagError(f"no camera_info topic for {image} (in {_namespace(image)} or above; the bag has "
                               f"{sorted(infos) or 'none'}): pass --{side}-info, or give the calibration instead "
                               "(--calib FILE, --calib FILE --calib-right FILE, or --f/--baseline)")
            chosen[f"{side}_info"] = info
    return StereoTopics(**chosen)


def to_ros2(msg, msgtype: str, store):
    """A message read from a ROS 1 bag, as the ROS 2 type of the same name (D K R P -> d k r p, no header seq):
    field by field, recursively, so that it can be written to a ROS 2 bag."""
    cls = store.types[msgtype]
    kwargs = {}
    for name, spec in cls.__dataclass_fields__.items():
        if name == "__msgtype__":
            continue
        value = getattr(msg, name, None)
        if value is None:
            value = getattr(msg, name.upper())
        sub = getattr(value, "__msgtype__", None)
        if sub is not None:
            value = to_ros2(value, sub, store)
        elif isinstance(value, list) and value and hasattr(value[0], "__msgtype__"):
            value = [to_ros2(v, v.__msgtype__, store) for v in value]
        kwargs[name] = value
    return cls(**kwargs)


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
        self._alias_dir: Optional[str] = None
        if not self.path.exists():
            raise BagError(f"bag not found: {self.path}")
        try:
            self._reader = AnyReader([self._readable_path()], default_typestore=typestore())
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

    def _readable_path(self) -> Path:
        """rosbags takes any path ending in .bag for a ROS 1 bag; a ROS 2 bag folder named so (`ros2 bag record -o
        output.bag`) is opened through a link without the suffix."""
        if not (self.path.is_dir() and self.path.suffix == ".bag"):
            return self.path
        import tempfile
        self._alias_dir = tempfile.mkdtemp(prefix="ges_bag_")
        alias = Path(self._alias_dir) / self.path.stem
        alias.symlink_to(self.path.resolve(), target_is_directory=True)
        return alias

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
        if self._alias_dir is not None:
            shutil.rmtree(self._alias_dir, ignore_errors=True)
            self._alias_dir = None


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
