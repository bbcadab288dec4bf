"""The README's recipes for mappers and planners, each with real messages: a consumer node subscribing with that
consumer's own topic names (remapped as the recipe says) and checking what it needs: types, encodings, sizes,
frames and stamps that pair exactly."""
import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from ges_ros.messages import unpack_cloud
from ges_ros.sample import stereo_messages
from oracle import OraclePredictor
from ros_harness import RELIABLE, TYPES, Harness

# consumer -> (the remappings its recipe gives, {its input topic (relative): type})
RECIPES = {
    "rtabmap": ([("rgb/image", "/stereo/left/image_rect"), ("depth/image", "/stereo/depth"),
                 ("rgb/camera_info", "/stereo/depth/camera_info")],
                {"rgb/image": Image, "depth/image": Image, "rgb/camera_info": CameraInfo}),
    "nvblox": ([("camera_0/depth/image", "/stereo/depth"), ("camera_0/depth/camera_info", "/stereo/depth/camera_info")],
               {"camera_0/depth/image": Image, "camera_0/depth/camera_info": CameraInfo}),
    "depthimage_to_laserscan": ([("depth", "/stereo/depth"), ("depth_camera_info", "/stereo/depth/camera_info")],
                                {"depth": Image, "depth_camera_info": CameraInfo}),
    "nav2_voxel_layer": ([], {"/stereo/points2": PointCloud2}),
}


@pytest.fixture(scope="module")
def consumers(motorcycle_small):
    """The node fed two frames (32FC1 depth, then 16UC1), every consumer's inputs as it received them."""
    left, right, gt, valid, cam = motorcycle_small
    got = {name: {t: [] for t in topics} for name, (_, topics) in RECIPES.items()}
    with Harness({"no_input_warning_seconds": 60.0}, predictor=OraclePredictor(gt, valid)) as h:
        nodes = []
        for name, (remaps, topics) in RECIPES.items():
            args = ["--ros-args", *sum((["-r", f"{a}:={b}"] for a, b in remaps), [])]
            node = rclpy.create_node(f"consumer_{name}", context=h.context, cli_args=args)
            for topic, ty in topics.items():
                node.create_subscription(ty, topic, got[name][topic].append, RELIABLE)
            h.executor.add_node(node)
            nodes.append(node)
        out = h.node.publishers_by_output
        h.wait(lambda: out["depth"].get_subscription_count() >= 3 and out["points2"].get_subscription_count() >= 2,
               20, "the consumers' subscriptions")
        try:
            for sec, encoding in ((100, "32FC1"), (101, "16UC1")):
                h.node.set_parameters([Parameter("depth_encoding", value=encoding)])
                h.publish(stereo_messages(TYPES, left, right, cam, sec=sec))
                h.wait(lambda: all(len(v) >= sec - 99 for c in got.values() for v in c.values()), 30,
                       f"frame {sec} at every consumer")
        finally:
            for node in nodes:
                h.executor.remove_node(node)
                node.destroy_node()
    return got, gt, valid, cam


def stamp(msg):
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def depth_array(msg):
    dtype = "<f4" if msg.encoding == "32FC1" else "<u2"
    z = np.frombuffer(bytes(msg.data), dtype).reshape(msg.height, msg.width)
    return z if msg.encoding == "32FC1" else np.where(z > 0, z / 1000.0, np.nan)


def test_rtabmap_rgbd_gets_rgb_depth_and_camera_info_that_pair_exactly(consumers):
    got, cam = consumers[0]["rtabmap"], consumers[3]
    for k, encoding in enumerate(("32FC1", "16UC1")):
        rgb, depth, info = got["rgb/image"][k], got["depth/image"][k], got["rgb/camera_info"][k]
        assert stamp(rgb) == stamp(depth) == stamp(info)                       # exact sync
        assert rgb.header.frame_id == depth.header.frame_id == info.header.frame_id
        assert (rgb.height, rgb.width) == (depth.height, depth.width) == (info.height, info.width)
        assert depth.encoding == encoding
        assert list(info.k) == [cam.f, 0, cam.cx, 0, cam.f, cam.cy, 0, 0, 1]  # the rgb image's own camera


def test_nvblox_gets_depth_and_camera_info_by_exact_stamp_in_metres_or_millimetres(consumers):
    got, gt, valid, cam = consumers[0]["nvblox"], *consumers[1:]
    true = cam.f * cam.baseline / (gt + cam.doffs)
    for k in range(2):
        depth, info = got["camera_0/depth/image"][k], got["camera_0/depth/camera_info"][k]
        assert stamp(depth) == stamp(info) and depth.encoding in ("32FC1", "16UC1")
        z = depth_array(depth)
        np.testing.assert_allclose(z[valid], true[valid], rtol=1e-3, atol=6e-4)
        assert np.isnan(z[~valid]).all()


def test_depthimage_to_laserscan_gets_a_depth_row_it_can_turn_into_ranges(consumers):
    got, gt, cam = consumers[0]["depthimage_to_laserscan"], consumers[1], consumers[3]
    depth, info = got["depth"][0], got["depth_camera_info"][0]
    assert depth.encoding in ("32FC1", "16UC1") and stamp(depth) == stamp(info)
    # a scan's range at a pixel of the middle row: the ray through (u, cy) scaled to depth z, from K alone
    row = int(round(info.k[5]))
    z = depth_array(depth)[row]
    u = np.flatnonzero(np.isfinite(z))
    assert u.size > 0.3 * z.size
    x = (u - info.k[2]) * z[u] / info.k[0]
    ranges = np.hypot(x, z[u])
    true_z = cam.f * cam.baseline / (gt[row, u] + cam.doffs)
    np.testing.assert_allclose(ranges, np.hypot((u - cam.cx) * true_z / cam.f, true_z), rtol=1e-3)


def test_nav2_voxel_layer_gets_a_cloud_in_the_optical_frame(consumers):
    got, valid = consumers[0]["nav2_voxel_layer"], consumers[2]
    cloud = got["/stereo/points2"][0]
    assert [(f.name, f.datatype) for f in cloud.fields][:3] == [("x", 7), ("y", 7), ("z", 7)]      # FLOAT32
    assert cloud.header.frame_id == "stereo_left_optical" and not cloud.is_dense
    pts = unpack_cloud(cloud)
    finite = np.isfinite(pts["z"])
    assert np.array_equal(finite, valid) and (pts["z"][finite] > 0).all()          # z forward
