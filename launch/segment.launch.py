"""Launch the memsam segmentation node.

    ros2 launch memsam_ros segment.launch.py
    ros2 launch memsam_ros segment.launch.py checkpoint:=/models/memsam.pt rgb_topic:=/camera/color/image_raw
    ros2 launch memsam_ros segment.launch.py config_file:=runs/x/config.yaml params_file:=''

``params_file`` (default: the installed config/segment.yaml) sets every parameter explicitly; with a
training ``config_file`` pass ``params_file:=''`` (or a file with only your overrides) so the
training config's values are not overridden. An empty ``config_file``/``checkpoint`` is not passed.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

INPUT_TOPICS = {  # remapped name (the node's default relative topic) -> launch argument
    "rgb/image": "rgb_topic",
    "depth/image": "depth_topic",
    "lidar/depth_image": "lidar_topic",
    "event/image": "event_topic",
}


def _node(context, *args, **kwargs):
    params_file = LaunchConfiguration("params_file").perform(context)
    config_file = LaunchConfiguration("config_file").perform(context)
    checkpoint = LaunchConfiguration("checkpoint").perform(context)
    parameters = [params_file] if params_file else []
    overrides = {}
    if config_file:
        overrides["config_file"] = config_file
    if checkpoint:
        overrides["inference.checkpoint"] = checkpoint
    if overrides:
        parameters.append(overrides)
    remappings = [(name, LaunchConfiguration(arg)) for name, arg in INPUT_TOPICS.items()]
    return [
        Node(
            package="memsam_ros",
            executable="segment_node",
            name="memsam_segment",
            namespace=LaunchConfiguration("namespace"),
            parameters=parameters,
            remappings=remappings,
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    default_params = PathJoinSubstitution([FindPackageShare("memsam_ros"), "config", "segment.yaml"])
    return LaunchDescription(
        [
            DeclareLaunchArgument("params_file", default_value=default_params, description="ROS params file"),
            DeclareLaunchArgument(
                "config_file", default_value="", description="memsam YAML providing defaults (e.g. a training config)"
            ),
            DeclareLaunchArgument("checkpoint", default_value="", description="memsam .pt (inference.checkpoint)"),
            DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
            DeclareLaunchArgument("rgb_topic", default_value="rgb/image", description="RGB input (rgb8/bgr8/mono8)"),
            DeclareLaunchArgument("depth_topic", default_value="depth/image", description="depth (32FC1 m / 16UC1 mm)"),
            DeclareLaunchArgument(
                "lidar_topic", default_value="lidar/depth_image", description="LiDAR projected to the RGB camera"
            ),
            DeclareLaunchArgument("event_topic", default_value="event/image", description="event frames"),
            OpaqueFunction(function=_node),
        ]
    )
