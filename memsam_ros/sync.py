"""Approximate-time synchroniser of the modality streams, pivoting on the reference (RGB) stream.

message_filters is not on PyPI, and its Python ApproximateTimeSynchronizer emits nothing while one
input is silent and can emit an older set after a newer one. This one is ROS-free (stamps are float
seconds, the clock is passed in) and:

* matches each reference message with the closest unused message of every other modality within
  ``slop_s`` (greedily, oldest reference first);
* emits a set as soon as every modality is matched, or once ``max_wait_s`` of caller time has passed
  since the reference arrived, listing the unmatched modalities in ``missing``; a set lacking a
  ``required`` modality is dropped instead (``dropped_incomplete``);
* emits in strictly increasing reference stamp order: an older reference waits for (at most
  ``max_wait_s``) or is finalised before a newer one;
* resets all queues when the reference stamp jumps back by more than ``reset_backjump_s`` (bag loop).

Accounting, per modality ``m`` (checked by the property tests)::

    received[m] == used[m] + evicted[m] + late[m] + discarded[m] + queued()[m]

``used``: went into an emitted set; ``evicted``: pushed out of a full queue; ``late``: arrived too
old to be emitted in order; ``discarded``: dropped unused (too old to match any future reference,
cleared by a reset, or the reference of a dropped incomplete set).
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memsam_core.config import MemSamConfig

BACKJUMP_RESET_S = 1.0
"""A reference stamp going back more than this is a bag loop / restarted source: the queues reset."""


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
    emitted: int = 0
    dropped_incomplete: int = 0
    resets: int = 0

    @classmethod
    def empty(cls, modalities: list[str]) -> SyncStats:
        return cls(*(_zeros(modalities) for _ in range(5)))

    def copy(self) -> SyncStats:
        return SyncStats(
            dict(self.received),
            dict(self.used),
            dict(self.evicted),
            dict(self.late),
            dict(self.discarded),
            self.emitted,
            self.dropped_incomplete,
            self.resets,
        )


@dataclass(slots=True)
class _Entry:
    stamp: float
    arrival: float  # caller clock, for max_wait_s
    item: Any


class ModalitySynchronizer:
    """Thread-safe; call :meth:`add` from subscription callbacks and :meth:`poll` from a timer."""

    def __init__(
        self,
        modalities: list[str],
        reference: str = "rgb",
        required: tuple[str, ...] | list[str] = ("rgb",),
        slop_s: float = 0.05,
        queue_size: int = 10,
        max_wait_s: float = 0.2,
        reset_backjump_s: float = BACKJUMP_RESET_S,
    ) -> None:
        if len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities must be unique, got {modalities}")
        if reference not in modalities:
            raise ValueError(f"reference {reference!r} is not one of {modalities}")
        if not set(required) <= set(modalities):
            raise ValueError(f"required {list(required)} must be a subset of {modalities}")
        if slop_s < 0 or max_wait_s < 0 or reset_backjump_s <= 0 or queue_size < 1:
            raise ValueError("need slop_s >= 0, max_wait_s >= 0, reset_backjump_s > 0, queue_size >= 1")
        self.modalities = list(modalities)
        self.reference = reference
        self.required = tuple(required)
        self.slop_s = slop_s
        self.queue_size = queue_size
        self.max_wait_s = max_wait_s
        self.reset_backjump_s = reset_backjump_s
        self._lock = threading.Lock()
        self._queues: dict[str, list[_Entry]] = {m: [] for m in modalities}  # sorted by stamp
        self._stats = SyncStats.empty(self.modalities)
        self._last_final: float | None = None  # stamp of the last emitted or dropped reference
        self._newest_ref: float | None = None

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
        )

    @property
    def stats(self) -> SyncStats:
        with self._lock:
            return self._stats.copy()

    def queued(self) -> dict[str, int]:
        """Messages currently held per modality (pending references included)."""
        with self._lock:
            return {m: len(q) for m, q in self._queues.items()}

    def add(self, modality: str, stamp_s: float, item: Any, now_s: float) -> list[SyncedSet]:
        """Queue one message (``now_s``: arrival time) and return the sets that became ready."""
        if modality not in self._queues:
            raise ValueError(f"unknown modality {modality!r} (expected one of {self.modalities})")
        with self._lock:
            self._stats.received[modality] += 1
            if modality == self.reference:
                self._check_bag_loop(stamp_s)
            if self._is_late(modality, stamp_s):
                self._stats.late[modality] += 1
            else:
                self._insert(modality, _Entry(stamp_s, now_s, item))
            return self._collect(now_s)

    def poll(self, now_s: float) -> list[SyncedSet]:
        """Flush the sets whose ``max_wait_s`` expired by ``now_s``."""
        with self._lock:
            return self._collect(now_s)

    def _check_bag_loop(self, stamp: float) -> None:
        if self._newest_ref is not None and stamp < self._newest_ref - self.reset_backjump_s:
            for m, queue in self._queues.items():
                self._stats.discarded[m] += len(queue)
                queue.clear()
            self._last_final = None
            self._newest_ref = None
            self._stats.resets += 1
        self._newest_ref = stamp if self._newest_ref is None else max(self._newest_ref, stamp)

    def _is_late(self, modality: str, stamp: float) -> bool:
        if modality == self.reference:
            duplicate = any(e.stamp == stamp for e in self._queues[modality])
            return duplicate or (self._last_final is not None and stamp <= self._last_final)
        return self._last_final is not None and stamp < self._last_final - self.slop_s

    def _insert(self, modality: str, entry: _Entry) -> None:
        queue = self._queues[modality]
        bisect.insort(queue, entry, key=lambda e: e.stamp)
        if len(queue) > self.queue_size:
            queue.pop(0)
            self._stats.evicted[modality] += 1

    def _match(self, ref_stamp: float) -> dict[str, int]:
        """Index of the closest message within slop for each non-reference modality that has one."""
        found: dict[str, int] = {}
        for m, queue in self._queues.items():
            if m == self.reference or not queue:
                continue
            best = min(range(len(queue)), key=lambda i: abs(queue[i].stamp - ref_stamp))
            if abs(queue[best].stamp - ref_stamp) <= self.slop_s:
                found[m] = best
        return found

    def _collect(self, now: float) -> list[SyncedSet]:
        out: list[SyncedSet] = []
        refs = self._queues[self.reference]
        while refs:
            ref = refs[0]
            matched = self._match(ref.stamp)
            complete = len(matched) == len(self.modalities) - 1
            if not complete and now - ref.arrival < self.max_wait_s:
                break  # the oldest reference still waits; newer ones wait behind it (ordering)
            refs.pop(0)
            self._last_final = ref.stamp
            if all(m == self.reference or m in matched for m in self.required):
                out.append(self._emit(ref, matched))
            else:
                self._stats.discarded[self.reference] += 1
                self._stats.dropped_incomplete += 1
            self._prune(ref.stamp - self.slop_s)
        return out

    def _emit(self, ref: _Entry, matched: dict[str, int]) -> SyncedSet:
        entries = {self.reference: ref} | {m: self._queues[m].pop(i) for m, i in matched.items()}
        present = [m for m in self.modalities if m in entries]
        for m in present:
            self._stats.used[m] += 1
        self._stats.emitted += 1
        return SyncedSet(
            stamp_s=ref.stamp,
            items={m: entries[m].item for m in present},
            stamps={m: entries[m].stamp for m in present},
            missing=tuple(m for m in self.modalities if m not in entries),
        )

    def _prune(self, horizon: float) -> None:
        """Drop non-reference messages older than ``horizon``: no future (newer) reference can match them."""
        for m, queue in self._queues.items():
            if m == self.reference:
                continue
            stale = bisect.bisect_left(queue, horizon, key=lambda e: e.stamp)
            if stale:
                del queue[:stale]
                self._stats.discarded[m] += stale
