"""Synthetic scene generator: determinism, raw format, cross-modal geometric consistency, conditions."""

from __future__ import annotations

import random
import time
from dataclasses import replace

import cv2
import numpy as np
import pytest

from memsam_core.classes import DELIVER_CLASSES, class_index
from memsam_core.data.synthetic import CONDITIONS, FAILURES, SceneConfig, SyntheticDataset, generate_scene

SMALL = SceneConfig(height=96, width=128)


def _assert_same(a, b) -> None:
    assert a.frames.keys() == b.frames.keys()
    for m in a.frames:
        assert a.frames[m].dtype == b.frames[m].dtype
        assert np.array_equal(a.frames[m], b.frames[m], equal_nan=a.frames[m].dtype.kind == "f"), m
    assert np.array_equal(a.labels, b.labels)


def test_deterministic_and_independent_of_global_rng() -> None:
    first = generate_scene(11, SMALL)
    np.random.seed(123)
    random.seed(5)
    np.random.rand(100)
    _assert_same(first, generate_scene(11, SMALL))


def test_different_seeds_differ() -> None:
    a, b = generate_scene(1, SMALL), generate_scene(2, SMALL)
    assert not np.array_equal(a.frames["rgb"], b.frames["rgb"])
    assert not np.array_equal(a.labels, b.labels)


def test_raw_format() -> None:
    s = generate_scene(3, SMALL)
    h, w = SMALL.height, SMALL.width
    assert s.frames["rgb"].shape == (h, w, 3) and s.frames["rgb"].dtype == np.uint8
    assert s.frames["depth"].shape == (h, w) and s.frames["depth"].dtype == np.float32
    assert s.frames["lidar"].shape == (h, w) and s.frames["lidar"].dtype == np.float32
    assert s.frames["event"].shape == (h, w, 3) and s.frames["event"].dtype == np.uint8
    assert s.labels.shape == (h, w) and s.labels.dtype == np.uint8
    assert s.labels.max() < len(DELIVER_CLASSES)
    depth = s.frames["depth"]
    sky = s.labels == class_index("Sky")
    assert np.isposinf(depth[sky]).all() and (depth[~sky] > 0).all() and np.isfinite(depth[~sky]).all()
    assert not np.isnan(s.frames["lidar"]).any() and (s.frames["lidar"] >= 0).all()
    assert (s.frames["event"][..., 1] == 0).all()  # only red (positive) and blue (negative)
    k = s.intrinsics
    assert k[0, 0] == pytest.approx(w / 2)  # 90 degree horizontal FOV
    assert s.case == "normal"


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_labels_have_street_classes(seed: int) -> None:
    labels = generate_scene(seed, SMALL).labels
    present = set(np.unique(labels).tolist())
    assert {class_index("Road"), class_index("Sky")} <= present
    assert len(present) >= 6


def test_lidar_matches_depth_and_is_sparse() -> None:
    for seed in range(3):
        s = generate_scene(seed, SceneConfig())
        lidar, depth = s.frames["lidar"], s.frames["depth"]
        hit = lidar > 0
        assert 0.01 < hit.mean() < 0.15
        rel = np.abs(lidar[hit] - depth[hit]) / depth[hit]
        assert np.median(rel) < 0.02 and np.percentile(rel, 95) < 0.02
        assert lidar[hit].max() <= SceneConfig().max_range_m


def test_lidar_jitter_misplaces_points() -> None:
    clean = generate_scene(4, SceneConfig())
    jitter = generate_scene(4, SceneConfig(failures={"lidarjitter"}))

    def bad_fraction(s) -> float:
        hit = s.frames["lidar"] > 0
        rel = np.abs(s.frames["lidar"][hit] - s.frames["depth"][hit]) / s.frames["depth"][hit]
        return float((rel > 0.05).mean())

    assert bad_fraction(jitter) > bad_fraction(clean) + 0.02


@pytest.mark.parametrize("condition", CONDITIONS)
@pytest.mark.parametrize("failure", [None, *FAILURES])
def test_every_condition_and_failure_runs(condition: str, failure: str | None) -> None:
    cfg = SceneConfig(height=48, width=64, condition=condition, failures={failure} if failure else frozenset())
    s = generate_scene(5, cfg)
    assert s.condition == condition and s.case == (failure or "normal")
    assert s.frames["rgb"].shape == (48, 64, 3)
    if failure == "eventlowres":
        assert s.frames["event"].shape == (12, 16, 3)
    else:
        assert s.frames["event"].shape == (48, 64, 3)


def _noise_to_signal(rgb: np.ndarray) -> float:
    gray = rgb.astype(np.float32).mean(-1)
    residual = gray - cv2.GaussianBlur(gray, (5, 5), 0)
    return float(np.median(np.abs(residual)) / max(gray.mean(), 1.0))


def test_night_rgb_dark_and_noisy_but_depth_unchanged() -> None:
    sun = generate_scene(6, SceneConfig(condition="sun"))
    night = generate_scene(6, SceneConfig(condition="night"))
    assert night.frames["rgb"].mean() < 0.5 * sun.frames["rgb"].mean()
    assert _noise_to_signal(night.frames["rgb"]) > 2 * _noise_to_signal(sun.frames["rgb"])
    # same world: geometry, labels, depth and LiDAR do not depend on light
    assert np.array_equal(sun.labels, night.labels)
    assert np.array_equal(sun.frames["depth"], night.frames["depth"])
    assert np.array_equal(sun.frames["lidar"], night.frames["lidar"])


def test_fog_flattens_rgb_and_loses_far_lidar() -> None:
    sun = generate_scene(7, SceneConfig(condition="sun"))
    fog = generate_scene(7, SceneConfig(condition="fog"))
    ground = sun.labels != class_index("Sky")
    far = ground & (sun.frames["depth"] > 30)
    assert fog.frames["rgb"].astype(float)[far].std() < 0.5 * sun.frames["rgb"].astype(float)[far].std()
    assert np.array_equal(sun.frames["depth"], fog.frames["depth"])
    assert (fog.frames["lidar"] > 30).sum() < 0.7 * (sun.frames["lidar"] > 30).sum()


def test_events_come_from_motion() -> None:
    moving = generate_scene(8, SMALL).frames["event"]
    assert (moving.max(-1) > 0).mean() > 0.01
    assert (moving[..., 0] > 0).any() and (moving[..., 2] > 0).any()
    static = generate_scene(8, replace(SMALL, ego_speed_mps=0.0, object_motion=False)).frames["event"]
    assert not static.any()
    low = generate_scene(8, replace(SMALL, failures={"eventlowres"})).frames["event"]
    assert low.shape == (SMALL.height // 4, SMALL.width // 4, 3) and low.any()


def test_failures_change_rgb_only_where_expected() -> None:
    base = generate_scene(9, SMALL)
    over = generate_scene(9, replace(SMALL, failures={"overexposure"}))
    under = generate_scene(9, replace(SMALL, failures={"underexposure"}))
    blur = generate_scene(9, replace(SMALL, failures={"motionblur"}))
    assert over.frames["rgb"].mean() > base.frames["rgb"].mean() + 30
    assert under.frames["rgb"].mean() < base.frames["rgb"].mean() - 30
    lap = [cv2.Laplacian(s.frames["rgb"].mean(-1), cv2.CV_64F).var() for s in (base, blur)]
    assert lap[1] < 0.7 * lap[0]
    for s in (over, under, blur):
        assert np.array_equal(s.frames["depth"], base.frames["depth"])
        assert np.array_equal(s.labels, base.labels)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="condition"):
        SceneConfig(condition="snow")
    with pytest.raises(ValueError, match="failures"):
        SceneConfig(failures={"dust"})
    assert SceneConfig(failures=["motionblur"]).failures == frozenset({"motionblur"})


def test_speed_256() -> None:
    cfg = SceneConfig(condition="night")  # the most expensive condition (lamps)
    generate_scene(0, cfg)
    times = []
    for seed in range(3):
        start = time.perf_counter()
        generate_scene(seed, cfg)
        times.append(time.perf_counter() - start)
    assert min(times) < 0.5  # budget 0.2 s on an idle core; generous for loaded CI machines


def test_dataset_cycles_conditions_and_filters_modalities() -> None:
    ds = SyntheticDataset(
        7, SceneConfig(height=32, width=48), seed_offset=100, modalities=("rgb", "lidar"), conditions=CONDITIONS,
        failures=[(), ("eventlowres",)],
    )  # fmt: skip
    assert len(ds) == 7
    items = [ds[i] for i in range(len(ds))]
    assert [it["meta"]["condition"] for it in items] == [*CONDITIONS, *CONDITIONS[:2]]
    assert [it["meta"]["case"] for it in items[:3]] == ["normal", "eventlowres", "normal"]
    assert items[0]["frames"].keys() == {"rgb", "lidar"}
    assert items[3]["meta"]["seed"] == 103
    ref = generate_scene(103, SceneConfig(height=32, width=48, condition=CONDITIONS[3], failures={"eventlowres"}))
    assert np.array_equal(items[3]["frames"]["rgb"], ref.frames["rgb"])
    with pytest.raises(IndexError):
        ds[7]


def test_dataset_transform_is_seeded() -> None:
    def shift(frames, labels, rng):
        k = int(rng.integers(1, 5))
        return {m: np.roll(a, k, axis=1) for m, a in frames.items()}, np.roll(labels, k, axis=1)

    ds = SyntheticDataset(2, SceneConfig(height=32, width=32), transform=shift, aug_seed=3)
    raw = generate_scene(1, SceneConfig(height=32, width=32))
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        _, expected = shift(raw.frames, raw.labels, np.random.default_rng([3, epoch, 1]))
        assert np.array_equal(ds[1]["labels"], expected)
