"""benchmarks/bench_sync.py measures what its table says: each counter is fed a synchroniser or stream broken on
purpose and moves (a synchroniser that picks the oldest message within slop differs from the oracle; events
delivered late leave a gap under ``latest``), and the script runs end to end with both policies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sync_oracle import RIG_DELAYS_S, make_streams, replay

from memsam_ros.sync import ModalitySynchronizer, SyncedSet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_sync  # noqa: E402

SLOP = bench_sync.SLOP_S


class OldestWithinSlop:
    """Deliberately wrong: emits on the RGB frame's arrival with the *oldest* queued message within slop."""

    def __init__(self, slop_s: float = SLOP) -> None:
        self.slop_s = slop_s
        self.queues: dict[str, list[tuple[float, Any]]] = {m: [] for m in bench_sync.OTHERS}

    def add(self, modality: str, stamp_s: float, item: Any, now_s: float) -> list[SyncedSet]:
        if modality != "rgb":
            self.queues[modality].append((stamp_s, item))
            return []
        items, stamps = {"rgb": item}, {"rgb": stamp_s}
        for m, queue in self.queues.items():
            within = [entry for entry in queue if abs(entry[0] - stamp_s) <= self.slop_s]
            if within:
                stamps[m], items[m] = min(within, key=lambda entry: entry[0])
        return [SyncedSet(stamp_s, items, stamps, ())]

    def poll(self, now_s: float) -> list[SyncedSet]:
        return []


def sync_of(policy: str, slop_s: float = SLOP) -> ModalitySynchronizer:
    return ModalitySynchronizer(bench_sync.MODALITIES, slop_s=slop_s, max_wait_s=0.2, queue_size=10, policy=policy)


def scores(messages, sync, slop_s: float = SLOP) -> bench_sync.Scores:
    emitted = replay(sync, messages, timed=False)
    end = messages[0].stamp + 3.0
    return bench_sync.measure(messages, emitted, slop_s, end, nearest=getattr(sync, "policy", "") == "nearest")


@pytest.fixture(scope="module")
def jittered():
    return make_streams(3.5, seed=1, arrival_jitter_s=0.02, stamp_jitter_s=0.002)


def differs(s: bench_sync.Scores, key: str = "any") -> float:
    return s.differs[key] / s.sets


def test_the_differs_counter_catches_a_wrong_choice(jittered) -> None:
    """nearest equals the oracle by construction of its tests (plumbing check: 0 here); latest takes the newest
    received, which differs often; picking the oldest within slop differs more, for every modality."""
    nearest, latest, oldest = (scores(jittered, s) for s in (sync_of("nearest"), sync_of("latest"), OldestWithinSlop()))
    assert nearest.sets == latest.sets == oldest.sets == nearest.refs
    assert differs(nearest) == 0.0
    assert 0.3 < differs(latest) < differs(oldest)
    assert all(differs(oldest, m) > 0.5 for m in bench_sync.OTHERS)
    assert all(differs(oldest, m) > differs(latest, m) for m in ("depth", "event"))


def test_latency_columns_show_who_waits(jittered) -> None:
    """latest leaves at the RGB arrival (0 ms from it, untimed replay); nearest waits for the 10 Hz LiDAR."""
    nearest, latest = scores(jittered, sync_of("nearest")), scores(jittered, sync_of("latest"))
    assert max(latest.arrival_to_out) == 0.0
    assert np.percentile(nearest.arrival_to_out, 50) > 0.03
    assert max(nearest.beyond_proof) <= 1e-9  # untimed: out the instant the oracle's inputs are in


def test_the_event_gap_grows_when_events_arrive_late() -> None:
    """Broken on purpose: event packets 30 ms later than the RGB frames. latest then sends sets before the events
    up to the RGB stamp are in (gap ~25 ms); nearest waits for them (gap 0)."""
    for event_delay, low, high in ((RIG_DELAYS_S["event"], 0.0, 0.012), (0.038, 0.02, 0.05)):
        messages = make_streams(3.5, delays_s=dict(RIG_DELAYS_S, event=event_delay), seed=2)
        gap = np.percentile(scores(messages, sync_of("latest")).event_gap, 50)
        assert low <= gap <= high, (event_delay, gap)
        assert max(scores(messages, sync_of("nearest")).event_gap) == 0.0


def test_lidar_skew_and_missing_follow_the_slop(jittered) -> None:
    """A 10 Hz LiDAR 20 ms behind RGB: at slop 50 ms latest lacks it in most sets; at 150 ms it is in nearly
    every set, up to ~130 ms old; nearest's skew stays within half the LiDAR period plus jitter."""
    narrow, wide = scores(jittered, sync_of("latest")), scores(jittered, sync_of("latest", 0.15), 0.15)
    nearest = scores(jittered, sync_of("nearest"))
    assert narrow.missing["lidar"] / narrow.sets > 0.4 > 0.05 > wide.missing["lidar"] / wide.sets
    assert max(wide.lidar_skew) <= 0.15 and np.percentile(wide.lidar_skew, 99) > 0.09
    assert max(nearest.lidar_skew) <= 0.05 + 1e-9


def test_the_script_prints_every_policy_and_scenario() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/bench_sync.py"), "--seeds", "1", "--duration", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    names = {policy.name for policy in bench_sync.policies()}
    assert {"nearest, slop 50 ms", "latest, slop 50 ms", "latest, slop 150 ms"} <= names
    assert len(rows) == len(names) * len(bench_sync.SCENARIOS)
    assert {row.split(" | ")[1] for row in rows} == names
