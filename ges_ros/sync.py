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

import itertools
import threading
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
        self._newest: Optional[float] = None
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            for i, q in enumerate(self.queues):
                self.dropped[i] += len(q)
                q.clear()
            self._newest = None

    def add(self, index: int, msg) -> None:
        stamp = _stamp(msg)
        with self._lock:
            self.received[index] += 1
            if self._newest is not None and stamp < self._newest - CLOCK_RESET_S:
                self.clock_resets += 1
                for i, q in enumerate(self.queues):
                    self.dropped[i] += len(q)
                    q.clear()
                self._newest = None
            self._newest = stamp if self._newest is None else max(self._newest, stamp)
            queue = self.queues[index]
            if stamp in queue:
                self.dropped[index] += 1      # a duplicate stamp replaces the queued message
            queue[stamp] = msg
            while len(queue) > self.queue_size:
                del queue[min(queue)]
                self.dropped[index] += 1
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
