"""The ROS package installs the way a ROS 2 user expects: ``colcon build`` of a workspace with this repository in
``src/`` builds one ament_cmake package with the executables ``ros2 run`` finds, the launch and config files
``ros2 launch`` finds, the three Python packages, ``memsam_msgs`` and the vendored sensor interfaces."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def test_package_xml_is_format_3_ament_cmake():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "memsam_ros"
    assert root.find("export").findtext("build_type") == "ament_cmake"
    assert (ROOT / "resource" / "memsam_ros").is_file()  # the pip install's ament index marker


def test_colcon_build_installs_executables_launch_and_config(tmp_path):
    colcon = shutil.which("colcon", path=str(VENV_BIN)) or shutil.which("colcon")
    assert colcon, "colcon is in requirements.txt (scripts/setup.sh installs it)"
    src = tmp_path / "src" / "memsam"
    src.parent.mkdir()
    # the package as committed: the files colcon would see in a workspace checkout
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, target)
    env = {**os.environ, "AMENT_PREFIX_PATH": str(VENV_BIN.parent), "CMAKE_PREFIX_PATH": str(VENV_BIN.parent)}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    listed = subprocess.run(
        [colcon, "list", "--base-paths", str(tmp_path / "src")], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert listed[:2] == ["memsam_ros", str(src)] and listed[2] == "(ros.ament_cmake)", listed
    result = subprocess.run(
        [colcon, "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(tmp_path / "src"),
         "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install"),
         "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    prefix = tmp_path / "install" / "memsam_ros"
    for executable in ("segment_node", "memsam-node", "memsam-eval-bag", "memsam-play-bag", "memsam-demo"):
        assert os.access(prefix / "lib" / "memsam_ros" / executable, os.X_OK), executable
    share = prefix / "share" / "memsam_ros"
    for name in ("package.xml", "launch/segment.launch.py", "config/segment.yaml", "config/fastdds_shm.xml"):
        assert (share / name).is_file(), name
    assert (tmp_path / "install" / "memsam_ros" / "share" / "ament_index" / "resource_index" / "packages"
            / "memsam_ros").is_file()  # fmt: skip
    site = next((prefix / "lib").glob("python3*/site-packages"))
    for package in (
        "memsam_core",
        "memsam_ros",
        "memsam_training",
        "memsam_msgs",
        "event_camera_msgs",
        "dvs_msgs",
        "tf2_msgs",
    ):
        assert (site / package / "__init__.py").is_file(), package
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    assert (index / "memsam_msgs").is_file() and (index / "tf2_msgs").is_file()
