"""Volumetric branch: group-wise correlation, 3D UNet geometric features, top-k soft-argmin,
and the trilinear lookup the update operator uses to read the 3D features."""
from __future__ import annotations

import functools
from typing import Callable, List, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def groupwise_correlation(left: torch.Tensor, right: torch.Tensor, *, groups: int, num_disp: int) -> torch.Tensor:
    """(B, C, H, W) x2 -> (B, G, D, H, W); entry d compares left x with right x - d (zero where x < d)."""
    batch, channels, height, width = left.shape
    if channels % groups:
        raise ValueError(f"feature channels {channels} not divisible by groups {groups}")
    # shifted slices padded and stacked, not written into a zeroed volume: the same numbers, and an exported graph
    # without one ScatterND per disparity (OpenVINO ran those 48 by its reference kernel: 36 ms of 150 at 640x480)
    slices = [_group_mean(left * right, groups)]
    for d in range(1, min(num_disp, width)):
        slices.append(F.pad(_group_mean(left[..., d:] * right[..., :-d], groups), (d, 0)))
    volume = torch.stack(slices, dim=2)
    if num_disp > width:
        volume = F.pad(volume, (0, 0, 0, 0, 0, num_disp - width))
    return volume


def _group_mean(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, G, H, W), the mean of each group's C/G channels. In an exported graph as a grouped 1x1
    convolution with weights 1/(C/G): the same numbers, and OpenVINO's bf16 ReduceMean over the 4-channel axis was
    2.2x slower (about 20 of the fast preset's 116 ms encode at 640x480, measured); PyTorch's training step is
    faster with the reduction (1.25x, measured), so it keeps it."""
    batch, channels, height, width = x.shape
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        per_group = int(channels) // groups      # a constant of the graph (a traced shape can be symbolic)
        weight = torch.full((groups, per_group, 1, 1), 1.0 / per_group, dtype=x.dtype, device=x.device)
        return F.conv2d(x, weight, groups=groups)
    return x.view(batch, groups, channels // groups, height, width).mean(dim=2)


def conv3d(x: torch.Tensor, weight: torch.Tensor, bias=None, *, stride=1, padding=1) -> torch.Tensor:
    """F.conv3d, through oneDNN on a CPU. PyTorch's dispatch sends a batch-1 input with N*C*D*H <= 20480 (a rule
    tuned for 2D) to its native kernel: at 640x480 the UNet's 24-channel 1/16 level, 3x slower there than oneDNN
    (measured). The same numbers up to float rounding; differentiable. Elsewhere (GPU, autocast, export) F.conv3d."""
    if (x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and not torch.is_autocast_enabled("cpu") and not torch.jit.is_tracing()
            and not torch.onnx.is_in_onnx_export()):
        triple = (lambda v: list(v) if isinstance(v, (tuple, list)) else [v] * 3)
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, triple(padding), triple(stride), [1, 1, 1], 1)
    return F.conv3d(x, weight, bias, stride=stride, padding=padding)


class Conv3d(nn.Conv3d):
    """nn.Conv3d (same parameters and state dict) whose zero-padded, ungrouped, undilated forward is `conv3d`."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
        if self.padding_mode != "zeros" or self.groups != 1 or any(d != 1 for d in self.dilation):
            return super()._conv_forward(x, weight, bias)
        return conv3d(x, weight, bias, stride=self.stride, padding=self.padding)


NormFactory = Callable[[int], nn.Module]


def group_norm3d(channels: int) -> nn.Module:
    # identical in train and eval and independent of the (tiny) CPU batch
    return nn.GroupNorm(min(4, channels), channels)


def batch_norm3d(channels: int) -> nn.Module:
    # folded into the convolution at inference (OpenVINO runs GroupNorm as reshapes and reductions around it)
    return nn.BatchNorm3d(channels)


NORMS_3D = {"group": group_norm3d, "batch": batch_norm3d}


class FactorizedConv3d(nn.Module):
    """A dense 1x3x3 convolution followed by a dense 3x1x1 one: 9 + 3 taps in place of 27, the same receptive field
    in x, y and disparity. The stride s moves x/y in the first and disparity in the second."""

    def __init__(self, in_ch: int, out_ch: int, *, stride: int = 1) -> None:
        super().__init__()
        self.spatial = Conv3d(in_ch, out_ch, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)
        self.disparity = Conv3d(out_ch, out_ch, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.disparity(self.spatial(x))


def full_conv3d(in_ch: int, out_ch: int, *, stride: int = 1) -> nn.Module:
    return Conv3d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


CONVS_3D = {"full": full_conv3d, "factorized": FactorizedConv3d}


def conv_block3d(in_ch: int, out_ch: int, *, stride: int = 1, conv: Callable[..., nn.Module] = full_conv3d,
                 norm: NormFactory = group_norm3d) -> nn.Sequential:
    """conv, norm, activation: the UNet's one block (its state-dict keys 0.*, 1.* whatever the conv)."""
    return nn.Sequential(conv(in_ch, out_ch, stride=stride), norm(out_ch), nn.LeakyReLU(0.1, inplace=True))


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    # interpolate returns NCDHW whatever its input, and a concatenation follows its first operand. A traced export
    # (ONNX has no memory format; its runtimes choose their own layout) keeps the plain one.
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return x
    return x.contiguous(memory_format=torch.channels_last_3d)


class LookupVolume(NamedTuple):
    """One volume the update samples, with its units declared rather than implied by its place in a list."""
    features: torch.Tensor      # (B, C, D / scale, h, w)
    scale: int                  # level-0 (1/4-resolution) disparity bins per bin of this volume


class UNet3D(nn.Module):
    """Cost volume (B, G, D, H, W) -> geometric features C(s), s = 0, 1, 2, each halving D, H, W, as LookupVolumes.

    start 4: every level is convolved, C(0) at the volume's own (1/4) resolution. start 8: the 3D work starts at
    1/8 (the first convolution has stride 2) and C(0) is C(1) upsampled plus a 1x1x1 skip from the raw volume,
    both through pointwise maps (a pointwise map commutes with the upsampling, so it runs at 1/8), as real-time
    aggregators do most of their 3D work below 1/4 (RT-IGEV++). At 640x480 the 1/4 levels are 8.2 of the
    start-4 UNet's 11.8 GMAC."""

    def __init__(self, *, in_channels: int, channels: Sequence[int], start: int = 4,
                 conv: Callable[..., nn.Module] = full_conv3d, norm: NormFactory = group_norm3d) -> None:
        super().__init__()
        if start not in (4, 8):
            raise ValueError(f"3D UNet start must be 4 or 8 (its first level's resolution, 1/start), got {start}")
        c0, c1, c2 = channels
        self.start = start
        self.out_channels = (c0, c1, c2)
        block = functools.partial(conv_block3d, conv=conv, norm=norm)
        if start == 4:
            self.enc0 = nn.Sequential(block(in_channels, c0), block(c0, c0))
            self.enc1 = nn.Sequential(block(c0, c1, stride=2), block(c1, c1))
        else:
            self.enc1 = nn.Sequential(block(in_channels, c1, stride=2), block(c1, c1))
        self.enc2 = nn.Sequential(block(c1, c2, stride=2), block(c2, c2))
        self.dec1 = block(c2 + c1, c1)
        if start == 4:
            self.dec0 = block(c1 + c0, c0)
        else:
            self.up0 = nn.Conv3d(c1, c0, 1, bias=False)       # C(1) -> C(0)'s channels, at 1/8
            self.skip0 = nn.Conv3d(in_channels, c0, 1)        # the raw volume's detail at 1/4
            self.norm0 = norm(c0)
            self.act0 = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, volume: torch.Tensor) -> List[LookupVolume]:
        # channels-last (NDHWC): oneDNN's fast 3D convolutions on a CPU (the 24->8 decoder conv at 640x480: 3.2x,
        # measured); the same numbers up to float rounding
        volume = _channels_last(volume)
        e0 = self.enc0(volume) if self.start == 4 else None     # (B, c0, D, H, W)
        e1 = self.enc1(volume if e0 is None else e0)            # (B, c1, D/2, H/2, W/2)
        c2 = self.enc2(e1)                                      # (B, c2, D/4, H/4, W/4)
        up = F.interpolate(c2, size=e1.shape[2:], mode="trilinear", align_corners=False)
        c1 = _conv_of_concat(self.dec1, up, e1)
        if e0 is not None:
            up = F.interpolate(c1, size=e0.shape[2:], mode="trilinear", align_corners=False)
            c0 = _conv_of_concat(self.dec0, up, e0)
        else:
            up = F.interpolate(pointwise_conv3d(self.up0, c1), size=volume.shape[2:], mode="trilinear",
                               align_corners=False)
            c0 = self.act0(self.norm0(up + pointwise_conv3d(self.skip0, volume)))
        return [LookupVolume(c0, 1), LookupVolume(c1, 2), LookupVolume(c2, 4)]


def _conv_of_concat(block: nn.Sequential, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """block(cat([a, b], dim=1)) for a conv_block3d, for a full 3x3x3 convolution as the sum of its two
    input-channel slices over a and b: the same numbers up to float rounding without the concatenated copy of the
    volume (at 640x480 the UNet took 235 ms with it, 220 without, measured); the block keeps its parameters, so
    weights load unchanged. A factorized block convolves the concatenation (its first conv is the cheap one)."""
    conv, norm, act = block
    if not isinstance(conv, nn.Conv3d):
        return block(torch.cat([a, b], dim=1))
    split = a.shape[1]
    y = conv3d(_channels_last(a), conv.weight[:, :split], conv.bias, stride=conv.stride, padding=conv.padding) \
        + conv3d(b, conv.weight[:, split:], stride=conv.stride, padding=conv.padding)
    return act(norm(y))


def pointwise_conv3d(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1x1 Conv3d as the matrix product it is (oneDNN ran it 5x slower as a convolution on a CPU, measured);
    `conv` keeps its parameters, so weights load unchanged."""
    out = torch.einsum("bcdhw,oc->bodhw", x, conv.weight[:, :, 0, 0, 0])
    return out if conv.bias is None else out + conv.bias.view(1, -1, 1, 1, 1)


def topk_soft_argmin(logits: torch.Tensor, k: int) -> torch.Tensor:
    """(B, D, H, W) matching logits -> (B, 1, H, W) disparity in bins, a softmax over the top-k bins
    (CoEx); k <= 0 or k >= D is the full soft-argmin."""
    num_disp = logits.shape[1]
    index = torch.arange(num_disp, device=logits.device, dtype=logits.dtype).view(1, num_disp, 1, 1)
    if k <= 0 or k >= num_disp:
        return (logits.softmax(dim=1) * index).sum(dim=1, keepdim=True)
    values, idx = logits.topk(k, dim=1)
    return (values.softmax(dim=1) * idx.to(logits.dtype)).sum(dim=1, keepdim=True)


def probability_mass_near(prob: torch.Tensor, disparity: torch.Tensor, *, radius: float = 1.5) -> torch.Tensor:
    """Mass of a (B, D, H, W) distribution within `radius` bins of (B, 1, H, W) disparity -> (B, 1, H, W)."""
    num_disp = prob.shape[1]
    index = torch.arange(num_disp, device=prob.device, dtype=prob.dtype).view(1, num_disp, 1, 1)
    near = (index - disparity).abs() <= radius
    return (prob * near).sum(dim=1, keepdim=True).clamp(0.0, 1.0)


class VolumeLookup:
    """Samples the 3D features of every scale at disparity d +- r, trilinearly.

    Built once per image pair (outside the solver loop); calling it is the per-iteration lookup.
    A volume of scale s (its declared LookupVolume.scale) has D/s bins; bin centres follow align_corners=False, so a
    level-0 disparity d maps to (d + 0.5) / s - 0.5 there, and the x/y grid is the same for every volume.

    Trilinear interpolation is separable, and the x/y positions are the lookup grid's pixel centres, the same in
    every iteration: a coarser scale is resampled bilinearly to that grid once here (zeros outside, as a
    trilinear grid_sample reads them), and each iteration interpolates along disparity only, between 2r+2 bins
    gathered once (the same numbers up to float rounding; grid_sample_3d was ~10 % of an iteration on a CPU).
    """

    def __init__(self, volumes: Sequence[LookupVolume], *, radius: int) -> None:
        height, width = volumes[0].features.shape[-2:]
        self.radius = radius
        dev = volumes[0].features.device
        self.volumes = [v if v.features.shape[-2:] == (height, width)
                        else LookupVolume(_resample_xy(v.features, height, width), v.scale) for v in volumes]
        self.bins = torch.arange(2 * radius + 2, device=dev).view(1, 2 * radius + 2, 1, 1)

    def __call__(self, disparity: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) disparity in level-0 bins -> (B, sum_s C_s * (2r+1), H, W)."""
        out = []
        for vol, scale in self.volumes:
            batch, channels, num_disp, height, width = vol.shape
            # the taps are whole bins apart: one fraction for all, and 2r+2 neighbouring bins from one gather
            pos = (disparity + 0.5) / scale - 0.5 - self.radius            # (B, 1, H, W) bin of the first tap
            lo = torch.floor(pos)
            frac = (pos - lo).unsqueeze(1)
            index = lo.long() + self.bins                                   # (B, 2r+2, H, W)
            inside = ((index >= 0) & (index < num_disp)).unsqueeze(1).to(vol.dtype)     # zeros beyond the ends
            picked = vol.gather(2, index.clamp(0, num_disp - 1).unsqueeze(1).expand(-1, channels, -1, -1, -1))
            picked = picked * inside
            sampled = picked[:, :, :-1] * (1 - frac) + picked[:, :, 1:] * frac
            out.append(sampled.reshape(batch, channels * (2 * self.radius + 1), height, width))
        return torch.cat(out, dim=1)


def _resample_xy(vol: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C, D, h, w) -> (B, C, D, height, width): bilinear at the finer grid's pixel centres, zeros outside
    (grid_sample's rule, align_corners=False), every disparity bin as it is."""
    batch, channels, num_disp, h, w = vol.shape
    dev, dt = vol.device, vol.dtype
    gy = (torch.arange(height, device=dev, dtype=dt) + 0.5) / height * 2 - 1
    gx = (torch.arange(width, device=dev, dtype=dt) + 0.5) / width * 2 - 1
    grid = torch.stack([gx.view(1, width).expand(height, width), gy.view(height, 1).expand(height, width)], dim=-1)
    flat = vol.reshape(batch, channels * num_disp, h, w)
    out = F.grid_sample(flat, grid.unsqueeze(0).expand(batch, -1, -1, -1), mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.view(batch, channels, num_disp, height, width)
