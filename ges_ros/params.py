"""Every node parameter, declared from this one table (name, default, description, range, read-only).

Read-only parameters need a restart; the others take effect on the next pair.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    range: Optional[Tuple[float, float]] = None
    read_only: bool = False
    choices: Tuple[str, ...] = ()


PARAMS = (
    Param("weights", "default", "GES weights: 'default' (shipped), a .safetensors file or an exported .onnx model",
          read_only=True),
    Param("device", "auto", "inference device: auto (CUDA if available, else CPU), cpu, cuda, cuda:N", read_only=True),
    Param("iters", 4, "solver iterations per pair (upper bound when budget_ms > 0)", (1, 64)),
    Param("solver", "anderson", "fixed-point solver (hyper_anderson: the learned one shipped with the default "
          "weights; weights without it fall back to anderson with a warning)",
          choices=("hyper_anderson", "anderson", "fixed_point")),
    Param("budget_ms", 0.0, "latency budget for the network in ms; iterations stop before overrunning it (0 = fixed iters)",
          (0.0, 60000.0)),
    Param("warm_start", False, "start the solver from the previous frame's fixed point (video streams)"),
    Param("input_scale", 1.0, "run the network on the pair resized by this factor; outputs stay at input resolution",
          (0.05, 4.0)),
    Param("retry_input_scale", 0.0, "when inference fails on a pair (e.g. CUDA out of memory), retry it once at "
          "input_scale times this factor; 0 = drop the pair", (0.0, 0.95)),
    Param("max_pixels", 0, "inputs with more pixels (after input_scale) are downscaled to fit; 0 = no limit",
          (0, 1 << 30)),
    Param("min_disparity", 0.0, "smallest pixel shift x_l - x_r accepted as valid (px)", (0.0, 4096.0)),
    Param("max_disparity", 0.0, "largest pixel shift accepted as valid (px); 0 = the network's search range",
          (0.0, 4096.0)),
    Param("delta_d", 0.0625, "DisparityImage.delta_d: the smallest disparity increment reported (px)", (1e-6, 16.0)),
    Param("approximate_sync", False, "pair inputs by nearest stamps instead of exact stamps", read_only=True),
    Param("approximate_sync_tolerance_seconds", 0.1, "largest stamp spread of an approximately synced set (s)",
          (0.0, 10.0), read_only=True),
    Param("queue_size", 5, "messages kept per input while waiting for a match", (1, 1000), read_only=True),
    Param("use_color", True, "add packed rgb from the left image to points2"),
    Param("avoid_point_cloud_padding", False, "pack points2 fields without 16-byte alignment padding"),
    Param("min_depth", 0.0, "points nearer than this are NaN in points2 (m)", (0.0, 1e6)),
    Param("max_depth", 0.0, "points farther than this are NaN in points2 (m); 0 = no limit", (0.0, 1e6)),
    Param("qos_reliability", "auto", "input QoS reliability: auto (match the publishers, as rosbag2 does), "
          "best_effort (SensorDataQoS) or reliable", choices=("auto", "best_effort", "reliable")),
    Param("no_input_warning_seconds", 5.0, "warn when inputs have publishers but nothing arrived for this long (s)",
          (0.5, 3600.0)),
    Param("diagnostics_period", 1.0, "period of /diagnostics (s)", (0.1, 60.0), read_only=True),
)

PARAM_NAMES = tuple(p.name for p in PARAMS)
RUNTIME_PARAMS = tuple(p.name for p in PARAMS if not p.read_only)


def by_name(name: str) -> Param:
    for p in PARAMS:
        if p.name == name:
            return p
    raise KeyError(name)
