"""Event-camera messages → :class:`memsam_core.events.EventBatch` (ROS time in ns, pixel, polarity).

Decoded ``event_camera_msgs/EventPacket`` encodings (ros-event-camera/event_camera_codecs defines them):

* ``mono``: 64-bit words, bit 63 polarity, bits 48–62 y, 32–47 x, 0–31 nanoseconds after the header stamp;
* ``evt3``: Prophesee's EVT 3.0 16-bit words (what ``metavision_driver`` publishes): y, x + polarity, vectors of 8
  or 12 events, 24-bit microsecond time with roll-over. Event ROS time = header stamp + (sensor time − the
  packet's first sensor time);
* ``trigger``: external-trigger words, no pixel events (an empty batch).

Not decoded: ``evt2``/``evt2.1`` and ``libcaer`` encodings (the node says so, naming the encoding). Also decoded:
``dvs_msgs/EventArray`` (one message per event, each with its own stamp).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memsam_core.events import EventBatch
from memsam_ros.inputs.codec import ImageDecodeError, as_bytes

DECODED_ENCODINGS = ("mono", "evt3", "trigger")


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
    if encoding == "evt3":
        return _decode_evt3(data, bool(msg.is_bigendian), _stamp_ns(msg.header.stamp), height, width)
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


_EVT3_ADDR_Y, _EVT3_ADDR_X, _EVT3_VECT_BASE_X, _EVT3_VECT_12, _EVT3_VECT_8 = 0x0, 0x2, 0x3, 0x4, 0x5
_EVT3_TIME_LOW, _EVT3_TIME_HIGH = 0x6, 0x8


def _last_seen(mask: np.ndarray) -> np.ndarray:
    """For every word, the index of the latest word at or before it where ``mask`` holds (-1 before the first)."""
    return np.maximum.accumulate(np.where(mask, np.arange(mask.size), -1))


def _decode_evt3(data: np.ndarray, big_endian: bool, stamp_ns: int, height: int, width: int) -> EventBatch:
    """EVT 3.0 words → events, vectorised: every stateful field (y, time, vector base) is the latest word of its
    kind before the event word, found with a running maximum over word indices."""
    if data.size % 2:
        raise ImageDecodeError(f"evt3 packet of {data.size} bytes is not a whole number of 16-bit words")
    words = data.view(">u2" if big_endian else "<u2").astype(np.int64)
    code, payload = words >> 12, words & 0xFFF
    # time = roll-overs << 24 | high << 12 | low, in microseconds (a high word going back by more than 10 rolls over)
    high_at = np.flatnonzero(code == _EVT3_TIME_HIGH)
    highs = payload[high_at]
    rolls = np.concatenate([[0], np.cumsum((highs[1:] < highs[:-1]) & (highs[:-1] - highs[1:] > 10))])
    high_value = np.zeros(words.size, np.int64)
    high_value[high_at] = (rolls << 24) | (highs << 12)
    last_high, last_low = _last_seen(code == _EVT3_TIME_HIGH), _last_seen(code == _EVT3_TIME_LOW)
    valid = np.flatnonzero((code == _EVT3_TIME_LOW) & (last_high >= 0))  # time known from a high then a low word
    timed = np.arange(words.size) >= (valid[0] if valid.size else words.size)
    time_us = np.where(timed, high_value[np.maximum(last_high, 0)] | payload[np.maximum(last_low, 0)], 0)
    last_y = _last_seen(code == _EVT3_ADDR_Y)
    y_value = np.where(last_y >= 0, payload[np.maximum(last_y, 0)] & 0x7FF, -1)
    # single events
    single = np.flatnonzero((code == _EVT3_ADDR_X) & timed)
    xs, ys = [payload[single] & 0x7FF], [y_value[single]]
    ps, ts = [(payload[single] >> 11) & 1], [time_us[single]]
    # vectors: base x from the latest VECT_BASE_X, advanced by 12 / 8 per vector word since it
    is_vector = (code == _EVT3_VECT_12) | (code == _EVT3_VECT_8)
    advance = np.where(code == _EVT3_VECT_12, 12, np.where(code == _EVT3_VECT_8, 8, 0))
    advanced = np.cumsum(advance) - advance  # advance of the vector words before this one
    last_base = _last_seen(code == _EVT3_VECT_BASE_X)
    base = np.maximum(last_base, 0)
    vector = np.flatnonzero(is_vector & timed & (last_base >= 0))
    if vector.size:
        start_x = (payload[base[vector]] & 0x7FF) + advanced[vector] - advanced[base[vector]]
        bits = (payload[vector, None] >> np.arange(12)) & 1
        bits[code[vector] == _EVT3_VECT_8, 8:] = 0
        row, column = np.nonzero(bits)
        xs.append(start_x[row] + column)
        ys.append(y_value[vector][row])
        ps.append((payload[base[vector]][row] >> 11) & 1)
        ts.append(time_us[vector][row])
    x, y, p, t = (np.concatenate(part) for part in (xs, ys, ps, ts))
    inside = (y >= 0) & (x < width) & (y < height)
    x, y, p, t = x[inside], y[inside], p[inside], t[inside]
    first = int(time_us[timed].min()) if timed.any() else 0
    order = np.argsort(t, kind="stable")
    return EventBatch(
        stamp_ns + (t[order] - first) * 1000,
        x[order].astype(np.uint16),
        y[order].astype(np.uint16),
        p[order].astype(bool),
        height,
        width,
    )


def encode_evt3(batch: EventBatch) -> bytes:
    """EVT 3.0 words for ``batch`` (single-event ``ADDR_X`` words only, times in microseconds since the first
    event): for tests and bags. Its decoding has ROS time = packet stamp + (t − first t)."""
    order = np.argsort(batch.t_ns, kind="stable")
    time_us = (batch.t_ns[order] - batch.t_ns[order][0]) // 1000 if len(batch) else batch.t_ns
    words: list[int] = []
    high = low = y = None
    for t, x_, y_, p in zip(
        time_us.tolist(), batch.x[order].tolist(), batch.y[order].tolist(), batch.polarity[order].tolist()
    ):
        if (t >> 12) != high:
            high = t >> 12
            words.append((_EVT3_TIME_HIGH << 12) | (high & 0xFFF))
            low = None
        if (t & 0xFFF) != low:
            low = t & 0xFFF
            words.append((_EVT3_TIME_LOW << 12) | low)
        if y_ != y:
            y = y_
            words.append((_EVT3_ADDR_Y << 12) | y_)
        words.append((_EVT3_ADDR_X << 12) | (int(p) << 11) | x_)
    return np.asarray(words, dtype="<u2").tobytes()


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
