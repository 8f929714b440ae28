"""Event-camera packets → events, decoded as ros-event-camera/event_camera_codecs decodes them.

A packet (``event_camera_msgs/EventPacket``, or ``event_array_msgs/EventArray``: its name before the rename, same
fields) carries events in a compact encoding. The decoders return upstream's event time ``t`` in nanoseconds; what
that is in ROS time is the stream's business (:mod:`memsam_ros.inputs.event_stream`):

* ``evt3``: Prophesee's EVT 3.0 16-bit words, as ``metavision_driver`` publishes them. A stateful word stream
  (time high/low, row, vector base x + polarity) that the driver cuts wherever a buffer ends, so
  :class:`Evt3Decoder` keeps that state from one packet to the next, as upstream does (one decoder per topic).
  ``t`` = the sensor clock (µs × 1000); ``time_base`` is not used (its content is undefined for evt3).
* ``mono``: 64-bit words, polarity bit 63, y bits 48–62, x 32–47, ``dt`` 0–31 (ns); ``t = time_base + dt``.
* ``trigger``: 64-bit external-trigger words, edge bit 63, id bits 48–62, ``dt`` 0–31; ``t = time_base + dt``.

EVT3 as upstream's ``evt3::Decoder`` decodes it (``tests/test_event_reference_data.py`` reproduces upstream's own
checksums on its recordings): nothing but time words counts until a TIME_HIGH and then a TIME_LOW give a valid time;
a TIME_HIGH more than 10 steps below the previous one is a roll-over (+2^24 µs), a smaller step back is jitter;
ADDR_Y sets the row (11 bits; the system-type bit is ignored), ADDR_X is one event (x 11 bits, polarity bit 11),
VECT_BASE_X sets the vector base x and polarity, VECT_12/VECT_8 are 12/8 events at base x + bit (uint16 arithmetic)
and advance the base by 12/8, EXT_TRIGGER is a trigger (edge bit 0, id bits 8–11); OTHERS and CONTINUED words
are skipped; events outside the sensor size are dropped. Where this decoder differs from upstream, on purpose:

* a packet that ends inside a 16-bit word keeps that byte for the next packet (upstream drops it and decodes the
  rest of the stream shifted by one byte; drivers send whole words);
* a TIME_HIGH seen in an earlier packet counts for the first valid time (upstream needs both in one packet), so
  decoding packets one by one always equals decoding their concatenation; this only matters at the stream start;
* words of an unknown code are skipped and counted (upstream throws, losing the rest of the packet); code 9, the
  padding some cameras send, is skipped silently.

Also here: ``dvs_msgs/EventArray`` (one message per event, each with its own ROS stamp) and encoders for tests, bags
and benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memsam_core.events import EventBatch, TriggerEvents
from memsam_ros.inputs.codec import ImageDecodeError

DECODED_ENCODINGS = ("mono", "evt3", "trigger")

ADDR_Y, ADDR_X, VECT_BASE_X, VECT_12, VECT_8, TIME_LOW = 0x0, 0x2, 0x3, 0x4, 0x5, 0x6
TIME_HIGH, PADDING, EXT_TRIGGER = 0x8, 0x9, 0xA
UNKNOWN_CODE = np.zeros(16, bool)
UNKNOWN_CODE[[0x1, 0xB, 0xC, 0xD]] = True  # 7, 14, 15: CONTINUED/OTHERS (skipped); 9: padding
ROLL_OVER_MIN_STEP = 10  # a TIME_HIGH this much or less below the previous one is jitter, not a roll-over
UNKNOWN_ROW = 0xFFFF  # after a resync: no event until the next ADDR_Y (it fails the height check, as upstream's does)
_ROLL_BITS = 24


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass
class DecodedEvents:
    """One decoding pass: change (CD) events and trigger events, in upstream's event time; ``unknown_words``:
    EVT3 words of an unknown code that were skipped."""

    cd: EventBatch
    triggers: TriggerEvents
    unknown_words: int = 0


# ---------------------------------------------------------------------------------------------------- EVT3 time
@dataclass(slots=True)
class Evt3Time:
    """The time part of the EVT3 state: the last TIME_HIGH (µs, with the roll-over count above bit 24), the last
    TIME_LOW, whether a valid time was reached, whether a TIME_HIGH was seen, and a byte of a cut word."""

    high: int = 0
    low: int = 0
    valid: bool = False
    high_seen: bool = False
    carry: bytes = b""

    @property
    def us(self) -> int:
        return self.high | self.low

    def copy(self) -> Evt3Time:
        return Evt3Time(self.high, self.low, self.valid, self.high_seen, self.carry)


def _words(data: Any, time: Evt3Time, big_endian: bool) -> np.ndarray:
    """The packet's whole 16-bit words (a view where possible) after the byte carried from the previous packet;
    keeps a last odd byte in ``time.carry``."""
    buf = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    if time.carry:
        buf = np.concatenate([np.frombuffer(time.carry, np.uint8), buf])
    whole = buf.size - buf.size % 2
    time.carry = buf[whole:].tobytes()
    return buf[:whole].view(">u2" if big_endian else "<u2")


def _segments(indices: np.ndarray, values: np.ndarray, before: int, size: int) -> np.ndarray:
    """Per word, the value of the latest of ``indices`` at or before it (``before`` ahead of the first)."""
    lengths = np.diff(np.concatenate(([0], indices, [size])))
    return np.repeat(np.concatenate(([before], values)), lengths)


def _high_values(highs: np.ndarray, time: Evt3Time) -> np.ndarray:
    """TIME_HIGH payloads (int64) → high times with the roll-over count, continuing from ``time``."""
    if not highs.size:
        return highs
    previous = np.concatenate(([(time.high >> 12) & 0xFFF], highs[:-1]))
    rolled = (highs < previous) & (previous - highs > ROLL_OVER_MIN_STEP)
    rolls = (time.high >> _ROLL_BITS) + np.cumsum(rolled)
    return (rolls << _ROLL_BITS) | (highs << 12)


@dataclass
class _TimePass:
    start: int  # first word after the first valid time (0 if the time was valid already)
    first_us: int | None  # the time at the packet start, or where it became valid (upstream's findFirstSensorTime)
    high_at: np.ndarray
    high_values: np.ndarray
    low_at: np.ndarray


def _time_pass(code: np.ndarray, payload: np.ndarray, time: Evt3Time) -> _TimePass:
    """Advance ``time`` over the words (only their time words matter) and say where events start to count."""
    size = code.size
    high_at, low_at = np.flatnonzero(code == TIME_HIGH), np.flatnonzero(code == TIME_LOW)
    highs = payload[high_at]
    high_values = _high_values(highs, time)
    start, first_us = 0, time.us if time.valid else None
    if not time.valid:
        if time.high_seen:
            candidates = low_at
        else:
            candidates = low_at[low_at > high_at[0]] if high_at.size else low_at[:0]
        start = int(candidates[0]) + 1 if candidates.size else size
        if candidates.size:
            last_high = np.searchsorted(high_at, candidates[0]) - 1
            high = int(high_values[last_high]) if last_high >= 0 else time.high
            first_us = high | int(payload[candidates[0]])
            time.valid = True
    if highs.size:
        time.high, time.high_seen = int(high_values[-1]), True
    if low_at.size:
        time.low = int(payload[low_at[-1]])
    return _TimePass(start, first_us, high_at, high_values, low_at)


@dataclass(slots=True)
class PacketTimes:
    """What an EVT3 packet says about time without decoding its events: the time at its start (upstream's
    ``findFirstSensorTime``) and at its end, in µs (None before the first valid time)."""

    first_us: int | None
    last_us: int | None


class Evt3TimeTracker:
    """The EVT3 decoder's time state alone: cheap enough to follow every packet on arrival (the time words are a
    fraction of a packet and no event is built), and equal to :class:`Evt3Decoder`'s time after the same bytes."""

    def __init__(self) -> None:
        self.time = Evt3Time()

    def reset(self) -> None:
        self.time = Evt3Time()

    def advance(self, data: Any, big_endian: bool = False) -> PacketTimes:
        time = self.time
        words = _words(data, time, big_endian)
        code = words >> 12
        if not time.valid:  # the stream start: where the first valid time is matters
            is_time = (code == TIME_HIGH) | (code == TIME_LOW)
            first = _time_pass(code[is_time].astype(np.int64), words[is_time].astype(np.int64) & 0xFFF, time).first_us
            return PacketTimes(first, time.us if time.valid else None)
        first = time.us  # valid: only the last TIME_HIGH (with its roll-overs) and the last TIME_LOW matter
        highs = words[code == TIME_HIGH]
        if highs.size:
            time.high = int(_high_values((highs & 0xFFF).astype(np.int64), time)[-1])
        low_from_end = code[::-1] == TIME_LOW
        last_low = int(np.argmax(low_from_end)) if code.size else 0
        if code.size and low_from_end[last_low]:
            time.low = int(words[code.size - 1 - last_low] & 0xFFF)
        return PacketTimes(first, time.us)

    def advance_many(self, payloads: list[Any], big_endian: bool = False) -> list[tuple[PacketTimes, Evt3Time]]:
        """:meth:`advance` over consecutive packets in one vectorised pass (an executor drain takes 20 at once);
        with each packet's times, the time state before it (where a decoder resynchronises)."""
        if not self.time.valid or len(payloads) < 3:  # the stream start, or too few to gain from one pass
            out = []
            for payload in payloads:
                before = self.time.copy()
                out.append((self.advance(payload, big_endian), before))
            return out
        time = self.time
        data = b"".join([time.carry, *payloads])
        starts = np.cumsum([len(time.carry), *(memoryview(p).nbytes for p in payloads)])  # each one's first byte, end
        whole = len(data) - len(data) % 2
        words = np.frombuffer(data, ">u2" if big_endian else "<u2", count=whole // 2)
        code = words >> 12
        high_at, low_at = np.flatnonzero(code == TIME_HIGH), np.flatnonzero(code == TIME_LOW)
        high_values = _high_values((words[high_at] & 0xFFF).astype(np.int64), time)
        boundary = starts // 2  # a packet owns the words that end inside it (a cut word is decoded by the next)
        last_high, last_low = np.searchsorted(high_at, boundary) - 1, np.searchsorted(low_at, boundary) - 1
        highs = np.where(last_high >= 0, np.concatenate((high_values, [0]))[last_high], time.high).tolist()
        lows = np.where(last_low >= 0, np.concatenate((words[low_at] & 0xFFF, [0]))[last_low], time.low).tolist()
        edges = starts.tolist()
        out = []
        for k in range(len(payloads)):
            carry = data[edges[k] - 1 : edges[k]] if edges[k] % 2 else b""
            before = Evt3Time(highs[k], lows[k], True, True, carry)
            out.append((PacketTimes(highs[k] | lows[k], highs[k + 1] | lows[k + 1]), before))
        time.high, time.low, time.carry = highs[-1], lows[-1], data[whole:]
        return out


# ---------------------------------------------------------------------------------------------------- EVT3 events
@dataclass
class Evt3Decoder:
    """EVT 3.0 words → events with upstream's state kept across calls (feed a topic's packets in order)."""

    width: int
    height: int
    time: Evt3Time = field(default_factory=Evt3Time)
    row: int = 0
    base_x: int = 0  # -1: unknown (after a resync) until the next VECT_BASE_X
    polarity: int = 0

    def reset(self) -> None:
        """A new stream: upstream's initial state."""
        self.time, self.row, self.base_x, self.polarity = Evt3Time(), 0, 0, 0

    def resync(self, time: Evt3Time) -> None:
        """Continue at a later packet (the ones between were skipped): its time state from an
        :class:`Evt3TimeTracker`; the row and vector base are unknown until the stream sends them again."""
        self.time, self.row, self.base_x = time.copy(), UNKNOWN_ROW, -1

    def decode(self, data: Any, big_endian: bool = False) -> DecodedEvents:
        words = _words(data, self.time, big_endian).astype(np.int64)
        code, payload = words >> 12, words & 0xFFF
        high, low = self.time.high, self.time.low  # before this call's first time word
        timing = _time_pass(code, payload, self.time)
        start, size = timing.start, words.size
        times = _segments(timing.high_at, timing.high_values, high, size)[start:]
        times |= _segments(timing.low_at, payload[timing.low_at], low, size)[start:]
        code, payload = code[start:], payload[start:]  # before the first valid time only time words count
        row_at = np.flatnonzero(code == ADDR_Y)
        rows = _segments(row_at, payload[row_at] & 0x7FF, self.row, code.size)
        if row_at.size:
            self.row = int(payload[row_at[-1]] & 0x7FF)
        single = np.flatnonzero(code == ADDR_X)
        parts = [(times[single], payload[single] & 0x7FF, rows[single], (payload[single] >> 11) & 1)]
        parts.append(self._vectors(code, payload, times, rows))
        t, x, y, p = (np.concatenate(values) for values in zip(*parts, strict=True))
        inside = (x < self.width) & (y < self.height)
        cd = EventBatch(t[inside] * 1000, x[inside].astype(np.uint16), y[inside].astype(np.uint16),
                        p[inside].astype(bool), self.height, self.width)  # fmt: skip
        trigger = np.flatnonzero(code == EXT_TRIGGER)
        edge, ident = payload[trigger] & 1, (payload[trigger] >> 8) & 0xF
        triggers = TriggerEvents(times[trigger] * 1000, edge.astype(np.uint8), ident.astype(np.uint8))
        return DecodedEvents(cd, triggers, int(np.count_nonzero(UNKNOWN_CODE[code])))

    def _vectors(self, code: np.ndarray, payload: np.ndarray, times: np.ndarray, rows: np.ndarray) -> tuple:
        """VECT_12/VECT_8 events: x = the latest VECT_BASE_X's x (or the state's), advanced by 12/8 per vector word
        since it, plus the bit; polarity of that VECT_BASE_X."""
        vector = np.flatnonzero((code == VECT_12) | (code == VECT_8))
        base_at = np.flatnonzero(code == VECT_BASE_X)
        twelve = code[vector] == VECT_12
        advance = np.concatenate(([0], np.cumsum(np.where(twelve, 12, 8))))  # advance[j]: of the first j vector words
        # entry 0 is the state's base, entry i the i-th VECT_BASE_X less the advance before it: vector j's first x
        # is origin + advance[j]
        origin = np.concatenate(([self.base_x], (payload[base_at] & 0x7FF) - advance[np.searchsorted(vector, base_at)]))
        polarity = np.concatenate(([self.polarity], (payload[base_at] >> 11) & 1))
        known = np.concatenate(([self.base_x >= 0], np.ones(base_at.size, bool)))
        which = np.searchsorted(base_at, vector)
        if base_at.size or self.base_x >= 0:
            self.base_x = int((origin[-1] + advance[-1]) & 0xFFFF)
        self.polarity = int(polarity[-1])
        valid = payload[vector] & np.where(twelve, 0xFFF, 0xFF) & np.where(known[which], 0xFFF, 0)
        bits = np.unpackbits(valid.astype("<u2").view(np.uint8).reshape(-1, 2), axis=1, bitorder="little")
        word, bit = np.nonzero(bits)
        index = vector[word]
        x = (origin[which[word]] + advance[word] + bit) & 0xFFFF
        return times[index], x, rows[index], polarity[which[word]]


# ------------------------------------------------------------------------------------------ 64-bit encodings
def _u64_words(data: Any, big_endian: bool) -> np.ndarray:
    buf = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    if buf.size % 8:
        raise ImageDecodeError(f"event packet of {buf.size} bytes is not a whole number of 64-bit words")
    return buf.view(">u8" if big_endian else "<u8")


def decode_mono(data: Any, time_base: int, big_endian: bool, height: int, width: int) -> EventBatch:
    """``mono`` words → events with ``t = time_base + dt`` (the ROS time is ``header stamp + dt``)."""
    words = _u64_words(data, big_endian)
    return EventBatch(
        int(time_base) + (words & np.uint64(0xFFFFFFFF)).astype(np.int64),
        ((words >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.uint16),
        ((words >> np.uint64(48)) & np.uint64(0x7FFF)).astype(np.uint16),
        (words >> np.uint64(63)).astype(bool),
        height,
        width,
    )


def decode_trigger_words(data: Any, time_base: int, big_endian: bool) -> TriggerEvents:
    """``trigger`` words → trigger events (``t = time_base + dt``; the id is upstream's uint8 of bits 48–62)."""
    words = _u64_words(data, big_endian)
    return TriggerEvents(
        int(time_base) + (words & np.uint64(0xFFFFFFFF)).astype(np.int64),
        (words >> np.uint64(63)).astype(np.uint8),
        ((words >> np.uint64(48)) & np.uint64(0xFF)).astype(np.uint8),
    )


def check_packet(packet: Any) -> None:
    """Raise :class:`ImageDecodeError` for a packet no decoder here takes (encoding, sensor size)."""
    encoding = str(packet.encoding)
    if encoding not in DECODED_ENCODINGS:
        raise ImageDecodeError(f"event encoding {encoding!r} is not decoded (decoded: {', '.join(DECODED_ENCODINGS)})")
    if int(packet.height) <= 0 or int(packet.width) <= 0:
        raise ImageDecodeError(f"event packet has sensor size {int(packet.width)}x{int(packet.height)}")


class PacketDecoder:
    """One topic's decoder, as upstream's decoder factory gives one per topic: feed its packets in order (the EVT3
    state carries across them; a new encoding or sensor size starts afresh). Any EventPacket-like object works
    (rclpy, rosbags, :class:`~memsam_ros.inputs.cdr.EventPacketView`)."""

    def __init__(self) -> None:
        self.evt3: Evt3Decoder | None = None

    def decode(self, packet: Any) -> DecodedEvents:
        check_packet(packet)
        encoding, height, width = str(packet.encoding), int(packet.height), int(packet.width)
        big_endian = bool(packet.is_bigendian)
        if encoding == "evt3":
            if self.evt3 is None or (self.evt3.width, self.evt3.height) != (width, height):
                self.evt3 = Evt3Decoder(width, height)
            return self.evt3.decode(packet.events, big_endian)
        if encoding == "trigger":
            triggers = decode_trigger_words(packet.events, int(packet.time_base), big_endian)
            return DecodedEvents(EventBatch.empty(height, width), triggers)
        cd = decode_mono(packet.events, int(packet.time_base), big_endian, height, width)
        return DecodedEvents(cd, TriggerEvents.empty())


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


# ---------------------------------------------------------------------------------------------------- encoders
def encode_mono(batch: EventBatch, stamp_ns: int) -> bytes:
    """``mono`` words for ``batch`` relative to ``stamp_ns`` (the packet's header stamp and time_base)."""
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


class Evt3Encoder:
    """Events → one continuous EVT 3.0 word stream, as a sensor writes it (tests, bags, benchmarks): TIME_HIGH when
    the high time changes, TIME_LOW when the microsecond changes, ADDR_Y when the row or the time changes, then one
    ADDR_X per event. The state carries across calls, so consecutive calls continue one stream; cut the bytes
    anywhere to make packets, or let :meth:`encode_packets` cut them at given times."""

    def __init__(self) -> None:
        self._high: int | None = None
        self._time_us: int | None = None

    def tick(self, time_us: int) -> bytes:
        """Time words alone (no event): what a sensor sends while nothing changes."""
        return self.encode(np.asarray([time_us], np.int64), *(np.full(1, -1, np.int64),) * 3)

    def encode(self, time_us: np.ndarray, x: np.ndarray, y: np.ndarray, polarity: np.ndarray) -> bytes:
        """Words for events sorted by time (µs, the sensor clock; it rolls over every 2^24 µs as the sensor's does);
        an entry with ``x < 0`` writes only the time words of its time."""
        words, _ = self._words(np.asarray(time_us, np.int64), np.asarray(x), np.asarray(y), np.asarray(polarity))
        return words.astype("<u2").tobytes()

    def encode_packets(
        self, time_us: np.ndarray, x: np.ndarray, y: np.ndarray, polarity: np.ndarray, cuts_us: np.ndarray
    ) -> list[bytes]:
        """The stream of sorted events cut into ``len(cuts_us) + 1`` pieces right after the time words of each of the
        sorted times ``cuts_us`` (events at a cut's time come before it): a driver's packets, each closed by the time
        words of its end, in one vectorised pass."""
        time_us, x, y, polarity = (np.asarray(a, np.int64) for a in (time_us, x, y, polarity))
        cuts_us = np.asarray(cuts_us, np.int64)
        at = np.searchsorted(time_us, cuts_us, side="right")
        none = np.full(cuts_us.size, -1, np.int64)
        merged = [np.insert(values, at, extra) for values, extra in ((time_us, cuts_us), (x, none), (y, none),
                                                                     (polarity, none))]  # fmt: skip
        words, starts = self._words(*merged)
        data = words.astype("<u2")
        edges = np.append(starts, data.size)[at + np.arange(cuts_us.size) + 1]  # after each cut entry's words
        return [data[a:b].tobytes() for a, b in zip([0, *edges], [*edges, data.size], strict=True)]

    def _words(
        self, time_us: np.ndarray, x: np.ndarray, y: np.ndarray, polarity: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The words (int64) and where each entry's words start."""
        time_us = time_us & ((1 << _ROLL_BITS) - 1)
        high, low = time_us >> 12, time_us & 0xFFF
        previous_high = np.concatenate(([-1 if self._high is None else self._high], high[:-1]))
        previous_time = np.concatenate(([-1 if self._time_us is None else self._time_us], time_us[:-1]))
        new_high = high != previous_high
        new_time = (time_us != previous_time) | new_high
        has_event = x >= 0
        row = np.where(has_event, y, -1)
        new_row = np.ones(time_us.size, bool)
        new_row[1:] = (row[1:] != row[:-1]) | new_time[1:]
        new_row &= has_event
        counts = new_high.astype(np.int64) + new_time + new_row + has_event
        starts = np.cumsum(counts) - counts
        position = starts
        words = np.empty(int(counts.sum()), np.int64)
        for flag, code, value in ((new_high, TIME_HIGH, high), (new_time, TIME_LOW, low), (new_row, ADDR_Y, row)):
            words[position[flag]] = (code << 12) | value[flag]
            position = position + flag
        words[position[has_event]] = (ADDR_X << 12) | (polarity[has_event] << 11) | x[has_event]
        if time_us.size:
            self._high, self._time_us = int(high[-1]), int(time_us[-1])
        return words, starts
