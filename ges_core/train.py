"""`ges train`: AdamW + one-cycle, DEQ or BPTT per config, atomic checkpoints, exact resume.

A run directory holds `checkpoint.pt` (model, optimizer, scheduler, step, RNG; written to a temp
file and renamed, so a kill never leaves a broken one), `metrics.jsonl` (one line per log step),
`final.safetensors` (weights for `load_predictor`) and TensorBoard scalars when tensorboard is
installed. SIGINT/SIGTERM finish the current step, write a checkpoint and exit.
Multi-GPU: launch with `torchrun --nproc_per_node N -m ges_core.cli train ...` (DDP).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch

from .config import GESConfig, read_yaml
from .data.augment import AugmentConfig
from .data.datasets import (MixtureDataset, PhotoStereoDataset, ProceduralDataset, ProxyStereoDataset,
                            TeacherStereoDataset, build_dataset)
from .data.photo_stereo import PhotoStereoConfig
from .data.procedural import ProceduralConfig
from .data.proxy_stereo import ProxyStereoConfig
from .data.teacher_stereo import TeacherStereoConfig
from .bench.common import cpu_features
from .losses import distillation_loss, grossly_failed, stereo_loss, unlabelled_loss
from .model.ges import build_model
from .weights import load_model, save_weights, seed_from


@dataclass
class TrainConfig:
    model: Dict[str, Any] = field(default_factory=lambda: {"preset": "small"})
    data: Dict[str, Any] = field(default_factory=lambda: {"dataset": "procedural"})
    augment: Dict[str, Any] = field(default_factory=dict)
    out_dir: str = "runs/train"
    batch_size: int = 4
    steps: int = 1000
    lr: float = 4e-4
    weight_decay: float = 1e-5
    pct_start: float = 0.05
    clip: float = 1.0
    init_weight: float = 1.0
    final_weight: float = 1.0
    correction_gamma: float = 0.8     # weight of the fixed-point corrections (model.fp_corrections), per step back
    loss_beta: float = 1.0            # smooth-L1 knee (px); 0 = L1, full gradient for sub-pixel errors
    photometric_weight: float = 0.0   # SSIM + L1 of the warped right view where sparse-label samples lack a label
    smoothness_weight: float = 0.0    # edge-aware smoothness of those samples' disparity
    curate_bad2: float = 0.0          # curation: an exact-label sample above this bad-2 (%) is left out; 0 = off
    checkpoint_every: int = 100
    log_every: int = 10
    eval_every: int = 0               # 0 = only at the end
    eval_pairs: int = 16
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"
    amp: bool = True                  # bf16/fp16 autocast on CUDA
    cpu_amp: bool = False             # bf16 autocast on a CPU with AVX-512 BF16 or AMX (solver and losses in fp32)
    init_from: str = ""               # weights whose tensors of the same name and shape seed a fresh run
    distill_from: str = ""            # a teacher's weights: its initial and final disparity on the same crops ...
    distill_weight: float = 0.0       # ... weigh this much (L1, px) beside the labels ...
    distill_steps: int = 0            # ... up to this step (a warm-up of the parts that changed)
    max_nan_streak: int = 10
    half_weights: bool = True         # final.safetensors in fp16

    @classmethod
    def load(cls, path: str, overrides: Optional[Dict[str, Any]] = None) -> "TrainConfig":
        raw = read_yaml(path, "training config")
        raw.update(overrides or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"{path}: unknown training options {unknown}; valid: {sorted(names)}")
        return cls(**raw)

    def model_config(self) -> GESConfig:
        m = dict(self.model)
        base = GESConfig.preset(m.pop("preset", "small"))
        return GESConfig.from_dict({**dataclasses.asdict(base), **m})


_GENERATORS = {"procedural": (ProceduralConfig, ProceduralDataset), "photo": (PhotoStereoConfig, PhotoStereoDataset),
               "proxy": (ProxyStereoConfig, ProxyStereoDataset), "teacher": (TeacherStereoConfig, TeacherStereoDataset)}
_UNLABELED = {"proxy", "teacher"}   # sources whose labels are a matcher's guess: kept out of the held-out score


def _generator(name: str, options: Dict[str, Any], *, seed: int, aug: Optional[AugmentConfig], where: str,
               cache: Optional[str]):
    """An on-the-fly pair generator (procedural scenes, or pairs from single photographs) from its config keys;
    `pool: N` draws each sample from N scenes rendered once into the render cache (None: no pool, as for held-out
    pairs)."""
    render_cls, dataset_cls = _GENERATORS[name]
    options = dict(options)
    pool = int(options.pop("pool", 0))
    names = {f.name for f in dataclasses.fields(render_cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ValueError(f"{where}: unknown {name} options {unknown}; valid: {sorted(names | {'pool'})}")
    render = render_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    if cache is None:
        pool = 0
    elif name == "proxy" and not render.label_cache:     # its matcher's labels, once a pair for every run
        render = dataclasses.replace(render, label_cache=cache)
    return dataset_cls(render=render, augment_cfg=aug, seed=seed, pool=pool, cache_dir=cache if pool else None)


def _generated(data: Dict[str, Any], *, seed: int, aug: Optional[AugmentConfig], pooled: bool = True):
    """`dataset: procedural | photo`, or `dataset: mix` with `sources: [{dataset, weight, ...}, ...]`; keys beside
    `sources` (size, disparity range) are shared by every source, which may override them. `render_cache` (default
    runs/render_cache) is where sources with a `pool` keep their scenes."""
    data = dict(data)
    name = data.pop("dataset")
    data.pop("seed", None)
    cache = str(data.pop("render_cache", "runs/render_cache"))
    if not pooled:
        cache = None
    if name != "mix":
        return _generator(name, data, seed=seed, aug=aug, where="data", cache=cache)
    sources = data.pop("sources", None)
    if not sources:
        raise ValueError("data: dataset 'mix' needs sources: [{dataset: procedural|photo|proxy, weight: w, ...}, ...]")
    parts, weights = [], []
    for k, src in enumerate(sources):
        src = dict(src)
        sub = src.pop("dataset", None)
        if sub not in _GENERATORS:
            raise ValueError(f"data.sources[{k}]: dataset must be one of {sorted(_GENERATORS)}, got {sub!r}")
        weights.append(float(src.pop("weight", 1.0)))
        # each source its own stream (seed, k): the same index in two sources draws unrelated scenes
        parts.append(_generator(sub, {**data, **src}, seed=seed * 1000 + k, aug=aug, where=f"data.sources[{k}]",
                                cache=cache))
    return MixtureDataset(parts, weights, seed=seed)


def build_train_dataset(cfg: TrainConfig):
    data = dict(cfg.data)
    name = data.get("dataset", "procedural")
    aug = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.augment.items()})
    if name in _GENERATORS or name == "mix":
        return _generated({**data, "dataset": name}, seed=int(data.get("seed", cfg.seed)), aug=aug)
    data.pop("dataset", None)
    root = data.pop("root", None)
    return build_dataset(name, root, augment_cfg=aug, seed=cfg.seed, **data)


def heldout_dataset(cfg: TrainConfig, seed: Optional[int] = None):
    """Generated pairs never drawn in training (another seed: by default 10,000,000 + the run's), at the training
    size, without augmentation, exact labels only; for a run on a dataset from files, procedural pairs of the
    default size."""
    data = {"dataset": "procedural", **cfg.data}
    if data["dataset"] == "mix":   # scored on exact labels only: a proxy source's are a matcher's guess
        sources = [s for s in data.get("sources") or [] if s.get("dataset") not in _UNLABELED]
        data = {**data, "sources": sources} if sources else {"dataset": "procedural"}
    elif data["dataset"] not in _GENERATORS or data["dataset"] in _UNLABELED:
        data = {"dataset": "procedural"}
    return _generated(data, seed=10_000_000 + cfg.seed if seed is None else seed, aug=None, pooled=False)


def to_batch(samples: List[Dict[str, Any]], device: torch.device):
    def stack(key, dtype):
        return torch.from_numpy(np.stack([s[key] for s in samples])).to(device=device, dtype=dtype)
    left = stack("left", torch.float32).permute(0, 3, 1, 2)
    right = stack("right", torch.float32).permute(0, 3, 1, 2)
    disp = stack("disparity", torch.float32).unsqueeze(1)
    valid = stack("valid", torch.bool).unsqueeze(1)
    return left, right, disp, valid


def batch_max_error(samples: List[Dict[str, Any]], device: torch.device) -> Optional[torch.Tensor]:
    """(B, 1, 1, 1) per-sample loss clamp (px) from the samples' `max_error`, or None when no sample has one."""
    values = [float(s.get("max_error", float("inf"))) for s in samples]
    if all(np.isinf(values)):
        return None
    return torch.tensor(values, device=device).view(-1, 1, 1, 1)


def batch_sparse_labels(samples: List[Dict[str, Any]], device: torch.device) -> torch.Tensor:
    """(B, 1, 1, 1) bool: the samples whose labels cover only part of the image (real pairs, matcher or teacher)."""
    return torch.tensor([bool(s.get("sparse_labels", False)) for s in samples], device=device).view(-1, 1, 1, 1)


class _IndexStream(torch.utils.data.Sampler):
    """Sample indices from `start` on: the same sequence whether or not the run was interrupted.
    Finite datasets are reshuffled each epoch with a generator seeded by (seed, epoch)."""

    def __init__(self, length: int, start: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.length, self.start, self.seed, self.rank, self.world = length, start, seed, rank, world

    def __iter__(self) -> Iterator[int]:
        i = self.start
        while True:
            global_i = i * self.world + self.rank
            if self.length >= 10 ** 8:     # procedural: the index is the sample
                yield global_i
            else:
                epoch, pos = divmod(global_i, self.length)
                perm = np.random.default_rng([self.seed, epoch]).permutation(self.length)
                yield int(perm[pos])
            i += 1


def _collate(samples):
    return samples


def _stop_workers(batches) -> None:
    """End the data workers now, through the loader's own shutdown (they exit on its sentinel). Left to
    interpreter exit, multiprocessing would SIGTERM them, which they ignore, and wait for them forever."""
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def _init_worker(_worker_id: int) -> None:
    """Ctrl-C, `timeout` and systemd signal the whole process group. A data worker killed by SIGTERM
    would take the trainer down mid-step without its checkpoint; the trainer alone handles the signal
    and shuts its workers down. An orphaned worker still exits: it watches its parent.
    Workers render in parallel with each other, so each keeps OpenCV to one thread (13 workers with
    OpenCV's default pool each would oversubscribe a 16-core machine)."""
    import cv2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cv2.setNumThreads(1)


class RunDirBusy(OSError):
    """Another trainer is writing this run directory."""


def _lock_run_dir(out: Path):
    """An exclusive lock on `out/.lock` (released when the returned file is closed or the process ends). Two trainers
    on one directory overwrite each other's checkpoint.pt: seen when a resumed run started before the stopping one
    had written its last checkpoint (it resumed from an older one, and the stopping run wrote a newer one after)."""
    import fcntl
    f = open(out / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise RunDirBusy(f"{out} is in use by another trainer (pid {holder}); wait until it has stopped (on SIGTERM "
                         f"it finishes its step and writes its checkpoint), then resume, or use another out_dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str) -> Dict[str, Any]:
    try:
        # weights_only: the restricted unpickler that loads tensors and plain containers only
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except Exception as exc:  # torch raises several types for a damaged zip/pickle stream
        raise ValueError(f"{path}: corrupt or unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    for key in ("model", "optimizer", "scheduler", "step", "config"):
        if key not in state:
            raise ValueError(f"{path}: checkpoint lacks {key!r}; not a ges checkpoint")
    return state


class Trainer:
    def __init__(self, cfg: TrainConfig, *, resume: Optional[str] = None, progress: bool = True,
                 reschedule: bool = False) -> None:
        self.cfg = cfg
        self.progress = progress
        self.rank, self.world = _init_distributed()
        if self.world == 1:
            self.device = pick_device(cfg.device)
        else:   # torchrun: one GPU per process, or CPU processes over gloo
            local = int(os.environ.get("LOCAL_RANK", self.rank))
            self.device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
        torch.manual_seed(cfg.seed)
        self.model_cfg = cfg.model_config()
        self.model = build_model(self.model_cfg).to(self.device)
        if cfg.init_from and not resume:
            copied, total = seed_from(self.model, cfg.init_from)
            _warn(f"{copied} of the model's {total} tensors seeded from {cfg.init_from}")
        self.teacher = None
        if cfg.distill_weight > 0 and cfg.distill_steps > 0:
            if not cfg.distill_from:
                raise ValueError("distill_weight and distill_steps need distill_from (the teacher's weights)")
            self.teacher = load_model(cfg.distill_from).to(self.device).requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=cfg.pct_start,
            cycle_momentum=False, anneal_strategy="linear")
        self.step = 0
        self.nan_skipped = 0
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            state = load_checkpoint(resume)
            self.model.load_state_dict(state["model"])
            schedule = [{k: g[k] for k in ("initial_lr", "max_lr", "min_lr")} for g in self.optimizer.param_groups]
            self.optimizer.load_state_dict(state["optimizer"])
            total = state["scheduler"].get("total_steps")
            if total is not None and total != cfg.steps and not reschedule:
                raise ValueError(f"{resume} was written by a run of {total} steps (its one-cycle schedule); "
                                 f"resume with steps: {total}, not {cfg.steps} (or pass --reschedule)")
            if total == cfg.steps or total is None:
                self.scheduler.load_state_dict(state["scheduler"])
            else:
                # a new run length: the one-cycle shape of this config (its steps and its peak lr; the loaded
                # optimizer state carries the old run's peak) stretched to cfg.steps, continued from this step
                for group, peaks in zip(self.optimizer.param_groups, schedule):
                    group.update(peaks)
                self._advance_schedule(int(state["step"]))
                _warn(f"schedule changed from {total} to {cfg.steps} steps; lr now {self.scheduler.get_last_lr()[0]:.2e}")
            self.step = int(state["step"])
            self.nan_skipped = int(state.get("nan_skipped", 0))
            torch.set_rng_state(state["rng"])
        self.stop_requested = False
        self._heldout: Optional[List[Dict[str, Any]]] = None

    def _advance_schedule(self, steps: int) -> None:
        """Move the lr schedule on without an optimizer step: replaying it on resume, or past a skipped step.
        Both are deliberate, so torch's warning about calling them out of order is silenced here only."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            for _ in range(steps):
                self.scheduler.step()

    # ------------------------------------------------------------------ state
    def state(self) -> Dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "step": self.step, "rng": torch.get_rng_state(),
                "nan_skipped": self.nan_skipped, "config": self.model_cfg.to_json()}

    def checkpoint(self) -> Path:
        path = self.out / "checkpoint.pt"
        if self.rank == 0:
            save_checkpoint(path, self.state())
        return path

    def export(self, path: Optional[Path] = None) -> Path:
        path = path or self.out / "final.safetensors"
        if self.rank == 0:
            save_weights(path, _unwrap(self.model), self.model_cfg, half=self.cfg.half_weights,
                         metadata={"train_step": str(self.step)})
        return path

    # -------------------------------------------------------------- training
    def _loader(self):
        dataset = build_train_dataset(self.cfg)
        sampler = _IndexStream(len(dataset), self.step * self.cfg.batch_size, self.cfg.seed, self.rank, self.world)
        kw = {}
        if self.cfg.num_workers > 0:
            # fork after OpenCV hangs workers; spawn is safe
            kw = {"num_workers": self.cfg.num_workers, "multiprocessing_context": "spawn", "prefetch_factor": 4,
                  "persistent_workers": True, "worker_init_fn": _init_worker}
        return torch.utils.data.DataLoader(dataset, batch_size=self.cfg.batch_size, sampler=sampler,
                                           collate_fn=_collate, **kw)

    def _handle_signals(self):
        def handler(signum, _frame):
            self.stop_requested = True
        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return old

    def train(self, until: Optional[int] = None) -> Dict[str, Any]:
        """Train to cfg.steps (or stop early at step `until`, as an interruption would)."""
        cfg = self.cfg
        last = cfg.steps if until is None else min(until, cfg.steps)
        model = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        lock = _lock_run_dir(self.out) if self.rank == 0 else None
        model.train()
        old_handlers = self._handle_signals()
        writer = _tensorboard(self.out) if self.rank == 0 else None
        log = open(self.out / "metrics.jsonl", "a")
        if self.device.type == "cuda":
            use_amp = cfg.amp
            amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
        else:
            # bf16 on a CPU pays only where it has bf16 arithmetic; elsewhere it is emulated and slower
            use_amp = cfg.cpu_amp and any(f in cpu_features().split() for f in ("avx512_bf16", "amx_bf16"))
            amp_dtype = torch.bfloat16
            if cfg.cpu_amp and not use_amp:
                _warn("cpu_amp: this CPU has no AVX-512 BF16 or AMX; training in float32")
        bar = _progress(total=cfg.steps, initial=self.step, enabled=self.progress and self.rank == 0)
        nan_streak, t0, steps_done = 0, time.time(), 0
        window: List[Dict[str, float]] = []
        batches = None
        try:
            batches = iter(self._loader())
            while self.step < last and not self.stop_requested:
                t_start = time.perf_counter()
                samples = next(batches)
                left, right, disp, valid = to_batch(samples, self.device)
                t_data = time.perf_counter() - t_start
                with torch.autocast(self.device.type, dtype=amp_dtype, enabled=use_amp):
                    out = model(left, right)
                drop = None
                if cfg.curate_bad2 > 0:
                    # the pairs the current model fails grossly, often ones no matcher can solve (a texture
                    # repeated past the disparity range, a surface without texture); pseudo-labels have their clamp
                    drop = grossly_failed(out.disparity.detach(), disp, valid & (disp < self.model_cfg.max_disp),
                                          cfg.curate_bad2)
                    drop = drop & ~batch_sparse_labels(samples, self.device)
                loss, stats = stereo_loss(out, disp, valid, max_disp=self.model_cfg.max_disp,
                                          init_weight=cfg.init_weight, final_weight=cfg.final_weight,
                                          correction_gamma=cfg.correction_gamma, beta=cfg.loss_beta,
                                          max_error=batch_max_error(samples, self.device), drop=drop)
                if drop is not None:
                    stats["curated"] = float(drop.float().mean())
                if self.teacher is not None and self.step < cfg.distill_steps:
                    with torch.no_grad(), torch.autocast(self.device.type, dtype=amp_dtype, enabled=use_amp):
                        taught = self.teacher(left, right)
                    extra, parts = distillation_loss(out, taught, torch.ones_like(valid), weight=cfg.distill_weight)
                    loss = loss + extra
                    stats.update(parts)
                if cfg.photometric_weight > 0 or cfg.smoothness_weight > 0:
                    extra, parts = unlabelled_loss(out, left, right, valid, batch_sparse_labels(samples, self.device),
                                                   photometric_weight=cfg.photometric_weight,
                                                   smoothness_weight=cfg.smoothness_weight)
                    loss = loss + extra
                    stats.update(parts)
                self.optimizer.zero_grad(set_to_none=True)
                if not torch.isfinite(loss):
                    self.nan_skipped += 1
                    nan_streak += 1
                    _warn(f"step {self.step}: non-finite loss, step skipped ({self.nan_skipped} so far)")
                    if nan_streak >= cfg.max_nan_streak:
                        raise RuntimeError(f"{nan_streak} non-finite losses in a row at step {self.step}; "
                                           f"last checkpoint: {self.out / 'checkpoint.pt'}")
                    self.step += 1
                    self._advance_schedule(1)
                    continue
                nan_streak = 0
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                steps_done += 1
                stats.update(loss=float(loss.detach()), grad_norm=float(grad_norm), iters=out.iters,
                             residual=out.residuals[-1] if out.residuals else float("nan"))
                # a step's wall time (checkpoints and evaluations excluded) and the part of it spent waiting
                # for the data workers: on a GPU, data_s near step_s means the workers cannot keep up
                stats.update(data_s=t_data, step_s=time.perf_counter() - t_start)
                window.append(stats)
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    avg = {k: float(np.nanmean([w[k] for w in window])) for k in window[0]}
                    avg.update(step=self.step, lr=self.scheduler.get_last_lr()[0],
                               steps_per_s=steps_done / max(1e-6, time.time() - t0), time=time.time(),
                               nan_skipped=self.nan_skipped)
                    window = []
                    if self.rank == 0:
                        log.write(json.dumps(avg) + "\n")
                        log.flush()
                        if writer is not None:
                            for k, v in avg.items():
                                writer.add_scalar(f"train/{k}", v, self.step)
                    bar.set_postfix(loss=f"{avg['loss']:.3f}", epe=f"{avg['epe']:.2f}", it_s=f"{avg['steps_per_s']:.2f}")
                if self.step % cfg.checkpoint_every == 0:
                    self.checkpoint()
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.rank == 0:
                    self._log_eval(log, writer)
            self.checkpoint()
            if self.step >= cfg.steps:
                self.export()
                if self.rank == 0:
                    self._log_eval(log, writer)
        finally:
            _stop_workers(batches)
            bar.close()
            log.close()
            if writer is not None:
                writer.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
            if lock is not None:
                lock.close()
        return {"step": self.step, "stopped": self.stop_requested, "nan_skipped": self.nan_skipped}

    def _heldout_pairs(self) -> List[Dict[str, Any]]:
        """Rendered once per run. On the H100 run every evaluation paused training for 70-100 s (8 of them, ~9 of
        its 25 minutes): the pairs were rendered anew each time, in the main process, while 13 data workers held
        the 16 cores."""
        if self._heldout is None:
            ds = heldout_dataset(self.cfg)
            self._heldout = [ds[i] for i in range(self.cfg.eval_pairs)]
        return self._heldout

    def _log_eval(self, log, writer) -> None:
        pairs = self._heldout_pairs()
        res = evaluate_heldout(_unwrap(self.model), pairs, len(pairs), self.device)
        res.update(step=self.step, kind="eval")
        log.write(json.dumps(res) + "\n")
        log.flush()
        if writer is not None:
            for k, v in res.items():
                if isinstance(v, float):
                    writer.add_scalar(f"heldout/{k}", v, self.step)
            writer.add_image("heldout/disparity", disparity_preview(_unwrap(self.model), pairs[0], self.device),
                             self.step, dataformats="HWC")
        self.model.train()


@torch.no_grad()
def evaluate_heldout(model, dataset, pairs: int, device: torch.device) -> Dict[str, float]:
    was_training = model.training
    model.eval()
    epe, bad2, init_epe, epe_all, bad2_all = [], [], [], [], []
    for i in range(pairs):
        left, right, disp, valid = to_batch([dataset[i]], device)
        out = model(left, right)
        mask = valid & (disp < model.config.max_disp)
        # heldout_*: pixels whose match lies inside the right image (comparable across runs whatever the data
        # supervises); *_all: every pixel with ground truth, the left border band included
        xs = torch.arange(disp.shape[-1], device=device, dtype=disp.dtype)
        in_view = mask & (xs - disp >= 0)
        err_all = (out.disparity - disp).abs()
        err = err_all[in_view]
        epe.append(float(err.mean()))
        bad2.append(float((err > 2).float().mean() * 100))
        init_epe.append(float((out.init_disparity - disp).abs()[in_view].mean()))
        epe_all.append(float(err_all[mask].mean()))
        bad2_all.append(float((err_all[mask] > 2).float().mean() * 100))
    model.train(was_training)
    return {"heldout_epe": float(np.mean(epe)), "heldout_bad2": float(np.mean(bad2)),
            "heldout_init_epe": float(np.mean(init_epe)), "heldout_epe_all": float(np.mean(epe_all)),
            "heldout_bad2_all": float(np.mean(bad2_all))}


@torch.no_grad()
def disparity_preview(model, sample: Dict[str, Any], device: torch.device) -> np.ndarray:
    """Left image | predicted | true disparity, one colour scale, as an (H, 3W, 3) uint8 RGB strip."""
    import cv2
    was_training = model.training
    model.eval()
    left, right, disp, valid = to_batch([sample], device)
    pred = model(left, right).disparity[0, 0].cpu().numpy()
    model.train(was_training)
    gt = sample["disparity"]
    hi = max(float(gt.max()), 1.0)

    def color(d):
        return cv2.applyColorMap((np.clip(d / hi, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    return np.concatenate([sample["left"], color(pred), color(np.where(sample["valid"], gt, 0))], axis=1)


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _init_distributed():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    return rank, world


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(str(out / "tb"))
    except Exception:  # tensorboard is an optional extra
        return None


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", unit="step", dynamic_ncols=True)


def _warn(msg: str) -> None:
    import sys
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def training_report(run_dirs: Union[str, Sequence[str]], png: Optional[str] = None) -> Dict[str, Any]:
    """Summarise a run's metrics.jsonl (steps, wall time, losses, held-out EPE) and plot its curves. Several
    directories are the stages of one run, in order (a later stage resumed from the earlier one's checkpoint)."""
    dirs = [run_dirs] if isinstance(run_dirs, str) else list(run_dirs)
    rows, starts = [], []
    for d in dirs:
        path = Path(d) / "metrics.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"no metrics.jsonl in {d}")
        stage = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if stage and rows:
            starts.append((min(r["step"] for r in stage), Path(d).name))
        rows += stage
    run_dir = " + ".join(dirs)
    train = [r for r in rows if "loss" in r]
    evals = list({r["step"]: r for r in rows if r.get("kind") == "eval"}.values())   # one per step
    if not train:
        raise ValueError(f"{run_dir}: metrics.jsonl has no training rows")
    # wall time: sum of gaps between log lines, ignoring pauses between sittings (> 10 min)
    times = [r["time"] for r in train]
    hours = sum(b - a for a, b in zip(times, times[1:]) if b - a < 600) / 3600
    summary = {"steps": train[-1]["step"], "hours": hours, "final_loss": train[-1]["loss"],
               "final_train_epe": train[-1]["epe"], "evals": [(e["step"], e["heldout_epe"], e["heldout_bad2"]) for e in evals]}
    if png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
        steps = [r["step"] for r in train]
        ax[0].plot(steps, [r["loss"] for r in train], lw=0.8, label="training loss")
        ax[0].plot(steps, [r["epe"] for r in train], lw=0.8, label="training EPE (px)")
        ax[0].set_yscale("log")
        ax[0].set_xlabel("step")
        ax[0].legend()
        ax[0].grid(alpha=0.3)
        if evals:
            es = [e["step"] for e in evals]
            ax[1].plot(es, [e["heldout_epe"] for e in evals], marker="o", label="held-out EPE (final)")
            ax[1].plot(es, [e["heldout_init_epe"] for e in evals], marker="o", label="held-out EPE (volumetric init)")
            both = [e for e in evals if "heldout_epe_all" in e]
            if both:
                ax[1].plot([e["step"] for e in both], [e["heldout_epe_all"] for e in both], marker="^",
                           label="held-out EPE (final, border band included)")
            ax2 = ax[1].twinx()
            ax2.plot(es, [e["heldout_bad2"] for e in evals], marker="s", color="gray", label="held-out bad-2 %")
            ax2.set_ylabel("bad-2 %")
            ax[1].set_xlabel("step")
            ax[1].set_ylabel("EPE (px)")
            ax[1].legend(loc="upper right")
            ax[1].grid(alpha=0.3)
        for step, name in starts:   # a later stage may change the data, so its held-out set too
            for a in ax:
                a.axvline(step, color="k", ls=":", lw=0.8)
            ax[1].annotate(name, (step, 0.02), xycoords=("data", "axes fraction"), rotation=90, va="bottom",
                           ha="right", fontsize=7)
        fig.suptitle(f"{run_dir}: {summary['steps']} steps, {hours:.2f} h")
        fig.tight_layout()
        fig.savefig(png, dpi=100)
        plt.close(fig)
    return summary
