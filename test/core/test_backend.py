"""The openvino backend runs the Predictor's algorithm (same solver loop, budgets, warm starts) on OpenVINO-compiled
parts of the network: in float32 it publishes what the torch backend publishes."""
import numpy as np
import pytest
import torch

from ges_core import load_predictor
from ges_core.ov_backend import OpenVinoNetwork, check_backend, resolve_backend


@pytest.fixture(scope="module")
def pair(motorcycle_small):
    import cv2
    left, right = motorcycle_small[:2]
    size = (160, 96)
    return (cv2.resize(left, size, interpolation=cv2.INTER_AREA), cv2.resize(right, size, interpolation=cv2.INTER_AREA))


@pytest.fixture(scope="module")
def predictors():
    return load_predictor("default", backend="torch"), load_predictor("default", backend="openvino", precision="fp32")


def test_openvino_float32_publishes_what_torch_publishes(pair, predictors):
    torch_pred, ov_pred = predictors
    ref, got = torch_pred.predict(*pair), ov_pred.predict(*pair)
    assert ov_pred.runtime == "openvino fp32" and torch_pred.runtime == "torch fp32"
    assert got.iters == ref.iters == 4
    assert np.abs(got.disparity - ref.disparity).max() < 0.05
    assert (got.valid == ref.valid).mean() > 0.999
    assert np.abs(got.confidence - ref.confidence).max() < 0.01
    np.testing.assert_allclose(got.residuals, ref.residuals, rtol=0.05)


def test_openvino_keeps_the_predictors_warm_start_and_iterations(pair, predictors):
    torch_pred, ov_pred = predictors
    first_t, first_o = torch_pred.predict(*pair, iters=2), ov_pred.predict(*pair, iters=2)
    warm_t = torch_pred.predict(*pair, iters=3, init=first_t.state)
    warm_o = ov_pred.predict(*pair, iters=3, init=first_o.state)
    assert warm_o.iters == 3 and warm_o.state.shape == first_o.state.shape
    assert np.abs(warm_o.disparity - warm_t.disparity).max() < 0.05
    # a warm start is not a cold start: the solver continued from the previous state
    assert np.abs(warm_o.disparity - ov_pred.predict(*pair, iters=3).disparity).max() > 1e-3


def test_openvino_compiles_each_size_once_and_keeps_a_few(pair, predictors):
    import cv2
    _, ov_pred = predictors
    net = ov_pred.net
    small = [cv2.resize(a, (96, 64), interpolation=cv2.INTER_AREA) for a in pair]
    out = ov_pred.predict(*small)
    assert out.disparity.shape == (64, 96) and np.isfinite(out.disparity).all()
    # a size's first pair compiles; that time is its own, not the encoder's (budgets estimate from encode)
    assert out.timings_ms["compile"] > out.timings_ms["encode"]
    before = dict(net._compiled)
    again = ov_pred.predict(*small)
    assert dict(net._compiled) == before          # the same compiled graphs, not new ones
    assert "compile" not in again.timings_ms
    assert (64, 96) in net._compiled and (96, 160) in net._compiled


def test_openvino_bf16_stays_close_to_float32(pair, predictors):
    torch_pred, _ = predictors
    bf16 = load_predictor("default", backend="openvino", precision="bf16")
    ref, got = torch_pred.predict(*pair), bf16.predict(*pair)
    both = ref.valid & got.valid
    assert both.mean() > 0.9
    # bf16 where the CPU has it (AMX, AVX-512 BF16), float32 otherwise: within a tenth of a pixel on average
    assert np.abs(got.disparity - ref.disparity)[both].mean() < 0.1
    assert bf16.runtime in ("openvino bf16", "openvino fp32")


def test_backend_choices_fail_clearly():
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        check_backend("tensorrt", "auto", "cpu")
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        check_backend("openvino", "int4", "cpu")
    with pytest.raises(ValueError, match="bf16 is the openvino backend's"):
        load_predictor("default", backend="torch", precision="bf16")
    with pytest.raises(ValueError, match="runs on the CPU"):
        check_backend("openvino", "auto", "cuda")
    assert resolve_backend("auto", "cpu") == "openvino"     # installed with the test extras
    assert resolve_backend("auto", "cuda") == "torch"


def test_an_encoding_from_another_size_is_refused(pair, predictors):
    torch_pred, ov_pred = predictors
    net: OpenVinoNetwork = ov_pred.net
    with torch.no_grad():
        left = torch.zeros(1, 3, 32, 64)
        enc = torch_pred.model.encode(left, left)
        with pytest.raises(ValueError, match="not made by this backend's last encode"):
            net.step(torch_pred.model.initial_state(enc), enc)


def test_a_second_start_loads_the_compiled_network_from_the_cache(tmp_path, pair, monkeypatch):
    """A restarted process (a new predictor) finds the size converted and compiled: no export, the same output."""
    monkeypatch.setenv("GES_CACHE_DIR", str(tmp_path / "cache"))
    first = load_predictor("default", backend="openvino", precision="fp32")
    a = first.predict(*pair)
    assert "compile" in a.timings_ms and not first.compile_from_cache
    assert len(list((tmp_path / "cache" / "openvino").glob("*_96x160/encode.xml"))) == 1
    import ges_core.ov_backend as ovb
    exported = []
    real = ovb._to_openvino
    monkeypatch.setattr(ovb, "_to_openvino", lambda *a, **k: exported.append(1) or real(*a, **k))
    second = load_predictor("default", backend="openvino", precision="fp32")
    b = second.predict(*pair)
    assert second.compile_from_cache and exported == []
    np.testing.assert_array_equal(a.disparity, b.disparity)
    # weights changed after the network was made, or another inference config: other entries, never a stale graph
    other = load_predictor("default", backend="openvino", precision="fp32")
    with torch.no_grad():
        next(other.model.parameters()).add_(0.01)
    other.predict(*pair)
    assert not other.compile_from_cache and len(exported) == 3
    import dataclasses
    topk = load_predictor("default", backend="openvino", precision="fp32",
                          config_overrides={"topk": 2 if first.config.topk != 2 else 3})
    topk.predict(*pair)
    assert not topk.compile_from_cache and len(exported) == 6
    assert dataclasses.asdict(topk.config) != dataclasses.asdict(first.config)
    # no cache at all when asked
    monkeypatch.setenv("GES_CACHE_DIR", "off")
    assert OpenVinoNetwork(first.model, precision="fp32").cache is None


def test_openvino_runs_the_torch_work_between_its_graphs_on_one_thread(pair, predictors, monkeypatch):
    """PyTorch's OpenMP workers spin after each parallel region and take the few cores from OpenVINO's next graph:
    with the openvino backend the solver's torch work runs on the calling thread alone, compiling a size does not,
    the torch backend keeps the caller's count, and the caller's count is put back."""
    import cv2
    torch_pred, ov_pred = predictors
    seen = {"step": [], "compile": [], "torch": []}
    ov_step, ov_prepare, torch_step = ov_pred.net.step, ov_pred.net.prepare, torch_pred.model.step
    monkeypatch.setattr(ov_pred.net, "step", lambda *a: seen["step"].append(torch.get_num_threads()) or ov_step(*a))
    monkeypatch.setattr(ov_pred.net, "prepare",
                        lambda *a: seen["compile"].append(torch.get_num_threads()) or ov_prepare(*a))
    monkeypatch.setattr(torch_pred.model, "step",
                        lambda *a: seen["torch"].append(torch.get_num_threads()) or torch_step(*a))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ov_pred.predict(*[cv2.resize(a, (80, 48), interpolation=cv2.INTER_AREA) for a in pair])    # a new size
        assert torch.get_num_threads() == 2
        torch_pred.predict(*pair, iters=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen["step"] == [1] * 4 and seen["compile"] == [2] and seen["torch"] == [2, 2]
