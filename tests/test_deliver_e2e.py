"""One input contract from DELIVER training to the node: the same checkpoint scores the same on both paths.

A small DELIVER-layout set in DELIVER's file encodings (CARLA 24-bit depth PNGs, 8-bit LiDAR PNGs, RGBA and
low-resolution event PNGs) → ``python -m memsam_training.train`` → ``best.pt``. The validation scenes are then
recorded as a rosbag2 the way a vehicle would: depth ``32FC1`` metres, LiDAR ``16UC1`` millimetres (REP 118),
events at their own resolution. Bag → offline evaluation (the node's codec, synchroniser and Segmenter, built
from the checkpoint alone) must give the training evaluation's mIoU. Both score through the same Segmenter, so the
equality checks the plumbing (the DELIVER loader and the node's codec hand it the same arrays), not accuracy; the
same scenes recorded with the depth x1000 must score apart (the fault rule).

Runtime: ~45 s on 2 CPU cores, ~2 min on a busy one (24 training iterations at 128 px, 12 validation sets twice).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memsam_core.config import load_config
from memsam_core.data.deliver import DeliverDataset
from memsam_core.data.deliver_fixture import write_deliver_fixture
from memsam_ros.tools.bag_tools import BagFrame, read_synthetic_bag, write_bag
from memsam_ros.tools.evaluate import evaluate_bag_offline

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
CONDITIONS = ("sun", "fog", "night")
CASES = ("normal", "eventlowres")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    work = tmp_path_factory.mktemp("deliver_e2e")
    root = work / "DELIVER"
    write_deliver_fixture(root, conditions=CONDITIONS, cases=CASES, frames_per_sequence=2, size=96, seed=4)
    overrides = {
        "data.dataset": "deliver", "data.root": str(root), "data.conditions": list(CONDITIONS),
        "model.image_size": 128, "train.crop_size": 128, "train.epochs": 2, "train.batch_size": 1,
        "train.lr": 2e-3, "train.warmup_epochs": 0.2, "train.modality_dropout": 0.3, "train.threads": 1,
        "train.output_dir": str(work / "run"), "input.lidar_max_m": 60.0, "inference.device": "cpu",
    }  # fmt: skip
    args = [f"--set={k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in overrides.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "memsam_training.train", *args], check=True, cwd=ROOT, env=env,
                   capture_output=True)  # fmt: skip
    report = json.loads((work / "run" / "best_metrics.json").read_text())
    return root, work / "run" / "best.pt", report


def test_node_path_scores_the_training_evaluation(trained, tmp_path: Path) -> None:
    root, checkpoint, training_report = trained
    val = DeliverDataset(root, "val", cases=CONDITIONS)  # decoded by the metric contract: metres
    items = []
    for index in range(len(val)):
        sample = val[index]
        meta = sample["meta"]
        assert sample["frames"]["depth"].dtype == np.float32 and sample["frames"]["lidar"].dtype == np.float32
        items.append(BagFrame(sample["frames"], sample["labels"], {"condition": meta["condition"],
                                                                   "failures": meta["case"]}))  # fmt: skip
    bag = tmp_path / "deliver_val_bag"
    write_bag(bag, items, encodings={"depth": "32FC1", "lidar": "16UC1"})
    messages = read_synthetic_bag(bag)
    assert {m.encoding for _, m in messages["/depth/image"]} == {"32FC1"}
    assert {m.encoding for _, m in messages["/lidar/depth_image"]} == {"16UC1"}
    assert {(m.height, m.width) for _, m in messages["/event/image"]} == {(96, 96), (24, 24)}  # eventlowres

    config = load_config(None, {"inference.checkpoint": str(checkpoint), "inference.device": "cpu"})
    run = evaluate_bag_offline(bag, config, progress=False)  # everything else from the checkpoint
    assert run.config.model.image_size == 128 and run.config.input.lidar_max_m == 60.0
    board = run.scoreboard
    assert len(board.frames) == len(val) == training_report["samples"] == 12
    assert set(training_report["per_case"]) == set(CASES)  # DELIVER failure cases scored separately
    assert {f.missing for f in board.frames} == {"none"}
    node_miou = board.confusion().miou(nan_to_zero=True)
    print(f"training evaluation mIoU {training_report['miou']:.6f}, node path (bag -> offline) {node_miou:.6f}")
    assert node_miou == pytest.approx(training_report["miou"], abs=1e-3)
    predicted = board.confusion().hist.sum(0)
    assert int((predicted > 0).sum()) >= 2  # a model that segments, not one that paints one class
    for condition in CONDITIONS:  # per condition as well
        frames = [f for f in board.frames if f.condition == condition]
        assert board.confusion(frames).miou(nan_to_zero=True) == pytest.approx(
            training_report["per_condition"][condition]["miou"], abs=1e-3
        )

    # The fault rule: the same scenes recorded with the depth in millimetres but labelled 32FC1 metres (a driver
    # mix-up, depth x1000) must score outside the tolerance, so the equality above is not one any input passes.
    scaled = [
        BagFrame({**item.frames, "depth": item.frames["depth"] * 1000.0}, item.labels, item.scene) for item in items
    ]
    write_bag(tmp_path / "scaled_depth_bag", scaled, encodings={"depth": "32FC1", "lidar": "16UC1"})
    broken = evaluate_bag_offline(tmp_path / "scaled_depth_bag", config, progress=False).scoreboard
    broken_miou = broken.confusion().miou(nan_to_zero=True)
    print(f"the same scenes with depth x1000: node path mIoU {broken_miou:.6f}")
    assert abs(broken_miou - training_report["miou"]) > 1e-3, (broken_miou, training_report["miou"])
