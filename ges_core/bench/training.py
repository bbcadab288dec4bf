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
    """The step times (s) of `steps` steps of `config` after a warm-up step, in a fresh run directory, as the
    recipe runs past its one-time work: first, into a render cache of the stretch's own, the pool scenes the
    stretch will draw are rendered and every proxy pair is labelled by the matcher (a run does each once, and a
    later run finds them); the seconds a scene or a pair took are added to `fills[kind]`."""
    import json
    from ..data.datasets import render_pools
    from ..data.proxy_stereo import label_cached
    from ..train import TrainConfig, Trainer, build_train_dataset
    cfg = TrainConfig.load(config)
    # the config's own recipe, a short run of its own: no evaluation, no checkpoint on the way; a teacher's
    # warm-up (distill_steps) is the first steps of a stage only: the recipe is timed past it
    cfg = dataclasses.replace(cfg, out_dir=str(out), steps=max(steps + 1, 40), log_every=1, eval_every=0,
                              checkpoint_every=10 ** 9, distill_steps=0, distill_weight=0.0, distill_from="",
                              data={**cfg.data, "render_cache": str(out / "render_cache")})
    dataset = build_train_dataset(cfg)
    for kind, (n, secs) in render_pools(dataset, range((steps + 1) * cfg.batch_size)).items():
        fills.setdefault(kind, []).append(secs / n)
    for part in _parts(dataset):
        if part.kind == "proxy":
            n, secs = label_cached(part.render)
            if n:
                fills.setdefault("proxy labels", []).append(secs / n)
    Trainer(cfg, progress=False).train(until=steps + 1)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step_s"] for r in rows if "step_s" in r][1:]


def _parts(dataset) -> list:
    return list(getattr(dataset, "parts", [dataset]))


def _one_time(dataset) -> Dict[str, int]:
    """What a run of this dataset renders or labels once: pool scenes per kind, and the proxy pairs."""
    from ..data.proxy_stereo import proxy_pairs
    once = {p.kind: p.pool for p in _parts(dataset) if getattr(p, "pool", 0)}
    for p in _parts(dataset):
        if p.kind == "proxy":
            once["proxy labels"] = len(proxy_pairs(p.render.root))
    return once


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
    table, notes = [], []
    for config in configs:
        step = float(np.median(times[config]))
        cfg = TrainConfig.load(config)
        once = _one_time(build_train_dataset(cfg))
        per = {kind: float(np.median(fills[config].get(kind) or [0.0])) for kind in once}
        # the one-time work at the seconds an item took here, spread over the config's own steps
        fill_s = sum(n * per[kind] for kind, n in once.items())
        table.append((config, len(times[config]), step, fill_s, cfg.steps / (cfg.steps * step + fill_s) * 3600))
        if once:
            notes.append(f"- {config}: " + ", ".join(f"{kind} {n} at {per[kind]:.2f} s" for kind, n in once.items())
                         + f" ({cfg.steps} steps)")
    base_step, base_amortized = table[0][2], table[0][4]
    rows = [[config, n, f"{step:.2f}", f"{3600 / step:.0f}", f"{base_step / step:.2f}", f"{fill_s / 60:.1f}",
             f"{amortized:.0f}", f"{amortized / base_amortized:.2f}"]
            for config, n, step, fill_s, amortized in table]
    return "\n".join([
        "## training — steps an hour of whole recipes, side by side", "",
        f"{machine_line()}; each config {args.repeats} stretches of {args.train_steps} steps (after one warm-up "
        "step), in turn; a step is the logged step_s: data, forward solve, backward, optimizer (checkpoints and "
        "evaluations excluded; a teacher's warm-up steps too, the first steps of a stage only). Each recipe is "
        "timed past its one-time work, as a run is once it has rendered its pools' scenes and labelled its proxy "
        "pairs (both kept in the render cache for later runs); that work, timed per item before each stretch, is "
        "then added back, spread over the config's own steps, in the last three columns.", "",
        md_table(["config", "steps timed", "median step s", "steps an hour", f"x {configs[0]}",
                  "one-time work (CPU min)", "steps an hour, one-time work included",
                  f"x {configs[0]}, one-time work included"], rows), "",
        "One-time work per config (items, seconds an item):", "", *notes, "",
        "`ges bench training --train-configs " + " ".join(configs) + f" --train-steps {args.train_steps} "
        f"--repeats {args.repeats}`"])
