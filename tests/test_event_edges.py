"""Edges of the event decoders, the EVT3 encoder and the event frame that the mutation run
(benchmarks/mutation.py) found untested: the tracker's one-pass ``advance_many`` against packet-by-packet
``advance``, big-endian packets, the time rules at their boundaries (roll-over step, the first valid time across
packets, a resync), vectors from the initial state, the encoder's exact words and packet cuts, the decoded
dtypes every consumer concatenates, and the event window's bounds.
"""

from __future__ import annotations

import numpy as np
import pytest
from evt3_camera import swapped
from evt3_reference import SequentialEvt3
from test_event_streams import HEIGHT, WIDTH, cut, random_words, sorted_cd

from memsam_core.events import EventBatch, EventWindow, TriggerEvents, accumulate, concatenate, frame_to_events
from memsam_ros.inputs.cdr import EventPacketView
from memsam_ros.inputs.codec import ImageDecodeError
from memsam_ros.inputs.event_codecs import (
    ADDR_X,
    ADDR_Y,
    TIME_HIGH,
    TIME_LOW,
    VECT_8,
    VECT_12,
    VECT_BASE_X,
    Evt3Decoder,
    Evt3Encoder,
    Evt3Time,
    Evt3TimeTracker,
    PacketDecoder,
    PacketTimes,
    decode_event_array,
    encode_mono,
)
from memsam_ros.inputs.event_stream import EventStream


def words(*pairs: tuple[int, int], big_endian: bool = False) -> bytes:
    return np.asarray([(code << 12) | payload for code, payload in pairs], ">u2" if big_endian else "<u2").tobytes()


def packet(encoding: str, events: bytes, big_endian: bool = False, time_base: int = 0) -> EventPacketView:
    return EventPacketView(0, "ev", HEIGHT, WIDTH, 0, time_base, encoding, int(big_endian), memoryview(events))


def cd_tuples(batch: EventBatch) -> list[tuple[int, int, int, int]]:
    return list(zip(batch.t_ns.tolist(), batch.x.tolist(), batch.y.tolist(), batch.polarity.astype(int).tolist()))


# ------------------------------------------------------------------------------------------ time tracking
@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_advance_many_equals_advancing_packet_by_packet(seed: int, big_endian: bool) -> None:
    """The executor's one-pass drain gives every packet the times and before-state the plain per-packet tracker
    gives, in batches of any size, from the stream's start (no valid time yet) on, in either byte order."""
    data = random_words(seed)
    pieces = cut(swapped(data) if big_endian else data, seed, pieces=80)
    one, many = Evt3TimeTracker(), Evt3TimeTracker()
    expected = []
    for piece in pieces:
        before = one.time.copy()
        expected.append((one.advance(piece, big_endian), before))
    got, start = [], 0
    for size in [5, 1, 2, 3, 4, 7, 9] * 20:
        batch = pieces[start : start + size]
        got += many.advance_many(batch, big_endian) if big_endian else many.advance_many(batch)
        start += size
    assert start >= len(pieces)
    assert got == expected and many.time == one.time


def test_a_time_state_copy_is_equal_and_independent() -> None:
    time = Evt3Time(high=5 << 12, low=9, valid=True, high_seen=True, carry=b"\x07")
    copy = time.copy()
    assert copy == time
    copy.carry, copy.valid = b"", False
    assert (time.carry, time.valid) == (b"\x07", True)


def test_a_roll_over_is_a_time_high_more_than_ten_steps_back() -> None:
    stream = words(
        (TIME_HIGH, 100), (TIME_LOW, 0), (ADDR_Y, 1), (ADDR_X, 1),
        (TIME_HIGH, 90), (TIME_LOW, 0), (ADDR_X, 2),  # 10 back: jitter
        (TIME_HIGH, 79), (TIME_LOW, 0), (ADDR_X, 3),  # 11 back: a roll-over
    )  # fmt: skip
    decoded = Evt3Decoder(WIDTH, HEIGHT).decode(stream).cd
    assert decoded.t_ns.tolist() == [(100 << 12) * 1000, (90 << 12) * 1000, ((1 << 24) | (79 << 12)) * 1000]


def test_no_event_counts_before_a_time_high_then_a_time_low() -> None:
    """upstream's findValidTime: a TIME_LOW before any TIME_HIGH does not start the clock."""
    tracker, decoder = Evt3TimeTracker(), Evt3Decoder(WIDTH, HEIGHT)
    no_low = words((TIME_HIGH, 3), (ADDR_Y, 1), (ADDR_X, 2))
    assert tracker.advance(words((TIME_LOW, 5), (ADDR_Y, 1), (ADDR_X, 2))) == PacketTimes(None, None)
    assert len(decoder.decode(words((TIME_LOW, 5), (ADDR_Y, 1), (ADDR_X, 2))).cd) == 0
    fresh = Evt3Decoder(WIDTH, HEIGHT)
    assert len(fresh.decode(no_low).cd) == 0 and Evt3TimeTracker().advance(no_low) == PacketTimes(None, None)
    late = words((TIME_LOW, 5), (ADDR_Y, 1), (ADDR_X, 3), (TIME_HIGH, 1), (TIME_LOW, 2), (ADDR_X, 4))
    # the ADDR_Y before the valid time does not count either: row 0
    assert cd_tuples(Evt3Decoder(WIDTH, HEIGHT).decode(late).cd) == [(((1 << 12) | 2) * 1000, 4, 0, 0)]


def test_a_time_high_of_an_earlier_packet_counts_for_the_first_valid_time() -> None:
    first, second = words((TIME_HIGH, 7)), words((TIME_LOW, 3), (ADDR_Y, 1), (ADDR_X, 2), (TIME_HIGH, 8),
                                                 (TIME_LOW, 0), (ADDR_X, 5))  # fmt: skip
    tracker, decoder = Evt3TimeTracker(), Evt3Decoder(WIDTH, HEIGHT)
    assert tracker.advance(first) == PacketTimes(None, None) and len(decoder.decode(first).cd) == 0
    assert tracker.advance(second) == PacketTimes((7 << 12) | 3, 8 << 12)
    assert cd_tuples(decoder.decode(second).cd) == [(((7 << 12) | 3) * 1000, 2, 1, 0), ((8 << 12) * 1000, 5, 1, 0)]


# ------------------------------------------------------------------------------------------------ vectors
def test_vectors_from_the_initial_state_continue_across_packets() -> None:
    """Upstream starts with vector base x 0: a VECT_12 before any VECT_BASE_X is at x 0..11 and advances the base."""
    head = words((TIME_HIGH, 1), (TIME_LOW, 0), (ADDR_Y, 2), (VECT_12, 0b1))
    tail = words((VECT_8, 0b1))
    split = Evt3Decoder(WIDTH, HEIGHT)
    parts = cd_tuples(split.decode(head).cd) + cd_tuples(split.decode(tail).cd)
    assert [x for _, x, _, _ in parts] == [0, 12]
    assert parts == cd_tuples(Evt3Decoder(WIDTH, HEIGHT).decode(head + tail).cd)


def test_after_a_resync_vectors_wait_for_their_base() -> None:
    decoder = Evt3Decoder(WIDTH, HEIGHT)
    decoder.resync(Evt3Time(high=1 << 12, low=0, valid=True, high_seen=True))
    stream = words((ADDR_Y, 1), (VECT_12, 0b11), (VECT_12, 0b1), (VECT_BASE_X, (1 << 11) | 30), (VECT_8, 0b1))
    assert cd_tuples(decoder.decode(stream).cd) == [((1 << 12) * 1000, 30, 1, 1)]


def test_reset_starts_a_new_stream() -> None:
    data = random_words(2)
    decoder = Evt3Decoder(WIDTH, HEIGHT)
    decoder.decode(data[:3001])
    decoder.reset()
    assert (decoder.time, decoder.row, decoder.base_x, decoder.polarity) == (Evt3Time(), 0, 0, 0)
    assert sorted_cd(decoder.decode(data).cd) == sorted_cd(Evt3Decoder(WIDTH, HEIGHT).decode(data).cd)


# -------------------------------------------------------------------------------------- byte order, dtypes
def test_big_endian_packets_decode_like_little_endian_ones() -> None:
    mono = encode_mono(EventBatch(np.array([5, 9]), np.array([1, 2]), np.array([3, 4]), np.array([True, False]),
                                  HEIGHT, WIDTH), 0)  # fmt: skip
    evt3 = random_words(3)[:4000]
    for encoding, data, size in (("mono", mono, 8), ("trigger", mono, 8), ("evt3", evt3, 2)):
        little = PacketDecoder().decode(packet(encoding, data, time_base=77))
        big = PacketDecoder().decode(packet(encoding, swapped(data, size), big_endian=True, time_base=77))
        assert cd_tuples(big.cd) == cd_tuples(little.cd) and (len(little.cd) or len(little.triggers))
        assert big.triggers.t_ns.tolist() == little.triggers.t_ns.tolist()
        assert big.triggers.id.tolist() == little.triggers.id.tolist()


def _check_types(cd: EventBatch, triggers: TriggerEvents) -> None:
    assert (cd.t_ns.dtype, cd.x.dtype, cd.y.dtype, cd.polarity.dtype) == (np.int64, np.uint16, np.uint16, bool)
    assert (cd.height, cd.width) == (HEIGHT, WIDTH)
    assert (triggers.t_ns.dtype, triggers.edge.dtype, triggers.id.dtype) == (np.int64, np.uint8, np.uint8)


def test_every_decoder_gives_the_dtypes_and_sensor_size_consumers_concatenate() -> None:
    mono = encode_mono(EventBatch(np.array([5]), np.array([1]), np.array([3]), np.array([True]), HEIGHT, WIDTH), 0)
    for encoding, data in (("evt3", random_words(4)[:3000]), ("mono", mono), ("trigger", mono)):
        decoded = PacketDecoder().decode(packet(encoding, data))
        _check_types(decoded.cd, decoded.triggers)
    assert len(PacketDecoder().decode(packet("trigger", mono)).cd) == 0
    _check_types(EventBatch.empty(HEIGHT, WIDTH), TriggerEvents.empty())
    empty, no_triggers = EventBatch.empty(HEIGHT, WIDTH), TriggerEvents.empty()
    assert [a.size for a in (empty.t_ns, empty.x, empty.y, empty.polarity)] == [0] * 4
    assert [a.size for a in (no_triggers.t_ns, no_triggers.edge, no_triggers.id)] == [0] * 3
    real = PacketDecoder().decode(packet("mono", mono)).cd
    joined = concatenate([EventBatch.empty(HEIGHT, WIDTH), real])
    _check_types(joined, TriggerEvents.empty())
    assert cd_tuples(joined) == cd_tuples(real)


@pytest.mark.parametrize(("height", "width"), [(0, 5), (5, 0)])
def test_packets_and_arrays_without_a_sensor_size_are_refused(height: int, width: int) -> None:
    view = EventPacketView(0, "", height, width, 0, 0, "mono", 0, memoryview(b""))
    with pytest.raises(ImageDecodeError) as error:
        PacketDecoder().decode(view)
    assert str(error.value) == f"event packet has sensor size {width}x{height}"
    from dvs_msgs.msg import EventArray

    with pytest.raises(ImageDecodeError) as array_error:
        decode_event_array(EventArray(height=height, width=width))
    assert str(array_error.value) == f"event array has sensor size {width}x{height}"


def test_one_pixel_sensors_and_unknown_encodings() -> None:
    one = EventPacketView(0, "", 1, 1, 0, 0, "mono", 0, memoryview(b""))
    assert len(PacketDecoder().decode(one).cd) == 0
    with pytest.raises(ImageDecodeError) as error:
        PacketDecoder().decode(packet("evt2", b""))
    assert str(error.value) == "event encoding 'evt2' is not decoded (decoded: mono, evt3, trigger)"


def test_dvs_event_arrays_keep_every_stamp_to_the_nanosecond() -> None:
    from builtin_interfaces.msg import Time
    from dvs_msgs.msg import Event, EventArray

    array = EventArray(height=1, width=1)
    array.events = [Event(x=0, y=0, polarity=True, ts=Time(sec=1_700_000_000, nanosec=7))]
    decoded = decode_event_array(array)
    assert decoded.t_ns.tolist() == [1_700_000_000_000_000_007]
    assert (decoded.x.dtype, decoded.y.dtype, decoded.polarity.dtype) == (np.uint16, np.uint16, bool)


def test_mono_offsets_must_fit_32_bits_after_the_stamp() -> None:
    def batch(*t: int) -> EventBatch:
        n = len(t)
        return EventBatch(np.array(t, np.int64), np.zeros(n, np.uint16), np.zeros(n, np.uint16), np.ones(n, bool), 1, 1)

    stamp = 10**9
    data = encode_mono(batch(stamp, stamp + 0xFFFFFFFF), stamp)
    assert PacketDecoder().decode(packet("mono", data, time_base=stamp)).cd.t_ns.tolist() == [stamp, stamp + 0xFFFFFFFF]
    for outside in (stamp - 1, stamp + 0x100000000):
        with pytest.raises(ValueError) as error:
            encode_mono(batch(outside), stamp)
        assert str(error.value) == "mono events must lie within 4.29 s after the packet stamp"


# ------------------------------------------------------------------------------------------------- encoder
def test_the_encoder_writes_the_words_a_sensor_writes() -> None:
    """TIME_HIGH when the high time changes, TIME_LOW when the microsecond changes, ADDR_Y on a new row or time (and
    at the start of a call), one ADDR_X per event; the state carries over calls."""
    encoder = Evt3Encoder()
    first = encoder.encode(np.array([4100, 4100, 4101]), np.array([1, 2, 3]), np.array([5, 5, 6]), np.array([1, 0, 1]))
    assert first == words((TIME_HIGH, 1), (TIME_LOW, 4), (ADDR_Y, 5), (ADDR_X, (1 << 11) | 1), (ADDR_X, 2),
                          (TIME_LOW, 5), (ADDR_Y, 6), (ADDR_X, (1 << 11) | 3))  # fmt: skip
    second = encoder.encode(np.array([4101]), np.array([4]), np.array([6]), np.array([0]))
    assert second == words((ADDR_Y, 6), (ADDR_X, 4))
    assert encoder.tick(8200) == words((TIME_HIGH, 2), (TIME_LOW, 8))
    assert encoder.tick(8200) == b""
    assert Evt3Encoder().encode(np.array([1]), np.array([0]), np.array([0]), np.array([0])) == words(
        (TIME_HIGH, 0), (TIME_LOW, 1), (ADDR_Y, 0), (ADDR_X, 0)
    )


def test_encoded_packets_end_at_their_cut_times_and_join_into_the_stream() -> None:
    """As the rig bags use it: an EventBatch's uint16 pixels and bool polarity, events exactly at a cut time (they
    belong before it) and a last cut after every event (its packet holds time words only)."""
    rng = np.random.default_rng(7)
    cuts = np.array([1_010_000, 1_010_001, 1_025_000, 1_040_000, 1_060_000])
    time_us = np.sort(np.concatenate([rng.integers(1_000_000, 1_050_000, 3000), cuts[:4], cuts[:4]]))
    n = time_us.size
    x, y = rng.integers(0, WIDTH, n).astype(np.uint16), rng.integers(0, HEIGHT, n).astype(np.uint16)
    p = rng.integers(0, 2, n).astype(bool)
    packets = Evt3Encoder().encode_packets(time_us, x, y, p, cuts)
    assert packets == Evt3Encoder().encode_packets(time_us, x.astype(np.int64), y.astype(np.int64), p.astype(np.int64),
                                                   cuts)  # fmt: skip
    assert len(packets) == len(cuts) + 1
    tracker, decoder, reference = Evt3TimeTracker(), Evt3Decoder(WIDTH, HEIGHT), SequentialEvt3(WIDTH, HEIGHT)
    bounds = [-1, *cuts.tolist(), int(cuts[-1])]
    for index, data in enumerate(packets):
        times = tracker.advance(data)
        assert times.last_us == bounds[index + 1]  # closed by the time words of its cut
        events = decoder.decode(data).cd
        inside = (time_us > bounds[index]) & (time_us <= bounds[index + 1])
        assert sorted_cd(events) == sorted(zip((time_us[inside] * 1000).tolist(), x[inside].tolist(),
                                               y[inside].tolist(), p[inside].astype(int).tolist()))  # fmt: skip
        reference.feed(data)
    assert packets[-1] == b"" and len(reference.cd) == n


def test_a_time_only_entry_between_events_of_one_microsecond_keeps_their_rows() -> None:
    encoder = Evt3Encoder()
    data = encoder.encode(np.array([4096, 4096, 4096]), np.array([3, -1, 4]), np.array([5, 0, 1]), np.array([1, 0, 0]))
    decoded = Evt3Decoder(WIDTH, HEIGHT).decode(data).cd
    assert cd_tuples(decoded) == [(4096 * 1000, 3, 5, 1), (4096 * 1000, 4, 1, 0)]


# --------------------------------------------------------------------------------------------- event frames
def _batch(t, x, y, p, height: int = 4, width: int = 5, dtype=np.int32) -> EventBatch:
    return EventBatch(np.asarray(t, np.int64), np.asarray(x, dtype), np.asarray(y, dtype), np.asarray(p, bool), height,
                      width)  # fmt: skip


def test_accumulate_counts_the_window_start_exclusive_end_inclusive_inside_the_sensor() -> None:
    batch = _batch([10, 11, 20, 21, 15, 15, 15, 15], [1, 1, 1, 1, -1, 5, 2, 2], [1, 1, 1, 1, 0, 0, -1, 4],
                   [1, 1, 0, 1, 1, 1, 1, 1])  # fmt: skip
    frame = accumulate(batch, 10, 20)
    assert frame.dtype == np.uint8 and frame.shape == (4, 5, 3)
    assert (frame[1, 1, 0], frame[1, 1, 2]) == (64, 64)  # t 11 ON, t 20 OFF; t 10 and 21 outside the window
    frame[1, 1] = 0
    assert not frame.any()  # x -1, x = width, y -1, y = height: outside the sensor


def test_frame_to_events_checks_its_frame_and_stays_inside_the_window() -> None:
    for bad in (np.zeros((4, 5), np.uint8), np.zeros((4, 5, 4), np.uint8), np.zeros((4, 5, 3), np.float32)):
        with pytest.raises(ValueError) as error:
            frame_to_events(bad, 0, 10)
        assert str(error.value) == f"event frame must be uint8 HxWx3, got {bad.dtype} {bad.shape}"
    frame = np.full((4, 5, 3), 255, np.uint8)
    for start, end in ((0, 1), (100, 103)):
        batch = frame_to_events(frame, start, end, seed=3)
        assert len(batch) == 2 * 4 * 20 and ((batch.t_ns > start) & (batch.t_ns <= end)).all()
        assert (batch.x.dtype, batch.y.dtype) == (np.uint16, np.uint16)
    again = frame_to_events(frame, 100, 103, seed=3)
    assert cd_tuples(again) == cd_tuples(frame_to_events(frame, 100, 103, seed=3))


def test_event_window_length_must_be_positive() -> None:
    with pytest.raises(ValueError) as error:
        EventWindow(0)
    assert str(error.value) == "event window must be positive, got 0 ns"
    assert EventWindow(1).window_ns == 1


def _packet_at(t: int, x: int = 1) -> EventBatch:
    return _batch([t], [x], [1], [1])


def test_the_window_keeps_packets_up_to_keep_ns_behind_the_newest_event() -> None:
    """Default keep: 4 windows + 1 s. A packet exactly keep_ns behind the newest event stays, one ns more goes."""
    window = EventWindow(10)
    keep = 4 * 10 + 1_000_000_000
    assert window.keep_ns == keep
    window.add(_packet_at(100))
    window.add(_packet_at(100 + keep, x=2))
    assert window.frame(100)[1, 1, 0] == 64
    window.add(_packet_at(101 + keep, x=3))
    assert not window.frame(100).any()
    kept = EventWindow(10, keep_ns=50)
    for t in (100, 160, 200):
        kept.add(_packet_at(t))
    assert not kept.frame(100).any() and kept.frame(160).any()


def test_empty_packets_anywhere_in_the_window_are_harmless() -> None:
    window = EventWindow(10, keep_ns=20)
    window.add(EventBatch.empty(4, 5))
    window.add(EventBatch.empty(4, 5))
    assert window.frame(5).shape == (4, 5, 3) and window.frame(5).dtype == np.uint8 and not window.frame(5).any()
    window.add(_packet_at(100))
    window.add(_packet_at(200, x=2))
    assert not window.frame(100).any() and window.frame(200)[1, 2, 0] == 64


def test_the_window_covers_its_end_and_includes_an_event_exactly_there() -> None:
    window = EventWindow(10)
    window.add(_batch([5, 20], [1, 2], [1, 1], [1, 1]))
    window.add(_packet_at(30, x=3))
    assert window.covers(30) and not window.covers(31)
    assert window.frame(30)[1, 3, 0] == 64 and window.frame(30)[1, 2, 0] == 0
    late = window.frame(10_000)
    assert late.shape == (4, 5, 3) and late.dtype == np.uint8 and not late.any()


def test_a_still_scene_does_not_pile_up_batches_without_events() -> None:
    """In front of a still scene an event camera sends packets without events, and the node renders a frame per
    set. The window keeps one batch for the sensor size, not one per render: the former window kept them all (its
    pruning starts at the oldest batch with events, which stays the newest), 30 more a second, each scanned by every
    ``add`` and ``frame``."""
    window = EventWindow(50_000_000)
    window.add(_packet_at(10**9))
    for _ in range(1000):
        window.add(EventBatch.empty(4, 5))
    assert len(window._batches) == 1 and window.frame(10**9)[1, 1, 0] == 64
    quiet = EventWindow(10)
    quiet.add(EventBatch.empty(4, 5))
    quiet.add(EventBatch.empty(4, 5))
    assert len(quiet._batches) == 1 and quiet.frame(5).shape == (4, 5, 3)
    encoder, stream = Evt3Encoder(), EventStream(50_000_000)
    first = encoder.encode(np.array([0]), np.array([3]), np.array([2]), np.array([1]))
    stream.add_packet(EventPacketView(10**9, "ev", HEIGHT, WIDTH, 0, 0, "evt3", 0, memoryview(first)))
    for k in range(1, 3000):  # 3 s of 1 kHz packets with time words only, a set every 33 ms
        stamp = 10**9 + k * 10**6
        stream.add_packet(
            EventPacketView(stamp, "ev", HEIGHT, WIDTH, k, 0, "evt3", 0, memoryview(encoder.tick(k * 1000)))
        )
        if k % 33 == 0:
            assert stream.frame(stamp).any() == (k < 50)  # the one event (at the first stamp) leaves the window
    assert len(stream.window._batches) <= 2  # the former window: 91
