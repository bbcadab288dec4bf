"""ros2 launch ges_ros stereo.launch.py [namespace:=stereo] [left_namespace:=left] [right_namespace:=right]
    [params_file:=<installed config/stereo.yaml>] [weights:=default] [device:=auto]
    [approximate_sync:=false] [use_sim_time:=false]

Starts stereo_node in `namespace`; its inputs left/image_rect, left/camera_info, right/... are
remapped to <left_namespace>/..., <right_namespace>/... as stereo_image_proc's launch file does.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

ARGUMENTS = (
    ("namespace", "stereo", "namespace of the node and its outputs"),
    ("left_namespace", "left", "namespace of the left camera topics (image_rect, camera_info)"),
    ("right_namespace", "right", "namespace of the right camera topics (image_rect, camera_info)"),
    ("params_file", "", "parameter YAML (default: the installed config/stereo.yaml)"),
    ("weights", "default", "GES weights: default, a .safetensors or an .onnx file"),
    ("device", "auto", "auto, cpu, cuda or cuda:N"),
    ("approximate_sync", "false", "pair inputs by nearest stamps"),
    ("use_sim_time", "false", "use /clock (bag replay)"),
)


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("ges_ros"), "config", "stereo.yaml")
    cfg = {name: LaunchConfiguration(name) for name, _, _ in ARGUMENTS}
    params_file = PythonExpression(["'", cfg["params_file"], "' or '", default_params, "'"])
    node = Node(
        package="ges_ros",
        executable="stereo_node",
        name="stereo_node",
        namespace=cfg["namespace"],
        output="screen",
        parameters=[
            params_file,
            {
                "weights": cfg["weights"],
                "device": cfg["device"],
                "approximate_sync": ParameterValue(cfg["approximate_sync"], value_type=bool),
                "use_sim_time": ParameterValue(cfg["use_sim_time"], value_type=bool),
            },
        ],
        remappings=[
            ("left/image_rect", [cfg["left_namespace"], "/image_rect"]),
            ("left/camera_info", [cfg["left_namespace"], "/camera_info"]),
            ("right/image_rect", [cfg["right_namespace"], "/image_rect"]),
            ("right/camera_info", [cfg["right_namespace"], "/camera_info"]),
        ],
    )
    return LaunchDescription([DeclareLaunchArgument(n, default_value=d, description=t) for n, d, t in ARGUMENTS]
                             + [node])
