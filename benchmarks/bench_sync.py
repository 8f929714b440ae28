"""Synchroniser policies on a rig's streams: latency from the RGB stamp, and how often a set differs from the oracle's.

Streams like a rig's (tests/sync_oracle.py): RGB 30 Hz, depth 30, LiDAR 10, event packets 60 Hz (``--event-hz``:
a driver's packet rate, e.g. 1000); stamp-to-arrival transport delays RGB 8 ms, depth 12, LiDAR 20, events 4; 6 s
per seed, plus 0.5 s so the last sets have their next messages as in a running system. Scenarios: regular, ±20 ms
arrival jitter (±2 ms stamp jitter), jitter + 3-10 % drops, LiDAR dying at 3 s. Each stream is replayed in
arrival order through each synchroniser with a 10 ms poll timer like the node's (a set's emit time is the
simulated time of the call that returned it plus the call's wall time):

* ``nearest`` (shipped: slop 50 ms, max_wait 200 ms, queue 10) and ``latest`` at slop 50 ms and 150 ms (a 10 Hz
  LiDAR 20 ms behind RGB needs slop > 112 ms to be in every ``latest`` set);
* ROS 2's own ``message_filters.ApproximateTimeSynchronizer`` (queue 10, slop 50 ms; each message in one set; it
  emits a set only when every topic has a message within slop), when it is importable (not on PyPI:
  ``bash ../shared/ros2-upstream/install.sh .venv``); the row is left out otherwise.

Columns: sets per RGB frame; **RGB stamp -> out**: emit time minus the RGB stamp, p50/p99 (includes RGB's 8 ms
transport delay and its jitter); **RGB arrival -> out**: what the synchroniser waits; **beyond proof**
(``nearest`` only): emit time minus the arrival of the last message the oracle's choice needs (the reference, the
chosen messages, each modality's first message stamped at or after the reference; tests/sync_oracle.py
``needed_at``), p99 over the sets for which every sensor still sends (after a sensor's last message only its
silence proves that nothing nearer comes: those sets wait up to ``max_wait_s``, seen in the latency columns) — the
synchroniser's own waiting past what the rule requires; **differs from the oracle**: share of sets whose message
differs from the oracle's (nearest within the same slop, seeing the whole recording), per modality and any (for an
event stream the choice decides only whether the set has events: the frame is the window up to the RGB stamp,
whatever packet was chosen); **LiDAR missing** in the sets; **|LiDAR skew|**: ``|LiDAR stamp - RGB stamp|``
p50/p99, what ``~/info`` reports as ``stamp_skew_s``; **event gap**: RGB stamp minus the newest event packet
received when the set left, p50/p99 (the part of the event window up to the RGB stamp not yet received; the node
builds the frame on the inference thread a little later, so its gap is at most this).

    python benchmarks/bench_sync.py [--duration 6] [--seeds 3] [--event-hz 60]
"""

from __future__ import annotations

import argparse
import bisect
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from sync_oracle import RIG_RATES_HZ, Emitted, Msg, make_streams, needed_at, oracle, replay

from memsam_ros.sync import ModalitySynchronizer, SyncedSet

MODALITIES = list(RIG_RATES_HZ)
OTHERS = MODALITIES[1:]
SLOP_S, MAX_WAIT_S, QUEUE = 0.05, 0.2, 10
TAIL_S = 0.5
SCENARIOS: dict[str, dict[str, Any]] = {
    "regular": {},
    "jitter ±20 ms": {"arrival_jitter_s": 0.02, "stamp_jitter_s": 0.002},
    "jitter + drops": {
        "arrival_jitter_s": 0.02,
        "stamp_jitter_s": 0.002,
        "drop": {"rgb": 0.03, "depth": 0.1, "lidar": 0.1, "event": 0.1},
    },
    "LiDAR dies at 3 s": {"arrival_jitter_s": 0.02, "stamp_jitter_s": 0.002, "dies_at_s": {"lidar": 3.0}},
}


@dataclass(frozen=True)
class Policy:
    """One row per scenario: a name, its slop and a factory of synchronisers with ``add``/``poll``."""

    name: str
    slop_s: float
    make: Callable[[], Any]
    nearest: bool = False  # report "beyond proof" (the oracle's inputs are what it waits for)


def ours(policy: str, slop_s: float) -> Policy:
    def make() -> ModalitySynchronizer:
        return ModalitySynchronizer(
            MODALITIES, slop_s=slop_s, max_wait_s=MAX_WAIT_S, queue_size=QUEUE, required=("rgb",), policy=policy
        )

    return Policy(f"{policy}, slop {slop_s * 1e3:.0f} ms", slop_s, make, nearest=policy == "nearest")


class MessageFiltersApproximateTime:
    """``message_filters.ApproximateTimeSynchronizer`` behind ``add``/``poll``: it emits synchronously in the
    message's signal, so a set leaves in the ``add`` of the message that completes it."""

    def __init__(self, slop_s: float, queue_size: int = QUEUE) -> None:
        import message_filters

        self._filters = {m: message_filters.SimpleFilter() for m in MODALITIES}
        sync = message_filters.ApproximateTimeSynchronizer(
            [self._filters[m] for m in MODALITIES], queue_size=queue_size, slop=slop_s
        )
        sync.registerCallback(self._on_set)
        self._out: list[SyncedSet] = []

    def _on_set(self, *messages: Any) -> None:
        items = {m: msg.token for m, msg in zip(MODALITIES, messages)}
        stamps = {m: msg.stamp_s for m, msg in zip(MODALITIES, messages)}
        self._out.append(SyncedSet(stamps["rgb"], items, stamps, ()))

    def add(self, modality: str, stamp_s: float, item: Any, now_s: float) -> list[SyncedSet]:
        from builtin_interfaces.msg import Time
        from std_msgs.msg import Header

        sec = int(stamp_s)
        header = Header(stamp=Time(sec=sec, nanosec=min(round((stamp_s - sec) * 1e9), 999_999_999)))
        self._filters[modality].signalMessage(_Stamped(header, item, stamp_s))
        out, self._out = self._out, []
        return out

    def poll(self, now_s: float) -> list[SyncedSet]:
        return []


@dataclass
class _Stamped:
    header: Any
    token: Any
    stamp_s: float


def policies() -> list[Policy]:
    rows = [ours("nearest", SLOP_S), ours("latest", SLOP_S), ours("latest", 0.15)]
    if importlib.util.find_spec("message_filters") is not None:
        rows.append(Policy("message_filters ApproximateTime", SLOP_S, lambda: MessageFiltersApproximateTime(SLOP_S)))
    return rows


@dataclass
class Scores:
    """Per-set measurements of one policy on one or more streams (merge with ``+``)."""

    refs: int = 0
    stamp_to_out: list[float] = field(default_factory=list)
    arrival_to_out: list[float] = field(default_factory=list)
    beyond_proof: list[float] = field(default_factory=list)
    differs: dict[str, int] = field(default_factory=lambda: dict.fromkeys([*OTHERS, "any"], 0))
    missing: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OTHERS, 0))
    lidar_skew: list[float] = field(default_factory=list)
    event_gap: list[float] = field(default_factory=list)

    @property
    def sets(self) -> int:
        return len(self.stamp_to_out)

    def __add__(self, other: Scores) -> Scores:
        return Scores(
            self.refs + other.refs,
            self.stamp_to_out + other.stamp_to_out,
            self.arrival_to_out + other.arrival_to_out,
            self.beyond_proof + other.beyond_proof,
            {k: self.differs[k] + other.differs[k] for k in self.differs},
            {k: self.missing[k] + other.missing[k] for k in self.missing},
            self.lidar_skew + other.lidar_skew,
            self.event_gap + other.event_gap,
        )


class EventArrivals:
    """The newest event stamp received by a time (the stream is known up to there)."""

    def __init__(self, messages: list[Msg]) -> None:
        events = [m for m in messages if m.modality == "event"]  # already in arrival order
        self.arrivals = [m.arrival for m in events]
        self.newest = np.maximum.accumulate([m.stamp for m in events]) if events else np.array([])

    def newest_by(self, time_s: float) -> float:
        index = bisect.bisect_right(self.arrivals, time_s) - 1
        return float(self.newest[index]) if index >= 0 else -np.inf


def measure(
    messages: list[Msg],
    emitted: list[Emitted],
    slop_s: float,
    end_stamp: float,
    truth: dict | None = None,
    nearest: bool = False,
) -> Scores:
    """Score the sets ``emitted`` for ``messages`` against the oracle (``truth``, computed when not given); only
    references stamped before ``end_stamp`` count."""
    truth = truth if truth is not None else oracle(messages, MODALITIES, slop_s)
    by_token = {m.token: m for m in messages}
    refs = {m.token: m for m in messages if m.modality == "rgb" and m.stamp < end_stamp}
    events = EventArrivals(messages)
    newest = {m: max((x.stamp for x in messages if x.modality == m), default=-np.inf) for m in MODALITIES}
    scores = Scores(refs=len(refs))
    for out in emitted:
        ref = refs.get(out.tokens["rgb"])
        if ref is None:
            continue
        want = truth[ref.token]
        scores.stamp_to_out.append(out.emitted_at - ref.stamp)
        scores.arrival_to_out.append(out.emitted_at - ref.arrival)
        if nearest and all(newest[m] >= ref.stamp for m in OTHERS):  # after a death only silence proves it
            scores.beyond_proof.append(out.emitted_at - needed_at(messages, ref, want, (), slop_s))
        wrong = [m for m in OTHERS if out.tokens.get(m) != want[m]]
        for m in wrong:
            scores.differs[m] += 1
        scores.differs["any"] += bool(wrong)
        for m in OTHERS:
            scores.missing[m] += m not in out.tokens
        if "lidar" in out.tokens:
            scores.lidar_skew.append(abs(by_token[out.tokens["lidar"]].stamp - ref.stamp))
        if "event" in out.tokens:
            scores.event_gap.append(max(0.0, ref.stamp - events.newest_by(out.emitted_at - out.compute_s)))
    return scores


def run_scenario(scenario: dict[str, Any], seed: int, duration_s: float, rows: list[Policy], rates: dict) -> list:
    messages = make_streams(duration_s + TAIL_S, rates_hz=rates, seed=seed, **scenario)
    end = messages[0].stamp + duration_s
    truths: dict[float, dict] = {}
    out = []
    for policy in rows:
        truth = truths.setdefault(policy.slop_s, oracle(messages, MODALITIES, policy.slop_s))
        emitted = replay(policy.make(), messages)
        out.append(measure(messages, emitted, policy.slop_s, end, truth, policy.nearest))
    return out


def _p(values: list[float], q: float, scale: float = 1e3) -> str:
    return f"{np.percentile(values, q) * scale:.1f}" if values else "-"


def _pct(count: int, total: int) -> str:
    return f"{100.0 * count / max(total, 1):.1f}"


def table_row(scenario: str, policy: Policy, s: Scores) -> str:
    differs = " / ".join(_pct(s.differs[k], s.sets) for k in [*OTHERS, "any"])
    beyond = f"{np.percentile(s.beyond_proof, 99) * 1e3:.2f}" if s.beyond_proof else "-"
    return (
        f"| {scenario} | {policy.name} | {s.sets} / {s.refs} | {_p(s.stamp_to_out, 50)} / {_p(s.stamp_to_out, 99)} "
        f"| {_p(s.arrival_to_out, 50)} / {_p(s.arrival_to_out, 99)} | {beyond} | {differs} "
        f"| {_pct(s.missing['lidar'], s.sets)} | {_p(s.lidar_skew, 50)} / {_p(s.lidar_skew, 99)} "
        f"| {_p(s.event_gap, 50)} / {_p(s.event_gap, 99)} |"
    )


HEADER = (
    "| scenario | policy | sets / RGB | RGB stamp → out p50 / p99 ms | RGB arrival → out p50 / p99 ms "
    "| beyond proof p99 ms | differs from the oracle % depth / LiDAR / event / any | LiDAR missing % "
    "| \\|LiDAR skew\\| p50 / p99 ms | event gap p50 / p99 ms |\n|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--event-hz", type=float, default=RIG_RATES_HZ["event"], help="event packets per second")
    args = parser.parse_args(argv)
    rates = dict(RIG_RATES_HZ, event=args.event_hz)
    rows = policies()
    print(
        f"# {args.seeds} x {args.duration:.0f} s per scenario; rates {rates} Hz; max_wait {MAX_WAIT_S * 1e3:.0f} ms, "
        f"queue {QUEUE}" + ("" if len(rows) == 4 else "; message_filters not importable: its row left out")
    )
    print(HEADER)
    for name, scenario in SCENARIOS.items():
        per_seed = [run_scenario(scenario, seed, args.duration, rows, rates) for seed in range(args.seeds)]
        for index, policy in enumerate(rows):
            total = sum((scores[index] for scores in per_seed), Scores())
            print(table_row(name, policy, total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
