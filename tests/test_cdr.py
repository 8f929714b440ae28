"""memsam_ros.inputs.cdr against rclpy's own serialization (and rosbags'), for the alignments strings cause."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from memsam_ros.inputs.cdr import CdrError, read_header, read_image
from memsam_ros.inputs.codec import array_to_image, decode_modality
from memsam_ros.inputs.stamps import stamp_ns, to_time


@settings(max_examples=60, deadline=None)
@given(
    # C strings: no NUL inside; UTF-8 encodable (a lone surrogate is no ROS string: rclpy refuses to serialize it)
    frame_id=st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=9),
    # mono16 (6 chars) puts is_bigendian on the last byte of a 4-byte word: no padding before step
    encoding=st.sampled_from(["rgb8", "bgr8", "mono8", "32FC1", "16UC1", "mono16", "x"]),
    stamp=st.integers(-(2**40), 2**40),
    big=st.booleans(),
    data=st.binary(max_size=33),
    step=st.integers(0, 2**31),
)
def test_image_fields_match_rclpy(frame_id, encoding, stamp, big, data, step):
    msg = Image(header=Header(stamp=to_time(abs(stamp)), frame_id=frame_id), height=3, width=5)
    msg.encoding, msg.is_bigendian, msg.step, msg.data = encoding, int(big), step, list(data)
    view = read_image(serialize_message(msg))
    assert view.stamp_ns == stamp_ns(msg.header) and view.frame_id == frame_id
    assert (view.height, view.width, view.encoding, view.is_bigendian, view.step) == (3, 5, encoding, int(big), step)
    assert bytes(view.data) == data
    assert read_header(serialize_message(msg)) == (view.stamp_ns, frame_id)


def test_decoding_a_view_equals_decoding_the_message():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0, 50, (7, 9)).astype(np.float32)
    msg = array_to_image(depth, "32FC1", Header(stamp=to_time(5), frame_id="cam"))
    view = read_image(serialize_message(msg))
    assert np.array_equal(decode_modality(view, "depth"), decode_modality(msg, "depth"))


def test_rosbags_serialization_reads_too():
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    header = ts.types["std_msgs/msg/Header"](
        stamp=ts.types["builtin_interfaces/msg/Time"](sec=7, nanosec=9), frame_id="a"
    )
    image = ts.types["sensor_msgs/msg/Image"](
        header=header, height=1, width=2, encoding="mono8", is_bigendian=0, step=2, data=np.array([3, 4], np.uint8)
    )
    view = read_image(ts.serialize_cdr(image, "sensor_msgs/msg/Image"))
    assert (view.stamp_ns, view.frame_id, bytes(view.data)) == (7_000_000_009, "a", b"\x03\x04")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x00", "too short"),
        (b"\x00\x07\x00\x00" + bytes(8), "representation"),
        (b"\x00\x01\x00\x00" + bytes(6), "truncated"),
    ],
)
def test_garbage_is_a_clear_error(raw, reason):
    with pytest.raises(CdrError, match=reason):
        read_image(raw)


@settings(max_examples=40, deadline=None)
@given(
    frame_id=st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=7),
    stamp=st.integers(0, 2**40),
    kind=st.sampled_from(["mono8", "rgb8", "32FC1"]),
    height=st.integers(1, 5),
    width=st.integers(1, 5),
)
def test_written_images_are_what_rclpy_reads(frame_id, stamp, kind, height, width):
    from rclpy.serialization import deserialize_message

    from memsam_ros.inputs.codec import array_to_cdr, image_to_array

    rng = np.random.default_rng(stamp % 1000)
    shape = (height, width, 3) if kind == "rgb8" else (height, width)
    arr = rng.random(shape).astype(np.float32) if kind == "32FC1" else rng.integers(0, 256, shape, dtype=np.uint8)
    raw = array_to_cdr(arr, kind, stamp, frame_id)
    msg = deserialize_message(raw, Image)
    assert stamp_ns(msg.header) == stamp and msg.header.frame_id == frame_id
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (height, width, kind, 0)
    assert np.array_equal(image_to_array(msg), arr)
