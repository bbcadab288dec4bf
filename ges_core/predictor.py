"""Inference API: numpy images in, disparity/confidence out, with an optional latency budget.

    pred = load_predictor("default", device="cpu")
    r = pred.predict(left_rgb_uint8, right_rgb_uint8, iters=None, budget_ms=None, init=None)
"""
from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from typing import Dict, Optional, Union

import cv2
import numpy as np
import torch

from . import quantize
from .config import GESConfig
from .model.ges import GES, build_model
from .prediction import Prediction, as_rgb, to_input_size
from .weights import load_model_state, load_weights, resolve_weights

__all__ = ["BackendFallbackWarning", "Prediction", "Predictor", "check_device", "load_predictor", "network_size",
           "operating_point_of", "to_input_size"]


@contextlib.contextmanager
def torch_threads(n: int):
    """PyTorch's intra-op thread count set to n for the block, then put back. OpenMP keeps the count per calling
    thread, so other threads' torch work is not affected."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class BackendFallbackWarning(UserWarning):
    """The chosen backend could not run the network; the predictor went on with torch (see fallback_reason)."""


class Predictor:
    def __init__(self, model: GES, *, device: Union[str, torch.device] = "cpu", solver: Optional[str] = None,
                 backend: str = "auto", precision: str = "auto", operating_point: Optional[dict] = None,
                 int8_calibration: str = "generated") -> None:
        """backend: "torch", "openvino" (CPU; the network's parts compiled per input size, the solver loop
        unchanged) or "auto" (openvino on a CPU where it is installed); precision: the openvino backend's, "auto"
        (bf16 where the CPU has AMX or AVX-512 BF16, else fp32; their int8 variant where the weights' operating
        point says int8 passed its accuracy check), "fp32", "bf16", "int8" or "int8_bf16" (ges_core/ov_backend.py);
        int8_calibration: the int8 calibration pairs ("generated" or a folder, ges_core/quantize.py).
        operating_point: what the weights record
        of how to run them (`preferred_pixels` for input_scale auto; `confidence_calibration`, a monotone map
        {"x": raw, "y": calibrated} applied to every confidence)."""
        from .ov_backend import make_network, resolve_backend
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config: GESConfig = model.config
        self.solver = solver or model.config.solver
        self.backend = resolve_backend(backend, str(self.device))
        self.operating_point = dict(operating_point or {})
        self.net = make_network(self.model, self.backend, precision, str(self.device),
                                int8_passed=quantize.int8_passed(self.operating_point.get("int8")),
                                int8_calibration=int8_calibration)
        self.fallback_reason: Optional[str] = None   # set when the chosen backend failed and torch took over
        self.compile_from_cache = False     # whether the last size compiled came from the on-disk cache
        calib = self.operating_point.get("confidence_calibration")
        self._conf_map = (np.asarray(calib["x"], np.float32), np.asarray(calib["y"], np.float32)) if calib else None
        self._iter_ms: Optional[float] = None     # online estimate of one solver iteration
        self._decode_ms: float = 0.0

    @property
    def runtime(self) -> str:
        """What runs the network: "torch fp32", or "openvino bf16" (its precision once a size has run)."""
        return "torch fp32" if self.backend == "torch" else f"openvino {self.net.inference_precision}"

    @property
    def int8_declined(self) -> Optional[str]:
        """The int8 variant precision auto did not take because the weights' int8 check did not pass it (None where
        it took int8, was asked for a precision, or runs torch)."""
        return getattr(self.net, "int8_declined", None)

    @property
    def compiles_per_size(self) -> bool:
        """Whether the network is compiled for each input size on its first pair (the openvino backend)."""
        return callable(getattr(self.net, "prepare", None))

    def prepare(self, height: int, width: int, scale: float = 1.0) -> Optional[float]:
        """Compile (or load from the cache) the network for an input of this size at this scale now, so that the
        first pair of that size does not wait for it; -> the seconds it took, None when nothing was to be done. A
        backend that fails here is left to the first pair (which falls back to torch and says so)."""
        prepare = getattr(self.net, "prepare", None)
        if prepare is None:
            return None
        t = time.perf_counter()
        try:
            compiled = prepare(*network_size(height, width, scale))
        except Exception:         # noqa: BLE001 (the first pair reports it, as it would without this call)
            return None
        if compiled:
            self.compile_from_cache = bool(getattr(self.net, "last_from_cache", False))
        return time.perf_counter() - t if compiled else None

    @property
    def solvers(self) -> tuple:
        """The solvers this predictor can switch to (a learned one only with its trained weights loaded)."""
        from .deq.solvers import LEARNED_SOLVERS, SOLVERS
        return (*sorted(SOLVERS), *(n for n in LEARNED_SOLVERS if n in self.model.learned_solvers))

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def predict(self, left: np.ndarray, right: np.ndarray, iters: Optional[int] = None,
                budget_ms: Optional[float] = None, init: Optional[torch.Tensor] = None,
                scale: float = 1.0) -> Prediction:
        """left/right: (H, W, 3) RGB or (H, W) gray, uint8 (or float in [0, 255]).
        iters: solver iterations (default: the config's); budget_ms: stop iterating when the next
        iteration would overrun this budget (at least one runs); init: a previous Prediction.state;
        scale: run the network on a resized pair and bring the disparity back to the input size."""
        threads = torch.get_num_threads()
        # The openvino backend's graphs run on OpenVINO's own threads. PyTorch's OpenMP workers spin for a while
        # after each parallel region, and on few cores they take the cores from the next graph; the torch work
        # between the graphs (the solver's vector operations, the confidence's resize) is small. So that work
        # runs on this thread alone: 131 against 148 ms a predict at 640x480 on 2 cores (v6's architecture, bf16;
        # the medians of 20 predicts in each of 3 alternating processes with and without, nothing else running).
        with torch_threads(1 if self.backend == "openvino" else threads):
            return self._predict(left, right, iters, budget_ms, init, scale, threads)

    def _predict(self, left: np.ndarray, right: np.ndarray, iters: Optional[int], budget_ms: Optional[float],
                 init: Optional[torch.Tensor], scale: float, threads: int) -> Prediction:
        """predict, with the caller's torch thread count (what compiling a size and a torch fallback get)."""
        t_start = time.perf_counter()
        timings: Dict[str, float] = {}
        left_a, right_a = as_rgb(left, "left"), as_rgb(right, "right")
        if left_a.shape != right_a.shape:
            raise ValueError(f"left and right sizes differ: left {left_a.shape[1]}x{left_a.shape[0]}, "
                             f"right {right_a.shape[1]}x{right_a.shape[0]} (WxH)")
        height, width = left_a.shape[:2]
        if height < 8 or width < 8:
            raise ValueError(f"image too small: {width}x{height}")
        if not 0.05 <= scale <= 4.0:
            raise ValueError(f"scale must be in [0.05, 4], got {scale}")
        if scale != 1.0:
            size = network_size(height, width, scale)[::-1]
            left_a = cv2.resize(left_a, size, interpolation=cv2.INTER_AREA)
            right_a = cv2.resize(right_a, size, interpolation=cv2.INTER_AREA)
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device).permute(2, 0, 1)[None].float()
                   for a in (left_a, right_a)]
        self._sync()
        t = time.perf_counter()
        timings["preprocess"] = (t - t_start) * 1e3
        prepare = getattr(self.net, "prepare", None)
        if prepare is not None:
            try:
                with torch_threads(threads):       # compiling (and int8's calibration) runs torch at full width
                    compiled = prepare(*left_a.shape[:2])
            except Exception as exc:
                # a backend that cannot run here must not cost every pair: say it once, go on with torch
                self.fallback_reason = (f"the {self.backend} backend failed to compile the network "
                                        f"({type(exc).__name__}: {exc}); running on torch instead")
                warnings.warn(self.fallback_reason, BackendFallbackWarning)
                self.backend, self.net, compiled = "torch", self.model, False
                torch.set_num_threads(threads)     # torch runs the network now (predict puts the count back)
            if compiled:
                # the openvino backend compiled this size (its first pair): counted in the total, not in encode
                t_prep = time.perf_counter()
                timings["compile"] = (t_prep - t) * 1e3
                self.compile_from_cache = bool(getattr(self.net, "last_from_cache", False))
                t = t_prep

        enc = self.net.encode(*tensors)
        self._sync()
        t_enc = time.perf_counter()
        timings["encode"] = (t_enc - t) * 1e3

        iters = int(iters or self.config.iters)
        if init is not None and init.shape != self.net.initial_state(enc).shape:
            init = None   # the image size changed: cold start
        if init is not None:
            init = init.to(self.device)
        stop = None
        marks = [t_enc]
        if budget_ms is not None and budget_ms > 0:
            def stop(k: int) -> bool:
                self._sync()
                now = time.perf_counter()
                marks.append(now)
                per_iter = (now - marks[0]) * 1e3 / k
                elapsed = (now - t_start) * 1e3
                return elapsed + per_iter + self._decode_ms > budget_ms
        z, info = self.net.solve(enc, iters=iters, solver=self.solver, init=init, stop=stop)
        self._sync()
        t_solve = time.perf_counter()
        timings["solve"] = (t_solve - t_enc) * 1e3
        timings["per_iter"] = timings["solve"] / max(1, info.iters)

        disparity, confidence = self.net.decode(z, enc)
        fallback = info.diverged or not bool(torch.isfinite(disparity).all())
        if fallback:
            # the solver did not give a usable fixed point: publish the volumetric estimate instead
            disparity = self.net.upsample_init(enc)
            confidence = confidence * 0.5
        self._sync()
        t_dec = time.perf_counter()
        timings["upsample"] = self._decode_ms = (t_dec - t_solve) * 1e3

        disp, valid, conf = to_input_size(disparity[0, 0].float().cpu().numpy(),
                                          confidence[0, 0].float().cpu().numpy(), width, height, self.config.max_disp)
        if self._conf_map is not None:
            conf = np.interp(conf, *self._conf_map).astype(np.float32)
        timings["postprocess"] = (time.perf_counter() - t_dec) * 1e3
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        return Prediction(disp, valid, conf, info.iters, info.residuals[-1] if info.residuals else float("nan"),
                          list(info.residuals), timings, None if fallback else z.detach(), fallback)


def network_size(height: int, width: int, scale: float) -> tuple:
    """(height, width) the network runs an input of this size at at this scale."""
    if scale == 1.0:
        return height, width
    return max(16, int(round(height * scale))), max(16, int(round(width * scale)))


def check_device(device: str) -> str:
    """"auto" -> cuda or cpu; "cpu", "cuda", "cuda:N" as they are when this torch can use them; anything else a
    ValueError that says what would work."""
    name = str(device)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: this torch has no usable CUDA (torch {torch.__version__}, "
                             f"cuda.is_available() is False); use device 'cpu' or 'auto'")
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here; use 'cuda:0', "
                             f"'cpu' or 'auto'")
        return name
    raise ValueError(f"device {name!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


def load_predictor(weights: Union[str, os.PathLike] = "default", *, device: str = "cpu",
                   solver: Optional[str] = None, config_overrides: Optional[dict] = None, backend: str = "auto",
                   precision: str = "auto", int8_calibration: str = "generated"):
    """weights: "default" (shipped), a .safetensors file, or an exported .onnx model.
    device: "cpu", "cuda", "cuda:N" or "auto". solver: fixed_point | anderson | hyper_anderson.
    backend: torch | openvino | auto (openvino on a CPU where it is installed); precision: see Predictor."""
    device = check_device(device)
    if str(weights).lower().endswith(".onnx"):
        from .export import OnnxPredictor
        return OnnxPredictor(str(resolve_weights(weights)))
    config, tensors, meta = load_weights(weights)
    if config_overrides:
        config = GESConfig.from_dict({**config.__dict__, **config_overrides})
    model = build_model(config)
    # a learned solver saved with the model is attached from its own tensors below
    load_model_state(model, tensors, weights)
    from .deq.solvers import LEARNED_SOLVERS, SOLVERS, choose_solver
    solver = solver or config.solver
    available = list(SOLVERS)
    if solver in LEARNED_SOLVERS:
        from .deq.hyper import attach_hyper_solver
        if attach_hyper_solver(model, tensors, meta):
            available.append(solver)
    solver, warning = choose_solver(solver, available)
    if warning:
        warnings.warn(f"{resolve_weights(weights)}: {warning}")
    return Predictor(model, device=device, solver=solver, backend=backend, precision=precision,
                     operating_point=operating_point_of(meta, resolve_weights(weights)),
                     int8_calibration=int8_calibration)


def operating_point_of(meta: dict, path) -> dict:
    """The weights' recorded operating point (safetensors metadata "operating_point", JSON), {} when none."""
    raw = meta.get("operating_point")
    if not raw:
        return {}
    try:
        op = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{path}: bad operating_point in metadata ({exc})") from None
    if not isinstance(op, dict):
        raise ValueError(f"{path}: operating_point in metadata must be a mapping, got {type(op).__name__}")
    return op
