"""memsam's synchroniser against ROS 2's own ``message_filters.ApproximateTimeSynchronizer`` on the same streams.

Where they must agree: every sensor at the camera rate with small jitter, all present — both emit the same sets
with the same messages. Where memsam differs on purpose: a sensor that dies (message_filters waits for it
forever; memsam goes on without it after ``sync.max_wait_s`` and says which one is missing) and a slower sensor
(message_filters uses each LiDAR message once, so half of the 30 Hz camera frames get no output; memsam puts the
nearest LiDAR message within slop into every set). message_filters comes from ../shared/ros2-upstream.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np
import pytest

from memsam_ros.sync import ModalitySynchronizer

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("message_filters") is None,
    reason="needs message_filters (not on PyPI): bash ../shared/ros2-upstream/install.sh .venv",
)
MODALITIES = ["rgb", "depth", "lidar", "event"]
SLOP = 0.02


@dataclass
class _Stamped:
    header: object


def _streams(rates: dict[str, float], seconds: float, jitter: float, dies: dict[str, float] | None = None, seed=0):
    """``(arrival, modality, stamp)`` sorted by arrival: stamps on each sensor's clock with jitter, arrival 5-15 ms
    after the stamp; a sensor in ``dies`` sends nothing after that time."""
    rng = np.random.default_rng(seed)
    events = []
    for modality, rate in rates.items():
        offset = {"rgb": 0.0, "depth": 0.002, "lidar": 0.004, "event": 0.001}[modality]
        for k in range(int(seconds * rate)):
            stamp = round(1.0 + k / rate + offset + rng.uniform(-jitter, jitter), 6)
            if dies and modality in dies and stamp > 1.0 + dies[modality]:
                break
            events.append((stamp + rng.uniform(0.005, 0.015), modality, stamp))
    return sorted(events)


def _memsam_sets(events, single_use=(), max_wait=0.2, slop=SLOP) -> list[dict[str, float | None]]:
    sync = ModalitySynchronizer(MODALITIES, slop_s=slop, max_wait_s=max_wait, single_use=single_use, queue_size=20)
    out = []
    for arrival, modality, stamp in events:
        out += sync.add(modality, stamp, stamp, arrival)
        out += sync.poll(arrival)
    out += sync.poll(events[-1][0] + 10.0)
    return [{m: s.stamps.get(m) for m in MODALITIES} for s in out]


def _message_filters_sets(events, slop=SLOP) -> list[dict[str, float | None]]:
    import message_filters
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    sources = {m: message_filters.SimpleFilter() for m in MODALITIES}
    sync = message_filters.ApproximateTimeSynchronizer([sources[m] for m in MODALITIES], queue_size=20, slop=slop)
    out = []

    def on_set(*messages):
        out.append({m: msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9 for m, msg in zip(MODALITIES, messages)})

    sync.registerCallback(on_set)
    for _, modality, stamp in events:
        sec = int(stamp)
        header = Header(stamp=Time(sec=sec, nanosec=round((stamp - sec) * 1e9)))
        sources[modality].signalMessage(_Stamped(header))
    return [{m: round(v, 6) for m, v in s.items()} for s in out]


def test_regular_streams_give_the_same_sets_as_message_filters() -> None:
    events = _streams(dict.fromkeys(MODALITIES, 30.0), seconds=4, jitter=0.003)
    ours = _memsam_sets(events, single_use=("depth", "lidar", "event"))  # one set per message, as message_filters
    theirs = _message_filters_sets(events)
    assert len(theirs) >= 110
    assert ours == theirs
    assert _memsam_sets(events) == theirs  # the default (messages may serve several sets) changes nothing here


def test_a_dead_sensor_stops_message_filters_but_not_memsam() -> None:
    events = _streams(dict.fromkeys(MODALITIES, 30.0), seconds=4, jitter=0.003, dies={"lidar": 2.0})
    ours, theirs = _memsam_sets(events), _message_filters_sets(events)
    rgb_frames = sum(1 for _, m, _ in events if m == "rgb")
    assert len(ours) == rgb_frames  # every camera frame gets an output
    assert len(theirs) < 0.55 * rgb_frames  # nothing after the LiDAR died
    before = [s for s in ours if s["lidar"] is not None]
    assert before == theirs  # while every sensor lives, the same sets
    after = ours[len(before) :]
    assert after and all(s["lidar"] is None and s["depth"] is not None for s in after)


def test_a_slower_lidar_is_in_every_memsam_set_but_in_every_other_message_filters_set() -> None:
    rates = {"rgb": 30.0, "depth": 30.0, "lidar": 15.0, "event": 30.0}
    events = _streams(rates, seconds=4, jitter=0.003)
    slop = 0.05  # the shipped sync.slop_s: more than half the LiDAR period, so a LiDAR return is always within it
    ours, theirs = _memsam_sets(events, slop=slop), _message_filters_sets(events, slop=slop)
    rgb_frames = sum(1 for _, m, _ in events if m == "rgb")
    assert len(ours) == rgb_frames and all(s["lidar"] is not None for s in ours)
    assert abs(len(theirs) - rgb_frames / 2) <= 3  # one set per LiDAR message
    assert all(abs(s["lidar"] - s["rgb"]) <= slop for s in ours)
    # memsam with LiDAR single use behaves like message_filters for that sensor: each message in one set
    single = _memsam_sets(events, single_use=("lidar",), slop=slop)
    used = [s["lidar"] for s in single if s["lidar"] is not None]
    assert len(used) == len(set(used)) and abs(len(used) - len(theirs)) <= 3
