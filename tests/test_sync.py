"""ModalitySynchronizer: the issue's cases, streams against the oracle (tests/sync_oracle.py), and
property tests over random jitter and interleavings."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sync_oracle import RIG_RATES_HZ, make_streams, needed_at, oracle, replay

from memsam_ros.sync import BACKJUMP_RESET_S, ModalitySynchronizer, SyncedSet

MODS = ["rgb", "depth", "lidar"]
RIG = list(RIG_RATES_HZ)


def make(**kw) -> ModalitySynchronizer:
    return ModalitySynchronizer(MODS, **({"slop_s": 0.05, "queue_size": 10, "max_wait_s": 0.2} | kw))


def assert_accounting(sync: ModalitySynchronizer) -> None:
    s, queued = sync.stats, sync.queued()
    for m in sync.modalities:
        assert s.received[m] == s.used[m] + s.evicted[m] + s.late[m] + s.discarded[m] + queued[m], m


# ---------------------------------------------------------------------- the rules, one by one
def test_complete_set_is_emitted_at_once() -> None:
    sync = make()
    assert sync.add("depth", 1.01, "d", now_s=0.0) == []
    assert sync.add("rgb", 1.0, "r", now_s=0.0) == []  # lidar: nothing at or after 1.0 yet
    [out] = sync.add("lidar", 0.97, "l", now_s=0.01) + sync.add("lidar", 1.03, "l2", now_s=0.01)
    assert out == SyncedSet(
        1.0, {"rgb": "r", "depth": "d", "lidar": "l"}, {"rgb": 1.0, "depth": 1.01, "lidar": 0.97}, ()
    )
    assert list(out.items) == MODS  # frame order
    assert sync.stats.emitted == 1
    assert_accounting(sync)


def test_a_message_at_the_reference_stamp_decides_at_once() -> None:
    sync = make()
    sync.add("depth", 1.0, "d", now_s=0.0)
    [out] = sync.add("lidar", 1.0, "l", now_s=0.0) + sync.add("rgb", 1.0, "r", now_s=0.0)
    assert out.missing == ()


def test_nearest_within_slop_not_first_come() -> None:
    """Issue: RGB 1.000 was matched with depth 0.955 although depth 1.001 arrived 5 ms later."""
    sync = make(max_wait_s=0.5)
    sync.add("lidar", 1.0, "l", now_s=0.0)
    sync.add("depth", 0.955, "early", now_s=0.0)
    assert sync.add("rgb", 1.0, "r", now_s=0.001) == []  # depth 0.955 is within slop, but a nearer may come
    [out] = sync.add("depth", 1.001, "near", now_s=0.006)
    assert out.items["depth"] == "near"


def test_a_newer_message_proves_no_match_can_come() -> None:
    """Issue: one dropped depth frame delayed the next complete set by max_wait; now the next depth frame
    decides the incomplete set at once, and the complete one follows in the same call."""
    sync = make(slop_s=0.01)
    out = []
    out += sync.add("lidar", 1.0, "l1", now_s=1.0)
    out += sync.add("rgb", 1.0, "r1", now_s=1.0)  # its depth frame (1.0) is lost
    out += sync.add("lidar", 1.033, "l2", now_s=1.033)
    out += sync.add("rgb", 1.033, "r2", now_s=1.034)
    assert out == []
    out += sync.add("depth", 1.033, "d2", now_s=1.035)
    assert [(s.stamp_s, s.missing) for s in out] == [(1.0, ("depth",)), (1.033, ())]


def test_a_pause_of_every_stream_is_not_silence() -> None:
    """A bag player waiting for the node publishes nothing for a while: no topic is silent after it, so the
    next set waits for its depth frame although that arrives after the RGB frame."""
    sync = ModalitySynchronizer(["rgb", "depth"], slop_s=0.02, max_wait_s=0.2)
    for i in range(5):  # 10 Hz, then a 3 s pause before frame 5
        now = i / 10 if i < 5 else 3.0
        sync.add("depth", i / 10, i, now_s=now)
        assert len(sync.add("rgb", i / 10, i, now_s=now)) == 1
    assert sync.add("rgb", 0.5, "after the pause", now_s=3.0) == []
    [out] = sync.add("depth", 0.5, "its depth", now_s=3.01)
    assert out.items == {"rgb": "after the pause", "depth": "its depth"}


def test_silent_topic_is_not_waited_for() -> None:
    """A dead optional sensor costs the sets of max_wait_s after its last message once, then nothing."""
    sync = make(max_wait_s=0.25)
    emitted: list[tuple[float, SyncedSet]] = []
    sync.add("lidar", 0.0, "l", now_s=0.0)  # LiDAR's last message
    for i in range(40):  # 32 Hz rgb + depth (binary-exact times); depth just before rgb: the next one decides
        now = i / 32
        emitted += [(now, s) for s in sync.add("depth", now - 1 / 256, i, now_s=now)]
        emitted += [(now, s) for s in sync.add("rgb", now, i, now_s=now)]
        emitted += [(now, s) for s in sync.poll(now)]
    assert [s.stamp_s for _, s in emitted] == [i / 32 for i in range(39)]  # the last waits for depth's next
    waits = {s.stamp_s: now - s.stamp_s for now, s in emitted}
    assert waits[0.0] == 1 / 32 and emitted[0][1].items["lidar"] == "l"  # decided by depth's next message
    assert all(w <= 0.25 for w in waits.values()) and max(waits.values()) > 0.2  # until LiDAR is 0.25 s silent,
    assert all(w == 1 / 32 for stamp, w in waits.items() if stamp >= 0.25)  # then only depth's next is awaited
    assert [s.items.get("lidar") for _, s in emitted[:3]] == ["l", "l", None]  # reused within slop (0.05)
    assert_accounting(sync)


def test_never_heard_topic_is_silent_after_max_wait_from_the_first_message() -> None:
    sync = make()
    assert sync.add("rgb", 5.0, "r", now_s=100.0) == []
    assert sync.poll(100.19) == []
    [out] = sync.poll(100.2)
    assert out.missing == ("depth", "lidar") and out.items == {"rgb": "r"}
    [out] = sync.add("rgb", 5.25, "r2", now_s=100.3)  # 0.2 s overdue in time and in stamps: not waited for
    assert out.stamp_s == 5.25


def test_no_set_waits_longer_than_max_wait() -> None:
    """A sensor that keeps sending, but lags far behind, cannot hold sets back forever."""
    sync = make(max_wait_s=0.2)
    sync.add("depth", 1.0, "d", now_s=0.0)
    assert sync.add("rgb", 1.0, "r", now_s=0.0) == []
    for i in range(5):
        assert sync.add("lidar", 0.5 + i * 0.01, i, now_s=0.03 * i) == []  # old stamps, never >= 1.0
    [out] = sync.poll(0.2)
    assert out.missing == ("lidar",)


def test_reused_message_serves_every_set_within_slop() -> None:
    """A 15 Hz LiDAR is in every 30 Hz RGB set (the default); single-use gives it to one set only."""
    for single_use, expected in (((), 60), (("lidar",), 30)):
        sync = make(single_use=single_use)
        out = []
        for i in range(60):
            t = i / 30
            if i % 2 == 0:
                out += sync.add("lidar", t + 0.001, i // 2, now_s=t + 0.002)
            out += sync.add("depth", t, i, now_s=t + 0.001)
            out += sync.add("rgb", t, i, now_s=t + 0.003)
        out += sync.poll(100.0)
        assert len(out) == 60
        assert sum("lidar" in s.items for s in out) == expected
        assert sync.stats.served["lidar"] == expected
        assert_accounting(sync)


def test_single_use_message_serves_its_nearest_reference() -> None:
    """Issue: depth 0.030 went to RGB 0.000 instead of RGB 0.033, which then went out without depth."""
    sync = ModalitySynchronizer(["rgb", "depth"], slop_s=0.05, max_wait_s=0.5, single_use=("depth",))
    out = sync.add("rgb", 0.000, "r0", now_s=0.000) + sync.add("depth", 0.030, "d30", now_s=0.031)
    assert out == []  # depth 0.030 may be nearer to the next reference
    out += sync.add("rgb", 0.033, "r33", now_s=0.034)
    assert [(s.stamp_s, s.items.get("depth")) for s in out] == [(0.0, None)]
    out += sync.add("depth", 0.066, "d66", now_s=0.067)
    assert [(s.stamp_s, s.items.get("depth")) for s in out] == [(0.0, None), (0.033, "d30")]


def test_required_modality_missing_drops_the_set() -> None:
    sync = make(required=("rgb", "lidar"))
    sync.add("depth", 1.0, "d", now_s=0.0)
    sync.add("rgb", 1.0, "r", now_s=0.0)
    assert sync.poll(1.0) == []
    s = sync.stats
    assert (s.dropped_incomplete, s.emitted, s.discarded["rgb"]) == (1, 0, 1)
    assert sync.queued()["depth"] == 1  # still usable by the next reference within slop
    assert sync.add("lidar", 1.04, "l", now_s=1.0) + sync.add("rgb", 1.03, "r2", now_s=1.0) == []
    [out] = sync.poll(1.25)  # depth may still send 1.03: waited for until max_wait_s
    assert out.items == {"rgb": "r2", "depth": "d", "lidar": "l"}
    assert_accounting(sync)


def test_out_of_order_references_are_emitted_in_order() -> None:
    sync = make()
    assert sync.add("rgb", 2.1, "b", now_s=0.0) == []
    assert sync.add("rgb", 2.0, "a", now_s=0.01) == []
    for stamp in (2.0, 2.1):
        sync.add("depth", stamp, f"d{stamp}", now_s=0.02)
    out = sync.add("lidar", 2.0, "l2.0", now_s=0.03) + sync.add("lidar", 2.1, "l2.1", now_s=0.04)
    assert [s.stamp_s for s in out] == [2.0, 2.1]
    assert [s.items["depth"] for s in out] == ["d2.0", "d2.1"]


def test_late_messages_are_counted_not_emitted() -> None:
    sync = make(max_wait_s=0.0)
    sync.add("rgb", 3.0, "r", now_s=0.0)
    assert sync.add("rgb", 2.9, "late ref", now_s=0.1) == []
    assert sync.add("rgb", 3.0, "same stamp", now_s=0.1) == []
    sync.add("depth", 2.9, "too old", now_s=0.1)
    sync.add("depth", 2.96, "within slop of the past", now_s=0.1)
    s = sync.stats
    assert (s.late["rgb"], s.late["depth"]) == (2, 1)
    assert sync.queued()["depth"] == 1
    assert_accounting(sync)


def test_bag_loop_resets_queues() -> None:
    sync = make(max_wait_s=0.0)
    for i in range(30):
        sync.add("rgb", 100 + i / 10, i, now_s=i / 10)
    sync.add("depth", 102.95, "old loop", now_s=3.0)
    [out] = sync.add("rgb", 100.0, "again", now_s=3.1)  # stamps jump back 2.9 s: the bag looped
    assert out.stamp_s == 100.0 and out.items == {"rgb": "again"}
    s = sync.stats
    assert s.resets == 1 and s.late["rgb"] == 0 and s.discarded["depth"] == 1
    assert sync.add("rgb", 100.1, "next", now_s=3.2)[0].stamp_s == 100.1
    assert_accounting(sync)


def test_small_backward_jump_is_late_not_a_reset() -> None:
    sync = make(max_wait_s=0.0)
    sync.add("rgb", 10.0, 0, now_s=0.0)
    assert sync.add("rgb", 9.5, 1, now_s=0.1) == []
    assert (sync.stats.resets, sync.stats.late["rgb"]) == (0, 1)


def test_queues_are_bounded() -> None:
    """Beyond queue_size waiting references the oldest set goes out with what it has; other queues evict."""
    sync = make(queue_size=4, max_wait_s=100.0)
    out = []
    for i in range(10):
        sync.add("depth", i + 0.5, i, now_s=0.0)  # never matches a reference (0.5 s away)
        out += sync.add("rgb", float(i), i, now_s=0.0)  # waits for lidar
    assert [s.stamp_s for s in out] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert sync.queued() == {"rgb": 4, "depth": 4, "lidar": 0}
    assert sync.stats.evicted["depth"] + sync.stats.discarded["depth"] == 6
    assert_accounting(sync)


def test_a_fast_sensor_does_not_evict_what_a_waiting_set_needs() -> None:
    """Events at 60 Hz fill a queue of 4 while a set waits for a slow LiDAR: only unneeded ones go."""
    sync = ModalitySynchronizer(["rgb", "event", "lidar"], slop_s=0.05, queue_size=4, max_wait_s=1.0)
    sync.add("event", 0.999, "e-near", now_s=1.0)
    sync.add("rgb", 1.0, "r", now_s=1.0)
    for i in range(1, 8):
        sync.add("event", 1.0 + i / 60, f"e{i}", now_s=1.0 + i / 60)
    [out] = sync.add("lidar", 1.01, "l", now_s=1.2)
    assert out.items == {"rgb": "r", "event": "e-near", "lidar": "l"}
    assert_accounting(sync)


def test_steady_streams_give_complete_sets() -> None:
    sync = make(slop_s=0.01)
    out = []
    for i in range(60):
        t = i / 30
        out += sync.add("lidar", t - 0.004, i, now_s=t + 0.001)
        out += sync.add("rgb", t, i, now_s=t + 0.002)
        out += sync.add("depth", t + 0.003, i, now_s=t + 0.02)
    assert len(out) >= 59 and all(s.missing == () and len(set(s.items.values())) == 1 for s in out)


def test_runtime_timing_change() -> None:
    sync = make()
    sync.set_timing(slop_s=0.01, max_wait_s=0.0)
    sync.add("depth", 1.02, "d", now_s=0.0)
    [out] = sync.add("rgb", 1.0, "r", now_s=0.0)
    assert out.missing == ("depth", "lidar")


def test_clear_forgets_the_timeline() -> None:
    sync = make()
    sync.add("rgb", 5.0, "r", now_s=0.0)
    sync.clear()
    assert sync.queued() == dict.fromkeys(MODS, 0) and sync.stats.discarded["rgb"] == 1
    assert sync.add("rgb", 4.0, "older is fine after clear", now_s=1.0) == []
    assert_accounting(sync)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="reference"):
        ModalitySynchronizer(["depth"], reference="rgb", required=())
    with pytest.raises(ValueError, match="subset"):
        ModalitySynchronizer(["rgb"], required=("rgb", "lidar"))
    with pytest.raises(ValueError, match="unique"):
        ModalitySynchronizer(["rgb", "rgb"])
    with pytest.raises(ValueError, match="queue_size"):
        ModalitySynchronizer(["rgb"], queue_size=0)
    with pytest.raises(ValueError, match="single_use"):
        ModalitySynchronizer(["rgb", "depth"], single_use=("rgb",))
    with pytest.raises(ValueError, match="unknown modality"):
        make().add("thermal", 0.0, None, now_s=0.0)


def test_thread_safe_under_concurrent_adds() -> None:
    sync = make(max_wait_s=0.0)
    outputs: list[SyncedSet] = []
    lock = threading.Lock()

    def feed(modality: str) -> None:
        for i in range(300):
            got = sync.add(modality, i / 100, (modality, i), now_s=i / 100)
            with lock:
                outputs.extend(got)

    threads = [threading.Thread(target=feed, args=(m,)) for m in MODS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outputs.sort(key=lambda s: s.stamp_s)
    assert len({s.stamp_s for s in outputs}) == len(outputs) == sync.stats.emitted
    assert_accounting(sync)


# ---------------------------------------------------------------------- against the oracle
SCENARIOS = {
    "regular": {},
    "jitter": {"arrival_jitter_s": 0.02, "stamp_jitter_s": 0.002},
    "drops": {"arrival_jitter_s": 0.02, "stamp_jitter_s": 0.002, "drop": {"depth": 0.15, "lidar": 0.15, "event": 0.2}},
    "dead lidar": {"arrival_jitter_s": 0.02, "stamp_jitter_s": 0.002, "dies_at_s": {"lidar": 1.5}},
    "dead depth, drops": {"arrival_jitter_s": 0.01, "drop": {"rgb": 0.05, "event": 0.1}, "dies_at_s": {"depth": 2.0}},
}


@pytest.mark.parametrize("single_use", [(), ("depth", "lidar", "event")], ids=["reuse", "single-use"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("seed", [0, 1])
def test_rig_streams_match_the_oracle_without_added_waiting(scenario, seed, single_use) -> None:
    """RGB 30 Hz, depth 30, LiDAR 10, events 60 with jitter, drops and a sensor dying mid-stream: every set
    is the oracle's, in stamp order, out as soon as the oracle's inputs are in (after a death: once the
    sensor is max_wait_s silent)."""
    max_wait, slop = 0.2, 0.05
    messages = make_streams(4.0, seed=seed, **SCENARIOS[scenario])
    truth = oracle(messages, RIG, slop, single_use)
    sync = ModalitySynchronizer(RIG, slop_s=slop, max_wait_s=max_wait, single_use=single_use)
    emitted = replay(sync, messages, poll_period_s=0.01, timed=False)
    refs = {m.token: m for m in messages if m.modality == "rgb"}
    assert len(emitted) == len(refs)
    stamps = [refs[e.tokens["rgb"]].stamp for e in emitted]
    assert stamps == sorted(stamps)
    newest = {m: max(x.stamp for x in messages if x.modality == m) for m in RIG}
    last_arrival = {m: max(x.arrival for x in messages if x.modality == m) for m in RIG}
    recording_ends = messages[0].stamp + 3.7  # the last sets wait for silence like after a death: not checked
    previous = -np.inf  # sets go out in order: one never leaves before the one before it
    for out in emitted:
        ref = refs[out.tokens["rgb"]]
        if ref.stamp > recording_ends:
            continue
        want = truth[ref.token]
        assert {m: out.tokens.get(m) for m in RIG} == want, ref.token
        needed = needed_at(messages, ref, want, single_use, slop)
        dead = [m for m in RIG if newest[m] < ref.stamp]
        if not dead:  # no later than the last message the oracle needed (earlier if a topic was silent)
            assert out.emitted_at <= needed + 1e-9
        else:  # a death is only known from silence: its next message max_wait_s overdue (in wall time and
            # stamps), or else max_wait_s after the reference arrived (+ one poll period)
            period = {m: 1 / RIG_RATES_HZ[m] + 0.005 for m in dead}
            silent_at = max(last_arrival[m] + period[m] for m in dead)
            stamp_silent = all(ref.stamp - newest[m] - period[m] >= max_wait for m in dead)
            bound = min(ref.arrival, silent_at if stamp_silent else np.inf) + max_wait + 0.0101
            assert out.emitted_at <= max(needed, bound, previous + 1e-9)
        previous = out.emitted_at
    if single_use:
        used = [t for e in emitted for m, t in e.tokens.items() if m != "rgb"]
        assert len(used) == len(set(used))
    assert_accounting(sync)
    assert sum(sync.queued().values()) <= 3 * len(RIG)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 10_000),
    st.sampled_from([0.01, 0.03, 0.05]),
    st.lists(st.sampled_from(["depth", "lidar", "event"]), unique=True, max_size=3),
    st.fixed_dictionaries({m: st.sampled_from([5.0, 10.0, 15.0, 30.0, 60.0, 90.0]) for m in RIG}),
)
def test_random_rigs_match_the_oracle(seed, slop, single_use, rates) -> None:
    """Random rates, delays and jitter; messages arrive within max_wait and in stamp order per topic."""
    rng = np.random.default_rng(seed)
    delays = {m: float(rng.uniform(0.001, 0.05)) for m in RIG}
    messages = make_streams(
        1.0, rates, delays, seed=seed, stamp_jitter_s=0.001, arrival_jitter_s=0.01, drop={"depth": 0.2}
    )
    sync = ModalitySynchronizer(RIG, slop_s=slop, max_wait_s=1.0, queue_size=100, single_use=single_use)
    emitted = replay(sync, messages, timed=False)
    truth = oracle(messages, RIG, slop, single_use)
    assert len(emitted) == len(truth)
    for out in emitted:
        assert {m: out.tokens.get(m) for m in RIG} == truth[out.tokens["rgb"]]
    assert_accounting(sync)


# ---------------------------------------------------------------------- property tests (any input order)
@st.composite
def scenario(draw: st.DrawFn) -> tuple[dict, list[tuple[float, str, float, tuple[str, int]]], list[float]]:
    """Random config and arrival sequence: jittered 30 Hz streams with losses, delays and reordering."""
    config = {
        "slop_s": draw(st.sampled_from([0.0, 0.01, 0.03, 0.05])),
        "queue_size": draw(st.integers(1, 6)),
        "max_wait_s": draw(st.sampled_from([0.0, 0.05, 0.2])),
        "required": draw(st.sampled_from([("rgb",), ("rgb", "depth"), ()])),
        "single_use": draw(st.sampled_from([(), ("depth",), ("depth", "lidar")])),
        "policy": draw(st.sampled_from(["nearest", "latest"])),
    }
    n = draw(st.integers(1, 25))
    loop_at = draw(st.one_of(st.none(), st.integers(1, n)))  # bag loop: stamps jump back ~5 s there
    arrivals = []
    for m in MODS:
        for i in range(n):
            if m != "rgb" and draw(st.integers(0, 4)) == 0:
                continue  # lost message
            base = i / 30 + (5.0 if loop_at is not None and i < loop_at else 0.0)
            stamp = base + (0 if m == "rgb" else draw(st.floats(-0.08, 0.08)))
            arrival = i / 30 + 10 + draw(st.floats(0, 0.3))  # transport delay reorders arrivals
            arrivals.append((arrival, m, stamp, (m, i)))
    arrivals.sort()
    polls = draw(st.lists(st.floats(10, 12), max_size=10))
    return config, arrivals, polls


@settings(max_examples=300, deadline=None)
@given(scenario())
def test_properties(case) -> None:
    config, arrivals, polls = case
    sync = ModalitySynchronizer(MODS, **config)
    arrived_at: dict[tuple[str, int], float] = {}
    emitted: list[tuple[float, SyncedSet]] = []
    epochs: list[int] = []  # resets seen when each set was emitted
    events = sorted([(t, "msg", a) for t, *a in arrivals] + [(t, "poll", None) for t in polls], key=lambda e: e[0])
    for now, kind, payload in events:
        if kind == "msg":
            modality, stamp, token = payload
            arrived_at[token] = now
            got = sync.add(modality, stamp, token, now_s=now)
        else:
            got = sync.poll(now)
        emitted += [(now, s) for s in got]
        epochs += [sync.stats.resets] * len(got)
        assert_accounting(sync)
    got = sync.poll(1e9)
    emitted += [(1e9, s) for s in got]
    epochs += [sync.stats.resets] * len(got)
    assert_accounting(sync)
    assert sync.queued()["rgb"] == 0

    stats = sync.stats
    assert stats.emitted == len(emitted)
    assert sum(stats.served.values()) == sum(len(s.items) for _, s in emitted)
    for m in config["single_use"]:
        tokens = [s.items[m] for _, s in emitted if m in s.items]
        assert len(tokens) == len(set(tokens)), f"single-use {m} served twice"
    refs = [s.items["rgb"] for _, s in emitted if "rgb" in s.items]
    assert len(refs) == len(set(refs)), "a reference went out twice"
    for i in range(1, len(emitted)):
        if epochs[i] == epochs[i - 1]:
            assert emitted[i][1].stamp_s > emitted[i - 1][1].stamp_s, "output stamps must increase"
    for now, s in emitted:
        assert set(s.items) | set(s.missing) == set(MODS) and not set(s.items) & set(s.missing)
        assert set(config["required"]) <= set(s.items)
        assert all(abs(s.stamps[m] - s.stamp_s) <= config["slop_s"] for m in s.items)
        assert all(tok[0] == m for m, tok in s.items.items())
        assert now >= arrived_at[s.items["rgb"]]
        if config["policy"] == "latest":  # out in the add() of its reference, with what had arrived by then
            assert now == arrived_at[s.items["rgb"]]
            assert all(arrived_at[token] <= now for token in s.items.values())


def test_duplicate_pending_reference_is_late() -> None:
    sync = make()
    sync.add("rgb", 1.0, "first", now_s=0.0)
    sync.add("rgb", 1.0, "again", now_s=0.01)
    [out] = sync.poll(1.0)
    assert out.items == {"rgb": "first"} and sync.stats.late["rgb"] == 1


def test_from_config_takes_every_sync_setting_of_the_config():
    from memsam_core.config import ConfigError, MemSamConfig, config_from_dict

    config = MemSamConfig(
        model={"modalities": ["rgb", "lidar", "depth"]},
        sync={"slop_s": 0.02, "queue_size": 3, "max_wait_s": 0.5, "required": ["rgb", "lidar"]}
        | {"single_use": ["depth"]},
    )
    sync = ModalitySynchronizer.from_config(config)
    assert sync.modalities == ["rgb", "lidar", "depth"] and sync.reference == "rgb"
    assert sync.required == ("rgb", "lidar") and sync.single_use == {"depth"}
    assert (sync.slop_s, sync.queue_size, sync.max_wait_s) == (0.02, 3, 0.5)
    assert sync.policy == "nearest" == MemSamConfig().sync.policy  # the shipped default (docs/node.md says why)
    latest = config.model_copy(update={"sync": config.sync.model_copy(update={"policy": "latest"})})
    assert ModalitySynchronizer.from_config(latest).policy == "latest"
    assert sync.reset_backjump_s == BACKJUMP_RESET_S
    assert MemSamConfig().sync.single_use == []  # default: every message may serve several sets
    with pytest.raises(ConfigError, match="single_use"):
        config_from_dict({"sync": {"single_use": ["rgb"]}})
    with pytest.raises(ConfigError, match="policy"):
        config_from_dict({"sync": {"policy": "newest"}})
