"""`ges bench MODE`: reproducible performance evidence, written into docs/BENCHMARKS.md (one section
per mode, replaced in place) with PNG plots beside it. Every table states machine, torch, threads, date.

    memory       training-step peak memory vs solver iterations for phantom / ift / bptt (fresh process each)
    latency      per-stage inference time per preset, resolution and iteration count, SGBM in the same run
    convergence  relative residual and EPE vs iteration for each solver, cold and warm started
    node         ROS-side cost per frame (message -> array, DisparityImage, PointCloud2, colour map)
    flops        parameters and FLOPs per preset and resolution, and a GPU latency estimate
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{cpu} ({os.cpu_count()} cores){gpu}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")


def write_section(doc: Path, name: str, body: str) -> None:
    """Replace (or append) the section between <!-- bench:NAME --> markers."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text() if doc.exists() else f"# {doc.stem.title()}\n\nEvery number here was written by `ges bench MODE`.\n"
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _m: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = doc.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, doc)


def md_table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _plot(path: Path, series: Dict[str, Tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str,
          title: str, logy: bool = False) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (x, y) in series.items():
        ax.plot(x, y, marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


# ------------------------------------------------------------------------------ memory
def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_probe(preset: str, backward: str, iters: int, height: int, width: int, device: str) -> Dict[str, float]:
    """One training step in this (fresh) process -> peak memory."""
    import dataclasses
    from .config import GESConfig
    from .model.ges import build_model
    cfg = dataclasses.replace(GESConfig.preset(preset), backward=backward, train_iters=iters, tol=0.0)
    model = build_model(cfg).to(device).train()
    g = torch.Generator().manual_seed(0)
    left = (torch.rand(1, 3, height, width, generator=g) * 255).to(device)
    right = torch.roll(left, shifts=-8, dims=3)
    base = rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    out = model(left, right)
    (out.disparity.mean() + out.init_disparity.mean()).backward()
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
        return {"peak_mb": peak, "base_mb": 0.0, "iters_run": out.iters}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_mb": peak, "base_mb": base, "iters_run": out.iters}


def bench_memory(args) -> str:
    rows, series = [], {}
    for backward in ("phantom", "ift", "bptt"):
        xs, ys = [], []
        for iters in args.iters_list:
            cmd = [sys.executable, "-m", "ges_core.bench", "_memory_probe", args.preset, backward, str(iters),
                   str(args.height), str(args.width), args.device]
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if r.returncode != 0:
                raise RuntimeError(f"memory probe failed ({backward}, {iters}): {r.stderr[-500:]}")
            res = json.loads(r.stdout.strip().splitlines()[-1])
            step = res["peak_mb"] - res["base_mb"]
            rows.append([backward, iters, f"{res['peak_mb']:.0f}", f"{step:.0f}"])
            xs.append(iters)
            ys.append(step)
            print(f"memory {backward} iters={iters}: peak {res['peak_mb']:.0f} MB (step {step:.0f} MB)", flush=True)
        series[backward] = (xs, ys)
    by = {(r[0], r[1]): float(r[3]) for r in rows}
    lo, hi = min(args.iters_list), max(args.iters_list)
    ref = 4 if 4 in args.iters_list else lo
    checks = [f"- DEQ (phantom) at {hi} iterations / at {ref}: {by[('phantom', hi)] / by[('phantom', ref)]:.2f}x "
              f"(target within 1.1x)",
              f"- BPTT at {hi} / phantom at {hi}: {by[('bptt', hi)] / by[('phantom', hi)]:.2f}x (target at least 3x)"]
    plot = _plot(args.docs / "memory.png", series, "solver iterations", "training-step memory (MB)",
                 f"{args.preset} {args.height}x{args.width}, one training step")
    kind = "max_memory_allocated" if args.device.startswith("cuda") else "peak RSS of a fresh process minus its RSS before the step"
    body = [f"## memory — training-step peak vs iterations", "", f"{machine_line()}; device {args.device}; preset "
            f"{args.preset}; {args.height}x{args.width}, batch 1; each configuration in a fresh process; "
            f"step memory = {kind}.", "",
            md_table(["backward", "iterations", "process peak (MB)", "step (MB)"], rows), "", *checks]
    if plot:
        body += ["", f"![memory]({plot})"]
    body += ["", f"`ges bench memory --preset {args.preset} --height {args.height} --width {args.width}`"]
    return "\n".join(body)


# ------------------------------------------------------------------------------ latency
def _stage_times(model, left, right, iters: int, repeats: int) -> Dict[str, float]:
    """Per-stage median ms of one forward: encoders + volume, per iteration, upsampling."""
    with torch.no_grad():
        enc_ms = median_ms(lambda: model.encode(left, right), repeats)
        enc = model.encode(left, right)
        z0 = model.initial_state(enc)
        it_ms = median_ms(lambda: model.step(z0, enc), repeats)
        up_ms = median_ms(lambda: model.decode(z0, enc), repeats)
        total = median_ms(lambda: model(left, right, iters=iters), repeats)
    return {"encode": enc_ms, "per_iter": it_ms, "upsample": up_ms, "total": total}


VARIANTS = ("eager", "channels_last", "compile")


def latency_variant(model, variant: str):
    """The model as a latency variant: eager; channels_last (2D and 3D conv weights and the inputs
    channels-last, NHWC / NDHWC); compile
    (torch.compile of the encoder + volume, the update step and the upsampling, each on its own)."""
    import copy
    if variant == "eager":
        return model
    if variant not in VARIANTS:
        raise ValueError(f"unknown latency variant {variant!r}; valid: {list(VARIANTS)}")
    m = copy.deepcopy(model)
    if variant == "channels_last":
        with torch.no_grad():
            for p in m.parameters():
                if p.dim() in (4, 5):
                    fmt = torch.channels_last if p.dim() == 4 else torch.channels_last_3d
                    p.data = p.data.contiguous(memory_format=fmt)
        return m
    for name in ("encode", "step", "decode"):
        setattr(m, name, torch.compile(getattr(m, name)))
    return m


def bench_latency(args) -> str:
    from .baselines import sgbm_disparity
    from .config import GESConfig
    from .model.ges import build_model
    import dataclasses
    from torch.utils.flop_counter import FlopCounterMode
    rows = []
    device = torch.device(args.device)
    for preset in args.presets:
        cfg = dataclasses.replace(GESConfig.preset(preset), solver="fixed_point", tol=0.0)
        model = build_model(cfg).to(device).eval()
        meta_model = build_model(cfg).eval().to("meta")
        for (h, w) in args.sizes:
            if args.limit_gflop > 0:
                with torch.no_grad(), FlopCounterMode(display=False) as fc:
                    meta_model.encode(torch.zeros(1, 3, h, w, device="meta"), torch.zeros(1, 3, h, w, device="meta"))
                gflop = fc.get_total_flops() / 1e9
                if gflop > args.limit_gflop:
                    rows.append([preset, f"{w}x{h}", "-", "-", "-", "-", "-", f"not run: {gflop:.0f} GFLOP before the "
                                 f"first iteration (limit {args.limit_gflop:g}); see flops", "-", "-"])
                    continue
            g = torch.Generator().manual_seed(0)
            left = (torch.rand(1, 3, h, w, generator=g) * 255).to(device)
            right = torch.roll(left, shifts=-8, dims=3)
            ln = (left[0].permute(1, 2, 0).cpu().numpy()).astype(np.uint8)
            rn = (right[0].permute(1, 2, 0).cpu().numpy()).astype(np.uint8)
            sg_ms = median_ms(lambda: sgbm_disparity(ln, rn, max_disp=min(cfg.max_disp, 256)), args.repeats)
            for variant in args.variants:
                m = latency_variant(model, variant)
                if variant == "channels_last":
                    left_v, right_v = (x.contiguous(memory_format=torch.channels_last) for x in (left, right))
                else:
                    left_v, right_v = left, right
                try:
                    st = _stage_times(m, left_v, right_v, 1, args.repeats)
                except RuntimeError as exc:   # out of memory at the largest sizes
                    rows.append([preset, f"{w}x{h}", variant, "-", "-", "-", "-", f"failed: {str(exc)[:60]}",
                                 f"{sg_ms:.0f}", "-"])
                    continue
                for iters in args.iters_list:
                    total = st["encode"] + iters * st["per_iter"] + st["upsample"]
                    rows.append([preset, f"{w}x{h}", variant, iters, f"{st['encode']:.0f}", f"{st['per_iter']:.0f}",
                                 f"{st['upsample']:.0f}", f"{total:.0f}", f"{sg_ms:.0f}", f"{total / sg_ms:.1f}"])
                    print(f"latency {preset} {w}x{h} {variant} iters={iters}: {total:.0f} ms (SGBM {sg_ms:.0f} ms)",
                          flush=True)
    node_rows, node_note = _node_default_latency(args)
    body = ["## latency — the node's default beside stereo_image_proc's SGBM", "", node_note, "",
            md_table(["size", "weights", "solver", "iterations", "GES ms (predict)", "SGBM ms (stereo_image_proc "
                      "defaults)", "GES/SGBM"], node_rows), "",
            "### inference per stage", "", f"{machine_line()}; device {args.device}; median of "
            f"{args.repeats} after a warm-up; total = encoders + cost volume + 3D UNet, plus iterations x one update, "
            "plus convex upsampling; SGBM (OpenCV, 3-way, range min(max_disp, 256)) on the same input in the same run.",
            "Variants: eager; channels_last (conv weights and inputs channels-last); compile (torch.compile of encoder + volume, "
            "update step and upsampling; compile time not counted).",
            "", md_table(["preset", "size", "variant", "iterations", "encode+volume ms", "per iteration ms",
                          "upsample ms", "total ms", "SGBM ms", "GES/SGBM"], rows),
            "", "`ges bench latency --presets " + " ".join(args.presets) + " --sizes "
            + ",".join(f"{h}x{w}" for h, w in args.sizes) + " --variants " + ",".join(args.variants)
            + (f" --limit-gflop {args.limit_gflop:g}" if args.limit_gflop else "") + "`"]
    return "\n".join(body)


def _node_default_latency(args) -> Tuple[List[List[object]], str]:
    """The node's default inference (the weights, their solver and iterations, through the predictor as the
    pipeline calls it) on the motorcycle pair resized to --node-latency-size, beside SGBM as stereo_image_proc runs
    it by default, in the same run."""
    import cv2
    from . import load_predictor
    from .baselines import sgbm_stereo_image_proc
    from .config import GESConfig
    from .data.datasets import MotorcycleDataset
    h, w = args.node_latency_size
    s = MotorcycleDataset()[0]
    left = cv2.resize(s["left"], (w, h), interpolation=cv2.INTER_AREA)
    right = cv2.resize(s["right"], (w, h), interpolation=cv2.INTER_AREA)
    pred = load_predictor(args.weights, device=args.device, solver=GESConfig.solver)
    iters = GESConfig.iters
    ges_ms = median_ms(lambda: pred.predict(left, right, iters=iters), args.repeats)
    sgbm_ms = median_ms(lambda: sgbm_stereo_image_proc(left, right), args.repeats)
    print(f"latency node defaults {w}x{h}: GES {ges_ms:.0f} ms, SGBM {sgbm_ms:.0f} ms ({ges_ms / sgbm_ms:.1f}x)",
          flush=True)
    rows = [[f"{w}x{h}", args.weights, pred.solver, iters, f"{ges_ms:.0f}", f"{sgbm_ms:.0f}",
             f"{ges_ms / sgbm_ms:.1f}"]]
    note = (f"{machine_line()}; device {args.device}; the motorcycle pair resized; median of {args.repeats} after a "
            "warm-up; GES: Predictor.predict at the node's defaults (what the pipeline calls); SGBM: OpenCV "
            "StereoSGBM 5-path, 64 disparities, block 15, P1/P2 200/400 (stereo_image_proc's defaults).")
    return rows, note


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
    from .export import UnrolledGES
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
    from .export import export
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
    from .config import GESConfig
    from .model.ges import build_model
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


# ------------------------------------------------------------------------------ convergence
def solve_trace(model, enc, *, solver: str, iters: int, init=None) -> List[Tuple[torch.Tensor, float]]:
    """What `iters` separate solves of 1..iters iterations would return, from one solve: (z_k, residual_k).
    Every solver returns the lowest-residual f-value so far and its path does not depend on max_iter."""
    values: List[torch.Tensor] = []
    _, info = model.solve(enc, iters=iters, solver=solver, init=init, tol=0.0, observe=values.append)
    out, best = [], 0
    for k, res in enumerate(info.residuals):
        if res <= info.residuals[best]:
            best = k
        out.append((values[best], res))
    return out


def convergence_pairs(args) -> List[Tuple[str, Dict[str, Any]]]:
    """(set, sample) for the convergence study: the motorcycle pair, the scene folders when present, and
    held-out procedural pairs (a seed no training run draws from)."""
    from .data.datasets import MotorcycleDataset, ProceduralDataset, build_dataset
    from .data.procedural import ProceduralConfig
    pairs = [("real scenes", MotorcycleDataset()[0])]
    if args.data and Path(args.data).is_dir():
        ds = build_dataset("folder", args.data)
        pairs += [("real scenes", ds[i]) for i in range(len(ds))]
    proc = ProceduralDataset(render=ProceduralConfig(height=256, width=512, max_disp=128.0), seed=30_000_000)
    pairs += [("held-out procedural", proc[i]) for i in range(args.procedural_pairs)]
    return pairs


def bench_convergence(args) -> str:
    from . import load_predictor
    from .deq.solvers import SOLVERS
    from .metrics import disparity_metrics
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # weights without a hyper-solver: compared without it
        pred = load_predictor(args.weights, device=args.device, solver="hyper_anderson")
    model = pred.model
    solvers = sorted(SOLVERS) + (["hyper_anderson"] if model.hyper_solver is not None else [])
    ks = sorted(args.iters_list)
    # (set, solver, start) -> per pair: residual and EPE at each k, and the converged EPE
    res: Dict[Tuple[str, str, str], List[List[float]]] = {}
    epe: Dict[Tuple[str, str, str], List[List[float]]] = {}
    dist: Dict[Tuple[str, str, str], List[List[float]]] = {}
    converged: Dict[str, List[float]] = {}
    pairs = convergence_pairs(args)
    for name, s in tqdm(pairs, desc="convergence", unit="pair", disable=not sys.stderr.isatty()):
        def score(z):
            d, _ = model.decode(z, enc)
            return disparity_metrics(d[0, 0].cpu().numpy(), s["disparity"], s["valid"])["epe"]
        left = torch.from_numpy(np.ascontiguousarray(s["left"])).permute(2, 0, 1)[None].float().to(pred.device)
        right = torch.from_numpy(np.ascontiguousarray(s["right"])).permute(2, 0, 1)[None].float().to(pred.device)
        with torch.no_grad():
            enc = model.encode(left, right)
            z_ref, _ = model.solve(enc, iters=40, solver="anderson", tol=0.0)
            converged.setdefault(name, []).append(score(z_ref))
            # warm start: a neighbouring frame's fixed point, stood in for by this pair's plus 5 % noise
            noise = torch.randn(z_ref.shape, generator=torch.Generator().manual_seed(0)).to(z_ref)
            for solver in solvers:
                for start, init in (("cold", None), ("warm", z_ref + 0.05 * z_ref.std() * noise)):
                    trace = solve_trace(model, enc, solver=solver, iters=max(ks), init=init)
                    res.setdefault((name, solver, start), []).append([trace[k - 1][1] for k in ks])
                    epe.setdefault((name, solver, start), []).append([score(trace[k - 1][0]) for k in ks])
                    dist.setdefault((name, solver, start), []).append(
                        [float((trace[k - 1][0] - z_ref).norm() / z_ref.norm()) for k in ks])
    sets = list(dict.fromkeys(n for n, _ in pairs))
    mean_res = {key: np.mean(v, axis=0) for key, v in res.items()}
    mean_epe = {key: np.mean(v, axis=0) for key, v in epe.items()}
    mean_dist = {key: np.mean(v, axis=0) for key, v in dist.items()}

    def anderson_needs(name: str, table, value: float) -> str:
        k = next((k for k, r in zip(ks, table[(name, "anderson", "cold")]) if r <= value), None)
        return str(k) if k is not None else f"> {max(ks)}"
    notes, rows = [], []
    for name in sets:
        ref = float(np.mean(converged[name]))
        count = sum(1 for n, _ in pairs if n == name)
        notes.append(f"- {name} ({count} pairs): converged reference (Anderson, 40 iterations) mean EPE {ref:.3f} px")
        if "hyper_anderson" in solvers and 4 in ks:
            r4 = mean_res[(name, "hyper_anderson", "cold")][ks.index(4)]
            e4 = mean_epe[(name, "hyper_anderson", "cold")][ks.index(4)]
            d4 = mean_dist[(name, "hyper_anderson", "cold")][ks.index(4)]
            notes.append(f"  - hyper_anderson, 4 iterations (cold): residual {r4:.2e}, which Anderson reaches at "
                         f"{anderson_needs(name, mean_res, r4)} iterations (target: 8 or more); distance to the fixed "
                         f"point {d4:.3f}, which Anderson reaches at {anderson_needs(name, mean_dist, d4)}; "
                         f"EPE {e4:.3f} px, {100 * (e4 / ref - 1):+.1f} % from converged (target within 2 %)")
        for solver in solvers:
            for start in ("cold", "warm"):
                r, d, e = mean_res[(name, solver, start)], mean_dist[(name, solver, start)], mean_epe[(name, solver, start)]
                rows.append([name, solver, start, *(f"{ri:.1e} / {di:.2f} / {ei:.3f}" for ri, di, ei in zip(r, d, e))])
    plots = []
    for name in sets:
        tag = name.split()[0].replace("-", "")
        series_r = {f"{sv} ({st})": (ks, list(mean_res[(name, sv, st)])) for sv in solvers for st in ("cold", "warm")}
        series_e = {f"{sv} ({st})": (ks, list(mean_epe[(name, sv, st)])) for sv in solvers for st in ("cold", "warm")}
        plots.append(_plot(args.docs / f"convergence_residual_{tag}.png", series_r, "iterations", "relative residual",
                           f"{name}: mean residual vs iterations", logy=True))
        plots.append(_plot(args.docs / f"convergence_epe_{tag}.png", series_e, "iterations", "EPE (px)",
                           f"{name}: mean EPE vs iterations"))
    body = ["## convergence — residual and EPE vs iterations", "",
            f"{machine_line()}; weights {args.weights}. Real scenes: the scikit-image motorcycle pair and the scene "
            "folders of the evaluation data; held-out procedural: 256x512 pairs of a seed no training run uses. "
            "Cold = from the volumetric initial state (hyper_anderson: through its learned initializer); warm = from "
            "the 40-iteration Anderson fixed point plus 5 % noise (a stand-in for the previous video frame). Each "
            "cell: mean relative residual |f(z)-z|/|f(z)| / mean relative distance to that fixed point |z-z*|/|z*| / "
            "mean EPE (px) after that many iterations.", "", *notes, "",
            md_table(["set", "solver", "start", *(f"{k} it" for k in ks)], rows), ""]
    body += [f"![plot]({p})" for p in plots if p]
    body += ["", f"`ges bench convergence --weights {args.weights} --data {args.data}`"]
    return "\n".join(body)


# ------------------------------------------------------------------------------ flops
def bench_flops(args) -> str:
    from torch.utils.flop_counter import FlopCounterMode
    from .config import GESConfig
    from .model.ges import build_model
    import dataclasses
    rows = []
    estimates = []
    for preset in args.presets:
        cfg = dataclasses.replace(GESConfig.preset(preset), solver="fixed_point", tol=0.0)
        # on the meta device: shapes and FLOPs without computing (the paper preset at Argoverse size is TFLOPs)
        model = build_model(cfg).eval().to("meta")
        params = sum(p.numel() for p in model.parameters())
        for (h, w) in args.sizes:
            left = torch.zeros(1, 3, h, w, device="meta")
            with torch.no_grad():
                with FlopCounterMode(display=False) as fc:
                    enc = model.encode(left, left)
                f_enc = fc.get_total_flops()
                z = model.initial_state(enc)
                with FlopCounterMode(display=False) as fc:
                    model.step(z, enc)
                f_it = fc.get_total_flops()
            total4 = f_enc + 4 * f_it
            rows.append([preset, f"{params / 1e6:.2f} M", f"{w}x{h}", f"{f_enc / 1e9:.1f}", f"{f_it / 1e9:.1f}",
                         f"{total4 / 1e9:.1f}"])
            if (h, w) == (2056, 2464):
                # RTX 3090: 35.6 TFLOP/s fp32 peak, 71 fp16 tensor; assume 25 % of fp16 peak for conv-heavy nets
                est_ms = total4 / (0.25 * 71e12) * 1e3
                estimates.append(f"- {preset} at 2464x2056, 4 iterations: {total4 / 1e9:.0f} GFLOP -> about "
                                 f"{est_ms:.0f} ms on an RTX 3090 assuming 25 % of its 71 TFLOP/s fp16 tensor peak "
                                 "(an estimate, not a measurement; the report: 4 iterations within 155 ms; "
                                 "challenge rule 200 ms on a V100).")
    body = ["## flops — parameters and FLOPs", "", f"{machine_line()}; torch.utils.flop_counter (a multiply-add "
            "counts 2 FLOPs; grid_sample and elementwise ops are not counted).", "",
            md_table(["preset", "parameters", "size", "encode+volume GFLOP", "per iteration GFLOP",
                      "total at 4 iterations GFLOP"], rows), "", *estimates, "", "`ges bench flops`"]
    return "\n".join(body)


# ------------------------------------------------------------------------------ accuracy
def _is_synthetic(row: Dict[str, object]) -> bool:
    return "synthetic" in str(row.get("scene", "")).lower()


def bench_accuracy(args) -> str:
    """GES beside SGBM on the validation scenes (real ones averaged, synthetic ones reported apart) and the
    motorcycle pair, and both against the solver's iteration count."""
    from . import load_predictor
    from .config import GESConfig
    from .data.datasets import MotorcycleDataset, build_dataset
    from .evaluate import evaluate, format_table, mean_row, scored
    # the node's defaults are the core's inference defaults (ges_ros.params reads them from GESConfig)
    pred = load_predictor(args.weights, device=args.device, solver=args.solver or GESConfig.solver)
    sets = [("motorcycle", "motorcycle (scikit-image, Middlebury 2014, quarter size)", MotorcycleDataset())]
    if args.data and Path(args.data).is_dir():
        sets.insert(0, ("scenes", f"scene folders of {args.data}", build_dataset("folder", args.data)))
    body = ["## accuracy — shipped weights beside OpenCV SGBM on real scenes", "",
            f"{machine_line()}; weights {args.weights} (solver {pred.solver}, {GESConfig.iters} iterations, the node's "
            "default); SGBM: OpenCV StereoSGBM 3-way, block 5, P1/P2 = 8/32 x block^2, uniqueness 10, speckle 100/2, "
            "searching up to the scene's largest true disparity (an oracle range, SGBM's best case) with holes filled "
            "from the background side. Metrics over all pixels with ground truth; ratio = GES / SGBM. Means over the "
            "real scenes; synthetic scenes are listed apart and left out of the means.", ""]
    record = {"weights": str(args.weights), "iters": GESConfig.iters, "solver": pred.solver}
    groups: Dict[str, List[Dict[str, object]]] = {}
    for key, title, ds in sets:
        rows = scored(evaluate(ds, pred, iters=GESConfig.iters, baseline="sgbm", progress=False))
        real = [r for r in rows if not _is_synthetic(r)]
        synthetic = [r for r in rows if _is_synthetic(r)]
        body += [f"### {title}", "", format_table(real, baseline=True), ""]
        if synthetic:
            body += ["Synthetic (not in the mean):", "", format_table(synthetic, baseline=True), ""]
        for name, part in ((key if key == "motorcycle" else "scenes_mean", real), ("synthetic", synthetic)):
            if not part:
                continue
            m = mean_row(part)
            print(f"accuracy {name}: GES EPE {m['ges_epe']:.3f} bad-2 {m['ges_bad2']:.2f} | SGBM EPE "
                  f"{m['sgbm_epe']:.3f} bad-2 {m['sgbm_bad2']:.2f}", flush=True)
            record[name] = {k: round(float(m[k]), 4) for k in ("ges_epe", "ges_bad2", "sgbm_epe", "sgbm_bad2")}
            record[name]["beats_sgbm_bad2"] = bool(m["ges_bad2"] < m["sgbm_bad2"])
            record[name]["scenes"] = len(part)
        groups[key] = real
    # against the iteration count: the anytime property (no worse with more iterations)
    rows = []
    for iters in args.iters_list:
        cells = [iters]
        for key, _, ds in sets:
            got = [r for r in scored(evaluate(ds, pred, iters=iters, progress=False)) if not _is_synthetic(r)]
            cells += [f"{np.mean([r['ges_epe'] for r in got]):.3f}", f"{np.mean([r['ges_bad2'] for r in got]):.2f}"]
        rows.append(cells)
        print(f"accuracy iterations {iters}: {cells[1:]}", flush=True)
    record["iterations"] = {str(r[0]): [float(c) for c in r[1:]] for r in rows}
    head = ["iterations"] + sum(([f"{k} EPE (px)", f"{k} bad-2 (%)"] for k, _, _ in sets), [])
    body += ["### EPE and bad-2 against solver iterations (real scenes' mean; motorcycle)", "",
             md_table(head, rows), "", f"`ges bench accuracy --data {args.data}`"]
    if args.record:
        # what the shipped-weights test holds the weights to (test/test_weights.py)
        Path(args.record).write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.record}")
    return "\n".join(body)


# mode -> (function, document it writes); ges_ros adds the ROS-side modes (node, soak) in its `ges`
MODES: Dict[str, Tuple[Callable[[argparse.Namespace], str], str]] = {
    "memory": (bench_memory, "BENCHMARKS.md"), "latency": (bench_latency, "BENCHMARKS.md"),
    "convergence": (bench_convergence, "BENCHMARKS.md"), "flops": (bench_flops, "BENCHMARKS.md"),
    "accuracy": (bench_accuracy, "ACCURACY.md"), "gpu": (bench_gpu, "GPU.md")}
# modes `bench all` leaves out (long, or judged against data of their own)
NOT_IN_ALL = ("soak", "accuracy", "gpu")


def _sizes(text: str) -> List[Tuple[int, int]]:
    out = []
    for item in text.split(","):
        h, w = item.lower().split("x")
        out.append((int(h), int(w)))
    return out


def add_bench_parser(sub, modes: Optional[Dict[str, Tuple[Callable[[argparse.Namespace], str], str]]] = None) -> None:
    """`ges bench MODE`; `modes` defaults to the core's (ges_ros passes them with its own added)."""
    modes = dict(MODES if modes is None else modes)
    p = sub.add_parser("bench", help="benchmarks into docs/BENCHMARKS.md")
    p.add_argument("mode", choices=[*modes, "all"])
    p.add_argument("--docs", type=Path, default=Path("docs"),
                   help="folder of BENCHMARKS.md and plots (default: docs/ under the current directory)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default="small", help="memory: preset")
    p.add_argument("--presets", nargs="+", default=["small", "paper"])
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--iters-list", type=lambda s: [int(x) for x in s.split(",")], default=None)
    p.add_argument("--sizes", type=_sizes, default=_sizes("480x640,1200x1920,2056x2464"), help="HxW,HxW,...")
    p.add_argument("--node-size", type=lambda s: _sizes(s)[0], default=(1200, 1920))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--node-latency-size", type=lambda s: _sizes(s)[0], default=(480, 640),
                   help="latency: HxW of the node-defaults row beside stereo_image_proc's SGBM")
    p.add_argument("--precisions", type=lambda s: s.split(","), default=["fp32", "bf16", "fp16"],
                   help=f"gpu: comma-separated, of {','.join(PRECISIONS)}")
    p.add_argument("--gpu-modes", type=lambda s: s.split(","), default=["eager", "cuda_graph", "compile"],
                   help="gpu: comma-separated, of eager,cuda_graph,compile")
    p.add_argument("--gpu-iters", type=int, default=4, help="gpu: solver iterations")
    p.add_argument("--warmup", type=int, default=3, help="gpu: untimed runs first")
    p.add_argument("--ort", action="store_true", help="gpu: also ONNX Runtime with its GPU providers (or CPU)")
    p.add_argument("--variants", type=lambda s: s.split(","), default=["eager"],
                   help=f"latency: comma-separated, of {','.join(VARIANTS)}")
    p.add_argument("--limit-gflop", type=float, default=0.0,
                   help="latency: skip configurations whose encoders + volume exceed this many GFLOP (0 = run all)")
    p.add_argument("--weights", default="default")
    p.add_argument("--solver", default=None, help="accuracy: solver (default: the node's default)")
    p.add_argument("--data", default=str(Path("..") / "shared" / "data" / "stereo"),
                   help="accuracy: scene folders with ground truth")
    p.add_argument("--record", default=None,
                   help="accuracy: also write the motorcycle and scene-mean numbers as JSON (the shipped weights' "
                        "record is ges_core/weights/default.json)")
    p.add_argument("--procedural-pairs", type=int, default=4, help="convergence: held-out procedural pairs")
    p.add_argument("--pairs", type=int, default=2000, help="soak: pairs to publish")
    p.add_argument("--rate", type=float, default=100.0, help="soak: publishing rate (Hz)")
    p.set_defaults(func=run_bench, bench_modes=modes)


def run_bench(args) -> int:
    table = args.bench_modes
    modes = [m for m in table if m not in NOT_IN_ALL] if args.mode == "all" else [args.mode]
    for mode in modes:
        a = argparse.Namespace(**vars(args))
        if a.iters_list is None:
            a.iters_list = {"memory": [1, 2, 4, 8, 16, 32], "convergence": [1, 2, 3, 4, 6, 8, 12, 16],
                            "accuracy": [1, 2, 4, 8, 16]}.get(mode, [1, 2, 4, 8])
        fn, doc_name = table[mode]
        body = fn(a)
        doc = args.docs / doc_name
        write_section(doc, mode, body)
        print(f"wrote the {mode} section of {doc}")
    return 0


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "_memory_probe":
    _, _, preset, backward, iters, height, width, device = sys.argv
    print(json.dumps(memory_probe(preset, backward, int(iters), int(height), int(width), device)))
