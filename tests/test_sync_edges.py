"""Edges of the synchroniser that the mutation run (benchmarks/mutation.py) found untested: the boundaries of its
rules (slop, ties between references, a bag loop, silence in time and in stamps), a topic's period as the median of
its last intervals, the accounting of discarded and evicted messages, single-use bookkeeping under both policies,
and the settings it is built with. Stamps are binary-exact where a rule is tested at its boundary.
"""

from __future__ import annotations

import logging

import pytest

from memsam_core.config import MemSamConfig
from memsam_ros.sync import LOG, ModalitySynchronizer, SyncedSet, replay_config

MODS = ["rgb", "depth", "lidar"]


def make(modalities: list[str] = MODS, **kw) -> ModalitySynchronizer:
    return ModalitySynchronizer(modalities, **({"slop_s": 0.05, "queue_size": 10, "max_wait_s": 0.2} | kw))


def assert_accounting(sync: ModalitySynchronizer) -> None:
    s, queued = sync.stats, sync.queued()
    for m in sync.modalities:
        assert s.received[m] == s.used[m] + s.evicted[m] + s.late[m] + s.discarded[m] + queued[m], m


def run(sync: ModalitySynchronizer, messages: list[tuple[float, str, float]]) -> dict[float, tuple[float, SyncedSet]]:
    """Feed ``(arrival, modality, stamp)`` in arrival order (the item is the stamp); the sets by reference stamp,
    with the time each went out."""
    out: dict[float, tuple[float, SyncedSet]] = {}
    for now, modality, stamp in sorted(messages):
        for synced in sync.add(modality, stamp, stamp, now_s=now) + sync.poll(now):
            out[synced.stamp_s] = (now, synced)
    return out


# ------------------------------------------------------------------------------------------------ settings
def test_the_class_defaults_are_the_shipped_config_defaults() -> None:
    sync, shipped = ModalitySynchronizer(["rgb"]), MemSamConfig().sync
    assert (sync.slop_s, sync.queue_size, sync.max_wait_s, sync.policy) == (
        shipped.slop_s,
        shipped.queue_size,
        shipped.max_wait_s,
        shipped.policy,
    )


def test_from_config_takes_the_reference() -> None:
    config = MemSamConfig(model={"modalities": ["rgb", "depth"]}, sync={"reference": "depth", "required": ["depth"]})
    assert ModalitySynchronizer.from_config(config).reference == "depth"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policy": "newest"}, "policy 'newest' is not one of ['nearest', 'latest']"),
        ({"slop_s": -0.1}, "need slop_s >= 0, max_wait_s >= 0, reset_backjump_s > 0, queue_size >= 1"),
        ({"max_wait_s": -0.1}, "need slop_s >= 0, max_wait_s >= 0, reset_backjump_s > 0, queue_size >= 1"),
        ({"reset_backjump_s": 0.0}, "need slop_s >= 0, max_wait_s >= 0, reset_backjump_s > 0, queue_size >= 1"),
    ],
)
def test_each_bad_setting_alone_is_refused(kwargs, message: str) -> None:
    with pytest.raises(ValueError) as error:
        ModalitySynchronizer(["rgb"], **kwargs)
    assert str(error.value) == message


def test_replaying_a_latest_config_says_which_policy_it_replaces(caplog: pytest.LogCaptureFixture) -> None:
    latest = MemSamConfig(sync={"policy": "latest"})
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        assert replay_config(latest).sync.policy == "nearest"
    assert [r.getMessage() for r in caplog.records] == [
        "sync.policy latest: replaying a bag with nearest (offline and live give the same sets only so)"
    ]


# ------------------------------------------------------------------------------------------------ matching
def test_the_slop_bound_is_inclusive_under_nearest() -> None:
    sync = make(["rgb", "depth"], slop_s=0.25)
    [out] = sync.add("depth", 1.25, "edge", now_s=0.0) + sync.add("rgb", 1.0, "r", now_s=0.0)
    assert out.items["depth"] == "edge"


def test_a_single_use_message_halfway_between_references_goes_to_the_earlier() -> None:
    """Tied with the previous reference: not the next one's; tied with the next: still this one's."""
    sync = make(["rgb", "depth"], slop_s=0.5, max_wait_s=5.0, single_use=("depth",))
    [first] = sync.add("depth", 1.0, "d1", now_s=0.0) + sync.add("rgb", 1.0, "r1", now_s=0.0)
    assert first.items["depth"] == "d1"
    out = sync.add("depth", 1.25, "tied", now_s=0.1) + sync.add("rgb", 1.5, "r2", now_s=0.2)
    [second] = out + sync.add("depth", 2.25, "far", now_s=0.3)
    assert second.missing == ("depth",)  # 1.25 is as near to 1.0 (already gone) as to 1.5
    tied = make(["rgb", "depth"], slop_s=0.5, max_wait_s=5.0, single_use=("depth",), required=())
    sets = []
    for now, modality, stamp in ((0.0, "rgb", 1.0), (0.1, "rgb", 1.5), (0.2, "depth", 1.25), (0.3, "depth", 2.25)):
        sets += tied.add(modality, stamp, stamp, now_s=now)
    assert [(s.stamp_s, s.items.get("depth")) for s in sets] == [(1.0, 1.25), (1.5, None)]


def test_a_single_use_message_at_the_reference_stamp_decides_at_once() -> None:
    """It cannot be nearer to a later reference, so the set does not wait for the next RGB frame."""
    sync = make(["rgb", "depth"], max_wait_s=5.0, single_use=("depth",))
    [out] = sync.add("rgb", 1.0, "r", now_s=0.0) + sync.add("depth", 1.0, "d", now_s=0.01)
    assert out.items == {"rgb": "r", "depth": "d"}


def test_an_out_of_order_message_does_not_undo_the_proof_of_a_newer_one() -> None:
    sync = make(max_wait_s=5.0)
    sync.add("rgb", 1.0, "r", now_s=0.0)
    sync.add("lidar", 1.02, "newer", now_s=0.01)
    sync.add("lidar", 0.98, "older, arrived later", now_s=0.02)
    [out] = sync.add("depth", 1.0, "d", now_s=0.03)
    assert out.items["rgb"] == "r" and out.items["lidar"] in ("newer", "older, arrived later")


# -------------------------------------------------------------------------------- silence and the period
def _slow_lidar(intervals: list[float], duplicate: bool = False) -> list[tuple[float, str, float]]:
    """A LiDAR whose scans are ``intervals`` apart (each arriving 10 ms after its stamp, sent twice if
    ``duplicate``: equal stamps, as event cameras send them); 30 Hz RGB around it."""
    stamps = [0.0]
    for step in intervals:
        stamps.append(stamps[-1] + step)
    messages = [(t + 0.01, "lidar", t) for t in stamps for _ in range(2 if duplicate else 1)]
    rgb = [k / 30 for k in range(int(stamps[-1] * 30) + 1)]
    return messages + [(t + 0.005, "rgb", t) for t in rgb]


@pytest.mark.parametrize(
    ("intervals", "duplicate"),
    [([0.1] * 20 + [0.5] * 10, False), ([0.5] * 12, True)],
    ids=["rate-change", "equal-stamps"],
)
def test_a_slow_sensor_is_waited_for_its_usual_period(intervals: list[float], duplicate: bool) -> None:
    """The period is the median of the last 9 stamp intervals (equal stamps are no interval): after a LiDAR drops
    to 2 Hz, or sends every scan twice, the set 0.3 s after its last scan waits for the next scan (0.5 s), which
    is nearer, instead of calling the LiDAR silent after 0.1 + max_wait."""
    sync = ModalitySynchronizer(["rgb", "lidar"], slop_s=0.25, max_wait_s=0.3)
    messages = _slow_lidar(intervals, duplicate)
    last = max(stamp for _, m, stamp in messages if m == "lidar")
    messages = [m for m in messages if m[2] < last] + [(last + 0.01, "lidar", last)] * (2 if duplicate else 1)
    messages += [(last + 0.3 + 0.005 + k / 30, "rgb", last + 0.3 + k / 30) for k in range(8)]
    messages += [(last + 0.51, "lidar", last + 0.5)]
    out = run(sync, messages)
    [(sent, synced)] = [v for stamp, v in out.items() if abs(stamp - (last + 0.3)) < 1e-9]
    assert synced.stamps.get("lidar") == pytest.approx(last + 0.5) and sent == pytest.approx(last + 0.51)


def test_silence_needs_both_the_clock_and_the_stamps() -> None:
    """LiDAR (period 0.5) last arrived at 1.0: in time it is silent from exactly 1.75 (period + max_wait 0.25); in
    stamps once the RGB stream is 0.75 past its last scan. A set needs both, or waits max_wait for itself."""
    clock = make(["rgb", "lidar"], slop_s=0.125, max_wait_s=0.25)
    for now, stamp in ((0.0, 0.0), (0.5, 0.5), (1.0, 1.0)):
        clock.add("lidar", stamp, stamp, now_s=now)
    assert clock.add("rgb", 8.0, "stamps far ahead", now_s=1.625) == []  # silent in stamps, not yet in time
    assert clock.poll(1.6875) == []
    [out] = clock.poll(1.75)
    assert out.missing == ("lidar",)
    stamps = make(["rgb", "lidar"], slop_s=0.125, max_wait_s=0.25)
    for now, stamp in ((0.0, 0.0), (0.5, 0.5), (1.0, 1.0)):
        stamps.add("lidar", stamp, stamp, now_s=now)
    assert stamps.add("rgb", 1.625, "r", now_s=3.0) == []  # silent in time, 0.125 short in stamps
    out = stamps.add("rgb", 1.75, "r2", now_s=3.0)  # exactly period + max_wait past the last scan
    assert [(o.stamp_s, o.missing) for o in out] == [(1.625, ("lidar",)), (1.75, ("lidar",))]


def test_after_a_bag_loop_a_sensor_that_stopped_is_silent_after_max_wait_of_stamps() -> None:
    """The loop forgets every topic's period; a LiDAR that does not come back costs the looped sets max_wait."""
    sync = make(["rgb", "lidar"], slop_s=0.02, max_wait_s=0.2)
    for k in range(20):
        sync.add("lidar", 100 + k / 10, k, now_s=k / 10)
        sync.add("rgb", 100 + k / 10, k, now_s=k / 10 + 0.001)
    out = []
    for k in range(4):  # the loop, played fast: 4 frames within 4 ms
        out += sync.add("rgb", 100 + k / 10, ("again", k), now_s=2.5 + k / 1000)
    assert sync.stats.resets == 1
    # silent once the looped stamps are max_wait past the start, long before the sets' own max_wait (at 2.7)
    assert [s.stamp_s for s in out] == [100.0, 100.1, 100.2, 100.3] and all(s.missing == ("lidar",) for s in out)


def test_a_jump_back_of_exactly_reset_backjump_is_late_not_a_loop() -> None:
    sync = make(["rgb"], reset_backjump_s=1.0)
    sync.add("rgb", 10.0, "r", now_s=0.0)
    assert sync.add("rgb", 9.0, "one second back", now_s=0.1) == []
    assert (sync.stats.resets, sync.stats.late["rgb"]) == (0, 1)
    assert sync.add("rgb", 8.9375, "further", now_s=0.2)[0].stamp_s == 8.9375
    assert sync.stats.resets == 1


# -------------------------------------------------------------------------------------------- accounting
def test_a_reused_message_leaves_the_queue_as_used() -> None:
    sync = make(["rgb", "lidar"], max_wait_s=0.0)
    sync.add("lidar", 1.0, "l", now_s=0.0)
    for k in range(3):
        sync.add("rgb", 1.0 + k / 64, k, now_s=0.0)
    sync.add("rgb", 2.0, "far", now_s=0.0)
    assert (sync.stats.used["lidar"], sync.stats.discarded["lidar"], sync.queued()["lidar"]) == (1, 0, 0)
    assert_accounting(sync)


def test_old_messages_are_discarded_not_evicted_and_the_queue_stays_full() -> None:
    """With a set waiting, a message no reference can use is discarded to make room, so nothing usable is evicted."""
    sync = make(queue_size=4, max_wait_s=5.0)
    sync.add("rgb", 1.0, "r", now_s=0.0)  # waits for lidar
    for now, stamp in enumerate((0.5, 1.0, 1.01, 1.02, 1.03)):
        sync.add("depth", stamp, stamp, now_s=now / 100)
    s = sync.stats
    assert (s.discarded["depth"], s.evicted["depth"], sync.queued()["depth"]) == (1, 0, 4)
    assert_accounting(sync)


def test_a_full_queue_evicts_and_counts_it() -> None:
    """Two sets wait (LiDAR missing) with their depth frames; a third depth frame overflows a queue of 2: the
    newest, which no waiting set chose, is evicted."""
    sync = make(queue_size=2, max_wait_s=5.0)
    for now, (modality, stamp) in enumerate(
        (("rgb", 1.0), ("rgb", 1.1), ("depth", 1.0), ("depth", 1.1), ("depth", 1.2))
    ):
        sync.add(modality, stamp, stamp, now_s=now / 100)
    s = sync.stats
    assert (s.evicted["depth"], s.discarded["depth"], sync.queued()["depth"]) == (1, 0, 2)
    out = sync.add("lidar", 1.1, "l", now_s=0.1)
    assert [(o.stamp_s, o.items["depth"]) for o in out] == [(1.0, 1.0), (1.1, 1.1)]
    assert_accounting(sync)


def test_with_no_chosen_message_the_oldest_goes_as_discarded() -> None:
    sync = make(queue_size=2, max_wait_s=5.0)
    sync.add("rgb", 1.0, "r", now_s=0.0)
    for now, stamp in enumerate((1.2, 1.3, 1.4)):  # all after the waiting set and outside its slop
        sync.add("depth", stamp, stamp, now_s=now / 100)
    assert (sync.stats.evicted["depth"], sync.queued()["depth"]) == (1, 2)


def test_messages_older_than_any_future_reference_can_use_leave_the_queue() -> None:
    sync = make(["rgb", "depth"], max_wait_s=0.0)
    sync.add("depth", 0.5, "old", now_s=0.0)
    sync.add("rgb", 1.0, "r", now_s=0.0)
    assert (sync.queued()["depth"], sync.stats.discarded["depth"]) == (0, 1)


def test_a_message_exactly_slop_before_the_last_reference_is_not_late() -> None:
    sync = make(["rgb", "depth"], slop_s=0.25, max_wait_s=0.0)
    sync.add("rgb", 1.0, "r", now_s=0.0)
    sync.add("depth", 0.75, "edge", now_s=0.1)
    assert (sync.stats.late["depth"], sync.queued()["depth"]) == (0, 1)


def test_a_single_use_message_no_waiting_set_can_take_is_discarded_not_evicted() -> None:
    sync = make(slop_s=0.12, queue_size=2, max_wait_s=5.0, single_use=("depth",))
    sync.add("rgb", 1.0, "r", now_s=0.0)  # waits for lidar
    for now, stamp in enumerate((0.85, 1.2, 1.3)):
        sync.add("depth", stamp, stamp, now_s=now / 100)
    s = sync.stats
    assert (s.discarded["depth"], s.evicted["depth"], sync.queued()["depth"]) == (1, 0, 2)


def test_dropped_incomplete_sets_are_counted() -> None:
    sync = make(["rgb", "depth"], required=("rgb", "depth"), max_wait_s=0.0)
    for stamp in (1.0, 2.0, 3.0):
        assert sync.add("rgb", stamp, stamp, now_s=stamp) == []
    assert sync.stats.dropped_incomplete == 3


# ---------------------------------------------------------------------------------------------- single use
def test_single_use_late_arrivals_under_nearest() -> None:
    """A single-use message stamped at or before the last decided reference can only be nearest to it or an
    earlier one: late, whether within slop or not."""
    sync = make(["rgb", "depth"], max_wait_s=0.0, single_use=("depth",))
    sync.add("rgb", 1.0, "r", now_s=0.0)
    sync.add("depth", 1.0, "at the reference", now_s=0.1)
    sync.add("depth", 0.98, "within slop before it", now_s=0.1)
    assert (sync.stats.late["depth"], sync.queued()["depth"]) == (2, 0)


def test_single_use_messages_up_to_the_last_reference_leave_the_queue_under_nearest() -> None:
    sync = make(["rgb", "depth"], slop_s=0.1, max_wait_s=5.0, single_use=("depth",))
    for now, (modality, stamp) in enumerate(
        (("rgb", 0.0), ("depth", 0.03), ("depth", 0.04), ("rgb", 0.1), ("depth", 0.12), ("rgb", 0.2), ("depth", 0.25))
    ):
        sync.add(modality, stamp, stamp, now_s=now / 100)
    assert sync.stats.emitted == 2
    assert sync.queued()["depth"] == 1  # 0.25 (for 0.2); 0.04 lost to 0.03, and nothing up to 0.1 stays
    assert sync.stats.discarded["depth"] == 1
    assert_accounting(sync)


def test_single_use_under_latest_never_goes_back() -> None:
    """Once a message is given, an older or equal one is late and a leftover older one leaves the queue."""
    sync = make(["rgb", "depth"], policy="latest", slop_s=0.05, single_use=("depth",))
    sync.add("depth", 0.98, "older", now_s=0.0)
    sync.add("depth", 1.0, "given", now_s=0.0)
    [first] = sync.add("rgb", 1.0, "r", now_s=0.01)
    assert first.items["depth"] == "given" and sync.queued()["depth"] == 0
    sync.add("depth", 1.08, "newer, outside this slop", now_s=0.015)
    sync.add("depth", 1.0, "same stamp", now_s=0.02)
    sync.add("depth", 0.99, "older still", now_s=0.02)
    assert sync.stats.late["depth"] == 2
    [second] = sync.add("rgb", 1.02, "r2", now_s=0.03)
    assert second.missing == ("depth",)  # 1.0 was given, 0.99 is older: nothing newer within slop
    [third] = sync.add("rgb", 1.1, "r3", now_s=0.04)
    assert third.items["depth"] == "newer, outside this slop"
    assert_accounting(sync)


def _overflow(single_use_ref: float, refs: list[float], depths: list[tuple[float, float]]) -> dict:
    """A waiting single-use set: ``refs`` wait for LiDAR while the ``depths`` (arrival, stamp) overflow a queue of 2."""
    sync = make(slop_s=0.12, queue_size=2, max_wait_s=5.0, single_use=("depth",))
    messages = [(0.0, "depth", 1.0), (0.0, "lidar", 1.0), (0.001, "rgb", 1.0)]
    messages += [(0.01 + i / 100, "rgb", stamp) for i, stamp in enumerate(refs)] + [(t, "depth", s) for t, s in depths]
    out = run(sync, messages)
    out |= run(sync, [(1.0, "lidar", 2.0), (1.1, "rgb", 2.0)])
    return {stamp: synced.items.get("depth") for stamp, (_, synced) in out.items() if stamp != single_use_ref}


def test_a_waiting_single_use_set_keeps_its_choice_when_the_queue_overflows() -> None:
    """Which depth frames a waiting set needs is judged with its neighbours: 1.05 is tied to the decided 1.0 (not
    1.1's), 1.17 is 1.1's (nearer than to 1.5); so 1.05 makes room when 1.6 arrives, and 1.1 gets 1.17."""
    assert _overflow(1.0, [1.1, 1.5], [(0.2, 1.05), (0.3, 1.17), (0.4, 1.6)]) == {1.1: 1.17, 1.5: 1.6}


def test_a_waiting_single_use_set_keeps_a_choice_that_the_next_reference_does_not_take() -> None:
    """1.33 is nearer to 1.34 than to 1.3, so 1.3 takes 1.25: it is kept when 1.5 overflows the queue (and goes)."""
    assert _overflow(1.0, [1.3, 1.34], [(0.2, 1.25), (0.3, 1.33), (0.4, 1.5)]) == {1.3: 1.25, 1.34: 1.33}
