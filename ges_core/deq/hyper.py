"""Learned hyper-Anderson solver, after Bai, Koltun & Kolter, "Neural Deep Equilibrium Solvers" (ICLR 2022).

Two tiny networks around Anderson's update x_{k+1} = beta * sum_i alpha_i f(x_i) + (1 - beta) * sum_i alpha_i x_i:
- an initializer that corrects the initial state (1/4-level hidden state and disparity, and with init_levels=3 the
  1/8 and 1/16 hidden states too) from the volumetric branch's output, so the solve starts nearer the fixed point;
- a mixer that predicts alpha (softmax over the last m iterates, so it sums to 1 as Anderson's does) and the
  damping beta from the pooled recent residuals g_i = f(x_i) - x_i, instead of solving least squares.
Trained with the GES weights frozen (`ges train-solver`): distance of every unrolled iterate to the
true fixed point (a long Anderson solve), the initializer's distance, and a regulariser that keeps alpha
near the least-squares alpha while it learns.
"""
from __future__ import annotations

import json
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .solvers import SolverInfo, StateLayout, anderson_alpha, relative_residual

PREFIX = "hyper."
NAME = "hyper_anderson"          # its name among the solvers (solvers.LEARNED_SOLVERS)


class HyperAnderson(nn.Module):
    def __init__(self, *, hidden: int, m: int = 5, features: int = 16, beta_max: float = 1.0,
                 init_levels: int = 1, init_width: int = 32, coarse_hidden: Sequence[int] = ()) -> None:
        super().__init__()
        self.hidden, self.m, self.features, self.beta_max = hidden, m, features, float(beta_max)
        self.init_levels, self.init_width, self.coarse_hidden = init_levels, init_width, tuple(coarse_hidden)
        if init_levels > 1 and len(self.coarse_hidden) < init_levels - 1:
            raise ValueError(f"init_levels={init_levels} needs the channels of {init_levels - 1} coarser hidden "
                             f"states, got {list(self.coarse_hidden)}")
        # residual maps at 1/4 (hidden channels + disparity) -> a pooled descriptor per iterate
        self.encode = nn.Sequential(nn.Conv2d(hidden + 1, features, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                                    nn.Conv2d(features, features, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.score = nn.Sequential(nn.Linear(2 * features + 1, 32), nn.ReLU(inplace=True), nn.Linear(32, 1))
        self.beta = nn.Sequential(nn.Linear(features + 1, 32), nn.ReLU(inplace=True), nn.Linear(32, 1))
        # beta in (0, beta_max): above 1 it over-relaxes (extrapolates along the residual); start near beta = 0.9
        nn.init.constant_(self.beta[-1].bias, float(torch.logit(torch.tensor(0.9 / self.beta_max))))
        self.init_net = self._init_block(hidden + 1, init_width, hidden + 1)
        # optional: the coarser levels' hidden states too (1/8, 1/16), from their own state and the disparity
        self.init_coarse = nn.ModuleList(self._init_block(c + 1, init_width, c) for c in self.coarse_hidden[:init_levels - 1])

    @staticmethod
    def _init_block(cin: int, width: int, cout: int) -> nn.Sequential:
        block = nn.Sequential(nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(width, cout, 3, padding=1))
        nn.init.zeros_(block[-1].weight)                      # starts as the identity
        nn.init.zeros_(block[-1].bias)
        return block

    def config(self) -> Dict[str, int]:
        return {"hidden": self.hidden, "m": self.m, "features": self.features, "beta_max": self.beta_max,
                "init_levels": self.init_levels, "init_width": self.init_width, "coarse_hidden": list(self.coarse_hidden)}

    # ---------------------------------------------------------------- pieces
    def initialize(self, z0: torch.Tensor, unpack, pack) -> torch.Tensor:
        hidden, disp = unpack(z0)
        x = torch.cat([hidden[0], disp / 16.0], dim=1)
        delta = self.init_net(x)
        new = [hidden[0] + delta[:, :-1]]
        for net, h in zip(self.init_coarse, hidden[1:]):
            d = F.adaptive_avg_pool2d(disp, h.shape[-2:]) / 16.0
            new.append(h + net(torch.cat([h, d], dim=1)))
        new += hidden[len(new):]
        return pack(new, disp + delta[:, -1:] * 4.0)

    def _describe(self, g: torch.Tensor, unpack) -> torch.Tensor:
        hidden, disp = unpack(g)
        x = torch.cat([hidden[0], disp / 4.0], dim=1)
        return self.encode(x).mean(dim=(2, 3))                 # (B, features)

    def mix(self, G: List[torch.Tensor], unpack) -> Tuple[torch.Tensor, torch.Tensor]:
        """Residual history [(B, N)] -> alpha (B, n) summing to 1, beta (B, 1) in (0, 1)."""
        desc = torch.stack([self._describe(g, unpack) for g in G], dim=1)          # (B, n, f)
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in G], dim=1)          # (B, n)
        lognorm = torch.log(norms + 1e-8)
        lognorm = (lognorm - lognorm[:, -1:]).unsqueeze(-1)                          # relative to the newest
        last = desc[:, -1:].expand_as(desc)
        scores = self.score(torch.cat([desc, last, lognorm], dim=-1)).squeeze(-1)
        alpha = scores.softmax(dim=1)
        beta = self.beta_max * torch.sigmoid(self.beta(torch.cat([desc[:, -1], lognorm[:, -1]], dim=-1)))
        return alpha, beta

    # ---------------------------------------------------------------- solve
    def iterate(self, func: Callable, z0: torch.Tensor, *, unpack, pack, max_iter: int, tol: float = 0.0,
                stop=None, use_init: bool = True, track: bool = False):
        """The solve loop; with track=True also returns every f-value and alpha (for training)."""
        x = self.initialize(z0, unpack, pack) if use_init else z0
        xs: List[torch.Tensor] = []
        fs: List[torch.Tensor] = []
        all_fs: List[torch.Tensor] = []
        alphas: List[Tuple[torch.Tensor, torch.Tensor]] = []     # (predicted, least-squares) per mixing step
        info = SolverInfo()
        best, best_res = None, float("inf")
        x_init = x
        for k in range(max(1, max_iter)):
            if k > 0 and stop is not None and stop(k):
                break
            fx = func(x)
            info.iters += 1
            if not bool(torch.isfinite(fx).all()):
                info.diverged = True
                break
            res = relative_residual(fx.detach(), x.detach())
            info.residuals.append(res)
            if res <= best_res or best is None:
                best, best_res = fx, res
            xs.append(x)
            fs.append(fx)
            all_fs.append(fx)
            if res < tol:
                break
            xs, fs = xs[-self.m:], fs[-self.m:]
            G = [f - x_ for f, x_ in zip(fs, xs)]
            alpha, beta = self.mix(G, unpack)
            if track:
                with torch.no_grad():
                    alphas.append((alpha, anderson_alpha(torch.stack(G, dim=1).flatten(2).float())))
            Fm, Xm = torch.stack(fs, dim=1), torch.stack(xs, dim=1)
            x = beta * (alpha.unsqueeze(-1) * Fm).sum(1) + (1 - beta) * (alpha.unsqueeze(-1) * Xm).sum(1)
        z = best if best is not None else z0
        if track:
            return z, info, x_init, all_fs, alphas
        return z, info

    def solve(self, func: Callable, z0: torch.Tensor, *, max_iter: int, tol: float = 0.0, stop=None,
              layout: StateLayout) -> Tuple[torch.Tensor, SolverInfo]:
        """The solvers' signature (ges_core.deq.solvers); the learned initializer runs on a cold start only."""
        with torch.no_grad():
            return self.iterate(func, z0, unpack=layout.unpack, pack=layout.pack, max_iter=max_iter, tol=tol,
                                stop=stop, use_init=layout.cold)


def hyper_tensors(solver: HyperAnderson) -> Dict[str, torch.Tensor]:
    return {PREFIX + k: v.detach().cpu() for k, v in solver.state_dict().items()}


def attach_hyper_solver(model, tensors: Dict[str, torch.Tensor], meta: Optional[Dict[str, str]] = None) -> bool:
    """Load a trained hyper-solver from a weights file's tensors onto `model`; False when there is none."""
    state = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
    if not state:
        return False
    cfg = json.loads((meta or {}).get("hyper_config", "{}")) or {"hidden": model.config.hidden_dims[0]}
    solver = HyperAnderson(**cfg)
    solver.load_state_dict(state)
    model.learned_solvers[NAME] = solver.to(next(model.parameters()).device).eval()
    return True


def train_hyper_solver(model, solver: HyperAnderson, batches, *, steps: int, unroll: int = 4, fp_iters: int = 40,
                       lr: float = 1e-3, init_weight: float = 0.5, alpha_weight: float = 0.1, progress: bool = True,
                       log=None) -> List[Dict[str, float]]:
    """Fit the hyper-solver with the GES model frozen. `batches` yields (left, right) float tensors."""
    from tqdm import tqdm
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    solver.train()
    opt = torch.optim.Adam(solver.parameters(), lr=lr)
    history = []
    bar = tqdm(range(steps), disable=not progress, desc="train-solver", unit="step")
    for step in bar:
        left, right = next(batches)
        with torch.no_grad():
            enc = model.encode(left, right)
            z_star, _ = model.solve(enc, iters=fp_iters, solver="anderson", tol=0.0)
        unpack = lambda z: model.unpack(z, enc)  # noqa: E731
        z, info, x0, fs, alphas = solver.iterate(lambda z_: model.step(z_, enc), model.initial_state(enc),
                                                 unpack=unpack, pack=model.pack, max_iter=unroll, track=True)
        scale = z_star.flatten(1).norm(dim=1).clamp_min(1e-6)

        def dist(x):
            return ((x - z_star).flatten(1).norm(dim=1) / scale).mean()
        fp_loss = torch.stack([dist(f) for f in fs]).mean()
        init_loss = dist(x0)
        alpha_loss = torch.stack([((a - a_ls) ** 2).sum(1).mean() for a, a_ls in alphas]).mean() if alphas else fp_loss * 0
        loss = fp_loss + init_weight * init_loss + alpha_weight * alpha_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(solver.parameters(), 1.0)
        opt.step()
        row = {"step": step + 1, "loss": float(loss.detach()), "final_distance": float(dist(fs[-1]).detach()),
               "residual": info.residuals[-1]}
        history.append(row)
        bar.set_postfix(dist=f"{row['final_distance']:.3f}", res=f"{row['residual']:.2e}")
        if log is not None:
            log(row)
    solver.eval()
    return history


def train_solver_from_config(weights: str, cfg: Dict, *, progress: bool = True) -> str:
    """`ges train-solver`: procedural pairs (never evaluation data), GES frozen; writes the GES weights plus
    the solver (tensors `hyper.*`, metadata `hyper_config`) to cfg['output']."""
    import json as _json
    from pathlib import Path
    import numpy as np
    from ..data.datasets import ProceduralDataset
    from ..data.procedural import ProceduralConfig
    from ..model.ges import build_model
    from ..weights import load_weights, model_state, save_weights
    known = {"steps", "unroll", "fp_iters", "lr", "height", "width", "max_disp", "m", "features", "seed", "output",
             "init_weight", "alpha_weight", "beta_max", "init_levels", "init_width"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"unknown solver training options {unknown}; valid: {sorted(known)}")
    config, tensors, meta = load_weights(weights)
    model = build_model(config)
    model.load_state_dict(model_state(tensors))
    torch.manual_seed(int(cfg.get("seed", 0)))
    solver = HyperAnderson(hidden=config.hidden_dims[0], m=int(cfg.get("m", 5)), features=int(cfg.get("features", 16)),
                           beta_max=float(cfg.get("beta_max", 1.0)), init_levels=int(cfg.get("init_levels", 1)),
                           init_width=int(cfg.get("init_width", 32)), coarse_hidden=config.hidden_dims[1:])
    data = ProceduralDataset(render=ProceduralConfig(height=int(cfg.get("height", 128)), width=int(cfg.get("width", 256)),
                                                     max_disp=float(cfg.get("max_disp", 64))),
                             seed=20_000_000 + int(cfg.get("seed", 0)))

    def batches():
        i = 0
        while True:
            s = data[i]
            i += 1
            yield tuple(torch.from_numpy(np.ascontiguousarray(s[k])).permute(2, 0, 1)[None].float()
                        for k in ("left", "right"))
    out = Path(cfg.get("output", "runs/solver/weights_with_solver.safetensors"))
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = out.with_suffix(".jsonl")
    with open(log_path, "w") as fh:
        train_hyper_solver(model, solver, batches(), steps=int(cfg.get("steps", 200)), unroll=int(cfg.get("unroll", 4)),
                           fp_iters=int(cfg.get("fp_iters", 40)), lr=float(cfg.get("lr", 1e-3)),
                           init_weight=float(cfg.get("init_weight", 0.5)), alpha_weight=float(cfg.get("alpha_weight", 0.1)),
                           progress=progress, log=lambda row: fh.write(_json.dumps(row) + "\n"))
    keep = {k: v for k, v in meta.items() if k not in ("format", "config")}
    keep["hyper_config"] = _json.dumps(solver.config())
    save_weights(out, model, config, half=True, extra=hyper_tensors(solver), metadata=keep)
    return str(out)
