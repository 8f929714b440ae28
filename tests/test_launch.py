"""launch/segment.launch.py, built for real with launch/launch_ros (from ../shared/ros2-upstream, which stands in
for a ROS install; without it these tests skip and say so). <2 s. The launch itself runs in test_ros_install.py.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from memsam_core.config import load_config

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "segment.launch.py"
EXPECTED_ARGS = {
    "rgb_type",
    "depth_type",
    "lidar_type",
    "event_type",
    "use_sim_time",
    "params_file",
    "config_file",
    "checkpoint",
    "namespace",
    "rgb_topic",
    "depth_topic",
    "lidar_topic",
    "event_topic",
    "autostart",
}
HAVE_LAUNCH_ROS = importlib.util.find_spec("launch_ros") is not None


def _tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name
    ]


def test_declared_arguments():
    names = {ast.literal_eval(call.args[0]) for call in _calls(_tree(), "DeclareLaunchArgument")}
    assert names == EXPECTED_ARGS


def test_node_action_package_executable_and_remappings():
    tree = _tree()
    assert not _calls(tree, "Node")  # a launch_ros LifecycleNode, so launch sees its transitions
    (node,) = _calls(tree, "LifecycleNode")
    kwargs = {kw.arg: kw.value for kw in node.keywords}
    assert ast.literal_eval(kwargs["package"]) == "memsam_ros"
    assert ast.literal_eval(kwargs["executable"]) == "segment_node"
    topics = next(
        ast.literal_eval(n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "INPUT_TOPICS"
    )
    assert set(topics.values()) == {"rgb_topic", "depth_topic", "lidar_topic", "event_topic"}
    # the remapped names are the node's default topics
    config = load_config(ROOT / "config" / "segment.yaml")
    assert set(topics) == {config.ros.topic(m) for m in ("rgb", "depth", "lidar", "event")}


def test_type_arguments_offer_what_the_node_accepts():
    """The launch file lists the input types itself (it imports nothing of memsam): they must be the node's."""
    from memsam_ros.inputs.converter import ACCEPTED

    tree = _tree()
    types = next(
        ast.literal_eval(n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "INPUT_TYPES"
    )
    assert types == ACCEPTED


def test_executable_is_a_console_script():
    import configparser

    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    scripts = dict(line.split(" = ") for line in parser["options.entry_points"]["console_scripts"].split("\n") if line)
    assert scripts["segment_node"] == "memsam_ros.node:main"
    assert "install(DIRECTORY launch config DESTINATION share/${PROJECT_NAME})" in (ROOT / "CMakeLists.txt").read_text()


def test_default_params_file_exists_and_loads():
    tree = _tree()
    join = _calls(tree, "PathJoinSubstitution")[0]
    parts = [ast.literal_eval(e) for e in join.args[0].elts[1:]]
    path = ROOT.joinpath(*parts)
    assert path == ROOT / "config" / "segment.yaml" and path.is_file()
    config = load_config(path)
    assert config.model.modalities == ["rgb", "depth", "lidar", "event"]
    assert config.sync.reference == "rgb"


@pytest.mark.skipif(not HAVE_LAUNCH_ROS, reason="needs launch_ros: bash ../shared/ros2-upstream/install.sh .venv")
def test_launch_description_builds():
    """The description and the node action, built by launch/launch_ros themselves."""
    from launch.actions import DeclareLaunchArgument

    from launch import LaunchContext

    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    assert declared == EXPECTED_ARGS
    from launch_ros.actions import LifecycleNode
    from launch_ros.utilities import evaluate_parameters

    context = LaunchContext()
    context.launch_configurations.update(
        {"params_file": str(ROOT / "config/segment.yaml"), "config_file": "", "checkpoint": "/m.pt", "namespace": ""}
    )
    context.launch_configurations.update({arg: f"/cam/{arg}" for arg in EXPECTED_ARGS if arg.endswith("_topic")})
    context.launch_configurations.update({arg: "" for arg in EXPECTED_ARGS if arg.endswith("_type")})
    context.launch_configurations["use_sim_time"] = "false"
    for autostart in ("true", "false"):
        context.launch_configurations["autostart"] = autostart
        (node,) = module._node(context)
        assert isinstance(node, LifecycleNode) and node.node_executable == "segment_node"
        params_file, overrides = evaluate_parameters(context, node._Node__parameters)  # the launch arguments win
        assert str(params_file).endswith("config/segment.yaml")
        assert overrides == {
            "ros.autostart": autostart == "true",
            "inference.checkpoint": "/m.pt",
            "use_sim_time": False,
        }
    # an input type given is passed; an empty one leaves the params file's value (default auto)
    context.launch_configurations.update({"event_type": "event_packet", "use_sim_time": "true"})
    _, overrides = evaluate_parameters(context, module._node(context)[0]._Node__parameters)
    assert overrides["ros.event_type"] == "event_packet" and overrides["use_sim_time"] is True
    assert not {"ros.rgb_type", "ros.depth_type", "ros.lidar_type"} & set(overrides)
    context.launch_configurations["lidar_type"] = "pointclouds"
    with pytest.raises(ValueError, match="lidar_type"):
        module._node(context)


def test_autostart_argument_becomes_the_node_parameter():
    """Statically: the launch argument is turned into ``ros.autostart`` (the node starts itself, so the same
    works under ``ros2 launch`` and when run directly); config/segment.yaml ships it true."""
    source = LAUNCH_FILE.read_text()
    assert '"ros.autostart": autostart == "true"' in source
    assert load_config(ROOT / "config" / "segment.yaml").ros.autostart is True
