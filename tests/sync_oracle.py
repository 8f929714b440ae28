"""Sensor streams and the oracle the synchroniser is compared with (tests and benchmarks/bench_sync.py).

The oracle sees the whole recording at once. For every reference message it picks, per modality, the
message nearest in stamp within ``slop`` (ties: the earlier stamp). For a single-use modality a message
may only serve the reference nearest to it (ties: the earlier reference), and each reference takes the
nearest of the messages that chose it. That is what ``sync.policy: nearest`` must give.

:func:`newest_received` is the brute-force model of ``sync.policy: latest``: for every reference, per
modality, the newest stamp within ``slop`` among the messages that arrived before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

RIG_RATES_HZ: dict[str, float] = {"rgb": 30.0, "depth": 30.0, "lidar": 10.0, "event": 60.0}
"""A rig's rates (issue 23): RGB 30 Hz, depth 30, LiDAR 10, event packets 60."""
RIG_DELAYS_S: dict[str, float] = {"rgb": 0.008, "depth": 0.012, "lidar": 0.020, "event": 0.004}
"""Stamp-to-arrival transport/driver delay per sensor."""


@dataclass(frozen=True)
class Msg:
    modality: str
    stamp: float
    arrival: float
    token: tuple[str, int]


def make_streams(
    duration_s: float = 6.0,
    rates_hz: Mapping[str, float] = RIG_RATES_HZ,
    delays_s: Mapping[str, float] = RIG_DELAYS_S,
    seed: int = 0,
    stamp_jitter_s: float = 0.0,
    arrival_jitter_s: float = 0.0,
    drop: Mapping[str, float] | None = None,
    dies_at_s: Mapping[str, float] | None = None,
    start_s: float = 1_700_000_000.0,
) -> list[Msg]:
    """Messages in arrival order. Stamps are periodic (+ uniform ``±stamp_jitter_s``); arrival = stamp + delay
    + uniform ``±arrival_jitter_s`` (never before the stamp), in stamp order per topic like one DDS writer."""
    rng = np.random.default_rng(seed)
    drop, dies_at_s = dict(drop or {}), dict(dies_at_s or {})
    out: list[Msg] = []
    for modality, rate in rates_hz.items():
        phase = rng.uniform(0.0, 1.0 / rate) if modality != "rgb" else 0.0
        last_arrival = -np.inf
        for index in range(int(duration_s * rate)):
            offset = phase + index / rate
            if offset >= dies_at_s.get(modality, np.inf) or rng.random() < drop.get(modality, 0.0):
                continue
            stamp = start_s + offset + rng.uniform(-stamp_jitter_s, stamp_jitter_s)
            delay = max(0.0005, delays_s[modality] + rng.uniform(-arrival_jitter_s, arrival_jitter_s))
            arrival = max(stamp + delay, last_arrival + 1e-6)
            last_arrival = arrival
            out.append(Msg(modality, stamp, arrival, (modality, index)))
    return sorted(out, key=lambda m: m.arrival)


def _nearest(candidates: list[Msg], stamp: float, slop: float) -> Msg | None:
    if not candidates:
        return None
    best = min(candidates, key=lambda c: (abs(c.stamp - stamp), c.stamp))
    return best if abs(best.stamp - stamp) <= slop else None


def oracle(
    messages: Iterable[Msg], modalities: list[str], slop: float, single_use: Iterable[str] = (), reference: str = "rgb"
) -> dict[tuple[str, int], dict[str, tuple[str, int] | None]]:
    """``{reference token: {modality: chosen token or None}}`` for every reference message."""
    by_modality: dict[str, list[Msg]] = {m: [] for m in modalities}
    for msg in messages:
        by_modality[msg.modality].append(msg)
    refs = sorted(by_modality[reference], key=lambda r: r.stamp)
    ref_stamps = np.array([r.stamp for r in refs])
    result: dict[tuple[str, int], dict[str, tuple[str, int] | None]] = {r.token: {reference: r.token} for r in refs}
    for m in modalities:
        if m == reference:
            continue
        candidates: dict[tuple[str, int], list[Msg]] = {r.token: by_modality[m] for r in refs}
        if m in set(single_use) and refs:
            candidates = {r.token: [] for r in refs}
            for msg in by_modality[m]:
                distances = np.abs(ref_stamps - msg.stamp)
                candidates[refs[int(np.argmin(distances))].token].append(msg)  # argmin: first = earlier ref
        for r in refs:
            chosen = _nearest(candidates[r.token], r.stamp, slop)
            result[r.token][m] = chosen.token if chosen else None
    return result


def newest_received(
    messages: list[Msg], modalities: list[str], slop: float, reference: str = "rgb"
) -> dict[tuple[str, int], dict[str, tuple[str, int] | None]]:
    """``{reference token: {modality: token or None}}``: per modality, the message with the newest stamp within
    ``slop`` of the reference among those before it in ``messages`` (arrival order), i.e. received when the
    reference arrived. No single-use, no queue bound: the model ``sync.policy: latest`` is checked against."""
    result: dict[tuple[str, int], dict[str, tuple[str, int] | None]] = {}
    received: dict[str, list[Msg]] = {m: [] for m in modalities}
    for msg in messages:
        if msg.modality != reference:
            received[msg.modality].append(msg)
            continue
        choice: dict[str, tuple[str, int] | None] = {reference: msg.token}
        for m in modalities:
            if m != reference:
                within = [c for c in received[m] if abs(c.stamp - msg.stamp) <= slop]
                choice[m] = max(within, key=lambda c: c.stamp).token if within else None
        result[msg.token] = choice
    return result


@dataclass
class Emitted:
    emitted_at: float
    tokens: dict[str, tuple[str, int]]
    missing: tuple[str, ...]
    compute_s: float


def replay(sync, messages: list[Msg], poll_period_s: float = 0.01, timed: bool = True) -> list[Emitted]:
    """Feed ``messages`` at their arrival times, polling every ``poll_period_s`` like the node's timer.

    A set's emit time is the (simulated) time of the call that returned it, plus that call's wall time
    when ``timed`` (benchmarks; tests use the simulated time alone).
    """
    out: list[Emitted] = []

    def call(fn: Callable[[], list], now: float) -> None:
        started = time.perf_counter()
        sets = fn()
        spent = time.perf_counter() - started
        out.extend(Emitted(now + (spent if timed else 0.0), dict(s.items), s.missing, spent) for s in sets)

    if not messages:
        return out
    next_poll = messages[0].arrival
    for msg in messages:
        while next_poll < msg.arrival:
            call(lambda t=next_poll: sync.poll(t), next_poll)
            next_poll += poll_period_s
        call(lambda m=msg: sync.add(m.modality, m.stamp, m.token, now_s=m.arrival), msg.arrival)
    end = messages[-1].arrival + 10.0
    while next_poll < end:
        call(lambda t=next_poll: sync.poll(t), next_poll)
        next_poll += poll_period_s
    return out


def needed_at(
    messages: list[Msg],
    ref: Msg,
    chosen: Mapping[str, tuple[str, int] | None],
    single_use: Iterable[str] = (),
    slop: float = 0.05,
) -> float:
    """When the last message the oracle's choice depends on arrived: the reference, the chosen messages,
    per modality the first message stamped at or after the reference (it proves no nearer one can come)
    and, for a single-use modality with a message after the reference within slop that is at least as near
    as the choice, the next reference (it decides which reference that message is nearest to)."""
    by_token = {m.token: m for m in messages}
    latest = ref.arrival
    for modality, token in chosen.items():
        if modality == ref.modality:
            continue
        if token is not None:
            latest = max(latest, by_token[token].arrival)
        witness = next((m for m in messages if m.modality == modality and m.stamp >= ref.stamp), None)
        if witness is not None:
            latest = max(latest, witness.arrival)
        if modality in set(single_use):
            limit = abs(by_token[token].stamp - ref.stamp) if token is not None else slop
            after = [m for m in messages if m.modality == modality and ref.stamp < m.stamp <= ref.stamp + limit]
            following = next((m for m in messages if m.modality == ref.modality and m.stamp > ref.stamp), None)
            if after and following is not None:
                latest = max(latest, following.arrival)
    return latest
