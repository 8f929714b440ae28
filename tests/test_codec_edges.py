"""Edges of the image codecs and the CDR reader that the mutation run (benchmarks/mutation.py) found untested:
the exact error messages the node's warnings quote, copy versus view of the received buffer, big-endian CDR,
strings a foreign publisher may send, and ``encode_compressed_depth`` against upstream's encoder
(ros-perception/image_transport_plugins, ``compressed_depth_image_transport/src/codec.cpp``,
``encodeCompressedDepthImage``), written out here as the reference.
"""

from __future__ import annotations

import array
import struct
import warnings
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from memsam_ros.inputs.cdr import CdrError, read_event_packet, read_header, read_image, write_image
from memsam_ros.inputs.codec import (
    ImageDecodeError,
    array_to_image,
    as_bytes,
    decode_modality,
    depth_to_metres,
    image_to_array,
)
from memsam_ros.inputs.compressed import decode_compressed_depth, decode_compressed_image, encode_compressed_depth
from memsam_ros.inputs.event_codecs import PacketDecoder

ROOT = Path(__file__).resolve().parents[1]


def _msg(**overrides) -> SimpleNamespace:
    fields = {"height": 2, "width": 2, "encoding": "mono8", "is_bigendian": 0, "step": 2, "data": bytes(4)}
    return SimpleNamespace(**(fields | overrides))


def _message(error: pytest.ExceptionInfo) -> str:
    return str(error.value)


# ---------------------------------------------------------------------------------------------------- codec
def test_as_bytes_gives_a_flat_uint8_view_of_any_container() -> None:
    assert as_bytes(np.arange(6, dtype=np.uint8).reshape(2, 3)).shape == (6,)
    assert as_bytes([[1, 2], [3, 4]]).tolist() == [1, 2, 3, 4]
    with pytest.raises(ImageDecodeError) as error:
        as_bytes(np.zeros(3, np.uint16))
    assert _message(error) == "data must hold uint8, got dtype uint16"


@pytest.mark.parametrize(
    ("decode", "message"),
    [
        (
            lambda: image_to_array(_msg(encoding="yuv422")),
            "unsupported encoding 'yuv422' (supported: rgb8, bgr8, rgba8, bgra8, mono8, 32FC1, 16UC1, mono16)",
        ),
        (
            lambda: decode_modality(_msg(encoding="yuv422"), "rgb"),
            "unsupported encoding; encoding 'yuv422' not allowed for modality 'rgb' (bgr8, bgra8, mono8, rgb8, rgba8)",
        ),
        (
            lambda: decode_modality(_msg(encoding="32FC1", step=8, data=bytes(16)), "event"),
            "encoding '32FC1' not allowed for modality 'event' (bgr8, mono8, rgb8)",
        ),
        (lambda: image_to_array(_msg(encoding="rgb8", step=2)), "step 2 < width*bytes_per_pixel 2*3 for rgb8"),
        (lambda: image_to_array(_msg(data=array.array("H", bytes(8)))), "data length 8 != step*height 2*2"),
        (
            lambda: depth_to_metres(np.zeros((2, 2), np.uint8), "mono8"),
            "encoding 'mono8' is not a depth encoding (16UC1, 32FC1, mono16)",
        ),
        (
            lambda: array_to_image(np.zeros((2, 2), np.uint8), "bgr8"),
            "cannot encode 'bgr8' (supported: rgb8, mono8, 32FC1, 16UC1)",
        ),
        (lambda: array_to_image(np.zeros((3, 0), np.uint16), "16UC1"), "zero-size image 0x3"),
    ],
)
def test_decode_errors_say_exactly_what_is_wrong(decode, message: str) -> None:
    """The node's throttled warning quotes these messages: the full text, not just a keyword, is the contract."""
    with pytest.raises(ImageDecodeError) as error:
        decode()
    assert _message(error) == message


def test_data_without_a_length_and_an_unknown_modality_are_named() -> None:
    with pytest.raises(ImageDecodeError) as error:
        image_to_array(_msg(data=5))
    assert _message(error).startswith("data is not a sequence of bytes: ")
    with pytest.raises(ValueError) as unknown:
        decode_modality(_msg(), "thermal")
    assert _message(unknown) == "unknown modality 'thermal' (known: rgb, depth, lidar, event)"


def _wire(pixels: np.ndarray, encoding: str, pad: int = 0) -> SimpleNamespace:
    """An Image over a mutable buffer (rows padded by ``pad`` bytes), so sharing it is observable."""
    height, width = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).reshape(height, -1).view(np.uint8)
    padded = np.concatenate([rows, np.zeros((height, pad), np.uint8)], axis=1)
    return SimpleNamespace(height=height, width=width, encoding=encoding, is_bigendian=0, step=padded.shape[1],
                           data=bytearray(padded.tobytes()))  # fmt: skip


CASES = [
    ("rgb8", "rgb", np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)),
    ("mono8", "event", np.arange(6, dtype=np.uint8).reshape(2, 3)),
    ("32FC1", "depth", np.linspace(0.5, 3.0, 6, dtype=np.float32).reshape(2, 3)),
]


@pytest.mark.parametrize(("encoding", "modality", "pixels"), CASES)
def test_decoding_copies_by_default_and_views_the_buffer_on_request(encoding, modality, pixels) -> None:
    """The default owns its pixels (the message's buffer may be reused); ``copy=False`` is the node's zero-copy
    path: a view where the wire layout already is the array, a packed copy where rows are padded."""
    msg = _wire(pixels, encoding)
    buffer = np.frombuffer(msg.data, np.uint8)
    for owned in (image_to_array(msg), decode_modality(msg, modality)):
        np.testing.assert_array_equal(owned, pixels)
        assert not np.shares_memory(owned, buffer)
    for viewed in (image_to_array(msg, copy=False), decode_modality(msg, modality, copy=False)):
        np.testing.assert_array_equal(viewed, pixels)
        assert np.shares_memory(viewed, buffer)
    padded = _wire(pixels, encoding, pad=3)
    packed = decode_modality(padded, modality, copy=False)
    np.testing.assert_array_equal(packed, pixels)
    assert packed.flags.c_contiguous and not np.shares_memory(packed, np.frombuffer(padded.data, np.uint8))


# ----------------------------------------------------------------------------------------------- compressed
class _Compressed:
    def __init__(self, fmt: str, data: bytes) -> None:
        self.format, self.data = fmt, data


RED = np.zeros((6, 8, 3), np.uint8)
RED[..., 0] = 255


def _png(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


@pytest.mark.parametrize(
    ("decode", "message"),
    [
        (
            lambda: decode_compressed_image(_Compressed("rgb8; jpeg compressed bgr8", b""), "rgb"),
            "corrupt jpeg compressed bgr8 payload (0 bytes): OpenCV could not decode it",
        ),
        (
            lambda: decode_compressed_image(_Compressed("", b"\x01\x02\x03"), "rgb"),
            "corrupt compressed image payload (3 bytes): OpenCV could not decode it",
        ),
        (
            lambda: decode_compressed_image(_Compressed("16UC1; compressedDepth png", b"\x00" * 20), "rgb"),
            "format '16UC1; compressedDepth png' is a depth image; not allowed for modality 'rgb'",
        ),
        (
            lambda: decode_compressed_image(_Compressed("png", _png(np.zeros((4, 4, 3), np.uint16))), "event"),
            "event: compressed image has uint16 pixels, expected 8-bit",
        ),
        (
            lambda: decode_compressed_depth(_Compressed("16UC1; png", b"\x00" * 20)),
            "format '16UC1; png' is not compressedDepth (expected e.g. '32FC1; compressedDepth png')",
        ),
        (
            lambda: decode_compressed_depth(_Compressed("32FC1; compressedDepth png", b"\x00" * 12)),
            "corrupt compressedDepth payload: 12 bytes, header alone is 12",
        ),
        (
            lambda: decode_compressed_depth(_Compressed("32FC1; compressedDepth png", b"\x00" * 16)),
            "corrupt compressedDepth png payload (4 bytes): OpenCV could not decode it",
        ),
        (
            lambda: decode_compressed_depth(_Compressed("16UC1; compressedDepth png", bytes(12) + _png(RED[..., 0]))),
            "compressedDepth PNG holds uint8 (6, 8), expected 16-bit mono",
        ),
        (
            lambda: decode_compressed_depth(
                _Compressed("8UC1; compressedDepth png", bytes(12) + _png(np.zeros((2, 2), np.uint16)))
            ),
            "compressedDepth of '8UC1' is not decoded (16UC1 or 32FC1)",
        ),
    ],
)
def test_compressed_errors_say_exactly_what_is_wrong(decode, message: str) -> None:
    """An empty payload is a clear ImageDecodeError too, never OpenCV's own exception."""
    with pytest.raises(ImageDecodeError) as error:
        decode()
    assert _message(error) == message


def test_the_format_splits_at_its_first_semicolon_as_upstream_does() -> None:
    """image_transport's subscribers take the encoding before the first ';' (``format.find(';')``)."""
    colour = decode_compressed_image(_Compressed("rgb8; png compressed rgb8; extra", _png(RED)), "rgb")
    assert colour[..., 0].min() == 255 and colour[..., 1:].max() == 0
    millimetres = np.array([[500, 1500]], np.uint16)
    depth = decode_compressed_depth(_Compressed("16UC1; compressedDepth png; level 9", bytes(12) + _png(millimetres)))
    np.testing.assert_allclose(depth, [[0.5, 1.5]])


def test_mono_compressed_events_stay_mono_and_mono16_depth_is_millimetres() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    event = decode_compressed_image(_Compressed("mono8; png compressed mono8", _png(gray)), "event")
    np.testing.assert_array_equal(event, gray)
    millimetres = np.array([[0, 2500]], np.uint16)
    depth = decode_compressed_depth(_Compressed("mono16; compressedDepth png", bytes(12) + _png(millimetres)))
    assert np.isnan(depth[0, 0]) and depth[0, 1] == pytest.approx(2.5)


def _upstream_header(depth_max: float, quantization: float) -> tuple[int, np.float32, np.float32]:
    """``ConfigHeader``: format INV_DEPTH (0), depthQuantA = z0 (z0 + 1), depthQuantB = 1 - A / depthMax (floats)."""
    z0, depth_max_f = np.float32(quantization), np.float32(depth_max)
    quant_a = np.float32(z0 * (z0 + np.float32(1.0)))
    return 0, quant_a, np.float32(np.float32(1.0) - quant_a / depth_max_f)


def _upstream_inverse_depth(metres: np.ndarray, depth_max: float, quantization: float) -> np.ndarray:
    """upstream's 32FC1 loop: ``d < depthMax ? (ushort)(A / d + B) : 0`` (NaN and +Inf fail the test: 0). For
    d <= 0 upstream's cast is undefined behaviour; the encoder writes 0 there (REP 118: no return)."""
    _, quant_a, quant_b = _upstream_header(depth_max, quantization)
    out = np.zeros(metres.shape, np.uint16)
    for index, d in np.ndenumerate(metres.astype(np.float32)):
        if d < np.float32(depth_max) and d > 0:
            out[index] = np.uint16(quant_a / d + quant_b)
    return out


def _upstream_millimetres(metres: np.ndarray, depth_max: float) -> np.ndarray:
    """upstream's 16UC1 path on the rounded millimetres: ``> (ushort)(depth_max * 1000) ? 0``."""
    out = np.zeros(metres.shape, np.uint16)
    for index, d in np.ndenumerate(metres):
        if np.isfinite(d) and d > 0:
            millimetres = round(float(d) * 1000.0)
            out[index] = 0 if millimetres > int(np.float32(depth_max * 1000.0)) else millimetres
    return out


DEPTHS = np.array([[0.3, 0.5, 1.0, 2.5, 9.99, 10.0], [10.004, 10.5, np.nan, np.inf, -1.0, 0.0]], np.float32)


def _payload(data: bytes) -> tuple[tuple, np.ndarray]:
    header = struct.unpack("<iff", data[:12])
    image = cv2.imdecode(np.frombuffer(data[12:], np.uint8), cv2.IMREAD_UNCHANGED)
    return header, image


@pytest.mark.parametrize(("depth_max", "quantization"), [(10.0, 100.0), (12.5, 80.0)])
def test_compressed_depth_encoder_writes_what_upstreams_encoder_writes(depth_max: float, quantization: float) -> None:
    """Header and quantised pixels of both encodings equal upstream's, depth_max included (kept in 16UC1, dropped
    in 32FC1), without a numpy warning (a recording tool warning per frame is noise)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fmt, data = encode_compressed_depth(DEPTHS, "32FC1", depth_max, quantization)
        fmt16, data16 = encode_compressed_depth(DEPTHS, "16UC1", depth_max, quantization)
    assert (fmt, fmt16) == ("32FC1; compressedDepth png", "16UC1; compressedDepth png")
    header, image = _payload(data)
    assert header == _upstream_header(depth_max, quantization)
    np.testing.assert_array_equal(image, _upstream_inverse_depth(DEPTHS, depth_max, quantization))
    header16, image16 = _payload(data16)
    assert header16 == (0, 0.0, 0.0)
    np.testing.assert_array_equal(image16, _upstream_millimetres(DEPTHS, depth_max))


def test_compressed_depth_defaults_are_upstreams_and_other_encodings_are_refused() -> None:
    """compressed_depth_image_transport's parameter defaults: depth_max 10 m, depth_quantization 100, 32FC1."""
    assert encode_compressed_depth(DEPTHS) == encode_compressed_depth(DEPTHS, "32FC1", 10.0, 100.0)
    assert _payload(encode_compressed_depth(DEPTHS)[1])[0] == (0, 10100.0, -1009.0)
    with pytest.raises(ValueError) as error:
        encode_compressed_depth(DEPTHS, "mono8")
    assert _message(error) == "compressedDepth encodes 16UC1 or 32FC1, not 'mono8'"


def test_quantised_depth_decodes_to_float32_without_numpy_warnings() -> None:
    """Parameters that put an inverse-depth value on depthQuantB (A = 2, B = 0) divide by zero on a no-data pixel:
    NaN, silently."""
    header = struct.pack("<iff", 0, 2.0, 0.0)
    inverse = np.array([[0, 4]], np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metres = decode_compressed_depth(_Compressed("32FC1; compressedDepth png", header + _png(inverse)))
    assert metres.dtype == np.float32
    assert np.isnan(metres[0, 0]) and metres[0, 1] == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------------------- CDR
def _typestore():
    store = get_typestore(Stores.ROS2_KILTED)
    definition = (ROOT / "msg" / "vendor" / "event_camera_msgs" / "msg" / "EventPacket.msg").read_text()
    store.register(get_types_from_msg(definition, "event_camera_msgs/msg/EventPacket"))
    return store


def _image(store, sec: int, frame_id: str, encoding: str = "mono16"):
    types = store.types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=5), frame_id=frame_id
    )
    data = np.arange(8, dtype=np.uint8)
    return types["sensor_msgs/msg/Image"](header=header, height=2, width=2, encoding=encoding, is_bigendian=0, step=4,
                                          data=data)  # fmt: skip


@pytest.mark.parametrize("little_endian", [True, False])
def test_images_of_either_cdr_byte_order_and_negative_stamps_are_read(little_endian: bool) -> None:
    """CDR allows big-endian payloads (rosbags writes them); a stamp before 1970 is an int32 second < 0."""
    store = _typestore()
    raw = store.serialize_cdr(_image(store, -3, "cam"), "sensor_msgs/msg/Image", little_endian=little_endian)
    view = read_image(raw)
    assert (view.stamp_ns, view.frame_id, view.height, view.width, view.encoding) == (-3 * 10**9 + 5, "cam", 2, 2,
                                                                                      "mono16")  # fmt: skip
    assert (view.step, bytes(view.data)) == (4, bytes(range(8)))
    assert read_header(raw) == (-3 * 10**9 + 5, "cam")


def test_written_images_keep_a_negative_stamp() -> None:
    raw = write_image(-2 * 10**9 + 7, "cam", 1, 1, "mono8", 1, np.zeros(1, np.uint8))
    assert read_header(raw) == (-2 * 10**9 + 7, "cam")


def _header_bytes(frame: bytes, length: int | None = None) -> bytes:
    size = len(frame) if length is None else length
    return b"\x00\x01\x00\x00" + struct.pack("<iII", 1, 2, size) + frame


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x00\x01\x00\x00", "truncated at byte 4 (needs 4 more of 4)"),
        (_header_bytes(b"cam"), "string without its terminating NUL"),
        (_header_bytes(b""), "string without its terminating NUL"),
    ],
)
def test_malformed_cdr_is_a_clear_error(raw: bytes, message: str) -> None:
    with pytest.raises(CdrError) as error:
        read_header(raw)
    assert _message(error) == message


def test_invalid_utf8_in_a_frame_id_is_replaced_not_raised() -> None:
    """rclpy's publisher cannot send it, but a bag or another DDS vendor can: a warning later, never an exception."""
    assert read_header(_header_bytes(b"c\xffm\x00")) == (1_000_000_002, "c\ufffdm")
    store = _typestore()
    packet = store.types["event_camera_msgs/msg/EventPacket"]
    raw = bytearray(_packet_bytes(store, packet, "cam", "evt3", True))
    at = raw.index(b"cam")
    raw[at + 1] = 0xFF
    assert read_event_packet(bytes(raw)).frame_id == "c\ufffdm"


def _packet_bytes(store, packet_type, frame_id: str, encoding: str, little_endian: bool, events: bytes = b"\x01\x02"):
    types = store.types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=7, nanosec=9), frame_id=frame_id
    )
    msg = packet_type(header=header, height=4, width=8, seq=11, time_base=2**40 + 1, encoding=encoding,
                      is_bigendian=not little_endian, events=np.frombuffer(events, np.uint8))  # fmt: skip
    return bytes(store.serialize_cdr(msg, "event_camera_msgs/msg/EventPacket", little_endian=little_endian))


@pytest.mark.parametrize("little_endian", [True, False])
def test_event_packets_of_either_cdr_byte_order_are_read(little_endian: bool) -> None:
    store = _typestore()
    packet = store.types["event_camera_msgs/msg/EventPacket"]
    view = read_event_packet(_packet_bytes(store, packet, "camera", "mono", little_endian, bytes(range(16))))
    assert (view.stamp_ns, view.frame_id, view.height, view.width, view.seq) == (7_000_000_009, "camera", 4, 8, 11)
    assert (view.time_base, view.encoding, view.is_bigendian, bytes(view.events)) == (2**40 + 1, "mono",
                                                                                      not little_endian,
                                                                                      bytes(range(16)))  # fmt: skip


def test_event_packet_strings_are_read_as_sent_and_refused_where_meaningless() -> None:
    """An empty encoding is read (and refused by the decoder, a warning); a non-ASCII one too (replaced
    characters); an empty frame_id has its NUL, a length of 0 is malformed."""
    store = _typestore()
    packet = store.types["event_camera_msgs/msg/EventPacket"]
    for encoding in ("", "évt3"):
        view = read_event_packet(_packet_bytes(store, packet, "c", encoding, True))
        assert view.encoding == encoding.encode().decode("ascii", errors="replace")
        with pytest.raises(ImageDecodeError, match="is not decoded"):
            PacketDecoder().decode(view)
    raw = bytearray(_packet_bytes(store, packet, "", "evt3", True))
    assert read_event_packet(bytes(raw)).frame_id == ""
    raw[12:16] = struct.pack("<I", 0)  # frame_id length 0: not even its NUL
    with pytest.raises(CdrError) as error:
        read_event_packet(bytes(raw))
    assert _message(error).startswith(f"event packet of {len(raw)} bytes announces")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not a CDR message (representation missing)"),
        (b"\x07\x00\x00\x00" + bytes(40), "not a CDR message (representation 0700)"),
        (b"\x00\x01\x00\x00" + bytes(10), "truncated event packet (14 bytes): "),
    ],
)
def test_malformed_event_packets_are_a_clear_error(raw: bytes, message: str) -> None:
    with pytest.raises(CdrError) as error:
        read_event_packet(raw)
    assert _message(error).startswith(message)


def test_an_event_packet_announcing_more_events_than_it_holds_is_refused() -> None:
    store = _typestore()
    raw = _packet_bytes(store, store.types["event_camera_msgs/msg/EventPacket"], "c", "evt3", True, bytes(6))
    with pytest.raises(CdrError) as error:
        read_event_packet(raw[:-2])
    assert _message(error) == f"event packet of {len(raw) - 2} bytes announces 6 bytes of events at byte {len(raw) - 6}"
