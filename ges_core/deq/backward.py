"""Backward modes: how a gradient reaches the parameters from a fixed point solved without autograd.

    phantom  k damped steps z <- (1 - tau) z + tau f(z) from the detached fixed point (default;
             memory independent of the forward iterations)
    ift      implicit differentiation: the backward fixed point g = J^T g + dL/dz* solved in a hook
    bptt     plain backpropagation through every forward iteration (the reference)
"""
from __future__ import annotations

from typing import Callable, Dict

import torch

from .solvers import fixed_point

Func = Callable[[torch.Tensor], torch.Tensor]


def phantom(func: Func, z_star: torch.Tensor, *, steps: int = 1, tau: float = 1.0, **_unused) -> torch.Tensor:
    z = z_star.detach()
    for _ in range(max(1, steps)):
        z = (1 - tau) * z + tau * func(z)
    return z


def ift(func: Func, z_star: torch.Tensor, *, iters: int = 30, tol: float = 1e-6, **_unused) -> torch.Tensor:
    z = func(z_star.detach().requires_grad_())
    if not z.requires_grad:
        return z
    z0 = z.detach().requires_grad_()
    f0 = func(z0)

    def solve_adjoint(grad: torch.Tensor) -> torch.Tensor:
        # g = J^T g + grad, with J = df/dz at the fixed point
        def step(g: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                return torch.autograd.grad(f0, z0, g, retain_graph=True)[0] + grad
        g, _ = fixed_point(step, grad, max_iter=iters, tol=tol)
        return g

    z.register_hook(solve_adjoint)
    return z


BACKWARDS: Dict[str, Callable[..., torch.Tensor]] = {"phantom": phantom, "ift": ift}
BACKWARD_NAMES = sorted([*BACKWARDS, "bptt"])


def check_backward(name: str) -> None:
    if name not in BACKWARD_NAMES:
        raise ValueError(f"unknown backward mode {name!r}; valid: {BACKWARD_NAMES}")
