"""Fixed-point solvers for z* = f(z*), all with one signature:

    solver(func, z0, *, max_iter, tol, stop=None, layout=None, **options) -> (z, SolverInfo)

`func` maps a flat (B, N) state to a flat (B, N) state. One iteration is one evaluation of `func`;
the returned z is always a value of `func` (the iterate with the lowest residual), so even one
iteration has gone through the update operator. Runs under no_grad: gradients are attached by
the backward modes in `ges_core.deq.backward`. `layout` (a StateLayout) tells a solver what the flat state is
made of; the plain ones here ignore it, a learned one (ges_core.deq.hyper) reads its parts. A learned solver is an
object with a `solve` method of this signature, registered on the model (`GES.learned_solvers`) when its trained
weights are loaded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

Func = Callable[[torch.Tensor], torch.Tensor]
StopFn = Callable[[int], bool]


@dataclass(frozen=True)
class StateLayout:
    """The flat state's parts, for a solver that reads them: unpack(z) -> (hidden states at 1/4, 1/8, 1/16,
    disparity), pack(hidden, disparity) -> z; cold: z0 is the volumetric initial state (not a warm start)."""
    unpack: Callable[[torch.Tensor], Tuple[List[torch.Tensor], torch.Tensor]]
    pack: Callable[..., torch.Tensor]
    cold: bool = True


@dataclass
class SolverInfo:
    residuals: List[float] = field(default_factory=list)   # relative residual |f(z)-z| / |f(z)| per iteration
    iters: int = 0
    diverged: bool = False                                  # a non-finite value appeared


def relative_residual(fz: torch.Tensor, z: torch.Tensor) -> float:
    """Worst element of the batch: |f(z) - z| / |f(z)| over each flat state."""
    num = (fz - z).flatten(1).norm(dim=1)
    den = fz.flatten(1).norm(dim=1).clamp_min(1e-8)
    return float((num / den).max())


class _Best:
    """Keeps the lowest-residual finite f-value seen."""

    def __init__(self) -> None:
        self.z: Optional[torch.Tensor] = None
        self.res = float("inf")

    def offer(self, fz: torch.Tensor, res: float) -> None:
        if res <= self.res or self.z is None:
            self.z, self.res = fz, res


def _finite(x: torch.Tensor) -> bool:
    """No NaN or Inf in x: one float32 sum (NaN or Inf in, NaN or Inf out), a single vectorised pass where
    isfinite(x).all() took four (a third of Anderson's own time at 640x480). A sum beyond float32's range (values
    near 1e33 over a whole state) also counts as non-finite: that is divergence too."""
    return bool(torch.isfinite(x.sum(dtype=torch.float32)))


@torch.no_grad()
def fixed_point(func: Func, z0: torch.Tensor, *, max_iter: int, tol: float = 0.0,
                stop: Optional[StopFn] = None, layout: Optional[StateLayout] = None) -> Tuple[torch.Tensor, SolverInfo]:
    """Plain iteration z <- f(z)."""
    info, best, z = SolverInfo(), _Best(), z0
    for k in range(max(1, max_iter)):
        if k > 0 and stop is not None and stop(k):
            break
        fz = func(z)
        info.iters += 1
        if not _finite(fz):
            info.diverged = True
            break
        res = relative_residual(fz, z)
        info.residuals.append(res)
        best.offer(fz, res)
        z = fz
        if res < tol:
            break
    return (best.z if best.z is not None else z0), info


@torch.no_grad()
def anderson(func: Func, z0: torch.Tensor, *, max_iter: int, tol: float = 0.0, stop: Optional[StopFn] = None,
             layout: Optional[StateLayout] = None, m: int = 5, beta: float = 1.0,
             lam: float = 1e-4) -> Tuple[torch.Tensor, SolverInfo]:
    """Anderson acceleration (Walker & Ni 2011) over the last m iterates, per batch element.

    The mixing weights solve a small bordered least-squares system, always in float32 (it is
    ill-conditioned in half precision).
    """
    dtype = z0.dtype
    info, best, x = SolverInfo(), _Best(), z0.flatten(1).float()
    batch, size = x.shape
    # the last m f-values, residuals g = f - x and (beta != 1) iterates, in ring buffers, and the residuals' Gram
    # matrix grown by one row a step: one pass over the history per iteration instead of stacking it anew (the
    # mixing is invariant to the history's order; the same iterates up to float rounding)
    f_hist = x.new_empty(batch, m, size)
    g_hist = x.new_empty(batch, m, size)
    x_hist = x.new_empty(batch, m, size) if beta != 1.0 else None
    gram = x.new_zeros(batch, m, m)
    n = slot = 0
    for k in range(max(1, max_iter)):
        if k > 0 and stop is not None and stop(k):
            break
        fx = func(x.to(dtype).view_as(z0))
        info.iters += 1
        if not _finite(fx):
            info.diverged = True
            break
        f = fx.flatten(1).float()
        g = torch.sub(f, x, out=g_hist[:, slot])
        res = float((g.norm(dim=1) / f.norm(dim=1).clamp_min(1e-8)).max())      # relative_residual, from g
        info.residuals.append(res)
        best.offer(fx, res)
        if res < tol:
            break
        f_hist[:, slot].copy_(f)
        if x_hist is not None:
            x_hist[:, slot].copy_(x)
        n = min(n + 1, m)
        row = torch.bmm(g_hist[:, :n], g.unsqueeze(2))[..., 0]                  # (B, n): g_i . g
        gram[:, slot, :n] = row
        gram[:, :n, slot] = row
        slot = (slot + 1) % m
        if n == 1:
            x = f.clone()
            continue
        alpha = anderson_weights(gram[:, :n, :n], lam=lam).unsqueeze(1)          # (B, 1, n)
        x = torch.bmm(alpha, f_hist[:, :n])[:, 0]
        if x_hist is not None:
            x = beta * x + (1 - beta) * torch.bmm(alpha, x_hist[:, :n])[:, 0]
        if not _finite(x):   # singular history: restart from the newest f-value
            n = slot = 0
            gram.zero_()
            x = f.clone()
    return (best.z if best.z is not None else z0), info


def anderson_alpha(G: torch.Tensor, *, lam: float = 1e-4, unrolled: bool = False) -> torch.Tensor:
    """Residual history G (B, n, N) -> the weights (B, n) minimising |sum_i alpha_i g_i| subject to
    sum_i alpha_i = 1 (float32): alpha = y / sum(y) with (G G^T + reg I) y = 1, the closed form of the bordered
    normal equations. unrolled: the small SPD system by an unrolled Cholesky in plain tensor ops, which ONNX and
    TensorRT export (they have no linear solve); the same numbers as torch.linalg.solve up to rounding."""
    G = G.float()
    return anderson_weights(G @ G.transpose(1, 2), lam=lam, unrolled=unrolled)


def anderson_weights(gram: torch.Tensor, *, lam: float = 1e-4, unrolled: bool = False) -> torch.Tensor:
    """anderson_alpha from the residuals' Gram matrix G G^T (B, n, n)."""
    batch, n, _ = gram.shape
    # Tikhonov term relative to the residuals' size, so it stays negligible as they shrink
    reg = lam * gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-30)
    H = gram + reg.view(-1, 1, 1) * torch.eye(n, device=gram.device)
    ones = torch.ones(batch, n, 1, device=gram.device)
    y = _spd_solve_unrolled(H, ones) if unrolled else torch.linalg.solve(H, ones)
    return (y / y.sum(dim=1, keepdim=True))[..., 0]


def _spd_solve_unrolled(H: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """H (B, n, n) symmetric positive definite, b (B, n, 1) -> H^-1 b, as n^2 elementwise steps (n <= anderson_m)."""
    n = H.shape[-1]
    L = [[None] * n for _ in range(n)]
    for j in range(n):
        d = H[:, j, j] - sum((L[j][k] * L[j][k] for k in range(j)), torch.zeros_like(H[:, j, j]))
        L[j][j] = d.clamp_min(1e-30).sqrt()
        for i in range(j + 1, n):
            off = H[:, i, j] - sum((L[i][k] * L[j][k] for k in range(j)), torch.zeros_like(H[:, i, j]))
            L[i][j] = off / L[j][j]
    y = []
    for i in range(n):                                   # L y = b
        y.append((b[:, i, 0] - sum((L[i][k] * y[k] for k in range(i)), torch.zeros_like(b[:, i, 0]))) / L[i][i])
    x = [None] * n
    for i in reversed(range(n)):                         # L^T x = y
        x[i] = (y[i] - sum((L[k][i] * x[k] for k in range(i + 1, n)), torch.zeros_like(y[i]))) / L[i][i]
    return torch.stack(x, dim=1)[..., None]


def anderson_unrolled(func: Func, z0: torch.Tensor, *, iters: int, m: int = 5, beta: float = 1.0,
                      lam: float = 1e-4) -> torch.Tensor:
    """`anderson` for a fixed number of iterations as a static graph (ONNX, TensorRT, TorchScript): the same
    iterates, the same least squares (unrolled), and the same answer, the f-value with the lowest relative
    residual, chosen per batch element with tensor ops. No early stop at a tolerance and no restart on a
    non-finite history (a deployed graph runs its iterations)."""
    x = z0.flatten(1).float()
    x_hist: List[torch.Tensor] = []
    f_hist: List[torch.Tensor] = []
    best = best_res = None
    for _ in range(max(1, iters)):
        fx = func(x.to(z0.dtype).view_as(z0)).flatten(1).float()
        res = (fx - x).norm(dim=1) / fx.norm(dim=1).clamp_min(1e-8)          # (B,)
        if best is None:
            best, best_res = fx, res
        else:
            better = (res <= best_res)[:, None]
            best, best_res = torch.where(better, fx, best), torch.minimum(res, best_res)
        x_hist, f_hist = (x_hist + [x])[-m:], (f_hist + [fx])[-m:]
        if len(x_hist) == 1:
            x = fx
            continue
        X, F = torch.stack(x_hist, dim=1), torch.stack(f_hist, dim=1)          # (B, n, N)
        alpha = anderson_alpha(F - X, lam=lam, unrolled=True)
        x = beta * (alpha.unsqueeze(1) @ F)[:, 0] + (1 - beta) * (alpha.unsqueeze(1) @ X)[:, 0]
    return best.to(z0.dtype).view_as(z0)


SOLVERS: Dict[str, Callable[..., Tuple[torch.Tensor, SolverInfo]]] = {
    "fixed_point": fixed_point,
    "anderson": anderson,
}


# learned solvers: they need trained weights of their own (loaded with the GES weights when present)
LEARNED_SOLVERS = ("hyper_anderson",)
# what a learned solver falls back to when the weights carry none
FALLBACK_SOLVER = "anderson"


def solver_names() -> Tuple[str, ...]:
    """Every solver name a user may ask for (the node's parameter choices, the CLI's help, the predictor's check)."""
    return (*LEARNED_SOLVERS, *sorted(SOLVERS))


def choose_solver(requested: str, available: Sequence[str]) -> Tuple[str, Optional[str]]:
    """The one fallback policy: -> (the solver to run, a warning or None). An unknown name is an error; a learned
    solver the loaded weights do not carry falls back to FALLBACK_SOLVER with a warning that says so."""
    if requested not in solver_names():
        raise ValueError(f"unknown solver {requested!r}; valid: {list(solver_names())}")
    if requested in available:
        return requested, None
    return FALLBACK_SOLVER, (f"solver {requested}: the weights carry no trained {requested} solver; "
                             f"using {FALLBACK_SOLVER}")


def get_solver(name: str, learned: Optional[Mapping[str, Any]] = None):
    """The solve function for `name`: a plain solver, or the `solve` of a learned one registered in `learned`."""
    if learned is not None and name in learned:
        return learned[name].solve
    if name in SOLVERS:
        return SOLVERS[name]
    if name in LEARNED_SOLVERS:
        raise ValueError(f"solver {name!r} needs trained solver weights; none are loaded")
    raise ValueError(f"unknown solver {name!r}; valid: {list(solver_names())}")
