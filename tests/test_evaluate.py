"""Offline bag evaluation: report folder from a real (untrained) MemorySAM, matching, and a perfect predictor.

Runtime: ~25 s on 2 CPU cores (one model build at image_size 128, 4 frames through Hiera-T).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from memsam_core.classes import default_palette
from memsam_core.config import load_config
from memsam_ros.inputs.codec import image_to_array
from memsam_ros.tools.bag_tools import (
    GT_LABELS_TOPIC,
    GT_SCENE_TOPIC,
    SENSOR_TOPICS,
    BagSpec,
    read_synthetic_bag,
    scene_values,
    write_synthetic_bag,
)
from memsam_ros.tools.evaluate import main
from memsam_ros.tools.report import write_report
from memsam_ros.tools.scoring import EvaluationRun, Prediction, Scoreboard

SPEC = BagSpec(frames=4, height=48, width=64, seed=11, conditions=("sun", "night"), drop={"lidar": 0.5})
OVERRIDES = ["model.image_size=128", "inference.device=cpu"]


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("eval") / "bag"
    write_synthetic_bag(path, SPEC)
    return path


@pytest.fixture(scope="module")
def dropped_cases(bag: Path) -> set[str]:
    scenes = read_synthetic_bag(bag)[GT_SCENE_TOPIC]
    cases = {scene_values(m)["dropped"].replace(",", "+") or "none" for _, m in scenes}
    assert cases == {"none", "lidar"}, "seed 11 must give frames with and without LiDAR"
    return cases


def test_offline_report_from_real_model(bag: Path, dropped_cases: set[str], tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main([str(bag), "--out", str(out), "--quiet", "--overlays", "3", "--set", *OVERRIDES]) == 0
    for name in ("report.json", "report.md", "per_class_iou.png", "confusion_matrix.png"):
        assert (out / name).stat().st_size > 0, name
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) == 3
    report = json.loads((out / "report.json").read_text())
    assert report["frames"]["evaluated"] == SPEC.frames
    assert report["frames"]["ground_truth_without_prediction"] == 0
    assert set(report["per_condition"]) == {"sun", "night"}
    assert set(report["per_missing_modalities"]) == dropped_cases, "the model saw exactly what the bag dropped"
    assert sum(g["frames"] for g in report["per_condition"].values()) == SPEC.frames
    per_class = report["overall"]["per_class_iou"]
    assert len(per_class) == 25 and all(v is None or 0.0 <= v <= 1.0 for v in per_class.values())
    assert 0.0 <= report["overall"]["miou"] <= 1.0
    confusion = np.asarray(report["confusion_matrix"])
    labelled = sum(int((image_to_array(m) != 255).sum()) for _, m in read_synthetic_bag(bag)[GT_LABELS_TOPIC])
    assert confusion.shape == (25, 25) and confusion.sum() == labelled
    assert report["details"]["sync"]["emitted"] == SPEC.frames
    markdown = (out / "report.md").read_text()
    assert "Per condition" in markdown and "Per missing-modality case" in markdown and "overlays/" in markdown


def test_perfect_predictor_scores_one(bag: Path, dropped_cases: set[str], tmp_path: Path) -> None:
    """Ground truth fed as the prediction through matching + report gives mIoU 1 everywhere."""
    config = load_config(None, {"model.image_size": 128})
    messages = read_synthetic_bag(bag)
    board = Scoreboard(config.classes.names, default_palette(25))
    scenes = dict(messages[GT_SCENE_TOPIC])
    for stamp, msg in reversed(messages[GT_LABELS_TOPIC]):  # out of order on purpose: matching is by stamp
        labels = image_to_array(msg)
        missing = tuple(m for m in scene_values(scenes[stamp])["dropped"].split(",") if m)
        board.add_prediction(Prediction(stamp, labels.copy(), missing))
    for stamp, msg in messages[GT_LABELS_TOPIC]:
        board.add_ground_truth(stamp, image_to_array(msg))
    for stamp, msg in messages[GT_SCENE_TOPIC]:
        board.add_scene(stamp, scene_values(msg))
    board.add_prediction(Prediction(123, np.zeros((SPEC.height, SPEC.width), np.uint8), ()))  # no GT at this stamp
    board.finish()
    summary = write_report(tmp_path, EvaluationRun(board, "offline", str(bag), config, ""))
    assert summary["overall"]["miou"] == 1.0 and summary["overall"]["pixel_accuracy"] == 1.0
    assert all(g["miou"] == 1.0 for g in summary["per_condition"].values())
    assert set(summary["per_missing_modalities"]) == dropped_cases
    assert all(g["miou"] == 1.0 for g in summary["per_missing_modalities"].values())
    assert summary["frames"]["predictions_without_ground_truth"] == 1
    present = [v for v in summary["overall"]["per_class_iou"].values() if v is not None]
    assert present and all(v == 1.0 for v in present)


def test_scoreboard_waits_for_scene_and_handles_bad_ground_truth() -> None:
    board = Scoreboard(["a", "b"], default_palette(2))
    labels = np.array([[0, 1], [1, 255]], np.uint8)
    board.add_ground_truth(5, labels)
    board.add_prediction(Prediction(5, labels, ()))
    assert board.frames == [], "scored only once the scene (condition) is known"
    board.add_scene(5, {"condition": "fog"})
    assert [f.condition for f in board.frames] == ["fog"] and board.frames[0].miou == 1.0
    board.add_ground_truth(6, np.full((2, 2), 7, np.uint8))  # class 7 does not exist: warned, not scored
    board.add_prediction(Prediction(6, labels, ("lidar",)))
    board.add_prediction(Prediction(7, labels, None))
    board.add_ground_truth(7, labels)
    board.finish()
    assert board.invalid_frames == 1
    assert [(f.stamp_ns, f.condition, f.missing) for f in board.frames] == [
        (5, "fog", "none"),
        (7, "unknown", "unknown"),
    ]


def test_cli_errors(bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing_bag"), "--out", str(tmp_path / "r")]) == 2
    assert "no such bag" in capsys.readouterr().err
    no_gt = tmp_path / "no_gt"
    write_synthetic_bag(no_gt, BagSpec(frames=1, height=32, width=32))
    # evaluating with topics the bag lacks: the error names the topic and what the bag has
    assert main([str(no_gt), "--gt-topic", "/labels", "--set", "ros.rgb_topic=/camera/rgb", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "/camera/rgb" in err and "/labels" in err and SENSOR_TOPICS["rgb"] in err
    assert main([str(bag), "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main([str(bag), "--set", "model.image_size=200"]) == 2
    assert "multiple of 32" in capsys.readouterr().err
