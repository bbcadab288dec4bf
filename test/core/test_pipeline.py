"""The one pipeline (ges_core.pipeline): validity that follows the scale the network ran at, near range, and the
same rules for the node, the replay and `ges predict`."""
import numpy as np
import pytest

from ges_core import GESConfig
from ges_core.geometry import calibration_from_values, load_calibration
from ges_core.pipeline import PipelineParams, StereoPipeline
from ges_core.predictor import Prediction, to_input_size


class CostVolume:
    """A stand-in for the network that has its range: at scale s a true shift D is D*s network pixels, and a shift
    beyond the cost volume (max_disp) comes back wrong, as the real network's does (it aliases to a smaller one).
    true_disparity: one value, or a callable (height, width) -> the true disparity map at the input size."""

    def __init__(self, true_disparity, max_disp: int = 192):
        self.true = true_disparity
        self.config = GESConfig(max_disp=max_disp)
        self.calls = []

    def predict(self, left, right, iters=None, budget_ms=None, init=None, scale=1.0):
        import cv2
        height, width = left.shape[:2]
        self.calls.append((scale, iters))
        net_w, net_h = max(16, round(width * scale)), max(16, round(height * scale))
        true = self.true(height, width) if callable(self.true) else np.full((height, width), self.true, np.float32)
        shift = cv2.resize(true.astype(np.float32), (net_w, net_h), interpolation=cv2.INTER_NEAREST) * net_w / width
        net = np.where(shift < self.config.max_disp, shift, 40.0).astype(np.float32)
        disp, valid, conf = to_input_size(net, np.ones_like(net), width, height, self.config.max_disp)
        return Prediction(disp, valid, conf, iters or 4, 1e-3, [], {"total": 1.0}, None, False)


def test_validity_is_decided_at_the_network_scale():
    """150 px at a half-size network is 300 px at the input: valid, though above the network's 192 (the cut was
    once applied after resizing back, throwing such pixels away); the volume's top bin is never valid."""
    net = np.array([[150.0, 189.0], [10.0, np.nan]], np.float32)
    disp, valid, _ = to_input_size(net, np.ones_like(net), 4, 4, 192)
    assert disp[0, 0] == pytest.approx(300.0) and valid[0, 0]
    assert not valid[0, 3] and not valid[3, 3] and valid[3, 0] and disp[3, 0] == pytest.approx(20.0)


def test_near_range_a_1080p_camera_at_40cm():
    """1080p, f 1000 px, baseline 0.09 m: the near floor at 0.41 m is 220 px, beyond the small network's 192. With
    min_depth 0.4 (225 px) the network runs small enough to reach it and the depth comes back right; at input_scale
    1 it is out of range, and what the volume cannot represent is never published as its true depth."""
    calib = calibration_from_values(f=1000.0, baseline=0.09, width=1920, height=1080)
    left = np.zeros((1080, 1920, 3), np.uint8)
    pipe = StereoPipeline(CostVolume(220.0), PipelineParams(min_depth=0.4, input_scale=1.0))
    assert pipe.network_scale(1080, 1920, calib) == pytest.approx(0.95 * 192 / 225)
    r = pipe.run(left, left, calib)
    depth = r.points()[0][..., 2]
    assert r.valid.mean() > 0.99 and np.nanmedian(depth) == pytest.approx(90 / 220, rel=0.01)
    wrong = StereoPipeline(CostVolume(220.0), PipelineParams(input_scale=1.0)).run(left, left, calib)
    assert wrong.scale == 1.0 and not np.isclose(np.nanmedian(wrong.points()[0][..., 2]), 90 / 220, rtol=0.1)
    # max_disparity asks for the range as directly
    assert StereoPipeline(CostVolume(225.0), PipelineParams(max_disparity=384, input_scale=1.0)).network_scale(
        1080, 1920, None) == pytest.approx(0.95 * 192 / 384)


def test_min_and_max_disparity_and_depth_limits():
    calib = calibration_from_values(f=100.0, baseline=0.1, width=64, height=32)
    img = np.zeros((32, 64, 3), np.uint8)
    r = StereoPipeline(CostVolume(20.0), PipelineParams(min_disparity=25.0)).run(img, img, calib)
    assert not r.valid.any()
    r = StereoPipeline(CostVolume(20.0), PipelineParams(max_depth=0.4)).run(img, img, calib)
    assert r.valid.all() and np.isnan(r.points()[0]).all()       # 0.5 m: beyond max_depth
    with pytest.raises(ValueError, match="calibration"):
        StereoPipeline(CostVolume(20.0)).run(img, img, None).points()
    with pytest.raises(ValueError, match="unknown pipeline parameters.*itres"):
        PipelineParams.from_dict({"itres": 2})


def test_calibration_files(tmp_path):
    kitti = tmp_path / "calib_kitti.txt"
    kitti.write_text("P0: 7.188560e+02 0 6.071928e+02 0 0 7.188560e+02 1.852157e+02 0 0 0 1 0\n"
                     "P1: 7.188560e+02 0 6.071928e+02 -3.861448e+02 0 7.188560e+02 1.852157e+02 0 0 0 1 0\n"
                     "P2: 7.188560e+02 0 6.071928e+02 4.538225e+01 0 7.188560e+02 1.852157e+02 -1.130887e-01 0 0 1 3.779761e-03\n"
                     "P3: 7.188560e+02 0 6.071928e+02 -3.372877e+02 0 7.188560e+02 1.852157e+02 2.369057e+00 0 0 1 4.915215e-03\n")
    c = load_calibration(str(kitti))                # the colour pair: cameras 2 and 3, 0.532 m apart
    assert c.fx == pytest.approx(718.856) and c.baseline == pytest.approx(0.5324, abs=1e-3) and c.doffs == 0
    midd = tmp_path / "calib.txt"
    midd.write_text("cam0=[3979.911 0 1244.772; 0 3979.911 1019.507; 0 0 1]\ncam1=[3979.911 0 1369.115; 0 3979.911 "
                    "1019.507; 0 0 1]\ndoffs=124.343\nbaseline=193.001\nwidth=2964\nheight=1988\n")
    c = load_calibration(str(midd))
    assert c.baseline == pytest.approx(0.193001) and c.doffs == pytest.approx(-124.343) and c.width == 2964
    left, right = tmp_path / "left.yaml", tmp_path / "right.yaml"
    for path, tx in ((left, 0.0), (right, -0.12 * 500)):
        path.write_text(f"image_width: 640\nimage_height: 480\ncamera_name: c\nprojection_matrix:\n  rows: 3\n"
                        f"  cols: 4\n  data: [500, 0, 320, {tx}, 0, 500, 240, 0, 0, 0, 1, 0]\n")
    c = load_calibration(str(left), str(right))
    assert c.baseline == pytest.approx(0.12) and (c.width, c.height) == (640, 480)
    from ges_core.geometry import CalibrationError
    with pytest.raises(CalibrationError, match="right camera"):
        load_calibration(str(left))
    (tmp_path / "junk.txt").write_text("hello")
    with pytest.raises(CalibrationError, match="neither"):
        load_calibration(str(tmp_path / "junk.txt"))


# ----------------------------------------------------------------------------- input_scale auto (issue #27)
def test_snap_down_and_resolution_scale():
    from ges_core.autoscale import resolution_scale, snap_down
    assert snap_down(1.3) == 1.0 and snap_down(1.0) == 1.0 and snap_down(0.5) == pytest.approx(0.5)
    assert snap_down(0.49) == pytest.approx(2 ** -1.25) and snap_down(0.841) == pytest.approx(2 ** -0.25)
    assert resolution_scale(480, 640, 460_000) == 1.0                        # small inputs are never upsampled
    assert resolution_scale(2056, 2464, 460_000) == pytest.approx(2 ** -1.75)  # sqrt(0.46 / 5.07) = 0.30
    assert resolution_scale(376, 1241, 460_000) == 1.0                       # 1 % over: not cut a grid step
    assert resolution_scale(2056, 2464, 1_000_000) == pytest.approx(2 ** -1.25)  # sqrt(1 / 5.07) = 0.44 -> 0.42
    with pytest.raises(ValueError, match="input_scale must be 'auto' or a factor"):
        PipelineParams(input_scale="half")
    with pytest.raises(ValueError, match="input_scale must be 'auto' or a factor"):
        PipelineParams(input_scale=9.0)
    assert PipelineParams(input_scale="0.5").input_scale == 0.5 and PipelineParams().input_scale == "auto"


def test_auto_scale_fits_the_near_range_without_being_told():
    """640x480 (at its preferred resolution: scale 1) looking at a surface 300 px away: the probe at half scale
    sees it, the network runs small enough that it fits, and the depth comes back right; at input_scale 1 the same
    pair is wrong."""
    img = np.zeros((480, 640, 3), np.uint8)
    net = CostVolume(300.0)
    r = StereoPipeline(net, PipelineParams()).run(img, img)
    assert r.scale == pytest.approx(0.5) and r.valid.mean() > 0.99
    assert np.median(r.disparity[r.valid]) == pytest.approx(300.0, rel=0.01)
    assert net.calls[0] == (0.5, 2) and "range" in r.scale_reason
    fixed = StereoPipeline(CostVolume(300.0), PipelineParams(input_scale=1.0)).run(img, img)
    assert not np.isclose(np.median(fixed.disparity), 300.0, rtol=0.1)
    # a far scene at its preferred resolution runs at scale 1
    assert StereoPipeline(CostVolume(30.0), PipelineParams()).run(img, img).scale == 1.0
    # a calibration with min_depth gives the range: no probe
    calib = calibration_from_values(f=1000.0, baseline=0.09, width=640, height=480)
    given = CostVolume(220.0)
    r = StereoPipeline(given, PipelineParams(min_depth=0.4)).run(img, img, calib)
    assert r.scale == pytest.approx(2 ** -0.5) and [c[1] for c in given.calls] == [4]


def test_auto_scale_for_a_large_camera_runs_at_the_preferred_resolution():
    """2464x2056 (the Argoverse class): the validation study (docs/ACCURACY.md) found 0.35-0.42 best for the
    4-5 MP scenes; the default preferred pixel count runs it at 0.42."""
    img = np.zeros((2056, 2464, 3), np.uint8)
    r = StereoPipeline(CostVolume(60.0), PipelineParams()).run(img, img)
    assert r.scale == pytest.approx(2 ** -1.25) and "resolution" in r.scale_reason
    r = StereoPipeline(CostVolume(60.0), PipelineParams(preferred_pixels=460_000)).run(img, img)
    assert r.scale == pytest.approx(2 ** -1.75)


def test_auto_scale_out_of_range_pixels_are_invalid_not_wrong():
    """A few pixels (0.05 %, under the percentile the scale follows) lie at 300 px while the scene is at 40: the
    network runs at scale 1, where they alias; the probe saw them beyond the range, so they are invalid."""
    def field(h, w):
        d = np.full((h, w), 40.0, np.float32)
        d[100:110, 200:216] = 300.0
        return d
    img = np.zeros((480, 640, 3), np.uint8)
    r = StereoPipeline(CostVolume(field), PipelineParams()).run(img, img)
    assert r.scale == 1.0
    assert not r.valid[102:108, 202:214].any() and r.out_of_range >= 6 * 12
    assert r.valid[300:, :].all()


def test_auto_scale_on_a_stream_has_hysteresis_and_probes_sparingly():
    img = np.zeros((480, 640, 3), np.uint8)
    far = CostVolume(30.0)
    pipe = StereoPipeline(far, PipelineParams(probe_every=10))
    for _ in range(21):
        pipe.run(img, img)
    probes = [c for c in far.calls if c[1] == 2]
    assert len(probes) == 3                          # one pair in 10: pairs 1, 11 and 21
    # near the range the scene is probed every pair, and a range that hovers at a grid step does not flap
    values = iter([205.0, 195.0] * 20)
    state = {"d": 205.0}
    hover = CostVolume(lambda h, w: np.full((h, w), state["d"], np.float32))
    pipe = StereoPipeline(hover, PipelineParams())
    scales = []
    for _ in range(30):
        state["d"] = next(values)
        scales.append(pipe.run(img, img).scale)
    assert len(set(scales[1:])) == 1 and pipe.auto.changes <= 1
    # the scene moves away: the scale goes back up, one step at a time, after UP_AFTER probes
    state["d"] = 20.0
    ups = [pipe.run(img, img).scale for _ in range(12)]
    assert ups[-1] == 1.0 and ups == sorted(ups) and ups[:2] == [scales[-1]] * 2 and ups[2] > scales[-1]


def test_min_confidence_invalidates_in_the_disparity_and_the_cloud():
    class Unsure(CostVolume):
        def predict(self, *a, **kw):
            r = super().predict(*a, **kw)
            r.confidence[:, : r.confidence.shape[1] // 2] = 0.3     # the left half unsure
            return r
    calib = calibration_from_values(f=100.0, baseline=0.1, width=64, height=32)
    img = np.zeros((32, 64, 3), np.uint8)
    keep_all = StereoPipeline(Unsure(20.0), PipelineParams(input_scale=1.0)).run(img, img, calib)
    assert keep_all.valid.all()
    r = StereoPipeline(Unsure(20.0), PipelineParams(input_scale=1.0, min_confidence=0.5)).run(img, img, calib)
    assert not r.valid[:, :32].any() and r.valid[:, 32:].all()
    xyz, mask = r.points()
    assert np.isnan(xyz[:, :32]).all() and np.isfinite(xyz[:, 32:]).all() and not mask[:, :32].any()


def test_confidence_calibration_is_monotone_and_applied():
    from ges_core.confidence import fit_calibration, isotonic, sparsification
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 1, 20000)
    correct = (rng.uniform(0, 1, raw.size) < raw ** 2).astype(float)      # P(correct | raw) = raw^2
    xs, ys = isotonic(raw, correct)
    assert np.all(np.diff(ys) >= 0) and np.all(np.diff(xs) > 0)
    assert np.interp(0.5, xs, ys) == pytest.approx(0.25, abs=0.05) and np.interp(0.9, xs, ys) == pytest.approx(0.81, abs=0.05)
    cal = fit_calibration(raw, correct)
    assert cal["x"][0] == 0.0 and cal["x"][-1] == 1.0 and len(cal["x"]) == len(cal["y"])
    # sparsification: the oracle is never worse than the threshold, full coverage at 0
    err = np.where(correct > 0, 0.5, 5.0)
    rows = sparsification(raw, err, (0.0, 0.5, 0.9))
    assert rows[0]["coverage"] == pytest.approx(100.0) and rows[0]["bad2"] == pytest.approx((1 - correct.mean()) * 100)
    assert all(r["oracle_bad2"] <= r["bad2"] for r in rows) and rows[2]["bad2"] < rows[0]["bad2"]


def test_operating_point_travels_in_the_weights_metadata(tmp_path, tiny_weights):
    import json
    from ges_core import load_predictor
    from ges_core.weights import load_weights, with_metadata
    op = {"preferred_pixels": 123456, "confidence_calibration": {"x": [0.0, 1.0], "y": [0.42, 0.42]}}
    out = tmp_path / "with_op.safetensors"
    with_metadata(tiny_weights, out, {"operating_point": json.dumps(op)})
    _, before, _ = load_weights(tiny_weights)
    _, after, meta = load_weights(out)
    assert all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)     # tensors untouched
    pred = load_predictor(str(out), backend="torch")
    assert pred.operating_point["preferred_pixels"] == 123456
    img = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    assert np.allclose(pred.predict(img, img, iters=1).confidence, 0.42)
    assert StereoPipeline(pred).preferred_pixels == 123456
    plain = load_predictor(str(tiny_weights), backend="torch")
    assert plain.operating_point == {} and not np.allclose(plain.predict(img, img, iters=1).confidence, 0.42)
    from ges_core.autoscale import DEFAULT_PREFERRED_PIXELS
    assert StereoPipeline(plain).preferred_pixels == DEFAULT_PREFERRED_PIXELS
    bad = tmp_path / "bad.safetensors"
    with_metadata(tiny_weights, bad, {"operating_point": "[1, 2"})
    with pytest.raises(ValueError, match="bad operating_point"):
        load_predictor(str(bad), backend="torch")


@pytest.mark.parametrize("input_scale, min_depth", [("auto", 0.0), ("auto", 2.0), (0.5, 0.0)])
def test_prepare_compiles_every_size_the_first_pair_runs_at(tiny_weights, motorcycle_small, input_scale, min_depth):
    """A backend that compiles per input size (openvino): after prepare for the camera's size, the first pair
    compiles nothing new (the auto probe's size and the pass's were both done), except the size of a scale the
    probe lowered because the scene came near the range (the untrained network here sees one often)."""
    from ges_core import load_predictor
    from ges_core.ov_backend import openvino_missing
    from ges_core.pipeline import PipelineParams, StereoPipeline
    from ges_core.geometry import calibration_from_values
    if openvino_missing():
        pytest.skip(f"the openvino backend is not installed here ({openvino_missing()})")
    left, right, _, _, cam = motorcycle_small
    height, width = left.shape[:2]
    calib = calibration_from_values(f=cam.f, baseline=cam.baseline, width=width, height=height, cx=cam.cx,
                                    cy=cam.cy, cx_right=cam.cx_right)
    pipe = StereoPipeline(load_predictor(str(tiny_weights), backend="openvino", precision="fp32"),
                          PipelineParams(input_scale=input_scale, min_depth=min_depth, max_pixels=60000))
    from ges_core.predictor import network_size
    assert pipe.prepare(height, width, calib) > 0
    assert pipe.prepare(height, width, calib) == 0          # done already
    sizes = pipe.network_sizes(height, width, calib)
    compiled = set(pipe.predictor.net._compiled)
    assert compiled == {network_size(height, width, s) for s in sizes}
    r = pipe.run(left, right, calib)
    new = set(pipe.predictor.net._compiled) - compiled
    assert new == (set() if r.scale in sizes else {network_size(height, width, r.scale)})
    if r.scale in sizes:
        assert "compile" not in r.timings_ms
