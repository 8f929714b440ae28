"""Synchroniser of the modality streams around the reference (RGB), with two policies.

message_filters is not on PyPI, and its Python ApproximateTimeSynchronizer emits nothing while one input
is silent and can emit an older set after a newer one. This one is ROS-free (stamps are float seconds, the
caller passes its clock). What a set waits for is the policy's (``sync.policy``):

* ``nearest`` (the default) picks what an oracle that saw the whole recording would pick, so a set waits
  until every other sensor has sent a message stamped at or after the RGB stamp, or is silent, at most
  ``max_wait_s``: with a 10 Hz LiDAR up to its period (100 ms) plus its latency. It waits for nothing more
  than that proof (the rules below).
* ``latest`` waits for nothing: the set goes out in the ``add`` of its reference, with, per other modality,
  the newest message received so far whose stamp is within ``slop_s`` of the reference (older or newer than
  it). A sensor slower than ``slop_s`` allows is then often missing, and the stamp skew is the price (the
  node reports it per modality in ``~/info``). An event stream's set has the events received by then: its
  window up to the RGB stamp may lack the last packet's worth (the stream's latency). The choice depends on
  arrival order across topics, which a bag replay over DDS does not reproduce, so evaluation uses
  ``nearest`` (:func:`replay_config`). ``single_use`` under ``latest``: a message serves at most one set,
  and a modality never goes back to a message older than one it already gave (missing instead).

``nearest`` in detail:

* **Matching.** Each reference message gets, per other modality, the message nearest in stamp within
  ``slop_s`` (ties: the earlier stamp). By default a message may serve several sets: a 15 Hz LiDAR is in
  every 30 Hz RGB set within slop, which is what a perception node wants (the freshest data of every
  sensor in every output). Modalities in ``single_use`` give each message to one set only (the
  message_filters behaviour): a message serves the reference nearest to it, and each reference takes
  the nearest of the messages that chose it.
* **Waiting for proof, nothing more.** A set goes out as soon as, for every other modality, its choice is certain
  or the modality is silent. Certain: a message stamped at or after the reference has arrived (messages
  of one topic arrive in stamp order, so no later one can be nearer); for a single-use choice stamped
  after the reference, also the next reference (it decides which reference the message is nearest to).
  Silent: the topic's next message is ``max_wait_s`` overdue, both on the caller's clock (nothing arrived
  for its usual period, the median of its recent stamp intervals, plus ``max_wait_s``) and in stamps (the
  newest reference is that much newer than its newest message). So dropped messages of a slow sensor do
  not make it look dead, and neither does a pause of every stream (a bag player waiting for the node).
  A set also goes out once ``max_wait_s`` passed since its reference arrived, or when more than
  ``queue_size`` newer references wait behind it, whatever is still missing. Sets go out in
  reference-stamp order; an incomplete older set never holds back a newer one longer than the rules
  above, because any message that makes a newer choice certain makes the older one certain too.
Both policies: sets lacking a ``required`` modality are dropped (``dropped_incomplete``); a reference stamp
jumping back by more than ``reset_backjump_s`` (a bag loop) resets the queues; sets go out in reference-stamp
order (under ``latest`` a reference older than the last set is ``late``).

Accounting, per modality ``m`` (checked by the property tests)::

    received[m] == used[m] + evicted[m] + late[m] + discarded[m] + queued()[m]

``used``: left the queue after serving at least one set; ``evicted``: pushed out of a full queue unused;
``late``: arrived too old to serve any set still to come; ``discarded``: left unused (no future reference
can match it, cleared by a reset, or the reference of a dropped incomplete set). ``served[m]`` counts the
sets each modality went into (a reused message counts once per set).
"""

from __future__ import annotations

import bisect
import logging
import statistics
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memsam_core.config import MemSamConfig

LOG = logging.getLogger(__name__)
BACKJUMP_RESET_S = 1.0
"""A reference stamp going back more than this is a bag loop / restarted source: the queues reset."""
PERIOD_SAMPLES = 9  # recent stamp intervals whose median is a topic's usual period
POLICIES: tuple[str, ...] = ("nearest", "latest")
"""``sync.policy`` values: the oracle's nearest message (waits for proof) or the newest received (waits for nothing)."""


@dataclass(frozen=True)
class SyncedSet:
    """One reference message and the other modalities matched to it."""

    stamp_s: float
    items: dict[str, Any]
    stamps: dict[str, float]
    missing: tuple[str, ...]


def _zeros(modalities: list[str]) -> dict[str, int]:
    return dict.fromkeys(modalities, 0)


@dataclass
class SyncStats:
    """Cumulative counters; per-modality dicts satisfy the accounting identity in the module doc."""

    received: dict[str, int]
    used: dict[str, int]
    evicted: dict[str, int]
    late: dict[str, int]
    discarded: dict[str, int]
    served: dict[str, int]
    emitted: int = 0
    dropped_incomplete: int = 0
    resets: int = 0

    @classmethod
    def empty(cls, modalities: list[str]) -> SyncStats:
        return cls(*(_zeros(modalities) for _ in range(6)))

    def copy(self) -> SyncStats:
        dicts = (self.received, self.used, self.evicted, self.late, self.discarded, self.served)
        return SyncStats(*(dict(d) for d in dicts), self.emitted, self.dropped_incomplete, self.resets)


@dataclass(slots=True)
class _Entry:
    stamp: float
    arrival: float  # caller clock
    item: Any
    used: bool = False


def _key(entry: _Entry) -> float:
    return entry.stamp


def replay_config(config: MemSamConfig) -> MemSamConfig:
    """``config`` with ``sync.policy: nearest``, for replaying a bag (offline and live evaluation, which must
    agree): ``latest`` picks by arrival order across topics, which a replay over DDS does not reproduce."""
    if config.sync.policy == "nearest":
        return config
    LOG.warning(
        "sync.policy %s: replaying a bag with nearest (offline and live give the same sets only so)", config.sync.policy
    )
    return config.model_copy(update={"sync": config.sync.model_copy(update={"policy": "nearest"})})


class ModalitySynchronizer:
    """Thread-safe; call :meth:`add` from subscription callbacks and :meth:`poll` from a timer."""

    def __init__(
        self,
        modalities: list[str],
        reference: str = "rgb",
        required: Iterable[str] = ("rgb",),
        slop_s: float = 0.05,
        queue_size: int = 10,
        max_wait_s: float = 0.2,
        single_use: Iterable[str] = (),
        reset_backjump_s: float = BACKJUMP_RESET_S,
        policy: str = "nearest",
    ) -> None:
        required, single_use = tuple(required), tuple(single_use)
        if len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities must be unique, got {modalities}")
        if reference not in modalities:
            raise ValueError(f"reference {reference!r} is not one of {modalities}")
        if not set(required) <= set(modalities):
            raise ValueError(f"required {list(required)} must be a subset of {modalities}")
        if not set(single_use) <= set(modalities) - {reference}:
            raise ValueError(f"single_use {list(single_use)} must be modalities other than the reference {reference!r}")
        if policy not in POLICIES:
            raise ValueError(f"policy {policy!r} is not one of {list(POLICIES)}")
        if slop_s < 0 or max_wait_s < 0 or reset_backjump_s <= 0 or queue_size < 1:
            raise ValueError("need slop_s >= 0, max_wait_s >= 0, reset_backjump_s > 0, queue_size >= 1")
        self.modalities = list(modalities)
        self.reference = reference
        self.others = [m for m in modalities if m != reference]
        self.required = required
        self.single_use = frozenset(single_use)
        self.slop_s = slop_s
        self.queue_size = queue_size
        self.max_wait_s = max_wait_s
        self.reset_backjump_s = reset_backjump_s
        self.policy = policy
        self._lock = threading.Lock()
        self._queues: dict[str, list[_Entry]] = {m: [] for m in modalities}  # sorted by stamp; reference = pending
        self._stats = SyncStats.empty(self.modalities)
        self._last_final: float | None = None  # stamp of the last emitted or dropped reference
        self._newest: dict[str, float | None] = dict.fromkeys(modalities)  # newest stamp received per modality
        self._last_arrival: dict[str, float | None] = dict.fromkeys(modalities)
        self._intervals: dict[str, deque[float]] = {m: deque(maxlen=PERIOD_SAMPLES) for m in modalities}
        self._period: dict[str, float] = dict.fromkeys(modalities, 0.0)
        self._started: tuple[float, float] | None = None  # (caller time, stamp) of the first message
        self._last_served: dict[str, float | None] = dict.fromkeys(modalities)  # latest, single-use: newest given

    @classmethod
    def from_config(cls, config: MemSamConfig) -> ModalitySynchronizer:
        """The synchroniser the node uses for ``config``; bag evaluation builds the same one."""
        return cls(
            list(config.model.modalities),
            reference=config.sync.reference,
            required=tuple(config.sync.required),
            slop_s=config.sync.slop_s,
            queue_size=config.sync.queue_size,
            max_wait_s=config.sync.max_wait_s,
            single_use=tuple(m for m in config.sync.single_use if m in config.model.modalities),
            policy=config.sync.policy,
        )

    # ------------------------------------------------------------------ public API
    @property
    def stats(self) -> SyncStats:
        with self._lock:
            return self._stats.copy()

    @property
    def resets(self) -> int:
        """Bag-loop resets so far (cheaper than copying :attr:`stats` per message)."""
        return self._stats.resets

    def queued(self) -> dict[str, int]:
        """Messages currently held per modality (pending references and reusable messages included)."""
        with self._lock:
            return {m: len(q) for m, q in self._queues.items()}

    def set_timing(self, slop_s: float | None = None, max_wait_s: float | None = None) -> None:
        """Change ``slop_s`` / ``max_wait_s`` while running (the node's runtime parameters)."""
        with self._lock:
            if slop_s is not None:
                self.slop_s = slop_s
            if max_wait_s is not None:
                self.max_wait_s = max_wait_s

    def add(self, modality: str, stamp_s: float, item: Any, now_s: float) -> list[SyncedSet]:
        """Queue one message (``now_s``: its arrival on the caller's clock); return the sets now ready."""
        if modality not in self._queues:
            raise ValueError(f"unknown modality {modality!r} (expected one of {self.modalities})")
        with self._lock:
            if self._started is None:
                self._started = (now_s, stamp_s)
            self._stats.received[modality] += 1
            self._last_arrival[modality] = now_s
            if modality == self.reference:
                self._check_bag_loop(stamp_s)
            if self._is_late(modality, stamp_s):
                self._stats.late[modality] += 1
            else:
                newest = self._newest[modality]
                if newest is not None and stamp_s > newest:
                    self._intervals[modality].append(stamp_s - newest)
                    self._period[modality] = statistics.median(self._intervals[modality])
                self._newest[modality] = stamp_s if newest is None else max(newest, stamp_s)
                self._insert(modality, _Entry(stamp_s, now_s, item))
            return self._collect(now_s)

    def poll(self, now_s: float) -> list[SyncedSet]:
        """The sets that became ready by ``now_s`` through silence or ``max_wait_s``."""
        with self._lock:
            return self._collect(now_s)

    def clear(self) -> None:
        """Forget everything queued (counted as discarded) and the timeline: the node stopped listening."""
        with self._lock:
            self._reset_queues()
            self._last_arrival = dict.fromkeys(self.modalities)
            self._started = None

    # ------------------------------------------------------------------ arrival
    def _check_bag_loop(self, stamp: float) -> None:
        newest = self._newest[self.reference]
        if newest is not None and stamp < newest - self.reset_backjump_s:
            self._reset_queues()
            self._stats.resets += 1

    def _reset_queues(self) -> None:
        for m, queue in self._queues.items():
            for entry in queue:
                self._count_gone(m, entry, evicted=False)
            queue.clear()
        self._last_final = None
        self._newest = dict.fromkeys(self.modalities)
        self._last_served = dict.fromkeys(self.modalities)
        for intervals in self._intervals.values():
            intervals.clear()
        self._period = dict.fromkeys(self.modalities, 0.0)

    def _is_late(self, modality: str, stamp: float) -> bool:
        """Too old for any set still to come (the reference: not newer than the last final one)."""
        last = self._last_final
        if modality == self.reference:
            duplicate = any(e.stamp == stamp for e in self._queues[modality])
            return duplicate or (last is not None and stamp <= last)
        if last is None:
            return False
        if self._nearest_single_use(modality):
            return stamp <= last  # nearest to the last final reference or an earlier one
        served = self._last_served[modality]
        return stamp < last - self.slop_s or (served is not None and stamp <= served)

    def _nearest_single_use(self, modality: str) -> bool:
        """A single-use modality under ``nearest``: its message goes to the reference nearest to it."""
        return modality in self.single_use and self.policy == "nearest"

    def _insert(self, modality: str, entry: _Entry) -> None:
        queue = self._queues[modality]
        bisect.insort(queue, entry, key=_key)
        if len(queue) <= self.queue_size or modality == self.reference:
            return  # more than queue_size pending references: the oldest goes out (_collect)
        chosen = self._drop_unneeded(modality)
        if len(queue) > self.queue_size:
            victim = next((i for i in range(len(queue)) if i not in chosen), 0)  # spare the waiting sets' choices
            self._count_gone(modality, queue.pop(victim), evicted=True)

    def _drop_unneeded(self, modality: str) -> set[int]:
        """Discard messages no pending or future reference can choose, before evicting a needed one (a fast
        sensor fills its queue while a set waits for a slow one). A pending reference's choice can only be
        replaced by a newer arrival, never by another queued message, so only the choices are kept up to
        the newest pending reference, plus what a future reference may choose."""
        queue, refs = self._queues[modality], self._queues[self.reference]
        stamps = [self._last_final, *(r.stamp for r in refs), None]
        chosen = {self._choice(modality, stamps[i], stamps[i - 1], stamps[i + 1]) for i in range(1, len(stamps) - 1)}
        chosen.discard(None)
        newest_ref = stamps[-2]
        if newest_ref is None:
            return set()
        first_future = bisect.bisect_right(queue, newest_ref, key=_key)
        if not self._nearest_single_use(modality):
            first_future = max(first_future - 1, 0)  # the newest message up to it may suit a future reference too
        keep = chosen | set(range(first_future, len(queue)))
        gone = [i for i in range(len(queue)) if i not in keep]
        for index in reversed(gone):
            self._count_gone(modality, queue.pop(index), evicted=False)
        return {i - sum(g < i for g in gone) for i in chosen}  # indices after the removal

    def _count_gone(self, modality: str, entry: _Entry, evicted: bool) -> None:
        if entry.used:
            self._stats.used[modality] += 1
        elif evicted:
            self._stats.evicted[modality] += 1
        else:
            self._stats.discarded[modality] += 1

    # ------------------------------------------------------------------ decisions
    def _silent(self, modality: str, now: float) -> bool:
        """The topic's next message is ``max_wait_s`` overdue at ``now`` and for the newest reference stamp
        (never heard: ``max_wait_s`` after the first message of any topic)."""
        last, newest = self._last_arrival[modality], self._newest[modality]
        if last is None or newest is None:
            if self._started is None:
                return False
            last, newest = self._started
        period = self._period[modality]
        if now - (last + period) < self.max_wait_s:
            return False
        if modality == self.reference:
            return True
        stream = self._newest[self.reference]
        return stream is not None and stream - (newest + period) >= self.max_wait_s

    def _choice(self, modality: str, ref: float, prev_ref: float | None, next_ref: float | None) -> int | None:
        """Index of the message the oracle gives ``ref`` among those queued, or None."""
        queue = self._queues[modality]
        low = bisect.bisect_left(queue, ref - self.slop_s, key=_key)
        high = bisect.bisect_right(queue, ref + self.slop_s, key=_key)
        best: int | None = None
        single = modality in self.single_use
        for index in range(max(low - 1, 0), min(high + 1, len(queue))):  # +-1: the bounds round, the test below not
            stamp = queue[index].stamp
            if abs(stamp - ref) > self.slop_s:
                continue
            if single and (
                queue[index].used
                or (prev_ref is not None and stamp - prev_ref <= ref - stamp)  # nearer (or tied) to the previous
                or (next_ref is not None and next_ref - stamp < stamp - ref)  # nearer to the next reference
            ):
                continue
            if best is None or abs(stamp - ref) < abs(queue[best].stamp - ref):
                best = index  # ascending stamps: a tie keeps the earlier one
        return best

    def _latest_choice(self, modality: str, ref: float) -> int | None:
        """Index of the newest message within ``slop_s`` of ``ref`` received so far, or None (single-use: None
        when that one is not newer than what the modality already gave)."""
        queue = self._queues[modality]
        low = bisect.bisect_left(queue, ref - self.slop_s, key=_key)
        high = bisect.bisect_right(queue, ref + self.slop_s, key=_key)
        for index in reversed(range(max(low - 1, 0), min(high + 1, len(queue)))):  # +-1: the bounds round
            if abs(queue[index].stamp - ref) <= self.slop_s:
                served = self._last_served[modality]
                if modality in self.single_use and served is not None and queue[index].stamp <= served:
                    return None
                return index
        return None

    def _certain(self, modality: str, ref: float, choice: int | None, next_ref: float | None, now: float) -> bool:
        newest = self._newest[modality]
        if newest is None or newest < ref:
            return self._silent(modality, now)  # a nearer message may still come
        if modality in self.single_use and choice is not None and next_ref is None:
            stamp = self._queues[modality][choice].stamp
            return stamp <= ref or self._silent(self.reference, now)  # else: is it nearer to the next reference?
        return True

    def _collect(self, now: float) -> list[SyncedSet]:
        out: list[SyncedSet] = []
        refs = self._queues[self.reference]
        while refs:
            ref = refs[0]
            next_ref = refs[1].stamp if len(refs) > 1 else None
            forced = self.policy == "latest" or now - ref.arrival >= self.max_wait_s or len(refs) > self.queue_size
            choices: dict[str, int] = {}
            for m in self.others:
                if self.policy == "latest":
                    choice = self._latest_choice(m, ref.stamp)
                else:
                    choice = self._choice(m, ref.stamp, self._last_final, next_ref)
                if not forced and not self._certain(m, ref.stamp, choice, next_ref, now):
                    return out  # newer references are not ready either (see the module doc)
                if choice is not None:
                    choices[m] = choice
            refs.pop(0)
            self._last_final = ref.stamp
            if all(m == self.reference or m in choices for m in self.required):
                out.append(self._emit(ref, choices))
            else:
                self._stats.discarded[self.reference] += 1
                self._stats.dropped_incomplete += 1
            self._prune(ref.stamp)
        return out

    def _emit(self, ref: _Entry, choices: dict[str, int]) -> SyncedSet:
        entries = {self.reference: ref}
        for m, index in choices.items():
            entry = self._queues[m][index]
            entry.used = True
            entries[m] = entry
        for m in self.single_use & choices.keys():
            self._queues[m].remove(entries[m])
            self._stats.used[m] += 1
            if self.policy == "latest":
                self._last_served[m] = entries[m].stamp
        present = [m for m in self.modalities if m in entries]
        for m in present:
            self._stats.served[m] += 1
        self._stats.used[self.reference] += 1
        self._stats.emitted += 1
        return SyncedSet(
            stamp_s=ref.stamp,
            items={m: entries[m].item for m in present},
            stamps={m: entries[m].stamp for m in present},
            missing=tuple(m for m in self.modalities if m not in entries),
        )

    def _prune(self, final: float) -> None:
        """Drop what no reference after ``final`` can use: under ``nearest``, single-use messages stamped up to
        ``final``; otherwise those older than ``final - slop`` or than the newest one stamped up to ``final`` (and,
        single-use under ``latest``, those not newer than the last one it gave)."""
        for m in self.others:
            queue = self._queues[m]
            if self._nearest_single_use(m):
                stale = bisect.bisect_right(queue, final, key=_key)
            else:
                at_or_before = bisect.bisect_right(queue, final, key=_key)
                stale = max(bisect.bisect_left(queue, final - self.slop_s, key=_key), at_or_before - 1, 0)
                stale = min(stale, at_or_before)
                if (served := self._last_served[m]) is not None and m in self.single_use:  # latest: never again
                    stale = max(stale, bisect.bisect_right(queue, served, key=_key))
            for entry in queue[:stale]:
                self._count_gone(m, entry, evicted=False)
            del queue[:stale]
