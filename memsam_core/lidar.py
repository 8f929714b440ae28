"""LiDAR points → the sparse camera-Z depth image the model is trained on (nearest return per pixel, metres).

Training sees LiDAR as an HxW float32 image in the RGB camera: each return's camera-Z depth in metres at its
pixel, 0.0 where there is none (``memsam_core.data.synthetic``; the node's ``32FC1``/``16UC1`` LiDAR topic). A real
rig publishes a point cloud in the LiDAR's own frame; :func:`project_to_depth` makes the same image from it with
the LiDAR→camera extrinsics and the RGB camera's ``CameraInfo`` (pinhole ``K``; ``plumb_bob`` or
``rational_polynomial`` distortion, as ROS and OpenCV define them).

Why numpy and not ``cv2.projectPoints``: the same distortion model, but OpenCV's float64 path with Jacobians took
34 ms for a 128-beam cloud on one core against ≈9 ms here (``benchmarks/bench_lidar_projection.py``); the tests
check this projection against ``cv2.projectPoints``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

DISTORTION_MODELS = ("plumb_bob", "rational_polynomial")
_MIN_DEPTH_M = 0.05  # returns closer than this to the camera plane are dropped (behind or grazing)


@dataclass(frozen=True)
class CameraModel:
    """The RGB camera of the image as published: size and ``K`` with any ``CameraInfo`` binning and ROI already
    applied (``memsam_ros.inputs.camera.camera_model``), so a point lands on the pixel of the image on the wire."""

    width: int
    height: int
    k: tuple[float, ...]  # row-major 3x3
    d: tuple[float, ...] = ()
    distortion_model: str = "plumb_bob"
    frame_id: str = ""

    def __post_init__(self) -> None:
        if len(self.k) != 9 or self.k[0] <= 0 or self.k[4] <= 0:
            raise ValueError(f"camera K must be 9 values with fx, fy > 0, got {self.k}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera size must be positive, got {self.width}x{self.height}")
        if any(self.d) and self.distortion_model not in DISTORTION_MODELS:
            raise ValueError(
                f"distortion model {self.distortion_model!r} is not supported (use one of {DISTORTION_MODELS})"
            )

    @property
    def matrix(self) -> np.ndarray:
        return np.asarray(self.k, dtype=np.float64).reshape(3, 3)

    @cached_property
    def fold_radius(self) -> float:
        """Normalised radius beyond which the radial distortion folds back (its mapping stops growing), ``inf``
        without distortion. A point beyond it would be painted at a wrong pixel inside the image, so it is dropped.
        """
        r = np.linspace(0.0, 10.0, 20001)
        mapped = r * _radial(r * r, self)
        falling = np.nonzero(np.diff(mapped) <= 0)[0]
        return float(r[falling[0]]) if falling.size else float("inf")


@dataclass(frozen=True)
class Extrinsics:
    """Rigid transform of points from the LiDAR frame into the camera's optical frame: ``p_cam = R p + t``."""

    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> Extrinsics:
        matrix = np.asarray(matrix, dtype=np.float64)
        return cls(matrix[:3, :3], matrix[:3, 3])

    @classmethod
    def from_xyz_quaternion(cls, xyz: tuple[float, float, float], xyzw: tuple[float, float, float, float]):
        """A tf ``Transform`` (translation + unit quaternion x, y, z, w) of the LiDAR frame in the camera frame."""
        x, y, z, w = np.asarray(xyzw, dtype=np.float64) / np.linalg.norm(xyzw)
        rotation = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        return cls(rotation, np.asarray(xyz, dtype=np.float64))

    def matrix(self) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3], out[:3, 3] = self.rotation, self.translation
        return out


def _coefficients(camera: CameraModel) -> np.ndarray:
    """ROS ``D`` in OpenCV order, padded to k1 k2 p1 p2 k3 k4 k5 k6 (the last three only for rational_polynomial)."""
    d = np.zeros(8, dtype=np.float64)
    d[: min(len(camera.d), 8)] = camera.d[:8]
    if camera.distortion_model != "rational_polynomial":
        d[5:] = 0.0
    return d


def _radial(r2: np.ndarray, camera: CameraModel) -> np.ndarray:
    k1, k2, _, _, k3, k4, k5, k6 = _coefficients(camera).astype(r2.dtype)
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    if camera.distortion_model == "rational_polynomial":
        radial = radial / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    return radial


def _distort(x: np.ndarray, y: np.ndarray, r2: np.ndarray, camera: CameraModel) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pinhole coordinates → distorted ones (OpenCV's model, which ROS ``CameraInfo`` uses)."""
    p1, p2 = _coefficients(camera)[2:4].astype(x.dtype)
    radial = _radial(r2, camera)
    xy = x * y
    return (
        x * radial + 2 * p1 * xy + p2 * (r2 + 2 * x * x),
        y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * xy,
    )


def project_to_depth(points: np.ndarray, extrinsics: Extrinsics, camera: CameraModel) -> np.ndarray:
    """``points [N, 3]`` (LiDAR frame, metres; NaN rows ignored) → float32 ``[height, width]`` camera-Z depth of the
    nearest return per pixel, 0.0 where none.

    Points beyond the distortion's fold radius (:attr:`CameraModel.fold_radius`) are dropped: there the polynomial
    turns back and would paint them at wrong pixels inside the image.
    """
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    cam = points @ extrinsics.rotation.T.astype(np.float32) + extrinsics.translation.astype(np.float32)
    z = cam[:, 2]
    in_front = z > _MIN_DEPTH_M  # also drops NaN rows
    cam, z = cam[in_front], z[in_front]
    fx, _, cx, _, fy, cy = camera.k[:6]
    w, h = camera.width, camera.height
    x, y = cam[:, 0] / z, cam[:, 1] / z
    r2 = x * x + y * y
    unfolded = r2 < np.float32(min(camera.fold_radius, 1e3) ** 2)
    x, y, z, r2 = x[unfolded], y[unfolded], z[unfolded], r2[unfolded]
    xd, yd = _distort(x, y, r2, camera) if any(camera.d) else (x, y)
    u = np.floor(fx * xd + cx + 0.5).astype(np.int64)  # pixel centres at integer coordinates (ROS/OpenCV)
    v = np.floor(fy * yd + cy + 0.5).astype(np.int64)
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    depth = np.full(h * w, np.inf, dtype=np.float32)
    np.minimum.at(depth, v[inside] * w + u[inside], z[inside])  # nearest return wins
    depth[depth == np.inf] = 0.0
    return depth.reshape(h, w)


def unproject_depth(depth: np.ndarray, camera: CameraModel) -> np.ndarray:
    """The inverse of :func:`project_to_depth` for an undistorted camera: every pixel with a return (finite,
    > 0) → its 3-D point in the camera's optical frame, ``[N, 3]`` float32. Used to record a synthetic scene's LiDAR
    as the point cloud a real rig would publish."""
    if any(camera.d):
        raise ValueError("unproject_depth needs an undistorted camera (all D = 0)")
    v, u = np.nonzero(np.isfinite(depth) & (depth > 0))
    z = depth[v, u].astype(np.float64)
    fx, _, cx, _, fy, cy = camera.k[:6]
    return np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], axis=1).astype(np.float32)


def to_frame(points: np.ndarray, extrinsics: Extrinsics) -> np.ndarray:
    """Camera-frame points → the LiDAR frame of ``extrinsics`` (which maps LiDAR → camera)."""
    return ((points - extrinsics.translation) @ extrinsics.rotation).astype(np.float32)
