"""Bad input never crashes the node or stops valid output (issue 6), over real DDS.

One node is shared by every fault case: each case injects the fault, checks a throttled warning names
the topic and reason, checks ``/diagnostics`` shows it, and checks the next valid set is published.
Plus set accounting and a short soak (benchmarks/soak_node.py). ~60 s on 2 cores.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.parameter import Parameter
from ros_helpers import NodeHarness, image_msg, key_of, raw_image, scene_frames, status_values, wait_until

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]


class Clock:
    """Test stamps: strictly increasing unless a case deliberately jumps."""

    def __init__(self, start: float = 50.0) -> None:
        self.t = start

    def next(self, step: float = 0.5) -> float:
        self.t += step
        return self.t


@pytest.fixture(scope="module")
def harness():
    h = NodeHarness()
    yield h
    h.close()


@pytest.fixture(scope="module")
def frames():
    return scene_frames(seed=11)


@pytest.fixture(scope="module")
def clock():
    return Clock()


def assert_recovers(harness: NodeHarness, frames, clock: Clock, **kwargs) -> dict:
    """The next valid set is still segmented and published."""
    stamp = clock.next()
    out = harness.roundtrip(stamp, frames, **kwargs)
    assert out is not None, f"no output for a valid set at {stamp} after the fault; warnings: {harness.warnings}"
    return out


def assert_warned(harness: NodeHarness, *needles: str) -> str:
    found = wait_until(lambda: harness.warnings_matching(*needles), 5.0)
    assert found, f"no warning containing {needles}; got {harness.warnings}"
    return found[0]


def assert_diagnosed(harness: NodeHarness, modality: str, reason: str, counter: str = "decode_errors") -> None:
    def shown():
        status = harness.collector.latest_status(f": input {modality}")
        if status is None:
            return False
        values = status_values(status)
        return reason in values["last_reason"] and int(values[counter]) > 0 and status.level >= b"\x01"

    assert wait_until(shown, 5.0), status_values(harness.collector.latest_status(f": input {modality}"))


def publish_set_with(harness, frames, stamp, modality, bad_msg):
    """A set whose ``modality`` message is ``bad_msg`` (others valid)."""
    harness.publisher.publish_set(stamp, frames, skip=(modality,))
    harness.publisher.publish(modality, bad_msg)


@pytest.mark.parametrize(
    ("modality", "make_bad", "reason"),
    [
        ("rgb", lambda s: raw_image(2, 2, "yuv422", 4, bytes(8), s), "unsupported encoding; encoding 'yuv422'"),
        ("depth", lambda s: raw_image(2, 2, "rgb8", 6, bytes(12), s), "not allowed for modality 'depth'"),
        ("lidar", lambda s: raw_image(96, 128, "32FC1", 512, bytes(100), s), "data length 100 != step*height"),
        ("event", lambda s: raw_image(96, 128, "rgb8", 100, bytes(9600), s), "step 100 < width*bytes_per_pixel"),
        ("event", lambda s: raw_image(0, 0, "rgb8", 0, b"", s), "zero-size image"),
    ],
    ids=["unknown-encoding", "wrong-encoding-for-modality", "data-length", "step-too-small", "zero-size"],
)
def test_undecodable_images(harness, frames, clock, modality, make_bad, reason):
    stamp = clock.next()
    publish_set_with(harness, frames, stamp, modality, make_bad(stamp))
    warning = assert_warned(harness, f"[{modality}]", reason)
    assert harness.node.topics[modality] in warning
    assert_diagnosed(harness, modality, reason)
    if modality != "rgb":  # the set itself still goes out, without the broken modality
        out = harness.wait_output(key_of(stamp))
        assert out is not None and modality in out["info"].modalities_missing
    assert_recovers(harness, frames, clock)


def test_resolution_differs_from_rgb_is_resampled(harness, frames, clock):
    stamp = clock.next()
    small = scene_frames(seed=12, height=48, width=64)
    publish_set_with(harness, frames, stamp, "depth", image_msg(small["depth"], "32FC1", stamp))
    out = harness.wait_output(key_of(stamp))
    assert out is not None and "depth" in out["info"].modalities_used
    assert (out["labels"].height, out["labels"].width) == (96, 128)  # outputs at the RGB resolution
    assert_warned(harness, "[depth]", "resolution 64x48 differs from rgb 128x96")
    assert_diagnosed(harness, "depth", "resolution", counter="faults")
    assert_recovers(harness, frames, clock)


def test_nan_inf_depth(harness, frames, clock):
    stamp = clock.next()
    depth = frames["depth"].copy()
    depth[::2] = np.nan
    depth[1::4] = np.inf  # >= 75 % non-finite
    publish_set_with(harness, frames, stamp, "depth", image_msg(depth, "32FC1", stamp))
    out = harness.wait_output(key_of(stamp))
    assert out is not None and "depth" in out["info"].modalities_used
    assert np.isfinite(np.frombuffer(bytes(out["confidence"].data), np.float32)).all()
    assert_warned(harness, "[depth]", "% of depth pixels are NaN/Inf")

    stamp = clock.next()
    all_bad = np.full_like(depth, np.nan)
    all_bad[:, ::3] = -np.inf
    publish_set_with(harness, frames, stamp, "depth", image_msg(all_bad, "32FC1", stamp))
    assert harness.wait_output(key_of(stamp)) is not None
    assert_warned(harness, "[depth]", "no valid depth pixel")
    assert_diagnosed(harness, "depth", "no valid depth pixel", counter="faults")
    assert_recovers(harness, frames, clock)


def test_all_invalid_lidar(harness, frames, clock):
    stamp = clock.next()
    zeros = np.zeros_like(frames["lidar"])
    publish_set_with(harness, frames, stamp, "lidar", image_msg(zeros, "32FC1", stamp))
    assert harness.wait_output(key_of(stamp)) is not None
    assert_warned(harness, "[lidar]", "no valid LiDAR return")
    assert_diagnosed(harness, "lidar", "no valid LiDAR return", counter="faults")
    assert_recovers(harness, frames, clock)


def test_stamps_out_of_order(harness, frames, clock):
    assert_recovers(harness, frames, clock)
    late = clock.t - 0.3
    harness.send(late, frames)
    assert_warned(harness, "[rgb]", "stamp out of order")
    assert harness.wait_output(key_of(late), timeout=1.0) is None  # older than a published set: dropped
    assert_diagnosed(harness, "rgb", "out of order", counter="faults")
    assert_recovers(harness, frames, clock)


def test_stamps_jump_back_like_a_bag_loop(harness, frames, clock):
    resets_before = harness.node.sync.stats.resets
    clock.t = 5.0  # the bag starts over
    out = assert_recovers(harness, frames, clock)
    assert out["labels"].header.stamp.sec == 5
    assert harness.node.sync.stats.resets == resets_before + 1
    assert_warned(harness, "[rgb]", "stamp jumped back", "synchroniser reset")
    pipeline = wait_until(
        lambda: (s := harness.collector.latest_status(": pipeline")) and int(status_values(s)["sync_resets"]) >= 1, 5.0
    )
    assert pipeline
    assert_recovers(harness, frames, clock)


def test_stamps_jump_forward(harness, frames, clock):
    clock.t += 3600.0
    out = assert_recovers(harness, frames, clock)
    assert out is not None
    assert_warned(harness, "[rgb]", "stamp jumped forward by 3600")
    assert_recovers(harness, frames, clock)


def test_repeated_fault_is_throttled_but_counted(harness, frames, clock):
    before = len(harness.warnings_matching("[event]", "unsupported encoding 'bayer_xyz'"))
    assert before == 0
    for _ in range(5):
        stamp = clock.next(0.05)
        harness.publisher.publish("event", raw_image(2, 2, "bayer_xyz", 2, bytes(4), stamp))
    assert_warned(harness, "[event]", "bayer_xyz")

    def counted():
        status = harness.collector.latest_status(": input event")
        return status and "bayer_xyz" in status_values(status)["last_reason"]

    assert wait_until(counted, 5.0)
    assert len(harness.warnings_matching("[event]", "bayer_xyz")) == 1  # warn_throttle_s = 30 in the tests
    assert_recovers(harness, frames, clock)


def stream_until(harness, frames, clock, predicate, timeout: float, skip=(), period: float = 0.25):
    """Publish sets every ``period`` s (like a live sensor rig) until ``predicate()`` holds; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        harness.send(clock.next(period), frames, skip=skip)
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(period)


def test_topic_silent_then_returning(harness, frames, clock):
    node = harness.node
    node.set_parameters([Parameter("ros.silent_after_s", value=1.0)])
    try:

        def lidar_status():
            return harness.collector.latest_status(": input lidar")

        def lidar_silent():
            status = lidar_status()
            return status is not None and status.level == b"\x01" and "silent" in status.message

        assert stream_until(harness, frames, clock, lidar_silent, 10.0, skip=("lidar",))
        assert_warned(harness, "[lidar]", "silent for", "published without lidar")
        assert "lidar" in status_values(harness.collector.latest_status(": pipeline"))["missing_sensors"]
        out = harness.wait_output(key_of(clock.t))
        assert out is not None and "lidar" in out["info"].modalities_missing

        assert stream_until(harness, frames, clock, lambda: not lidar_silent(), 10.0)  # lidar is back
        assert status_values(lidar_status())["silent_s"] == "0"
        out = assert_recovers(harness, frames, clock)
        assert "lidar" in out["info"].modalities_used
    finally:
        node.set_parameters([Parameter("ros.silent_after_s", value=600.0)])


def test_all_topics_silent(harness, frames, clock):
    node = harness.node
    node.set_parameters([Parameter("ros.silent_after_s", value=0.5)])
    try:
        assert_recovers(harness, frames, clock)
        assert_warned(harness, "no input on any topic")

        def pipeline_error():
            status = harness.collector.latest_status(": pipeline")
            return status is not None and status.level == b"\x02" and "no input" in status.message

        assert wait_until(pipeline_error, 5.0)
        assert_recovers(harness, frames, clock)
    finally:
        node.set_parameters([Parameter("ros.silent_after_s", value=600.0)])


def test_set_accounting_balances(harness, frames, clock):
    """A burst faster than inference: sets are dropped (keep-newest), and every set is accounted for."""
    for _ in range(15):
        harness.send(clock.next(0.05), frames)
    last = assert_recovers(harness, frames, clock)
    assert last is not None
    assert harness.node.wait_idle(30)
    counts = harness.node.counts()
    assert counts.pending == 0
    assert counts.received == counts.processed + counts.dropped + counts.failed
    assert counts.dropped > 0 and counts.failed == 0
    stats = harness.node.sync.stats
    queued = harness.node.sync.queued()
    for m in stats.received:
        assert stats.received[m] == stats.used[m] + stats.evicted[m] + stats.late[m] + stats.discarded[m] + queued[m]

    def diag_matches():
        values = status_values(harness.collector.latest_status(": pipeline"))
        return int(values["sets_received"]) == counts.received and int(values["sets_dropped"]) == counts.dropped

    assert wait_until(diag_matches, 5.0)
    info_dropped = harness.collector.complete(key_of(clock.t))["info"].sets_dropped
    assert info_dropped == counts.dropped


def test_node_survived_everything(harness, frames, clock):
    assert harness.thread.is_alive()
    assert harness.node.counts().failed == 0
    assert_recovers(harness, frames, clock)


def test_short_soak(ros_domain_id: int):
    """300 sets flooding the node at 60 Hz: RSS bounded, received == processed + dropped + failed. On a domain of
    this test's own (a random one once met another engineer's node: twice the outputs)."""
    command = [sys.executable, str(ROOT / "benchmarks/soak_node.py"), "--sets", "300", "--rate", "60"]
    result = subprocess.run(
        [*command, "--domain", str(ros_domain_id)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout
