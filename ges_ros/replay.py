"""`ges replay IN_BAG -o OUT_BAG`: the node's processing path over a recorded bag, without ROS.

Pairs are formed by the node's synchronizer and processed by the node's StereoProcessor; outputs
are written with the input stamps. A bag that breaks off, or Ctrl-C, still leaves a readable output
bag with everything processed so far; the exit status is then non-zero.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .bag import BagError, BagReader, BagWriter, guess_topics
from .messages import rosbags_types
from .processing import InputError, ProcessingParams, StereoProcessor
from .sync import StereoSynchronizer

OUT_TYPES = {"disparity": "stereo_msgs/msg/DisparityImage", "points2": "sensor_msgs/msg/PointCloud2",
             "confidence": "sensor_msgs/msg/Image", "disparity_color": "sensor_msgs/msg/Image"}


@dataclass
class ReplaySummary:
    frames: int = 0
    dropped: Dict[str, int] = field(default_factory=dict)
    network_ms: List[float] = field(default_factory=list)
    iters: List[int] = field(default_factory=list)
    error: Optional[str] = None
    interrupted: bool = False
    topics: tuple = ()

    def lines(self) -> List[str]:
        ms = np.array(self.network_ms) if self.network_ms else np.zeros(1)
        out = [f"frames processed: {self.frames}",
               f"pairs dropped: {sum(self.dropped.values())}" + (f" {dict(self.dropped)}" if self.dropped else ""),
               f"inference ms: mean {ms.mean():.1f}, p95 {np.percentile(ms, 95):.1f}",
               f"iterations: mean {np.mean(self.iters) if self.iters else 0:.2f}"]
        if self.interrupted:
            out.append("interrupted: output bag closed with the frames above")
        if self.error:
            out.append(f"error: {self.error}")
        return out


def replay(in_bag: str, out_bag: str, predictor, *, params: ProcessingParams, topics: Optional[Dict] = None,
           namespace: str = "/stereo", approximate: bool = False, slop: float = 0.1, queue_size: int = 5,
           rate: Optional[float] = None, copy_inputs: bool = False, storage: str = "mcap", color: bool = False,
           overwrite: bool = False, progress: bool = True, log=print) -> ReplaySummary:
    summary = ReplaySummary()
    reader = BagReader(in_bag)
    chosen = guess_topics(reader.topic_types, topics)
    summary.topics = chosen.as_tuple()
    log(f"stereo topics: left {chosen.left}, right {chosen.right}, left info {chosen.left_info}, "
        f"right info {chosen.right_info}")
    types = rosbags_types()
    processor = StereoProcessor(predictor, params, types, names=chosen.as_tuple())
    writer = BagWriter(out_bag, storage=storage, overwrite=overwrite)
    ns = namespace.rstrip("/")
    index = {t: i for i, t in enumerate(chosen.as_tuple())}
    total = min(reader.count.get(chosen.left, 0), reader.count.get(chosen.right, 0))
    from tqdm import tqdm
    bar = tqdm(total=total, disable=not progress, desc="replay", unit="frame", dynamic_ncols=True)

    def on_pair(left, right, left_info, right_info):
        try:
            result = processor.process(left, right, left_info, right_info, want_points=True, want_color=color)
        except InputError as exc:
            summary.dropped[exc.reason] = summary.dropped.get(exc.reason, 0) + 1
            log(f"pair dropped: {exc}")
            return
        stamp_ns = result.stamp[0] * 10 ** 9 + result.stamp[1]
        for name, msg in (("disparity", result.disparity), ("points2", result.points),
                          ("confidence", result.confidence), ("disparity_color", result.color)):
            if msg is not None:
                writer.write(f"{ns}/{name}", OUT_TYPES[name], stamp_ns, msg)
        summary.frames += 1
        summary.network_ms.append(result.timings_ms.get("network", 0.0))
        summary.iters.append(result.iters)
        bar.update(1)
        bar.set_postfix(iters=result.iters, net_ms=f"{summary.network_ms[-1]:.0f}")

    sync = StereoSynchronizer(4, on_pair, queue_size=queue_size, approximate=approximate, slop=slop)
    wall0, bag0 = time.monotonic(), None
    try:
        for topic, msgtype, t, msg, raw in reader.messages(list(index)):
            if rate:
                bag0 = t if bag0 is None else bag0
                wait = (t - bag0) * 1e-9 / rate - (time.monotonic() - wall0)
                if wait > 0:
                    time.sleep(wait)
            if copy_inputs:
                writer.write(topic, msgtype, t, raw=raw)
            sync.add(index[topic], msg)
    except BagError as exc:
        summary.error = str(exc)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close()
        writer.close()
        reader.close()
    for i, name in enumerate(chosen.as_tuple()):
        if sync.dropped[i]:
            summary.dropped[f"unmatched {name}"] = sync.dropped[i]
    return summary
