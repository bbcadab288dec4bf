"""Feature encoder (shared by both views) and context encoder (left view only)."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn


def _norm(channels: int) -> nn.Module:
    # GroupNorm: identical in train and eval and independent of the (tiny) CPU batch.
    return nn.GroupNorm(min(4, channels), channels)


class ResidualBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = _norm(out_ch)
        self.act = nn.ReLU(inplace=True)
        self.skip = None
        if stride != 1 or in_ch != out_ch:
            self.skip = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), _norm(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.act(y + (x if self.skip is None else self.skip(x)))


def _stem(channels: Sequence[int]) -> nn.Sequential:
    c_half, c_quarter = channels
    return nn.Sequential(
        nn.Conv2d(3, c_half, 5, stride=2, padding=2, bias=False), _norm(c_half), nn.ReLU(inplace=True),
        ResidualBlock(c_half, c_half),
        ResidualBlock(c_half, c_quarter, stride=2),
        ResidualBlock(c_quarter, c_quarter),
    )


class FeatureEncoder(nn.Module):
    """Image (B, 3, H, W) in [-1, 1] -> matching features (B, C, H/4, W/4)."""

    def __init__(self, *, channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.stem = _stem(channels)
        self.out = nn.Conv2d(channels[1], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.stem(x))


class ContextEncoder(nn.Module):
    """Left image -> per level (1/4, 1/8, 1/16): initial hidden state h0 and context features."""

    def __init__(self, *, channels: Sequence[int], hidden_dims: Sequence[int]) -> None:
        super().__init__()
        c = channels[1]
        self.stem = _stem(channels)
        self.down8 = nn.Sequential(ResidualBlock(c, c, stride=2), ResidualBlock(c, c))
        self.down16 = nn.Sequential(ResidualBlock(c, c, stride=2), ResidualBlock(c, c))
        # each head gives [h0, context] for its level
        self.heads = nn.ModuleList(nn.Conv2d(c, 2 * h, 3, padding=1) for h in hidden_dims)
        self.hidden_dims = tuple(hidden_dims)

    def forward(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        x04 = self.stem(x)
        x08 = self.down8(x04)
        x16 = self.down16(x08)
        hidden, context = [], []
        for head, feat, h in zip(self.heads, (x04, x08, x16), self.hidden_dims):
            h0, ctx = head(feat).split([h, h], dim=1)
            hidden.append(torch.tanh(h0))
            context.append(torch.relu(ctx))
        return hidden, context
