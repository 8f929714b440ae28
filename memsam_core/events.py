"""Event streams ↔ the event frame the model is trained on.

Training sees events as an HxWx3 uint8 frame (``memsam_core.data.synthetic``): per pixel, red = 64 × the number of
positive (ON) events and blue = 64 × the number of negative (OFF) events in the ``event_dt_s`` before the frame,
clipped at 255. A real event camera publishes a stream of ``(t, x, y, polarity)`` instead; :func:`accumulate`
builds the same frame from the events of the window that ends at the RGB stamp (the trailing window is what the
training frames encode: the change up to that instant). :func:`frame_to_events` goes the other way, to record a
synthetic scene as a stream; accumulating its output over the same window gives the frame back exactly.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

EVENT_UNIT = 64  # frame value per event, as in the synthetic generator


@dataclass
class EventBatch:
    """Decoded events, one entry each: ROS time in nanoseconds, pixel, polarity (True = ON)."""

    t_ns: np.ndarray  # int64
    x: np.ndarray  # int (uint16/int32)
    y: np.ndarray
    polarity: np.ndarray  # bool
    height: int
    width: int

    def __len__(self) -> int:
        return int(self.t_ns.size)

    @property
    def last_ns(self) -> int | None:
        return int(self.t_ns.max()) if len(self) else None

    @classmethod
    def empty(cls, height: int, width: int) -> EventBatch:
        no_pixel = np.zeros(0, np.uint16)
        return cls(np.zeros(0, np.int64), no_pixel, no_pixel.copy(), np.zeros(0, bool), height, width)


@dataclass
class TriggerEvents:
    """External-trigger events of an event camera: time in nanoseconds, edge (0/1) and trigger id."""

    t_ns: np.ndarray  # int64
    edge: np.ndarray  # uint8
    id: np.ndarray  # uint8

    def __len__(self) -> int:
        return int(self.t_ns.size)

    @classmethod
    def empty(cls) -> TriggerEvents:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.uint8))


def accumulate(batch: EventBatch, start_ns: int, end_ns: int) -> np.ndarray:
    """The event frame of the events with ``start_ns < t <= end_ns`` (uint8 ``[height, width, 3]``)."""
    keep = (batch.t_ns > start_ns) & (batch.t_ns <= end_ns)
    x, y = batch.x[keep].astype(np.int64), batch.y[keep].astype(np.int64)
    inside = (x >= 0) & (x < batch.width) & (y >= 0) & (y < batch.height)
    index = (y * batch.width + x)[inside]
    positive = batch.polarity[keep][inside].astype(bool)
    pixels = batch.height * batch.width
    frame = np.zeros((batch.height, batch.width, 3), np.uint8)
    for channel, events in ((0, index[positive]), (2, index[~positive])):
        counts = np.bincount(events, minlength=pixels).reshape(batch.height, batch.width)
        frame[..., channel] = np.minimum(counts * EVENT_UNIT, 255)
    return frame


def frame_to_events(frame: np.ndarray, start_ns: int, end_ns: int, seed: int = 0) -> EventBatch:
    """A stream whose accumulation over ``(start_ns, end_ns]`` is ``frame``: ceil(value / 64) events per pixel and
    channel (red ON, blue OFF), at random times inside the window, sorted by time."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"event frame must be uint8 HxWx3, got {frame.dtype} {frame.shape}")
    height, width = frame.shape[:2]
    parts = []
    for channel, polarity in ((0, True), (2, False)):
        counts = -(-frame[..., channel].astype(np.int64) // EVENT_UNIT)  # ceil: 255 → 4 events → 255 again
        ys, xs = np.nonzero(counts)
        repeats = counts[ys, xs]
        parts.append((np.repeat(xs, repeats), np.repeat(ys, repeats), np.full(int(repeats.sum()), polarity)))
    x = np.concatenate([p[0] for p in parts]).astype(np.uint16)
    y = np.concatenate([p[1] for p in parts]).astype(np.uint16)
    polarity = np.concatenate([p[2] for p in parts])
    t_ns = np.random.default_rng(seed).integers(start_ns + 1, end_ns + 1, size=x.size, dtype=np.int64)
    order = np.argsort(t_ns, kind="stable")
    return EventBatch(t_ns[order], x[order], y[order], polarity[order], height, width)


def concatenate(batches: list[EventBatch]) -> EventBatch:
    """One batch from several of the same sensor size (an empty list is not allowed)."""
    first = batches[0]
    return EventBatch(
        np.concatenate([b.t_ns for b in batches]),
        np.concatenate([b.x for b in batches]),
        np.concatenate([b.y for b in batches]),
        np.concatenate([b.polarity for b in batches]),
        first.height,
        first.width,
    )


class EventWindow:
    """Keeps the recent event packets of one camera and renders the frame for a window ending at a stamp.

    Packets older than ``keep_ns`` behind the newest event are dropped, so memory stays bounded at any rate.
    """

    def __init__(self, window_ns: int, keep_ns: int | None = None) -> None:
        if window_ns <= 0:
            raise ValueError(f"event window must be positive, got {window_ns} ns")
        self.window_ns = window_ns
        self.keep_ns = keep_ns if keep_ns is not None else 4 * window_ns + 1_000_000_000
        self._batches: deque[EventBatch] = deque()

    @property
    def newest_ns(self) -> int | None:
        return max((b.last_ns for b in self._batches if len(b)), default=None)

    def add(self, batch: EventBatch) -> None:
        """Keep ``batch``. One without events is kept only as the first (it gives the sensor size): a still scene
        sends nothing but those, and pruning starts at the oldest batch with events, so they would pile up."""
        if self._batches and (batch.height, batch.width) != (self._batches[0].height, self._batches[0].width):
            self._batches.clear()  # the camera changed resolution: old events no longer fit
        if self._batches and not len(batch):
            return
        self._batches.append(batch)
        newest = self.newest_ns
        while newest is not None and len(self._batches) > 1:
            head = self._batches[0]
            if len(head) and head.last_ns >= newest - self.keep_ns:
                break
            self._batches.popleft()

    def clear(self) -> None:
        """Forget every event (the stream was reset)."""
        self._batches.clear()

    def covers(self, end_ns: int) -> bool:
        """Whether events at or after ``end_ns`` have arrived, i.e. the window ending there is complete."""
        newest = self.newest_ns
        return newest is not None and newest >= end_ns

    def frame(self, end_ns: int) -> np.ndarray | None:
        """The event frame of ``(end_ns - window, end_ns]``; None before the first packet."""
        relevant = [
            b for b in self._batches if len(b) and b.t_ns.min() <= end_ns and b.last_ns > end_ns - self.window_ns
        ]
        if not relevant:
            if not self._batches:
                return None
            first = self._batches[0]
            return np.zeros((first.height, first.width, 3), np.uint8)
        return accumulate(concatenate(relevant), end_ns - self.window_ns, end_ns)
