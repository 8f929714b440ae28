"""The event decoders on upstream's own recordings (ros-event-camera/event_camera_codecs ``test/``, copied to
``../shared/reference-data/event_camera_codecs/``), checked against upstream's own checksums from its
``decoder_test.cpp`` (listed in the README beside the data): a real EVT3 stream from a Prophesee camera through
metavision_driver with external triggers, and a ``mono`` stream recorded as ``event_array_msgs/EventArray``.

Every packet of a bag is decoded in order by one decoder per topic, through the bag replay's reader (which must know
``event_array_msgs``). The checks break on purpose too: a decoder that starts afresh with every packet, flipped
polarity bits and swapped axes all miss the sums. Skipped, saying why, where ``../shared`` is absent.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memsam_core.config import load_config
from memsam_core.events import EventBatch, accumulate, concatenate
from memsam_ros.inputs.event_codecs import Evt3Decoder, Evt3TimeTracker, PacketDecoder
from memsam_ros.inputs.event_stream import EventStream, SensorClock, packet_view

DATA = Path(__file__).resolve().parents[2] / "shared" / "reference-data" / "event_camera_codecs"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"upstream's recordings are not here ({DATA} is absent)")
TOPIC = "/event_camera/events"
# upstream's test/decoder_test.cpp (commit 656bd53): sums of t, x, y, polarity over CD events; t, edge, id of triggers
EVT3_CD = (1222326831810000, 42078718, 31656267, 41439)
EVT3_TRIGGERS = (29096982000, 1, 0)
MONO_CD = (4950000, 34450, 26450, 50)
# upstream's decodeUntil expectations (README): (time limit, CD sums, last event time)
EVT3_UNTIL = [
    (14252072000, (29004181874000, 897009, 773502, 1028), 14252063000),  # the start of the next packet
    (14251634000, (28491115518000, 880131, 758865, 1006), 14251630000),  # inside a packet
]


def read_bag(name: str) -> list[Any]:
    """Every message of the bag's event topic, in order, as the bag replay deserialises them."""
    from memsam_ros.tools.bag_tools import iter_messages, open_reader

    reader = open_reader(DATA / name)
    try:
        return [msg for _, _, msg in iter_messages(reader, [TOPIC])]
    finally:
        reader.close()


@pytest.fixture(scope="module")
def evt3() -> list[Any]:
    return read_bag("test_data_evt3_trigger")


def cd_sums(batch: EventBatch) -> tuple[int, int, int, int]:
    return (int(batch.t_ns.sum()), int(batch.x.astype(np.int64).sum()), int(batch.y.astype(np.int64).sum()),
            int(batch.polarity.sum()))  # fmt: skip


def decode_all(messages: list[Any], fresh_every_packet: bool = False) -> tuple[EventBatch, tuple[int, int, int]]:
    """Upstream's test: every packet in order through one decoder per topic (or, broken, a new one per packet)."""
    decoder, cd, triggers = PacketDecoder(), [], []
    for msg in messages:
        decoded = (PacketDecoder() if fresh_every_packet else decoder).decode(msg)
        cd.append(decoded.cd)
        triggers.append(decoded.triggers)
    trigger_sums = tuple(
        int(sum(getattr(t, f).astype(np.int64).sum() for t in triggers)) for f in ("t_ns", "edge", "id")
    )
    return concatenate(cd), trigger_sums


def test_evt3_recording_gives_upstreams_checksums(evt3: list[Any]) -> None:
    assert len(evt3) == 105 and {m.encoding for m in evt3} == {"evt3"} and {m.time_base for m in evt3} == {0}
    cd, triggers = decode_all(evt3)
    assert cd_sums(cd) == EVT3_CD
    assert triggers == EVT3_TRIGGERS


def test_mono_recording_in_its_old_message_type_gives_upstreams_checksums() -> None:
    from memsam_ros.tools.bag_tools import bag_topics

    assert bag_topics(DATA / "test_data_mono_cd")[TOPIC] == ("event_array_msgs/msg/EventArray", 2)
    messages = read_bag("test_data_mono_cd")
    assert [m.time_base for m in messages] == [0, 50000] and {m.encoding for m in messages} == {"mono"}
    cd, _ = decode_all(messages)
    assert cd_sums(cd) == MONO_CD


@pytest.mark.parametrize(("limit", "sums", "last"), EVT3_UNTIL)
def test_evt3_up_to_a_time_gives_upstreams_sums(evt3: list[Any], limit: int, sums: tuple, last: int) -> None:
    cd, _ = decode_all(evt3)
    before = cd.t_ns < limit
    part = EventBatch(cd.t_ns[before], cd.x[before], cd.y[before], cd.polarity[before], cd.height, cd.width)
    assert cd_sums(part) == sums and int(part.t_ns.max()) == last


# --------------------------------------------------------------------------------- the checks break on purpose
def test_a_decoder_that_starts_afresh_with_every_packet_misses_the_checksums(evt3: list[Any]) -> None:
    """The old decoder: events before a packet's first time words are lost, the sums differ."""
    cd, _ = decode_all(evt3, fresh_every_packet=True)
    assert cd_sums(cd) != EVT3_CD and len(cd) < len(decode_all(evt3)[0])


def test_flipped_polarity_bits_or_swapped_axes_miss_the_checksums(evt3: list[Any]) -> None:
    flipped = []
    for msg in evt3:  # the input broken: the polarity bit of every ADDR_X word inverted
        words = np.frombuffer(msg.events.tobytes(), "<u2").copy()
        words[(words >> 12) == 0x2] ^= 1 << 11
        flipped.append(replace(packet_view(msg), events=memoryview(words.tobytes())))
    cd, _ = decode_all(flipped)
    assert cd_sums(cd)[:3] == EVT3_CD[:3] and cd_sums(cd)[3] == len(cd) - EVT3_CD[3] != EVT3_CD[3]
    good, _ = decode_all(evt3)
    swapped = EventBatch(good.t_ns, good.y, good.x, good.polarity, good.height, good.width)  # the output broken
    assert cd_sums(swapped) != EVT3_CD


# ----------------------------------------------------------------------------- packets cut as a driver cuts them
@pytest.mark.parametrize("seed", [0, 1])
def test_the_recording_cut_anywhere_decodes_as_packet_by_packet(evt3: list[Any], seed: int) -> None:
    """One pass over the concatenated payloads = packet by packet with carried state = the byte stream cut at
    random offsets (inside words too), as metavision_driver cuts buffers; the executor's time tracker agrees."""
    stream = b"".join(m.events.tobytes() for m in evt3)
    by_packet, _ = decode_all(evt3)
    one_pass = Evt3Decoder(1280, 720).decode(stream).cd
    edges = np.sort(np.random.default_rng(seed).choice(np.arange(1, len(stream)), 300, replace=False))
    decoder, tracker, parts = Evt3Decoder(1280, 720), Evt3TimeTracker(), []
    for a, b in zip([0, *edges], [*edges, len(stream)]):
        parts.append(decoder.decode(stream[a:b]).cd)
        tracker.advance(stream[a:b])
        assert tracker.time == decoder.time
    cut = concatenate(parts)
    for batch in (one_pass, cut):
        order_a = np.lexsort((batch.polarity, batch.y, batch.x, batch.t_ns))
        order_b = np.lexsort((by_packet.polarity, by_packet.y, by_packet.x, by_packet.t_ns))
        for field in ("t_ns", "x", "y", "polarity"):
            np.testing.assert_array_equal(getattr(batch, field)[order_a], getattr(by_packet, field)[order_b])


# -------------------------------------------------------------------------------------- ROS time of the events
def test_the_sensor_clock_keeps_the_recordings_packets_continuous(evt3: list[Any]) -> None:
    """metavision_driver stamps: the offset moves by at most the slew between packets, while anchoring every packet
    at its own stamp (the old rule) moves its events by up to 4 ms against the previous packet's."""
    tracker, clock, offsets, anchors, stamps = Evt3TimeTracker(), SensorClock(), [], [], []
    for msg in evt3:
        view = packet_view(msg)
        times = tracker.advance(view.events)
        offsets.append(clock.update(view.stamp_ns, times.first_us * 1000))
        anchors.append(view.stamp_ns - times.first_us * 1000)  # header stamp + (t - the packet's first t)
        stamps.append(view.stamp_ns)
    elapsed = np.maximum(np.diff(stamps), 0)
    assert np.all(np.abs(np.diff(offsets)) <= SensorClock.SLEW * elapsed + 1)
    assert np.abs(np.diff(offsets)).max() < 30_000  # < 30 µs between these 12 ms packets
    assert not np.all(np.abs(np.diff(anchors)) <= SensorClock.SLEW * elapsed + 1)  # the check fails for the old rule
    assert np.abs(np.diff(anchors)).max() > 2_000_000


def test_node_frames_from_skipped_packets_equal_the_full_decode(evt3: list[Any]) -> None:
    """The node's stream decodes only the packets a window needs (resynchronising after skipped ones): its frames
    equal those of decoding every packet, at the clock's offset."""
    stream = EventStream(50_000_000)
    covered = [stream.add_packet(packet_view(m)).covered_ns for m in evt3]
    full, _ = decode_all(evt3)
    events = EventBatch(full.t_ns + stream.clock.offset_ns, full.x, full.y, full.polarity, 720, 1280)
    for index in (20, 55, 90):  # in stamp order, as sets are rendered
        end = covered[index] - 3_000_000
        frame = stream.frame(end)
        assert frame.any()
        np.testing.assert_array_equal(frame, accumulate(events, end - 50_000_000, end))


def test_bag_replay_finds_and_reads_the_old_message_type() -> None:
    """Offline evaluation's path: the event topic of a bag in ``event_array_msgs`` is found and read."""
    from memsam_ros.inputs.converter import InputConverter
    from memsam_ros.tools.bag_tools import bag_topics, detect_inputs

    types = {topic: msgtype for topic, (msgtype, _) in bag_topics(DATA / "test_data_mono_cd").items()}
    config = detect_inputs(types, load_config(None, {"model.modalities": ["rgb", "event"]}))
    assert (config.ros.event_topic, config.ros.event_type) == (TOPIC, "event_array_msgs")
    converter = InputConverter(config)
    messages = read_bag("test_data_mono_cd")
    received = [converter.receive("event", msg, 0.0)[0] for msg in messages]
    header = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in messages]
    # mono: ROS time = header stamp + dt; the stream is complete up to its newest event
    dt = [int((np.frombuffer(m.events.tobytes(), "<u8") & 0xFFFFFFFF).max()) for m in messages]
    assert [r.stamp_ns for r in received] == [h + d for h, d in zip(header, dt)]
    frame = received[-1].decode(received[-1].stamp_ns)
    assert frame.shape == (480, 640, 3) and int((frame > 0).sum()) > 0


@pytest.mark.parametrize("name", ["test_data_evt3_trigger", "test_data_mono_cd"])
def test_the_recorded_bytes_are_what_the_node_reads_and_the_player_sends(name: str) -> None:
    """The bags' raw CDR, as ``memsam-play-bag`` publishes it, read by the node's CDR reader, and deserialised by
    the vendored rclpy type: both equal the fields rosbags reads (same wire layout under both type names)."""
    from rclpy.serialization import deserialize_message

    from memsam_ros.inputs.cdr import read_event_packet
    from memsam_ros.inputs.converter import message_class
    from memsam_ros.tools.bag_tools import open_reader

    reader = open_reader(DATA / name)
    try:
        (connection,) = reader.connections
        raws = [raw for _, _, raw in reader.messages(connections=[connection])]
    finally:
        reader.close()
    expected = [packet_view(m) for m in read_bag(name)]
    cls = message_class(connection.msgtype)
    for raw, view in zip(raws, expected, strict=True):
        read = read_event_packet(raw)
        assert _fields(read) == _fields(view)
        assert bytes(read.events) == bytes(view.events) == bytes(deserialize_message(raw, cls).events)


def _fields(view: Any) -> tuple:
    return (view.stamp_ns, view.frame_id, view.height, view.width, view.seq, view.time_base, view.encoding,
            int(view.is_bigendian))  # fmt: skip
