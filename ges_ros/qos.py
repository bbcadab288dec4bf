"""The node's input subscriptions and their QoS: which reliability and durability each input is subscribed with
(the qos_reliability mode, or in auto what every publisher of it offers, as rosbag2 decides), and switching them
without losing a message (a replaced subscription keeps delivering until its successor does; a message taken
from both goes on once).
"""
from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data

from .inputs import Input

RETIRE_AFTER_S = 3.0     # a replaced subscription is destroyed once its successor delivers, or after this
OVERLAP_S = 0.5          # ... and not before its successor has delivered for this long: what it still queues is taken
Qos = Tuple[QoSReliabilityPolicy, QoSDurabilityPolicy]


class InputSubscriptions:
    """Subscriptions of the inputs `indices` of `inputs` (relative `topics`, resolved `names`, message `types`);
    each message taken goes to deliver(index, msg) once."""

    def __init__(self, node: Node, *, inputs: Sequence[Input], indices: Sequence[int], topics: Sequence[str],
                 names: Sequence[str], types: Sequence[Any], queue_size: int, mode: Callable[[], str],
                 deliver: Callable[[int, Any], None]) -> None:
        self.node, self.inputs, self.indices = node, tuple(inputs), tuple(indices)
        self.topics, self.names, self.types = tuple(topics), tuple(names), tuple(types)
        self.queue_size, self.mode, self.deliver = queue_size, mode, deliver
        count = len(self.inputs)
        self.subs: Dict[int, Any] = {}
        self.qos: Dict[int, Qos] = {}
        # per input: the subscription being replaced, since when, and when its successor first delivered
        self.retiring: Dict[int, List[Any]] = {}
        self._generation = [0] * count                               # per input: the current subscription's number
        self._recent = [deque(maxlen=32) for _ in range(count)]      # per input: (stamp, subscription) lately taken
        self.last_rx = [0.0] * count                                 # per input: when a message last came (monotonic)
        self.lost = [0] * count           # per input: messages DDS discarded before the node took them
        self._spares: Dict[int, Tuple[Any, int, Qos]] = {}   # auto, no publisher yet: the other reliability's
        self.subscribe(self.wanted())
        self.subscribe_both_until_known()

    def wanted(self) -> Dict[int, Qos]:
        """Per input, the reliability and durability to subscribe with. Reliability: the `qos_reliability` mode, or
        in auto reliable when every publisher of that input offers it (as rosbag2 decides per topic). Durability:
        transient-local for a camera_info whose publishers all offer it (a latched camera_info, sent once and kept
        for late joiners, reaches only a transient-local subscriber; a volatile publisher refuses one)."""
        mode = self.mode()
        wanted = {}
        for i in self.indices:
            offered = [p.qos_profile for p in self.node.get_publishers_info_by_topic(self.names[i])]
            if mode == "reliable":
                reliability = QoSReliabilityPolicy.RELIABLE
            elif mode == "best_effort":
                reliability = QoSReliabilityPolicy.BEST_EFFORT
            elif offered and all(q.reliability == QoSReliabilityPolicy.RELIABLE for q in offered):
                reliability = QoSReliabilityPolicy.RELIABLE
            else:
                reliability = QoSReliabilityPolicy.BEST_EFFORT
            latched = not self.inputs[i].is_image and offered and all(q.durability == QoSDurabilityPolicy.TRANSIENT_LOCAL for q in offered)
            wanted[i] = (reliability, QoSDurabilityPolicy.TRANSIENT_LOCAL if latched else QoSDurabilityPolicy.VOLATILE)
        return wanted

    @property
    def reliability(self) -> Optional[QoSReliabilityPolicy]:
        """The inputs' subscribed reliability when all agree (None when they differ)."""
        found = {q[0] for q in self.qos.values()}
        return found.pop() if len(found) == 1 else None

    def summary(self) -> str:
        """The subscribed QoS, as diagnostics and logs show it: one word when all inputs agree, else per input."""
        words = {i: q[0].name.lower() + (" transient_local" if q[1] == QoSDurabilityPolicy.TRANSIENT_LOCAL else "")
                 for i, q in self.qos.items()}
        if len(set(words.values())) == 1:
            return next(iter(words.values()))
        return ", ".join(f"{self.topics[i]}: {w}" for i, w in sorted(words.items()))

    def subscribe(self, wanted: Dict[int, Qos]) -> None:
        """Subscribe each input whose QoS changed. A replaced subscription keeps delivering until its successor
        delivers (a new subscription misses what is published before the publisher has discovered it, and the
        first frames after a switch were lost; the subscription's own matched status comes earlier than that),
        and a message taken from both is passed on once."""
        for i, (reliability, durability) in wanted.items():
            if self.qos.get(i) == (reliability, durability):
                spare = self._spares.pop(i, None)    # the other reliability is not needed: the publishers decided
                if spare is not None:
                    self.node.destroy_subscription(spare[0])
                continue
            spare = self._spares.pop(i, None)
            if spare is not None and spare[2] == (reliability, durability):
                # the subscription of the other reliability, there since the start, is the one wanted: it has been
                # receiving all along, so nothing published since the start is missed
                sub, gen, qos = spare
                self._generation[i] = gen
                delivered = time.monotonic() if any(g == gen for _, g in self._recent[i]) else None
            else:
                if spare is not None:
                    self.node.destroy_subscription(spare[0])
                self._generation[i] += 1
                gen = self._generation[i]
                sub = self._create(i, reliability, durability, gen)
                delivered = None
            old = self.subs.get(i)
            if i in self.retiring:                  # replaced again before the previous switch finished
                self.node.destroy_subscription(self.retiring.pop(i)[0])
            if old is not None:
                self.retiring[i] = [old, time.monotonic(), delivered]
            self.subs[i], self.qos[i] = sub, (reliability, durability)

    def _create(self, i: int, reliability, durability, gen: int):
        qos = QoSProfile(depth=self.queue_size, reliability=reliability,
                         durability=durability, history=qos_profile_sensor_data.history)
        # DDS's message-lost events (samples the middleware knows it lost); a KEEP_LAST history overwrite raises none
        return self.node.create_subscription(self.types[i], self.topics[i],
                                        (lambda m, i=i, gen=gen: self._on_message(i, m, gen)),
                                        qos, event_callbacks=SubscriptionEventCallbacks(
                                            message_lost=(lambda info, i=i: self._on_lost(i, info))))

    def subscribe_both_until_known(self) -> None:
        """auto, an input with no publisher yet: a subscription of the other reliability beside the first one.
        A publisher that appears later matches at least one of them from its first message on (a reliable
        driver's first large frame, once lost by the best-effort subscription while the switch to reliable was
        still to come; and a best-effort publisher never matches a reliable subscription)."""
        if self.mode() != "auto":
            return
        for i in self.indices:
            if self.node.count_publishers(self.names[i]) or i in self._spares:
                continue
            reliability, durability = self.qos[i]
            other = (QoSReliabilityPolicy.RELIABLE if reliability == QoSReliabilityPolicy.BEST_EFFORT
                     else QoSReliabilityPolicy.BEST_EFFORT)
            self._generation[i] += 1
            gen = self._generation[i]
            self._spares[i] = (self._create(i, other, durability, gen), gen, (other, durability))

    def _retire(self, index: int) -> None:
        """Destroy the subscription that `index`'s current one replaced."""
        old = self.retiring.pop(index)[0]
        self.node.destroy_subscription(old)

    def resubscribe_if_needed(self) -> None:
        wanted = self.wanted()
        for i in [i for i in self._spares if wanted.get(i) == self.qos.get(i)
                  and self.node.count_publishers(self.names[i])]:
            self.node.destroy_subscription(self._spares.pop(i)[0])   # the publishers match the first subscription
        if wanted != self.qos:
            publishers = sum(self.node.count_publishers(self.names[i]) for i in self.indices)
            why = "matching the publishers" if publishers else "no publisher left; best_effort matches any"
            before = self.summary()
            self.subscribe(wanted)
            self.node.get_logger().info(f"input QoS {before} -> {self.summary()} ({why})")
        self.subscribe_both_until_known()

    def retire_stale(self) -> None:
        """A quiet input's replaced subscription goes after RETIRE_AFTER_S: its successor had time to match."""
        now = time.monotonic()
        for i in [i for i, (_, since, _) in self.retiring.items() if now - since > RETIRE_AFTER_S]:
            self._retire(i)

    def _on_message(self, index: int, msg, generation: int) -> None:
        now = time.monotonic()
        self.last_rx[index] = now
        if generation == self._generation[index] and index in self.retiring:
            # the new subscription delivers; the old one goes once it has passed on what it had queued
            retiring = self.retiring[index]
            retiring[2] = retiring[2] or now
            if now - retiring[2] >= OVERLAP_S:
                self._retire(index)
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        if any(s == stamp and g != generation for s, g in self._recent[index]):
            return      # the same sample through the other of two overlapping subscriptions (a re-sent stamp counts)
        self._recent[index].append((stamp, generation))
        self.deliver(index, msg)

    def _on_lost(self, index: int, info) -> None:
        self.lost[index] += info.total_count_change
