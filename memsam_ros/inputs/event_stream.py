"""One event topic as a stream: packets in arrival order → the event frame of the window before a stamp.

Event cameras publish a packet every 1–4 ms (metavision_driver: 1 ms of events per message by default). So the work
is split: on arrival (:meth:`EventStream.add_packet`, the node's executor thread) a packet is only read — its fields
from the CDR bytes, the EVT3 time words (:class:`~memsam_ros.inputs.event_codecs.Evt3TimeTracker`), the clock —
and its payload is kept as it arrived; when a set needs the window (:meth:`EventStream.frame`, the inference
thread) the packets it needs are decoded in one pass over their concatenated payloads, with one decoder state per
topic carried from packet to packet as upstream's decoder keeps it. Packets older than the window are skipped
(the decoder resynchronises on the tracker's time state: the row and vector base come again with the next
ADDR_Y/VECT_BASE_X words). Memory stays bounded at any rate: packets and events more than ``keep_ns`` behind the
newest are dropped.

**ROS time of an event.** ``mono``/``trigger``: header stamp + ``dt`` (event_camera_msgs: "the best estimate ROS
time"). ``evt3``: the decoded time is the sensor clock (``time_base`` is 0 from metavision_driver), so ROS time =
sensor time + the stream's offset (:class:`SensorClock`), one offset per stream that does not jump at packet
boundaries. Re-anchoring every packet at its header stamp would move its events by the stamp's jitter (−3…+2 ms
between consecutive packets on a real camera).

**What the synchroniser is told** (:attr:`Arrival.covered_ns`): the ROS time of the newest time word so far (its
last TIME_LOW/TIME_HIGH plus the offset; ``mono``: the stamp plus the largest ``dt``), never decreasing. It is sound
for deciding that the window ending at the RGB stamp ``R`` is complete: a sensor writes time words in order, so
every event still to come has a sensor time at or after that word's and a ROS time at or after ``covered_ns``; once
``covered_ns >= R``, every event up to ``R`` has arrived. The bound is the clock's slew: the offset may still move
by at most :data:`SensorClock.SLEW` of the time until the frame is rendered (≤ 0.4 ms for a set rendered 0.2 s later).

**Resets** (decoder state, clock, pending packets and window start afresh): header stamps going back more than
1 s (a bag loop, as the synchroniser's ``BACKJUMP_RESET_S``), a new encoding, sensor size or byte order, or a sensor
time that disagrees with the header stamps by more than 1 s (the camera restarted: its clock went back, which an
EVT3 decoder sees as a roll-over forward).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from memsam_core.events import EventBatch, EventWindow, concatenate
from memsam_ros.inputs.cdr import EventPacketView
from memsam_ros.inputs.codec import ImageDecodeError, as_bytes
from memsam_ros.inputs.event_codecs import (
    Evt3Decoder,
    Evt3Time,
    Evt3TimeTracker,
    check_packet,
    decode_mono,
)
from memsam_ros.inputs.stamps import NS_PER_S, stamp_ns

RESET_BACKJUMP_NS = NS_PER_S  # header stamps going back this much: a bag loop (the synchroniser's BACKJUMP_RESET_S)
RESET_CLOCK_NS = NS_PER_S  # sensor time disagreeing with the header stamps by this much: the camera restarted
MAX_PENDING = 100_000  # packets kept undecoded, whatever their stamps say (keep_ns bounds them first)


def packet_view(msg: Any) -> EventPacketView:
    """An EventPacket-like message (rclpy, rosbags) as the view the node reads from CDR bytes."""
    return EventPacketView(
        stamp_ns(msg.header), str(msg.header.frame_id), int(msg.height), int(msg.width), int(msg.seq),
        int(msg.time_base), str(msg.encoding), int(bool(msg.is_bigendian)), as_bytes(msg.events),
    )  # fmt: skip


class SensorClock:
    """The offset from an EVT3 camera's clock to ROS time, one per stream.

    Sample per packet: ``d = header stamp − the packet's first sensor time`` (metavision_driver stamps a packet with
    the host time its first buffer arrived, so ``d`` = true offset + that buffer's latency ≥ the true offset). The
    lowest sample is the best estimate (least latency); it may rise by :data:`CREEP` of the elapsed header time
    (clock drift, NTP slewing at ≤ 500 ppm) and falls at once to a lower sample. The published offset follows it
    at most :data:`SLEW` of the elapsed header time per packet, so it never jumps: consecutive packets' events are
    continuous to ``SLEW`` × the packet interval (2 µs at 1 kHz). The price is a start-up transient: the first
    sample's extra latency (a few ms) fades at ``SLEW`` (≈ 2 ms per second).
    """

    CREEP = 500e-6
    SLEW = 2000e-6

    def __init__(self) -> None:
        self.offset_ns: int | None = None
        self.lowest_ns: int | None = None
        self._stamp_ns = 0

    def reset(self) -> None:
        self.offset_ns = self.lowest_ns = None

    def disagrees(self, stamp_ns: int, first_sensor_ns: int) -> bool:
        """Whether this packet's sample is more than :data:`RESET_CLOCK_NS` off the estimate (a restarted camera)."""
        return self.lowest_ns is not None and abs(stamp_ns - first_sensor_ns - self.lowest_ns) > RESET_CLOCK_NS

    def update(self, stamp_ns: int, first_sensor_ns: int) -> int:
        """Take one packet's sample; returns the offset (ns)."""
        sample = stamp_ns - first_sensor_ns
        if self.offset_ns is None or self.lowest_ns is None:
            self.offset_ns = self.lowest_ns = sample
            self._stamp_ns = stamp_ns
            return sample
        elapsed = max(stamp_ns - self._stamp_ns, 0)
        self._stamp_ns = max(stamp_ns, self._stamp_ns)
        self.lowest_ns = min(sample, self.lowest_ns + round(self.CREEP * elapsed))
        step = round(self.SLEW * elapsed)
        self.offset_ns += min(max(self.lowest_ns - self.offset_ns, -step), step)
        return self.offset_ns


@dataclass(slots=True)
class _Packet:
    index: int  # arrival order in the stream
    view: EventPacketView
    covered_ns: int | None  # ROS time of its last time word when it arrived
    sensor_last_ns: int | None  # evt3: the same in sensor time (the offset may have moved a little since)
    time_before: Evt3Time | None  # evt3: the time state before it (to resynchronise the decoder here)
    fresh: bool  # the first packet after a reset


def _stream_key(packet: EventPacketView) -> tuple[str, int, int, int]:
    return packet.encoding, packet.height, packet.width, packet.is_bigendian


def _describe(key: tuple[str, int, int, int] | None) -> str:
    encoding, height, width, big_endian = key or ("", 0, 0, 0)
    return f"{encoding} {width}x{height}{' big-endian' if big_endian else ''}"


def _before(packet: _Packet, stamp_ns: int) -> bool:
    return packet.covered_ns is not None and packet.covered_ns < stamp_ns


@dataclass(slots=True)
class Arrival:
    """What one packet told the stream: how far the stream is complete (ROS ns; None before the first sensor
    time or for a refused packet), why the stream was reset at it, why it was refused (None if it was not)."""

    covered_ns: int | None
    reset: str | None = None
    error: str | None = None


class CoverageSampler:
    """Which covered stamps of a drained stream the synchroniser hears, so how packets were batched never changes a set.

    A set at RGB stamp ``R`` has the stream when some stamp the synchroniser heard lies within ``slop`` of ``R``
    (the frame itself is rendered for ``R``). Offline evaluation hears every packet; a node that hears only each
    drain's newest stamp misses the stamps near ``R`` when one drain spans more than ``slop`` (a late first poll,
    a stalled executor), and the set goes out without events the stream had. Heard instead: the first and the last
    stamp of each bucket of ``2 × slop`` (stamps never decrease) and each drain's newest. If a packet's stamp ``c``
    is within ``slop`` of ``R``, so is one heard: the first ``f`` and last ``l`` of ``c``'s bucket have
    ``f ≤ c ≤ l`` and ``l − f < 2 slop``, so ``f ≥ R − slop`` or ``l < R + slop``. A few stamps per 100 ms, not
    1,000 a second.
    """

    def __init__(self) -> None:
        self._bucket: int | None = None  # bucket of the newest stamp seen

    def heard(self, stamps: list[int], slop_ns: int) -> list[int]:
        """Indices into one drain's covered ``stamps`` (in arrival order) that the synchroniser is to hear."""
        width = max(2 * slop_ns, 1)
        chosen: list[int] = []
        bucket = self._bucket
        for index, stamp in enumerate(stamps):
            this = stamp // width
            if this != bucket:
                if index and (not chosen or chosen[-1] != index - 1):
                    chosen.append(index - 1)  # the last of the bucket just left (one of an earlier drain was heard)
                chosen.append(index)  # the first of a new bucket
                bucket = this
        if stamps:
            if chosen[-1:] != [len(stamps) - 1]:
                chosen.append(len(stamps) - 1)  # the drain's newest: how far the stream is complete
            self._bucket = bucket
        return chosen


class EventStream:
    """The packets of one event topic and the events of its recent past. Thread-safe: packets are added on one
    thread while frames are rendered on another (both in arrival / stamp order)."""

    def __init__(self, window_ns: int, keep_ns: int | None = None) -> None:
        self.window = EventWindow(window_ns, keep_ns)
        self.window_ns = window_ns
        self.clock = SensorClock()
        self.unknown_words = 0  # EVT3 words of an unknown code skipped so far
        self._tracker = Evt3TimeTracker()
        self._decoder: Evt3Decoder | None = None
        self._key: tuple[str, int, int, int] | None = None
        self._last_stamp: int | None = None
        self._covered: int | None = None
        self._fresh = True
        self._arrivals = 0
        self._decoded = -1  # arrival index of the last packet decoded
        self._pending: deque[_Packet] = deque()
        self._arriving: list[_Packet] = []  # read by the current add_packets, not yet kept
        self._generation = 0  # bumped by every reset: a decoding pass begun before it is thrown away
        self._lock = threading.Lock()  # pending packets, window, generation
        self._render_lock = threading.Lock()  # one decoding pass at a time

    @property
    def keep_ns(self) -> int:
        return self.window.keep_ns

    # ------------------------------------------------------------------ arrival (executor thread)
    def add_packet(self, packet: EventPacketView) -> Arrival:
        """Read one packet (no event is decoded)."""
        return self.add_packets([packet])[0]

    def add_packets(self, packets: list[EventPacketView]) -> list[Arrival]:
        """Read consecutive packets (no event is decoded; the EVT3 time words of a run of packets in one pass)."""
        arrivals: list[Arrival | None] = [None] * len(packets)
        run: list[int] = []  # consecutive evt3 packets of one key, tracked together
        for index, packet in enumerate(packets):
            reason, error = self._screen(packet)
            if error is not None or reason is not None or packet.encoding != "evt3":
                self._follow_evt3([packets[i] for i in run], run, arrivals)
                run = []
            if error is not None:
                arrivals[index] = Arrival(None, error=error)
                continue
            if reason is not None:
                self._reset()
            self._key, self._last_stamp = _stream_key(packet), packet.stamp_ns
            if packet.encoding == "evt3":
                run.append(index)
                arrivals[index] = Arrival(None, reason)  # completed by _follow_evt3
            else:
                arrivals[index] = self._arrive(packet, self._follow_words(packet), None, None, reason)
        self._follow_evt3([packets[i] for i in run], run, arrivals)
        self._keep_arrived()
        return [a if a is not None else Arrival(None) for a in arrivals]

    def add_batch(self, batch: EventBatch) -> None:
        """Events already decoded and in ROS time (``dvs_msgs/EventArray``)."""
        with self._lock:
            self.window.add(batch)

    def _screen(self, packet: EventPacketView) -> tuple[str | None, str | None]:
        """(why the stream resets here, why the packet is refused), without changing anything."""
        key = _stream_key(packet)
        if key != self._key:
            try:
                check_packet(packet)
            except ImageDecodeError as err:
                return None, str(err)
        if packet.encoding != "evt3" and len(packet.events) % 8:  # refused before it could reset the stream
            return None, f"event packet of {len(packet.events)} bytes is not a whole number of 64-bit words"
        if key != self._key and self._key is not None:
            return f"encoding/size changed from {_describe(self._key)} to {_describe(key)}", None
        if self._last_stamp is not None and packet.stamp_ns < self._last_stamp - RESET_BACKJUMP_NS:
            return (
                f"header stamps jumped back by {(self._last_stamp - packet.stamp_ns) / NS_PER_S:.3f} s (bag loop?)",
                None,
            )
        return None, None

    def _follow_evt3(self, packets: list[EventPacketView], indices: list[int], arrivals: list) -> None:
        """Track a run of evt3 packets' time words and the clock, keep them, fill in their arrivals; a sensor time
        that disagrees with the stamps resets the stream there and tracks the rest afresh."""
        if not packets:
            return
        tracked = self._tracker.advance_many([p.events for p in packets], bool(packets[0].is_bigendian))
        for k, (packet, (times, before)) in enumerate(zip(packets, tracked, strict=True)):
            reason = arrivals[indices[k]].reset
            if times.first_us is None or times.last_us is None:
                arrivals[indices[k]] = self._arrive(packet, None, None, before, reason)
                continue
            stamp = packet.stamp_ns
            if self.clock.disagrees(stamp, times.first_us * 1000) or self.clock.disagrees(stamp, times.last_us * 1000):
                self._reset()
                arrivals[indices[k]] = Arrival(None, "sensor time disagrees with the header stamps by more than 1 s "
                                                     "(camera restarted?)")  # fmt: skip
                self._follow_evt3(packets[k:], indices[k:], arrivals)
                return
            offset = self.clock.update(stamp, times.first_us * 1000)
            last = times.last_us * 1000
            arrivals[indices[k]] = self._arrive(packet, last + offset, last, before, reason)

    def _arrive(
        self, packet: EventPacketView, covered: int | None, sensor_last: int | None, before: Evt3Time | None,
        reason: str | None,
    ) -> Arrival:  # fmt: skip
        """Keep the packet; its arrival (the stream's covered stamp never goes back)."""
        if covered is not None:
            covered = covered if self._covered is None else max(covered, self._covered)
            self._covered = covered
        self._arriving.append(_Packet(self._arrivals, packet, covered, sensor_last, before, self._fresh))
        self._arrivals += 1
        self._fresh = False
        return Arrival(covered, reason)

    @staticmethod
    def _follow_words(packet: EventPacketView) -> int:
        """``mono``/``trigger``: the stamp plus the packet's largest ``dt``."""
        if not len(packet.events):
            return packet.stamp_ns
        words = np.frombuffer(packet.events, ">u8" if packet.is_bigendian else "<u8")
        return packet.stamp_ns + int((words & np.uint64(0xFFFFFFFF)).max())

    def _keep_arrived(self) -> None:
        """Hand the packets read by one :meth:`add_packets` to the decoding side (one lock for the batch)."""
        if not self._arriving:
            return
        with self._lock:
            pending = self._pending
            pending.extend(self._arriving)
            oldest = None if self._covered is None else self._covered - self.keep_ns
            while len(pending) > MAX_PENDING or (oldest is not None and _before(pending[0], oldest)):
                pending.popleft()
        self._arriving = []

    def reset(self) -> None:
        """Start afresh: a new subscription (the packets in between were not seen)."""
        self._key, self._last_stamp = None, None
        self._reset()

    def _reset(self) -> None:
        self._arriving = []  # read before the reset: gone with the packets kept before it
        self._tracker.reset()
        self.clock.reset()
        self._covered = None
        self._fresh = True
        with self._lock:
            self._pending.clear()
            self.window.clear()
            self._generation += 1

    # ------------------------------------------------------------------ frames (inference thread)
    def frame(self, end_ns: int) -> np.ndarray | None:
        """The event frame of ``(end_ns - window, end_ns]`` (None before any packet with a time was decoded).
        Frames are asked for in stamp order (as sets are published); a window older than the previous one may
        lack the events of packets skipped since."""
        with self._render_lock:
            with self._lock:
                generation = self._generation
                packets = self._take(end_ns)
            batch = self._decode(packets)
            with self._lock:
                if batch is not None and generation == self._generation:
                    self.window.add(batch)
                return self.window.frame(end_ns)

    def _take(self, end_ns: int) -> list[_Packet]:
        """Pop the pending packets the window ending at ``end_ns`` needs: from the last one entirely before the
        window (EVT3: it brings the row and vector base) up to the first that reaches ``end_ns``."""
        pending = self._pending
        start_ns = end_ns - self.window_ns
        offset = self.clock.offset_ns or 0
        covered = [p.covered_ns if p.sensor_last_ns is None else p.sensor_last_ns + offset for p in pending]
        first_needed = next((i for i, c in enumerate(covered) if c is not None and c > start_ns), len(covered))
        last = next((i for i, c in enumerate(covered) if c is not None and c >= end_ns), len(covered) - 1)
        first = max(first_needed - 1, 0)
        taken = [pending[i] for i in range(first, last + 1)]
        for _ in range(last + 1):
            pending.popleft()
        return taken

    def _decode(self, packets: list[_Packet]) -> EventBatch | None:
        """Decode ``packets`` in one pass per run of consecutive, same-kind packets; events in ROS time."""
        if not packets:
            return None
        parts: list[EventBatch] = []
        run: list[_Packet] = []
        for packet in packets:
            if run and (packet.fresh or packet.index != run[-1].index + 1):
                parts.append(self._decode_run(run))
                run = []
            run.append(packet)
        parts.append(self._decode_run(run))
        return concatenate(parts)

    def _decode_run(self, run: list[_Packet]) -> EventBatch:
        first = run[0].view
        payload = b"".join(p.view.events for p in run)
        height, width = first.height, first.width
        if first.encoding == "evt3":
            decoder = self._decoder
            if run[0].fresh or decoder is None or (decoder.width, decoder.height) != (width, height):
                decoder = self._decoder = Evt3Decoder(width, height)
            if not run[0].fresh and run[0].index != self._decoded + 1 and run[0].time_before is not None:
                decoder.resync(run[0].time_before)  # packets were skipped: continue from the tracker's time
            decoded = decoder.decode(payload, bool(first.is_bigendian))
            self.unknown_words += decoded.unknown_words
            cd, offset = decoded.cd, self.clock.offset_ns or 0
            batch = EventBatch(cd.t_ns + offset, cd.x, cd.y, cd.polarity, height, width)
        elif first.encoding == "trigger":
            batch = EventBatch.empty(height, width)
        else:
            cd = decode_mono(payload, 0, bool(first.is_bigendian), height, width)  # t = dt
            stamps = np.repeat([p.view.stamp_ns for p in run], [len(p.view.events) // 8 for p in run])
            batch = EventBatch(cd.t_ns + stamps, cd.x, cd.y, cd.polarity, height, width)
        self._decoded = run[-1].index
        return batch
