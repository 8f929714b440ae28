"""Which depth rule a DELIVER copy's ``depth/`` files follow, learnt from its road pixels, and its LiDAR scale.

DELIVER documents neither encoding (docs/training.md), so the inspector fits them. A level pinhole camera at height
h over a flat road sees the road at image row r at planar depth Z = f·h / (r − r0) (f: focal length in pixels,
r0: the horizon row; CARLA's depth is planar Z, so this holds for every pixel of a row). Under each rule
(:mod:`memsam_core.data.deliver_codes`) the stored road values therefore follow one form:

=============  =====================================================  =============================================
rule           road value at row r                                    camera height from the coefficient
=============  =====================================================  =============================================
carla24        ln Z = a − ln(r − r0)                                  h = exp(a) / f
grey_linear    grey = s / (r − r0)  (s = f·h / m_per_level)           h = s · m_per_level / f
grey_log       grey = a − (255/c)·ln(r − r0)  (c = 5.70378, fixed)    h = 1000 / f · exp((a − 255)·c / 255)
=============  =====================================================  =============================================

Each form has one free coefficient besides the horizon. Per frame, the per-row median of the road pixels is fitted
over a grid of horizons; the residual (grey levels, or relative depth for carla24) says which form the file
follows, and the implied camera height (1-3 m for a car) whether the scale is right. Only grey_linear's scale is
free: its road fit fixes h / m_per_level, so CARLA's ``Depth`` 1000/255 m is assumed unless the camera height is
given. LiDAR's metres per level is then the median ratio of decoded depth to LiDAR level where both exist.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from memsam_core.classes import class_index
from memsam_core.data.deliver_codes import (
    CARLA_DEPTH_M_PER_LEVEL,
    CARLA_FAR_M,
    CARLA_LOG_CONSTANT,
    DatasetError,
    DepthRule,
    FileContent,
    describe_array,
)

ROAD_CLASSES: tuple[int, ...] = (class_index("Road"), class_index("RoadLine"))
"""Train ids on the road plane (lane markings lie on it too)."""
GREY_RMS_LIMIT = 1.0
"""Largest residual (grey levels) a grey rule may leave; rounding alone leaves ≈0.29."""
CARLA24_RMS_LIMIT = 0.05
"""Largest relative residual carla24 may leave."""
CLEAR_MARGIN = 0.5
"""The chosen rule's residual must be below this fraction of the other rule's."""
PLAUSIBLE_HEIGHT_M = (1.0, 3.0)
"""Camera heights a car-mounted camera can have (CARLA vehicles' cameras sit at about 1.5-2.5 m)."""
GIVEN_HEIGHT_TOLERANCE = 0.2
"""With ``camera_height_m`` given, an implied height must lie within this fraction of it."""
LIDAR_SCATTER_LIMIT = 0.1
"""Largest median relative difference between LiDAR metres and decoded depth for a LiDAR scale to count."""
MIN_ROAD_ROWS = 5
_USABLE_GREY = (2, 254)  # 0/1: below a linear code's first level or a log code's clamp; 255: saturated or far


@dataclass(frozen=True)
class Camera:
    """The pinhole the fit assumes: image width and horizontal field of view (square pixels)."""

    width: int
    hfov_deg: float = 90.0

    @property
    def focal_px(self) -> float:
        return self.width / (2 * math.tan(math.radians(self.hfov_deg) / 2))


@dataclass(frozen=True)
class FrameFit:
    """One frame's best fit of one rule's form: residual RMS, horizon row and the form's coefficient."""

    rms: float
    horizon: float
    coefficient: float


@dataclass(frozen=True)
class RuleFit:
    """One rule over all fitted frames (medians): residual, horizon, implied camera height and scale."""

    rule: str
    frames: int
    rms: float
    horizon: float
    camera_height_m: float
    m_per_level: float

    @property
    def residual(self) -> str:
        return f"{100 * self.rms:.2f} %" if self.rule == "carla24" else f"{self.rms:.2f} levels"


@dataclass(frozen=True)
class DepthCalibration:
    """The inspector's answer for ``depth/``: what the files hold, each applicable fit, the rule or why none."""

    content: FileContent
    camera: Camera
    fits: tuple[RuleFit, ...]
    rule: DepthRule | None
    reason: str


@dataclass(frozen=True)
class LidarCalibration:
    """LiDAR metres per level from the overlap with decoded depth, or why there is none."""

    content: FileContent
    returns: int
    m_per_level: float | None
    scatter: float
    reason: str


# ------------------------------------------------------------------------------------------- road rows
def road_rows(values: np.ndarray, usable: np.ndarray, min_pixels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Rows with at least ``min_pixels`` usable road pixels and the median value of each (one depth per row)."""
    rows, medians = [], []
    for row in np.flatnonzero(usable.sum(1) >= min_pixels):
        rows.append(row)
        medians.append(np.median(values[row][usable[row]]))
    return np.asarray(rows, np.float64), np.asarray(medians, np.float64)


def _form(rule: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares coefficient and residuals of ``rule``'s road form for each candidate horizon (rows of x)."""
    if rule == "grey_linear":
        u = 1 / x
        coefficient = (u * y).sum(1) / (u * u).sum(1)
        return coefficient, y - coefficient[:, None] * u
    if rule == "grey_log":
        shifted = y + (255 / CARLA_LOG_CONSTANT) * np.log(x)
    else:  # carla24: ln Z + ln(r - r0) = ln(f h)
        shifted = np.log(y) + np.log(x)
    coefficient = shifted.mean(1)
    return coefficient, shifted - coefficient[:, None]


def _best_horizon(rule: str, grid: np.ndarray, rows: np.ndarray, values: np.ndarray) -> FrameFit:
    coefficient, residual = _form(rule, rows[None, :] - grid[:, None], values)
    rms = np.sqrt((residual**2).mean(1))
    best = int(rms.argmin())
    return FrameFit(float(rms[best]), float(grid[best]), float(coefficient[best]))


def fit_road(rule: str, rows: np.ndarray, values: np.ndarray, image_height: int) -> FrameFit:
    """Best horizon for one form: a coarse grid over one image height above the top road row, then a fine one."""
    top = rows.min()
    coarse = np.linspace(top - image_height, top - 0.01, 1000)
    first = _best_horizon(rule, coarse, rows, values)
    step = coarse[1] - coarse[0]
    fine = np.linspace(first.horizon - 2 * step, min(first.horizon + 2 * step, top - 0.001), 200)
    return _best_horizon(rule, fine, rows, values)


def implied_height(rule: str, coefficient: float, focal_px: float, m_per_level: float) -> float:
    """Camera height (m) that a fitted coefficient means under ``rule`` (module table)."""
    if rule == "grey_linear":
        return coefficient * m_per_level / focal_px
    if rule == "grey_log":
        return CARLA_FAR_M / focal_px * math.exp((coefficient - 255) * CARLA_LOG_CONSTANT / 255)
    return math.exp(coefficient) / focal_px


# ------------------------------------------------------------------------------------------------ depth
def _rule_values(rule: str, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values the rule's form is fitted to (grey levels, or carla24 metres) and which pixels measure something."""
    if rule == "carla24":
        metres = DepthRule("carla24").decode(image)
        return metres, np.isfinite(metres)
    grey = image if image.ndim == 2 else image[..., 0]
    return grey.astype(np.float64), (grey >= _USABLE_GREY[0]) & (grey <= _USABLE_GREY[1])


def fit_rule(
    rule: str, frames: Sequence[tuple[np.ndarray, np.ndarray]], camera: Camera, camera_height_m: float | None
) -> RuleFit | None:
    """Fit ``rule``'s form to every frame (raw depth image, road mask) with enough road rows; medians over frames."""
    fits = []
    for image, road in frames:
        try:
            values, measured = _rule_values(rule, image)
        except DatasetError:  # e.g. an all-grey frame among carla24 files: nothing to fit there
            continue
        rows, medians = road_rows(values, road & measured)
        if rows.size >= MIN_ROAD_ROWS:
            fits.append(fit_road(rule, rows, medians, image.shape[0]))
    if not fits:
        return None
    coefficient = float(np.median([f.coefficient for f in fits]))
    m_per_level = CARLA_DEPTH_M_PER_LEVEL
    if rule == "grey_linear" and camera_height_m is not None:
        m_per_level = camera.focal_px * camera_height_m / coefficient  # the road fixes h / m_per_level
    return RuleFit(
        rule=rule,
        frames=len(fits),
        rms=float(np.median([f.rms for f in fits])),
        horizon=float(np.median([f.horizon for f in fits])),
        camera_height_m=implied_height(rule, coefficient, camera.focal_px, m_per_level),
        m_per_level=m_per_level,
    )


def combined_content(images: Sequence[np.ndarray]) -> FileContent:
    """What a folder's sampled files hold together: the first file's channels and depth; equal only if all are."""
    contents = [describe_array(image) for image in images]
    first = contents[0]
    return FileContent(first.channels, all(c.equal_channels for c in contents), first.bit_depth)


def calibrate_depth(
    frames: Sequence[tuple[np.ndarray, np.ndarray]],
    hfov_deg: float = 90.0,
    camera_height_m: float | None = None,
) -> DepthCalibration:
    """Fit every rule that can read the files to the road and choose one (module docstring); ``frames`` are
    (raw ``depth/`` image as read, road mask) pairs."""
    content = combined_content([image for image, _ in frames])
    camera = Camera(frames[0][0].shape[1], hfov_deg)
    if content.bit_depth != 8:
        return DepthCalibration(content, camera, (), None, f"the files hold {content}: every rule reads 8-bit files")
    candidates = ("grey_linear", "grey_log") if content.grey else ("carla24",)
    fits = tuple(f for rule in candidates if (f := fit_rule(rule, frames, camera, camera_height_m)) is not None)
    rule, reason = choose_rule(fits, camera_height_m)
    return DepthCalibration(content, camera, fits, rule, reason)


def _height_range(camera_height_m: float | None) -> tuple[float, float]:
    if camera_height_m is None:
        return PLAUSIBLE_HEIGHT_M
    return camera_height_m * (1 - GIVEN_HEIGHT_TOLERANCE), camera_height_m * (1 + GIVEN_HEIGHT_TOLERANCE)


def choose_rule(fits: Sequence[RuleFit], camera_height_m: float | None) -> tuple[DepthRule | None, str]:
    """The rule whose form fits clearly best, within its residual limit, at a plausible camera height; else why not."""
    if not fits:
        return None, f"no sampled frame has {MIN_ROAD_ROWS} rows of road pixels with a usable depth value to fit"
    best = min(fits, key=lambda f: f.rms)
    limit = CARLA24_RMS_LIMIT if best.rule == "carla24" else GREY_RMS_LIMIT
    if best.rms > limit:
        return None, f"the files fit no rule: the best form, {best.rule}, leaves {best.residual} on the road"
    for other in fits:
        if other is not best and best.rms > CLEAR_MARGIN * other.rms:
            return None, f"{best.rule} ({best.residual}) and {other.rule} ({other.residual}) fit about equally well"
    if best.m_per_level <= 0:
        return None, f"{best.rule}'s road fit has depth falling towards the camera: the files fit no rule"
    low, high = _height_range(camera_height_m)
    if not low <= best.camera_height_m <= high:
        why = f"{best.rule} fits the road but implies a {best.camera_height_m:.2f} m high camera (expected {low:.2f}"
        why += f"-{high:.2f} m); wrong --fov?"
        if best.rule == "grey_linear":
            why += " At another scale than CARLA's 1000/255 m per level: --camera-height gives the metres per level"
        return None, why
    chosen = DepthRule(best.rule, best.m_per_level)
    return chosen, f"{chosen}: {best.residual} on the road, camera {best.camera_height_m:.2f} m high"


# ------------------------------------------------------------------------------------------------ LiDAR
def precise_depth_m(rule: DepthRule) -> float:
    """Depth from which ``rule`` decodes to within 5 % (a linear code's levels are coarse near the camera)."""
    return 10 * rule.m_per_level if rule.name == "grey_linear" else 0.0


def calibrate_lidar(pairs: Sequence[tuple[np.ndarray, np.ndarray]], min_depth_m: float = 0.0) -> LidarCalibration:
    """LiDAR metres per level from (decoded depth metres, raw ``lidar/`` image) pairs: the median ratio of depth to
    level over returns at ``min_depth_m`` or further (where the decoded depth is precise)."""
    images = [lidar for _, lidar in pairs]
    content = combined_content(images)
    if content.bit_depth != 8 or not content.grey:
        return LidarCalibration(content, 0, None, math.nan, "not one 8-bit level per pixel: no LiDAR scale")
    depth = np.concatenate([d.reshape(-1) for d, _ in pairs]).astype(np.float64)
    levels = np.concatenate([(img if img.ndim == 2 else img[..., 0]).reshape(-1) for img in images]).astype(np.float64)
    overlap = (levels > 0) & (levels < 255) & np.isfinite(depth) & (depth > min_depth_m)  # 255: saturated
    returns = int(overlap.sum())
    where = f"{returns} returns with a depth value" + (f" beyond {min_depth_m:.3g} m" if min_depth_m > 0 else "")
    if returns < 50:
        return LidarCalibration(content, returns, None, math.nan, f"{where}: too few to fit a LiDAR scale")
    depth, levels = depth[overlap], levels[overlap]
    m_per_level = float(np.median(depth / levels))
    scatter = float(np.median(np.abs(depth - m_per_level * levels) / depth))
    if scatter > LIDAR_SCATTER_LIMIT:
        why = f"{where}: LiDAR levels are not proportional to the depth (median difference {100 * scatter:.1f} %)"
        return LidarCalibration(content, returns, None, scatter, why)
    why = f"{where}: {m_per_level:.4g} m per level (median difference to depth {100 * scatter:.1f} %)"
    return LidarCalibration(content, returns, m_per_level, scatter, why)


# ------------------------------------------------------------------------------------------------ report
def report_lines(depth: DepthCalibration, lidar: LidarCalibration | None) -> list[str]:
    """The inspector's printout: each fit, the verdicts, and the config lines to use (or that there are none)."""
    cam = depth.camera
    lines = [
        f"depth/: {depth.content}; road fitted with a level pinhole {cam.width} px wide, horizontal FOV "
        f"{cam.hfov_deg:g} deg (f = {cam.focal_px:.1f} px)",
    ]
    for fit in depth.fits:
        scale = f" at {fit.m_per_level:.6g} m per level" if fit.rule == "grey_linear" else ""
        lines.append(
            f"  {fit.rule:<12} residual {fit.residual:<12} horizon row {fit.horizon:7.1f}  implied camera height "
            f"{fit.camera_height_m:.2f} m{scale}  ({fit.frames} frames)"
        )
    if not depth.content.grey:
        lines.append("  grey_linear, grey_log: not applicable (colour channels differ)")
    elif depth.content.bit_depth == 8:
        lines.append("  carla24: not applicable (a grey file; as a 24-bit code it would read as 1000/255 m per level)")
    lines.append(f"depth verdict: {depth.reason}")
    if lidar is not None:
        lines.append(f"lidar/: {lidar.content}; {lidar.reason}")
    if depth.rule is None:
        lines.append("no rule to put in the config: do not train with input.depth_encoding: metric on these files")
        return lines
    lines.append("put in the config (data section):")
    lines.append(f"  deliver_depth_rule: {depth.rule.name}")
    if depth.rule.name == "grey_linear":
        lines.append(f"  deliver_depth_m_per_level: {depth.rule.m_per_level:.8g}")
    if lidar is not None and lidar.m_per_level is not None:
        lines.append(f"  deliver_lidar_m_per_level: {lidar.m_per_level:.4g}")
    return lines
