"""Inference API: numpy images in, disparity/confidence out, with an optional latency budget.

    pred = load_predictor("default", device="cpu")
    r = pred.predict(left_rgb_uint8, right_rgb_uint8, iters=None, budget_ms=None, init=None)
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

import cv2
import numpy as np
import torch

from .config import GESConfig
from .model.ges import GES, build_model
from .weights import load_weights, model_state, resolve_weights


@dataclass
class Prediction:
    disparity: np.ndarray            # (H, W) float32 px at the input size, left view
    valid: np.ndarray                # (H, W) bool: finite, > 0 and inside the search range at the scale run
    confidence: np.ndarray           # (H, W) float32 in [0, 1]
    iters: int                       # solver iterations run
    residual: float                  # final relative residual |f(z)-z| / |f(z)|
    residuals: List[float] = field(default_factory=list)
    timings_ms: Dict[str, float] = field(default_factory=dict)
    state: Optional[torch.Tensor] = None   # fixed point, pass as `init` for the next frame
    fallback: bool = False           # the solver diverged: the volumetric disparity was used


def _as_rgb(img: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"{name} image must be (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    arr = arr[..., :3]
    return arr if arr.flags.writeable else arr.copy()   # torch wants writable memory (message buffers are not)


# the cost volume's top bin (4 px at 1/4 resolution): an estimate there is saturated, not measured
TOP_BIN_PX = 4.0


def to_input_size(disp: np.ndarray, conf: np.ndarray, width: int, height: int, max_disp: float):
    """Network-resolution disparity and confidence -> (disparity, valid, confidence) at the input size. Validity is
    decided where the network ran: inside its range and below the top bin (in network pixels), then carried to the
    input size; a shift of d px at the network is d * width / network width px at the input."""
    valid = np.isfinite(disp) & (disp > 0) & (disp < max_disp - TOP_BIN_PX)
    if disp.shape != (height, width):
        factor = width / disp.shape[1]
        disp = cv2.resize(disp, (width, height), interpolation=cv2.INTER_LINEAR) * factor
        conf = cv2.resize(conf, (width, height), interpolation=cv2.INTER_LINEAR)
        valid = cv2.resize(valid.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
        valid &= np.isfinite(disp)
    disp = np.where(np.isfinite(disp), disp, 0).astype(np.float32)
    return disp, valid, np.clip(np.nan_to_num(conf), 0, 1).astype(np.float32)


class Predictor:
    def __init__(self, model: GES, *, device: Union[str, torch.device] = "cpu", solver: Optional[str] = None,
                 backend: str = "auto", precision: str = "auto") -> None:
        """backend: "torch", "openvino" (CPU; the network's parts compiled per input size, the solver loop
        unchanged) or "auto" (openvino on a CPU where it is installed); precision: the openvino backend's, "auto"
        (bf16 where the CPU has AMX or AVX-512 BF16), "fp32" or "bf16"."""
        from .ov_backend import make_network, resolve_backend
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config: GESConfig = model.config
        self.solver = solver or model.config.solver
        self.backend = resolve_backend(backend, str(self.device))
        self.net = make_network(self.model, self.backend, precision, str(self.device))
        self._iter_ms: Optional[float] = None     # online estimate of one solver iteration
        self._decode_ms: float = 0.0

    @property
    def runtime(self) -> str:
        """What runs the network: "torch fp32", or "openvino bf16" (its precision once a size has run)."""
        return "torch fp32" if self.backend == "torch" else f"openvino {self.net.inference_precision}"

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
        t_start = time.perf_counter()
        timings: Dict[str, float] = {}
        left_a, right_a = _as_rgb(left, "left"), _as_rgb(right, "right")
        if left_a.shape != right_a.shape:
            raise ValueError(f"left and right sizes differ: left {left_a.shape[1]}x{left_a.shape[0]}, "
                             f"right {right_a.shape[1]}x{right_a.shape[0]} (WxH)")
        height, width = left_a.shape[:2]
        if height < 8 or width < 8:
            raise ValueError(f"image too small: {width}x{height}")
        if not 0.05 <= scale <= 4.0:
            raise ValueError(f"scale must be in [0.05, 4], got {scale}")
        if scale != 1.0:
            size = (max(16, int(round(width * scale))), max(16, int(round(height * scale))))
            left_a = cv2.resize(left_a, size, interpolation=cv2.INTER_AREA)
            right_a = cv2.resize(right_a, size, interpolation=cv2.INTER_AREA)
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device).permute(2, 0, 1)[None].float()
                   for a in (left_a, right_a)]
        self._sync()
        t = time.perf_counter()
        timings["preprocess"] = (t - t_start) * 1e3
        prepare = getattr(self.net, "prepare", None)
        if prepare is not None and prepare(*left_a.shape[:2]):
            # the openvino backend compiled this size (its first pair): counted in the total, not in encode
            t_prep = time.perf_counter()
            timings["compile"] = (t_prep - t) * 1e3
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
        timings["postprocess"] = (time.perf_counter() - t_dec) * 1e3
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        return Prediction(disp, valid, conf, info.iters, info.residuals[-1] if info.residuals else float("nan"),
                          list(info.residuals), timings, None if fallback else z.detach(), fallback)


def load_predictor(weights: Union[str, os.PathLike] = "default", *, device: str = "cpu",
                   solver: Optional[str] = None, config_overrides: Optional[dict] = None, backend: str = "auto",
                   precision: str = "auto"):
    """weights: "default" (shipped), a .safetensors file, or an exported .onnx model.
    device: "cpu", "cuda", "cuda:N" or "auto". solver: fixed_point | anderson | hyper_anderson.
    backend: torch | openvino | auto (openvino on a CPU where it is installed); precision: see Predictor."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(weights).lower().endswith(".onnx"):
        from .export import OnnxPredictor
        return OnnxPredictor(str(resolve_weights(weights)))
    config, tensors, meta = load_weights(weights)
    if config_overrides:
        config = GESConfig.from_dict({**config.__dict__, **config_overrides})
    model = build_model(config)
    missing, unexpected = model.load_state_dict(model_state(tensors), strict=False)
    # a learned solver saved with the model (older files: hyper_solver.*) is attached from its own tensors below
    unexpected = [k for k in unexpected if not k.startswith(("hyper_solver.", "learned_solvers."))]
    if missing or unexpected:
        raise ValueError(f"{resolve_weights(weights)}: weights do not fit the stored config "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
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
    return Predictor(model, device=device, solver=solver, backend=backend, precision=precision)
