"""What a DELIVER ``depth/`` or ``lidar/`` PNG holds, and the declared rules that turn its values into metres.

DELIVER does not document either encoding (docs/training.md "What DELIVER's files contain"), so nothing here is
guessed from a file: the user declares a rule (``data.deliver_depth_rule``), every file is checked against it, and
``python -m memsam_core.data.deliver ROOT`` fits the rules to a real copy to tell which one holds.

The depth rules are CARLA's (DELIVER is rendered in CARLA; LibCarla ``image/ColorConverter.h``, ``ImageView.h``
and the sensors reference ``Docs/ref_sensors.md``):

* ``carla24``: the depth camera's raw output, normalized = (R + 256 G + 65536 B) / (2^24 - 1), metres = 1000 ×
  normalized; the far plane (2^24 - 1, the sky) has no depth.
* ``grey_linear``: CARLA's ``Depth`` converter, grey = normalized × 255 rounded (boost::gil's float → uint8 is
  ``x·255 + 0.5`` truncated), i.e. 1000/255 m per level; any other metres-per-level may be declared.
* ``grey_log``: CARLA's ``LogarithmicDepth`` converter, grey = 255 × clamp(1 + ln(normalized) / 5.70378,
  0.005, 1) rounded (CARLA before the 0.005 floor clamped at 0). Levels 0 and 1 are the clamp (nearer than
  ~3.4 m), 255 the far plane.

CARLA's converters write the grey value into R, G and B (and alpha 255); third parties describe DELIVER's files
as one 8-bit channel. Either way a grey file has one value per pixel. Levels that are not a measurement (grey 0,
the clamp, 255 = saturated or far plane) decode to NaN, which the input contract treats as "no return".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CARLA_FAR_M = 1000.0
"""CARLA's depth camera range: normalized depth 1 (the 24-bit code 2^24 - 1, the sky) is the far plane."""
CARLA_MAX_CODE = 2**24 - 1
CARLA_DEPTH_M_PER_LEVEL = CARLA_FAR_M / 255
"""CARLA's ``Depth`` converter: grey = normalized × 255, so one level is 1000/255 ≈ 3.922 m."""
CARLA_LOG_CONSTANT = 5.70378
"""CARLA's ``LogarithmicLinear``: value = 1 + ln(normalized) / 5.70378 (ColorConverter.h)."""
CARLA_LOG_FLOOR = 0.005
"""The clamp's lower end in current CARLA (older releases clamp at 0); both land on grey level 0 or 1."""
DEPTH_RULES: tuple[str, ...] = ("carla24", "grey_linear", "grey_log")
_CONFIG_HINT = "python -m memsam_core.data.deliver ROOT fits the rules to your copy"


class DatasetError(RuntimeError):
    """A dataset file is missing, unreadable or not what the declared rule needs; ``path`` names it."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)


@dataclass(frozen=True)
class FileContent:
    """What a PNG holds: channel count, whether its colour channels are all equal (alpha ignored), bit depth."""

    channels: int
    equal_channels: bool
    bit_depth: int

    @property
    def grey(self) -> bool:
        """One value per pixel: a single channel, or R = G = B."""
        return self.channels == 1 or self.equal_channels

    def __str__(self) -> str:
        if self.channels == 1:
            return f"1 channel, {self.bit_depth}-bit"
        equal = "equal (grey)" if self.equal_channels else "unequal"
        return f"{self.channels} channels, colour channels {equal}, {self.bit_depth}-bit"


def describe_array(image: np.ndarray) -> FileContent:
    """:class:`FileContent` of an image as read (HxW or HxWxC, colour in RGB(A) order)."""
    bit_depth = image.dtype.itemsize * 8
    if image.ndim == 2:
        return FileContent(1, True, bit_depth)
    channels = image.shape[2]
    colour = min(channels, 3)
    equal = all(np.array_equal(image[..., 0], image[..., c]) for c in range(1, colour))
    return FileContent(channels, equal, bit_depth)


def grey_levels(image: np.ndarray, path: Path | str, rule: str, hint: str) -> np.ndarray:
    """The one 8-bit grey value per pixel of a grey file; anything else is a one-line :class:`DatasetError`."""
    content = describe_array(image)
    if content.bit_depth != 8 or not content.grey:
        raise DatasetError(
            f"{path} holds {content}; {rule} needs one 8-bit grey value per pixel (1 channel, or R = G = B) ({hint})",
            path,
        )
    return image if image.ndim == 2 else image[..., 0]


# --------------------------------------------------------------------------------------------- depth
def decode_carla_depth(image: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """CARLA's raw 24-bit depth PNG (RGB order) → float32 metres; the far plane (sky) → NaN.

    A grey image (R = G = B everywhere) is refused: as a 24-bit code it would read as 1000/255 m per level by
    coincidence, a valid but absurd code that hides a mis-declared rule.
    """
    content = describe_array(image)
    if content.bit_depth != 8 or image.ndim != 3 or content.channels not in (3, 4) or content.equal_channels:
        raise DatasetError(
            f"{path} holds {content}; depth rule carla24 (CARLA's raw 24-bit code) needs 8-bit R, G, B that differ "
            f"(metres = (R + 256 G + 65536 B) / (2^24 - 1) x 1000); a grey file needs grey_linear or grey_log "
            f"(data.deliver_depth_rule; {_CONFIG_HINT})",
            path,
        )
    rgb = image[..., :3].astype(np.uint32)
    code = rgb[..., 0] | (rgb[..., 1] << 8) | (rgb[..., 2] << 16)
    metres = (code.astype(np.float64) * (CARLA_FAR_M / CARLA_MAX_CODE)).astype(np.float32)
    metres[code >= CARLA_MAX_CODE] = np.nan
    return metres


def encode_carla_depth(metres: np.ndarray) -> np.ndarray:
    """Inverse of :func:`decode_carla_depth`: metres (NaN/±Inf/<= 0/>= 1000 = far plane) → uint8 HxWx3 RGB."""
    code = _carla_code(metres)
    return np.stack([code & 255, (code >> 8) & 255, code >> 16], -1).astype(np.uint8)


def _carla_code(metres: np.ndarray) -> np.ndarray:
    """CARLA's 24-bit depth code of metric depth; no depth (sky, invalid) is the far plane."""
    valid = np.isfinite(metres) & (metres > 0) & (metres < CARLA_FAR_M)
    code = np.where(valid, np.round(np.where(valid, metres, 0) / CARLA_FAR_M * CARLA_MAX_CODE), CARLA_MAX_CODE)
    return np.minimum(code, CARLA_MAX_CODE).astype(np.uint32)


def _gil_uint8(value: np.ndarray) -> np.ndarray:
    """boost::gil's float [0, 1] → uint8 conversion, as CARLA's converters use it: ``x·255 + 0.5`` truncated."""
    return np.floor(value * 255 + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class DepthRule:
    """The declared encoding of ``depth/``: ``carla24``, ``grey_linear`` (``m_per_level``) or ``grey_log``."""

    name: str = "grey_linear"
    m_per_level: float = CARLA_DEPTH_M_PER_LEVEL

    def __post_init__(self) -> None:
        if self.name not in DEPTH_RULES:
            raise ValueError(f"unknown depth rule {self.name!r}; known: {', '.join(DEPTH_RULES)}")
        if not (math.isfinite(self.m_per_level) and self.m_per_level > 0):
            raise ValueError(f"m_per_level must be > 0, got {self.m_per_level}")

    def __str__(self) -> str:
        if self.name == "grey_linear":
            return f"grey_linear ({self.m_per_level:.6g} m per level)"
        if self.name == "grey_log":
            return "grey_log (CARLA's LogarithmicDepth)"
        return "carla24 (CARLA's raw 24-bit code)"

    def decode(self, image: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
        """A ``depth/`` PNG as read → float32 metres (NaN = no measurement); a file that does not fit is refused."""
        if self.name == "carla24":
            return decode_carla_depth(image, path)
        grey = grey_levels(image, path, f"depth rule {self}", f"data.deliver_depth_rule; {_CONFIG_HINT}")
        return self.levels_to_metres(grey)

    def levels_to_metres(self, grey: np.ndarray) -> np.ndarray:
        """Grey levels → float32 metres under a grey rule; levels that measure nothing → NaN."""
        levels = grey.astype(np.float64)
        if self.name == "grey_linear":
            metres, measured = levels * self.m_per_level, (grey > 0) & (grey < 255)
        elif self.name == "grey_log":
            metres = CARLA_FAR_M * np.exp((levels / 255 - 1) * CARLA_LOG_CONSTANT)
            measured = (grey > 1) & (grey < 255)  # 0, 1: the clamp (nearer than ~3.4 m); 255: far plane
        else:
            raise ValueError("carla24 has no grey levels")
        return np.where(measured, metres, np.nan).astype(np.float32)

    def encode(self, metres: np.ndarray) -> np.ndarray:
        """Metric depth → the PNG content CARLA writes under this rule (grey rules: one channel), for fixtures."""
        if self.name == "carla24":
            return encode_carla_depth(metres)
        normalized = _carla_code(metres).astype(np.float64) / CARLA_MAX_CODE  # the far plane is 1
        if self.name == "grey_log":
            with np.errstate(divide="ignore"):
                value = 1 + np.log(normalized) / CARLA_LOG_CONSTANT
            return _gil_uint8(np.clip(value, CARLA_LOG_FLOOR, 1.0))
        levels = np.floor(normalized * (CARLA_FAR_M / self.m_per_level) + 0.5)  # 1000/255 m: CARLA's Depth
        return np.where(normalized >= 1, 255, np.clip(levels, 0, 255)).astype(np.uint8)


ASSUMED_DEPTH_RULE = DepthRule("grey_linear", CARLA_DEPTH_M_PER_LEVEL)
"""What ``depth/`` is taken to hold until a real copy has been inspected: third-party loaders read it as one 8-bit
grey value (DGFusion takes its log, as one would of a linear code); CARLA's linear ``Depth`` converter fixes the
scale. An assumption, not a fact (docs/training.md)."""


# --------------------------------------------------------------------------------------------- LiDAR
def decode_lidar_png(image: np.ndarray, m_per_level: float, path: Path | str = "<array>") -> np.ndarray:
    """8-bit LiDAR PNG (1 channel, or equal R, G, B) → float32 metres = level × ``m_per_level``, 0 = no return."""
    rule = f"the LiDAR rule ({m_per_level:.6g} m per level)"
    hint = "data.deliver_lidar_m_per_level; input.lidar_encoding: image reads it as an image"
    grey = grey_levels(image, path, rule, hint)
    return grey.astype(np.float32) * np.float32(m_per_level)


def encode_lidar_png(metres: np.ndarray, m_per_level: float) -> np.ndarray:
    """Inverse of :func:`decode_lidar_png`: returns as grey levels (1..255, rounded), no return → 0."""
    valid = np.isfinite(metres) & (metres > 0)
    levels = np.clip(np.round(np.where(valid, metres, 0) / m_per_level), 1, 255)
    return np.where(valid, levels, 0).astype(np.uint8)
