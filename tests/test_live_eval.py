"""Live evaluation over real DDS agrees with offline evaluation on the same bag.

The node runs as its own process (``python -m memsam_ros.node``); the bag is played into it with our
rclpy player in lock-step with its ``~/labels`` (RELIABLE QoS), so no set is dropped by the node's
keep-newest worker and both paths segment the same synchronised sets with the same checkpoint.
Agreement is checked on the stamps scored by both (here: all of them). It holds by construction (same code, same
checkpoint, same bag), so it checks the plumbing, not accuracy; an offline run with the depth scaled by 1.1 must
fall outside it (the fault rule).

Runtime: ~45 s on 2 CPU cores (node start-up, 5 frames live and offline at image_size 128).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from checkpoints import perturbed_checkpoint

import memsam_ros.inputs.received as received_inputs
from memsam_core.config import load_config
from memsam_ros.tools.bag_tools import BagSpec, write_synthetic_bag
from memsam_ros.tools.evaluate import evaluate_bag_offline
from memsam_ros.tools.recorder import evaluate_bag_live
from memsam_ros.tools.report import write_report
from memsam_ros.tools.scoring import compare_runs

pytestmark = pytest.mark.ros
SPEC = BagSpec(frames=5, height=48, width=64, seed=11, conditions=("sun", "fog"), drop={"lidar": 0.5, "event": 0.3})


def _outside_live_tolerance(comparison: dict) -> dict:
    """What of an offline-vs-live comparison falls outside the live = offline tolerance: mIoU within 1e-4 and at
    most one frame whose confusion matrix differs."""
    wrong = {
        "miou_abs_diff": not comparison["miou_abs_diff"] < 1e-4,
        "frames_identical_confusion": comparison["frames_identical_confusion"] < SPEC.frames - 1,
    }
    return {key: comparison[key] for key, bad in wrong.items() if bad}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return perturbed_checkpoint(tmp_path_factory.mktemp("ckpt") / "random.pt")


def test_live_and_offline_agree(ros_context, checkpoint: Path, tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_synthetic_bag(bag, SPEC)
    config = load_config(
        None, {"model.image_size": 128, "inference.device": "cpu", "inference.checkpoint": str(checkpoint)}
    )
    offline = evaluate_bag_offline(bag, config, progress=False)
    live = evaluate_bag_live(bag, config, context=ros_context, progress=False, log_dir=tmp_path / "live")
    node_log = (tmp_path / "live" / "node.log").read_text()
    assert live.details["node_exit_code"] == 0, node_log
    assert live.details["gate_timeouts"] == 0, node_log
    assert live.details["sets_dropped_by_node"] == 0
    assert str(checkpoint) in node_log, "the node loaded the evaluated checkpoint"

    comparison = compare_runs(offline, live)
    assert comparison["frames_offline"] == comparison["frames_live"] == comparison["frames_common"] == SPEC.frames
    assert comparison["missing_case_agreement"] == SPEC.frames, "same synchronised sets live and offline"
    assert _outside_live_tolerance(comparison) == {}, comparison
    assert comparison["frames_differing"] == [], comparison

    # The fault rule. Offline = live holds by construction (the same converter, synchroniser and Segmenter on the
    # same bag and checkpoint): it checks the plumbing (player, DDS, node), not accuracy. Its broken counterpart,
    # an offline run that reads the depth 10 % too far, falls outside the same tolerance.
    with pytest.MonkeyPatch.context() as mp:
        decode = received_inputs.decode_modality

        def depth_scaled(msg, modality, **kwargs):
            array = decode(msg, modality, **kwargs)
            return array * np.float32(1.1) if modality == "depth" else array

        mp.setattr(received_inputs, "decode_modality", depth_scaled)
        scaled = evaluate_bag_offline(bag, config, progress=False)
    broken = compare_runs(scaled, live)
    assert broken["frames_common"] == SPEC.frames and _outside_live_tolerance(broken), broken
    differing = broken["frames_differing"]  # names the frames to look at: here the depth changed, the sets did not
    assert differing and all(f["missing_live"] == f["missing_offline"] and not f["same_confusion"] for f in differing)

    summary = write_report(tmp_path / "report", live)
    assert summary["mode"] == "live" and summary["frames"]["evaluated"] == SPEC.frames
    assert set(summary["per_condition"]) == {"sun", "fog"}
    assert len(summary["per_missing_modalities"]) >= 2
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["details"]["info_messages"] == SPEC.frames
    assert any(p.name.endswith(".png") for p in (tmp_path / "report" / "overlays").iterdir())


def test_player_cli_publishes_the_bag_unchanged(ros_context, tmp_path: Path) -> None:
    """memsam-play-bag in its own process: raw CDR from rosbags arrives as equal rclpy messages, plus /clock."""
    import subprocess
    import sys
    import time

    import numpy as np
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    from memsam_ros.inputs.codec import decode_modality
    from memsam_ros.inputs.stamps import stamp_ns
    from memsam_ros.tools.bag_tools import GT_SCENE_TOPIC, SENSOR_TOPICS, read_synthetic_bag, scene_values

    bag = tmp_path / "bag"
    write_synthetic_bag(bag, BagSpec(frames=4, height=32, width=48, seed=2))
    expected = read_synthetic_bag(bag)
    node = __import__("rclpy").create_node("player_test_listener", context=ros_context)
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    got: dict[str, list] = {"rgb": [], "scene": [], "clock": []}
    node.create_subscription(Image, SENSOR_TOPICS["rgb"], got["rgb"].append, qos)
    node.create_subscription(DiagnosticArray, GT_SCENE_TOPIC, got["scene"].append, qos)
    node.create_subscription(Clock, "/clock", got["clock"].append, 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    topics = [SENSOR_TOPICS["rgb"], GT_SCENE_TOPIC]
    command = [sys.executable, "-m", "memsam_ros.tools.player", str(bag), "--rate", "4", "--clock", "--topics", *topics]
    process = subprocess.Popen([*command, "--wait-subscribers", "20"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        for _ in range(20):  # drain what is still in flight
            executor.spin_once(timeout_sec=0.05)
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate()[0].decode(errors="replace")
        executor.shutdown()
        node.destroy_node()
    assert process.returncode == 0, output
    assert "published 8 messages" in output
    assert [stamp_ns(m.header) for m in got["rgb"]] == [s for s, _ in expected[SENSOR_TOPICS["rgb"]]]
    for received, (_, original) in zip(got["rgb"], expected[SENSOR_TOPICS["rgb"]]):
        np.testing.assert_array_equal(decode_modality(received, "rgb"), decode_modality(original, "rgb"))
    assert [dict((kv.key, kv.value) for kv in m.status[0].values) for m in got["scene"]] == [
        scene_values(m) for _, m in expected[GT_SCENE_TOPIC]
    ]
    clock = [c.clock.sec * 10**9 + c.clock.nanosec for c in got["clock"]]
    assert clock and clock == sorted(clock) and clock[0] >= 1_700_000_000 * 10**9
