"""`ges bench autoscale`: what `input_scale: auto` costs on a stream — the pipeline at the node's defaults over a
stream of pairs (the range probe on the first pair and one pair in `probe_every`), beside `input_scale: 1` and
stereo_image_proc's SGBM in the same run, at 640x480 and at 1920x1080 (where auto also runs smaller).
"""
from __future__ import annotations

import time
from typing import List

import numpy as np

from .common import machine_line, md_table


def bench_autoscale(args) -> str:
    import cv2
    from .. import load_predictor
    from ..baselines import sgbm_stereo_image_proc
    from ..config import GESConfig
    from ..data.datasets import MotorcycleDataset
    from ..pipeline import PipelineParams, StereoPipeline
    from .common import median_ms
    pred = load_predictor(args.weights, device=args.device, backend=args.backend, precision=args.precision)
    s = MotorcycleDataset()[0]
    pairs = args.stream_pairs
    rows: List[List[str]] = []
    for h, w in ((480, 640), (1080, 1920)):
        left = cv2.resize(s["left"], (w, h), interpolation=cv2.INTER_CUBIC)
        right = cv2.resize(s["right"], (w, h), interpolation=cv2.INTER_CUBIC)
        sgbm_ms = median_ms(lambda: sgbm_stereo_image_proc(left, right), args.repeats)
        means = {}
        for setting in (1.0, "auto"):
            pipe = StereoPipeline(pred, PipelineParams(iters=GESConfig.iters, input_scale=setting))
            for _ in range(3):                     # compile the sizes (the probe's too), then a fresh stream
                pipe.run(left, right)
            pipe.reset()
            times, probes, scale = [], 0, None
            for _ in range(pairs):
                t0 = time.perf_counter()
                r = pipe.run(left, right)
                times.append((time.perf_counter() - t0) * 1e3)
                probes += int("probe" in r.timings_ms)
                scale = r.scale
            means[setting] = float(np.mean(times))
            rows.append([f"{w}x{h}", str(setting), f"{scale:.3g}", str(probes), f"{np.mean(times):.0f}",
                         f"{np.percentile(times, 95):.0f}", f"{sgbm_ms:.0f}", f"{np.mean(times) / sgbm_ms:.1f}",
                         "" if setting == 1.0 else f"{means['auto'] / means[1.0]:.3f}"])
            print(f"autoscale {w}x{h} input_scale {setting}: scale {scale:.3g}, {probes} probes in {pairs}, mean "
                  f"{np.mean(times):.0f} ms (SGBM {sgbm_ms:.0f})", flush=True)
    head = ["input", "input_scale", "network scale", f"probes in {pairs} pairs", "mean ms a pair", "p95 ms",
            "SGBM ms", "ratio to SGBM", "auto / scale 1"]
    return "\n".join([
        "## autoscale — what input_scale auto costs on a stream", "",
        f"{machine_line()}; weights {args.weights} ({pred.runtime}), {GESConfig.iters} iterations; the motorcycle "
        f"pair resized, {pairs} pairs through the pipeline the node runs (StereoPipeline.run) after 3 warm-up pairs "
        "(compiles) and a reset (auto starts a fresh stream: its first pair probes); SGBM: stereo_image_proc's "
        "defaults, median of the same run.", "",
        md_table(head, rows), "",
        f"`ges bench autoscale --stream-pairs {pairs}`"])
