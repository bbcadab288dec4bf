"""`ges bench training`: training steps an hour of whole recipes (data, forward, backward, optimizer: what a run
logs as step_s), side by side on the same machine: each config runs a short stretch in turn, twice, so that the
machine's drift falls on both alike.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np

from .common import machine_line, md_table


def _stretch(config: str, steps: int, out: Path, fills: Dict[str, List[float]]) -> List[float]:
    """The step times (s) of `steps` steps of `config` after a warm-up step, in a fresh run directory. A recipe
    whose sources draw from pools of pre-rendered scenes is timed as it runs once its pools are full: the scenes
    the stretch will draw are rendered first (into the render cache), and the seconds a scene took are added to
    `fills[kind]`."""
    import json
    from ..data.datasets import render_pools
    from ..train import TrainConfig, Trainer, build_train_dataset
    cfg = TrainConfig.load(config)
    # the config's own recipe, a short run of its own: no evaluation, no checkpoint on the way
    cfg = dataclasses.replace(cfg, out_dir=str(out), steps=max(steps + 1, 40), log_every=1, eval_every=0,
                              checkpoint_every=10 ** 9)
    for kind, (n, secs) in render_pools(build_train_dataset(cfg), range((steps + 1) * cfg.batch_size)).items():
        fills.setdefault(kind, []).append(secs / n)
    Trainer(cfg, progress=False).train(until=steps + 1)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step_s"] for r in rows if "step_s" in r][1:]


def bench_training(args) -> str:
    from ..train import TrainConfig, build_train_dataset
    configs = args.train_configs
    times: Dict[str, List[float]] = {c: [] for c in configs}
    fills: Dict[str, Dict[str, List[float]]] = {c: {} for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats):
            for k, config in enumerate(configs):
                times[config] += _stretch(config, args.train_steps, Path(tmp) / f"{k}_{round_}", fills[config])
                print(f"training {config} round {round_ + 1}: median step {np.median(times[config]):.2f} s",
                      flush=True)
    base = float(np.median(times[configs[0]]))
    rows, notes = [], []
    for config in configs:
        step = float(np.median(times[config]))
        cfg = TrainConfig.load(config)
        dataset = build_train_dataset(cfg)
        pools = {p.kind: p.pool for p in getattr(dataset, "parts", [dataset]) if getattr(p, "pool", 0)}
        # the pools' one-time rendering, at the seconds a scene took here, spread over the config's own steps
        fill_s = sum(n * float(np.median(fills[config].get(kind) or [0.0])) for kind, n in pools.items())
        amortized = cfg.steps / (cfg.steps * step + fill_s) * 3600
        rows.append([config, len(times[config]), f"{step:.2f}", f"{3600 / step:.0f}", f"{base / step:.2f}",
                     f"{fill_s / 60:.1f}" if pools else "-", f"{amortized:.0f}", f"{amortized * base / 3600:.2f}"])
        if pools:
            per = ", ".join(f"{kind} {n} scenes at {np.median(fills[config].get(kind) or [0.0]):.2f} s"
                            for kind, n in pools.items())
            notes.append(f"- {config}: pools of {per} (rendered once into the render cache, kept across runs).")
    return "\n".join([
        "## training — steps an hour of whole recipes, side by side", "",
        f"{machine_line()}; each config {args.repeats} stretches of {args.train_steps} steps (after one warm-up "
        "step), in turn; a step is the logged step_s: data, forward solve, backward, optimizer (checkpoints and "
        "evaluations excluded). A recipe whose sources draw from pools of pre-rendered scenes is timed with the "
        "scenes its stretch draws already rendered (as in a run past its first cycle); its pools' one-time "
        "rendering is then added back, spread over the config's own steps, in the last two columns.", "",
        md_table(["config", "steps timed", "median step s", "steps an hour", f"x {configs[0]}", "pool fill (CPU min)",
                  "steps an hour, fill included", f"x {configs[0]}, fill included"], rows), "",
        *notes, *([""] if notes else []),
        "`ges bench training --train-configs " + " ".join(configs) + f" --train-steps {args.train_steps} "
        f"--repeats {args.repeats}`"])
