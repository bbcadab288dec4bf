"""precision int8: the openvino backend's three graphs quantized by NNCF, calibrated on the float32 network's own
run of a few pairs; close to float32 on a real pair, cached for the next start, chosen by auto only where the
weights record that it passed its accuracy check."""
import cv2
import numpy as np
import pytest

from ges_core import load_predictor
from ges_core.ov_backend import OpenVinoNetwork, check_backend, cpu_has_bf16, resolve_precision
from ges_core.quantize import calibration_id, calibration_pairs


@pytest.fixture(scope="module")
def pair(motorcycle_small):
    return motorcycle_small[:2]          # the motorcycle pair at half size: a real scene, 370 px wide


def test_int8_stays_close_to_float32_on_a_real_pair(pair):
    fp32 = load_predictor("default", backend="openvino", precision="fp32")
    int8 = load_predictor("default", backend="openvino", precision="int8")
    ref, got = fp32.predict(*pair), int8.predict(*pair)
    assert int8.runtime == "openvino int8" and fp32.runtime == "openvino fp32"
    both = ref.valid & got.valid
    assert both.mean() > 0.95
    diff = np.abs(got.disparity - ref.disparity)[both]
    # the scene spans 0-60 px here: int8 moves the answer by a small fraction of a pixel on average, and few
    # pixels by more than 2 px
    assert diff.mean() < 0.3
    assert (diff > 2).mean() < 0.03
    assert np.abs(got.confidence - ref.confidence)[both].mean() < 0.05


def test_a_second_start_uses_the_quantized_model_from_the_cache(pair, tmp_path, monkeypatch):
    monkeypatch.setenv("GES_CACHE_DIR", str(tmp_path / "cache"))
    small = [cv2.resize(a, (160, 96), interpolation=cv2.INTER_AREA) for a in pair]
    first = load_predictor("default", backend="openvino", precision="int8")
    a = first.predict(*small)
    assert "compile" in a.timings_ms and not first.compile_from_cache
    import ges_core.quantize as quantize
    calibrated = []
    real = quantize.calibration_samples
    monkeypatch.setattr(quantize, "calibration_samples", lambda *x, **k: calibrated.append(1) or real(*x, **k))
    second = load_predictor("default", backend="openvino", precision="int8")
    b = second.predict(*small)
    assert second.compile_from_cache and calibrated == []      # neither calibrated nor quantized again
    np.testing.assert_array_equal(a.disparity, b.disparity)
    # another calibration source is another model: quantized anew, not the cached one
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:04d}_left.png"), small[0][..., ::-1])
        cv2.imwrite(str(folder / f"{i:04d}_right.png"), small[1][..., ::-1])
    third = load_predictor("default", backend="openvino", precision="int8", int8_calibration=str(folder))
    third.predict(*small)
    assert not third.compile_from_cache and calibrated == [1]


def test_calibration_pairs_are_fixed_and_sized(tmp_path, pair):
    gen = calibration_pairs("generated", 64, 96, count=3)
    assert len(gen) == 3 and all(v.shape == (64, 96, 3) and v.dtype == np.uint8 for p in gen for v in p)
    again = calibration_pairs("generated", 64, 96, count=3)
    assert all(np.array_equal(x, y) for p, q in zip(gen, again) for x, y in zip(p, q))
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i:04d}_left.png"), pair[0][..., ::-1])
        cv2.imwrite(str(tmp_path / f"{i:04d}_right.jpg"), pair[1][..., ::-1])
    real = calibration_pairs(str(tmp_path), 64, 96, count=8)
    assert len(real) == 2 and real[0][0].shape == (64, 96, 3)
    before = calibration_id(str(tmp_path))
    assert before.startswith("dir") and before != calibration_id("generated")
    cv2.imwrite(str(tmp_path / "0002_left.png"), pair[0][..., ::-1])
    cv2.imwrite(str(tmp_path / "0002_right.png"), pair[1][..., ::-1])
    assert calibration_id(str(tmp_path)) != before
    with pytest.raises(FileNotFoundError, match="int8 calibration .*empty_missing.*not found"):
        calibration_pairs(str(tmp_path / "empty_missing"), 64, 96)


def test_auto_takes_int8_only_where_the_weights_passed_the_check(monkeypatch):
    float_part = "bf16" if cpu_has_bf16() else "fp32"
    assert resolve_precision("auto") == float_part
    assert resolve_precision("auto", int8_ok=True) == ("int8_bf16" if float_part == "bf16" else "int8")
    assert resolve_precision("fp32", int8_ok=True) == "fp32"      # asked for: as asked
    import ges_core.quantize as quantize
    monkeypatch.setattr(quantize, "nncf_missing", lambda: True)
    assert resolve_precision("auto", int8_ok=True) == float_part   # no nncf: never a precision that cannot run
    with pytest.raises(ValueError, match="needs nncf"):
        check_backend("openvino", "int8", "cpu")
    with pytest.raises(ValueError, match="int8 is the openvino backend's"):
        load_predictor("default", backend="torch", precision="int8")


def test_the_weights_int8_record_drives_auto(tmp_path):
    """A weights file whose operating point says int8 passed gets int8 under auto; without it, float."""
    import json
    from ges_core.weights import load_weights, with_metadata
    _, _, meta = load_weights("default")
    op = json.loads(meta.get("operating_point", "{}"))
    for ok in (True, False):
        out = tmp_path / f"int8_{ok}.safetensors"
        with_metadata("default", out, {"operating_point": json.dumps({**op, "int8": {"ok": ok}})})
        chosen = load_predictor(str(out), backend="openvino")
        assert isinstance(chosen.net, OpenVinoNetwork)
        assert chosen.net.precision == resolve_precision("auto", int8_ok=ok)
        assert (chosen.net.precision in ("int8", "int8_bf16")) == ok


def test_the_feature_encoder_stays_in_float_and_the_3d_unet_runs_int8(pair, tmp_path, monkeypatch):
    """What ges_core.quantize keeps in float: the feature encoder's convolutions read float activations (what the
    correlation matches), the 3D UNet's read int8-quantized ones."""
    import openvino as ov
    monkeypatch.setenv("GES_CACHE_DIR", str(tmp_path / "cache"))
    small = [cv2.resize(a, (160, 96), interpolation=cv2.INTER_AREA) for a in pair]
    load_predictor("default", backend="openvino", precision="int8").predict(*small)
    (encode,) = list((tmp_path / "cache").rglob("encode.xml"))
    quantized = {}
    for op in ov.Core().read_model(str(encode)).get_ops():
        if op.get_type_name() == "Convolution":
            source = op.input_value(0).get_node().get_type_name()
            quantized[op.get_friendly_name()] = source == "FakeQuantize"
    feature = [q for name, q in quantized.items() if "/feature_encoder/" in name]
    unet = [q for name, q in quantized.items() if "/cost_filter/" in name]
    assert feature and not any(feature)
    assert unet and all(unet)
