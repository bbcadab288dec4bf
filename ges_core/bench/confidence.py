"""`ges bench confidence`: sparsification on the validation scenes — bad-2 among the pixels kept against coverage,
for min_confidence thresholds, beside the oracle (the same coverage keeping the pixels with the smallest errors) and
the raw (uncalibrated) confidence. Written into docs/ACCURACY.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from .common import machine_line, md_table

THRESHOLDS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


def bench_confidence(args) -> str:
    from .. import load_predictor
    from ..confidence import sparsification
    from ..config import GESConfig
    from ..data.datasets import MotorcycleDataset, build_dataset
    from ..pipeline import PipelineParams, StereoPipeline
    pred = load_predictor(args.weights, device=args.device, backend=args.backend, precision=args.precision)
    calibrated = pred._conf_map is not None
    sets = [("motorcycle", MotorcycleDataset())]
    if args.data and Path(args.data).is_dir():
        sets.insert(0, ("real scenes", build_dataset("folder", args.data)))
    body: List[str] = []
    for label, ds in sets:
        conf, raw, err = [], [], []
        for i in range(len(ds)):
            s = ds[i]
            if "synthetic" in str(s.get("name", "")).lower():
                continue
            r = StereoPipeline(pred, PipelineParams(iters=GESConfig.iters)).run(s["left"], s["right"])
            mask = s["valid"]
            e = np.abs(np.where(r.valid, r.disparity, 0) - s["disparity"])[mask]
            c = np.where(r.valid, r.confidence, 0)[mask]
            conf.append(c)
            err.append(e)
            if calibrated:      # the raw confidence of the same pixels: the map inverted is not needed, rerun raw
                saved, pred._conf_map = pred._conf_map, None
                try:
                    rr = StereoPipeline(pred, PipelineParams(iters=GESConfig.iters)).run(s["left"], s["right"])
                finally:
                    pred._conf_map = saved
                raw.append(np.where(rr.valid, rr.confidence, 0)[mask])
        conf_a, err_a = np.concatenate(conf), np.concatenate(err)
        rows: List[List[str]] = []
        cal = sparsification(conf_a, err_a, THRESHOLDS)
        raw_rows = sparsification(np.concatenate(raw), err_a, THRESHOLDS) if calibrated else None
        for k, row in enumerate(cal):
            cells = [f"{row['threshold']:g}", f"{row['coverage']:.1f}", f"{row['bad2']:.2f}", f"{row['oracle_bad2']:.2f}"]
            if raw_rows is not None:
                cells += [f"{raw_rows[k]['coverage']:.1f}", f"{raw_rows[k]['bad2']:.2f}"]
            rows.append(cells)
        head = ["min_confidence", "coverage (%)", "bad-2 kept (%)", "oracle bad-2 (%)"]
        if raw_rows is not None:
            head += ["raw: coverage (%)", "raw: bad-2 kept (%)"]
        body += [f"### {label} ({err_a.size} pixels with ground truth)", "", md_table(head, rows), ""]
        print(f"confidence {label}: " + "; ".join(f"{r[0]}: {r[1]} % kept, bad-2 {r[2]}" for r in rows), flush=True)
    head = ["## confidence — sparsification on the validation scenes (min_confidence)", "",
            f"{machine_line()}; weights {args.weights}, node defaults ({GESConfig.iters} iterations, input_scale "
            f"auto; runtime {pred.runtime}); confidence "
            f"{'calibrated by the map the weights carry' if calibrated else 'raw (the weights carry no calibration)'}. "
            "Pixels with ground truth pooled over the scenes (the synthetic one left out); coverage = share of them "
            "kept (confidence >= threshold, and valid); bad-2 among the kept; oracle = the bad-2 of the same "
            "coverage keeping the smallest errors (the best any ordering can do). The calibration is monotone, so "
            "calibrated and raw order the pixels alike: what it changes is what a threshold means.", ""]
    return "\n".join(head + body + [f"`ges bench confidence --data {args.data}`"])
