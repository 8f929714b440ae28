"""mVC8 (VSPW's video consistency) on hand-made clips, and against a plain re-statement of VSPW's per-clip loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from memsam_core.metrics import VideoConsistency, window_consistency


def vspw_per_clip(labels: list[np.ndarray], predictions: list[np.ndarray], clip: int) -> list[float]:
    """VSPW_code's ``VC_perclip.py`` (``get_common``) restated loop by loop, as its code computes it: for window
    start i in range(n - clip), pixels equal to frame i's in frames i+1..i+clip-1, in the labels and in the
    predictions; score = stable in both / stable in the labels."""
    scores = []
    for i in range(len(labels) - clip):
        stable_gt = np.ones(labels[0].shape, bool)
        stable_pred = np.ones(labels[0].shape, bool)
        for j in range(1, clip):
            stable_gt &= labels[i] == labels[i + j]
            stable_pred &= predictions[i] == predictions[i + j]
        scores.append(float((stable_gt & stable_pred).sum() / stable_gt.sum()))
    return scores


def _clip(frames: int = 12, seed: int = 0) -> list[np.ndarray]:
    """A street-like label clip: a static background and a car moving one column per frame."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 4, (16, 24), dtype=np.uint8)
    clip = []
    for t in range(frames):
        frame = background.copy()
        frame[6:10, t : t + 5] = 12
        clip.append(frame)
    return clip


def test_a_perfect_and_a_constant_predictor_are_fully_consistent():
    labels = _clip()
    assert window_consistency(labels, labels) == [1.0] * 4  # 12 frames, windows at 0..3 (VSPW: n - 8 of them)
    still = [labels[0]] * len(labels)  # wrong about the car, but never changes
    assert window_consistency(labels, still) == [1.0] * 4


def test_a_predictor_that_flickers_on_purpose_scores_lower():
    labels = _clip()
    rng = np.random.default_rng(1)
    flicker = []
    for frame in labels:
        noisy = frame.copy()
        noisy[rng.random(frame.shape) < 0.05] = 7  # 5 % of the pixels jump to another class, new ones each frame
        flicker.append(noisy)
    metric = VideoConsistency(8)
    metric.add_clip(labels, flicker)
    assert 0.5 < metric.value < 0.9  # ≈ 0.95^8 of the stable pixels stay unchanged over a window
    assert metric.value < VideoConsistency(8).add_clip(labels, labels)[0]


def test_equals_the_vspw_per_clip_loop():
    labels = _clip(14, seed=2)
    rng = np.random.default_rng(3)
    predictions = [np.where(rng.random(f.shape) < 0.03, (f + 1) % 5, f).astype(np.uint8) for f in labels]
    for clip in (8, 5):
        ours = window_consistency(labels, predictions, clip)
        assert ours == pytest.approx(vspw_per_clip(labels, predictions, clip), abs=0)
        assert len(ours) == len(labels) - clip


def test_short_clips_score_nothing_and_windows_without_stable_pixels_are_left_out():
    labels = _clip(8)
    assert window_consistency(labels, labels, 8) == []  # VSPW skips clips of <= 8 frames
    changing = [np.full((4, 4), t, np.uint8) for t in range(10)]  # every pixel changes every frame
    assert all(math.isnan(s) for s in window_consistency(changing, changing, 8))
    metric = VideoConsistency(8)
    metric.add_clip(changing, changing)
    assert metric.windows == 0 and math.isnan(metric.value)
    metric.add_clip(_clip(), _clip())
    assert metric.value == 1.0 and metric.windows == 4


def test_mismatched_clips_are_refused():
    with pytest.raises(ValueError, match="12 label frames but 11"):
        window_consistency(_clip(), _clip()[:11])
