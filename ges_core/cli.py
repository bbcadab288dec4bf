"""`ges`: one command line with subcommands (argparse lives here only).

    ges predict LEFT RIGHT -o OUT      disparity, colour map, confidence, point cloud for a pair or folders
    ges eval --dataset D PATH          EPE / bad-x per scene, GES beside OpenCV SGBM
    ges train --config CFG             train (CPU, GPU, torchrun)
    ges bench MODE                     benchmarks into docs/BENCHMARKS.md

The installed `ges` is ges_ros.cli's, which adds the ROS commands (replay, play) and benchmarks (node, soak);
`python -m ges_core.cli` runs the core alone.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np


def _predictor(args: argparse.Namespace):
    from . import load_predictor
    return load_predictor(args.weights, device=args.device, solver=getattr(args, "solver", None),
                          backend=args.backend, precision=args.precision,
                          int8_calibration=getattr(args, "int8_calibration", "generated"))


# ------------------------------------------------------------------------------ predict
def _pairs(left: str, right: str):
    lp, rp = Path(left), Path(right)
    if lp.is_dir() != rp.is_dir():
        raise ValueError(f"LEFT and RIGHT must both be files or both folders: {lp}, {rp}")
    if not lp.is_dir():
        return [(lp, rp, "")]
    exts = {".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff"}
    pairs = []
    for f in sorted(p for p in lp.iterdir() if p.suffix.lower() in exts):
        if not (rp / f.name).exists():
            raise FileNotFoundError(f"no right image for {f.name} in {rp}")
        pairs.append((f, rp / f.name, f.stem))
    if not pairs:
        raise FileNotFoundError(f"no images in {lp}")
    return pairs


def calibration_from_args(args: argparse.Namespace, width: int = 0, height: int = 0):
    """--calib FILE [--calib-right FILE] or --f/--baseline[/--cx/--cy/--doffs] -> StereoCalibration (None: neither
    given). width/height: the image size the numbers-only form is centred on (0 = any)."""
    from .geometry import calibration_from_values, load_calibration
    if args.calib:
        return load_calibration(args.calib, args.calib_right)
    if args.calib_right:
        raise ValueError("--calib-right goes with --calib (the left camera's camera_info YAML)")
    if args.f is not None:
        if args.baseline is None:
            raise ValueError("--f needs --baseline (metres)")
        cx = args.cx if args.cx is not None else width / 2
        return calibration_from_values(f=args.f, baseline=args.baseline, width=width, height=height, cx=cx,
                                       cy=args.cy, cx_right=cx + args.doffs)
    return None


def add_calibration_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calib", help="calibration file: Middlebury/ETH3D calib.txt (baseline in mm), a KITTI calib "
                                   "file (P2/P3), or the left camera's ROS camera_info YAML (with --calib-right)")
    p.add_argument("--calib-right", help="the right camera's ROS camera_info YAML (with --calib)")
    p.add_argument("--f", type=float, help="focal length in px (instead of --calib)")
    p.add_argument("--baseline", type=float, help="baseline in metres (with --f)")
    p.add_argument("--cx", type=float, help="left principal point x in px (default: the image centre)")
    p.add_argument("--cy", type=float, help="principal point y in px (default: the image centre)")
    p.add_argument("--doffs", type=float, default=0.0, help="cx_right - cx_left in px (Middlebury's doffs)")


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm
    from .data.io import read_image, write_ply, write_pfm
    from .geometry import colorize, depth_mm
    from .pipeline import PipelineParams, StereoPipeline

    pairs = _pairs(args.left, args.right)
    predictor = _predictor(args)
    params = PipelineParams(iters=args.iters or predictor.config.iters, input_scale=args.scale,
                            min_depth=args.min_depth, max_depth=args.max_depth, max_disparity=args.max_disparity)
    pipe = StereoPipeline(predictor, params)
    out_root = Path(args.output)
    for left_p, right_p, stem in tqdm(pairs, disable=len(pairs) == 1, desc="predict", unit="pair"):
        out = out_root / stem if stem else out_root
        out.mkdir(parents=True, exist_ok=True)
        left, right = read_image(str(left_p)), read_image(str(right_p))
        calib = calibration_from_args(args, left.shape[1], left.shape[0])
        r = pipe.run(left, right, calib)
        disp = np.where(r.valid, r.disparity, 0).astype(np.float32)
        write_pfm(str(out / "disparity.pfm"), disp)
        _imwrite(out / "disparity.png", np.clip(disp * 256 + 0.5, 0, 65535).astype(np.uint16))   # KITTI encoding
        _imwrite(out / "disparity_color.png", _with_scale_bar(colorize(disp, r.valid, vmin=0), disp[r.valid]))
        _imwrite(out / "confidence.png", (r.confidence * 255 + 0.5).astype(np.uint8))
        n = None
        if calib is not None:
            xyz, _ = r.points()
            n = write_ply(str(out / "points.ply"), xyz, left)
            depth = r.depth()        # the cloud's z: metres, NaN where there is no point
            write_pfm(str(out / "depth.pfm"), depth)
            _imwrite(out / "depth_mm.png", depth_mm(depth))
        scale = f", network at scale {r.scale:.3g}" if r.scale != 1.0 else ""
        if r.row_alignment is not None and abs(r.row_alignment.offset_px) > 0.5:
            print(f"{left_p.name}: warning: the rows are {r.row_alignment.offset_px:+.2f} px apart (median of "
                  f"{r.row_alignment.matches} matches): the pair is not rectified well, and depth will be wrong",
                  file=sys.stderr)
        print(f"{left_p.name}: {r.iters} iterations, residual {r.residual:.2e}, {r.timings_ms['total']:.0f} ms"
              f"{scale}, runtime {getattr(predictor, 'runtime', 'onnxruntime')}"
              f"{f', {n} points' if n is not None else ''} -> {out}")
    return 0


def _imwrite(path: Path, img) -> None:
    import cv2
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    if not cv2.imwrite(str(tmp), img):
        raise OSError(f"cannot write {path}")
    os.replace(tmp, path)


def _with_scale_bar(color, values):
    """Append a labelled colour bar (disparity in px) under a bgr colour map."""
    import cv2
    import numpy as np
    height, width = color.shape[:2]
    lo, hi = (0.0, float(values.max())) if values.size else (0.0, 1.0)
    bar = cv2.applyColorMap(np.tile(np.linspace(0, 255, width).astype(np.uint8), (12, 1)), cv2.COLORMAP_TURBO)
    label = np.zeros((22, width, 3), np.uint8)
    cv2.putText(label, f"{lo:.0f} px", (2, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    text = f"{hi:.0f} px (disparity)"
    cv2.putText(label, text, (max(2, width - 8 * len(text)), 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return np.concatenate([color, bar, label], axis=0)


# ------------------------------------------------------------------------------ eval
def _cmd_eval(args: argparse.Namespace) -> int:
    from .data.datasets import build_dataset
    from .evaluate import evaluate, format_table, mean_row
    dataset = build_dataset(args.dataset, args.path)
    rows = evaluate(dataset, _predictor(args), iters=args.iters, baseline=args.baseline, scale=args.scale)
    print(format_table(rows, baseline=args.baseline is not None))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "mean": mean_row(rows)}, indent=1))
    failed = [r for r in rows if "error" in r]
    if failed:
        print(f"ges eval: {len(failed)} of {len(rows)} scenes could not be scored (named above); the other rows "
              f"are written", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------------------ train
def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, Trainer
    overrides = {}
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.out_dir is not None:
        overrides["out_dir"] = args.out_dir
    cfg = TrainConfig.load(args.config, overrides)
    result = Trainer(cfg, resume=args.resume, progress=not args.no_progress, reschedule=args.reschedule).train()
    print(f"stopped at step {result['step']} ({'interrupted' if result['stopped'] else 'done'}); "
          f"checkpoint: {cfg.out_dir}/checkpoint.pt; non-finite steps skipped: {result['nan_skipped']}")
    return 0


def _cmd_pseudo_label(args: argparse.Namespace) -> int:
    from .data.teacher_stereo import TeacherLabelConfig, file_digest, make_labels
    from .predictor import load_predictor
    from .weights import resolve_weights
    cfg = TeacherLabelConfig(iters=args.iters, min_confidence=args.min_confidence)
    predictor = load_predictor(args.weights, device=args.device, backend=args.backend, precision=args.precision)
    path = resolve_weights(args.weights)
    teacher = f"{Path(path).name}@{file_digest(str(path))}"
    meta = make_labels(predictor, args.root, args.out, cfg, teacher=teacher, progress=not args.no_progress)
    rows = list(meta["pairs"].values())
    if not rows:
        print(f"ges pseudo-label: no pair labelled under {args.root}", file=sys.stderr)
        return 1
    share = {k: float(np.mean([r[k] for r in rows])) for k in ("lr", "scales", "edges", "sky", "confidence",
                                                                 "labelled")}
    print(f"{len(rows)} pairs labelled in {args.out} by {teacher}; kept by each check (mean share of pixels): "
          + ", ".join(f"{k} {v:.3f}" for k, v in share.items()))
    return 0


def _cmd_operating_point(args: argparse.Namespace) -> int:
    """Record how to run the weights in their metadata: preferred_pixels (input_scale auto) and the confidence
    calibration, fitted on generated training pairs (never validation)."""
    from .confidence import CALIBRATION_SEED, calibration_samples, fit_calibration
    from .predictor import load_predictor, operating_point_of
    from .train import TrainConfig, heldout_dataset
    from .weights import load_weights, resolve_weights, with_metadata
    _, _, meta = load_weights(args.weights)
    op = operating_point_of(meta, resolve_weights(args.weights))
    if args.preferred_pixels:
        op["preferred_pixels"] = int(args.preferred_pixels)
    if args.calibration_pairs:
        predictor = load_predictor(args.weights, backend=args.backend, precision=args.precision)
        cfg = TrainConfig.load(args.config)
        data = heldout_dataset(cfg, seed=CALIBRATION_SEED)
        from tqdm import tqdm
        samples = (data[i] for i in tqdm(range(args.calibration_pairs), desc="calibration pairs",
                                         disable=args.no_progress))
        raw, correct = calibration_samples(predictor, samples, iters=args.iters or predictor.config.iters)
        op["confidence_calibration"] = {**fit_calibration(raw, correct), "data": f"{args.config} generated pairs "
                                        f"(seed {CALIBRATION_SEED}, exact labels), {args.calibration_pairs} pairs"}
    if args.int8_check:
        op["int8"] = _int8_check(args)
    with_metadata(args.weights, args.output, {"operating_point": json.dumps(op)})
    print(f"wrote {args.output}: operating_point " + json.dumps({k: v for k, v in op.items()
                                                                  if k != "confidence_calibration"})
          + (f", confidence calibrated on {op['confidence_calibration']['pixels']} pixels"
             if "confidence_calibration" in op else ""))
    return 0


def _int8_check(args: argparse.Namespace) -> dict:
    """Whether int8 stays within its limits of its float part on the validation set (the real scenes of
    args.int8_check and the motorcycle pair): int8 against fp32 and, where the CPU has bf16, int8_bf16 against
    bf16, each judged apart (quantize.int8_passed): what precision auto's choice of int8 rests on. Calibration:
    generated pairs (the default)."""
    from .bench.accuracy import real_means, validation_sets
    from .ov_backend import cpu_has_bf16
    from .predictor import load_predictor
    from .quantize import FLOAT_PARTS, INT8_BAD2_LIMIT, INT8_EPE_LIMIT, int8_passed
    sets = validation_sets(args.int8_check)
    iters = args.iters or load_predictor(args.weights, backend="torch").config.iters
    measured = {}
    for quantized, float_part in FLOAT_PARTS.items():
        if float_part == "bf16" and not cpu_has_bf16():
            continue
        for precision in (float_part, quantized):
            measured[precision] = [round(v, 4) for v in real_means(
                load_predictor(args.weights, backend="openvino", precision=precision), sets, iters)]
            print(f"int8 check {precision}: EPE / bad-2 per set {measured[precision]}", flush=True)
    check = {"limits": f"EPE +{INT8_EPE_LIMIT:g} %, bad-2 +{INT8_BAD2_LIMIT:g} pt on every set",
             "sets": [k for k, _, _ in sets], "iters": iters, "calibration": "generated", "measured": measured}
    return {"ok": len(int8_passed(check)) == len(measured) // 2, **check}     # ok: every variant measured passed


def _cmd_export_weights(args: argparse.Namespace) -> int:
    from .config import GESConfig
    from .model.ges import build_model
    from .train import load_checkpoint
    from .weights import save_weights
    import dataclasses
    state = load_checkpoint(args.checkpoint)
    cfg = GESConfig.from_json(state["config"])
    if args.topk is not None:
        if args.topk < 0:
            raise ValueError(f"--topk must be 0 (all bins) or a positive count, got {args.topk}")
        cfg = dataclasses.replace(cfg, topk=args.topk)      # inference only: training uses train_topk
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    save_weights(args.output, model, cfg, half=not args.fp32, metadata={"train_step": str(state["step"])})
    print(f"step {state['step']} (topk {cfg.topk}) -> {args.output}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import cv2
    import warnings
    from . import load_predictor
    from .data.datasets import MotorcycleDataset
    from .export import VERIFY_LIMIT_PX, export, verify_onnx
    # the reference the export is checked against: PyTorch in float32
    pred = load_predictor(args.weights, device="cpu", solver=args.solver, backend="torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # tracing warnings about Python control flow on shapes
        export(pred.model, args.output, fmt=args.format, height=args.height, width=args.width, iters=args.iters,
               solver=args.solver, dynamic=args.dynamic)
    print(f"exported {args.format}: {args.output} ({args.width}x{args.height}, solver {args.solver}, {args.iters} "
          f"iterations unrolled{', dynamic size' if args.dynamic else ''})")
    if args.format == "onnx" and not args.no_verify:
        s = MotorcycleDataset()[0]
        left = cv2.resize(s["left"], (args.width, args.height), interpolation=cv2.INTER_AREA)
        right = cv2.resize(s["right"], (args.width, args.height), interpolation=cv2.INTER_AREA)
        diff, spread = verify_onnx(pred, args.output, left=left, right=right, iters=args.iters)
        limit = max(VERIFY_LIMIT_PX, spread)
        ok = diff <= limit
        print(f"verified with ONNX Runtime (CPU) against the PyTorch predictor ({args.solver}, {args.iters} "
              f"iterations) on the motorcycle pair: max |disparity difference| = {diff:.5f} px "
              f"({'OK' if ok else 'FAILED'}, limit {limit:.5f} px: {VERIFY_LIMIT_PX} px, or the PyTorch "
              f"predictor's own float32 spread across thread counts, {spread:.5f} px, where larger)")
        return 0 if ok else 1
    return 0


def _cmd_train_report(args: argparse.Namespace) -> int:
    from .train import training_report
    s = training_report(args.run, args.png)
    print(f"{s['steps']} steps in {s['hours']:.2f} h; final loss {s['final_loss']:.3f}, training EPE "
          f"{s['final_train_epe']:.2f}")
    for step, epe, bad2 in s["evals"]:
        print(f"  step {step}: held-out EPE {epe:.2f} px, bad-2 {bad2:.1f} %")
    return 0


def _cmd_train_solver(args: argparse.Namespace) -> int:
    from .config import read_yaml
    from .deq.hyper import train_solver_from_config
    cfg = read_yaml(args.config, "solver config")
    if args.steps is not None:
        cfg["steps"] = args.steps
    if args.output:
        cfg["output"] = args.output
    out = train_solver_from_config(args.weights, cfg, progress=not args.no_progress)
    print(f"weights with the trained hyper-Anderson solver: {out}")
    return 0


# ------------------------------------------------------------------------------ parser
def _input_scale(text: str):
    from .pipeline import parse_input_scale
    try:
        return parse_input_scale(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from .deq.solvers import solver_names
    from .ov_backend import BACKEND_CHOICES, DEFAULT_BACKEND, PRECISIONS
    p.add_argument("--weights", default="default", help="default, a .safetensors or an .onnx file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKEND_CHOICES,
                   help="the network's runtime (auto: openvino on a CPU where it is installed, else torch)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="the openvino backend's (auto: bf16 where the CPU has AMX or AVX-512 BF16, else fp32; "
                   "int8 / int8_bf16 where the weights passed their int8 check)")
    p.add_argument("--int8-calibration", default="generated", help="int8's calibration pairs: generated (procedural "
                   "scenes) or a folder of NNNN_left / NNNN_right images, e.g. frames from your camera")
    p.add_argument("--iters", type=int, default=None, help="solver iterations (default: the weights' config)")
    p.add_argument("--solver", default=None, choices=solver_names(), help="default: the weights' own")
    p.add_argument("--scale", default="auto", type=_input_scale, help="the scale the network runs at: auto (the node's default: the "
                   "weights' preferred resolution and the disparity range) or a factor")


def build_parser(*, bench_modes=None, extend=None) -> argparse.ArgumentParser:
    from .config import GESConfig
    """The core commands; `extend(sub)` adds more (ges_ros: replay, play) and `bench_modes` replaces the bench
    modes (ges_ros adds node and soak)."""
    parser = argparse.ArgumentParser(prog="ges", description="GES deep-equilibrium stereo")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="disparity (PFM, KITTI PNG), colour map, confidence, point cloud")
    p.add_argument("left", help="left image, or a folder of left images")
    p.add_argument("right", help="right image, or a folder with the same file names")
    p.add_argument("-o", "--output", required=True, help="output folder")
    _add_model_args(p)
    add_calibration_args(p)
    p.add_argument("--min-depth", type=float, default=0.0,
                   help="m: nearer points are dropped, and the network runs small enough to reach this depth")
    p.add_argument("--max-depth", type=float, default=0.0, help="m: farther points are dropped (0 = none)")
    p.add_argument("--max-disparity", type=float, default=0.0,
                   help="px: the largest disparity to resolve (the network runs small enough to reach it)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("eval", help="metrics per scene, GES beside SGBM")
    p.add_argument("--dataset", required=True,
                   choices=["sceneflow", "kitti", "middlebury", "eth3d", "argoverse", "carla", "folder", "motorcycle"])
    p.add_argument("path", nargs="?", help="dataset root (not needed for motorcycle)")
    _add_model_args(p)
    p.add_argument("--baseline", choices=["sgbm"], help="also run OpenCV SGBM in the same run")
    p.add_argument("--json", help="write rows and means as JSON")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("train", help="train the network (CPU, one GPU, or torchrun for many)")
    p.add_argument("--config", required=True, help="training YAML, e.g. config/train/procedural_cpu.yaml")
    p.add_argument("--resume", help="checkpoint.pt to continue from")
    p.add_argument("--steps", type=int, help="override the total number of steps")
    p.add_argument("--reschedule", action="store_true",
                   help="with --resume and a different --steps: stretch the one-cycle schedule to the new length")
    p.add_argument("--out-dir", help="override the run directory")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("pseudo-label", help="label real unlabeled pairs with GES itself (the teacher), filtered")
    p.add_argument("--weights", default="default", help="the teacher")
    p.add_argument("--root", default="../shared/data/stereo_unlabeled")
    p.add_argument("--out", default="runs/labels", help="folder of .npz labels (resumed when interrupted)")
    p.add_argument("--iters", type=int, default=24, help="teacher solver iterations")
    p.add_argument("--min-confidence", type=float, default=0.5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "openvino"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_pseudo_label)

    p = sub.add_parser("operating-point", help="record preferred_pixels and the confidence calibration in weights")
    p.add_argument("--weights", default="default")
    p.add_argument("-o", "--output", required=True, help="weights file to write (tensors unchanged)")
    p.add_argument("--preferred-pixels", type=int, default=0, help="input_scale auto's network pixel count")
    p.add_argument("--calibration-pairs", type=int, default=0, help="fit the confidence map on this many pairs")
    p.add_argument("--int8-check", default=None, metavar="DATA", help="record whether int8 stays within 1 %% EPE "
                   "and 0.2 pt bad-2 of float32 on these validation scenes and the motorcycle pair (auto takes "
                   "int8 only where it does)")
    p.add_argument("--config", default="config/train/teacher_s9.yaml", help="training config whose generated "
                   "(exactly labelled) sources the calibration pairs come from")
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "openvino"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_operating_point)

    p = sub.add_parser("train-report", help="summarise and plot a run's metrics.jsonl (several dirs: its stages)")
    p.add_argument("run", nargs="+", help="run directory, e.g. runs/procedural_cpu; several: the stages in order")
    p.add_argument("--png", help="write the loss/EPE curves here")
    p.set_defaults(func=_cmd_train_report)

    p = sub.add_parser("train-solver", help="train the hyper-Anderson solver with the GES weights frozen")
    p.add_argument("--weights", default="default")
    p.add_argument("--config", required=True, help="e.g. config/train/solver.yaml")
    p.add_argument("--steps", type=int)
    p.add_argument("-o", "--output", help="weights file to write (GES weights + solver)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train_solver)

    p = sub.add_parser("export-weights", help="training checkpoint -> safetensors weights (config in metadata)")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--fp32", action="store_true", help="store float32 instead of float16")
    p.add_argument("--topk", type=int, help="soft-argmin candidates for the initial disparity at inference, stored "
                                            "in the weights' config (0 = all bins, as in training); default: the "
                                            "checkpoint's")
    p.set_defaults(func=_cmd_export_weights)

    p = sub.add_parser("export", help="ONNX / TorchScript with fixed iterations, verified against PyTorch")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("--height", type=int, required=True)
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--iters", type=int, default=GESConfig.iters, help="solver iterations unrolled (the node's default)")
    p.add_argument("--solver", default=GESConfig.solver, choices=["anderson", "fixed_point"],
                   help="solver unrolled into the graph (default: the node's)")
    p.add_argument("--weights", default="default")
    p.add_argument("--dynamic", action="store_true", help="dynamic height/width (ONNX)")
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=_cmd_export)

    if extend is not None:
        extend(sub)
    from .bench import add_bench_parser
    add_bench_parser(sub, bench_modes)
    return parser


def main(argv: Optional[List[str]] = None, *, parser: Optional[argparse.ArgumentParser] = None,
         extra: Optional[dict] = None) -> int:
    """Runs a command; errors the user can fix (a missing file, a bad value) are one line and exit 2. extra:
    attributes set on the parsed arguments (what a caller took out of argv before parsing)."""
    args = (parser or build_parser()).parse_args(argv)
    for key, value in (extra or {}).items():
        setattr(args, key, value)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"ges {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ges {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
