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
    quantized = "int8_bf16" if float_part == "bf16" else "int8"
    assert resolve_precision("auto") == float_part
    assert resolve_precision("auto", ("int8", "int8_bf16")) == quantized
    # each variant on its own verdict: the other one passing does not make this CPU's variant pass
    other = "int8" if quantized == "int8_bf16" else "int8_bf16"
    assert resolve_precision("auto", (other,)) == float_part
    assert resolve_precision("auto", (quantized,)) == quantized
    assert resolve_precision("fp32", ("int8", "int8_bf16")) == "fp32"      # asked for: as asked
    import ges_core.quantize as quantize
    monkeypatch.setattr(quantize, "nncf_missing", lambda: True)
    assert resolve_precision("auto", ("int8", "int8_bf16")) == float_part   # no nncf: never one that cannot run
    with pytest.raises(ValueError, match="needs nncf"):
        check_backend("openvino", "int8", "cpu")
    with pytest.raises(ValueError, match="int8 is the openvino backend's"):
        load_predictor("default", backend="torch", precision="int8")


def test_the_int8_verdict_judges_each_variant_against_its_own_float_part():
    """int8 against fp32, int8_bf16 against bf16, from the measurements the check recorded (EPE may grow 1 %,
    bad-2 0.2 points, on every set); a check that measured nothing passes nothing."""
    from ges_core.quantize import int8_passed
    base = [0.80, 5.00, 1.30, 9.00]
    measured = {"fp32": base, "int8": [0.807, 5.19, 1.31, 9.15],          # within on both sets
                "bf16": base, "int8_bf16": [0.81, 5.0, 1.30, 9.0]}        # scenes' EPE +1.25 %: outside
    assert int8_passed({"measured": measured}) == ("int8",)
    measured["int8"] = [0.80, 5.00, 1.30, 9.21]                          # motorcycle bad-2 +0.21 pt: outside
    assert int8_passed({"measured": measured}) == ()
    assert int8_passed({"measured": {"fp32": base, "int8": base}}) == ("int8",)   # checked on a CPU without bf16
    assert int8_passed(None) == () and int8_passed({"ok": True}) == ()


def test_operating_point_records_each_variants_verdict(tmp_path, monkeypatch):
    """`ges operating-point --int8-check` measures each quantized variant beside its float part and writes what
    auto reads: here int8_bf16 costs 2 % EPE over bf16 while int8 is level with fp32 (the scores stand in for the
    validation runs, which take minutes)."""
    import json
    import ges_core.bench.accuracy as accuracy
    from ges_core.cli import main
    from ges_core.quantize import int8_passed
    scores = {"fp32": [0.8, 5.0, 1.3, 9.0], "int8": [0.8, 5.0, 1.3, 9.0],
              "bf16": [0.8, 5.0, 1.3, 9.0], "int8_bf16": [0.816, 5.0, 1.3, 9.0]}
    monkeypatch.setattr(accuracy, "validation_sets", lambda data: [("scenes", None, None), ("motorcycle", None, None)])
    monkeypatch.setattr(accuracy, "real_means", lambda predictor, sets, iters: scores[predictor.net.precision])
    out = tmp_path / "checked.safetensors"
    assert main(["operating-point", "--weights", "default", "-o", str(out), "--int8-check", str(tmp_path)]) == 0
    check = load_predictor(str(out), backend="torch").operating_point["int8"]
    assert check["sets"] == ["scenes", "motorcycle"] and check["measured"]["int8"] == scores["int8"]
    if cpu_has_bf16():
        assert check["measured"]["int8_bf16"] == scores["int8_bf16"] and not check["ok"]
        assert load_predictor(str(out), backend="openvino").net.precision == "bf16"
    else:
        assert "int8_bf16" not in check["measured"] and check["ok"]
        assert load_predictor(str(out), backend="openvino").net.precision == "int8"
    assert int8_passed(check) == ("int8",)


def test_the_weights_int8_record_drives_auto(tmp_path):
    """A weights file whose operating point says this CPU's int8 variant passed gets it under auto; else float."""
    import json
    from ges_core.weights import load_weights, with_metadata
    _, _, meta = load_weights("default")
    op = json.loads(meta.get("operating_point", "{}"))
    same = [0.8, 5.0, 1.3, 9.0]
    for ok in (True, False):
        measured = {"fp32": same, "bf16": same, "int8": same if ok else [0.9, 6.0, 1.4, 10.0]}
        measured["int8_bf16"] = measured["int8"]
        out = tmp_path / f"int8_{ok}.safetensors"
        with_metadata("default", out, {"operating_point": json.dumps({**op, "int8": {"measured": measured}})})
        chosen = load_predictor(str(out), backend="openvino")
        assert isinstance(chosen.net, OpenVinoNetwork)
        assert (chosen.net.precision in ("int8", "int8_bf16")) == ok
        # what auto left out is said (the node's ready line), and only then
        assert chosen.int8_declined == (None if ok else resolve_precision("auto", ("int8", "int8_bf16")))
        assert load_predictor(str(out), backend="openvino", precision="fp32").int8_declined is None
    assert load_predictor("default", backend="torch").int8_declined is None


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
