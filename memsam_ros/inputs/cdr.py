"""``std_msgs/Header`` and ``sensor_msgs/Image`` straight from and to serialized CDR (XCDR1, as rmw sends it).

The node subscribes to its image topics raw: the callback on the executor thread reads only the header
(a few bytes) so the synchroniser can place the message, and the pixels are decoded later, on the
inference thread, and only for messages that go into a set. :class:`ImageView` has the attributes of an
Image message, so :mod:`memsam_ros.inputs.codec` decodes it like one, straight from the received buffer. The
outputs go the other way: :func:`write_image` serializes an array with one copy (rclpy would make three:
into the message's ``array``, into the C struct, into CDR). Event-camera packets are read the same way
(:func:`read_event_packet`): a camera sends 1,000 a second, and only their fields and time words are read on arrival.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from memsam_ros.inputs.stamps import NS_PER_S

_ENCAPSULATION = 4  # representation identifier (2 bytes) + options (2 bytes)


class CdrError(ValueError):
    """The bytes are not a CDR message of the expected type."""


class _Reader:
    """Sequential CDR reader; alignment is relative to the end of the encapsulation header."""

    def __init__(self, buf: bytes | memoryview) -> None:
        if len(buf) < _ENCAPSULATION:
            raise CdrError(f"{len(buf)} bytes: too short for a CDR message")
        self.buf = memoryview(buf)
        kind = bytes(self.buf[:2])
        if kind not in (b"\x00\x00", b"\x00\x01"):  # CDR_BE, CDR_LE (what rmw_fastrtps writes)
            raise CdrError(f"unsupported CDR representation {kind.hex()}")
        self.order = "<" if kind[1] else ">"
        self.pos = _ENCAPSULATION

    def _align(self, size: int) -> None:
        self.pos += (-(self.pos - _ENCAPSULATION)) % size

    def _take(self, size: int) -> memoryview:
        if self.pos + size > len(self.buf):
            raise CdrError(f"truncated at byte {self.pos} (needs {size} more of {len(self.buf)})")
        view = self.buf[self.pos : self.pos + size]
        self.pos += size
        return view

    def u32(self) -> int:
        self._align(4)
        return struct.unpack(self.order + "I", self._take(4))[0]

    def i32(self) -> int:
        self._align(4)
        return struct.unpack(self.order + "i", self._take(4))[0]

    def u8(self) -> int:
        return self._take(1)[0]

    def string(self) -> str:
        length = self.u32()
        raw = bytes(self._take(length))
        if length == 0 or raw[-1] != 0:
            raise CdrError("string without its terminating NUL")
        return raw[:-1].decode("utf-8", errors="replace")

    def octets(self) -> memoryview:
        return self._take(self.u32())


def _header(reader: _Reader) -> tuple[int, str]:
    sec, nanosec = reader.i32(), reader.u32()
    return sec * NS_PER_S + nanosec, reader.string()


def read_header(raw: bytes | memoryview) -> tuple[int, str]:
    """``(stamp_ns, frame_id)`` of any message whose first field is a ``std_msgs/Header``."""
    return _header(_Reader(raw))


@dataclass(frozen=True, slots=True)
class ImageView:
    """A ``sensor_msgs/Image`` over its received bytes: same attributes, ``data`` not copied."""

    stamp_ns: int
    frame_id: str
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: memoryview


def read_image(raw: bytes | memoryview) -> ImageView:
    """Parse a serialized ``sensor_msgs/Image``; raises :class:`CdrError` for anything else."""
    reader = _Reader(raw)
    stamp_ns, frame_id = _header(reader)
    height, width = reader.u32(), reader.u32()
    encoding = reader.string()
    is_bigendian = reader.u8()
    step = reader.u32()
    data = reader.octets()
    return ImageView(stamp_ns, frame_id, height, width, encoding, is_bigendian, step, data)


@dataclass(slots=True)
class EventPacketView:
    """An ``event_camera_msgs/EventPacket`` (or ``event_array_msgs/EventArray``, same fields) over its received bytes:
    the attributes of the message, ``events`` not copied. Not frozen: one is made per packet, 1,000 a second, and
    a frozen dataclass takes five times as long to build."""

    stamp_ns: int
    frame_id: str
    height: int
    width: int
    seq: int
    time_base: int
    encoding: str
    is_bigendian: int
    events: memoryview


_EVENT_PACKET_FORMATS = {
    order: tuple(struct.Struct(order + f) for f in ("iII", "I", "II", "QQI")) for order in ("<", ">")
}


def read_event_packet(raw: bytes | memoryview) -> EventPacketView:
    """Parse a serialized EventPacket (a few µs: one event camera sends 1,000 a second); raises :class:`CdrError`."""
    buf = memoryview(raw)
    kind = bytes(buf[:2])
    if kind not in (b"\x00\x00", b"\x00\x01"):
        raise CdrError(f"not a CDR message (representation {kind.hex() or 'missing'})")
    stamp, length, layout, fields = _EVENT_PACKET_FORMATS["<" if kind[1] else ">"]
    try:  # offsets count from the end of the encapsulation header; CDR aligns each field to its size
        sec, nanosec, frame_length = stamp.unpack_from(buf, 4)
        at = 12 + frame_length
        frame_id = bytes(buf[4 + 12 : 4 + at - 1]).decode("utf-8", errors="replace")
        at += -at % 4
        height, width = layout.unpack_from(buf, 4 + at)
        at += 8
        at += -at % 8
        seq, time_base, encoding_length = fields.unpack_from(buf, 4 + at)
        at += 20
        encoding = bytes(buf[4 + at : 4 + at + encoding_length - 1]).decode("ascii", errors="replace")
        at += encoding_length
        is_bigendian = buf[4 + at]
        at += 1 + (-(at + 1) % 4)
        (size,) = length.unpack_from(buf, 4 + at)
    except (struct.error, IndexError) as err:
        raise CdrError(f"truncated event packet ({len(buf)} bytes): {err}") from None
    start = 4 + at + 4
    if start + size > len(buf) or frame_length == 0 or encoding_length == 0:
        raise CdrError(f"event packet of {len(buf)} bytes announces {size} bytes of events at byte {start}")
    events = buf[start : start + size]
    return EventPacketView(
        sec * NS_PER_S + nanosec, frame_id, height, width, seq, time_base, encoding, is_bigendian, events
    )


def _string(text: str, offset: int) -> tuple[bytes, int]:
    """A CDR string at body ``offset`` (4-aligned): length with its NUL, the bytes; returns (bytes, new offset)."""
    raw = text.encode("utf-8") + b"\x00"
    return struct.pack("<I", len(raw)) + raw, offset + 4 + len(raw)


def _pad(offset: int, size: int) -> bytes:
    return b"\x00" * ((-offset) % size)


def write_image(stamp_ns: int, frame_id: str, height: int, width: int, encoding: str, step: int, data: Any) -> bytes:
    """A serialized little-endian ``sensor_msgs/Image`` with ``data`` (any buffer) copied once, for
    ``publisher.publish(bytes)``: cheaper than building the message object and having rclpy convert it."""
    sec, nanosec = divmod(stamp_ns, NS_PER_S)
    parts = [b"\x00\x01\x00\x00", struct.pack("<iI", sec, nanosec)]
    offset = 8
    frame, offset = _string(frame_id, offset)
    parts += [frame, _pad(offset, 4)]
    offset += (-offset) % 4
    parts.append(struct.pack("<II", height, width))
    offset += 8
    enc, offset = _string(encoding, offset)
    parts += [enc, b"\x00"]  # is_bigendian = 0
    offset += 1
    parts.append(_pad(offset, 4))
    offset += (-offset) % 4
    view = memoryview(data).cast("B")
    parts += [struct.pack("<II", step, view.nbytes), view]
    return b"".join(parts)
