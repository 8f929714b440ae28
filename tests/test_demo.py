"""``memsam-demo --quick`` end to end: bag, a few training steps, offline + live evaluation, summary.

Runtime: ~2 min on 2 CPU cores (training start-up and a few steps, node start-up, 6 frames twice),
plus ~20 s for the second run that reuses the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memsam_ros.tools.demo import QUICK_BAG, main

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
