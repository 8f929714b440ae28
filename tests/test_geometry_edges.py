"""Edges of PointCloud2 reading, the tf tree, CameraInfo windows and the LiDAR projection that the mutation run
(benchmarks/mutation.py) found untested: empty and one-point clouds, the tightest point layout, frame ids as
tf2 writes them (a leading ``/``, a LiDAR called ``XT32``), chains that use every edge, ROIs at their limits,
camera validation at its boundaries, general and unnormalised quaternions, the near-plane cut.
"""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from memsam_core.lidar import CameraModel, Extrinsics, project_to_depth, unproject_depth
from memsam_ros.inputs.camera import camera_model
from memsam_ros.inputs.pointcloud import PointCloudError, pointcloud2_to_xyz
from memsam_ros.inputs.transforms import TransformTree

FLOAT32, FLOAT64, UINT16 = 7, 8, 4  # sensor_msgs/PointField datatypes


def _cloud(points: np.ndarray, datatype: int = FLOAT32, fields: str = "xyz", row_step: int | None = None):
    """A packed PointCloud2-like message: one row, the axes in ``fields`` back to back."""
    kind = {FLOAT32: "<f4", FLOAT64: "<f8", UINT16: "<u2"}[datatype]
    size = np.dtype(kind).itemsize
    data = np.ascontiguousarray(points[:, : len(fields)], dtype=kind).tobytes()
    point_step = size * len(fields)
    return SimpleNamespace(
        fields=[SimpleNamespace(name=name, offset=i * size, datatype=datatype) for i, name in enumerate(fields)],
        height=1,
        width=len(points),
        point_step=point_step,
        row_step=point_step * len(points) if row_step is None else row_step,
        is_bigendian=False,
        data=data,
    )


# ------------------------------------------------------------------------------------------------ PointCloud2
def test_empty_one_point_and_packed_clouds() -> None:
    """A scan with no returns is a (0, 3) float32 array, not an error; xyz float32 packed in 12 bytes (the last
    field ends exactly at point_step) is read; a float64 cloud still gives float32."""
    for empty in (_cloud(np.zeros((0, 3))), SimpleNamespace(**(vars(_cloud(np.zeros((0, 3)))) | {"height": 0}))):
        xyz = pointcloud2_to_xyz(empty)
        assert xyz.shape == (0, 3) and xyz.dtype == np.float32
    one = np.array([[1.5, -2.0, 3.25]])
    np.testing.assert_array_equal(pointcloud2_to_xyz(_cloud(one)), one.astype(np.float32))
    many = np.random.default_rng(0).uniform(-9, 9, (5, 3))
    assert _cloud(many).point_step == 12
    np.testing.assert_array_equal(pointcloud2_to_xyz(_cloud(many)), many.astype(np.float32))
    wide = pointcloud2_to_xyz(_cloud(many, FLOAT64))
    assert wide.dtype == np.float32
    np.testing.assert_array_equal(wide, many.astype(np.float32))


@pytest.mark.parametrize(
    ("cloud", "message"),
    [
        (_cloud(np.ones((2, 3)), fields="xy"), "no z field (fields: x, y)"),
        (SimpleNamespace(**(vars(_cloud(np.ones((2, 3)))) | {"fields": []})), "no x/y/z field (fields: none)"),
        (_cloud(np.ones((2, 3)), UINT16), "field x has datatype 4; x, y, z must be FLOAT32/FLOAT64"),
        (
            SimpleNamespace(**(vars(_cloud(np.ones((2, 3)))) | {"row_step": 20, "data": bytes(20)})),
            "row_step 20 < width*point_step 2*12",
        ),
    ],
)
def test_unreadable_clouds_say_exactly_why(cloud, message: str) -> None:
    with pytest.raises(PointCloudError) as error:
        pointcloud2_to_xyz(cloud)
    assert str(error.value) == message


# ------------------------------------------------------------------------------------------------------ tf
def _edge(parent: str, child: str, xyz=(0.0, 0.0, 0.0), xyzw=(0.0, 0.0, 0.0, 1.0)) -> SimpleNamespace:
    translation = SimpleNamespace(x=xyz[0], y=xyz[1], z=xyz[2])
    rotation = SimpleNamespace(x=xyzw[0], y=xyzw[1], z=xyzw[2], w=xyzw[3])
    return SimpleNamespace(
        header=SimpleNamespace(frame_id=parent),
        child_frame_id=child,
        transform=SimpleNamespace(translation=translation, rotation=rotation),
    )


YAW = (0.0, 0.0, np.sin(0.25), np.cos(0.25))  # 0.5 rad about z


def _tree(*edges: SimpleNamespace) -> TransformTree:
    tree = TransformTree()
    tree.add_message(SimpleNamespace(transforms=list(edges)))
    return tree


def _point(found: Extrinsics | None, xyz=(1.0, 2.0, 3.0)) -> np.ndarray:
    assert found is not None
    return found.rotation @ np.asarray(xyz) + found.translation


def test_leading_slashes_are_ignored_and_frame_names_are_kept_as_they_are() -> None:
    """tf2 strips a leading ``/`` (ROS 1 names), so a frame is one frame whether a transform names it with the slash
    or without; nothing else of a name is touched: a Hesai ``XT32`` stays XT32, as a parent too."""
    plain = _tree(
        _edge("base_link", "XT32", (1.0, 0.0, 2.0), YAW),
        _edge("base_link", "camera_link", (0.5, 0.1, 1.0)),
        _edge("camera_link", "camera"),
        _edge("XT32", "XT32_imu", (0.0, 0.0, 0.5)),
    )
    mixed = _tree(
        _edge("/base_link", "XT32", (1.0, 0.0, 2.0), YAW),
        _edge("base_link", "/camera_link", (0.5, 0.1, 1.0)),
        _edge("/camera_link", "camera"),
        _edge("/XT32", "XT32_imu", (0.0, 0.0, 0.5)),
    )
    expected = _yawed((1.0, 2.0, 3.0)) + np.array([0.5, -0.1, 1.0])
    for tree in (plain, mixed):
        for target, source in (("camera", "XT32"), ("/camera", "/XT32")):
            np.testing.assert_allclose(_point(tree.lookup(target, source)), expected)
        np.testing.assert_allclose(_point(tree.lookup("XT32", "camera"), expected), [1.0, 2.0, 3.0], atol=1e-12)
        imu = _yawed((1.0, 2.0, 3.5)) + np.array([0.5, -0.1, 1.0])
        np.testing.assert_allclose(_point(tree.lookup("camera", "XT32_imu")), imu)


def _yawed(xyz) -> np.ndarray:
    c, s = np.cos(0.5), np.sin(0.5)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.asarray(xyz)


def test_edges_without_two_distinct_frames_are_ignored() -> None:
    """An empty frame id or a frame that is its own parent is no edge: it neither links two frames through ""
    nor replaces a frame's real parent."""
    assert _tree(_edge("", "lidar"), _edge("", "camera")).lookup("camera", "lidar") is None
    tree = _tree(_edge("base_link", "lidar", (1.0, 0.0, 0.0)), _edge("base_link", "camera"))
    tree.add(_edge("camera", "camera", (5.0, 5.0, 5.0)))
    np.testing.assert_allclose(_point(tree.lookup("camera", "lidar"), (0.0, 0.0, 0.0)), [1.0, 0.0, 0.0])


def test_lookup_to_an_ancestor_and_along_a_chain_of_every_edge() -> None:
    tree = _tree(
        _edge("camera_link", "camera_optical", (0.0, 0.0, 0.1), YAW), _edge("base_link", "camera_link", (2.0, 0.0, 0.0))
    )
    np.testing.assert_allclose(
        _point(tree.lookup("camera_link", "camera_optical")), _yawed((1, 2, 3)) + np.array([0, 0, 0.1])
    )
    np.testing.assert_allclose(
        _point(tree.lookup("base_link", "camera_optical")), _yawed((1, 2, 3)) + np.array([2, 0, 0.1])
    )
    back = tree.lookup("camera_optical", "base_link")
    np.testing.assert_allclose(_point(back, _yawed((1, 2, 3)) + np.array([2, 0, 0.1])), [1, 2, 3], atol=1e-12)


# ------------------------------------------------------------------------------------------------ CameraInfo
def _info(roi=(0, 0, 0, 0), binning: int = 1, **fields) -> SimpleNamespace:
    x, y, width, height = roi
    values = {
        "width": 352,
        "height": 264,
        "k": [100.0, 0.0, 176.0, 0.0, 100.0, 132.0, 0.0, 0.0, 1.0],
        "d": [0.0] * 5,
        "distortion_model": "plumb_bob",
        "header": SimpleNamespace(frame_id="camera"),
        "binning_x": binning,
        "binning_y": binning,
        "roi": SimpleNamespace(x_offset=x, y_offset=y, width=width, height=height),
    }
    return SimpleNamespace(**(values | fields))


@pytest.mark.parametrize(
    ("roi", "message"),
    [
        ((5, 0, 0, 10), "roi 0x10 at (5, 0) does not fit the calibrated 352x264"),
        ((0, 5, 10, 0), "roi 10x0 at (0, 5) does not fit the calibrated 352x264"),
        ((0, 100, 256, 192), "roi 256x192 at (0, 100) does not fit the calibrated 352x264"),
    ],
)
def test_rois_outside_the_calibration_are_refused(roi, message: str) -> None:
    with pytest.raises(ValueError) as error:
        camera_model(_info(roi))
    assert str(error.value) == message


def test_a_one_pixel_roi_is_a_camera_and_the_model_keeps_distortion_and_frame() -> None:
    one = camera_model(_info((10, 20, 1, 1)))
    assert (one.width, one.height) == (1, 1)
    assert one.k[2] == pytest.approx(176.0 - 10) and one.k[5] == pytest.approx(132.0 - 20)
    d = [0.1, -0.02, 0.001, 0.002, 0.0, 0.3, 0.01, 0.001]
    info = _info(distortion_model="rational_polynomial", d=d, header=SimpleNamespace(frame_id="cam_optical"))
    camera = camera_model(info)
    assert (camera.distortion_model, camera.d, camera.frame_id) == ("rational_polynomial", tuple(d), "cam_optical")


# ------------------------------------------------------------------------------------------------ projection
K = (100.0, 0.0, 80.0, 0.0, 100.0, 60.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": K[:8]}, f"camera K must be 9 values with fx, fy > 0, got {K[:8]}"),
        (
            {"k": (0.0, *K[1:])},
            "camera K must be 9 values with fx, fy > 0, got (0.0, 0.0, 80.0, 0.0, 100.0, 60.0, 0.0, 0.0, 1.0)",
        ),
        (
            {"k": (*K[:4], 0.0, *K[5:])},
            "camera K must be 9 values with fx, fy > 0, got (100.0, 0.0, 80.0, 0.0, 0.0, 60.0, 0.0, 0.0, 1.0)",
        ),
        ({"width": 0}, "camera size must be positive, got 0x120"),
        ({"height": 0}, "camera size must be positive, got 160x0"),
    ],
)
def test_unusable_cameras_are_refused(kwargs, message: str) -> None:
    with pytest.raises(ValueError) as error:
        CameraModel(**({"width": 160, "height": 120, "k": K} | kwargs))
    assert str(error.value) == message


def test_the_smallest_usable_cameras_are_accepted() -> None:
    """fx, fy only need to be positive, cy may be 0, a 1x1 image is an image, and without distortion
    coefficients the model's name does not matter (uncalibrated drivers send ``""``)."""
    CameraModel(1, 1, (0.5, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 1.0))
    for name in ("", "equidistant"):
        assert CameraModel(160, 120, K, (0.0,) * 5, name).fold_radius == float("inf")


def test_quaternions_of_any_norm_and_axis_give_the_rodrigues_rotation() -> None:
    axis, angle = np.array([0.3, -0.5, 0.81]), 0.7
    axis /= np.linalg.norm(axis)
    xyzw = (*(axis * np.sin(angle / 2)), np.cos(angle / 2))
    expected = cv2.Rodrigues(axis * angle)[0]
    for scale in (1.0, 2.5):
        found = Extrinsics.from_xyz_quaternion((1.0, 2.0, 3.0), tuple(scale * v for v in xyzw))
        np.testing.assert_allclose(found.rotation, expected, atol=1e-12)


def test_extra_distortion_coefficients_beyond_the_eighth_are_ignored() -> None:
    d = (0.1, -0.05, 0.001, 0.002, 0.01, 0.05, -0.01, 0.002)
    eight = CameraModel(160, 120, K, d, "rational_polynomial")
    fourteen = CameraModel(160, 120, K, (*d, 0.3, 0.1, 0.2, 0.4, 0.5, 0.6), "rational_polynomial")
    points = np.random.default_rng(1).uniform([-4, -3, 2], [4, 3, 20], (500, 3))
    np.testing.assert_array_equal(
        project_to_depth(points, Extrinsics(), fourteen), project_to_depth(points, Extrinsics(), eight)
    )


def test_returns_at_the_near_plane_are_dropped() -> None:
    """Closer than 5 cm to the camera plane is behind or grazing: dropped, the plane itself included."""
    camera = CameraModel(160, 120, K)
    at_plane = project_to_depth(np.array([[0.0, 0.0, np.float32(0.05)]]), Extrinsics(), camera)
    beyond = project_to_depth(np.array([[0.0, 0.0, 0.06]]), Extrinsics(), camera)
    assert not at_plane.any() and beyond[60, 80] == pytest.approx(0.06)


def test_unprojection_keeps_only_returns_and_gives_float32() -> None:
    camera = CameraModel(4, 1, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    depth = np.array([[0.5, 0.0, np.inf, 2.0]], np.float32)
    points = unproject_depth(np.array([[0.5, np.nan, -1.0, 2.0]], np.float32), camera)
    assert points.dtype == np.float32
    np.testing.assert_allclose(points, [[0.0, 0.0, 0.5], [6.0, 0.0, 2.0]])
    np.testing.assert_allclose(unproject_depth(depth, camera), [[0.0, 0.0, 0.5], [6.0, 0.0, 2.0]])
    with pytest.raises(ValueError) as error:
        unproject_depth(depth, CameraModel(4, 1, camera.k, (0.1, 0, 0, 0, 0)))
    assert str(error.value) == "unproject_depth needs an undistorted camera (all D = 0)"
