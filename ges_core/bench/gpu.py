"""`ges bench gpu`: GPU latency with CUDA events after warm-up (presets, precisions, CUDA graphs / torch.compile,
the node's path, ONNX Runtime providers); its CPU-runnable parts run anywhere.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch

from .common import machine_line, md_table, median_ms
from .latency import latency_variant


# ------------------------------------------------------------------------------ gpu
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _timer(device: torch.device):
    """ms of fn(): CUDA events around it on a GPU (after the warm-up the caller runs), perf_counter on a CPU."""
    if device.type == "cuda":
        def run(fn) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end)
        return run

    def run_cpu(fn) -> float:
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3
    return run_cpu


def _forward_variant(model, left, right, *, iters: int, mode: str, dtype):
    """A zero-argument forward of the whole inference (encode, `iters` Anderson iterations, upsampling) in one of
    eager / compile (torch.compile of the three parts) / cuda_graph (the unrolled graph captured once, replayed)."""
    from ..export import UnrolledGES
    use_amp = dtype is not None
    def autocast():
        return torch.autocast(left.device.type, dtype=dtype, enabled=use_amp)
    if mode == "eager":
        def fn():
            with torch.no_grad(), autocast():
                return model(left, right, iters=iters, solver="anderson")
        return fn
    if mode == "compile":
        m = latency_variant(model, "compile")
        def fn_c():
            with torch.no_grad(), autocast():
                return m(left, right, iters=iters, solver="anderson")
        return fn_c
    if mode == "cuda_graph":
        if left.device.type != "cuda":
            raise ValueError("cuda_graph needs a CUDA device")
        unrolled = UnrolledGES(model, iters, "anderson")
        static_l, static_r = left.clone(), right.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad(), autocast():
            for _ in range(2):
                unrolled(static_l, static_r)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad(), autocast():
            out = unrolled(static_l, static_r)
        def fn_g():
            graph.replay()
            return out
        return fn_g
    raise ValueError(f"unknown mode {mode!r}; valid: eager, compile, cuda_graph")


def _ort_ms(model, h: int, w: int, iters: int, repeats: int, tmp: Path) -> List[Tuple[str, float]]:
    """ONNX Runtime on the exported graph with each GPU provider installed (TensorRT, CUDA), else the CPU one."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    from ..export import export
    import warnings
    path = tmp / f"ges_{h}x{w}_{iters}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export(model.float().cpu(), str(path), fmt="onnx", height=h, width=w, iters=iters)
    available = ort.get_available_providers()
    wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available] \
        or ["CPUExecutionProvider"]
    feed = {"left": np.random.default_rng(0).uniform(0, 255, (1, 3, h, w)).astype(np.float32)}
    feed["right"] = np.roll(feed["left"], -8, axis=3)
    out = []
    for provider in wanted:
        sess = ort.InferenceSession(str(path), providers=[provider])
        out.append((provider.replace("ExecutionProvider", ""),
                    median_ms(lambda: sess.run(["disparity"], feed), repeats, warmup=2)))
    return out


def bench_gpu(args) -> str:
    """The report's headline measured, not estimated: 4 iterations at Argoverse's 2464x2056 (and 640x480), presets
    in fp32 and bf16/fp16 autocast, eager / torch.compile / CUDA graphs, and ONNX Runtime's GPU providers; timed
    with CUDA events after a warm-up (the Argoverse rule's method). Runs on a CPU too (perf_counter), for testing."""
    import dataclasses
    import tempfile
    from ..config import GESConfig
    from ..model.ges import build_model
    device = torch.device(args.device)
    modes = args.gpu_modes if device.type == "cuda" else [m for m in args.gpu_modes if m != "cuda_graph"]
    timer = _timer(device)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="ges_bench_gpu_"))
    for preset in args.presets:
        cfg = dataclasses.replace(GESConfig.preset(preset), tol=0.0)
        model = build_model(cfg).to(device).eval()
        for (h, w) in args.sizes:
            g = torch.Generator().manual_seed(0)
            left = (torch.rand(1, 3, h, w, generator=g) * 255).to(device)
            right = torch.roll(left, shifts=-8, dims=3)
            for precision in args.precisions:
                dtype = PRECISIONS[precision]
                if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
                    continue
                for mode in modes:
                    try:
                        fn = _forward_variant(model, left, right, iters=args.gpu_iters, mode=mode, dtype=dtype)
                        for _ in range(args.warmup):
                            fn()
                        times = sorted(timer(fn) for _ in range(args.repeats))
                        mem = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else 0.0
                        cell = [f"{times[len(times) // 2]:.1f}", f"{times[0]:.1f}", f"{mem:.2f}" if mem else "-"]
                    except (RuntimeError, ValueError) as exc:   # out of memory, a mode this build lacks
                        cell = [f"failed: {str(exc).splitlines()[0][:60]}", "-", "-"]
                    rows.append([preset, f"{w}x{h}", precision, mode, args.gpu_iters, *cell])
                    print(f"gpu {preset} {w}x{h} {precision} {mode}: {cell[0]} ms", flush=True)
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
            if args.ort:
                for provider, ms in _ort_ms(model, h, w, args.gpu_iters, args.repeats, tmp):
                    rows.append([preset, f"{w}x{h}", "fp32", f"onnxruntime {provider}", args.gpu_iters, f"{ms:.1f}",
                                 "-", "-"])
    clock = "CUDA events" if device.type == "cuda" else "perf_counter (no GPU: a test run, not the headline)"
    body = ["## gpu — the report's headline, measured", "",
            f"{machine_line()}; device {device}; timed with {clock} after {args.warmup} warm-up runs, median and "
            f"best of {args.repeats}; {args.gpu_iters} Anderson iterations, random-initialised weights of each "
            "preset (the time does not depend on their values); batch 1. The report: 4 iterations within 155 ms on "
            "an RTX 3090 at 2464x2056.", "",
            md_table(["preset", "size", "precision", "mode", "iterations", "median ms", "best ms", "peak GiB"], rows),
            "", "`ges bench gpu --device " + str(device) + " --presets " + " ".join(args.presets) + " --sizes "
            + ",".join(f"{h}x{w}" for h, w in args.sizes) + "`"]
    return "\n".join(body)
