"""Feature encoder (shared by both views) and context encoder (left view only)."""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import nn

NormFactory = Callable[[int], nn.Module]


def group_norm(channels: int) -> nn.Module:
    # GroupNorm: identical in train and eval and independent of the (tiny) CPU batch.
    return nn.GroupNorm(min(4, channels), channels)


def batch_norm(channels: int) -> nn.Module:
    # folded into the convolution at inference
    return nn.BatchNorm2d(channels)


NORMS_2D = {"group": group_norm, "batch": batch_norm}


class ResidualBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, *, stride: int = 1, norm: NormFactory = group_norm) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm1 = norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = norm(out_ch)
        self.act = nn.ReLU(inplace=True)
        self.skip = None
        if stride != 1 or in_ch != out_ch:
            self.skip = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), norm(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.act(y + (x if self.skip is None else self.skip(x)))


def stem(channels: Sequence[int], *, norm: NormFactory = group_norm) -> nn.Sequential:
    """Image (B, 3, H, W) -> (B, channels[1], H/4, W/4)."""
    c_half, c_quarter = channels
    return nn.Sequential(
        nn.Conv2d(3, c_half, 5, stride=2, padding=2, bias=False), norm(c_half), nn.ReLU(inplace=True),
        ResidualBlock(c_half, c_half, norm=norm),
        ResidualBlock(c_half, c_quarter, stride=2, norm=norm),
        ResidualBlock(c_quarter, c_quarter, norm=norm),
    )


class FeatureEncoder(nn.Module):
    """Image (B, 3, H, W) in [-1, 1] -> matching features (B, C, H/4, W/4), and the stem's (B, c, H/4, W/4) that a
    context encoder without a stem of its own reads."""

    def __init__(self, *, channels: Sequence[int], out_channels: int, norm: NormFactory = group_norm) -> None:
        super().__init__()
        self.stem = stem(channels, norm=norm)
        self.out = nn.Conv2d(channels[1], out_channels, 1)
        self.out_channels = out_channels
        self.stem_channels = channels[1]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x04 = self.stem(x)
        return self.out(x04), x04


class ContextEncoder(nn.Module):
    """Left image -> per level (1/4, 1/8, 1/16): initial hidden state h0 and context features.

    shared_stem: no stem of its own; it reads the feature encoder's stem output for the left image (one 1/2 and
    1/4 stage less per pair: about 1 of the encoders' 5.2 GMAC at 640x480)."""

    def __init__(self, *, channels: Sequence[int], hidden_dims: Sequence[int], shared_stem: bool = False,
                 norm: NormFactory = group_norm) -> None:
        super().__init__()
        c = channels[1]
        self.shared_stem = shared_stem
        self.stem: Optional[nn.Module] = None if shared_stem else stem(channels, norm=norm)
        self.down8 = nn.Sequential(ResidualBlock(c, c, stride=2, norm=norm), ResidualBlock(c, c, norm=norm))
        self.down16 = nn.Sequential(ResidualBlock(c, c, stride=2, norm=norm), ResidualBlock(c, c, norm=norm))
        # each head gives [h0, context] for its level
        self.heads = nn.ModuleList(nn.Conv2d(c, 2 * h, 3, padding=1) for h in hidden_dims)
        self.hidden_dims = tuple(hidden_dims)

    def forward(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """x: the left image (B, 3, H, W), or with shared_stem the feature encoder's stem output for it."""
        x04 = x if self.stem is None else self.stem(x)
        x08 = self.down8(x04)
        x16 = self.down16(x08)
        hidden, context = [], []
        for head, feat, h in zip(self.heads, (x04, x08, x16), self.hidden_dims):
            h0, ctx = head(feat).split([h, h], dim=1)
            hidden.append(torch.tanh(h0))
            context.append(torch.relu(ctx))
        return hidden, context
