"""Class names and colour palette (DELIVER / CARLA semantic tags, train ids 0..24; 255 = unlabeled)."""

from __future__ import annotations

import cv2
import numpy as np

IGNORE_INDEX = 255
"""Label value for unlabeled / ignored pixels, in datasets and in the node's ``mono8`` output."""

DELIVER_CLASSES: tuple[str, ...] = (
    "Building", "Fence", "Other", "Pedestrian", "Pole", "RoadLine", "Road", "SideWalk", "Vegetation",
    "Cars", "Wall", "TrafficSign", "Sky", "Ground", "Bridge", "RailTrack", "GroundRail", "TrafficLight",
    "Static", "Dynamic", "Water", "Terrain", "TwoWheeler", "Bus", "Truck",
)  # fmt: skip

DELIVER_PALETTE: tuple[tuple[int, int, int], ...] = (
    (70, 70, 70), (100, 40, 40), (55, 90, 80), (220, 20, 60), (153, 153, 153), (157, 234, 50),
    (128, 64, 128), (244, 35, 232), (107, 142, 35), (0, 0, 142), (102, 102, 156), (220, 220, 0),
    (70, 130, 180), (81, 0, 81), (150, 100, 100), (230, 150, 140), (180, 165, 180), (250, 170, 30),
    (110, 190, 160), (170, 120, 50), (45, 60, 150), (145, 170, 100), (0, 0, 230), (0, 60, 100),
    (0, 0, 70),
)  # fmt: skip


def class_index(name: str, names: tuple[str, ...] = DELIVER_CLASSES) -> int:
    """Index of a class by name (case-insensitive), so code never hard-codes train ids."""
    lowered = [n.lower() for n in names]
    return lowered.index(name.lower())


def default_palette(num_classes: int) -> np.ndarray:
    """``[num_classes, 3]`` uint8 palette: DELIVER colours first, then deterministic distinct colours."""
    palette = np.zeros((num_classes, 3), dtype=np.uint8)
    for i in range(num_classes):
        if i < len(DELIVER_PALETTE):
            palette[i] = DELIVER_PALETTE[i]
        else:  # golden-ratio hue walk, deterministic and well spread
            hue = (i * 0.618033988749895) % 1.0
            palette[i] = _hsv_to_rgb(hue, 0.65, 0.95)
    return palette


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def colorize(labels: np.ndarray, palette: np.ndarray, ignore_color=(0, 0, 0)) -> np.ndarray:
    """Map a ``uint8`` class-id image to ``rgb8`` with ``palette``; ignore/out-of-range ids get ``ignore_color``."""
    lut = np.zeros((256, 1, 3), dtype=np.uint8)
    lut[:] = ignore_color
    lut[: len(palette), 0] = palette
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    if labels.ndim != 2:
        return lut[labels, 0]
    return cv2.LUT(cv2.merge([labels, labels, labels]), lut)  # ~6x faster than lut[labels] at 1024²
