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
    beyond the cost volume (max_disp) comes back wrong, as the real network's does (it aliases to a smaller one)."""

    def __init__(self, true_disparity: float, max_disp: int = 192):
        self.true = true_disparity
        self.config = GESConfig(max_disp=max_disp)

    def predict(self, left, right, iters=None, budget_ms=None, init=None, scale=1.0):
        height, width = left.shape[:2]
        net_w, net_h = max(16, round(width * scale)), max(16, round(height * scale))
        shift = self.true * net_w / width
        net = np.full((net_h, net_w), shift if shift < self.config.max_disp else 40.0, np.float32)
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
    pipe = StereoPipeline(CostVolume(220.0), PipelineParams(min_depth=0.4))
    assert pipe.network_scale(1080, 1920, calib) == pytest.approx(0.95 * 192 / 225)
    r = pipe.run(left, left, calib)
    depth = r.points()[0][..., 2]
    assert r.valid.mean() > 0.99 and np.nanmedian(depth) == pytest.approx(90 / 220, rel=0.01)
    wrong = StereoPipeline(CostVolume(220.0), PipelineParams()).run(left, left, calib)
    assert wrong.scale == 1.0 and not np.isclose(np.nanmedian(wrong.points()[0][..., 2]), 90 / 220, rtol=0.1)
    # max_disparity asks for the range as directly
    assert StereoPipeline(CostVolume(225.0), PipelineParams(max_disparity=384)).network_scale(1080, 1920, None) \
        == pytest.approx(0.95 * 192 / 384)


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
