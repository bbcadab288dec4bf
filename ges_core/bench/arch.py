"""`ges bench arch`: the cheaper-network candidates (#38), timed before any training (an untrained network times
the same as a trained one): multiply-adds per stage and the openvino backend's per-stage and whole-predict time,
each candidate beside stereo_image_proc's SGBM in the same rounds.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import numpy as np
import torch

from .common import interleaved_median_ms, machine_line, md_table

# the fast preset's fields over the small preset
FAST = {"unet_start": 8, "conv3d": "factorized", "norm": "batch", "shared_stem": True, "slow_fast": False,
        "gate_kernel": 1, "motion_kernel": 1}
# name -> GESConfig fields over the small preset; each row adds one lever to a row above it
CANDIDATES: Dict[str, Dict[str, object]] = {
    "v5 (small)": {},
    "unet from 1/8": {"unet_start": 8},
    "+ factorized 3D": {"unet_start": 8, "conv3d": "factorized"},
    "+ batchnorm": {"unet_start": 8, "norm": "batch"},
    "+ shared stem": {"unet_start": 8, "norm": "batch", "shared_stem": True},
    "+ lean update": {"unet_start": 8, "norm": "batch", "shared_stem": True, "slow_fast": False,
                      "gate_kernel": 1, "motion_kernel": 1},
    "+ lean, 16-wide UNet": {"unet_start": 8, "norm": "batch", "shared_stem": True, "slow_fast": False,
                             "gate_kernel": 1, "motion_kernel": 1, "unet_channels": (16, 16, 32)},
    "lean, factorized": FAST,
    "fast + 1x1 delta head": {**FAST, "delta_kernel": 1},
    "fast + separable candidate": {**FAST, "candidate_conv": "separable"},
    "fast + both": {**FAST, "delta_kernel": 1, "candidate_conv": "separable"},
}


def candidate_config(name: str):
    from ..config import GESConfig
    try:
        fields = CANDIDATES[name]
    except KeyError:
        raise ValueError(f"unknown candidate {name!r}; valid: {list(CANDIDATES)}") from None
    return dataclasses.replace(GESConfig.preset("small"), **fields)


def gmac(model, height: int, width: int) -> Tuple[float, float]:
    """(encode + volume, one update) multiply-adds in G at this size, counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode
    meta = model.to("meta")
    left = torch.zeros(1, 3, height, width, device="meta")
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            enc = meta.encode(left, left)
        encode = fc.get_total_flops() / 2e9
        z = meta.initial_state(enc)
        with FlopCounterMode(display=False) as fc:
            meta.step(z, enc)
        step = fc.get_total_flops() / 2e9
    return encode, step


def bench_arch(args) -> str:
    import cv2
    from ..baselines import sgbm_stereo_image_proc
    from ..data.datasets import MotorcycleDataset
    from ..model.ges import build_model
    from ..predictor import Predictor
    h, w = args.node_latency_size
    s = MotorcycleDataset()[0]
    left = cv2.resize(s["left"], (w, h), interpolation=cv2.INTER_AREA)
    right = cv2.resize(s["right"], (w, h), interpolation=cv2.INTER_AREA)
    names = args.candidates or list(CANDIDATES)
    rows: List[List[object]] = []
    preds, counts, params = {}, {}, {}
    for name in names:
        cfg = candidate_config(name)
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        params[name] = sum(p.numel() for p in model.parameters())
        counts[name] = gmac(build_model(cfg).eval(), h, w)
        pred = Predictor(model, backend=args.backend, precision=args.precision)
        pred.predict(left, right)          # compiles the size: not timed
        preds[name] = pred
        print(f"arch {name}: compiled ({pred.runtime})", flush=True)
    splits: Dict[str, List[dict]] = {name: [] for name in names}

    def timed(name: str):
        return lambda: splits[name].append(preds[name].predict(left, right).timings_ms)
    runs = {"sgbm": lambda: sgbm_stereo_image_proc(left, right), **{name: timed(name) for name in names}}
    ms = interleaved_median_ms(runs, args.repeats)
    sgbm_ms = ms.pop("sgbm")
    for name in names:
        stages = {k: float(np.median([t[k] for t in splits[name]])) for k in splits[name][0]}
        enc_g, step_g = counts[name]
        total_g = enc_g + 4 * step_g
        rows.append([name, f"{params[name] / 1e6:.2f} M", f"{enc_g:.1f}", f"{step_g:.2f}", f"{total_g:.1f}",
                     f"{stages['encode']:.0f}", f"{stages['per_iter']:.0f}", f"{stages['upsample']:.0f}",
                     f"{stages['preprocess'] + stages['postprocess']:.0f}", f"{ms[name]:.0f}", f"{sgbm_ms:.0f}",
                     f"{ms[name] / sgbm_ms:.2f}"])
        print(f"arch {name}: {total_g:.1f} GMAC, predict {ms[name]:.0f} ms, SGBM {sgbm_ms:.0f} ms "
              f"({ms[name] / sgbm_ms:.2f}x)", flush=True)
    runtime = next(iter(preds.values())).runtime
    fields = "\n".join(f"- **{name}**: `{CANDIDATES[name] or 'the small preset as shipped'}`" for name in names)
    body = ["## arch — cheaper-network candidates (#38), untrained, beside SGBM", "",
            f"{machine_line()}; {runtime}; the motorcycle pair resized to {w}x{h}; 4 solver iterations (Anderson); "
            f"predict: median of {args.repeats} rounds, each round timing SGBM (stereo_image_proc's defaults) and "
            "every candidate once in turn; the stage columns are the medians of the same calls' split (encode: encoders, "
            "volume, 3D UNet; pre/post: conversion, resizing and confidence around the network). GMAC counted by "
            "torch.utils.flop_counter on the meta device (grid_sample and elementwise ops not counted).", "",
            md_table(["candidate", "parameters", "encode GMAC", "per update GMAC", "total GMAC (4 it)", "encode ms",
                      "per iteration ms", "upsample ms", "pre/post ms", "predict ms", "SGBM ms", "GES/SGBM"], rows),
            "", "The candidates (GESConfig fields over the small preset):", "", fields, "",
            "`ges bench arch" + (f" --candidates {' '.join(repr(n) for n in names)}" if args.candidates else "")
            + "`"]
    return "\n".join(body)
