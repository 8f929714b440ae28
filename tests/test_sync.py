"""ModalitySynchronizer: explicit scenarios plus property tests over random jitter and interleavings."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memsam_ros.sync import BACKJUMP_RESET_S, ModalitySynchronizer, SyncedSet

MODS = ["rgb", "depth", "lidar"]


def make(**kw) -> ModalitySynchronizer:
    return ModalitySynchronizer(MODS, **({"slop_s": 0.05, "queue_size": 10, "max_wait_s": 0.2} | kw))


def assert_accounting(sync: ModalitySynchronizer) -> None:
    s, queued = sync.stats, sync.queued()
    for m in sync.modalities:
        assert s.received[m] == s.used[m] + s.evicted[m] + s.late[m] + s.discarded[m] + queued[m], m


def test_complete_set_is_emitted_at_once() -> None:
    sync = make()
    assert sync.add("depth", 1.01, "d", now_s=0.0) == []
    assert sync.add("rgb", 1.0, "r", now_s=0.0) == []
    [out] = sync.add("lidar", 0.97, "l", now_s=0.01)
    assert out == SyncedSet(
        1.0, {"rgb": "r", "depth": "d", "lidar": "l"}, {"rgb": 1.0, "depth": 1.01, "lidar": 0.97}, ()
    )
    assert list(out.items) == MODS  # frame order
    assert sync.stats.emitted == 1
    assert_accounting(sync)


def test_closest_message_within_slop_wins() -> None:
    sync = make(max_wait_s=0.0)
    for stamp in (0.96, 0.99, 1.03, 1.2):
        sync.add("depth", stamp, stamp, now_s=0.0)
    [out] = sync.add("rgb", 1.0, "r", now_s=0.0)
    assert out.items["depth"] == 0.99 and out.missing == ("lidar",)


def test_silent_lidar_sets_flagged_after_max_wait() -> None:
    sync = make(max_wait_s=0.25)
    emitted: list[tuple[float, SyncedSet]] = []
    for i in range(12):  # 32 Hz rgb + depth (binary-exact times), lidar never publishes
        now = i / 32
        emitted += [(now, s) for s in sync.add("depth", now + 1 / 256, i, now_s=now)]
        emitted += [(now, s) for s in sync.add("rgb", now, i, now_s=now)]
        emitted += [(now, s) for s in sync.poll(now)]
    assert [s.stamp_s for _, s in emitted] == [i / 32 for i in range(4)]
    assert all(s.missing == ("lidar",) and s.items == {"rgb": i, "depth": i} for i, (_, s) in enumerate(emitted))
    assert all(now - s.stamp_s >= 0.25 for now, s in emitted)
    rest = sync.poll(10.0)
    assert len(rest) == 8 and all(s.missing == ("lidar",) for s in rest)
    assert sync.poll(10.1) == []
    assert_accounting(sync)


def test_nothing_before_max_wait() -> None:
    sync = make()
    assert sync.add("rgb", 5.0, "r", now_s=100.0) == []
    assert sync.poll(100.19) == []
    [out] = sync.poll(100.2)
    assert out.missing == ("depth", "lidar") and out.items == {"rgb": "r"}


def test_required_modality_missing_drops_the_set() -> None:
    sync = make(required=("rgb", "lidar"))
    sync.add("depth", 1.0, "d", now_s=0.0)
    sync.add("rgb", 1.0, "r", now_s=0.0)
    assert sync.poll(1.0) == []
    s = sync.stats
    assert (s.dropped_incomplete, s.emitted, s.discarded["rgb"]) == (1, 0, 1)
    assert sync.queued()["depth"] == 1  # still usable by the next reference within slop
    [out] = sync.add("lidar", 1.04, "l", now_s=1.0) + sync.add("rgb", 1.03, "r2", now_s=1.0)
    assert out.items == {"rgb": "r2", "depth": "d", "lidar": "l"}
    assert_accounting(sync)


def test_out_of_order_references_are_emitted_in_order() -> None:
    sync = make()
    assert sync.add("rgb", 2.1, "b", now_s=0.0) == []
    assert sync.add("rgb", 2.0, "a", now_s=0.01) == []
    for stamp in (2.1, 2.0):
        sync.add("depth", stamp, f"d{stamp}", now_s=0.02)
    out = sync.add("lidar", 2.1, "l2.1", now_s=0.03) + sync.add("lidar", 2.0, "l2.0", now_s=0.04)
    assert [s.stamp_s for s in out] == [2.0, 2.1]
    assert [s.items["depth"] for s in out] == ["d2.0", "d2.1"]


def test_older_set_blocks_newer_until_max_wait() -> None:
    sync = make()
    sync.add("rgb", 1.0, "old", now_s=0.0)
    for m in ("rgb", "depth", "lidar"):
        assert sync.add(m, 1.1, m, now_s=0.05) == []  # 1.1 is complete but 1.0 waits
    out = sync.poll(0.2)
    assert [(s.stamp_s, s.missing) for s in out] == [(1.0, ("depth", "lidar")), (1.1, ())]


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
    sync = make(queue_size=4)
    for i in range(10):
        sync.add("depth", float(i), i, now_s=0.0)
        sync.add("rgb", i + 0.5, i, now_s=0.0)  # 0.5 s from any depth: never matches, waits
    assert sync.queued() == {"rgb": 4, "depth": 4, "lidar": 0}
    assert sync.stats.evicted == {"rgb": 6, "depth": 6, "lidar": 0}
    assert_accounting(sync)


def test_steady_streams_give_complete_sets() -> None:
    sync = make(slop_s=0.01)
    out = []
    for i in range(60):
        t = i / 30
        out += sync.add("lidar", t - 0.004, i, now_s=t + 0.001)
        out += sync.add("rgb", t, i, now_s=t + 0.002)
        out += sync.add("depth", t + 0.003, i, now_s=t + 0.02)
    assert len(out) == 60 and all(s.missing == () and len(set(s.items.values())) == 1 for s in out)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="reference"):
        ModalitySynchronizer(["depth"], reference="rgb", required=())
    with pytest.raises(ValueError, match="subset"):
        ModalitySynchronizer(["rgb"], required=("rgb", "lidar"))
    with pytest.raises(ValueError, match="unique"):
        ModalitySynchronizer(["rgb", "rgb"])
    with pytest.raises(ValueError, match="queue_size"):
        ModalitySynchronizer(["rgb"], queue_size=0)
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


# --- property tests ------------------------------------------------------------------------------------


@st.composite
def scenario(draw: st.DrawFn) -> tuple[dict, list[tuple[float, str, float, tuple[str, int]]], list[float]]:
    """Random config and arrival sequence: jittered 30 Hz streams with losses, delays and reordering."""
    config = {
        "slop_s": draw(st.sampled_from([0.0, 0.01, 0.03, 0.05])),
        "queue_size": draw(st.integers(1, 6)),
        "max_wait_s": draw(st.sampled_from([0.0, 0.05, 0.2])),
        "required": draw(st.sampled_from([("rgb",), ("rgb", "depth"), ()])),
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
    assert sum(stats.used.values()) == sum(len(s.items) for _, s in emitted)
    tokens = [tok for _, s in emitted for tok in s.items.values()]
    assert len(tokens) == len(set(tokens)), "an item was used twice"
    for i in range(1, len(emitted)):
        if epochs[i] == epochs[i - 1]:
            assert emitted[i][1].stamp_s > emitted[i - 1][1].stamp_s, "output stamps must increase"
    for now, s in emitted:
        assert set(s.items) | set(s.missing) == set(MODS) and not set(s.items) & set(s.missing)
        assert set(config["required"]) <= set(s.items)
        assert all(abs(s.stamps[m] - s.stamp_s) <= config["slop_s"] for m in s.items)
        assert all(tok[0] == m for m, tok in s.items.items())
        if s.missing:  # incomplete sets only after waiting max_wait for the reference
            assert now - arrived_at[s.items["rgb"]] >= config["max_wait_s"]


def test_duplicate_pending_reference_is_late() -> None:
    sync = make()
    sync.add("rgb", 1.0, "first", now_s=0.0)
    sync.add("rgb", 1.0, "again", now_s=0.01)
    [out] = sync.poll(1.0)
    assert out.items == {"rgb": "first"} and sync.stats.late["rgb"] == 1


def test_from_config_takes_every_sync_setting_of_the_config():
    from memsam_core.config import MemSamConfig

    config = MemSamConfig(
        model={"modalities": ["rgb", "lidar", "depth"]},
        sync={"slop_s": 0.02, "queue_size": 3, "max_wait_s": 0.5, "required": ["rgb", "lidar"]},
    )
    sync = ModalitySynchronizer.from_config(config)
    assert sync.modalities == ["rgb", "lidar", "depth"] and sync.reference == "rgb"
    assert sync.required == ("rgb", "lidar")
    assert (sync.slop_s, sync.queue_size, sync.max_wait_s) == (0.02, 3, 0.5)
    assert sync.reset_backjump_s == BACKJUMP_RESET_S
