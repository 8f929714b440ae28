"""Launch the memsam segmentation node (a lifecycle node).

    ros2 launch memsam_ros segment.launch.py checkpoint:=/models/memsam.pt
    ros2 launch memsam_ros segment.launch.py checkpoint:=/models/memsam.pt rgb_topic:=/camera/color/image_raw
    ros2 launch memsam_ros segment.launch.py checkpoint:=runs/x/best.pt config_file:=runs/x/config.yaml
    ros2 launch memsam_ros segment.launch.py autostart:=false   # then: ros2 lifecycle set /memsam_segment configure
    ros2 launch memsam_ros segment.launch.py checkpoint:=/models/memsam.pt use_sim_time:=true  # bag played with --clock
    ros2 launch memsam_ros segment.launch.py checkpoint:=/models/memsam.pt rgb_topic:=/cam/image_raw/compressed \
        depth_topic:=/cam/depth/compressedDepth lidar_topic:=/velodyne_points event_topic:=/event_camera/events

The checkpoint describes its own model (size, modalities, classes, input encoding), so any checkpoint works with
the default ``params_file`` (the installed config/segment.yaml), which sets only run-time parameters: device,
precision, topics, QoS, synchronisation. ``config_file`` (a memsam YAML, e.g. a training config) provides
defaults that the params file's keys override. An empty ``config_file``/``checkpoint`` is not passed.

The input types need no argument: ``ros.<modality>_type`` is ``auto`` by default, so each input takes the type its
publishers offer (Image or CompressedImage RGB, compressedDepth, PointCloud2, EventPacket...) and a rig's topics need
remaps only. ``rgb_type``, ``depth_type``, ``lidar_type`` and ``event_type`` fix a type (empty = the params file's).
``use_sim_time:=true`` follows ``/clock`` (a bag played with ``--clock``).

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
INPUT_TYPES = {  # <modality>_type -> values besides auto: memsam_ros.inputs.converter.ACCEPTED (tests/test_launch.py)
    "rgb": ("image", "compressed"),
    "depth": ("image", "compressed"),
    "lidar": ("image", "pointcloud"),
    "event": ("image", "compressed", "event_packet", "event_array", "event_array_msgs"),
}


_TYPE_DOC = "message type on the topic; empty: the params file's (default auto: the type its publishers offer)"


def _type_choices(modality: str) -> list[str]:
    return ["", "auto", *INPUT_TYPES[modality]]


def _node(context, *args, **kwargs):
    params_file = LaunchConfiguration("params_file").perform(context)
    config_file = LaunchConfiguration("config_file").perform(context)
    checkpoint = LaunchConfiguration("checkpoint").perform(context)
    autostart = LaunchConfiguration("autostart").perform(context).strip().lower()
    if autostart not in ("true", "false"):
        raise ValueError(f"autostart:={autostart!r}: expected true or false")
    parameters = [params_file] if params_file else []
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).strip().lower()
    if use_sim_time not in ("true", "false"):
        raise ValueError(f"use_sim_time:={use_sim_time!r}: expected true or false")
    overrides = {"ros.autostart": autostart == "true", "use_sim_time": use_sim_time == "true"}
    for modality in INPUT_TYPES:
        if kind := LaunchConfiguration(f"{modality}_type").perform(context).strip():
            if kind not in _type_choices(modality):
                raise ValueError(f"{modality}_type:={kind!r}: expected one of {', '.join(_type_choices(modality)[1:])}")
            overrides[f"ros.{modality}_type"] = kind
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
            DeclareLaunchArgument("event_topic", default_value="event/image", description="event frames or stream"),
            DeclareLaunchArgument("rgb_type", default_value="", choices=_type_choices("rgb"), description=_TYPE_DOC),
            DeclareLaunchArgument(
                "depth_type", default_value="", choices=_type_choices("depth"), description=_TYPE_DOC
            ),
            DeclareLaunchArgument(
                "lidar_type", default_value="", choices=_type_choices("lidar"), description=_TYPE_DOC
            ),
            DeclareLaunchArgument(
                "event_type", default_value="", choices=_type_choices("event"), description=_TYPE_DOC
            ),
            DeclareLaunchArgument(
                "use_sim_time", default_value="false", choices=["true", "false"], description="follow /clock"
            ),
            OpaqueFunction(function=_node),
        ]
    )
