"""Bags recorded the way a real rig records them (``memsam-make-bag --rig``): compressed RGB + camera_info,
compressedDepth, a PointCloud2 in the LiDAR frame + /tf_static, an EventPacket stream. Offline and live evaluation
detect the topics and types from the bag (no flags) and score the same scenes as the Image bag's, up to JPEG and
inverse-depth quantisation. ~70 s on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from checkpoints import perturbed_checkpoint

from memsam_core.config import load_config
from memsam_ros.tools import rig
from memsam_ros.tools.bag_tools import BagSpec, bag_topics, detect_inputs, write_synthetic_bag
from memsam_ros.tools.evaluate import evaluate_bag_offline
from memsam_ros.tools.recorder import evaluate_bag_live
from memsam_ros.tools.scoring import compare_runs

pytestmark = pytest.mark.ros
SPEC = BagSpec(frames=6, height=96, width=128, seed=4, conditions=("sun", "night"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return perturbed_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bags")
    write_synthetic_bag(root / "images", SPEC)
    write_synthetic_bag(root / "rig", BagSpec(**{**SPEC.__dict__, "rig": True}))
    return {"images": root / "images", "rig": root / "rig"}


def _config(checkpoint: Path):
    return load_config(None, {"inference.device": "cpu", "inference.checkpoint": str(checkpoint)})


def test_rig_bag_topics_and_types_are_detected(bags) -> None:
    types = {topic: msgtype for topic, (msgtype, _) in bag_topics(bags["rig"]).items()}
    assert types[rig.RIG_TOPICS["lidar"]] == "sensor_msgs/msg/PointCloud2"
    assert types[rig.RIG_TOPICS["event"]] == "event_camera_msgs/msg/EventPacket"
    detected = detect_inputs(types, load_config(None)).ros
    assert {m: detected.topic(m) for m in rig.RIG_TOPICS} == rig.RIG_TOPICS
    assert {m: detected.input_type(m) for m in rig.RIG_TYPES} == rig.RIG_TYPES
    assert detected.camera_info_topic == rig.CAMERA_INFO_TOPIC
    plain = detect_inputs({t: m for t, (m, _) in bag_topics(bags["images"]).items()}, load_config(None)).ros
    assert plain.lidar_type == "image" and plain.lidar_topic == "/lidar/depth_image"


def test_rig_bag_scores_like_the_image_bag_offline_and_live(bags, checkpoint, ros_context, tmp_path) -> None:
    config = _config(checkpoint)
    images = evaluate_bag_offline(bags["images"], config, progress=False)
    offline = evaluate_bag_offline(bags["rig"], config, progress=False)
    assert offline.details["decode_errors"] == {}, offline.details
    assert offline.details["topics"]["lidar"] == rig.RIG_TOPICS["lidar"]
    assert len(offline.scoreboard.frames) == SPEC.frames
    assert {frame.missing for frame in offline.scoreboard.frames} == {"none"}, "every set uses all four sensors"
    same_scenes = compare_runs(images, offline)
    assert same_scenes["frames_common"] == SPEC.frames
    assert same_scenes["miou_abs_diff"] <= 0.01, same_scenes  # within 1 mIoU point (JPEG, depth quantisation)

    live = evaluate_bag_live(bags["rig"], config, context=ros_context, progress=False, log_dir=tmp_path / "live")
    node_log = (tmp_path / "live" / "node.log").read_text()
    assert live.details["node_exit_code"] == 0 and live.details["gate_timeouts"] == 0, node_log
    replayed = compare_runs(offline, live)
    assert replayed["frames_common"] == SPEC.frames and replayed["miou_abs_diff"] < 1e-4, replayed
    assert replayed["missing_case_agreement"] == SPEC.frames, replayed
