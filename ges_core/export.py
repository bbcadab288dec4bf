"""Deployment export: ONNX (for ONNX Runtime and TensorRT's trtexec) and TorchScript, with the node's solver
(Anderson by default) unrolled for a fixed number of iterations, verified against the PyTorch predictor."""
from __future__ import annotations

import time
from typing import Optional, Tuple

import numpy as np
import torch
from torch import nn

from .deq.solvers import anderson_unrolled
from .model.ges import GES
from .prediction import Prediction, as_rgb, to_input_size


EXPORT_SOLVERS = ("anderson", "fixed_point")


class UnrolledGES(nn.Module):
    """left, right (B, 3, H, W) float in [0, 255] -> disparity, confidence (B, 1, H, W), with `iters` iterations of
    `solver` unrolled: Anderson (the node's default; its least squares in plain tensor ops, `anderson_unrolled`) or
    plain fixed-point iteration."""

    def __init__(self, model: GES, iters: int, solver: str = "anderson") -> None:
        super().__init__()
        if solver not in EXPORT_SOLVERS:
            raise ValueError(f"solver {solver!r} cannot be exported; valid: {list(EXPORT_SOLVERS)}")
        self.model = model
        self.iters = iters
        self.solver = solver
        # eval as a whole: torch.onnx.export restores the wrapper's mode afterwards, and a wrapper left in training
        # mode put the model back into training mode (the top-k of training, not inference's) under the predictor
        self.eval()

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        enc = self.model.encode(left, right)
        z = self.model.initial_state(enc)
        cfg = self.model.config
        if self.solver == "anderson":
            z = anderson_unrolled(lambda s: self.model.step(s, enc), z, iters=self.iters, m=cfg.anderson_m,
                                  beta=cfg.anderson_beta)
        else:
            for _ in range(self.iters):
                z = self.model.step(z, enc)
        return self.model.decode(z, enc)


def export(model: GES, path: str, *, fmt: str, height: int, width: int, iters: int, solver: str = "anderson",
           dynamic: bool = False, opset: int = 20) -> None:
    wrapper = UnrolledGES(model, iters, solver)
    example = (torch.zeros(1, 3, height, width), torch.zeros(1, 3, height, width))
    with torch.no_grad():
        if fmt == "torchscript":
            traced = torch.jit.trace(wrapper, example, check_trace=False)
            traced.save(path)
        elif fmt == "onnx":
            axes = {n: {2: "height", 3: "width"} for n in ("left", "right", "disparity", "confidence")} if dynamic else None
            # opset 20: what the exported graphs have been verified with (ONNX Runtime, OpenVINO)
            torch.onnx.export(wrapper, example, path, input_names=["left", "right"],
                              output_names=["disparity", "confidence"], opset_version=opset,
                              dynamic_axes=axes, dynamo=False)
            import onnx
            proto = onnx.load(path)
            for key, value in (("ges_iters", str(iters)), ("ges_solver", solver),
                               ("ges_config", model.config.to_json())):
                proto.metadata_props.add(key=key, value=value)
            onnx.save(proto, path)
        else:
            raise ValueError(f"unknown export format {fmt!r}; valid: ['onnx', 'torchscript']")


VERIFY_LIMIT_PX = 0.05


def verify_onnx(predictor, path: str, *, left: np.ndarray, right: np.ndarray, iters: int) -> Tuple[float, float]:
    """-> (max |disparity_onnxruntime - disparity of the PyTorch predictor|, the PyTorch predictor's own spread) on
    a real pair at the export's size, the predictor running its own solver (the node's) for `iters` iterations:
    what the node would publish. The spread is the max difference between the predictor run with its threads and
    with another thread count: float32 rounding alone, which the network amplifies where the cost volume is
    ambiguous (0.14 px at one pixel of the motorcycle pair at 640x480). No runtime can be held closer than that."""
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ref = predictor.predict(left, right, iters=iters).disparity
    from .predictor import torch_threads
    with torch_threads(1 if torch.get_num_threads() > 1 else 2):
        spread = float(np.abs(predictor.predict(left, right, iters=iters).disparity - ref).max())
    feed = {"left": left.transpose(2, 0, 1)[None].astype(np.float32),
            "right": right.transpose(2, 0, 1)[None].astype(np.float32)}
    got = session.run(["disparity"], feed)[0][0, 0]
    return float(np.abs(ref - got).max()), spread


class OnnxPredictor:
    """The Predictor API over an exported ONNX model (ONNX Runtime, CPU or CUDA provider)."""

    def __init__(self, path: str, *, providers: Optional[list] = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ValueError("ONNX weights need onnxruntime: pip install onnxruntime") from None
        try:
            self.session = ort.InferenceSession(path, providers=providers or ort.get_available_providers())
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ValueError(f"{path}: not a loadable ONNX model ({exc})") from None
        shape = self.session.get_inputs()[0].shape
        self.fixed_size = tuple(shape[2:]) if all(isinstance(s, int) for s in shape[2:]) else None
        from .config import GESConfig
        meta = self.session.get_modelmeta().custom_metadata_map
        self.config = GESConfig.from_json(meta["ges_config"]) if "ges_config" in meta else GESConfig()
        self.iters = int(meta.get("ges_iters", -1))
        # files exported before the solver was recorded unrolled plain iteration
        self.solver = f"{meta.get('ges_solver', 'fixed_point')} (unrolled, {self.iters} iterations)"
        self.device = "onnxruntime"
        self.iters_fixed = True
        self.solvers = ()                  # the iterations are baked into the graph

    def predict(self, left: np.ndarray, right: np.ndarray, iters=None, budget_ms=None, init=None, scale: float = 1.0):
        import cv2
        t0 = time.perf_counter()
        l, r = as_rgb(left, "left"), as_rgb(right, "right")
        if l.shape != r.shape:
            raise ValueError(f"left and right sizes differ: {l.shape[1]}x{l.shape[0]} vs {r.shape[1]}x{r.shape[0]}")
        height, width = l.shape[:2]
        run_size = self.fixed_size or (height, width)
        if (height, width) != tuple(run_size):
            l = cv2.resize(l, (run_size[1], run_size[0]), interpolation=cv2.INTER_AREA)
            r = cv2.resize(r, (run_size[1], run_size[0]), interpolation=cv2.INTER_AREA)
        feed = {"left": l.transpose(2, 0, 1)[None].astype(np.float32), "right": r.transpose(2, 0, 1)[None].astype(np.float32)}
        disp, conf = self.session.run(["disparity", "confidence"], feed)
        disp, conf = disp[0, 0], conf[0, 0]
        disp, valid, conf = to_input_size(disp, conf, width, height, self.config.max_disp)
        ms = (time.perf_counter() - t0) * 1e3
        return Prediction(disp, valid, conf, self.iters, float("nan"), [], {"total": ms, "network": ms}, None, False)
