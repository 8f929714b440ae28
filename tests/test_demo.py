"""``memsam-demo --quick`` end to end: bag, a few training steps, offline + live evaluation, summary.

Runtime: ~3 min on 2 CPU cores (training start-up and 12 steps, node start-up, 6 frames twice, an untrained
baseline), plus ~20 s for the second run that reuses the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memsam_core.config import load_config
from memsam_ros.tools.demo import QUICK_BAG, main
from memsam_ros.tools.evaluate import evaluate_bag_offline

pytestmark = pytest.mark.ros


@pytest.mark.slow
def test_quick_demo_end_to_end(ros_domain_id: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["--out", str(out), "--quick", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"Output: {out}" in printed and "offline mIoU" in printed and "live    mIoU" in printed
    # a redirected log (here: captured) gets training's progress bar as plain lines, not one line of kilobytes
    assert "\r" not in printed and max(len(line) for line in printed.splitlines()) < 400
    assert any(line.startswith("epoch 1/1") for line in printed.splitlines()), "training's bar, relayed"

    summary = json.loads((out / "summary.json").read_text())
    assert summary["checkpoint_source"] == "trained"
    assert Path(summary["checkpoint"]).is_file()
    assert set(summary["runs"]) == {"offline", "live"}
    for mode, run in summary["runs"].items():
        assert run["frames"] == QUICK_BAG.frames, mode
        assert 0.0 <= run["miou"] <= 1.0
        assert len(run["per_condition"]) == 5 and len(run["per_missing_modalities"]) >= 2
        folder = out / mode
        for name in ("report.json", "report.md", "per_class_iou.png", "confusion_matrix.png"):
            assert (folder / name).is_file(), f"{mode}/{name}"
        assert list((folder / "overlays").glob("*.png"))
    # only a trained model gets there: the same bag through an untrained model of the same config scores ~5x less
    untrained = evaluate_bag_offline(
        out / "bag_quick", load_config(out / "demo_config.yaml", {"inference.checkpoint": ""}), progress=False
    ).scoreboard.confusion().miou()  # the report's convention: classes present in truth or prediction
    trained = summary["runs"]["offline"]["miou"]
    print(f"quick demo mIoU {trained:.4f}, untrained {untrained:.4f}")
    assert trained > 0.025 and trained > 3 * untrained  # measured: 0.034 vs 0.006
    agreement = summary["agreement"]
    assert agreement["frames_common"] == QUICK_BAG.frames
    assert agreement["miou_abs_diff"] < 1e-4
    assert (out / "summary.md").read_text().startswith("# memsam demo")

    # a second run reuses bag and checkpoint ("loads" it) instead of training again
    assert main(["--out", str(out), "--quick", "--no-progress", "--skip-live"]) == 0
    printed = capsys.readouterr().out
    assert "reusing" in printed and "loading existing" in printed and "training:" not in printed
    assert json.loads((out / "summary.json").read_text())["checkpoint_source"] == "loaded"


def test_demo_reports_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  image_size: 100\n")
    assert main(["--out", str(tmp_path / "o"), "--config", str(bad), "--skip-live"]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "model.image_size" in err
