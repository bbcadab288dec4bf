"""`ges bench MODE`: reproducible performance evidence, written into docs/BENCHMARKS.md (one section
per mode, replaced in place) with PNG plots beside it. One module per mode;
this one holds the mode table and the `ges bench` parser. Every table states machine, torch, threads, date.

    memory       training-step peak memory vs solver iterations for phantom / ift / bptt (fresh process each)
    latency      per-stage inference time per preset, resolution and iteration count, SGBM in the same run
    convergence  relative residual and EPE vs iteration for each solver, cold and warm started
    node         ROS-side cost per frame (message -> array, DisparityImage, PointCloud2, colour map)
    flops        parameters and FLOPs per preset and resolution, and a GPU latency estimate
    arch         the cheaper-network candidates' multiply-adds and time, untrained, SGBM in the same rounds
    training     training steps an hour of whole recipes (configs), side by side
    accuracy     the weights on the validation scenes beside SGBM, per iteration count (docs/ACCURACY.md)
    autoscale    what input_scale auto costs on a stream, beside input_scale 1 and SGBM
    confidence   sparsification: bad-2 among the pixels kept against coverage per min_confidence (docs/ACCURACY.md)
    gpu          CUDA-event latency per preset, precision and graph mode, the node's path, ONNX Runtime (docs/GPU.md)
    soak         the node under a long stream from another process (ges_ros)
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from .accuracy import bench_accuracy
from .arch import CANDIDATES, bench_arch
from .autoscale import bench_autoscale
from .training import bench_training
from .common import write_section
from .confidence import bench_confidence
from .convergence import bench_convergence
from .flops import bench_flops
from .gpu import PRECISIONS, bench_gpu
from .latency import VARIANTS, bench_latency
from .memory import bench_memory
from ..ov_backend import BACKEND_CHOICES, PRECISIONS as BACKEND_PRECISIONS


# mode -> (function, document it writes); ges_ros adds the ROS-side modes (node, soak) in its `ges`
MODES: Dict[str, Tuple[Callable[[argparse.Namespace], str], str]] = {
    "memory": (bench_memory, "BENCHMARKS.md"), "latency": (bench_latency, "BENCHMARKS.md"),
    "convergence": (bench_convergence, "BENCHMARKS.md"), "flops": (bench_flops, "BENCHMARKS.md"),
    "accuracy": (bench_accuracy, "ACCURACY.md"), "confidence": (bench_confidence, "ACCURACY.md"),
    "autoscale": (bench_autoscale, "BENCHMARKS.md"), "arch": (bench_arch, "BENCHMARKS.md"),
    "training": (bench_training, "TRAINING.md"),
    "gpu": (bench_gpu, "GPU.md")}
# modes `bench all` leaves out (long, or judged against data of their own)
NOT_IN_ALL = ("soak", "accuracy", "confidence", "gpu", "arch", "training")


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
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="accuracy, latency: the network's runtime (auto: openvino on a CPU where installed)")
    p.add_argument("--precision", default="auto", choices=BACKEND_PRECISIONS,
                   help="accuracy, latency: the openvino backend's (auto: bf16 where the CPU has AMX or AVX-512 BF16, "
                   "their int8 variant where the weights passed the int8 check)")
    p.add_argument("--int8-calibration", default="generated",
                   help="accuracy: int8 rows also calibrated on this folder of NNNN_left / NNNN_right pairs")
    p.add_argument("--preset", default="small", help="memory: the preset measured (unless --candidates names one)")
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
    p.add_argument("--candidates", nargs="+", default=None,
                   help=f"arch: candidate names (default: all of {list(CANDIDATES)}); memory: the one measured")
    p.add_argument("--train-configs", nargs="+", default=["config/train/l1_s10.yaml", "config/train/fast_s1_control.yaml"],
                   help="training: the configs whose recipes are timed (the first is the reference)")
    p.add_argument("--train-steps", type=int, default=12, help="training: steps timed per stretch")
    p.add_argument("--weights", default="default")
    p.add_argument("--stream-pairs", type=int, default=60, help="autoscale: pairs in the stream")
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
