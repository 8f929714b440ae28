"""Write a tiny DELIVER-layout tree from synthetic scenes, in DELIVER's file encodings, for tests and training.

Each file is written the way :mod:`memsam_core.data.deliver` documents DELIVER's content: ``img/`` RGB,
``depth/`` by ``depth_rule`` as CARLA writes it (``carla24``: the raw 24-bit code; ``grey_linear``: the ``Depth``
converter, or any metres per level; ``grey_log``: ``LogarithmicDepth``; grey files have one channel),
``hha/`` a 3-channel HHA stand-in (disparity, height, validity — Depth2HHA needs a gravity estimate we do not
reproduce), ``lidar/`` one 8-bit grey depth level per pixel (``lidar_m_per_level`` metres per level, 0 = no
return), ``event/`` RGBA (1/4 size for ``eventlowres``), ``semantic/`` R = train id + 1 (0 = unlabeled).

The scenes are :mod:`memsam_core.data.synthetic`'s: a level pinhole camera ``camera_height_m`` above a flat road,
``hfov_deg`` wide, so the inspector's road fit (:mod:`memsam_core.data.deliver_calibration`) has a known answer.
Decoding the fixture under the rule it was written with gives the scene's metres back to the rule's rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from memsam_core.data.deliver import DELIVER_CONDITIONS, NORMAL_CASE, encode_labels
from memsam_core.data.deliver_codes import ASSUMED_DEPTH_RULE, DepthRule, encode_lidar_png
from memsam_core.data.synthetic import SceneConfig, SyntheticSample, generate_scene


def _write(path: Path, image_rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image_rgb.ndim == 3 and image_rgb.shape[2] == 3:
        image_rgb = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    elif image_rgb.ndim == 3 and image_rgb.shape[2] == 4:
        image_rgb = cv2.cvtColor(image_rgb, cv2.COLOR_RGBA2BGRA)
    if not cv2.imwrite(str(path), image_rgb):
        raise OSError(f"cannot write {path}")


def _hha_like(depth: np.ndarray, k: np.ndarray, camera_height_m: float) -> np.ndarray:
    """HHA-style 3 channels: disparity, height above ground, validity (a cheap stand-in for Depth2HHA)."""
    valid = np.isfinite(depth) & (depth > 0)
    d = np.where(valid, depth, 0.0)
    rows = (np.arange(depth.shape[0])[:, None] - k[1, 2]) / k[1, 1]
    height = camera_height_m - rows * d
    disparity = np.where(valid, np.clip(255 * 2.0 / np.maximum(d, 1e-3), 0, 255), 0)
    h_chan = np.where(valid, np.clip(height * 10, 0, 255), 0)
    return np.stack([disparity, h_chan, valid * 255.0], -1).astype(np.uint8)


def _write_sample(
    root: Path,
    where: tuple[str, str, str],
    frame: str,
    sample: SyntheticSample,
    config: SceneConfig,
    depth_rule: DepthRule,
    lidar_m_per_level: float,
) -> Path:
    """Write every DELIVER file of one frame under ``<root>/<folder>/<condition>/<split>/<sequence>``."""
    event = sample.frames["event"]
    red = encode_labels(sample.labels)
    images = {
        ("img", "rgb"): sample.frames["rgb"],
        ("hha", "depth"): _hha_like(sample.frames["depth"], config.intrinsics, config.camera_height_m),
        ("depth", "depth"): depth_rule.encode(sample.frames["depth"]),
        ("lidar", "lidar"): encode_lidar_png(sample.frames["lidar"], lidar_m_per_level),
        ("event", "event"): np.concatenate([event, np.full((*event.shape[:2], 1), 255, np.uint8)], -1),
        ("semantic", "semantic"): np.stack([red, np.zeros_like(red), np.zeros_like(red)], -1),
    }
    for (folder, tag), image in images.items():
        _write(root.joinpath(folder, *where, f"{frame}_{tag}_front.png"), image)
    return root.joinpath("img", *where, f"{frame}_rgb_front.png")


def write_deliver_fixture(
    root: str | Path,
    *,
    splits: Sequence[str] = ("train", "val"),
    conditions: Sequence[str] = DELIVER_CONDITIONS,
    cases: Sequence[str] = (NORMAL_CASE,),
    frames_per_sequence: int = 2,
    size: int = 64,
    seed: int = 0,
    lidar_m_per_level: float = 1.0,
    depth_rule: DepthRule = ASSUMED_DEPTH_RULE,
    hfov_deg: float = 90.0,
    camera_height_m: float = 1.7,
) -> list[Path]:
    """Write one sequence per (split, condition, case) with ``frames_per_sequence`` frames; returns RGB paths.

    Sequences are named ``MAP_<k>_point<j>[_<case>]`` like DELIVER; content comes from
    :func:`generate_scene` with the folder's condition and failure, so the tree is deterministic.
    """
    root = Path(root)
    written = []
    counter = 0
    for split in splits:
        for ci, condition in enumerate(conditions):
            for ki, case in enumerate(cases):
                sequence = f"MAP_{ci + 1}_point{ki}" + ("" if case == NORMAL_CASE else f"_{case}")
                failures = frozenset() if case == NORMAL_CASE else frozenset([case])
                config = SceneConfig(height=size, width=size, condition=condition, failures=failures,
                                     hfov_deg=hfov_deg, camera_height_m=camera_height_m)  # fmt: skip
                for f in range(frames_per_sequence):
                    sample = generate_scene(seed * 1_000_003 + counter, config)
                    counter += 1
                    where = (condition, split, sequence)
                    frame = f"{f * 5:06d}"
                    written.append(_write_sample(root, where, frame, sample, config, depth_rule, lidar_m_per_level))
    return written
