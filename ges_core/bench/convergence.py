"""`ges bench convergence`: relative residual and EPE vs iteration for each solver, cold and warm started.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from tqdm import tqdm

from .common import machine_line, md_table, plot


# ------------------------------------------------------------------------------ convergence
def solve_trace(model, enc, *, solver: str, iters: int, init=None) -> List[Tuple[torch.Tensor, float]]:
    """What `iters` separate solves of 1..iters iterations would return, from one solve: (z_k, residual_k).
    Every solver returns the lowest-residual f-value so far and its path does not depend on max_iter."""
    values: List[torch.Tensor] = []
    _, info = model.solve(enc, iters=iters, solver=solver, init=init, tol=0.0, observe=values.append)
    out, best = [], 0
    for k, res in enumerate(info.residuals):
        if res <= info.residuals[best]:
            best = k
        out.append((values[best], res))
    return out


def convergence_pairs(args) -> List[Tuple[str, Dict[str, Any]]]:
    """(set, sample) for the convergence study: the motorcycle pair, the scene folders when present, and
    held-out procedural pairs (a seed no training run draws from)."""
    from ..data.datasets import MotorcycleDataset, ProceduralDataset, build_dataset
    from ..data.procedural import ProceduralConfig
    pairs = [("real scenes", MotorcycleDataset()[0])]
    if args.data and Path(args.data).is_dir():
        ds = build_dataset("folder", args.data)
        pairs += [("real scenes", ds[i]) for i in range(len(ds))]
    proc = ProceduralDataset(render=ProceduralConfig(height=256, width=512, max_disp=128.0), seed=30_000_000)
    pairs += [("held-out procedural", proc[i]) for i in range(args.procedural_pairs)]
    return pairs


def bench_convergence(args) -> str:
    from .. import load_predictor
    from ..deq.solvers import SOLVERS
    from ..metrics import disparity_metrics
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # weights without a hyper-solver: compared without it
        pred = load_predictor(args.weights, device=args.device, solver="hyper_anderson")
    model = pred.model
    solvers = sorted(SOLVERS) + list(model.learned_solvers)
    ks = sorted(args.iters_list)
    # (set, solver, start) -> per pair: residual and EPE at each k, and the converged EPE
    res: Dict[Tuple[str, str, str], List[List[float]]] = {}
    epe: Dict[Tuple[str, str, str], List[List[float]]] = {}
    dist: Dict[Tuple[str, str, str], List[List[float]]] = {}
    converged: Dict[str, List[float]] = {}
    pairs = convergence_pairs(args)
    for name, s in tqdm(pairs, desc="convergence", unit="pair", disable=not sys.stderr.isatty()):
        def score(z):
            d, _ = model.decode(z, enc)
            return disparity_metrics(d[0, 0].cpu().numpy(), s["disparity"], s["valid"])["epe"]
        left = torch.from_numpy(np.ascontiguousarray(s["left"])).permute(2, 0, 1)[None].float().to(pred.device)
        right = torch.from_numpy(np.ascontiguousarray(s["right"])).permute(2, 0, 1)[None].float().to(pred.device)
        with torch.no_grad():
            enc = model.encode(left, right)
            z_ref, _ = model.solve(enc, iters=40, solver="anderson", tol=0.0)
            converged.setdefault(name, []).append(score(z_ref))
            # warm start: a neighbouring frame's fixed point, stood in for by this pair's plus 5 % noise
            noise = torch.randn(z_ref.shape, generator=torch.Generator().manual_seed(0)).to(z_ref)
            for solver in solvers:
                for start, init in (("cold", None), ("warm", z_ref + 0.05 * z_ref.std() * noise)):
                    trace = solve_trace(model, enc, solver=solver, iters=max(ks), init=init)
                    res.setdefault((name, solver, start), []).append([trace[k - 1][1] for k in ks])
                    epe.setdefault((name, solver, start), []).append([score(trace[k - 1][0]) for k in ks])
                    dist.setdefault((name, solver, start), []).append(
                        [float((trace[k - 1][0] - z_ref).norm() / z_ref.norm()) for k in ks])
    sets = list(dict.fromkeys(n for n, _ in pairs))
    mean_res = {key: np.mean(v, axis=0) for key, v in res.items()}
    mean_epe = {key: np.mean(v, axis=0) for key, v in epe.items()}
    mean_dist = {key: np.mean(v, axis=0) for key, v in dist.items()}

    def anderson_needs(name: str, table, value: float) -> str:
        k = next((k for k, r in zip(ks, table[(name, "anderson", "cold")]) if r <= value), None)
        return str(k) if k is not None else f"> {max(ks)}"
    notes, rows = [], []
    for name in sets:
        ref = float(np.mean(converged[name]))
        count = sum(1 for n, _ in pairs if n == name)
        notes.append(f"- {name} ({count} pairs): converged reference (Anderson, 40 iterations) mean EPE {ref:.3f} px")
        if "hyper_anderson" in solvers and 4 in ks:
            r4 = mean_res[(name, "hyper_anderson", "cold")][ks.index(4)]
            e4 = mean_epe[(name, "hyper_anderson", "cold")][ks.index(4)]
            d4 = mean_dist[(name, "hyper_anderson", "cold")][ks.index(4)]
            notes.append(f"  - hyper_anderson, 4 iterations (cold): residual {r4:.2e}, which Anderson reaches at "
                         f"{anderson_needs(name, mean_res, r4)} iterations (target: 8 or more); distance to the fixed "
                         f"point {d4:.3f}, which Anderson reaches at {anderson_needs(name, mean_dist, d4)}; "
                         f"EPE {e4:.3f} px, {100 * (e4 / ref - 1):+.1f} % from converged (target within 2 %)")
        for solver in solvers:
            for start in ("cold", "warm"):
                r, d, e = mean_res[(name, solver, start)], mean_dist[(name, solver, start)], mean_epe[(name, solver, start)]
                rows.append([name, solver, start, *(f"{ri:.1e} / {di:.2f} / {ei:.3f}" for ri, di, ei in zip(r, d, e))])
    plots = []
    for name in sets:
        tag = name.split()[0].replace("-", "")
        series_r = {f"{sv} ({st})": (ks, list(mean_res[(name, sv, st)])) for sv in solvers for st in ("cold", "warm")}
        series_e = {f"{sv} ({st})": (ks, list(mean_epe[(name, sv, st)])) for sv in solvers for st in ("cold", "warm")}
        plots.append(plot(args.docs / f"convergence_residual_{tag}.png", series_r, "iterations", "relative residual",
                           f"{name}: mean residual vs iterations", logy=True))
        plots.append(plot(args.docs / f"convergence_epe_{tag}.png", series_e, "iterations", "EPE (px)",
                           f"{name}: mean EPE vs iterations"))
    body = ["## convergence — residual and EPE vs iterations", "",
            f"{machine_line()}; weights {args.weights}. Real scenes: the scikit-image motorcycle pair and the scene "
            "folders of the evaluation data; held-out procedural: 256x512 pairs of a seed no training run uses. "
            "Cold = from the volumetric initial state (hyper_anderson: through its learned initializer); warm = from "
            "the 40-iteration Anderson fixed point plus 5 % noise (a stand-in for the previous video frame). Each "
            "cell: mean relative residual |f(z)-z|/|f(z)| / mean relative distance to that fixed point |z-z*|/|z*| / "
            "mean EPE (px) after that many iterations.", "", *notes, "",
            md_table(["set", "solver", "start", *(f"{k} it" for k in ks)], rows), ""]
    body += [f"![plot]({p})" for p in plots if p]
    body += ["", f"`ges bench convergence --weights {args.weights} --data {args.data}`"]
    return "\n".join(body)
