"""Every node parameter, declared from this one table (name, default, description, range, read-only, scope).

Read-only parameters need a restart; the others take effect on the next pair. `scope` says who reads a parameter:
"pipeline" (a field of ges_core.pipeline.PipelineParams), "output" (ges_ros.processing.OutputParams) or "node"
(the node itself: weights, sync, QoS, diagnostics). Adding a parameter: a row here and the field where it is used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ges_core.config import GESConfig
from ges_core import solver_names
from ges_core.ov_backend import BACKEND_CHOICES, DEFAULT_BACKEND, PRECISIONS


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    range: Optional[Tuple[float, float]] = None
    read_only: bool = False
    choices: Tuple[str, ...] = ()
    scope: str = "node"
    dynamic_typing: bool = False      # takes more than one type (input_scale: "auto" or a number)


PARAMS = (
    Param("weights", "default", "GES weights: 'default' (shipped), a .safetensors file or an exported .onnx model",
          read_only=True),
    Param("calibration", "", "calibration file used instead of camera_info: Middlebury/ETH3D calib.txt, KITTI calib "
          "(P2/P3), or the left camera's ROS camera_info YAML (with calibration_right); empty = camera_info topics",
          read_only=True),
    Param("calibration_right", "", "the right camera's ROS camera_info YAML, with calibration", read_only=True),
    Param("image_transport", "raw", "how the images arrive: raw (sensor_msgs/Image on <image topic>) or compressed "
          "(sensor_msgs/CompressedImage, JPEG or PNG, on <image topic>/compressed)", read_only=True,
          choices=("raw", "compressed")),
    Param("rectify", False, "the images are raw (left/image_raw, right/image_raw): rectify them here with their "
          "camera_info's D, K, R and P (plumb_bob, rational_polynomial, equidistant) before matching; outputs are "
          "in the rectified left frame, with its P", read_only=True),
    Param("device", "auto", "inference device: auto (CUDA if available, else CPU), cpu, cuda, cuda:N", read_only=True),
    Param("backend", DEFAULT_BACKEND, "network runtime: auto (OpenVINO on a CPU where it is installed, else "
          "PyTorch), torch, openvino (CPU); the solver loop is the same in each", read_only=True,
          choices=BACKEND_CHOICES),
    Param("precision", "auto", "the openvino backend's precision: auto (bf16 where the CPU has AMX or AVX-512 "
          "BF16, else fp32; its int8 variant, int8_bf16 / int8, where the weights' int8 check passed it), fp32, bf16, int8 "
          "(NNCF-quantized, the float rest fp32), int8_bf16", read_only=True, choices=PRECISIONS),
    Param("int8_calibration", "generated", "int8's calibration pairs: generated (procedural scenes) or a folder of "
          "NNNN_left / NNNN_right images (frames from this camera calibrate best); each new size is quantized once "
          "(tens of seconds) and cached", read_only=True),
    Param("iters", GESConfig.iters, "solver iterations per pair (upper bound when budget_ms > 0)", (1, 64), scope="pipeline"),
    Param("solver", GESConfig.solver, "fixed-point solver (hyper_anderson: the learned one shipped with the default "
          "weights; weights without it fall back to anderson with a warning)",
          choices=solver_names()),
    Param("budget_ms", 0.0, "latency budget for the network in ms; iterations stop before overrunning it (0 = fixed iters)",
          (0.0, 60000.0), scope="pipeline"),
    Param("warm_start", False, "start the solver from the previous frame's fixed point (video streams)", scope="pipeline"),
    Param("input_scale", "auto", "the scale the network runs at (outputs stay at input resolution): auto (chosen "
          "from the weights' preferred resolution and the disparity range: min_depth with a calibration, else a "
          "coarse probe) or a factor in 0.05..4", scope="pipeline", dynamic_typing=True),
    Param("preferred_pixels", 0, "input_scale auto: the network pixel count to aim at; 0 = the weights' record",
          (0, 1 << 30), scope="pipeline"),
    Param("probe_every", 15, "input_scale auto: one pair in this many gets the range probe while the scene is far "
          "from the range (near it, every pair)", (1, 10000), scope="pipeline"),
    Param("min_confidence", 0.0, "pixels whose (calibrated) confidence is below this are invalid in the disparity, "
          "the cloud and depth; 0 = keep all", (0.0, 1.0), scope="pipeline"),
    Param("row_check_every", 30, "rectification health: one pair in this many has the vertical misalignment of its "
          "rows measured (sparse matches from the network's disparity, ~15 ms), published in /diagnostics and warned "
          "about past 0.5 px; 0 = never", (0, 100000), scope="pipeline"),
    Param("retry_input_scale", 0.0, "when inference fails on a pair (e.g. CUDA out of memory), retry it once at "
          "input_scale times this factor; 0 = drop the pair", (0.0, 0.95), scope="pipeline"),
    Param("max_pixels", 0, "inputs with more pixels (after input_scale) are downscaled to fit; 0 = no limit",
          (0, 1 << 30), scope="pipeline"),
    Param("min_disparity", 0.0, "smallest pixel shift x_l - x_r accepted as valid (px)", (0.0, 4096.0), scope="pipeline"),
    Param("max_disparity", 0.0, "largest pixel shift accepted as valid (px); 0 = the network's search range; a "
          "larger value runs the network small enough to reach it",
          (0.0, 4096.0), scope="pipeline"),
    Param("delta_d", 0.0625, "DisparityImage.delta_d: the smallest disparity increment reported (px)", (1e-6, 16.0), scope="output"),
    Param("approximate_sync", False, "pair inputs by nearest stamps instead of exact stamps", read_only=True),
    Param("approximate_sync_tolerance_seconds", 0.1, "largest stamp spread of an approximately synced set (s)",
          (0.0, 10.0), read_only=True),
    Param("queue_size", 5, "messages kept per input while waiting for a match", (1, 1000), read_only=True),
    Param("output_queue_size", 5, "messages each output publisher keeps for a reliable subscriber that has not "
          "received them yet (depth 1 lost a large message of a frame now and then when the next frame replaced it "
          "before DDS had repaired it)", (1, 100), read_only=True),
    Param("use_color", True, "add packed rgb from the left image to points2", scope="output"),
    Param("avoid_point_cloud_padding", False, "pack points2 fields without 16-byte alignment padding", scope="output"),
    Param("depth_encoding", "32FC1", "the depth image's encoding: 32FC1 (metres, NaN where invalid; REP 117) or "
          "16UC1 (millimetres, 0 where invalid or beyond 65.535 m)", choices=("32FC1", "16UC1"), scope="output"),
    Param("min_depth", 0.0, "points nearer than this are NaN in points2 and depth (m); with a calibration the network is also "
          "run small enough that its range reaches this depth (near range)", (0.0, 1e6), scope="pipeline"),
    Param("max_depth", 0.0, "points farther than this are NaN in points2 and depth (m); 0 = no limit", (0.0, 1e6), scope="pipeline"),
    Param("qos_reliability", "auto", "input QoS reliability: auto (per input, reliable when all its publishers "
          "offer it, as rosbag2 does), best_effort (SensorDataQoS) or reliable; a camera_info whose publishers all "
          "offer transient_local (latched) is subscribed so in every mode", choices=("auto", "best_effort", "reliable")),
    Param("no_input_warning_seconds", 5.0, "warn when inputs have publishers but nothing arrived for this long (s)",
          (0.5, 3600.0)),
    Param("diagnostics_period", 1.0, "period of /diagnostics (s)", (0.1, 60.0), read_only=True),
)

PARAM_NAMES = tuple(p.name for p in PARAMS)
RUNTIME_PARAMS = tuple(p.name for p in PARAMS if not p.read_only)


def check_names(values: Dict[str, Any], where: str) -> None:
    unknown = sorted(set(values) - set(PARAM_NAMES))
    if unknown:
        raise ValueError(f"{where}: unknown parameter(s) {unknown}; valid: {sorted(PARAM_NAMES)}")


def split_by_scope(values: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """name -> value, split into {"pipeline": {...}, "output": {...}, "node": {...}} by the table's scope."""
    check_names(values, "node parameters")
    scope = {p.name: p.scope for p in PARAMS}
    parts: Dict[str, Dict[str, Any]] = {"pipeline": {}, "output": {}, "node": {}}
    for name, value in values.items():
        parts[scope[name]][name] = value
    return parts


def by_name(name: str) -> Param:
    for p in PARAMS:
        if p.name == name:
            return p
    raise KeyError(name)


def _yaml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


def params_yaml() -> str:
    """config/stereo.yaml: every parameter with its default and description (test_package holds the file to it)."""
    lines = ["# stereo_node parameters (every one, with its default). Load with:",
             "#   ros2 run ges_ros stereo_node --ros-args --params-file config/stereo.yaml",
             "# Parameters marked [restart] are read-only at runtime; the others apply to the next pair.",
             "# Generated from ges_ros/params.py: python -c 'from ges_ros.params import params_yaml; print(params_yaml(), end=\"\")'",
             "/**:", "  ros__parameters:"]
    for p in PARAMS:
        notes = []
        if p.choices:
            notes.append("one of " + "/".join(p.choices))
        if p.range is not None and not isinstance(p.default, bool):
            notes.append(f"range {p.range[0]:g}..{p.range[1]:g}")
        if p.read_only:
            notes.append("[restart]")
        lines.append(f"    # {p.description}" + (f" ({'; '.join(notes)})" if notes else ""))
        lines.append(f"    {p.name}: {_yaml_value(p.default)}")
    return "\n".join(lines) + "\n"
