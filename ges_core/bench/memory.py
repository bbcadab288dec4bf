"""`ges bench memory`: training-step peak memory vs solver iterations for phantom / ift / bptt, each probe in a
fresh process. The architecture is `--preset`'s, or one of `ges bench arch`'s candidates (`--candidates NAME`).
"""
from __future__ import annotations

import json
import os
import resource
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Tuple

import torch

from .arch import candidate_config
from .common import machine_line, md_table, plot, rss_mb

if TYPE_CHECKING:
    from ..config import GESConfig

PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])     # the folder that holds ges_core


def memory_architecture(args) -> Tuple[str, "GESConfig"]:
    """(its name, the config) of the architecture measured: one `ges bench arch` candidate, else the preset."""
    from ..config import GESConfig
    if args.candidates:
        if len(args.candidates) != 1:
            raise ValueError(f"memory measures one architecture; got {len(args.candidates)} candidates")
        return args.candidates[0], candidate_config(args.candidates[0])
    return f"preset {args.preset}", GESConfig.preset(args.preset)


def memory_probe(config_json: str, backward: str, iters: int, height: int, width: int, device: str) -> Dict[str, float]:
    """One training step in this (fresh) process -> peak memory."""
    import dataclasses
    from ..config import GESConfig
    from ..model.ges import build_model
    cfg = dataclasses.replace(GESConfig.from_json(config_json), backward=backward, train_iters=iters, tol=0.0)
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
    name, cfg = memory_architecture(args)
    rows, series = [], {}
    for backward in ("phantom", "ift", "bptt"):
        xs, ys = [], []
        for iters in args.iters_list:
            cmd = [sys.executable, "-m", "ges_core.bench.memory", "_memory_probe", cfg.to_json(), backward, str(iters),
                   str(args.height), str(args.width), args.device]
            # the probe imports this ges_core, installed or not
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [PACKAGE_PARENT, os.environ.get("PYTHONPATH")]))}
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
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
    figure = plot(args.docs / "memory.png", series, "solver iterations", "training-step memory (MB)",
                  f"{name} {args.height}x{args.width}, one training step")
    kind = "max_memory_allocated" if args.device.startswith("cuda") else "peak RSS of a fresh process minus its RSS before the step"
    body = ["## memory — training-step peak vs iterations", "", f"{machine_line()}; device {args.device}; "
            f"{name}; {args.height}x{args.width}, batch 1; each configuration in a fresh process; "
            f"step memory = {kind}.", "",
            md_table(["backward", "iterations", "process peak (MB)", "step (MB)"], rows), "", *checks]
    if figure:
        body += ["", f"![memory]({figure})"]
    which = f"--candidates {shlex.quote(name)}" if args.candidates else f"--preset {args.preset}"
    body += ["", f"`ges bench memory {which} --height {args.height} --width {args.width}`"]
    return "\n".join(body)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "_memory_probe":
    _, _, config_json, backward, iters, height, width, device = sys.argv
    print(json.dumps(memory_probe(config_json, backward, int(iters), int(height), int(width), device)))
