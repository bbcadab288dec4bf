"""Learned hyper-Anderson solver (Bai, Koltun, Kolter, "Neural Deep Equilibrium Solvers", ICLR 2022).

Not trained yet for the shipped weights: `attach_hyper_solver` reports whether a weights file holds
one, and callers fall back to Anderson when it does not.
"""
from __future__ import annotations

from typing import Dict

import torch

PREFIX = "hyper."


def attach_hyper_solver(model, tensors: Dict[str, torch.Tensor]) -> bool:
    """Load a trained hyper-solver from `tensors` onto `model`; False when there is none."""
    # no hyper-solver implementation is loaded by this version: the caller falls back to Anderson
    return False
