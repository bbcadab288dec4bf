"""One frozen configuration for the GES network; presets are builders over it."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Dict, Tuple


@dataclass(frozen=True)
class GESConfig:
    # --- architecture: what the weights were trained as (a change needs new weights) ------------------
    max_disp: int = 192                      # search range at full resolution (px)
    encoder_channels: Tuple[int, int] = (16, 32)   # stem 1/2, 1/4
    feature_channels: int = 32               # matching features at 1/4
    groups: int = 8                          # group-wise correlation groups
    unet_channels: Tuple[int, int, int] = (8, 16, 24)  # 3D UNet C(0), C(1), C(2)
    unet_start: int = 4                      # 4: the 3D UNet convolves from 1/4; 8: from 1/8 down, C(0) pointwise
    conv3d: str = "full"                     # full (3x3x3) | factorized (1x3x3 then 3x1x1)
    norm: str = "group"                      # group | batch (folded into the convolutions at inference)
    shared_stem: bool = False                # the context encoder reads the feature encoder's stem
    hidden_dims: Tuple[int, int, int] = (32, 32, 32)   # ConvGRU 1/4, 1/8, 1/16
    lookup_channels: int = 4                 # channels sampled per 3D scale
    lookup_radius: int = 2                   # samples d-r .. d+r per scale
    corr_lookup: bool = False                # also sample the raw group-wise volume
    motion_channels: int = 48
    slow_fast: bool = True                   # coarse GRUs updated more often
    gate_kernel: int = 3                     # the ConvGRUs' z/r gates: 3x3, or 1x1
    motion_kernel: int = 3                   # the motion encoder's output convolution: 3x3, or 1x1
    delta_kernel: int = 3                    # the disparity head's first convolution: 3x3, or 1x1
    candidate_conv: str = "dense"            # the ConvGRUs' candidate q: dense 3x3, or separable (3x3 depthwise, 1x1)
    # --- inference: how the network is run (the node's parameters can change these) ------------------
    topk: int = 2                            # soft-argmin over the top-k candidates (0 = all)
    iters: int = 4                           # solver iterations at inference
    solver: str = "anderson"                 # fixed_point | anderson | hyper_anderson
    tol: float = 1e-4                        # relative residual to stop at
    anderson_m: int = 5
    anderson_beta: float = 1.0
    # --- training: the deep equilibrium's forward and backward in a training step ---------------------
    train_topk: int = 0                      # in training: all bins, so every logit gets a gradient
    train_iters: int = 6                     # forward solver iterations in training
    train_iters_max: int = 0                 # > train_iters: a random count in [train_iters, train_iters_max] per
                                             # step, so states far along the solve are trained too (anytime DEQ)
    fp_corrections: int = 0                  # training: this many states sampled along the solve also get a
                                             # phantom step and a loss (DEQ-Flow's fixed-point correction)
    backward: str = "phantom"                # phantom | ift | bptt
    phantom_steps: int = 1
    phantom_tau: float = 1.0
    ift_iters: int = 30
    ift_tol: float = 1e-6

    def part(self, group: str) -> Dict[str, Any]:
        """The fields of one group (FIELD_GROUPS: architecture, inference, training) by name."""
        try:
            names = FIELD_GROUPS[group]
        except KeyError:
            raise ValueError(f"unknown field group {group!r}; valid: {sorted(FIELD_GROUPS)}") from None
        return {name: getattr(self, name) for name in names}

    def solver_options(self, name: str) -> Dict[str, Any]:
        """The stored options of solver `name` (only Anderson has any)."""
        return {"m": self.anderson_m, "beta": self.anderson_beta} if name == "anderson" else {}

    @staticmethod
    def preset(name: str) -> "GESConfig":
        try:
            return _PRESETS[name]()
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; valid: {sorted(_PRESETS)}") from None

    @property
    def num_disp(self) -> int:
        """Disparity candidates at 1/4 resolution, a multiple of 4 so the 3D UNet halves twice."""
        return max(4, -(-self.max_disp // 16) * 4)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "GESConfig":
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown GESConfig fields {unknown}; valid: {sorted(names)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)

    @classmethod
    def from_json(cls, s: str) -> "GESConfig":
        return cls.from_dict(json.loads(s))


# the fields by what they are for, in the class's order (a test holds every field to exactly one group)
FIELD_GROUPS: Dict[str, Tuple[str, ...]] = {
    "architecture": ("max_disp", "encoder_channels", "feature_channels", "groups", "unet_channels", "unet_start",
                     "conv3d", "norm", "shared_stem", "hidden_dims", "lookup_channels", "lookup_radius",
                     "corr_lookup", "motion_channels", "slow_fast", "gate_kernel", "motion_kernel",
                     "delta_kernel", "candidate_conv"),
    "inference": ("topk", "iters", "solver", "tol", "anderson_m", "anderson_beta"),
    "training": ("train_topk", "train_iters", "train_iters_max", "fp_corrections", "backward", "phantom_steps",
                 "phantom_tau", "ift_iters", "ift_tol"),
}


def strict_from_dict(cls, values: Dict[str, Any], what: str):
    """cls(**values) for a dataclass, refusing a name it does not have with the valid ones (a misspelt key would
    otherwise be dropped, or surface as an uncaught TypeError)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; valid: {sorted(names)}")
    return cls(**values)


def read_yaml(path: str, what: str) -> Dict[str, Any]:
    """A YAML mapping from a file; errors name the file and what it was meant to be."""
    import yaml
    from pathlib import Path
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML ({exc})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of options, got {type(raw).__name__}")
    return raw


def _small() -> GESConfig:
    # Sized for a 2-core CPU: 0.68M parameters, trainable here in hours.
    return GESConfig()


def _fast() -> GESConfig:
    # #38: about a third of small's multiply-adds at 640x480 (11.3 against 32.2 GMAC at 4 iterations): the 3D UNet
    # from 1/8 with factorized convolutions and BatchNorm, a stem shared by both encoders, a leaner update (coarse
    # GRUs once an iteration, 1x1 gates and motion output). Shapes of everything else as small's, so v5 seeds them.
    return dataclasses.replace(_small(), unet_start=8, conv3d="factorized", norm="batch", shared_stem=True,
                               slow_fast=False, gate_kernel=1, motion_kernel=1)


def _paper() -> GESConfig:
    # The design report's sizes: full-resolution search of 384 px, 128-channel GRUs.
    return GESConfig(
        max_disp=384,
        encoder_channels=(64, 96),
        feature_channels=128,
        groups=8,
        unet_channels=(16, 32, 48),
        hidden_dims=(128, 128, 128),
        lookup_channels=8,
        lookup_radius=4,
        corr_lookup=True,
        motion_channels=128,
        iters=4,
    )


def _tiny() -> GESConfig:
    # For tests: a few thousand parameters, milliseconds per call.
    return GESConfig(
        max_disp=32,
        encoder_channels=(8, 8),
        feature_channels=8,
        groups=4,
        unet_channels=(4, 4, 4),
        hidden_dims=(8, 8, 8),
        lookup_channels=2,
        lookup_radius=1,
        motion_channels=8,
    )


_PRESETS = {"small": _small, "fast": _fast, "paper": _paper, "tiny": _tiny}
