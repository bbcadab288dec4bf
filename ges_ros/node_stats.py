"""What the node has done, for /diagnostics, its shutdown summary and stats(): pairs in and out, drops by reason,
the recent latencies, inference times, iterations and out-of-range pixels, the scale the network last ran at, the
solver's fallbacks and the last rectification check. Pure bookkeeping: no ROS."""
from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any, Dict, Optional, Tuple

RECENT = 200        # pairs the means and latencies are taken over


def _mean(values) -> float:
    return sum(values) / len(values) if values else 0.0


class NodeStats:
    def __init__(self) -> None:
        self.drops: Counter = Counter()
        self.pairs_in = 0
        self.pairs_out = 0
        self.latency_ms: deque = deque(maxlen=RECENT)      # stamp to publication, per pair
        self.inference_ms: deque = deque(maxlen=RECENT)
        self.iters: deque = deque(maxlen=RECENT)
        self.out_of_range: deque = deque(maxlen=RECENT)    # per pair: pixels invalid as beyond the range
        self.scale: Optional[float] = None                 # the scale the network ran the last pair at
        self.fallbacks = 0
        self.row = None                                    # the last rectification check (RowAlignment)
        self.row_checks = 0
        self._window = {"t": time.monotonic(), "in": 0, "out": 0}

    def pair_in(self) -> None:
        self.pairs_in += 1
        self._window["in"] += 1

    def pair_out(self, result, latency_ms: float) -> None:
        """A published StereoResult."""
        self.latency_ms.append(latency_ms)
        self.inference_ms.append(result.timings_ms.get("network", 0.0))
        self.iters.append(result.iters)
        self.out_of_range.append(result.out_of_range)
        self.scale = result.scale
        self.fallbacks += int(result.fallback)
        if result.row_alignment is not None:
            self.row = result.row_alignment
            self.row_checks += 1
        self.pairs_out += 1
        self._window["out"] += 1

    def rates(self) -> Tuple[float, float]:
        """Pairs in and out a second since the last call."""
        now = time.monotonic()
        dt = max(1e-6, now - self._window["t"])
        rates = self._window["in"] / dt, self._window["out"] / dt
        self._window = {"t": now, "in": 0, "out": 0}
        return rates

    def values(self) -> Dict[str, Any]:
        """The /diagnostics key-values this class keeps."""
        lat = sorted(self.latency_ms)
        row = self.row
        return {
            "latency_ms_mean": f"{_mean(lat):.1f}", "latency_ms_max": f"{lat[-1] if lat else 0:.1f}",
            "inference_ms_mean": f"{_mean(self.inference_ms):.1f}", "iterations_mean": f"{_mean(self.iters):.2f}",
            "network_scale": f"{self.scale:.3g}" if self.scale is not None else "-",
            "out_of_range_pixels_mean": f"{_mean(self.out_of_range):.0f}",
            "pairs_in": self.pairs_in, "pairs_out": self.pairs_out, "solver_fallbacks": self.fallbacks,
            "row_offset_px": f"{row.offset_px:+.2f}" if row else "-",
            "row_offset_abs_p90_px": f"{row.abs_p90_px:.2f}" if row else "-",
            "row_misaligned_share": f"{row.misaligned_share:.3f}" if row else "-",
            "row_checks": self.row_checks,
        }

    def summary(self) -> str:
        return (f"pairs_in={self.pairs_in} pairs_out={self.pairs_out} inference_ms={_mean(self.inference_ms):.1f} "
                f"iterations={_mean(self.iters):.2f} dropped={dict(self.drops)} solver_fallbacks={self.fallbacks}")
