"""Time synchronization of N inputs with message_filters' semantics, plus counting.

exact        a set is emitted when every input holds a message with the same stamp
approximate  message_filters' Python ApproximateTimeSynchronizer: the newest message is the pivot;
             each other input offers its messages within `slop` of it, nearest first, and the first
             combination whose spread is below `slop` is emitted
Each input keeps at most `queue_size` messages; one pushed out unmatched is counted in `dropped`.
A stamp far behind the newest one seen (a looping bag, a restarted sim clock) clears the queues.
The node uses it whether or not message_filters is importable: message_filters' synchronizers have the
same matching rules but count nothing and do not reset on a clock jump, and the node's diagnostics
(unmatched messages per topic, clock resets) and its tests rely on both.
"""
from __future__ import annotations

import bisect
import itertools
import threading
from collections import deque
from typing import Any, Callable, Dict, List, Optional

CLOCK_RESET_S = 1.0


def _stamp(msg) -> float:
    s = msg.header.stamp
    return int(s.sec) + int(s.nanosec) * 1e-9


class StereoSynchronizer:
    def __init__(self, n_inputs: int, callback: Callable[..., None], *, queue_size: int = 5,
                 approximate: bool = False, slop: float = 0.0) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if approximate and slop <= 0:
            raise ValueError(f"approximate sync needs a tolerance > 0, got {slop}")
        self.n = n_inputs
        self.callback = callback
        self.queue_size = queue_size
        self.approximate = approximate
        self.slop = slop
        self.queues: List[Dict[float, Any]] = [dict() for _ in range(n_inputs)]
        self.dropped = [0] * n_inputs         # pushed out of a queue without a match
        self.received = [0] * n_inputs
        self.matched = 0
        self.clock_resets = 0
        self._newest: List[Optional[float]] = [None] * n_inputs    # per input: its newest stamp
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            for i, q in enumerate(self.queues):
                self.dropped[i] += len(q)
                q.clear()
            self._newest = [None] * self.n

    def add(self, index: int, msg) -> None:
        stamp = _stamp(msg)
        with self._lock:
            self.received[index] += 1
            newest = self._newest[index]
            # a stream going back in time is a clock reset (a looping bag, a restarted sim); judged per input,
            # since one input's message can arrive late behind the others' next ones (a large image repaired by
            # reliable DDS after its small camera_info and the next frame's right image were delivered)
            if newest is not None and stamp < newest - CLOCK_RESET_S:
                self.clock_resets += 1
                for i, q in enumerate(self.queues):
                    self.dropped[i] += len(q)
                    q.clear()
                self._newest = [None] * self.n
            self._newest[index] = stamp if self._newest[index] is None else max(self._newest[index], stamp)
            queue = self.queues[index]
            if stamp in queue:
                self.dropped[index] += 1      # a duplicate stamp replaces the queued message
            queue[stamp] = msg
            while len(queue) > self.queue_size:
                del queue[min(queue)]
                self.dropped[index] += 1
            if stamp not in queue:            # older than a full queue: pushed out at once, nothing to match
                return
            matched = self._match_approximate(index, stamp) if self.approximate else self._match_exact()
        if matched is not None:
            self.callback(*matched)

    def _match_exact(self):
        common = set(self.queues[0]).intersection(*self.queues[1:])
        if not common:
            return None
        t = min(common)
        self.matched += 1
        return [q.pop(t) for q in self.queues]

    def _match_approximate(self, index: int, stamp: float):
        candidates = []
        for i, q in enumerate(self.queues):
            if i == index:
                candidates.append([stamp])
                continue
            near = sorted((s for s in q if abs(s - stamp) <= self.slop), key=lambda s: abs(s - stamp))
            if not near:
                return None
            candidates.append(near)
        for combo in itertools.product(*candidates):
            if max(combo) - min(combo) <= self.slop:
                self.matched += 1
                return [q.pop(s) for q, s in zip(self.queues, combo)]
        return None


class StereoInputs:
    """The node's and the replay's inputs: the two images paired (exactly, or approximately within `slop`), and
    each side's most recent camera_info cached and attached to the pair (as Isaac ROS's cache_camera_info does), so
    that a camera_info published once (latched, or by a driver at start) or stamped a little off its image still
    serves. With `use_info` false (a calibration given instead), camera_info is not needed.

    When camera_info comes once per frame, a pair formed before its frame's camera_info (recorders and drivers often
    send the images first) is held until that camera_info arrives, so a pair never goes out with the previous
    frame's; if the next pair forms first, the held one goes out with the cached camera_info.

    Inputs: 0 left image, 1 right image, 2 left camera_info, 3 right camera_info.
    callback(left, right, left_info, right_info); the infos are None without `use_info`."""

    def __init__(self, callback: Callable[..., None], *, queue_size: int = 5, approximate: bool = False,
                 slop: float = 0.0, use_info: bool = True, history: int = 200) -> None:
        self.callback = callback
        self.use_info = use_info
        self.images = StereoSynchronizer(2, self._on_images, queue_size=queue_size, approximate=approximate,
                                         slop=slop)
        self.info: List[Optional[Any]] = [None, None]
        self.info_received = [0, 0]
        self.waiting_for_info = 0          # image pairs dropped because camera_info had not arrived for both sides
        self._held = None                  # a pair waiting for its camera_info
        self._info_by_stamp: List[Dict[float, Any]] = [{}, {}]   # per side: recent camera_info by stamp
        self._fresh = [False, False]       # a camera_info arrived since the last pair went out
        self._per_frame = False            # the last pair went out with fresh camera_info on both sides
        self._stamps = [deque(maxlen=history), deque(maxlen=history)]   # recent image stamps per side
        self._lock = threading.Lock()

    @property
    def queue_size(self) -> int:
        return self.images.queue_size

    @property
    def approximate(self) -> bool:
        return self.images.approximate

    @property
    def clock_resets(self) -> int:
        return self.images.clock_resets

    @property
    def matched(self) -> int:
        return self.images.matched

    @property
    def dropped(self) -> List[int]:
        """Per input: images pushed out of the queue unmatched (camera_info is cached, never dropped)."""
        return [*self.images.dropped, 0, 0]

    @property
    def received(self) -> List[int]:
        return [*self.images.received, *self.info_received]

    def unmatched_now(self) -> List[int]:
        """Per input: images still queued without a partner (at the end of a bag: never matched)."""
        return [len(q) for q in self.images.queues] + [0, 0]

    def add(self, index: int, msg) -> None:
        if index < 2:
            with self._lock:
                self._stamps[index].append(_stamp(msg))
            self.images.add(index, msg)
            return
        with self._lock:
            side = index - 2
            self.info[side] = msg
            self.info_received[side] += 1
            self._fresh[side] = True
            by_stamp = self._info_by_stamp[side]
            by_stamp[_stamp(msg)] = msg
            while len(by_stamp) > 32:
                del by_stamp[min(by_stamp)]
            held = None
            if self._held is not None and (self._exact_infos(self._held[0]) is not None or all(self._fresh)):
                held = self._take_held()
        if held is not None:
            self.callback(*held)

    def flush(self) -> None:
        """Send a held pair with the cached camera_info (the end of a bag)."""
        with self._lock:
            held = self._take_held()
        if held is not None:
            self.callback(*held)

    def _take_held(self):
        """(left, right, left_info, right_info) of the held pair, if any and both infos are known; under the lock."""
        if self._held is None or None in self.info:
            return None
        (left, right), self._held = self._held, None
        return self._sent(left, right)

    def _exact_infos(self, image):
        """Both sides' camera_info stamped as `image`, when both arrived; None otherwise."""
        t = _stamp(image)
        infos = [d.get(t) for d in self._info_by_stamp]
        return None if None in infos else infos

    def _sent(self, left, right):
        exact = self._exact_infos(left)
        # a pair takes its own frame's camera_info when both came (one arriving late behind the next frame's
        # camera_info, a large image repaired by reliable DDS, must not take the next frame's and leave that
        # frame's pair waiting for one that already came); else the freshest cached ones
        self._per_frame = exact is not None or all(self._fresh)
        self._fresh = [False, False]
        return (left, right, *(exact if exact is not None else self.info))

    def _on_images(self, left, right) -> None:
        if not self.use_info:
            self.callback(left, right, None, None)
            return
        out = []
        with self._lock:
            if self._held is not None:
                if None in self.info:
                    self.waiting_for_info += 1     # superseded while still without camera_info
                    self._held = None
                else:                              # its camera_info never came: send it with the cached one
                    out.append(self._take_held())
            if self._exact_infos(left) is None and (None in self.info or (self._per_frame and not all(self._fresh))):
                self._held = (left, right)
            else:
                out.append(self._sent(left, right))
        for args in out:
            self.callback(*args)

    def stamp_offsets(self) -> List[float]:
        """For each recent left stamp, the signed offset (s) to the nearest right stamp."""
        with self._lock:
            lefts, rights = list(self._stamps[0]), sorted(self._stamps[1])
        if not lefts or not rights:
            return []
        out = []
        for t in lefts:
            i = bisect.bisect_left(rights, t)
            near = [rights[j] for j in (i - 1, i) if 0 <= j < len(rights)]
            out.append(min((r - t for r in near), key=abs))
        return out

    def hint(self) -> Optional[str]:
        """What to do when images arrive but no pair forms: near-matches under exact sync, a tolerance that is too
        tight, or camera_info that never came. None when pairs form (or nothing arrived)."""
        left_n, right_n = self.images.received
        waited = self.waiting_for_info + (self._held is not None)
        if self.use_info and waited and None in self.info:
            missing = [side for side, info in zip(("left", "right"), self.info) if info is None]
            return (f"{waited} image pairs formed, but no camera_info arrived for the "
                    f"{' and '.join(missing)} camera: check the camera_info topics, or give a calibration instead "
                    "(--calib FILE, or --f/--baseline)")
        if self.images.matched or not left_n or not right_n:
            return None
        offsets = [abs(o) for o in self.stamp_offsets()]
        if not offsets:
            return None
        offsets.sort()
        median, worst = offsets[len(offsets) // 2], offsets[-1]
        if median > 1.0:
            return (f"left and right image stamps are {median:.3f} s apart (median): the two topics do not come from "
                    "one stereo camera at the same time")
        tolerance = max(2 * median, 1.25 * worst, 1e-3)
        if not self.images.approximate:
            return (f"exact sync paired none of {left_n} left and {right_n} right images, but their stamps are near: "
                    f"{median * 1e3:.1f} ms apart (median), {worst * 1e3:.1f} ms at most. Use approximate sync "
                    f"(ges replay --approximate-sync --slop {tolerance:.3g}; node: approximate_sync:=true "
                    f"approximate_sync_tolerance_seconds:={tolerance:.3g})")
        return (f"approximate sync within {self.images.slop:g} s paired none; left and right stamps are "
                f"{median * 1e3:.1f} ms apart (median), {worst * 1e3:.1f} ms at most: raise the tolerance above that")
