"""``sync.policy: latest``: a set goes out in the ``add()`` of its RGB frame with the newest message of each other
modality within slop received so far. Rules one by one, rig streams against the brute-force model
(``tests/sync_oracle.py::newest_received``), and inputs broken on purpose to show the checks can fail."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sync_oracle import RIG_RATES_HZ, Msg, make_streams, newest_received, oracle, replay

from memsam_core.config import MemSamConfig
from memsam_ros.sync import ModalitySynchronizer, replay_config

RIG = list(RIG_RATES_HZ)
MODS = ["rgb", "depth", "lidar"]


def latest(modalities: list[str] = MODS, **kw) -> ModalitySynchronizer:
    return ModalitySynchronizer(modalities, policy="latest", **({"slop_s": 0.05, "max_wait_s": 0.2} | kw))


def assert_accounting(sync: ModalitySynchronizer) -> None:
    s, queued = sync.stats, sync.queued()
    for m in sync.modalities:
        assert s.received[m] == s.used[m] + s.evicted[m] + s.late[m] + s.discarded[m] + queued[m], m


# ---------------------------------------------------------------------- the rules, one by one
def test_the_set_leaves_in_the_reference_add_although_a_10hz_lidar_has_nothing_newer() -> None:
    """The LiDAR's last scan is 80 ms older than the RGB frame and its next is 20 ms away: ``latest`` sends the
    set at once with the old scan; ``nearest`` (the same input) waits for the next scan, which proves it."""
    for policy, waits in (("latest", False), ("nearest", True)):
        sync = ModalitySynchronizer(MODS, policy=policy, slop_s=0.1, max_wait_s=0.2)
        sync.add("lidar", 0.92, "old scan", now_s=0.94)
        sync.add("depth", 1.0, "d", now_s=1.01)
        out = sync.add("rgb", 1.0, "r", now_s=1.008)
        if waits:
            assert out == [] and sync.poll(1.1) == []
            [out_set] = sync.add("lidar", 1.02, "next scan", now_s=1.04)
            assert out_set.items["lidar"] == "next scan"  # nearer: 20 ms
        else:
            [out_set] = out
            assert out_set.items == {"rgb": "r", "depth": "d", "lidar": "old scan"}
            assert out_set.stamps["lidar"] - out_set.stamp_s == pytest.approx(-0.08)  # the skew ~/info reports
            assert sync.poll(1.1) == [] and sync.add("lidar", 1.02, "next scan", now_s=1.04) == []
        assert_accounting(sync)


def test_newest_within_slop_newer_than_the_reference_included_outside_slop_never() -> None:
    """Depth 0.995 is nearest, 1.03 is the newest within slop (it arrived before the RGB frame), 1.06 is outside
    slop; LiDAR has only 0.94 (outside slop): missing."""
    sync = latest()
    for stamp in (0.995, 1.03, 1.06):
        sync.add("depth", stamp, stamp, now_s=1.07)
    sync.add("lidar", 0.94, 0.94, now_s=1.07)
    [out] = sync.add("rgb", 1.0, "r", now_s=1.08)
    assert out.items == {"rgb": "r", "depth": 1.03} and out.missing == ("lidar",)
    assert all(abs(out.stamps[m] - out.stamp_s) <= 0.05 for m in out.items)
    [nearest] = ModalitySynchronizer(MODS, slop_s=0.05).add("rgb", 1.0, "r", 0.0) or [None]  # nearest waits
    assert nearest is None


def test_slop_bound_is_inclusive_like_nearest() -> None:
    sync = latest(["rgb", "depth"], slop_s=0.25)  # binary-exact stamps: 0.75 is exactly 0.25 before 1.0
    sync.add("depth", 0.75, "edge", now_s=1.0)
    [out] = sync.add("rgb", 1.0, "r", now_s=1.0)
    assert out.items["depth"] == "edge"
    sync.add("depth", 1.0625, "new", now_s=1.3)
    [out] = sync.add("rgb", 1.3125 + 2**-20, "r2", now_s=1.3)  # 0.25 + 2^-20 after the newest: outside
    assert out.missing == ("depth",)


def test_a_message_serves_every_set_within_slop_or_one_if_single_use() -> None:
    """30 Hz RGB, 10 Hz LiDAR, slop 0.12: reused, every set has a scan; single-use, each scan goes to the first
    RGB frame after it arrived and the two frames after go without (never back to an older scan)."""
    for single_use, expected in (((), 30), (("lidar",), 10)):
        sync = latest(["rgb", "lidar"], slop_s=0.12, single_use=single_use)
        out = []
        for i in range(30):
            t = i / 30
            if i % 3 == 0:
                sync.add("lidar", t, i // 3, now_s=t + 0.002)
            out += sync.add("rgb", t + 0.001, i, now_s=t + 0.005)
        assert len(out) == 30 and sync.poll(100.0) == []
        scans = [s.items.get("lidar") for s in out]
        assert sum(s is not None for s in scans) == expected
        if single_use:
            assert scans[:6] == [0, None, None, 1, None, None]
        assert_accounting(sync)


def test_an_older_reference_after_a_newer_one_is_late() -> None:
    sync = latest()
    assert len(sync.add("rgb", 2.1, "b", now_s=0.0)) == 1
    assert sync.add("rgb", 2.0, "a", now_s=0.01) == []
    assert sync.stats.late["rgb"] == 1 and sync.stats.emitted == 1
    assert_accounting(sync)


def test_bag_loop_resets_and_goes_on() -> None:
    sync = latest(["rgb", "depth"])
    for i in range(20):
        sync.add("depth", 100 + i / 10, i, now_s=i / 10)
        assert sync.add("rgb", 100 + i / 10, i, now_s=i / 10)[0].items["depth"] == i
    [out] = sync.add("rgb", 100.0, "again", now_s=2.1)  # the old loop's depth 101.9 is gone with the reset
    assert out.items == {"rgb": "again"} and sync.stats.resets == 1
    assert_accounting(sync)


def test_required_modality_missing_drops_the_set() -> None:
    sync = latest(required=("rgb", "lidar"))
    sync.add("lidar", 0.9, "too old", now_s=0.95)
    assert sync.add("rgb", 1.0, "r", now_s=1.0) == []
    assert (sync.stats.dropped_incomplete, sync.stats.discarded["rgb"]) == (1, 1)
    assert_accounting(sync)


def test_bounded_queues_keep_what_the_next_set_may_take() -> None:
    sync = latest(["rgb", "event"], queue_size=3)
    for i in range(50):  # 1 kHz packets, no RGB frame for 50 ms: the queue keeps the 3 newest
        sync.add("event", 1.0 + i / 1000, i, now_s=1.0 + i / 1000)
    assert sync.queued()["event"] == 3
    [out] = sync.add("rgb", 1.05, "r", now_s=1.06)
    assert out.items["event"] == 49
    assert_accounting(sync)


def test_replay_config_forces_nearest_for_bag_replay() -> None:
    config = MemSamConfig(sync={"policy": "latest", "slop_s": 0.15})
    replayed = replay_config(config)
    assert replayed.sync.policy == "nearest" and replayed.sync.slop_s == 0.15
    assert config.sync.policy == "latest"  # the caller's config is left alone
    assert replay_config(replayed) is replayed


# ---------------------------------------------------------------------- rig streams against the model
SCENARIOS = {
    "regular": {},
    "jitter": {"arrival_jitter_s": 0.02, "stamp_jitter_s": 0.002},
    "drops": {"arrival_jitter_s": 0.02, "drop": {"rgb": 0.03, "depth": 0.15, "lidar": 0.15, "event": 0.2}},
    "dead lidar": {"arrival_jitter_s": 0.02, "dies_at_s": {"lidar": 1.5}},
}


def run_latest(messages: list[Msg], slop: float) -> tuple[ModalitySynchronizer, dict]:
    sync = ModalitySynchronizer(RIG, slop_s=slop, max_wait_s=0.2, queue_size=10, policy="latest")
    emitted = replay(sync, messages, poll_period_s=0.01, timed=False)
    return sync, {e.tokens["rgb"]: e for e in emitted}


@pytest.mark.parametrize("slop", [0.05, 0.15])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_rig_streams_give_the_newest_received_at_the_reference_arrival(scenario, slop) -> None:
    """RGB 30 Hz, depth 30, LiDAR 10, events 60, shipped queue 10: every RGB frame gets a set at the instant it
    arrives, with exactly the model's choice, and the sets differ from the oracle's (else this proves nothing)."""
    messages = make_streams(4.0, seed=7, **SCENARIOS[scenario])
    sync, emitted = run_latest(messages, slop)
    refs = {m.token: m for m in messages if m.modality == "rgb"}
    assert emitted.keys() == refs.keys()
    model = newest_received(messages, RIG, slop)
    for token, out in emitted.items():
        assert out.emitted_at == refs[token].arrival
        assert {m: out.tokens.get(m) for m in RIG} == model[token]
    truth = oracle(messages, RIG, slop)
    assert sum(truth[t] != model[t] for t in refs) > len(refs) // 10
    assert_accounting(sync)
    assert sum(sync.queued().values()) <= 2 * len(RIG)


def test_the_model_check_fails_when_arrival_order_changes() -> None:
    """Broken on purpose: every RGB frame delivered 30 ms later (stamps unchanged). The synchroniser now sees
    newer messages, so its sets no longer equal the model computed on the original arrivals; the choice depends
    on arrival order, which is why bag replay uses nearest."""
    messages = make_streams(3.0, seed=3)
    model = newest_received(messages, RIG, 0.15)
    late_rgb = [dataclasses.replace(m, arrival=m.arrival + 0.03) if m.modality == "rgb" else m for m in messages]
    _, emitted = run_latest(sorted(late_rgb, key=lambda m: m.arrival), 0.15)
    differ = sum({m: e.tokens.get(m) for m in RIG} != model[t] for t, e in emitted.items())
    assert differ > len(emitted) // 2


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 10_000),
    st.sampled_from([0.01, 0.05, 0.12]),
    st.fixed_dictionaries({m: st.sampled_from([5.0, 10.0, 30.0, 60.0, 200.0]) for m in RIG}),
)
def test_random_rigs_match_the_model(seed, slop, rates) -> None:
    messages = make_streams(1.0, rates, seed=seed, stamp_jitter_s=0.001, arrival_jitter_s=0.01, drop={"depth": 0.2})
    sync = ModalitySynchronizer(RIG, slop_s=slop, queue_size=100, policy="latest")
    emitted = replay(sync, messages, timed=False)
    model = newest_received(messages, RIG, slop)
    assert len(emitted) == len(model)
    for out in emitted:
        assert {m: out.tokens.get(m) for m in RIG} == model[out.tokens["rgb"]]
    assert_accounting(sync)
