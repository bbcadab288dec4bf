"""`ges bench latency`: per-stage inference time per preset, resolution and iteration count, and the node's
default beside stereo_image_proc's SGBM in the same run.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import torch

from .common import interleaved_median_ms, machine_line, md_table, median_ms


# ------------------------------------------------------------------------------ latency
def _stage_times(model, left, right, repeats: int) -> Dict[str, float]:
    """Per-stage median ms of one forward: encoders + volume, per iteration, upsampling. `model`: a GES or anything
    with its encode / initial_state / step / decode (the openvino backend's network)."""
    with torch.no_grad():
        enc_ms = median_ms(lambda: model.encode(left, right), repeats)
        enc = model.encode(left, right)
        z0 = model.initial_state(enc)
        it_ms = median_ms(lambda: model.step(z0, enc), repeats)
        up_ms = median_ms(lambda: model.decode(z0, enc), repeats)
    return {"encode": enc_ms, "per_iter": it_ms, "upsample": up_ms}


VARIANTS = ("eager", "channels_last", "compile", "openvino_fp32", "openvino_bf16", "openvino_int8",
            "openvino_int8_bf16")


def latency_variant(model, variant: str):
    """The model as a latency variant: eager; channels_last (2D and 3D conv weights and the inputs
    channels-last, NHWC / NDHWC); compile
    (torch.compile of the encoder + volume, the update step and the upsampling, each on its own); openvino_fp32 /
    _bf16 / _int8 / _int8_bf16 (the openvino backend's network at that precision)."""
    import copy
    if variant == "eager":
        return model
    if variant not in VARIANTS:
        raise ValueError(f"unknown latency variant {variant!r}; valid: {list(VARIANTS)}")
    if variant.startswith("openvino_"):
        from ..ov_backend import OpenVinoNetwork
        return OpenVinoNetwork(model, precision=variant.split("_", 1)[1])
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
    from ..baselines import sgbm_disparity
    from ..config import GESConfig
    from ..model.ges import build_model
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
                    st = _stage_times(m, left_v, right_v, args.repeats)
                except (RuntimeError, ValueError) as exc:   # out of memory at the largest sizes; no OpenVINO
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
            md_table(["size", "weights", "runtime", "solver", "iterations", "GES ms (predict)", "SGBM ms "
                      "(stereo_image_proc defaults)", "GES/SGBM"], node_rows), "",
            "### inference per stage", "", f"{machine_line()}; device {args.device}; median of "
            f"{args.repeats} after a warm-up; total = encoders + cost volume + 3D UNet, plus iterations x one update, "
            "plus convex upsampling; SGBM (OpenCV, 3-way, range min(max_disp, 256)) on the same input in the same run.",
            "Variants: eager; channels_last (conv weights and inputs channels-last); compile (torch.compile of encoder + volume, "
            "update step and upsampling; compile time not counted); openvino_fp32 / _bf16 / _int8 / _int8_bf16 (the "
            "openvino backend's compiled encode, update and upsampling at that precision, int8 calibrated on "
            "generated pairs; compile and quantization time not counted).",
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
    from .. import load_predictor
    from ..baselines import sgbm_stereo_image_proc
    from ..config import GESConfig
    from ..data.datasets import MotorcycleDataset
    h, w = args.node_latency_size
    s = MotorcycleDataset()[0]
    left = cv2.resize(s["left"], (w, h), interpolation=cv2.INTER_AREA)
    right = cv2.resize(s["right"], (w, h), interpolation=cv2.INTER_AREA)
    from ..ov_backend import resolve_backend
    iters = GESConfig.iters
    # the runtime asked for (the node's default: auto), then each other openvino precision forced (what a CPU
    # without bf16 runs: fp32 and int8), and PyTorch float32 beside them
    runtimes = [(args.backend, args.precision)]
    if resolve_backend(args.backend, args.device) != "torch":
        from ..ov_backend import PRECISIONS, cpu_has_bf16
        from ..quantize import nncf_missing
        runtimes += [("openvino", p) for p in PRECISIONS[1:] if p != args.precision
                     and not (p.startswith("int8") and nncf_missing())
                     and not (p.endswith("bf16") and not cpu_has_bf16())]
        runtimes.append(("torch", "auto"))
    preds = {}                       # "backend (runtime)" -> predictor, each runtime once
    for backend, precision in runtimes:
        pred = load_predictor(args.weights, device=args.device, solver=GESConfig.solver, backend=backend,
                              precision=precision)
        pred.predict(left, right, iters=iters)          # compiles (and quantizes) the size: not timed
        if all(p.runtime != pred.runtime for p in preds.values()):    # else a forced precision auto resolved to
            preds[f"{backend} ({pred.runtime})"] = pred
    timed = {key: (lambda p: lambda: p.predict(left, right, iters=iters))(p) for key, p in preds.items()}
    ms = interleaved_median_ms({"sgbm": lambda: sgbm_stereo_image_proc(left, right), **timed}, args.repeats)
    sgbm_ms = ms.pop("sgbm")
    rows = []
    for key, ges_ms in ms.items():
        print(f"latency node defaults {w}x{h} {preds[key].runtime}: GES {ges_ms:.0f} ms, SGBM {sgbm_ms:.0f} ms "
              f"({ges_ms / sgbm_ms:.1f}x)", flush=True)
        rows.append([f"{w}x{h}", args.weights, key, preds[key].solver, iters, f"{ges_ms:.0f}", f"{sgbm_ms:.0f}",
                     f"{ges_ms / sgbm_ms:.1f}"])
    note = (f"{machine_line()}; device {args.device}; the motorcycle pair resized; median of {args.repeats} rounds "
            "after a warm-up (the openvino backend compiles, and for int8 quantizes, a size on its first pair), each "
            "round timing SGBM and every runtime once in turn, so that the machine's drift falls on all alike; GES: "
            "Predictor.predict at the node's defaults (what the pipeline calls; the first row is the node's default "
            "runtime); SGBM: OpenCV StereoSGBM 5-path, 64 disparities, block 15, P1/P2 200/400 (stereo_image_proc's "
            "defaults).")
    return rows, note
