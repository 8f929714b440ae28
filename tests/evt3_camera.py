"""A metavision-like EVT3 camera for the stream tests: one continuous word stream cut every ``packet_us`` of sensor
time, each packet stamped with the true ROS time of its start + 0.5 ms (ROS time ``ROS_NS`` = sensor time 0)."""

from __future__ import annotations

import itertools

import numpy as np

from memsam_core.events import EventBatch
from memsam_ros.inputs.cdr import EventPacketView
from memsam_ros.inputs.event_codecs import Evt3Encoder

ROS_NS = 1_000_000_000_000


def swapped(data: bytes, size: int = 2) -> bytes:
    """The same words in the other byte order."""
    return np.frombuffer(data, f"<u{size}").astype(f">u{size}").tobytes()


def evt3_camera(
    seconds: float,
    width: int,
    height: int,
    rate_hz: float = 200_000,
    packet_us: int = 1000,
    seed: int = 0,
    start_us: int = 5_000_000,
    big_endian: bool = False,
) -> tuple[list[EventPacketView], EventBatch]:
    """The packets and the events they carry in ROS time (``rate_hz`` uniform random events a second)."""
    rng = np.random.default_rng(seed)
    events = int(seconds * rate_hz)
    time_us = np.sort(rng.integers(start_us, start_us + int(seconds * 1e6), events))
    x, y, p = rng.integers(0, width, events), rng.integers(0, height, events), rng.integers(0, 2, events)
    encoder, packets = Evt3Encoder(), []
    edges = np.arange(start_us, start_us + int(seconds * 1e6) + 1, packet_us)
    for index, (a, b) in enumerate(itertools.pairwise(np.searchsorted(time_us, edges))):
        data = encoder.encode(time_us[a:b], x[a:b], y[a:b], p[a:b]) if b > a else encoder.tick(int(edges[index]))
        stamp = ROS_NS + int(edges[index]) * 1000 + 500_000
        data = swapped(data) if big_endian else data
        packets.append(EventPacketView(stamp, "ev", height, width, index, 0, "evt3", int(big_endian), memoryview(data)))
    return packets, EventBatch(ROS_NS + time_us * 1000, x, y, p.astype(bool), height, width)
