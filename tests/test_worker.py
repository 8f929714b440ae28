"""LatestWorker: keep-newest hand-off, error isolation, counters, start/stop."""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from memsam_ros.worker import LatestWorker

TIMEOUT = 5.0


def invariant(w: LatestWorker) -> bool:
    return w.submitted == w.processed + w.dropped + w.failed + w.pending


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Blocks process() until set; set on teardown so no thread is left hanging."""
    event = threading.Event()
    yield event
    event.set()


def test_processes_items_in_order_when_idle() -> None:
    seen: list[int] = []
    worker = LatestWorker(seen.append)
    worker.start()
    for i in range(5):
        assert worker.submit(i) is False
        assert worker.wait_idle(TIMEOUT)
    assert seen == list(range(5))
    assert (worker.submitted, worker.processed, worker.dropped, worker.failed, worker.pending) == (5, 5, 0, 0, 0)
    assert worker.stop(TIMEOUT)


def test_keeps_only_the_newest_while_busy(gate: threading.Event) -> None:
    seen: list[int] = []
    started = threading.Event()

    def process(item: int) -> None:
        started.set()
        gate.wait(TIMEOUT)
        seen.append(item)

    worker = LatestWorker(process)
    worker.start()
    worker.submit(0)
    assert started.wait(TIMEOUT)
    t0 = time.monotonic()
    replaced = [worker.submit(i) for i in range(1, 6)]
    assert time.monotonic() - t0 < 0.5, "submit must not block while process() runs"
    assert replaced == [False, True, True, True, True]
    assert worker.pending == 2 and invariant(worker)
    gate.set()
    assert worker.wait_idle(TIMEOUT)
    assert seen == [0, 5]
    assert (worker.submitted, worker.processed, worker.dropped) == (6, 2, 4) and invariant(worker)
    assert worker.stop(TIMEOUT)


def test_exceptions_are_counted_reported_and_survived() -> None:
    errors: list[Exception] = []
    seen: list[int] = []

    def process(item: int) -> None:
        if item % 2:
            raise RuntimeError(f"bad frame {item}")
        seen.append(item)

    worker = LatestWorker(process, on_error=errors.append)
    worker.start()
    for i in range(6):
        worker.submit(i)
        assert worker.wait_idle(TIMEOUT)
    assert seen == [0, 2, 4]
    assert [str(e) for e in errors] == ["bad frame 1", "bad frame 3", "bad frame 5"]
    assert (worker.processed, worker.failed) == (3, 3) and invariant(worker)
    assert worker.stop(TIMEOUT)


def test_failing_on_error_or_none_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def boom(_: object) -> None:
        raise ValueError("in process")

    def bad_handler(_: Exception) -> None:
        raise KeyError("in on_error")

    with caplog.at_level(logging.ERROR, logger="memsam_ros.worker"):
        for on_error in (None, bad_handler):
            worker = LatestWorker(boom, name="w", on_error=on_error)
            worker.start()
            for item in (1, 2):
                worker.submit(item)
                assert worker.wait_idle(TIMEOUT)
            assert worker.failed == 2
            assert worker.stop(TIMEOUT)
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("w: processing failed") == 2 and messages.count("w: on_error failed") == 2


def test_counters_add_up_under_concurrent_submitters() -> None:
    rng = random.Random(0)

    def process(item: int) -> None:
        time.sleep(rng.random() * 0.002)
        if item % 7 == 0:
            raise RuntimeError("unlucky")

    worker = LatestWorker(process, on_error=lambda _: None)
    worker.start()

    def submitter(offset: int) -> None:
        for i in range(200):
            worker.submit(offset + i)
            time.sleep(0.0002)

    snapshots = []

    def reader() -> None:  # as the node's diagnostics timer does, while items are in flight
        while any(t.is_alive() for t in threads):
            snapshots.append(worker.counts())

    threads = [threading.Thread(target=submitter, args=(k * 1000,)) for k in range(3)]
    for t in threads:
        t.start()
    reading = threading.Thread(target=reader)
    reading.start()
    for t in threads:
        t.join()
    reading.join()
    assert snapshots and all(snapshot.balanced for snapshot in snapshots)
    assert worker.wait_idle(TIMEOUT)
    assert worker.submitted == 600 and worker.pending == 0
    assert worker.counts().balanced and worker.counts().received == 600
    assert worker.processed > 0 and worker.dropped > 0 and invariant(worker)
    assert worker.stop(TIMEOUT)


def test_stop_leaves_waiting_item_and_start_twice_fails(gate: threading.Event) -> None:
    started = threading.Event()

    def process(_: int) -> None:
        started.set()
        gate.wait(TIMEOUT)

    worker = LatestWorker(process)
    assert worker.stop(0.1), "stop before start is a no-op"
    worker.start()
    with pytest.raises(RuntimeError, match="already started"):
        worker.start()
    worker.submit(1)
    assert started.wait(TIMEOUT)
    worker.submit(2)
    assert worker.stop(0.05) is False  # process() still blocked
    gate.set()
    assert worker.stop(TIMEOUT)
    assert (worker.processed, worker.pending) == (1, 1) and invariant(worker)
    worker.start()  # restartable: picks up the waiting item
    assert worker.wait_idle(TIMEOUT) and worker.processed == 2
    assert worker.stop(TIMEOUT)


def test_handoff_an_idle_worker_takes_the_item_before_submit_returns(gate: threading.Event) -> None:
    """Without the hand-off wait, the woken worker needs the GIL, which this thread keeps for a switch interval."""
    worker = LatestWorker(lambda item: gate.wait(TIMEOUT))
    worker.start()
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1.0)  # no forced GIL switch during the assertions below
    try:
        worker.submit(0, handoff_timeout_s=TIMEOUT)
        taken = not worker.waiting
        t0 = time.monotonic()
        worker.submit(1, handoff_timeout_s=TIMEOUT)  # busy worker: never waited for
        elapsed = time.monotonic() - t0
        still_waiting = worker.waiting
    finally:
        sys.setswitchinterval(previous)
    assert taken, "submit returned before the idle worker took the item"
    assert elapsed < 0.5 and still_waiting, "submit waited for a busy worker"
    gate.set()
    assert worker.wait_idle(TIMEOUT) and worker.processed == 2 and invariant(worker)
    assert worker.stop(TIMEOUT)


def test_without_handoff_the_item_waits_for_the_gil() -> None:
    """The control for the test above: the same sequence with no hand-off leaves the item untaken."""
    worker = LatestWorker(lambda item: None)
    worker.start()
    time.sleep(0.05)  # the worker thread is waiting for an item
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    try:
        worker.submit(0)
        waiting = worker.waiting
    finally:
        sys.setswitchinterval(previous)
    assert waiting
    assert worker.wait_idle(TIMEOUT) and worker.stop(TIMEOUT)
