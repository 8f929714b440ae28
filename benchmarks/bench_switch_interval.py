"""Why ``ros.gil_switch_interval_ms`` is 0.5 ms with CPU inference and Python's 5 ms on CUDA (auto = 0).

Two threads as in the node: the executor thread runs the node's real input callback work (read the header
of a serialized 1024x1024 Image, check its layout, ``ModalitySynchronizer.add``) for a 4-topic, 30 Hz
stream, and the inference thread runs one of two stand-ins for ``Segmenter``:

* ``cpu``: a hiera-tiny-sized stack of small torch ops (1,200 ops per set, each releasing and re-taking the
  GIL), what CPU inference looks like to the interpreter;
* ``cuda-like``: 2 ms of Python (preparing the input, launching one CUDA graph, copying results) and 25 ms
  waiting with the GIL released (``cudaStreamSynchronize``), what the engine with CUDA graphs looks like.

Printed per switch interval: inference sets/s, and the executor thread's callback latency p50/p99 (from
when a message is due to when its callback finished).

    python benchmarks/bench_switch_interval.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_description

from memsam_ros.inputs.codec import array_to_cdr, check_modality
from memsam_ros.inputs.received import received_from_cdr
from memsam_ros.sync import ModalitySynchronizer

INTERVALS_S = (0.0005, 0.005)
MODALITIES = ("rgb", "depth", "lidar", "event")


def cpu_inference(stop: threading.Event, done: list[float]) -> None:
    x = torch.randn(64, 96)
    w = torch.randn(96, 96)
    while not stop.is_set():
        for _ in range(400):  # 1,200 small ops per set
            x = torch.tanh(x @ w) * 0.5 + x
        done.append(time.monotonic())


def cuda_like_inference(stop: threading.Event, done: list[float]) -> None:
    while not stop.is_set():
        end = time.perf_counter() + 0.002
        while time.perf_counter() < end:  # Python holding the GIL: input, graph launch, result copy
            pass
        time.sleep(0.025)  # the GPU works; the GIL is released
        done.append(time.monotonic())


def measure(kind: str, interval: float, seconds: float) -> tuple[float, np.ndarray]:
    sys.setswitchinterval(interval)
    raws = {
        m: array_to_cdr(np.zeros((1024, 1024, 3) if m in ("rgb", "event") else (1024, 1024), dtype), enc, 0, "cam")
        for m, dtype, enc in (
            ("rgb", np.uint8, "rgb8"),
            ("depth", np.float32, "32FC1"),
            ("lidar", np.float32, "32FC1"),
            ("event", np.uint8, "rgb8"),
        )
    }
    sync = ModalitySynchronizer(list(MODALITIES))
    stop, done = threading.Event(), []
    worker = threading.Thread(target=cpu_inference if kind == "cpu" else cuda_like_inference, args=(stop, done))
    worker.start()
    latencies = []
    start = time.monotonic()
    due = start
    index = 0
    while due - start < seconds:
        due += 1 / (30 * len(MODALITIES))  # the four topics at 30 Hz, one message at a time
        while time.monotonic() < due:
            time.sleep(0.0002)
        modality = MODALITIES[index % len(MODALITIES)]
        received = received_from_cdr(modality, raws[modality], time.monotonic())
        check_modality(received.image, modality)
        sync.add(modality, index // len(MODALITIES) / 30, received, time.monotonic())
        latencies.append(time.monotonic() - due)
        index += 1
    stop.set()
    worker.join()
    elapsed = time.monotonic() - start
    return len(done) / elapsed, np.array(latencies) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"# {machine_description()}; {args.seconds:.0f} s per row, torch 1 thread")
    print("| inference | switch interval | sets/s | callback latency p50 / p99 ms |")
    print("|---|---|---|---|")
    for kind in ("cpu", "cuda-like"):
        for interval in INTERVALS_S:
            rate, latency = measure(kind, interval, args.seconds)
            print(f"| {kind} | {interval * 1e3:.1f} ms | {rate:.1f} | {np.percentile(latency, 50):.2f} / "
                  f"{np.percentile(latency, 99):.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
