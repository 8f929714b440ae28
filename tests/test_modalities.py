"""Raw sensor arrays → network tensors: the documented normalisation of each modality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memsam_core.config import ConfigError, InputConfig, MemSamConfig
from memsam_core.data.transforms import EvalTransform, match_size
from memsam_core.modalities import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModalityError,
    check_ros_sensors,
    frames_to_tensor,
    modality_to_tensor,
    nearest_to,
)


def test_rgb_is_imagenet_normalised():
    rgb = np.full((4, 4, 3), 255, np.uint8)
    x = modality_to_tensor("rgb", rgb, 4)
    expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    torch.testing.assert_close(x[:, 0, 0], torch.tensor(expected))


def test_depth_metres_with_rep118_invalid_values():
    depth = np.array([[10.0, np.nan], [np.inf, -np.inf], [0.0, 200.0]], np.float32)
    x = modality_to_tensor("depth", depth.repeat(2, 0).repeat(2, 1)[:4, :4], 4, InputConfig(depth_max_m=80.0))
    assert x.shape == (3, 4, 4)
    assert torch.isfinite(x).all()
    assert x[0, 0, 0] == pytest.approx(10 / 80)
    assert x[1, 0, 0] == pytest.approx(np.log1p(10) / np.log1p(80))
    assert x[2, 0, 0] == 1.0
    # NaN, +Inf, -Inf and 0 are invalid: every channel 0
    for r, c in [(0, 2), (2, 0), (2, 2)]:
        assert torch.all(x[:, r, c] == 0), (r, c)


def test_sparse_lidar_stays_sparse_and_can_be_densified_with_nearest_range():
    lidar = np.zeros((8, 8), np.float32)
    lidar[4, 4] = 20.0
    lidar[4, 5] = 5.0
    x = modality_to_tensor("lidar", lidar, 8)
    assert int(x[2].sum()) == 2  # validity channel marks only the returns
    dense = modality_to_tensor("lidar", lidar, 8, InputConfig(lidar_dilate_px=1))
    assert int(dense[2].sum()) > 2
    assert dense[0, 4, 4] == pytest.approx(5.0 / 80.0)  # nearest return wins the overlap


def test_event_mono_and_pre_encoded_uint8_images_scale_to_unit_range():
    mono = np.full((2, 2), 128, np.uint8)
    x = modality_to_tensor("event", mono, 2)
    torch.testing.assert_close(x, torch.full((3, 2, 2), 128 / 255))
    hha = np.zeros((2, 2, 4), np.uint8)
    hha[..., 0] = 255
    x = modality_to_tensor("depth", hha, 2, InputConfig(depth_encoding="image"))  # the MemorySAM recipe: HHA / 255
    assert x[0].min() == 1.0 and x[1:].max() == 0.0


def test_an_input_the_contract_does_not_name_is_a_one_line_error():
    metric, image = InputConfig(), InputConfig(depth_encoding="image", lidar_encoding="image")
    hha = np.zeros((4, 4, 3), np.uint8)
    metres = np.ones((4, 4), np.float32)
    with pytest.raises(ModalityError, match=r"^depth: .*expects float32 HxW metres \(input.depth_encoding: metric\)"):
        modality_to_tensor("depth", hha, 4, metric)  # a metric model never silently takes HHA / 255
    with pytest.raises(ModalityError, match=r"^lidar: .*expects a uint8 pre-encoded image \(input.lidar_encoding"):
        modality_to_tensor("lidar", metres, 4, image)  # nor an image model metres
    with pytest.raises(ModalityError, match="event: .*uint8") as err:
        modality_to_tensor("event", metres, 4, metric)
    assert "\n" not in str(err.value)
    modality_to_tensor("depth", metres, 4, metric)
    modality_to_tensor("depth", hha, 4, image)


def test_ros_sensors_cannot_feed_a_model_trained_on_pre_encoded_depth():
    check_ros_sensors(MemSamConfig(), "node")  # metric: fine
    config = MemSamConfig(input={"depth_encoding": "image"})
    with pytest.raises(ConfigError, match=r"^ckpt.pt: input.depth_encoding: .*8-bit images.*32FC1/16UC1") as err:
        check_ros_sensors(config, "ckpt.pt")
    assert "\n" not in str(err.value)
    check_ros_sensors(MemSamConfig(model={"modalities": ["rgb", "lidar"]}, input={"depth_encoding": "image"}), "x")


def test_low_resolution_events_follow_one_rule_in_training_and_inference():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    event = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)  # DELIVER's eventlowres: 1/4 size
    # numpy nearest_to == OpenCV INTER_NEAREST_EXACT, which the training transforms use
    matched, _ = match_size({"rgb": rgb, "event": event}, None)
    np.testing.assert_array_equal(matched["event"], nearest_to(event, 48, 48))
    # inference: raw low-res event straight into the engine's converter
    served, _ = frames_to_tensor({"rgb": rgb, "event": event}, ["rgb", "event"], 32)
    # training-time evaluation / augmentation: transforms resize first (nearest for events), then convert
    resized, _ = EvalTransform(size=32)({"rgb": rgb, "event": event}, None)
    trained, _ = frames_to_tensor(resized, ["rgb", "event"], 32)
    torch.testing.assert_close(served[1], trained[1], rtol=0, atol=0)
    assert set(np.unique(served[1].numpy() * 255).round().astype(int)) <= set(np.unique(event))  # never blended
    blended = InputConfig(event_resize="bilinear")
    bilinear, _ = frames_to_tensor({"rgb": rgb, "event": event}, ["rgb", "event"], 32, blended)
    assert not torch.equal(bilinear[1], served[1])


def test_frames_to_tensor_keeps_configured_order_and_skips_absent():
    frames = {"event": np.zeros((6, 6, 3), np.uint8), "rgb": np.zeros((12, 12, 3), np.uint8)}
    stacked, present = frames_to_tensor(frames, ["rgb", "depth", "lidar", "event"], 32)
    assert present == ["rgb", "event"]
    assert stacked.shape == (2, 3, 32, 32)


@pytest.mark.parametrize(
    ("modality", "array", "reason"),
    [
        ("rgb", np.zeros((0, 4, 3), np.uint8), "empty image"),
        ("rgb", np.zeros((4, 4, 5), np.uint8), "expected HxW or HxWx3"),
        ("rgb", np.zeros((4, 4, 3), np.float32), "unsupported array dtype"),
        ("depth", np.zeros((4, 4, 2), np.float32), "unsupported array dtype"),
        ("depth", np.zeros((4, 4), np.uint16), "unsupported array dtype"),
    ],
)
def test_bad_arrays_raise_a_clear_error(modality, array, reason):
    with pytest.raises(ModalityError, match=reason):
        modality_to_tensor(modality, array, 8)
    with pytest.raises(ModalityError, match="no configured modality"):
        frames_to_tensor({"thermal": array}, ["rgb"], 8)
