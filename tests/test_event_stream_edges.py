"""Edges of :class:`~memsam_ros.inputs.event_stream.EventStream` that the mutation run (benchmarks/mutation.py) found
untested once the stream joined it: big-endian and mono/trigger streams through the stream (not only the decoders),
a refused packet inside a batch, a camera clock far from zero, the reset reasons' text, unknown words counted over
frames. ROS-free, < 2 s.
"""

from __future__ import annotations

import numpy as np
import pytest
from evt3_camera import ROS_NS, evt3_camera, swapped

from memsam_core.events import EventBatch, accumulate
from memsam_ros.inputs.cdr import EventPacketView
from memsam_ros.inputs.event_codecs import Evt3Decoder, Evt3Encoder, Evt3TimeTracker, encode_mono
from memsam_ros.inputs.event_stream import EventStream

WIDTH, HEIGHT = 64, 48
WINDOW_NS = 50_000_000


def _evt3(seconds: float, start_us: int = 5_000_000, seed: int = 0, big_endian: bool = False):
    """50,000 events a second on this module's sensor, 1 ms packets (``evt3_camera``)."""
    return evt3_camera(seconds, WIDTH, HEIGHT, 50_000, seed=seed, start_us=start_us, big_endian=big_endian)


def _frames(stream: EventStream, packets: list[EventPacketView], ends: list[int], batch: int = 7) -> list[np.ndarray]:
    for start in range(0, len(packets), batch):
        stream.add_packets(packets[start : start + batch])
    return [stream.frame(end) for end in ends]


@pytest.mark.parametrize("big_endian", [False, True])
def test_an_evt3_stream_gives_each_window_in_either_byte_order(big_endian: bool) -> None:
    packets, truth = _evt3(0.4, big_endian=big_endian)
    stream = EventStream(WINDOW_NS)
    ends = [int(truth.t_ns.min()) + k * 100_000_000 for k in (1, 2, 3)]
    frames = _frames(stream, packets, ends)
    offset_error = stream.clock.offset_ns - ROS_NS
    assert 0 <= offset_error <= 600_000
    shifted = EventBatch(truth.t_ns + offset_error, truth.x, truth.y, truth.polarity, HEIGHT, WIDTH)
    for end, frame in zip(ends, frames, strict=True):
        np.testing.assert_array_equal(frame, accumulate(shifted, end - WINDOW_NS, end))
        assert frame.sum() > 0


@pytest.mark.parametrize("big_endian", [False, True])
def test_a_mono_stream_places_each_event_at_its_stamp_plus_dt(big_endian: bool) -> None:
    """``mono``: an event's ROS time is its packet's header stamp + ``dt`` (several packets decoded in one run)."""
    rng = np.random.default_rng(1)
    packets, events = [], []
    for index in range(12):
        stamp = ROS_NS + index * 10_000_000
        dt = np.sort(rng.integers(0, 9_000_000, 40))
        batch = EventBatch(dt, rng.integers(0, WIDTH, 40), rng.integers(0, HEIGHT, 40), rng.integers(0, 2, 40) == 1,
                           HEIGHT, WIDTH)  # fmt: skip
        data = encode_mono(batch, 0)
        data = swapped(data, 8) if big_endian else data
        packets.append(EventPacketView(stamp, "ev", HEIGHT, WIDTH, index, 0, "mono", int(big_endian), memoryview(data)))
        events.append(EventBatch(stamp + dt, batch.x, batch.y, batch.polarity, HEIGHT, WIDTH))
    arrivals = EventStream(WINDOW_NS).add_packets(packets[:1])
    assert arrivals[0].covered_ns == packets[0].stamp_ns + int(events[0].t_ns.max() - packets[0].stamp_ns)
    stream = EventStream(WINDOW_NS)
    end = ROS_NS + 115_000_000
    (frame,) = _frames(stream, packets, [end], batch=5)
    truth = EventBatch(*(np.concatenate([getattr(e, f) for e in events]) for f in ("t_ns", "x", "y", "polarity")),
                       HEIGHT, WIDTH)  # fmt: skip
    np.testing.assert_array_equal(frame, accumulate(truth, end - WINDOW_NS, end))
    assert frame.sum() > 0


def test_a_trigger_stream_gives_an_empty_frame_of_the_sensor_size() -> None:
    data = encode_mono(EventBatch(np.array([5]), np.array([1]), np.array([3]), np.array([True]), HEIGHT, WIDTH), 0)
    stream = EventStream(WINDOW_NS)
    trigger = EventPacketView(ROS_NS, "ev", HEIGHT, WIDTH, 0, 0, "trigger", 0, memoryview(data))
    (arrival,) = stream.add_packets([trigger])
    assert arrival.covered_ns == ROS_NS + 5 and arrival.error is None
    frame = stream.frame(ROS_NS + 10)
    assert frame.shape[:2] == (HEIGHT, WIDTH) and frame.sum() == 0


def test_a_refused_packet_inside_a_batch_is_named_and_the_rest_still_arrive() -> None:
    packets, _ = _evt3(0.02)
    bad = EventPacketView(packets[3].stamp_ns, "ev", HEIGHT, WIDTH, 3, 0, "mono", 0, memoryview(b"\x00" * 12))
    batch = [*packets[:3], bad, *packets[4:]]
    arrivals = EventStream(WINDOW_NS).add_packets(batch)
    assert arrivals[3].error == "event packet of 12 bytes is not a whole number of 64-bit words"
    assert arrivals[3].covered_ns is None and arrivals[3].reset is None
    assert all(a.error is None for i, a in enumerate(arrivals) if i != 3)
    covered = [a.covered_ns for i, a in enumerate(arrivals) if i != 3]
    assert None not in covered[1:] and covered == sorted(covered, key=lambda c: c or 0)
    assert covered[-1] >= packets[-1].stamp_ns  # the packets after the refused one were tracked, in order


def test_packets_before_the_first_time_words_arrive_without_a_stamp_then_count() -> None:
    """A packet with no time word yet (the stream began mid-word-stream) has no covered stamp but is kept: the next
    packet's covered stamp follows, and a reset reason on it is kept."""
    packets, _ = _evt3(0.02)
    words_without_time = memoryview(np.asarray([0x0003, 0x2005], "<u2").tobytes())  # ADDR_Y, ADDR_X: no time
    first = EventPacketView(packets[0].stamp_ns - 1_000_000, "ev", HEIGHT, WIDTH, 0, 0, "evt3", 0, words_without_time)
    stream = EventStream(WINDOW_NS)
    arrivals = stream.add_packets([first, *packets[:3]])
    assert arrivals[0].covered_ns is None and arrivals[0].error is None
    assert all(a.covered_ns is not None for a in arrivals[1:])
    assert len(stream._pending) == 4  # kept, in arrival order
    assert [p.index for p in stream._pending] == [0, 1, 2, 3] and stream._pending[0].fresh
    assert not any(p.fresh for p in list(stream._pending)[1:])


def test_a_camera_clock_far_from_zero_is_not_a_restart() -> None:
    """A camera up for 20 minutes: its EVT3 clock rolls over every 16.8 s and the tracked sensor time reaches
    1,300 s; the samples agree with the stamps to the microsecond all along, and no reset fires."""
    encoder = Evt3Encoder()
    times_us = range(5_000_000, 1_300_000_000, 500_000)  # time words every 0.5 s (a gap over 1 s reads as a restart)
    packets = [
        EventPacketView(ROS_NS + t * 1000 + 500_000, "ev", HEIGHT, WIDTH, i, 0, "evt3", 0, memoryview(encoder.tick(t)))
        for i, t in enumerate(times_us)
    ]
    stream = EventStream(WINDOW_NS)
    arrivals = [a for start in range(0, len(packets), 20) for a in stream.add_packets(packets[start : start + 20])]
    assert all(a.reset is None for a in arrivals)
    steps = np.diff([a.covered_ns for a in arrivals[1:]])
    assert np.all(np.abs(steps - 500_000_000) <= 1_000_000)  # roll-overs followed (no 16.8 s jump); the clock slews


def test_reset_reasons_name_what_changed() -> None:
    packets, _ = _evt3(0.01)
    stream = EventStream(WINDOW_NS)
    stream.add_packets(packets[:3])
    p = packets[3]
    big = EventPacketView(p.stamp_ns, "ev", HEIGHT, WIDTH, 3, 0, "evt3", 1, p.events)
    (arrival,) = stream.add_packets([big])
    assert arrival.reset == "encoding/size changed from evt3 64x48 to evt3 64x48 big-endian"
    (back,) = stream.add_packets([EventPacketView(p.stamp_ns - 1_250_000_000, "ev", HEIGHT, WIDTH, 4, 0, "evt3", 1,
                                                  p.events)])  # fmt: skip
    assert back.reset == "header stamps jumped back by 1.250 s (bag loop?)"
    packets, _ = _evt3(0.01)
    stream = EventStream(WINDOW_NS)
    stream.add_packets(packets[:3])
    restarted, _ = _evt3(0.01, start_us=9_000_000)  # the sensor clock jumped 4 s ahead of the stamps
    late = restarted[3]
    moved = EventPacketView(packets[3].stamp_ns, "ev", HEIGHT, WIDTH, 3, 0, "evt3", 0, late.events)
    (restart,) = stream.add_packets([moved])
    assert restart.reset == "sensor time disagrees with the header stamps by more than 1 s (camera restarted?)"


def test_unknown_words_are_counted_over_frames() -> None:
    packets, truth = _evt3(0.2)
    odd = [*np.frombuffer(bytes(packets[40].events), "<u2").tolist(), 0xB123, 0xC456]  # two words of unknown codes
    packets[40] = EventPacketView(packets[40].stamp_ns, "ev", HEIGHT, WIDTH, 40, 0, "evt3", 0,
                                  memoryview(np.asarray(odd, "<u2").tobytes()))  # fmt: skip
    odd = [*np.frombuffer(bytes(packets[120].events), "<u2").tolist(), 0xD001]
    packets[120] = EventPacketView(packets[120].stamp_ns, "ev", HEIGHT, WIDTH, 120, 0, "evt3", 0,
                                   memoryview(np.asarray(odd, "<u2").tobytes()))  # fmt: skip
    stream = EventStream(WINDOW_NS)
    start = int(truth.t_ns.min())
    _frames(stream, packets, [start + 60_000_000, start + 150_000_000])
    assert stream.unknown_words == 3


@pytest.mark.parametrize("seed", [0, 1])
def test_windows_far_apart_over_packets_cut_anywhere_decode_as_the_whole_stream(seed: int) -> None:
    """A driver cuts the word stream wherever a buffer ends (inside a word too) and a set asks for windows far
    apart, so the packets between are skipped: the decoder resynchronises on the tracked time and each window holds
    exactly the events a decoder reading the whole stream puts there."""
    rng = np.random.default_rng(seed)
    count = 30_000
    time_us = np.sort(rng.integers(5_000_000, 5_600_000, count))
    x, y, p = rng.integers(0, WIDTH, count), rng.integers(0, HEIGHT, count), rng.integers(0, 2, count)
    data = Evt3Encoder().encode(time_us, x, y, p)
    edges = np.sort(rng.choice(np.arange(1, len(data)), 400, replace=False))
    pieces = [data[a:b] for a, b in zip([0, *edges], [*edges, len(data)], strict=True)]
    tracker, packets = Evt3TimeTracker(), []
    for index, piece in enumerate(pieces):
        first = tracker.advance(piece).first_us
        stamp = ROS_NS + (first if first is not None else 5_000_000) * 1000 + 500_000
        packets.append(EventPacketView(stamp, "ev", HEIGHT, WIDTH, index, 0, "evt3", 0, memoryview(piece)))
    whole = Evt3Decoder(WIDTH, HEIGHT).decode(data).cd
    truth = EventBatch(ROS_NS + 500_000 + whole.t_ns, whole.x, whole.y, whole.polarity, HEIGHT, WIDTH)
    ends = [ROS_NS + t * 1000 for t in (5_120_000, 5_300_000, 5_310_000, 5_550_000)]
    frames = _frames(EventStream(WINDOW_NS), packets, ends, batch=13)
    for end, frame in zip(ends, frames, strict=True):
        np.testing.assert_array_equal(frame, accumulate(truth, end - WINDOW_NS, end), err_msg=str(end))
        assert frame.sum() > 0


def test_reset_forgets_the_packets_and_the_window() -> None:
    """A new subscription (``reset``): the packets and events before it are not rendered, and the stream starts
    afresh (the next packet is fresh, its clock sample the first)."""
    packets, truth = _evt3(0.1)
    stream = EventStream(WINDOW_NS)
    end = int(truth.t_ns.max())
    _frames(stream, packets, [])
    stream.reset()
    assert stream.frame(end) is None and stream.clock.offset_ns is None
    later, _ = _evt3(0.05, start_us=5_200_000, seed=3)
    (arrival,) = stream.add_packets(later[:1])
    assert arrival.reset is None and stream._pending[-1].fresh


def test_decoded_arrays_are_kept_in_ros_time() -> None:
    """``dvs_msgs/EventArray`` events arrive decoded (``add_batch``) and render in the window of their stamps."""
    batch = EventBatch(ROS_NS + np.array([10, 20, 30]) * 1_000_000, np.array([1, 2, 3]), np.array([4, 5, 6]),
                       np.array([True, False, True]), HEIGHT, WIDTH)  # fmt: skip
    stream = EventStream(WINDOW_NS)
    stream.add_batch(batch)
    end = ROS_NS + 30_000_000
    np.testing.assert_array_equal(stream.frame(end), accumulate(batch, end - WINDOW_NS, end))
    assert stream.frame(end).sum() > 0
