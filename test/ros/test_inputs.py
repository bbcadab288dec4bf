"""The node's inputs: rectification of raw images in the node (plumb_bob, rational_polynomial, equidistant) and
compressed image transport, on the processing path the live node and `ges replay` share."""
import cv2
import numpy as np
import pytest

from ges_core import load_predictor
from ges_ros.inputs import Rectifier, inputs, rectification_maps, topic
from ges_ros.messages import camera_info_msg, header, image_msg, rosbags_types
from ges_ros.processing import InputError, ProcessingParams, StereoProcessor
from ges_ros.sample import stereo_messages

TYPES = rosbags_types()


def rotation(rx, ry, rz):
    return cv2.Rodrigues(np.radians(np.array([rx, ry, rz], np.float64)))[0]


# a raw camera per side (K, D, R and the model) whose rectified image is the motorcycle pair's
SIDES = {
    "plumb_bob": [(1.03, 4.0, -3.0, [-0.14, 0.05, 0.0008, -0.0006, 0.0], (0.4, -0.6, 0.3)),
                  (0.98, -5.0, 2.0, [-0.11, 0.03, -0.0004, 0.0007, 0.0], (-0.3, 0.5, -0.2))],
    "rational_polynomial": [(1.02, 3.0, 1.0, [-0.1, 0.02, 0.0, 0.0, 0.0, 0.01, 0.0, 0.0], (0.2, 0.3, 0.0)),
                            (1.0, -2.0, -1.0, [-0.08, 0.01, 0.0, 0.0, 0.0, 0.005, 0.0, 0.0], (0.0, -0.4, 0.2))],
    "equidistant": [(1.0, 2.0, 0.0, [0.05, -0.02, 0.004, -0.001], (0.3, 0.0, 0.2)),
                    (1.01, -1.0, 2.0, [0.04, -0.01, 0.002, 0.0], (-0.2, 0.3, 0.0))],
}


def distort(image, info):
    """The raw image whose rectification by `info` is `image`: each raw pixel takes the rectified image's value
    where the camera model sends it."""
    height, width = image.shape[:2]
    k = np.asarray(info.k, np.float64).reshape(3, 3)
    d = np.asarray(info.d, np.float64)
    r = np.asarray(info.r, np.float64).reshape(3, 3)
    p = np.asarray(info.p, np.float64).reshape(3, 4)
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pts = np.stack([u, v], axis=-1).reshape(-1, 1, 2)
    if info.distortion_model == "equidistant":
        rect = cv2.fisheye.undistortPoints(pts, k, d, R=r, P=p)
    else:
        rect = cv2.undistortPoints(pts, k, d, R=r, P=p)
    maps = rect.reshape(height, width, 2).astype(np.float32)
    return cv2.remap(image, maps[..., 0], maps[..., 1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def raw_messages(left, right, cam, model, sec=100):
    """The pair as a raw camera would send it: distorted, unrectified images and camera_info with D, K, R, P."""
    height, width = left.shape[:2]
    msgs = []
    for k, (image, (fk, dcx, dcy, d, angles)) in enumerate(zip((left, right), SIDES[model])):
        hdr = header(TYPES, sec, 0, f"stereo_{'lr'[k]}_optical")
        cx = cam.cx if k == 0 else cam.cx_right
        info = camera_info_msg(TYPES, hdr, width=width, height=height, fx=cam.f, fy=cam.f, cx=cx, cy=cam.cy,
                               tx=0.0 if k == 0 else -cam.f * cam.baseline,
                               k=[cam.f * fk, 0, cx + dcx, 0, cam.f * fk, cam.cy + dcy, 0, 0, 1], d=d,
                               r=rotation(*angles).reshape(-1), distortion_model=model)
        msgs.append((image_msg(TYPES, hdr, distort(image, info), "rgb8"), info))
    (left_msg, left_info), (right_msg, right_info) = msgs
    return left_msg, right_msg, left_info, right_info


@pytest.mark.parametrize("model", list(SIDES))
def test_rectification_maps_undo_each_distortion_model(motorcycle_small, model):
    left, right, _, _, cam = motorcycle_small
    left_msg, _, left_info, _ = raw_messages(left, right, cam, model)
    raw = np.frombuffer(bytes(left_msg.data), np.uint8).reshape(left.shape)
    back = cv2.remap(raw, *rectification_maps(left_info), cv2.INTER_LINEAR)
    inner = (slice(left.shape[0] // 8, -left.shape[0] // 8), slice(left.shape[1] // 8, -left.shape[1] // 8))
    err = np.abs(back[inner].astype(float) - left[inner].astype(float)).mean()
    moved = np.abs(raw[inner].astype(float) - left[inner].astype(float)).mean()
    assert err < 4.0 and moved > 3 * err, (err, moved)


def test_rectify_gives_back_the_disparity_of_the_undistorted_pair(motorcycle_small):
    """The shipped network on a rectified real pair, and on the same pair distorted and rotated by known D and R
    with rectify:=true: the same disparity (within a fraction of a pixel); without rectify it is far off."""
    left, right, gt, valid, cam = motorcycle_small
    predictor = load_predictor("default", backend="torch")
    params = ProcessingParams.from_dict({})
    reference = StereoProcessor(predictor, params, TYPES).process(*stereo_messages(TYPES, left, right, cam, sec=1))
    raw = raw_messages(left, right, cam, "plumb_bob", sec=1)
    rectified = StereoProcessor(predictor, params, TYPES, rectify=True).process(*raw)
    unrectified = StereoProcessor(predictor, params, TYPES).process(*raw)

    def disparity(result):
        img = result.disparity.image
        return np.frombuffer(bytes(img.data), "<f4").reshape(img.height, img.width)
    inner = np.zeros_like(valid)
    inner[gt.shape[0] // 8: -gt.shape[0] // 8, gt.shape[1] // 8: -gt.shape[1] // 8] = True
    mask = valid & inner & (disparity(reference) > reference.disparity.min_disparity)
    ref = disparity(reference)[mask]
    err = np.median(np.abs(disparity(rectified)[mask] - ref))
    off = np.median(np.abs(disparity(unrectified)[mask] - ref))
    assert err < 0.5 and off > 4 * err, (err, off)
    # the outputs are in the rectified left frame: the disparity message's f and T are P's
    assert rectified.disparity.f == pytest.approx(cam.f) and rectified.disparity.t == pytest.approx(cam.baseline)


def test_maps_are_built_once_per_calibration_and_bad_calibrations_are_dropped_pairs(motorcycle_small):
    left, right, gt, valid, cam = motorcycle_small
    rectifier = Rectifier()
    first = raw_messages(left, right, cam, "plumb_bob", sec=1)
    for _ in range(3):
        rectifier(np.zeros_like(left), np.zeros_like(right), first[2], first[3])
    assert rectifier.builds == 1
    other = raw_messages(left, right, cam, "equidistant", sec=2)
    rectifier(np.zeros_like(left), np.zeros_like(right), other[2], other[3])
    assert rectifier.builds == 2

    from oracle import OraclePredictor
    proc = StereoProcessor(OraclePredictor(gt, valid), ProcessingParams.from_dict({}), TYPES, rectify=True)
    bad = raw_messages(left, right, cam, "plumb_bob", sec=3)
    bad[2].d = np.zeros(3)
    with pytest.raises(InputError, match="plumb_bob D has 3") as exc:
        proc.process(*bad)
    assert exc.value.reason == "bad_camera_info"
    bad = raw_messages(left, right, cam, "plumb_bob", sec=4)
    bad[3].distortion_model = "fov"
    with pytest.raises(InputError, match="not supported"):
        proc.process(*bad)
    assert proc.process(*raw_messages(left, right, cam, "plumb_bob", sec=5)).disparity is not None
    with pytest.raises(ValueError, match="camera_info"):
        StereoProcessor(OraclePredictor(gt, valid), ProcessingParams.from_dict({}), TYPES, rectify=True,
                        calibration=object())


def test_input_topics_by_transport_and_rectification():
    assert [topic(i, "raw") for i in inputs()] == ["left/image_rect", "right/image_rect", "left/camera_info",
                                                   "right/camera_info"]
    assert [topic(i, "compressed") for i in inputs(rectify=True)] == [
        "left/image_raw/compressed", "right/image_raw/compressed", "left/camera_info", "right/camera_info"]
    with pytest.raises(ValueError, match="image_transport"):
        topic(inputs()[0], "theora")
