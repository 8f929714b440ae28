"""Image codec: round trips, row padding, byte order, REP 118 depth, errors, rclpy + rosbags messages, fuzz."""

from __future__ import annotations

import array
from types import SimpleNamespace

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from hypothesis import given, settings
from hypothesis import strategies as st
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from memsam_ros.inputs.codec import ImageDecodeError, array_to_image, decode_modality, depth_to_metres, image_to_array

RNG = np.random.default_rng(0)
KNOWN_ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "32FC1", "16UC1", "mono16"]
PIXEL_BYTES = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "32FC1": 4, "16UC1": 2, "mono16": 2}


def raw_image(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """An rclpy Image whose rows carry ``pad`` bytes of junk after the pixels."""
    height, width = pixels.shape[:2]
    wire = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    rows = wire.reshape(height, -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((height, pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=int(bigendian), step=padded.shape[1])
    msg.data = array.array("B", padded.tobytes())
    return msg


def header() -> Header:
    return Header(stamp=Time(sec=12, nanosec=345), frame_id="camera")


@pytest.mark.parametrize(
    ("encoding", "pixels"),
    [
        ("rgb8", RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)),
        ("mono8", RNG.integers(0, 256, (5, 7), dtype=np.uint8)),
        ("32FC1", np.array([[1.5, np.nan, np.inf], [-np.inf, 0.0, 7.25]], np.float32)),
        ("16UC1", RNG.integers(0, 65536, (4, 3), dtype=np.uint16)),
    ],
)
def test_round_trip(encoding: str, pixels: np.ndarray) -> None:
    msg = array_to_image(pixels, encoding, header())
    assert (msg.encoding, msg.height, msg.width, msg.is_bigendian) == (encoding, *pixels.shape[:2], 0)
    assert msg.step == pixels.shape[1] * PIXEL_BYTES[encoding]
    assert msg.header.frame_id == "camera" and msg.header.stamp.nanosec == 345
    out = image_to_array(msg)
    assert out.dtype == pixels.dtype
    np.testing.assert_array_equal(out, pixels)


def test_array_to_image_accepts_non_contiguous_input() -> None:
    pixels = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(image_to_array(array_to_image(pixels[::2, ::2], "rgb8")), pixels[::2, ::2])


@pytest.mark.parametrize(
    ("encoding", "pixels"),
    [
        ("mono8", RNG.integers(0, 256, (4, 5), dtype=np.uint8)),
        ("rgb8", RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)),
        ("32FC1", RNG.standard_normal((4, 5)).astype(np.float32)),
        ("16UC1", RNG.integers(0, 65536, (4, 5), dtype=np.uint16)),
    ],
)
@pytest.mark.parametrize("pad", [1, 3, 16])
def test_step_padding_is_skipped(encoding: str, pixels: np.ndarray, pad: int) -> None:
    out = image_to_array(raw_image(pixels, encoding, pad=pad))
    np.testing.assert_array_equal(out, pixels)
    assert out.flags.c_contiguous


@pytest.mark.parametrize("encoding", ["32FC1", "16UC1", "mono16"])
def test_big_endian(encoding: str) -> None:
    dtype = np.float32 if encoding == "32FC1" else np.uint16
    pixels = np.arange(1, 13, dtype=dtype).reshape(3, 4) * 257
    out = image_to_array(raw_image(pixels, encoding, pad=2, bigendian=True))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, pixels)


@pytest.mark.parametrize(
    ("encoding", "to_wire"),
    [
        ("bgr8", lambda rgb: rgb[..., ::-1]),
        ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)])),
        ("bgra8", lambda rgb: np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 9, np.uint8)])),
    ],
)
def test_colour_orders_become_rgb(encoding: str, to_wire) -> None:
    rgb = RNG.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    out = image_to_array(raw_image(np.ascontiguousarray(to_wire(rgb)), encoding, pad=5))
    np.testing.assert_array_equal(out, rgb)
    assert out.flags.c_contiguous


def test_depth_16uc1_millimetres_to_metres_zero_is_nan() -> None:
    mm = np.array([[0, 1000], [1500, 65535]], np.uint16)
    metres = decode_modality(raw_image(mm, "16UC1"), "depth")
    assert metres.dtype == np.float32
    assert np.isnan(metres[0, 0])
    np.testing.assert_allclose(metres[[0, 1, 1], [1, 0, 1]], [1.0, 1.5, 65.535], rtol=1e-6)


def test_depth_32fc1_keeps_non_finite() -> None:
    depth = np.array([[np.nan, np.inf, -np.inf, 2.5, 0.0]], np.float32)
    np.testing.assert_array_equal(decode_modality(raw_image(depth, "32FC1"), "lidar"), depth)
    np.testing.assert_array_equal(depth_to_metres(depth, "32FC1"), depth)


def test_depth_to_metres_rejects_colour() -> None:
    with pytest.raises(ImageDecodeError, match="not a depth encoding"):
        depth_to_metres(np.zeros((2, 2), np.uint8), "mono8")


def test_decode_modality_formats() -> None:
    gray = RNG.integers(0, 256, (3, 4), dtype=np.uint8)
    rgb = decode_modality(raw_image(gray, "mono8"), "rgb")
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, np.stack([gray] * 3, axis=2))
    np.testing.assert_array_equal(decode_modality(raw_image(gray, "mono8"), "event"), gray)
    colour = RNG.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_modality(raw_image(colour[..., ::-1].copy(), "bgr8"), "event"), colour)
    mm = np.full((2, 2), 2000, np.uint16)
    np.testing.assert_array_equal(decode_modality(raw_image(mm, "mono16"), "lidar"), np.full((2, 2), 2.0, np.float32))


@pytest.mark.parametrize(
    "container", [bytes, bytearray, list, lambda b: array.array("B", b), lambda b: np.frombuffer(b, np.uint8)]
)
def test_any_data_container(container) -> None:
    pixels = RNG.integers(0, 256, (2, 3, 3), dtype=np.uint8)
    msg = SimpleNamespace(height=2, width=3, encoding="rgb8", is_bigendian=0, step=9, data=container(pixels.tobytes()))
    np.testing.assert_array_equal(image_to_array(msg), pixels)


def test_rosbags_image_and_cdr_interop() -> None:
    from rclpy.serialization import deserialize_message

    store = get_typestore(Stores.ROS2_KILTED)
    bag_image, bag_header, bag_time = (
        store.types[name] for name in ("sensor_msgs/msg/Image", "std_msgs/msg/Header", "builtin_interfaces/msg/Time")
    )
    depth = np.array([[0.5, np.nan], [3.0, 4.5]], np.float32)
    padded = np.concatenate([depth.view(np.uint8), np.zeros((2, 4), np.uint8)], axis=1)
    msg = bag_image(
        header=bag_header(stamp=bag_time(sec=1, nanosec=2), frame_id="lidar"),
        height=2,
        width=2,
        encoding="32FC1",
        is_bigendian=0,
        step=12,
        data=padded.reshape(-1),
    )
    np.testing.assert_array_equal(decode_modality(msg, "lidar"), depth)
    as_rclpy = deserialize_message(bytes(store.serialize_cdr(msg, bag_image.__msgtype__)), Image)
    np.testing.assert_array_equal(decode_modality(as_rclpy, "lidar"), depth)


def _msg(**overrides) -> SimpleNamespace:
    fields = {"height": 2, "width": 2, "encoding": "mono8", "is_bigendian": 0, "step": 2, "data": bytes(4)}
    return SimpleNamespace(**(fields | overrides))


@pytest.mark.parametrize(
    ("msg", "modality", "reason"),
    [
        (_msg(encoding="yuv422"), "rgb", "unsupported encoding"),
        (_msg(encoding="8UC3"), "depth", "unsupported encoding"),
        (_msg(encoding="32FC1", step=8, data=bytes(16)), "rgb", "not allowed for modality 'rgb'"),
        (_msg(encoding="rgba8", step=8, data=bytes(16)), "event", "not allowed for modality 'event'"),
        (_msg(encoding="mono8"), "depth", "not allowed for modality 'depth'"),
        (_msg(height=0, data=b""), "rgb", "zero-size"),
        (_msg(width=0, step=0, data=b""), "event", "zero-size"),
        (_msg(step=1, data=bytes(2)), "rgb", "step 1 < width"),
        (_msg(encoding="16UC1", step=3, data=bytes(6)), "depth", "step 3 < width"),
        (_msg(data=bytes(5)), "rgb", "data length 5 != step\\*height"),
        (_msg(step=3, data=bytes(4)), "rgb", "data length 4 != step\\*height"),
        (_msg(data=[0, 1, 2, 300]), "rgb", "not a sequence of bytes"),
        (_msg(data=["a", "b", "c", "d"]), "rgb", "not a sequence of bytes"),
        (_msg(data=np.zeros(4, np.int16)), "rgb", "must hold uint8"),
    ],
)
def test_decode_errors(msg: SimpleNamespace, modality: str, reason: str) -> None:
    with pytest.raises(ImageDecodeError, match=reason):
        decode_modality(msg, modality)


def test_unknown_modality_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="unknown modality") as info:
        decode_modality(_msg(), "thermal")
    assert not isinstance(info.value, ImageDecodeError)


@pytest.mark.parametrize(
    ("arr", "encoding", "reason"),
    [
        (np.zeros((2, 2), np.uint8), "bgr8", "cannot encode"),
        (np.zeros((2, 2), np.float64), "32FC1", "needs a float32"),
        (np.zeros((2, 2, 3), np.uint8), "mono8", "needs a uint8 array of 2 dims"),
        (np.zeros((2, 2, 4), np.uint8), "rgb8", "needs a uint8 array of 3 dims"),
        (np.zeros((0, 2), np.uint16), "16UC1", "zero-size"),
    ],
)
def test_encode_errors(arr: np.ndarray, encoding: str, reason: str) -> None:
    with pytest.raises(ImageDecodeError, match=reason):
        array_to_image(arr, encoding)


_DATA = st.one_of(
    st.binary(max_size=96),
    st.lists(st.integers(-2, 300), max_size=96),
    st.binary(max_size=96).map(lambda b: array.array("B", b)),
    st.binary(max_size=96).map(lambda b: np.frombuffer(b, np.uint8)),
)


@st.composite
def image_like(draw: st.DrawFn) -> SimpleNamespace:
    """Random Image-like messages; half of them have a consistent step/data so decoding can succeed."""
    garbage = draw(st.integers(0, 3)) == 0
    encoding = draw(st.text(max_size=8) if garbage else st.sampled_from(KNOWN_ENCODINGS))
    height, width = draw(st.integers(-1, 6)), draw(st.integers(-1, 6))
    if draw(st.booleans()):
        step = max(width, 0) * PIXEL_BYTES.get(encoding, 1) + draw(st.integers(0, 3))
        data = draw(st.binary(min_size=step * max(height, 0), max_size=step * max(height, 0)))
    else:
        step, data = draw(st.integers(-2, 40)), draw(_DATA)
    return SimpleNamespace(
        height=height, width=width, encoding=encoding, is_bigendian=draw(st.booleans()), step=step, data=data
    )


@settings(max_examples=400, deadline=None)
@given(msg=image_like(), modality=st.sampled_from(["rgb", "depth", "lidar", "event"]))
def test_fuzz_decode_modality(msg: SimpleNamespace, modality: str) -> None:
    try:
        out = decode_modality(msg, modality)
    except ImageDecodeError:
        return
    hw = (msg.height, msg.width)
    if modality == "rgb" or (modality == "event" and msg.encoding != "mono8"):
        assert (out.shape, out.dtype) == ((*hw, 3), np.uint8)
    elif modality == "event":
        assert (out.shape, out.dtype) == (hw, np.uint8)
    else:
        assert (out.shape, out.dtype) == (hw, np.float32)
