"""Bag evaluation with ``sync.policy: latest`` in the config: offline and live still agree, because both replay the
bag with ``nearest`` (``memsam_ros.sync.replay_config``). ``latest`` picks by arrival order across topics, which a
replay over DDS (lock-step, RGB held back by slop) does not reproduce.

Runtime: ~45 s on 2 CPU cores (node start-up, 5 frames live and offline at image_size 128).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from checkpoints import perturbed_checkpoint

from memsam_core.config import load_config
from memsam_ros.tools.bag_tools import BagSpec, write_synthetic_bag
from memsam_ros.tools.evaluate import evaluate_bag_offline
from memsam_ros.tools.recorder import evaluate_bag_live
from memsam_ros.tools.scoring import compare_runs

pytestmark = pytest.mark.ros
SPEC = BagSpec(frames=5, height=48, width=64, seed=11, conditions=("sun", "fog"), drop={"lidar": 0.5, "event": 0.3})


def test_a_latest_config_is_evaluated_with_nearest_live_and_offline(ros_context, tmp_path: Path) -> None:
    checkpoint = perturbed_checkpoint(tmp_path / "random.pt")
    bag = tmp_path / "bag"
    write_synthetic_bag(bag, SPEC)
    overrides = {"model.image_size": 128, "inference.device": "cpu", "inference.checkpoint": str(checkpoint)}
    config = load_config(None, overrides | {"sync.policy": "latest"})
    offline = evaluate_bag_offline(bag, config, progress=False)
    nearest = evaluate_bag_offline(bag, load_config(None, overrides), progress=False)
    same = compare_runs(offline, nearest)
    assert same["missing_case_agreement"] == SPEC.frames and same["miou_abs_diff"] < 1e-6, same
    live = evaluate_bag_live(bag, config, context=ros_context, progress=False, log_dir=tmp_path / "live")
    node_config = yaml.safe_load((tmp_path / "live" / "live_eval_config.yaml").read_text())
    assert node_config["sync"]["policy"] == "nearest"
    assert live.details["gate_timeouts"] == 0 and live.details["sets_dropped_by_node"] == 0
    comparison = compare_runs(offline, live)
    assert comparison["frames_offline"] == comparison["frames_live"] == comparison["frames_common"] == SPEC.frames
    assert comparison["missing_case_agreement"] == SPEC.frames, "same synchronised sets live and offline"
    assert comparison["miou_abs_diff"] < 1e-4, comparison
