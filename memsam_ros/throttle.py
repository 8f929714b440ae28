"""Per-key warning throttle: a broken sensor at 30 Hz must not flood the log, but must not go unseen.

The first warning of a key is emitted at once; repeats within ``period_s`` are counted and the next
emitted warning says how many were suppressed. rclpy's ``throttle_duration_sec`` throttles per call
site, not per topic and reason, and cannot report the suppressed count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable


class WarningThrottle:
    """Thread-safe; ``period_s`` may be changed at run time (``ros.warn_throttle_s``)."""

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[Hashable, float] = {}
        self._suppressed: dict[Hashable, int] = {}

    def check(self, key: Hashable) -> tuple[bool, int]:
        """``(emit, suppressed_since_last_emit)`` for one occurrence of ``key``."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False, 0
            self._last[key] = now
            return True, self._suppressed.pop(key, 0)

    def format(self, key: Hashable, message: str) -> str | None:
        """The text to log for this occurrence, or None when throttled."""
        emit, suppressed = self.check(key)
        if not emit:
            return None
        return f"{message} (+{suppressed} similar suppressed)" if suppressed else message
