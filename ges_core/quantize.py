"""INT8 post-training quantization of the openvino backend's three graphs (encode, the update f, decode) with NNCF,
OpenVINO's compression library (`pip install nncf`, in the `ges_ros[openvino]` extra).

Calibration runs the float32 network (PyTorch) on a few calibration pairs resized to the size being compiled and
records what each graph is given: the pair (encode), the state and encoding at every solver iteration (the update)
and the fixed point (decode). NNCF then sets its quantizers from those activations. The pairs come from:
- "generated" (the default, available everywhere): procedural scenes from ges_core's training generator;
- a folder of `NNNN_left` / `NNNN_right` images (png or jpg), e.g. frames recorded from the camera itself.
A fixed seed picks the pairs, so a size quantizes to the same model each time; the backend caches the result.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

CALIBRATION_PAIRS = 8       # pairs per size; each gives one encode, `iters` update and one decode sample
GENERATED = "generated"
INT8_EPE_LIMIT = 1.0        # % of its float part's EPE that int8 may cost (issue #28), on every set
INT8_BAD2_LIMIT = 0.2       # bad-2 points
FLOAT_PARTS = {"int8": "fp32", "int8_bf16": "bf16"}    # each quantized precision and the float one it is held to


def int8_passes(fp32: List[float], int8: List[float]) -> bool:
    """[EPE, bad-2] per set, the float part and int8: whether int8 stays within the limits on every set."""
    return all(q[0] <= f[0] * (1 + INT8_EPE_LIMIT / 100) and q[1] <= f[1] + INT8_BAD2_LIMIT
               for f, q in zip(zip(fp32[::2], fp32[1::2]), zip(int8[::2], int8[1::2])))


def int8_passed(check: Optional[Dict]) -> Tuple[str, ...]:
    """The quantized precisions that passed the weights' int8 check (operating_point "int8", written by
    `ges operating-point --int8-check`), each judged against its own float part from the measurements the check
    recorded: int8_bf16 may fail against bf16 where int8 passes against fp32."""
    measured = (check or {}).get("measured", {})
    return tuple(q for q, f in FLOAT_PARTS.items()
                 if q in measured and f in measured and int8_passes(measured[f], measured[q]))


def nncf_missing() -> bool:
    import importlib.util
    return importlib.util.find_spec("nncf") is None


def calibration_id(source: str) -> str:
    """What the calibration depends on, for the cache key: the source's name, and a folder's file list."""
    if source == GENERATED:
        return GENERATED
    h = hashlib.sha256()
    for left, right in _folder_pairs(source):
        for f in (left, right):
            st = Path(f).stat()
            h.update(f"{Path(f).name}:{st.st_size}".encode())
    return "dir" + h.hexdigest()[:10]


def _folder_pairs(source: str) -> Tuple[Tuple[str, str], ...]:
    from .data.teacher_stereo import find_pairs
    try:
        return find_pairs(source)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"int8 calibration {source!r}: {exc} (int8_calibration takes 'generated' or a "
                                f"folder of NNNN_left / NNNN_right images)") from None


def calibration_pairs(source: str, height: int, width: int, count: int = CALIBRATION_PAIRS
                      ) -> List[Tuple[np.ndarray, np.ndarray]]:
    """`count` RGB uint8 pairs of (height, width) from the source (see the module docstring)."""
    rng = np.random.default_rng(8)
    if source == GENERATED:
        from .data.procedural import ProceduralConfig, render_pair
        # drawn at a moderate size and resized, as a camera frame is: disparities up to the network's usual range
        cfg = ProceduralConfig(height=256, width=512, max_disp=96.0)
        raw = [render_pair(rng, cfg)[:2] for _ in range(count)]
    else:
        pairs = _folder_pairs(source)
        picks = rng.choice(len(pairs), size=min(count, len(pairs)), replace=False)
        raw = []
        for i in sorted(picks):
            views = [cv2.imread(p, cv2.IMREAD_COLOR) for p in pairs[i]]
            if any(v is None for v in views):
                raise ValueError(f"int8 calibration: cannot read {pairs[i][0]} / {pairs[i][1]}")
            raw.append(tuple(np.ascontiguousarray(v[..., ::-1]) for v in views))
    return [tuple(cv2.resize(v, (width, height), interpolation=cv2.INTER_AREA) for v in pair) for pair in raw]


def calibration_samples(model, pairs: Sequence[Tuple[np.ndarray, np.ndarray]], iters: int,
                        flatten: Callable, step_inputs: int) -> List[List[List[np.ndarray]]]:
    """The inputs of the encode, update and decode graphs (flat float32 arrays, in the graphs' input order) when
    the float32 network solves each pair with `iters` Anderson iterations."""
    samples: List[List[List[np.ndarray]]] = [[], [], []]
    with torch.no_grad():
        for left, right in pairs:
            views = [torch.from_numpy(np.ascontiguousarray(v)).permute(2, 0, 1)[None].float() for v in (left, right)]
            enc = model.encode(*views)
            flat = [t.numpy() for t in flatten(enc)[:step_inputs]]
            samples[0].append([v.numpy() for v in views])

            def step(z, e):
                samples[1].append([z.numpy().copy(), *flat])
                return model.step(z, e)
            z, _ = model.solve(enc, iters=iters, solver="anderson", step=step)
            samples[2].append([z.numpy(), enc.prob.numpy()])
    return samples


# Only the convolutions (2D and 3D: the context encoder, the 3D UNet, the update's convolutions) run int8: where NNCF
# also quantized the element-wise operations, the disparity itself passed through 8-bit steps (0.75 px over 192 px)
# and the validation scenes' bad-2 went from 5.8 % to 16 % (Cones 8.8 -> 36.5 %); with the convolutions alone it
# stays within a few tenths. The correlation, the soft-argmin, the GRU gates and the sampling stay in float.
# The feature encoder stays in float too: its features are what the correlation matches, and quantizing them cost
# the motorcycle pair 0.24 bad-2 points over bf16 (9.20 -> 9.44 %, past the 0.2-point limit) where with them in float
# it costs 0.05 (9.25 %); the encoder is ~4 % of the time (640x480, 2-core EPYC: int8_bf16 248 ms with every
# convolution quantized, 258 ms with the feature encoder in float, bf16 341 ms). Chosen on the validation set.
# (the network's one grouped convolution is the correlation's group mean, volume._group_mean: it stays in float)
QUANTIZED_TYPES = ("Convolution", "ConvolutionBackpropData")
QUANTIZED_GRAPHS = ("encode", "step")      # decode (the convex upsampling, ~4 % of the time) stays in float
FLOAT_PATTERNS: Tuple[str, ...] = (".*/feature_encoder/.*",)   # node-name patterns kept in float among the convolutions


def quantize_graph(ov_model, samples: List[List[np.ndarray]]):
    """One OpenVINO model -> its INT8 version: the convolutions quantized (NNCF's default scheme: symmetric
    per-channel weights, per-tensor activations) from all of `samples`; every other operation kept in float."""
    import logging
    import nncf
    nncf.set_log_level(logging.ERROR)       # NNCF lists every node it leaves alone: thousands of lines
    others = sorted({op.get_type_name() for op in ov_model.get_ops()} - set(QUANTIZED_TYPES))
    return nncf.quantize(ov_model, nncf.Dataset(samples), subset_size=len(samples),
                         ignored_scope=nncf.IgnoredScope(types=others, patterns=list(FLOAT_PATTERNS),
                                                         validate=False))
