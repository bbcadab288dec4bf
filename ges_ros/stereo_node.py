"""stereo_node: rectified stereo pair in, DisparityImage / PointCloud2 / confidence out.

Subscribes (relative, remappable, as stereo_image_proc): left/image_rect, left/camera_info,
right/image_rect, right/camera_info. Publishes the outputs of ges_ros.processing.OUTPUTS (disparity, confidence;
points2, depth, depth/camera_info and disparity_color built only when subscribed) and /diagnostics.

Callbacks only hand messages to the synchronizer; a matched set goes into a one-slot mailbox and a
single worker thread processes the newest set (older ones are dropped and counted), so latency stays
bounded when the network is slower than the camera.
"""
from __future__ import annotations

import difflib
import signal
import sys
import threading
import time
from collections import deque
from typing import Any, Dict, List, Optional, Tuple

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy_c
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from diagnostic_msgs.msg import DiagnosticArray

from .inputs import inputs, topic
from .qos import InputSubscriptions
from .messages import diagnostics_msg, header, rclpy_types
from .node_stats import NodeStats
from .params import PARAM_NAMES, PARAMS, by_name
from .processing import OUTPUTS, InputError, ProcessingParams, StereoProcessor
from .sync import StereoInputs
from ges_core import choose_solver
from ges_core.pipeline import parse_input_scale

RCLError = _rclpy_c.RCLError

OK, WARN, ERROR = 0, 1, 2
ROW_WARN_PX = 0.5        # rows further apart than this: the calibration is off (a warning and /diagnostics WARN)
READY_WAIT_S = 2.0       # the ready line waits this long for a camera_info to compile the network for
MAX_WAITING = 4          # pairs formed while the worker is idle, before its thread runs, wait in order up to this


def _descriptor(p) -> ParameterDescriptor:
    d = ParameterDescriptor(description=p.description, read_only=p.read_only, dynamic_typing=p.dynamic_typing)
    if p.choices:
        d.additional_constraints = "one of: " + ", ".join(p.choices)
    if p.range is not None:
        if isinstance(p.default, bool):
            pass
        elif isinstance(p.default, int):
            d.integer_range = [IntegerRange(from_value=int(p.range[0]), to_value=int(p.range[1]), step=0)]
        elif isinstance(p.default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(p.range[0]), to_value=float(p.range[1]),
                                                         step=0.0)]
    return d


class StereoNode(Node):
    def __init__(self, *, predictor=None, node_name: str = "stereo_node", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        for p in PARAMS:
            self.declare_parameter(p.name, p.default, _descriptor(p))
        self._warn_unknown_parameters()
        self._check_start_params()
        self.add_on_set_parameters_callback(self._validate_params)
        self.add_post_set_parameters_callback(self._apply_params)
        if predictor is None:
            predictor = self._load_predictor()
        self.predictor = predictor
        _, warning = choose_solver(self.get_parameter("solver").value, self._solvers())
        if warning:
            self.get_logger().warning(f"{warning} (weights {self.get_parameter('weights').value})")
        calibration = self._fixed_calibration()
        rectify = self.get_parameter("rectify").value
        transport = self.get_parameter("image_transport").value
        self._inputs = inputs(rectify=rectify)
        self._topics = tuple(topic(inp, transport) for inp in self._inputs)    # relative, remappable
        self._input_types = tuple((CompressedImage if transport == "compressed" else Image) if inp.is_image
                                  else CameraInfo for inp in self._inputs)
        self.processor = StereoProcessor(predictor, ProcessingParams.from_dict(self._param_values()), rclpy_types(),
                                         names=tuple(self.resolve_topic_name(t) for t in self._topics),
                                         calibration=calibration, rectify=rectify)
        types = self.processor.types
        self.publishers_by_output = {o.name: self.create_publisher(getattr(types, o.class_name), o.name,
                                                                      self.get_parameter("output_queue_size").value)
                                     for o in OUTPUTS.values()}
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        g = self.get_parameter
        self.sync = StereoInputs(self._on_synced, queue_size=g("queue_size").value,
                                 approximate=g("approximate_sync").value,
                                 slop=g("approximate_sync_tolerance_seconds").value, use_info=calibration is None)
        # the inputs subscribed: camera_info only without a calibration given
        self.inputs = tuple(range(4)) if calibration is None else (0, 1)
        self._pub_since: Dict[int, float] = {}   # per input: when a publisher was first seen (monotonic)
        self._started = time.monotonic()
        self.input_subscriptions = InputSubscriptions(
            self, inputs=self._inputs, indices=self.inputs, topics=self._topics, names=self.processor.names,
            types=self._input_types, queue_size=g("queue_size").value, mode=lambda: g("qos_reliability").value,
            deliver=self._on_input)

        # the worker's mailbox: pairs formed while it was busy supersede each other (only the newest waits); pairs
        # formed while it was idle, before its thread got to run, wait in order (a transport's repair can deliver
        # two frames' images back to back: dropping the first of them lost a frame that nothing was computing)
        self._cv = threading.Condition()
        self._pending: deque = deque()
        self._busy = False
        self._running = True
        self.activity = NodeStats()
        self.drops = self.activity.drops                 # drops by reason (the name tests and tools read)
        self._backend_warned = False
        self._last_log: Dict[str, float] = {}
        # compiling the network before the first pair (a backend that compiles per input size): the size is known
        # from a calibration file now, or from the first camera_info pair; the ready line waits for it
        self._compiled_note: Optional[str] = None     # what the ready line says of the compile
        self._prepared: set = set()                   # input sizes compiled for
        self._prepare_job: Optional[Tuple[int, int, Any]] = None
        self._announced = False
        if calibration is not None and calibration.width and calibration.height:
            self._prepare(calibration.height, calibration.width, calibration)
        self._worker = threading.Thread(target=self._work, name="ges_inference", daemon=True)
        self._worker.start()
        self.create_timer(g("diagnostics_period").value, self._publish_diagnostics)
        self.create_timer(1.0, self._watch_inputs)

    def announce_when_ready(self) -> None:
        """main()'s call once the node is bound to its variable (a Ctrl-C answering the ready line then always
        reaches destroy_node and its summary). A network compiled per input size is compiled first: the ready line
        comes once it is, for a calibration file's size (done already) or the first camera_info's (a latched one
        arrives within moments); without camera_info by READY_WAIT_S, the line says the first pair compiles it."""
        if not getattr(self.predictor, "compiles_per_size", False) or self._compiled_note is not None:
            self.announce()
            return

        def waited() -> None:
            timer.cancel()
            with self._cv:
                pending = self._prepare_job is not None or self._busy
            if not pending and not self._announced:
                self._compiled_note = "the network compiles for the first pair's size (no camera_info yet)"
                self.announce()
        timer = self.create_timer(READY_WAIT_S, waited)

    def announce(self) -> None:
        """The "ready" line (once)."""
        if self._announced:
            return
        self._announced = True
        g = self.get_parameter
        first = (" (int8: the first pair of each image size is quantized and compiled, up to a minute once, then "
                 "loaded from the cache)" if "int8" in self.runtime() else "")
        declined = getattr(self.predictor, "int8_declined", None)
        if declined:
            first += (f" ({declined} not taken: these weights record no passing int8 accuracy check for it; "
                      f"precision:={declined} runs it anyway)")
        self.get_logger().info(
            f"ready: weights={g('weights').value} device={getattr(self.predictor, 'device', '?')} "
            f"backend={getattr(self.predictor, 'backend', 'onnxruntime')} runtime={self.runtime()}{first} "
            f"solver={getattr(self.predictor, 'solver', '?')} iters={g('iters').value}; inputs "
            f"{', '.join(self.processor.names)}; sync={'approximate' if g('approximate_sync').value else 'exact'}"
            + (f"; {self._compiled_note}" if self._compiled_note else ""))

    # ------------------------------------------------------------ parameters
    def _param_values(self) -> Dict[str, Any]:
        return {p.name: self.get_parameter(p.name).value for p in PARAMS}

    def _fixed_calibration(self):
        """The `calibration` (+ `calibration_right`) parameter's file, used instead of camera_info; None if unset."""
        path, right = self.get_parameter("calibration").value, self.get_parameter("calibration_right").value
        if not path:
            if right:
                raise ValueError("calibration_right needs calibration (the left camera's camera_info YAML)")
            return None
        from ges_core.geometry import load_calibration
        calib = load_calibration(path, right or None)
        self.get_logger().info(f"calibration from {path}{' + ' + right if right else ''} (camera_info not used): "
                               f"f {calib.fx:.2f} px, baseline {calib.baseline:.4f} m")
        return calib

    def _warn_unknown_parameters(self) -> None:
        """A name given at start (-p, a params file) that the node does not declare is ignored by rclpy without a
        word: one warning each, naming it and the closest valid names (`-p devcie:=cpu` ran on the default)."""
        known = sorted({*PARAM_NAMES, "use_sim_time"})
        # rclpy keeps the start overrides (command line and files) here; it has no public accessor
        for name in sorted(getattr(self, "_parameter_overrides", {})):
            if name in known or name.startswith("qos_overrides."):
                continue
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}?" if close else "stereo_node --help lists the parameters"
            self.get_logger().warning(f"parameter {name!r} is not a stereo_node parameter and is ignored; {hint}")

    def _check_start_params(self) -> None:
        """Values given at start (overrides, a params file) are not seen by the on-set callback: the same checks
        here, as one error naming the parameter and what it takes."""
        for p in PARAMS:
            value = self.get_parameter(p.name).value
            if p.choices and value not in p.choices:
                raise ValueError(f"parameter {p.name}:={value!r} is not one of {', '.join(p.choices)}")
        try:
            parse_input_scale(self.get_parameter("input_scale").value)
        except ValueError as exc:
            raise ValueError(f"parameter {exc}") from None

    def _load_predictor(self):
        from ges_core import load_predictor
        weights = self.get_parameter("weights").value
        device = self.get_parameter("device").value
        solver = self.get_parameter("solver").value
        return load_predictor(weights, device=device, solver=solver, backend=self.get_parameter("backend").value,
                              precision=self.get_parameter("precision").value,
                              int8_calibration=self.get_parameter("int8_calibration").value)

    def _solvers(self) -> tuple:
        """The solvers the loaded predictor can run (an exported graph: none to switch to)."""
        return tuple(getattr(self.predictor, "solvers", ()))

    def _validate_params(self, params) -> SetParametersResult:
        for prm in params:
            try:
                spec = by_name(prm.name)
            except KeyError:
                continue
            if spec.choices and prm.value not in spec.choices:
                return SetParametersResult(successful=False,
                                           reason=f"{prm.name} must be one of {list(spec.choices)}, got {prm.value!r}")
            if prm.name == "input_scale":
                try:
                    parse_input_scale(prm.value)
                except ValueError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
            if prm.name == "solver" and hasattr(self, "predictor") and self._solvers():
                if choose_solver(prm.value, self._solvers())[1]:      # at runtime a fallback is refused instead
                    return SetParametersResult(successful=False,
                                               reason=f"{prm.value} needs trained solver weights; none are loaded")
        return SetParametersResult(successful=True)

    def _apply_params(self, _params) -> None:
        if not hasattr(self, "processor"):
            return
        values = self._param_values()
        self.processor.params = ProcessingParams.from_dict(values)
        if self._solvers():             # an exported graph has its solver built in
            self.predictor.solver = choose_solver(values["solver"], self._solvers())[0]
        if values["qos_reliability"] != "auto":
            self.input_subscriptions.resubscribe_if_needed()

    # --------------------------------------------------------------- inputs
    def _on_input(self, index: int, msg) -> None:
        self.sync.add(index, msg)
        if not self._inputs[index].is_image:
            self._camera_info_seen()     # the worker takes a compile job before any pair

    @property
    def reliability(self):
        """The inputs' subscribed reliability when all agree (None when they differ)."""
        return self.input_subscriptions.reliability

    def qos_summary(self) -> str:
        return self.input_subscriptions.summary()

    def _camera_info_seen(self) -> None:
        """Both cameras' info known (the synchronizer's cache), of a size not compiled for: the worker compiles
        it before any pair."""
        infos = self.sync.info
        if not getattr(self.predictor, "compiles_per_size", False) or None in infos:
            return
        size = (int(infos[0].height), int(infos[0].width))
        if 0 in size or size in self._prepared:
            return
        self._prepared.add(size)
        try:
            calib = self.processor.calibration(*infos)
        except InputError:
            return               # the first pair reports it
        with self._cv:
            self._prepare_job = (*size, calib)
            self._cv.notify()

    def _prepare(self, height: int, width: int, calib) -> None:
        """Compile the network for the sizes a first pair of this input size needs (the pipeline's choice)."""
        self._prepared.add((height, width))
        t = time.monotonic()
        spent = self.processor.pipeline.prepare(height, width, calib)
        scales = ", ".join(f"{s:.3g}" for s in self.processor.pipeline.network_sizes(height, width, calib))
        cached = " (from the cache)" if getattr(self.predictor, "compile_from_cache", False) else ""
        self._compiled_note = (f"network compiled for {width}x{height} (network scale {scales}) in "
                               f"{time.monotonic() - t:.1f} s{cached}" if spent else
                               f"network ready for {width}x{height}")
        self.get_logger().info(self._compiled_note)

    def _on_synced(self, left, right, left_info, right_info) -> None:
        with self._cv:
            if self._pending and (self._busy or len(self._pending) >= MAX_WAITING):
                self.drops["superseded"] += 1      # the worker is busy: keep only the newest pair
                self._pending.popleft()
            # with the synchronizer's clock resets so far: the processor starts over on a new one
            self._pending.append((left, right, left_info, right_info, self.sync.clock_resets))
            self.activity.pair_in()
            self._cv.notify()

    def _watch_inputs(self) -> None:
        if self.get_parameter("qos_reliability").value == "auto":
            self.input_subscriptions.resubscribe_if_needed()
        self.input_subscriptions.retire_stale()            # in every mode (a set parameter switches too)
        now = time.monotonic()
        quiet = self.get_parameter("no_input_warning_seconds").value
        if now - self._started < quiet:
            return
        names = self.processor.names
        if self.activity.pairs_in == 0:
            hint = self.sync.hint()
            if hint:
                self._throttled("sync_hint", "warning", f"no pair formed: {hint}", period=30.0)
        for i in self.inputs:      # since when each input has had a publisher (silence is counted from then)
            if self.count_publishers(names[i]):
                self._pub_since.setdefault(i, now)
            else:
                self._pub_since.pop(i, None)
        # quiet since the last message, or since a publisher appeared (a driver just started is not silent)
        last_rx = self.input_subscriptions.last_rx
        silent = [i for i in self.inputs if now - max(last_rx[i], self._pub_since.get(i, 0.0)) > quiet]
        if not silent:
            return
        heard = [names[i] for i in self.inputs if i not in silent]
        for i in silent:
            pubs = self.get_publishers_info_by_topic(names[i])
            offered = ", ".join(sorted({p.qos_profile.reliability.name.lower() for p in pubs})) or "none"
            if last_rx[i] > 0:
                # it did arrive before: the stream stopped (end of a bag, a dead driver)
                self._throttled(f"stopped{i}", "info", f"no message on {names[i]} for {now - last_rx[i]:.0f} s",
                                period=60.0)
            elif heard and not pubs:
                self._throttled(f"silent{i}", "warning",
                                f"receiving {', '.join(heard)} but nothing on {names[i]} for {quiet:.0f} s, which has "
                                "no publisher: no pair can be formed; check the topic remapping")
            elif heard:
                # the topic is right (it has a publisher): what is late is the transport's doing
                self._throttled(f"silent{i}", "warning",
                                f"receiving {', '.join(heard)} but nothing on {names[i]} yet after {quiet:.0f} s, "
                                f"though it has {len(pubs)} publisher(s) (reliability offered: {offered}): large "
                                "images can take seconds to repair, or be lost, on Fast DDS's default transports; "
                                "FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA in every process avoids it")
            elif pubs:
                self._throttled(f"silent{i}", "warning",
                                f"{names[i]} has {len(pubs)} publisher(s) (reliability offered: {offered}; "
                                f"requested: {self.input_subscriptions.qos[i][0].name.lower()}) but nothing arrived for {quiet:.0f} s. "
                                "Large images over best-effort QoS are dropped by Fast DDS's default transports: "
                                "use reliable QoS on both ends or FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA in every process.")

    def _throttled(self, key: str, level: str, text: str, period: float = 5.0) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= period:
            self._last_log[key] = now
            # rclpy pins one severity per call site: one call per level
            logger = self.get_logger()
            if level == "error":
                logger.error(text)
            elif level == "warning":
                logger.warning(text)
            else:
                logger.info(text)

    # --------------------------------------------------------------- worker
    def _work(self) -> None:
        while True:
            with self._cv:
                self._busy = False
                while not self._pending and self._prepare_job is None and self._running:
                    self._cv.wait(0.5)
                if not self._running:
                    return
                job, self._prepare_job = self._prepare_job, None
                pair = self._pending.popleft() if job is None else None
                self._busy = True
            if job is not None:
                try:
                    self._prepare(*job)
                except Exception as exc:  # noqa: BLE001 (the first pair compiles it, and reports what fails)
                    self._throttled("prepare", "warning", f"compiling ahead of the first pair failed: {exc}")
                self.announce()
                continue
            try:
                self._process(pair)
            except Exception as exc:  # the worker must outlive anything a pair can do
                self.drops["internal_error"] += 1
                self._throttled("internal_error", "error", f"pair dropped, internal error: {type(exc).__name__}: {exc}")

    def _process(self, pair) -> None:
        retries = self.processor.retries
        try:
            # an on-demand output is built only while someone subscribes to it (depth and its camera_info together)
            wanted = {name for name, pub in self.publishers_by_output.items() if pub.get_subscription_count() > 0}
            if wanted & {"depth", "depth/camera_info"}:
                wanted |= {"depth", "depth/camera_info"}
            *messages, epoch = pair
            result = self.processor.process(*messages, outputs=wanted, clock_epoch=epoch)
        except InputError as exc:
            self.drops[exc.reason] += 1
            self._throttled(exc.reason, "error", f"pair dropped: {exc}")
            return
        except Exception as exc:  # inference failure (e.g. CUDA out of memory): report, keep running
            self.drops["inference_error"] += 1
            self._throttled("inference_error", "error", f"pair dropped, inference failed: {type(exc).__name__}: {exc}")
            return
        if self.processor.retries > retries:
            self._throttled("retry", "warning", "inference failed on a pair; published it from a retry at input "
                            f"scale x{self.processor.params.pipeline.retry_input_scale:g}")
        if not self._running:
            return
        for name, msg in result.messages.items():
            self.publishers_by_output[name].publish(msg)
        now = self.get_clock().now().nanoseconds * 1e-9
        self.activity.pair_out(result, (now - (result.stamp[0] + result.stamp[1] * 1e-9)) * 1e3)
        if "compile" in result.timings_ms:
            size = f"{result.disparity.image.width}x{result.disparity.image.height}"
            seconds = result.timings_ms["compile"] / 1e3
            if getattr(self.predictor, "compile_from_cache", False):
                self.get_logger().info(f"loaded the compiled network for {size} (network scale {result.scale:.3g}) "
                                       f"from the cache in {seconds:.1f} s (runtime={self.runtime()})")
            else:
                done = ("quantized (int8, calibrated on the network's own float32 run of a few pairs) and compiled"
                        if "int8" in self.runtime() else "compiled")
                self.get_logger().info(f"{done} the network for {size} (network scale {result.scale:.3g}) in "
                                       f"{seconds:.1f} s, first time for this size; kept in the cache for the next "
                                       f"start (runtime={self.runtime()})")
        reason = getattr(self.predictor, "fallback_reason", None)
        if reason and not self._backend_warned:
            self._backend_warned = True
            self.get_logger().warning(f"{reason} (set backend:=torch to start on it)")
        if result.scale_changed:
            self.get_logger().info(f"network scale now {result.scale:.3g} ({result.scale_reason})")
        row = result.row_alignment
        if row is not None and abs(row.offset_px) > ROW_WARN_PX:
            self._throttled("rectification", "warning", (
                f"the stereo pair's rows are {row.offset_px:+.2f} px apart (median of {row.matches} matches; "
                f"{row.misaligned_share * 100:.0f} % are more than 1 px off their row): the calibration or "
                "rectification is off, and depth will be wrong; recalibrate the rig"), period=60.0)
        if result.fallback:
            self._throttled("fallback", "warning", "solver diverged on a pair: published the volumetric disparity")

    # ---------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        in_rate, out_rate = self.activity.rates()
        drops = dict(self.drops)
        for i, name in enumerate(self.processor.names):
            if self.sync.dropped[i]:
                drops[f"unmatched {name}"] = self.sync.dropped[i]
            if self.input_subscriptions.lost[i]:
                drops[f"lost in transport {name}"] = self.input_subscriptions.lost[i]
        values = {
            "input_rate_hz": f"{in_rate:.2f}", "output_rate_hz": f"{out_rate:.2f}", **self.activity.values(),
            "runtime": self.runtime(),
            "input_scale": "auto" if self.processor.params.pipeline.input_scale == "auto" else
            f"{self.processor.params.pipeline.input_scale:g}",
            "pairs_dropped": sum(drops.values()), "clock_resets": self.sync.clock_resets,
            "inference_retries": self.processor.retries, "qos": self.qos_summary(),
        }
        values.update({f"dropped: {k}": v for k, v in sorted(drops.items())})
        errors = {k: v for k, v in self.drops.items() if k != "superseded"}
        level, message = OK, "ok"
        if errors:
            level, message = WARN, "dropped pairs: " + ", ".join(f"{k} {v}" for k, v in sorted(errors.items()))
        elif self.activity.row is not None and abs(self.activity.row.offset_px) > ROW_WARN_PX:
            level, message = WARN, (f"rows misaligned by {self.activity.row.offset_px:+.2f} px: calibration or "
                                    "rectification is off")
        elif self.activity.pairs_in == 0:
            level, message = WARN, "no synchronized input yet"
        t = self.get_clock().now().to_msg()
        types = self.processor.types
        self.pub_diag.publish(diagnostics_msg(types, header(types, t.sec, t.nanosec, ""),
                                              f"{self.get_name()}: GES stereo", level, message, values))

    def stats(self) -> Dict[str, Any]:
        """A snapshot of what the node has done, for benchmarks, tests and tools: pairs in and out, drops by
        reason, per input the messages pushed out of the synchronizer unmatched and those DDS reported lost, the
        recent end-to-end latencies (ms, sorted) and whether a pair waits for the worker."""
        with self._cv:
            pending = bool(self._pending)
        return {"pairs_in": self.activity.pairs_in, "pairs_out": self.activity.pairs_out, "drops": dict(self.drops),
                "unmatched": list(self.sync.dropped), "lost": list(self.input_subscriptions.lost),
                "queue_size": self.sync.queue_size, "latency_ms": sorted(self.activity.latency_ms), "pending": pending}

    def runtime(self) -> str:
        """What runs the network, as one word pair joined by "_" ("openvino_bf16", "torch_fp32", "onnxruntime")."""
        return str(getattr(self.predictor, "runtime", "onnxruntime")).replace(" ", "_")

    def summary(self) -> str:
        scale = self.activity.scale
        return (f"{self.activity.summary()} runtime={self.runtime()} "
                f"network_scale={f'{scale:.3g}' if scale is not None else '-'}")

    def _console(self, message: str) -> None:
        """A line straight to stderr, for shutdown. Ctrl-C shuts the context (and with it rcl's logging) down from
        rclpy's signal thread while this runs; a line logged through rcutils then was lost (CI, twice: once to a
        dead /rosout publisher, once with no output at all), so the summary does not go through it."""
        print(f"[INFO] [ges_ros.{self.get_name()}]: {message}", file=sys.stderr, flush=True)

    def destroy_node(self) -> None:
        if not hasattr(self, "_worker"):      # the constructor failed before the worker started: nothing of ours
            super().destroy_node()
            return
        if self._running:
            self._console(f"shutting down: {self.summary()}")
        with self._cv:
            self._running = False
            self._cv.notify_all()
        # an inference cannot be interrupted; leaving it running at interpreter exit aborts the process
        # (torch's thread pool is torn down under it: "terminate called without an active exception")
        self._worker.join(timeout=2.0)
        if self._worker.is_alive():
            self._console("waiting for the running inference to end")
            self._worker.join()
        super().destroy_node()


def usage() -> str:
    lines = ["usage: stereo_node [--ros-args -p NAME:=VALUE ... | --params-file config/stereo.yaml]",
             "       ros2 run ges_ros stereo_node --ros-args -r __ns:=/stereo -p input_scale:=auto",
             "",
             "GES deep-equilibrium stereo: left/image_rect, right/image_rect (+ camera_info) in; disparity, points2,",
             "confidence, disparity_color and /diagnostics out. Parameters (default; [restart] = read-only):", ""]
    for p in PARAMS:
        default = p.default if not isinstance(p.default, str) else repr(p.default)
        lines.append(f"  {p.name} = {default}{' [restart]' if p.read_only else ''}")
        lines.append(f"      {p.description}")
    lines += ["", "Every parameter with its range: config/stereo.yaml; topics and examples: README.md."]
    return "\n".join(lines)


def main(args: Optional[List[str]] = None) -> int:
    argv = list(sys.argv if args is None else args)
    ros_at = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    if any(a in ("-h", "--help") for a in argv[1:ros_at]):
        print(usage())
        return 0
    import warnings
    from ges_core.predictor import BackendFallbackWarning
    # the node logs a backend fallback itself (once, through its logger): not again as a Python warning
    warnings.simplefilter("ignore", BackendFallbackWarning)
    rclpy.init(args=args)
    node = None
    try:
        try:
            node = StereoNode()
        except Exception as exc:
            # a bad parameter, missing or corrupt weights, a device this torch lacks: one line and exit 1
            message = str(exc) if isinstance(exc, (FileNotFoundError, ValueError)) else f"{type(exc).__name__}: {exc}"
            rclpy.logging.get_logger("stereo_node").fatal(f"cannot start: {message}")
            return 1
        node.announce_when_ready()
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    except RCLError:
        # rclpy's SIGINT handler shuts the context down from its own thread; a Ctrl-C landing just before the
        # executor's first wait makes spin() fail on the dead context instead of raising the two above
        if node is None or node.context.ok():
            raise
    finally:
        # a terminal's Ctrl-C reaches the node twice under `ros2 launch` (from the terminal and from launch): a
        # second one in the middle of cleanup must not cut it short with a traceback and a non-zero exit
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
