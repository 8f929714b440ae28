"""Augmentations on raw multimodal numpy frames, applied consistently to every modality and the labels.

Train recipe = memorysam.md §5.3 in its order: colour jitter (p 0.2, RGB only) → horizontal flip (p 0.5,
all) → 3×3 Gaussian blur (p 0.2, RGB only) → random resized crop (short side × U(0.5, 2), crop, pad).
Eval = resize to a square.  Every function takes ``(frames, labels, rng)`` (labels may be ``None``) and
returns new ``(frames, labels)``; all randomness comes from the numpy Generator, so a seeded Generator
reproduces the exact augmentation.

Interpolation follows the input contract (memsam_core.modalities, the same rule as inference): uint8
images bilinear; float metres (depth, LiDAR), labels and the modalities listed in ``nearest`` (events
under the default contract) nearest, so sparse LiDAR is not smeared, NaN / 0 invalid pixels stay
invalid and event counts are not blended.  Nearest uses pixel-centre sampling (``INTER_NEAREST_EXACT``)
so it lines up with bilinear.  Padding: images and metres 0 (0 m = invalid), labels 255.  Modalities
smaller than the labels (``eventlowres``) are first resized to the label size with nearest, as the
reference loader does.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import cv2
import numpy as np

from memsam_core.classes import IGNORE_INDEX

Frames = dict[str, np.ndarray]
Labels = np.ndarray | None

_GRAY = np.array([0.299, 0.587, 0.114], np.float32)  # torchvision's rgb_to_grayscale weights


def is_metric(array: np.ndarray) -> bool:
    """Float HxW arrays are metres (depth / LiDAR) and need nearest resampling."""
    return np.issubdtype(array.dtype, np.floating)


def _resize(array: np.ndarray, width: int, height: int, nearest: bool) -> np.ndarray:
    if array.shape[1] == width and array.shape[0] == height:
        return array.copy()
    mode = cv2.INTER_NEAREST_EXACT if nearest else cv2.INTER_LINEAR
    out = cv2.resize(array, (width, height), interpolation=mode)
    return out.reshape(height, width, *array.shape[2:])  # cv2 drops a trailing channel axis of 1


def _reference_shape(frames: Frames, labels: Labels) -> tuple[int, int]:
    if labels is not None:
        return labels.shape[:2]
    return frames["rgb"].shape[:2] if "rgb" in frames else max(f.shape[:2] for f in frames.values())


def match_size(frames: Frames, labels: Labels, rng: np.random.Generator | None = None) -> tuple[Frames, Labels]:
    """Resize (nearest) modalities whose size differs from the labels' (or RGB's) to that size."""
    h, w = _reference_shape(frames, labels)
    out = {m: a if a.shape[:2] == (h, w) else _resize(a, w, h, nearest=True) for m, a in frames.items()}
    return out, labels


def hflip(frames: Frames, labels: Labels, rng: np.random.Generator | None = None) -> tuple[Frames, Labels]:
    """Mirror every modality and the labels left-right."""
    out = {m: np.ascontiguousarray(a[:, ::-1]) for m, a in frames.items()}
    return out, None if labels is None else np.ascontiguousarray(labels[:, ::-1])


def random_hflip(frames: Frames, labels: Labels, rng: np.random.Generator, p: float = 0.5) -> tuple[Frames, Labels]:
    return hflip(frames, labels) if rng.random() < p else (dict(frames), labels)


def color_jitter(
    frames: Frames, labels: Labels, rng: np.random.Generator, p: float = 0.2, strength: float = 0.5
) -> tuple[Frames, Labels]:
    """RGB only: brightness, contrast, saturation factors each ~U(1-strength, 1+strength), in that order."""
    apply = rng.random() < p
    factors = rng.uniform(1 - strength, 1 + strength, 3)  # drawn always: stable stream
    if not apply or "rgb" not in frames:
        return dict(frames), labels
    b, c, s = factors.astype(np.float32)
    img = np.clip(frames["rgb"].astype(np.float32) * b, 0, 255)
    img = np.clip(c * img + (1 - c) * float((img @ _GRAY).mean()), 0, 255)
    img = np.clip(s * img + (1 - s) * (img @ _GRAY)[..., None], 0, 255)
    return {**frames, "rgb": (img + 0.5).astype(np.uint8)}, labels


def gaussian_blur(
    frames: Frames, labels: Labels, rng: np.random.Generator, p: float = 0.2, kernel: int = 3
) -> tuple[Frames, Labels]:
    """RGB only: k×k Gaussian blur, sigma from the kernel size (0.8 for 3×3, as torchvision)."""
    if rng.random() >= p or "rgb" not in frames:
        return dict(frames), labels
    return {**frames, "rgb": cv2.GaussianBlur(frames["rgb"], (kernel, kernel), 0)}, labels


def random_resized_crop(
    frames: Frames,
    labels: Labels,
    rng: np.random.Generator,
    size: int = 1024,
    scale: tuple[float, float] = (0.5, 2.0),
    nearest: Collection[str] = (),
) -> tuple[Frames, Labels]:
    """Resize so the short side is ≈ ``size × U(scale)`` (reference formula), random ``size²`` crop, pad.

    ``nearest``: modalities resampled with nearest besides float metres (the contract's events)."""
    frames, labels = match_size(frames, labels)
    h, w = _reference_shape(frames, labels)
    ratio = rng.uniform(*scale)
    target = (int(size * ratio), int(size * 4 * ratio))
    factor = min(max(target) / max(h, w), min(target) / min(h, w))
    nh, nw = max(int(h * factor + 0.5), 1), max(int(w * factor + 0.5), 1)
    y0 = int(rng.integers(0, max(nh - size, 0) + 1))
    x0 = int(rng.integers(0, max(nw - size, 0) + 1))

    def crop(array: np.ndarray, nearest: bool, fill: float) -> np.ndarray:
        resized = _resize(array, nw, nh, nearest)[y0 : y0 + size, x0 : x0 + size]
        if resized.shape[:2] == (size, size):
            return np.ascontiguousarray(resized)
        out = np.full((size, size, *array.shape[2:]), fill, array.dtype)
        out[: resized.shape[0], : resized.shape[1]] = resized
        return out

    out = {m: crop(a, is_metric(a) or m in nearest, 0) for m, a in frames.items()}
    return out, None if labels is None else crop(labels, True, IGNORE_INDEX)


def resize(
    frames: Frames,
    labels: Labels,
    rng: np.random.Generator | None = None,
    size: int = 1024,
    nearest: Collection[str] = (),
) -> tuple[Frames, Labels]:
    """Eval: every modality and the labels to ``size × size`` (labels, metres and ``nearest`` nearest)."""
    frames, labels = match_size(frames, labels)
    out = {m: _resize(a, size, size, is_metric(a) or m in nearest) for m, a in frames.items()}
    return out, None if labels is None else _resize(labels, size, size, nearest=True)


@dataclass(frozen=True)
class TrainTransform:
    """memorysam.md §5.3 train pipeline as one ``(frames, labels, rng)`` callable."""

    size: int = 1024
    scale: tuple[float, float] = (0.5, 2.0)
    p_jitter: float = 0.2
    p_flip: float = 0.5
    p_blur: float = 0.2
    nearest: tuple[str, ...] = ("event",)  # the default contract's input.event_resize

    def __call__(self, frames: Frames, labels: Labels, rng: np.random.Generator) -> tuple[Frames, Labels]:
        frames, labels = match_size(frames, labels)
        frames, labels = color_jitter(frames, labels, rng, self.p_jitter)
        frames, labels = random_hflip(frames, labels, rng, self.p_flip)
        frames, labels = gaussian_blur(frames, labels, rng, self.p_blur)
        return random_resized_crop(frames, labels, rng, self.size, tuple(self.scale), self.nearest)


@dataclass(frozen=True)
class EvalTransform:
    """Resize to a square, like the reference ``Resize([1024, 1024])`` on square DELIVER frames."""

    size: int = 1024
    nearest: tuple[str, ...] = ("event",)

    def __call__(self, frames: Frames, labels: Labels, rng: np.random.Generator | None = None) -> tuple[Frames, Labels]:
        return resize(frames, labels, size=self.size, nearest=self.nearest)
