"""The GES network: a volumetric initial disparity refined by a deep-equilibrium ConvGRU update."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GESConfig
from ..deq.backward import BACKWARDS, check_backward
from ..deq.solvers import SolverInfo, StateLayout, StopFn, get_solver
from .extractor import NORMS_2D, ContextEncoder, FeatureEncoder
from .update import CANDIDATE_CONVS, ConvexUpsampler, UpdateBlock
from .volume import (CONVS_3D, NORMS_3D, LookupVolume, UNet3D, VolumeLookup, groupwise_correlation,
                     pointwise_conv3d, probability_mass_near, topk_soft_argmin)

PAD_MULTIPLE = 16   # 1/16 is the coarsest GRU level


class GESOutput(NamedTuple):
    disparity: torch.Tensor        # (B, 1, H, W) final disparity, px, left view, x_right = x_left - d
    init_disparity: torch.Tensor   # (B, 1, H, W) from the volumetric branch
    confidence: torch.Tensor       # (B, 1, H, W) in [0, 1]
    residuals: List[float]         # relative residual per solver iteration
    iters: int                     # solver iterations run
    state: torch.Tensor            # (B, N) flat fixed point, the warm start for the next frame
    diverged: bool                 # the solver met a non-finite value
    corrections: Tuple[torch.Tensor, ...] = ()   # training with fp_corrections: (B, 1, H, W) disparities decoded from
                                                 # states sampled along the solve, earliest first; empty otherwise


@dataclass
class Encoded:
    """Everything that does not change across solver iterations, computed once per pair."""
    context: List[List[torch.Tensor]]   # per level (cz, cr, cq)
    lookup: VolumeLookup
    prob: torch.Tensor                  # (B, D, H/4, W/4) softmax of the matching logits
    init_disparity: torch.Tensor        # (B, 1, H/4, W/4) in 1/4-resolution pixels
    hidden0: List[torch.Tensor]
    shapes: List[torch.Size]            # state layout: h04, h08, h16, disparity
    pad: Tuple[int, int]                # (bottom, right) padding added to the input


class GES(nn.Module):
    def __init__(self, *, config: GESConfig, feature_encoder: nn.Module, context_encoder: nn.Module,
                 cost_filter: nn.Module, cost_head: nn.Module, lookup_heads: nn.ModuleList,
                 context_injection: nn.ModuleList, update_block: nn.Module, upsampler: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.feature_encoder = feature_encoder
        self.context_encoder = context_encoder
        self.cost_filter = cost_filter
        self.cost_head = cost_head
        self.lookup_heads = lookup_heads
        self.context_injection = context_injection
        self.update_block = update_block
        self.upsampler = upsampler
        # learned solvers by name, each with its trained weights (ges_core.deq.hyper registers hyper_anderson)
        self.learned_solvers = nn.ModuleDict()

    # ------------------------------------------------------------------ encode
    def encode(self, left: torch.Tensor, right: torch.Tensor) -> Encoded:
        if left.shape != right.shape or left.dim() != 4 or left.shape[1] != 3:
            raise ValueError(f"expected left and right of equal shape (B, 3, H, W), got {tuple(left.shape)} "
                             f"and {tuple(right.shape)}")
        cfg = self.config
        _, _, height, width = left.shape
        pad = (-height % PAD_MULTIPLE, -width % PAD_MULTIPLE)
        images = torch.cat([left, right], dim=0) / 127.5 - 1.0
        if pad != (0, 0):
            images = F.pad(images, (0, pad[1], 0, pad[0]), mode="replicate")
        batch = left.shape[0]
        feats, stem = self.feature_encoder(images)                      # (2B, C, H/4, W/4) each
        f_left, f_right = feats[:batch], feats[batch:]
        hidden0, ctx = self.context_encoder(stem[:batch] if self.context_encoder.shared_stem else images[:batch])
        context = [list(inj(c).chunk(3, dim=1)) for inj, c in zip(self.context_injection, ctx)]

        volume = groupwise_correlation(f_left, f_right, groups=cfg.groups, num_disp=cfg.num_disp)  # (B, G, D, H/4, W/4)
        geo = self.cost_filter(volume)                      # C(s): (B, c_s, D/s, H/4/s, W/4/s), scale s = 1, 2, 4
        logits = self.cost_head(geo[0].features).squeeze(1)             # (B, D, H/4, W/4)
        init = topk_soft_argmin(logits, cfg.train_topk if self.training else cfg.topk)
        lookup_vols = [LookupVolume(pointwise_conv3d(head, g.features), g.scale)
                       for head, g in zip(self.lookup_heads, geo)]
        if cfg.corr_lookup:
            lookup_vols.append(LookupVolume(volume, 1))                 # the raw volume, at full disparity resolution
        lookup = VolumeLookup(lookup_vols, radius=cfg.lookup_radius)
        shapes = [h.shape for h in hidden0] + [init.shape]
        return Encoded(context, lookup, logits.softmax(dim=1), init, hidden0, shapes, pad)

    # --------------------------------------------------------------- the map f
    def pack(self, hidden: Sequence[torch.Tensor], disparity: torch.Tensor) -> torch.Tensor:
        return torch.cat([t.flatten(1) for t in (*hidden, disparity)], dim=1)

    def unpack(self, z: torch.Tensor, enc: Encoded) -> Tuple[List[torch.Tensor], torch.Tensor]:
        sizes = [s[1:].numel() for s in enc.shapes]
        parts = [p.view(-1, *s[1:]) for p, s in zip(z.split(sizes, dim=1), enc.shapes)]
        return parts[:3], parts[3]

    def initial_state(self, enc: Encoded) -> torch.Tensor:
        return self.pack(enc.hidden0, enc.init_disparity)

    def step(self, z: torch.Tensor, enc: Encoded) -> torch.Tensor:
        """One update f(z; x): a pure function of the state and the pair's encoding."""
        hidden, disparity = self.unpack(z, enc)
        hidden, disparity = self.update_block(hidden, disparity, enc.context, enc.lookup)
        return self.pack(hidden, disparity)

    # ------------------------------------------------------------------ solve
    def solve(self, enc: Encoded, *, iters: int, solver: Optional[str] = None, init: Optional[torch.Tensor] = None,
              stop: Optional[StopFn] = None, tol: Optional[float] = None,
              observe: Optional[Callable[[torch.Tensor], None]] = None,
              step: Optional[Callable[[torch.Tensor, Encoded], torch.Tensor]] = None
              ) -> Tuple[torch.Tensor, SolverInfo]:
        """observe: called with every f-value the solver computes (benchmarks trace the whole solve); step: the
        update f(z; x) to iterate, when another backend runs it (default: this module's own)."""
        cfg = self.config
        z0 = self.initial_state(enc) if init is None else init
        if z0.shape != self.initial_state(enc).shape:
            raise ValueError(f"warm-start state has shape {tuple(z0.shape)}, this pair needs "
                             f"{tuple(self.initial_state(enc).shape)}")
        name = solver or cfg.solver
        tol = cfg.tol if tol is None else tol
        update = step or self.step
        def func(z: torch.Tensor) -> torch.Tensor:
            fz = update(z, enc)
            if observe is not None:
                observe(fz)
            return fz
        layout = StateLayout(unpack=lambda z: self.unpack(z, enc), pack=self.pack, cold=init is None)
        return get_solver(name, self.learned_solvers)(func, z0, max_iter=iters, tol=tol, stop=stop, layout=layout,
                                                      **cfg.solver_options(name))

    def decode(self, z: torch.Tensor, enc: Encoded) -> Tuple[torch.Tensor, torch.Tensor]:
        """Flat state -> full-resolution (disparity, confidence), cropped to the input size."""
        disparity, coarse = self.decode_coarse_confidence(z, enc)
        return disparity, self.confidence_at_full_size(coarse, enc)

    def decode_coarse_confidence(self, z: torch.Tensor, enc: Encoded) -> Tuple[torch.Tensor, torch.Tensor]:
        """decode's network part: the full-resolution disparity (cropped), and the confidence at 1/4 resolution."""
        hidden, disparity = self.unpack(z, enc)
        full = self.upsampler(disparity, hidden[0])
        return self._crop(full, enc), probability_mass_near(enc.prob, disparity)

    def confidence_at_full_size(self, coarse: torch.Tensor, enc: Encoded) -> torch.Tensor:
        """decode's last part: the 1/4-resolution confidence resized x4 and cropped to the input size (a compiled
        runtime runs it outside its graph, where the resize cost as much as the convex upsampling's network)."""
        conf = F.interpolate(coarse, scale_factor=4, mode="bilinear", align_corners=False).clamp(0, 1)
        return self._crop(conf, enc)

    def upsample_init(self, enc: Encoded) -> torch.Tensor:
        init = 4 * F.interpolate(enc.init_disparity, scale_factor=4, mode="bilinear", align_corners=False)
        return self._crop(init, enc)

    @staticmethod
    def _crop(x: torch.Tensor, enc: Encoded) -> torch.Tensor:
        bottom, right = enc.pad
        return x[..., : x.shape[-2] - bottom, : x.shape[-1] - right]

    # ---------------------------------------------------------------- forward
    def forward(self, left: torch.Tensor, right: torch.Tensor, *, iters: Optional[int] = None,
                init: Optional[torch.Tensor] = None, solver: Optional[str] = None) -> GESOutput:
        """left, right: (B, 3, H, W) float in [0, 255]."""
        cfg = self.config
        check_backward(cfg.backward)
        enc = self.encode(left, right)
        grad = torch.is_grad_enabled() and self.training
        iters = iters or (self._train_iters() if self.training else cfg.iters)
        corrections: Tuple[torch.Tensor, ...] = ()
        if grad and cfg.backward == "bptt":
            z, info = self._unrolled(enc, iters, init)
        else:
            trace: Optional[List[torch.Tensor]] = [] if grad and cfg.fp_corrections > 0 else None
            z, info = self.solve(enc, iters=iters, solver=solver, init=init,
                                 observe=trace.append if trace is not None else None)
            if grad:
                def attach(s: torch.Tensor) -> torch.Tensor:
                    return BACKWARDS[cfg.backward](lambda x: self.step(x, enc), s, steps=cfg.phantom_steps,
                                                   tau=cfg.phantom_tau, iters=cfg.ift_iters, tol=cfg.ift_tol)
                z = attach(z)
                if trace:
                    corrections = tuple(self.decode(attach(trace[k]), enc)[0] for k in _sample_states(
                        len(trace) - 1, cfg.fp_corrections))
        disparity, confidence = self.decode(z, enc)
        return GESOutput(disparity, self.upsample_init(enc), confidence, info.residuals, info.iters,
                         z.detach(), info.diverged, corrections)

    def _train_iters(self) -> int:
        """The forward iterations of one training step: fixed, or drawn from torch's generator (so a resumed run,
        which restores that generator, draws the same counts)."""
        lo, hi = self.config.train_iters, self.config.train_iters_max
        return int(torch.randint(lo, hi + 1, ()).item()) if hi > lo else lo

    def _unrolled(self, enc: Encoded, iters: int, init: Optional[torch.Tensor]) -> Tuple[torch.Tensor, SolverInfo]:
        z = self.initial_state(enc) if init is None else init
        info = SolverInfo()
        for _ in range(iters):
            fz = self.step(z, enc)
            info.residuals.append(float((fz - z).detach().flatten(1).norm(dim=1).max()
                                        / fz.detach().flatten(1).norm(dim=1).clamp_min(1e-8).max()))
            info.iters += 1
            z = fz
        return z, info


def _sample_states(available: int, count: int) -> List[int]:
    """`count` distinct indices of the solve's states before the last, spread over the trajectory (stratified:
    one drawn uniformly in each of `count` equal spans), earliest first."""
    if available <= 0:
        return []
    count = min(count, available)
    edges = torch.linspace(0, available, count + 1)
    picks = [int(edges[i] + torch.rand(()) * (edges[i + 1] - edges[i])) for i in range(count)]
    return sorted({min(p, available - 1) for p in picks})


def _choice(table: dict, name: str, what: str):
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; valid: {sorted(table)}") from None


def build_model(config: GESConfig, **parts: nn.Module) -> GES:
    """Assemble GES from its parts, sized by the config. Any part can be handed in by keyword (feature_encoder,
    context_encoder, cost_filter, cost_head, lookup_heads, context_injection, update_block, upsampler); the widths
    the others need are read from the parts themselves (their out_channels)."""
    cfg = config
    unknown = sorted(set(parts) - set(_PARTS))
    if unknown:
        raise ValueError(f"unknown GES parts {unknown}; valid: {list(_PARTS)}")
    kernels = {k: getattr(cfg, k) for k in ("gate_kernel", "motion_kernel", "delta_kernel")}
    if any(v not in (1, 3) for v in kernels.values()):
        raise ValueError(f"gate_kernel, motion_kernel and delta_kernel must be 1 or 3, got {kernels}")
    _choice(CANDIDATE_CONVS, cfg.candidate_conv, "candidate_conv")
    norm2d = _choice(NORMS_2D, cfg.norm, "norm")
    norm3d = NORMS_3D[cfg.norm]
    conv3d = _choice(CONVS_3D, cfg.conv3d, "conv3d")
    built = dict(parts)

    def part(name: str, make):
        if name not in built:
            built[name] = make()
        return built[name]

    features = part("feature_encoder", lambda: FeatureEncoder(channels=cfg.encoder_channels,
                                                              out_channels=cfg.feature_channels, norm=norm2d))
    context = part("context_encoder", lambda: ContextEncoder(
        channels=(cfg.encoder_channels[0], features.stem_channels) if cfg.shared_stem else cfg.encoder_channels,
        hidden_dims=cfg.hidden_dims, shared_stem=cfg.shared_stem, norm=norm2d))
    if features.out_channels % cfg.groups:
        raise ValueError(f"feature channels {features.out_channels} not divisible by groups {cfg.groups}")
    unet = part("cost_filter", lambda: UNet3D(in_channels=cfg.groups, channels=cfg.unet_channels,
                                              start=cfg.unet_start, conv=conv3d, norm=norm3d))
    c0 = unet.out_channels[0]
    # from 1/8 the UNet's C(0) is pointwise, and so is its head; from 1/4 a 3x3x3 head (the shipped weights')
    part("cost_head", lambda: nn.Conv3d(c0, 1, 3, padding=1) if cfg.unet_start == 4 else nn.Conv3d(c0, 1, 1))
    heads = part("lookup_heads", lambda: nn.ModuleList(nn.Conv3d(c, cfg.lookup_channels, 1)
                                                       for c in unet.out_channels))
    sampled = sum(h.out_channels for h in heads) + (cfg.groups if cfg.corr_lookup else 0)
    hidden = context.hidden_dims
    part("context_injection", lambda: nn.ModuleList(nn.Conv2d(h, 3 * h, 3, padding=1) for h in hidden))
    part("update_block", lambda: UpdateBlock(hidden_dims=hidden, lookup_channels=sampled * (2 * cfg.lookup_radius + 1),
                                             motion_channels=cfg.motion_channels, slow_fast=cfg.slow_fast,
                                             candidate_conv=cfg.candidate_conv, **kernels))
    part("upsampler", lambda: ConvexUpsampler(hidden[0]))
    return GES(config=cfg, **{name: built[name] for name in _PARTS})


_PARTS = ("feature_encoder", "context_encoder", "cost_filter", "cost_head", "lookup_heads", "context_injection",
          "update_block", "upsampler")
