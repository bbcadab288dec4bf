"""`ges replay IN_BAG -o OUT_BAG`: the node's processing path over a recorded bag, without ROS.

Pairs are formed by the node's inputs (images paired exactly or approximately, each side's latest camera_info
cached; or a calibration given instead of camera_info) and processed by the node's StereoProcessor; outputs are
written with the input stamps. ROS 1 and ROS 2 bags go through the same path. A replay that writes no frame says
why (and `ges replay` exits non-zero). A bag that breaks off, or Ctrl-C, still leaves a readable output
bag with everything processed so far; the exit status is then non-zero.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from ges_core.geometry import StereoCalibration

from .bag import BagError, BagReader, BagWriter, guess_topics, to_ros2
from .messages import rosbags_types
from .processing import OUTPUTS, InputError, ProcessingParams, StereoProcessor
from .sync import StereoInputs


@dataclass
class ReplaySummary:
    frames: int = 0
    dropped: Dict[str, int] = field(default_factory=dict)
    unmatched_at_end: Dict[str, int] = field(default_factory=dict)
    network_ms: List[float] = field(default_factory=list)
    iters: List[int] = field(default_factory=list)
    scales: List[float] = field(default_factory=list)          # the scale the network ran each frame at
    error: Optional[str] = None
    interrupted: bool = False
    topics: tuple = ()
    messages: Dict[str, int] = field(default_factory=dict)   # read per input topic
    hint: Optional[str] = None                                # why pairs did not form, when they did not

    def lines(self) -> List[str]:
        ms = np.array(self.network_ms) if self.network_ms else np.zeros(1)
        out = [f"frames processed: {self.frames}",
               f"pairs dropped: {sum(self.dropped.values())}" + (f" {dict(self.dropped)}" if self.dropped else ""),
               f"unmatched at the end: {sum(self.unmatched_at_end.values())}"
               + (f" {dict(self.unmatched_at_end)}" if self.unmatched_at_end else ""),
               f"inference ms: mean {ms.mean():.1f}, p95 {np.percentile(ms, 95):.1f}",
               f"iterations: mean {np.mean(self.iters) if self.iters else 0:.2f}"]
        if self.hint:
            out.append(f"note: {self.hint}")
        if self.interrupted:
            out.append("interrupted: output bag closed with the frames above")
        if self.error:
            out.append(f"error: {self.error}")
        return out

    def why_empty(self) -> str:
        """Why a replay produced nothing, and what to do."""
        if self.error:
            return self.error
        if self.hint:
            return self.hint
        if self.dropped:
            return f"every pair was dropped ({dict(self.dropped)}; the reasons are logged above)"
        read = ", ".join(f"{t} {n}" for t, n in self.messages.items())
        return f"no image pair formed (messages read: {read or 'none'}); check the topics (--left/--right)"


def replay(in_bag: str, out_bag: str, predictor, *, params: ProcessingParams, topics: Optional[Dict] = None,
           namespace: str = "/stereo", approximate: bool = False, slop: float = 0.1, queue_size: int = 5,
           rate: Optional[float] = None, copy_inputs: bool = False, storage: str = "mcap", color: bool = False,
           overwrite: bool = False, progress: bool = True, log=print,
           calibration: Optional[StereoCalibration] = None, rectify: bool = False) -> ReplaySummary:
    """calibration: use it instead of the bag's camera_info (which then need not exist); rectify: the images are
    raw, rectified with their camera_info's D, K, R and P first."""
    summary = ReplaySummary()
    reader = BagReader(in_bag)
    chosen = guess_topics(reader.topic_types, topics, counts=reader.count, need_info=calibration is None)
    summary.topics = chosen.as_tuple()
    info_text = (f"left info {chosen.left_info}, right info {chosen.right_info}" if calibration is None
                 else "calibration given (camera_info not used)")
    log(f"stereo topics: left {chosen.left}, right {chosen.right}, {info_text}")
    types = rosbags_types()
    names = tuple(t or "(calibration)" for t in chosen.as_tuple())
    processor = StereoProcessor(predictor, params, types, names=names, calibration=calibration, rectify=rectify)
    writer = BagWriter(out_bag, storage=storage, overwrite=overwrite)
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    index = {t: i for i, t in enumerate(chosen.as_tuple()) if t}
    total = min(reader.count.get(chosen.left, 0), reader.count.get(chosen.right, 0))
    from tqdm import tqdm
    bar = tqdm(total=total, disable=not progress, desc="replay", unit="frame", dynamic_ncols=True)

    # every output but the colour map, which is asked for
    wanted = {name for name in OUTPUTS if name != "disparity_color" or color}

    def on_pair(left, right, left_info, right_info):
        try:
            result = processor.process(left, right, left_info, right_info, outputs=wanted,
                                       clock_epoch=sync.clock_resets)
        except InputError as exc:
            summary.dropped[exc.reason] = summary.dropped.get(exc.reason, 0) + 1
            log(f"pair dropped: {exc}")
            return
        stamp_ns = result.stamp[0] * 10 ** 9 + result.stamp[1]
        for name, msg in result.messages.items():
            writer.write(f"{ns}/{name}", OUTPUTS[name].type, stamp_ns, msg)
        if result.scale_changed or summary.frames == 0:
            log(f"network scale {result.scale:.3g}" + (f" ({result.scale_reason})" if result.scale_reason else ""))
        summary.frames += 1
        summary.scales.append(result.scale)
        summary.network_ms.append(result.timings_ms.get("network", 0.0))
        summary.iters.append(result.iters)
        bar.update(1)
        bar.set_postfix(iters=result.iters, net_ms=f"{summary.network_ms[-1]:.0f}")

    sync = StereoInputs(on_pair, queue_size=queue_size, approximate=approximate, slop=slop,
                        use_info=calibration is None)
    wall0, bag0 = time.monotonic(), None
    ros1 = not reader.is_ros2
    try:
        for topic, msgtype, t, msg, raw in reader.messages(list(index)):
            summary.messages[topic] = summary.messages.get(topic, 0) + 1
            if rate:
                bag0 = t if bag0 is None else bag0
                wait = (t - bag0) * 1e-9 / rate - (time.monotonic() - wall0)
                if wait > 0:
                    time.sleep(wait)
            if copy_inputs:
                # a ROS 1 message's bytes are not CDR: the message is converted to its ROS 2 form and serialized
                if ros1:
                    writer.write(topic, msgtype, t, to_ros2(msg, msgtype, writer.typestore))
                else:
                    writer.write(topic, msgtype, t, raw=raw)
            sync.add(index[topic], msg)
        sync.flush()           # a pair still waiting for its camera_info goes out with the cached one
    except BagError as exc:
        summary.error = str(exc)
        sync.flush()
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close()
        writer.close()
        reader.close()
    dropped, left_over = sync.dropped, sync.unmatched_now()
    for i, name in enumerate(chosen.as_tuple()):
        if dropped[i]:
            summary.dropped[f"unmatched {name}"] = dropped[i]
        if left_over[i]:
            summary.unmatched_at_end[name] = left_over[i]
    if sync.waiting_for_info:
        summary.dropped["no camera_info yet"] = sync.waiting_for_info
    summary.hint = sync.hint() if summary.frames == 0 else None
    return summary
