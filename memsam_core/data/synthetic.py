"""Deterministic synthetic multimodal driving scenes (RGB, depth, LiDAR, events) with DELIVER labels.

Why: tests, training smoke runs and ROS bags need DELIVER-like samples without the 12 GB dataset, and
the modalities must *disagree* the way real ones do — RGB collapses at night / in fog while depth and
LiDAR stay informative — so that fusion is actually exercised.

One small 3-D world per seed (ground plane with road / road lines / kerbed sidewalks / terrain, box
buildings, walls, fences, poles with signs / lights / lamps, trees, vehicles, pedestrians) is ray-cast
analytically with a pinhole camera, so depth, labels and RGB come from the same geometry:

* ``depth``: camera-Z metres (+Inf for sky), 0.2 % multiplicative noise.
* ``lidar``: a spinning LiDAR co-located with the camera; ``lidar_lines`` beams at non-uniform
  elevations (denser near the horizon) × azimuth steps, projected into the image; each return is the
  camera-Z depth at its pixel with range noise; no return = 0.0.  Fog removes far returns.
* ``event``: the scene rendered again ``event_dt_s`` earlier (ego motion + object motion); log-intensity
  differences of the two clean renders, ±``event_threshold`` per event, red/blue = count × 64.
* sequences (:func:`generate_sequence`): the same world at instants ``t = i · frame_dt_s``, the ego camera
  ``ego_speed_mps · t`` further along the road and yawed by the world's yaw rate × t, every object moved by its
  velocity × t; instant 0 is :func:`generate_scene`'s sample, bit for bit. Sensor noise is drawn afresh per
  instant; geometry, albedos and lighting are the world's.
* ``rgb``: Lambert shading with per-scene random albedos (colour is a weak class cue), world-anchored
  texture, condition effects (Koschmieder fog, rain streaks, night lamps), failure effects and Poisson
  shot noise, gamma-encoded to uint8.

Randomness comes from separate ``numpy.random.Generator`` streams keyed by ``(seed, stream)``:
geometry, depth noise and LiDAR do not depend on the condition, so the same seed under ``sun`` and
``night`` gives the same world, labels and depth.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from torch.utils.data import Dataset

from memsam_core.classes import class_index

CONDITIONS: tuple[str, ...] = ("sun", "cloud", "rain", "fog", "night")
FAILURES: tuple[str, ...] = ("motionblur", "overexposure", "underexposure", "lidarjitter", "eventlowres")
MODALITIES: tuple[str, ...] = ("rgb", "depth", "lidar", "event")

_BOX, _CYL, _SPHERE = 0, 1, 2
_SKY_ID, _GROUND_ID = -1, -2
_C = {n: class_index(n) for n in (
    "Road", "SideWalk", "RoadLine", "Building", "Wall", "Fence", "Pole", "TrafficSign", "TrafficLight",
    "Vegetation", "Terrain", "Sky", "Cars", "Truck", "Bus", "TwoWheeler", "Pedestrian",
)}  # fmt: skip

# Typical linear albedos per class; each scene mixes them with random colours (see _class_albedos).
_TYPICAL_ALBEDO = {
    "Road": (0.10, 0.10, 0.11), "SideWalk": (0.35, 0.33, 0.30), "RoadLine": (0.75, 0.75, 0.72),
    "Building": (0.35, 0.30, 0.27), "Wall": (0.40, 0.38, 0.35), "Fence": (0.30, 0.25, 0.20),
    "Pole": (0.30, 0.30, 0.32), "TrafficSign": (0.70, 0.60, 0.05), "TrafficLight": (0.12, 0.12, 0.10),
    "Vegetation": (0.08, 0.25, 0.05), "Terrain": (0.25, 0.30, 0.12), "Cars": (0.3, 0.05, 0.05),
    "Truck": (0.4, 0.4, 0.45), "Bus": (0.5, 0.4, 0.1), "TwoWheeler": (0.1, 0.1, 0.3),
    "Pedestrian": (0.3, 0.2, 0.15),
}  # fmt: skip


@dataclass(frozen=True)
class SceneConfig:
    """Sensor rig and scene conditions; hashable so it can key caches."""

    height: int = 256
    width: int = 256
    condition: str = "sun"
    failures: frozenset[str] = field(default_factory=frozenset)
    hfov_deg: float = 90.0
    camera_height_m: float = 1.7
    lidar_lines: int = 32
    lidar_azimuth_res_deg: float = 0.4
    lidar_upper_deg: float = 3.0
    lidar_lower_deg: float = -25.0
    max_range_m: float = 100.0
    lidar_range_noise_m: float = 0.02
    lidar_dropout: float = 0.03
    depth_noise_rel: float = 0.002
    ego_speed_mps: float = 8.0
    object_motion: bool = True
    event_dt_s: float = 0.05
    event_threshold: float = 0.15

    def __post_init__(self) -> None:
        failures = frozenset([self.failures] if isinstance(self.failures, str) else self.failures)
        object.__setattr__(self, "failures", failures)
        if self.condition not in CONDITIONS:
            raise ValueError(f"condition must be one of {CONDITIONS}, got {self.condition!r}")
        if unknown := failures - set(FAILURES):
            raise ValueError(f"unknown failures {sorted(unknown)}; known: {FAILURES}")
        if self.height < 16 or self.width < 16:
            raise ValueError(f"image must be at least 16x16, got {self.height}x{self.width}")
        if not 10.0 <= self.hfov_deg <= 150.0:
            raise ValueError(f"hfov_deg must be in [10, 150], got {self.hfov_deg}")
        if self.lidar_lines < 1 or self.lidar_upper_deg <= self.lidar_lower_deg:
            raise ValueError("need lidar_lines >= 1 and lidar_upper_deg > lidar_lower_deg")

    @property
    def intrinsics(self) -> np.ndarray:
        """3x3 pinhole matrix K (square pixels, principal point at the image centre) from ``hfov_deg``."""
        f = 0.5 * self.width / math.tan(math.radians(self.hfov_deg) / 2)
        return np.array(
            [[f, 0.0, (self.width - 1) / 2], [0.0, f, (self.height - 1) / 2], [0.0, 0.0, 1.0]], dtype=np.float64
        )


@dataclass
class SyntheticSample:
    """One multimodal frame in the raw format shared by datasets, ROS codec and model."""

    frames: dict[str, np.ndarray]
    labels: np.ndarray
    condition: str
    failures: frozenset[str]
    seed: int
    intrinsics: np.ndarray
    event_window_s: float

    @property
    def case(self) -> str:
        """DELIVER-style case name: ``normal``, the failure name, or ``a+b`` for several failures."""
        return "+".join(sorted(self.failures)) if self.failures else "normal"


# --------------------------------------------------------------------------------------------- world


@dataclass
class _World:
    kind: np.ndarray  # (N,) int: box / vertical cylinder / sphere
    lo: np.ndarray  # (N, 3) AABB min (x right, y up, z forward; metres)
    hi: np.ndarray  # (N, 3) AABB max
    label: np.ndarray  # (N,) train id
    albedo: np.ndarray  # (N, 3) linear RGB
    tex_freq: np.ndarray  # (N,) texture cells per metre (0 = untextured)
    windows: np.ndarray  # (N,) bool: building facade windows
    vel: np.ndarray  # (N, 3) m/s
    lo32: np.ndarray  # float32 copies for per-pixel shading
    hi32: np.ndarray
    road_half: float
    sidewalk_w: float
    lane_w: float
    n_lanes: int
    ground_albedo: dict[str, np.ndarray]
    cam_pos: np.ndarray
    lamps: list[tuple[np.ndarray, np.ndarray, np.ndarray, bool]]  # (position, rgb power, velocity, headlight)


class _Builder:
    def __init__(self, rng: np.random.Generator, albedos: dict[str, np.ndarray]) -> None:
        self.rng, self.albedos, self.rows = rng, albedos, []

    def add(self, kind: int, lo, hi, cls: str, *, tex: float = 2.0, windows: bool = False, vel=(0, 0, 0),
            albedo: np.ndarray | None = None) -> None:  # fmt: skip
        if albedo is None:  # per-instance jitter around the per-scene class albedo
            albedo = np.clip(self.albedos[cls] * self.rng.uniform(0.75, 1.25, 3), 0.01, 0.9)
        self.rows.append((kind, lo, hi, _C[cls], albedo, tex, windows, vel))

    def arrays(self) -> dict[str, np.ndarray]:
        cols = list(zip(*self.rows))
        return {
            "kind": np.array(cols[0], np.int64),
            "lo": np.array(cols[1], np.float64),
            "hi": np.array(cols[2], np.float64),
            "label": np.array(cols[3], np.uint8),
            "albedo": np.array(cols[4], np.float32),
            "tex_freq": np.array(cols[5], np.float64),
            "windows": np.array(cols[6], bool),
            "vel": np.array(cols[7], np.float64),
        }


def _class_albedos(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-scene class albedos: typical colour mixed 30-80 % with a random colour."""
    out = {}
    for name, typical in _TYPICAL_ALBEDO.items():
        mix = rng.uniform(0.3, 0.8)
        out[name] = ((1 - mix) * np.asarray(typical) + mix * rng.uniform(0.03, 0.6, 3)).astype(np.float32)
    return out


def _build_world(rng: np.random.Generator, cfg: SceneConfig) -> _World:
    albedos = _class_albedos(rng)
    b = _Builder(rng, albedos)
    u = rng.uniform
    lane_w = 3.5
    n_lanes = int(rng.integers(2, 5))
    road_half = n_lanes * lane_w / 2
    sw = u(2.0, 4.5)
    z0, z1 = -30.0, 160.0
    cam_lane = int(rng.integers(n_lanes // 2, n_lanes))  # right-hand traffic: ego in a right-half lane
    cam_x = -road_half + lane_w * (cam_lane + 0.5)
    cam_pos = np.array([cam_x, cfg.camera_height_m, 0.0])
    lamps: list[tuple[np.ndarray, np.ndarray, np.ndarray, bool]] = []

    for side in (-1.0, 1.0):
        inner, outer = road_half, road_half + sw
        lo, hi = _side_box(side, inner, outer, 0.0, 0.15, z0, z1)
        b.add(_BOX, lo, hi, "SideWalk", tex=3.0)
        # frontage: buildings with gaps holding walls / fences / bushes / trees
        z = z0
        while z < z1:
            length = u(8, 30)
            if rng.random() < 0.3:  # gap
                kind = rng.choice(["wall", "fence", "bush", "none"])
                near = outer + u(0.2, 1.0)
                if kind == "wall":
                    lo, hi = _side_box(side, near, near + 0.3, 0.0, u(1.2, 3.0), z, z + length)
                    b.add(_BOX, lo, hi, "Wall", tex=1.5)
                elif kind == "fence":
                    lo, hi = _side_box(side, near, near + 0.06, 0.0, u(1.0, 2.0), z, z + length)
                    b.add(_BOX, lo, hi, "Fence", tex=6.0)
                elif kind == "bush":
                    lo, hi = _side_box(side, near, near + u(1, 3), 0.0, u(0.6, 1.6), z, z + length)
                    b.add(_BOX, lo, hi, "Vegetation", tex=5.0)
            else:
                near = outer + u(0.5, 6.0)
                lo, hi = _side_box(side, near, near + u(8, 20), 0.0, u(5, 35), z, z + length)
                b.add(_BOX, lo, hi, "Building", tex=0.7, windows=True)
            z += length + u(0.0, 2.0)
        # street furniture on the kerb: lamp poles, signs, traffic lights; trees further in
        z = u(-5.0, 10.0)
        while z < 120:
            x = side * (inner + 0.4)
            kind = rng.choice(["lamp", "sign", "light"], p=[0.5, 0.3, 0.2])
            height = {"lamp": u(5, 8), "sign": u(2.5, 3.2), "light": u(4.5, 5.5)}[kind]
            b.add(_CYL, (x - 0.12, 0.0, z - 0.12), (x + 0.12, height, z + 0.12), "Pole", tex=0.0)
            if kind == "lamp":
                lamp = np.array([x - side * 0.5, height, z])
                lamps.append((lamp, np.array([1.0, 0.8, 0.5]) * 4.0, np.zeros(3), False))
            elif kind == "sign":
                s = u(0.5, 0.9)
                b.add(_BOX, (x - s / 2, height - s, z - 0.16), (x + s / 2, height, z - 0.12), "TrafficSign", tex=0.0)
            else:
                b.add(_BOX, (x - 0.18, height - 1.0, z - 0.45), (x + 0.18, height, z - 0.12), "TrafficLight", tex=0.0)
            z += u(12, 30)
        z = u(0.0, 15.0)
        while z < 120:
            x, r = side * (outer - 0.8), u(1.2, 2.8)
            trunk = u(1.8, 3.0)
            b.add(_CYL, (x - 0.15, 0.0, z - 0.15), (x + 0.15, trunk + 0.5, z + 0.15), "Vegetation", tex=4.0)
            cy = trunk + 0.8 * r
            b.add(_SPHERE, (x - r, cy - r, z - r), (x + r, cy + r, z + r), "Vegetation", tex=6.0)
            z += u(8, 25)
        # pedestrians on the sidewalk
        for _ in range(int(rng.integers(1, 8))):
            x, z, h = side * u(inner + 0.5, outer - 0.3), u(3, 60), u(1.5, 1.9)
            vel = (u(-0.8, 0.8), 0.0, u(-1.4, 1.4))
            b.add(_CYL, (x - 0.22, 0.0, z - 0.22), (x + 0.22, h - 0.2, z + 0.22), "Pedestrian", tex=0.0, vel=vel)
            b.add(_SPHERE, (x - 0.12, h - 0.25, z - 0.12), (x + 0.12, h - 0.01, z + 0.12), "Pedestrian", tex=0.0,
                  vel=vel)  # fmt: skip
        # distant forest / hills closing the view sideways
        lo, hi = _side_box(side, 70.0, 90.0, 0.0, u(8, 20), -60.0, z1 + 40)
        b.add(_BOX, lo, hi, "Vegetation", tex=0.5)
    # backdrop closing the street
    b.add(_BOX, (-200.0, 0.0, z1), (200.0, u(20, 60), z1 + 30), "Building", tex=0.3, windows=True)

    # traffic: one column of vehicles per lane, oncoming in the left half
    for lane in range(n_lanes):
        x = -road_half + lane_w * (lane + 0.5)
        sign = 1.0 if x > 0 else -1.0
        z = u(8, 20) if lane == cam_lane else u(-10, 10)
        while z < 110:
            if rng.random() < 0.6:
                kind = rng.choice(["car", "truck", "bus", "twowheeler"], p=[0.6, 0.13, 0.09, 0.18])
                speed = sign * u(3, 14) if cfg.object_motion else 0.0
                length = _add_vehicle(b, rng, kind, x + u(-0.3, 0.3), z, (0.0, 0.0, speed))
                if sign < 0 and kind != "twowheeler":  # oncoming: headlights face the camera
                    for dx in (-0.6, 0.6):
                        pos = np.array([x + dx, 0.7, z - 0.05])
                        lamps.append((pos, np.array([1.0, 1.0, 0.9]) * 2.5, np.array([0.0, 0.0, speed]), True))
            else:
                length = 4.0
            z += length + u(4, 25)
    arrays = b.arrays()
    ground = {k: albedos[k] for k in ("Road", "RoadLine", "Terrain")}
    if rng.random() < 0.3:
        ground["RoadLine"] = np.array([0.8, 0.6, 0.05], np.float32)  # yellow paint
    return _World(
        **arrays,
        lo32=arrays["lo"].astype(np.float32),
        hi32=arrays["hi"].astype(np.float32),
        road_half=road_half,
        sidewalk_w=sw,
        lane_w=lane_w,
        n_lanes=n_lanes,
        ground_albedo=ground,
        cam_pos=cam_pos,
        lamps=lamps,
    )


def _side_box(side: float, near: float, far: float, y0: float, y1: float, z0: float, z1: float):
    """AABB between lateral distances ``near..far`` from the road axis on ``side`` (-1 left, +1 right)."""
    x0, x1 = sorted((side * near, side * far))
    return (x0, y0, z0), (x1, y1, z1)


def _add_vehicle(b: _Builder, rng: np.random.Generator, kind: str, x: float, z: float, vel) -> float:
    """Vehicle made of 1-2 boxes with a random body colour; returns its length."""
    albedo = rng.uniform(0.02, 0.7, 3).astype(np.float32)
    if kind == "car":
        w, length = rng.uniform(1.7, 2.0), rng.uniform(3.8, 4.8)
        b.add(_BOX, (x - w / 2, 0.25, z), (x + w / 2, 1.0, z + length), "Cars", tex=0.0, vel=vel, albedo=albedo)
        b.add(_BOX, (x - w / 2 + 0.1, 1.0, z + 0.25 * length), (x + w / 2 - 0.1, 1.45, z + 0.75 * length), "Cars",
              tex=0.0, vel=vel, albedo=albedo * 0.4)  # fmt: skip
    elif kind == "truck":
        w, length = 2.5, rng.uniform(7, 10)
        b.add(_BOX, (x - w / 2, 0.4, z), (x + w / 2, 2.8, z + 2.0), "Truck", tex=0.0, vel=vel, albedo=albedo)
        b.add(_BOX, (x - w / 2, 0.4, z + 2.2), (x + w / 2, rng.uniform(3.2, 3.8), z + length), "Truck", tex=1.0,
              vel=vel)  # fmt: skip
    elif kind == "bus":
        w, length = 2.55, rng.uniform(10, 13)
        b.add(_BOX, (x - w / 2, 0.3, z), (x + w / 2, 3.1, z + length), "Bus", tex=0.8, windows=True, vel=vel,
              albedo=albedo)  # fmt: skip
    else:
        w, length = 0.6, 1.9
        b.add(_BOX, (x - w / 2, 0.2, z), (x + w / 2, 1.3, z + length), "TwoWheeler", tex=0.0, vel=vel, albedo=albedo)
    return float(length)


# ------------------------------------------------------------------------------------------ ray casting


@dataclass
class _Render:
    depth: np.ndarray  # (H, W) float32 camera-Z metres, inf = sky
    ids: np.ndarray  # (H, W) int32 primitive id, -1 sky, -2 ground
    dirs: tuple[np.ndarray, np.ndarray, np.ndarray]  # world ray directions (camera-Z component 1)
    origin: np.ndarray
    yaw: float
    offset_s: float


def _cast(world: _World, cfg: SceneConfig, origin: np.ndarray, yaw: float, offset_s: float) -> _Render:
    """Analytic ray casting; with zero pitch every ray direction factorises into row and column terms."""
    h, w = cfg.height, cfg.width
    k = cfg.intrinsics
    xc = ((np.arange(w) - k[0, 2]) / k[0, 0]).astype(np.float64)[None, :]
    yc = ((np.arange(h) - k[1, 2]) / k[1, 1]).astype(np.float64)[:, None]
    cy_, sy_ = math.cos(yaw), math.sin(yaw)
    dx = cy_ * xc + sy_  # (1, W)
    dz = -sy_ * xc + cy_  # (1, W)
    dy = -yc  # (H, 1)
    depth = np.full((h, w), np.inf)
    ids = np.full((h, w), _SKY_ID, np.int32)
    # ground plane y = 0 (rows below the horizon)
    with np.errstate(divide="ignore"):
        tg = np.where(dy < 0, origin[1] / -dy, np.inf)
    ground = np.broadcast_to(tg, (h, w))
    depth[:] = ground
    ids[np.isfinite(ground)] = _GROUND_ID

    lo = world.lo + world.vel * offset_s
    hi = world.hi + world.vel * offset_s
    rects = _screen_rects(lo, hi, origin, yaw, k, h, w)
    inv = [np.divide(1.0, np.where(d == 0, 1e-12, d)) for d in (dx, dy, dz)]
    for i in np.flatnonzero(rects[:, 0] >= 0):
        r0, r1, c0, c1 = rects[i]
        sl = (slice(r0, r1), slice(c0, c1))
        ddx, ddy, ddz = dx[:, c0:c1], dy[r0:r1], dz[:, c0:c1]
        kind = world.kind[i]
        if kind == _BOX:
            t = _hit_box(lo[i], hi[i], origin, inv[0][:, c0:c1], inv[1][r0:r1], inv[2][:, c0:c1])
        elif kind == _CYL:
            t = _hit_cylinder(lo[i], hi[i], origin, ddx, ddy, ddz)
        else:
            t = _hit_sphere(lo[i], hi[i], origin, ddx, ddy, ddz)
        sub = depth[sl]
        closer = t < sub
        np.copyto(sub, t, where=closer)
        np.copyto(ids[sl], np.int32(i), where=closer)
    return _Render(depth.astype(np.float32), ids, (dx, dy, dz), origin, yaw, offset_s)


def _screen_rects(lo, hi, origin, yaw, k, h, w) -> np.ndarray:
    """Pixel rectangle (r0, r1, c0, c1) bounding each AABB's projection; r0 = -1 when not visible."""
    corners = np.stack(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij"), -1).reshape(8, 3)
    pts = np.where(corners[None] == 1, hi[:, None], lo[:, None]) - origin  # (N, 8, 3)
    c, s = math.cos(yaw), math.sin(yaw)
    xc = c * pts[..., 0] - s * pts[..., 2]
    zc = s * pts[..., 0] + c * pts[..., 2]
    yc = -pts[..., 1]
    near = 0.05
    out = np.full((len(lo), 4), -1, np.int64)
    behind = zc.max(1) <= near
    partial = (zc.min(1) <= near) & ~behind
    zs = np.maximum(zc, near)
    u = k[0, 0] * xc / zs + k[0, 2]
    v = k[1, 1] * yc / zs + k[1, 2]
    c0 = np.clip(np.floor(u.min(1)) - 1, 0, w).astype(np.int64)
    c1 = np.clip(np.ceil(u.max(1)) + 2, 0, w).astype(np.int64)
    r0 = np.clip(np.floor(v.min(1)) - 1, 0, h).astype(np.int64)
    r1 = np.clip(np.ceil(v.max(1)) + 2, 0, h).astype(np.int64)
    out[:] = np.stack([r0, r1, c0, c1], 1)
    out[partial] = (0, h, 0, w)  # straddles the image plane: test every ray
    out[behind | (out[:, 1] <= out[:, 0]) | (out[:, 3] <= out[:, 2])] = -1
    return out


def _hit_box(lo, hi, o, ix, iy, iz) -> np.ndarray:
    """Slab test; ix/iz are (1, w) and iy (h, 1) inverse directions."""
    with np.errstate(invalid="ignore", over="ignore"):
        tx1, tx2 = (lo[0] - o[0]) * ix, (hi[0] - o[0]) * ix
        ty1, ty2 = (lo[1] - o[1]) * iy, (hi[1] - o[1]) * iy
        tz1, tz2 = (lo[2] - o[2]) * iz, (hi[2] - o[2]) * iz
        tnear_xz = np.maximum(np.minimum(tx1, tx2), np.minimum(tz1, tz2))
        tfar_xz = np.minimum(np.maximum(tx1, tx2), np.maximum(tz1, tz2))
        tnear = np.maximum(tnear_xz, np.minimum(ty1, ty2))
        tfar = np.minimum(tfar_xz, np.maximum(ty1, ty2))
        return np.where((tnear <= tfar) & (tnear > 0), tnear, np.inf)


def _hit_cylinder(lo, hi, o, dx, dy, dz) -> np.ndarray:
    """Vertical cylinder: side wall (depends on the column only) plus the top cap."""
    cx, cz, r = (lo[0] + hi[0]) / 2, (lo[2] + hi[2]) / 2, (hi[0] - lo[0]) / 2
    fx, fz = o[0] - cx, o[2] - cz
    a = dx * dx + dz * dz
    bh = fx * dx + fz * dz
    c = fx * fx + fz * fz - r * r
    disc = bh * bh - a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        ts = np.where(disc >= 0, (-bh - np.sqrt(np.maximum(disc, 0))) / a, np.inf)  # (1, w)
        y = o[1] + ts * dy
        side = np.where((ts > 0) & (y >= lo[1]) & (y <= hi[1]), ts, np.inf)
        tc = (hi[1] - o[1]) / np.where(dy == 0, 1e-12, dy)  # (h, 1)
        px, pz = fx + tc * dx, fz + tc * dz
        cap = np.where((tc > 0) & (px * px + pz * pz <= r * r), tc, np.inf)
    return np.minimum(side, cap)


def _hit_sphere(lo, hi, o, dx, dy, dz) -> np.ndarray:
    cen = (lo + hi) / 2
    r = (hi[0] - lo[0]) / 2
    f = o - cen
    a = dx * dx + dy * dy + dz * dz
    bh = f[0] * dx + f[1] * dy + f[2] * dz
    disc = bh * bh - a * (f @ f - r * r)
    with np.errstate(invalid="ignore"):
        t = (-bh - np.sqrt(np.maximum(disc, 0))) / a
    return np.where((disc >= 0) & (t > 0), t, np.inf)


# ---------------------------------------------------------------------------------------------- shading


@dataclass(frozen=True)
class _Light:
    sun_dir: np.ndarray
    sun: float
    ambient: float
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    beta: float  # Koschmieder extinction (1/m)
    airlight: np.ndarray
    lamps: bool


def _lighting(cfg: SceneConfig, rng: np.random.Generator) -> _Light:
    az, el = rng.uniform(-math.pi, math.pi), math.radians(rng.uniform(20, 60))
    sun_dir = np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
    cond = cfg.condition
    if cond == "sun":
        return _Light(sun_dir, 0.9, 0.3, np.array([0.15, 0.3, 0.75]), np.array([0.6, 0.7, 0.85]),
                      3.912 / rng.uniform(800, 2000), np.array([0.65, 0.72, 0.85]), False)  # fmt: skip
    if cond == "cloud":
        return _Light(sun_dir, 0.15, 0.6, np.array([0.55, 0.57, 0.6]), np.array([0.75, 0.76, 0.78]),
                      3.912 / rng.uniform(400, 900), np.array([0.7, 0.7, 0.72]), False)  # fmt: skip
    if cond == "rain":
        return _Light(sun_dir, 0.05, 0.35, np.array([0.3, 0.31, 0.33]), np.array([0.42, 0.43, 0.45]),
                      3.912 / rng.uniform(120, 300), np.array([0.42, 0.43, 0.45]), False)  # fmt: skip
    if cond == "fog":
        return _Light(sun_dir, 0.08, 0.55, np.array([0.7, 0.7, 0.7]), np.array([0.7, 0.7, 0.7]),
                      3.912 / rng.uniform(25, 60), np.array([0.7, 0.7, 0.7]), False)  # fmt: skip
    return _Light(sun_dir, 0.0, 0.004, np.array([0.002, 0.002, 0.004]), np.array([0.004, 0.004, 0.006]),
                  3.912 / rng.uniform(1000, 2000), np.array([0.004, 0.004, 0.006]), True)  # fmt: skip


def _hash01(*coords: np.ndarray) -> np.ndarray:
    """Integer hash of quantised world coordinates → [0, 1): texture that moves with the world."""
    h = np.zeros(coords[0].shape, np.int64)
    for c, prime in zip(coords, (73856093, 19349663, 83492791)):
        h ^= c.astype(np.int64) * prime
    h = (h ^ (h >> 13)) * 1274126177
    return ((h >> 8) & 0xFFFF).astype(np.float32) / 65536.0


@dataclass
class _Surface:
    """Per-pixel geometry of one render, flattened to (H*W, ...) float32 arrays."""

    p: np.ndarray  # hit points
    n: np.ndarray  # unit normals
    albedo: np.ndarray  # textured linear albedo
    dist: np.ndarray  # Euclidean distance (0 for sky)
    labels: np.ndarray  # uint8 train ids


def _surface(world: _World, rnd: _Render) -> _Surface:
    h, w = rnd.depth.shape
    dirs = np.stack([np.broadcast_to(d, (h, w)) for d in rnd.dirs], -1).reshape(-1, 3).astype(np.float32)
    t = rnd.depth.reshape(-1)
    t = np.where(np.isfinite(t), t, np.float32(0))
    p = rnd.origin.astype(np.float32) + t[:, None] * dirs
    ids = rnd.ids.reshape(-1)
    n = np.zeros((h * w, 3), np.float32)
    n[:, 1] = 1.0
    albedo = np.zeros((h * w, 3), np.float32)
    labels = np.full(h * w, _C["Sky"], np.uint8)

    g = np.flatnonzero(ids == _GROUND_ID)
    road, line = _ground_masks(world, p[g, 0], p[g, 2])
    labels[g] = np.where(line, _C["RoadLine"], np.where(road, _C["Road"], _C["Terrain"]))
    galb = np.where(line[:, None], world.ground_albedo["RoadLine"],
                    np.where(road[:, None], world.ground_albedo["Road"], world.ground_albedo["Terrain"]))  # fmt: skip
    gq = np.floor(p[g] * 4)
    albedo[g] = galb * (0.85 + 0.3 * _hash01(gq[:, 0], gq[:, 2]))[:, None]

    o = np.flatnonzero(ids >= 0)
    ii = ids[o]
    labels[o] = world.label[ii]
    shift = (world.vel[ii] * rnd.offset_s).astype(np.float32)
    lo, hi = world.lo32[ii] + shift, world.hi32[ii] + shift
    po = p[o]
    rel = (po - (lo + hi) / 2) / np.maximum((hi - lo) / 2, 1e-6)
    kind = world.kind[ii]
    axis = np.argmax(np.abs(rel), -1)
    nb = np.zeros_like(rel)
    nb[np.arange(len(o)), axis] = np.sign(rel[np.arange(len(o)), axis])
    nb = np.where((kind == _SPHERE)[:, None], rel, nb)
    cyl = kind == _CYL
    nc = rel * np.array([1, 0, 1], np.float32)
    nc[po[:, 1] >= hi[:, 1] - 1e-3] = (0.0, 1.0, 0.0)
    nb = np.where(cyl[:, None], nc, nb)
    n[o] = nb / np.maximum(np.linalg.norm(nb, axis=-1, keepdims=True), 1e-6)

    freq = world.tex_freq[ii]
    q = np.floor(po * freq[:, None])
    tex = np.where(freq > 0, 0.8 + 0.4 * _hash01(q[:, 0], q[:, 1], q[:, 2]), np.float32(1))
    win = world.windows[ii] & (np.abs(n[o, 1]) < 0.5) & (po[:, 1] > 2.0)
    along = np.mod(np.where(np.abs(n[o, 0]) > 0.5, po[:, 2], po[:, 0]), 3.0)
    floor_ = np.mod(po[:, 1], 3.2)
    win &= (along > 0.7) & (along < 2.2) & (floor_ > 1.0) & (floor_ < 2.3)
    albedo[o] = world.albedo[ii] * np.where(win, np.float32(0.35), tex)[:, None]
    dist = t * np.linalg.norm(dirs, axis=-1)
    return _Surface(p, n, albedo, dist, labels)


def _shade(world: _World, cfg: SceneConfig, rnd: _Render, surf: _Surface, light: _Light) -> np.ndarray:
    """Linear RGB (H, W, 3) float32: albedo × (ambient + sun) + lamps, Koschmieder fog, sky gradient."""
    h, w = rnd.depth.shape
    irr = light.ambient + light.sun * np.clip(surf.n @ light.sun_dir.astype(np.float32), 0, None)
    rgb = surf.albedo * irr[:, None]
    if light.lamps:
        rgb += surf.albedo * _lamp_light(world, surf.p, surf.n, rnd.offset_s)
    trans = np.exp(-np.float32(light.beta) * surf.dist)[:, None]
    rgb = rgb * trans + light.airlight.astype(np.float32) * (1 - trans)
    rgb = rgb.reshape(h, w, 3)
    dx, dy, dz = rnd.dirs
    elev = np.clip(dy / np.sqrt(dx * dx + dy * dy + dz * dz), 0, 1)[..., None]  # (H, W, 1)
    sky_rgb = light.sky_horizon + (light.sky_top - light.sky_horizon) * np.sqrt(elev)
    if light.beta > 0.02:  # dense fog: the sky is the airlight
        sky_rgb = np.broadcast_to(light.airlight, sky_rgb.shape)
    sky = (rnd.ids == _SKY_ID)[..., None]
    rgb = np.where(sky, sky_rgb.astype(np.float32), rgb)
    if light.lamps:
        rgb += _lamp_glow(world, cfg, rnd)
    return rgb


def _ground_masks(world: _World, px: np.ndarray, pz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(road, road line) masks on the ground plane: dashed lane dividers and solid edge lines."""
    road = np.abs(px) < world.road_half
    half_line = 0.08
    edge = np.abs(np.abs(px) - (world.road_half - 0.25)) < half_line
    div_x = -world.road_half + world.lane_w * np.arange(1, world.n_lanes)
    divider = np.min(np.abs(px[..., None] - div_x), -1) < half_line
    dashed = divider & (np.mod(pz, 9.0) < 3.0)
    return road, road & (edge | dashed)


def _lamp_light(world: _World, p: np.ndarray, n: np.ndarray, offset_s: float, max_lamps: int = 6) -> np.ndarray:
    """Irradiance from the nearest street lamps (omni) and oncoming headlights (cone towards -z)."""
    px, py, pz = np.ascontiguousarray(p.T)
    nx, ny, nz = np.ascontiguousarray(n.T)
    out = np.zeros(p.shape, np.float32)
    placed = [(pos + vel * offset_s, power, head) for pos, power, vel, head in world.lamps]
    placed.sort(key=lambda lamp: float(np.linalg.norm(lamp[0] - world.cam_pos)))
    for pos, power, headlight in placed[:max_lamps]:
        dx, dy, dz = (np.float32(pos[0]) - px, np.float32(pos[1]) - py, np.float32(pos[2]) - pz)
        dist2 = dx * dx + dy * dy + dz * dz + np.float32(0.5)
        inv = 1 / np.sqrt(dist2)
        lam = np.clip((nx * dx + ny * dy + nz * dz) * inv, 0, None) / dist2
        if headlight:
            lam *= np.clip(-dz * inv, 0, None) ** 4 * np.float32(6.0)
        out += lam[:, None] * power.astype(np.float32)
    return out


def _lamp_glow(world: _World, cfg: SceneConfig, rnd: _Render) -> np.ndarray:
    """Bright halos where lamps / headlights are directly visible (not occluded)."""
    h, w = rnd.depth.shape
    k = cfg.intrinsics
    glow = np.zeros((h, w, 3), np.float32)
    c, s = math.cos(rnd.yaw), math.sin(rnd.yaw)
    sigma = max(1.0, w / 160)
    rad = int(4 * sigma) + 1
    for pos, power, vel, _ in world.lamps:
        rel = pos + vel * rnd.offset_s - rnd.origin
        zc = s * rel[0] + c * rel[2]
        if zc < 1.0:
            continue
        u = k[0, 0] * (c * rel[0] - s * rel[2]) / zc + k[0, 2]
        v = k[1, 1] * (-rel[1]) / zc + k[1, 2]
        ui, vi = round(u), round(v)
        if not (0 <= ui < w and 0 <= vi < h) or rnd.depth[vi, ui] < zc - 1.0:
            continue
        r0, r1, c0, c1 = max(vi - rad, 0), min(vi + rad + 1, h), max(ui - rad, 0), min(ui + rad + 1, w)
        yy, xx = np.mgrid[r0:r1, c0:c1]
        g = np.exp(-((yy - v) ** 2 + (xx - u) ** 2) / (2 * sigma**2)) * min(1.0, 15.0 / zc)
        glow[r0:r1, c0:c1] += (g[..., None] * power * 0.5).astype(np.float32)
    return glow


# ------------------------------------------------------------------------------------------- sensors


def _lidar(cfg: SceneConfig, depth: np.ndarray, light: _Light, rng: np.random.Generator) -> np.ndarray:
    """Project a spinning LiDAR's beams into the camera; values are camera-Z metres, 0 = no return."""
    h, w = depth.shape
    k = cfg.intrinsics
    s = np.linspace(0.0, 1.0, cfg.lidar_lines)
    elev = np.radians(cfg.lidar_upper_deg + (cfg.lidar_lower_deg - cfg.lidar_upper_deg) * s**1.5)  # dense on top
    half = math.radians(cfg.hfov_deg) / 2
    az = np.arange(-half, half, math.radians(cfg.lidar_azimuth_res_deg))
    e, a = np.meshgrid(elev, az, indexing="ij")
    x, y, z = np.cos(e) * np.sin(a), -np.sin(e), np.cos(e) * np.cos(a)
    u = k[0, 0] * x / z + k[0, 2]
    v = k[1, 1] * y / z + k[1, 2]
    ui, vi = np.rint(u).astype(np.int64).ravel(), np.rint(v).astype(np.int64).ravel()
    n = ui.size
    noise, drop, fog_u = rng.standard_normal(n), rng.random(n), rng.random(n)
    jitter = rng.standard_normal((2, n))
    inside = (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
    ui, vi = ui[inside], vi[inside]
    zd = depth[vi, ui].astype(np.float64)
    ray_norm = np.sqrt(1 + ((ui - k[0, 2]) / k[0, 0]) ** 2 + ((vi - k[1, 2]) / k[1, 1]) ** 2)
    rng_m = zd * ray_norm
    keep = np.isfinite(rng_m) & (rng_m <= cfg.max_range_m) & (drop[inside] >= cfg.lidar_dropout)
    if cfg.condition in ("fog", "rain"):  # scattering eats far returns; light level does not matter
        keep &= fog_u[inside] < np.exp(-0.5 * light.beta * np.where(np.isfinite(rng_m), rng_m, 0.0))
    sigma = cfg.lidar_range_noise_m
    if "lidarjitter" in cfg.failures:
        sigma = max(sigma, 0.3)
        jit = 2.0 * max(1.0, w / 256)
        ui = np.clip(np.rint(ui + jit * jitter[0][inside]), 0, w - 1).astype(np.int64)
        vi = np.clip(np.rint(vi + jit * jitter[1][inside]), 0, h - 1).astype(np.int64)
    zn = zd * (1 + sigma * noise[inside] / np.maximum(rng_m, 1e-3))
    keep &= zn > 0
    out = np.full(h * w, np.inf, np.float32)
    np.minimum.at(out, vi[keep] * w + ui[keep], zn[keep].astype(np.float32))  # nearest return wins
    out[~np.isfinite(out)] = 0.0
    return out.reshape(h, w)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.2126, 0.7152, 0.0722], np.float32)


def _events(cfg: SceneConfig, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Event frame from two clean linear renders: counts of ±threshold log-intensity steps, ×64, clipped."""
    lb, la = _luma(before), _luma(after)
    if "eventlowres" in cfg.failures:
        size = (max(cfg.width // 4, 1), max(cfg.height // 4, 1))
        lb, la = (cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in (lb, la))
    diff = np.log(la + 1e-3) - np.log(lb + 1e-3)
    count = np.floor(np.abs(diff) / cfg.event_threshold)
    scaled = np.clip(count * 64, 0, 255).astype(np.uint8)
    out = np.zeros((*diff.shape, 3), np.uint8)
    out[..., 0] = np.where(diff > 0, scaled, 0)
    out[..., 2] = np.where(diff < 0, scaled, 0)
    return out


def _line_kernel(length: int, angle: float) -> np.ndarray:
    k = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    dx, dy = math.cos(angle) * c, math.sin(angle) * c
    cv2.line(k, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1)
    return k / k.sum()


def _camera(cfg: SceneConfig, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Condition/failure effects and sensor noise on linear RGB → gamma-encoded uint8."""
    h, w = rgb.shape[:2]
    if cfg.condition == "rain":
        drops = (rng.random((h, w)) < 0.004).astype(np.float32) * rng.uniform(0.5, 1.0, (h, w)).astype(np.float32)
        length = max(5, h // 12) | 1
        streaks = cv2.filter2D(drops, -1, _line_kernel(length, math.radians(rng.uniform(70, 110))))
        rgb = rgb * 0.75 + np.float32(length * 0.12) * streaks[..., None]
    if "overexposure" in cfg.failures:
        rgb = rgb * rng.uniform(3.0, 5.0)
    if "underexposure" in cfg.failures:
        rgb = rgb * rng.uniform(0.03, 0.08)
    if "motionblur" in cfg.failures:
        length = max(5, w // 20) | 1
        rgb = cv2.filter2D(rgb, -1, _line_kernel(length, rng.uniform(0, math.pi)), borderType=cv2.BORDER_REFLECT)
    # shot noise (Gaussian approximation of Poisson) + read noise; night: few photons and a capped gain
    full_well, gain, read = (800.0, 2.5, 3.0) if cfg.condition == "night" else (1500.0, 1.0, 2.0)
    electrons = np.clip(rgb, 0, 4) * np.float32(full_well)
    noise = rng.standard_normal(electrons.shape, np.float32)
    electrons += noise * np.sqrt(electrons + np.float32(read * read))
    code = np.clip(electrons * np.float32(4095 * gain / full_well), 0, 4095).astype(np.int32)
    return _GAMMA_LUT[code]


_GAMMA_LUT = (np.power(np.arange(4096) / 4095, 1 / 2.2) * 255 + 0.5).astype(np.uint8)
"""12-bit linear sensor code → 8-bit sRGB-like gamma 2.2."""


# -------------------------------------------------------------------------------------------- entry


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFFFFFF, stream])


def _instant_rng(seed: int, stream: int, instant: int) -> np.random.Generator:
    """Noise stream of one instant of a sequence; instant 0 draws exactly what :func:`generate_scene` draws."""
    if instant == 0:
        return _rng(seed, stream)
    return np.random.default_rng([int(seed) & 0xFFFFFFFFFFFF, stream, instant])


def _render_instant(
    world: _World, light: _Light, cfg: SceneConfig, seed: int, yaw_rate: float, t: float, instant: int
) -> SyntheticSample:
    """The world seen at time ``t`` (ego ``speed·t`` along the road, yawed ``yaw_rate·t``, objects moved)."""
    object_t = t if cfg.object_motion else 0.0
    origin = world.cam_pos + np.array([0.0, 0.0, cfg.ego_speed_mps * t])
    now = _cast(world, cfg, origin, yaw_rate * t, object_t)
    surf = _surface(world, now)
    rgb_lin = _shade(world, cfg, now, surf, light)

    # earlier instant for events: ego was behind and slightly yawed; objects where they were
    dt = cfg.event_dt_s
    origin0 = origin - np.array([0.0, 0.0, cfg.ego_speed_mps * dt])
    before = _cast(world, cfg, origin0, yaw_rate * (t - dt), object_t - dt if cfg.object_motion else 0.0)
    event = _events(cfg, _shade(world, cfg, before, _surface(world, before), light), rgb_lin)

    noise = _instant_rng(seed, 3, instant).standard_normal(now.depth.shape, np.float32)
    depth = now.depth * (1 + cfg.depth_noise_rel * noise)
    lidar = _lidar(cfg, now.depth, light, _instant_rng(seed, 4, instant))
    rgb = _camera(cfg, rgb_lin, _instant_rng(seed, 5, instant))
    frames = {"rgb": rgb, "depth": depth.astype(np.float32), "lidar": lidar, "event": event}
    labels = surf.labels.reshape(cfg.height, cfg.width)
    return SyntheticSample(frames, labels, cfg.condition, cfg.failures, int(seed), cfg.intrinsics, dt)


def _world_and_motion(seed: int, cfg: SceneConfig) -> tuple[_World, _Light, float]:
    world = _build_world(_rng(seed, 0), cfg)
    light = _lighting(cfg, _rng(seed, 1))
    yaw_rate = _rng(seed, 2).uniform(-0.15, 0.15) if cfg.ego_speed_mps > 0 else 0.0
    return world, light, yaw_rate


def generate_scene(seed: int, config: SceneConfig | None = None) -> SyntheticSample:
    """Render one sample; same ``(seed, config)`` → bit-identical arrays, independent of global RNG state."""
    cfg = config or SceneConfig()
    world, light, yaw_rate = _world_and_motion(seed, cfg)
    return _render_instant(world, light, cfg, seed, yaw_rate, 0.0, 0)


def generate_sequence(
    seed: int, config: SceneConfig | None = None, length: int = 8, frame_dt_s: float = 0.1
) -> list[SyntheticSample]:
    """``length`` instants of one world, ``frame_dt_s`` apart, with ego and object motion; the first is
    ``generate_scene(seed, config)``. Deterministic in ``(seed, config, length, frame_dt_s)``."""
    if length < 1 or frame_dt_s <= 0:
        raise ValueError(f"need length >= 1 and frame_dt_s > 0, got {length}, {frame_dt_s}")
    cfg = config or SceneConfig()
    world, light, yaw_rate = _world_and_motion(seed, cfg)
    return [_render_instant(world, light, cfg, seed, yaw_rate, i * frame_dt_s, i) for i in range(length)]


class SyntheticDataset(Dataset):
    """``length`` synthetic samples; sample ``i`` uses seed ``seed_offset + i``.

    Conditions and failure sets cycle independently over the index (``conditions[i % C]``,
    ``failures[i % F]``), so a dataset covers every condition without any bookkeeping.  Items are raw
    numpy frames (only ``modalities``) + labels + meta; tensor conversion is the model's business.
    An optional ``transform(frames, labels, rng)`` gets a Generator seeded by ``(aug_seed, epoch, i)``.
    Note: ``eventlowres`` events are smaller than the other frames, so batch them only after resizing.

    ``clip_length > 1``: item ``i`` is a clip, ``{"instants": [sample, ...], "meta"}``, of
    :func:`generate_sequence` ``(seed_offset + i, ..., clip_length, frame_dt_s)``; every instant gets the same
    augmentation draws (a Generator seeded alike), so a crop or flip stays put along the clip. Each instant's
    meta adds ``instant`` and ``stamp_s`` (``instant · frame_dt_s``).
    """

    def __init__(
        self,
        length: int,
        config: SceneConfig | None = None,
        *,
        seed_offset: int = 0,
        modalities: Sequence[str] = MODALITIES,
        conditions: Sequence[str] | None = None,
        failures: Sequence[Iterable[str]] | None = None,
        transform: Callable[..., tuple[dict[str, np.ndarray], np.ndarray]] | None = None,
        aug_seed: int = 0,
        clip_length: int = 1,
        frame_dt_s: float = 0.1,
    ) -> None:
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if clip_length < 1 or frame_dt_s <= 0:
            raise ValueError(f"need clip_length >= 1 and frame_dt_s > 0, got {clip_length}, {frame_dt_s}")
        self.clip_length, self.frame_dt_s = clip_length, frame_dt_s
        if unknown := set(modalities) - set(MODALITIES):
            raise ValueError(f"unknown modalities {sorted(unknown)}; known: {MODALITIES}")
        self.length, self.seed_offset, self.modalities = length, seed_offset, tuple(modalities)
        self.config = config or SceneConfig()
        self.conditions = tuple(conditions) if conditions else (self.config.condition,)
        self.failures = tuple(frozenset(f) for f in failures) if failures else (self.config.failures,)
        self._configs = {
            (c, f): replace(self.config, condition=c, failures=f) for c in self.conditions for f in self.failures
        }  # validates every combination up front
        self.transform, self.aug_seed, self.epoch = transform, aug_seed, 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """New augmentation draws per epoch while staying reproducible."""
        self.epoch = epoch

    def config_for(self, index: int) -> SceneConfig:
        return self._configs[(self.conditions[index % len(self.conditions)], self.failures[index % len(self.failures)])]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        if self.clip_length > 1:
            return self._clip(index)
        return self._item(index, generate_scene(self.seed_offset + index, self.config_for(index)))

    def _item(self, index: int, sample: SyntheticSample) -> dict[str, Any]:
        frames = {m: sample.frames[m] for m in self.modalities}
        labels = sample.labels
        if self.transform is not None:
            rng = np.random.default_rng([self.aug_seed, self.epoch, index])
            frames, labels = self.transform(frames, labels, rng)
        meta = {"source": "synthetic", "index": index, "seed": sample.seed, "condition": sample.condition,
                "case": sample.case, "sequence": f"synthetic_{sample.case}", "frame": f"{sample.seed:06d}"}  # fmt: skip
        return {"frames": frames, "labels": labels, "meta": meta}

    def _clip(self, index: int) -> dict[str, Any]:
        samples = generate_sequence(self.seed_offset + index, self.config_for(index), self.clip_length, self.frame_dt_s)
        instants = []
        for i, sample in enumerate(samples):
            item = self._item(index, sample)
            item["meta"].update(sequence=f"synthetic_{sample.seed:06d}", frame=f"{i:06d}", instant=i,
                                stamp_s=i * self.frame_dt_s)  # fmt: skip
            instants.append(item)
        return {"instants": instants, "meta": {**instants[0]["meta"], "instants": len(instants)}}


__all__ = [
    "CONDITIONS",
    "FAILURES",
    "MODALITIES",
    "SceneConfig",
    "SyntheticDataset",
    "SyntheticSample",
    "generate_scene",
    "generate_sequence",
]
