"""Event-packet topics on the executor thread, taken in batches instead of one callback per packet.

An event camera publishes 250–1,000 packets a second. Dispatched one by one, every packet costs rclpy's executor
≈200 µs of Python (the wait set, taking the message, scheduling the callback) with the GIL held, which the
inference thread then waits for (measured: 1,000 packets a second cut the node's set rate to a quarter). So the
packet subscriptions sit in a callback group the executor never runs (:class:`PolledCallbackGroup`: they are not
in its wait set, a packet wakes nothing), and :meth:`EventInputs.drain` takes every packet waiting in their
history in one go (≈10 µs each): from the input path's poll timer, and before an RGB frame goes to the
synchroniser, whose set may need the events that came with it. Each packet is only read
(:meth:`~memsam_ros.inputs.converter.InputConverter.add_packet`: its fields and time words); the synchroniser hears
a few of the stamps the stream is complete up to per batch (:class:`~memsam_ros.inputs.event_stream.CoverageSampler`:
the newest, and enough others that a set has the stream exactly when offline evaluation, which hears every packet,
has it). The subscription's history must hold the packets
of one poll period and a late poll: :func:`stream_qos` keeps :data:`STREAM_HISTORY`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rclpy.callback_groups import CallbackGroup
from rclpy.exceptions import InvalidHandle
from rclpy.qos import QoSProfile

from memsam_ros.diagnostics import PipelineHealth
from memsam_ros.faults import FaultReporter
from memsam_ros.inputs.cdr import CdrError, read_event_packet
from memsam_ros.inputs.converter import InputConverter
from memsam_ros.inputs.event_stream import CoverageSampler
from memsam_ros.inputs.received import Received
from memsam_ros.inputs.stamps import NS_PER_S
from memsam_ros.qos import input_qos

STREAM_HISTORY = 200  # packets a subscription keeps between two drains: 0.2 s at 1 kHz (the poll period is ≤ 20 ms)
MAX_PER_DRAIN = 4 * STREAM_HISTORY  # a drain never runs unbounded while packets keep coming


class PolledCallbackGroup(CallbackGroup):
    """A callback group the executor never runs: its subscriptions stay out of the executor's wait set and their
    owner takes the messages itself."""

    def can_execute(self, entity: Any) -> bool:
        return False

    def beginning_execution(self, entity: Any) -> bool:
        return False

    def ending_execution(self, entity: Any) -> None:
        pass


def stream_qos(ros: Any) -> QoSProfile:
    """The input profile (``ros.reliability``) with a history deep enough for a drain period of packets."""
    profile = input_qos(ros)
    profile.depth = max(profile.depth, STREAM_HISTORY)
    return profile


class EventInputs:
    """The event-packet subscriptions of one node and the draining of them (executor thread only)."""

    def __init__(
        self,
        converter: InputConverter,
        health: PipelineHealth,
        faults: FaultReporter,
        accept: Callable[[str, Received, float], None],
        slop_s: Callable[[], float],
    ) -> None:
        self.converter, self.health, self.faults = converter, health, faults
        self._slop_s = slop_s  # the synchroniser's (a runtime parameter)
        self.group = PolledCallbackGroup()
        self._accept = accept
        self._subscriptions: dict[str, Any] = {}
        self._samplers: dict[str, CoverageSampler] = {}
        self._unknown_words: dict[str, int] = {}
        self._draining = False  # accept() drains before a reference message: not again from inside a drain
        self.drain_s = 0.0  # executor time spent draining so far (the RGB callback's timing leaves it out)

    def watch(self, modality: str, subscription: Any) -> None:
        """Drain ``subscription`` (created in :attr:`group`, raw) for ``modality`` from now on: a new stream (the
        packets sent while the node was not subscribed are not seen, so the decoder starts afresh)."""
        self.converter.events[modality].reset()
        self._subscriptions[modality] = subscription
        self._samplers[modality] = CoverageSampler()
        self._unknown_words[modality] = self.converter.events[modality].unknown_words

    def clear(self) -> None:
        """Forget the subscriptions (their owner destroys them)."""
        self._subscriptions.clear()

    def drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        try:
            for modality, subscription in list(self._subscriptions.items()):
                self._drain(modality, subscription)
        finally:
            self._draining = False

    def _drain(self, modality: str, subscription: Any) -> None:
        started, now = time.perf_counter(), time.monotonic()
        raws = _take_waiting(subscription, MAX_PER_DRAIN)
        if not raws:
            return
        packets = []
        for raw in raws:
            try:
                packets.append(read_event_packet(raw))
            except CdrError as err:  # a malformed packet is a warning, never a crash
                self._refused(modality, now, f"cannot read the event packet: {err}")
        covered: list[int] = []  # covered stamp and frame_id of each readable packet that has a sensor time
        frame_ids: list[str] = []
        readable = 0
        for packet, arrival in zip(packets, self.converter.add_packets(modality, packets), strict=True):
            if arrival.reset is not None:
                self.faults.warn(modality, "stream", f"event stream reset: {arrival.reset}")
            if arrival.error is not None:
                self._refused(modality, now, f"cannot decode the event packet: {arrival.error}")
                continue
            readable += 1
            if arrival.covered_ns is not None:  # else: before the stream's first sensor time
                covered.append(arrival.covered_ns)
                frame_ids.append(packet.frame_id)
        heard = self._samplers[modality].heard(covered, round(self._slop_s() * NS_PER_S))
        if readable > len(heard):  # the packets the synchroniser hears are counted by accept
            self.health.message(modality, now, packets[-1].frame_id, count=readable - len(heard))
        for index in heard:
            self._accept(modality, self.converter.stream_received(modality, covered[index], frame_ids[index], now), now)
        spent = time.perf_counter() - started
        self.drain_s += spent
        self.health.executor_time(modality, spent / len(raws), len(raws))
        self._report_unknown_words(modality)

    def _refused(self, modality: str, now: float, reason: str) -> None:
        self.health.message(modality, now)
        self.faults.warn(modality, "decode", reason, decode_error=True)

    def _report_unknown_words(self, modality: str) -> None:
        """EVT3 words of unknown codes are skipped when a set decodes them; say so here, on the executor thread."""
        seen = self.converter.events[modality].unknown_words
        if seen > self._unknown_words[modality]:
            self.faults.warn(
                modality, "unknown", f"{seen - self._unknown_words[modality]} evt3 words of unknown codes skipped"
            )
            self._unknown_words[modality] = seen


def _take_waiting(subscription: Any, limit: int) -> list[bytes]:
    """The serialized messages waiting in ``subscription``'s history, oldest first, at most ``limit`` (what rclpy's
    executor takes one per callback; the handle is held once for all of them)."""
    raws: list[bytes] = []
    try:
        with subscription.handle:
            take, msg_type = subscription.handle.take_message, subscription.msg_type
            while len(raws) < limit and (taken := take(msg_type, True)) is not None:
                raws.append(taken[0])
    except InvalidHandle:  # destroyed meanwhile (deactivated)
        pass
    return raws
