"""Node health bookkeeping and its ``/diagnostics`` form (diagnostic_updater is not on PyPI).

:class:`PipelineHealth` is fed by the node (message arrivals, faults, outputs) from several threads
and turned into ``diagnostic_msgs/DiagnosticStatus`` entries: one for the pipeline (rate, latency,
set accounting, sync resets) and one per input topic (rate, decode errors with the last reason,
silence). Levels: ERROR when the reference topic is silent or inference keeps failing, WARN for a
silent optional topic or a fault within the last ``recent_s``. Rates come from per-bucket counts
(:class:`RateMeter`), so they are right at any frequency with bounded memory. ``hardware_id`` names the
inference device for the pipeline and the sensor (the messages' ``frame_id``) for each topic.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from memsam_ros.worker import SetCounts

OK, WARN, ERROR = 0, 1, 2  # DiagnosticStatus.OK/WARN/ERROR as ints (the message field is a byte)
RATE_WINDOW_S = 10.0
RATE_BUCKETS = 50  # per window: the rate is exact to one bucket (0.2 s) at any message frequency
OUTPUT_SAMPLES = 512  # recent outputs kept for the latency statistics
EXECUTOR_SAMPLES = 2048  # recent per-message executor times kept per topic


class RateMeter:
    """Events per second over a sliding window, from counts per time bucket (not thread-safe)."""

    def __init__(self, window_s: float = RATE_WINDOW_S, buckets: int = RATE_BUCKETS) -> None:
        self.buckets = buckets
        self.width_s = window_s / buckets
        self._counts: deque[list[int]] = deque()  # [bucket index, count], oldest first

    def add(self, now: float, count: int = 1) -> None:
        index = math.floor(now / self.width_s)
        if self._counts and self._counts[-1][0] == index:
            self._counts[-1][1] += count
        else:
            self._counts.append([index, count])
        self._trim(index)

    def rate(self, now: float, since: float | None = None) -> float:
        """Events per second over the kept buckets (the last ``buckets - 1`` whole ones and the current
        part), or since ``since`` (when counting started) if that is later."""
        index = math.floor(now / self.width_s)
        self._trim(index)
        start = (index - self.buckets + 1) * self.width_s
        if since is not None:
            start = max(start, since)
        return sum(c for _, c in self._counts) / max(now - start, 1e-3)

    def _trim(self, index: int) -> None:
        while self._counts and self._counts[0][0] <= index - self.buckets:
            self._counts.popleft()

    def clear(self) -> None:
        self._counts.clear()


@dataclass
class TopicHealth:
    """Counters of one input topic."""

    modality: str
    topic: str
    received: int = 0
    decoded: int = 0
    decode_errors: int = 0
    faults: int = 0  # decodable but suspicious (stamps, all-invalid depth, resolution ...)
    last_reason: str = ""
    last_fault_at: float | None = None
    last_arrival: float | None = None
    silent_reported: bool = False
    frame_id: str = ""  # of the last message: names the sensor (hardware_id)
    arrivals: RateMeter = field(default_factory=RateMeter)
    executor_us: deque[float] = field(default_factory=lambda: deque(maxlen=EXECUTOR_SAMPLES))


class PipelineHealth:
    """Thread-safe health record; the node publishes :meth:`statuses` from a timer."""

    def __init__(
        self, topics: Mapping[str, str], reference: str, silent_after_s: float, started_at: float, recent_s: float = 5.0
    ) -> None:
        self.topics = {m: TopicHealth(m, t) for m, t in topics.items()}
        self.reference = reference
        self.silent_after_s = silent_after_s
        self.recent_s = recent_s
        self.started_at = started_at
        self.hardware_id = ""
        self._lock = threading.Lock()
        self._outputs: deque[tuple[float, float, float]] = deque(maxlen=OUTPUT_SAMPLES)  # time, latency, inference
        self._output_rate = RateMeter()
        self.last_failure: str = ""
        self.last_failure_at: float | None = None
        self.last_reset_at: float | None = None
        self.memory_resets: dict[str, int] = {}  # memory of past instants (model.temporal_memory), per reason

    # ------------------------------------------------------------------ recording
    def restart(self, now: float) -> None:
        """Start counting silence and rates afresh (the node was activated or enabled again)."""
        with self._lock:
            self.started_at = now
            for topic in self.topics.values():
                topic.last_arrival = None
                topic.silent_reported = False
                topic.arrivals.clear()
            self._outputs.clear()
            self._output_rate.clear()

    def message(self, modality: str, now: float, frame_id: str = "", count: int = 1) -> None:
        with self._lock:
            topic = self.topics[modality]
            topic.received += count
            topic.last_arrival = now
            topic.arrivals.add(now, count)
            if frame_id:
                topic.frame_id = frame_id

    def executor_time(self, modality: str, seconds_per_message: float, messages: int = 1) -> None:
        """Executor-thread time spent on each of ``messages`` messages of a topic (its callback, or its share of
        a batch): ``executor_us_p50``/``_p99`` in the topic's status."""
        with self._lock:
            self.topics[modality].executor_us.extend([seconds_per_message * 1e6] * min(messages, EXECUTOR_SAMPLES))

    def decoded(self, modality: str) -> None:
        with self._lock:
            self.topics[modality].decoded += 1

    def fault(self, modality: str, reason: str, now: float, decode_error: bool) -> None:
        with self._lock:
            topic = self.topics[modality]
            if decode_error:
                topic.decode_errors += 1
            else:
                topic.faults += 1
            topic.last_reason = reason
            topic.last_fault_at = now

    def output(self, now: float, latency_ms: float, inference_ms: float) -> None:
        with self._lock:
            self._outputs.append((now, latency_ms, inference_ms))
            self._output_rate.add(now)

    def failure(self, reason: str, now: float) -> None:
        with self._lock:
            self.last_failure, self.last_failure_at = reason, now

    def sync_reset(self, now: float) -> None:
        with self._lock:
            self.last_reset_at = now

    def set_memory_resets(self, resets: Mapping[str, int]) -> None:
        """Resets of the memory of past instants so far, per reason (``memsam_core.temporal.RESET_REASONS``)."""
        with self._lock:
            self.memory_resets = {reason: count for reason, count in resets.items() if count}

    # ------------------------------------------------------------------ queries
    def silence(self, now: float) -> dict[str, float]:
        """Seconds since the last message (or since start) for every topic silent longer than silent_after_s."""
        with self._lock:
            out = {}
            for m, topic in self.topics.items():
                since = now - (topic.last_arrival if topic.last_arrival is not None else self.started_at)
                if since > self.silent_after_s:
                    out[m] = since
            return out

    def mark_silent(self, modality: str, silent: bool) -> bool:
        """Record the silent flag; True if it changed (to log going silent / coming back once)."""
        with self._lock:
            topic = self.topics[modality]
            changed = topic.silent_reported != silent
            topic.silent_reported = silent
            return changed

    def _recent(self, at: float | None, now: float) -> bool:
        return at is not None and now - at <= self.recent_s

    def statuses(self, now: float, counts: SetCounts, sync_stats: Any, node_name: str) -> list[DiagnosticStatus]:
        """One pipeline status plus one per topic."""
        silent = self.silence(now)
        with self._lock:
            window = min(RATE_WINDOW_S, max(now - self.started_at, 1e-3))
            recent = [o for o in self._outputs if now - o[0] <= window]
            rate = self._output_rate.rate(now, self.started_at)
            statuses = [self._pipeline_status(now, counts, sync_stats, silent, recent, rate, node_name)]
            for m, topic in self.topics.items():
                statuses.append(self._topic_status(now, topic, silent.get(m), node_name))
        return statuses

    def idle_status(self, node_name: str, state: str) -> DiagnosticStatus:
        """The pipeline while the node is not segmenting (lifecycle state or disabled): nothing to check."""
        with self._lock:
            return _status(OK, f"{node_name}: pipeline", state, self.hardware_id, {"state": state})

    def _pipeline_status(self, now, counts, sync_stats, silent, recent, rate, node_name):
        latencies = [o[1] for o in recent]
        inference = [o[2] for o in recent]
        problems: list[tuple[int, str]] = []
        if len(silent) == len(self.topics):
            problems.append((ERROR, "no input on any topic"))
        elif self.reference in silent:
            problems.append((ERROR, f"reference topic {self.topics[self.reference].topic} silent"))
        elif silent:
            problems.append((WARN, "missing sensors: " + ", ".join(sorted(silent))))
        if self._recent(self.last_failure_at, now):
            problems.append((ERROR if not recent else WARN, f"inference failing: {self.last_failure}"))
        faulty = [m for m, t in self.topics.items() if self._recent(t.last_fault_at, now)]
        if faulty:
            problems.append((WARN, "bad input on " + ", ".join(faulty)))
        if self._recent(self.last_reset_at, now):
            problems.append((WARN, "synchroniser reset (stamps jumped back)"))
        level = max((p[0] for p in problems), default=OK)
        message = "; ".join(p[1] for p in problems) or f"OK, {rate:.2f} Hz"
        values = {
            "processing_rate_hz": f"{rate:.3f}",
            "latency_ms_mean": f"{sum(latencies) / len(latencies):.1f}" if latencies else "nan",
            "latency_ms_max": f"{max(latencies):.1f}" if latencies else "nan",
            "inference_ms_mean": f"{sum(inference) / len(inference):.1f}" if inference else "nan",
            "sets_received": str(counts.received),
            "sets_processed": str(counts.processed),
            "sets_dropped": str(counts.dropped),
            "sets_failed": str(counts.failed),
            "sets_pending": str(counts.pending),
            "sets_incomplete": str(sync_stats.dropped_incomplete),
            "sync_resets": str(sync_stats.resets),
            "sync_late": str(sum(sync_stats.late.values())),
            "memory_resets": str(sum(self.memory_resets.values())),
            "memory_resets_by_reason": ",".join(f"{r}:{n}" for r, n in sorted(self.memory_resets.items())),
            "missing_sensors": ",".join(sorted(silent)),
            "last_failure": self.last_failure,
        }
        return _status(level, f"{node_name}: pipeline", message, self.hardware_id, values)

    def _topic_status(self, now, topic: TopicHealth, silent_for, node_name):
        rate = topic.arrivals.rate(now, self.started_at)
        level, message = OK, f"OK, {rate:.2f} Hz"
        if self._recent(topic.last_fault_at, now):
            level, message = WARN, topic.last_reason
        if silent_for is not None:
            level = ERROR if topic.modality == self.reference else max(level, WARN)
            what = "no message yet" if topic.last_arrival is None else "silent"
            message = f"{what} for {silent_for:.1f} s"
        values = {
            "topic": topic.topic,
            "rate_hz": f"{rate:.3f}",
            "received": str(topic.received),
            "decode_errors": str(topic.decode_errors),
            "faults": str(topic.faults),
            "last_reason": topic.last_reason,
            "silent_s": f"{silent_for:.1f}" if silent_for is not None else "0",
            "frame_id": topic.frame_id,
            "executor_us_p50": _percentile(topic.executor_us, 0.5),
            "executor_us_p99": _percentile(topic.executor_us, 0.99),
        }
        return _status(level, f"{node_name}: input {topic.modality}", message, topic.frame_id or topic.topic, values)


def _percentile(samples: deque[float], q: float) -> str:
    if not samples:
        return "nan"
    ordered = sorted(samples)
    return f"{ordered[min(int(q * len(ordered)), len(ordered) - 1)]:.1f}"


def _status(level: int, name: str, message: str, hardware_id: str, values: Mapping[str, str]) -> DiagnosticStatus:
    return DiagnosticStatus(
        level=bytes([level]),
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=v) for k, v in values.items()],
    )


def diagnostic_array(statuses: list[DiagnosticStatus], stamp: Any) -> DiagnosticArray:
    from std_msgs.msg import Header

    return DiagnosticArray(header=Header(stamp=stamp), status=statuses)
