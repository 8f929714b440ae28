"""The memory of past instants at inference: what the engine keeps between sets and when it forgets it.

With ``model.temporal_memory: K ≥ 1`` each segmented set leaves one :class:`~memsam_core.model.memorysam.InstantMemory`
(its last frame's memory and object pointer) and the next set attends to the last K of them. The bank belongs to
the stream of sets one caller segments in order (the node's inference thread, a bag replay, an evaluation clip), so
the rules that end a stream live here, where the node and the replay both use them and therefore agree:

* ``sync_reset``: the caller's synchroniser reset (a bag loop), seen as a new ``epoch`` number with the set;
* ``stamp_back``: the set is not later than the last one segmented (past and future are never mixed);
* ``gap``: the set is more than ``max_gap_s`` after the last one segmented (sensors stopped, sets were dropped);
* ``deactivate``: the caller stopped listening (lifecycle deactivate, ``~/enable`` false) and says so;
* ``new_stream``: the caller starts an unrelated stream (the next clip of an evaluation).

A set the caller never segments (the node's keep-newest worker dropped it) never enters the memory; the next one
segmented sees the last one that was, at temporal distance 1 (the gap rule bounds how old that may be).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from memsam_core.model.memorysam import InstantMemory

RESET_REASONS: tuple[str, ...] = ("sync_reset", "stamp_back", "gap", "deactivate", "new_stream")


@dataclass
class TemporalMemory:
    """The last ``instants`` instants' memories (newest first) and the reset rules of one stream of sets."""

    instants: int
    max_gap_s: float
    _bank: deque[InstantMemory] = field(init=False, repr=False)
    _last_stamp_s: float | None = field(default=None, init=False)
    _epoch: int | None = field(default=None, init=False)
    resets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESET_REASONS, 0), init=False)

    def __post_init__(self) -> None:
        if self.instants < 1:
            raise ValueError(f"a temporal memory keeps at least one instant, got {self.instants}")
        self._bank = deque(maxlen=self.instants)

    @property
    def total_resets(self) -> int:
        return sum(self.resets.values())

    def past(self) -> list[InstantMemory]:
        """The memories the next set attends to, newest first (SAM 2's temporal distance d = 1, 2, ...)."""
        return list(self._bank)

    def admit(self, stamp_s: float | None, epoch: int = 0) -> str | None:
        """Before segmenting the set stamped ``stamp_s`` (``None``: unstamped, no stamp rule) of the caller's
        synchroniser ``epoch``: apply the stream rules; returns the reset reason, or None if the memory is kept."""
        reason = self._break(stamp_s, epoch)
        if reason is not None:
            self.reset(reason)
        self._epoch = epoch
        if stamp_s is not None:
            self._last_stamp_s = stamp_s
        return reason

    def _break(self, stamp_s: float | None, epoch: int) -> str | None:
        if self._epoch is not None and epoch != self._epoch:
            return "sync_reset"
        if stamp_s is None or self._last_stamp_s is None:
            return None
        if stamp_s <= self._last_stamp_s:
            return "stamp_back"
        if stamp_s - self._last_stamp_s > self.max_gap_s:
            return "gap"
        return None

    def push(self, memory: InstantMemory) -> None:
        """The memory the set just segmented leaves (detached: inference keeps no graph)."""
        self._bank.appendleft(memory.detached())

    def reset(self, reason: str) -> None:
        """Forget every past instant; counted under ``reason`` only when there was something to forget or a stream
        to end (an empty, fresh memory is not reset again)."""
        if reason not in self.resets:
            raise ValueError(f"unknown reset reason {reason!r}; known: {RESET_REASONS}")
        if self._bank or self._last_stamp_s is not None or self._epoch is not None:
            self.resets[reason] += 1
        self._bank.clear()
        self._last_stamp_s = None
        self._epoch = None
