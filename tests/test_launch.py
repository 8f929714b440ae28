"""launch/segment.launch.py: run for real where launch_ros is importable (a ROS install), otherwise
check it statically (launch/launch_ros are not on PyPI). <1 s off-ROS.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from memsam_core.config import load_config

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "segment.launch.py"
EXPECTED_ARGS = {
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


def test_executable_is_a_console_script():
    setup = (ROOT / "setup.py").read_text()
    assert '"segment_node = memsam_ros.node:main"' in setup
    assert '("share/" + PACKAGE_NAME + "/launch", glob("launch/*.launch.py"))' in setup


def test_default_params_file_exists_and_loads():
    tree = _tree()
    join = _calls(tree, "PathJoinSubstitution")[0]
    parts = [ast.literal_eval(e) for e in join.args[0].elts[1:]]
    path = ROOT.joinpath(*parts)
    assert path == ROOT / "config" / "segment.yaml" and path.is_file()
    config = load_config(path)
    assert config.model.modalities == ["rgb", "depth", "lidar", "event"]
    assert config.sync.reference == "rgb"


def test_launch_description_builds():
    """On a ROS install: build the description and the node action for real; off-ROS: compile it and
    check it imports nothing but launch/launch_ros (launch_ros is not on PyPI)."""
    if not HAVE_LAUNCH_ROS:
        compile(LAUNCH_FILE.read_text(), str(LAUNCH_FILE), "exec")
        imported = {
            (getattr(n, "module", None) or "").split(".")[0]
            for n in ast.walk(_tree())
            if isinstance(n, ast.ImportFrom | ast.Import)
        }
        assert imported <= {"launch", "launch_ros"}
        return
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
    for autostart in ("true", "false"):
        context.launch_configurations["autostart"] = autostart
        (node,) = module._node(context)
        assert isinstance(node, LifecycleNode) and node.node_executable == "segment_node"
        params_file, overrides = evaluate_parameters(context, node._Node__parameters)  # the launch arguments win
        assert str(params_file).endswith("config/segment.yaml")
        assert overrides == {"ros.autostart": autostart == "true", "inference.checkpoint": "/m.pt"}


def test_autostart_argument_becomes_the_node_parameter():
    """Statically: the launch argument is turned into ``ros.autostart`` (the node starts itself, so the same
    works under ``ros2 launch`` and when run directly); config/segment.yaml ships it true."""
    source = LAUNCH_FILE.read_text()
    assert '"ros.autostart": autostart == "true"' in source
    assert load_config(ROOT / "config" / "segment.yaml").ros.autostart is True
