"""Training loss: smooth-L1 (or L1) on the volumetric and fixed-point disparities, masked by validity and
the maximum disparity."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from .model.ges import GESOutput


def masked_smooth_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, beta: float = 1.0
                     ) -> torch.Tensor:
    """Smooth-L1 over the mask: quadratic below beta px, linear above; beta 0 is plain L1 (full gradient for
    sub-pixel errors too)."""
    if not bool(mask.any()):
        return pred.sum() * 0.0
    return F.smooth_l1_loss(pred[mask], target[mask], beta=beta)


def clamped(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, max_error: Optional[torch.Tensor]
            ) -> torch.Tensor:
    """The mask less the pixels whose error passes max_error ((B, 1, 1, 1) px, inf for exact labels): the loss is
    clamped there, so a teacher's gross label errors give no gradient."""
    if max_error is None:
        return mask
    return mask & ((pred.detach() - target).abs() <= max_error)


def stereo_loss(out: GESOutput, target: torch.Tensor, valid: torch.Tensor, *, max_disp: float,
                init_weight: float = 1.0, final_weight: float = 1.0, correction_gamma: float = 0.8,
                max_error: Optional[torch.Tensor] = None, beta: float = 1.0
                ) -> Tuple[torch.Tensor, Dict[str, float]]:
    """target, valid: (B, 1, H, W). Returns the loss and scalars for logging (EPE, bad-2 of the final).
    The fixed-point corrections (states sampled along the solve, earliest first) weigh final_weight * gamma^k,
    k counted back from the last, as RAFT weighs its iterates. max_error: (B, 1, 1, 1) per-sample loss clamp in px
    (pseudo-labels), None or inf for none. beta: the smooth-L1 knee in px (0 = L1)."""
    mask = valid & (target < max_disp) & torch.isfinite(target)

    def term(pred: torch.Tensor) -> torch.Tensor:
        return masked_smooth_l1(pred, target, clamped(pred, target, mask, max_error), beta)

    loss = init_weight * term(out.init_disparity) + final_weight * term(out.disparity)
    n = len(out.corrections)
    for k, disparity in enumerate(out.corrections):
        loss = loss + final_weight * correction_gamma ** (n - k) * term(disparity)
    with torch.no_grad():
        err = (out.disparity - target).abs()[mask]
        init_err = (out.init_disparity - target).abs()[mask]
        stats = {"epe": float(err.mean()) if err.numel() else float("nan"),
                 "bad2": float((err > 2).float().mean() * 100) if err.numel() else float("nan"),
                 "init_epe": float(init_err.mean()) if init_err.numel() else float("nan")}
    return loss, stats
