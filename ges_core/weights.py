"""Weights as safetensors with the GESConfig in the metadata. Nothing here unpickles."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch

from .config import GESConfig

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "default.safetensors"
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")   # protocol-2+ pickles and torch's zip checkpoints


def resolve_weights(weights: Union[str, os.PathLike]) -> Path:
    if str(weights) == "default":
        if not DEFAULT_WEIGHTS.exists():
            raise FileNotFoundError(f"the default weights are not shipped in this checkout ({DEFAULT_WEIGHTS}); "
                                    "train them with `ges train --config config/train/procedural_cpu.yaml`")
        return DEFAULT_WEIGHTS
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return path


def save_weights(path: Union[str, os.PathLike], model: torch.nn.Module, config: GESConfig, *,
                 half: bool = False, extra: Optional[Dict[str, torch.Tensor]] = None,
                 metadata: Optional[Dict[str, str]] = None) -> None:
    """Atomically write model (and optional extra tensors, e.g. a trained solver) to safetensors."""
    from safetensors.torch import save_file
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        tensors[f"model.{k}"] = (v.half() if half and v.is_floating_point() else v).contiguous()
    for k, v in (extra or {}).items():
        tensors[k] = v.detach().cpu().contiguous()
    meta = {"format": "ges", "config": config.to_json(), **(metadata or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_weights(path: Union[str, os.PathLike]) -> Tuple[GESConfig, Dict[str, torch.Tensor], Dict[str, str]]:
    """-> (config, all tensors as float32 where floating, metadata). Refuses anything but safetensors."""
    from safetensors import SafetensorError, safe_open
    path = resolve_weights(path)
    with open(path, "rb") as fh:
        head = fh.read(9)
    # safetensors: a little-endian u64 header length, then the JSON header; that length's first byte can be 0x80,
    # a pickle's first byte, so a file whose header opens with "{" is not taken for one
    safetensors_like = head[8:9] == b"{"
    if not safetensors_like and (head[:1] in _PICKLE_MAGIC[:1] or head[:4] == _PICKLE_MAGIC[1]):
        raise ValueError(f"{path}: looks like a pickle/torch checkpoint; only safetensors (or ONNX) weights are "
                         "loaded, never pickles (they can run arbitrary code)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc
    if "config" not in meta:
        raise ValueError(f"{path}: safetensors file has no GES config in its metadata")
    try:
        config = GESConfig.from_json(meta["config"])
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: bad GES config in metadata ({exc})") from exc
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    return config, tensors, meta


def model_state(tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}


def with_metadata(src: Union[str, os.PathLike], dst: Union[str, os.PathLike], updates: Dict[str, str]) -> None:
    """Copy a weights file with metadata entries added or replaced; every tensor byte for byte as it was."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    src = resolve_weights(src)
    load_weights(src)                      # the same checks as any load: safetensors, with a GES config
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(updates)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, dst)


def load_model(weights: Union[str, os.PathLike]):
    """The GES network of a weights file (its stored config and every tensor of the model), in eval mode."""
    from .model.ges import build_model
    config, tensors, _meta = load_weights(weights)
    model = build_model(config)
    load_model_state(model, tensors, weights)
    return model.eval()


def load_model_state(model: torch.nn.Module, tensors: Dict[str, torch.Tensor], path) -> None:
    """The model's tensors from a weights file's, all of them; a learned solver's (learned_solvers.*, older files
    hyper_solver.*) are left to ges_core.deq.hyper."""
    missing, unexpected = model.load_state_dict(model_state(tensors), strict=False)
    unexpected = [k for k in unexpected if not k.startswith(("hyper_solver.", "learned_solvers."))]
    if missing or unexpected:
        raise ValueError(f"{resolve_weights(path)}: weights do not fit the stored config "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")


def seed_from(model: torch.nn.Module, weights: Union[str, os.PathLike]) -> Tuple[int, int]:
    """Copy into `model` every tensor of `weights` whose name and shape it shares (a network whose other parts
    changed starts those that did not from trained values); -> (tensors copied, tensors in the model)."""
    _config, tensors, _meta = load_weights(weights)
    source = model_state(tensors)
    state = model.state_dict()
    shared = {k: v for k, v in source.items() if k in state and state[k].shape == v.shape}
    model.load_state_dict(shared, strict=False)
    return len(shared), len(state)
