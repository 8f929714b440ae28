"""Real sensor message types → the model's raw inputs: LiDAR projection, PointCloud2, compressed images, events.

Every conversion is checked against known answers: points built from chosen pixels and depths, images and depth
maps that round-trip through the encoders ``image_transport`` uses, event frames that round-trip through streams.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from memsam_core.data.synthetic import SceneConfig, generate_scene
from memsam_core.events import EventBatch, EventWindow, accumulate, frame_to_events
from memsam_core.lidar import CameraModel, Extrinsics, project_to_depth, to_frame, unproject_depth
from memsam_ros.inputs.camera import camera_model
from memsam_ros.inputs.codec import ImageDecodeError
from memsam_ros.inputs.compressed import decode_compressed_depth, decode_compressed_image, encode_compressed_depth
from memsam_ros.inputs.event_codecs import PacketDecoder, decode_event_array, encode_mono
from memsam_ros.inputs.event_stream import EventStream, packet_view
from memsam_ros.inputs.pointcloud import PointCloudError, pointcloud2_to_xyz

K = (600.0, 0.0, 641.3, 0.0, 590.0, 358.7, 0.0, 0.0, 1.0)
CAMERAS = {
    "plumb_bob": CameraModel(1280, 720, K, (-0.28, 0.09, 0.0012, -0.0008, -0.012), "plumb_bob"),
    "rational_polynomial": CameraModel(
        1280, 720, K, (2.1, 0.5, 0.0005, -0.0003, 0.01, 2.4, 0.9, 0.05), "rational_polynomial"
    ),
    "pinhole": CameraModel(1280, 720, K),
}
# LiDAR (x forward, y left, z up) 0.3 m behind and 0.2 m above the optical frame (z forward, x right, y down),
# yawed by 3 degrees
_YAW = np.radians(3.0)
_AXES = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
_YAWED = _AXES @ np.array([[np.cos(_YAW), -np.sin(_YAW), 0], [np.sin(_YAW), np.cos(_YAW), 0], [0, 0, 1]])
EXTRINSICS = Extrinsics(_YAWED, np.array([0.05, 0.2, -0.3]))


def _points_for_pixels(camera: CameraModel, pixels: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """LiDAR-frame points that must land on ``pixels`` at camera-Z ``depths`` (undistorted with OpenCV)."""
    normalised = cv2.undistortPoints(
        pixels.reshape(-1, 1, 2).astype(np.float64),
        camera.matrix,
        np.asarray(camera.d, dtype=np.float64),
        criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12),
    ).reshape(-1, 2)
    in_camera = np.column_stack([normalised * depths[:, None], depths])
    return (in_camera - EXTRINSICS.translation) @ EXTRINSICS.rotation  # inverse rigid transform


@pytest.mark.parametrize("name", sorted(CAMERAS))
def test_points_land_on_their_pixel_with_their_depth(name: str) -> None:
    camera = CAMERAS[name]
    rng = np.random.default_rng(1)
    pixels = np.column_stack([rng.integers(40, 1240, 400), rng.integers(40, 680, 400)]).astype(np.float64)
    pixels = np.unique(pixels, axis=0)
    depths = rng.uniform(1.0, 60.0, len(pixels))
    depth = project_to_depth(_points_for_pixels(camera, pixels, depths), EXTRINSICS, camera)
    assert depth.shape == (720, 1280) and depth.dtype == np.float32
    got = depth[pixels[:, 1].astype(int), pixels[:, 0].astype(int)]
    np.testing.assert_allclose(got, depths, atol=1e-3)  # within 1 mm, on the exact pixel
    assert np.count_nonzero(depth) == len(pixels)  # nothing else painted


def test_projection_agrees_with_opencv_and_keeps_the_nearest_return() -> None:
    camera = CAMERAS["plumb_bob"]
    rng = np.random.default_rng(2)
    points = rng.uniform([-5, -30, -5], [80, 30, 8], (20000, 3)).astype(np.float32)
    depth = project_to_depth(points, EXTRINSICS, camera)
    in_camera = points @ EXTRINSICS.rotation.T + EXTRINSICS.translation
    radius = np.hypot(in_camera[:, 0], in_camera[:, 1]) / np.maximum(in_camera[:, 2], 1e-9)
    folded = (in_camera[:, 2] > 0.05) & (radius >= camera.fold_radius)
    uv_folded, _ = cv2.projectPoints(
        in_camera[folded].astype(np.float64), np.zeros(3), np.zeros(3), camera.matrix, np.asarray(camera.d)
    )
    uv_folded = uv_folded.reshape(-1, 2)
    # OpenCV paints such points back inside the image, at pixels they do not belong to; we drop them
    assert ((uv_folded[:, 0] >= 0) & (uv_folded[:, 0] < 1280) & (uv_folded[:, 1] >= 0) & (uv_folded[:, 1] < 720)).any()
    visible = (in_camera[:, 2] > 0.05) & ~folded
    uv, _ = cv2.projectPoints(
        in_camera[visible].astype(np.float64), np.zeros(3), np.zeros(3), camera.matrix, np.asarray(camera.d)
    )
    uv = uv.reshape(-1, 2)
    # a point within 0.01 px of a pixel border may round either way in float32: leave those out of the comparison
    on_border = (np.abs(uv - np.floor(uv) - 0.5) < 0.01).any(axis=1)
    uv = np.floor(uv + 0.5).astype(int)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < 1280) & (uv[:, 1] >= 0) & (uv[:, 1] < 720) & ~on_border
    expected = np.full((720, 1280), np.inf)
    np.minimum.at(expected, (uv[inside, 1], uv[inside, 0]), in_camera[visible][inside, 2])
    expected[np.isinf(expected)] = 0
    assert np.count_nonzero(expected) > 1000
    bordered = np.zeros((720, 1280), bool)
    border_uv = np.floor(
        cv2.projectPoints(
            in_camera[visible][on_border].astype(np.float64),
            np.zeros(3),
            np.zeros(3),
            camera.matrix,
            np.asarray(camera.d),
        )[0].reshape(-1, 2)
    ).astype(int)
    for du in (0, 1):
        for dv in (0, 1):
            u, v = border_uv[:, 0] + du, border_uv[:, 1] + dv
            ok = (u >= 0) & (u < 1280) & (v >= 0) & (v < 720)
            bordered[v[ok], u[ok]] = True
    np.testing.assert_allclose(depth[~bordered], expected[~bordered], atol=1e-4)
    # a point straight behind another on the same ray: the nearer one wins; behind the camera and NaN: ignored
    pixel, near = np.array([[400.0, 300.0], [400.0, 300.0]]), np.array([5.0, 9.0])
    extra = np.vstack([_points_for_pixels(camera, pixel, near), [[-10.0, 0, 0], [np.nan, 1, 1]]])
    one = project_to_depth(extra, EXTRINSICS, camera)
    assert one[300, 400] == pytest.approx(5.0, abs=1e-3) and np.count_nonzero(one) == 1


def test_tf_quaternion_extrinsics_match_the_rotation_matrix() -> None:
    half = np.radians(30) / 2
    quarter_turn = Extrinsics.from_xyz_quaternion((1.0, 2.0, 3.0), (0.0, 0.0, np.sin(half), np.cos(half)))
    angle = np.radians(30)
    expected = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    np.testing.assert_allclose(quarter_turn.rotation, expected, atol=1e-12)
    np.testing.assert_allclose(quarter_turn.matrix()[:3, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="not supported"):
        CameraModel(640, 480, K, (0.1, 0, 0, 0), "equidistant")


def test_synthetic_lidar_survives_the_trip_through_a_point_cloud() -> None:
    scene = generate_scene(9, SceneConfig(height=120, width=160))
    k = tuple(scene.intrinsics.reshape(-1))
    camera = CameraModel(160, 120, k)
    points = to_frame(unproject_depth(scene.frames["lidar"], camera), EXTRINSICS)  # as the LiDAR publishes them
    depth = project_to_depth(points, EXTRINSICS, camera)
    np.testing.assert_allclose(depth, scene.frames["lidar"], atol=1e-4)
    with pytest.raises(ValueError, match="undistorted"):
        unproject_depth(scene.frames["lidar"], CAMERAS["plumb_bob"])


# ------------------------------------------------------------------------------- CameraInfo binning and ROI
BINNING, ROI = 2, (40, 24, 256, 192)  # x_offset, y_offset, width, height in full-resolution pixels


def _binned_camera_info(published_k: np.ndarray, binning: int = BINNING, roi: tuple[int, ...] = ROI):
    """The CameraInfo a driver publishes for a 128x96 image binned ``binning``x from a ``roi`` of a 352x264
    sensor (REP 104): the calibration at full resolution, whose window is the published camera ``published_k``."""
    from sensor_msgs.msg import CameraInfo, RegionOfInterest

    fx, cx, fy, cy = published_k[0, 0], published_k[0, 2], published_k[1, 1], published_k[1, 2]
    full = [fx * binning, 0.0, cx * binning + roi[0], 0.0, fy * binning, cy * binning + roi[1], 0.0, 0.0, 1.0]
    info = CameraInfo(width=352, height=264, distortion_model="plumb_bob", d=[0.0] * 5, k=full)
    info.p = [*full[:3], 0.0, *full[3:6], 0.0, *full[6:], 0.0]
    info.header.frame_id = "camera"
    info.binning_x = info.binning_y = binning
    info.roi = RegionOfInterest(x_offset=roi[0], y_offset=roi[1], width=roi[2], height=roi[3])
    return info


def _missed_returns(depth: np.ndarray, expected: np.ndarray) -> float:
    """Fraction of the expected LiDAR pixels not reproduced within 1 mm (a depth image of another size is
    brought to the expected size with nearest, as the node resamples every modality)."""
    if depth.shape != expected.shape:
        rows = np.arange(expected.shape[0]) * depth.shape[0] // expected.shape[0]
        cols = np.arange(expected.shape[1]) * depth.shape[1] // expected.shape[1]
        depth = depth[rows[:, None], cols[None, :]]
    returns = expected > 0
    return float((np.abs(depth[returns] - expected[returns]) > 1e-3).mean())


def test_binned_roi_camera_projects_onto_the_published_image() -> None:
    scene = generate_scene(9, SceneConfig(height=96, width=128))
    published = CameraModel(128, 96, tuple(scene.intrinsics.reshape(-1)))
    cloud = to_frame(unproject_depth(scene.frames["lidar"], published), EXTRINSICS)  # the scene as a LiDAR sees it
    camera = camera_model(_binned_camera_info(scene.intrinsics))
    assert (camera.width, camera.height) == (128, 96)  # roi 256x192 / binning 2
    np.testing.assert_allclose(camera.matrix, scene.intrinsics, atol=1e-9)  # image_geometry's K for the window
    depth = project_to_depth(cloud, EXTRINSICS, camera)
    assert _missed_returns(depth, scene.frames["lidar"]) == 0.0
    np.testing.assert_allclose(depth, scene.frames["lidar"], atol=1e-4)
    # the node's path: CameraInfo and PointCloud2 messages through the InputConverter
    from memsam_core.config import load_config
    from memsam_ros.inputs.converter import InputConverter

    converter = InputConverter(load_config(None, {"ros.lidar_type": "pointcloud"}))
    converter.fallback = EXTRINSICS  # what ros.lidar_extrinsics gives where tf has no chain
    assert converter.on_camera_info(_binned_camera_info(scene.intrinsics)) is None
    np.testing.assert_allclose(converter.project(_cloud(cloud, "padded_f64_be")), scene.frames["lidar"], atol=1e-4)


@pytest.mark.parametrize("ignored", ["binning and roi", "binning", "roi"])
def test_ignoring_binning_or_roi_misses_the_returns(ignored: str) -> None:
    """The broken counterparts: the former camera model (the full calibration as it is), and each half of the
    window left out of ``K`` of the 128x96 image; most returns land on wrong pixels, so the check above fails."""
    from dataclasses import replace

    scene = generate_scene(9, SceneConfig(height=96, width=128))
    published = CameraModel(128, 96, tuple(scene.intrinsics.reshape(-1)))
    cloud = to_frame(unproject_depth(scene.frames["lidar"], published), EXTRINSICS)
    info = _binned_camera_info(scene.intrinsics)
    if ignored == "binning and roi":
        camera = CameraModel(int(info.width), int(info.height), tuple(info.k))
    else:
        if "binning" in ignored:
            info.binning_x = info.binning_y = 0
        else:
            info.roi.x_offset = info.roi.y_offset = 0
        camera = replace(camera_model(info), width=128, height=96)
    missed = _missed_returns(project_to_depth(cloud, EXTRINSICS, camera), scene.frames["lidar"])
    assert missed > 0.5, f"ignoring {ignored}: {missed:.2f} of the returns missed"


def test_unusable_windows_are_clear_errors() -> None:
    k = np.array([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]])
    with pytest.raises(ValueError, match="does not fit the calibrated 352x264"):
        camera_model(_binned_camera_info(k, roi=(200, 24, 256, 192)))
    with pytest.raises(ValueError, match="leaves no pixel"):
        camera_model(_binned_camera_info(k, binning=300))
    unbinned = camera_model(_binned_camera_info(k, binning=1, roi=(0, 0, 0, 0)))  # zeros: no binning, full image
    assert (unbinned.width, unbinned.height) == (352, 264) and unbinned.k == (100.0, 0, 64, 0, 100.0, 48, 0, 0, 1)


# ------------------------------------------------------------------------------------------ PointCloud2
def _cloud(points: np.ndarray, layout: str):
    from sensor_msgs.msg import PointCloud2, PointField

    msg = PointCloud2()
    if layout == "xyzi_f32":  # x y z intensity, 16-byte points (common LiDAR driver layout), organised 2 rows
        dtype = np.dtype(
            {"names": ["x", "y", "z", "intensity"], "formats": ["<f4"] * 4, "offsets": [0, 4, 8, 12], "itemsize": 16}
        )
        msg.height, msg.width = 2, len(points) // 2
    elif layout == "padded_f64_be":  # float64, big endian, padding and an extra ring field, 40-byte points
        dtype = np.dtype(
            {
                "names": ["ring", "x", "y", "z"],
                "formats": [">u2", ">f8", ">f8", ">f8"],
                "offsets": [0, 8, 16, 24],
                "itemsize": 40,
            }
        )
        msg.height, msg.width = 1, len(points)
        msg.is_bigendian = True
    structured = np.zeros(len(points), dtype=dtype)
    for column, axis in enumerate("xyz"):
        structured[axis] = points[:, column]
    datatype = {"<f4": PointField.FLOAT32, ">f4": PointField.FLOAT32, ">f8": PointField.FLOAT64}
    msg.fields = [
        PointField(
            name=name,
            offset=dtype.fields[name][1],
            datatype=datatype.get(dtype.fields[name][0].str, PointField.UINT16),
            count=1,
        )
        for name in dtype.names
    ]
    msg.point_step = dtype.itemsize
    msg.row_step = msg.point_step * msg.width
    msg.data = structured.tobytes()
    return msg


@pytest.mark.parametrize("layout", ["xyzi_f32", "padded_f64_be"])
def test_pointcloud2_layouts_give_the_same_points(layout: str) -> None:
    points = np.random.default_rng(3).uniform(-50, 50, (64, 3)).astype(np.float32)
    points[5] = np.nan  # an invalid return is dropped
    xyz = pointcloud2_to_xyz(_cloud(points, layout))
    np.testing.assert_allclose(xyz, np.delete(points, 5, axis=0), rtol=1e-6)


def test_malformed_pointcloud2_is_a_clear_error() -> None:
    points = np.zeros((8, 3), np.float32)
    msg = _cloud(points, "xyzi_f32")
    msg.data = msg.data[:-3]
    with pytest.raises(PointCloudError, match="data length"):
        pointcloud2_to_xyz(msg)
    msg = _cloud(points, "xyzi_f32")
    msg.fields = [f for f in msg.fields if f.name != "z"]
    with pytest.raises(PointCloudError, match="no z field"):
        pointcloud2_to_xyz(msg)
    msg = _cloud(points, "xyzi_f32")
    msg.point_step = 8
    with pytest.raises(PointCloudError, match="does not fit point_step"):
        pointcloud2_to_xyz(msg)


def _hiding_scene() -> tuple[np.ndarray, np.ndarray, Extrinsics, CameraModel]:
    """Real returns in the LiDAR frame plus the no-return (0, 0, 0) points an older ouster-ros publishes, with the
    LiDAR on the bumper 1.2 m ahead of the camera: its origin projects inside the image, onto a real return."""
    camera = CameraModel(160, 120, (100.0, 0.0, 80.0, 0.0, 100.0, 60.0, 0.0, 0.0, 1.0))
    bumper = Extrinsics(_AXES, np.array([0.1, 0.3, 1.2]))  # LiDAR origin → camera (0.1, 0.3, 1.2): pixel (88, 85)
    rng = np.random.default_rng(5)
    in_camera = np.column_stack([rng.uniform(-8, 8, 299), rng.uniform(-1, 5, 299), rng.uniform(6, 40, 299)])
    behind_origin = np.array([[0.1 * 20 / 1.2, 0.3 * 20 / 1.2, 20.0]])  # on the origin's ray, 20 m away
    returns = to_frame(np.vstack([in_camera, behind_origin]), bumper)
    zeros = np.zeros((200, 3), np.float32)
    return returns, np.vstack([returns[:150], zeros[:100], returns[150:], zeros[100:]]), bumper, camera


def test_no_return_zero_points_are_dropped_and_project_like_the_cloud_without_them() -> None:
    returns, with_zeros, bumper, camera = _hiding_scene()
    decoded = pointcloud2_to_xyz(_cloud(with_zeros, "xyzi_f32"))
    np.testing.assert_array_equal(decoded, returns)
    expected = project_to_depth(returns, bumper, camera)
    assert expected[85, 88] == pytest.approx(20.0, abs=1e-3), "the real return on the origin's pixel"
    np.testing.assert_array_equal(project_to_depth(decoded, bumper, camera), expected)


def test_keeping_zero_points_hides_the_real_return_on_the_origin_pixel() -> None:
    """The broken counterpart: a decoder that keeps (0, 0, 0) (the former one) paints the LiDAR origin, 1.2 m
    away, over the real 20 m return, so the projection check above fails for it."""
    returns, with_zeros, bumper, camera = _hiding_scene()
    kept = project_to_depth(with_zeros, bumper, camera)
    assert kept[85, 88] == pytest.approx(1.2, abs=1e-3)
    assert not np.array_equal(kept, project_to_depth(returns, bumper, camera))


# ------------------------------------------------------------------------------------ CompressedImage
class _Compressed:
    def __init__(self, fmt: str, data: bytes) -> None:
        self.format, self.data = fmt, data


def test_png_and_jpeg_colour_decode_to_rgb() -> None:
    rgb = generate_scene(4, SceneConfig(height=96, width=128)).frames["rgb"]
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    np.testing.assert_array_equal(
        decode_compressed_image(_Compressed("rgb8; png compressed bgr8", png.tobytes()), "rgb"), rgb
    )
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    decoded = decode_compressed_image(_Compressed("jpeg", jpeg.tobytes()), "rgb")
    assert decoded.shape == rgb.shape and np.abs(decoded.astype(int) - rgb).mean() < 4  # RGB order, lossy
    mono = decode_compressed_image(
        _Compressed("mono8; png compressed mono8", cv2.imencode(".png", rgb[..., 1])[1].tobytes()), "rgb"
    )
    assert mono.shape == rgb.shape and np.array_equal(mono[..., 0], rgb[..., 1])


RED = np.zeros((24, 32, 3), np.uint8)
RED[..., 0] = 255


def _encoded(array: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, array, [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else [])
    assert ok
    return data.tobytes()


def _publisher_payloads() -> dict[str, bytes]:
    """A pure red image as each kind of publisher encodes it with OpenCV (whose imencode takes BGR(A) order):
    image_transport's publisher converts colour to bgr8 first (``compressed bgr8``, also for ``rgba8`` in png);
    a publisher writing ``compressed rgb8``/``rgba8`` hands its RGB(A) array to imencode as it is; older
    publishers (plain ``jpeg``/``png``) wrote BGR."""
    bgr, rgba = cv2.cvtColor(RED, cv2.COLOR_RGB2BGR), cv2.cvtColor(RED, cv2.COLOR_RGB2RGBA)
    return {
        "rgb8; jpeg compressed bgr8": _encoded(bgr, ".jpg"),
        "bgr8; jpeg compressed bgr8": _encoded(bgr, ".jpg"),
        "rgb8; png compressed bgr8": _encoded(bgr, ".png"),
        "rgba8; png compressed bgr8": _encoded(bgr, ".png"),
        "rgb8; jpeg compressed rgb8": _encoded(RED, ".jpg"),
        "rgb8; png compressed rgb8": _encoded(RED, ".png"),
        "rgba8; png compressed rgba8": _encoded(rgba, ".png"),
        "jpeg": _encoded(bgr, ".jpg"),
        "png": _encoded(bgr, ".png"),
    }


def _is_red(image: np.ndarray) -> bool:
    means = image.reshape(-1, 3).mean(axis=0)
    return bool(means[0] > 240 and means[1] < 15 and means[2] < 15)


@pytest.mark.parametrize("fmt", sorted(_publisher_payloads()))
@pytest.mark.parametrize("modality", ["rgb", "event"])
def test_compressed_colour_order_follows_the_format_string(fmt: str, modality: str) -> None:
    """Each format string form compressed_image_transport's subscriber handles decodes red to red."""
    decoded = decode_compressed_image(_Compressed(fmt, _publisher_payloads()[fmt]), modality)
    assert decoded.shape == RED.shape and decoded.dtype == np.uint8
    assert _is_red(decoded), f"{fmt}: mean RGB {decoded.reshape(-1, 3).mean(axis=0)}"


def test_always_swapping_to_bgr_fails_the_compressed_rgb8_check() -> None:
    """The broken counterpart: the former decoder swapped every colour image as if it were BGR; on
    ``compressed rgb8`` payloads that gives blue, so the check above fails for it."""

    def always_swapped(msg: _Compressed) -> np.ndarray:
        return cv2.cvtColor(cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    payloads = _publisher_payloads()
    for fmt in ("rgb8; jpeg compressed rgb8", "rgb8; png compressed rgb8"):
        swapped = always_swapped(_Compressed(fmt, payloads[fmt]))
        assert not _is_red(swapped) and swapped[..., 2].mean() > 240, fmt
    # the same bytes under the old plain format are BGR by definition: the format string, not the bytes, decides
    same = payloads["rgb8; jpeg compressed rgb8"]
    assert not _is_red(decode_compressed_image(_Compressed("jpeg", same), "rgb"))


def test_compressed_colour_without_a_defined_order_is_refused() -> None:
    rgba = _encoded(cv2.cvtColor(RED, cv2.COLOR_RGB2BGRA), ".png")
    with pytest.raises(ImageDecodeError, match="4 channels are not decoded"):
        decode_compressed_image(_Compressed("png", rgba), "rgb")  # upstream: "Unsupported number of channels"
    with pytest.raises(ImageDecodeError, match="'mono8' is not a colour encoding"):
        decode_compressed_image(_Compressed("mono8; jpeg compressed ", _encoded(RED, ".jpg")), "rgb")


def test_compressed_depth_png_16uc1_and_quantised_32fc1() -> None:
    depth = generate_scene(5, SceneConfig(height=96, width=128)).frames["depth"].copy()
    depth[depth > 9.0] = np.nan  # compressed_depth_image_transport drops depth >= depth_max (10 m by default)
    fmt, data = encode_compressed_depth(depth, "16UC1")
    assert fmt == "16UC1; compressedDepth png"
    metres = decode_compressed_depth(_Compressed(fmt, data))
    valid = np.isfinite(depth)
    np.testing.assert_allclose(metres[valid], depth[valid], atol=5e-4)  # millimetres
    assert np.isnan(metres[~valid]).all()
    fmt, data = encode_compressed_depth(depth, "32FC1")
    metres = decode_compressed_depth(_Compressed(fmt, data))
    # inverse-depth quantisation: one step is ~ d^2 / (q (q + 1)) = d^2 / 10100
    np.testing.assert_allclose(metres[valid], depth[valid], atol=0, rtol=1e-3)
    assert np.isnan(metres[~valid]).all()


@pytest.mark.parametrize(
    ("fmt", "payload", "match"),
    [
        ("rgb8; jpeg compressed bgr8", b"\xff\xd8not a jpeg", "corrupt"),
        ("32FC1; compressedDepth png", b"\x00" * 20, "corrupt"),
        ("32FC1; compressedDepth png", b"\x00" * 8, "header alone"),
        ("16UC1; compressedDepth rvl", b"\x00" * 40, "rvl is not decoded"),
    ],
)
def test_corrupt_or_unsupported_payloads_are_named(fmt: str, payload: bytes, match: str) -> None:
    with pytest.raises(ImageDecodeError, match=match):
        if "compressedDepth" in fmt:
            decode_compressed_depth(_Compressed(fmt, payload))
        else:
            decode_compressed_image(_Compressed(fmt, payload), "rgb")


# ----------------------------------------------------------------------------------------------- events
def test_event_stream_of_a_frame_accumulates_back_to_the_frame() -> None:
    frame = generate_scene(6, SceneConfig(height=96, width=128)).frames["event"]
    assert frame.any()
    batch = frame_to_events(frame, 1_000_000_000, 1_050_000_000, seed=1)
    assert len(batch) > 100 and np.all(np.diff(batch.t_ns) >= 0)
    np.testing.assert_array_equal(accumulate(batch, 1_000_000_000, 1_050_000_000), frame)
    half = accumulate(batch, 1_000_000_000, 1_025_000_000)  # half the window: a subset of the events
    assert 0 < half.astype(int).sum() < frame.astype(int).sum()


def test_event_packet_mono_and_event_array_decode_to_the_same_events() -> None:
    from builtin_interfaces.msg import Time
    from dvs_msgs.msg import Event, EventArray
    from event_camera_msgs.msg import EventPacket

    frame = generate_scene(7, SceneConfig(height=48, width=64)).frames["event"]
    batch = frame_to_events(frame, 5_000_000_000, 5_040_000_000, seed=2)
    packet = EventPacket(height=48, width=64, encoding="mono", time_base=123)
    packet.header.stamp = Time(sec=5, nanosec=0)
    packet.events = encode_mono(batch, 5_000_000_000)
    decoded = PacketDecoder().decode(packet).cd  # upstream's t: time_base + dt
    np.testing.assert_array_equal(decoded.t_ns, batch.t_ns - 5_000_000_000 + 123)
    for name in ("x", "y", "polarity"):
        np.testing.assert_array_equal(getattr(decoded, name), getattr(batch, name))
    stream = EventStream(40_000_000)  # ROS time: header stamp + dt
    assert stream.add_packet(packet_view(packet)).covered_ns == batch.t_ns.max()
    np.testing.assert_array_equal(stream.frame(5_040_000_000), frame)
    array = EventArray(height=48, width=64)
    array.events = [
        Event(x=int(x), y=int(y), polarity=bool(p), ts=Time(sec=int(t) // 10**9, nanosec=int(t) % 10**9))
        for t, x, y, p in zip(batch.t_ns, batch.x, batch.y, batch.polarity)
    ]
    from_array = decode_event_array(array)
    np.testing.assert_array_equal(accumulate(from_array, 5_000_000_000, 5_040_000_000), frame)
    packet.encoding = "evt2"
    with pytest.raises(ImageDecodeError, match="'evt2' is not decoded"):
        PacketDecoder().decode(packet)
    packet.encoding, packet.events = "mono", b"\x00" * 12
    with pytest.raises(ImageDecodeError, match="whole number"):
        PacketDecoder().decode(packet)


def test_event_window_renders_the_window_ending_at_a_stamp_and_forgets_old_packets() -> None:
    frame = generate_scene(8, SceneConfig(height=48, width=64)).frames["event"]
    window = EventWindow(window_ns=50_000_000, keep_ns=200_000_000)
    assert window.frame(0) is None and not window.covers(0)
    start = 10_000_000_000
    for index in range(10):  # 10 packets of 50 ms, each the same frame's events
        window.add(frame_to_events(frame, start + index * 50_000_000, start + (index + 1) * 50_000_000, seed=index))
    end = start + 8 * 50_000_000
    np.testing.assert_array_equal(window.frame(end), frame)  # exactly the 8th packet's window
    assert window.covers(end) and not window.covers(start + 11 * 50_000_000)
    assert window.frame(start).sum() == 0  # that window's packets were forgotten (older than keep_ns)
    empty = EventBatch(np.zeros(0, np.int64), np.zeros(0, np.uint16), np.zeros(0, np.uint16), np.zeros(0, bool), 48, 64)
    window.add(empty)  # an empty packet changes nothing
    np.testing.assert_array_equal(window.frame(end), frame)


# -------------------------------------------------------------------------------------------- tf chain
def test_transform_tree_composes_the_lidar_to_camera_chain() -> None:
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    from memsam_ros.inputs.transforms import TransformTree

    def edge(parent: str, child: str, xyz, yaw_deg: float = 0.0, optical: bool = False) -> TransformStamped:
        out = TransformStamped()
        out.header.frame_id, out.child_frame_id = parent, child
        out.transform.translation.x, out.transform.translation.y, out.transform.translation.z = xyz
        if optical:  # REP 103 optical frame: z forward, x right, y down = rotate (-90° about z, then -90° about x)
            out.transform.rotation.x, out.transform.rotation.y = -0.5, 0.5
            out.transform.rotation.z, out.transform.rotation.w = -0.5, 0.5
        else:
            out.transform.rotation.z = np.sin(np.radians(yaw_deg) / 2)
            out.transform.rotation.w = np.cos(np.radians(yaw_deg) / 2)
        return out

    tree = TransformTree()
    tree.add_message(
        TFMessage(
            transforms=[
                edge("base_link", "lidar", (1.0, 0.0, 1.8), yaw_deg=3.0),
                edge("base_link", "camera_link", (1.5, 0.1, 1.4)),
                edge("camera_link", "camera_optical", (0.0, 0.0, 0.0), optical=True),
            ]
        )
    )
    found = tree.lookup("camera_optical", "lidar")
    assert found is not None
    # a point 10 m ahead of the LiDAR (its x axis), as the camera sees it: in front (z), left/right (x), down (y)
    ahead = found.rotation @ np.array([10.0, 0.0, 0.0]) + found.translation
    yaw = np.radians(3.0)
    in_base = np.array([1.0 + 10 * np.cos(yaw), 10 * np.sin(yaw), 1.8]) - np.array([1.5, 0.1, 1.4])
    np.testing.assert_allclose(ahead, [-in_base[1], -in_base[2], in_base[0]], atol=1e-9)
    assert tree.lookup("camera_optical", "unknown_frame") is None
    np.testing.assert_allclose(tree.lookup("lidar", "lidar").matrix(), np.eye(4))
