"""Keep-newest hand-off from ROS callbacks to one processing thread.

Inference is slower than the sensors, so a FIFO would only add latency: like image_pipeline's
camera_calibration ``BufferQueue(maxsize=1)``, a new item replaces the one not yet started (counted
as dropped) and the callback never waits for processing. It may wait for the *hand-off*: an idle worker
thread woken by a condition still needs the GIL, which the submitting (executor) thread holds until it blocks
again or the interpreter's switch interval (0.5-5 ms) forces a switch; ``submit(..., handoff_timeout_s=...)``
waits, GIL released, until the worker has taken the item (measured 0.8 -> 0.3 ms from RGB callback to
inference start in the node). At any moment::

    submitted == processed + dropped + failed + pending     (pending: 0 or 1 waiting, plus 0 or 1 running)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SetCounts:
    """One consistent snapshot of the worker's accounting: received = processed + dropped + failed + pending."""

    received: int
    processed: int
    dropped: int
    failed: int
    pending: int

    @property
    def balanced(self) -> bool:
        return self.received == self.processed + self.dropped + self.failed + self.pending


class LatestWorker(Generic[T]):
    """Runs ``process`` on the newest submitted item in a daemon thread; exceptions go to ``on_error``."""

    def __init__(
        self,
        process: Callable[[T], None],
        name: str = "memsam-worker",
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self._process = process
        self._on_error = on_error
        self._name = name
        self._cond = threading.Condition()
        self._item: T | None = None
        self._has_item = False
        self._running = False  # process() is executing an item
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.submitted = 0
        self.processed = 0
        self.dropped = 0
        self.failed = 0

    @property
    def pending(self) -> int:
        """Items accepted but not yet finished (waiting plus running)."""
        with self._cond:
            return int(self._has_item) + int(self._running)

    @property
    def waiting(self) -> bool:
        """An item is submitted and not yet taken by the worker thread."""
        with self._cond:
            return self._has_item

    def counts(self) -> SetCounts:
        """All counters read under the lock, so the identity holds even while items are in flight."""
        with self._cond:
            pending = int(self._has_item) + int(self._running)
            return SetCounts(self.submitted, self.processed, self.dropped, self.failed, pending)

    def submit(self, item: T, handoff_timeout_s: float = 0.0) -> bool:
        """Hand over ``item``; True if it replaced an unprocessed one (which is counted as dropped).

        ``handoff_timeout_s`` > 0: if the worker is idle, wait (at most that long) until it has taken the item,
        so processing starts now rather than when the caller next releases the GIL. A busy worker is never
        waited for."""
        with self._cond:
            self.submitted += 1
            replaced = self._has_item
            if replaced:
                self.dropped += 1
            self._item, self._has_item = item, True
            self._cond.notify_all()  # the worker and wait_idle() share the condition
            idle = not self._running and self._thread is not None and not self._stopping
            if handoff_timeout_s > 0 and idle:
                self._cond.wait_for(lambda: not self._has_item or self._stopping, handoff_timeout_s)
            return replaced

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                raise RuntimeError(f"{self._name} already started")
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Finish the running item, leave a waiting one unprocessed; True if the thread ended in time."""
        with self._cond:
            thread, self._stopping = self._thread, True
            self._cond.notify_all()
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            return False
        with self._cond:
            self._thread = None
        return True

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is waiting or running (for tests and orderly shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._has_item or self._running), timeout)

    def _report(self, exc: Exception) -> None:
        if self._on_error is None:
            _log.error("%s: processing failed", self._name, exc_info=exc)
            return
        try:
            self._on_error(exc)
        except Exception:
            _log.exception("%s: on_error failed", self._name)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._has_item or self._stopping)
                if self._stopping:
                    return
                item, self._item, self._has_item = self._item, None, False
                self._running = True
                self._cond.notify_all()  # a submit() waiting for the hand-off
            try:
                self._process(item)  # type: ignore[arg-type]
                ok = True
            except Exception as exc:  # a bad frame must not kill the node's only worker
                ok = False
                self._report(exc)
            with self._cond:
                self._running = False
                if ok:
                    self.processed += 1
                else:
                    self.failed += 1
                self._cond.notify_all()
