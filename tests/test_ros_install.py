"""On a ROS 2 install, as a ROS user does it: this repository in ``src/`` of a workspace, ``colcon build``, source
the install, ``ros2 launch memsam_ros segment.launch.py checkpoint:=...``, play a bag into the node from another
process, look at its topics, ``ros2 param get/set``, then Ctrl-C.

The upstream ``ros2`` CLI, ``launch``/``launch_ros`` and ``message_filters`` come from ``../shared/ros2-upstream``
(source snapshots that stand in for a ROS install; ``scripts/test.sh`` installs them into the venv). Without that
folder these tests skip and say so. ~3 min on 2 cores (the colcon build is ~45 s of it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from domains import next_domain_id

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
UPSTREAM = ROOT.parent / "shared" / "ros2-upstream"


def _why_skip() -> str | None:
    if not UPSTREAM.is_dir():
        return (
            f"needs {UPSTREAM} (upstream ros2 CLI + launch tools standing in for a ROS 2 install; CI has it, "
            "a bare clone does not)"
        )
    if shutil.which("ros2", path=str(VENV / "bin")) is None or shutil.which("colcon", path=str(VENV / "bin")) is None:
        return f"the upstream tools are not installed: bash {UPSTREAM}/install.sh .venv (scripts/test.sh does it)"
    return None


pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.skipif(_why_skip() is not None, reason=_why_skip() or "")]
NODE = "/memsam_segment"
CLASSES = ["road", "sidewalk", "car", "person", "sky", "building"]


def _run(command: list[str], env: dict[str, str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)


def _ros2(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """A ``ros2`` CLI call against the running node; retried while the CLI's own node has not discovered it yet
    (each call is a fresh DDS participant, as when a user types it)."""
    for _ in range(10):
        result = _run(["ros2", *args, "--no-daemon"] if args[0] == "param" else ["ros2", *args], env)
        if "Node not found" not in result.stderr:
            return result
        time.sleep(1.0)
    return result


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The repository copied into ``ws/src/memsam`` as git sees it, built with colcon; the sourced environment."""
    ws = tmp_path_factory.mktemp("ws")
    src = ws / "src" / "memsam"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in listed:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("FASTDDS_DEFAULT_PROFILES_FILE", "PYTHONPATH")}
    env.update(
        PATH=f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        AMENT_PREFIX_PATH=f"{VENV / 'ros2-upstream'}{os.pathsep}{VENV}",
        CMAKE_PREFIX_PATH=str(VENV),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_DOMAIN_ID=str(next_domain_id()),
        PYTHONUNBUFFERED="1",
    )
    # The wheels' CMake targets name include dirs of their build image; build_msgs.sh points them at this venv's
    # (another venv may have taken them since setup ran) and is quick when the messages are up to date.
    links = subprocess.run(["bash", "scripts/build_msgs.sh"], cwd=ROOT, capture_output=True, text=True)
    assert links.returncode == 0, links.stdout[-2000:] + links.stderr[-2000:]
    listing = _run(["colcon", "list", "--base-paths", "src"], env, cwd=ws)
    assert listing.returncode == 0 and listing.stdout.split()[:3] == ["memsam_ros", "src/memsam", "(ros.ament_cmake)"]
    build = _run(
        ["colcon", "build", "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
        env, timeout=900, cwd=ws,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    sourced = subprocess.run(
        ["bash", "-c", f"source {ws}/install/local_setup.bash && env -0"], env=env, capture_output=True, check=True
    ).stdout.decode()
    env = dict(item.split("=", 1) for item in sourced.split("\0") if "=" in item)
    env["MEMSAM_WS"] = str(ws)
    return env


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of a model the shipped params file knows nothing about: 128 px, 3 modalities, 6 classes."""
    from memsam_core.config import load_config
    from memsam_core.model import build_memorysam, save_checkpoint

    config = load_config(
        None,
        {
            "model.image_size": 128,
            "model.num_classes": len(CLASSES),
            "model.modalities": ["rgb", "depth", "lidar"],
            "classes.names": CLASSES,
        },
    )
    path = tmp_path_factory.mktemp("model") / "best.pt"
    save_checkpoint(path, build_memorysam(config.model, seed=0), config)
    return path


def test_colcon_builds_the_node_its_messages_and_executables(workspace: dict[str, str]) -> None:
    prefix = Path(workspace["MEMSAM_WS"]) / "install" / "memsam_ros"
    executables = _run(["ros2", "pkg", "executables", "memsam_ros"], workspace).stdout.split()
    assert {"segment_node", "memsam-play-bag", "memsam-eval-bag"} <= set(executables[1::2]), executables
    shown = _run(["ros2", "interface", "show", "memsam_msgs/msg/SegmentationInfo"], workspace)
    assert shown.returncode == 0 and "modalities_missing" in shown.stdout, shown.stdout + shown.stderr
    vendored_types = ("event_camera_msgs/msg/EventPacket", "event_array_msgs/msg/EventArray", "dvs_msgs/msg/EventArray",
                      "tf2_msgs/msg/TFMessage")  # fmt: skip
    for vendored in vendored_types:
        assert _run(["ros2", "interface", "show", vendored], workspace).returncode == 0, vendored
    assert (prefix / "share" / "memsam_ros" / "launch" / "segment.launch.py").is_file()
    assert (prefix / "share" / "memsam_ros" / "config" / "fastdds_shm.xml").is_file()
    site = next((prefix / "lib").glob("python3*/site-packages"))
    for package in ("memsam_core", "memsam_ros", "memsam_training", "memsam_msgs", "tf2_msgs"):
        assert (site / package / "__init__.py").is_file(), package
    args = _run(["ros2", "launch", "memsam_ros", "segment.launch.py", "--show-args"], workspace)
    assert args.returncode == 0 and "'checkpoint'" in args.stdout and "'autostart'" in args.stdout, args.stderr


def test_launched_node_takes_a_bag_at_real_rate_and_answers_ros2_tools(
    workspace: dict[str, str], checkpoint: Path, tmp_path: Path
) -> None:
    bag = tmp_path / "bag"
    made = _run(["ros2", "run", "memsam_ros", "memsam-make-bag", str(bag), "--frames", "30", "--rate", "10",
                 "--height", "240", "--width", "320"], workspace)  # fmt: skip
    assert made.returncode == 0, made.stderr
    log = (tmp_path / "launch.log").open("w")
    launch = subprocess.Popen(
        ["ros2", "launch", "memsam_ros", "segment.launch.py", f"checkpoint:={checkpoint}"],
        env=workspace, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        listener = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "topic_listener.py"), "--seconds", "120", "--until-all",
             f"{NODE}/labels", f"{NODE}/color", f"{NODE}/confidence", f"{NODE}/info", "/diagnostics"],
            env=workspace, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        _wait_for_node(workspace, launch, tmp_path / "launch.log")
        played = _run(["ros2", "run", "memsam_ros", "memsam-play-bag", str(bag), "--rate", "1.0", "--best-effort"],
                      workspace, timeout=180)  # fmt: skip
        assert played.returncode == 0, played.stdout + played.stderr
        out, err = listener.communicate(timeout=150)
        assert listener.returncode == 0, out + err
        received = dict(line.split(" ", 1) for line in out.splitlines() if line.startswith("/"))
        for topic in (f"{NODE}/labels", f"{NODE}/color", f"{NODE}/confidence", "/diagnostics"):
            assert int(received.get(topic, "0 -").split()[0]) > 0, (topic, out, err)
        assert received[f"{NODE}/info"].split()[1] == "memsam_msgs/msg/SegmentationInfo", out

        got = _ros2(workspace, "param", "get", NODE, "inference.precision")
        assert got.returncode == 0 and "fp32" in got.stdout, got.stdout + got.stderr
        undeclared = _ros2(workspace, "param", "get", NODE, "model.image_size")  # the checkpoint's, not a parameter
        assert "not set" in (undeclared.stdout + undeclared.stderr).lower(), undeclared
        changed = _ros2(workspace, "param", "set", NODE, "ros.overlay_alpha", "0.25")
        assert "successful" in changed.stdout.lower(), changed.stdout + changed.stderr
        assert "0.25" in _ros2(workspace, "param", "get", NODE, "ros.overlay_alpha").stdout
        refused = _ros2(workspace, "param", "set", NODE, "ros.qos_depth", "3")
        assert "successful" not in refused.stdout.lower(), refused.stdout
    finally:
        os.killpg(launch.pid, signal.SIGINT)  # Ctrl-C in the launch terminal
        code = launch.wait(timeout=30)
        log.close()
    text = (tmp_path / "launch.log").read_text()
    assert code == 0, text[-3000:]
    assert "Traceback" not in text and "process has died" not in text, text[-3000:]
    assert "MemorySAM sam2.1_hiera_t 128px" in text  # the node built the checkpoint's model, not the params file's


def _wait_for_node(env: dict[str, str], launch: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert launch.poll() is None, log.read_text()[-3000:]
        if "active: segmenting" in log.read_text():
            return
        time.sleep(0.5)
    raise AssertionError(f"the launched node did not become active: {log.read_text()[-3000:]}")


def test_launched_node_takes_a_rig_bag_with_remaps_only(workspace: dict[str, str], tmp_path: Path) -> None:
    """A bag as a vehicle records it (compressed images, PointCloud2 + /tf_static, an EventPacket stream, at
    their own rates), played from another process into the node launched with remaps only: each input takes the
    type its publisher offers (``ros.<m>_type: auto``) and every set uses all four sensors."""
    from memsam_ros.inputs.converter import MESSAGE_TYPES
    from memsam_ros.tools import rig

    bag = tmp_path / "rig_bag"
    made = _run(["ros2", "run", "memsam_ros", "memsam-make-bag", str(bag), "--rig", "--frames", "20",
                 "--height", "120", "--width", "160"], workspace)  # fmt: skip
    assert made.returncode == 0, made.stderr
    remaps = [f"{m}_topic:={topic}" for m, topic in rig.RIG_TOPICS.items()]  # camera_info: next to the RGB topic
    from memsam_core.config import load_config
    from memsam_core.model import build_memorysam, save_checkpoint

    config = load_config(None, {"model.image_size": 128})  # the four modalities, small enough for 2 cores
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, build_memorysam(config.model, seed=0), config)
    log = (tmp_path / "launch.log").open("w")
    launch = subprocess.Popen(
        ["ros2", "launch", "memsam_ros", "segment.launch.py", f"checkpoint:={checkpoint}", *remaps],
        env=workspace, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for_node(workspace, launch, tmp_path / "launch.log")
        listener = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "topic_listener.py"), "--seconds", "35",
             f"{NODE}/labels", f"{NODE}/info"],
            env=workspace, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(3.0)  # the listener discovers the node's outputs
        played = _run(["ros2", "run", "memsam_ros", "memsam-play-bag", str(bag), "--rate", "1.0",
                       "--wait-subscribers", "5"], workspace, 180)  # fmt: skip
        assert played.returncode == 0, played.stdout + played.stderr
        out, err = listener.communicate(timeout=90)  # it listens 30 s: the whole bag
    finally:
        os.killpg(launch.pid, signal.SIGINT)
        code = launch.wait(timeout=30)
        log.close()
    text = (tmp_path / "launch.log").read_text()
    received = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("/")}
    assert int(received[f"{NODE}/labels"][0]) >= 3, (out, err, text[-2000:])  # keep-newest: the CPU drops some
    assert received[f"{NODE}/info"][2] == "rgb,depth,lidar,event", (out, text[-2000:])  # in every set
    for m, kind in rig.RIG_TYPES.items():  # the types came from the publishers
        assert f"{rig.RIG_TOPICS[m]} [{m}]: {MESSAGE_TYPES[kind]} (from its publishers)" in text, text[-3000:]
    assert code == 0 and "Traceback" not in text, text[-3000:]
