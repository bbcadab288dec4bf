"""Multi-level ConvGRU update operator (RAFT-Stereo style) and convex upsampling."""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def pool2x(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=2, padding=1)


def resize_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=True)


def separable3x3(inputs: int, outputs: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(inputs, inputs, 3, padding=1, groups=inputs, bias=False),
                         nn.Conv2d(inputs, outputs, 1))


CANDIDATE_CONVS = {"dense": lambda inputs, outputs: nn.Conv2d(inputs, outputs, 3, padding=1),
                   "separable": separable3x3}


class ConvGRU(nn.Module):
    """h' = (1 - z) h + z q, with the context's gate biases (cz, cr, cq) injected at every step."""

    def __init__(self, hidden: int, inputs: int, *, gate_kernel: int = 3, candidate: str = "dense") -> None:
        super().__init__()
        # gate_kernel 1: the gates see one pixel (9x fewer of the gates' multiply-adds); the candidate q keeps a
        # 3x3 view, dense or separable (a 3x3 per channel, then a 1x1 across them: about 8x fewer multiply-adds)
        self.convzr = nn.Conv2d(hidden + inputs, 2 * hidden, gate_kernel, padding=gate_kernel // 2)
        self.convq = CANDIDATE_CONVS[candidate](hidden + inputs, hidden)

    def forward(self, h: torch.Tensor, ctx: Sequence[torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
        cz, cr, cq = ctx
        x = torch.cat(inputs, dim=1)
        z, r = self.convzr(torch.cat([h, x], dim=1)).chunk(2, dim=1)
        z = torch.sigmoid(z + cz)
        r = torch.sigmoid(r + cr)
        q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)) + cq)
        return (1 - z) * h + z * q


class MotionEncoder(nn.Module):
    """Lookup samples + current disparity -> motion features (the disparity is passed through)."""

    def __init__(self, lookup_channels: int, out_channels: int, *, kernel: int = 3) -> None:
        super().__init__()
        self.lookup = nn.Sequential(nn.Conv2d(lookup_channels, 64, 1), nn.ReLU(inplace=True))
        self.disp = nn.Sequential(nn.Conv2d(1, 16, 7, padding=3), nn.ReLU(inplace=True))
        self.out = nn.Sequential(nn.Conv2d(64 + 16, out_channels - 1, kernel, padding=kernel // 2),
                                 nn.ReLU(inplace=True))

    def forward(self, lookup: torch.Tensor, disparity: torch.Tensor) -> torch.Tensor:
        # a scale-free view of the disparity for the conv; the raw value rides along unchanged
        feat = self.out(torch.cat([self.lookup(lookup), self.disp(disparity / 16.0)], dim=1))
        return torch.cat([feat, disparity], dim=1)


class UpdateBlock(nn.Module):
    """One update of the state (h04, h08, h16, disparity), all at 1/4, 1/8, 1/16 resolution."""

    def __init__(self, *, hidden_dims: Sequence[int], lookup_channels: int, motion_channels: int,
                 slow_fast: bool, gate_kernel: int = 3, motion_kernel: int = 3, delta_kernel: int = 3,
                 candidate_conv: str = "dense") -> None:
        super().__init__()
        h04, h08, h16 = hidden_dims
        self.slow_fast = slow_fast
        self.motion = MotionEncoder(lookup_channels, motion_channels, kernel=motion_kernel)
        gru = dict(gate_kernel=gate_kernel, candidate=candidate_conv)
        self.gru04 = ConvGRU(h04, motion_channels + h08, **gru)
        self.gru08 = ConvGRU(h08, h04 + h16, **gru)
        self.gru16 = ConvGRU(h16, h08, **gru)
        self.delta = nn.Sequential(nn.Conv2d(h04, 64, delta_kernel, padding=delta_kernel // 2), nn.ReLU(inplace=True),
                                   nn.Conv2d(64, 1, 3, padding=1))

    def forward(self, hidden: List[torch.Tensor], disparity: torch.Tensor, context: List[List[torch.Tensor]],
                lookup) -> tuple:
        h04, h08, h16 = hidden
        # slow-fast: the cheap coarse levels take extra steps before the fine one moves
        if self.slow_fast:
            h16 = self.gru16(h16, context[2], pool2x(h08))
            h16 = self.gru16(h16, context[2], pool2x(h08))
            h08 = self.gru08(h08, context[1], pool2x(h04), resize_to(h16, h08))
        h16 = self.gru16(h16, context[2], pool2x(h08))
        h08 = self.gru08(h08, context[1], pool2x(h04), resize_to(h16, h08))
        motion = self.motion(lookup(disparity), disparity)
        h04 = self.gru04(h04, context[0], motion, resize_to(h08, h04))
        disparity = disparity + self.delta(h04)
        return [h04, h08, h16], disparity


class ConvexUpsampler(nn.Module):
    """Learned 3x3 convex combination per full-resolution pixel (RAFT), factor 4."""

    factor = 4

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mask = nn.Sequential(nn.Conv2d(hidden, 64, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(64, 9 * self.factor ** 2, 1))

    def forward(self, disparity: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) disparity in 1/4-resolution pixels -> (B, 1, 4h, 4w) in full-resolution pixels."""
        batch, _, height, width = disparity.shape
        f = self.factor
        # 0.25 scaling of the mask logits balances the gradient (RAFT, Sec. 3.3)
        mask = (0.25 * self.mask(hidden)).view(batch, 1, 9, f, f, height, width).softmax(dim=2)
        patches = F.unfold(f * disparity, 3, padding=1).view(batch, 1, 9, 1, 1, height, width)
        up = (mask * patches).sum(dim=2)                       # (B, 1, f, f, h, w)
        return up.permute(0, 1, 4, 2, 5, 3).reshape(batch, 1, f * height, f * width)
