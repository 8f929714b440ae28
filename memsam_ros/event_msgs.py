"""Event-camera messages → :class:`memsam_core.events.EventBatch` (ROS time in ns, pixel, polarity).

Decoded: ``event_camera_msgs/EventPacket`` with encoding ``mono`` (64-bit words: bit 63 polarity, bits 48–62 y,
32–47 x, 0–31 nanoseconds after the packet; ROS time = header stamp + that offset, as the package documents) and
``trigger`` (no pixel events: an empty batch), and ``dvs_msgs/EventArray``. Not decoded: the camera-native
``evt3``/``evt2.1`` encodings of the Prophesee drivers (stateful 16/64-bit vectorised words); run those drivers'
``event_camera_codecs`` republisher to ``mono``, or the node warns that the encoding is not decoded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memsam_core.events import EventBatch
from memsam_ros.codec import ImageDecodeError, as_bytes

DECODED_ENCODINGS = ("mono", "trigger")


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def decode_event_packet(msg: Any) -> EventBatch:
    """``event_camera_msgs/EventPacket`` (``mono``/``trigger``) → events in ROS time."""
    encoding = str(msg.encoding)
    height, width = int(msg.height), int(msg.width)
    if encoding not in DECODED_ENCODINGS:
        raise ImageDecodeError(f"event encoding {encoding!r} is not decoded (decoded: {', '.join(DECODED_ENCODINGS)})")
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"event packet has sensor size {width}x{height}")
    data = as_bytes(msg.events)
    if data.size % 8:
        raise ImageDecodeError(f"event packet of {data.size} bytes is not a whole number of 64-bit events")
    words = data.view(">u8" if msg.is_bigendian else "<u8").astype(np.uint64)
    if encoding == "trigger":
        words = words[:0]
    offset_ns = (words & np.uint64(0xFFFFFFFF)).astype(np.int64)
    return EventBatch(
        t_ns=_stamp_ns(msg.header.stamp) + offset_ns,
        x=((words >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.uint16),
        y=((words >> np.uint64(48)) & np.uint64(0x7FFF)).astype(np.uint16),
        polarity=(words >> np.uint64(63)).astype(bool),
        height=height,
        width=width,
    )


def encode_event_packet(batch: EventBatch, stamp_ns: int) -> bytes:
    """``mono`` words for ``batch`` relative to ``stamp_ns`` (the packet's header stamp): for bags and tests."""
    offset = batch.t_ns - stamp_ns
    if batch.t_ns.size and (offset.min() < 0 or offset.max() > 0xFFFFFFFF):
        raise ValueError("mono events must lie within 4.29 s after the packet stamp")
    words = (
        (batch.polarity.astype(np.uint64) << np.uint64(63))
        | (batch.y.astype(np.uint64) << np.uint64(48))
        | (batch.x.astype(np.uint64) << np.uint64(32))
        | offset.astype(np.uint64)
    )
    return words.astype("<u8").tobytes()


def decode_event_array(msg: Any) -> EventBatch:
    """``dvs_msgs/EventArray`` → events in ROS time (each event carries its own stamp)."""
    height, width = int(msg.height), int(msg.width)
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"event array has sensor size {width}x{height}")
    events = msg.events
    count = len(events)
    t_ns = np.fromiter((_stamp_ns(e.ts) for e in events), dtype=np.int64, count=count)
    x = np.fromiter((e.x for e in events), dtype=np.uint16, count=count)
    y = np.fromiter((e.y for e in events), dtype=np.uint16, count=count)
    polarity = np.fromiter((bool(e.polarity) for e in events), dtype=bool, count=count)
    return EventBatch(t_ns, x, y, polarity, height, width)
