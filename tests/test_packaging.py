"""package.xml is what rosdep and colcon read: one ament_cmake package, every import declared. (The colcon build of
a workspace and ``ros2 launch`` of it are in test_ros_install.py.)"""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_package_xml_is_format_3_ament_cmake():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "memsam_ros"
    assert root.find("export").findtext("build_type") == "ament_cmake"
    assert (ROOT / "resource" / "memsam_ros").is_file()  # the pip install's ament index marker


# Python imports -> the rosdep key that provides them on a ROS 2 install
ROSDEP_KEYS = {"numpy": "python3-numpy", "yaml": "python3-yaml", "cv2": "python3-opencv", "tqdm": "python3-tqdm"}
BUILT_HERE = {"memsam_core", "memsam_ros", "memsam_training", "memsam_msgs", "dvs_msgs"}  # this package builds them
PIP_ONLY = {"torch", "sam2", "pydantic", "annotated_types", "onnxscript", "rosbags", "matplotlib", "tensorboard"}


def _imports(paths: list[Path]) -> set[str]:
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names}


def test_package_xml_declares_every_import_and_names_the_pip_only_ones():
    """rosdep installs what package.xml declares: every import of the node, its core and its tools is either a
    declared dependency, built by this package, or named in package.xml as pip-only (README: On a ROS 2 install)."""
    text = (ROOT / "package.xml").read_text()
    root = ET.fromstring(text)
    declared = {e.text for e in root if e.tag.endswith("depend")}
    sources = [*ROOT.joinpath("memsam_ros").rglob("*.py"), *ROOT.joinpath("memsam_core").rglob("*.py")]
    imported = _imports(sources)
    assert {"rclpy", "sensor_msgs", "cv2", "torch"} <= imported  # the scan sees the real imports
    for name in sorted(imported - BUILT_HERE):
        if name in PIP_ONLY:
            assert name.replace("_", "") in text.replace("_", "") or name == "annotated_types", f"{name}: not named"
        else:
            assert ROSDEP_KEYS.get(name, name) in declared, f"import {name}: no <*depend> {ROSDEP_KEYS.get(name, name)}"
    for implicit in ("lifecycle_msgs", "rosgraph_msgs", "launch", "launch_ros", "ament_cmake_python"):
        assert implicit in declared, implicit  # imported by rclpy.lifecycle / the launch file / the build
