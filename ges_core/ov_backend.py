"""OpenVINO as the CPU backend of the Predictor: the network's three pure parts (encode, the update f, decode) are
compiled by OpenVINO for each input size, while the solver loop (Anderson, hyper-Anderson, budgets, warm starts,
the divergence fallback) stays the Predictor's own in PyTorch. One algorithm whichever backend runs it.

OpenVINO is optional (`pip install 'ges_ros[openvino]'`). Precision: "fp32", "bf16" (AMX or AVX-512 BF16 CPUs),
"int8" (the graphs quantized by NNCF, see ges_core/quantize.py; what stays in float runs fp32), "int8_bf16" (the
same, the float rest in bf16), or "auto": bf16 where the CPU has it, else fp32; the int8 variant of that instead
where the weights record that this variant passed its accuracy check (operating_point "int8").
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .model.ges import GES, Encoded
from .model.volume import LookupVolume, VolumeLookup
from . import quantize

PRECISIONS = ("auto", "fp32", "bf16", "int8", "int8_bf16")
_OV_TYPES = {"fp32": "f32", "bf16": "bf16", "int8": "f32", "int8_bf16": "bf16"}   # the float part, OpenVINO's names
INT8 = ("int8", "int8_bf16")
BACKENDS = ("torch", "openvino")
BACKEND_CHOICES = ("auto", *BACKENDS)   # "auto": resolve_backend
DEFAULT_BACKEND = "auto"     # the node's, `ges predict`'s and the benchmarks' default: see resolve_backend
SIZES_KEPT = 4          # compiled input sizes kept (a camera has one; tests and benchmarks use a few)


def cache_root() -> Optional[Path]:
    """Where converted graphs and OpenVINO's compiled blobs are kept across processes: $GES_CACHE_DIR, else
    $XDG_CACHE_HOME/ges_ros or ~/.cache/ges_ros; GES_CACHE_DIR=off (or an unwritable folder) keeps none."""
    env = os.environ.get("GES_CACHE_DIR")
    if env is not None and env.strip().lower() in ("", "off", "0", "none"):
        return None
    root = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ges_ros"
    try:
        (root / "openvino").mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return root / "openvino"


@functools.lru_cache(maxsize=1)
def _code_digest() -> str:
    """The graphs' source (model, this backend and the int8 quantization): a change to any makes new cache entries."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for f in sorted([*(here / "model").glob("*.py"), Path(__file__), here / "quantize.py"]):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def weights_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def openvino_missing() -> list:
    """What the openvino backend needs and this environment lacks: OpenVINO itself, and onnx (the network's parts
    reach OpenVINO through torch's ONNX exporter, which needs it). Empty when the backend can run."""
    import importlib.util
    return [name for name in ("openvino", "onnx") if importlib.util.find_spec(name) is None]


def openvino_available() -> bool:
    return not openvino_missing()


def resolve_backend(backend: str, device: str) -> str:
    """"auto" -> openvino on a CPU where it is installed, torch otherwise; other names as they are."""
    if backend == "auto":
        return "openvino" if str(device) == "cpu" and openvino_available() else "torch"
    return backend


def check_backend(backend: str, precision: str, device: str) -> None:
    """A clear error for a backend, precision and device that do not go together."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {list(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {list(PRECISIONS)}")
    if backend == "torch" and precision not in ("auto", "fp32"):
        raise ValueError(f"precision {precision} is the openvino backend's; the torch backend runs float32")
    if backend == "openvino":
        if str(device) != "cpu":
            raise ValueError(f"the openvino backend runs on the CPU, not device {device!r}")
        missing = openvino_missing()
        if missing:
            raise ValueError(f"backend openvino needs {' and '.join(missing)}, not installed: pip install "
                             f"'ges_ros[openvino]' (or pip install {' '.join(missing)}), or backend:=torch")
        if precision in INT8 and quantize.nncf_missing():
            raise ValueError(f"precision {precision} needs nncf, not installed: pip install 'ges_ros[openvino]' "
                             f"(or pip install nncf), or precision:=auto")


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether OpenVINO runs bf16 natively on this CPU (AMX or AVX-512 BF16); asked once a process (an
    ov.Core() is built for it)."""
    import openvino as ov
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def resolve_precision(precision: str, int8_passed: Sequence[str] = ()) -> str:
    """"auto" -> "bf16" where the CPU has it, else "fp32"; the int8 variant of that where it is in int8_passed
    (the weights passed the int8 accuracy check with it, quantize.int8_passed) and nncf is installed. Other names
    as they are."""
    if precision != "auto":
        return precision
    float_part = "bf16" if cpu_has_bf16() else "fp32"
    quantized = "int8_bf16" if float_part == "bf16" else "int8"
    if quantized in int8_passed and not quantize.nncf_missing():
        return quantized
    return float_part


# ------------------------------------------------------------------ the three graphs, as traceable modules
def _flat_encoding(enc: Encoded) -> List[torch.Tensor]:
    """An encoding as the flat tensor list the compiled graphs exchange (shapes and padding follow from the size)."""
    return [*(t for level in enc.context for t in level), *(v.features for v in enc.lookup.volumes), enc.prob,
            enc.init_disparity, *enc.hidden0]


class _Layout:
    """Where each part of an encoding sits in the flat list, for one model and input size."""

    def __init__(self, enc: Encoded) -> None:
        self.context = [len(level) for level in enc.context]
        self.volumes = len(enc.lookup.volumes)
        self.scales = [v.scale for v in enc.lookup.volumes]
        self.radius = enc.lookup.radius
        self.shapes = list(enc.shapes)
        self.pad = enc.pad
        self.hidden = len(enc.hidden0)

    @property
    def step_inputs(self) -> int:
        """How many of the flat list's tensors the update reads (the context and the 3D features)."""
        return sum(self.context) + self.volumes

    def encoding(self, flat: Sequence[torch.Tensor]) -> Encoded:
        context, k = [], 0
        for n in self.context:
            context.append(list(flat[k:k + n]))
            k += n
        volumes = [LookupVolume(v, scale) for v, scale in zip(flat[k:k + self.volumes], self.scales)]
        k += self.volumes
        prob, init = flat[k], flat[k + 1]
        hidden0 = list(flat[k + 2:k + 2 + self.hidden])
        # the volumes are already on one x/y grid: VolumeLookup keeps them as they are
        return Encoded(context, VolumeLookup(volumes, radius=self.radius), prob, init, hidden0, self.shapes, self.pad)


class _EncodeGraph(nn.Module):
    def __init__(self, model: GES) -> None:
        super().__init__()
        self.model = model

    def forward(self, left: torch.Tensor, right: torch.Tensor):
        return tuple(_flat_encoding(self.model.encode(left, right)))


class _StepGraph(nn.Module):
    def __init__(self, model: GES, layout: _Layout, example: Encoded) -> None:
        super().__init__()
        self.model, self.layout, self.example = model, layout, example

    def forward(self, z: torch.Tensor, *inputs: torch.Tensor):
        flat = [*inputs, *_flat_encoding(self.example)[self.layout.step_inputs:]]
        return self.model.step(z, self.layout.encoding(flat))


class _DecodeGraph(nn.Module):
    def __init__(self, model: GES, layout: _Layout, example: Encoded) -> None:
        super().__init__()
        self.model, self.layout, self.example = model, layout, example

    def forward(self, z: torch.Tensor, prob: torch.Tensor):
        enc = self.example
        enc = Encoded(enc.context, enc.lookup, prob, enc.init_disparity, enc.hidden0, enc.shapes, enc.pad)
        return self.model.decode_coarse_confidence(z, enc)


class _Compiled:
    """The three graphs of one input size, compiled, with one infer request each. With a cache folder the converted
    graphs are kept as OpenVINO IR (keyed by the weights, the size, the graphs' code and OpenVINO's version) and
    OpenVINO keeps its compiled blobs beside them, so a restarted process skips the export and the compile;
    `from_cache` says whether this one did."""

    def __init__(self, core, model: GES, height: int, width: int, config: dict,
                 cache: Optional[Path] = None, key: str = "", calibration: Optional[str] = None) -> None:
        import openvino as ov
        left = torch.zeros(1, 3, height, width)
        with torch.no_grad():
            enc = model.encode(left, left)
            z = model.initial_state(enc)
        self.layout = _Layout(enc)
        flat = _flat_encoding(enc)
        graphs = [("encode", _EncodeGraph(model), (left, left)),
                  ("step", _StepGraph(model, self.layout, enc), (z, *flat[:self.layout.step_inputs])),
                  ("decode", _DecodeGraph(model, self.layout, enc), (z, enc.prob))]
        folder = cache / f"{key}_{height}x{width}" if cache is not None else None
        self.from_cache = folder is not None and all((folder / f"{n}.xml").is_file() for n, _, _ in graphs)
        if cache is not None:
            config = {**config, "CACHE_DIR": str(cache / "blobs")}
        samples = None
        if calibration is not None and not self.from_cache:
            pairs = quantize.calibration_pairs(calibration, height, width)
            samples = quantize.calibration_samples(model, pairs, model.config.iters, _flat_encoding,
                                                   self.layout.step_inputs)
        self.requests = []
        for k, (name, module, example) in enumerate(graphs):
            if self.from_cache:
                ov_model = core.read_model(str(folder / f"{name}.xml"))
            else:
                ov_model = _to_openvino(core, module, example)
                if samples is not None and name in quantize.QUANTIZED_GRAPHS:
                    ov_model = quantize.quantize_graph(ov_model, samples[k])
                if folder is not None:
                    try:
                        folder.mkdir(parents=True, exist_ok=True)
                        tmp = folder / f"{name}.tmp.xml"
                        ov.save_model(ov_model, str(tmp), compress_to_fp16=False)
                        os.replace(tmp.with_suffix(".bin"), folder / f"{name}.bin")
                        os.replace(tmp, folder / f"{name}.xml")
                    except OSError:
                        pass            # a cache that cannot be written is no cache; the network still runs
            compiled = core.compile_model(ov_model, "CPU", config)
            self.requests.append(compiled.create_infer_request())
        ov_type = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        float_part = {"f32": "fp32", "bf16": "bf16"}.get(ov_type, ov_type)
        self.precision = float_part if calibration is None else ("int8" if float_part == "fp32" else "int8_bf16")

    def run(self, which: int, inputs: Sequence[torch.Tensor], *, share_outputs: bool) -> List[torch.Tensor]:
        arrays = [np.ascontiguousarray(t.detach().float().numpy()) for t in inputs]
        out = self.requests[which].infer(arrays, share_inputs=True, share_outputs=share_outputs)
        return [torch.from_numpy(out[k]) for k in range(len(out))]


def _to_openvino(core, module: nn.Module, example: Tuple[torch.Tensor, ...]):
    """A traceable module -> an OpenVINO model, through an in-memory ONNX graph (the exporter `ges export` uses)."""
    buf = io.BytesIO()
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")      # the tracer's notes on shape-dependent Python branches: sizes are fixed
        torch.onnx.export(module, example, buf, opset_version=20, dynamo=False)
    return core.read_model(buf.getvalue())


class OpenVinoNetwork:
    """The network's encode / step / decode run by OpenVINO (CPU), compiled on first use of each input size; the
    rest of the GES interface the Predictor uses (solve, initial_state, upsample_init) is the model's own. No
    other attribute of the model is passed through."""

    def __init__(self, model: GES, *, precision: str = "auto", int8_passed: Sequence[str] = (),
                 int8_calibration: str = "generated") -> None:
        """precision: see the module docstring (auto resolved here, int8_passed: what passed the weights' int8
        check);
        int8_calibration: the int8 calibration pairs, "generated" or a folder (ges_core/quantize.py)."""
        check_backend("openvino", precision, "cpu")
        import openvino as ov
        self.model = model.eval()
        self.core = ov.Core()
        self.precision = resolve_precision(precision, int8_passed)
        # what auto left out: this CPU's int8 variant, where the weights' check did not pass it (the ready line)
        best = resolve_precision("auto", INT8) if precision == "auto" else None     # auto, had every variant passed
        self.int8_declined: Optional[str] = best if best in INT8 and best != self.precision else None
        check_backend("openvino", self.precision, "cpu")
        self.calibration = int8_calibration if self.precision in INT8 else None
        # as many threads as PyTorch is set to use (OMP_NUM_THREADS, torch.set_num_threads): one setting for both
        self.config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": torch.get_num_threads(),
                       "INFERENCE_PRECISION_HINT": _OV_TYPES[self.precision]}
        self._compiled: "OrderedDict[Tuple[int, int], _Compiled]" = OrderedDict()
        self._current: Optional[_Compiled] = None
        self.cache = cache_root()
        self._ov_version = ov.__version__.split("-")[0]
        self.last_from_cache = False       # whether the last size prepared came from the cache

    def cache_key(self) -> str:
        """What a compiled graph depends on, taken when a size is compiled (weights can change after the network
        was made, and the config holds inference settings such as the soft-argmin's top-k)."""
        config = hashlib.sha256(json.dumps(dataclasses.asdict(self.model.config), sort_keys=True,
                                           default=str).encode()).hexdigest()[:8]
        key = f"{weights_digest(self.model)}{config}_{_code_digest()}_{self.precision}_ov{self._ov_version}"
        if self.calibration is not None:
            import nncf
            key += f"_{quantize.calibration_id(self.calibration)}_nncf{nncf.__version__}"
        return key

    def prepare(self, height: int, width: int) -> bool:
        """Compile the graphs of an (height, width) input now, unless they are; -> whether it compiled."""
        if (height, width) in self._compiled:
            return False
        self.compiled(height, width)
        return True

    def compiled(self, height: int, width: int) -> _Compiled:
        key = (height, width)
        if key not in self._compiled:
            cache_key = self.cache_key() if self.cache is not None else ""
            self._compiled[key] = _Compiled(self.core, self.model, height, width, self.config, self.cache, cache_key,
                                            self.calibration)
            self.last_from_cache = self._compiled[key].from_cache
            while len(self._compiled) > SIZES_KEPT:
                self._compiled.popitem(last=False)
        self._compiled.move_to_end(key)
        return self._compiled[key]

    @property
    def inference_precision(self) -> str:
        """What OpenVINO runs at ("fp32", "bf16", "int8", "int8_bf16"), once a size has been compiled; the
        resolved request otherwise."""
        return self._current.precision if self._current is not None else self.precision

    def encode(self, left: torch.Tensor, right: torch.Tensor) -> Encoded:
        if left.shape != right.shape or left.dim() != 4 or left.shape[1] != 3 or left.shape[0] != 1:
            raise ValueError(f"the openvino backend runs one pair (1, 3, H, W), got {tuple(left.shape)} and "
                             f"{tuple(right.shape)}")
        self._current = graphs = self.compiled(*left.shape[2:])
        # the encoding shares the request's output memory: it lives until this size's next encode
        return graphs.layout.encoding(graphs.run(0, (left, right), share_outputs=True))

    def step(self, z: torch.Tensor, enc: Encoded) -> torch.Tensor:
        graphs = self._graphs(enc)
        inputs = [z, *_flat_encoding(enc)[:graphs.layout.step_inputs]]
        return graphs.run(1, inputs, share_outputs=False)[0]

    def decode(self, z: torch.Tensor, enc: Encoded) -> Tuple[torch.Tensor, torch.Tensor]:
        disparity, coarse = self._graphs(enc).run(2, (z, enc.prob), share_outputs=False)
        return disparity, self.model.confidence_at_full_size(coarse.float(), enc)

    def _graphs(self, enc: Encoded) -> _Compiled:
        graphs = self._current
        if graphs is None or graphs.layout.shapes != list(enc.shapes) or graphs.layout.pad != enc.pad:
            raise ValueError("this encoding was not made by this backend's last encode")
        return graphs

    def initial_state(self, enc: Encoded) -> torch.Tensor:
        return self.model.initial_state(enc)

    def upsample_init(self, enc: Encoded) -> torch.Tensor:
        return self.model.upsample_init(enc)

    def solve(self, enc: Encoded, **kwargs):
        return self.model.solve(enc, step=self.step, **kwargs)


def make_network(model: GES, backend: str, precision: str, device: str, *, int8_passed: Sequence[str] = (),
                 int8_calibration: str = "generated"):
    """The object the Predictor runs: the model itself (torch) or its OpenVINO-compiled parts; backend as
    resolve_backend returned it."""
    check_backend(backend, precision, device)
    if backend == "torch":
        return model
    return OpenVinoNetwork(model, precision=precision, int8_passed=int8_passed, int8_calibration=int8_calibration)


__all__ = ["BACKENDS", "PRECISIONS", "OpenVinoNetwork", "check_backend", "cpu_has_bf16", "make_network",
           "openvino_available", "openvino_missing", "resolve_precision",
           "resolve_backend", "BACKEND_CHOICES", "DEFAULT_BACKEND"]
