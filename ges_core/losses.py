"""Training loss: smooth-L1 (or L1) on the volumetric and fixed-point disparities, masked by validity and
the maximum disparity; and, where a sample's labels are missing, a photometric loss of the right view warped by
the disparity with an edge-aware smoothness term (issue #26, lever 4)."""
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


def grossly_failed(disparity: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, max_bad2: float
                   ) -> torch.Tensor:
    """(B, 1, 1, 1) bool: the samples whose bad-2 over their labelled pixels passes max_bad2 (%)."""
    with torch.no_grad():
        bad = ((disparity - target).abs() > 2) & mask
        share = bad.flatten(1).sum(1) * 100.0 / mask.flatten(1).sum(1).clamp(min=1)
    return (share > max_bad2).view(-1, 1, 1, 1)


def stereo_loss(out: GESOutput, target: torch.Tensor, valid: torch.Tensor, *, max_disp: float,
                init_weight: float = 1.0, final_weight: float = 1.0, correction_gamma: float = 0.8,
                max_error: Optional[torch.Tensor] = None, beta: float = 1.0, drop: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, Dict[str, float]]:
    """target, valid: (B, 1, H, W). Returns the loss and scalars for logging (EPE, bad-2 of the final).
    The fixed-point corrections (states sampled along the solve, earliest first) weigh final_weight * gamma^k,
    k counted back from the last, as RAFT weighs its iterates. max_error: (B, 1, 1, 1) per-sample loss clamp in px
    (pseudo-labels), None or inf for none. beta: the smooth-L1 knee in px (0 = L1). drop: (B, 1, 1, 1) bool, samples
    left out of the loss (curation; they still count in the logged EPE)."""
    labelled = valid & (target < max_disp) & torch.isfinite(target)
    mask = labelled if drop is None else labelled & ~drop

    def term(pred: torch.Tensor) -> torch.Tensor:
        return masked_smooth_l1(pred, target, clamped(pred, target, mask, max_error), beta)

    loss = init_weight * term(out.init_disparity) + final_weight * term(out.disparity)
    n = len(out.corrections)
    for k, disparity in enumerate(out.corrections):
        loss = loss + final_weight * correction_gamma ** (n - k) * term(disparity)
    with torch.no_grad():
        err = (out.disparity - target).abs()[labelled]
        init_err = (out.init_disparity - target).abs()[labelled]
        stats = {"epe": float(err.mean()) if err.numel() else float("nan"),
                 "bad2": float((err > 2).float().mean() * 100) if err.numel() else float("nan"),
                 "init_epe": float(init_err.mean()) if init_err.numel() else float("nan")}
    return loss, stats


def warp_right(right: torch.Tensor, disparity: torch.Tensor) -> torch.Tensor:
    """The right image (B, C, H, W) sampled at x - disparity on each row: the left view as the disparity sees it."""
    b, _, h, w = right.shape
    xs = torch.arange(w, device=right.device, dtype=right.dtype).view(1, 1, w).expand(b, h, w)
    ys = torch.arange(h, device=right.device, dtype=right.dtype).view(1, h, 1).expand(b, h, w)
    gx = 2.0 * (xs - disparity[:, 0]) / max(w - 1, 1) - 1.0
    gy = 2.0 * ys / max(h - 1, 1) - 1.0
    return F.grid_sample(right, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="border",
                         align_corners=True)


def visible_in_right(disparity: torch.Tensor, tolerance: float = 0.5) -> torch.Tensor:
    """(B, 1, H, W) bool: pixels whose match lies inside the right image and is not hidden there behind a nearer
    pixel to their right (whose match lands left of theirs), both read from the disparity itself."""
    w = disparity.shape[-1]
    target = torch.arange(w, device=disparity.device, dtype=disparity.dtype).view(1, 1, 1, w) - disparity.detach()
    # the smallest target of the pixels strictly to the right of each pixel
    right_min = torch.flip(torch.cummin(torch.flip(target, [-1]), dim=-1).values, [-1])
    right_min = torch.cat([right_min[..., 1:], torch.full_like(right_min[..., :1], float("inf"))], dim=-1)
    return (target >= 0) & (target <= w - 1) & (target <= right_min + tolerance)


def ssim_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(1 - SSIM) / 2 per pixel over 3x3 windows, channels averaged; images in [0, 1]."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_a, mu_b = F.avg_pool2d(a, 3, 1, 1), F.avg_pool2d(b, 3, 1, 1)
    var_a = F.avg_pool2d(a * a, 3, 1, 1) - mu_a ** 2
    var_b = F.avg_pool2d(b * b, 3, 1, 1) - mu_b ** 2
    cov = F.avg_pool2d(a * b, 3, 1, 1) - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return ((1 - ssim) / 2).clamp(0, 1).mean(1, keepdim=True)


def photometric_loss(left: torch.Tensor, right: torch.Tensor, disparity: torch.Tensor, mask: torch.Tensor,
                     alpha: float = 0.85) -> torch.Tensor:
    """Mean over mask (B, 1, H, W) bool, less the pixels the disparity says the right view cannot show, of
    alpha * SSIM distance + (1 - alpha) * L1 between the left image and the right warped by the disparity.
    Images (B, 3, H, W) in [0, 255]."""
    mask = mask & visible_in_right(disparity)
    if not bool(mask.any()):
        return disparity.sum() * 0.0
    a, b = left / 255.0, warp_right(right / 255.0, disparity)
    error = alpha * ssim_distance(a, b) + (1 - alpha) * (a - b).abs().mean(1, keepdim=True)
    return error[mask].mean()


def edge_aware_smoothness(disparity: torch.Tensor, image: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """First-order smoothness of the disparity (divided by each sample's mean, so scale does not matter), damped
    where the image (B, 3, H, W, [0, 255]) has an edge; samples weighted by weight (B, 1, 1, 1) in {0, 1}."""
    if not bool(weight.any()):
        return disparity.sum() * 0.0
    d = disparity / (disparity.mean(dim=(2, 3), keepdim=True).abs() + 1e-3)
    img = image / 255.0
    dx = (d[..., :, 1:] - d[..., :, :-1]).abs() * torch.exp(-(img[..., :, 1:] - img[..., :, :-1]).abs().mean(1, True))
    dy = (d[..., 1:, :] - d[..., :-1, :]).abs() * torch.exp(-(img[..., 1:, :] - img[..., :-1, :]).abs().mean(1, True))
    per_sample = dx.mean(dim=(1, 2, 3)) + dy.mean(dim=(1, 2, 3))
    w = weight.view(-1).to(per_sample.dtype)
    return (per_sample * w).sum() / w.sum()


def unlabelled_loss(out: GESOutput, left: torch.Tensor, right: torch.Tensor, valid: torch.Tensor,
                    sparse: torch.Tensor, *, photometric_weight: float, smoothness_weight: float
                    ) -> Tuple[torch.Tensor, Dict[str, float]]:
    """The self-supervised terms on the final disparity: photometric where a sparse-label sample (sparse: (B, 1, 1,
    1) bool) has no label, smoothness over those samples. Returns the weighted sum and its parts for logging."""
    disparity = out.disparity
    photo = photometric_loss(left, right, disparity, sparse & ~valid)
    smooth = edge_aware_smoothness(disparity, left, sparse)
    loss = photometric_weight * photo + smoothness_weight * smooth
    return loss, {"photometric": float(photo.detach()), "smoothness": float(smooth.detach())}


def distillation_loss(out: GESOutput, teacher: GESOutput, valid: torch.Tensor, *, weight: float
                      ) -> Tuple[torch.Tensor, Dict[str, float]]:
    """weight x L1 of the student's initial and final disparity to a teacher's on the same pair, over the image's
    pixels (valid: (B, 1, H, W), where the crop has image content): brings new parts of a changed network up to a
    trained one quickly, beside the labels, not in their place."""
    mask = valid & torch.isfinite(teacher.disparity) & torch.isfinite(teacher.init_disparity)
    init = masked_smooth_l1(out.init_disparity, teacher.init_disparity, mask, 0.0)
    final = masked_smooth_l1(out.disparity, teacher.disparity, mask, 0.0)
    return weight * (init + final), {"distill_init": float(init.detach()), "distill_final": float(final.detach())}
