"""The GES network: shapes, odd sizes, gray input, batches, determinism, the disparity convention,
the predictor API and weights files."""
import dataclasses

import numpy as np
import pytest
import torch

from ges_core import GESConfig, build_model, load_predictor
from ges_core.model.volume import LookupVolume, VolumeLookup, groupwise_correlation, topk_soft_argmin
from ges_core.weights import load_weights, save_weights

TINY = GESConfig.preset("tiny")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(TINY).eval()


@pytest.mark.parametrize("height,width", [(64, 96), (37, 83), (50, 129)])
def test_smoke_shapes_odd_sizes(model, height, width):
    left = torch.rand(2, 3, height, width) * 255
    with torch.no_grad():
        out = model(left, left.flip(-1))
    for t in (out.disparity, out.init_disparity, out.confidence):
        assert t.shape == (2, 1, height, width) and t.dtype == torch.float32 and torch.isfinite(t).all()
    assert 0 <= out.confidence.min() and out.confidence.max() <= 1
    assert out.iters == TINY.iters and len(out.residuals) == out.iters


def test_same_output_type_in_train_and_eval(model):
    left = torch.rand(1, 3, 32, 64) * 255
    model.train()
    out_t = model(left, left)
    model.eval()
    with torch.no_grad():
        out_e = model(left, left)
    assert type(out_t) is type(out_e)


def test_determinism_in_eval(model):
    left, right = torch.rand(1, 3, 48, 80) * 255, torch.rand(1, 3, 48, 80) * 255
    with torch.no_grad():
        a, b = model(left, right), model(left, right)
    assert torch.equal(a.disparity, b.disparity)


def test_exception_on_mismatched_inputs(model):
    with pytest.raises(ValueError, match="equal shape"):
        model(torch.rand(1, 3, 32, 64), torch.rand(1, 3, 32, 60))


def test_groupwise_correlation_convention():
    """Pins the disparity convention: x_right = x_left - d, so a right view shifted by +3 peaks at d = 3."""
    torch.manual_seed(0)
    feat = torch.nn.functional.normalize(torch.randn(1, 8, 4, 32), dim=1)   # unit vectors: self-match is the max
    right = torch.roll(feat, shifts=-3, dims=3)       # right(x) = left(x + 3)  =>  left(x) = right(x - 3)
    vol = groupwise_correlation(feat, right, groups=1, num_disp=8)
    assert vol.shape == (1, 1, 8, 4, 32)
    best = vol[0, 0, :, :, 8:24].argmax(0)
    assert (best == 3).all()


def test_groupwise_correlation_entries_and_the_zeros_beyond_the_image():
    """Entry (g, d, y, x) is the mean over group g's channels of left(x) * right(x - d), zero where x < d, and a
    search range wider than the image is zero past it."""
    torch.manual_seed(1)
    left, right = torch.randn(1, 6, 3, 5), torch.randn(1, 6, 3, 5)
    vol = groupwise_correlation(left, right, groups=2, num_disp=7)
    assert vol.shape == (1, 2, 7, 3, 5)
    for g, d, x in [(0, 0, 4), (1, 2, 3), (0, 4, 4), (1, 1, 1)]:
        want = (left[0, 3 * g:3 * g + 3, :, x] * right[0, 3 * g:3 * g + 3, :, x - d]).mean(0)
        torch.testing.assert_close(vol[0, g, d, :, x], want)
    assert (vol[0, :, 3, :, :3] == 0).all() and (vol[0, :, 5:] == 0).all()


def test_topk_soft_argmin():
    logits = torch.full((1, 10, 1, 1), -10.0)
    logits[0, 4] = 5.0
    logits[0, 5] = 5.0
    logits[0, 9] = 4.0      # a far second mode: full soft-argmin is pulled toward it, top-2 is not
    assert topk_soft_argmin(logits, 2).item() == pytest.approx(4.5, abs=1e-4)
    assert topk_soft_argmin(logits, 0).item() > 5.0


def test_volume_lookup_reads_the_right_bin():
    vol = torch.zeros(1, 1, 8, 2, 3)
    vol[0, 0, 5] = 1.0                                  # level-0 feature is 1 at bin 5 only
    look = VolumeLookup([LookupVolume(vol, 1)], radius=1)
    out = look(torch.full((1, 1, 2, 3), 5.0))          # samples bins 4, 5, 6
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    half = look(torch.full((1, 1, 2, 3), 4.5))          # linear in disparity
    assert half[0, 1, 0, 0].item() == pytest.approx(0.5, abs=1e-6)


def test_volume_lookup_is_the_trilinear_sample_of_every_scale():
    """The separable lookup (coarser scales resampled in x/y once, bins gathered per call) equals a trilinear
    grid_sample of each scale at the pixel centres and disparity d +- r, zeros outside, also near both ends and
    past them; and it passes gradients to the volumes and the disparity, as training needs."""
    import torch.nn.functional as F
    torch.manual_seed(0)
    vols = [torch.randn(2, 3, 16, 6, 10), torch.randn(2, 3, 8, 3, 5), torch.randn(2, 3, 4, 2, 3)]
    disparity = torch.rand(2, 1, 6, 10) * 24 - 4                      # some below 0 and beyond the range
    radius, taps = 2, 5
    gy = ((torch.arange(6) + 0.5) / 6 * 2 - 1).view(1, 1, 6, 1, 1).expand(2, taps, 6, 10, 1)
    gx = ((torch.arange(10) + 0.5) / 10 * 2 - 1).view(1, 1, 1, 10, 1).expand(2, taps, 6, 10, 1)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32).view(1, taps, 1, 1)
    expected = []
    for s, vol in enumerate(vols):
        gz = (((disparity + 0.5) / 2 ** s + offsets) / vol.shape[2] * 2 - 1).unsqueeze(-1)
        sampled = F.grid_sample(vol, torch.cat([gx, gy, gz], dim=-1), mode="bilinear", padding_mode="zeros",
                                align_corners=False)
        expected.append(sampled.reshape(2, 3 * taps, 6, 10))
    vols = [v.requires_grad_() for v in vols]
    disparity.requires_grad_()
    got = VolumeLookup([LookupVolume(v, 2 ** s) for s, v in enumerate(vols)], radius=radius)(disparity)
    torch.testing.assert_close(got, torch.cat(expected, dim=1), atol=1e-5, rtol=1e-5)
    got.square().sum().backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in vols) and disparity.grad.abs().sum() > 0


def test_unet_decoder_without_the_concatenation_is_the_same():
    """The decoder convs over [upsampled, skip] as two convs over the parts equal the conv over their concatenation."""
    import torch.nn.functional as F
    from ges_core.model.volume import UNet3D, _channels_last
    torch.manual_seed(0)
    unet = UNet3D(in_channels=4, channels=(4, 8, 8)).eval()
    vol = torch.randn(1, 4, 8, 12, 16)
    with torch.no_grad():
        got = unet(vol)
        e0 = unet.enc0(_channels_last(vol))
        e1 = unet.enc1(e0)
        c2 = unet.enc2(e1)
        c1 = unet.dec1(torch.cat([F.interpolate(c2, size=e1.shape[2:], mode="trilinear", align_corners=False), e1], 1))
        c0 = unet.dec0(torch.cat([F.interpolate(c1, size=e0.shape[2:], mode="trilinear", align_corners=False), e0], 1))
    assert [v.scale for v in got] == [1, 2, 4]
    for a, b in zip(got, (c0, c1, c2)):
        torch.testing.assert_close(a.features, b, atol=1e-5, rtol=1e-5)


def test_onednn_conv3d_is_the_convolution_with_its_gradient():
    """The UNet's Conv3d (oneDNN on a CPU, where PyTorch would pick its slow native kernel for a small batch-1
    volume) computes nn.Conv3d's numbers and gradients and keeps its state dict."""
    from ges_core.model.volume import Conv3d
    torch.manual_seed(0)
    ref = torch.nn.Conv3d(24, 24, 3, stride=2, padding=1, bias=True)
    conv = Conv3d(24, 24, 3, stride=2, padding=1, bias=True)
    conv.load_state_dict(ref.state_dict())
    assert set(conv.state_dict()) == {"weight", "bias"}
    x = torch.randn(1, 24, 6, 15, 20, requires_grad=True)     # N*C*D*H = 2160: the native kernel's case
    y_ref, y = ref(x), conv(x)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    g_ref = torch.autograd.grad(y_ref.square().sum(), (x, ref.weight))
    g = torch.autograd.grad(y.square().sum(), (x, conv.weight))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_predictor_api_and_gray_input(tiny_weights):
    pred = load_predictor(str(tiny_weights), device="cpu")
    rng = np.random.default_rng(0)
    left = rng.integers(0, 255, (45, 70, 3), dtype=np.uint8)
    r = pred.predict(left, left)
    assert r.disparity.shape == (45, 70) and r.disparity.dtype == np.float32
    assert r.valid.dtype == bool and r.confidence.shape == (45, 70)
    assert r.iters == pred.config.iters and np.isfinite(r.residual)
    assert {"encode", "solve", "upsample", "total"} <= set(r.timings_ms)
    g = pred.predict(left[..., 0], left[..., 0], iters=2)   # gray is replicated
    assert g.iters == 2 and g.disparity.shape == (45, 70)
    with pytest.raises(ValueError, match="70x45.*70x44"):
        pred.predict(left, left[:-1])


def test_predictor_budget_stops_early(tiny_weights):
    pred = load_predictor(str(tiny_weights))
    img = np.random.default_rng(1).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    full = pred.predict(img, img, iters=20)
    assert full.iters == 20
    r = pred.predict(img, img, iters=20, budget_ms=full.timings_ms["encode"] + 1.5 * full.timings_ms["per_iter"])
    assert 1 <= r.iters < 20
    tiny_budget = pred.predict(img, img, iters=20, budget_ms=0.001)
    assert tiny_budget.iters == 1            # at least one iteration always runs


def test_predictor_warm_start_and_scale(tiny_weights):
    pred = load_predictor(str(tiny_weights))
    img = np.random.default_rng(2).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    r1 = pred.predict(img, img, iters=8)
    r2 = pred.predict(img, img, iters=1, init=r1.state)
    assert r2.state.shape == r1.state.shape
    other = np.random.default_rng(3).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    r3 = pred.predict(other, other, init=r1.state)      # another size: cold start, no error
    assert r3.disparity.shape == (80, 96)
    half = pred.predict(img, img, scale=0.5)
    assert half.disparity.shape == (64, 96)


def test_weights_roundtrip_and_errors(tmp_path):
    cfg = dataclasses.replace(TINY, iters=3)
    m = build_model(cfg)
    save_weights(tmp_path / "w.safetensors", m, cfg, half=True)
    cfg2, tensors, meta = load_weights(tmp_path / "w.safetensors")
    assert cfg2 == cfg and meta["format"] == "ges"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_predictor(str(tmp_path / "nope.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_predictor(str(bad))


def test_pickle_weights_are_refused(tmp_path):
    path = tmp_path / "evil.safetensors"
    torch.save({"x": torch.zeros(1)}, path)                 # a torch (zip/pickle) checkpoint
    with pytest.raises(ValueError, match="pickle"):
        load_predictor(str(path))
    import pickle
    path2 = tmp_path / "evil2.pt"
    path2.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="pickle"):
        load_predictor(str(path2))


def test_safetensors_whose_header_length_starts_like_a_pickle_load(tmp_path):
    """A safetensors file begins with its header length (u64, little-endian); one of 0x..80 bytes begins with a
    pickle's first byte. Such weights (the first stage-4 checkpoint's export was one) must load."""
    from ges_core.weights import load_weights, save_weights
    model = build_model(GESConfig.preset("tiny"))
    path = tmp_path / "w.safetensors"
    for pad in range(300):
        save_weights(path, model, model.config, metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    config, tensors, meta = load_weights(path)
    assert config == model.config and meta["pad"]


def test_config_presets_and_overrides():
    small, paper = GESConfig.preset("small"), GESConfig.preset("paper")
    assert small.max_disp == 192 and paper.max_disp == 384 and paper.hidden_dims == (128, 128, 128)
    assert GESConfig.from_json(paper.to_json()) == paper
    with pytest.raises(ValueError, match="valid"):
        GESConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown GESConfig fields"):
        GESConfig.from_dict({"max_dsp": 3})


# every preset, and every architecture option on the tiny preset: what the cheaper networks (#38) are made of
ARCH_OPTIONS = {"unet_start": 8, "conv3d": "factorized", "norm": "batch", "shared_stem": True, "slow_fast": False,
                "gate_kernel": 1, "motion_kernel": 1, "delta_kernel": 1, "candidate_conv": "separable",
                "corr_lookup": True}
VARIANTS = {**{f"preset {name}": GESConfig.preset(name) for name in ("tiny", "small", "fast", "paper")},
            **{f"tiny {k}={v}": dataclasses.replace(TINY, **{k: v}) for k, v in ARCH_OPTIONS.items()},
            "tiny, all options": dataclasses.replace(TINY, **ARCH_OPTIONS)}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_module_every_preset_and_option_builds_runs_trains_and_exports(name, tmp_path):
    """Build, a training forward with a gradient reaching every parameter, an eval forward, and the ONNX export
    whose ONNX Runtime answer is the eval forward's."""
    from ges_core.export import export
    cfg = dataclasses.replace(VARIANTS[name], train_iters=2, iters=2, solver="fixed_point", tol=0.0)
    torch.manual_seed(0)
    net = build_model(cfg).train()
    left = torch.rand(2, 3, 64, 96) * 255
    right = torch.roll(left, -3, dims=3)
    out = net(left, right)
    (out.disparity.mean() + out.init_disparity.mean()).backward()
    unreached = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not unreached, f"no finite gradient for {unreached[:5]}"
    net.eval()
    with torch.no_grad():
        expected = net(left[:1], right[:1], iters=2)
    assert expected.disparity.shape == (1, 1, 64, 96) and torch.isfinite(expected.disparity).all()
    path = tmp_path / "m.onnx"
    export(net, str(path), fmt="onnx", height=64, width=96, iters=2, solver="fixed_point")
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"left": left[:1].numpy(), "right": right[:1].numpy()})[0]
    np.testing.assert_allclose(got, expected.disparity.numpy(), atol=2e-3 * max(1.0, float(expected.disparity.abs().max())))


def test_each_lookup_volume_is_read_at_its_declared_scale():
    """The 3D features of scale s have D/s bins and the raw correlation volume (corr_lookup) all D of them, so each
    is read at d/s: the raw volume was once read at d/8 from its place in the list."""
    cfg = dataclasses.replace(TINY, corr_lookup=True)
    net = build_model(cfg).eval()
    with torch.no_grad():
        enc = net.encode(torch.rand(1, 3, 64, 96) * 255, torch.rand(1, 3, 64, 96) * 255)
    volumes = enc.lookup.volumes
    assert [v.scale for v in volumes] == [1, 2, 4, 1]
    assert [v.features.shape[2] for v in volumes] == [cfg.num_disp // s for s in (1, 2, 4)] + [cfg.num_disp]
    # the raw volume's sample at disparity d is its bin d: a volume that is 1 at bin 5 only is read as 1 at d = 5
    raw = torch.zeros_like(volumes[3].features)
    raw[:, :, 5] = 1.0
    look = VolumeLookup([LookupVolume(raw, 1)], radius=0)
    assert torch.allclose(look(torch.full((1, 1, *raw.shape[-2:]), 5.0)), torch.ones(1, raw.shape[1], *raw.shape[-2:]))


@pytest.mark.parametrize("start", [4, 8])
def test_unet_gives_every_scale_at_its_resolution(start):
    from ges_core.model.volume import UNet3D
    unet = UNet3D(in_channels=4, channels=(4, 8, 8), start=start).eval()
    with torch.no_grad():
        out = unet(torch.randn(1, 4, 16, 12, 20))
    assert [tuple(v.features.shape) for v in out] == [(1, 4, 16, 12, 20), (1, 8, 8, 6, 10), (1, 8, 4, 3, 5)]
    assert [v.scale for v in out] == [1, 2, 4]
    with pytest.raises(ValueError, match="start"):
        UNet3D(in_channels=4, channels=(4, 8, 8), start=2)


def test_build_model_takes_parts_by_keyword_and_sizes_the_rest_from_them():
    from ges_core.model.extractor import ContextEncoder
    context = ContextEncoder(channels=TINY.encoder_channels, hidden_dims=(16, 8, 8))
    net = build_model(TINY, context_encoder=context)
    assert net.context_encoder is context
    assert net.upsampler.mask[0].in_channels == 16 and net.update_block.gru04.convq.out_channels == 16
    with torch.no_grad():
        assert net.eval()(torch.rand(1, 3, 32, 64) * 255, torch.rand(1, 3, 32, 64) * 255).disparity.shape == (1, 1, 32, 64)
    with pytest.raises(ValueError, match="unknown GES parts"):
        build_model(TINY, cost_volume=context)
    with pytest.raises(ValueError, match="valid"):
        build_model(dataclasses.replace(TINY, norm="layer"))
    with pytest.raises(ValueError, match="valid"):
        build_model(dataclasses.replace(TINY, conv3d="depthwise"))


def test_the_small_presets_weights_still_load_and_seed_the_fast_preset(tmp_path):
    """Today's weights load with today's options; the fast preset takes every tensor they share by name and
    shape, and keeps its own fresh values for the rest."""
    from ges_core.weights import seed_from
    small = build_model(GESConfig.preset("small"))
    path = tmp_path / "small.safetensors"
    save_weights(path, small, small.config)
    fast = build_model(GESConfig.preset("fast"))
    fresh = {k: v.clone() for k, v in fast.state_dict().items()}
    copied, total = seed_from(fast, path)
    source = small.state_dict()
    same = [k for k in fresh if k in source and source[k].shape == fresh[k].shape]
    assert copied == len(same) and 0 < copied < total
    for k, v in fast.state_dict().items():
        # weights files may hold fp16: within its rounding of the source, exactly the fresh value elsewhere
        if k in same:
            torch.testing.assert_close(v.float(), source[k].float(), rtol=1e-3, atol=1e-4)
        else:
            assert torch.equal(v, fresh[k])


def test_every_config_field_is_in_one_group_and_the_groups_follow_the_class():
    from ges_core.config import FIELD_GROUPS
    names = [f.name for f in dataclasses.fields(GESConfig)]
    grouped = [n for group in FIELD_GROUPS.values() for n in group]
    assert grouped == names                       # each field once, in the class's order
    fast = GESConfig.preset("fast")
    assert fast.part("inference") == GESConfig.preset("small").part("inference")      # the same way of running
    assert fast.part("architecture") != GESConfig.preset("small").part("architecture")
    with pytest.raises(ValueError, match="valid"):
        fast.part("optimizer")
