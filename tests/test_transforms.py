"""Augmentations keep every modality and the labels aligned, and never invent depth."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from memsam_core.data.transforms import (
    EvalTransform,
    TrainTransform,
    color_jitter,
    gaussian_blur,
    hflip,
    random_resized_crop,
    resize,
)

H, W = 60, 80


def _coordinate_frames() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every modality encodes the source pixel: depth = y*W + x + 1 (exact under nearest)."""
    y, x = np.mgrid[0:H, 0:W]
    code = (y * W + x + 1).astype(np.float32)
    lidar = np.where((y % 7 == 0) & (x % 3 == 0), code, 0).astype(np.float32)  # sparse scan lines
    rgb = np.stack([x * 3, y * 4, np.full_like(x, 128)], -1).astype(np.uint8)  # bilinear-friendly ramps
    event = np.stack([x * 3, np.zeros_like(x), y * 4], -1).astype(np.uint8)
    labels = ((x // 4 + 7 * (y // 4)) % 25).astype(np.uint8)
    return {"rgb": rgb, "depth": code, "lidar": lidar, "event": event}, labels


def test_hflip_consistent() -> None:
    frames, labels = _coordinate_frames()
    out, lab = hflip(frames, labels)
    for m in frames:
        assert np.array_equal(out[m], frames[m][:, ::-1])
    assert np.array_equal(lab, labels[:, ::-1])
    assert lab.flags["C_CONTIGUOUS"] and out["rgb"].flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("seed", range(12))
def test_train_transform_keeps_alignment(seed: int) -> None:
    frames, labels = _coordinate_frames()
    out, lab = TrainTransform(size=64, p_jitter=0.0, p_blur=0.0)(frames, labels, np.random.default_rng(seed))
    assert all(a.shape[:2] == (64, 64) for a in out.values()) and lab.shape == (64, 64)
    depth = out["depth"]
    valid = depth > 0
    assert valid.any()
    sy, sx = np.divmod(depth[valid].astype(np.int64) - 1, W)
    assert np.array_equal(lab[valid], labels[sy, sx])  # labels follow depth exactly
    assert (lab[~valid] == 255).all()  # padding: depth 0 (invalid) and label ignore together
    hit = out["lidar"] > 0
    assert np.array_equal(out["lidar"][hit], depth[hit])  # sparse LiDAR not smeared, same sample
    assert np.isin(out["lidar"][hit], frames["lidar"][frames["lidar"] > 0]).all()
    # bilinear RGB / event agree with the nearest source pixel within one source pixel
    inner = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)  # away from padding
    assert inner.sum() > 100
    sy, sx = np.divmod(depth[inner].astype(np.int64) - 1, W)
    assert np.abs(out["rgb"][inner][:, 0] / 3 - sx).max() <= 1.01
    assert np.abs(out["rgb"][inner][:, 1] / 4 - sy).max() <= 1.01
    assert np.abs(out["event"][inner][:, 2] / 4 - sy).max() <= 1.01


def test_train_transform_deterministic_and_flips_sometimes() -> None:
    frames, labels = _coordinate_frames()
    t = TrainTransform(size=48)
    a = t(frames, labels, np.random.default_rng(1))
    b = t(frames, labels, np.random.default_rng(1))
    assert all(np.array_equal(a[0][m], b[0][m]) for m in frames) and np.array_equal(a[1], b[1])
    flipped = 0
    for seed in range(20):
        out, _ = TrainTransform(size=W, scale=(1.0, 1.0), p_jitter=0, p_blur=0)(
            frames, labels, np.random.default_rng(seed)
        )
        d = out["depth"][: H // 2]
        flipped += int(d[0, 0] > d[0, -1] > 0)
    assert 3 <= flipped <= 17


def test_invalid_depth_stays_invalid() -> None:
    frames, labels = _coordinate_frames()
    depth = frames["depth"].copy()
    depth[10:30, 10:40] = np.nan
    depth[40:50, 50:70] = 0.0
    depth[0:5, 0:5] = np.inf
    frames["depth"] = depth
    source_valid = set(depth[np.isfinite(depth) & (depth > 0)].tolist())
    for seed in range(10):
        out, _ = TrainTransform(size=64, scale=(0.5, 1.2))(frames, labels, np.random.default_rng(seed))
        d = out["depth"]
        finite = d[np.isfinite(d) & (d > 0)]
        assert set(finite.tolist()) <= source_valid  # no interpolated depth
        assert d.dtype == np.float32
    out, _ = random_resized_crop(frames, labels, np.random.default_rng(0), size=64, scale=(0.5, 0.5))
    assert np.isnan(out["depth"]).sum() > 50 and np.isposinf(out["depth"]).any()  # whole image fits


def test_rgb_only_photometric() -> None:
    frames, labels = _coordinate_frames()
    rng = np.random.default_rng(0)
    jit, lab = color_jitter(frames, labels, rng, p=1.0)
    blur, _ = gaussian_blur(frames, labels, rng, p=1.0)
    for out in (jit, blur):
        assert not np.array_equal(out["rgb"], frames["rgb"])
        for m in ("depth", "lidar", "event"):
            assert np.array_equal(out[m], frames[m], equal_nan=True)
    assert lab is labels
    untouched, _ = color_jitter(frames, labels, rng, p=0.0)
    assert np.array_equal(untouched["rgb"], frames["rgb"])


def test_low_resolution_events_are_matched() -> None:
    frames, labels = _coordinate_frames()
    frames["event"] = frames["event"][::4, ::4].copy()
    out, _ = TrainTransform(size=32)(frames, labels, np.random.default_rng(3))
    assert out["event"].shape == (32, 32, 3)
    ev, _ = EvalTransform(size=40)(frames, labels)
    assert ev["event"].shape == (40, 40, 3)


def test_eval_resize() -> None:
    frames, labels = _coordinate_frames()
    out, lab = EvalTransform(size=32)(frames, labels)
    assert {a.shape[:2] for a in out.values()} == {(32, 32)} and lab.shape == (32, 32)
    assert set(np.unique(lab)) <= set(np.unique(labels))
    assert np.isin(out["depth"], frames["depth"]).all()
    sy, sx = np.divmod(out["depth"].astype(np.int64) - 1, W)
    assert np.array_equal(lab, labels[sy, sx])
    no_labels, none = resize(frames, None, size=16)
    assert none is None and no_labels["rgb"].shape == (16, 16, 3)
