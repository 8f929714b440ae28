"""How the node reports what goes wrong: one error line at start-up, throttled warnings while running.

Every run-time fault names the topic and the reason, is throttled per (topic, kind of reason) with a count of
suppressed repeats (:class:`~memsam_ros.throttle.WarningThrottle`), and is recorded in the node's health for
``/diagnostics``; warnings that describe a setting rather than a message are logged once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from memsam_ros.diagnostics import PipelineHealth
from memsam_ros.throttle import WarningThrottle

_DIGITS = re.compile(r"\d+(\.\d+)?")


class StartupError(RuntimeError):
    """The node cannot start; the message is one line naming the file and/or field."""


class FaultReporter:
    """Thread-safe (the throttle and health are); the input, inference and diagnostics threads share one."""

    def __init__(
        self,
        logger: Any,
        health: PipelineHealth,
        topics: Mapping[str, str],
        throttle: WarningThrottle,
        sink: Callable[[str], None] | None = None,
    ) -> None:
        self.logger, self.health, self.topics, self.throttle = logger, health, topics, throttle
        self._sink = sink
        self._once: set[Hashable] = set()

    def warn(self, modality: str, kind: str, reason: str, *, decode_error: bool = False) -> None:
        """Record a fault on ``modality``'s topic and log it, throttled per (topic, kind)."""
        self.health.fault(modality, reason, time.monotonic(), decode_error)
        topic = self.topics.get(modality, modality)
        # numbers are masked so that "step 100 < ..." and "step 104 < ..." count as one kind of reason
        key = (modality, kind, _DIGITS.sub("#", reason))
        self.throttled(key, f"{topic} [{modality}]: {reason}")

    def throttled(self, key: Hashable, text: str) -> None:
        """Log ``text`` unless ``key`` was logged within the throttle period."""
        if (formatted := self.throttle.format(key, text)) is not None:
            self.emit(formatted)

    def once(self, key: Hashable, text: str) -> None:
        """Log ``text`` the first time ``key`` is seen (a setting that does not change per message)."""
        if key not in self._once:
            self._once.add(key)
            self.emit(text)

    def emit(self, text: str) -> None:
        self.logger.warning(text)
        if self._sink is not None:
            self._sink(text)
