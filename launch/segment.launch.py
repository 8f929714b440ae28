"""Launch the memsam segmentation node (a lifecycle node).

    ros2 launch memsam_ros segment.launch.py checkpoint:=/models/memsam.pt
    ros2 launch memsam_ros segment.launch.py checkpoint:=/models/memsam.pt rgb_topic:=/camera/color/image_raw
    ros2 launch memsam_ros segment.launch.py checkpoint:=runs/x/best.pt config_file:=runs/x/config.yaml
    ros2 launch memsam_ros segment.launch.py autostart:=false   # then: ros2 lifecycle set /memsam_segment configure

The checkpoint describes its own model (size, modalities, classes, input encoding), so any checkpoint works with
the default ``params_file`` (the installed config/segment.yaml), which sets only run-time parameters: device,
precision, topics, QoS, synchronisation. ``config_file`` (a memsam YAML, e.g. a training config) provides
defaults that the params file's keys override. An empty ``config_file``/``checkpoint`` is not passed.

``autostart`` (default true) becomes the node's ``ros.autostart``: the node configures (loads the model)
and activates itself, the same whether it is launched or run directly. With ``autostart:=false`` it waits
unconfigured for ``ros2 lifecycle set`` (or a lifecycle manager); it is a launch_ros ``LifecycleNode``, so
launch ``ChangeState`` events and ``OnStateTransition`` handlers work too.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
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
    autostart = LaunchConfiguration("autostart").perform(context).strip().lower()
    if autostart not in ("true", "false"):
        raise ValueError(f"autostart:={autostart!r}: expected true or false")
    parameters = [params_file] if params_file else []
    overrides = {"ros.autostart": autostart == "true"}
    if config_file:
        overrides["config_file"] = config_file
    if checkpoint:
        overrides["inference.checkpoint"] = checkpoint
    parameters.append(overrides)
    remappings = [(name, LaunchConfiguration(arg)) for name, arg in INPUT_TOPICS.items()]
    return [
        LifecycleNode(
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
            DeclareLaunchArgument(
                "autostart",
                default_value="true",
                choices=["true", "false"],
                description="configure and activate at start-up (false: wait for lifecycle transitions)",
            ),
            DeclareLaunchArgument("rgb_topic", default_value="rgb/image", description="RGB input (rgb8/bgr8/mono8)"),
            DeclareLaunchArgument("depth_topic", default_value="depth/image", description="depth (32FC1 m / 16UC1 mm)"),
            DeclareLaunchArgument(
                "lidar_topic", default_value="lidar/depth_image", description="LiDAR projected to the RGB camera"
            ),
            DeclareLaunchArgument("event_topic", default_value="event/image", description="event frames"),
            OpaqueFunction(function=_node),
        ]
    )
