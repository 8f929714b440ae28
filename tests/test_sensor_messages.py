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
from memsam_ros.inputs.codec import ImageDecodeError
from memsam_ros.inputs.compressed import decode_compressed_depth, decode_compressed_image, encode_compressed_depth
from memsam_ros.inputs.event_codecs import decode_event_array, decode_event_packet, encode_event_packet
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
    packet.events = encode_event_packet(batch, 5_000_000_000)
    decoded = decode_event_packet(packet)
    for name in ("t_ns", "x", "y", "polarity"):
        np.testing.assert_array_equal(getattr(decoded, name), getattr(batch, name))
    array = EventArray(height=48, width=64)
    array.events = [
        Event(x=int(x), y=int(y), polarity=bool(p), ts=Time(sec=int(t) // 10**9, nanosec=int(t) % 10**9))
        for t, x, y, p in zip(batch.t_ns, batch.x, batch.y, batch.polarity)
    ]
    from_array = decode_event_array(array)
    np.testing.assert_array_equal(accumulate(from_array, 5_000_000_000, 5_040_000_000), frame)
    packet.encoding = "evt2"
    with pytest.raises(ImageDecodeError, match="'evt2' is not decoded"):
        decode_event_packet(packet)
    packet.encoding, packet.events = "mono", b"\x00" * 12
    with pytest.raises(ImageDecodeError, match="whole number"):
        decode_event_packet(packet)


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


def test_evt3_packets_decode_singles_vectors_and_time_roll_over() -> None:
    from builtin_interfaces.msg import Time
    from event_camera_msgs.msg import EventPacket

    from memsam_ros.inputs.event_codecs import encode_evt3

    frame = generate_scene(10, SceneConfig(height=48, width=64)).frames["event"]
    batch = frame_to_events(frame, 3_000_000_000, 3_040_000_000, seed=3)
    packet = EventPacket(height=48, width=64, encoding="evt3")
    packet.header.stamp = Time(sec=3, nanosec=int(batch.t_ns[0] - 3_000_000_000))
    packet.events = encode_evt3(batch)
    decoded = decode_event_packet(packet)
    # ROS time = stamp + microseconds since the packet's first event
    np.testing.assert_array_equal(decoded.t_ns, batch.t_ns[0] + (batch.t_ns - batch.t_ns[0]) // 1000 * 1000)
    np.testing.assert_array_equal(accumulate(decoded, 3_000_000_000, 3_040_000_000), frame)

    def word(code: int, payload: int) -> int:
        return (code << 12) | payload

    words = [
        word(0x2, 5),  # an event before any time word: dropped, as the reference decoder does
        word(0x8, 0xFFF),
        word(0x6, 0x010),
        word(0x0, 7),  # time 0xFFF010 us, y 7
        word(0x2, (1 << 11) | 3),  # ON event at x 3
        word(0x3, (0 << 11) | 20),
        word(0x4, 0b101),
        word(0x5, 0b1),  # OFF vector: x 20, 22, then 32
        word(0x8, 0x000),
        word(0x6, 0x001),
        word(0x2, 40),  # high goes back by 0xFFF: roll-over, +2**24 us
    ]
    packet.events = np.asarray(words, dtype="<u2").tobytes()
    packet.header.stamp = Time(sec=10, nanosec=0)
    events = decode_event_packet(packet)
    assert events.x.tolist() == [3, 20, 22, 32, 40] and events.y.tolist() == [7] * 5
    assert events.polarity.tolist() == [True, False, False, False, False]
    first = 0xFFF010
    expected_us = [0, 0, 0, 0, (1 << 24) + 0x001 - first]
    assert (events.t_ns - 10_000_000_000).tolist() == [t * 1000 for t in expected_us]
