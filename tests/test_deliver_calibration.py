"""The DELIVER inspector learns the depth rule and the LiDAR scale from the files (issue 24, part 1).

Each fixture is a DELIVER-layout set whose ``depth/`` was written by one of CARLA's converters (raw 24-bit code,
``Depth``, ``LogarithmicDepth``) and whose ``lidar/`` has a known metres per level, from synthetic scenes: a level
pinhole camera 1.7 m above a flat road, 90° wide. The inspector must name the converter, the camera height and
the scales to 5 %, and must refuse files that were broken on purpose (swapped channels, flipped image, another
scale, LiDAR that does not line up) instead of naming a rule for them.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from memsam_core.classes import class_index
from memsam_core.data.deliver import DeliverDataset, inspect_copy, main, read_raw_png
from memsam_core.data.deliver_codes import CARLA_DEPTH_M_PER_LEVEL, DepthRule
from memsam_core.data.deliver_fixture import write_deliver_fixture
from memsam_core.data.synthetic import SceneConfig, generate_scene

SIZE = 192
HEIGHT_M = 1.7
LIDAR_SCALE = {"carla24": 0.5, "grey_linear": 1.0, "grey_log": 0.25}
ROOT = Path(__file__).resolve().parents[1]


def _write(root: Path, rule: DepthRule, lidar_m_per_level: float, **scene) -> Path:
    write_deliver_fixture(root, splits=("val",), conditions=("sun", "night"), frames_per_sequence=3, size=SIZE,
                          seed=2, depth_rule=rule, lidar_m_per_level=lidar_m_per_level, **scene)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One DELIVER-layout set per CARLA converter, each with its own LiDAR scale."""
    base = tmp_path_factory.mktemp("calibration")
    return {name: _write(base / name, DepthRule(name), LIDAR_SCALE[name]) for name in LIDAR_SCALE}


@pytest.mark.parametrize("converter", ["carla24", "grey_linear", "grey_log"])
def test_inspector_names_the_converter_that_wrote_the_files(sets: dict[str, Path], converter: str) -> None:
    depth, lidar = inspect_copy(sets[converter], "val", samples=6)
    assert depth.rule is not None, depth.reason
    assert depth.rule.name == converter
    assert depth.rule.m_per_level == pytest.approx(CARLA_DEPTH_M_PER_LEVEL, rel=0.05)  # used by grey_linear only
    chosen = next(fit for fit in depth.fits if fit.rule == converter)
    assert chosen.camera_height_m == pytest.approx(HEIGHT_M, rel=0.05)
    assert chosen.horizon == pytest.approx((SIZE - 1) / 2, abs=1.0)  # a level camera: the principal point row
    assert lidar is not None and lidar.m_per_level == pytest.approx(LIDAR_SCALE[converter], rel=0.05), lidar.reason


def test_grey_files_are_told_apart_by_a_clear_margin(sets: dict[str, Path]) -> None:
    for written, other in (("grey_linear", "grey_log"), ("grey_log", "grey_linear")):
        fits = {fit.rule: fit for fit in inspect_copy(sets[written], "val", samples=6)[0].fits}
        assert fits[written].rms < 0.5  # rounding to whole levels alone leaves ≈0.29
        assert fits[other].rms > 4 * fits[written].rms, (written, fits)


def test_the_command_prints_the_rule_and_scales_for_the_config(sets: dict[str, Path]) -> None:
    run = subprocess.run([sys.executable, "-m", "memsam_core.data.deliver", str(sets["grey_log"]), "--samples", "6"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "folder=depth  files=6  dtype=uint8  channels=1" in run.stdout
    assert "deliver_depth_rule: grey_log" in run.stdout
    scale = float(run.stdout.split("deliver_lidar_m_per_level: ")[1].split()[0])
    assert scale == pytest.approx(LIDAR_SCALE["grey_log"], rel=0.05)


def test_field_of_view_and_height_come_from_the_scene_not_a_constant(tmp_path: Path) -> None:
    root = _write(tmp_path / "narrow", DepthRule("grey_log"), 1.0, hfov_deg=70.0, camera_height_m=2.2)
    depth, _ = inspect_copy(root, "val", samples=6, hfov_deg=70.0)
    assert depth.rule == DepthRule("grey_log") and depth.fits[-1].camera_height_m == pytest.approx(2.2, rel=0.05)
    wrong_fov, _ = inspect_copy(root, "val", samples=6, hfov_deg=90.0)  # the road fixes f·h; f shrinks by tan 35°
    implied = {fit.rule: fit.camera_height_m for fit in wrong_fov.fits}["grey_log"]
    assert implied == pytest.approx(2.2 / math.tan(math.radians(35)), rel=0.02)
    assert wrong_fov.rule is None and "wrong --fov?" in wrong_fov.reason  # 3.1 m is no car's camera


def test_a_linear_code_at_another_scale_needs_the_camera_height(tmp_path: Path) -> None:
    scale = 2 * CARLA_DEPTH_M_PER_LEVEL
    root = _write(tmp_path / "coarse", DepthRule("grey_linear", scale), 1.0)
    depth, lidar = inspect_copy(root, "val", samples=6)
    assert depth.rule is None and "--camera-height" in depth.reason  # at CARLA's scale the camera is 0.85 m high
    assert lidar is not None and lidar.m_per_level is None
    depth, lidar = inspect_copy(root, "val", samples=6, camera_height_m=HEIGHT_M)
    assert depth.rule is not None and depth.rule.name == "grey_linear"
    assert depth.rule.m_per_level == pytest.approx(scale, rel=0.05)
    assert lidar is not None and lidar.m_per_level == pytest.approx(1.0, rel=0.05)


def test_a_misdeclared_rule_gives_wrong_road_depth_and_the_inspector_says_so(sets: dict[str, Path]) -> None:
    """Broken on purpose: log-coded files declared linear. The decoded road is far off the scene's true depth."""
    root = sets["grey_log"]
    config = SceneConfig(height=SIZE, width=SIZE, condition="sun")
    truth = generate_scene(2 * 1_000_003, config)  # the fixture's first frame (val/sun)
    road = truth.labels == class_index("Road")
    first = dict(cases=["sun"], modalities=("depth",))  # items sorted by path: val/sun frame 000000 first
    right = DeliverDataset(root, "val", depth_rule=DepthRule("grey_log"), **first).load(0)["frames"]["depth"]
    wrong = DeliverDataset(root, "val", depth_rule=DepthRule("grey_linear"), **first).load(0)["frames"]["depth"]
    both = road & np.isfinite(right) & np.isfinite(wrong)
    assert both.sum() > 100
    error_right = np.abs(np.log(right[both] / truth.frames["depth"][both]))
    error_wrong = np.abs(np.log(wrong[both] / truth.frames["depth"][both]))
    assert np.max(error_right) <= 5.70378 / 510 + 0.005  # half a log level (+ the scene's depth noise)
    assert np.median(error_wrong) > math.log(3)  # a factor of 3 or more on the road
    assert inspect_copy(root, "val", samples=6)[0].rule == DepthRule("grey_log")  # not the declared grey_linear


def test_lidar_at_another_scale_gets_a_scale_off_by_the_ratio(sets: dict[str, Path]) -> None:
    half, quarter = (inspect_copy(sets[name], "val", samples=6)[1] for name in ("carla24", "grey_log"))
    assert half is not None and quarter is not None
    assert half.m_per_level / quarter.m_per_level == pytest.approx(2.0, rel=0.05)


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _rewrite(root: Path, folder: str, change) -> None:
    for path in sorted((root / folder).rglob("*.png")):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert cv2.imwrite(str(path), change(image))


def test_swapped_channels_fit_no_rule(sets: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(sets["carla24"], tmp_path / "swapped")
    _rewrite(root, "depth", lambda bgr: bgr[..., ::-1].copy())  # R <-> B: the code's bytes in the wrong order
    depth, lidar = inspect_copy(root, "val", samples=6)
    assert depth.rule is None and "fit no rule" in depth.reason, depth.reason
    assert lidar is not None and lidar.m_per_level is None


def test_an_upside_down_depth_image_fits_no_rule(sets: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(sets["grey_log"], tmp_path / "flipped")
    _rewrite(root, "depth", lambda grey: grey[::-1].copy())
    depth, _ = inspect_copy(root, "val", samples=6)
    assert depth.rule is None, depth.reason


def test_lidar_that_does_not_line_up_with_depth_gets_no_scale(sets: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(sets["carla24"], tmp_path / "mirrored")
    _rewrite(root, "lidar", lambda grey: grey[:, ::-1].copy())
    depth, lidar = inspect_copy(root, "val", samples=6)
    assert depth.rule == DepthRule("carla24")
    assert lidar is not None and lidar.m_per_level is None and "not proportional" in lidar.reason


def test_sixteen_bit_depth_fits_no_rule_and_the_command_says_so(
    sets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy(sets["grey_linear"], tmp_path / "wide")
    _rewrite(root, "depth", lambda grey: grey.astype(np.uint16) * 257)
    assert read_raw_png(next((root / "depth").rglob("*.png"))).dtype == np.uint16
    assert main([str(root), "--samples", "6"]) == 1
    out = capsys.readouterr().out
    assert "1 channel, 16-bit" in out and "no rule to put in the config" in out
    assert "deliver_depth_rule:" not in out
