"""Progress output: a bar on a terminal, plain periodic lines when redirected (tools/progress.py)."""

from __future__ import annotations

import io
import itertools

from memsam_ros.tools.progress import progress, relay


class FakeClock:
    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_redirected_output_is_plain_periodic_lines():
    out = io.StringIO()
    items = list(progress(range(1000), total=1000, desc="evaluating", unit="msg", stream=out, clock=FakeClock(0.1)))
    assert items == list(range(1000))
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 5 <= len(lines) <= 12  # 100 s of fake time at one line per 10 s, plus the final one
    assert lines[-1].startswith("evaluating: 1000/1000 msg (100 %)")
    assert max(len(line) for line in lines) < 80


def test_terminal_gets_a_tqdm_bar():
    out = Terminal()
    assert list(progress(range(50), total=50, desc="playing", stream=out)) == list(range(50))
    assert "\r" in out.getvalue() and "playing" in out.getvalue()


def test_disabled_returns_the_iterable_untouched():
    data = [1, 2, 3]
    out = io.StringIO()
    assert progress(data, stream=out, enabled=False) is data and out.getvalue() == ""


def test_relay_turns_a_childs_bar_into_periodic_lines():
    """What the demo does with training's tqdm bar when its log is a file: no 100 kB line."""
    redraws = "".join(f"\repoch 1/2: {i}/500 loss=0.5" for i in range(500))
    child = io.BytesIO(f"starting\n{redraws}\rdone epoch 1\nbest.pt written\n".encode())
    sink = io.StringIO()
    relay(child, sink, period_s=10.0, clock=FakeClock(0.1))
    lines = sink.getvalue().splitlines()
    assert "\r" not in sink.getvalue()
    assert lines[0] == "starting" and lines[-2:] == ["done epoch 1", "best.pt written"]
    bar_lines = [line for line in lines if line.startswith("epoch 1/2")]
    assert 3 <= len(bar_lines) <= 10 and bar_lines[0] == "epoch 1/2: 0/500 loss=0.5"
    assert max(len(line) for line in lines) < 80


def test_relay_handles_text_split_across_reads():
    class Chunked(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.chunks = iter(data[i : i + 3] for i in range(0, len(data), 3))

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            return next(self.chunks, b"")

    sink = io.StringIO()
    relay(Chunked("line one\nline twö\npartial".encode()), sink, clock=itertools.count().__next__)
    assert sink.getvalue() == "line one\nline twö\npartial\n"
