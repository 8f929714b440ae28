"""Progress that suits where it goes: a tqdm bar on a terminal, plain periodic lines anywhere else.

A bar redraws itself with carriage returns; redirected to a file that becomes one line of many
kilobytes. When the stream is not a terminal, :func:`progress` prints ``desc: n/total unit (p %)``
every ``period_s`` and once at the end, and :func:`relay` turns a child process's bar (e.g. training
run by the demo) into the same kind of lines.
"""

from __future__ import annotations

import codecs
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TypeVar

T = TypeVar("T")
DEFAULT_PERIOD_S = 10.0
_SPLIT = re.compile(r"[\r\n]")


def is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed stream
        return False


def progress(
    iterable: Iterable[T],
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    stream: IO[str] | None = None,
    period_s: float = DEFAULT_PERIOD_S,
    clock: Callable[[], float] = time.monotonic,
) -> Iterable[T]:
    """``iterable`` with progress on ``stream`` (default stderr): a bar on a terminal, else periodic lines."""
    if not enabled:
        return iterable
    stream = sys.stderr if stream is None else stream
    if is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, file=stream)
    return _lines(iterable, total, desc, unit, stream, period_s, clock)


def _lines(
    iterable: Iterable[T],
    total: int | None,
    desc: str,
    unit: str,
    stream: IO[str],
    period_s: float,
    clock: Callable[[], float],
) -> Iterator[T]:
    start = clock()
    last = start
    count = 0

    def line() -> str:
        of = f"/{total}" if total else ""
        share = f" ({100.0 * count / total:.0f} %)" if total else ""
        return f"{desc + ': ' if desc else ''}{count}{of} {unit}{share}, {clock() - start:.0f} s\n"

    for item in iterable:
        yield item
        count += 1
        now = clock()
        if now - last >= period_s:
            stream.write(line())
            stream.flush()
            last = now
    stream.write(line())
    stream.flush()


def relay(
    source: IO[bytes],
    sink: IO[str],
    period_s: float = DEFAULT_PERIOD_S,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Copy a child's output to ``sink`` as lines: complete lines at once, ``\\r`` redraws every ``period_s``.

    ``source`` is a binary pipe (e.g. ``Popen(..., stdout=PIPE).stdout``), read until EOF as data comes. A
    bar writes ``\\r state`` again and again and ends with ``\\n``.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    read = getattr(source, "read1", source.read)
    last_shown = -float("inf")
    buffer = ""
    while chunk := read(65536):
        buffer += decoder.decode(chunk)
        start = 0
        for match in _SPLIT.finditer(buffer):
            text = buffer[start : match.start()].strip()
            start = match.end()
            if not text:
                continue
            if match.group() == "\n":
                sink.write(text + "\n")
            elif clock() - last_shown >= period_s:  # a redraw: shown now and then
                sink.write(text + "\n")
                last_shown = clock()
        buffer = buffer[start:]
        sink.flush()
    if buffer.strip():
        sink.write(buffer.strip() + "\n")
    sink.flush()


def run_relayed(command: list[str], sink: IO[str] | None = None, period_s: float = DEFAULT_PERIOD_S) -> int:
    """Run ``command``; on a terminal its output goes straight through, otherwise via :func:`relay`."""
    sink = sys.stdout if sink is None else sink
    if is_terminal(sink):
        return subprocess.run(command, check=False).returncode
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as child:
        assert child.stdout is not None
        relay(child.stdout, sink, period_s)
        return child.wait()
