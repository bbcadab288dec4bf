"""ros2 launch ges_ros stereo.launch.py [namespace:=stereo] [left_namespace:=left] [right_namespace:=right]
    [params_file:=<installed config/stereo.yaml>] [weights:=...] [device:=...] [approximate_sync:=...]
    [use_sim_time:=...]

Starts stereo_node in `namespace`; its inputs left/image_rect (or image_raw, and their /compressed),
left/camera_info, right/... are remapped to <left_namespace>/..., <right_namespace>/... as stereo_image_proc's
launch file does.
Every parameter can come from `params_file`; weights, device, approximate_sync and use_sim_time given here
override the file's, and only when given (ges_ros/launch_args.py). A node that cannot start ends the launch.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from ges_ros.launch_args import LAUNCH_PARAMETERS, exit_error, node_overrides

ARGUMENTS = (
    ("namespace", "stereo", "namespace of the node and its outputs"),
    ("left_namespace", "left", "namespace of the left camera topics (image_rect, camera_info)"),
    ("right_namespace", "right", "namespace of the right camera topics (image_rect, camera_info)"),
    ("params_file", "", "parameter YAML (default: the installed config/stereo.yaml)"),
    ("weights", "", "GES weights: default, a .safetensors or an .onnx file (default: the params file's)"),
    ("device", "", "auto, cpu, cuda or cuda:N (default: the params file's)"),
    ("approximate_sync", "", "pair inputs by nearest stamps: true or false (default: the params file's)"),
    ("use_sim_time", "", "use /clock (bag replay): true or false (default: false)"),
)


def _node(context):
    value = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    params_file = value["params_file"] or os.path.join(get_package_share_directory("ges_ros"), "config",
                                                       "stereo.yaml")
    overrides = node_overrides({name: value[name] for name in LAUNCH_PARAMETERS})
    left, right = value["left_namespace"], value["right_namespace"]
    node = Node(
        package="ges_ros",
        executable="stereo_node",
        name="stereo_node",
        namespace=value["namespace"],
        output="screen",
        parameters=[params_file, overrides] if overrides else [params_file],
        # every input the node may read (image_transport, rectify): a remapping of a topic unused is harmless
        remappings=[(f"{side}/{topic}", f"{ns}/{topic}") for side, ns in (("left", left), ("right", right))
                    for topic in ("image_rect", "image_rect/compressed", "image_raw", "image_raw/compressed",
                                  "camera_info")],
    )

    def exited(event, context):
        # raised, not logged: launch then shuts down and `ros2 launch` exits 1 (a Shutdown action ends it with 0);
        # an exit during a shutdown launch asked for (Ctrl-C) is none
        error = exit_error(event.returncode, context.is_shutdown)
        if error:
            raise RuntimeError(error)
        return None
    return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=exited))]


def generate_launch_description():
    return LaunchDescription([DeclareLaunchArgument(n, default_value=d, description=t) for n, d, t in ARGUMENTS]
                             + [OpaqueFunction(function=_node)])
