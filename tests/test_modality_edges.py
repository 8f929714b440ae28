"""Edges of the input contract that the mutation run (benchmarks/mutation.py) found untested: one-channel and one-pixel
arrays, sub-metre returns, exact LiDAR densification, each modality's filter and range, the caller's output buffer,
the low-resolution event rule at a ratio where it matters, and bilinear resizing equal to the training transforms'.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from memsam_core.config import ConfigError, InputConfig, MemSamConfig
from memsam_core.data.transforms import EvalTransform
from memsam_core.modalities import (
    ModalityError,
    check_ros_sensors,
    frames_to_tensor,
    modality_to_tensor,
    nearest_to,
    resample_mode,
)


def test_one_channel_images_are_mono() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for modality in ("rgb", "event"):
        torch.testing.assert_close(modality_to_tensor(modality, gray[..., None], 8),
                                   modality_to_tensor(modality, gray, 8), rtol=0, atol=0)  # fmt: skip


def test_one_pixel_images_and_sub_metre_returns_are_inputs() -> None:
    assert modality_to_tensor("event", np.full((1, 1), 255, np.uint8), 2).min() == 1.0
    depth = modality_to_tensor("depth", np.full((2, 2), 0.5, np.float32), 2, InputConfig(depth_max_m=10.0))
    torch.testing.assert_close(
        depth[:, 0, 0], torch.tensor([0.05, np.log1p(0.5) / np.log1p(10.0), 1.0], dtype=torch.float32)
    )
    lidar = np.zeros((3, 3), np.float32)
    lidar[1, 1] = 0.5
    dense = modality_to_tensor("lidar", lidar, 3, InputConfig(lidar_dilate_px=1))
    assert dense[2].min() == 1.0 and dense[0].max() == pytest.approx(0.5 / 80.0)


def test_lidar_densification_grows_each_return_by_its_radius_nearest_wins() -> None:
    lidar = np.zeros((7, 7), np.float32)
    lidar[3, 3], lidar[4, 4], lidar[0, 6] = 2.0, 4.0, 8.0
    x = modality_to_tensor("lidar", lidar, 7, InputConfig(lidar_dilate_px=1, lidar_max_m=8.0))
    expected = np.zeros((7, 7), np.float32)
    expected[3:6, 3:6] = 4.0
    expected[2:5, 2:5] = 2.0  # the nearer return wins where the squares overlap
    expected[0:2, 5:7] = 8.0
    np.testing.assert_allclose(x[0].numpy() * 8.0, expected, atol=1e-6)
    np.testing.assert_array_equal(x[2].numpy(), (expected > 0).astype(np.float32))


@pytest.mark.parametrize(
    ("modality", "config", "mode"),
    [
        ("rgb", InputConfig(), "bilinear"),
        ("depth", InputConfig(), "nearest"),
        ("lidar", InputConfig(), "nearest"),
        ("depth", InputConfig(depth_encoding="image"), "bilinear"),
        ("lidar", InputConfig(lidar_encoding="image"), "bilinear"),
        ("event", InputConfig(), "nearest"),
        ("event", InputConfig(event_resize="bilinear"), "bilinear"),
    ],
)
def test_each_modality_resamples_with_its_contract_filter(modality: str, config: InputConfig, mode: str) -> None:
    assert resample_mode(modality, config) == mode


def test_depth_and_lidar_have_their_own_range_and_only_lidar_is_densified() -> None:
    config = InputConfig(depth_max_m=10.0, lidar_max_m=100.0, lidar_dilate_px=1)
    metres = np.zeros((3, 3), np.float32)
    metres[1, 1] = 5.0
    depth, lidar = modality_to_tensor("depth", metres, 3, config), modality_to_tensor("lidar", metres, 3, config)
    assert depth[0, 1, 1] == pytest.approx(0.5) and lidar[0, 1, 1] == pytest.approx(0.05)
    assert int(depth[2].sum()) == 1 and int(lidar[2].sum()) == 9


def test_wider_float_metres_give_float32_tensors() -> None:
    metres = np.full((4, 4), 3.0, np.float64)
    for size in (4, 8):
        assert modality_to_tensor("depth", metres, size).dtype == torch.float32


@pytest.mark.parametrize(
    ("modality", "array", "config", "message"),
    [
        ("rgb", [[1, 2]], InputConfig(), "rgb: expected a numpy array, got list"),
        ("rgb", np.zeros((4, 4, 0), np.uint8), InputConfig(), "rgb: empty image (4, 4, 0)"),
        (
            "rgb",
            np.zeros((4, 4, 5), np.uint8),
            InputConfig(),
            "rgb: expected HxW or HxWx3 uint8 image, got shape (4, 4, 5)",
        ),
        (
            "depth",
            np.zeros((4, 4), np.float32),
            InputConfig(depth_encoding="image"),
            "depth: the model's input contract expects a uint8 pre-encoded image (input.depth_encoding: image), "
            "got float32 (4, 4) (unsupported array dtype for this model)",
        ),
        (
            "event",
            np.zeros((4, 4), np.float32),
            InputConfig(),
            "event: the model's input contract expects a uint8 HxW or HxWx3 image, got float32 (4, 4) "
            "(unsupported array dtype for this model)",
        ),
    ],
)
def test_refused_inputs_say_exactly_what_is_wrong(modality, array, config, message: str) -> None:
    with pytest.raises(ModalityError) as error:
        modality_to_tensor(modality, array, 4, config)
    assert str(error.value) == message


def test_a_lidar_trained_on_images_cannot_run_on_ros_sensors() -> None:
    config = MemSamConfig(model={"modalities": ["rgb", "lidar"]}, input={"lidar_encoding": "image"})
    with pytest.raises(ConfigError) as error:
        check_ros_sensors(config, "ckpt.pt")
    assert str(error.value) == (
        "ckpt.pt: input.lidar_encoding: the model was trained on lidar as 8-bit images (input.lidar_encoding: image) "
        "but ROS sensors give metric lidar (32FC1/16UC1); use a checkpoint trained with the metric encoding"
    )


def test_the_callers_output_buffer_is_filled_and_checked() -> None:
    rng = np.random.default_rng(0)
    frames = {
        "rgb": rng.integers(0, 255, (10, 10, 3), dtype=np.uint8),
        "depth": rng.uniform(1, 9, (6, 6)).astype(np.float32),
    }
    expected, present = frames_to_tensor(frames, ["rgb", "depth"], 8)
    out = torch.full((2, 3, 8, 8), -1.0)
    filled, again = frames_to_tensor(frames, ["rgb", "depth"], 8, out=out)
    assert filled is out and again == present
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    for bad in (torch.zeros((2, 3, 8, 8), dtype=torch.float64), torch.zeros((1, 3, 8, 8))):
        with pytest.raises(ValueError) as error:
            frames_to_tensor(frames, ["rgb", "depth"], 8, out=bad)
        assert str(error.value) == f"out must be float32 (2, 3, 8, 8), got {bad.dtype} {tuple(bad.shape)}"


def test_only_events_are_first_matched_to_the_rgb_size() -> None:
    """At 30 → 32 px from a 12 px event frame, matching first (DELIVER's rule) and resizing directly give different
    tensors, so the rule is visible; depth of another size is resized directly, and without RGB nothing is matched."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)
    event = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
    depth = rng.uniform(1, 9, (20, 20)).astype(np.float32)
    stacked, _ = frames_to_tensor({"rgb": rgb, "depth": depth, "event": event}, ["rgb", "depth", "event"], 32)
    matched_event = modality_to_tensor("event", nearest_to(event, 30, 30), 32)
    torch.testing.assert_close(stacked[2], matched_event, rtol=0, atol=0)
    assert not torch.equal(matched_event, modality_to_tensor("event", event, 32))
    direct_depth = modality_to_tensor("depth", depth, 32)
    torch.testing.assert_close(stacked[1], direct_depth, rtol=0, atol=0)
    assert not torch.equal(direct_depth, modality_to_tensor("depth", nearest_to(depth, 30, 30), 32))
    alone, present = frames_to_tensor({"event": event}, ["rgb", "event"], 32)
    assert present == ["event"]
    torch.testing.assert_close(alone[0], modality_to_tensor("event", event, 32), rtol=0, atol=0)


def test_nearest_to_is_opencvs_nearest_exact_on_any_shape() -> None:
    array = np.arange(7 * 3, dtype=np.uint8).reshape(7, 3)
    for height, width in ((5, 11), (16, 2), (7, 3)):
        expected = cv2.resize(array, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
        np.testing.assert_array_equal(nearest_to(array, height, width), expected)


@pytest.mark.parametrize(
    ("modality", "config"), [("rgb", InputConfig()), ("depth", InputConfig(depth_encoding="image"))]
)
def test_bilinear_resizing_equals_the_training_transforms(modality: str, config: InputConfig) -> None:
    """The node resizes a raw image straight to the network size; training resized it with the transforms first
    (OpenCV INTER_LINEAR, fixed-point weights, rounded to uint8). Both must give the same tensor up to that rounding
    (under one grey level; an antialiased downscale differs by up to 50 at the lines)."""
    rng = np.random.default_rng(2)
    image = cv2.GaussianBlur(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), (3, 3), 0)
    image[::7] = 255  # thin lines: where an antialiased downscale differs most
    for size in (32, 64, 256):
        served = modality_to_tensor(modality, image, size, config)
        resized, _ = EvalTransform(size=size)({modality: image}, None)
        trained = modality_to_tensor(modality, resized[modality], size, config)
        levels = 255.0 * (
            0.229 if modality == "rgb" else 1.0
        )  # tensor units → grey levels (largest std: an upper bound)
        assert float((served - trained).abs().max()) * levels < 1.0, size
