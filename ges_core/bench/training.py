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


def _stretch(config: str, steps: int, out: Path) -> List[float]:
    """The step times (s) of `steps` steps of `config` after a warm-up step, in a fresh run directory."""
    import json
    from ..train import TrainConfig, Trainer
    cfg = TrainConfig.load(config)
    # the config's own recipe, a short run of its own: no evaluation, no checkpoint on the way
    cfg = dataclasses.replace(cfg, out_dir=str(out), steps=max(steps + 1, 40), log_every=1, eval_every=0,
                              checkpoint_every=10 ** 9)
    Trainer(cfg, progress=False).train(until=steps + 1)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step_s"] for r in rows if "step_s" in r][1:]


def bench_training(args) -> str:
    configs = args.train_configs
    times: Dict[str, List[float]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats):
            for k, config in enumerate(configs):
                times[config] += _stretch(config, args.train_steps, Path(tmp) / f"{k}_{round_}")
                print(f"training {config} round {round_ + 1}: median step {np.median(times[config]):.2f} s",
                      flush=True)
    base = float(np.median(times[configs[0]]))
    rows = []
    for config in configs:
        step = float(np.median(times[config]))
        rows.append([config, len(times[config]), f"{step:.2f}", f"{3600 / step:.0f}", f"{base / step:.2f}"])
    return "\n".join([
        "## training — steps an hour of whole recipes, side by side", "",
        f"{machine_line()}; each config {args.repeats} stretches of {args.train_steps} steps (after one warm-up "
        "step), in turn; a step is the logged step_s: data, forward solve, backward, optimizer (checkpoints and "
        "evaluations excluded).", "",
        md_table(["config", "steps timed", "median step s", "steps an hour", f"x {configs[0]}"], rows), "",
        "`ges bench training --train-configs " + " ".join(configs) + f" --train-steps {args.train_steps} "
        f"--repeats {args.repeats}`"])
