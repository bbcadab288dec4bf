"""The trainer at tiny size: learning, exact resume, SIGTERM/SIGKILL safety, NaN handling, corrupt checkpoints."""
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from ges_core.train import TrainConfig, Trainer, evaluate_heldout, heldout_dataset, load_checkpoint

TINY = {
    "model": {"preset": "tiny", "train_iters": 2},
    "data": {"dataset": "procedural", "height": 32, "width": 64, "max_disp": 12, "min_scene_disp": 2, "objects": [2, 6]},
    "augment": {"occlusion_prob": 0.0},
    "batch_size": 2, "lr": 0.002, "checkpoint_every": 2, "log_every": 1, "eval_every": 0, "eval_pairs": 4,
    "num_workers": 0, "device": "cpu",
}


def cfg_file(tmp_path, name="cfg.yaml", **over):
    d = {**TINY, "out_dir": str(tmp_path / "run"), **over}
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d))
    return str(p)


def losses(run: Path):
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]


def test_training_lowers_heldout_epe(tmp_path):
    cfg = TrainConfig.load(cfg_file(tmp_path, steps=150))
    tr = Trainer(cfg, progress=False)
    before = evaluate_heldout(tr.model, heldout_dataset(cfg), 8, tr.device)["heldout_epe"]
    tr.train()
    res = evaluate_heldout(tr.model, heldout_dataset(cfg), 8, tr.device)
    after = res["heldout_epe"]
    assert after < 0.8 * before
    # the data leaves the left border band unsupervised: "all pixels with ground truth" are the in-view ones
    assert res["heldout_epe_all"] == pytest.approx(after)
    assert (Path(cfg.out_dir) / "final.safetensors").exists()
    from ges_core import load_predictor
    assert load_predictor(str(Path(cfg.out_dir) / "final.safetensors")).config.max_disp == 32


def test_resume_is_exact(tmp_path):
    a = TrainConfig.load(cfg_file(tmp_path, "a.yaml", steps=6, out_dir=str(tmp_path / "a")))
    Trainer(a, progress=False).train()
    b = TrainConfig.load(cfg_file(tmp_path, "b.yaml", steps=6, out_dir=str(tmp_path / "b")))
    Trainer(b, progress=False).train(until=3)          # stops at 3 as an interruption would
    tr = Trainer(b, resume=str(tmp_path / "b" / "checkpoint.pt"), progress=False)
    assert tr.step == 3
    tr.train()
    la = {r["step"]: r["loss"] for r in losses(tmp_path / "a")}
    lb = {r["step"]: r["loss"] for r in losses(tmp_path / "b")}
    for step in (4, 5, 6):
        assert la[step] == lb[step], step
    with pytest.raises(ValueError, match="resume with steps: 6"):
        b.steps = 9
        Trainer(b, resume=str(tmp_path / "b" / "checkpoint.pt"), progress=False)
    b.lr = 0.01
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr2 = Trainer(b, resume=str(tmp_path / "b" / "checkpoint.pt"), progress=False, reschedule=True)
    # replaying the schedule is not the misuse torch warns about (it did, once per resume)
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    assert tr2.step == 6 and tr2.scheduler.total_steps == 9
    # the new schedule is this config's (steps and peak lr), at step 6: what a fresh 9-step run has there
    ref = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=b.lr)
    ref_sched = torch.optim.lr_scheduler.OneCycleLR(ref, max_lr=b.lr, total_steps=9, pct_start=b.pct_start,
                                                    cycle_momentum=False, anneal_strategy="linear")
    for _ in range(6):
        ref.step()
        ref_sched.step()
    assert tr2.scheduler.get_last_lr()[0] == pytest.approx(ref_sched.get_last_lr()[0])
    assert tr2.optimizer.param_groups[0]["lr"] == pytest.approx(ref_sched.get_last_lr()[0])
    sa, sb = load_checkpoint(str(tmp_path / "a" / "checkpoint.pt")), load_checkpoint(str(tmp_path / "b" / "checkpoint.pt"))
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])


def _spawn(cfg_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ges_core.cli", "train", "--config", cfg_path, "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _wait_for(path: Path, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not path.exists():
        time.sleep(0.1)
    assert path.exists(), f"{path} never appeared"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_run_leaves_a_usable_checkpoint(tmp_path, sig):
    path = cfg_file(tmp_path, steps=100000, checkpoint_every=3)
    p = _spawn(path)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    try:
        _wait_for(ckpt)
        time.sleep(1.0)
        p.send_signal(sig)
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    if sig == signal.SIGTERM:
        assert p.returncode == 0 and "interrupted" in out
    state = load_checkpoint(str(ckpt))            # never a half-written file
    assert state["step"] > 0
    cfg = TrainConfig.load(path)
    tr = Trainer(cfg, resume=str(ckpt), progress=False)
    tr.train(until=state["step"] + 2)
    assert tr.step == state["step"] + 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_to_the_process_group_with_data_workers(tmp_path, sig):
    """Ctrl-C, `timeout` and systemd signal the DataLoader workers too; the trainer still finishes its step
    and checkpoints."""
    path = cfg_file(tmp_path, steps=100000, checkpoint_every=1000, num_workers=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "ges_core.cli", "train", "--config", path, "--no-progress"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    try:
        end = time.monotonic() + 180
        while time.monotonic() < end and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
            time.sleep(0.2)
        os.killpg(p.pid, sig)
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 0 and "interrupted" in out, out[-2000:]
    state = load_checkpoint(str(tmp_path / "run" / "checkpoint.pt"))
    assert state["step"] >= 3          # written on the signal, not at checkpoint_every


def test_nan_losses_are_skipped_then_stop(tmp_path, monkeypatch):
    import ges_core.train as T
    real = T.stereo_loss
    calls = {"n": 0}

    def flaky(out, *a, **k):
        calls["n"] += 1
        loss, stats = real(out, *a, **k)
        return (loss * float("nan"), stats) if calls["n"] in (2, 3) else (loss, stats)
    monkeypatch.setattr(T, "stereo_loss", flaky)
    cfg = TrainConfig.load(cfg_file(tmp_path, steps=5))
    res = Trainer(cfg, progress=False).train()
    assert res["nan_skipped"] == 2 and res["step"] == 5

    monkeypatch.setattr(T, "stereo_loss", lambda out, *a, **k: (real(out, *a, **k)[0] * float("nan"), {}))
    cfg = TrainConfig.load(cfg_file(tmp_path, "c2.yaml", steps=50, max_nan_streak=3, out_dir=str(tmp_path / "run2")))
    with pytest.raises(RuntimeError, match="3 non-finite losses.*checkpoint"), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(cfg, progress=False).train()
    # a skipped step moves the schedule on deliberately: no torch warning about the order of the two
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]


def test_corrupt_checkpoint_is_detected(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(str(bad))
    with pytest.raises(FileNotFoundError):
        load_checkpoint(str(tmp_path / "none.pt"))


def test_config_errors(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("stepz: 3\n")
    with pytest.raises(ValueError, match="stepz"):
        TrainConfig.load(str(p))


def test_torchrun_two_processes_on_cpu(tmp_path):
    """The same command under torchrun: DistributedDataParallel over gloo, each rank its own samples."""
    torchrun = Path(sys.executable).parent / "torchrun"
    assert torchrun.exists()
    path = cfg_file(tmp_path, steps=2, checkpoint_every=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "ges_core.cli", "train",
                        "--config", path, "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    state = load_checkpoint(str(tmp_path / "run" / "checkpoint.pt"))
    assert state["step"] == 2 and not any(k.startswith("module.") for k in state["model"])


def test_disparity_preview_strip():
    from ges_core import GESConfig, build_model
    from ges_core.train import disparity_preview
    model = build_model(GESConfig.preset("tiny"))
    sample = heldout_dataset(TrainConfig(**{**TINY, "out_dir": "unused"}))[0]
    strip = disparity_preview(model, sample, torch.device("cpu"))
    assert strip.shape == (32, 3 * 64, 3) and strip.dtype.name == "uint8"


def test_run_with_data_workers_exits_when_done(tmp_path):
    """A finished run with DataLoader workers exits (its workers ignore SIGTERM, so they must be shut down
    before interpreter exit, not terminated by it)."""
    path = cfg_file(tmp_path, steps=3, checkpoint_every=1000, num_workers=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "ges_core.cli", "train", "--config", path, "--no-progress"],
                       capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0 and "(done)" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    # the log says where each step's time went: waiting for the workers is part of the step
    rows = losses(tmp_path / "run")
    assert len(rows) == 3 and all(0 < row["data_s"] < row["step_s"] for row in rows), rows


def test_training_report_joins_the_stages_of_a_run(tmp_path):
    from ges_core.train import training_report
    stage1, stage2 = tmp_path / "s1", tmp_path / "s2"
    for d, steps in ((stage1, range(10, 40, 10)), (stage2, range(40, 70, 10))):
        d.mkdir()
        rows = [{"step": s, "loss": 1.0 / s, "epe": 2.0, "time": 1000.0 + s} for s in steps]
        rows.append({"step": steps[-1], "kind": "eval", "heldout_epe": 3.0, "heldout_bad2": 9.0, "heldout_init_epe": 4.0})
        rows.append(rows[-1])              # a finished run logs its final evaluation twice
        (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    png = tmp_path / "curve.png"
    s = training_report([str(stage1), str(stage2)], str(png))
    assert s["steps"] == 60 and [e[0] for e in s["evals"]] == [30, 60]
    assert s["hours"] == pytest.approx(50 / 3600) and png.stat().st_size > 0
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        training_report([str(stage1), str(tmp_path / "missing")])


def test_a_second_trainer_on_the_same_run_dir_is_refused(tmp_path):
    """Two trainers writing one checkpoint.pt corrupt the run's lineage; the second one stops with a clear error,
    writes nothing, and the directory is free again once the first is done."""
    from ges_core.train import RunDirBusy, _lock_run_dir
    cfg = TrainConfig.load(cfg_file(tmp_path, steps=2))
    run = Path(cfg.out_dir)
    run.mkdir(parents=True)
    held = _lock_run_dir(run)          # stands in for a trainer that is still finishing
    try:
        with pytest.raises(RunDirBusy, match=rf"in use by another trainer \(pid {os.getpid()}\)"):
            Trainer(cfg, progress=False).train()
        assert not (run / "checkpoint.pt").exists()
    finally:
        held.close()
    assert Trainer(cfg, progress=False).train()["step"] == 2


def test_loss_clamp_gives_no_gradient_past_max_error():
    from ges_core.losses import stereo_loss
    from ges_core.model.ges import GESOutput
    pred = torch.zeros(2, 1, 4, 8, requires_grad=True)
    target = torch.zeros(2, 1, 4, 8)
    target[:, :, :, :4] = 3.0          # errors of 3 px ...
    target[:, :, :, 4:] = 30.0         # ... and of 30 px (a teacher's gross error)
    valid = torch.ones_like(target, dtype=torch.bool)
    out = GESOutput(pred, pred, torch.ones_like(pred), [], 1, torch.zeros(2, 1), False)
    loss, _ = stereo_loss(out, target, valid, max_disp=64, max_error=torch.tensor([10.0, float("inf")]).view(2, 1, 1, 1))
    loss.backward()
    grad = pred.grad
    assert (grad[0, :, :, 4:] == 0).all() and (grad[0, :, :, :4] != 0).all()   # clamped sample
    assert (grad[1] != 0).all()                                                  # exact labels: every pixel
    unclamped, _ = stereo_loss(out, target, valid, max_disp=64)
    assert float(unclamped) > float(loss)


def test_loss_beta_zero_gives_sub_pixel_errors_the_full_gradient():
    """loss_beta 0 (L1): a 0.25 px error pulls as hard as a 3 px one; smooth-L1's knee at 1 px pulls it a quarter."""
    from ges_core.losses import stereo_loss
    from ges_core.model.ges import GESOutput
    target = torch.zeros(1, 1, 2, 4)
    target[..., :2] = 0.25
    target[..., 2:] = 3.0
    valid = torch.ones_like(target, dtype=torch.bool)
    grads = {}
    for beta in (1.0, 0.0):
        pred = torch.zeros_like(target, requires_grad=True)
        out = GESOutput(pred, pred, torch.ones_like(pred), [], 1, torch.zeros(1, 1), False)
        stereo_loss(out, target, valid, max_disp=64, beta=beta)[0].backward()
        g = pred.grad.abs()
        grads[beta] = float(g[..., :2].mean() / g[..., 2:].mean())
    assert grads[1.0] == pytest.approx(0.25) and grads[0.0] == pytest.approx(1.0)
    from ges_core.train import TrainConfig
    from pathlib import Path
    config = Path(__file__).resolve().parents[2] / "config" / "train" / "l1_s10.yaml"
    assert TrainConfig.load(str(config)).loss_beta == 0.0
    assert TrainConfig().loss_beta == 1.0          # earlier stages' configs keep their loss


def _textured(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(1, 3, h, w // 4, generator=g) * 255
    return torch.nn.functional.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)


def test_photometric_loss_is_lowest_at_the_true_disparity_and_masks_what_the_right_view_cannot_show():
    from ges_core.losses import photometric_loss, visible_in_right, warp_right
    h, w, d = 16, 64, 5.0
    left = _textured(h, w)
    right = torch.zeros_like(left)
    right[..., : w - int(d)] = left[..., int(d):]          # the right view: the scene shifted d px to the left
    truth = torch.full((1, 1, h, w), d)
    assert torch.allclose(warp_right(right, truth)[..., int(d):], left[..., int(d):], atol=1e-3)
    everywhere = torch.ones_like(truth, dtype=torch.bool)
    at_truth = float(photometric_loss(left, right, truth, everywhere))
    assert at_truth < 1e-3
    for wrong in (d - 2, d + 1, d + 3):
        assert float(photometric_loss(left, right, torch.full_like(truth, wrong), everywhere)) > 20 * at_truth + 0.01
    vis = visible_in_right(truth)
    assert not vis[..., :5].any() and vis[..., 5:].all()          # the left border band: matches leave the image
    step = torch.full((1, 1, 1, 40), 2.0)
    step[..., 20:30] = 8.0                                        # a nearer object hides the background to its left
    vis = visible_in_right(step)[0, 0, 0]
    assert not vis[15:20].any() and vis[2:13].all() and vis[20:].all()


def test_unlabelled_loss_pulls_only_where_sparse_samples_lack_a_label():
    from ges_core.losses import unlabelled_loss
    from ges_core.model.ges import GESOutput
    h, w = 16, 64
    left = _textured(h, w).repeat(2, 1, 1, 1)
    right = torch.roll(left, -4, dims=-1)
    pred = torch.full((2, 1, h, w), 2.0, requires_grad=True)     # wrong everywhere (the truth is 4 px)
    valid = torch.zeros(2, 1, h, w, dtype=torch.bool)
    valid[..., :, 32:] = True                                     # labelled on the right half
    sparse = torch.tensor([True, False]).view(2, 1, 1, 1)         # a real pair's crop, and a synthetic one
    out = GESOutput(pred, pred, torch.ones_like(pred), [], 1, torch.zeros(2, 1), False)
    loss, parts = unlabelled_loss(out, left, right, valid, sparse, photometric_weight=1.0, smoothness_weight=0.0)
    loss.backward()
    g = pred.grad.abs()
    assert parts["photometric"] > 0 and g[0, ..., 8:30].sum() > 0
    # labelled pixels get none (but the one beside the unlabelled half, inside its 3x3 SSIM window)
    assert (g[0, ..., 33:] == 0).all() and (g[1] == 0).all()
    # smoothness: a flat disparity costs nothing, a ragged one does, and only the sparse-label samples count
    flat, _ = unlabelled_loss(GESOutput(pred, pred, pred, [], 1, torch.zeros(2, 1), False), left, right, valid,
                              sparse, photometric_weight=0.0, smoothness_weight=1.0)
    ragged = pred.detach() + torch.rand(2, 1, h, w)
    bumpy, _ = unlabelled_loss(GESOutput(ragged, ragged, ragged, [], 1, torch.zeros(2, 1), False), left, right,
                               valid, sparse, photometric_weight=0.0, smoothness_weight=1.0)
    assert float(flat) == 0.0 and float(bumpy) > 0.01


def test_training_with_the_photometric_terms_logs_them(tmp_path, monkeypatch):
    """A sparse-label source (procedural pairs flagged as such) in a tiny run: the terms enter the loss and the log."""
    import ges_core.train as train
    from ges_core.data.datasets import ProceduralDataset
    from ges_core.train import batch_sparse_labels
    sample = ProceduralDataset(sparse_labels=True)[0]
    assert sample["sparse_labels"] and "sparse_labels" not in ProceduralDataset()[0]
    assert batch_sparse_labels([sample, ProceduralDataset()[0]], torch.device("cpu")).view(-1).tolist() == [True, False]
    cfg = TrainConfig.load(cfg_file(tmp_path, steps=2, photometric_weight=1.0, smoothness_weight=0.01))
    build = train.build_train_dataset

    class HalfLabelled:                      # as a real pair's crop: labels on the right half only
        def __init__(self, dataset):
            self.dataset = dataset

        def __len__(self):
            return len(self.dataset)

        def __getitem__(self, i):
            s = dict(self.dataset[i], sparse_labels=True)
            s["valid"] = s["valid"].copy()
            s["valid"][:, : s["valid"].shape[1] // 2] = False
            return s

    def flagged(c):
        return HalfLabelled(build(c))
    monkeypatch.setattr(train, "build_train_dataset", flagged)
    Trainer(cfg, progress=False).train()
    rows = losses(Path(cfg.out_dir))
    assert rows and all(r["photometric"] > 0 and r["smoothness"] >= 0 for r in rows)


def test_curation_leaves_grossly_failed_exact_label_samples_out_of_the_loss(tmp_path):
    from ges_core.losses import grossly_failed, stereo_loss
    from ges_core.model.ges import GESOutput
    target = torch.full((3, 1, 4, 10), 5.0)
    pred = target.clone()
    pred[0, ..., :6] += 3.0             # 60 % of its pixels off by 3 px
    pred[1, ..., :2] += 3.0             # 20 %
    pred[2] += 0.5                      # none past 2 px
    mask = torch.ones_like(target, dtype=torch.bool)
    assert grossly_failed(pred, target, mask, 45.0).view(-1).tolist() == [True, False, False]
    assert grossly_failed(pred, target, mask, 10.0).view(-1).tolist() == [True, True, False]
    pred.requires_grad_(True)
    out = GESOutput(pred, pred, torch.ones_like(pred), [], 1, torch.zeros(3, 1), False)
    loss, stats = stereo_loss(out, target, mask, max_disp=64, beta=0.0,
                              drop=grossly_failed(pred.detach(), target, mask, 45.0))
    loss.backward()
    assert (pred.grad[0] == 0).all() and (pred.grad[1, ..., :2] != 0).all() and (pred.grad[2] != 0).all()
    assert stats["bad2"] == pytest.approx(100 * (24 + 8) / 120)     # the dropped sample still counts in the log
    cfg = TrainConfig.load(cfg_file(tmp_path, steps=2, curate_bad2=45.0))
    Trainer(cfg, progress=False).train()
    rows = losses(Path(cfg.out_dir))
    assert rows and all(0.0 <= r["curated"] <= 1.0 for r in rows)


def test_distillation_loss_is_zero_at_the_teacher_and_pulls_toward_it():
    from ges_core.losses import distillation_loss
    from ges_core.model.ges import GESOutput
    teacher = torch.full((1, 1, 4, 6), 7.0)
    taught = GESOutput(teacher, teacher - 1, teacher, [], 1, torch.zeros(1, 1), False)
    mask = torch.ones_like(teacher, dtype=torch.bool)
    same, _ = distillation_loss(taught, taught, mask, weight=2.0)
    assert float(same) == 0.0
    pred = (teacher + 3).requires_grad_(True)
    loss, stats = distillation_loss(GESOutput(pred, teacher - 1, teacher, [], 1, torch.zeros(1, 1), False), taught,
                                    mask, weight=2.0)
    loss.backward()
    assert float(loss) == pytest.approx(6.0) and stats["distill_final"] == pytest.approx(3.0)
    assert (pred.grad > 0).all()          # descending moves the student down, toward the teacher


def test_a_run_seeded_and_taught_by_weights_logs_the_teacher_terms_and_bf16_where_the_cpu_has_it(tmp_path):
    """init_from seeds the tensors the networks share, distill_from adds the teacher's terms up to distill_steps,
    cpu_amp trains under bf16 autocast (on a CPU with bf16; float32 elsewhere, said once) without non-finite steps."""
    from ges_core.config import GESConfig
    from ges_core.model.ges import build_model
    from ges_core.weights import save_weights
    teacher = build_model(GESConfig.preset("tiny"))
    weights = tmp_path / "teacher.safetensors"
    save_weights(weights, teacher, teacher.config)
    cfg = TrainConfig.load(cfg_file(tmp_path, steps=4, model={"preset": "tiny", "train_iters": 2, "unet_start": 8},
                                    init_from=str(weights), distill_from=str(weights), distill_weight=1.0,
                                    distill_steps=2, cpu_amp=True))
    result = Trainer(cfg, progress=False).train()
    assert result["nan_skipped"] == 0
    rows = losses(Path(cfg.out_dir))
    assert [("distill_final" in r) for r in rows] == [True, True, False, False]
    with pytest.raises(ValueError, match="distill_from"):
        Trainer(TrainConfig.load(cfg_file(tmp_path, name="b.yaml", distill_weight=1.0, distill_steps=2)),
                progress=False)
