"""Geometry independent of the network and of ROS: the disparity convention, depth, points, valid window,
calibration checks."""
import numpy as np
import pytest

from ges_core.geometry import (CalibrationError, StereoCalibration, depth_map, point_cloud_xyz,
                               to_ros_disparity, valid_window)


def projection(fx=500.0, cx=100.0, cy=50.0, tx=0.0):
    return [fx, 0, cx, tx, 0, fx, cy, 0, 0, 0, 1, 0]


def calib(doffs=4.0):
    return StereoCalibration.from_projections(projection(), projection(cx=100.0 - doffs, tx=-500.0 * 0.2),
                                              size_left=(200, 100), size_right=(200, 100))


def test_convention_and_depth():
    c = calib(doffs=4.0)           # cx_l - cx_r = 4
    assert c.fx == 500 and c.baseline == pytest.approx(0.2) and c.doffs == pytest.approx(4.0)
    d_net = np.full((2, 2), 14.0, np.float32)      # pixel shift
    d = to_ros_disparity(d_net, c)
    assert d[0, 0] == pytest.approx(10.0)            # d = (x_l - x_r) - (cx_l - cx_r)
    assert depth_map(d, np.ones(d.shape, bool), c)[0, 0] == pytest.approx(500 * 0.2 / 10.0)


def test_points_and_clipping():
    c = calib(doffs=0.0)
    d = np.full((100, 200), 10.0, np.float32)
    valid = np.ones_like(d, bool)
    valid[0, 0] = False
    xyz, ok = point_cloud_xyz(d, valid, c)
    assert np.isnan(xyz[0, 0]).all() and xyz[50, 100].tolist() == pytest.approx([0, 0, 10.0])
    assert xyz[60, 150].tolist() == pytest.approx([50 * 10 / 500, 10 * 10 / 500, 10.0])
    _, ok = point_cloud_xyz(d, valid, c, max_depth=5.0)
    assert not ok.any()


def test_valid_window_never_underflows():
    v = np.zeros((10, 20), bool)
    assert valid_window(v) == (0, 0, 0, 0)
    v[2:5, 3:7] = True
    assert valid_window(v) == (3, 2, 4, 3)


@pytest.mark.parametrize("left,right,sizes,match", [
    (projection(fx=0.0), projection(tx=-100.0), ((200, 100), (200, 100)), "focal"),
    (projection(), projection(tx=0.0), ((200, 100), (200, 100)), "baseline"),
    (projection(), projection(tx=+100.0), ((200, 100), (200, 100)), "baseline"),
    (projection(), projection(fx=450.0, tx=-90.0), ((200, 100), (200, 100)), "differ"),
    (projection(), projection(tx=-100.0), ((200, 100), (100, 100)), "200x100 but right is 100x100"),
])
def test_calibration_exceptions(left, right, sizes, match):
    with pytest.raises(CalibrationError, match=match):
        StereoCalibration.from_projections(left, right, size_left=sizes[0], size_right=sizes[1])


def test_depth_is_the_clouds_z_and_16_bit_millimetres_hold_what_they_can():
    """One formula: depth_map's pixels are point_cloud_xyz's z to the bit (NaN alike); 16UC1 rounds to the
    millimetre and gives 0 where there is no depth or where it is beyond 65.535 m."""
    from ges_core.geometry import depth_mm
    c = calib(doffs=2.0)
    rng = np.random.default_rng(0)
    d = rng.uniform(-2, 60, (100, 200)).astype(np.float32)
    valid = rng.random((100, 200)) > 0.2
    z = depth_map(d, valid, c, min_depth=2.0, max_depth=40.0)
    xyz, ok = point_cloud_xyz(d, valid, c, min_depth=2.0, max_depth=40.0)
    assert np.array_equal(z, xyz[..., 2], equal_nan=True) and np.array_equal(np.isfinite(z), ok)
    assert np.isnan(z[~valid | (d <= 0)]).all()
    mm = depth_mm(np.array([[1.2344, 1.2346, np.nan], [65.535, 65.536, 0.0]], np.float32))
    assert mm.dtype == np.uint16 and mm.tolist() == [[1234, 1235, 0], [65535, 0, 0]]
